//! Psyne against its peers on this machine, in one run: streaming throughput, unloaded one-way
//! latency, round trips through two channels, and the floors of the machine (one cache line
//! moved between the two cores), for payloads from 8 bytes to 1 MiB.
//!
//! ```text
//! cargo run --release --example psyne_bench -- [--sizes 8,64,1032,16384,1048576] [--reps N]
//!     [--cpus a,b] [--capacity N] [--pace-ns NS] [--timer tsc|instant] [--only psyne,rtrb,...]
//!     [--phases throughput,one-way,round-trip]
//!     [--json FILE] [--plot FILE.svg]
//! ```
//!
//! Every contender gets the same capacity, the same pinning, the same spin loop, and the same
//! work: the producer writes every word of the payload, the consumer reads every word and
//! checks it. Psyne writes in place into a loan and reads in place from the ring; the peers
//! build the value on the stack and move it in and out (or a `Box` for payloads over 64 KiB).
//!
//! The run ends with the project's targets, ticked or not, unless the run was disturbed (see
//! [`psyne_examples::disturbance`] for the criterion): then it says so and grades nothing.

mod bench;

use bench::links::{ArrayQ, ArrayQBox, Error, Link, Psyne, Rtrb, RtrbBox, ring_capacity};
use bench::payload::{Embedding256, Words};
use bench::report::{self, Floors, LatSeries, Row};
use bench::run::{self, Setup};
use bytemuck::Pod;
use psyne_examples::alloc::CountingAlloc;
use psyne_examples::args::{self, Args};
use psyne_examples::timer::{Clock, Source};
use std::io::{IsTerminal as _, Write as _};
use std::time::Instant;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Payloads at most this large move by value; larger ones in a `Box`.
const BY_VALUE_MAX: usize = 64 * 1024;
/// The channel memory per contender is kept under this (capacity is lowered for big payloads).
const RING_BYTES_MAX: usize = 64 << 20;

/// How much to measure at one payload size.
#[derive(Debug, Clone, Copy)]
struct Plan {
    setup: Setup,
    count: u64,
    warmup: u64,
    pace_ns: f64,
    ow_samples: usize,
    rt_samples: usize,
    /// Which figures to take: throughput, one-way, round trip.
    phases: [bool; 3],
}

impl Plan {
    fn new(setup: Setup, size: usize, base_pace_ns: f64) -> Self {
        let count = ((256usize << 20) / size).clamp(256, 2_000_000) as u64;
        let warmup = (count / 10).max(2 * setup.capacity as u64).min(count);
        let pace_ns = base_pace_ns + 0.5 * size as f64;
        // At least 1,000 samples per repetition, so that a p99.9 rests on more than the single
        // largest sample (1 MiB messages: about 0.5 s of paced sends per contender and repetition).
        let ow_samples = (40e6 / pace_ns).clamp(1_000.0, 20_000.0) as usize;
        let rt_samples = (20e6 / (500.0 + 0.25 * size as f64)).clamp(1_000.0, 20_000.0) as usize;
        Plan {
            setup,
            count,
            warmup,
            pace_ns,
            ow_samples,
            rt_samples,
            phases: [true; 3],
        }
    }
}

type Measure = fn(&Plan, &mut Row) -> Result<(), Error>;

fn measure<P: Pod + Send, L: Link<P>>(plan: &Plan, row: &mut Row) -> Result<(), Error> {
    let s = &plan.setup;
    if plan.phases[0] {
        row.thr
            .push(run::throughput::<P, L>(s, plan.count, plan.warmup)?);
    }
    if plan.phases[1] {
        let w = plan.ow_samples / 10;
        row.ow
            .add(&run::one_way::<P, L>(s, plan.ow_samples, w, plan.pace_ns)?);
    }
    if plan.phases[2] {
        let w = plan.rt_samples / 10 + 10;
        row.rt.add(&run::round_trip::<P, L>(s, plan.rt_samples, w)?);
    }
    Ok(())
}

/// Short runs of every loop, checked, before anything is timed.
fn sanity<P: Pod + Send, L: Link<P>>(plan: &Plan, row: &mut Row) -> Result<(), Error> {
    let cap = plan.setup.capacity as u64;
    let t = run::throughput::<P, L>(&plan.setup, 3 * cap + 7, cap / 2)?;
    let o = run::one_way::<P, L>(&plan.setup, 100, 10, plan.pace_ns)?;
    let r = run::round_trip::<P, L>(&plan.setup, 100, 10)?;
    if t.bad + o.bad + r.bad != 0 || o.ns.len() != 100 || r.ns.len() != 100 {
        return Err(format!("sanity check failed for {} at {} B", row.label(), row.size).into());
    }
    Ok(())
}

/// A cross-process row's measuring function over the module `bench::$module` (its
/// `throughput`, `one_way` and `round_trip` with a child process).
macro_rules! measure_procs {
    ($(#[$attr:meta])* $name:ident, $module:ident) => {
        $(#[$attr])*
        fn $name<P: psyne::Message + Send>(plan: &Plan, row: &mut Row) -> Result<(), Error> {
            let s = &plan.setup;
            if plan.phases[0] {
                row.thr
                    .push(bench::$module::throughput::<P>(s, plan.count, plan.warmup)?);
            }
            if plan.phases[1] {
                let w = plan.ow_samples / 10;
                if let Some(l) =
                    bench::$module::one_way::<P>(s, plan.ow_samples, w, plan.pace_ns)?
                {
                    row.ow.add(&l);
                }
            }
            if plan.phases[2] {
                let w = plan.rt_samples / 10 + 10;
                row.rt
                    .add(&bench::$module::round_trip::<P>(s, plan.rt_samples, w)?);
            }
            Ok(())
        }
    };
}

measure_procs!(
    /// The cross-process row (producer in a child process; see `bench::ipc`).
    measure_ipc,
    ipc
);
measure_procs!(
    /// The cross-process iceoryx2 row (publisher in a child process; see `bench::ice`).
    #[cfg(feature = "iceoryx2")]
    measure_ice,
    ice
);

#[cfg(feature = "iceoryx2")]
fn sanity_ice<P: psyne::Message + Send>(plan: &Plan, row: &mut Row) -> Result<(), Error> {
    let cap = plan.setup.capacity as u64;
    let t = bench::ice::throughput::<P>(&plan.setup, 3 * cap + 7, cap / 2)?;
    let o = bench::ice::one_way::<P>(&plan.setup, 100, 10, plan.pace_ns)?;
    let r = bench::ice::round_trip::<P>(&plan.setup, 100, 10)?;
    let o_bad = o
        .as_ref()
        .map_or(0, |o| o.bad + u64::from(o.ns.len() != 100));
    if t.bad + o_bad + r.bad != 0 || r.ns.len() != 100 {
        return Err(format!("sanity check failed for {} at {} B", row.label(), row.size).into());
    }
    Ok(())
}

fn sanity_ipc<P: psyne::Message + Send>(plan: &Plan, row: &mut Row) -> Result<(), Error> {
    let cap = plan.setup.capacity as u64;
    let t = bench::ipc::throughput::<P>(&plan.setup, 3 * cap + 7, cap / 2)?;
    let o = bench::ipc::one_way::<P>(&plan.setup, 100, 10, plan.pace_ns)?;
    let r = bench::ipc::round_trip::<P>(&plan.setup, 100, 10)?;
    let o_bad = o
        .as_ref()
        .map_or(0, |o| o.bad + u64::from(o.ns.len() != 100));
    if t.bad + o_bad + r.bad != 0 || r.ns.len() != 100 {
        return Err(format!("sanity check failed for {} at {} B", row.label(), row.size).into());
    }
    Ok(())
}

fn contender<P: Pod + Send, L: Link<P>>(
    payload: &'static str,
    plan: &Plan,
) -> (Row, Measure, Measure) {
    let row = Row {
        name: L::NAME,
        how: L::HOW,
        payload,
        size: size_of::<P>(),
        capacity: plan.setup.capacity,
        thr: Vec::new(),
        ow: LatSeries::default(),
        pace_ns: plan.pace_ns,
        rt: LatSeries::default(),
    };
    (row, measure::<P, L>, sanity::<P, L>)
}

/// One progress line on a terminal (nothing when stderr is redirected).
struct Progress {
    tty: bool,
    done: usize,
    total: usize,
    start: Instant,
}

impl Progress {
    fn show(&self, what: &str) {
        if !self.tty {
            return;
        }
        eprint!(
            "\r\x1b[K[{:>3}/{}] {:>5.1} s  {what}",
            self.done,
            self.total,
            self.start.elapsed().as_secs_f64()
        );
        let _ = std::io::stderr().flush();
    }
}

struct Bench {
    /// `--phases`: throughput, one-way, round trip.
    phases: [bool; 3],
    /// Contender names to run (lower case substrings; empty: all).
    only: Vec<String>,
    base_pace_ns: f64,
    capacity: usize,
    reps: usize,
    cpus: (usize, usize),
    clock: Clock,
    floors: Floors,
    progress: Progress,
}

impl Bench {
    fn run_size<P: psyne::Message + Send>(
        &mut self,
        payload: &'static str,
    ) -> Result<Vec<Row>, Error> {
        let size = size_of::<P>();
        let record = psyne::ring::record_size(size).ok_or("payload too large")?;
        let capacity = ring_capacity::<P>(self.capacity.min((RING_BYTES_MAX / record).max(1)));
        let setup = Setup {
            cpus: self.cpus,
            capacity,
            clock: self.clock,
        };
        let mut plan = Plan::new(setup, size, self.base_pace_ns);
        plan.phases = self.phases;
        let mut list = if size <= BY_VALUE_MAX {
            vec![
                contender::<P, Psyne>(payload, &plan),
                contender::<P, Rtrb>(payload, &plan),
                contender::<P, ArrayQ>(payload, &plan),
            ]
        } else {
            vec![
                contender::<P, Psyne>(payload, &plan),
                contender::<P, RtrbBox>(payload, &plan),
                contender::<P, ArrayQBox>(payload, &plan),
            ]
        };
        // The cross-process row, for the sizes its child process knows (64 B, Embedding256),
        // when the clock is one both processes read alike (the TSC).
        if matches!(size, 64 | 1032) && matches!(self.clock.source(), Source::Tsc) {
            let (mut row, _, _) = contender::<P, Psyne>(payload, &plan);
            row.name = bench::ipc::NAME;
            row.how = bench::ipc::HOW;
            list.push((row, measure_ipc::<P>, sanity_ipc::<P>));
            // iceoryx2 beside it (feature `iceoryx2`), the same layout and payload work.
            #[cfg(feature = "iceoryx2")]
            {
                let (mut row, _, _) = contender::<P, Psyne>(payload, &plan);
                row.name = bench::ice::NAME;
                row.how = bench::ice::HOW;
                list.push((row, measure_ice::<P>, sanity_ice::<P>));
            }
        }
        if !self.only.is_empty() {
            list.retain(|(row, _, _)| {
                let name = row.name.to_lowercase();
                self.only.iter().any(|o| name.contains(o.as_str()))
            });
        }
        for (row, _, check) in &mut list {
            self.progress
                .show(&format!("{payload}: sanity check {}", row.label()));
            check(&plan, row)?;
        }
        let n = list.len();
        for rep in 0..self.reps {
            self.progress
                .show(&format!("{payload} rep {}/{}: floors", rep + 1, self.reps));
            let f = run::floor_one_way(&setup, 20_000, 2_000, self.base_pace_ns)?;
            self.floors.one_way.add(&f);
            let p = run::floor_ping_pong(&setup, 20_000, 2_000)?;
            self.floors.ping_pong.add(&p);
            // rotate the order each repetition so no contender always runs first
            for k in 0..n {
                let (row, m, _) = &mut list[(k + rep) % n];
                self.progress.show(&format!(
                    "{payload} rep {}/{}: {}",
                    rep + 1,
                    self.reps,
                    row.label()
                ));
                m(&plan, row)?;
                self.progress.done += 1;
                let last = row
                    .thr
                    .last()
                    .map_or(0.0, |t| t.msgs as f64 / t.elapsed_ns * 1e3);
                self.progress.show(&format!(
                    "{payload} rep {}/{}: {} {:.2} M msg/s, one-way p50 {:.0} ns",
                    rep + 1,
                    self.reps,
                    row.label(),
                    last,
                    row.ow.reps.last().map_or(0.0, |p| p.p50)
                ));
            }
        }
        Ok(list.into_iter().map(|(r, _, _)| r).collect())
    }

    fn run(&mut self, size: usize) -> Result<Vec<Row>, Error> {
        match size {
            8 => self.run_size::<Words<2>>("8 B"),
            16 => self.run_size::<Words<4>>("16 B"),
            64 => self.run_size::<Words<16>>("64 B"),
            256 => self.run_size::<Words<64>>("256 B"),
            1032 => self.run_size::<Embedding256>("Embedding256 (1032 B)"),
            4096 => self.run_size::<Words<1024>>("4 KiB"),
            16384 => self.run_size::<Words<4096>>("16 KiB"),
            65536 => self.run_size::<Words<16384>>("64 KiB"),
            1048576 => self.run_size::<Words<262144>>("1 MiB"),
            _ => Err(format!(
                "unsupported size {size} (8, 16, 64, 256, 1032, 4096, 16384, 65536, 1048576)"
            )
            .into()),
        }
    }
}

/// How many of the three contenders `--only` selects.
fn contenders_per_size(only: &[String]) -> usize {
    ["psyne", "rtrb", "crossbeam arrayqueue"]
        .iter()
        .filter(|name| only.is_empty() || only.iter().any(|o| name.contains(o.as_str())))
        .count()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown".into(), |(_, m)| m.trim().to_string())
}

/// Involuntary context switches of this process so far (all threads, finished ones included):
/// how often the scheduler took a CPU away from the benchmark.
fn involuntary_switches() -> i64 {
    // SAFETY: `rusage` is plain data; all zeroes is a valid value to be overwritten.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable `rusage`.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } == 0 {
        ru.ru_nivcsw
    } else {
        -1
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// What `--help` prints.
const USAGE: &str = "\
Psyne against rtrb and crossbeam's ArrayQueue, with the machine's floors, in one run.

usage: psyne_bench [options]

  --sizes LIST      payload bytes: 8, 16, 64, 256, 1032 (Embedding256), 4096, 16384, 65536,
                    1048576 (default 8,64,1032,16384,1048576)
  --reps N          repetitions; figures are median [min-max] (default 5)
  --cpus a,b        producer CPU, consumer CPU (default: the first two CPUs this process may use)
  --capacity N      messages each channel holds, the same for every contender (default 1024,
                    lowered for large payloads so that a ring stays within 64 MiB)
  --pace-ns NS      one-way pacing: one message every NS + 0.5 ns per payload byte (default 2000)
  --timer T         tsc (calibrated, default) or instant
  --only LIST       contenders whose names contain one of these: psyne, rtrb, crossbeam, ...
  --phases LIST     throughput, one-way, round-trip (default all)
  --json FILE       write every figure as JSON
  --plot FILE.svg   draw the one-way latency CDFs

The targets are graded only on an undisturbed run: a run preempted more than 100 times per
second (involuntary context switches), or in which a graded streaming rate, median latency or
ratio of them varied more than 10x between repetitions, prints \"disturbed run: targets not
graded (why)\" and its figures without ticks (JSON: \"graded\": false).
";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Re-executed as the other end of the cross-process row.
    if std::env::args().nth(1).as_deref() == Some(bench::ipc::CHILD_FLAG) {
        let rest: Vec<String> = std::env::args().skip(2).collect();
        return bench::ipc::child_main(&rest).map_err(|e| e as Box<dyn std::error::Error>);
    }
    let args = Args::parse(
        &[
            "sizes", "reps", "cpus", "json", "plot", "capacity", "pace-ns", "timer", "only",
            "phases",
        ],
        USAGE,
    )?;
    let only: Vec<String> = args.list("only", Vec::new())?;
    let phase_list: Vec<String> = args.list("phases", vec!["all".to_string()])?;
    let all = phase_list.iter().any(|p| p == "all");
    let phases =
        ["throughput", "one-way", "round-trip"].map(|p| all || phase_list.iter().any(|q| q == p));
    let only: Vec<String> = only.iter().map(|o| o.to_lowercase()).collect();
    let sizes: Vec<usize> = args.list("sizes", vec![8, 64, 1032, 16384, 1048576])?;
    let reps: usize = args.value("reps", 5)?;
    let capacity: usize = args.value("capacity", 1024)?;
    let base_pace_ns: f64 = args.value("pace-ns", 2000.0)?;
    let cpus = args::cpu_pair(&args)?;
    let clock = match args.get("timer").unwrap_or("tsc") {
        "tsc" => Clock::best(),
        "instant" => Clock::instant(),
        t => return Err(format!("--timer {t}: expected tsc or instant").into()),
    };
    if reps == 0 || sizes.is_empty() {
        return Err("need at least one size and one repetition".into());
    }
    let command = format!(
        "cargo run --release --example psyne_bench --{}",
        std::env::args()
            .skip(1)
            .map(|a| format!(" {a}"))
            .collect::<String>()
    );
    let online = std::thread::available_parallelism().map_or(1, |n| n.get());

    // the timer's own cost, on both CPUs
    let mut timer = (0.0f64, f64::MAX);
    for cpu in [cpus.0, cpus.1] {
        let o = std::thread::spawn(move || {
            let _ = psyne_examples::affinity::pin_to_cpu(cpu);
            clock.overhead()
        })
        .join()
        .map_err(|_| "timer thread panicked")?;
        timer = (timer.0.max(o.mean_ns), timer.1.min(o.min_delta_ns));
    }
    println!(
        "psyne_bench: {} CPUs ({}), producer on CPU {}, consumer on CPU {}",
        online,
        cpu_model(),
        cpus.0,
        cpus.1
    );
    println!(
        "timer: {clock}; one read costs {:.1} ns (smallest delta {:.1} ns)",
        timer.0, timer.1
    );
    let load_start = loadavg();
    let switches = involuntary_switches();
    println!("load average at start: {load_start}");
    #[cfg(feature = "iceoryx2")]
    psyne_examples::iceoryx::quiet();
    #[cfg(not(feature = "iceoryx2"))]
    println!(
        "iceoryx2 cross-process row skipped: built without the `iceoryx2` feature \
         (--features iceoryx2; needs libclang-dev)"
    );

    let start = Instant::now();
    let ipc_names: &[&str] = if cfg!(feature = "iceoryx2") {
        &["psyne 2 procs", "iceoryx2 2 procs"]
    } else {
        &["psyne 2 procs"]
    };
    let ipc_rows = sizes.iter().filter(|s| matches!(s, 64 | 1032)).count()
        * ipc_names
            .iter()
            .filter(|name| {
                matches!(clock.source(), Source::Tsc)
                    && (only.is_empty() || only.iter().any(|o| name.contains(o.as_str())))
            })
            .count();
    let total = (sizes.len() * contenders_per_size(&only) + ipc_rows) * reps;
    let mut b = Bench {
        phases,
        only,
        base_pace_ns,
        capacity,
        reps,
        cpus,
        clock,
        floors: Floors {
            pace_ns: base_pace_ns,
            ..Floors::default()
        },
        progress: Progress {
            tty: std::io::stderr().is_terminal(),
            done: 0,
            total,
            start,
        },
    };
    let mut rows = Vec::new();
    for &size in &sizes {
        rows.extend(b.run(size).map_err(|e| e as Box<dyn std::error::Error>)?);
    }
    if b.progress.tty {
        eprint!("\r\x1b[K");
    }
    eprintln!("done in {:.1} s", start.elapsed().as_secs_f64());
    let load_end = loadavg();
    let switches = involuntary_switches() - switches;
    println!(
        "load average at end: {load_end}; involuntary context switches during the run: {switches}\n"
    );

    let ctx = report::Context {
        cpu_model: cpu_model(),
        cpus_online: online,
        cpus,
        clock: clock.to_string(),
        timer_ns: timer.0,
        timer_min_ns: timer.1,
        reps,
        command,
        wall_s: start.elapsed().as_secs_f64(),
        load: (load_start, load_end),
        switches,
    };
    print!("{}", report::table(&ctx, &rows, &b.floors, &sizes));
    println!("\n#### Targets\n");
    let disturbed = report::disturbed(&ctx, &rows, &b.floors);
    if disturbed.is_empty() {
        for (what, measured, met) in report::targets(&rows, &b.floors) {
            println!("- [{}] {what}: {measured}", if met { "x" } else { " " });
        }
    } else {
        println!(
            "disturbed run: targets not graded ({})\n",
            disturbed.join("; ")
        );
        for (what, measured, _) in report::targets(&rows, &b.floors) {
            println!("- {what}: {measured}");
        }
    }
    let bad: u64 = rows.iter().map(Row::bad).sum::<u64>() + b.floors.ping_pong.bad;
    let negative: u64 = rows.iter().map(|r| r.ow.negative).sum::<u64>() + b.floors.one_way.negative;
    println!(
        "\nchecks: {bad} bad messages, {negative} negative one-way samples (clock offset between CPUs), \
         {} one-way floor updates overwritten before seen",
        b.floors.one_way.bad
    );
    if let Some(path) = args.get("json") {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&report::json(&ctx, &rows, &b.floors))?,
        )?;
        println!("wrote {path}");
    }
    if let Some(path) = args.get("plot") {
        bench::plot::draw(path, &rows, &b.floors, &sizes)
            .map_err(|e| e as Box<dyn std::error::Error>)?;
        println!("wrote {path}");
    }
    if bad != 0 {
        return Err(format!("{bad} messages arrived wrong").into());
    }
    Ok(())
}
