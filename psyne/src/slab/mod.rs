//! Slabs: the memory every channel lives in.
//!
//! A [`Slab`] is one contiguous, page-aligned, zero-filled mapping. It owns the mapping and unmaps
//! it on drop. This module never interprets the bytes it holds.
//!
//! (Minimal first version: anonymous private mappings only. Huge pages, NUMA placement, locking,
//! CUDA registration and shared mappings build on this.)

use core::ptr::NonNull;
use std::fmt;

/// Errors from building or opening a [`Slab`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlabError {
    /// A size of zero bytes was requested.
    ZeroSize,
    /// `mmap` failed.
    Map {
        /// Requested size in bytes.
        size: usize,
        /// The OS error number.
        errno: i32,
    },
}

impl fmt::Display for SlabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlabError::ZeroSize => f.write_str("a slab of 0 bytes was requested"),
            SlabError::Map { size, errno } => write!(
                f,
                "mmap of {size} bytes failed: {}",
                std::io::Error::from_raw_os_error(*errno)
            ),
        }
    }
}

impl std::error::Error for SlabError {}

/// Builder for a [`Slab`]; see [`Slab::builder`].
#[derive(Debug, Clone)]
pub struct SlabBuilder {
    size: usize,
}

impl SlabBuilder {
    /// Maps the slab.
    pub fn build(self) -> Result<Slab, SlabError> {
        if self.size == 0 {
            return Err(SlabError::ZeroSize);
        }
        // SAFETY: an anonymous private mapping with no address hint has no preconditions; the
        // result is checked against MAP_FAILED before use.
        let ptr = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                self.size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(SlabError::Map {
                size: self.size,
                errno: std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            });
        }
        Ok(Slab {
            // SAFETY: mmap succeeded, so `ptr` is a non-null page-aligned address.
            ptr: unsafe { NonNull::new_unchecked(ptr.cast()) },
            len: self.size,
        })
    }
}

/// One contiguous, page-aligned, zero-filled memory mapping.
pub struct Slab {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a Slab is a plain owned memory region; it hands out raw pointers only, and whoever
// dereferences them (the ring) is responsible for synchronisation.
unsafe impl Send for Slab {}
// SAFETY: as above; `&Slab` gives no safe access to the bytes.
unsafe impl Sync for Slab {}

impl Slab {
    /// Starts building a slab of `size_bytes` (rounded up to whole pages by the OS).
    pub fn builder(size_bytes: usize) -> SlabBuilder {
        SlabBuilder { size: size_bytes }
    }

    /// Start of the mapping (page-aligned).
    pub fn as_ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// Length of the mapping in bytes, as requested.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the slab is empty (never true for a built slab).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Debug for Slab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slab")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .finish()
    }
}

impl Drop for Slab {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe exactly the mapping created in `build`, unmapped only here.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}
