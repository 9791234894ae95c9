//! Tests of the slab module. Tests whose outcome depends on the machine (reserved huge pages,
//! transparent huge page modes, locking privileges, a CUDA driver) find out which branch the
//! machine allows, assert that branch exactly, and print which one ran (`--nocapture` shows it).

use std::sync::Mutex;

use super::hugepages::{self, SIZE_1G, SIZE_2M, THP_ENABLED, THP_SHMEM_ENABLED};
use super::*;

const MIB: usize = 1 << 20;

/// Serialises the tests that lock memory or change `RLIMIT_MEMLOCK` (process-wide state).
static LOCK_TESTS: Mutex<()> = Mutex::new(());

fn page() -> usize {
    base_page_size()
}

/// A name unique to this test process and call site.
fn unique_name(tag: &str) -> String {
    format!("psyne-test-{}-{tag}", std::process::id())
}

/// The slab's bytes (tests only; nothing else touches them meanwhile).
fn bytes(slab: &Slab) -> &[u8] {
    // SAFETY: the slab is a live mapping of `len` bytes, and no test writes it concurrently.
    unsafe { core::slice::from_raw_parts(slab.as_ptr().as_ptr(), slab.len()) }
}

/// Writes one byte in every base page, faulting the pages in.
fn touch(slab: &Slab) {
    for off in (0..slab.len()).step_by(page()) {
        // SAFETY: `off < len`; the test owns the slab.
        unsafe { slab.as_ptr().as_ptr().add(off).write_volatile(1) };
    }
}

fn free_huge_pages(size: usize) -> Option<u64> {
    std::fs::read_to_string(format!("{}/free_hugepages", hugepages::pool_dir(size)))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

fn thp_mode(file: &str) -> Option<String> {
    let s = std::fs::read_to_string(file).ok()?;
    hugepages::selected_mode(&s).map(str::to_owned)
}

/// `AnonHugePages` (bytes) of the smaps entry starting exactly at `ptr`, parsed independently
/// of `hugepages::parse_smaps`.
fn smaps_anon_huge_at(ptr: usize) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let head = format!("{ptr:x}-");
    let mut lines = text.lines().skip_while(|l| !l.starts_with(&head));
    lines.next()?;
    for l in lines {
        if let Some(v) = l.strip_prefix("AnonHugePages:") {
            return Some(v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()? * 1024);
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Basic mappings and errors

#[test]
fn builder_is_clone_and_debug() {
    fn check<T: Clone + std::fmt::Debug>(_: &T) {}
    let b = Slab::builder(1)
        .huge_pages(HugePages::Prefer)
        .lock(Lock::Prefer);
    check(&b);
    let dbg = format!("{:?}", b.clone());
    assert!(dbg.contains("Prefer"), "{dbg}");
}

#[test]
fn zero_size_is_an_error() {
    assert_eq!(Slab::builder(0).build().unwrap_err(), SlabError::ZeroSize);
    assert_eq!(
        Slab::create_shared(&unique_name("zero"), Slab::builder(0)).unwrap_err(),
        SlabError::ZeroSize
    );
}

#[test]
fn size_overflow_is_an_error() {
    let err = Slab::builder(usize::MAX).build().unwrap_err();
    assert_eq!(
        err,
        SlabError::SizeOverflow {
            size: usize::MAX,
            page_size: page()
        }
    );
    assert!(err.to_string().contains("overflows"));
}

#[test]
fn impossible_mapping_is_map_error() {
    // 1 EiB: more address space than any machine maps.
    let size = 1usize << 60;
    let err = Slab::builder(size).build().unwrap_err();
    assert_eq!(
        err,
        SlabError::Map {
            size,
            errno: libc::ENOMEM
        }
    );
    assert!(err.to_string().contains("mmap"), "{err}");
}

#[test]
fn normal_slab_is_aligned_zeroed_rounded() {
    let slab = Slab::builder(5000).build().unwrap();
    assert_eq!(slab.len(), 2 * page());
    assert!(!slab.is_empty());
    assert_eq!(slab.as_ptr().as_ptr() as usize % page(), 0);
    assert!(bytes(&slab).iter().all(|&b| b == 0));
    let p = slab.placement();
    assert_eq!(p.kind, PageKind::Normal);
    assert_eq!(p.page_size, page());
    assert_eq!(p.requested_bytes, 5000);
    assert_eq!(p.mapped_bytes, 2 * page());
    assert_eq!(p.explicit_failure, None);
    assert_eq!(p.transparent_failure, None);
    assert_eq!(p.lock, LockStatus::NotRequested);
    assert_eq!(p.locked_bytes, Some(0));
    assert_eq!(p.numa_bound, None);
    assert!(!p.cuda_registered);
    assert_eq!(p.shared_name, None);
    assert_eq!(p.resident_bytes, Some(0), "nothing touched yet");
    #[cfg(not(feature = "numa"))]
    assert_eq!(
        p.numa_nodes, None,
        "without `numa` the node is unknown, never guessed"
    );
    touch(&slab);
    assert_eq!(slab.placement().resident_bytes, Some(2 * page() as u64));
    assert!(!p.to_string().is_empty());
}

/// Guard pages keep the kernel from merging neighbouring slabs' VMAs, which would make smaps
/// attribute one slab's pages to the other.
#[test]
fn neighbouring_slabs_are_reported_separately() {
    let slabs: Vec<Slab> = (0..4)
        .map(|_| Slab::builder(8 * page()).build().unwrap())
        .collect();
    touch(&slabs[1]);
    for (i, s) in slabs.iter().enumerate() {
        let expected = if i == 1 { 8 * page() as u64 } else { 0 };
        assert_eq!(s.placement().resident_bytes, Some(expected), "slab {i}");
    }
}

#[test]
fn populate_faults_every_page_in() {
    let slab = Slab::builder(64 * page()).populate(true).build().unwrap();
    let p = slab.placement();
    assert_eq!(p.resident_bytes, Some(64 * page() as u64));
    assert!(
        bytes(&slab).iter().all(|&b| b == 0),
        "populate keeps the contents"
    );
}

/// The populate fallback for old kernels faults pages in and keeps their contents.
#[test]
fn populate_fallback_touches_every_page_and_keeps_contents() {
    let name = unique_name("touch");
    let mut a = Slab::create_shared(&name, Slab::builder(32 * page())).unwrap();
    let b = Slab::open_shared(&name).unwrap();
    // SAFETY: in bounds; this test is the only user.
    unsafe { b.as_ptr().as_ptr().add(5 * page()).write_volatile(42) };
    a.populate_by_touching();
    assert_eq!(a.placement().resident_bytes, Some(32 * page() as u64));
    assert_eq!(bytes(&a)[5 * page()], 42);
    assert_eq!(bytes(&a).iter().map(|&x| x as u64).sum::<u64>(), 42);
}

// ---------------------------------------------------------------------------------------------
// Huge pages

#[test]
fn thp_mode_parsing_and_decision() {
    assert_eq!(
        hugepages::selected_mode("always [madvise] never\n"),
        Some("madvise")
    );
    assert_eq!(
        hugepages::selected_mode("[always] madvise never"),
        Some("always")
    );
    assert_eq!(hugepages::selected_mode("garbage"), None);
    for mode in ["always", "madvise"] {
        assert_eq!(hugepages::thp_mode_usable(THP_ENABLED, mode, false), Ok(()));
    }
    assert_eq!(
        hugepages::thp_mode_usable(THP_ENABLED, "never", false),
        Err(TransparentHugeFailure::Disabled {
            file: THP_ENABLED,
            mode: "never".into()
        })
    );
    for mode in ["always", "within_size", "advise", "force"] {
        assert_eq!(
            hugepages::thp_mode_usable(THP_SHMEM_ENABLED, mode, true),
            Ok(())
        );
    }
    for mode in ["never", "deny"] {
        assert_eq!(
            hugepages::thp_mode_usable(THP_SHMEM_ENABLED, mode, true),
            Err(TransparentHugeFailure::Disabled {
                file: THP_SHMEM_ENABLED,
                mode: mode.into()
            })
        );
    }
    let msg = TransparentHugeFailure::Disabled {
        file: THP_ENABLED,
        mode: "never".into(),
    }
    .to_string();
    assert!(
        msg.contains("disabled") && msg.contains("echo madvise"),
        "{msg}"
    );
    let msg = TransparentHugeFailure::Disabled {
        file: THP_SHMEM_ENABLED,
        mode: "never".into(),
    }
    .to_string();
    assert!(msg.contains("echo advise > /sys"), "{msg}");
}

#[test]
fn smaps_parser_sums_the_vmas_inside_the_range() {
    let text = "\
7f0000000000-7f0000200000 rw-p 00000000 00:00 0
Size:               2048 kB
KernelPageSize:        4 kB
Rss:                2048 kB
AnonHugePages:      2048 kB
Locked:             2048 kB
7f0000200000-7f0000400000 rw-p 00000000 00:00 0
Rss:                   8 kB
AnonHugePages:         0 kB
Private_Hugetlb:       0 kB
Locked:                0 kB
7f0000400000-7f0000600000 rw-p 00000000 00:00 0
Rss:                 999 kB
VmFlags: rd wr mr mw me ac
";
    let u = hugepages::parse_smaps(text, 0x7f00_0000_0000, 0x7f00_0040_0000);
    assert_eq!(u.vmas, 2);
    assert_eq!(u.rss, (2048 + 8) * 1024);
    assert_eq!(u.thp, 2048 * 1024);
    assert_eq!(u.locked, 2048 * 1024);
    assert_eq!(u.hugetlb, 0);
    assert_eq!(u.kernel_page_size, 4096);
}

#[test]
fn explicit_failure_messages_say_how_to_reserve() {
    let e = ExplicitHugeFailure::NotEnoughReserved {
        page_size: SIZE_2M,
        needed: 3,
        free: Some(0),
    };
    let msg = e.to_string();
    assert!(msg.contains("echo 3 > /proc/sys/vm/nr_hugepages"), "{msg}");
    let e = ExplicitHugeFailure::NotEnoughReserved {
        page_size: SIZE_1G,
        needed: 1,
        free: None,
    };
    let msg = e.to_string();
    assert!(msg.contains("hugepages-1048576kB/nr_hugepages"), "{msg}");
    let msg = ExplicitHugeFailure::SizeNotSupported { page_size: SIZE_1G }.to_string();
    assert!(msg.contains("1 GiB"), "{msg}");
    let msg = ExplicitHugeFailure::Map {
        errno: libc::EINVAL,
    }
    .to_string();
    assert!(msg.contains("MAP_HUGETLB"), "{msg}");
    let msg = TransparentHugeFailure::Madvise {
        errno: libc::EINVAL,
    }
    .to_string();
    assert!(msg.contains("MADV_HUGEPAGE"), "{msg}");
    let msg = TransparentHugeFailure::NotSupportedByKernel.to_string();
    assert!(msg.contains("no transparent"), "{msg}");
}

#[test]
fn explicit_pool_that_does_not_exist_is_size_not_supported() {
    // 64 KiB pools do not exist on x86_64 (they do on some arm64 kernels).
    let size = 64 << 10;
    if std::path::Path::new(&hugepages::pool_dir(size)).exists() {
        println!("branch: this kernel has a 64 KiB pool; SizeNotSupported not reachable");
        return;
    }
    println!("branch: no 64 KiB pool -> SizeNotSupported");
    assert_eq!(
        map_explicit(SIZE_2M, size).err(),
        Some(ExplicitHugeFailure::SizeNotSupported { page_size: size })
    );
}

/// Explicit 2 MiB pages when reserved, else the exact failure, then THP.
#[test]
fn require_2m_uses_explicit_else_transparent() {
    let free = free_huge_pages(SIZE_2M);
    let thp = thp_mode(THP_ENABLED);
    let r = Slab::builder(3 * MIB)
        .huge_pages(HugePages::Require)
        .build();
    match (free, thp.as_deref()) {
        (Some(f), _) if f >= 2 => {
            println!("branch: {f} free 2 MiB pages -> explicit");
            let slab = r.unwrap();
            let p = slab.placement();
            assert_eq!(p.kind, PageKind::ExplicitHuge);
            assert_eq!(p.page_size, SIZE_2M);
            assert_eq!(slab.len(), 2 * SIZE_2M);
            touch(&slab);
            assert_eq!(slab.placement().huge_bytes, Some(2 * SIZE_2M as u64));
        }
        (free, Some("always" | "madvise")) => {
            println!("branch: {free:?} free 2 MiB pages, THP usable -> transparent");
            let slab = r.unwrap();
            let p = slab.placement();
            assert_eq!(p.kind, PageKind::TransparentHuge);
            assert_eq!(p.page_size, SIZE_2M);
            assert_eq!(slab.len(), 2 * SIZE_2M);
            assert_eq!(slab.as_ptr().as_ptr() as usize % SIZE_2M, 0);
            assert_eq!(
                p.explicit_failure,
                Some(ExplicitHugeFailure::NotEnoughReserved {
                    page_size: SIZE_2M,
                    needed: 2,
                    free
                })
            );
            assert_eq!(p.transparent_failure, None);
        }
        (free, mode) => {
            println!("branch: {free:?} free 2 MiB pages, THP mode {mode:?} -> error");
            assert!(matches!(
                r.unwrap_err(),
                SlabError::HugePagesUnavailable { .. }
            ));
        }
    }
}

/// The placement of a THP slab matches `/proc/self/smaps` for that mapping.
#[test]
fn thp_placement_matches_smaps() {
    if free_huge_pages(SIZE_2M).unwrap_or(0) > 0 {
        println!("branch: explicit 2 MiB pages reserved; this test needs the THP path, skipped");
        return;
    }
    if !matches!(thp_mode(THP_ENABLED).as_deref(), Some("always" | "madvise")) {
        println!("branch: THP disabled; the THP placement cannot be checked");
        return;
    }
    println!("branch: THP slab checked against smaps");
    let mut slab = Slab::builder(16 * MIB)
        .huge_pages(HugePages::Prefer)
        .build()
        .unwrap();
    let start = slab.as_ptr().as_ptr() as usize;
    assert_eq!(start % SIZE_2M, 0);
    assert_eq!(slab.placement().kind, PageKind::TransparentHuge);
    assert_eq!(
        slab.placement().huge_bytes,
        Some(0),
        "nothing faulted in yet"
    );
    slab.populate().unwrap();
    let p = slab.placement();
    let smaps = smaps_anon_huge_at(start).expect("the slab has an smaps entry");
    assert_eq!(p.huge_bytes, Some(smaps));
    assert_eq!(p.resident_bytes, Some(16 * MIB as u64));
    println!(
        "THP share after populate: {:?} ({smaps} of {} bytes)",
        p.huge_share(),
        16 * MIB
    );
    assert_eq!(
        smaps % SIZE_2M as u64,
        0,
        "huge pages are whole 2 MiB pages"
    );
    // Zero-filled and writable.
    assert!(bytes(&slab).iter().all(|&b| b == 0));
    touch(&slab);
}

/// Runs `f` as if the THP sysfs files held `contents` (`None`: missing).
fn with_thp_files<R>(contents: Option<&str>, f: impl FnOnce() -> R) -> R {
    hugepages::THP_FILE_OVERRIDE.with(|c| *c.borrow_mut() = Some(contents.map(str::to_owned)));
    let r = f();
    hugepages::THP_FILE_OVERRIDE.with(|c| *c.borrow_mut() = None);
    r
}

/// Anonymous slabs on a kernel whose THP is off (`never`) or absent: Prefer falls back to
/// normal pages with both reasons recorded, Require fails with both.
#[test]
fn thp_disabled_or_absent_falls_back_to_normal_pages() {
    if free_huge_pages(SIZE_2M).unwrap_or(0) >= 2 {
        println!("branch: explicit 2 MiB pages reserved; the THP fallback is not reached");
        return;
    }
    println!("branch: no explicit pages; THP files overridden");
    let cases = [
        (
            Some("always madvise [never]\n"),
            TransparentHugeFailure::Disabled {
                file: THP_ENABLED,
                mode: "never".into(),
            },
        ),
        (None, TransparentHugeFailure::NotSupportedByKernel),
    ];
    for (contents, expected) in cases {
        let (prefer, require) = with_thp_files(contents, || {
            (
                Slab::builder(3 * MIB).huge_pages(HugePages::Prefer).build(),
                Slab::builder(3 * MIB)
                    .huge_pages(HugePages::Require)
                    .build(),
            )
        });
        let slab = prefer.unwrap();
        let p = slab.placement();
        assert_eq!(p.kind, PageKind::Normal);
        assert_eq!(p.page_size, page());
        assert_eq!(slab.len(), 3 * MIB);
        assert_eq!(p.transparent_failure, Some(expected.clone()));
        let explicit = p.explicit_failure.expect("explicit pages were tried first");
        assert_eq!(
            require.unwrap_err(),
            SlabError::HugePagesUnavailable {
                explicit,
                transparent: expected
            }
        );
    }
}

#[test]
fn off_never_asks_for_huge_pages() {
    let slab = Slab::builder(4 * MIB).build().unwrap();
    let p = slab.placement();
    assert_eq!(p.kind, PageKind::Normal);
    assert_eq!(p.explicit_failure, None);
    assert_eq!(p.transparent_failure, None);
}

/// 1 GiB Require: explicit 1 GiB pages, or an error naming both reasons (THP is only 2 MiB).
#[test]
fn require_1g_without_reserved_pages_fails_with_both_reasons() {
    let free = free_huge_pages(SIZE_1G);
    let r = Slab::builder(4 * MIB)
        .huge_pages(HugePages::Require)
        .huge_page_size(HugePageSize::Size1G)
        .build();
    if free.unwrap_or(0) >= 1 {
        println!("branch: 1 GiB pages reserved -> explicit");
        let slab = r.unwrap();
        assert_eq!(slab.placement().kind, PageKind::ExplicitHuge);
        assert_eq!(slab.len(), SIZE_1G);
        return;
    }
    let explicit = if std::path::Path::new(&hugepages::pool_dir(SIZE_1G)).exists() {
        println!("branch: 1 GiB pool exists with {free:?} free -> NotEnoughReserved");
        ExplicitHugeFailure::NotEnoughReserved {
            page_size: SIZE_1G,
            needed: 1,
            free,
        }
    } else {
        println!("branch: no 1 GiB pool -> SizeNotSupported");
        ExplicitHugeFailure::SizeNotSupported { page_size: SIZE_1G }
    };
    let err = r.unwrap_err();
    assert_eq!(
        err,
        SlabError::HugePagesUnavailable {
            explicit,
            transparent: TransparentHugeFailure::SizeNotSupported { page_size: SIZE_1G },
        }
    );
    let msg = err.to_string();
    assert!(
        msg.contains("explicit") && msg.contains("transparent"),
        "{msg}"
    );
}

/// 1 GiB Prefer falls back to 2 MiB THP (or normal pages), recording why.
#[test]
fn prefer_1g_falls_back() {
    if free_huge_pages(SIZE_1G).unwrap_or(0) >= 1 {
        println!("branch: 1 GiB pages reserved; fallback not reachable");
        return;
    }
    let slab = Slab::builder(4 * MIB)
        .huge_pages(HugePages::Prefer)
        .huge_page_size(HugePageSize::Size1G)
        .build()
        .unwrap();
    let p = slab.placement();
    assert!(p.explicit_failure.is_some());
    if matches!(thp_mode(THP_ENABLED).as_deref(), Some("always" | "madvise")) {
        println!("branch: fell back to THP");
        assert_eq!(p.kind, PageKind::TransparentHuge);
        assert_eq!(p.page_size, SIZE_2M);
    } else {
        println!("branch: THP disabled, fell back to normal pages");
        assert_eq!(p.kind, PageKind::Normal);
        assert!(matches!(
            p.transparent_failure,
            Some(TransparentHugeFailure::Disabled { .. })
        ));
    }
}

/// Shared slabs cannot have explicit huge pages; their THP follows `shmem_enabled`.
#[test]
fn shared_huge_pages_follow_shmem_setting() {
    let shmem = thp_mode(THP_SHMEM_ENABLED);
    let name = unique_name("shared-huge");
    let prefer = Slab::create_shared(&name, Slab::builder(MIB).huge_pages(HugePages::Prefer));
    let require_name = unique_name("shared-huge-req");
    let require = Slab::create_shared(
        &require_name,
        Slab::builder(MIB).huge_pages(HugePages::Require),
    );
    match shmem.as_deref() {
        Some(mode @ ("always" | "within_size" | "advise" | "force")) => {
            println!("branch: shmem THP mode {mode} -> transparent");
            let slab = prefer.unwrap();
            let p = slab.placement();
            assert_eq!(p.kind, PageKind::TransparentHuge);
            assert_eq!(
                p.explicit_failure,
                Some(ExplicitHugeFailure::SharedNotSupported)
            );
            assert_eq!(slab.len(), SIZE_2M);
            assert_eq!(require.unwrap().placement().kind, PageKind::TransparentHuge);
        }
        Some(mode) => {
            println!("branch: shmem THP mode {mode} -> normal pages / error");
            let disabled = TransparentHugeFailure::Disabled {
                file: THP_SHMEM_ENABLED,
                mode: mode.to_owned(),
            };
            let slab = prefer.unwrap();
            let p = slab.placement();
            assert_eq!(p.kind, PageKind::Normal);
            assert_eq!(
                p.explicit_failure,
                Some(ExplicitHugeFailure::SharedNotSupported)
            );
            assert_eq!(p.transparent_failure, Some(disabled.clone()));
            assert_eq!(
                require.unwrap_err(),
                SlabError::HugePagesUnavailable {
                    explicit: ExplicitHugeFailure::SharedNotSupported,
                    transparent: disabled,
                }
            );
            // The failed create removed its name.
            assert_eq!(
                Slab::open_shared(&require_name).unwrap_err(),
                SlabError::NotFound { name: require_name }
            );
        }
        None => {
            println!("branch: no shmem THP support");
            assert_eq!(
                prefer.unwrap().placement().transparent_failure,
                Some(TransparentHugeFailure::NotSupportedByKernel)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// mlock

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Drops CAP_IPC_LOCK from the calling thread's effective set (capabilities are per thread), so
/// that `mlock` obeys RLIMIT_MEMLOCK even for root. Returns false if capget/capset failed.
fn drop_cap_ipc_lock_in_this_thread() -> bool {
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_IPC_LOCK: u32 = 14;
    let mut header = CapHeader {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and two data structs, as capget with version 3 expects.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return false;
    }
    data[0].effective &= !(1 << CAP_IPC_LOCK);
    // SAFETY: as above; only the calling thread's effective set shrinks.
    unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) == 0 }
}

/// Runs `f` with RLIMIT_MEMLOCK's soft limit at `limit` and restores it after.
fn with_memlock_soft_limit<R>(limit: u64, f: impl FnOnce() -> R) -> R {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid rlimit storage.
    let r = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut old) };
    assert_eq!(r, 0);
    let new = libc::rlimit {
        rlim_cur: limit.min(old.rlim_max),
        rlim_max: old.rlim_max,
    };
    // SAFETY: lowering the soft limit is always allowed.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &new) }, 0);
    let r = f();
    // SAFETY: restoring the previous soft limit (<= the unchanged hard limit).
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &old) }, 0);
    r
}

fn vm_locked_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn lock_locks_and_drop_unlocks() {
    let _g = LOCK_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let before = vm_locked_kib();
    let slab = Slab::builder(16 * page()).lock(Lock::Require).build();
    let slab = match slab {
        Ok(s) => s,
        Err(e) => {
            // A 64 KiB lock fits every default limit; only a tiny custom limit ends here.
            println!("branch: locking 64 KiB failed here ({e}); asserting the error's fields");
            assert!(matches!(e, SlabError::Lock { size, .. } if size == 16 * page()));
            return;
        }
    };
    println!("branch: locked");
    let p = slab.placement();
    assert_eq!(p.lock, LockStatus::Locked);
    assert_eq!(p.locked_bytes, Some(16 * page() as u64));
    assert_eq!(
        p.resident_bytes,
        Some(16 * page() as u64),
        "mlock faults pages in"
    );
    assert_eq!(vm_locked_kib(), before + (16 * page() / 1024) as u64);
    drop(slab);
    assert_eq!(vm_locked_kib(), before, "munlock/munmap on drop");
}

#[test]
fn lock_beyond_limit_require_fails_prefer_records() {
    let _g = LOCK_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let limit = MIB as u64;
    let (require, prefer, dropped) = with_memlock_soft_limit(limit, || {
        std::thread::spawn(move || {
            let dropped = drop_cap_ipc_lock_in_this_thread();
            let require = Slab::builder(4 * MIB).lock(Lock::Require).build();
            let prefer = Slab::builder(4 * MIB).lock(Lock::Prefer).build();
            (require, prefer, dropped)
        })
        .join()
        .unwrap()
    });
    let effective_limit = memlock_limit();
    if !dropped {
        println!("branch: could not drop CAP_IPC_LOCK (capset failed)");
    }
    match require {
        Err(err) => {
            println!("branch: mlock beyond RLIMIT_MEMLOCK refused");
            assert!(
                matches!(
                    err,
                    SlabError::Lock { size, limit: Some(l), errno }
                        if size == 4 * MIB
                            && l == limit.min(effective_limit.unwrap_or(u64::MAX))
                            && (errno == libc::ENOMEM || errno == libc::EPERM)
                ),
                "{err:?}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains("RLIMIT_MEMLOCK") && msg.contains(&limit.to_string()),
                "{msg}"
            );
            let p = prefer.unwrap().placement();
            assert!(matches!(p.lock, LockStatus::Failed { limit: Some(l), .. } if l == limit));
            assert_eq!(p.locked_bytes, Some(0));
        }
        Ok(_) => {
            println!("branch: capabilities could not be dropped; locking beyond the limit worked");
            assert!(!dropped);
            assert_eq!(prefer.unwrap().placement().lock, LockStatus::Locked);
        }
    }
}

#[test]
fn lock_off_is_not_requested() {
    let slab = Slab::builder(page()).lock(Lock::Off).build().unwrap();
    assert_eq!(slab.placement().lock, LockStatus::NotRequested);
}

// ---------------------------------------------------------------------------------------------
// NUMA

#[cfg(not(feature = "numa"))]
#[test]
fn numa_without_feature_is_a_typed_error() {
    let err = Slab::builder(page()).numa_node(0).build().unwrap_err();
    assert_eq!(err, SlabError::NumaUnsupported);
    assert!(err.to_string().contains("`numa` feature"));
}

#[cfg(feature = "numa")]
mod numa_tests {
    use super::super::numa;
    use super::*;

    #[test]
    fn topology_lists_nodes_cpus_memory_and_cores() {
        let t = numa::topology().unwrap();
        println!("{t}");
        assert!(!t.nodes.is_empty());
        assert!(!t.cores.is_empty());
        let all_cpus: usize = t.nodes.iter().map(|n| n.cpus.len()).sum();
        assert!(all_cpus >= 1);
        assert!(t.nodes.iter().any(|n| n.local_memory > 0));
        assert_eq!(
            numa::node_ids().unwrap(),
            t.nodes.iter().map(|n| n.os_index).collect::<Vec<_>>()
        );
        for (i, c) in t.cores.iter().enumerate() {
            assert_eq!(c.index as usize, i);
            assert!(!c.cpus.is_empty());
        }
    }

    #[test]
    fn bind_to_node_reads_back() {
        let node = numa::node_ids().unwrap()[0];
        let slab = Slab::builder(MIB)
            .numa_node(node)
            .populate(true)
            .build()
            .unwrap();
        let p = slab.placement();
        assert_eq!(p.numa_bound, Some(node));
        assert_eq!(p.numa_nodes, Some(vec![node]));
    }

    #[test]
    fn unfaulted_slab_is_on_no_node() {
        let slab = Slab::builder(MIB).build().unwrap();
        assert_eq!(slab.placement().numa_nodes, Some(vec![]));
        touch(&slab);
        assert_eq!(slab.placement().numa_nodes.map(|n| n.len()), Some(1));
    }

    #[test]
    fn missing_node_is_not_found() {
        let available = numa::node_ids().unwrap();
        let err = Slab::builder(page()).numa_node(4096).build().unwrap_err();
        assert_eq!(
            err,
            SlabError::NumaNodeNotFound {
                node: 4096,
                available: available.clone()
            }
        );
        assert!(err.to_string().contains("4096"));
        assert_eq!(
            numa::pin_thread_to_node(4096).unwrap_err(),
            SlabError::NumaNodeNotFound {
                node: 4096,
                available
            }
        );
    }

    #[test]
    fn pin_thread_to_node_and_core() {
        let t = numa::topology().unwrap();
        let node = t.nodes.iter().find(|n| !n.cpus.is_empty()).unwrap().clone();
        let core = t.cores[t.cores.len() - 1].clone();
        let (on_node, on_core) = std::thread::spawn(move || {
            numa::pin_thread_to_node(node.os_index).unwrap();
            // SAFETY: sched_getcpu has no preconditions.
            let a = unsafe { libc::sched_getcpu() } as u32;
            numa::pin_thread_to_core(core.index).unwrap();
            // SAFETY: as above.
            let b = unsafe { libc::sched_getcpu() } as u32;
            (node.cpus.contains(&a), core.cpus.contains(&b))
        })
        .join()
        .unwrap();
        assert!(on_node && on_core);
    }

    #[test]
    fn missing_core_is_not_found() {
        let n = numa::topology().unwrap().cores.len() as u32;
        assert_eq!(
            numa::pin_thread_to_core(n + 1000).unwrap_err(),
            SlabError::CoreNotFound {
                core: n + 1000,
                available: n
            }
        );
    }

    #[test]
    fn shared_slab_with_missing_node_fails_and_unlinks() {
        let name = unique_name("numa-missing");
        let err = Slab::create_shared(&name, Slab::builder(page()).numa_node(4096)).unwrap_err();
        assert!(matches!(
            err,
            SlabError::NumaNodeNotFound { node: 4096, .. }
        ));
        assert_eq!(
            Slab::open_shared(&name).unwrap_err(),
            SlabError::NotFound { name }
        );
    }

    /// An opener's NUMA request binds its mapping (the object's policy); the creator reserved
    /// the pages on the same node, so they are all there.
    #[test]
    fn opener_binds_to_node() {
        let node = numa::node_ids().unwrap()[0];
        let name = unique_name("numa-open");
        let _a = Slab::create_shared(&name, Slab::builder(MIB).numa_node(node)).unwrap();
        let b =
            Slab::open_shared_with(&name, Slab::builder(0).numa_node(node).populate(true)).unwrap();
        let p = b.placement();
        assert_eq!(p.numa_bound, Some(node));
        assert_eq!(p.numa_nodes, Some(vec![node]));
        assert_eq!(
            Slab::open_shared_with(&name, Slab::builder(0).numa_node(4096)).unwrap_err(),
            SlabError::NumaNodeNotFound {
                node: 4096,
                available: numa::node_ids().unwrap()
            }
        );
    }

    #[test]
    fn shared_slab_binds_too() {
        let node = numa::node_ids().unwrap()[0];
        let name = unique_name("numa-shared");
        let slab =
            Slab::create_shared(&name, Slab::builder(MIB).numa_node(node).populate(true)).unwrap();
        let p = slab.placement();
        assert_eq!(p.numa_bound, Some(node));
        assert_eq!(p.numa_nodes, Some(vec![node]));
    }
}

// ---------------------------------------------------------------------------------------------
// CUDA

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_feature_is_unavailable() {
    let err = Slab::builder(page())
        .cuda_host_register(true)
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        SlabError::CudaUnavailable {
            reason: "psyne was built without the `cuda` feature".into()
        }
    );
    assert!(err.to_string().contains("CUDA is unavailable"));
}

#[cfg(feature = "cuda")]
mod cuda_tests {
    use super::super::cuda;
    use super::*;

    fn driver_present() -> bool {
        // SAFETY: only tries to dlopen libcuda.
        unsafe { cudarc::driver::sys::is_culib_present() }
    }

    /// GPU tests run only with PSYNE_CUDA_TESTS=1 (scripts/gpu-check.sh sets it).
    fn gpu_tests_enabled(test: &str) -> bool {
        let on = std::env::var("PSYNE_CUDA_TESTS").as_deref() == Ok("1");
        if !on {
            println!("{test}: skipped (set PSYNE_CUDA_TESTS=1 on a machine with a GPU)");
        }
        on
    }

    #[test]
    fn without_driver_registration_is_unavailable() {
        if driver_present() {
            println!("branch: a CUDA driver is present; see the PSYNE_CUDA_TESTS tests");
            return;
        }
        println!("branch: no CUDA driver -> CudaUnavailable");
        let err = Slab::builder(page())
            .cuda_host_register(true)
            .build()
            .unwrap_err();
        assert!(
            matches!(&err, SlabError::CudaUnavailable { reason } if reason.contains("libcuda")),
            "{err:?}"
        );
        let slab = Slab::builder(page()).build().unwrap();
        assert!(!slab.placement().cuda_registered);
        assert!(matches!(
            slab.cuda_device_ptr(),
            Err(SlabError::CudaUnavailable { .. })
        ));
    }

    #[test]
    fn gpu_registration_copy_and_unregistration() {
        if !gpu_tests_enabled("gpu_registration_copy_and_unregistration") {
            return;
        }
        assert!(driver_present(), "PSYNE_CUDA_TESTS=1 but no CUDA driver");
        let len = 4 * MIB;
        let src = Slab::builder(len).cuda_host_register(true).build().unwrap();
        let dst = Slab::builder(len).cuda_host_register(true).build().unwrap();
        assert!(src.placement().cuda_registered);
        assert!(dst.placement().cuda_registered);
        assert_ne!(src.cuda_device_ptr().unwrap(), 0);
        let ctx = src.cuda_context().unwrap().clone();
        // SAFETY: the test owns both slabs; nothing else reads or writes them meanwhile.
        let (src_bytes, dst_bytes) = unsafe {
            (
                core::slice::from_raw_parts_mut(src.as_ptr().as_ptr(), len),
                core::slice::from_raw_parts_mut(dst.as_ptr().as_ptr(), len),
            )
        };
        for (i, b) in src_bytes.iter_mut().enumerate() {
            *b = (i * 31 % 251) as u8;
        }
        let stream = ctx.default_stream();
        let dev = stream.clone_htod(&src_bytes[..]).unwrap();
        stream.memcpy_dtoh(&dev, &mut dst_bytes[..]).unwrap();
        stream.synchronize().unwrap();
        assert!(
            src_bytes == dst_bytes,
            "device round trip changed the bytes"
        );
        drop(dev);

        // In place through the device address: the GPU's copy engine reads `src` and writes
        // `dst` through their mapped device pointers (no host staging).
        dst_bytes.fill(0);
        let (src_dev, dst_dev) = (
            src.cuda_device_ptr().unwrap(),
            dst.cuda_device_ptr().unwrap(),
        );
        assert_ne!(src_dev, dst_dev);
        ctx.bind_to_thread().unwrap();
        // SAFETY: both device addresses map `len` bytes of live registered slabs owned by the
        // test.
        unsafe { cudarc::driver::result::memcpy_dtod_sync(dst_dev, src_dev, len) }.unwrap();
        assert!(
            src_bytes == dst_bytes,
            "device-to-device copy between the mapped slabs changed the bytes"
        );

        // Unregistration: register a plain slab by hand, drop the registration, ask the driver.
        let plain = Slab::builder(len).build().unwrap();
        let ptr = plain.as_ptr().as_ptr();
        // SAFETY: `plain` outlives the registration, which is dropped just below.
        let reg = unsafe { cuda::Registration::new(ptr, len) }.unwrap();
        assert!(cuda::is_registered(&ctx, ptr));
        drop(reg);
        assert!(
            !cuda::is_registered(&ctx, ptr),
            "still registered after drop"
        );
        let src_ptr = src.as_ptr().as_ptr();
        drop(src);
        assert!(
            !cuda::is_registered(&ctx, src_ptr),
            "slab drop did not unregister"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Shared slabs

#[test]
fn shared_slab_seen_through_two_mappings() {
    let name = unique_name("two-maps");
    let a = Slab::create_shared(&name, Slab::builder(10_000)).unwrap();
    let b = Slab::open_shared(&name).unwrap();
    let c = Slab::open_shared(&name).unwrap();
    assert_eq!(a.len(), 3 * page());
    assert_eq!(b.len(), a.len());
    assert_ne!(a.as_ptr(), b.as_ptr());
    assert_eq!(a.shared_name(), Some(name.as_str()));
    assert_eq!(b.placement().shared_name, Some(name.clone()));
    assert!(bytes(&b).iter().all(|&x| x == 0));
    // SAFETY: in bounds of the mappings; this test is the only user.
    unsafe {
        a.as_ptr().as_ptr().add(100).write_volatile(0xAB);
        b.as_ptr().as_ptr().add(a.len() - 1).write_volatile(0xCD);
    }
    assert_eq!(bytes(&b)[100], 0xAB);
    assert_eq!(bytes(&c)[100], 0xAB);
    assert_eq!(bytes(&a)[a.len() - 1], 0xCD);
    // Dropping an opener does not remove the name; dropping the creator does.
    drop(b);
    assert!(Slab::open_shared(&name).is_ok());
    drop(a);
    assert_eq!(
        Slab::open_shared(&name).unwrap_err(),
        SlabError::NotFound { name: name.clone() }
    );
    // Mappings already open stay valid.
    assert_eq!(bytes(&c)[100], 0xAB);
}

#[test]
fn shared_slab_file_is_private_to_the_user() {
    use std::os::unix::fs::PermissionsExt;
    let name = unique_name("mode");
    let _a = Slab::create_shared(&name, Slab::builder(page())).unwrap();
    let meta = std::fs::metadata(format!("/dev/shm/{name}")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
}

#[test]
fn shared_create_twice_is_already_exists() {
    let name = unique_name("exists");
    let _a = Slab::create_shared(&name, Slab::builder(page())).unwrap();
    let err = Slab::create_shared(&name, Slab::builder(page())).unwrap_err();
    assert_eq!(err, SlabError::AlreadyExists { name: name.clone() });
    assert!(err.to_string().contains("already exists"));
    // The failed create did not remove the existing name.
    assert!(Slab::open_shared(&name).is_ok());
}

#[test]
fn shared_open_missing_is_not_found() {
    let name = unique_name("missing");
    let err = Slab::open_shared(&name).unwrap_err();
    assert_eq!(err, SlabError::NotFound { name });
}

#[test]
fn shared_open_unsized_is_shared_empty() {
    let name = unique_name("unsized");
    let cname = shm::validate(&name).unwrap();
    let fd = shm::create(&name, &cname).unwrap();
    let err = Slab::open_shared(&name).unwrap_err();
    shm::unlink(&cname);
    drop(fd);
    assert_eq!(err, SlabError::SharedEmpty { name });
}

#[test]
fn shared_too_large_for_off_t_is_shm_error_and_unlinks() {
    let name = unique_name("huge");
    let err = Slab::create_shared(&name, Slab::builder(1usize << 63)).unwrap_err();
    assert_eq!(
        err,
        SlabError::Shm {
            name: name.clone(),
            call: "posix_fallocate",
            errno: libc::EFBIG
        }
    );
    assert!(err.to_string().contains("posix_fallocate"));
    assert_eq!(
        Slab::open_shared(&name).unwrap_err(),
        SlabError::NotFound { name }
    );
}

#[test]
fn shared_builder_errors_unlink_the_name() {
    let name = unique_name("feature-err");
    let b = Slab::builder(page()).cuda_host_register(true);
    let err = Slab::create_shared(&name, b).unwrap_err();
    if !matches!(err, SlabError::CudaUnavailable { .. }) {
        println!("branch: CUDA available; nothing to check");
        return;
    }
    assert_eq!(
        Slab::open_shared(&name).unwrap_err(),
        SlabError::NotFound { name }
    );
}

#[test]
fn invalid_names_are_rejected() {
    let long = "x".repeat(256);
    let cases: [(&str, &str); 6] = [
        ("", "the name is empty"),
        (
            "/leading",
            "the name contains '/' (give the bare name, without a leading '/')",
        ),
        (
            "a/b",
            "the name contains '/' (give the bare name, without a leading '/')",
        ),
        ("nul\0byte", "the name contains a NUL byte"),
        ("..", "the name is '.' or '..'"),
        (&long, "the name is longer than 255 bytes"),
    ];
    for (name, reason) in cases {
        let expected = SlabError::InvalidName {
            name: name.to_owned(),
            reason,
        };
        assert_eq!(
            Slab::create_shared(name, Slab::builder(page())).unwrap_err(),
            expected
        );
        assert_eq!(Slab::open_shared(name).unwrap_err(), expected);
    }
    // 255 bytes is accepted.
    let ok = format!("psyne-{}-{}", std::process::id(), "y".repeat(200));
    let ok = &ok[..255.min(ok.len())];
    assert!(shm::validate(ok).is_ok());
}

// ---------------------------------------------------------------------------------------------
// Error messages of variants that tests cannot provoke on a healthy machine

#[test]
fn unprovokable_variants_have_actionable_messages() {
    let cases = [
        (
            SlabError::Populate {
                errno: libc::ENOMEM,
            },
            "faulting in",
        ),
        (SlabError::Topology { reason: "x".into() }, "topology"),
        (
            SlabError::NumaBind {
                node: 1,
                reason: "x".into(),
            },
            "NUMA node 1",
        ),
        (SlabError::CpuBind { reason: "x".into() }, "CPUs"),
        (
            SlabError::CudaRegister { reason: "x".into() },
            "registration",
        ),
        (
            SlabError::Lock {
                size: 1,
                limit: None,
                errno: libc::ENOMEM,
            },
            "unlimited",
        ),
    ];
    for (err, needle) in cases {
        let msg = err.to_string();
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
        let _: &dyn std::error::Error = &err;
    }
}

// ---------------------------------------------------------------------------------------------
// Checked opens of existing objects, and an opener's own options

/// The `VmFlags` of the smaps entry starting exactly at `ptr`.
fn smaps_vm_flags_at(ptr: usize) -> Option<Vec<String>> {
    let text = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let head = format!("{ptr:x}-");
    let mut lines = text.lines().skip_while(|l| !l.starts_with(&head));
    lines.next()?;
    for l in lines {
        if let Some(v) = l.strip_prefix("VmFlags:") {
            return Some(v.split_whitespace().map(str::to_owned).collect());
        }
    }
    None
}

/// Opens `/dev/shm/<name>` read-write as a raw shm descriptor (tests play the peer with it).
fn raw_open(name: &str) -> OwnedFd {
    let cname = shm::validate(name).unwrap();
    // SAFETY: `cname` is NUL-terminated; the result is checked.
    let fd = unsafe { libc::shm_open(cname.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC, 0) };
    assert!(fd >= 0);
    // SAFETY: a fresh descriptor nobody else owns.
    unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }
}

#[test]
fn open_checked_reports_the_objects_stat() {
    use std::os::unix::fs::MetadataExt;
    let name = unique_name("stat");
    let _a = Slab::create_shared(&name, Slab::builder(3 * page())).unwrap();
    let cname = shm::validate(&name).unwrap();
    let (fd, st) = shm::open_checked(&name, &cname, false).unwrap();
    let meta = std::fs::metadata(format!("/dev/shm/{name}")).unwrap();
    assert_eq!(st.size, 3 * page() as u64);
    assert_eq!(st.uid, meta.uid());
    assert_eq!(st.permissions(), 0o600);
    assert_eq!((st.dev, st.ino), (meta.dev(), meta.ino()));
    assert!(st.is_regular());
    assert_eq!(fstat(&fd), Ok(st));
    // Read-only really is read-only.
    // SAFETY: `fd` is open; ftruncate has no memory effects.
    assert_ne!(unsafe { libc::ftruncate(fd.as_raw_fd(), 0) }, 0);
    assert_eq!(errno(), libc::EINVAL);
}

/// Issue 11: the read-only open the stale-name logic makes used to block on a FIFO (no
/// `O_NONBLOCK`, no type check) until a writer came.
#[test]
fn open_checked_read_only_does_not_block_on_a_fifo() {
    let name = unique_name("ro-fifo");
    let path = CString::new(format!("/dev/shm/{name}")).unwrap();
    // SAFETY: `path` is NUL-terminated.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let n = name.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let cname = shm::validate(&n).unwrap();
        let _ = tx.send(shm::open_checked(&n, &cname, false).map(|(_, st)| st));
    });
    let result = rx.recv_timeout(std::time::Duration::from_secs(5));
    let _ = std::fs::remove_file(format!("/dev/shm/{name}"));
    assert_eq!(
        result.expect("open_checked blocked on a FIFO"),
        Err(SlabError::NotRegularFile { name })
    );
}

/// Issue 10: the size is checked again once a mapping exists; a peer's truncation meanwhile is
/// a typed error, not a SIGBUS later.
#[test]
fn size_recheck_reports_a_truncated_object() {
    let name = unique_name("shrunk");
    let a = Slab::create_shared(&name, Slab::builder(4 * page())).unwrap();
    let peer = raw_open(&name);
    assert_eq!(
        shm::check_size(&name, &peer, a.len() as u64, a.len()),
        Ok(())
    );
    // SAFETY: `peer` is open read-write; nothing touches the slab's pages afterwards.
    let r = unsafe { libc::ftruncate(peer.as_raw_fd(), page() as i64) };
    assert_eq!(r, 0);
    let err = shm::check_size(&name, &peer, a.len() as u64, a.len()).unwrap_err();
    assert_eq!(
        err,
        SlabError::SharedShrunk {
            name: name.clone(),
            mapped: 4 * page(),
            size: page() as u64
        }
    );
    assert!(err.to_string().contains("shrank"), "{err}");
}

/// The creator's pages are reserved but not faulted into its page tables; an opener's
/// `populate(true)` faults its own mapping in, with the object's size whatever the builder says.
#[test]
fn opener_populate_faults_its_mapping_in_and_takes_the_objects_size() {
    let name = unique_name("open-populate");
    let a = Slab::create_shared(&name, Slab::builder(16 * page())).unwrap();
    assert_eq!(a.placement().resident_bytes, Some(0));
    let plain = Slab::open_shared(&name).unwrap();
    assert_eq!(plain.placement().resident_bytes, Some(0));
    let b = Slab::open_shared_with(&name, Slab::builder(1 << 40).populate(true)).unwrap();
    let p = b.placement();
    assert_eq!(b.len(), 16 * page());
    assert_eq!(p.requested_bytes, 16 * page());
    assert_eq!(p.resident_bytes, Some(16 * page() as u64));
    assert_eq!(p.kind, PageKind::Normal);
    assert_eq!(p.lock, LockStatus::NotRequested);
    assert_eq!(p.shared_name, Some(name.clone()));
    // Populating kept the bytes (zero) and shares them.
    // SAFETY: in bounds; this test is the only user.
    unsafe { a.as_ptr().as_ptr().add(5 * page()).write_volatile(7) };
    assert_eq!(bytes(&b)[5 * page()], 7);
    assert_eq!(bytes(&b).iter().map(|&x| x as usize).sum::<usize>(), 7);
}

#[test]
fn opener_lock_locks_its_mapping() {
    let _g = LOCK_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let name = unique_name("open-lock");
    let _a = Slab::create_shared(&name, Slab::builder(16 * page())).unwrap();
    let before = vm_locked_kib();
    let b = match Slab::open_shared_with(&name, Slab::builder(0).lock(Lock::Require)) {
        Ok(b) => b,
        Err(e) => {
            println!("branch: locking 64 KiB failed here ({e}); asserting the error's fields");
            assert!(matches!(e, SlabError::Lock { size, .. } if size == 16 * page()));
            return;
        }
    };
    println!("branch: locked");
    let p = b.placement();
    assert_eq!(p.lock, LockStatus::Locked);
    assert_eq!(p.locked_bytes, Some(16 * page() as u64));
    assert_eq!(vm_locked_kib(), before + (16 * page() / 1024) as u64);
    drop(b);
    assert_eq!(vm_locked_kib(), before, "munlock/munmap on drop");
}

/// An opener's transparent-huge-page request follows `shmem_enabled` like a creator's: the
/// mapping is 2 MiB-aligned and advised (`hg` in smaps) when the mode allows, refused with the
/// mode otherwise, and refused for an object whose size is not a multiple of 2 MiB. The sysfs
/// files are replaced (`with_thp_files`) so every branch runs on any kernel.
#[test]
fn opener_transparent_huge_pages_follow_shmem_setting() {
    let name = unique_name("open-thp");
    let _a = Slab::create_shared(&name, Slab::builder(SIZE_2M)).unwrap();
    let small = unique_name("open-thp-small");
    let _s = Slab::create_shared(&small, Slab::builder(page())).unwrap();
    let advise = "always within_size [advise] never deny force\n";
    with_thp_files(Some(advise), || {
        let b =
            Slab::open_shared_with(&name, Slab::builder(0).huge_pages(HugePages::Require)).unwrap();
        let p = b.placement();
        assert_eq!(p.kind, PageKind::TransparentHuge);
        assert_eq!(p.page_size, SIZE_2M);
        assert_eq!(
            p.explicit_failure,
            Some(ExplicitHugeFailure::SharedNotSupported)
        );
        assert_eq!(b.as_ptr().as_ptr() as usize % SIZE_2M, 0);
        let flags = smaps_vm_flags_at(b.as_ptr().as_ptr() as usize).unwrap();
        assert!(flags.iter().any(|f| f == "hg"), "{flags:?}");
        let s =
            Slab::open_shared_with(&small, Slab::builder(0).huge_pages(HugePages::Prefer)).unwrap();
        assert_eq!(s.placement().kind, PageKind::Normal);
        assert_eq!(
            s.placement().transparent_failure,
            Some(TransparentHugeFailure::ObjectNotHugeAligned { size: page() })
        );
    });
    let never = "always within_size advise [never] deny force\n";
    with_thp_files(Some(never), || {
        let disabled = TransparentHugeFailure::Disabled {
            file: THP_SHMEM_ENABLED,
            mode: "never".into(),
        };
        let b =
            Slab::open_shared_with(&name, Slab::builder(0).huge_pages(HugePages::Prefer)).unwrap();
        assert_eq!(b.placement().kind, PageKind::Normal);
        assert_eq!(b.placement().transparent_failure, Some(disabled.clone()));
        assert_eq!(
            Slab::open_shared_with(&name, Slab::builder(0).huge_pages(HugePages::Require))
                .unwrap_err(),
            SlabError::HugePagesUnavailable {
                explicit: ExplicitHugeFailure::SharedNotSupported,
                transparent: disabled,
            }
        );
    });
}

/// An opener's options are checked like a creator's; a failed open leaves the name alone.
#[test]
fn opener_option_errors_keep_the_name() {
    let name = unique_name("open-err");
    let _a = Slab::create_shared(&name, Slab::builder(page())).unwrap();
    let err = Slab::open_shared_with(&name, Slab::builder(0).cuda_host_register(true));
    if !matches!(err, Err(SlabError::CudaUnavailable { .. })) {
        println!("branch: CUDA available; nothing to check");
        return;
    }
    #[cfg(not(feature = "numa"))]
    assert_eq!(
        Slab::open_shared_with(&name, Slab::builder(0).numa_node(0)).unwrap_err(),
        SlabError::NumaUnsupported
    );
    assert!(Slab::open_shared(&name).is_ok());
}
