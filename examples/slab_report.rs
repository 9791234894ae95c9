//! What each slab configuration actually obtains on this machine.
//!
//! Prints the kernel settings that decide it (huge page pools, transparent huge page modes,
//! `RLIMIT_MEMLOCK`), the NUMA topology (with `--features numa`), then one row per configuration:
//! what was requested, what [`Slab::placement`] says was obtained (or the error), and how long
//! faulting every page in took.
//!
//! ```text
//! cargo run --release -p psyne-examples --example slab_report [-- --mib N]
//! cargo run --release -p psyne-examples --features numa --example slab_report
//! ```

use std::time::Instant;

use psyne::slab::{HugePageSize, HugePages, Lock, PageKind, Placement, Slab, SlabBuilder};
use psyne_examples::args::Args;

/// What `--help` prints.
const USAGE: &str = "\
What each slab configuration (huge pages, locking, NUMA node, CUDA registration, shared memory)
obtains on this machine, beside the kernel settings that decide it.

usage: slab_report [--mib N]

  --mib N   size of each slab in MiB (default 64)
";

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "(unreadable)".into())
}

fn memlock_limit() -> String {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is valid storage for one rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut rl) } != 0 {
        return "(unreadable)".into();
    }
    if rl.rlim_cur == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        format!("{} KiB", rl.rlim_cur / 1024)
    }
}

fn machine() {
    println!("kernel settings");
    for size_kb in [2048, 1048576] {
        let dir = format!("/sys/kernel/mm/hugepages/hugepages-{size_kb}kB");
        if std::path::Path::new(&dir).exists() {
            println!(
                "  {:>7} huge pages: nr {} free {}",
                if size_kb == 2048 { "2 MiB" } else { "1 GiB" },
                read_trim(&format!("{dir}/nr_hugepages")),
                read_trim(&format!("{dir}/free_hugepages"))
            );
        } else {
            println!("  no {size_kb} kB huge page pool");
        }
    }
    println!(
        "  THP enabled:        {}",
        read_trim("/sys/kernel/mm/transparent_hugepage/enabled")
    );
    println!(
        "  THP shmem_enabled:  {}",
        read_trim("/sys/kernel/mm/transparent_hugepage/shmem_enabled")
    );
    println!(
        "  THP defrag:         {}",
        read_trim("/sys/kernel/mm/transparent_hugepage/defrag")
    );
    println!("  RLIMIT_MEMLOCK:     {}", memlock_limit());
}

#[cfg(feature = "numa")]
fn topology() {
    match psyne::slab::numa::topology() {
        Ok(t) => print!("\ntopology (hwloc): {t}"),
        Err(e) => println!("\ntopology: {e}"),
    }
}

#[cfg(not(feature = "numa"))]
fn topology() {
    println!("\ntopology: built without `--features numa`; NUMA nodes are reported as unknown");
}

fn kind(p: &Placement) -> String {
    let k = match p.kind {
        PageKind::ExplicitHuge => "explicit",
        PageKind::TransparentHuge => "THP",
        PageKind::Normal => "normal",
    };
    format!("{k} {}", human(p.page_size))
}

fn human(b: usize) -> String {
    match b {
        b if b >= 1 << 30 => format!("{}G", b >> 30),
        b if b >= 1 << 20 => format!("{}M", b >> 20),
        b => format!("{}K", b >> 10),
    }
}

fn row(label: &str, shared: Option<&str>, builder: SlabBuilder) {
    let t = Instant::now();
    let built = match shared {
        Some(name) => Slab::create_shared(name, builder),
        None => builder.build(),
    };
    let build_time = t.elapsed();
    let mut slab = match built {
        Ok(s) => s,
        Err(e) => {
            println!("{label:<28} ERROR: {e}");
            return;
        }
    };
    let t = Instant::now();
    let populated = slab.populate();
    let fault = t.elapsed();
    let p = slab.placement();
    let share = p
        .huge_share()
        .map_or_else(|| "-".into(), |s| format!("{:.0}%", s * 100.0));
    let nodes = p
        .numa_nodes
        .as_ref()
        .map_or_else(|| "?".into(), |n| format!("{n:?}"));
    let lock = format!("{:?}", p.lock);
    println!(
        "{label:<28} {:<13} {:>6} {share:>6} {nodes:>6}  {lock:<40} {:>4} {build_time:>10.2?} {:>10}",
        kind(&p),
        human(p.mapped_bytes),
        if p.cuda_registered { "yes" } else { "no" },
        match populated {
            Ok(()) => format!("{fault:.2?}"),
            Err(e) => format!("ERR {e}"),
        },
    );
    let mut why = Vec::new();
    if let Some(e) = &p.explicit_failure {
        why.push(format!("no explicit pages: {e}"));
    }
    if let Some(e) = &p.transparent_failure {
        why.push(format!("no THP: {e}"));
    }
    for w in why {
        println!("{:<28}   ↳ {w}", "");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse(&["mib"], USAGE)?;
    let mib: usize = args.value("mib", 64)?;
    if mib == 0 {
        return Err("--mib must be at least 1".into());
    }
    let size = mib << 20;
    machine();
    topology();

    println!("\n{mib} MiB slabs (placement read back after faulting every page in):");
    println!(
        "{:<28} {:<13} {:>6} {:>6} {:>6}  {:<40} {:>4} {:>10} {:>10}",
        "requested", "pages", "mapped", "huge", "nodes", "lock", "cuda", "build", "fault-in"
    );
    let b = || Slab::builder(size);
    row("default", None, b());
    row("huge Prefer 2M", None, b().huge_pages(HugePages::Prefer));
    row("huge Require 2M", None, b().huge_pages(HugePages::Require));
    row(
        "huge Prefer 1G",
        None,
        b().huge_pages(HugePages::Prefer)
            .huge_page_size(HugePageSize::Size1G),
    );
    row(
        "huge Require 1G",
        None,
        b().huge_pages(HugePages::Require)
            .huge_page_size(HugePageSize::Size1G),
    );
    row("lock Prefer", None, b().lock(Lock::Prefer));
    row("lock Require", None, b().lock(Lock::Require));
    row(
        "huge Prefer + lock Prefer",
        None,
        b().huge_pages(HugePages::Prefer).lock(Lock::Prefer),
    );
    row("numa_node(0)", None, b().numa_node(0));
    row(
        "numa_node(0) + huge Prefer",
        None,
        b().numa_node(0).huge_pages(HugePages::Prefer),
    );
    row("cuda_host_register", None, b().cuda_host_register(true));
    let name = format!("psyne-slab-report-{}", std::process::id());
    row("shared", Some(&name), b());
    row(
        "shared + huge Prefer",
        Some(&format!("{name}-huge")),
        b().huge_pages(HugePages::Prefer),
    );
    println!(
        "\nhuge = share of resident bytes in huge pages (smaps); nodes = NUMA nodes holding the \
         pages (? = unknown without --features numa); build = time to map; fault-in = time of \
         Slab::populate (pages already locked are faulted in by build)."
    );
    Ok(())
}
