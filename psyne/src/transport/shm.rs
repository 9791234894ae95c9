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
//! until it too is dropped). Each end attaches once: an end that was dropped (or whose process
//! died) cannot be attached again ([`OpenError::EndClosed`](crate::OpenError::EndClosed)); create
//! a new channel instead.
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
//! namespace is refused with [`OpenError::ForeignPidNamespace`](crate::OpenError::ForeignPidNamespace).
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
//! If the creator dies without dropping its end (`kill -9`), its name stays in `/dev/shm`.
//! Creating a channel under a name that exists then works as follows:
//!
//! * the object is a psyne channel of this protocol version whose recorded creator process is
//!   dead: it is *stale*; it is removed (under an exclusive `flock` of the object, after checking
//!   that the name still refers to the same object, so two creators racing to replace it never
//!   remove each other's new channel) and the channel is created afresh. A surviving end that
//!   still maps the old object is unaffected.
//! * otherwise (the creator is alive, the object is not a psyne channel, is from another protocol
//!   version or another PID namespace, or was never initialised):
//!   [`CreateError::AlreadyExists`](crate::CreateError::AlreadyExists), and nothing is removed.
//!   [`remove`] removes a name unconditionally.

use crate::ring::{MAGIC, PROTOCOL_VERSION, ProcessStamp, layout};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

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
    let text = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stale {
    /// The name held a stale channel and was removed (or vanished meanwhile): create again.
    Removed,
    /// The name holds something that must be kept; the creator's pid if it is a live channel.
    Keep(Option<u32>),
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Opens `cname` read-only; `Err(errno)` on failure.
fn open_ro(cname: &CString) -> Result<OwnedFd, i32> {
    // SAFETY: `cname` is NUL-terminated; the result is checked.
    let fd = unsafe { libc::shm_open(cname.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC, 0) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `(st_dev, st_ino, st_size)` of `fd`.
fn identity(fd: &OwnedFd) -> Option<(u64, u64, i64)> {
    let mut st = core::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `fd` is open; `st` is writable storage for one `stat`.
    if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: fstat succeeded and filled `st`.
    let st = unsafe { st.assume_init() };
    Some((st.st_dev, st.st_ino, st.st_size))
}

/// The creator recorded in the control block of the object behind `fd` (`size` bytes), if it is
/// a psyne channel of this protocol version in this PID namespace.
fn recorded_creator(fd: &OwnedFd, size: i64) -> Option<ProcessStamp> {
    if size < layout::END as i64 {
        return None;
    }
    // SAFETY: a fresh read-only shared mapping of the object's first `END` bytes (it is at least
    // that long); checked below, unmapped before returning.
    let ptr = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            layout::END,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return None;
    }
    let base = ptr.cast::<u8>();
    // SAFETY: every offset below plus the size of the value read is within the `END` mapped
    // bytes and aligned for the type (the mapping is page-aligned, offsets are multiples of the
    // sizes); any bytes are a valid integer. Volatile: another process may write them.
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
    unsafe { libc::munmap(ptr, layout::END) };
    let own_ns = pid_namespace();
    if magic != MAGIC || version != PROTOCOL_VERSION || (ns != 0 && own_ns != 0 && ns != own_ns) {
        return None;
    }
    Some(ProcessStamp { pid, start })
}

/// Applies the stale-name policy (see the module docs) to the existing object `cname`.
pub(crate) fn remove_if_stale(cname: &CString) -> Stale {
    let fd = match open_ro(cname) {
        Ok(fd) => fd,
        Err(libc::ENOENT) => return Stale::Removed,
        Err(_) => return Stale::Keep(None),
    };
    let Some((dev, ino, size)) = identity(&fd) else {
        return Stale::Keep(None);
    };
    let Some(creator) = recorded_creator(&fd, size) else {
        return Stale::Keep(None);
    };
    if process_alive(creator) {
        return Stale::Keep(Some(creator.pid));
    }
    // Exclusive lock on the stale object: of several processes replacing it, one at a time checks
    // that the name still refers to it and removes it; the others then find another object (or
    // none) under the name and leave it alone.
    // SAFETY: `fd` is open; flock has no memory effects.
    if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Stale::Keep(None);
    }
    // Closing `fd` (on return) releases the lock.
    match open_ro(cname) {
        Err(libc::ENOENT) => Stale::Removed,
        Err(_) => Stale::Keep(None),
        Ok(again) => match identity(&again) {
            Some((d, i, _)) if d == dev && i == ino => {
                // SAFETY: `cname` is NUL-terminated.
                unsafe { libc::shm_unlink(cname.as_ptr()) };
                Stale::Removed
            }
            // Replaced meanwhile by someone else: judge the new object on the next attempt.
            Some(_) => Stale::Removed,
            None => Stale::Keep(None),
        },
    }
}

/// Removes the shared-memory name `name` from `/dev/shm`, whatever it holds and whoever created
/// it (processes that have it mapped keep their mapping). Returns whether a name was removed.
///
/// For clean-up scripts and tests; channels remove their own name when the creating end drops,
/// and creating over a stale name replaces it (see the [module docs](self)).
///
/// # Errors
/// [`SlabError::InvalidName`](crate::SlabError::InvalidName) for a name that could not be a shared
/// slab's; [`SlabError::Shm`](crate::SlabError::Shm) if `shm_unlink` fails for another reason
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
