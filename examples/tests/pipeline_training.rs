//! Integration test of the `pipeline_training` example's core (`psyne_examples::training`):
//! a short run of every placement (threads, processes, TCP) with every schedule (GPipe, 1F1B)
//! and replica count (1, 2) on the wine data set, twelve runs, each of which must lower the
//! loss every epoch, equal the single-thread reference bit for bit (losses and final weights),
//! allocate nothing after warm-up and account for its stages' time consistently.
//!
//! A custom harness (`harness = false`): the processes placement re-starts this binary with a
//! stage role, and `main` answers it before running the tests.

use psyne_examples::alloc::CountingAlloc;
use psyne_examples::training::data::Plan;
use psyne_examples::training::schedule::Schedule;
use psyne_examples::training::{self, Config, Placement};
use std::time::Instant;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// A run small enough for a debug build: 16 hidden units, steps of 100 samples (the last of
/// each epoch 99), 3 epochs.
fn short(placement: Placement, schedule: Schedule, replicas: usize) -> Config {
    Config {
        hidden: 16,
        batch: 100,
        micro: 4,
        epochs: 3,
        warmup: 2,
        replicas,
        schedule,
        placement,
        ..Config::default()
    }
}

fn check(cfg: &Config) -> Result<String, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let r = training::run(cfg, &exe).map_err(|e| e.to_string())?;
    let l = &r.epoch_losses;
    if l.len() != cfg.epochs || !l.windows(2).all(|w| w[1] < w[0]) {
        return Err(format!("the loss did not fall every epoch: {l:?}"));
    }
    if !r.losses_identical {
        return Err(format!(
            "losses differ from the reference: {l:?} vs {:?}",
            r.reference_losses
        ));
    }
    if !r.weights_identical {
        return Err(format!(
            "{} of {} weights differ from the reference (max {:e})",
            r.differing, r.compared, r.max_abs_diff
        ));
    }
    if r.stats.len() != cfg.replicas || r.stats.iter().any(|s| s.len() != cfg.stages) {
        return Err("measurements of some stage are missing".into());
    }
    // Every second of a stage's window is computing, waiting on a channel or the rest, each
    // measured separately: none negative, together no more than the window.
    for st in r.stats.iter().flatten() {
        let parts = st.to_array();
        if parts.iter().any(|x| x.is_nan() || *x < 0.0)
            || st.busy() + st.waiting() > st.window * 1.000_001
        {
            return Err(format!("inconsistent stage measurements: {st:?}"));
        }
    }
    if r.ideal_stages.len() != cfg.stages || r.ideal_stages.iter().any(|b| !(0.0..1.0).contains(b))
    {
        return Err(format!("schedule-alone bubble {:?}", r.ideal_stages));
    }
    // In every placement (threads, processes over shared memory, TCP) the stage and aggregator
    // threads allocate nothing after warm-up.
    if r.steady_allocations() != 0 {
        return Err(format!(
            "{} heap allocations after warm-up",
            r.steady_allocations()
        ));
    }
    Ok(format!(
        "loss {:.3} -> {:.3}, bit-identical, {} allocations",
        l[0],
        l[l.len() - 1],
        r.steady_allocations()
    ))
}

fn plan_cuts_smaller_last_step() -> Result<String, String> {
    let p = Plan::new(1599, 100, 2, 4, 2, 7);
    let sizes: Vec<usize> = (0..4).map(|m| p.rows(15, 1, m).len()).collect();
    let all: usize = (0..p.steps())
        .map(|t| {
            (0..2)
                .map(|r| (0..4).map(|m| p.rows(t, r, m).len()).sum::<usize>())
                .sum::<usize>()
        })
        .sum();
    if p.steps_per_epoch != 16
        || p.step_len(15) != 99
        || sizes != [13, 12, 12, 12]
        || all != 2 * 1599
    {
        return Err(format!(
            "{} steps, last {} samples, {sizes:?}, {all} in all",
            p.steps_per_epoch,
            p.step_len(15)
        ));
    }
    let mut seen = vec![0u8; 1599];
    for t in 0..16 {
        for r in 0..2 {
            for m in 0..4 {
                for &i in p.rows(t, r, m) {
                    seen[i as usize] += 1;
                }
            }
        }
    }
    if seen.iter().any(|&n| n != 1) {
        return Err("an epoch does not visit every sample exactly once".into());
    }
    Ok(
        "the last step of an epoch has 99 samples: micro-batches of 13, 12, 12, 12 per replica"
            .into(),
    )
}

/// The comparison is sharp: summing the same gradients in another grouping (two replica shards
/// instead of one batch) changes bits of the result.
fn reference_sees_a_reordered_sum() -> Result<String, String> {
    use psyne_examples::training::{data, model, reference};
    let d = data::Data::load(data::Task::Wine, 7);
    let layers = model::layers(3, d.width, 16, d.targets.width(), 7);
    let run = |replicas| {
        let plan = Plan::new(d.samples, 100, replicas, 4, 1, 7);
        reference::train(layers.clone(), &d, &plan, 0.05, 0.9).layers
    };
    let (one, two) = (run(1), run(2));
    let differ = one
        .iter()
        .zip(&two)
        .flat_map(|(a, b)| a.params.iter().zip(&b.params))
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    if differ == 0 {
        return Err("one and two replicas gave the same bits: the check could not tell".into());
    }
    Ok(format!(
        "{differ} weights differ between 1 and 2 replicas after one epoch"
    ))
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if let Some(result) = training::child_main(&argv) {
        if let Err(e) = result {
            eprintln!("stage process: {e}");
            std::process::exit(1);
        }
        return;
    }
    let filter: Vec<&String> = argv[1..].iter().filter(|a| !a.starts_with('-')).collect();
    type Case = (String, Box<dyn Fn() -> Result<String, String>>);
    let mut cases: Vec<Case> = vec![
        (
            "plan_cuts_smaller_last_step".into(),
            Box::new(plan_cuts_smaller_last_step),
        ),
        (
            "reference_sees_a_reordered_sum".into(),
            Box::new(reference_sees_a_reordered_sum),
        ),
    ];
    let grid = [Placement::Threads, Placement::Processes, Placement::Tcp]
        .into_iter()
        .flat_map(|p| {
            [Schedule::GPipe, Schedule::OneFOneB]
                .into_iter()
                .flat_map(move |s| [1, 2].map(|r| (p.clone(), s, r)))
        });
    for (placement, schedule, replicas) in grid {
        let name = format!(
            "{}_{}_{}_replicas",
            placement.name(),
            schedule.name(),
            replicas
        );
        let cfg = short(placement, schedule, replicas);
        cases.push((name, Box::new(move || check(&cfg))));
    }
    let cases: Vec<Case> = cases
        .into_iter()
        .filter(|(n, _)| filter.is_empty() || filter.iter().any(|f| n.contains(f.as_str())))
        .collect();
    println!("\nrunning {} tests", cases.len());
    let (mut passed, mut failed) = (0, 0);
    let start = Instant::now();
    for (name, case) in &cases {
        let t = Instant::now();
        match case() {
            Ok(what) => {
                passed += 1;
                println!(
                    "test {name} ... ok ({what}; {:.1} s)",
                    t.elapsed().as_secs_f64()
                );
            }
            Err(e) => {
                failed += 1;
                println!("test {name} ... FAILED: {e}");
            }
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {failed} failed; 0 ignored; 0 measured; 0 filtered out; finished in {:.2}s\n",
        if failed == 0 { "ok" } else { "FAILED" },
        start.elapsed().as_secs_f64()
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
