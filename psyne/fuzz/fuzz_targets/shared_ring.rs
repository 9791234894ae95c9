//! A hostile peer against honest ends of a shared channel.
//!
//! Each input is a script. Its first byte picks a channel (raw, typed or tensor, which end
//! creates it, whether the other end is attached at the start, ring size, wait strategy,
//! timestamps); the honest ends are psyne's own, made through the public API only. The rest is up to
//! [`MAX_OPS`] operations, interleaved: the hostile peer writes bytes into its own `MAP_SHARED`
//! mapping of `/dev/shm/<name>` (control block, record headers, anywhere), and the honest ends
//! receive, send, drop and reopen. A missing end is simply absent: with the producer absent the
//! hostile peer plays the producer against an honest consumer, with the consumer absent it plays
//! the consumer against an honest producer; with both present it corrupts a live channel.
//!
//! What must hold, whatever the peer wrote (any violation aborts the run, which libFuzzer
//! reports as a crash; a call that never returns is a libFuzzer timeout, `-timeout=5`):
//! * no panic, no out-of-bounds access (AddressSanitizer; a payload or loan outside every
//!   mapping of the object, or misaligned for its type, fails an assertion here);
//! * a received payload is at most the ring size minus the 32-byte header;
//! * a tensor whose description passes the consumer's checks has its elements inside the
//!   record's payload (a description is the peer's to write, and the view's bounds come from it);
//! * every honest call returns within [`DEADLINE`] (the timed ones wait 1 ms);
//! * before the peer's first write the channel behaves as a queue: what is received is exactly
//!   what was sent, in order, `Empty`/`Timeout`/`Disconnected` only when nothing is pending,
//!   never `Corrupted`.
//!
//! The target knows nothing private about the ring: the offsets below only bias where the peer
//! writes (towards the control block and record headers as protocol versions 3 and 4 lay them out
//! for one producer and one consumer); a layout change makes the bias less useful, not the target
//! wrong, since any byte of the mapping can be written. The input format is described in `psyne/fuzz/README.md`; set
//! `PSYNE_FUZZ_TRACE=1` to print each operation as it runs.

#![no_main]

use libfuzzer_sys::fuzz_target;
use psyne::{
    Channel, Consumer, MessageHeader, OpenError, Producer, PsyneMessage, RawConsumer, RawProducer,
    RecvError, SendError, TensorConsumer, TensorProducer, TensorSendError, Wait,
};
use std::collections::VecDeque;
use std::ffi::CString;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Operations per input at most.
const MAX_OPS: usize = 64;
/// How long any honest call may take (the timed calls ask for [`WAIT`]); generous for a loaded
/// two-core machine under AddressSanitizer. A call that never returns is caught by libFuzzer.
const DEADLINE: Duration = Duration::from_secs(2);
/// The timeout of `recv_timeout` and `allocate_timeout`.
const WAIT: Duration = Duration::from_millis(1);

/// Bias only (see the module docs): the control block's page.
const HINT_CONTROL: usize = 4096;
/// Bias only: slab offset of ring byte 0.
const HINT_REGION: usize = 4096 - 32;
/// Bias only: records start at ring offsets that are multiples of this.
const HINT_RECORD: usize = 64;

/// A typed message whose record is exactly one 64-byte line.
#[derive(Clone, Copy, Debug, PsyneMessage)]
#[repr(C)]
struct Small {
    w: [u64; 4],
}

/// A typed message aligned to more than 64 bytes (alignment fillers).
#[derive(Clone, Copy, Debug, PsyneMessage)]
#[repr(C, align(128))]
struct Big {
    w: [u64; 16],
}

fn trace_on() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("PSYNE_FUZZ_TRACE").is_some())
}

macro_rules! trace {
    ($($t:tt)*) => {
        if trace_on() {
            eprintln!($($t)*);
        }
    };
}

/// The input, read front to back; past its end every byte reads as 0.
struct Script<'a> {
    data: &'a [u8],
    at: usize,
}

impl Script<'_> {
    fn done(&self) -> bool {
        self.at >= self.data.len()
    }
    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u8()).collect()
    }
}

/// The hostile peer's own mapping of the channel's shared-memory object.
struct Hostile {
    base: *mut u8,
    len: usize,
}

impl Hostile {
    /// Maps `/dev/shm/<name>` read-write, shared, as another process would.
    fn map(name: &str) -> Option<Hostile> {
        let cname = CString::new(format!("/{name}")).ok()?;
        // SAFETY: `cname` is NUL-terminated; the descriptor is closed below.
        let fd = unsafe { libc::shm_open(cname.as_ptr(), libc::O_RDWR, 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: `libc::stat` is plain old data; all zeroes is a valid value to be overwritten.
        let mut st: libc::stat = unsafe { core::mem::zeroed() };
        // SAFETY: `fd` is open and `st` is a valid out-pointer.
        let ok = unsafe { libc::fstat(fd, &mut st) } == 0;
        let len = if ok { st.st_size as usize } else { 0 };
        let base = if len < 8 {
            libc::MAP_FAILED
        } else {
            // SAFETY: a fresh mapping of `len` bytes of an open descriptor; the kernel picks the
            // address, so nothing existing is replaced.
            unsafe {
                libc::mmap(
                    core::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    0,
                )
            }
        };
        // SAFETY: `fd` is open and owned here; the mapping (if any) stays valid after close.
        unsafe { libc::close(fd) };
        if base == libc::MAP_FAILED {
            return None;
        }
        Some(Hostile {
            base: base.cast(),
            len,
        })
    }

    /// Writes `bytes` at `offset` (taken modulo the mapping size), clipped to the mapping.
    fn write(&self, offset: usize, bytes: &[u8]) {
        let offset = offset % self.len;
        for (i, &b) in bytes.iter().take(self.len - offset).enumerate() {
            // SAFETY: `offset + i < self.len`, inside the mapping. The honest ends run on this
            // thread only, so no access races with this store.
            unsafe { self.base.add(offset + i).write_volatile(b) };
        }
    }

    /// The aligned 8-byte word at `offset` (modulo the size, rounded down to a multiple of 8,
    /// and no further than the last whole word).
    fn word_offset(&self, offset: usize) -> usize {
        ((offset % self.len) & !7).min((self.len - 8) & !7)
    }

    fn read_word(&self, offset: usize) -> u64 {
        let offset = self.word_offset(offset);
        // SAFETY: `word_offset` makes `offset` 8-aligned with `offset + 8 <= self.len` (the size
        // is at least 8, see `map`); the mapping base is page-aligned.
        unsafe { self.base.add(offset).cast::<u64>().read_volatile() }
    }

    fn write_word(&self, offset: usize, value: u64) {
        let offset = self.word_offset(offset);
        // SAFETY: as in `read_word`.
        unsafe { self.base.add(offset).cast::<u64>().write_volatile(value) };
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// The address ranges at which this process maps `/dev/shm/<name>` (from `/proc/self/maps`):
/// every payload and loan an honest end hands out must lie inside one of them.
fn mappings_of(name: &str) -> Vec<(usize, usize)> {
    let path = format!("/dev/shm/{name}");
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut out = Vec::new();
    for line in maps.lines() {
        let mut cols = line.split_whitespace();
        let range = cols.next().unwrap_or("");
        let file = cols.nth(4).unwrap_or("");
        if file != path {
            continue;
        }
        if let Some((a, b)) = range.split_once('-')
            && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            out.push((a, b));
        }
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Raw,
    Small,
    Big,
    /// `Channel::tensors()`: `u8` tensors, the payload a description and the elements.
    Tensor,
}

/// The bytes a receive hands to the checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    /// The message's payload (raw and typed ends).
    Payload,
    /// A tensor's elements, through a view its description passed.
    Elements,
    /// A tensor record whose description failed (its whole payload).
    Invalid,
}

/// Bytes of a tensor payload before the elements (no user header).
const TENSOR_OVERHEAD: usize = psyne::tensor::DESCRIPTION_SIZE;

/// An honest consumer end.
enum Cons {
    Raw(RawConsumer),
    Small(Consumer<Small>),
    Big(Consumer<Big>),
    Tensor(TensorConsumer),
}

/// An honest producer end.
enum Prod {
    Raw(RawProducer),
    Small(Producer<Small>),
    Big(Producer<Big>),
    Tensor(TensorProducer),
}

/// How a producer operation ends its loan.
#[derive(Clone, Copy, Debug)]
enum Finish {
    Send,
    Drop,
}

impl Cons {
    fn capacity(&self) -> usize {
        match self {
            Cons::Raw(c) => c.capacity_bytes(),
            Cons::Small(c) => c.capacity_bytes(),
            Cons::Big(c) => c.capacity_bytes(),
            Cons::Tensor(c) => c.capacity_bytes(),
        }
    }

    /// Receives one message (`timed`: `recv_timeout(WAIT)`, else `try_recv`) and hands its
    /// payload bytes (a valid tensor's: its elements), a copy of its header, its required
    /// alignment and what the bytes are to `f` while it is held.
    fn recv(
        &mut self,
        timed: bool,
        f: &mut dyn FnMut(&[u8], MessageHeader, usize, Seen),
    ) -> Result<(), RecvError> {
        match self {
            Cons::Raw(c) => {
                let m = if timed {
                    c.recv_timeout(WAIT)
                } else {
                    c.try_recv()
                }?;
                f(m.bytes(), m.header(), 1, Seen::Payload);
                // A typed view of the same bytes must be aligned when it is handed out.
                if let Some(s) = m.downcast::<Small>() {
                    assert_eq!((s as *const Small as usize) % align_of::<Small>(), 0);
                }
            }
            Cons::Small(c) => {
                let m = if timed {
                    c.recv_timeout(WAIT)
                } else {
                    c.try_recv()
                }?;
                let v: &Small = &m;
                f(
                    psyne::bytemuck::bytes_of(v),
                    m.header(),
                    align_of::<Small>(),
                    Seen::Payload,
                );
            }
            Cons::Big(c) => {
                let m = if timed {
                    c.recv_timeout(WAIT)
                } else {
                    c.try_recv()
                }?;
                let v: &Big = &m;
                f(
                    psyne::bytemuck::bytes_of(v),
                    m.header(),
                    align_of::<Big>(),
                    Seen::Payload,
                );
            }
            Cons::Tensor(c) => {
                let m = if timed {
                    c.recv_timeout(WAIT)
                } else {
                    c.try_recv()
                }?;
                let payload = m.bytes();
                match m.view::<u8>() {
                    Ok(v) => {
                        let (e, p) = (v.as_slice(), payload.as_ptr_range());
                        assert!(
                            p.start <= e.as_ptr() && e.as_ptr_range().end <= p.end,
                            "a tensor's {} elements outside its {}-byte payload",
                            e.len(),
                            payload.len()
                        );
                        assert_eq!(e.len(), v.shape().iter().product::<usize>());
                        f(e, m.message_header(), 1, Seen::Elements);
                    }
                    Err(e) => {
                        let _ = e.to_string();
                        f(payload, m.message_header(), 1, Seen::Invalid);
                    }
                }
            }
        }
        Ok(())
    }
}

impl Prod {
    fn capacity(&self) -> usize {
        match self {
            Prod::Raw(p) => p.capacity_bytes(),
            Prod::Small(p) => p.capacity_bytes(),
            Prod::Big(p) => p.capacity_bytes(),
            Prod::Tensor(p) => p.capacity_bytes(),
        }
    }

    /// Loans room for one message (`timed`: `*_timeout(WAIT)`, else `try_*`; `raw_len`: the
    /// payload length of a raw byte loan, `None` for a typed `Small` loan of a raw producer; for
    /// a tensor producer the element count of a `u8` tensor of shape `[len]`, `None` for shape
    /// `[2, 3]`), lets `f` fill its bytes (a tensor's elements; and check them), then sends or
    /// drops it.
    fn send(
        &mut self,
        timed: bool,
        raw_len: Option<usize>,
        finish: Finish,
        f: &mut dyn FnMut(&mut [u8], usize),
    ) -> Result<(), SendError> {
        macro_rules! typed {
            ($loan:expr, $t:ty) => {{
                let mut m = $loan?;
                let v: &mut $t = &mut m;
                f(psyne::bytemuck::bytes_of_mut(v), align_of::<$t>());
                if let Finish::Send = finish {
                    m.send();
                }
            }};
        }
        match self {
            Prod::Raw(p) => match raw_len {
                Some(len) => {
                    let mut m = if timed {
                        p.allocate_bytes_timeout(len, WAIT)
                    } else {
                        p.try_allocate_bytes(len)
                    }?;
                    assert_eq!(m.len(), len, "a byte loan has the length asked for");
                    f(&mut m, 1);
                    if let Finish::Send = finish {
                        m.send(RAW_TYPE_ID);
                    }
                }
                None => typed!(
                    if timed {
                        p.allocate_timeout::<Small>(WAIT)
                    } else {
                        p.try_allocate::<Small>()
                    },
                    Small
                ),
            },
            Prod::Small(p) => typed!(
                if timed {
                    p.allocate_timeout(WAIT)
                } else {
                    p.try_allocate()
                },
                Small
            ),
            Prod::Big(p) => typed!(
                if timed {
                    p.allocate_timeout(WAIT)
                } else {
                    p.try_allocate()
                },
                Big
            ),
            Prod::Tensor(p) => {
                let one;
                let shape: &[usize] = match raw_len {
                    Some(len) => {
                        one = [len];
                        &one
                    }
                    None => &[2, 3],
                };
                let r = if timed {
                    p.allocate_tensor_timeout::<u8>(shape, WAIT)
                } else {
                    p.try_allocate_tensor::<u8>(shape)
                };
                let mut m = match r {
                    Ok(m) => m,
                    Err(TensorSendError::Send(e)) => return Err(e),
                    Err(e) => panic!("a u8 tensor of shape {shape:?}: {e}"),
                };
                assert_eq!(m.shape(), shape);
                f(m.as_mut_slice(), 1);
                if let Finish::Send = finish {
                    m.send();
                }
            }
        }
        Ok(())
    }
}

/// The type id of raw byte messages sent here.
const RAW_TYPE_ID: u64 = 7;

/// The byte at index `i` of message number `n`'s payload.
fn pattern(n: u64, i: usize) -> u8 {
    (n as u8).wrapping_mul(31).wrapping_add(i as u8) ^ (n >> 8) as u8
}

/// Unique per process and iteration, so that parallel jobs never share a name.
fn unique_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "psyne-fuzz-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `call` (an honest end's operation, described by `what`) and checks it returned within
/// [`DEADLINE`].
fn timed<R>(what: &str, call: impl FnOnce() -> R) -> R {
    let start = Instant::now();
    let r = call();
    let took = start.elapsed();
    assert!(took < DEADLINE, "{what} took {took:?}");
    r
}

/// One iteration's channel: the honest ends present, the hostile mapping and the queue model
/// that holds while the peer has written nothing.
struct World {
    name: String,
    kind: Kind,
    hostile: Hostile,
    /// Region length of the ring (what `capacity_bytes` reports).
    region: usize,
    cons: Option<Cons>,
    prod: Option<Prod>,
    /// Whether the peer has written nothing yet (the queue model below is exact only then).
    clean: bool,
    /// Messages sent and not yet received: (number, payload length).
    pending: VecDeque<(u64, usize)>,
    /// Messages sent so far (the number of the next one).
    sent: u64,
    /// Messages received so far.
    received: u64,
    /// Whether a producer was attached at some point and has been dropped since.
    producer_gone: bool,
    /// Cached [`mappings_of`] (refreshed when a range is not found).
    maps: Vec<(usize, usize)>,
}

impl World {
    /// Asserts that `len` bytes at `ptr` lie inside one mapping of the channel's object.
    fn check_inside(&mut self, ptr: usize, len: usize, what: &str) {
        let inside = |maps: &[(usize, usize)]| {
            maps.iter()
                .any(|&(a, b)| ptr >= a && ptr.checked_add(len).is_some_and(|e| e <= b))
        };
        if !inside(&self.maps) {
            self.maps = mappings_of(&self.name);
            assert!(
                inside(&self.maps),
                "{what}: {len} bytes at {ptr:#x} outside the mappings {:x?}",
                self.maps
            );
        }
    }

    fn open_consumer(&mut self) {
        let r = timed("open_consumer", || match self.kind {
            Kind::Raw => Channel::raw_open_consumer(&self.name).map(Cons::Raw),
            Kind::Small => Channel::<Small>::open_consumer(&self.name).map(Cons::Small),
            Kind::Big => Channel::<Big>::open_consumer(&self.name).map(Cons::Big),
            Kind::Tensor => Channel::tensors_open_consumer(&self.name).map(Cons::Tensor),
        });
        let r = r.map(|c| self.cons = Some(c));
        self.opened("open_consumer", r);
    }

    fn open_producer(&mut self) {
        let r = timed("open_producer", || match self.kind {
            Kind::Raw => Channel::raw_open_producer(&self.name).map(Prod::Raw),
            Kind::Small => Channel::<Small>::open_producer(&self.name).map(Prod::Small),
            Kind::Big => Channel::<Big>::open_producer(&self.name).map(Prod::Big),
            Kind::Tensor => Channel::tensors_open_producer(&self.name).map(Prod::Tensor),
        });
        let r = r.map(|p| self.prod = Some(p));
        self.opened("open_producer", r);
    }

    fn opened(&mut self, what: &str, r: Result<(), OpenError>) {
        trace!("  {what} -> {r:?}");
        if let Err(e) = &r {
            // Typed errors only; on an untouched channel only the ones an honest history gives.
            assert!(
                !self.clean
                    || matches!(
                        e,
                        OpenError::EndClosed
                            | OpenError::NotFound { .. }
                            | OpenError::AlreadyConnected { .. }
                    ),
                "{what} of an untouched channel: {e:?}"
            );
            let _ = e.to_string();
        }
    }

    /// A consumer operation: `try_recv` or `recv_timeout(WAIT)`.
    fn recv(&mut self, timed_call: bool) {
        let Some(mut cons) = self.cons.take() else {
            return;
        };
        // The end's own region length: an end opened after the peer rewrote the control block
        // may have taken another one (still checked against the mapping, as every bound is).
        let capacity = cons.capacity();
        assert!(
            !self.clean || capacity == self.region,
            "capacity_bytes is the region length"
        );
        let what = if timed_call {
            "recv_timeout(1ms)"
        } else {
            "try_recv"
        };
        let mut got = None;
        let r = timed(what, || {
            cons.recv(timed_call, &mut |bytes, header, align, seen| {
                let ptr = bytes.as_ptr() as usize;
                assert!(
                    bytes.len() + MessageHeader::SIZE <= capacity,
                    "{what}: payload of {} bytes in a {capacity}-byte ring",
                    bytes.len()
                );
                assert_eq!(ptr % align, 0, "{what}: payload misaligned");
                self.check_inside(ptr, bytes.len(), what);
                // Read every byte (an out-of-bounds payload faults here).
                let sum = bytes
                    .iter()
                    .fold(0u64, |a, &b| a.rotate_left(5) ^ u64::from(b));
                std::hint::black_box(sum);
                got = Some((bytes.to_vec(), header, seen));
            })
        });
        trace!(
            "  {what} -> {:?}",
            r.as_ref()
                .map(|()| got.as_ref().map_or(0, |(b, _, _)| b.len()))
        );
        if r.is_ok() {
            self.received += 1;
        }
        if self.clean {
            match (&r, self.pending.pop_front()) {
                (Ok(()), Some((n, len))) => {
                    let (bytes, header, seen) = got.expect("payload seen");
                    let overhead = if self.kind == Kind::Tensor {
                        assert_eq!(seen, Seen::Elements, "{what}: tensor {n} not valid");
                        TENSOR_OVERHEAD
                    } else {
                        0
                    };
                    assert_eq!(bytes.len(), len, "{what}: length of message {n}");
                    assert_eq!(
                        header.len as usize,
                        overhead + len,
                        "{what}: header of message {n}"
                    );
                    for (i, &b) in bytes.iter().enumerate() {
                        assert_eq!(b, pattern(n, i), "{what}: byte {i} of message {n}");
                    }
                }
                (Ok(()), None) => panic!("{what}: a message nobody sent"),
                (Err(RecvError::Empty | RecvError::Timeout), None) => {}
                (Err(RecvError::Disconnected), None) => {
                    assert!(self.producer_gone, "{what}: Disconnected, producer alive")
                }
                (Err(e), next) => panic!("{what} on an untouched channel: {e:?}, pending {next:?}"),
            }
        }
        if let Err(e) = r {
            let _ = e.to_string();
        }
        self.cons = Some(cons);
    }

    /// A producer operation: loan (try or timed), fill, send or drop.
    fn send(&mut self, timed_call: bool, raw_len: Option<usize>, finish: Finish) {
        let Some(mut prod) = self.prod.take() else {
            return;
        };
        let capacity = prod.capacity();
        assert!(
            !self.clean || capacity == self.region,
            "capacity_bytes is the region length"
        );
        let what = if timed_call {
            "allocate_timeout(1ms)"
        } else {
            "try_allocate"
        };
        let n = self.sent;
        let mut len = 0;
        let r = timed(what, || {
            prod.send(timed_call, raw_len, finish, &mut |bytes, align| {
                let ptr = bytes.as_ptr() as usize;
                assert_eq!(ptr % align, 0, "{what}: loan misaligned");
                assert!(
                    bytes.len() + MessageHeader::SIZE <= capacity,
                    "{what}: a loan of {} bytes in a {capacity}-byte ring",
                    bytes.len()
                );
                self.check_inside(ptr, bytes.len(), what);
                for (i, b) in bytes.iter_mut().enumerate() {
                    *b = pattern(n, i);
                }
                len = bytes.len();
            })
        });
        trace!("  {what} {raw_len:?} {finish:?} -> {r:?}");
        match &r {
            Ok(()) => {
                if let Finish::Send = finish {
                    self.sent += 1;
                    self.pending.push_back((n, len));
                }
            }
            Err(e) => {
                assert!(
                    !self.clean
                        || matches!(
                            e,
                            SendError::Full
                                | SendError::Timeout
                                | SendError::Disconnected
                                | SendError::TooLarge { .. }
                        ),
                    "{what} on an untouched channel: {e:?}"
                );
                let _ = e.to_string();
            }
        }
        self.prod = Some(prod);
    }
}

fuzz_target!(|data: &[u8]| run(data));

fn run(data: &[u8]) {
    let mut s = Script { data, at: 0 };
    let config = s.u8();
    let kind = match config & 3 {
        1 => Kind::Small,
        2 => Kind::Big,
        3 => Kind::Tensor,
        _ => Kind::Raw,
    };
    let producer_creates = config & 4 != 0;
    let other_attached = config & 8 != 0;
    let region = [256usize, 1024, 8192, 256 << 10][usize::from((config >> 4) & 3)];
    let wait = if config & 64 != 0 {
        Wait::BusySpin
    } else {
        Wait::SpinThenPark {
            spins: 16,
            yields: 1,
        }
    };
    let timestamps = config & 128 != 0;
    let name = unique_name();
    trace!(
        "{name}: {kind:?}, {} creates, other end {}, region {region}, {wait:?}, timestamps {timestamps}",
        if producer_creates {
            "producer"
        } else {
            "consumer"
        },
        if other_attached { "attached" } else { "absent" },
    );

    macro_rules! create {
        ($b:expr) => {{
            let b = $b
                .capacity_bytes(region)
                .wait(wait)
                .timestamps(timestamps)
                .shared(&name);
            if producer_creates {
                b.create_producer().map(|p| (None, Some(p)))
            } else {
                b.create_consumer().map(|c| (Some(c), None))
            }
        }};
    }
    let created = match kind {
        Kind::Raw => create!(Channel::raw()).map(|(c, p)| (c.map(Cons::Raw), p.map(Prod::Raw))),
        Kind::Small => create!(Channel::<Small>::builder())
            .map(|(c, p)| (c.map(Cons::Small), p.map(Prod::Small))),
        Kind::Big => {
            create!(Channel::<Big>::builder()).map(|(c, p)| (c.map(Cons::Big), p.map(Prod::Big)))
        }
        Kind::Tensor => {
            create!(Channel::tensors()).map(|(c, p)| (c.map(Cons::Tensor), p.map(Prod::Tensor)))
        }
    };
    let (cons, prod) = match created {
        Ok(ends) => ends,
        Err(e) => panic!("creating a fresh channel {name}: {e}"),
    };
    let Some(hostile) = Hostile::map(&name) else {
        panic!("mapping /dev/shm/{name} as the peer");
    };
    let mut w = World {
        name,
        kind,
        hostile,
        region,
        cons,
        prod,
        clean: true,
        pending: VecDeque::new(),
        sent: 0,
        received: 0,
        producer_gone: false,
        maps: Vec::new(),
    };
    assert!(w.hostile.len >= region, "the object holds the ring");
    if other_attached {
        if producer_creates {
            w.open_consumer();
        } else {
            w.open_producer();
        }
    }

    for _ in 0..MAX_OPS {
        if s.done() {
            break;
        }
        step(&mut w, &mut s);
    }

    // Dropping corrupted ends must not hang or panic either.
    timed("drop consumer", || drop(w.cons.take()));
    timed("drop producer", || drop(w.prod.take()));
    let _ = psyne::transport::shm::remove(&w.name);
}

/// A value worth writing into a word: a literal, or one near what the checks compare against.
fn value(w: &World, s: &mut Script, current: u64) -> u64 {
    let region = w.region as u64;
    match s.u8() % 16 {
        0 => 0,
        1 => u64::MAX,
        2 => region,
        3 => region + HINT_RECORD as u64,
        4 => u64::from(s.u8()) * HINT_RECORD as u64,
        5 => u64::from(s.u8()),
        6 => u64::from(u32::MAX),
        7 => u64::from(std::process::id()),
        8 => region - MessageHeader::SIZE as u64,
        9 => region / 2,
        10 => 1 << 63,
        11 => current.wrapping_add(region),
        12 => current.wrapping_sub(HINT_RECORD as u64),
        13 => current.wrapping_add(HINT_RECORD as u64),
        14 => current ^ (1 << (s.u8() % 64)),
        _ => s.u64(),
    }
}

/// A header length worth writing for a header at ring offset `at`.
fn header_len(w: &World, s: &mut Script, at: usize) -> u32 {
    let room = (w.region - MessageHeader::SIZE) as u32;
    match s.u8() % 8 {
        0 => s.u32(),
        // A record or filler that ends exactly at the region's end.
        1 => (w.region - at - MessageHeader::SIZE) as u32,
        2 => (w.region / 2 - MessageHeader::SIZE) as u32,
        3 => match w.kind {
            Kind::Big => size_of::<Big>() as u32,
            _ => size_of::<Small>() as u32,
        },
        4 => 0,
        5 => u32::MAX,
        6 => u32::from(s.u8()),
        _ => room.wrapping_sub(u32::from(s.u8()) * HINT_RECORD as u32),
    }
}

/// Runs one operation of the script.
fn step(w: &mut World, s: &mut Script) {
    let op = s.u8();
    let records = w.region / HINT_RECORD;
    let control = HINT_CONTROL.min(w.hostile.len);
    match op % 16 {
        // Peer: bytes into the control block.
        0 => {
            let off = usize::from(s.u16()) % control;
            let n = usize::from(s.u8() % 16) + 1;
            let bytes = s.bytes(n);
            trace!("peer: write {bytes:02x?} at {off}");
            w.hostile.write(off, &bytes);
            w.clean = false;
        }
        // Peer: a whole header at a record boundary (fields of the public `MessageHeader`).
        1 => {
            let k = usize::from(s.u16()) % records;
            let len = header_len(w, s, k * HINT_RECORD);
            let flags = u32::from(s.u8());
            let type_id = match s.u8() % 5 {
                0 => <Small as psyne::Message>::TYPE_ID,
                1 => <Big as psyne::Message>::TYPE_ID,
                2 => 0,
                3 => RAW_TYPE_ID,
                _ => s.u64(),
            };
            // The commit word: what the consumer expects next if every message came from the
            // honest producer (the number received), or any other number.
            let sequence = match s.u8() % 8 {
                0..=2 => w.received,
                3 => w.received + 1,
                4 => w.sent,
                5 => u64::MAX,
                6 => u64::from(s.u8()),
                _ => s.u64(),
            };
            let header = MessageHeader {
                len,
                flags,
                type_id,
                sequence,
                timestamp_ns: 0,
            };
            let off = HINT_REGION + k * HINT_RECORD;
            trace!(
                "peer: header at ring offset {} (slab {off}): {header:?}",
                k * HINT_RECORD
            );
            w.hostile.write(off, psyne::bytemuck::bytes_of(&header));
            w.clean = false;
        }
        // Peer: bytes near a record boundary.
        2 => {
            let k = usize::from(s.u16()) % records;
            let sub = usize::from(s.u8() % 64);
            let n = usize::from(s.u8() % 16) + 1;
            let bytes = s.bytes(n);
            let off = HINT_REGION + k * HINT_RECORD + sub;
            trace!(
                "peer: write {bytes:02x?} at slab {off} (ring offset {})",
                off - HINT_REGION
            );
            w.hostile.write(off, &bytes);
            w.clean = false;
        }
        // Peer: set an aligned control-block word.
        3 => {
            let off = w.hostile.word_offset((usize::from(s.u16()) * 8) % control);
            let current = w.hostile.read_word(off);
            let v = value(w, s, current);
            trace!("peer: word at {off}: {current:#x} -> {v:#x}");
            w.hostile.write_word(off, v);
            w.clean = false;
        }
        // Peer: set an aligned word in the ring.
        4 => {
            let off = w
                .hostile
                .word_offset(HINT_REGION + (usize::from(s.u16()) * 8) % w.region);
            let current = w.hostile.read_word(off);
            let v = value(w, s, current);
            trace!("peer: word at slab {off}: {current:#x} -> {v:#x}");
            w.hostile.write_word(off, v);
            w.clean = false;
        }
        // Peer: bytes anywhere in the object.
        5 => {
            let off = s.u32() as usize % w.hostile.len;
            let n = usize::from(s.u8() % 32) + 1;
            let bytes = s.bytes(n);
            trace!("peer: write {bytes:02x?} at {off}");
            w.hostile.write(off, &bytes);
            w.clean = false;
        }
        6 | 7 => {
            trace!(
                "consumer: {}",
                if op % 16 == 6 {
                    "try_recv"
                } else {
                    "recv_timeout"
                }
            );
            w.recv(op % 16 == 7);
        }
        // Consumer: up to 16 `try_recv`s.
        8 => {
            let k = s.u8() % 16 + 1;
            trace!("consumer: {k} x try_recv");
            for _ in 0..k {
                w.recv(false);
            }
        }
        9..=11 => {
            let p = s.u8();
            let max = w.region - MessageHeader::SIZE;
            // Raw producers only: the payload length of a byte loan (`None`: a typed `Small`).
            let raw_len = match p % 8 {
                0 => Some(usize::from(p >> 3)),
                1 => None,
                2 => Some(max + usize::from(p >> 6)),
                3 => Some(usize::from(p) * 37 % (max + 1)),
                4 => Some(8 + usize::from(p >> 3) * 8),
                // Large records (16 KiB and more may restart at the region's start).
                5 => Some((16 << 10) + usize::from(p >> 3) * 64),
                6 => Some(w.region / 2 - MessageHeader::SIZE),
                _ => Some(max / (1 + usize::from(p >> 3))),
            };
            let (timed_call, finish) = match op % 16 {
                9 => (false, Finish::Send),
                10 => (true, Finish::Send),
                _ => (p & 0x80 != 0, Finish::Drop),
            };
            trace!("producer: loan {raw_len:?} (raw only), timed {timed_call}, {finish:?}");
            w.send(timed_call, raw_len, finish);
        }
        // Producer: up to 16 `try_allocate` + `send`.
        12 => {
            let k = s.u8() % 16 + 1;
            trace!("producer: {k} x try_allocate + send");
            for _ in 0..k {
                w.send(false, Some(24), Finish::Send);
            }
        }
        // Drop the consumer (if attached) and open it again (or attach it the first time).
        13 => {
            trace!("consumer: drop and reopen");
            if let Some(c) = w.cons.take() {
                timed("drop consumer", || drop(c));
            }
            w.open_consumer();
        }
        // The same for the producer.
        14 => {
            trace!("producer: drop and reopen");
            if let Some(p) = w.prod.take() {
                timed("drop producer", || drop(p));
                w.producer_gone = true;
            }
            w.open_producer();
        }
        // A pause of the peer: nothing happens (lets mutations shift the script).
        _ => trace!("nop"),
    }
}
