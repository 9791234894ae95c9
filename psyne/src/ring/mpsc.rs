//! Many producers, one consumer: a **lane per producer**. Each lane is an SPSC region with its
//! own producer slot and its own consumer read position (the SPSC protocol of `spsc.rs`,
//! unchanged), and the consumer polls the lanes round-robin.
//!
//! Slots of a ring of `n` producers: `i` is producer `i`, `n + i` holds the consumer's read
//! position in lane `i`, `2n` is the consumer (its owner word and the one parked word every
//! producer wakes).
//!
//! # Why lanes, not one ring with claimed ranges
//!
//! With one shared ring (producers claiming byte ranges with a fetch-and-add, as disruptor-rs's
//! multi-producer sequencer does), a producer stalled or killed between its claim and its
//! commit blocks every record behind it: the consumer reads in order and must wait (or, for a
//! dead producer, somehow skip a range whose header may never be written). Every message also
//! costs a contended read-modify-write on the claim word, and the producers' stores to adjacent
//! records share cache lines. With a lane per producer:
//!
//! * **lock-free and isolated**: no producer ever touches another's lane or slot; a producer
//!   stalled or killed mid-message costs only its own unsent message (its commit word stays the
//!   pending mark), and the consumer and the other producers go on;
//! * **per-producer order** is the lane's order; **fairness** is the consumer's round-robin:
//!   each receive starts at the lane after the one it last took from, so a message at the head
//!   of a lane is received within `n` receives, however fast the other producers are;
//! * **no read-modify-write per message**, and each producer's lines move only between it and
//!   the consumer;
//! * a producer's place is a slot: dropping (or dying) frees it for a later `try_clone` or
//!   open, which continues the lane after its last published message (see `spsc.rs`'s
//!   recovery).
//!
//! The cost: memory (`n` regions of the per-producer capacity) and a consumer that polls up to
//! `n` commit words before it can say "empty". Cross-producer order is not kept (messages of
//! different producers have no common sequence); within a lane the header's sequence counts.
//!
//! This module never sleeps or wakes: like `spsc.rs` it reports `Empty` and says which parked
//! words the end layer should wake.

use super::control::Ring;
use super::format::Peeked;
use super::spsc::{Lane, PeekError, SpscConsumer};
use std::sync::Arc;

/// The lane of producer `i` in a ring of `producers` producers.
pub(crate) const fn lane(producers: usize, i: usize) -> Lane {
    Lane {
        region: i,
        producer: i,
        reader: producers + i,
        consumer: 2 * producers,
    }
}

/// The consumer's slot in a ring of `producers` producers.
pub(crate) const fn consumer_slot(producers: usize) -> usize {
    2 * producers
}

/// The consumer's cursor over every lane. Exactly one exists per ring.
#[derive(Debug)]
pub(crate) struct MpscConsumer {
    ring: Arc<Ring>,
    /// One SPSC consumer cursor per lane (allocated once, when the end is made).
    lanes: Vec<SpscConsumer>,
    /// The lane the next poll starts at (round-robin).
    next: usize,
    /// Lanes whose consumer skipped a filler (released space) since the end layer last asked,
    /// one bit per lane (at most 64 lanes).
    released: u64,
}

impl MpscConsumer {
    /// The consumer of a freshly created ring of `producers` lanes.
    pub(crate) fn new(ring: Arc<Ring>, producers: usize) -> Self {
        let lanes = (0..producers)
            .map(|i| SpscConsumer::new_lane(Arc::clone(&ring), lane(producers, i)))
            .collect();
        MpscConsumer {
            ring,
            lanes,
            next: 0,
            released: 0,
        }
    }

    /// The ring.
    pub(crate) fn ring(&self) -> &Arc<Ring> {
        &self.ring
    }

    /// Number of producers (lanes).
    pub(crate) fn producers(&self) -> usize {
        self.lanes.len()
    }

    /// The next published message of any lane, round-robin from the lane after the last one
    /// taken from; its [`Peeked::lane`] says which. `Disconnected` once no producer is attached
    /// (and at least one was) and every lane is drained.
    #[inline]
    pub(crate) fn try_peek(&mut self) -> Result<Peeked, PeekError> {
        let n = self.lanes.len();
        let mut i = self.next;
        let mut closed = 0;
        for _ in 0..n {
            if i >= n {
                i = 0;
            }
            let lane = &mut self.lanes[i];
            let r = lane.try_peek();
            if lane.take_released() {
                self.released |= 1 << i;
            }
            match r {
                Ok(mut p) => {
                    p.set_lane(i as u32);
                    self.next = i + 1;
                    return Ok(p);
                }
                Err(PeekError::Empty) => {}
                Err(PeekError::Disconnected) => closed += 1,
                Err(e @ (PeekError::Corrupted(_) | PeekError::Lagged)) => return Err(e),
            }
            i += 1;
        }
        // Nothing anywhere. Disconnected only when no lane has a live (or never-attached but
        // claimable) producer that could still publish, and some producer did leave.
        if closed > 0 && closed == self.attached_lanes() {
            Err(PeekError::Disconnected)
        } else {
            Err(PeekError::Empty)
        }
    }

    /// [`Self::try_peek`]'s common case for a typed consumer (see
    /// [`SpscConsumer::try_peek_fast`]): the lane the round-robin scan would look at first holds
    /// a published message of exactly `expected` bytes and type `type_id`. Returns what
    /// `try_peek` would return then (that lane's message, `next` moved past it); `None` for
    /// anything else (that lane empty, a filler, another length or type, a failed check), and
    /// nothing changed: the caller then calls `try_peek`, which scans from the same lane. So
    /// the order in which lanes are served is the full scan's.
    #[inline(always)]
    pub(crate) fn try_peek_fast(&mut self, expected: u32, type_id: u64) -> Option<Peeked> {
        let n = self.lanes.len();
        let i = if self.next >= n { 0 } else { self.next };
        let mut p = self.lanes.get(i)?.try_peek_fast(expected, type_id)?;
        p.set_lane(i as u32);
        self.next = i + 1;
        Some(p)
    }

    /// Lanes whose producer slot was ever attached.
    fn attached_lanes(&self) -> usize {
        (0..self.lanes.len())
            .filter(|&i| self.ring.ever_attached(i))
            .count()
    }

    /// The cursor of lane `lane`.
    #[inline(always)]
    pub(crate) fn lane_mut(&mut self, lane: usize) -> &mut SpscConsumer {
        &mut self.lanes[lane]
    }

    /// The parked word of the producer of lane `lane`.
    #[inline(always)]
    pub(crate) fn producer_parked(&self, lane: usize) -> &crate::sync::Futex {
        self.lanes[lane].peer_parked()
    }

    /// Takes the set of lanes (bits) whose consumer released space by skipping a filler.
    #[inline(always)]
    pub(crate) fn take_released(&mut self) -> u64 {
        core::mem::take(&mut self.released)
    }

    /// Whether every producer that ever attached is gone (and at least one did).
    pub(crate) fn producers_closed(&self) -> bool {
        let attached = self.attached_lanes();
        attached > 0 && (0..self.lanes.len()).all(|i| !self.ring.live(i))
    }

    /// Messages released, in every lane.
    pub(crate) fn released_messages(&self) -> u64 {
        self.lanes
            .iter()
            .map(SpscConsumer::released_messages)
            .fold(0, u64::wrapping_add)
    }

    /// Messages waiting in every lane (a snapshot).
    pub(crate) fn waiting(&self) -> usize {
        self.lanes.iter().map(SpscConsumer::waiting).sum()
    }

    /// Records of at most `record_size` bytes arrive (typed consumers).
    pub(crate) fn expect_records_of(&mut self, record_size: usize) {
        for lane in &mut self.lanes {
            lane.expect_records_of(record_size);
        }
    }

    /// Marks the consumer closed (it drops).
    pub(crate) fn close(&self) {
        self.ring.close(consumer_slot(self.lanes.len()));
    }
}
