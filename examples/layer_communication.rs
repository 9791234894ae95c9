//! Three layers of a network in three threads, joined by two psyne channels:
//!
//! ```text
//! embedding layer ──Embedding256──▶ dense layer: y = relu(W x) ──DenseOutput──▶ output layer
//! ```
//!
//! The dense layer multiplies its 256x256 weights straight from the received message (a nalgebra
//! view of ring memory) into a loaned output message (`gemv` into `out.data_vector_mut()`): no copy
//! of either vector, no allocation. The `gemv` runs with AVX2 and FMA when the CPU has them
//! (detected at run time, see [`psyne_examples::dense`]); the demo says which code ran. It prints
//! the throughput, per-hop and end-to-end latency percentiles from the messages' header
//! timestamps, how many messages were waiting in each queue when one was received, and the
//! number of heap allocations made by the three threads in their steady-state loops, counted by a
//! counting allocator.
//!
//! ```text
//! cargo run --release --example layer_communication -- [--messages N] [--cpus a,b] [--capacity N] [--pace-us US]
//! ```
//!
//! The first `N` messages go back to back (the dense layer is the bottleneck, so the queue in
//! front of it fills and latency is mostly waiting there); then `N / 10` more are paced, one every
//! `US` microseconds (default 50), meant to leave the queues empty so that latency is the
//! channels' own. A pace shorter than 3x the dense layer's measured compute time would not leave
//! it idle between messages, so such a pace is raised to that, and the demo prints that it did.
//! Whether the queues were in fact full or empty is not assumed: each phase's title says what the
//! measured queue lengths show. The embedding and output layers share the first CPU, the dense
//! layer has the second; the channels use the default wait strategy (spin, yield, then park), so
//! two threads can share a core.

use crossbeam_utils::CachePadded;
use nalgebra::{DMatrix, SVector};
use psyne::{Channel, PsyneMessage};
use psyne_examples::affinity::pin_to_cpu;
use psyne_examples::alloc::{CountingAlloc, thread_allocations};
use psyne_examples::args::{self, Args};
use psyne_examples::dense::{Path, relu_gemv};
use psyne_examples::stats::quantile_sorted;
use psyne_examples::timer::{monotonic_ns, monotonic_overhead_ns};
use psyne_schemas::Embedding256;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Messages still waiting in the dense -> output queue when each one was received.
    queued2: Vec<u32>,
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

/// Messages sent but not yet received when message `received_seq` (0-based) is received, from
/// the producer's count of messages sent (`sent`, read after the receive).
fn waiting(sent: &AtomicU64, received_seq: u64) -> u32 {
    let sent = sent.load(Ordering::Relaxed);
    u32::try_from(sent.saturating_sub(received_seq + 1)).unwrap_or(u32::MAX)
}

/// What the queue lengths measured in a phase show, in words: the median number of messages
/// waiting when one was received, against the queue's capacity.
fn queue_state(median_waiting: u32, capacity: usize) -> &'static str {
    let cap = capacity as f64;
    match f64::from(median_waiting) {
        0.0 => "empty",
        m if m >= 0.9 * cap => "full",
        m if m >= 0.5 * cap => "mostly full",
        _ => "partly full",
    }
}

/// The pace of the paced phase: `requested_ns`, or 3x the dense layer's compute time when that
/// is longer (so that the dense layer is idle between paced messages), and whether it was raised.
fn paced_interval_ns(requested_ns: f64, gemv_ns: f64) -> (u64, bool) {
    let floor = 3.0 * gemv_ns;
    if requested_ns >= floor {
        (requested_ns as u64, false)
    } else {
        (floor.ceil() as u64, true)
    }
}

/// What `--help` prints.
const USAGE: &str = "\
Three layers (embedding -> dense -> output) joined by two psyne channels.

usage: layer_communication [--messages N] [--cpus a,b] [--capacity N] [--pace-us US]

  --messages N   messages sent back to back, then N/10 paced ones (default 200000, at least 100)
  --cpus a,b     CPU of the embedding and output layers, CPU of the dense layer
                 (default: the first two CPUs this process may use)
  --capacity N   messages each channel holds at least (default 64; a ring is a power of two
                 in bytes, so it may hold more: the run prints how many)
  --pace-us US   microseconds between paced messages (default 50); a pace shorter than 3x the
                 dense layer's compute time measured at start-up is raised to that, so that the
                 dense layer idles between paced messages, and the run prints that it did

The dense layer's gemv uses AVX2+FMA when the CPU has both (detected at run time), else the
build's baseline code; the run prints which.
";

/// Median and largest of the queue lengths.
fn percentiles_u32(samples: &[u32]) -> (u32, u32) {
    let mut v = samples.to_vec();
    v.sort_unstable();
    let median = v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or(0);
    (median, v.last().copied().unwrap_or(0))
}

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
    let path = Path::detect();

    // The dense layer's compute alone, for reference, on the path it will run.
    let x0 = SVector::<f32, DIM>::from_fn(|j, _| input_value(0, j));
    let mut y0 = SVector::<f32, DIM>::zeros();
    let reps = 20_000;
    let t = Instant::now();
    for _ in 0..reps {
        relu_gemv(
            path,
            &mut y0.as_view_mut(),
            &w,
            &std::hint::black_box(&x0).as_view(),
        );
        std::hint::black_box(&mut y0);
    }
    let gemv_ns = t.elapsed().as_nanos() as f64 / reps as f64;
    // Paced sends must leave the dense layer idle between messages.
    let (pace_ns, pace_raised) = paced_interval_ns(pace_arg_ns, gemv_ns);

    let (mut tx1, mut rx1) = Channel::<Embedding256>::builder()
        .capacity(capacity)
        .timestamps(true)
        .build()?;
    let (mut tx2, mut rx2) = Channel::<DenseOutput>::builder()
        .capacity(capacity)
        .timestamps(true)
        .build()?;
    // Messages each ring holds (the requested capacity, rounded to the ring's power-of-two size).
    let held = |bytes: usize, size: usize| {
        psyne::ring::record_size(size).map_or(capacity, |record| bytes / record)
    };
    let cap1 = held(tx1.capacity_bytes(), size_of::<Embedding256>());
    let cap2 = held(tx2.capacity_bytes(), size_of::<DenseOutput>());

    println!(
        "layer_communication: embedding -> dense (y = relu(W x), W {DIM}x{DIM} f32) -> output"
    );
    println!(
        "  channels: Embedding256 ({} B) and DenseOutput ({} B), capacity {capacity} messages requested, \
         {cap1} and {cap2} held (a ring is a power of two in bytes), default wait (spin, yield, park), \
         header timestamps on",
        size_of::<Embedding256>(),
        size_of::<DenseOutput>()
    );
    println!(
        "  threads: embedding layer on CPU {cpu_a}, dense layer on CPU {cpu_b}, output layer on CPU {cpu_a}"
    );
    println!("  dense layer gemv: {}", path.describe());
    println!(
        "  {n} messages back to back, then {paced} paced one every {:.1} µs (the first 10% of each are warm-up)",
        pace_ns as f64 / 1e3
    );
    if pace_raised {
        println!(
            "  pace raised from the requested {:.1} µs to {:.1} µs: 3x the dense layer's compute time \
             measured just now ({:.2} µs per gemv), so that it is idle between paced messages",
            pace_arg_ns / 1e3,
            pace_ns as f64 / 1e3,
            gemv_ns / 1e3
        );
    }
    println!();
    // Messages sent so far by the embedding and the dense layer, for the queue lengths (one
    // relaxed store per message by the sender, one load per message by the receiver).
    let sent1 = CachePadded::new(AtomicU64::new(0));
    let sent2 = CachePadded::new(AtomicU64::new(0));
    let (sent1, sent2) = (&*sent1, &*sent2);

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
                sent1.store(i + 1, Ordering::Relaxed);
            }
            Ok(thread_allocations() - a0)
        });

        // Dense layer: reads the input in place, writes W x in place into the output loan.
        let dense = s.spawn(move || -> Result<(Vec<u64>, Vec<u32>, u64), Error> {
            pin(cpu_b)?;
            let mut hop1 = Vec::with_capacity(total as usize);
            let mut queued1 = Vec::with_capacity(total as usize);
            let mut a0 = 0;
            for i in 0..total {
                if i == warm {
                    a0 = thread_allocations();
                }
                let x = dense_rx.recv()?;
                let now = monotonic_ns();
                queued1.push(waiting(sent1, i));
                let sent = x.header().timestamp_ns;
                hop1.push(now.saturating_sub(sent));
                let mut y = dense_tx.allocate()?;
                relu_gemv(path, &mut y.data_vector_mut(), w, &x.data_vector());
                y.batch_idx = x.batch_idx;
                y.layer_id = 1;
                y.input_sent_ns = sent;
                y.send();
                sent2.store(i + 1, Ordering::Relaxed);
            } // `x` dropped here: its ring space goes back to the embedding layer
            Ok((hop1, queued1, thread_allocations() - a0))
        });

        // Output layer: reads the activations in place.
        let out = s.spawn(move || -> Result<OutputLog, Error> {
            pin(cpu_a)?;
            let mut log = OutputLog {
                hop2: Vec::with_capacity(total as usize),
                queued2: Vec::with_capacity(total as usize),
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
                log.queued2.push(waiting(sent2, i));
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
    let (hop1, queued1, dense_allocs) = dense
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
        "latency from header timestamps (CLOCK_MONOTONIC, send to receive; one clock read costs {clock_ns:.0} ns and is in every sample),"
    );
    println!(
        "and the messages still waiting in the hop's queue when one was received (p50 / max):"
    );
    println!(
        "{:<44} {:>10} {:>10} {:>10} {:>10} {:>13}",
        "", "p50", "p99", "p99.9", "max", "waiting"
    );
    let phases = [
        ("back to back".to_string(), warm as usize..n as usize),
        (
            format!("paced, one every {:.1} µs", pace_ns as f64 / 1e3),
            (n + paced_warm) as usize..total as usize,
        ),
    ];
    let mut paced_queued = false;
    for (k, (name, range)) in phases.into_iter().enumerate() {
        let q1 = percentiles_u32(&queued1[range.clone()]);
        let q2 = percentiles_u32(&log.queued2[range.clone()]);
        let (state1, state2) = (queue_state(q1.0, cap1), queue_state(q2.0, cap2));
        // The title says what the measured queue lengths show, not what the phase intends.
        let title = if state1 == state2 {
            format!("queues {state1}")
        } else {
            format!("queue into the dense layer {state1}, queue out of it {state2}")
        };
        println!("  {name} ({title})");
        paced_queued |= k == 1 && (q1.0 > 0 || q2.0 > 0);
        for (hop, v, q) in [
            ("embedding -> dense", &hop1, Some(q1)),
            ("dense -> output", &log.hop2, Some(q2)),
            ("end to end (embedding send -> output recv)", &log.e2e, None),
        ] {
            let (p50, p99, p999, max) = percentiles(&v[range.clone()]);
            let line = format!(
                "    {hop:<42} {:>10} {:>10} {:>10} {:>10} {:>13}",
                us(p50),
                us(p99),
                us(p999),
                us(max),
                q.map_or_else(String::new, |(m, x)| format!("{m} / {x}"))
            );
            println!("{}", line.trim_end());
        }
    }
    if paced_queued {
        println!(
            "  the paced messages did not find the queues empty, so their latency includes waiting: the \
             dense layer fell behind one message every {:.1} µs (back to back it took {:.2} µs per \
             message, {:.2} µs per gemv alone; a CPU shared with other work also takes it away for \
             longer); a larger --pace-us or a quieter machine gives the channels' own latency",
            pace_ns as f64 / 1e3,
            elapsed / timed as f64 / 1e3,
            gemv_ns / 1e3
        );
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
