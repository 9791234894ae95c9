//! A hostile peer against honest ends of a shared multi-producer or broadcast channel.
//!
//! The same game as `shared_ring`, for the two topologies with more than two ends. Each input
//! is a script. Its first byte picks a channel: many producers to one consumer
//! (`Channel::<T>::mpsc().shared(name).create_consumer()`, producers opened with
//! `Channel::<T>::open_mpsc_producer`) or one producer to many consumers
//! (`Channel::<T>::broadcast().shared(name).create_producer()`, consumers opened with
//! `Channel::<T>::open_broadcast_consumer`), the message type (one 64-byte record, or one
//! aligned to 128 bytes, which takes alignment fillers), the lane or ring size, the number of
//! places (1 to 4), the wait strategy and, for broadcast, the backpressure (`Block` or
//! `DropLagging` after 1 ms). The creator end is one honest end; two more honest handles open,
//! use, drop and reopen places on the other side (producers of the multi-producer channel,
//! consumers of the broadcast one). The rest of the input is up to [`MAX_OPS`] operations,
//! interleaved: the hostile peer writes bytes into its own `MAP_SHARED` mapping of
//! `/dev/shm/<name>` (the control block with its end slots, lane or ring headers, anywhere),
//! and the honest ends receive, send, drop and reopen.
//!
//! What must hold, whatever the peer wrote (a violation aborts the run, which libFuzzer
//! reports as a crash; a call that never returns is a libFuzzer timeout, `-timeout=5`):
//! * no panic, no out-of-bounds access (AddressSanitizer; a payload or loan outside every
//!   mapping of the object, or misaligned for its type, fails an assertion here);
//! * a received message's producer index is below the channel's number of places;
//! * every honest call returns within [`DEADLINE`] (the timed ones wait 1 ms);
//! * before the peer's first write the channel behaves as its model: multi-producer, every
//!   producer place is a queue (what the consumer receives from place `p` is exactly what was
//!   sent from `p`, in order, `Empty`/`Timeout` only when nothing is pending anywhere,
//!   `Disconnected` only with no producer attached and nothing pending); broadcast, every
//!   consumer receives, in order, every message sent while it was attached (with
//!   `DropLagging`: a subsequence of them, and `Lagged` only there), never `Corrupted`.
//!
//! The target knows nothing private about the channel's layout: the offsets below only bias
//! where the peer writes (towards the first pages, where the control block lies, and towards
//! offsets 32 modulo 64, where record headers lie); any byte of the mapping can be written. Set
//! `PSYNE_FUZZ_TRACE=1` to print each operation as it runs.

#![no_main]

use libfuzzer_sys::fuzz_target;
use psyne::{
    Backpressure, BroadcastConsumer, BroadcastProducer, Channel, Message, MessageHeader,
    MpscConsumer, MpscProducer, OpenError, PsyneMessage, RecvError, SendError, Wait,
};
use std::collections::VecDeque;
use std::ffi::CString;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Operations per input at most.
const MAX_OPS: usize = 64;
/// How long any honest call may take (the timed calls ask for [`WAIT`]); generous for a loaded
/// two-core machine under AddressSanitizer.
const DEADLINE: Duration = Duration::from_secs(2);
/// The timeout of `recv_timeout` and `allocate_timeout`, and `DropLagging`'s patience.
const WAIT: Duration = Duration::from_millis(1);
/// Honest handles on the side with many ends.
const HANDLES: usize = 2;

/// Bias only: the first pages of the object (control block and end slots).
const HINT_CONTROL: usize = 8192;
/// Bias only: record headers lie at object offsets 32 modulo 64.
const HINT_HEADER: usize = 32;

/// A message whose record is exactly one 64-byte line.
#[derive(Clone, Copy, Debug, PsyneMessage)]
#[repr(C)]
struct Small {
    w: [u64; 4],
}

/// A message aligned to more than 64 bytes (alignment fillers).
#[derive(Clone, Copy, Debug, PsyneMessage)]
#[repr(C, align(128))]
struct Big {
    w: [u64; 16],
}

/// A message that carries its number in every word, so that a received one names itself.
trait Numbered: Message + Copy {
    fn make(n: u64) -> Self;
    fn words(&self) -> &[u64];
    /// The number `make` was given, if every word agrees.
    fn number(&self) -> Option<u64> {
        let w = self.words();
        let n = w[0];
        w.iter()
            .enumerate()
            .all(|(i, &x)| x == word(n, i))
            .then_some(n)
    }
}

/// Word `i` of message number `n`.
fn word(n: u64, i: usize) -> u64 {
    n.rotate_left(i as u32 * 7) ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ ((i != 0) as u64)
}

impl Numbered for Small {
    fn make(n: u64) -> Self {
        Small {
            w: core::array::from_fn(|i| word(n, i)),
        }
    }
    fn words(&self) -> &[u64] {
        &self.w
    }
}

impl Numbered for Big {
    fn make(n: u64) -> Self {
        Big {
            w: core::array::from_fn(|i| word(n, i)),
        }
    }
    fn words(&self) -> &[u64] {
        &self.w
    }
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

/// The honest ends and their model.
enum Ends<T> {
    Mpsc {
        consumer: Option<MpscConsumer<T>>,
        producers: [Option<MpscProducer<T>>; HANDLES],
        /// Per producer place: numbers sent and not yet received.
        lanes: Vec<VecDeque<u64>>,
    },
    Broadcast {
        producer: Option<BroadcastProducer<T>>,
        /// Each handle with the numbers sent while it was attached and not yet received.
        consumers: [Option<(BroadcastConsumer<T>, VecDeque<u64>)>; HANDLES],
        /// `DropLagging`: a consumer may lose messages.
        lossy: bool,
    },
}

/// One iteration's channel.
struct World<T> {
    name: String,
    hostile: Hostile,
    /// Producer or consumer places.
    places: usize,
    ends: Ends<T>,
    /// Whether the peer has written nothing yet (the model is exact only then).
    clean: bool,
    /// The number of the next message sent.
    next: u64,
    /// Cached [`mappings_of`] (refreshed when a range is not found).
    maps: Vec<(usize, usize)>,
}

impl<T: Numbered> World<T> {
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

    /// Checks where a received message lay (`at`, its address in the ring) and its producer
    /// index, reads every word of its copy and returns its number (if intact).
    fn look(&mut self, copy: &T, at: usize, producer: usize, what: &str) -> Option<u64> {
        assert_eq!(at % align_of::<T>(), 0, "{what}: payload misaligned");
        self.check_inside(at, size_of::<T>(), what);
        assert!(
            producer < self.places,
            "{what}: producer {producer} of {} places",
            self.places
        );
        copy.number()
    }

    /// Typed errors only; on an untouched channel only the ones an honest history gives.
    fn opened(&self, what: &str, r: &Result<(), OpenError>) {
        trace!("  {what} -> {r:?}");
        if let Err(e) = r {
            assert!(
                !self.clean
                    || matches!(
                        e,
                        OpenError::TooManyProducers { .. }
                            | OpenError::TooManyConsumers { .. }
                            | OpenError::NotFound { .. }
                            | OpenError::EndClosed
                    ),
                "{what} of an untouched channel: {e:?}"
            );
            let _ = e.to_string();
        }
    }

    /// A receive (`timed`: `recv_timeout(WAIT)`, else `try_recv`) on the consumer side's end
    /// `h` (the multi-producer channel has one consumer and ignores `h`).
    fn recv(&mut self, h: usize, timed_call: bool) {
        let what = if timed_call {
            "recv_timeout(1ms)"
        } else {
            "try_recv"
        };
        let clean = self.clean;
        match &mut self.ends {
            Ends::Mpsc {
                consumer,
                producers,
                ..
            } => {
                let Some(mut c) = consumer.take() else {
                    return;
                };
                let alive = producers.iter().any(Option::is_some);
                let mut got = None;
                let r = timed(what, || {
                    let m = if timed_call {
                        c.recv_timeout(WAIT)
                    } else {
                        c.try_recv()
                    }?;
                    got = Some((*m, m.producer(), &*m as *const T as usize));
                    Ok::<(), RecvError>(())
                });
                trace!("  {what} -> {r:?} {:?}", got.map(|(_, p, _)| p));
                if let Some((value, p, at)) = got {
                    let n = self.look(&value, at, p, what);
                    let Ends::Mpsc { lanes, .. } = &mut self.ends else {
                        unreachable!()
                    };
                    if clean {
                        let want = lanes[p].pop_front();
                        assert_eq!(n, want, "{what}: from place {p}");
                    }
                } else if clean {
                    let Ends::Mpsc { lanes, .. } = &self.ends else {
                        unreachable!()
                    };
                    let pending = lanes.iter().map(VecDeque::len).sum::<usize>();
                    match &r {
                        Err(RecvError::Empty | RecvError::Timeout) => {
                            assert_eq!(pending, 0, "{what}: {r:?} with messages pending")
                        }
                        Err(RecvError::Disconnected) => {
                            assert!(pending == 0 && !alive, "{what}: Disconnected too early")
                        }
                        _ => panic!("{what} on an untouched channel: {r:?}"),
                    }
                }
                if let Err(e) = &r {
                    let _ = e.to_string();
                }
                let Ends::Mpsc { consumer, .. } = &mut self.ends else {
                    unreachable!()
                };
                *consumer = Some(c);
            }
            Ends::Broadcast {
                producer,
                consumers,
                lossy,
            } => {
                let lossy = *lossy;
                let producer_alive = producer.is_some();
                let Some((mut c, mut queue)) = consumers[h].take() else {
                    return;
                };
                let mut got = None;
                let r = timed(what, || {
                    let m = if timed_call {
                        c.recv_timeout(WAIT)
                    } else {
                        c.try_recv()
                    }?;
                    got = Some((*m, m.producer(), &*m as *const T as usize));
                    Ok::<(), RecvError>(())
                });
                trace!("  {what} [{h}] -> {r:?}");
                if let Some((value, p, at)) = got {
                    let n = self.look(&value, at, p, what);
                    if clean {
                        let n = n.unwrap_or_else(|| panic!("{what}: a torn message"));
                        if lossy {
                            while queue.front().is_some_and(|&q| q != n) {
                                queue.pop_front();
                            }
                        }
                        assert_eq!(queue.pop_front(), Some(n), "{what} [{h}]: out of order");
                    }
                } else if clean {
                    match &r {
                        Err(RecvError::Empty | RecvError::Timeout) => assert!(
                            lossy || queue.is_empty(),
                            "{what} [{h}]: {r:?} with {} pending",
                            queue.len()
                        ),
                        Err(RecvError::Disconnected) => assert!(
                            !producer_alive && (lossy || queue.is_empty()),
                            "{what} [{h}]: Disconnected too early"
                        ),
                        Err(RecvError::Lagged) => {
                            assert!(lossy, "{what} [{h}]: Lagged under Block")
                        }
                        _ => panic!("{what} on an untouched channel: {r:?}"),
                    }
                }
                if let Err(e) = &r {
                    let _ = e.to_string();
                }
                let Ends::Broadcast { consumers, .. } = &mut self.ends else {
                    unreachable!()
                };
                consumers[h] = Some((c, queue));
            }
        }
    }

    /// A send from the producer side's end `h` (the broadcast channel has one producer and
    /// ignores `h`): loan (`timed`: `allocate_timeout(WAIT)`, else `try_allocate`), fill, then
    /// send or drop.
    fn send(&mut self, h: usize, timed_call: bool, send: bool) {
        let what = if timed_call {
            "allocate_timeout(1ms)"
        } else {
            "try_allocate"
        };
        let n = self.next;
        let clean = self.clean;
        let mut at = None;
        let (r, place) = match &mut self.ends {
            Ends::Mpsc { producers, .. } => {
                let Some(p) = producers[h].as_mut() else {
                    return;
                };
                let place = p.index();
                let r = timed(what, || {
                    let mut m = if timed_call {
                        p.allocate_timeout(WAIT)
                    } else {
                        p.try_allocate()
                    }?;
                    at = Some(&*m as *const T as usize);
                    *m = T::make(n);
                    if send {
                        m.send();
                    }
                    Ok::<(), SendError>(())
                });
                (r, Some(place))
            }
            Ends::Broadcast { producer, .. } => {
                let Some(p) = producer.as_mut() else {
                    return;
                };
                let r = timed(what, || {
                    let mut m = if timed_call {
                        p.allocate_timeout(WAIT)
                    } else {
                        p.try_allocate()
                    }?;
                    at = Some(&*m as *const T as usize);
                    *m = T::make(n);
                    if send {
                        m.send();
                    }
                    Ok::<(), SendError>(())
                });
                (r, None)
            }
        };
        trace!("  {what} [{h}] send {send} -> {r:?}");
        if let Some(at) = at {
            assert_eq!(at % align_of::<T>(), 0, "{what}: loan misaligned");
            self.check_inside(at, size_of::<T>(), what);
        }
        match &r {
            Ok(()) if send => {
                self.next += 1;
                match &mut self.ends {
                    Ends::Mpsc { lanes, .. } => {
                        let place = place.expect("a producer's place");
                        assert!(place < lanes.len(), "producer index {place}");
                        lanes[place].push_back(n);
                    }
                    Ends::Broadcast { consumers, .. } => {
                        for (_, queue) in consumers.iter_mut().flatten() {
                            queue.push_back(n);
                        }
                    }
                }
            }
            Ok(()) => {}
            Err(e) => {
                assert!(
                    !clean
                        || matches!(
                            e,
                            SendError::Full | SendError::Timeout | SendError::Disconnected
                        ),
                    "{what} on an untouched channel: {e:?}"
                );
                let _ = e.to_string();
            }
        }
    }

    /// Drops the many-side handle `h` (if any) and opens a place again.
    fn reopen(&mut self, h: usize) {
        let name = self.name.clone();
        let r = match &mut self.ends {
            Ends::Mpsc { producers, .. } => {
                if let Some(p) = producers[h].take() {
                    timed("drop producer", || drop(p));
                }
                timed("open_mpsc_producer", || {
                    Channel::<T>::open_mpsc_producer(&name).map(|p| {
                        trace!("  place {}", p.index());
                        producers[h] = Some(p);
                    })
                })
            }
            Ends::Broadcast { consumers, .. } => {
                if let Some((c, _)) = consumers[h].take() {
                    timed("drop consumer", || drop(c));
                }
                timed("open_broadcast_consumer", || {
                    Channel::<T>::open_broadcast_consumer(&name)
                        .map(|c| consumers[h] = Some((c, VecDeque::new())))
                })
            }
        };
        self.opened("reopen", &r);
    }

    /// Drops the creator end (the multi-producer consumer, the broadcast producer); for good:
    /// its name is removed.
    fn drop_creator(&mut self) {
        match &mut self.ends {
            Ends::Mpsc { consumer, .. } => {
                if let Some(c) = consumer.take() {
                    timed("drop consumer", || drop(c));
                }
            }
            Ends::Broadcast { producer, .. } => {
                if let Some(p) = producer.take() {
                    timed("drop producer", || drop(p));
                }
            }
        }
    }

    fn drop_all(&mut self) {
        match &mut self.ends {
            Ends::Mpsc {
                consumer,
                producers,
                ..
            } => {
                for p in producers.iter_mut() {
                    timed("drop producer", || drop(p.take()));
                }
                timed("drop consumer", || drop(consumer.take()));
            }
            Ends::Broadcast {
                producer,
                consumers,
                ..
            } => {
                for c in consumers.iter_mut() {
                    timed("drop consumer", || drop(c.take()));
                }
                timed("drop producer", || drop(producer.take()));
            }
        }
    }
}

fuzz_target!(|data: &[u8]| run(data));

fn run(data: &[u8]) {
    let mut s = Script { data, at: 0 };
    let config = s.u8();
    if config & 2 != 0 {
        play::<Big>(config, &mut s);
    } else {
        play::<Small>(config, &mut s);
    }
}

fn play<T: Numbered>(config: u8, s: &mut Script) {
    let mpsc = config & 1 == 0;
    let region = [256usize, 1024, 8192, 64 << 10][usize::from((config >> 2) & 3)];
    let places = usize::from((config >> 4) & 3) + 1;
    let wait = if config & 64 != 0 {
        Wait::BusySpin
    } else {
        Wait::SpinThenPark {
            spins: 16,
            yields: 1,
        }
    };
    let lossy = config & 128 != 0;
    let name = unique_name();
    trace!(
        "{name}: {} {} places, {}, region {region}, {wait:?}{}",
        if mpsc { "mpsc" } else { "broadcast" },
        places,
        core::any::type_name::<T>(),
        if lossy && !mpsc { ", DropLagging" } else { "" },
    );
    let ends = if mpsc {
        let consumer = Channel::<T>::mpsc()
            .capacity_bytes(region)
            .max_producers(places)
            .wait(wait)
            .shared(&name)
            .create_consumer()
            .unwrap_or_else(|e| panic!("creating a fresh channel {name}: {e}"));
        Ends::Mpsc {
            consumer: Some(consumer),
            producers: [None, None],
            lanes: vec![VecDeque::new(); places],
        }
    } else {
        let backpressure = if lossy {
            Backpressure::DropLagging { after: WAIT }
        } else {
            Backpressure::Block
        };
        let producer = Channel::<T>::broadcast()
            .capacity_bytes(region)
            .max_consumers(places)
            .backpressure(backpressure)
            .wait(wait)
            .shared(&name)
            .create_producer()
            .unwrap_or_else(|e| panic!("creating a fresh channel {name}: {e}"));
        Ends::Broadcast {
            producer: Some(producer),
            consumers: [None, None],
            lossy,
        }
    };
    let Some(hostile) = Hostile::map(&name) else {
        panic!("mapping /dev/shm/{name} as the peer");
    };
    let mut w = World {
        name,
        hostile,
        places,
        ends,
        clean: true,
        next: 0,
        maps: Vec::new(),
    };
    // One handle on the many side from the start.
    w.reopen(0);

    for _ in 0..MAX_OPS {
        if s.done() {
            break;
        }
        step(&mut w, s, region);
    }

    // Dropping corrupted ends must not hang or panic either.
    w.drop_all();
    let _ = psyne::transport::shm::remove(&w.name);
}

/// A value worth writing into a word: a literal, or one near what the checks compare against.
fn value(s: &mut Script, region: u64, current: u64) -> u64 {
    match s.u8() % 16 {
        0 => 0,
        1 => u64::MAX,
        2 => region,
        3 => region + 64,
        4 => u64::from(s.u8()) * 64,
        5 => u64::from(s.u8()),
        6 => u64::from(u32::MAX),
        7 => u64::from(std::process::id()),
        8 => region - MessageHeader::SIZE as u64,
        9 => region / 2,
        10 => 1 << 63,
        11 => current.wrapping_add(region),
        12 => current.wrapping_sub(64),
        13 => current.wrapping_add(64),
        14 => current ^ (1 << (s.u8() % 64)),
        _ => s.u64(),
    }
}

/// Runs one operation of the script.
fn step<T: Numbered>(w: &mut World<T>, s: &mut Script, region: usize) {
    let op = s.u8();
    let len = w.hostile.len;
    let control = HINT_CONTROL.min(len);
    let lines = len / 64;
    let h = usize::from(op >> 7);
    match op % 16 {
        // Peer: bytes into the first pages.
        0 => {
            let off = usize::from(s.u16()) % control;
            let n = usize::from(s.u8() % 16) + 1;
            let bytes = s.bytes(n);
            trace!("peer: write {bytes:02x?} at {off}");
            w.hostile.write(off, &bytes);
            w.clean = false;
        }
        // Peer: a whole header where record headers lie.
        1 => {
            let k = s.u32() as usize % lines.max(1);
            let len_field = match s.u8() % 6 {
                0 => s.u32(),
                1 => size_of::<T>() as u32,
                2 => 0,
                3 => u32::MAX,
                4 => (region - MessageHeader::SIZE) as u32,
                _ => u32::from(s.u8()),
            };
            let type_id = match s.u8() % 3 {
                0 => T::TYPE_ID,
                1 => 0,
                _ => s.u64(),
            };
            let sequence = match s.u8() % 4 {
                0 => u64::from(s.u8() % 8),
                1 => u64::MAX,
                2 => 1 << 63 | u64::from(s.u8() % 8),
                _ => s.u64(),
            };
            let header = MessageHeader {
                len: len_field,
                flags: u32::from(s.u8()),
                type_id,
                sequence,
                timestamp_ns: 0,
            };
            let off = k * 64 + HINT_HEADER;
            trace!("peer: header at {off}: {header:?}");
            w.hostile.write(off, psyne::bytemuck::bytes_of(&header));
            w.clean = false;
        }
        // Peer: bytes near a header.
        2 => {
            let k = s.u32() as usize % lines.max(1);
            let sub = usize::from(s.u8() % 64);
            let n = usize::from(s.u8() % 16) + 1;
            let bytes = s.bytes(n);
            let off = k * 64 + HINT_HEADER + sub;
            trace!("peer: write {bytes:02x?} at {off}");
            w.hostile.write(off, &bytes);
            w.clean = false;
        }
        // Peer: set an aligned word in the first pages.
        3 => {
            let off = w.hostile.word_offset((usize::from(s.u16()) * 8) % control);
            let current = w.hostile.read_word(off);
            let v = value(s, region as u64, current);
            trace!("peer: word at {off}: {current:#x} -> {v:#x}");
            w.hostile.write_word(off, v);
            w.clean = false;
        }
        // Peer: set an aligned word anywhere.
        4 => {
            let off = w.hostile.word_offset(s.u32() as usize * 8);
            let current = w.hostile.read_word(off);
            let v = value(s, region as u64, current);
            trace!("peer: word at {off}: {current:#x} -> {v:#x}");
            w.hostile.write_word(off, v);
            w.clean = false;
        }
        // Peer: bytes anywhere in the object.
        5 => {
            let off = s.u32() as usize % len;
            let n = usize::from(s.u8() % 32) + 1;
            let bytes = s.bytes(n);
            trace!("peer: write {bytes:02x?} at {off}");
            w.hostile.write(off, &bytes);
            w.clean = false;
        }
        6 | 7 => {
            trace!(
                "consumer [{h}]: {}",
                if op % 16 == 6 {
                    "try_recv"
                } else {
                    "recv_timeout"
                }
            );
            w.recv(h, op % 16 == 7);
        }
        // Up to 16 `try_recv`s.
        8 => {
            let k = s.u8() % 16 + 1;
            trace!("consumer [{h}]: {k} x try_recv");
            for _ in 0..k {
                w.recv(h, false);
            }
        }
        // A send, a timed send, a dropped loan.
        9 => {
            trace!("producer [{h}]: try_allocate + send");
            w.send(h, false, true);
        }
        10 => {
            trace!("producer [{h}]: allocate_timeout + send");
            w.send(h, true, true);
        }
        11 => {
            trace!("producer [{h}]: loan dropped");
            w.send(h, false, false);
        }
        // Up to 16 sends.
        12 => {
            let k = s.u8() % 16 + 1;
            trace!("producer [{h}]: {k} x try_allocate + send");
            for _ in 0..k {
                w.send(h, false, true);
            }
        }
        // Drop handle h of the many side and open a place again.
        13 => {
            trace!("reopen [{h}]");
            w.reopen(h);
        }
        // Drop the creator end, for good (one time in four).
        14 => {
            if s.u8() % 4 == 0 {
                trace!("drop the creator end");
                w.drop_creator();
            } else {
                trace!("nop");
            }
        }
        _ => trace!("nop"),
    }
}
