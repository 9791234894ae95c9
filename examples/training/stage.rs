//! One pipeline stage of one replica: its passes in schedule order, every activation and
//! gradient read in place from a tensor channel and written in place into the next one; the
//! step's update, local (one replica) or through the stage's aggregator; at the end, its
//! measurements and final weights sent down the backward channels to stage 0.
//!
//! After warm-up a stage times every second of its window as computing (forward, backward,
//! update), waiting on a channel (for activations, gradients, ring room, the aggregator's
//! update) or the rest (stage 0 gathering its input rows, checks); its bubble is the share
//! that is not computing ([`Stats::bubble`]).

use super::aggregate::GradOut;
use super::data::{Data, Plan};
use super::messages::{CHUNK, Stats, Tag};
use super::model::{self, Layer};
use super::schedule::{Op, Schedule};
use super::update::UpdateIn;
use super::{Error, PATIENCE};
use crate::alloc::thread_allocations;
use psyne::{TensorConsumer, TensorProducer};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Final weights travel in pieces of this many values.
const PIECE: usize = 8192;

/// Where a stage's time went after warm-up (see [`Stats`]).
#[derive(Default)]
struct Times {
    forward: Duration,
    backward: Duration,
    update: Duration,
    wait_activation: Duration,
    wait_gradient: Duration,
    wait_room: Duration,
    wait_update: Duration,
}

/// How a stage learns its update.
#[allow(clippy::large_enum_variant)] // one per stage, never moved in the loop
pub enum Sync {
    /// One replica: momentum SGD right here.
    Local,
    /// Several replicas: gradients to the aggregator, the update back from it.
    Remote {
        /// To the stage's aggregator.
        grads: GradOut,
        /// From the stage's aggregator.
        updates: UpdateIn,
    },
}

/// A stage's channels: `None` where the stage has no neighbour.
pub struct Ends {
    /// Activations from the previous stage.
    pub fwd_in: Option<TensorConsumer>,
    /// Activations to the next stage.
    pub fwd_out: Option<TensorProducer>,
    /// Gradients from the next stage.
    pub bwd_in: Option<TensorConsumer>,
    /// Gradients to the previous stage.
    pub bwd_out: Option<TensorProducer>,
    /// The update path.
    pub sync: Sync,
}

impl Ends {
    /// No channels yet, local update.
    pub fn empty() -> Ends {
        Ends {
            fwd_in: None,
            fwd_out: None,
            bwd_in: None,
            bwd_out: None,
            sync: Sync::Local,
        }
    }
}

/// What every stage knows of the run.
pub struct Context {
    /// The data (stage 0 reads features, the last stage targets).
    pub data: Arc<Data>,
    /// The order and cut of the samples.
    pub plan: Arc<Plan>,
    /// Stages per replica.
    pub stages: usize,
    /// The schedule.
    pub schedule: Schedule,
    /// Learning rate.
    pub lr: f32,
    /// Momentum.
    pub beta: f32,
    /// Steps before measuring starts.
    pub warmup: usize,
}

/// What stage 0 of replica 0 publishes while it trains (for the progress bar).
#[derive(Debug, Default)]
pub struct Progress {
    /// Steps finished.
    pub steps: AtomicU64,
    /// Loss summed over the current epoch so far, as `f64` bits.
    pub epoch_loss: AtomicU64,
}

/// What stage 0 of a replica collected at the end: its replica's losses, every stage's final
/// weights and measurements.
#[derive(Debug, Clone)]
pub struct Collected {
    /// The replica's summed loss of every step.
    pub step_losses: Vec<f64>,
    /// Every stage's final parameters.
    pub finals: Vec<Vec<f32>>,
    /// Every stage's measurements.
    pub stats: Vec<Stats>,
}

fn take<T>(o: &mut Option<T>, what: &str) -> Result<T, Error> {
    o.take()
        .ok_or_else(|| format!("stage without its {what} channel").into())
}

fn expect(tag: &Tag, step: usize, micro: usize, kind: u32) -> Result<(), Error> {
    if tag.step != step as u64 || tag.micro as usize != micro || tag.kind != kind {
        return Err(format!(
            "expected kind {kind} of step {step} micro-batch {micro}, got {tag:?}"
        )
        .into());
    }
    Ok(())
}

fn send_f32(tx: &mut TensorProducer, tag: Tag, v: &[f32]) -> Result<(), Error> {
    let mut t = tx.allocate_tensor_with_timeout::<Tag, f32>(tag, &[v.len()], PATIENCE)?;
    t.as_mut_slice().copy_from_slice(v);
    t.send();
    Ok(())
}

fn send_f64(tx: &mut TensorProducer, tag: Tag, v: &[f64]) -> Result<(), Error> {
    let mut t = tx.allocate_tensor_with_timeout::<Tag, f64>(tag, &[v.len()], PATIENCE)?;
    t.as_mut_slice().copy_from_slice(v);
    t.send();
    Ok(())
}

/// Runs stage `s` of replica `r` over the whole plan, starting from `layer`. Stage 0 returns
/// what it collected; the others return `None`.
#[allow(clippy::needless_range_loop)] // `t` is the step number the messages carry
pub fn run(
    r: usize,
    s: usize,
    mut layer: Layer,
    mut ends: Ends,
    cx: &Context,
    progress: Option<&Progress>,
) -> Result<Option<Collected>, Error> {
    let (plan, data) = (&*cx.plan, &*cx.data);
    let last = s + 1 == cx.stages;
    let (width_in, width_out) = (layer.input, layer.output);
    let ops = cx.schedule.ops(s, cx.stages, plan.micro);
    let maxn = plan.max_micro();
    let mut stash_x = vec![vec![0.0f32; maxn * width_in]; plan.micro];
    let mut stash_z = vec![vec![0.0f32; maxn * width_out]; plan.micro];
    let mut dz = vec![0.0f32; maxn * width_out];
    let mut grad = vec![0.0f32; layer.len()];
    let mut momentum = vec![0.0f32; layer.len()];
    let mut update = vec![0.0f32; layer.len()];
    let mut fwd_in = if s > 0 {
        Some(take(&mut ends.fwd_in, "forward input")?)
    } else {
        None
    };
    let mut bwd_out = if s > 0 {
        Some(take(&mut ends.bwd_out, "backward output")?)
    } else {
        None
    };
    let mut fwd_out = if last {
        None
    } else {
        Some(take(&mut ends.fwd_out, "forward output")?)
    };
    let mut bwd_in = if last {
        None
    } else {
        Some(take(&mut ends.bwd_in, "backward input")?)
    };
    let steps = plan.steps();
    let mut step_losses = vec![0.0f64; if s == 0 { steps } else { 0 }];
    let warm = cx.warmup.min(steps.saturating_sub(1));
    let (mut start, mut allocs0, mut tm) = (Instant::now(), thread_allocations(), Times::default());
    let mut epoch_loss = 0.0f64;
    for t in 0..steps {
        if t == warm {
            (start, allocs0, tm) = (Instant::now(), thread_allocations(), Times::default());
        }
        let scale = 1.0 / plan.step_len(t) as f32;
        let mut step_loss = 0.0f64;
        for &op in &ops {
            match op {
                Op::Forward(m) => {
                    let rows = plan.rows(t, r, m);
                    let n = rows.len();
                    let x = &mut stash_x[m][..n * width_in];
                    let c0 = Instant::now();
                    let c1 = if let Some(rx) = fwd_in.as_mut() {
                        let got = rx.recv_timeout(PATIENCE)?;
                        let c1 = Instant::now();
                        tm.wait_activation += c1 - c0;
                        expect(got.header::<Tag>()?, t, m, Tag::ACTIVATION)?;
                        let v = got.view::<f32>()?; // read in place
                        if v.shape() != [n, width_in] {
                            return Err(format!("activation of shape {:?}", v.shape()).into());
                        }
                        x.copy_from_slice(v.as_slice()); // kept for the backward pass
                        c1
                    } else {
                        // Gathering the rows is the data loader's work, not the layer's: it
                        // counts as neither computing nor waiting.
                        for (i, &row) in rows.iter().enumerate() {
                            let row = row as usize * width_in;
                            x[i * width_in..(i + 1) * width_in]
                                .copy_from_slice(&data.features[row..row + width_in]);
                        }
                        Instant::now()
                    };
                    let z = &mut stash_z[m][..n * width_out];
                    model::forward(&layer, x, n, z);
                    if let Some(tx) = fwd_out.as_mut() {
                        let tag = Tag {
                            step: t as u64,
                            micro: m as u32,
                            kind: Tag::ACTIVATION,
                            value: 0.0,
                            offset: 0,
                        };
                        let c2 = Instant::now();
                        // Written in place in the next stage's ring.
                        let mut a = tx.allocate_tensor_with_timeout::<Tag, f32>(
                            tag,
                            &[n, width_out],
                            PATIENCE,
                        )?;
                        let c3 = Instant::now();
                        tm.wait_room += c3 - c2;
                        model::relu(z, a.as_mut_slice());
                        a.send();
                        tm.forward += (c2 - c1) + c3.elapsed();
                    } else {
                        tm.forward += c1.elapsed();
                    }
                }
                Op::Backward(m) => {
                    let rows = plan.rows(t, r, m);
                    let n = rows.len();
                    let z = &stash_z[m][..n * width_out];
                    let d = &mut dz[..n * width_out];
                    let c0 = Instant::now();
                    let (loss, c1) = if let Some(rx) = bwd_in.as_mut() {
                        let got = rx.recv_timeout(PATIENCE)?;
                        let c1 = Instant::now();
                        tm.wait_gradient += c1 - c0;
                        let tag = *got.header::<Tag>()?;
                        expect(&tag, t, m, Tag::GRADIENT)?;
                        let v = got.view::<f32>()?; // read in place
                        if v.shape() != [n, width_out] {
                            return Err(format!("gradient of shape {:?}", v.shape()).into());
                        }
                        model::relu_backward(z, v.as_slice(), d);
                        (tag.value, c1)
                    } else {
                        (model::loss(&data.targets, z, rows, scale, d), c0)
                    };
                    let x = &stash_x[m][..n * width_in];
                    if let Some(tx) = bwd_out.as_mut() {
                        let tag = Tag {
                            step: t as u64,
                            micro: m as u32,
                            kind: Tag::GRADIENT,
                            value: loss,
                            offset: 0,
                        };
                        let c2 = Instant::now();
                        let mut dx = tx.allocate_tensor_with_timeout::<Tag, f32>(
                            tag,
                            &[n, width_in],
                            PATIENCE,
                        )?;
                        let c3 = Instant::now();
                        tm.wait_room += c3 - c2;
                        model::backward(&layer, x, d, n, &mut grad, Some(dx.as_mut_slice()));
                        dx.send();
                        tm.backward += (c2 - c1) + c3.elapsed();
                    } else {
                        model::backward(&layer, x, d, n, &mut grad, None);
                        step_loss += loss;
                        tm.backward += c1.elapsed();
                    }
                }
            }
        }
        match &mut ends.sync {
            Sync::Local => {
                let c0 = Instant::now();
                model::momentum_update(&mut momentum, &grad, cx.lr, cx.beta, &mut update);
                model::apply(&mut layer.params, &update);
                tm.update += c0.elapsed();
            }
            Sync::Remote { grads, updates } => {
                let c0 = Instant::now();
                for (k, piece) in grad.chunks(CHUNK).enumerate() {
                    grads.send(t as u32, r as u32, k * CHUNK, piece)?;
                }
                let mut at = 0;
                let mut c1 = c0;
                while at < layer.len() {
                    let c = updates.recv(PATIENCE)?; // read in place
                    let c2 = Instant::now();
                    tm.wait_update += c2 - c1;
                    let len = c.len as usize;
                    if c.step as usize != t || c.offset as usize != at || len > CHUNK {
                        return Err(format!(
                            "update chunk of step {} at {} (expected step {t} at {at})",
                            c.step, c.offset
                        )
                        .into());
                    }
                    model::apply(&mut layer.params[at..at + len], &c.values[..len]);
                    c1 = Instant::now();
                    tm.update += c1 - c2;
                    at += len;
                }
            }
        }
        grad.fill(0.0);
        if s == 0 {
            step_losses[t] = step_loss;
            if let Some(p) = progress {
                epoch_loss = if t % plan.steps_per_epoch == 0 {
                    step_loss
                } else {
                    epoch_loss + step_loss
                };
                p.epoch_loss.store(epoch_loss.to_bits(), Ordering::Relaxed);
                p.steps.store(t as u64 + 1, Ordering::Relaxed);
            }
        }
    }
    let f = |d: Duration| d.as_secs_f64();
    let stats = Stats {
        forward: f(tm.forward),
        backward: f(tm.backward),
        update: f(tm.update),
        wait_activation: f(tm.wait_activation),
        wait_gradient: f(tm.wait_gradient),
        wait_room: f(tm.wait_room),
        wait_update: f(tm.wait_update),
        window: start.elapsed().as_secs_f64(),
        allocations: (thread_allocations() - allocs0) as f64,
        steps: (steps - warm) as f64,
    };
    finish(s, cx.stages, layer, stats, bwd_in, bwd_out, step_losses)
}

/// After the last step: stage `s` passes every later stage's results down, then its own;
/// stage 0 collects them all.
fn finish(
    s: usize,
    stages: usize,
    layer: Layer,
    stats: Stats,
    mut bwd_in: Option<TensorConsumer>,
    mut bwd_out: Option<TensorProducer>,
    step_losses: Vec<f64>,
) -> Result<Option<Collected>, Error> {
    let mut collected = Collected {
        step_losses,
        finals: vec![Vec::new(); stages],
        stats: vec![Stats::default(); stages],
    };
    let mut complete = 0;
    while complete < stages - 1 - s {
        let rx = bwd_in.as_mut().ok_or("no backward input")?;
        let got = rx.recv_timeout(PATIENCE)?;
        let tag = *got.header::<Tag>()?;
        let from = tag.micro as usize;
        if from <= s || from >= stages {
            return Err(format!("results of stage {from} at stage {s}").into());
        }
        match tag.kind {
            Tag::STATS => {
                let v = got.view::<f64>()?;
                match bwd_out.as_mut() {
                    Some(tx) => send_f64(tx, tag, v.as_slice())?,
                    None => collected.stats[from] = Stats::from_slice(v.as_slice()),
                }
            }
            Tag::FINAL => {
                let v = got.view::<f32>()?;
                let (offset, total) = (tag.offset as usize, tag.value as usize);
                if offset + v.len() > total {
                    return Err("a final-weights piece past the end".into());
                }
                if offset + v.len() == total {
                    complete += 1;
                }
                match bwd_out.as_mut() {
                    Some(tx) => send_f32(tx, tag, v.as_slice())?,
                    None => {
                        let f = &mut collected.finals[from];
                        f.resize(total, f32::NAN);
                        f[offset..offset + v.len()].copy_from_slice(v.as_slice());
                    }
                }
            }
            k => return Err(format!("message kind {k} after the last step").into()),
        }
    }
    match bwd_out.as_mut() {
        Some(tx) => {
            let tag = |kind, offset| Tag {
                step: u64::MAX,
                micro: s as u32,
                kind,
                value: layer.len() as f64,
                offset,
            };
            send_f64(tx, tag(Tag::STATS, 0), &stats.to_array())?;
            for (k, piece) in layer.params.chunks(PIECE).enumerate() {
                send_f32(tx, tag(Tag::FINAL, (k * PIECE) as u64), piece)?;
            }
            Ok(None)
        }
        None => {
            collected.stats[0] = stats;
            collected.finals[0] = layer.params;
            Ok(Some(collected))
        }
    }
}
