//! Slabs: the memory every channel lives in.
//!
//! A [`Slab`] is one contiguous, page-aligned, zero-filled mapping. This module owns the mapping
//! and everything that decides *where its pages come from*: huge pages (explicit `MAP_HUGETLB`
//! pages, else transparent huge pages, else normal pages), the NUMA node the pages are bound to
//! (feature `numa`, through hwloc), locking them in RAM (`mlock`), registering them with CUDA as
//! pinned host memory (feature `cuda`), and naming them in `/dev/shm` so a second process can map
//! the same bytes ([`Slab::create_shared`], [`Slab::open_shared`]). It unmaps, unlocks,
//! unregisters and unlinks on drop.
//!
//! # Sharing with another process
//!
//! A shared slab is the object `/dev/shm/<name>`, created `O_EXCL` with mode 0600 and every block
//! reserved at creation (a full `/dev/shm` is [`SlabError::NoSpace`] then, not a `SIGBUS` later).
//! Openers refuse anything but a regular file owned by their effective uid without group or other
//! permission bits, and never block on what they find at the name; a creator removes its name on
//! drop only while the name still refers to its own object. So another user can deny a name or
//! fill `/dev/shm`, but cannot read, write or impersonate a slab.
//!
//! A peer of the *same* user can do anything the owner can, and no check stops it: write any
//! bytes, remove or replace the name, and **shrink the object** (`ftruncate`) after both sides
//! mapped it, after which touching a mapped page past the new end raises `SIGBUS` in the honest
//! process. That cannot be prevented for `shm_open` objects (they cannot be sealed; only `memfd`
//! can). Psyne checks the size again once a mapping is set up, which catches a truncation during
//! creation or opening, not a later one.
//!
//! What a slab actually got is recorded and can be queried with [`Slab::placement`]: a
//! preference ([`HugePages::Prefer`], [`Lock::Prefer`]) is never reported as a fact.
//!
//! This module never interprets the bytes it holds (that is the ring's job), never hands out
//! references to them (only a raw pointer), and never changes system settings (huge page pools,
//! transparent huge page modes, limits): when a requirement cannot be met it says which setting
//! to change.
//!
//! ```
//! use psyne::slab::{HugePages, Lock, PageKind, Slab};
//!
//! let slab = Slab::builder(4 << 20)
//!     .huge_pages(HugePages::Prefer) // falls back to normal pages when none are available
//!     .lock(Lock::Prefer)            // records whether locking worked
//!     .build()?;
//! let placement = slab.placement();
//! println!("{placement}");
//! assert!(slab.len() >= 4 << 20);
//! if placement.kind == PageKind::Normal {
//!     assert!(placement.explicit_failure.is_some());
//! }
//! # Ok::<(), psyne::SlabError>(())
//! ```

use core::ptr::NonNull;
use std::ffi::CString;
use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};

#[cfg(feature = "cuda")]
pub(crate) mod cuda;
mod error;
mod hugepages;
#[cfg(feature = "numa")]
pub mod numa;
mod os;
pub(crate) mod shm;
#[cfg(test)]
mod tests;

pub use error::{ExplicitHugeFailure, SlabError, TransparentHugeFailure};
/// The crate's one `errno` reader and one `fstat` helper (the transport uses them too).
pub(crate) use os::{ObjectStat, errno, fstat};

/// Whether a slab should be backed by huge pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HugePages {
    /// Normal pages only.
    #[default]
    Off,
    /// Explicit huge pages of the requested size, else transparent huge pages, else normal
    /// pages. [`Placement`] says which, and why the better ones were not available.
    Prefer,
    /// Explicit huge pages of the requested size, else transparent huge pages (only when the
    /// requested size is 2 MiB), else fail with [`SlabError::HugePagesUnavailable`].
    ///
    /// With transparent huge pages the kernel decides at fault time, per 2 MiB, whether it has a
    /// huge page to give: `Require` guarantees the region is set up for them, and
    /// [`Placement::huge_bytes`] says how much of it they actually back.
    Require,
}

/// Size of explicit huge pages (see [`SlabBuilder::huge_page_size`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HugePageSize {
    /// 2 MiB pages (the default; also the size of transparent huge pages).
    #[default]
    Size2M,
    /// 1 GiB pages.
    Size1G,
}

impl HugePageSize {
    /// The page size in bytes.
    pub const fn bytes(self) -> usize {
        match self {
            HugePageSize::Size2M => hugepages::SIZE_2M,
            HugePageSize::Size1G => hugepages::SIZE_1G,
        }
    }
}

/// Whether a slab's pages should be locked in RAM (`mlock`), so they are never swapped out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Lock {
    /// Do not lock.
    #[default]
    Off,
    /// Try to lock; [`Placement::lock`] records whether it worked.
    Prefer,
    /// Lock, or fail with [`SlabError::Lock`] (which gives `RLIMIT_MEMLOCK`).
    Require,
}

/// The kind of pages backing a slab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PageKind {
    /// Explicit huge pages (`MAP_HUGETLB`) of [`Placement::page_size`], reserved by the kernel
    /// when the slab was mapped: every page of the slab is huge.
    ExplicitHuge,
    /// A 2 MiB-aligned region advised with `madvise(MADV_HUGEPAGE)`. The kernel backs it with
    /// transparent huge pages when it can; how much it did is [`Placement::huge_bytes`].
    TransparentHuge,
    /// Normal pages (no huge-page request was made, or none could be met). When transparent
    /// huge pages are in `always` mode the kernel may still back parts of the slab with them;
    /// [`Placement::huge_bytes`] reports it.
    Normal,
}

/// Outcome of the `mlock` request of a slab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockStatus {
    /// Locking was not requested ([`Lock::Off`]).
    NotRequested,
    /// The whole slab is locked in RAM.
    Locked,
    /// [`Lock::Prefer`] was requested and `mlock` failed; the slab is not locked.
    Failed {
        /// The OS error number of `mlock`.
        errno: i32,
        /// The soft `RLIMIT_MEMLOCK` in bytes at the time (`None`: unlimited or unreadable).
        limit: Option<u64>,
    },
}

/// What a slab actually obtained, as read back from the kernel when [`Slab::placement`] was
/// called. Every field is a fact, or `None` where the fact is unknown; none repeats a request.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Placement {
    /// The size asked for, in bytes (for an opened shared slab, the object's size).
    pub requested_bytes: usize,
    /// The size mapped ([`Slab::len`]): the request rounded up to [`Placement::page_size`].
    pub mapped_bytes: usize,
    /// The page granularity of the mapping: the huge page size for [`PageKind::ExplicitHuge`],
    /// 2 MiB for [`PageKind::TransparentHuge`] (the unit the region is aligned and rounded to;
    /// the kernel may still back parts with 4 KiB pages), else the base page size.
    pub page_size: usize,
    /// The kind of pages.
    pub kind: PageKind,
    /// Bytes resident in RAM now (`/proc/self/smaps` `Rss`, plus explicit huge pages faulted in).
    /// Untouched pages of a fresh slab are not resident. `None`: smaps unreadable.
    pub resident_bytes: Option<u64>,
    /// Bytes backed by huge pages now: for transparent huge pages, smaps `AnonHugePages` (or
    /// `ShmemPmdMapped` for shared slabs); for explicit ones, `Private_Hugetlb + Shared_Hugetlb`.
    /// `None`: smaps unreadable.
    pub huge_bytes: Option<u64>,
    /// Why explicit huge pages were not used, when they were requested and are not in use.
    pub explicit_failure: Option<ExplicitHugeFailure>,
    /// Why transparent huge pages were not used, when the slab fell back to normal pages.
    pub transparent_failure: Option<TransparentHugeFailure>,
    /// The NUMA node this mapping's memory policy binds the pages to (set only when binding
    /// succeeded). For a shared slab the policy is the object's and governs pages allocated after
    /// it was set: a creator binds before reserving the blocks, so all of them follow it; an
    /// opener ([`Slab::open_shared_with`]) finds them already allocated, so for it this records
    /// the request the kernel accepted, and [`numa_nodes`](Self::numa_nodes) says where the pages
    /// are.
    pub numa_bound: Option<u32>,
    /// The NUMA nodes holding the slab's resident pages, as read from the kernel by hwloc. Empty
    /// if no page is resident. `None`: unknown (built without feature `numa`, or the query failed).
    pub numa_nodes: Option<Vec<u32>>,
    /// Outcome of the lock request.
    pub lock: LockStatus,
    /// Bytes locked now (smaps `Locked`). `None`: smaps unreadable.
    pub locked_bytes: Option<u64>,
    /// Whether the CUDA driver reports the slab as registered pinned host memory.
    pub cuda_registered: bool,
    /// The name of the shared slab in `/dev/shm`, if it is one.
    pub shared_name: Option<String>,
}

impl Placement {
    /// The share of the resident bytes that huge pages back, in `0.0..=1.0`; `None` when nothing
    /// is resident or smaps was unreadable.
    pub fn huge_share(&self) -> Option<f64> {
        let huge = self.huge_bytes?;
        if self.kind == PageKind::ExplicitHuge {
            return (huge > 0).then_some(1.0);
        }
        let resident = self.resident_bytes?;
        (resident > 0).then(|| huge as f64 / resident as f64)
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use error::human;
        let kind = match self.kind {
            PageKind::ExplicitHuge => "explicit huge pages",
            PageKind::TransparentHuge => "transparent-huge-page region",
            PageKind::Normal => "normal pages",
        };
        write!(
            f,
            "{} mapped ({} requested), {kind} of {}",
            human(self.mapped_bytes as u64),
            self.requested_bytes,
            human(self.page_size as u64)
        )?;
        match (self.resident_bytes, self.huge_bytes) {
            (Some(r), Some(h)) => write!(f, ", {r} bytes resident, {h} in huge pages")?,
            _ => f.write_str(", residency unknown")?,
        }
        match &self.numa_nodes {
            Some(n) => write!(f, ", on NUMA node(s) {n:?}")?,
            None => f.write_str(", NUMA node unknown")?,
        }
        if let Some(n) = self.numa_bound {
            write!(f, " (bound to {n})")?;
        }
        match self.lock {
            LockStatus::NotRequested => {}
            LockStatus::Locked => f.write_str(", locked")?,
            LockStatus::Failed { errno, .. } => write!(
                f,
                ", NOT locked ({})",
                std::io::Error::from_raw_os_error(errno)
            )?,
        }
        if self.cuda_registered {
            f.write_str(", CUDA-registered")?;
        }
        if let Some(name) = &self.shared_name {
            write!(f, ", shared as {name:?}")?;
        }
        Ok(())
    }
}

/// Builder for a [`Slab`]; see [`Slab::builder`]. Cheap to clone: it only holds the request.
#[derive(Debug, Clone)]
pub struct SlabBuilder {
    size: usize,
    huge_pages: HugePages,
    huge_page_size: HugePageSize,
    numa_node: Option<u32>,
    lock: Lock,
    cuda_host_register: bool,
    populate: bool,
}

impl SlabBuilder {
    /// Huge-page preference (default [`HugePages::Off`]).
    pub fn huge_pages(mut self, huge_pages: HugePages) -> Self {
        self.huge_pages = huge_pages;
        self
    }

    /// Size of explicit huge pages (default [`HugePageSize::Size2M`]). Transparent huge pages
    /// are always 2 MiB, so [`HugePageSize::Size1G`] with [`HugePages::Require`] needs
    /// reserved 1 GiB pages.
    pub fn huge_page_size(mut self, size: HugePageSize) -> Self {
        self.huge_page_size = size;
        self
    }

    /// Binds the slab's pages to NUMA node `node` (OS index). Needs feature `numa`: without it,
    /// [`build`](Self::build) fails with [`SlabError::NumaUnsupported`]; a node that does not
    /// exist fails with [`SlabError::NumaNodeNotFound`].
    pub fn numa_node(mut self, node: u32) -> Self {
        self.numa_node = Some(node);
        self
    }

    /// Whether to lock the slab in RAM with `mlock` (default [`Lock::Off`]). Locking faults every
    /// page in. For a shared slab it locks this process's mapping only.
    pub fn lock(mut self, lock: Lock) -> Self {
        self.lock = lock;
        self
    }

    /// Whether to register the slab with CUDA as pinned host memory (default `false`), so device
    /// copies and kernels read it in place. Needs feature `cuda` and a driver: otherwise
    /// [`build`](Self::build) fails with [`SlabError::CudaUnavailable`].
    pub fn cuda_host_register(mut self, register: bool) -> Self {
        self.cuda_host_register = register;
        self
    }

    /// Whether to fault every page in during [`build`](Self::build) (default `false`), so the
    /// first writes do not pay for page faults. See [`Slab::populate`].
    pub fn populate(mut self, populate: bool) -> Self {
        self.populate = populate;
        self
    }

    /// Maps the slab (anonymous, private to this process) and applies the requests.
    ///
    /// # Errors
    /// [`SlabError::ZeroSize`], [`SlabError::SizeOverflow`], [`SlabError::Map`];
    /// [`SlabError::HugePagesUnavailable`] for [`HugePages::Require`];
    /// [`SlabError::NumaUnsupported`], [`SlabError::NumaNodeNotFound`], [`SlabError::NumaBind`],
    /// [`SlabError::Topology`] for [`numa_node`](Self::numa_node); [`SlabError::Lock`] for
    /// [`Lock::Require`]; [`SlabError::Populate`]; [`SlabError::CudaUnavailable`],
    /// [`SlabError::CudaRegister`] for [`cuda_host_register`](Self::cuda_host_register).
    pub fn build(self) -> Result<Slab, SlabError> {
        self.build_in(None)
    }

    /// Refuses a zero size (for a new slab; an opened one takes its size from the object).
    fn check_size(&self) -> Result<(), SlabError> {
        if self.size == 0 {
            return Err(SlabError::ZeroSize);
        }
        Ok(())
    }

    /// Checks the requests that cannot succeed in this build before mapping anything.
    fn check_features(&self) -> Result<(), SlabError> {
        if self.numa_node.is_some() && !cfg!(feature = "numa") {
            return Err(SlabError::NumaUnsupported);
        }
        #[cfg(feature = "numa")]
        if let Some(node) = self.numa_node {
            numa::check_node(node)?;
        }
        if self.cuda_host_register {
            #[cfg(not(feature = "cuda"))]
            return Err(SlabError::CudaUnavailable {
                reason: "psyne was built without the `cuda` feature".into(),
            });
            #[cfg(feature = "cuda")]
            cuda::driver_present()?;
        }
        Ok(())
    }

    /// Maps the slab, anonymous or backed by the new shared-memory object `shared`, then applies
    /// the requests in the order that keeps them true: bind (before any page is allocated),
    /// reserve the shared object's blocks (so they follow the binding), lock, populate,
    /// register.
    fn build_in(&self, shared: Option<NewShared>) -> Result<Slab, SlabError> {
        let unlink_on_error = |shared: &Option<NewShared>| {
            if let Some(s) = shared {
                shm::unlink_if_same(&s.cname, &s.stat, &s.fd);
            }
        };
        let checked = self.check_size().and_then(|()| self.check_features());
        let checked = checked.and_then(|()| match &shared {
            Some(s) => shm::reserve_fits(&s.name, self.size),
            None => Ok(()),
        });
        if let Err(e) = checked {
            unlink_on_error(&shared);
            return Err(e);
        }
        let mapped = match self.map(shared.as_ref().map(|s| &s.fd), None) {
            Ok(m) => m,
            Err(e) => {
                unlink_on_error(&shared);
                return Err(e);
            }
        };
        // From here on, dropping `slab` undoes everything (unmap, unlink).
        let mut slab = Slab::from_mapped(
            mapped,
            self.size,
            shared.map(|s| Shared {
                name: s.name,
                cname: s.cname,
                created: Some(s.stat),
                fd: s.fd,
            }),
        );
        self.bind(&mut slab)?;
        if let Some(s) = &slab.shared {
            shm::reserve(&s.name, &s.fd, slab.len)?;
            shm::check_size(&s.name, &s.fd, slab.len as u64, slab.len)?;
        }
        self.lock_populate_register(&mut slab)?;
        Ok(slab)
    }

    /// Maps the existing shared object `fd` of `size` bytes for [`Slab::open_shared_with`], then
    /// applies the requests that make sense for pages another process owns: bind, lock,
    /// populate, register. The object's size is checked again once the mapping exists (before
    /// any page is touched) and after the requests.
    fn open_in(
        &self,
        name: &str,
        cname: CString,
        fd: OwnedFd,
        size: u64,
    ) -> Result<Slab, SlabError> {
        self.check_features()?;
        let page = base_page_size();
        let requested = usize::try_from(size).map_err(|_| SlabError::SizeOverflow {
            size: usize::MAX,
            page_size: page,
        })?;
        let len = round_up(requested, page)?;
        let mapped = self.map(Some(&fd), Some(len))?;
        let mut slab = Slab::from_mapped(
            mapped,
            requested,
            Some(Shared {
                name: name.to_owned(),
                cname,
                created: None,
                fd,
            }),
        );
        let recheck = |slab: &Slab| match &slab.shared {
            Some(s) => shm::check_size(&s.name, &s.fd, size, slab.len),
            None => Ok(()),
        };
        recheck(&slab)?;
        self.bind(&mut slab)?;
        self.lock_populate_register(&mut slab)?;
        recheck(&slab)?;
        Ok(slab)
    }

    /// Binds the slab's pages to the requested NUMA node, if any.
    fn bind(&self, slab: &mut Slab) -> Result<(), SlabError> {
        #[cfg(feature = "numa")]
        if let Some(node) = self.numa_node {
            // SAFETY: the range is the slab's own live mapping.
            unsafe { numa::bind_area(slab.ptr.as_ptr(), slab.len, node)? };
            slab.numa_bound = Some(node);
        }
        #[cfg(not(feature = "numa"))]
        let _ = slab;
        Ok(())
    }

    /// Applies the lock, populate and CUDA registration requests, in that order.
    fn lock_populate_register(&self, slab: &mut Slab) -> Result<(), SlabError> {
        if self.lock != Lock::Off {
            slab.lock = slab.mlock(self.lock)?;
        }
        if self.populate {
            slab.populate()?;
        }
        #[cfg(feature = "cuda")]
        if self.cuda_host_register {
            // SAFETY: the slab's mapping is live and page-aligned, and the registration is
            // dropped before the mapping (see `Drop for Slab`).
            slab.cuda = Some(unsafe { cuda::Registration::new(slab.ptr.as_ptr(), slab.len)? });
        }
        Ok(())
    }

    /// Chooses the pages and maps them: explicit huge pages, else transparent ones, else normal
    /// pages, as the huge-page preference allows. `fd` is the shared object to map (`None`:
    /// anonymous memory); `existing` is its fixed length when it already exists (`None`: the
    /// requested size rounded up to the pages chosen).
    fn map(&self, fd: Option<&OwnedFd>, existing: Option<usize>) -> Result<Mapped, SlabError> {
        let mut explicit_failure = None;
        let mut transparent_failure = None;
        if self.huge_pages != HugePages::Off {
            match self.map_explicit_huge(fd.is_some()) {
                Ok(m) => return Ok(m),
                Err(e) => explicit_failure = Some(e),
            }
            match self.map_transparent_huge(fd, existing)? {
                Ok(region) => {
                    return Ok(Mapped {
                        region,
                        kind: PageKind::TransparentHuge,
                        page_size: hugepages::THP_SIZE,
                        explicit_failure,
                        transparent_failure: None,
                    });
                }
                Err(t) => transparent_failure = Some(t),
            }
            if let (HugePages::Require, Some(explicit), Some(transparent)) = (
                self.huge_pages,
                explicit_failure.clone(),
                transparent_failure.clone(),
            ) {
                return Err(SlabError::HugePagesUnavailable {
                    explicit,
                    transparent,
                });
            }
        }
        let page = base_page_size();
        let len = match existing {
            Some(len) => len,
            None => round_up(self.size, page)?,
        };
        Ok(Mapped {
            region: map_region(len, page, fd)?,
            kind: PageKind::Normal,
            page_size: page,
            explicit_failure,
            transparent_failure,
        })
    }

    /// Step 1 of [`map`](Self::map): explicit huge pages of the requested size (never for a
    /// shared slab: tmpfs cannot hold them).
    fn map_explicit_huge(&self, shared: bool) -> Result<Mapped, ExplicitHugeFailure> {
        if shared {
            return Err(ExplicitHugeFailure::SharedNotSupported);
        }
        map_explicit(self.size, self.huge_page_size.bytes())
    }

    /// Step 2 of [`map`](Self::map): a 2 MiB-aligned region advised with `MADV_HUGEPAGE`.
    /// The outer error is fatal; the inner one says why transparent huge pages are not used.
    fn map_transparent_huge(
        &self,
        fd: Option<&OwnedFd>,
        existing: Option<usize>,
    ) -> Result<Result<Region, TransparentHugeFailure>, SlabError> {
        let huge = self.huge_page_size.bytes();
        if self.huge_page_size != HugePageSize::Size2M && self.huge_pages == HugePages::Require {
            return Ok(Err(TransparentHugeFailure::SizeNotSupported {
                page_size: huge,
            }));
        }
        if let Err(e) = hugepages::thp_usable(fd.is_some()) {
            return Ok(Err(e));
        }
        let len = match existing {
            Some(len) if !len.is_multiple_of(hugepages::THP_SIZE) => {
                return Ok(Err(TransparentHugeFailure::ObjectNotHugeAligned {
                    size: len,
                }));
            }
            Some(len) => len,
            None => round_up(self.size, hugepages::THP_SIZE)?,
        };
        let region = map_region(len, hugepages::THP_SIZE, fd)?;
        // SAFETY: `region.ptr..+len` is the region just mapped.
        if unsafe { libc::madvise(region.ptr.as_ptr().cast(), len, libc::MADV_HUGEPAGE) } == 0 {
            return Ok(Ok(region));
        }
        let errno = errno();
        // SAFETY: the region was just mapped and nothing else uses it.
        unsafe { region.unmap() };
        Ok(Err(TransparentHugeFailure::Madvise { errno }))
    }
}

/// A new shared-memory object for [`SlabBuilder::build_in`].
struct NewShared {
    name: String,
    cname: CString,
    fd: OwnedFd,
    /// The object's identity, recorded at creation.
    stat: ObjectStat,
}

/// An address range this module mapped: `ptr..ptr+len` is the slab, inside `base..base+total`,
/// which adds a `PROT_NONE` guard page on each side (none for explicit huge pages). The guards
/// keep the kernel from merging the slab's VMA with a neighbour, so `/proc/self/smaps` reports
/// the slab alone, and they turn an overrun into a fault.
#[derive(Debug, Clone, Copy)]
struct Region {
    ptr: NonNull<u8>,
    len: usize,
    base: *mut u8,
    total: usize,
}

impl Region {
    /// Unmaps the whole range, guards included.
    ///
    /// # Safety
    /// The region must be mapped and no longer used.
    unsafe fn unmap(self) {
        // SAFETY: forwarded from the caller; `base..base+total` is exactly what was mapped.
        unsafe { libc::munmap(self.base.cast(), self.total) };
    }
}

/// A fresh mapping and how it was obtained.
struct Mapped {
    region: Region,
    kind: PageKind,
    page_size: usize,
    explicit_failure: Option<ExplicitHugeFailure>,
    transparent_failure: Option<TransparentHugeFailure>,
}

/// The base page size (4 KiB on x86_64).
fn base_page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as usize } else { 4096 }
}

/// `size` rounded up to a multiple of the power of two `page`.
fn round_up(size: usize, page: usize) -> Result<usize, SlabError> {
    debug_assert!(page.is_power_of_two());
    size.checked_add(page - 1)
        .map(|s| s & !(page - 1))
        .ok_or(SlabError::SizeOverflow {
            size,
            page_size: page,
        })
}

/// Maps explicit huge pages of `page_size`.
fn map_explicit(size: usize, page_size: usize) -> Result<Mapped, ExplicitHugeFailure> {
    let free = hugepages::free_pages(page_size)?;
    let Ok(len) = round_up(size, page_size) else {
        return Err(ExplicitHugeFailure::Map {
            errno: libc::EOVERFLOW,
        });
    };
    let flags = libc::MAP_PRIVATE
        | libc::MAP_ANONYMOUS
        | libc::MAP_HUGETLB
        | hugepages::map_huge_flag(page_size);
    // SAFETY: an anonymous mapping with no address hint; the result is checked.
    let ptr = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        let errno = errno();
        return Err(if errno == libc::ENOMEM {
            ExplicitHugeFailure::NotEnoughReserved {
                page_size,
                needed: (len / page_size) as u64,
                free,
            }
        } else {
            ExplicitHugeFailure::Map { errno }
        });
    }
    Ok(Mapped {
        region: Region {
            // SAFETY: mmap succeeded, so `ptr` is non-null.
            ptr: unsafe { NonNull::new_unchecked(ptr.cast()) },
            len,
            base: ptr.cast(),
            total: len,
        },
        kind: PageKind::ExplicitHuge,
        page_size,
        explicit_failure: None,
        transparent_failure: None,
    })
}

/// Maps `len` bytes read-write at an address aligned to `align` (a power of two), anonymous
/// private memory or `fd` shared from offset 0, between two `PROT_NONE` guard pages.
///
/// Steps: reserve address space for the guards, the slab and the alignment slack; map the slab
/// at the aligned address inside it; give back what is neither slab nor guard.
fn map_region(len: usize, align: usize, fd: Option<&OwnedFd>) -> Result<Region, SlabError> {
    let map_err = |errno| SlabError::Map { size: len, errno };
    let guard = base_page_size();
    let align = align.max(guard);
    let pad = if align > guard { align } else { 0 };
    let reserve = len
        .checked_add(pad)
        .and_then(|r| r.checked_add(2 * guard))
        .ok_or(map_err(libc::ENOMEM))?;
    let base = reserve_address_space(reserve).map_err(map_err)?;
    let aligned = (base + guard + align - 1) & !(align - 1);
    // SAFETY: `aligned..aligned+len` lies inside the reservation `base..base+reserve` made just
    // above (aligned + len + guard <= base + reserve).
    let ptr = match unsafe { map_fixed(aligned, len, fd) } {
        Ok(ptr) => ptr,
        Err(errno) => {
            // SAFETY: unmapping our own reservation, which nothing uses.
            unsafe { libc::munmap(base as *mut libc::c_void, reserve) };
            return Err(map_err(errno));
        }
    };
    let keep_start = aligned - guard;
    let keep_end = aligned + len + guard;
    // SAFETY: the head `base..keep_start` and tail `keep_end..base+reserve` are unused parts of
    // our own reservation.
    unsafe {
        if keep_start > base {
            libc::munmap(base as *mut libc::c_void, keep_start - base);
        }
        if base + reserve > keep_end {
            libc::munmap(keep_end as *mut libc::c_void, base + reserve - keep_end);
        }
    }
    Ok(Region {
        ptr,
        len,
        base: keep_start as *mut u8,
        total: keep_end - keep_start,
    })
}

/// Reserves `len` bytes of inaccessible address space (`PROT_NONE`, no memory committed) and
/// returns its start; `Err(errno)` on failure.
fn reserve_address_space(len: usize) -> Result<usize, i32> {
    // SAFETY: an inaccessible anonymous reservation with no address hint; checked below.
    let base = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(errno());
    }
    Ok(base as usize)
}

/// Maps `len` bytes read-write at exactly `addr`: anonymous private memory, or `fd` shared from
/// offset 0. `Err(errno)` on failure.
///
/// # Safety
/// `addr..addr+len` must be address space this module reserved and nothing else uses
/// (`MAP_FIXED` replaces whatever is there).
unsafe fn map_fixed(addr: usize, len: usize, fd: Option<&OwnedFd>) -> Result<NonNull<u8>, i32> {
    let (flags, raw_fd) = match fd {
        Some(fd) => (libc::MAP_SHARED, fd.as_raw_fd()),
        None => (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1),
    };
    // SAFETY: the range is ours to replace (forwarded from the caller); `raw_fd` is -1 or open.
    let ptr = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags | libc::MAP_FIXED,
            raw_fd,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(errno());
    }
    NonNull::new(ptr.cast()).ok_or(libc::EINVAL)
}

/// The `/dev/shm` object behind a shared slab.
#[derive(Debug)]
struct Shared {
    name: String,
    cname: CString,
    /// The object, kept open: the creator locks it when it removes the name on drop.
    fd: OwnedFd,
    /// The object's identity when this slab created it (and so removes the name on drop, while
    /// the name still refers to this object); `None` for an opener.
    created: Option<ObjectStat>,
}

/// One contiguous, page-aligned, zero-filled memory mapping (see the [module docs](self)).
pub struct Slab {
    ptr: NonNull<u8>,
    /// Mapped length: `requested` rounded up to `page_size`.
    len: usize,
    /// The whole mapping, guard pages included (unmapped on drop).
    region: Region,
    requested: usize,
    kind: PageKind,
    page_size: usize,
    explicit_failure: Option<ExplicitHugeFailure>,
    transparent_failure: Option<TransparentHugeFailure>,
    numa_bound: Option<u32>,
    lock: LockStatus,
    #[cfg(feature = "cuda")]
    cuda: Option<cuda::Registration>,
    shared: Option<Shared>,
}

// SAFETY: a Slab is a plain owned memory region; it hands out raw pointers only, and whoever
// dereferences them (the ring) is responsible for synchronisation.
unsafe impl Send for Slab {}
// SAFETY: as above; `&Slab` gives no safe access to the bytes.
unsafe impl Sync for Slab {}

impl Slab {
    /// Starts building a slab of `size_bytes` (rounded up to whole pages of the size used).
    pub fn builder(size_bytes: usize) -> SlabBuilder {
        SlabBuilder {
            size: size_bytes,
            huge_pages: HugePages::Off,
            huge_page_size: HugePageSize::Size2M,
            numa_node: None,
            lock: Lock::Off,
            cuda_host_register: false,
            populate: false,
        }
    }

    /// Creates a shared slab named `name` in `/dev/shm` (POSIX `shm_open`, `O_EXCL`, mode 0600)
    /// sized and placed as `builder` says, and maps it shared. Another mapping of the same name
    /// ([`Slab::open_shared`], in this process or another) sees the same bytes. This slab
    /// removes the name when dropped, if the name still refers to its object; mappings already
    /// open stay valid.
    ///
    /// Every block of the object is reserved (`posix_fallocate`) before the object gets its
    /// size, so a full `/dev/shm` is [`SlabError::NoSpace`] here rather than a `SIGBUS` at the
    /// first write, and openers see size 0 ([`SlabError::SharedEmpty`]) until the object is
    /// complete. The blocks are committed tmpfs memory from then on, whether or not
    /// [`populate`](SlabBuilder::populate) is set (which still decides whether this process's
    /// page tables are filled now). A NUMA binding is applied before the reservation, so the
    /// blocks are allocated on that node. What a peer can still do is in the
    /// [module docs](self#sharing-with-another-process).
    ///
    /// `name` is a bare file name: not empty, no `/`, no NUL, at most 255 bytes. Explicit huge
    /// pages are not available for shared slabs (tmpfs cannot hold them); transparent ones are
    /// when `/sys/kernel/mm/transparent_hugepage/shmem_enabled` allows.
    ///
    /// # Errors
    /// [`SlabError::InvalidName`], [`SlabError::AlreadyExists`], [`SlabError::NoSpace`],
    /// [`SlabError::Shm`], and those of [`SlabBuilder::build`]. The name is removed on error.
    pub fn create_shared(name: &str, builder: SlabBuilder) -> Result<Slab, SlabError> {
        let cname = shm::validate(name)?;
        builder.check_size()?;
        let fd = shm::create(name, &cname)?;
        if let Err(e) = shm::hold_creator_lock(name, &fd) {
            shm::unlink(&cname);
            return Err(e);
        }
        let stat = match fstat(&fd) {
            Ok(stat) => stat,
            Err(errno) => {
                shm::unlink(&cname);
                return Err(SlabError::Shm {
                    name: name.to_owned(),
                    call: "fstat",
                    errno,
                });
            }
        };
        builder.build_in(Some(NewShared {
            name: name.to_owned(),
            cname,
            fd,
            stat,
        }))
    }

    /// Maps the existing shared slab `name` (created by [`Slab::create_shared`]) with its full
    /// size, as normal pages, not locked and not registered: [`Slab::open_shared_with`] with the
    /// default options. Dropping it does not remove the name.
    ///
    /// # Errors
    /// As [`Slab::open_shared_with`].
    pub fn open_shared(name: &str) -> Result<Slab, SlabError> {
        Slab::open_shared_with(name, Slab::builder(0))
    }

    /// Maps the existing shared slab `name` with this process's own mapping preferences:
    /// transparent huge pages ([`SlabBuilder::huge_pages`]: the mapping is 2 MiB-aligned and
    /// advised with `MADV_HUGEPAGE`; explicit huge pages are never available, tmpfs cannot hold
    /// them), [`populate`](SlabBuilder::populate), [`numa_node`](SlabBuilder::numa_node),
    /// [`lock`](SlabBuilder::lock) and [`cuda_host_register`](SlabBuilder::cuda_host_register).
    /// [`Slab::placement`] records what this mapping got, as for a new slab.
    ///
    /// The size comes from the object: the builder's size is ignored (`Slab::builder(0)` is
    /// fine), and [`Placement::requested_bytes`] is the object's size. Transparent huge pages
    /// need an object whose size is a multiple of 2 MiB (a creator's transparent-huge-page slab
    /// is). A NUMA binding sets the object's policy for pages not allocated yet, but a creator
    /// reserved them all when it created the object, so the pages stay where they are:
    /// [`Placement::numa_nodes`] says where.
    ///
    /// The object must be a regular file owned by this process's effective uid with no group or
    /// other permission bits; its size is checked again once it is mapped. Dropping the slab
    /// does not remove the name.
    ///
    /// # Errors
    /// [`SlabError::InvalidName`], [`SlabError::NotFound`], [`SlabError::NotRegularFile`],
    /// [`SlabError::ForeignOwner`], [`SlabError::InsecureMode`], [`SlabError::SharedEmpty`],
    /// [`SlabError::SharedShrunk`], [`SlabError::Shm`], [`SlabError::Map`], and for the options
    /// those of [`SlabBuilder::build`] ([`SlabError::HugePagesUnavailable`] for
    /// [`HugePages::Require`], [`SlabError::Lock`], [`SlabError::Populate`], ...).
    pub fn open_shared_with(name: &str, options: SlabBuilder) -> Result<Slab, SlabError> {
        let cname = shm::validate(name)?;
        let (fd, stat) = shm::open_checked(name, &cname, true)?;
        if stat.size == 0 {
            return Err(SlabError::SharedEmpty {
                name: name.to_owned(),
            });
        }
        options.open_in(name, cname, fd, stat.size)
    }

    /// A slab over a fresh mapping, with nothing requested yet; dropping it unmaps (and, for a
    /// creator, unlinks).
    fn from_mapped(mapped: Mapped, requested: usize, shared: Option<Shared>) -> Slab {
        Slab {
            ptr: mapped.region.ptr,
            len: mapped.region.len,
            region: mapped.region,
            requested,
            kind: mapped.kind,
            page_size: mapped.page_size,
            explicit_failure: mapped.explicit_failure,
            transparent_failure: mapped.transparent_failure,
            numa_bound: None,
            lock: LockStatus::NotRequested,
            #[cfg(feature = "cuda")]
            cuda: None,
            shared,
        }
    }

    /// Start of the mapping (page-aligned; 2 MiB-aligned for huge pages).
    pub fn as_ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// Length of the mapping in bytes: the requested size rounded up to whole pages of the size
    /// used ([`Placement::page_size`]), so at least the requested size.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the slab is empty (never true for a built slab).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The name of a shared slab.
    pub fn shared_name(&self) -> Option<&str> {
        self.shared.as_ref().map(|s| s.name.as_str())
    }

    /// Reads back what the slab obtained (see [`Placement`]). This reads `/proc/self/smaps` and,
    /// with feature `numa`, asks the kernel where each resident page is: it costs
    /// milliseconds, so call it to report, not on a hot path.
    pub fn placement(&self) -> Placement {
        let usage = hugepages::smaps_usage(self.ptr.as_ptr() as usize, self.len);
        let huge_bytes = usage.map(|u| match self.kind {
            PageKind::ExplicitHuge => u.hugetlb,
            _ => u.thp,
        });
        let resident_bytes = usage.map(|u| u.rss + u.hugetlb);
        #[cfg(feature = "numa")]
        // SAFETY: the range is the slab's own live mapping.
        let numa_nodes = unsafe { numa::area_nodes(self.ptr.as_ptr(), self.len) }.ok();
        #[cfg(not(feature = "numa"))]
        let numa_nodes = None;
        #[cfg(feature = "cuda")]
        let cuda_registered = self
            .cuda
            .as_ref()
            .is_some_and(|r| cuda::is_registered(r.context(), self.ptr.as_ptr()));
        #[cfg(not(feature = "cuda"))]
        let cuda_registered = false;
        Placement {
            requested_bytes: self.requested,
            mapped_bytes: self.len,
            page_size: self.page_size,
            kind: self.kind,
            resident_bytes,
            huge_bytes,
            explicit_failure: self.explicit_failure.clone(),
            transparent_failure: self.transparent_failure.clone(),
            numa_bound: self.numa_bound,
            numa_nodes,
            lock: self.lock,
            locked_bytes: usage.map(|u| u.locked),
            cuda_registered,
            shared_name: self.shared.as_ref().map(|s| s.name.clone()),
        }
    }

    /// Faults every page in for writing without changing its contents
    /// (`madvise(MADV_POPULATE_WRITE)`, or touching each page with an atomic add of 0 on kernels
    /// before 5.14), so later first writes do not take page faults. With huge pages this is where
    /// the kernel picks huge or normal pages.
    ///
    /// Takes `&mut self` because the fallback writes to every page.
    ///
    /// # Errors
    /// [`SlabError::Populate`] if the kernel cannot provide the memory.
    pub fn populate(&mut self) -> Result<(), SlabError> {
        // SAFETY: the range is the slab's own live mapping.
        let r = unsafe {
            libc::madvise(
                self.ptr.as_ptr().cast(),
                self.len,
                libc::MADV_POPULATE_WRITE,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let errno = errno();
        if errno != libc::EINVAL {
            return Err(SlabError::Populate { errno });
        }
        self.populate_by_touching();
        Ok(())
    }

    /// The fallback of [`populate`](Self::populate) for kernels before 5.14: an atomic add of 0
    /// to one byte of every base page.
    fn populate_by_touching(&mut self) {
        let step = base_page_size().min(self.page_size);
        for off in (0..self.len).step_by(step) {
            // SAFETY: `off < len`, so the byte is inside the mapping, which is aligned for u8;
            // an atomic add of 0 keeps whatever another mapping of a shared slab wrote.
            let byte =
                unsafe { core::sync::atomic::AtomicU8::from_ptr(self.ptr.as_ptr().add(off)) };
            // `black_box` hides the 0: LLVM turns an add of a known 0 into a plain load, which
            // maps the shared zero page instead of faulting in a writable page (seen in release
            // builds, where the test of this fallback then found nothing resident).
            byte.fetch_add(
                core::hint::black_box(0),
                core::sync::atomic::Ordering::Relaxed,
            );
        }
    }

    /// The CUDA context the slab is registered in (device 0's primary context), if registered.
    #[cfg(feature = "cuda")]
    pub fn cuda_context(&self) -> Option<&std::sync::Arc<cudarc::driver::CudaContext>> {
        self.cuda.as_ref().map(|r| r.context())
    }

    /// The device address of a registered slab, through which kernels read and write it in place.
    ///
    /// # Errors
    /// [`SlabError::CudaUnavailable`] if the slab is not registered, [`SlabError::CudaRegister`]
    /// if the driver refuses.
    #[cfg(feature = "cuda")]
    pub fn cuda_device_ptr(&self) -> Result<u64, SlabError> {
        match &self.cuda {
            Some(r) => r.device_ptr(),
            None => Err(SlabError::CudaUnavailable {
                reason: "the slab is not CUDA-registered (use cuda_host_register(true))".into(),
            }),
        }
    }

    /// `mlock`s the slab; see [`Lock`].
    fn mlock(&self, lock: Lock) -> Result<LockStatus, SlabError> {
        // SAFETY: the range is the slab's own live mapping.
        if unsafe { libc::mlock(self.ptr.as_ptr().cast(), self.len) } == 0 {
            return Ok(LockStatus::Locked);
        }
        let errno = errno();
        let limit = memlock_limit();
        match lock {
            Lock::Require => Err(SlabError::Lock {
                size: self.len,
                limit,
                errno,
            }),
            _ => Ok(LockStatus::Failed { errno, limit }),
        }
    }
}

/// The soft `RLIMIT_MEMLOCK` in bytes; `None` if unlimited or unreadable.
pub(crate) fn memlock_limit() -> Option<u64> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is valid storage for one rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut rl) } != 0
        || rl.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    Some(rl.rlim_cur)
}

impl fmt::Debug for Slab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slab")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .field("kind", &self.kind)
            .field("page_size", &self.page_size)
            .field("lock", &self.lock)
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

impl Drop for Slab {
    fn drop(&mut self) {
        // Unregister before the memory goes away.
        #[cfg(feature = "cuda")]
        drop(self.cuda.take());
        if self.lock == LockStatus::Locked {
            // SAFETY: the range was locked by `mlock` and is still mapped.
            unsafe { libc::munlock(self.ptr.as_ptr().cast(), self.len) };
        }
        // SAFETY: `region` is exactly the mapping created when building or opening, unmapped
        // only here.
        unsafe { self.region.unmap() };
        if let Some(s) = &self.shared
            && let Some(created) = &s.created
        {
            shm::unlink_if_same(&s.cname, created, &s.fd);
        }
    }
}
