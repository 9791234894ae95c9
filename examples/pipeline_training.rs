//! Pipeline- and data-parallel training over psyne channels: a multi-layer perceptron cut into
//! `--stages` stages learns wine quality (the data set `linfa-datasets` ships inside the
//! crate) or, with `--synthetic`, a fixed random teacher network. Micro-batches travel forward
//! and gradients backward as variable-size tensors (`Channel::tensors()`, the last batch of an
//! epoch is smaller) in GPipe or 1F1B order; with `--replicas R` each stage's gradients go
//! through a many-producers channel to an aggregator that sends the momentum-SGD update back
//! to every replica. Stages run as threads, processes (`--processes`, shared memory) or over
//! TCP (`--tcp`; `--listen` / `--connect` across hosts).
//!
//! At the end it prints the loss per epoch and how far it fell, compares the final weights
//! and losses with a single-thread reference (bit for bit), and prints samples/s, the measured
//! pipeline bubble beside the textbook (S-1)/(M+S-1) with where each stage's idle time went and
//! what the schedule alone would give stages with the measured pass times (the textbook assumes
//! equal stages; stage 0 computes no input gradient, so `--synthetic` by default gives it a
//! 1.5x wider input, `--input`, to do the others' work), and the heap allocations of the stage and
//! aggregator threads after warm-up (counted by the allocator below).
//!
//! Run with `cargo run --release --example pipeline_training` (`-- --help` for the options).
//! The core lives in `examples/training/` (the `psyne_examples::training` module).

use psyne_examples::alloc::CountingAlloc;
use psyne_examples::args::Args;
use psyne_examples::training::{self, Config, Placement, Report, schedule::Schedule};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn describe(cfg: &Config) -> String {
    format!(
        "{} x {}, {}, {} replica{}",
        cfg.placement.name(),
        cfg.stages,
        cfg.schedule.name(),
        cfg.replicas,
        if cfg.replicas == 1 { "" } else { "s" }
    )
}

fn print_report(cfg: &Config, r: &Report) {
    println!("loss per epoch (mean per sample):");
    let n = r.epoch_losses.len();
    for (e, l) in r.epoch_losses.iter().enumerate() {
        if n <= 12 || e < 5 || e + 5 >= n || e % (n / 6).max(1) == 0 {
            println!("  epoch {:>3}: {l:.5}", e + 1);
        }
    }
    let falls = r.epoch_losses.windows(2).filter(|w| w[1] < w[0]).count();
    println!(
        "loss: {:.4} -> {:.4}, the last epoch at {:.1}% of the first ({} of {} epochs lower than the one before)",
        r.epoch_losses.first().unwrap_or(&f64::NAN),
        r.epoch_losses.last().unwrap_or(&f64::NAN),
        100.0 * r.loss_ratio(),
        falls,
        n.saturating_sub(1)
    );
    println!(
        "reference (one thread, same data order, same floating-point operations): losses {}, \
         final weights {} ({} of {} parameters differ, max |diff| {:e})",
        if r.losses_identical {
            "bit-identical"
        } else {
            "DIFFER"
        },
        if r.weights_identical {
            "bit-identical"
        } else {
            "DIFFER"
        },
        r.differing,
        r.compared,
        r.max_abs_diff
    );
    println!(
        "throughput: {:.0} samples/s ({:.2} s for {} epochs)",
        r.samples_per_s, r.seconds, n
    );
    if let Some(stats) = r.stats.first() {
        let pct = |v: &mut dyn Iterator<Item = f64>| {
            v.map(|x| format!("{:.1}%", 100.0 * x))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "pipeline bubble ({}, replica 0, idle share of each stage's time after {} warm-up steps): \
             stages {}; mean {:.1}%, {:.2}x the textbook (S-1)/(M+S-1) = {:.1}%",
            cfg.schedule.name(),
            cfg.warmup,
            pct(&mut stats.iter().map(|s| s.bubble())),
            100.0 * r.bubble,
            r.bubble / r.textbook_bubble,
            100.0 * r.textbook_bubble,
        );
        let share = |f: fn(&training::messages::Stats) -> f64| {
            pct(&mut stats.iter().map(move |s| f(s) / s.window))
        };
        println!(
            "  the idle time, per stage: waiting for activations {}; for gradients {}; for ring \
             room {}; for the update {}; input gathering and bookkeeping {}",
            share(|s| s.wait_activation),
            share(|s| s.wait_gradient),
            share(|s| s.wait_room),
            share(|s| s.wait_update),
            share(|s| s.window - s.busy() - s.waiting()),
        );
        println!(
            "  the schedule alone (each stage's measured pass times, free hand-offs): stages {}; \
             mean {:.1}% ({:.2}x textbook: unequal stages idle more, and stage 0 computes no \
             input gradient); measured minus this: {:.1} points of hand-offs",
            pct(&mut r.ideal_stages.iter().copied()),
            100.0 * r.ideal_bubble,
            r.ideal_bubble / r.textbook_bubble,
            100.0 * (r.bubble - r.ideal_bubble),
        );
        let per = |x: f64, s: &training::messages::Stats| x / (s.steps * cfg.micro as f64);
        println!(
            "  measured ms per forward / backward pass / update: {}",
            stats
                .iter()
                .map(|s| format!(
                    "{:.3} / {:.3} / {:.3}",
                    1e3 * per(s.forward, s),
                    1e3 * per(s.backward, s),
                    1e3 * s.update / s.steps
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "  mean of stages 1.. (equal layers do equal work there): {:.1}%, {:.2}x textbook",
            100.0 * r.bubble_equal,
            r.bubble_equal / r.textbook_bubble
        );
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cfg.stages * cfg.replicas > cores {
            println!(
                "  (note: {} stage threads on {cores} CPUs: stages that could run at once share \
                 cores, which the bubble figures include)",
                cfg.stages * cfg.replicas
            );
        }
    }
    println!(
        "heap allocations after warm-up: {} (stage threads: {}, aggregator threads: {})",
        r.steady_allocations(),
        r.stats
            .iter()
            .flatten()
            .map(|s| s.allocations as u64)
            .sum::<u64>(),
        r.aggregator_allocations.iter().sum::<u64>()
    );
}

fn all_modes(
    base: &Config,
    exe: &std::path::Path,
    plot: Option<&str>,
) -> Result<(), training::Error> {
    let mut curves = Vec::new();
    let mut ok = true;
    println!(
        "{:<12} {:<6} {:>8} {:>10} {:>8} {:>9} {:>7} {:>10} {:>8} {:>7}",
        "placement",
        "sched",
        "replicas",
        "loss x",
        "bitwise",
        "samples/s",
        "bubble",
        "bubble 1..",
        "textbook",
        "allocs"
    );
    for placement in [Placement::Threads, Placement::Processes, Placement::Tcp] {
        for schedule in [Schedule::GPipe, Schedule::OneFOneB] {
            for replicas in [1, 2] {
                let cfg = Config {
                    placement: placement.clone(),
                    schedule,
                    replicas,
                    progress: false,
                    ..base.clone()
                };
                let r = training::run(&cfg, exe)?;
                let same = r.losses_identical && r.weights_identical;
                ok &= same;
                println!(
                    "{:<12} {:<6} {:>8} {:>9.1}% {:>8} {:>9.0} {:>6.1}% {:>9.1}% {:>7.1}% {:>7}",
                    placement.name(),
                    schedule.name(),
                    replicas,
                    100.0 * r.loss_ratio(),
                    if same { "yes" } else { "NO" },
                    r.samples_per_s,
                    100.0 * r.bubble,
                    100.0 * r.bubble_equal,
                    100.0 * r.textbook_bubble,
                    r.steady_allocations()
                );
                curves.push((
                    format!("{} {} R={replicas}", placement.name(), schedule.name()),
                    r.epoch_losses,
                ));
            }
        }
    }
    if let Some(path) = plot {
        training::plot(path, &curves)?;
        println!("loss curves: {path}");
    }
    if !ok {
        return Err("a mode differs from its reference".into());
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), training::Error> {
    let argv: Vec<String> = std::env::args().collect();
    if let Some(result) = training::child_main(&argv) {
        return result;
    }
    let args = Args::parse(training::OPTIONS, training::USAGE).map_err(|e| e.to_string())?;
    let cfg = Config::from_args(&args)?;
    let exe = std::env::current_exe()?;
    let plot = args.get("plot");
    let (samples, features, what) = match cfg.task {
        training::data::Task::Wine => (
            1599,
            11,
            "wine quality (linfa-datasets), 6 classes, cross-entropy".to_string(),
        ),
        training::data::Task::Synthetic {
            input,
            width,
            samples,
        } => (
            samples,
            input,
            format!(
                "synthetic: a fixed random teacher, {width} outputs, squared error \
                 (stage 0's {input} inputs: it does {:.2}x the matrix work of a {width} x \
                 {width} stage, which also computes an input gradient{})",
                2.0 * input as f64 / (3.0 * width as f64),
                if input == training::data::balanced_input(width) {
                    "; the default --input, balanced"
                } else {
                    ""
                }
            ),
        ),
    };
    println!(
        "{what}: {samples} samples x {features} features; {} epochs, batch {} ({} per replica), {} micro-batches, lr {}, momentum {}",
        cfg.epochs,
        cfg.batch,
        cfg.batch.div_ceil(cfg.replicas),
        cfg.micro,
        cfg.lr,
        cfg.beta
    );
    if args.flag("all-modes") {
        return all_modes(&cfg, &exe, plot);
    }
    println!("mode: {}", describe(&cfg));
    let report = training::run(&cfg, &exe)?;
    print_report(&cfg, &report);
    if let Some(path) = plot {
        training::plot(path, &[(describe(&cfg), report.epoch_losses.clone())])?;
        println!("loss curve: {path}");
    }
    if !(report.losses_identical && report.weights_identical) {
        return Err("the run differs from the single-thread reference".into());
    }
    Ok(())
}
