//! A stage's aggregator (data parallel): it receives the stage's gradient from every replica
//! (in chunks, through one many-producers channel, or over TCP one channel per replica), sums
//! them in replica order 0, 1, ... whatever order they arrived in (so the sum is the same bits
//! every run), applies momentum and sends the update back to every replica
//! ([`super::update`]). Each replica's gradient is already divided by the step's total sample
//! count, so the sum is the gradient of the mean loss over the whole global batch.

use super::messages::{CHUNK, Chunk};
use super::model;
use super::update::UpdateOut;
use super::{Error, PATIENCE};
use crate::alloc::thread_allocations;
use psyne::{Consumer, MpscConsumer, MpscProducer, Producer, Received};

/// A replica's end of its stage's gradient path.
pub enum GradOut {
    /// A producer of the stage's many-producers channel (threads, processes).
    Mpsc(MpscProducer<Chunk>),
    /// Its own channel to the aggregator (TCP).
    Direct(Producer<Chunk>),
}

impl GradOut {
    /// Sends `values`, the gradient of parameters `offset..` at `step`, written in place.
    pub fn send(
        &mut self,
        step: u32,
        replica: u32,
        offset: usize,
        values: &[f32],
    ) -> Result<(), Error> {
        let mut c = match self {
            GradOut::Mpsc(tx) => tx.allocate_timeout(PATIENCE)?,
            GradOut::Direct(tx) => tx.allocate_timeout(PATIENCE)?,
        };
        c.step = step;
        c.replica = replica;
        c.offset = offset as u32;
        c.len = values.len() as u32;
        c.values[..values.len()].copy_from_slice(values);
        c.send();
        Ok(())
    }
}

/// The aggregator's end of the gradient path.
pub enum GradIn {
    /// The stage's many-producers channel, one lane per replica.
    Mpsc(MpscConsumer<Chunk>),
    /// One channel per replica, in replica order.
    Direct(Vec<Consumer<Chunk>>),
}

/// Copies chunk `c` into replica `c.replica`'s buffer, checking it is the next one expected.
fn store(
    c: &Received<'_, Chunk>,
    step: usize,
    bufs: &mut [Vec<f32>],
    next: &mut [usize],
) -> Result<(), Error> {
    let (r, off, len) = (c.replica as usize, c.offset as usize, c.len as usize);
    if c.step as usize != step
        || r >= bufs.len()
        || off != next[r]
        || len > CHUNK
        || off + len > bufs[r].len()
    {
        return Err(format!(
            "gradient chunk of replica {r} step {} at {off} (expected step {step})",
            c.step
        )
        .into());
    }
    bufs[r][off..off + len].copy_from_slice(&c.values[..len]);
    next[r] += len;
    Ok(())
}

/// Runs the aggregator of a stage with `params` parameters for `steps` steps; returns its
/// heap allocations after `warmup` steps.
#[allow(clippy::too_many_arguments)]
pub fn run(
    params: usize,
    replicas: usize,
    steps: usize,
    warmup: usize,
    lr: f32,
    beta: f32,
    mut grads: GradIn,
    mut out: UpdateOut,
) -> Result<u64, Error> {
    let mut bufs = vec![vec![0.0f32; params]; replicas];
    let mut next = vec![0usize; replicas];
    let mut sum = vec![0.0f32; params];
    let mut momentum = vec![0.0f32; params];
    let mut update = vec![0.0f32; params];
    let chunks = params.div_ceil(CHUNK);
    let mut allocs0 = thread_allocations();
    for t in 0..steps {
        if t == warmup.min(steps.saturating_sub(1)) {
            allocs0 = thread_allocations();
        }
        next.fill(0);
        match &mut grads {
            GradIn::Mpsc(rx) => {
                for _ in 0..replicas * chunks {
                    let c = rx.recv_timeout(PATIENCE)?; // read in place
                    store(&c, t, &mut bufs, &mut next)?;
                }
            }
            GradIn::Direct(rxs) => {
                for rx in rxs.iter_mut() {
                    for _ in 0..chunks {
                        let c = rx.recv_timeout(PATIENCE)?;
                        store(&c, t, &mut bufs, &mut next)?;
                    }
                }
            }
        }
        if next.iter().any(|&n| n != params) {
            return Err(format!("step {t}: a replica's gradient is incomplete").into());
        }
        // Replica order, whatever the arrival order.
        sum.copy_from_slice(&bufs[0]);
        for b in &bufs[1..] {
            for (s, g) in sum.iter_mut().zip(b) {
                *s += g;
            }
        }
        model::momentum_update(&mut momentum, &sum, lr, beta, &mut update);
        for (k, piece) in update.chunks(CHUNK).enumerate() {
            out.send(t as u32, k * CHUNK, piece, PATIENCE)?;
        }
    }
    Ok(thread_allocations() - allocs0)
}
