//! POSIX shared-memory objects (`shm_open`) behind shared slabs: name validation, create
//! (`O_EXCL`, mode 0600), open, size and unlink. This module never maps memory; `Slab` does.

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};

use super::SlabError;

/// Longest accepted name in bytes (`NAME_MAX`: the name becomes one file in `/dev/shm`).
pub(crate) const MAX_NAME_LEN: usize = 255;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

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

/// Creates a new object (`O_CREAT | O_EXCL`, mode 0600).
pub(crate) fn create(name: &str, cname: &CString) -> Result<OwnedFd, SlabError> {
    // SAFETY: `cname` is a valid NUL-terminated string; the returned fd is checked.
    let fd = unsafe {
        libc::shm_open(
            cname.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
            0o600 as libc::mode_t,
        )
    };
    if fd < 0 {
        let e = errno();
        return Err(if e == libc::EEXIST {
            SlabError::AlreadyExists {
                name: name.to_owned(),
            }
        } else {
            SlabError::Shm {
                name: name.to_owned(),
                call: "shm_open",
                errno: e,
            }
        });
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens an existing object read-write and returns it with its size.
pub(crate) fn open(name: &str, cname: &CString) -> Result<(OwnedFd, usize), SlabError> {
    // SAFETY: `cname` is a valid NUL-terminated string; the returned fd is checked.
    let fd = unsafe { libc::shm_open(cname.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC, 0) };
    if fd < 0 {
        let e = errno();
        return Err(if e == libc::ENOENT {
            SlabError::NotFound {
                name: name.to_owned(),
            }
        } else {
            SlabError::Shm {
                name: name.to_owned(),
                call: "shm_open",
                errno: e,
            }
        });
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut st = core::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `fd` is open and `st` is writable storage for one `stat`.
    if unsafe { libc::fstat(std::os::fd::AsRawFd::as_raw_fd(&fd), st.as_mut_ptr()) } != 0 {
        return Err(SlabError::Shm {
            name: name.to_owned(),
            call: "fstat",
            errno: errno(),
        });
    }
    // SAFETY: fstat succeeded, so it filled `st`.
    let size = unsafe { st.assume_init() }.st_size;
    if size <= 0 {
        return Err(SlabError::SharedEmpty {
            name: name.to_owned(),
        });
    }
    Ok((fd, size as usize))
}

/// Sets the object's size.
pub(crate) fn resize(name: &str, fd: &OwnedFd, len: usize) -> Result<(), SlabError> {
    let shm_err = |errno| SlabError::Shm {
        name: name.to_owned(),
        call: "ftruncate",
        errno,
    };
    let len = libc::off_t::try_from(len).map_err(|_| shm_err(libc::EFBIG))?;
    // SAFETY: `fd` is open read-write.
    if unsafe { libc::ftruncate(std::os::fd::AsRawFd::as_raw_fd(fd), len) } != 0 {
        return Err(shm_err(errno()));
    }
    Ok(())
}

/// Removes the name (existing mappings stay valid).
pub(crate) fn unlink(cname: &CString) {
    // SAFETY: `cname` is a valid NUL-terminated string; failure (already gone) is harmless.
    unsafe {
        libc::shm_unlink(cname.as_ptr());
    }
}
