//! Pipeline- and data-parallel training over psyne channels (the core of the
//! `pipeline_training` example, here so that its integration test calls it directly).
//!
//! A multi-layer perceptron is cut into S stages, one fully connected layer each
//! ([`model`]). Each step's batch is split into R replica shards and each shard into M
//! micro-batches ([`data::Plan`]; the last step of an epoch is smaller, so its tensors are).
//! Activations flow forward and input gradients backward as tensors whose shape is known only
//! at run time (`Channel::tensors()`), written in place into the next stage's ring and read in
//! place there, in the order a [`schedule::Schedule`] says (GPipe or 1F1B). With R > 1 every
//! stage sends its gradient to its stage's aggregator through a many-producers channel
//! (`Channel::mpsc()`, [`aggregate`]) and gets the momentum-SGD update back ([`update`]).
//! [`placement`] puts the stages in threads, processes or on two hosts over TCP.
//!
//! Every run is checked against [`reference`](mod@reference): the same arithmetic in one thread. Both
//! schedules run the backward passes of a step in micro-batch order, and the aggregator sums
//! replicas in replica order, so the losses and final weights are the same bits in every mode.

pub mod aggregate;
pub mod data;
pub mod messages;
pub mod model;
pub mod placement;
pub mod reference;
pub mod schedule;
pub mod stage;
pub mod update;

use crate::args::Args;
use data::{Data, Plan, Task};
use messages::Stats;
use schedule::Schedule;
use stage::{Context, Progress};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Boxed error (sendable across the stage threads).
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Longest any wait on a peer may take before the run is declared stuck.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The hidden first argument of a stage process: `--stage-process PREFIX REPLICA STAGE`.
pub const STAGE_PROCESS: &str = "--stage-process";

/// Where the stages run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Threads of one process.
    Threads,
    /// A process per stage and replica (stage 0 and the aggregators in the first), shared
    /// memory.
    Processes,
    /// Stage 0 and the aggregators here, stages 1.. in a second process started here, every
    /// stage-to-stage channel over TCP on loopback.
    Tcp,
    /// As `Tcp`, but wait at this address for the other side started by hand (another host).
    Listen(String),
    /// The other side of `Listen`: run stages 1.. and connect to this address.
    Connect(String),
}

impl Placement {
    /// A short name for tables.
    pub fn name(&self) -> &'static str {
        match self {
            Placement::Threads => "threads",
            Placement::Processes => "processes",
            Placement::Tcp => "tcp",
            Placement::Listen(_) => "listen",
            Placement::Connect(_) => "connect",
        }
    }
}

/// A run's options.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// What to learn.
    pub task: Task,
    /// Pipeline stages (layers).
    pub stages: usize,
    /// Hidden width (the synthetic task's output width too).
    pub hidden: usize,
    /// Micro-batches per replica shard and step.
    pub micro: usize,
    /// Samples per step, all replicas together.
    pub batch: usize,
    /// Data-parallel replicas.
    pub replicas: usize,
    /// Passes over the data.
    pub epochs: usize,
    /// Learning rate.
    pub lr: f32,
    /// Momentum.
    pub beta: f32,
    /// The pipeline schedule.
    pub schedule: Schedule,
    /// Where the stages run.
    pub placement: Placement,
    /// Seed of the weights, shuffles and synthetic data.
    pub seed: u64,
    /// Steps before the measurements (bubble, allocations) start.
    pub warmup: usize,
    /// A shared secret for TCP across hosts.
    pub key: Option<String>,
    /// Draw a progress bar.
    pub progress: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            task: Task::Wine,
            stages: 3,
            hidden: 64,
            micro: 4,
            batch: 64,
            replicas: 1,
            epochs: 60,
            lr: 0.05,
            beta: 0.9,
            schedule: Schedule::OneFOneB,
            placement: Placement::Threads,
            seed: 7,
            warmup: 10,
            key: None,
            progress: false,
        }
    }
}

/// The options `--help` lists.
pub const OPTIONS: &[&str] = &[
    "stages",
    "hidden",
    "input",
    "micro",
    "batch",
    "replicas",
    "epochs",
    "lr",
    "momentum",
    "schedule",
    "processes",
    "tcp",
    "listen",
    "connect",
    "key",
    "synthetic",
    "samples",
    "seed",
    "warmup",
    "plot",
    "all-modes",
    "no-progress",
];

/// What `--help` prints.
pub const USAGE: &str = "\
Pipeline- and data-parallel training over psyne channels: a multi-layer perceptron cut into
stages (one layer each); micro-batches flow forward and gradients backward as variable-size
tensors; replicas send gradients to per-stage aggregators through many-producers channels and
get the momentum-SGD update back. Checks the result against a single-thread reference (bit for
bit), and prints the loss per epoch, samples/s, the pipeline bubble (beside the textbook, with
where each stage's idle time went and what the schedule alone gives the measured pass times)
and allocations.

usage: pipeline_training [options]

  --stages S        pipeline stages, one layer each (default 3)
  --hidden H        hidden width; with --synthetic also the output width
                    (default 64; try --synthetic --hidden 1024)
  --input W         with --synthetic: input features (default 1.5 x H rounded up to a
                    multiple of 8, so the stages balance: stage 0 computes no input
                    gradient, and its wider layer makes up for it; --input H gives every
                    stage an H x H layer, and stage 0 then does 2/3 of the others' work)
  --micro M         micro-batches per replica and step (default 4)
  --batch B         samples per step, all replicas together; the last step of an epoch
                    takes what is left (default 64)
  --replicas R      data-parallel copies of the pipeline (default 1)
  --epochs E        passes over the data (default 60; 2 with --synthetic)
  --lr X            learning rate (default 0.05; 0.01 with --synthetic)
  --momentum X      momentum (default 0.9)
  --schedule NAME   gpipe (all forwards, then all backwards) or 1f1b (one forward, one
                    backward; default)
  --processes       one process per stage and replica, over shared memory
  --tcp             stages 1.. in a second process, every stage-to-stage channel over TCP
                    on loopback
  --listen ADDR     like --tcp, but wait at ADDR for the other side (another host)
  --connect ADDR    the other side: run stages 1.. and connect to ADDR (same options)
  --key SECRET      shared secret for --listen/--connect on a non-loopback address
  --synthetic       regression onto a fixed random teacher network instead of wine quality
  --samples N       samples of the synthetic task (default 1024)
  --seed N          seed of weights, shuffles and synthetic data (default 7)
  --warmup N        steps before measuring bubble and allocations (default 10)
  --plot FILE.svg   draw the loss per epoch (with --all-modes: of every mode)
  --all-modes       run every placement (threads, processes, tcp) x schedule (gpipe, 1f1b)
                    x replicas (1, 2) and print one line each
  --no-progress     no progress bar
";

impl Config {
    /// The options in `args` (see [`USAGE`]).
    pub fn from_args(a: &Args) -> Result<Config, Error> {
        let e = |x: crate::args::Error| -> Error { x.to_string().into() };
        let d = Config::default();
        let synthetic = a.flag("synthetic");
        let hidden = a.value("hidden", d.hidden).map_err(e)?;
        if !synthetic && a.get("input").is_some() {
            return Err(
                "--input sets the synthetic task's features: use it with --synthetic".into(),
            );
        }
        let task = if synthetic {
            Task::Synthetic {
                input: a.value("input", data::balanced_input(hidden)).map_err(e)?,
                width: hidden,
                samples: a.value("samples", 1024).map_err(e)?,
            }
        } else {
            Task::Wine
        };
        let schedule = a.get("schedule").unwrap_or("1f1b");
        let placement = if let Some(addr) = a.get("listen") {
            Placement::Listen(addr.to_string())
        } else if let Some(addr) = a.get("connect") {
            Placement::Connect(addr.to_string())
        } else if a.flag("tcp") {
            Placement::Tcp
        } else if a.flag("processes") {
            Placement::Processes
        } else {
            Placement::Threads
        };
        let c = Config {
            task,
            stages: a.value("stages", d.stages).map_err(e)?,
            hidden,
            micro: a.value("micro", d.micro).map_err(e)?,
            batch: a.value("batch", d.batch).map_err(e)?,
            replicas: a.value("replicas", d.replicas).map_err(e)?,
            epochs: a
                .value("epochs", if synthetic { 2 } else { d.epochs })
                .map_err(e)?,
            lr: a
                .value("lr", if synthetic { 0.01 } else { d.lr })
                .map_err(e)?,
            beta: a.value("momentum", d.beta).map_err(e)?,
            schedule: Schedule::parse(schedule)
                .ok_or_else(|| format!("--schedule {schedule:?}: gpipe or 1f1b"))?,
            placement,
            seed: a.value("seed", d.seed).map_err(e)?,
            warmup: a.value("warmup", d.warmup).map_err(e)?,
            key: a.get("key").map(str::to_string),
            progress: !a.flag("no-progress"),
        };
        c.check()?;
        Ok(c)
    }

    /// Refuses options no run can have.
    pub fn check(&self) -> Result<(), Error> {
        let bad = |m: &str| -> Result<(), Error> { Err(m.to_string().into()) };
        if self.stages == 0 || self.stages > 64 {
            return bad("--stages takes 1 to 64");
        }
        if self.micro == 0 || self.batch == 0 || self.epochs == 0 || self.hidden == 0 {
            return bad("--micro, --batch, --epochs and --hidden must be at least 1");
        }
        if self.replicas == 0 || self.replicas > 16 {
            return bad("--replicas takes 1 to 16");
        }
        if let Task::Synthetic { samples: 0, .. } = self.task {
            return bad("--samples must be at least 1");
        }
        if let Task::Synthetic { input: 0, .. } = self.task {
            return bad("--input must be at least 1");
        }
        Ok(())
    }

    /// The options as command-line arguments (for the processes this run starts), without
    /// placement.
    pub fn to_args(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        let mut put = |k: &str, x: String| {
            v.push(format!("--{k}"));
            v.push(x);
        };
        put("stages", self.stages.to_string());
        put("hidden", self.hidden.to_string());
        put("micro", self.micro.to_string());
        put("batch", self.batch.to_string());
        put("replicas", self.replicas.to_string());
        put("epochs", self.epochs.to_string());
        put("lr", self.lr.to_string());
        put("momentum", self.beta.to_string());
        put("schedule", self.schedule.name().to_string());
        put("seed", self.seed.to_string());
        put("warmup", self.warmup.to_string());
        if let Task::Synthetic { input, samples, .. } = self.task {
            put("input", input.to_string());
            put("samples", samples.to_string());
        }
        if let Some(k) = &self.key {
            put("key", k.clone());
        }
        if matches!(self.task, Task::Synthetic { .. }) {
            v.push("--synthetic".into());
        }
        v.push("--no-progress".into());
        v
    }

    /// A digest of the options that shape the run (both sides of a TCP link must agree).
    pub fn digest(&self) -> u64 {
        let mut c = self.clone();
        c.key = None;
        c.to_args()
            .join(" ")
            .bytes()
            .fold(0xCBF2_9CE4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
            })
    }

    fn width(&self) -> usize {
        match self.task {
            Task::Wine => self.hidden,
            Task::Synthetic { width, .. } => width,
        }
    }
}

/// Everything a run sets up before its stages start.
struct Setup {
    data: Arc<Data>,
    layers: Vec<model::Layer>,
    cx: Arc<Context>,
}

fn setup(cfg: &Config) -> Setup {
    let data = Arc::new(Data::load(cfg.task, cfg.seed));
    let layers = model::layers(
        cfg.stages,
        data.width,
        cfg.width(),
        data.targets.width(),
        cfg.seed,
    );
    let plan = Arc::new(Plan::new(
        data.samples,
        cfg.batch,
        cfg.replicas,
        cfg.micro,
        cfg.epochs,
        cfg.seed,
    ));
    let cx = Arc::new(Context {
        data: Arc::clone(&data),
        plan,
        stages: cfg.stages,
        schedule: cfg.schedule,
        lr: cfg.lr,
        beta: cfg.beta,
        warmup: cfg.warmup,
    });
    Setup { data, layers, cx }
}

/// What a run measured and how it compares with the reference.
#[derive(Debug, Clone)]
pub struct Report {
    /// Mean loss per sample of every epoch.
    pub epoch_losses: Vec<f64>,
    /// The reference's.
    pub reference_losses: Vec<f64>,
    /// Whether every replica's losses equal the reference's bit for bit.
    pub losses_identical: bool,
    /// Whether every replica's final weights equal the reference's bit for bit.
    pub weights_identical: bool,
    /// Parameters (over all replicas and stages) that differ from the reference.
    pub differing: usize,
    /// The largest difference from a reference weight.
    pub max_abs_diff: f32,
    /// Parameters compared.
    pub compared: usize,
    /// `[replica][stage]` measurements.
    pub stats: Vec<Vec<Stats>>,
    /// Heap allocations of every aggregator thread after warm-up.
    pub aggregator_allocations: Vec<u64>,
    /// Seconds of training (all steps).
    pub seconds: f64,
    /// Samples per second over the whole run.
    pub samples_per_s: f64,
    /// Replica 0's measured bubble, mean over its stages.
    pub bubble: f64,
    /// Replica 0's measured bubble, mean over stages 1.. (with one stage, stage 0): the stages
    /// that do equal work when their layers are equal (stage 0 computes no input gradient,
    /// two of the three matrix products of the others, so with equal layers it also idles
    /// from imbalance; the synthetic task's default `--input` widens its layer to balance).
    pub bubble_equal: f64,
    /// `(S-1)/(M+S-1)`.
    pub textbook_bubble: f64,
    /// Replica 0's bubble per stage if every pass took its stage's measured mean time and
    /// hand-offs were free ([`schedule::ideal_bubble`]): what the schedule itself costs these
    /// unequal stages.
    pub ideal_stages: Vec<f64>,
    /// The mean of `ideal_stages`.
    pub ideal_bubble: f64,
}

impl Report {
    /// Last epoch's loss over the first's.
    pub fn loss_ratio(&self) -> f64 {
        self.epoch_losses.last().copied().unwrap_or(f64::NAN)
            / self.epoch_losses.first().copied().unwrap_or(f64::NAN)
    }

    /// Heap allocations by all stage and aggregator threads after warm-up.
    pub fn steady_allocations(&self) -> u64 {
        self.stats
            .iter()
            .flatten()
            .map(|s| s.allocations as u64)
            .sum::<u64>()
            + self.aggregator_allocations.iter().sum::<u64>()
    }
}

fn epoch_losses(plan: &Plan, step_losses: &[Vec<f64>]) -> Vec<f64> {
    (0..plan.epochs)
        .map(|e| {
            let mut sum = 0.0f64;
            for t in e * plan.steps_per_epoch..(e + 1) * plan.steps_per_epoch {
                for r in step_losses {
                    sum += r[t];
                }
            }
            sum / plan.samples as f64
        })
        .collect()
}

fn join<T>(h: std::thread::JoinHandle<Result<T, Error>>) -> Result<T, Error> {
    h.join()
        .map_err(|_| -> Error { "a stage thread panicked".into() })?
}

/// Runs the stages and aggregators of `w` as threads; returns stage 0's collections (one per
/// replica, if stage 0 runs here) and the aggregators' allocation counts.
fn train(
    s: &Setup,
    w: placement::Wiring,
    cfg: &Config,
) -> Result<(Vec<stage::Collected>, Vec<u64>, f64), Error> {
    let progress = Arc::new(Progress::default());
    let start = Instant::now();
    let mut heads = Vec::new();
    let mut others = Vec::new();
    for (r, st, ends) in w.local {
        let (layer, cx, p) = (
            s.layers[st].clone(),
            Arc::clone(&s.cx),
            Arc::clone(&progress),
        );
        let h = std::thread::Builder::new()
            .name(format!("r{r}s{st}"))
            .spawn(move || {
                let p = (r == 0 && st == 0).then_some(&*p);
                stage::run(r, st, layer, ends, &cx, p)
            })?;
        if st == 0 {
            heads.push(h)
        } else {
            others.push(h)
        }
    }
    let mut aggs = Vec::new();
    for a in w.aggregators {
        let (cfg, steps) = (cfg.clone(), s.cx.plan.steps());
        aggs.push(
            std::thread::Builder::new()
                .name(format!("agg{}", a.stage))
                .spawn(move || {
                    aggregate::run(
                        a.params,
                        cfg.replicas,
                        steps,
                        cfg.warmup,
                        cfg.lr,
                        cfg.beta,
                        a.grads,
                        a.out,
                    )
                })?,
        );
    }
    if cfg.progress && !heads.is_empty() {
        let steps = s.cx.plan.steps() as u64;
        let bar = indicatif::ProgressBar::new(steps);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{elapsed:>4} [{bar:32}] {pos}/{len} steps  {msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        let spe = s.cx.plan.steps_per_epoch as u64;
        while !heads.iter().all(|h| h.is_finished()) {
            let done = progress.steps.load(Ordering::Relaxed);
            let loss = f64::from_bits(progress.epoch_loss.load(Ordering::Relaxed));
            let in_epoch = if done == 0 { 0 } else { (done - 1) % spe + 1 };
            let seen: usize = (0..in_epoch as usize)
                .map(|k| s.cx.plan.step_len(k))
                .sum::<usize>()
                .max(1);
            bar.set_position(done);
            bar.set_message(format!(
                "epoch {}  running loss {:.4} (replica 0)",
                done.saturating_sub(1) / spe + 1,
                loss * cfg.replicas as f64 / seen as f64
            ));
            std::thread::sleep(Duration::from_millis(50));
        }
        bar.finish_and_clear();
    }
    let mut collected = Vec::new();
    let mut first_err = None;
    for h in heads {
        match join(h) {
            Ok(Some(c)) => collected.push(c),
            Ok(None) => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    for h in others {
        if let Err(e) = join(h) {
            first_err.get_or_insert(e);
        }
    }
    let mut agg_allocs = Vec::new();
    for h in aggs {
        match join(h) {
            Ok(n) => agg_allocs.push(n),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    w.finish.run(cfg.digest())?;
    w.children.wait()?;
    Ok((collected, agg_allocs, seconds))
}

/// Trains with `cfg` (starting `exe` for the processes a placement needs) and compares the
/// result with the single-thread reference. For [`Placement::Connect`], use [`run_connect`].
pub fn run(cfg: &Config, exe: &Path) -> Result<Report, Error> {
    let s = setup(cfg);
    let wiring = match &cfg.placement {
        Placement::Threads => placement::threads(cfg, &s.layers)?,
        Placement::Processes => placement::processes(cfg, &s.layers, exe)?,
        Placement::Tcp => placement::listen(cfg, &s.layers, "127.0.0.1:0", Some(exe))?,
        Placement::Listen(addr) => placement::listen(cfg, &s.layers, addr, None)?,
        Placement::Connect(_) => return Err("the connecting side runs with run_connect".into()),
    };
    let (collected, aggregator_allocations, seconds) = train(&s, wiring, cfg)?;
    let plan = &s.cx.plan;
    let reference = reference::train(s.layers.clone(), &s.data, plan, cfg.lr, cfg.beta);
    let step_losses: Vec<Vec<f64>> = collected.iter().map(|c| c.step_losses.clone()).collect();
    let (mut differing, mut max_abs_diff, mut compared) = (0, 0.0f32, 0);
    for c in &collected {
        for (f, l) in c.finals.iter().zip(&reference.layers) {
            if f.len() != l.params.len() {
                differing += l.params.len();
                continue;
            }
            for (a, b) in f.iter().zip(&l.params) {
                compared += 1;
                if a.to_bits() != b.to_bits() {
                    differing += 1;
                    max_abs_diff = max_abs_diff.max((a - b).abs());
                }
            }
        }
    }
    let losses_identical = step_losses.len() == reference.step_losses.len()
        && step_losses
            .iter()
            .flatten()
            .zip(reference.step_losses.iter().flatten())
            .all(|(a, b)| a.to_bits() == b.to_bits());
    let stats: Vec<Vec<Stats>> = collected.iter().map(|c| c.stats.clone()).collect();
    let bubble = stats.first().map_or(f64::NAN, |st| {
        st.iter().map(Stats::bubble).sum::<f64>() / st.len() as f64
    });
    let bubble_equal = stats.first().map_or(f64::NAN, |st| {
        let rest = if st.len() > 1 { &st[1..] } else { &st[..] };
        rest.iter().map(Stats::bubble).sum::<f64>() / rest.len() as f64
    });
    let ideal_stages = stats.first().map_or_else(Vec::new, |st| {
        let costs: Vec<schedule::Cost> = st
            .iter()
            .map(|x| {
                let passes = x.steps * cfg.micro as f64;
                schedule::Cost {
                    forward: x.forward / passes,
                    backward: x.backward / passes,
                    update: x.update / x.steps,
                }
            })
            .collect();
        schedule::ideal_bubble(cfg.schedule, &costs, cfg.micro, 2, 12)
    });
    let ideal_bubble = ideal_stages.iter().sum::<f64>() / ideal_stages.len().max(1) as f64;
    Ok(Report {
        ideal_stages,
        ideal_bubble,
        bubble_equal,
        epoch_losses: epoch_losses(plan, &step_losses),
        reference_losses: epoch_losses(plan, &reference.step_losses),
        losses_identical,
        weights_identical: differing == 0 && compared > 0 && collected.len() == cfg.replicas,
        differing,
        max_abs_diff,
        compared,
        stats,
        aggregator_allocations,
        seconds,
        samples_per_s: (plan.samples * plan.epochs) as f64 / seconds,
        bubble,
        textbook_bubble: schedule::textbook_bubble(cfg.stages, cfg.micro),
    })
}

/// The `--connect ADDR` side: runs stages 1.. of every replica until the run ends.
pub fn run_connect(cfg: &Config) -> Result<(), Error> {
    let Placement::Connect(addr) = &cfg.placement else {
        return Err("run_connect needs --connect ADDR".into());
    };
    let s = setup(cfg);
    let wiring = placement::connect(cfg, &s.layers, addr)?;
    train(&s, wiring, cfg).map(|_| ())
}

/// The entry of a process this example started (`--stage-process ...` or `--connect ...`):
/// `None` if `argv` is an ordinary command line.
pub fn child_main(argv: &[String]) -> Option<Result<(), Error>> {
    if argv.get(1).map(String::as_str) == Some(STAGE_PROCESS) {
        return Some(stage_process_main(argv));
    }
    if argv.iter().any(|a| a == "--connect") {
        return Some(
            Args::parse_from(argv[1..].iter().cloned(), OPTIONS)
                .map_err(|e| -> Error { e.to_string().into() })
                .and_then(|a| a.ok_or_else(|| "no --help here".into()))
                .and_then(|a| Config::from_args(&a))
                .and_then(|c| run_connect(&c)),
        );
    }
    None
}

fn stage_process_main(argv: &[String]) -> Result<(), Error> {
    let (prefix, r, s) = match argv.get(2..5) {
        Some([p, r, s]) => (p.clone(), r.parse::<usize>()?, s.parse::<usize>()?),
        _ => return Err("--stage-process PREFIX REPLICA STAGE".into()),
    };
    let args = Args::parse_from(argv[5..].iter().cloned(), OPTIONS)
        .map_err(|e| -> Error { e.to_string().into() })?
        .ok_or("no --help here")?;
    let cfg = Config::from_args(&args)?;
    let st = setup(&cfg);
    let ends = placement::stage_process(&cfg, &st.layers, &prefix, r, s)?;
    stage::run(r, s, st.layers[s].clone(), ends, &st.cx, None).map(|_| ())
}

/// Draws the loss per epoch of every `(label, losses)` to the SVG file `path`.
pub fn plot(path: &str, curves: &[(String, Vec<f64>)]) -> Result<(), Error> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let epochs = curves
        .iter()
        .map(|(_, l)| l.len())
        .max()
        .unwrap_or(1)
        .max(2);
    let hi = curves
        .iter()
        .flat_map(|(_, l)| l.iter().copied())
        .fold(0.0f64, f64::max)
        * 1.05;
    let lo = curves
        .iter()
        .flat_map(|(_, l)| l.iter().copied())
        .fold(f64::INFINITY, f64::min)
        .min(hi)
        * 0.95;
    let mut chart = ChartBuilder::on(&root)
        .caption("loss per epoch", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(1f64..epochs as f64, lo..hi.max(lo + 1e-9))
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc("mean loss per sample")
        .draw()
        .map_err(|e| e.to_string())?;
    let colors = [
        RGBColor(200, 30, 30),
        RGBColor(30, 90, 200),
        RGBColor(30, 150, 60),
        RGBColor(150, 80, 160),
        RGBColor(220, 140, 20),
        RGBColor(20, 160, 170),
        RGBColor(120, 120, 120),
        RGBColor(160, 100, 40),
        RGBColor(0, 0, 0),
        RGBColor(230, 60, 150),
        RGBColor(90, 190, 90),
        RGBColor(60, 60, 160),
    ];
    for (i, (label, losses)) in curves.iter().enumerate() {
        let color = colors[i % colors.len()];
        chart
            .draw_series(LineSeries::new(
                losses.iter().enumerate().map(|(e, &l)| (e as f64 + 1.0, l)),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}
