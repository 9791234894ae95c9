//! Collected figures, and their presentation: the markdown tables, the targets, the JSON.

use super::run::{Latency, Throughput};
use hdrhistogram::Histogram;
use psyne_examples::disturbance;
use psyne_examples::stats::Summary;
use serde_json::{Value, json};
use std::fmt::Write as _;

/// Percentiles of one latency repetition, in nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct Pcts {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// All repetitions of one latency figure, and their samples merged for the CDF plot.
#[derive(Debug, Clone)]
pub struct LatSeries {
    /// Percentiles per repetition.
    pub reps: Vec<Pcts>,
    /// Every sample of every repetition (nanoseconds).
    pub hist: Histogram<u64>,
    /// Bad messages over all repetitions (must be 0).
    pub bad: u64,
    /// Negative (clamped) one-way samples over all repetitions.
    pub negative: u64,
    /// Samples per repetition.
    pub samples: usize,
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

impl Default for LatSeries {
    fn default() -> Self {
        LatSeries {
            reps: Vec::new(),
            hist: new_hist(),
            bad: 0,
            negative: 0,
            samples: 0,
        }
    }
}

impl LatSeries {
    /// Adds one repetition; returns its percentiles.
    pub fn add(&mut self, lat: &Latency) -> Pcts {
        let mut h = new_hist();
        for &v in &lat.ns {
            h.saturating_record(v.max(1));
        }
        let p = Pcts {
            p50: h.value_at_quantile(0.5) as f64,
            p99: h.value_at_quantile(0.99) as f64,
            p999: h.value_at_quantile(0.999) as f64,
            max: h.max() as f64,
            mean: h.mean(),
        };
        self.hist.add(&h).expect("same bounds");
        self.reps.push(p);
        self.bad += lat.bad;
        self.negative += lat.negative;
        self.samples = lat.ns.len();
        p
    }

    /// Summary of one percentile over the repetitions.
    pub fn summary(&self, f: impl Fn(&Pcts) -> f64) -> Summary {
        Summary::of(&self.reps.iter().map(f).collect::<Vec<_>>())
    }
}

/// One contender at one payload size.
#[derive(Debug, Clone)]
pub struct Row {
    /// Contender name.
    pub name: &'static str,
    /// How the payload travels.
    pub how: &'static str,
    /// Payload label.
    pub payload: &'static str,
    /// Payload bytes.
    pub size: usize,
    /// Capacity in messages.
    pub capacity: usize,
    /// Streaming repetitions.
    pub thr: Vec<Throughput>,
    /// Unloaded one-way latency.
    pub ow: LatSeries,
    /// Pace of the one-way sends (ns).
    pub pace_ns: f64,
    /// Round trips through two channels.
    pub rt: LatSeries,
}

impl Row {
    /// Million messages per second, per repetition.
    pub fn mmsgs(&self) -> Vec<f64> {
        self.thr
            .iter()
            .map(|t| t.msgs as f64 / t.elapsed_ns * 1e3)
            .collect()
    }
    /// Payload gigabytes (1e9) per second, per repetition.
    pub fn gbs(&self) -> Vec<f64> {
        self.thr
            .iter()
            .map(|t| (t.msgs as f64 * self.size as f64) / t.elapsed_ns)
            .collect()
    }
    /// Heap allocations per message during timed streaming (all repetitions).
    pub fn allocs_per_msg(&self) -> f64 {
        let (a, m) = self
            .thr
            .iter()
            .fold((0, 0), |(a, m), t| (a + t.allocs, m + t.msgs));
        if m == 0 { 0.0 } else { a as f64 / m as f64 }
    }
    /// Bad messages in all figures (must be 0).
    pub fn bad(&self) -> u64 {
        self.thr.iter().map(|t| t.bad).sum::<u64>() + self.ow.bad + self.rt.bad
    }
    /// Label for tables.
    pub fn label(&self) -> String {
        format!("{} ({})", self.name, self.how)
    }
}

/// The floors of this machine.
#[derive(Debug, Clone, Default)]
pub struct Floors {
    /// One padded line carrying the producer's timestamp, timed like the one-way rows.
    pub one_way: LatSeries,
    /// Pace of the one-way floor's sends (ns).
    pub pace_ns: f64,
    /// One-line ping-pong round trips (half of them is the half-round-trip floor).
    pub ping_pong: LatSeries,
}

/// Ratio per repetition (repetitions of the two contenders are interleaved, so rep i of one
/// ran next to rep i of the other), summarised.
pub fn ratio(a: &[f64], b: &[f64]) -> Summary {
    let r: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
    Summary::of(&r)
}

fn find<'a>(rows: &'a [Row], name: &str, size: usize) -> Option<&'a Row> {
    rows.iter().find(|r| r.name == name && r.size == size)
}

/// What the table header says about the run.
#[derive(Debug, Clone)]
pub struct Context {
    /// CPU model from /proc/cpuinfo.
    pub cpu_model: String,
    /// CPUs online.
    pub cpus_online: usize,
    /// Producer and consumer CPUs.
    pub cpus: (usize, usize),
    /// Timer description.
    pub clock: String,
    /// Mean cost of one timer read (ns).
    pub timer_ns: f64,
    /// Smallest delta between two timer reads (ns).
    pub timer_min_ns: f64,
    /// Repetitions.
    pub reps: usize,
    /// Command line.
    pub command: String,
    /// Wall time of the run (s).
    pub wall_s: f64,
    /// 1/5/15-minute load averages at the start and at the end.
    pub load: (String, String),
    /// Involuntary context switches of the benchmark's threads during the run.
    pub switches: i64,
}

fn lat_cells(s: &LatSeries, half: bool) -> String {
    let k = if half { 0.5 } else { 1.0 };
    format!(
        "{} | {} | {}",
        s.summary(|p| p.p50 * k).show(0),
        s.summary(|p| p.p99 * k).show(0),
        s.summary(|p| p.p999 * k).show(0)
    )
}

/// The markdown tables.
pub fn table(ctx: &Context, rows: &[Row], floors: &Floors, sizes: &[usize]) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "### psyne_bench results\n");
    let _ = writeln!(
        o,
        "Machine: {} CPUs online, `{}` (per /proc/cpuinfo); producer pinned to CPU {}, consumer to CPU {}.  ",
        ctx.cpus_online, ctx.cpu_model, ctx.cpus.0, ctx.cpus.1
    );
    let _ = writeln!(
        o,
        "Timer: {}; one read costs {:.1} ns (mean of back-to-back reads; smallest delta {:.1} ns). \
         Every latency below contains the cost of one timer read.  ",
        ctx.clock, ctx.timer_ns, ctx.timer_min_ns
    );
    let _ = writeln!(
        o,
        "Figures are median [min–max] over {} repetitions; contenders ran interleaved within each repetition. \
         Run: `{}` ({:.0} s).  ",
        ctx.reps, ctx.command, ctx.wall_s
    );
    let _ = writeln!(
        o,
        "Quietness: load average {} at the start, {} at the end; the scheduler preempted the benchmark's \
         threads {} times during the run ({:.0} per second).\n",
        ctx.load.0,
        ctx.load.1,
        ctx.switches,
        ctx.switches as f64 / ctx.wall_s.max(1e-9)
    );

    let _ = writeln!(o, "#### Floors of this machine (ns)\n");
    let _ = writeln!(o, "| floor | p50 | p99 | p99.9 |\n|---|---|---|---|");
    let _ = writeln!(
        o,
        "| one-way: one padded cache line carrying the producer's timestamp (paced every {:.0} ns) | {} |",
        floors.pace_ns,
        lat_cells(&floors.one_way, false)
    );
    let _ = writeln!(
        o,
        "| ping-pong of one cache line, half round trip | {} |",
        lat_cells(&floors.ping_pong, true)
    );
    let _ = writeln!(
        o,
        "| ping-pong of one cache line, full round trip | {} |\n",
        lat_cells(&floors.ping_pong, false)
    );

    // Sections of phases that did not run (`--phases`) are left out.
    let streamed = rows.iter().any(|r| !r.thr.is_empty());
    if streamed {
        let _ = writeln!(o, "#### Streaming throughput\n");
        let _ = writeln!(
            o,
            "| payload | contender | capacity | M msg/s | GB/s | Psyne / this | allocs/msg |\n|---|---|---|---|---|---|---|"
        );
    }
    for &size in sizes.iter().filter(|_| streamed) {
        let psyne = find(rows, "Psyne", size);
        for r in rows.iter().filter(|r| r.size == size) {
            let vs = match psyne {
                Some(p) if p.name != r.name => {
                    format!("{}x", ratio(&p.mmsgs(), &r.mmsgs()).show(2))
                }
                _ => "—".into(),
            };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {:.2} |",
                r.payload,
                r.label(),
                r.capacity,
                Summary::of(&r.mmsgs()).show(2),
                Summary::of(&r.gbs()).show(2),
                vs,
                r.allocs_per_msg()
            );
        }
    }

    for (title, half) in [
        ("One-way latency, unloaded (ns)", false),
        ("Round trip through two channels (ns)", false),
    ] {
        let one_way = title.starts_with("One");
        let series = |r: &Row| {
            if one_way {
                r.ow.reps.len()
            } else {
                r.rt.reps.len()
            }
        };
        if rows.iter().all(|r| series(r) == 0) {
            continue;
        }
        let _ = writeln!(o, "\n#### {title}\n");
        if one_way {
            let _ = writeln!(
                o,
                "Paced sends (one message every 2 µs + 0.5 ns per payload byte); timestamp taken before the producer writes \
                 the payload and as soon as the consumer has the message (before it reads it).\n"
            );
        } else {
            let _ = writeln!(
                o,
                "A stamps and sends, B reads the whole message and sends a whole one back, A reads the clock on arrival.\n"
            );
        }
        let _ = writeln!(
            o,
            "| payload | contender | p50 | p99 | p99.9 | p50: Psyne / this |\n|---|---|---|---|---|---|"
        );
        for &size in sizes {
            let psyne = find(rows, "Psyne", size);
            for r in rows.iter().filter(|r| r.size == size) {
                let s = if one_way { &r.ow } else { &r.rt };
                let vs = match psyne {
                    Some(p) if p.name != r.name => {
                        let ps = if one_way { &p.ow } else { &p.rt };
                        let a: Vec<f64> = ps.reps.iter().map(|x| x.p50).collect();
                        let b: Vec<f64> = s.reps.iter().map(|x| x.p50).collect();
                        format!("{}x", ratio(&a, &b).show(2))
                    }
                    _ => "—".into(),
                };
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} |",
                    r.payload,
                    r.label(),
                    lat_cells(s, half),
                    vs
                );
            }
        }
    }
    o
}

/// Ratio per repetition, unsummarised (see [`ratio`]).
fn ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x / y).collect()
}

/// The central figures the targets grade, per repetition: the Embedding256 ratios to rtrb, and
/// every one-way median they use (Psyne's at each size, and the one-way floor's). Tails are not
/// among them (see [`psyne_examples::disturbance`]).
pub fn graded_figures(rows: &[Row], floors: &Floors) -> Vec<(String, Vec<f64>)> {
    let mut f = Vec::new();
    let p50s = |s: &LatSeries| s.reps.iter().map(|x| x.p50).collect::<Vec<_>>();
    if let (Some(p), Some(r)) = (find(rows, "Psyne", 1032), find(rows, "rtrb", 1032)) {
        if !p.thr.is_empty() && !r.thr.is_empty() {
            f.push((
                "Embedding256 streaming, Psyne / rtrb".into(),
                ratios(&p.mmsgs(), &r.mmsgs()),
            ));
        }
        if !p.ow.reps.is_empty() && !r.ow.reps.is_empty() {
            f.push((
                "Embedding256 one-way p50, Psyne / rtrb".into(),
                ratios(&p50s(&p.ow), &p50s(&r.ow)),
            ));
        }
    }
    for row in rows
        .iter()
        .filter(|r| r.name == "Psyne" && !r.ow.reps.is_empty())
    {
        f.push((
            format!("Psyne one-way p50 ({}), ns", row.payload),
            p50s(&row.ow),
        ));
    }
    if !floors.one_way.reps.is_empty() && find(rows, "Psyne", 64).is_some() {
        f.push(("one-way floor p50, ns".into(), p50s(&floors.one_way)));
    }
    f
}

/// Why the targets are not graded on this run (see [`psyne_examples::disturbance`]); empty
/// when they are.
pub fn disturbed(ctx: &Context, rows: &[Row], floors: &Floors) -> Vec<String> {
    disturbance::reasons(ctx.switches, ctx.wall_s, &graded_figures(rows, floors))
}

/// The targets of issue 5, checked against this run: (description, measured, met). Whether the
/// run may grade them at all is [`disturbed`]'s answer.
pub fn targets(rows: &[Row], floors: &Floors) -> Vec<(String, String, bool)> {
    let mut t = Vec::new();
    let (Some(p), Some(r)) = (find(rows, "Psyne", 1032), find(rows, "rtrb", 1032)) else {
        t.push((
            "Embedding256 targets".into(),
            "Psyne or rtrb not measured at 1032 B".into(),
            false,
        ));
        return t;
    };
    // Targets of phases that did not run (`--phases`) are left out.
    if !p.thr.is_empty() && !r.thr.is_empty() {
        let thr = ratio(&p.mmsgs(), &r.mmsgs());
        t.push((
            "Embedding256 streaming throughput >= 1.5x rtrb".into(),
            format!("{}x", thr.show(3)),
            thr.median >= 1.5,
        ));
    }
    if p.ow.reps.is_empty() {
        return t;
    }
    let pa: Vec<f64> = p.ow.reps.iter().map(|x| x.p50).collect();
    let ra: Vec<f64> = r.ow.reps.iter().map(|x| x.p50).collect();
    let l = ratio(&pa, &ra);
    t.push((
        "Embedding256 one-way p50 <= 0.6x rtrb".into(),
        format!("{}x", l.show(3)),
        l.median <= 0.6,
    ));
    if let Some(p64) = find(rows, "Psyne", 64) {
        let f = floors.one_way.summary(|x| x.p50).median;
        let v = p64.ow.summary(|x| x.p50).median;
        t.push((
            "64 B one-way p50 <= 1.3x one-way floor".into(),
            format!("{v:.0} ns / {f:.0} ns = {:.3}x", v / f),
            v <= 1.3 * f,
        ));
    }
    for row in rows.iter().filter(|r| r.name == "Psyne") {
        let p50 = row.ow.summary(|x| x.p50).median;
        let p99 = row.ow.summary(|x| x.p99).median;
        t.push((
            format!("Psyne p99 <= 5x p50 ({})", row.payload),
            format!("{p99:.0} / {p50:.0} ns = {:.2}x", p99 / p50),
            p99 <= 5.0 * p50,
        ));
        if let Some(rr) = find(rows, "rtrb", row.size) {
            let a = row.ow.summary(|x| x.p999).median;
            let b = rr.ow.summary(|x| x.p999).median;
            t.push((
                format!("Psyne one-way p99.9 <= rtrb's ({})", row.payload),
                format!("{a:.0} vs {b:.0} ns"),
                a <= b,
            ));
        }
    }
    t
}

fn summary_json(s: Summary) -> Value {
    json!({ "median": s.median, "min": s.min, "max": s.max })
}

fn lat_json(s: &LatSeries) -> Value {
    json!({
        "samples_per_rep": s.samples,
        "p50_ns": summary_json(s.summary(|p| p.p50)),
        "p99_ns": summary_json(s.summary(|p| p.p99)),
        "p99_9_ns": summary_json(s.summary(|p| p.p999)),
        "max_ns": summary_json(s.summary(|p| p.max)),
        "mean_ns": summary_json(s.summary(|p| p.mean)),
        "reps": s.reps.iter().map(|p| json!({"p50": p.p50, "p99": p.p99, "p99_9": p.p999, "max": p.max, "mean": p.mean})).collect::<Vec<_>>(),
        "bad_messages": s.bad,
        "negative_samples": s.negative,
    })
}

/// Every figure as JSON. When the run was disturbed, `"graded"` is false, `"not_graded_because"`
/// lists why, and every target's `"met"` is null.
pub fn json(ctx: &Context, rows: &[Row], floors: &Floors) -> Value {
    let why = disturbed(ctx, rows, floors);
    let graded = why.is_empty();
    let targets: Vec<Value> = targets(rows, floors)
        .into_iter()
        .map(|(what, measured, met)| {
            json!({"target": what, "measured": measured, "met": if graded { Some(met) } else { None }})
        })
        .collect();
    json!({
        "machine": { "cpu_model": ctx.cpu_model, "cpus_online": ctx.cpus_online,
                     "producer_cpu": ctx.cpus.0, "consumer_cpu": ctx.cpus.1 },
        "timer": { "source": ctx.clock, "read_cost_ns": ctx.timer_ns, "min_delta_ns": ctx.timer_min_ns },
        "reps": ctx.reps,
        "command": ctx.command,
        "wall_s": ctx.wall_s,
        "load_average": { "start": ctx.load.0, "end": ctx.load.1 },
        "involuntary_context_switches": ctx.switches,
        "preemptions_per_s": if ctx.switches >= 0 && ctx.wall_s > 0.0 {
            Some(ctx.switches as f64 / ctx.wall_s)
        } else {
            None
        },
        "floors": {
            "one_way": lat_json(&floors.one_way),
            "one_way_pace_ns": floors.pace_ns,
            "ping_pong_round_trip": lat_json(&floors.ping_pong),
        },
        "results": rows.iter().map(|r| json!({
            "contender": r.name,
            "payload_transport": r.how,
            "payload": r.payload,
            "payload_bytes": r.size,
            "capacity": r.capacity,
            "throughput": {
                "msgs_per_rep": r.thr.first().map(|t| t.msgs),
                "mmsg_per_s": summary_json(Summary::of(&r.mmsgs())),
                "gb_per_s": summary_json(Summary::of(&r.gbs())),
                "allocs_per_msg": r.allocs_per_msg(),
            },
            "one_way": lat_json(&r.ow),
            "one_way_pace_ns": r.pace_ns,
            "round_trip": lat_json(&r.rt),
            "bad_messages": r.bad(),
        })).collect::<Vec<_>>(),
        "graded": graded,
        "not_graded_because": why,
        "disturbed_when": {
            "preemptions_per_s_over": disturbance::MAX_PREEMPTIONS_PER_S,
            "central_figure_spread_over": disturbance::MAX_SPREAD,
        },
        "targets": targets,
    })
}
