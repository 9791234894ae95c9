//! Data-parallel gradient aggregation through a many-producers, one-consumer psyne channel:
//! `--workers` workers (threads, or with `--processes` processes over shared memory) each write
//! one `Gradient<P>` per step straight into their lane of the channel; the aggregator reads
//! every gradient in place (no copy), sums it into its accumulator for that step, and when all
//! workers' gradients of a step are in, averages them and applies momentum
//! (`Gradient::apply_momentum`) to its optimiser state. Then it tells the workers that the
//! step is done (one small SPSC channel per worker, standing in for the new parameters a real
//! trainer would send back); a worker may run `--ahead` steps ahead of the last finished one
//! (0: fully synchronous steps).
//!
//! It prints steps/s and gradient bandwidth, and checks the result against a sequential
//! computation of the same steps: bit-identical. The sum does not depend on the order the
//! gradients arrive in because it is exact: every gradient value is 0 or an `f32` of magnitude
//! in `[2^-23, 2)`, so a multiple of `2^-46`, and a sum of at most 32 of them needs at most 53
//! significant bits: an `f64` accumulator holds it exactly. (Summed in `f32` in arrival order,
//! the average would differ in the last bits from run to run.)
//!
//! Run with `cargo run --release --example gradient_aggregation -- [--workers 4] [--steps 2000]
//! [--params 1024] [--ahead 4] [--processes]` (`--help` prints the usage).

use psyne::{Channel, Consumer, MpscConsumer, MpscProducer, Producer, PsyneMessage, RecvError};
use psyne_examples::args::Args;
use psyne_examples::training::data::splitmix;
use psyne_schemas::Gradient;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The shape of a run.
#[derive(Debug, Clone, Copy)]
struct Plan {
    workers: u32,
    steps: u32,
    /// Steps a worker may be ahead of the last step the aggregator finished.
    ahead: u32,
}

impl Plan {
    /// Gradients in flight per worker (its lane), and step messages per worker: room for
    /// `ahead + 1` steps and one more.
    fn lane(&self) -> usize {
        self.ahead as usize + 2
    }
}
/// Momentum coefficient.
const BETA: f32 = 0.9;
/// Learning rate recorded in every gradient.
const LEARNING_RATE: f32 = 0.01;
/// Longest any wait may take before the run is declared stuck.
const PATIENCE: Duration = Duration::from_secs(30);

/// The aggregator's word to worker `w`: step `step` is finished.
#[derive(Clone, Copy, Debug, PsyneMessage)]
#[repr(C)]
struct StepDone {
    step: u64,
}

/// What `--help` prints.
const USAGE: &str = "\
Data-parallel gradient aggregation: workers each send one Gradient<P> per step through a
many-producers, one-consumer psyne channel; the aggregator averages them in place and applies
momentum; prints steps/s and checks the result against a sequential computation.

usage: gradient_aggregation [--workers N] [--steps S] [--params P] [--ahead K] [--processes]

  --workers N    workers (producers), 1 to 32 (default 4)
  --steps S      optimiser steps (default 2000)
  --params P     parameters per gradient: 256, 1024 or 16384 (default 1024)
  --ahead K      steps a worker may run ahead of the last finished step (default 4; 0 makes
                 every step wait for the previous one)
  --processes    workers in separate processes, over a shared-memory channel
";

/// Hidden option of a worker process: `--worker-of <name> <index>` (then the run's options).
const WORKER_FLAG: &str = "--worker-of";

/// Gradient value `i` of worker `w` at step `s`: 0, or magnitude in `[2^-23, 2)` (see the
/// module docs for why that keeps the sum exact).
#[inline]
fn gradient_value(w: u32, s: u32, i: usize) -> f32 {
    let u = splitmix((u64::from(w) << 48) ^ (u64::from(s) << 24) ^ i as u64);
    let k = ((u >> 40) as i32) - (1 << 23); // in -2^23 .. 2^23
    let scale = 1.0 + (u & 0xFF) as f32 / 256.0; // in [1, 2)
    k as f32 * (1.0 / 8_388_608.0) * scale
}

/// What the aggregator computed: the optimiser state after the last step and a digest of
/// every step's average.
struct Outcome {
    momentum_bits: Vec<u32>,
    digest: u64,
}

fn digest_step(digest: u64, average: &[f32]) -> u64 {
    average.iter().fold(digest, |h, a| {
        (h ^ u64::from(a.to_bits())).wrapping_mul(0x100_0000_01B3)
    })
}

/// Worker `w`: for every step, waits until it is at most `plan.ahead` steps ahead, then writes
/// its gradient in place in its lane and sends it.
fn worker<const P: usize>(
    w: u32,
    plan: Plan,
    tx: &mut MpscProducer<Gradient<P>>,
    done: &mut Consumer<StepDone>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut finished: Option<u64> = None; // last step the aggregator finished
    for s in 0..plan.steps {
        while s > plan.ahead && finished.is_none_or(|f| f < u64::from(s - plan.ahead - 1)) {
            finished = Some(done.recv_timeout(PATIENCE)?.step);
        }
        let mut g = tx.allocate_timeout(PATIENCE)?; // in ring memory
        for (i, x) in g.grad.iter_mut().enumerate() {
            *x = gradient_value(w, s, i);
        }
        // The aggregator reads `grad` only; the momentum buffer travels unused here.
        g.layer_id = 0;
        g.parameter_id = w;
        g.iteration = s;
        g.learning_rate = LEARNING_RATE;
        g.send();
    }
    Ok(())
}

/// The aggregator: receives every worker's gradient of every step (read in place), averages
/// each step's and applies momentum, then tells every worker the step is done.
fn aggregate<const P: usize>(
    plan: Plan,
    rx: &mut MpscConsumer<Gradient<P>>,
    done: &mut [Producer<StepDone>],
) -> Result<(Outcome, Duration), Box<dyn std::error::Error>> {
    let Plan { workers, steps, .. } = plan;
    let slots = plan.ahead as usize + 1;
    // Accumulators for the steps that can be in flight at once, and who contributed.
    let mut sums = vec![vec![0.0f64; P]; slots];
    let mut arrived = vec![0u64; slots];
    let mut state: Box<Gradient<P>> = Box::new(psyne::bytemuck::Zeroable::zeroed());
    let mut average = vec![0.0f32; P];
    let mut digest = 0xCBF2_9CE4_8422_2325u64;
    let mut next_step = 0u32; // the oldest unfinished step
    let start = Instant::now();
    while next_step < steps {
        let g = rx.recv_timeout(PATIENCE)?;
        let (s, w) = (g.iteration, g.parameter_id);
        if s < next_step || s >= next_step + slots as u32 || w >= workers {
            return Err(format!("gradient of worker {w} for step {s} is out of range").into());
        }
        let slot = s as usize % slots;
        if arrived[slot] & (1 << w) != 0 {
            return Err(format!("two gradients of worker {w} for step {s}").into());
        }
        arrived[slot] |= 1 << w;
        for (acc, &x) in sums[slot].iter_mut().zip(g.grad.iter()) {
            *acc += f64::from(x); // read in place, in the channel's memory
        }
        drop(g); // hands the space back to the worker
        // Finish every step that is complete, oldest first.
        loop {
            let slot = next_step as usize % slots;
            if arrived[slot].count_ones() != workers || next_step >= steps {
                break;
            }
            for (a, acc) in average.iter_mut().zip(sums[slot].iter_mut()) {
                *a = (*acc / f64::from(workers)) as f32;
                *acc = 0.0;
            }
            arrived[slot] = 0;
            state.grad.copy_from_slice(&average);
            state.iteration = next_step;
            state.learning_rate = LEARNING_RATE;
            state.apply_momentum(BETA);
            digest = digest_step(digest, &average);
            for d in done.iter_mut() {
                // A worker that finished all its steps may be gone: that is fine.
                match d.send_timeout(
                    &StepDone {
                        step: u64::from(next_step),
                    },
                    PATIENCE,
                ) {
                    Ok(()) | Err(psyne::SendError::Disconnected) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            next_step += 1;
        }
    }
    let elapsed = start.elapsed();
    Ok((
        Outcome {
            momentum_bits: state.momentum.iter().map(|m| m.to_bits()).collect(),
            digest,
        },
        elapsed,
    ))
}

/// The same steps, one worker after another, with no channel.
fn sequential<const P: usize>(workers: u32, steps: u32) -> Outcome {
    let mut state: Box<Gradient<P>> = Box::new(psyne::bytemuck::Zeroable::zeroed());
    let mut sum = vec![0.0f64; P];
    let mut average = vec![0.0f32; P];
    let mut digest = 0xCBF2_9CE4_8422_2325u64;
    for s in 0..steps {
        sum.fill(0.0);
        for w in 0..workers {
            for (i, acc) in sum.iter_mut().enumerate() {
                *acc += f64::from(gradient_value(w, s, i));
            }
        }
        for (a, acc) in average.iter_mut().zip(&sum) {
            *a = (*acc / f64::from(workers)) as f32;
        }
        state.grad.copy_from_slice(&average);
        state.apply_momentum(BETA);
        digest = digest_step(digest, &average);
    }
    Outcome {
        momentum_bits: state.momentum.iter().map(|m| m.to_bits()).collect(),
        digest,
    }
}

/// Workers as threads of this process.
fn with_threads<const P: usize>(
    plan: Plan,
) -> Result<(Outcome, Duration), Box<dyn std::error::Error>> {
    let (tx, mut rx) = Channel::<Gradient<P>>::mpsc()
        .capacity(plan.lane())
        .max_producers(plan.workers as usize)
        .build()?;
    let mut txs = vec![tx];
    for _ in 1..plan.workers {
        txs.push(txs[0].try_clone()?);
    }
    let mut done_tx = Vec::new();
    let mut handles = Vec::new();
    for (w, mut tx) in txs.into_iter().enumerate() {
        let (d_tx, mut d_rx) = Channel::<StepDone>::builder()
            .capacity(plan.lane())
            .build()?;
        done_tx.push(d_tx);
        handles.push(std::thread::spawn(move || -> Result<(), String> {
            worker(w as u32, plan, &mut tx, &mut d_rx).map_err(|e| e.to_string())
        }));
    }
    let out = aggregate(plan, &mut rx, &mut done_tx);
    drop(done_tx); // a worker waiting for a step that never comes sees Disconnected
    for h in handles {
        h.join().map_err(|_| "a worker panicked")??;
    }
    let out = out?;
    match rx.recv_timeout(PATIENCE) {
        Err(RecvError::Disconnected) => Ok(out),
        Ok(_) => Err("a gradient beyond the last step".into()),
        Err(e) => Err(e.into()),
    }
}

/// Kills the worker processes that are still running when dropped (an error path).
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Workers as processes, each opening a producer of the shared channel and its own step
/// channel by name.
fn with_processes<const P: usize>(
    plan: Plan,
) -> Result<(Outcome, Duration), Box<dyn std::error::Error>> {
    let name = format!("psyne-gradients-{}", std::process::id());
    let mut rx = Channel::<Gradient<P>>::mpsc()
        .capacity(plan.lane())
        .max_producers(plan.workers as usize)
        .shared(&name)
        .create_consumer()?;
    let mut done_tx = Vec::new();
    for w in 0..plan.workers {
        done_tx.push(
            Channel::<StepDone>::builder()
                .capacity(plan.lane())
                .shared(&format!("{name}-done-{w}"))
                .create_producer()?,
        );
    }
    let exe = std::env::current_exe()?;
    let mut children = Workers(Vec::new());
    for w in 0..plan.workers {
        children.0.push(
            Command::new(&exe)
                .args([WORKER_FLAG, &name, &w.to_string()])
                .args([
                    "--steps",
                    &plan.steps.to_string(),
                    "--params",
                    &P.to_string(),
                ])
                .args(["--ahead", &plan.ahead.to_string()])
                .spawn()?,
        );
    }
    let out = aggregate(plan, &mut rx, &mut done_tx)?;
    drop(done_tx);
    for mut c in std::mem::take(&mut children.0) {
        let status = c.wait()?;
        if !status.success() {
            return Err(format!("a worker process failed: {status}").into());
        }
    }
    Ok(out) // dropping the creators' ends removes the names
}

/// A worker process: `--worker-of <name> <index> --steps S --params P --ahead K`.
fn worker_process(argv: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let name = argv.get(2).ok_or("--worker-of needs a channel name")?;
    let w: u32 = argv.get(3).ok_or("--worker-of needs an index")?.parse()?;
    let args = Args::parse_from(argv[4..].iter().cloned(), &["steps", "params", "ahead"])?
        .ok_or("no --help for a worker process")?;
    let plan = Plan {
        workers: 0, // not needed by a worker
        steps: args.value("steps", 0)?,
        ahead: args.value("ahead", 0)?,
    };
    fn work<const P: usize>(
        name: &str,
        w: u32,
        plan: Plan,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let open = Instant::now();
        // The aggregator created every name before starting us; retry briefly all the same.
        let mut done = loop {
            match Channel::<StepDone>::open_consumer(&format!("{name}-done-{w}")) {
                Ok(c) => break c,
                Err(e) if open.elapsed() > Duration::from_secs(5) => return Err(e.into()),
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        };
        let mut tx = Channel::<Gradient<P>>::open_mpsc_producer(name)?;
        worker(w, plan, &mut tx, &mut done)
    }
    match args.value("params", 1024usize)? {
        256 => work::<256>(name, w, plan),
        1024 => work::<1024>(name, w, plan),
        16384 => work::<16384>(name, w, plan),
        p => Err(format!("--params {p}: 256, 1024 or 16384").into()),
    }
}

fn run<const P: usize>(plan: Plan, processes: bool) -> Result<(), Box<dyn std::error::Error>> {
    let Plan {
        workers,
        steps,
        ahead,
    } = plan;
    let bytes = size_of::<Gradient<P>>();
    println!(
        "{workers} worker {} x {steps} steps, Gradient<{P}> ({bytes} bytes), lanes of {}, \
         workers at most {ahead} steps ahead, momentum {BETA}",
        if processes { "processes" } else { "threads" },
        plan.lane()
    );
    let (outcome, elapsed) = if processes {
        with_processes::<P>(plan)?
    } else {
        with_threads::<P>(plan)?
    };
    let secs = elapsed.as_secs_f64();
    println!(
        "{:.0} steps/s ({:.1} us per step), {:.2} M gradients/s, {:.0} MB/s of gradients",
        f64::from(steps) / secs,
        secs * 1e6 / f64::from(steps),
        f64::from(steps * workers) / secs / 1e6,
        f64::from(steps * workers) * bytes as f64 / secs / 1e6
    );
    let reference = sequential::<P>(workers, steps);
    if outcome.digest != reference.digest || outcome.momentum_bits != reference.momentum_bits {
        return Err("the aggregated result differs from the sequential computation".into());
    }
    println!(
        "check: every step's average and the final momentum equal the sequential computation, \
         bit for bit ({steps} steps x {P} parameters)"
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(WORKER_FLAG) {
        return worker_process(&argv);
    }
    let args = Args::parse(&["workers", "steps", "params", "ahead", "processes"], USAGE)?;
    let plan = Plan {
        workers: args.value("workers", 4)?,
        steps: args.value("steps", 2000)?,
        ahead: args.value("ahead", 4)?,
    };
    let processes = args.flag("processes");
    if !(1..=32).contains(&plan.workers) {
        return Err("--workers takes 1 to 32 (the exact-sum argument holds up to 32)".into());
    }
    if plan.steps == 0 {
        return Err("--steps must be at least 1".into());
    }
    if plan.ahead > 1000 {
        return Err("--ahead takes 0 to 1000".into());
    }
    match args.value("params", 1024usize)? {
        256 => run::<256>(plan, processes),
        1024 => run::<1024>(plan, processes),
        16384 => run::<16384>(plan, processes),
        p => Err(format!("--params {p}: 256, 1024 or 16384").into()),
    }
}
