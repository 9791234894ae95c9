//! Huge-page facts read from the kernel: pool sizes, transparent huge page modes, and what
//! `/proc/self/smaps` says about one mapping. Nothing here maps memory.

use super::error::{ExplicitHugeFailure, TransparentHugeFailure};

/// 2 MiB.
pub(crate) const SIZE_2M: usize = 2 << 20;
/// 1 GiB.
pub(crate) const SIZE_1G: usize = 1 << 30;

/// Transparent huge pages are always PMD-sized (2 MiB on x86_64).
pub(crate) const THP_SIZE: usize = SIZE_2M;

/// sysfs file selecting THP for anonymous memory.
pub(crate) const THP_ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/enabled";
/// sysfs file selecting THP for shmem (and so `/dev/shm`).
pub(crate) const THP_SHMEM_ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";

/// The sysfs directory of the explicit huge page pool of `page_size` bytes.
pub(crate) fn pool_dir(page_size: usize) -> String {
    format!("/sys/kernel/mm/hugepages/hugepages-{}kB", page_size / 1024)
}

/// `MAP_HUGE_*` flag selecting the page size for `MAP_HUGETLB`.
pub(crate) fn map_huge_flag(page_size: usize) -> libc::c_int {
    // log2(page_size) << MAP_HUGE_SHIFT, which is what MAP_HUGE_2MB / MAP_HUGE_1GB expand to.
    (page_size.trailing_zeros() as libc::c_int) << libc::MAP_HUGE_SHIFT
}

/// Free pages in the pool of `page_size`; `Err` if the kernel has no such pool.
pub(crate) fn free_pages(page_size: usize) -> Result<Option<u64>, ExplicitHugeFailure> {
    let dir = pool_dir(page_size);
    if !std::path::Path::new(&dir).is_dir() {
        return Err(ExplicitHugeFailure::SizeNotSupported { page_size });
    }
    Ok(std::fs::read_to_string(format!("{dir}/free_hugepages"))
        .ok()
        .and_then(|s| s.trim().parse().ok()))
}

/// The bracketed mode in a sysfs THP file (`always [madvise] never` gives `madvise`).
pub(crate) fn selected_mode(contents: &str) -> Option<&str> {
    let start = contents.find('[')?;
    let end = start + contents[start..].find(']')?;
    Some(&contents[start + 1..end])
}

/// Whether `madvise(MADV_HUGEPAGE)` can give transparent huge pages, per the kernel's mode.
/// `shared` selects the shmem setting (for `/dev/shm` slabs) instead of the anonymous one.
pub(crate) fn thp_usable(shared: bool) -> Result<(), TransparentHugeFailure> {
    let file = if shared {
        THP_SHMEM_ENABLED
    } else {
        THP_ENABLED
    };
    let Some(contents) = read_thp_file(file) else {
        return Err(TransparentHugeFailure::NotSupportedByKernel);
    };
    let mode = selected_mode(&contents).unwrap_or(contents.trim());
    thp_mode_usable(file, mode, shared)
}

#[cfg(test)]
thread_local! {
    /// Tests only: when set, replaces the contents of the THP sysfs files for this thread
    /// (`Some(None)`: the files do not exist), so the fallbacks for other kernels can be run.
    pub(crate) static THP_FILE_OVERRIDE: std::cell::RefCell<Option<Option<String>>> =
        const { std::cell::RefCell::new(None) };
}

/// Contents of a THP sysfs file; `None` if it does not exist.
fn read_thp_file(file: &str) -> Option<String> {
    #[cfg(test)]
    if let Some(contents) = THP_FILE_OVERRIDE.with(|c| c.borrow().clone()) {
        return contents;
    }
    std::fs::read_to_string(file).ok()
}

/// The decision of [`thp_usable`] for a given mode (split out so every mode can be tested).
pub(crate) fn thp_mode_usable(
    file: &'static str,
    mode: &str,
    shared: bool,
) -> Result<(), TransparentHugeFailure> {
    let ok = if shared {
        // shmem: always, within_size, advise and force allocate huge pages for a MADV_HUGEPAGE
        // region; never and deny do not.
        matches!(mode, "always" | "within_size" | "advise" | "force")
    } else {
        matches!(mode, "always" | "madvise")
    };
    if ok {
        Ok(())
    } else {
        Err(TransparentHugeFailure::Disabled {
            file,
            mode: mode.to_owned(),
        })
    }
}

/// What `/proc/self/smaps` says about the VMAs inside one address range (summed over them: the
/// kernel may split a mapping, e.g. after a partial `mlock`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SmapsUsage {
    /// `Rss`: bytes resident.
    pub rss: u64,
    /// `AnonHugePages + ShmemPmdMapped + FilePmdMapped`: bytes mapped by transparent huge pages.
    pub thp: u64,
    /// `Private_Hugetlb + Shared_Hugetlb`: bytes of explicit huge pages faulted in.
    pub hugetlb: u64,
    /// `Locked`: bytes locked.
    pub locked: u64,
    /// Largest `KernelPageSize` seen.
    pub kernel_page_size: u64,
    /// Number of VMAs found in the range.
    pub vmas: u32,
}

/// Reads `/proc/self/smaps` for the VMAs inside `[start, start + len)`. `None` if unreadable.
pub(crate) fn smaps_usage(start: usize, len: usize) -> Option<SmapsUsage> {
    let text = std::fs::read_to_string("/proc/self/smaps").ok()?;
    Some(parse_smaps(&text, start, start + len))
}

/// Parses smaps text; split out for tests.
pub(crate) fn parse_smaps(text: &str, start: usize, end: usize) -> SmapsUsage {
    let mut usage = SmapsUsage::default();
    let mut inside = false;
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((lo, hi)) = first.split_once('-')
            && let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
        {
            inside = lo >= start && hi <= end;
            if inside {
                usage.vmas += 1;
            }
            continue;
        }
        if !inside {
            continue;
        }
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let kb = || -> u64 {
            rest.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                * 1024
        };
        match key {
            "Rss" => usage.rss += kb(),
            "AnonHugePages" | "ShmemPmdMapped" | "FilePmdMapped" => usage.thp += kb(),
            "Private_Hugetlb" | "Shared_Hugetlb" => usage.hugetlb += kb(),
            "Locked" => usage.locked += kb(),
            "KernelPageSize" => usage.kernel_page_size = usage.kernel_page_size.max(kb()),
            _ => {}
        }
    }
    usage
}
