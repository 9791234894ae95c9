//! Random 8-byte reads over a 1 GiB slab: normal pages vs transparent huge pages.
//!
//! Two access patterns, each over a fully populated slab:
//! - `independent`: addresses from a xorshift generator; loads overlap in the out-of-order
//!   window, so this measures memory-level parallelism (and how TLB misses limit it);
//! - `dependent`: each address depends on the value the previous load returned (a chain), so
//!   this measures the full latency of one access: TLB walk plus cache miss.
//!
//! `cargo bench -p psyne --bench huge_pages` (about 30 s). At the end it prints the median
//! ns/access of every variant and the normal/THP ratio. Set `PSYNE_BENCH_SLAB_MIB` to change
//! the slab size (default 1024).

use std::cell::RefCell;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use psyne::slab::{HugePages, PageKind, Slab};

/// Reads per timed batch inside one criterion iteration: large, so timer cost is negligible.
const BATCH: u64 = 1 << 16;

/// Criterion's warm-up time; samples taken during it are left out of the printed medians.
const WARM_UP: Duration = Duration::from_millis(500);

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// Independent random reads; returns a checksum so nothing is optimised away.
fn independent(base: *const u64, words_mask: u64, seed: &mut u64, n: u64) -> u64 {
    let mut sum = 0u64;
    let mut x = *seed;
    for _ in 0..n {
        x = xorshift(x);
        // SAFETY: `x & words_mask` < number of u64 words in the slab.
        sum = sum.wrapping_add(unsafe { base.add((x & words_mask) as usize).read_volatile() });
    }
    *seed = x;
    sum
}

/// Dependent random reads: the next address mixes in the value just loaded (always 0, which
/// the compiler cannot know), so every load waits for the previous one.
fn dependent(base: *const u64, words_mask: u64, seed: &mut u64, n: u64) -> u64 {
    let mut x = *seed;
    for _ in 0..n {
        // SAFETY: `x & words_mask` < number of u64 words in the slab.
        let v = unsafe { base.add((x & words_mask) as usize).read_volatile() };
        x = xorshift(x.wrapping_add(v));
    }
    *seed = x;
    x
}

type Pattern = fn(*const u64, u64, &mut u64, u64) -> u64;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let mib: usize = std::env::var("PSYNE_BENCH_SLAB_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let size = mib << 20;
    assert!(
        size.is_power_of_two(),
        "PSYNE_BENCH_SLAB_MIB must be a power of two"
    );
    let words_mask = (size / 8 - 1) as u64;

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(WARM_UP)
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();

    let patterns: [(&str, Pattern); 2] = [("independent", independent), ("dependent", dependent)];
    // (pages, pattern) -> ns/access of each sample.
    let results: RefCell<Vec<(String, String, Vec<f64>)>> = RefCell::new(Vec::new());

    for (label, huge) in [("normal", HugePages::Off), ("thp", HugePages::Prefer)] {
        let t = Instant::now();
        let slab = match Slab::builder(size).huge_pages(huge).populate(true).build() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{label}: cannot build a {mib} MiB slab: {e}");
                continue;
            }
        };
        let fault_in = t.elapsed();
        let p = slab.placement();
        eprintln!(
            "{label}: {p}; populated in {fault_in:.2?}; huge share {:.3}",
            p.huge_share().unwrap_or(0.0)
        );
        if label == "thp" && p.kind != PageKind::TransparentHuge {
            eprintln!("thp: transparent huge pages unavailable here; the THP rows measure {p}");
        }
        let base = slab.as_ptr().as_ptr().cast::<u64>().cast_const();
        let mut group = c.benchmark_group(format!("slab_{mib}MiB_random_read"));
        for (pname, pattern) in patterns {
            let mut seed = 0x9E37_79B9_7F4A_7C15u64;
            let mut samples = Vec::new();
            let mut first_call: Option<Instant> = None;
            group.bench_with_input(BenchmarkId::new(pname, label), &(), |b, _| {
                b.iter_custom(|iters| {
                    let t = Instant::now();
                    black_box(pattern(base, words_mask, &mut seed, iters * BATCH));
                    let d = t.elapsed();
                    // Keep only the measurement phase (criterion warms up for WARM_UP first).
                    if first_call.get_or_insert(t).elapsed() > WARM_UP {
                        samples.push(d.as_nanos() as f64 / (iters * BATCH) as f64);
                    }
                    // Criterion sees one iteration as one batch of BATCH reads.
                    d
                })
            });
            results
                .borrow_mut()
                .push((pname.to_owned(), label.to_owned(), samples));
        }
        group.finish();
        drop(slab);
    }
    c.final_summary();

    let mut results = results.into_inner();
    println!(
        "\nmedian ns per 8-byte random read over {mib} MiB (criterion's measurement samples):"
    );
    for (pname, _) in patterns {
        let mut get = |label: &str| {
            results
                .iter_mut()
                .find(|(p, l, _)| p == pname && l == label)
                .map(|(_, _, s)| median(s))
        };
        let normal = get("normal");
        let thp = get("thp");
        match (normal, thp) {
            (Some(n), Some(t)) => println!(
                "  {pname:<12} normal {n:7.2} ns   thp {t:7.2} ns   normal/thp {:.2}x",
                n / t
            ),
            _ => println!("  {pname:<12} normal {normal:?}   thp {thp:?}"),
        }
    }
}
