//! [`SlabError`] and the reasons a huge-page request can fail.

use std::fmt;

/// Why explicit (`MAP_HUGETLB`) huge pages could not be mapped.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExplicitHugeFailure {
    /// The kernel has no pool for this page size
    /// (`/sys/kernel/mm/hugepages/hugepages-<size>kB` does not exist).
    SizeNotSupported {
        /// The requested huge page size in bytes.
        page_size: usize,
    },
    /// Not enough huge pages of this size are reserved and free.
    NotEnoughReserved {
        /// The requested huge page size in bytes.
        page_size: usize,
        /// Pages the slab needs.
        needed: u64,
        /// Free pages in the pool when the mapping was tried (`None` if unreadable).
        free: Option<u64>,
    },
    /// Shared slabs live in `/dev/shm` (tmpfs), which cannot hold `MAP_HUGETLB` pages.
    SharedNotSupported,
    /// `mmap(MAP_HUGETLB)` failed for another reason.
    Map {
        /// The OS error number.
        errno: i32,
    },
}

impl fmt::Display for ExplicitHugeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SizeNotSupported { page_size } => write!(
                f,
                "the kernel has no {} huge page pool (no {})",
                human(*page_size as u64),
                super::hugepages::pool_dir(*page_size)
            ),
            Self::NotEnoughReserved {
                page_size,
                needed,
                free,
            } => {
                let free = free.map_or_else(|| "an unknown number of".into(), |n| n.to_string());
                write!(
                    f,
                    "{needed} {} huge page(s) needed but {free} free; reserve them as root with \
                     `echo {needed} > {}/nr_hugepages`",
                    human(*page_size as u64),
                    super::hugepages::pool_dir(*page_size)
                )?;
                if *page_size == super::hugepages::SIZE_2M {
                    write!(f, " (or `echo {needed} > /proc/sys/vm/nr_hugepages`)")?;
                }
                Ok(())
            }
            Self::SharedNotSupported => f.write_str(
                "shared slabs live in /dev/shm (tmpfs), which cannot hold MAP_HUGETLB pages",
            ),
            Self::Map { errno } => write!(f, "mmap(MAP_HUGETLB) failed: {}", os(*errno)),
        }
    }
}

/// Why transparent huge pages could not be enabled for a region.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransparentHugeFailure {
    /// The kernel has no transparent huge page support
    /// (`/sys/kernel/mm/transparent_hugepage/enabled` does not exist).
    NotSupportedByKernel,
    /// Transparent huge pages are switched off.
    Disabled {
        /// The sysfs file that says so.
        file: &'static str,
        /// Its selected mode (e.g. `never`).
        mode: String,
    },
    /// Transparent huge pages are 2 MiB; a different page size was required.
    SizeNotSupported {
        /// The required page size in bytes.
        page_size: usize,
    },
    /// The existing shared object's size is not a multiple of 2 MiB, so a mapping of it cannot
    /// be a transparent-huge-page region.
    ObjectNotHugeAligned {
        /// The object's size in bytes (rounded up to whole base pages).
        size: usize,
    },
    /// `madvise(MADV_HUGEPAGE)` failed.
    Madvise {
        /// The OS error number.
        errno: i32,
    },
}

impl fmt::Display for TransparentHugeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotSupportedByKernel => f.write_str(
                "the kernel has no transparent huge page support \
                 (no /sys/kernel/mm/transparent_hugepage/enabled)",
            ),
            Self::Disabled { file, mode } => {
                // The anonymous setting calls its opt-in mode `madvise`, the shmem one `advise`.
                let opt_in = if file.ends_with("shmem_enabled") {
                    "advise"
                } else {
                    "madvise"
                };
                write!(
                    f,
                    "transparent huge pages are disabled ({file} is `{mode}`; \
                     `echo {opt_in} > {file}` as root enables them for madvised regions)"
                )
            }
            Self::SizeNotSupported { page_size } => write!(
                f,
                "transparent huge pages are 2 MiB, not {}",
                human(*page_size as u64)
            ),
            Self::ObjectNotHugeAligned { size } => write!(
                f,
                "the shared object's size ({size} bytes) is not a multiple of 2 MiB, the unit of \
                 transparent huge pages"
            ),
            Self::Madvise { errno } => write!(f, "madvise(MADV_HUGEPAGE) failed: {}", os(*errno)),
        }
    }
}

/// Errors from building, opening or placing a [`Slab`](super::Slab), and from the NUMA helpers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlabError {
    /// A size of zero bytes was requested.
    ZeroSize,
    /// The size, rounded up to whole pages, does not fit in `usize`.
    SizeOverflow {
        /// Requested size in bytes.
        size: usize,
        /// Page size it was rounded to.
        page_size: usize,
    },
    /// `mmap` failed.
    Map {
        /// Requested size in bytes.
        size: usize,
        /// The OS error number.
        errno: i32,
    },
    /// [`HugePages::Require`](super::HugePages::Require) could not be met: neither explicit nor
    /// transparent huge pages were available. Both reasons are given.
    HugePagesUnavailable {
        /// Why explicit (`MAP_HUGETLB`) pages failed.
        explicit: ExplicitHugeFailure,
        /// Why transparent huge pages failed.
        transparent: TransparentHugeFailure,
    },
    /// [`Lock::Require`](super::Lock::Require) could not be met: `mlock` failed.
    Lock {
        /// Bytes that were to be locked.
        size: usize,
        /// The soft `RLIMIT_MEMLOCK` in bytes (`None`: unlimited or unreadable).
        limit: Option<u64>,
        /// The OS error number.
        errno: i32,
    },
    /// Faulting the pages in (`populate`) failed.
    Populate {
        /// The OS error number.
        errno: i32,
    },
    /// A NUMA node was requested but psyne was built without the `numa` feature.
    NumaUnsupported,
    /// The requested NUMA node does not exist.
    NumaNodeNotFound {
        /// The requested node (OS index).
        node: u32,
        /// The nodes that exist (OS indices).
        available: Vec<u32>,
    },
    /// The requested CPU core does not exist.
    CoreNotFound {
        /// The requested core (logical index, as listed by `numa::topology()`).
        core: u32,
        /// Number of cores.
        available: u32,
    },
    /// The hardware topology could not be read (hwloc failed).
    Topology {
        /// hwloc's message.
        reason: String,
    },
    /// Binding memory to a NUMA node, or reading where pages are, failed.
    NumaBind {
        /// The node (OS index).
        node: u32,
        /// hwloc's message.
        reason: String,
    },
    /// Binding the calling thread to CPUs failed.
    CpuBind {
        /// hwloc's message.
        reason: String,
    },
    /// CUDA host registration was requested but CUDA cannot be used: psyne was built without the
    /// `cuda` feature, the driver library is missing, or there is no usable device.
    CudaUnavailable {
        /// What is missing.
        reason: String,
    },
    /// The CUDA driver refused to register (or unregister) the slab.
    CudaRegister {
        /// The driver's error.
        reason: String,
    },
    /// A shared-slab name is not valid.
    InvalidName {
        /// The name as given (lossily converted if it holds a NUL).
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A shared slab of this name already exists.
    AlreadyExists {
        /// The name.
        name: String,
    },
    /// No shared slab of this name exists.
    NotFound {
        /// The name.
        name: String,
    },
    /// The shared slab exists but has size 0 (its creator has not sized it yet).
    SharedEmpty {
        /// The name.
        name: String,
    },
    /// Another shared-memory call failed (permissions, limits...).
    Shm {
        /// The name.
        name: String,
        /// The failing call (`shm_open`, `posix_fallocate`, `fstat`, `mmap`).
        call: &'static str,
        /// The OS error number.
        errno: i32,
    },
    /// `/dev/shm` has no room for a new shared slab's blocks (the tmpfs is full, or its `size=`
    /// limit or the memory behind it is reached). Creating reserves every block, so this is
    /// reported at creation instead of as a `SIGBUS` at the first write; the name was removed.
    NoSpace {
        /// The name.
        name: String,
        /// Bytes that were to be reserved.
        size: usize,
    },
    /// The name holds something other than a regular shared-memory object (a FIFO, a symbolic
    /// link, a directory, a device...); it was not used.
    NotRegularFile {
        /// The name.
        name: String,
    },
    /// The shared object belongs to another user: it may be a squatter impersonating the peer,
    /// so it was not used.
    ForeignOwner {
        /// The name.
        name: String,
        /// The uid that owns the object.
        owner_uid: u32,
        /// This process's effective uid.
        our_uid: u32,
    },
    /// The shared object grants permissions to its group or to others (psyne creates objects
    /// with mode 0600), so another user may have written it; it was not used.
    InsecureMode {
        /// The name.
        name: String,
        /// The object's permission bits (`mode & 0o7777`).
        mode: u32,
    },
    /// The shared object shrank below the size this process mapped while it was being mapped
    /// (a peer truncated it): touching the pages past its end would raise `SIGBUS`.
    SharedShrunk {
        /// The name.
        name: String,
        /// Bytes mapped.
        mapped: usize,
        /// The object's size afterwards.
        size: u64,
    },
}

impl fmt::Display for SlabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlabError::ZeroSize => f.write_str("a slab of 0 bytes was requested"),
            SlabError::SizeOverflow { size, page_size } => write!(
                f,
                "{size} bytes rounded up to {} pages overflows usize",
                human(*page_size as u64)
            ),
            SlabError::Map { size, errno } => {
                write!(f, "mmap of {size} bytes failed: {}", os(*errno))
            }
            SlabError::HugePagesUnavailable {
                explicit,
                transparent,
            } => write!(
                f,
                "huge pages were required but none are available: explicit: {explicit}; \
                 transparent: {transparent}"
            ),
            SlabError::Lock { size, limit, errno } => {
                write!(f, "mlock of {size} bytes failed ({}); ", os(*errno))?;
                match limit {
                    Some(l) => write!(
                        f,
                        "RLIMIT_MEMLOCK is {l} bytes: raise it (`ulimit -l`, limits.conf, \
                         LimitMEMLOCK= in systemd) or grant CAP_IPC_LOCK"
                    ),
                    None => {
                        f.write_str("RLIMIT_MEMLOCK is unlimited; the system is short of memory")
                    }
                }
            }
            SlabError::Populate { errno } => {
                write!(f, "faulting in the slab's pages failed: {}", os(*errno))
            }
            SlabError::NumaUnsupported => f.write_str(
                "a NUMA node was requested but psyne was built without the `numa` feature \
                 (enable it; it needs libhwloc-dev and libudev-dev)",
            ),
            SlabError::NumaNodeNotFound { node, available } => {
                write!(f, "NUMA node {node} does not exist; nodes: {available:?}")
            }
            SlabError::CoreNotFound { core, available } => write!(
                f,
                "CPU core {core} does not exist; there are {available} cores (0..{available})"
            ),
            SlabError::Topology { reason } => {
                write!(f, "reading the hardware topology failed: {reason}")
            }
            SlabError::NumaBind { node, reason } => {
                write!(f, "binding memory to NUMA node {node} failed: {reason}")
            }
            SlabError::CpuBind { reason } => {
                write!(f, "binding the thread to CPUs failed: {reason}")
            }
            SlabError::CudaUnavailable { reason } => write!(f, "CUDA is unavailable: {reason}"),
            SlabError::CudaRegister { reason } => {
                write!(f, "CUDA host registration failed: {reason}")
            }
            SlabError::InvalidName { name, reason } => {
                write!(f, "invalid shared slab name {name:?}: {reason}")
            }
            SlabError::AlreadyExists { name } => write!(
                f,
                "shared slab {name:?} already exists (/dev/shm/{name}); pick another name or \
                 remove the stale one"
            ),
            SlabError::NotFound { name } => {
                write!(f, "no shared slab named {name:?} (/dev/shm/{name})")
            }
            SlabError::SharedEmpty { name } => write!(
                f,
                "shared slab {name:?} exists but has size 0: its creator has not sized it yet"
            ),
            SlabError::Shm { name, call, errno } => {
                write!(f, "{call} for shared slab {name:?} failed: {}", os(*errno))
            }
            SlabError::NoSpace { name, size } => write!(
                f,
                "no room in /dev/shm for the {} of shared slab {name:?} (the tmpfs is full or at \
                 its size= limit): remove stale objects from /dev/shm, or remount it larger \
                 (`mount -o remount,size=... /dev/shm`)",
                human(*size as u64)
            ),
            SlabError::NotRegularFile { name } => write!(
                f,
                "/dev/shm/{name} is not a regular file (a FIFO, link, directory or device?); \
                 it was not opened as shared slab {name:?}"
            ),
            SlabError::ForeignOwner {
                name,
                owner_uid,
                our_uid,
            } => write!(
                f,
                "shared slab {name:?} (/dev/shm/{name}) is owned by uid {owner_uid}, not by this \
                 process's uid {our_uid}: refusing an object another user could have planted"
            ),
            SlabError::InsecureMode { name, mode } => write!(
                f,
                "shared slab {name:?} (/dev/shm/{name}) has mode {mode:o}, which lets its group \
                 or others access it; psyne objects are 0600: refusing it"
            ),
            SlabError::SharedShrunk { name, mapped, size } => write!(
                f,
                "shared slab {name:?} shrank to {size} bytes while {mapped} bytes were being \
                 mapped (a peer truncated it)"
            ),
        }
    }
}

impl std::error::Error for SlabError {}

fn os(errno: i32) -> std::io::Error {
    std::io::Error::from_raw_os_error(errno)
}

/// `2 MiB`, `1 GiB`, `4 KiB` or a byte count.
pub(crate) fn human(bytes: u64) -> String {
    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    match bytes {
        b if b >= GIB && b % GIB == 0 => format!("{} GiB", b / GIB),
        b if b >= MIB && b % MIB == 0 => format!("{} MiB", b / MIB),
        b if b >= KIB && b % KIB == 0 => format!("{} KiB", b / KIB),
        b => format!("{b} bytes"),
    }
}
