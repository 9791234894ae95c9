//! The small operating-system helpers the whole crate shares: the calling thread's `errno` and
//! `fstat` as a plain struct. One copy each, so every module reads them the same way.
//!
//! This module makes no policy decisions (what owner or mode is acceptable is
//! [`shm::open_checked`](super::shm::open_checked)'s business).

use std::os::fd::{AsFd, AsRawFd};

/// The calling thread's last OS error number (`errno`), or 0 if there is none.
pub(crate) fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// What `fstat` says about an open file, reduced to what the crate decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ObjectStat {
    /// Size in bytes (`st_size`; a negative size, which no file system reports, reads as 0).
    pub(crate) size: u64,
    /// Owner (`st_uid`).
    pub(crate) uid: u32,
    /// File type and permission bits (`st_mode`).
    pub(crate) mode: u32,
    /// Device of the file system holding the file (`st_dev`).
    pub(crate) dev: u64,
    /// Inode number (`st_ino`); with `dev`, the file's identity while it exists.
    pub(crate) ino: u64,
}

impl ObjectStat {
    /// Whether the file is a regular file (`S_ISREG`).
    pub(crate) fn is_regular(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }

    /// The permission bits (`mode & 0o7777`).
    pub(crate) fn permissions(&self) -> u32 {
        self.mode & 0o7777
    }

    /// Whether `self` and `other` describe the same file (same device and inode).
    pub(crate) fn same_object(&self, other: &ObjectStat) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }
}

/// `fstat(fd)`; `Err(errno)` if it fails.
pub(crate) fn fstat(fd: &impl AsFd) -> Result<ObjectStat, i32> {
    let mut st = core::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: the descriptor is open for the lifetime of the borrow, and `st` is writable
    // storage for one `stat`.
    if unsafe { libc::fstat(fd.as_fd().as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return Err(errno());
    }
    // SAFETY: fstat succeeded, so it filled `st`.
    let st = unsafe { st.assume_init() };
    Ok(ObjectStat {
        size: u64::try_from(st.st_size).unwrap_or(0),
        uid: st.st_uid,
        mode: st.st_mode,
        dev: st.st_dev,
        ino: st.st_ino,
    })
}

/// This process's effective uid.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}
