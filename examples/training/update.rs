//! The update's way back: from a stage's aggregator to that stage in every replica, one
//! function per placement. In one process and over shared memory it is one broadcast channel
//! per stage (`Channel::<Chunk>::broadcast()`): the aggregator writes each update chunk once and
//! every replica reads it in place. Over TCP there is no broadcast: [`tcp`] keeps one channel
//! per replica, and the aggregator writes each chunk once per replica.

use super::Error;
use super::messages::Chunk;
use psyne::{
    BroadcastConsumer, BroadcastProducer, Channel, Consumer, Producer, Received, RecvError,
};
use std::time::Duration;

/// The aggregator's end: sends every update chunk to every replica.
#[allow(clippy::large_enum_variant)] // one per aggregator, made once
pub enum UpdateOut {
    /// One broadcast channel, one consumer per replica (threads, processes).
    Broadcast(BroadcastProducer<Chunk>),
    /// One channel per replica (TCP).
    PerReplica(Vec<Producer<Chunk>>),
}

/// A replica's end: receives its stage's update chunks in order.
#[allow(clippy::large_enum_variant)] // one per stage, made once
pub enum UpdateIn {
    /// A consumer of the stage's broadcast channel.
    Broadcast(BroadcastConsumer<Chunk>),
    /// Its own channel (TCP).
    Direct(Consumer<Chunk>),
}

fn fill(c: &mut Chunk, step: u32, offset: usize, values: &[f32]) {
    c.step = step;
    c.replica = u32::MAX;
    c.offset = offset as u32;
    c.len = values.len() as u32;
    c.values[..values.len()].copy_from_slice(values);
}

impl UpdateOut {
    /// Sends `values` (the update of parameters `offset..offset + values.len()` at `step`) to
    /// every replica.
    pub fn send(
        &mut self,
        step: u32,
        offset: usize,
        values: &[f32],
        patience: Duration,
    ) -> Result<(), Error> {
        match self {
            UpdateOut::Broadcast(tx) => {
                let mut c = tx.allocate_timeout(patience)?; // written once for all replicas
                fill(&mut c, step, offset, values);
                c.send();
            }
            UpdateOut::PerReplica(txs) => {
                for tx in txs {
                    let mut c = tx.allocate_timeout(patience)?;
                    fill(&mut c, step, offset, values);
                    c.send();
                }
            }
        }
        Ok(())
    }
}

impl UpdateIn {
    /// The next update chunk, read in place.
    pub fn recv(&mut self, patience: Duration) -> Result<Received<'_, Chunk>, RecvError> {
        match self {
            UpdateIn::Broadcast(rx) => rx.recv_timeout(patience),
            UpdateIn::Direct(rx) => rx.recv_timeout(patience),
        }
    }
}

/// Threads: one in-process broadcast channel, room for `capacity` chunks.
pub fn threads(replicas: usize, capacity: usize) -> Result<(UpdateOut, Vec<UpdateIn>), Error> {
    let (tx, rx) = Channel::<Chunk>::broadcast()
        .capacity(capacity)
        .max_consumers(replicas)
        .build()?;
    let mut ins = vec![UpdateIn::Broadcast(rx)];
    for _ in 1..replicas {
        ins.push(UpdateIn::Broadcast(tx.subscribe()?));
    }
    Ok((UpdateOut::Broadcast(tx), ins))
}

/// Processes: the aggregator creates the shared broadcast channel `name`.
pub fn shared_create(name: &str, replicas: usize, capacity: usize) -> Result<UpdateOut, Error> {
    Ok(UpdateOut::Broadcast(
        Channel::<Chunk>::broadcast()
            .capacity(capacity)
            .max_consumers(replicas)
            .shared(name)
            .create_producer()?,
    ))
}

/// Processes: replica `replica` opens a consumer of the channel (created before it started;
/// every consumer opens before the first update is sent, which waits for every replica's
/// first gradient).
pub fn shared_open(name: &str, _replica: usize) -> Result<UpdateIn, Error> {
    Ok(UpdateIn::Broadcast(
        Channel::<Chunk>::open_broadcast_consumer(name)?,
    ))
}

/// TCP: one channel per replica (there is no TCP broadcast), already connected.
pub fn tcp(per_replica: Vec<Producer<Chunk>>) -> UpdateOut {
    UpdateOut::PerReplica(per_replica)
}

/// TCP: a replica's end of its channel.
pub fn tcp_in(rx: Consumer<Chunk>) -> UpdateIn {
    UpdateIn::Direct(rx)
}
