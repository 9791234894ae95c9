//! One producer, many consumers of **one region**: every consumer reads every record in place,
//! and the producer reuses bytes only once every counted consumer has released them.
//!
//! Slots of a ring of `n` consumer places: 0 is the producer, `1 ..= n` the consumers. The
//! region is an ordinary SPSC region (same records, commit words, pending marks, fillers): the
//! producer is an [`SpscProducer`] whose "read position" is the **gate** (slot 0's position
//! word), which this module keeps at the minimum read position of the counted consumers, and
//! each consumer is an [`SpscConsumer`] of its own slot. So a broadcast ring adds no record
//! format and no publication protocol of its own; it adds who gates the producer.
//!
//! # The gate: a cached minimum
//!
//! The producer keeps a bit set of the *members* (consumer slots it counts) and the gate word.
//! A reservation is the SPSC one: it compares against its cached copy of the gate, and only
//! when that says full does it reload the gate; only when the reloaded gate still says full
//! does this module rescan the member slots (one `Acquire` load each, each position checked:
//! not behind the old minimum, not past the write position), drop members that are gone, and
//! store the new minimum. So the per-message cost does not grow with the number of consumers;
//! the scan's does, and it runs about once per free-space's worth of messages. (Why not one
//! shared counter the consumers decrement: a read-modify-write per message per consumer on one
//! contended line, and a consumer killed mid-message would leave it wrong for ever.)
//!
//! # A consumer's position word
//!
//! `position | flags`, positions being multiples of 64:
//!
//! * `JOINING` (alone): a consumer that subscribed (or opened, or was cut off and comes back)
//!   and is not counted yet. The producer **admits** it at its next commit, before publishing,
//!   by a compare-and-swap of `JOINING` to its write position, and sets its member bit; the
//!   consumer then starts there, expecting the sequence number the commit word there holds
//!   (a pending mark, or the message just published). So it sees every message committed
//!   after it asked, and is never counted before its start is consistent.
//! * `HOLD` (drop-lagging rings only): the consumer is reading at `position` (from a peek until
//!   the release that stores the next bare position). Set by a compare-and-swap from the bare
//!   position, so it races exactly with:
//! * `LAGGED`: set by the producer, by a compare-and-swap from the bare position, when the
//!   consumer kept it waiting too long (the end layer decides when; this module has no clock).
//!   The producer drops its member bit and may reuse its bytes at once. The consumer's next
//!   peek fails its hold, reports `Lagged`, and joins again.
//!
//! **Why joins are requested, not done by the joiner.** A joiner that copied the producer's
//! write position itself could copy a stale one: by the time it is counted, the producer may
//! already be writing over the bytes it would start at. The producer alone knows its write
//! position exactly, and it admits joiners at a moment when it is not writing past it (between
//! its reservation and its publication). To make that cost nothing per message, a joiner bumps
//! a *join counter* after storing `JOINING` and the producer loads it once per commit
//! (`Relaxed`... `Acquire`, one load of a line nobody writes in steady state); only a changed
//! counter makes it scan for joiners. Nothing here waits for the producer: a join never hangs
//! (the consumer reports `Empty` until it is admitted, `Disconnected` if the producer is gone).
//!
//! **Why a hold bit, and only for drop-lagging rings.** A consumer reads ring bytes in place
//! (a `Received` is a reference into the ring), so cutting it off must never overlap a read:
//! the hold and the cut-off are compare-and-swaps of the same word from the same bare value,
//! and exactly one wins. A consumer that holds a message keeps gating (the producer waits, as
//! with `Block`, until it releases); the cut-off happens only at a moment it holds none. With
//! `Block` nobody cuts anyone off, and a consumer's per-message cost is the SPSC one (one
//! `Release` store of its position).
//!
//! The join counter lives in slot 0's waiting word and counts in steps of 2 from `u64::MAX`,
//! so it is always odd and never equals a write position (SPSC's large-record restart reads
//! that word on the producer's side as "the consumer waits at position ...": it never matches).
//!
//! # Leaving and dying
//!
//! A consumer that drops marks its slot closed; a liveness check (the end layer's, while the
//! producer waits) closes the slot of a dead process. Either way the next rescan drops it from
//! the members; its place can be claimed again and joins afresh. The producer never reports
//! `Disconnected` (a consumer may subscribe later): with no member, the whole ring is free.
//! When the producer drops, every consumer drains what was published, then sees
//! `Disconnected` (the SPSC rule: pending mark and a closed producer slot).
//!
//! This module never sleeps, wakes, or reads a clock: like `spsc.rs` it reports `Full`/`Empty`
//! and leaves waiting, liveness and time to the end layer.

use super::control::{EndSlot, Ring};
use super::format::{Peeked, RECORD_ALIGN};
use super::spsc::{Lane, PeekError, ReserveError, SpscConsumer, SpscProducer};
use crate::sync::Ordering;
use std::sync::Arc;

/// Position-word flag: the consumer reads at the position (drop-lagging rings).
pub(crate) const HOLD: u64 = 1;
/// Position-word flag: the producer cut the consumer off.
pub(crate) const LAGGED: u64 = 2;
/// Position word of a consumer waiting to be admitted.
pub(crate) const JOINING: u64 = 4;
/// The flag bits of a position word.
const FLAGS: u64 = RECORD_ALIGN as u64 - 1;
/// The join counter's first value (odd; it grows by 2): what a created slot's waiting word
/// holds.
const JOINS_START: u64 = u64::MAX;

/// The producer's slot.
pub(crate) const PRODUCER: usize = 0;

/// The producer's lane: its "reader" is its own slot, whose position word is the gate.
const PRODUCER_LANE: Lane = Lane {
    region: 0,
    producer: PRODUCER,
    reader: PRODUCER,
    consumer: PRODUCER,
};

/// The lane of the consumer in `slot` (`1 ..= consumers`).
pub(crate) const fn consumer_lane(slot: usize) -> Lane {
    Lane {
        region: 0,
        producer: PRODUCER,
        reader: slot,
        consumer: slot,
    }
}

/// The join counter (slot 0's waiting word).
fn join_counter(ring: &Ring) -> &crate::sync::AtomicU64 {
    &ring.slot(PRODUCER).cursor.waiting
}

/// The producer's cursor. Exactly one exists per ring.
#[derive(Debug)]
pub(crate) struct BroadcastProducer {
    /// The SPSC producer of the region, gated by slot 0's position word.
    inner: SpscProducer,
    /// Consumer places.
    consumers: usize,
    /// Members: bit `i` counts the consumer in slot `1 + i`.
    members: u64,
    /// The join counter as last seen.
    joins_seen: u64,
    /// The minimum of the members' positions as last scanned: what the gate holds.
    min: u64,
}

impl BroadcastProducer {
    /// The producer of a freshly created ring of `consumers` places.
    pub(crate) fn new(ring: Arc<Ring>, consumers: usize) -> Result<Self, &'static str> {
        debug_assert!((1..=64).contains(&consumers));
        Ok(BroadcastProducer {
            inner: SpscProducer::recover_lane(ring, PRODUCER_LANE)?,
            consumers,
            members: 0,
            joins_seen: JOINS_START,
            min: 0,
        })
    }

    /// The ring.
    #[inline(always)]
    pub(crate) fn ring(&self) -> &Arc<Ring> {
        self.inner.ring()
    }

    /// Consumer places.
    pub(crate) fn consumers(&self) -> usize {
        self.consumers
    }

    /// The members now (bit `i`: slot `1 + i`).
    #[inline(always)]
    pub(crate) fn members(&self) -> u64 {
        self.members
    }

    /// A consumer's slot.
    #[inline(always)]
    fn slot(&self, slot: usize) -> &EndSlot {
        self.inner.ring().slot(slot)
    }

    /// Messages published by this producer.
    pub(crate) fn published(&self) -> u64 {
        self.inner.published()
    }

    /// Reserves a record as [`SpscProducer::try_reserve`] does; when the gate says full, rescans
    /// the members once and tries again.
    #[inline(always)]
    pub(crate) fn try_reserve(&mut self, len: usize, align: usize) -> Result<u64, ReserveError> {
        match self.inner.try_reserve(len, align) {
            Err(ReserveError::Full) => self.reserve_rescanned(len, align),
            r => r,
        }
    }

    /// [`Self::try_reserve`] after the gate said full.
    #[inline(never)]
    fn reserve_rescanned(&mut self, len: usize, align: usize) -> Result<u64, ReserveError> {
        if self.rescan()? {
            self.inner.try_reserve(len, align)
        } else {
            Err(ReserveError::Full)
        }
    }

    /// Recomputes the members' minimum position (dropping members that are gone, cut off or
    /// rejoining) and stores it into the gate; returns whether it moved.
    fn rescan(&mut self) -> Result<bool, ReserveError> {
        let write = self.inner.write_position();
        let mut min = write;
        let mut members = self.members;
        while members != 0 {
            let i = members.trailing_zeros() as usize;
            members &= members - 1;
            let slot = 1 + i;
            if !self.inner.ring().live(slot) {
                self.members &= !(1 << i);
                continue;
            }
            let word = self.slot(slot).cursor.position.load(Ordering::Acquire);
            if word & (LAGGED | JOINING) != 0 {
                // Not ours to count: a new holder of the place is joining (its old holder
                // left), or a peer wrote what only we write.
                self.members &= !(1 << i);
                continue;
            }
            let pos = word & !FLAGS;
            if pos < self.min || pos > write {
                return Err(ReserveError::Corrupted("consumer read position"));
            }
            min = min.min(pos);
        }
        let moved = min != self.min;
        self.min = min;
        if moved {
            self.slot(PRODUCER)
                .cursor
                .position
                .store(min, Ordering::Release);
        }
        Ok(moved)
    }

    /// Cuts off the members whose position is the minimum (they keep the ring full) and that
    /// hold no message; returns how many. Drop-lagging rings only (the end layer decides when).
    pub(crate) fn cut_off_slowest(&mut self) -> usize {
        let mut cut = 0;
        let mut members = self.members;
        while members != 0 {
            let i = members.trailing_zeros() as usize;
            members &= members - 1;
            let word = self.slot(1 + i).cursor.position.load(Ordering::Acquire);
            if word != self.min {
                // Ahead of the minimum, holding a message (`HOLD`), or not counted any more.
                continue;
            }
            if self
                .slot(1 + i)
                .cursor
                .position
                .compare_exchange(word, word | LAGGED, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                self.members &= !(1 << i);
                cut += 1;
            }
        }
        cut
    }

    /// Admits the consumers that asked to join, if the join counter moved: each starts at our
    /// write position. Called before every publication.
    #[inline(always)]
    fn admit_joiners(&mut self) {
        let joins = join_counter(self.inner.ring()).load(Ordering::Acquire);
        if joins != self.joins_seen {
            self.admit(joins);
        }
    }

    /// [`Self::admit_joiners`] when the counter moved to `joins`.
    #[cold]
    #[inline(never)]
    fn admit(&mut self, joins: u64) {
        self.joins_seen = joins;
        let write = self.inner.write_position();
        for i in 0..self.consumers {
            let slot = 1 + i;
            if !self.inner.ring().live(slot) {
                continue;
            }
            if self
                .slot(slot)
                .cursor
                .position
                .compare_exchange(JOINING, write, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                // The cached minimum stays valid: `write` is at or after it.
                self.members |= 1 << i;
            }
        }
    }

    /// Whether a reservation published a filler on its own since the last call.
    #[inline(always)]
    pub(crate) fn take_published(&mut self) -> bool {
        self.inner.take_published()
    }

    /// Publishes the record reserved at `pos`, after admitting any joiner (it then sees this
    /// record).
    #[inline(always)]
    pub(crate) fn commit(
        &mut self,
        pos: u64,
        len: usize,
        align: usize,
        type_id: u64,
        timestamp_ns: u64,
    ) {
        self.admit_joiners();
        self.inner.commit(pos, len, align, type_id, timestamp_ns);
    }

    /// Address of the payload of the record reserved at `pos`.
    #[inline(always)]
    pub(crate) fn payload(&self, pos: u64) -> core::ptr::NonNull<u8> {
        self.inner.payload(pos)
    }

    /// Marks our end closed (we drop): consumers drain what we published, then see
    /// `Disconnected`.
    pub(crate) fn close(&self) {
        self.inner.close();
    }
}

/// A consumer's cursor: an SPSC consumer of its own slot, plus joining and (drop-lagging
/// rings) holding.
#[derive(Debug)]
pub(crate) struct BroadcastConsumer {
    /// The reader of our lane (a placeholder at position 0 until we are admitted).
    inner: SpscConsumer,
    /// Our slot.
    slot: usize,
    /// Not admitted yet.
    joining: bool,
    /// The ring cuts off lagging consumers: hold our position while we read.
    hold: bool,
}

impl BroadcastConsumer {
    /// A consumer in `slot`, which this process just claimed: asks the producer to admit it.
    pub(crate) fn join(ring: Arc<Ring>, slot: usize, hold: bool) -> Self {
        let mut c = BroadcastConsumer {
            inner: SpscConsumer::new_lane(ring, consumer_lane(slot)),
            slot,
            joining: true,
            hold,
        };
        c.request_join();
        c
    }

    /// Stores `JOINING` into our position word and bumps the join counter.
    fn request_join(&mut self) {
        let ring = self.inner.ring();
        ring.slot(self.slot)
            .cursor
            .position
            .store(JOINING, Ordering::Release);
        join_counter(ring).fetch_add(2, Ordering::AcqRel);
        self.joining = true;
    }

    /// Our position word.
    #[inline(always)]
    fn word(&self) -> &crate::sync::AtomicU64 {
        &self.inner.ring().slot(self.slot).cursor.position
    }

    /// Whether we are admitted (else `Empty`, or `Disconnected` once the producer is gone).
    #[cold]
    #[inline(never)]
    fn admitted(&mut self) -> Result<(), PeekError> {
        // The producer closes its slot after its last commit: once we see it closed, a word
        // still `JOINING` means it never admitted us.
        let closed = self.inner.producer_closed();
        let word = self.word().load(Ordering::Acquire);
        if word == JOINING {
            return Err(if closed {
                PeekError::Disconnected
            } else {
                PeekError::Empty
            });
        }
        if word & FLAGS == LAGGED {
            // Admitted, then cut off before our first peek.
            self.request_join();
            return Err(PeekError::Lagged);
        }
        // Flags left set, or a position no ring reaches: a corrupt word.
        if !super::spsc::plausible_read(word) {
            return Err(PeekError::Corrupted("consumer position word"));
        }
        // From the word loaded above: reloading it could see a cut-off that happened since
        // (which our first hold then reports).
        let ring = Arc::clone(self.inner.ring());
        let released = self.inner.released_messages();
        self.inner = SpscConsumer::resume_lane(ring, consumer_lane(self.slot), word);
        self.inner.carry_released(released);
        if self.hold {
            self.inner.keep_on_skip(HOLD);
        }
        self.joining = false;
        Ok(())
    }

    /// The next published message, not released.
    #[inline(always)]
    pub(crate) fn try_peek(&mut self) -> Result<Peeked, PeekError> {
        if self.joining {
            self.admitted()?;
        }
        if !self.hold {
            return self.inner.try_peek();
        }
        self.peek_held()
    }

    /// Takes our hold at our read position (a compare-and-swap that races only with the
    /// producer's cut-off); on losing, reports `Lagged` and asks to join again.
    #[inline]
    fn take_hold(&mut self) -> Result<u64, PeekError> {
        let read = self.inner.read_position();
        match self
            .word()
            .compare_exchange(read, read | HOLD, Ordering::Acquire, Ordering::Acquire)
        {
            Ok(_) => Ok(read),
            Err(found) if found == read | LAGGED => {
                self.request_join();
                Err(PeekError::Lagged)
            }
            Err(_) => Err(PeekError::Corrupted("consumer position word")),
        }
    }

    /// [`Self::try_peek`] on a drop-lagging ring: reads only while holding. A message keeps the
    /// hold until its release stores the next bare position; anything else drops it at once.
    #[inline]
    fn peek_held(&mut self) -> Result<Peeked, PeekError> {
        self.take_hold()?;
        let r = self.inner.try_peek();
        if r.is_err() {
            self.word()
                .store(self.inner.read_position(), Ordering::Release);
        }
        r
    }

    /// Messages published and not yet received (a snapshot; 0 while joining or cut off).
    pub(crate) fn waiting(&self) -> usize {
        if self.joining {
            return self.waiting_since_admitted();
        }
        if !self.hold {
            return self.inner.waiting();
        }
        // Hold while following the records (their headers are read); if cut off, nothing
        // waits for us (the next peek reports it).
        let read = self.inner.read_position();
        let held =
            self.word()
                .compare_exchange(read, read | HOLD, Ordering::Acquire, Ordering::Relaxed);
        if held.is_err() {
            return 0;
        }
        let n = self.inner.waiting();
        self.word().store(read, Ordering::Release);
        n
    }

    /// [`Self::waiting`] before our first peek since we asked to join: what waits after the
    /// position the producer admitted us at (0 if it has not yet, or on a drop-lagging ring,
    /// where counting without a hold could race with a cut-off).
    #[cold]
    fn waiting_since_admitted(&self) -> usize {
        let word = self.word().load(Ordering::Acquire);
        if self.hold || !super::spsc::plausible_read(word) {
            return 0;
        }
        let ring = Arc::clone(self.inner.ring());
        SpscConsumer::resume_lane(ring, consumer_lane(self.slot), word).waiting()
    }

    /// Messages released by this consumer (carried across re-joins).
    pub(crate) fn released_messages(&self) -> u64 {
        self.inner.released_messages()
    }

    /// The reader of our lane (it releases what we peeked).
    #[inline(always)]
    pub(crate) fn lane_mut(&mut self) -> &mut SpscConsumer {
        &mut self.inner
    }

    /// The reader of our lane.
    #[inline(always)]
    pub(crate) fn lane(&self) -> &SpscConsumer {
        &self.inner
    }

    /// Our slot.
    pub(crate) fn slot(&self) -> usize {
        self.slot
    }

    /// Marks our end closed (we drop).
    pub(crate) fn close(&self) {
        self.inner.close();
    }
}
