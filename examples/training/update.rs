//! The update's way back: from a stage's aggregator to that stage in every replica, one
//! function per placement.
//!
//! TEMPORARY (until the broadcast channel lands on main): the return path is one SPSC channel
//! per replica, and the aggregator writes each update chunk once per replica. With
//! `Channel::<Chunk>::broadcast()` the aggregator writes every chunk once and all replicas read
//! it in place; only this module changes ([`UpdateOut`] holds a `BroadcastProducer`,
//! [`UpdateIn`] a `BroadcastConsumer`, `threads` uses `tx.subscribe()`, `shared_create` /
//! `shared_open` use `.shared(name).create_producer()` / `open_broadcast_consumer(name)`).
//! Over TCP there is no broadcast: [`tcp`] keeps one channel per replica.

use super::Error;
use super::messages::Chunk;
use psyne::{Channel, Consumer, Producer, Received, RecvError};
use std::time::Duration;

/// The aggregator's end: sends every update chunk to every replica.
pub struct UpdateOut {
    /// One channel per replica (see the module docs).
    per_replica: Vec<Producer<Chunk>>,
}

/// A replica's end: receives its stage's update chunks in order.
pub struct UpdateIn {
    rx: Consumer<Chunk>,
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
        for tx in &mut self.per_replica {
            let mut c = tx.allocate_timeout(patience)?;
            c.step = step;
            c.replica = u32::MAX;
            c.offset = offset as u32;
            c.len = values.len() as u32;
            c.values[..values.len()].copy_from_slice(values);
            c.send();
        }
        Ok(())
    }
}

impl UpdateIn {
    /// The next update chunk, read in place.
    pub fn recv(&mut self, patience: Duration) -> Result<Received<'_, Chunk>, RecvError> {
        self.rx.recv_timeout(patience)
    }
}

/// Threads: in-process channels, room for `capacity` chunks each.
pub fn threads(replicas: usize, capacity: usize) -> Result<(UpdateOut, Vec<UpdateIn>), Error> {
    let mut per_replica = Vec::new();
    let mut ins = Vec::new();
    for _ in 0..replicas {
        let (tx, rx) = Channel::<Chunk>::builder().capacity(capacity).build()?;
        per_replica.push(tx);
        ins.push(UpdateIn { rx });
    }
    Ok((UpdateOut { per_replica }, ins))
}

/// Processes: the aggregator creates the shared channels `<name>-<replica>`.
pub fn shared_create(name: &str, replicas: usize, capacity: usize) -> Result<UpdateOut, Error> {
    let mut per_replica = Vec::new();
    for r in 0..replicas {
        per_replica.push(
            Channel::<Chunk>::builder()
                .capacity(capacity)
                .shared(&format!("{name}-{r}"))
                .create_producer()?,
        );
    }
    Ok(UpdateOut { per_replica })
}

/// Processes: replica `replica` opens its end (created before it was started).
pub fn shared_open(name: &str, replica: usize) -> Result<UpdateIn, Error> {
    Ok(UpdateIn {
        rx: Channel::<Chunk>::open_consumer(&format!("{name}-{replica}"))?,
    })
}

/// TCP: one channel per replica (there is no TCP broadcast), already connected.
pub fn tcp(per_replica: Vec<Producer<Chunk>>) -> UpdateOut {
    UpdateOut { per_replica }
}

/// TCP: a replica's end of its channel.
pub fn tcp_in(rx: Consumer<Chunk>) -> UpdateIn {
    UpdateIn { rx }
}
