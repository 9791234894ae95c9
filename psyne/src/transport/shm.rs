//! Shared-memory transport: the operating-system side of cross-process channels.
//!
//! The channel API is on the builders ([`ChannelBuilder::shared`](crate::ChannelBuilder::shared),
//! [`RawChannelBuilder::shared`](crate::RawChannelBuilder::shared)) and on
//! [`Channel`](crate::Channel) (`open_consumer`, `open_producer`, `raw_open_consumer`,
//! `raw_open_producer`); the ring protocol and what it checks are in [`crate::ring`]. This module
//! owns the rest: which process is alive, which PID namespace it is in, and what to do with a
//! name left behind by a crashed creator.
//!
//! # Names and lifetime
//!
//! A shared channel is a POSIX shared-memory object `/dev/shm/<name>` (mode 0600: same user
//! only), created with `O_EXCL`. The creating process owns the name: it is removed when the
//! creator's end is dropped (mappings already open stay valid, so the other end keeps working
//! until it too is dropped). A creator ended by a signal it does not handle (SIGINT, SIGTERM,
//! `kill -9`) drops nothing, so its name stays in `/dev/shm`: the next create under that name
//! replaces it (see "Stale names"), and [`remove`] removes a name by hand.
//!
//! # Ends come back
//!
//! While the creator's end lives, the *other* end can be opened again after it was dropped or
//! its process died: a new producer continues the stream (every message the old one fully
//! published is still delivered, nothing half-written ever is), a new consumer continues where
//! the old one released (a message it was reading when it died comes again). The surviving end
//! sees the new peer without being rebuilt; for it, `Disconnected` means "no peer attached now",
//! and a later `recv` (or `allocate`) succeeds once a new peer attached. See
//! [`crate::ring`] ("Ends attach, leave and come back").
//!
//! This module owns creating and opening shared channels (`create_channel`,
//! `open_channel`, used by the builders and `Channel::open_*`), process liveness and the
//! stale-name policy.
//!
//! # Liveness and the PID-namespace assumption
//!
//! Each end records its pid and its process's start time (`/proc/<pid>/stat` field 22). While an
//! end waits for the other (ring full or empty), it checks at most every
//! [`PEER_POLL`](crate::wait::PEER_POLL) that the other process still exists (`kill(pid, 0)`),
//! is not a zombie, and has the recorded start time (so a reused pid is not mistaken for the
//! peer). Pids only mean something inside one PID namespace: both processes must share it (two
//! containers sharing `/dev/shm` but not their PID namespace cannot use shared channels). The
//! creator records the inode of its PID namespace (`/proc/self/ns/pid`) and an opener in another
//! namespace is refused with [`OpenError::ForeignPidNamespace`].
//! Without `/proc`, only `kill(pid, 0)` is used (zombies and reused pids then look alive).
//!
//! Death is checked only when an end finds the ring full (producer) or empty (consumer), by
//! blocking and `_timeout` calls while they wait and by `try_` calls (at most once per
//! `PEER_POLL`), and by `Producer::is_disconnected`. A dead producer is reported after the
//! consumer has received everything it published; a send that finds room succeeds even if the
//! consumer has died (the message is lost, as one sent just before its death would be), and the
//! producer learns of the death when the ring fills up.
//!
//! # Stale names
//!
//! If the creator dies without dropping its end (`kill -9`), its name stays in `/dev/shm`. A
//! creator holds a shared `flock` on its object from the moment `shm_open` created it until its
//! process ends (the kernel drops the lock then, however the process died). Creating a channel
//! under a name that exists then works as follows, never blocking on a lock (a lock on a channel
//! whose creator is already dead is retried for up to 200 ms: a killed multi-threaded process
//! looks dead while its last thread is still closing its files):
//!
//! * the object is not a regular file of this user with mode 0600 (or stricter): the typed
//!   error of that check (`SlabError::ForeignOwner`, `InsecureMode` or `NotRegularFile`, inside
//!   [`CreateError::Slab`]); nothing is touched;
//! * someone holds a lock on it (its creator lives, or another creator is replacing it):
//!   [`CreateError::AlreadyExists`] with the creator's pid when the control block names one;
//! * no lock, and it is a psyne channel of this protocol version: it is *stale*; or no lock,
//!   never initialised (magic word 0) and older than a second: its creator died while setting
//!   it up, it is *abandoned*. Either is removed (under an exclusive `flock`, after checking that
//!   the name still refers to the same object, so two creators racing to replace it never
//!   remove each other's new channel) and the channel is created afresh. A surviving end that
//!   still maps the old object is unaffected;
//! * otherwise (another program's object, another protocol version or PID namespace, or an
//!   uninitialised one younger than a second): [`CreateError::AlreadyExists`], nothing removed.
//!
//! [`remove`] removes a name unconditionally.

use crate::channel::ChannelError;
#[cfg(doc)]
use crate::message::Message;
use crate::ring::{
    ChannelIdentity, Claimed, Creator, MAGIC, OpenFailure, PROTOCOL_VERSION, ProcessStamp, Ring,
    RingConfig, Topology, layout,
};
use crate::slab::errno;
use crate::slab::{Slab, SlabBuilder, SlabError};
use core::fmt;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The pid and start time of this process.
pub(crate) fn this_process() -> ProcessStamp {
    let pid = std::process::id();
    ProcessStamp {
        pid,
        start: proc_stat(pid).map_or(0, |s| s.1),
    }
}

/// The inode of this process's PID namespace, 0 if unknown.
pub(crate) fn pid_namespace() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").map_or(0, |m| m.ino())
}

/// State (field 3) and start time (field 22) of `/proc/<pid>/stat`; `None` if unreadable.
fn proc_stat(pid: u32) -> Option<(u8, u64)> {
    // Called every few milliseconds while an end waits on a peer in another process: no heap
    // allocation (the path and the line live on the stack).
    let mut path = [0u8; 32];
    let mut len = 0;
    for &b in b"/proc/" {
        path[len] = b;
        len += 1;
    }
    let mut digits = [0u8; 10];
    let mut n = 0;
    let mut v = pid;
    loop {
        digits[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for &d in digits[..n].iter().rev() {
        path[len] = d;
        len += 1;
    }
    for &b in b"/stat" {
        path[len] = b;
        len += 1;
    }
    // `path[len]` is 0: NUL-terminated (6 + 10 + 5 bytes at most, in 32).
    // SAFETY: `path` is NUL-terminated; the descriptor is checked and closed below.
    let fd = unsafe {
        libc::open(
            path.as_ptr().cast(),
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY,
        )
    };
    if fd < 0 {
        return None;
    }
    // A stat line is a few hundred bytes (the command name is at most 64 bytes).
    let mut buf = [0u8; 1024];
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: `fd` is open; the destination is the unfilled tail of `buf`.
        let r = unsafe { libc::read(fd, buf[got..].as_mut_ptr().cast(), buf.len() - got) };
        if r > 0 {
            got += r as usize;
        } else if r < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
        {
            continue;
        } else {
            break;
        }
    }
    // SAFETY: `fd` is open and closed once.
    unsafe { libc::close(fd) };
    let text = &buf[..got];
    // Field 2 is the command name in parentheses and may itself hold spaces and parentheses:
    // the fields after it start after the last ')'.
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(text.get(close + 1..)?).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Whether the process `p` recorded in a control block still runs: `kill(pid, 0)` finds it, it
/// is not a zombie, and its start time is `p.start` (when that is known). A pid of 0 or one
/// beyond `i32::MAX` (which `kill` would read as a process group) is not a live process.
pub(crate) fn process_alive(p: ProcessStamp) -> bool {
    let Ok(pid) = i32::try_from(p.pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let r = unsafe { libc::kill(pid, 0) };
    if r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        return false;
    }
    match proc_stat(p.pid) {
        Some((state, start)) => {
            // Z: zombie (killed, not yet reaped); X: dead.
            state != b'Z' && state != b'X' && (p.start == 0 || start == p.start)
        }
        // No /proc entry although kill found it: /proc is not mounted (trust kill), or the
        // process exited in between (then kill fails now).
        None => {
            // SAFETY: as above.
            let r = unsafe { libc::kill(pid, 0) };
            !(r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH))
        }
    }
}

/// What [`remove_if_stale`] found under a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stale {
    /// The name held a stale channel and was removed (or vanished meanwhile): create again.
    Removed,
    /// The name holds something that must be kept: a live channel (its creator's pid, when the
    /// control block names one), one still being created, or an object that is not a psyne
    /// channel of this protocol version.
    Keep(Option<u32>),
    /// The name holds an object psyne must not touch (another user's, group- or
    /// world-accessible, not a regular file): the open's typed error.
    Refused(SlabError),
}

/// A never-initialised object (magic word 0) whose creator holds no lock is abandoned once it
/// is this old: younger, its creator may be between `shm_open` and taking its lock.
const ABANDONED_AFTER: Duration = Duration::from_secs(1);

/// What the first identity words of the object behind `fd` say.
enum Recorded {
    /// A psyne channel of this protocol version in this PID namespace, created by this process.
    Channel(ProcessStamp),
    /// The magic word is 0 (or the object is empty): never initialised.
    Uninitialised,
    /// Something else (another program's object, another version or PID namespace).
    Foreign,
}

/// Reads the identity words of the object behind `fd` (`size` bytes).
fn recorded(fd: &OwnedFd, size: u64) -> Recorded {
    if size < layout::SLOT_TABLE as u64 {
        return if size == 0 {
            Recorded::Uninitialised
        } else {
            Recorded::Foreign
        };
    }
    // SAFETY: a fresh read-only shared mapping of the object's first `SLOT_TABLE` bytes (it is
    // at least that long); checked below, unmapped before returning.
    let ptr = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            layout::SLOT_TABLE,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Recorded::Foreign;
    }
    let base = ptr.cast::<u8>();
    // SAFETY: every offset below plus the size of the value read is within the `SLOT_TABLE`
    // mapped bytes and aligned for the type (the mapping is page-aligned, offsets are multiples
    // of the sizes); any bytes are a valid integer. Volatile: another process may write them.
    let (magic, version, pid, start, ns) = unsafe {
        (
            base.add(layout::MAGIC).cast::<u64>().read_volatile(),
            base.add(layout::VERSION).cast::<u32>().read_volatile(),
            base.add(layout::CREATOR_PID).cast::<u32>().read_volatile(),
            base.add(layout::CREATOR_START)
                .cast::<u64>()
                .read_volatile(),
            base.add(layout::PID_NAMESPACE)
                .cast::<u64>()
                .read_volatile(),
        )
    };
    // SAFETY: unmapping the mapping made above, which nothing else uses.
    unsafe { libc::munmap(ptr, layout::SLOT_TABLE) };
    let own_ns = pid_namespace();
    if magic == 0 {
        Recorded::Uninitialised
    } else if magic != MAGIC
        || version != PROTOCOL_VERSION
        || (ns != 0 && own_ns != 0 && ns != own_ns)
    {
        Recorded::Foreign
    } else {
        Recorded::Channel(ProcessStamp { pid, start })
    }
}

/// How long a lock on a channel whose recorded creator is already dead is retried: a killed
/// multi-threaded creator's main thread is a zombie (dead to [`process_alive`]) while another of
/// its threads may still be closing the process's files, and with them its lock.
const DYING_CREATOR_GRACE: Duration = Duration::from_millis(200);

/// Tries an exclusive `flock` on `fd`, without ever blocking: once, or, when `what` names a
/// creator that is already dead, again every 2 ms for up to [`DYING_CREATOR_GRACE`].
fn lock_exclusive(fd: &OwnedFd, what: &Recorded) -> bool {
    let started = Instant::now();
    loop {
        // SAFETY: `fd` is open; flock has no memory effects. Closing `fd` releases the lock.
        if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return true;
        }
        let dying = matches!(what, Recorded::Channel(c) if !process_alive(*c));
        if !dying || started.elapsed() >= DYING_CREATOR_GRACE {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// How long ago the object behind `fd` changed status (was created or resized).
fn age(fd: &OwnedFd) -> Duration {
    let mut st = core::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `fd` is open; `st` is writable storage for one `stat`.
    if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return Duration::ZERO;
    }
    // SAFETY: fstat succeeded and filled `st`.
    let st = unsafe { st.assume_init() };
    let changed = std::time::UNIX_EPOCH
        + Duration::new(
            st.st_ctime.max(0) as u64,
            st.st_ctime_nsec.clamp(0, 999_999_999) as u32,
        );
    std::time::SystemTime::now()
        .duration_since(changed)
        .unwrap_or(Duration::ZERO)
}

/// Applies the stale-name policy (see the module docs) to the existing object `name`. Never
/// blocks: every lock is tried once, without waiting.
///
/// The creator of a channel holds a shared `flock` on its object from the moment it exists
/// until its process ends (see [`Slab::create_shared`]). So an object on which an exclusive
/// lock can be taken has no live creator: it is stale if it is a psyne channel of this version,
/// or abandoned if it was never initialised and is older than [`ABANDONED_AFTER`]. The
/// exclusive lock also serialises replacers: one at a time checks that the name still refers to
/// the object and removes it.
pub(crate) fn remove_if_stale(name: &str, cname: &CString) -> Stale {
    let (fd, st) = match crate::slab::shm::open_checked(name, cname, false) {
        Ok(opened) => opened,
        Err(SlabError::NotFound { .. }) => return Stale::Removed,
        Err(e) => return Stale::Refused(e),
    };
    let what = recorded(&fd, st.size);
    if !lock_exclusive(&fd, &what) {
        // A live creator (or a replacer checking it right now).
        return Stale::Keep(match what {
            Recorded::Channel(c) => Some(c.pid),
            _ => None,
        });
    }
    match what {
        Recorded::Channel(_) => {}
        Recorded::Uninitialised if age(&fd) >= ABANDONED_AFTER => {}
        Recorded::Uninitialised | Recorded::Foreign => return Stale::Keep(None),
    }
    match crate::slab::shm::open_checked(name, cname, false) {
        Err(SlabError::NotFound { .. }) => Stale::Removed,
        Err(e) => Stale::Refused(e),
        Ok((_, now)) if now.same_object(&st) => {
            // SAFETY: `cname` is NUL-terminated.
            if unsafe { libc::shm_unlink(cname.as_ptr()) } != 0 && errno() != libc::ENOENT {
                return Stale::Refused(SlabError::Shm {
                    name: name.to_owned(),
                    call: "shm_unlink",
                    errno: errno(),
                });
            }
            Stale::Removed
        }
        // Replaced meanwhile by someone else: judge the new object on the next attempt.
        Ok(_) => Stale::Removed,
    }
}

/// Removes the shared-memory name `name` from `/dev/shm`, whatever it holds and whoever created
/// it (processes that have it mapped keep their mapping). Returns whether a name was removed.
///
/// For clean-up scripts and tests; channels remove their own name when the creating end drops,
/// and creating over a stale name replaces it (see the [module docs](self)).
///
/// # Errors
/// [`SlabError::InvalidName`] for a name that could not be a shared
/// slab's; [`SlabError::Shm`] if `shm_unlink` fails for another reason
/// than a missing name.
pub fn remove(name: &str) -> Result<bool, crate::SlabError> {
    let cname = validate(name)?;
    // SAFETY: `cname` is NUL-terminated.
    if unsafe { libc::shm_unlink(cname.as_ptr()) } == 0 {
        return Ok(true);
    }
    match errno() {
        libc::ENOENT => Ok(false),
        e => Err(crate::SlabError::Shm {
            name: name.to_owned(),
            call: "shm_unlink",
            errno: e,
        }),
    }
}

/// Checks a channel name as the slab does (and returns it as the `/name` C string).
pub(crate) use crate::slab::shm::validate;

/// How long an open waits for a creator that is still initialising the name it just created
/// (size 0, or magic word not yet stored) before reporting [`OpenError::NotReady`].
const OPEN_GRACE: Duration = Duration::from_millis(50);

/// How often a create retries after removing a stale name (another process may race for it).
const CREATE_ATTEMPTS: usize = 4;

/// Creates the shared channel `name` (slab from `slab`, ring from `config` and `identity`),
/// applying the stale-name policy (see the module docs), and claims end slot `local` for this
/// process.
pub(crate) fn create_channel(
    name: &str,
    slab: SlabBuilder,
    config: RingConfig,
    identity: &ChannelIdentity,
    local: usize,
) -> Result<Arc<Ring>, CreateError> {
    let cname = validate(name)?;
    let mut attempts = 0;
    let slab = loop {
        match Slab::create_shared(name, slab.clone()) {
            Ok(slab) => break slab,
            Err(SlabError::AlreadyExists { .. }) if attempts < CREATE_ATTEMPTS => {
                attempts += 1;
                match remove_if_stale(name, &cname) {
                    Stale::Removed => continue,
                    Stale::Keep(creator_pid) => {
                        return Err(CreateError::AlreadyExists {
                            name: name.to_owned(),
                            creator_pid,
                        });
                    }
                    Stale::Refused(e) => return Err(CreateError::Slab(e)),
                }
            }
            Err(SlabError::AlreadyExists { .. }) => {
                return Err(CreateError::AlreadyExists {
                    name: name.to_owned(),
                    creator_pid: None,
                });
            }
            Err(e) => return Err(CreateError::Slab(e)),
        }
    };
    Ok(Ring::create(
        slab,
        config,
        identity,
        Some(Creator {
            me: this_process(),
            pid_namespace: pid_namespace(),
            slot: local,
            shared: true,
        }),
    ))
}

/// Which end slot an opener takes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Local {
    /// This slot.
    Slot(usize),
    /// Any free producer slot of a multi-producer ring.
    AnyProducer,
    /// Any free consumer slot of a broadcast ring.
    AnyConsumer,
}

/// Claims `local` in `ring` for `me`: the slot, or the first free producer slot.
fn claim_local(
    ring: &Ring,
    local: Local,
    me: ProcessStamp,
) -> Result<(usize, Claimed), OpenFailure> {
    match local {
        Local::Slot(slot) => ring.claim(slot, me, process_alive).map(|c| (slot, c)),
        Local::AnyProducer => {
            let producers = match ring.topology() {
                Topology::Mpsc { producers } => producers,
                Topology::Spsc | Topology::Broadcast { .. } => 1,
            };
            for slot in 0..producers {
                match ring.claim(slot, me, process_alive) {
                    Ok(claimed) => return Ok((slot, claimed)),
                    Err(OpenFailure::AlreadyConnected { .. }) => continue,
                    Err(f) => return Err(f),
                }
            }
            Err(OpenFailure::TooManyProducers { max: producers })
        }
        Local::AnyConsumer => {
            let Topology::Broadcast { consumers, .. } = ring.topology() else {
                return Err(OpenFailure::Corrupted("topology"));
            };
            for slot in 1..=consumers {
                match ring.claim(slot, me, process_alive) {
                    Ok(claimed) => return Ok((slot, claimed)),
                    Err(OpenFailure::AlreadyConnected { .. }) => continue,
                    Err(f) => return Err(f),
                }
            }
            Err(OpenFailure::TooManyConsumers { max: consumers })
        }
    }
}

/// Opens the shared channel `name`, validates it against `topology` and `identity`, and claims
/// end slot `local` for this process (a slot never attached, or one whose end is gone), waiting
/// up to [`OPEN_GRACE`] for a creator that is still initialising it. Returns the ring and how
/// the slot was claimed.
pub(crate) fn open_channel(
    name: &str,
    topology: Topology,
    identity: &ChannelIdentity,
    local: Local,
    mapping: &SlabBuilder,
) -> Result<(Arc<Ring>, usize, Claimed), OpenError> {
    let started = Instant::now();
    let me = this_process();
    let ns = pid_namespace();
    loop {
        let failure = match Slab::open_shared_with(name, mapping.clone()) {
            Ok(slab) => match Ring::attach(slab, topology, identity, ns) {
                Ok(ring) => match claim_local(&ring, local, me) {
                    Ok((slot, claimed)) => return Ok((ring, slot, claimed)),
                    Err(f) => f,
                },
                Err(f) => f,
            },
            Err(SlabError::NotFound { name }) => return Err(OpenError::NotFound { name }),
            Err(SlabError::SharedEmpty { .. }) => OpenFailure::NotReady,
            Err(e) => return Err(OpenError::Slab(e)),
        };
        if failure != OpenFailure::NotReady {
            return Err(OpenError::from_failure(failure));
        }
        if started.elapsed() >= OPEN_GRACE {
            return Err(OpenError::NotReady {
                name: name.to_owned(),
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Why a shared channel could not be created.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CreateError {
    /// The capacity or message type cannot make a ring (as [`ChannelBuilder::build`](crate::ChannelBuilder::build)).
    Channel(ChannelError),
    /// The name is taken: by a channel whose creator is alive (`creator_pid`), or by something
    /// that is not a stale psyne channel of this version (`creator_pid: None`: another kind of
    /// object, another protocol version or PID namespace, or one never initialised). Nothing was
    /// removed; see [`crate::transport::shm::remove`].
    AlreadyExists {
        /// The name.
        name: String,
        /// The pid of the live creator, when the name holds a live psyne channel.
        creator_pid: Option<u32>,
    },
    /// The shared memory could not be created, sized or mapped, or the name is invalid
    /// ([`SlabError::InvalidName`], [`SlabError::Shm`], [`SlabError::Map`], ...).
    Slab(SlabError),
}

impl fmt::Display for CreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CreateError::Channel(e) => e.fmt(f),
            CreateError::AlreadyExists {
                name,
                creator_pid: Some(pid),
            } => write!(
                f,
                "shared channel {name:?} already exists and its creator (pid {pid}) is alive"
            ),
            CreateError::AlreadyExists {
                name,
                creator_pid: None,
            } => write!(
                f,
                "/dev/shm/{name} exists and is not a stale psyne channel of protocol version \
                 {PROTOCOL_VERSION}; pick another name or remove it"
            ),
            CreateError::Slab(e) => write!(f, "the shared channel could not be created: {e}"),
        }
    }
}

impl std::error::Error for CreateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CreateError::Channel(e) => Some(e),
            CreateError::Slab(e) => Some(e),
            CreateError::AlreadyExists { .. } => None,
        }
    }
}

impl From<ChannelError> for CreateError {
    fn from(e: ChannelError) -> Self {
        CreateError::Channel(e)
    }
}

impl From<SlabError> for CreateError {
    fn from(e: SlabError) -> Self {
        CreateError::Slab(e)
    }
}

/// Why an end of a shared channel could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenError {
    /// No shared channel of this name exists (never created, or its creator's end was dropped).
    NotFound {
        /// The name.
        name: String,
    },
    /// The name exists but its creator had not finished initialising it within 50 ms (or died
    /// while doing so). Retry, or remove the name if its creator is gone.
    NotReady {
        /// The name.
        name: String,
    },
    /// The channel was created by a psyne speaking another protocol version.
    VersionMismatch {
        /// This psyne's [`PROTOCOL_VERSION`].
        expected: u32,
        /// The version in the control block.
        found: u32,
    },
    /// The channel carries another message type (`found` is its [`Message::TYPE_ID`], 0 for a
    /// raw channel; `expected` is 0 when a raw end was asked of a typed channel). Both types are
    /// named ([`Message::NAME`], `"raw"` for a raw channel).
    IncompatibleType {
        /// The type id asked for.
        expected: u64,
        /// The channel's type id.
        found: u64,
        /// The name of the type asked for.
        expected_name: String,
        /// The name of the channel's type, as its creator recorded it (at most 64 bytes).
        found_name: String,
    },
    /// The channel carries a message of the same type id but another layout
    /// ([`Message::FINGERPRINT`]): the two programs were built from different schemas.
    IncompatibleLayout {
        /// The fingerprint asked for.
        expected: u64,
        /// The channel's fingerprint.
        found: u64,
        /// The message type's name.
        name: String,
    },
    /// The channel has another topology (for example a multi-producer channel opened as a
    /// single-producer one): `expected` and `found` are topology tags (1: SPSC).
    TopologyMismatch {
        /// The topology asked for.
        expected: u32,
        /// The channel's.
        found: u32,
    },
    /// The end is already attached to a live process.
    AlreadyConnected {
        /// That process's id.
        pid: u32,
    },
    /// Every producer place of a multi-producer channel is held by a live producer.
    TooManyProducers {
        /// The channel's `max_producers`.
        max: usize,
    },
    /// Every consumer place of a broadcast channel is held by a live consumer.
    TooManyConsumers {
        /// The channel's `max_consumers`.
        max: usize,
    },
    /// Not returned since protocol version 4, where an end that is gone can be opened again
    /// (see the module docs); kept so that code matching on it still compiles.
    EndClosed,
    /// The channel was created in another PID namespace, where pids (and so liveness checks)
    /// mean something else (see [`crate::transport::shm`]).
    ForeignPidNamespace {
        /// This process's PID namespace inode.
        expected: u64,
        /// The creator's.
        found: u64,
    },
    /// The control block failed a check (magic word, region offset or length, positions...):
    /// not a psyne channel, or corrupt memory.
    Corrupted {
        /// What failed the check.
        what: &'static str,
    },
    /// The shared memory could not be opened or mapped, or the name is invalid
    /// ([`SlabError::InvalidName`], [`SlabError::Shm`], [`SlabError::Map`]).
    Slab(SlabError),
}

impl OpenError {
    fn from_failure(f: OpenFailure) -> Self {
        match f {
            // Mapped to `NotReady { name }` by the caller.
            OpenFailure::NotReady => OpenError::Corrupted {
                what: "control block not initialised",
            },
            OpenFailure::VersionMismatch { expected, found } => {
                OpenError::VersionMismatch { expected, found }
            }
            OpenFailure::IncompatibleType {
                expected,
                found,
                expected_name,
                found_name,
            } => OpenError::IncompatibleType {
                expected,
                found,
                expected_name: expected_name.to_owned(),
                found_name,
            },
            OpenFailure::IncompatibleLayout {
                expected,
                found,
                name,
            } => OpenError::IncompatibleLayout {
                expected,
                found,
                name: name.to_owned(),
            },
            OpenFailure::TopologyMismatch { expected, found } => {
                OpenError::TopologyMismatch { expected, found }
            }
            OpenFailure::AlreadyConnected { pid } => OpenError::AlreadyConnected { pid },
            OpenFailure::TooManyProducers { max } => OpenError::TooManyProducers { max },
            OpenFailure::TooManyConsumers { max } => OpenError::TooManyConsumers { max },
            OpenFailure::ForeignPidNamespace { expected, found } => {
                OpenError::ForeignPidNamespace { expected, found }
            }
            OpenFailure::Corrupted(what) => OpenError::Corrupted { what },
        }
    }
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::NotFound { name } => {
                write!(f, "no shared channel named {name:?} (/dev/shm/{name})")
            }
            OpenError::NotReady { name } => write!(
                f,
                "shared channel {name:?} exists but its creator has not initialised it"
            ),
            OpenError::VersionMismatch { expected, found } => write!(
                f,
                "the channel speaks protocol version {found}, this psyne speaks {expected}"
            ),
            OpenError::IncompatibleType {
                expected,
                found,
                expected_name,
                found_name,
            } => write!(
                f,
                "the channel carries {found_name} (type id {found:#018x}), not the expected \
                 {expected_name} ({expected:#018x}; 0 is a raw channel)"
            ),
            OpenError::IncompatibleLayout {
                expected,
                found,
                name,
            } => write!(
                f,
                "the channel's {name} has layout fingerprint {found:#018x}, not \
                 {expected:#018x}: the programs were built from different schemas"
            ),
            OpenError::TopologyMismatch { expected, found } => write!(
                f,
                "the channel has topology {found}, this end needs topology {expected} \
                 (1: one producer, one consumer)"
            ),
            OpenError::AlreadyConnected { pid } => {
                write!(f, "that end of the channel is attached to process {pid}")
            }
            OpenError::TooManyProducers { max } => write!(
                f,
                "all {max} producer places of the channel are held by live producers"
            ),
            OpenError::TooManyConsumers { max } => write!(
                f,
                "all {max} consumer places of the channel are held by live consumers"
            ),
            OpenError::EndClosed => f.write_str("that end of the channel is closed"),
            OpenError::ForeignPidNamespace { expected, found } => write!(
                f,
                "the channel was created in PID namespace {found}, this process is in {expected}"
            ),
            OpenError::Corrupted { what } => {
                write!(f, "the channel's control block is corrupt: bad {what}")
            }
            OpenError::Slab(e) => write!(f, "the shared channel could not be opened: {e}"),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::Slab(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_has_a_start_time() {
        let me = this_process();
        assert_eq!(me.pid, std::process::id());
        assert_ne!(me.start, 0, "/proc/self/stat readable on Linux");
        assert!(process_alive(me));
        assert!(!process_alive(ProcessStamp {
            pid: me.pid,
            start: me.start + 1
        }));
        assert!(!process_alive(ProcessStamp { pid: 0, start: 0 }));
        assert!(!process_alive(ProcessStamp {
            pid: u32::MAX,
            start: 0
        }));
        assert_ne!(pid_namespace(), 0);
    }
}
