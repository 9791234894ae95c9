//! POSIX shared-memory objects (`shm_open`) behind shared slabs: name validation, create
//! (`O_EXCL`, mode 0600), checked open, block reservation, size checks and unlink. This module
//! never maps memory; `Slab` does.
//!
//! # What the code guarantees (threat model)
//!
//! A shared slab is the file `/dev/shm/<name>` on a tmpfs. The peer that maps it is untrusted.
//!
//! **Another user (a different effective uid, without `CAP_DAC_OVERRIDE`/`CAP_FOWNER`):**
//! - cannot read, write, map, resize or lock a slab's object: the creator makes it with
//!   `O_CREAT | O_EXCL` and mode 0600, so only its owner (and root) may open it;
//! - cannot make a creator use its object: creation is `O_EXCL` and fails with
//!   [`SlabError::AlreadyExists`] when the name is taken;
//! - cannot make an opener (or the stale-name logic) use its object: every open of an existing
//!   object goes through [`open_checked`], which refuses an object owned by another uid
//!   ([`SlabError::ForeignOwner`]) or with any group or other permission bit
//!   ([`SlabError::InsecureMode`]), so squatting a well-known name does not impersonate the peer;
//! - cannot stall an opener with a FIFO (or device) at the name: opens use `O_NONBLOCK` and
//!   `O_NOFOLLOW` and then require a regular file ([`SlabError::NotRegularFile`]; a symbolic link
//!   is refused the same way);
//! - **can** still deny the name (create an object or file there first) or fill `/dev/shm`: the
//!   channel then fails to build with a typed error, nothing crashes.
//!
//! **The same user (any process of the creator's uid) can do everything the owner can**, and
//! psyne cannot stop it: shm objects carry no per-process rights and cannot be sealed (seals exist
//! only for `memfd`). In particular such a peer can:
//! - write any bytes into the shared pages (the ring bounds-checks everything it reads);
//! - **shrink the object** (`ftruncate`, down to 0) after both sides mapped it. Then any access
//!   to a mapped page past the new end raises `SIGBUS` in the honest process, which kills it
//!   unless it handles the signal. This cannot be prevented for `shm_open` objects. Psyne checks
//!   the size again after mapping (openers: [`SlabError::SharedShrunk`]), which catches a
//!   truncation that happens while a slab is being opened, not one that happens later;
//! - unlink or replace the name. A creator removes its name on drop only while the name still
//!   refers to its own object (see [`unlink_if_same`] for the remaining window).
//!
//! **A full `/dev/shm`** (tmpfs at its `size=` limit, or out of memory) is an error when the slab
//! is created ([`SlabError::NoSpace`], the name removed): creation reserves every block of the
//! object with `posix_fallocate` before anyone can see its size, so a slab built with
//! `populate(false)` no longer dies with `SIGBUS` at its first write. The object's pages are
//! therefore committed memory from creation on (they are zero-filled on first touch).

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::SlabError;
use super::os::{self, ObjectStat, errno};

/// Longest accepted name in bytes (`NAME_MAX`: the name becomes one file in `/dev/shm`).
pub(crate) const MAX_NAME_LEN: usize = 255;

/// Checks a user-facing name (no leading slash) and returns the `shm_open` name (`/name`).
pub(crate) fn validate(name: &str) -> Result<CString, SlabError> {
    let invalid = |reason| SlabError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("the name is empty"));
    }
    if name.contains('\0') {
        return Err(invalid("the name contains a NUL byte"));
    }
    if name.contains('/') {
        return Err(invalid(
            "the name contains '/' (give the bare name, without a leading '/')",
        ));
    }
    if name == "." || name == ".." {
        return Err(invalid("the name is '.' or '..'"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid("the name is longer than 255 bytes"));
    }
    CString::new(format!("/{name}")).map_err(|_| invalid("the name contains a NUL byte"))
}

/// `shm_open(cname, flags, mode)` as an owned descriptor; `Err(errno)` on failure.
fn shm_open(cname: &CStr, flags: libc::c_int, mode: libc::mode_t) -> Result<OwnedFd, i32> {
    // SAFETY: `cname` is a valid NUL-terminated string; the returned fd is checked.
    let fd = unsafe { libc::shm_open(cname.as_ptr(), flags | libc::O_CLOEXEC, mode) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Creates a new object (`O_CREAT | O_EXCL`, mode 0600) of size 0.
pub(crate) fn create(name: &str, cname: &CStr) -> Result<OwnedFd, SlabError> {
    shm_open(
        cname,
        libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
        0o600,
    )
    .map_err(|e| {
        if e == libc::EEXIST {
            SlabError::AlreadyExists {
                name: name.to_owned(),
            }
        } else {
            shm_error(name, "shm_open", e)
        }
    })
}

fn shm_error(name: &str, call: &'static str, errno: i32) -> SlabError {
    SlabError::Shm {
        name: name.to_owned(),
        call,
        errno,
    }
}

/// Opens the existing object `cname` (read-write when `write`, else read-only) without blocking
/// and without following a symbolic link (`O_NONBLOCK | O_NOFOLLOW`), and checks that it is a
/// regular file owned by this process's effective uid with no group or other permission bits
/// ([`check_object`]). Every open of an existing object in the crate goes through here.
///
/// The descriptor keeps `O_NONBLOCK`, which changes nothing for `mmap`, `fstat`, `ftruncate` or
/// `flock` on a regular file.
///
/// # Errors
/// [`SlabError::NotFound`]; [`SlabError::NotRegularFile`] (also for a symbolic link);
/// [`SlabError::ForeignOwner`]; [`SlabError::InsecureMode`]; [`SlabError::Shm`] for another
/// failure of `shm_open` or `fstat`.
pub(crate) fn open_checked(
    name: &str,
    cname: &CStr,
    write: bool,
) -> Result<(OwnedFd, ObjectStat), SlabError> {
    let access = if write { libc::O_RDWR } else { libc::O_RDONLY };
    let fd = match shm_open(cname, access | libc::O_NONBLOCK | libc::O_NOFOLLOW, 0) {
        Ok(fd) => fd,
        Err(libc::ENOENT) => {
            return Err(SlabError::NotFound {
                name: name.to_owned(),
            });
        }
        // O_NOFOLLOW on a symbolic link.
        Err(libc::ELOOP) => {
            return Err(SlabError::NotRegularFile {
                name: name.to_owned(),
            });
        }
        Err(libc::EACCES) => return Err(explain_no_access(name)),
        Err(e) => return Err(shm_error(name, "shm_open", e)),
    };
    let st = os::fstat(&fd).map_err(|e| shm_error(name, "fstat", e))?;
    check_object(name, &st)?;
    Ok((fd, st))
}

/// Why an open was refused with `EACCES`: the object's owner or mode, read from the path (for
/// the message only: nothing is opened), or else the plain error.
fn explain_no_access(name: &str) -> SlabError {
    use std::os::unix::fs::MetadataExt;
    let denied = shm_error(name, "shm_open", libc::EACCES);
    let Ok(meta) = std::fs::symlink_metadata(format!("/dev/shm/{name}")) else {
        return denied;
    };
    let st = ObjectStat {
        size: meta.size(),
        uid: meta.uid(),
        mode: meta.mode(),
        dev: meta.dev(),
        ino: meta.ino(),
    };
    check_object(name, &st).err().unwrap_or(denied)
}

/// Takes the creator's shared `flock` on its new object `fd`, held for as long as the
/// descriptor is open (the slab's life; the kernel drops it when the process ends, however it
/// ends). Whoever can take an exclusive lock on a channel's object knows its creator is gone:
/// the stale-name policy of `psyne::transport::shm` relies on it. A process that checks the new
/// object at this very moment holds an exclusive lock for a few system calls: retried for at
/// most [`LOCK_ATTEMPTS`] times [`LOCK_PAUSE`].
///
/// # Errors
/// [`SlabError::Shm`] (`call: "flock"`) if the lock cannot be had.
pub(crate) fn hold_creator_lock(name: &str, fd: &OwnedFd) -> Result<(), SlabError> {
    for attempt in 0..LOCK_ATTEMPTS {
        // SAFETY: `fd` is open; flock has no memory effects.
        if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0 {
            return Ok(());
        }
        let e = errno();
        if e != libc::EWOULDBLOCK || attempt + 1 == LOCK_ATTEMPTS {
            return Err(shm_error(name, "flock", e));
        }
        std::thread::sleep(LOCK_PAUSE);
    }
    Err(shm_error(name, "flock", libc::EWOULDBLOCK))
}

/// The policy every opener applies to an existing object: a regular file, owned by this
/// process's effective uid, with no group or other permission bits (psyne creates 0600).
///
/// # Errors
/// [`SlabError::NotRegularFile`], [`SlabError::ForeignOwner`], [`SlabError::InsecureMode`].
pub(crate) fn check_object(name: &str, st: &ObjectStat) -> Result<(), SlabError> {
    if !st.is_regular() {
        return Err(SlabError::NotRegularFile {
            name: name.to_owned(),
        });
    }
    let our_uid = os::euid();
    if st.uid != our_uid {
        return Err(SlabError::ForeignOwner {
            name: name.to_owned(),
            owner_uid: st.uid,
            our_uid,
        });
    }
    if st.permissions() & 0o077 != 0 {
        return Err(SlabError::InsecureMode {
            name: name.to_owned(),
            mode: st.permissions(),
        });
    }
    Ok(())
}

/// Checks that a slab of `size` bytes can be reserved at all (its size fits in `off_t`), before
/// anything is mapped.
///
/// # Errors
/// [`SlabError::Shm`] with `call: "posix_fallocate"` and `EFBIG`.
pub(crate) fn reserve_fits(name: &str, size: usize) -> Result<(), SlabError> {
    match libc::off_t::try_from(size) {
        Ok(_) => Ok(()),
        Err(_) => Err(shm_error(name, "posix_fallocate", libc::EFBIG)),
    }
}

/// Reserves the object's first `len` bytes of blocks (`posix_fallocate`), which also sets its
/// size to `len` once every block is allocated: until then openers see size 0
/// ([`SlabError::SharedEmpty`]), never an object whose pages may be missing.
///
/// On tmpfs the blocks are allocated following the object's memory policy (so a NUMA binding of
/// the creator's mapping made before this call places them) and as base pages unless the mount
/// or `shmem_enabled` makes tmpfs allocate huge pages without a mapping (`huge=always`,
/// `within_size`, `force`).
///
/// # Errors
/// [`SlabError::NoSpace`] when the file system has no room (`ENOSPC`); [`SlabError::Shm`] with
/// `call: "posix_fallocate"` otherwise (`EFBIG` for a size beyond `off_t`).
pub(crate) fn reserve(name: &str, fd: &OwnedFd, len: usize) -> Result<(), SlabError> {
    let err = |errno| shm_error(name, "posix_fallocate", errno);
    let off_len = libc::off_t::try_from(len).map_err(|_| err(libc::EFBIG))?;
    // SAFETY: `fd` is open read-write; posix_fallocate has no memory effects.
    let r = unsafe { libc::posix_fallocate(fd.as_raw_fd(), 0, off_len) };
    match r {
        0 => Ok(()),
        libc::ENOSPC => Err(SlabError::NoSpace {
            name: name.to_owned(),
            size: len,
        }),
        // posix_fallocate returns the error number instead of setting errno.
        e => Err(err(e)),
    }
}

/// Checks that the object behind `fd` still holds at least `size` bytes, of which `mapped`
/// (`size` rounded up to whole pages) are mapped: a peer may have truncated it meanwhile.
///
/// # Errors
/// [`SlabError::SharedShrunk`]; [`SlabError::Shm`] if `fstat` fails.
pub(crate) fn check_size(
    name: &str,
    fd: &OwnedFd,
    size: u64,
    mapped: usize,
) -> Result<(), SlabError> {
    let now = os::fstat(fd).map_err(|e| shm_error(name, "fstat", e))?.size;
    if now < size {
        return Err(SlabError::SharedShrunk {
            name: name.to_owned(),
            mapped,
            size: now,
        });
    }
    Ok(())
}

/// Removes the name unconditionally (existing mappings stay valid).
pub(crate) fn unlink(cname: &CStr) {
    // SAFETY: `cname` is a valid NUL-terminated string; failure (already gone) is harmless.
    unsafe {
        libc::shm_unlink(cname.as_ptr());
    }
}

/// Attempts at the exclusive lock of [`unlink_if_same`], and the pause between two.
const LOCK_ATTEMPTS: u32 = 50;
const LOCK_PAUSE: std::time::Duration = std::time::Duration::from_micros(200);

/// Removes the name `cname` only if it still refers to the object `ours` (open as `fd`), so a
/// creator never removes a newer object that replaced its own. Returns whether it removed it.
///
/// Sequence: take an exclusive `flock` on our own object (bounded: [`LOCK_ATTEMPTS`] tries
/// without blocking, then go on without it), open the name again (`O_NONBLOCK | O_NOFOLLOW`),
/// compare its device and inode with ours, and `shm_unlink` only when they match. The lock is
/// the one the transport's stale-name logic takes before it checks and removes an object, so the
/// two never interleave on the same object.
///
/// The remaining window: POSIX has no "unlink this name if it is this file", so between the
/// comparison and `shm_unlink` (two system calls) a process that does not take the lock (`rm`,
/// `psyne::transport::shm::remove`, another program) may remove our name and create a new object
/// under it, which this call then removes. Only a process of the same user can do that.
pub(crate) fn unlink_if_same(cname: &CStr, ours: &ObjectStat, fd: &OwnedFd) -> bool {
    let mut locked = false;
    for attempt in 0..LOCK_ATTEMPTS {
        // SAFETY: `fd` is open; flock has no memory effects.
        if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            locked = true;
            break;
        }
        if errno() != libc::EWOULDBLOCK || attempt + 1 == LOCK_ATTEMPTS {
            break;
        }
        std::thread::sleep(LOCK_PAUSE);
    }
    let same = shm_open(
        cname,
        libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOFOLLOW,
        0,
    )
    .ok()
    .and_then(|now| os::fstat(&now).ok())
    .is_some_and(|now| now.same_object(ours));
    if same {
        unlink(cname);
    }
    if locked {
        // SAFETY: `fd` is open; releasing the lock taken above.
        unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_UN) };
    }
    same
}
