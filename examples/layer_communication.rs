//! Three layers of a network in three threads, joined by two psyne channels:
//!
//! ```text
//! embedding layer ──Embedding256──▶ dense layer: y = relu(W x) ──DenseOutput──▶ output layer
//! ```
//!
//! The dense layer multiplies its 256x256 weights straight from the received message (a nalgebra
//! view of ring memory) into a loaned output message (`gemv` into `out.data_vector_mut()`): no copy
//! of either vector, no allocation. The demo prints the throughput, per-hop and end-to-end
//! latency percentiles from the messages' header timestamps, and the number of heap allocations
//! made by the three threads in their steady-state loops, counted by a counting allocator.
//!
//! ```text
//! cargo run --release --example layer_communication -- [--messages N] [--cpus a,b] [--capacity N] [--pace-us US]
//! ```
//!
//! The first `N` messages go back to back (the dense layer is the bottleneck, so queues are full
//! and latency is mostly waiting in them); then `N / 10` more are paced, one every `US`
//! microseconds (default 50, at least 3x the dense layer's compute time), so queues are empty
//! and latency is the channels' own. The embedding and output layers share the first CPU, the
//! dense layer has the second; the channels use the default wait strategy (spin, yield, then
//! park), so two threads can share a core.

use nalgebra::{DMatrix, SVector};
use psyne::{Channel, PsyneMessage};
use psyne_examples::affinity::pin_to_cpu;
use psyne_examples::alloc::{CountingAlloc, thread_allocations};
use psyne_examples::args::{self, Args};
use psyne_examples::stats::quantile_sorted;
use psyne_examples::timer::{monotonic_ns, monotonic_overhead_ns};
use psyne_schemas::Embedding256;
use std::time::Instant;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Width of every layer.
const DIM: usize = 256;

/// Error that can cross threads.
type Error = Box<dyn std::error::Error + Send + Sync>;

/// What the dense layer emits: its activations, and when the input that produced them left the
/// embedding layer (copied from that message's header), so the output layer can time the whole
/// path.
#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
pub struct DenseOutput {
    /// `relu(W x)`.
    pub data: [f32; DIM],
    /// Index of the sample in its batch.
    pub batch_idx: u32,
    /// The layer that produced it (1: the dense layer).
    pub layer_id: u32,
    /// Send timestamp (ns, `CLOCK_MONOTONIC`) of the embedding this was computed from.
    pub input_sent_ns: u64,
}

/// Input of message `i`, element `j` (deterministic, so the result can be checked).
fn input_value(i: u64, j: usize) -> f32 {
    ((i as usize).wrapping_mul(31).wrapping_add(j * 7) % 97) as f32 / 97.0 - 0.5
}

/// Dense weight `(r, c)`.
fn weight(r: usize, c: usize) -> f32 {
    (((r * 7 + c * 13) % 29) as f32 / 29.0 - 0.5) / 16.0
}

fn pin(cpu: usize) -> Result<(), Error> {
    pin_to_cpu(cpu).map_err(|e| format!("pinning to CPU {cpu}: {e}").into())
}

/// What the output layer saw.
struct OutputLog {
    hop2: Vec<u64>,
    e2e: Vec<u64>,
    allocs: u64,
    /// Output layer's receive times of the first and last timed back-to-back message.
    stream_ns: (u64, u64),
    check: [f32; DIM],
    out_of_order: u64,
    activity: f64,
}

fn percentiles(samples: &[u64]) -> (u64, u64, u64, u64) {
    let mut v = samples.to_vec();
    v.sort_unstable();
    (
        quantile_sorted(&v, 0.5),
        quantile_sorted(&v, 0.99),
        quantile_sorted(&v, 0.999),
        v.last().copied().unwrap_or(0),
    )
}

/// What `--help` prints.
const USAGE: &str = "\
Three layers (embedding -> dense -> output) joined by two psyne channels.

usage: layer_communication [--messages N] [--cpus a,b] [--capacity N] [--pace-us US]

  --messages N   messages sent back to back, then N/10 paced ones (default 200000, at least 100)
  --cpus a,b     CPU of the embedding and output layers, CPU of the dense layer
                 (default: the first two CPUs this process may use)
  --capacity N   messages each channel holds (default 64)
  --pace-us US   microseconds between paced messages (default 50)
";

fn us(ns: u64) -> String {
    format!("{:.2} µs", ns as f64 / 1e3)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse(&["messages", "cpus", "capacity", "pace-us"], USAGE)?;
    let n: u64 = args.value("messages", 200_000)?;
    let capacity: usize = args.value("capacity", 64)?;
    let pace_arg_ns = args.value("pace-us", 50.0f64)? * 1e3;
    let (cpu_a, cpu_b) = args::cpu_pair(&args)?;
    if n < 100 {
        return Err("--messages must be at least 100".into());
    }
    let paced = (n / 10).max(100);
    let total = n + paced;
    let warm = n / 10; // excluded from latency, throughput and allocation counts
    let paced_warm = paced / 10;
    let check_idx = n / 2;

    let w = DMatrix::<f32>::from_fn(DIM, DIM, weight);

    // The dense layer's compute alone, for reference.
    let x0 = SVector::<f32, DIM>::from_fn(|j, _| input_value(0, j));
    let mut y0 = SVector::<f32, DIM>::zeros();
    let reps = 20_000;
    let t = Instant::now();
    for _ in 0..reps {
        y0.gemv(1.0, &w, std::hint::black_box(&x0), 0.0);
        std::hint::black_box(&mut y0);
    }
    let gemv_ns = t.elapsed().as_nanos() as f64 / reps as f64;
    // Paced sends must leave the dense layer idle between messages.
    let pace_ns = pace_arg_ns.max(3.0 * gemv_ns) as u64;

    let (mut tx1, mut rx1) = Channel::<Embedding256>::builder()
        .capacity(capacity)
        .timestamps(true)
        .build()?;
    let (mut tx2, mut rx2) = Channel::<DenseOutput>::builder()
        .capacity(capacity)
        .timestamps(true)
        .build()?;

    println!(
        "layer_communication: embedding -> dense (y = relu(W x), W {DIM}x{DIM} f32) -> output"
    );
    println!(
        "  channels: Embedding256 ({} B) and DenseOutput ({} B), capacity {capacity} messages each, \
         default wait (spin, yield, park), header timestamps on",
        size_of::<Embedding256>(),
        size_of::<DenseOutput>()
    );
    println!(
        "  threads: embedding layer on CPU {cpu_a}, dense layer on CPU {cpu_b}, output layer on CPU {cpu_a}"
    );
    println!(
        "  {n} messages back to back, then {paced} paced one every {:.0} µs (the first 10% of each are warm-up)\n",
        pace_ns as f64 / 1e3
    );

    let w = &w;
    // The threads borrow the ends, so their counters can be read afterwards.
    let (emb_tx, dense_rx, dense_tx, out_rx) = (&mut tx1, &mut rx1, &mut tx2, &mut rx2);
    let (emb, dense, out) = std::thread::scope(|s| {
        // Embedding layer: writes each embedding in place in channel memory.
        let emb = s.spawn(move || -> Result<u64, Error> {
            pin(cpu_a)?;
            let mut a0 = 0;
            let mut next = 0;
            for i in 0..total {
                if i == warm {
                    a0 = thread_allocations();
                }
                if i >= n {
                    while monotonic_ns() < next {
                        std::thread::yield_now(); // the output layer shares this CPU
                    }
                    next = monotonic_ns() + pace_ns;
                }
                let mut x = emb_tx.allocate()?;
                for (j, v) in x.data.iter_mut().enumerate() {
                    *v = input_value(i, j);
                }
                x.batch_idx = (i % 32) as u32;
                x.layer_id = 0;
                x.send();
            }
            Ok(thread_allocations() - a0)
        });

        // Dense layer: reads the input in place, writes W x in place into the output loan.
        let dense = s.spawn(move || -> Result<(Vec<u64>, u64), Error> {
            pin(cpu_b)?;
            let mut hop1 = Vec::with_capacity(total as usize);
            let mut a0 = 0;
            for i in 0..total {
                if i == warm {
                    a0 = thread_allocations();
                }
                let x = dense_rx.recv()?;
                let now = monotonic_ns();
                let sent = x.header().timestamp_ns;
                hop1.push(now.saturating_sub(sent));
                let mut y = dense_tx.allocate()?;
                {
                    let mut v = y.data_vector_mut();
                    v.gemv(1.0, w, &x.data_vector(), 0.0);
                    v.apply(|a| *a = a.max(0.0));
                }
                y.batch_idx = x.batch_idx;
                y.layer_id = 1;
                y.input_sent_ns = sent;
                y.send();
            } // `x` dropped here: its ring space goes back to the embedding layer
            Ok((hop1, thread_allocations() - a0))
        });

        // Output layer: reads the activations in place.
        let out = s.spawn(move || -> Result<OutputLog, Error> {
            pin(cpu_a)?;
            let mut log = OutputLog {
                hop2: Vec::with_capacity(total as usize),
                e2e: Vec::with_capacity(total as usize),
                allocs: 0,
                stream_ns: (0, 0),
                check: [0.0; DIM],
                out_of_order: 0,
                activity: 0.0,
            };
            let mut a0 = 0;
            for i in 0..total {
                if i == warm {
                    a0 = thread_allocations();
                }
                let y = out_rx.recv()?;
                let now = monotonic_ns();
                log.hop2.push(now.saturating_sub(y.header().timestamp_ns));
                log.e2e.push(now.saturating_sub(y.input_sent_ns));
                log.out_of_order +=
                    u64::from(y.header().sequence != i || y.batch_idx != (i % 32) as u32);
                log.activity += f64::from(y.data_vector().sum());
                if i == check_idx {
                    log.check = y.data;
                }
                if i == warm {
                    log.stream_ns.0 = now;
                }
                if i == n - 1 {
                    log.stream_ns.1 = now;
                }
            }
            log.allocs = thread_allocations() - a0;
            Ok(log)
        });
        (emb.join(), dense.join(), out.join())
    });
    let emb_allocs = emb
        .map_err(|_| "embedding layer panicked")?
        .map_err(|e| e.to_string())?;
    let (hop1, dense_allocs) = dense
        .map_err(|_| "dense layer panicked")?
        .map_err(|e| e.to_string())?;
    let log = out
        .map_err(|_| "output layer panicked")?
        .map_err(|e| e.to_string())?;

    // Throughput over the timed back-to-back messages.
    let timed = n - 1 - warm;
    let elapsed = (log.stream_ns.1 - log.stream_ns.0) as f64;
    let rate = timed as f64 / elapsed * 1e9;
    println!(
        "dense layer compute alone: {:.2} µs per gemv (at most {:.0} msg/s)",
        gemv_ns / 1e3,
        1e9 / gemv_ns
    );
    println!(
        "throughput, back to back: {rate:.0} msg/s ({:.2} µs per message; {:.2} GB/s of embeddings into the dense layer)\n",
        elapsed / timed as f64 / 1e3,
        rate * size_of::<Embedding256>() as f64 / 1e9
    );

    let clock_ns = monotonic_overhead_ns();
    println!(
        "latency from header timestamps (CLOCK_MONOTONIC, send to receive; one clock read costs {clock_ns:.0} ns and is in every sample):"
    );
    println!(
        "{:<44} {:>10} {:>10} {:>10} {:>10}",
        "", "p50", "p99", "p99.9", "max"
    );
    let phases = [
        ("back to back (queues full)", warm as usize..n as usize),
        (
            "paced (queues empty)",
            (n + paced_warm) as usize..total as usize,
        ),
    ];
    for (name, range) in phases {
        println!("  {name}");
        for (hop, v) in [
            ("embedding -> dense", &hop1),
            ("dense -> output", &log.hop2),
            ("end to end (embedding send -> output recv)", &log.e2e),
        ] {
            let (p50, p99, p999, max) = percentiles(&v[range.clone()]);
            println!(
                "    {hop:<42} {:>10} {:>10} {:>10} {:>10}",
                us(p50),
                us(p99),
                us(p999),
                us(max)
            );
        }
    }

    let allocs = emb_allocs + dense_allocs + log.allocs;
    println!(
        "\nheap allocations on the hot path: {allocs} (steady-state loops, {} messages: embedding {emb_allocs}, \
         dense {dense_allocs}, output {})",
        total - warm,
        log.allocs
    );

    let (s1, r1, s2, r2) = (tx1.stats(), rx1.stats(), tx2.stats(), rx2.stats());
    println!(
        "waiting (channel counters): the dense layer slept {} times for input ({} wake-ups sent by the \
         embedding layer), the embedding layer slept {} times for space; the output layer slept {} times for \
         input, the dense layer {} times for space",
        r1.parked, s1.wakeups, s1.parked, r2.parked, s2.parked
    );

    // Check one output against relu(W x) computed here, independently of the channels.
    let x = SVector::<f32, DIM>::from_fn(|j, _| input_value(check_idx, j));
    let want = (w * x).map(|a| a.max(0.0));
    let diff = want
        .iter()
        .zip(&log.check)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let ok = diff <= 1e-4 && log.out_of_order == 0;
    println!(
        "check: message {check_idx} equals relu(W x) computed separately (max |diff| {diff:.1e}); \
         {} messages out of order; sum of all outputs {:.3}",
        log.out_of_order, log.activity
    );
    if !ok {
        return Err("output check failed".into());
    }
    if allocs != 0 {
        return Err(format!("{allocs} heap allocations on the hot path").into());
    }
    Ok(())
}
