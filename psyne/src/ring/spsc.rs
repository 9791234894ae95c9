//! The single-producer single-consumer protocol: the producer's and the consumer's cursors over
//! a [`Ring`] whose slot 0 is the producer and slot 1 the consumer.
//!
//! Cursors never sleep and never wake anyone: a cursor that would have to wait reports `Full`
//! or `Empty`, and after a publication or a release the end layer above decides whether the
//! other end must be woken (through its parked word, [`SpscProducer::peer_parked`]).

use super::control::{EndSlot, Ring, Topology};
use super::format::{
    HEADER, MAX_ALIGN, Peeked, RECORD_ALIGN, Region, Slot, max_record, pending, record_size_of,
};
use crate::sync::{Futex, Ordering};
use core::ptr::NonNull;
use std::sync::Arc;

/// End slot of the producer.
pub(crate) const PRODUCER: usize = 0;
/// End slot of the consumer.
pub(crate) const CONSUMER: usize = 1;

/// One producer-to-consumer lane of a ring: which region it uses and which end slots hold its
/// words. An SPSC ring is one lane; a multi-producer ring (`mpsc.rs`) is one lane per producer
/// with a shared consumer presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lane {
    /// Index of the region (see [`Ring::region_of`]).
    pub region: usize,
    /// Slot of the producer: its owner word, start time and parked word.
    pub producer: usize,
    /// Slot whose position word is the consumer's read position in this lane (and whose waiting
    /// word is its waiting hint).
    pub reader: usize,
    /// Slot of the consumer's presence: its owner word and parked word.
    pub consumer: usize,
}

impl Lane {
    /// The lane of an SPSC ring.
    pub(crate) const SPSC: Lane = Lane {
        region: 0,
        producer: PRODUCER,
        reader: CONSUMER,
        consumer: CONSUMER,
    };
}

/// Why a reservation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReserveError {
    /// Not enough free space now.
    Full,
    /// The consumer is gone.
    Disconnected,
    /// The consumer's read position failed a check (see the module docs of [`crate::ring`]).
    Corrupted(&'static str),
}

/// Why a peek failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeekError {
    /// Nothing published.
    Empty,
    /// Nothing published and the producer is gone.
    Disconnected,
    /// A commit word or a header failed a check (see the module docs of [`crate::ring`]).
    Corrupted(&'static str),
    /// A broadcast consumer was cut off by the producer for lagging (see `broadcast.rs`).
    Lagged,
}

/// Large records restart at the region's start (see "Large records restart at the region's
/// start" in the module docs of [`crate::ring`]): the whole heuristic, its thresholds and its
/// one shared word.
pub(crate) struct Rewind;

impl Rewind {
    /// Records of at least this many bytes restart (smaller under loom, so that the models'
    /// small records in small rings take that path too).
    const MIN: usize = if cfg!(loom) { 128 } else { 16 * 1024 };
    /// ... if the region holds more than this many of them.
    const RATIO: usize = if cfg!(loom) { 2 } else { 8 };
    /// The waiting word of a consumer that does not wait.
    pub(crate) const NOT_WAITING: u64 = u64::MAX;

    /// Whether a record of `size` bytes in a region of `len` may restart.
    #[inline(always)]
    fn applies(size: usize, len: usize) -> bool {
        size >= Self::MIN && len > Self::RATIO * size
    }

    /// Whether a consumer of a region of `len` bytes, whose records are at most `record` bytes
    /// (`None`: any size), must say when it waits.
    fn consumer_announces(len: usize, record: Option<usize>) -> bool {
        len > Self::RATIO * Self::MIN && record.is_none_or(|r| r >= Self::MIN)
    }

    /// Producer side, before reserving a record of `size` bytes at write position `write`
    /// (ring offset `offset`): whether the consumer waits for exactly that position (a hint) and
    /// the record fits before its read position once a filler is published (`offset >= size`).
    #[inline(always)]
    fn consumer_waits_at(consumer: &EndSlot, write: u64, offset: usize, size: usize) -> bool {
        offset >= size && consumer.cursor.waiting.load(Ordering::Relaxed) == write
    }
}

/// Where following the published records of a lane stopped (see [`follow`]).
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// At the pending mark of the next message: the end of what is published.
    Pending,
    /// At something an honest producer never leaves: a corrupt commit word or header, two
    /// fillers in a row, or more than a region of records.
    Bad(&'static str),
}

/// What [`follow`] found.
#[derive(Debug, Clone, Copy)]
struct Followed {
    /// The position it stopped at.
    end: u64,
    /// The sequence number expected there.
    next: u64,
    /// Messages it passed.
    messages: usize,
    /// Why it stopped.
    stop: Stop,
}

/// Whether `read`, a read position loaded from a shared slot, can be one: a multiple of the
/// record alignment and below 2^63 (29 years of 10 GB/s). More comes only from a corrupt or
/// hostile control block, and would leave no room to add a record's size without overflow.
pub(crate) fn plausible_read(read: u64) -> bool {
    read.is_multiple_of(RECORD_ALIGN as u64) && read < super::format::PENDING_BIT
}

/// The read position stored in `lane`'s reader slot (`Acquire`), if [`plausible_read`].
fn stored_read(ring: &Ring, lane: Lane) -> Result<u64, &'static str> {
    let read = ring
        .slot(lane.reader)
        .cursor
        .position
        .load(Ordering::Acquire);
    if plausible_read(read) {
        Ok(read)
    } else {
        Err("read position")
    }
}

/// Follows the published records of `region` from position `from`, where message `seq` is
/// expected, to the first pending mark: each header checked, at most one region's worth, at
/// most one filler in a row. Reads only commit words and checked header copies; releases
/// nothing. Used by a recovering producer (where do the published records end?) and by
/// `len()` (how many messages wait?).
fn follow(region: &Region, from: u64, mut seq: u64) -> Followed {
    let max = max_record(region.len()) as u64;
    let (mut pos, mut messages, mut after_filler) = (from, 0, false);
    let stop = loop {
        if pos - from > max {
            break Stop::Bad("published records overrun the region");
        }
        match region.classify(pos, seq) {
            Slot::Pending => break Stop::Pending,
            // A position near the top of `u64` comes only from a corrupt or hostile control
            // block: never wrap past it.
            Slot::Message { size, .. } => {
                let Some(next) = pos.checked_add(size) else {
                    break Stop::Bad("positions overflow");
                };
                pos = next;
                seq += 1;
                messages += 1;
                after_filler = false;
            }
            Slot::Filler { .. } if after_filler => break Stop::Bad("two fillers in a row"),
            Slot::Filler { skip } => {
                let Some(next) = pos.checked_add(skip) else {
                    break Stop::Bad("positions overflow");
                };
                pos = next;
                after_filler = true;
            }
            Slot::Corrupt(what) => break Stop::Bad(what),
        }
    };
    Followed {
        end: pos,
        next: seq,
        messages,
        stop,
    }
}

/// The producer's cursor. Exactly one exists per ring.
#[derive(Debug)]
pub(crate) struct SpscProducer {
    ring: Arc<Ring>,
    /// The ring bytes (our own copy of the geometry, see [`Region`]).
    region: Region,
    /// Which slots and region this producer uses.
    lane: Lane,
    /// The slot holding the consumer's read position (in `ring`'s control block, alive as long
    /// as `ring`).
    reader: NonNull<EndSlot>,
    /// The consumer's presence slot (closed flag, parked word).
    consumer: NonNull<EndSlot>,
    /// Our write position: the end of the last record we published.
    write: u64,
    /// The consumer's read position as last loaded: `<=` the real one; may be stale and is
    /// resynchronised when the free space it implies is too small.
    cached_read: u64,
    /// Sequence number of the next message.
    sequence: u64,
    /// `sequence` when this cursor was made: `sequence - origin` messages published since.
    origin: u64,
    /// A record may end at or before this position without any further check: the smaller of
    /// `cached_read + max_record` (the free space) and the end of the region's lap that holds
    /// our write position (as of the last refresh). Only the slow path of
    /// [`Self::try_reserve`] and [`Self::reload_read`] refresh it; in between it only gets more
    /// conservative (a publication that ends the lap moves the lap's end beyond it).
    limit: u64,
    /// We published a wrap filler on its own since the end layer last asked (it must then wake
    /// the consumer if it sleeps: a filler is a publication too).
    published: bool,
}

impl SpscProducer {
    /// The producer of a freshly created ring.
    pub(crate) fn new(ring: Arc<Ring>) -> Self {
        Self::at(ring, Lane::SPSC, 0, 0, 0)
    }

    /// The producer at write position `write` (next message `sequence`), the consumer's read
    /// position as last known `cached_read`.
    fn at(ring: Arc<Ring>, lane: Lane, write: u64, cached_read: u64, sequence: u64) -> Self {
        let mut producer = SpscProducer {
            region: ring.region_of(lane.region).clone(),
            reader: ring.slot_ptr(lane.reader),
            consumer: ring.slot_ptr(lane.consumer),
            lane,
            ring,
            write,
            cached_read,
            sequence,
            origin: sequence,
            limit: 0,
            published: false,
        };
        producer.refresh_limit();
        producer
    }

    /// Recomputes [`Self::limit`](SpscProducer) from our write position and the cached read
    /// position.
    #[inline(always)]
    fn refresh_limit(&mut self) {
        let len = self.region.len() as u64;
        let lap_end = (self.write & !(len - 1)) + len;
        self.limit = lap_end.min(self.cached_read + max_record(self.region.len()) as u64);
    }

    /// Whether we published a filler on its own since the last call (see `published`).
    #[inline(always)]
    pub(crate) fn take_published(&mut self) -> bool {
        core::mem::take(&mut self.published)
    }

    /// The consumer's presence slot.
    #[inline(always)]
    fn consumer(&self) -> &EndSlot {
        // SAFETY: a slot of `self.ring`'s control block, which lives as long as `self.ring`;
        // every field is an atomic.
        unsafe { self.consumer.as_ref() }
    }

    /// The slot holding the consumer's read position.
    #[inline(always)]
    fn reader(&self) -> &EndSlot {
        // SAFETY: as in `consumer`.
        unsafe { self.reader.as_ref() }
    }

    /// The producer of a ring whose producer slot this process just claimed: finds where the
    /// published records end, from the consumer's read position, following commit words (each
    /// header checked, at most one region's worth), so that a new producer continues the stream
    /// of one that dropped or died: messages it fully published stay, nothing half-written
    /// becomes visible.
    pub(crate) fn recover(ring: Arc<Ring>) -> Result<Self, &'static str> {
        Self::recover_lane(ring, Lane::SPSC)
    }

    /// [`Self::recover`] for one lane of a ring.
    pub(crate) fn recover_lane(ring: Arc<Ring>, lane: Lane) -> Result<Self, &'static str> {
        let region = ring.region_of(lane.region);
        let read = stored_read(&ring, lane)?;
        let first = region.load_commit(region.mask(read), Ordering::Acquire);
        let sequence = first & !super::format::PENDING_BIT;
        let (write, sequence) = match follow(region, read, sequence) {
            Followed {
                end,
                next,
                stop: Stop::Pending,
                ..
            } => (end, next),
            Followed {
                stop: Stop::Bad(what),
                ..
            } => return Err(what),
        };
        Ok(Self::at(ring, lane, write, read, sequence))
    }

    /// The ring.
    #[inline(always)]
    pub(crate) fn ring(&self) -> &Arc<Ring> {
        &self.ring
    }

    /// Our write position: the end of the last record we published.
    #[inline(always)]
    pub(crate) fn write_position(&self) -> u64 {
        self.write
    }

    /// Messages this cursor published (from sequence numbers: no counter on the hot path).
    pub(crate) fn published(&self) -> u64 {
        self.sequence.wrapping_sub(self.origin)
    }

    /// The parked word of the consumer, to wake it after a publication.
    #[inline(always)]
    pub(crate) fn peer_parked(&self) -> &Futex {
        &self.consumer().presence.parked
    }

    /// Whether the consumer end is gone.
    #[inline(always)]
    pub(crate) fn is_disconnected(&self) -> bool {
        Ring::owner_closed(self.consumer())
    }

    /// Whether `need` bytes are free after our write position, with the line after them left
    /// free too, reloading the read position if the cached one says no.
    #[inline(always)]
    fn has_space(&mut self, need: usize) -> Result<bool, ReserveError> {
        let max = max_record(self.region.len()) as u64;
        debug_assert!(self.write - self.cached_read <= max);
        if self.write + need as u64 - self.cached_read <= max {
            return Ok(true);
        }
        self.has_space_reloaded(need)
    }

    /// [`Self::has_space`] after reloading the read position.
    #[inline(never)]
    fn has_space_reloaded(&mut self, need: usize) -> Result<bool, ReserveError> {
        self.reload_read()?;
        let max = max_record(self.region.len()) as u64;
        Ok(self.write + need as u64 - self.cached_read <= max)
    }

    /// Reloads the read position (`Acquire`) into our cached copy, after checking it: a multiple
    /// of 64, not behind the cached one, not ahead of our write position.
    #[inline]
    fn reload_read(&mut self) -> Result<(), ReserveError> {
        let read = self.reader().cursor.position.load(Ordering::Acquire);
        if read < self.cached_read || read > self.write || !read.is_multiple_of(RECORD_ALIGN as u64)
        {
            return Err(ReserveError::Corrupted("read position"));
        }
        self.cached_read = read;
        self.refresh_limit();
        Ok(())
    }

    /// Reserves a record for a payload of `len` bytes aligned to `align`, returning the position
    /// of its header. Nothing is published, except a filler before a wrap, which is published on
    /// its own (so that a record that fits only at offset 0 eventually does).
    ///
    /// Requires `record_size(len) <= max_record(ring len)`, `align` a power of two in
    /// `64 ..= min(len, MAX_ALIGN)` (checked by the channel before calling).
    #[inline(always)]
    pub(crate) fn try_reserve(&mut self, len: usize, align: usize) -> Result<u64, ReserveError> {
        let ring_len = self.region.len();
        debug_assert!(len <= u32::MAX as usize);
        let size = record_size_of(len);
        debug_assert!(size <= max_record(ring_len), "record larger than the ring");
        debug_assert!(align.is_power_of_two() && (RECORD_ALIGN..=MAX_ALIGN).contains(&align));
        if self.is_disconnected() {
            return Err(ReserveError::Disconnected);
        }
        // The common case: no padding (`align` is a constant for typed ends), no restart, and
        // the record ends before the limit (free space, before the end of the region).
        if align == RECORD_ALIGN
            && !Rewind::applies(size, ring_len)
            && self.write + size as u64 <= self.limit
        {
            self.region
                .tracker()
                .write(self.region.mask(self.write), size);
            return Ok(self.write);
        }
        self.try_reserve_slow(len, align)
    }

    /// Reserves room for up to `count` records of `len`-byte payloads (64-byte aligned) back to
    /// back, as many as fit before the end of the region (never wrapping: a run that does not
    /// fit there is `Full`, and a single record's reservation wraps as usual), at least two:
    /// one reservation of their total size. Returns its position and how many records it
    /// holds. They are then committed in order, any first ones of them: record `i` at
    /// `pos + i * record_size_of(len)`, each `commit` with `len` and `RECORD_ALIGN` (what is
    /// not committed stays free). `count * record_size_of(len)` must fit the ring's largest
    /// record.
    pub(crate) fn try_reserve_run(
        &mut self,
        len: usize,
        count: usize,
    ) -> Result<(u64, usize), ReserveError> {
        let record = record_size_of(len);
        let to_end = self.region.len() - self.region.mask(self.write);
        let fit = (to_end / record).min(count);
        if fit < 2 {
            return Err(ReserveError::Full);
        }
        let pos = self.try_reserve(fit * record - HEADER, RECORD_ALIGN)?;
        debug_assert_eq!(pos, self.write);
        Ok((pos, fit))
    }

    /// [`Self::try_reserve`] when the limit says no (or padding or a restart may be needed):
    /// the full checks, a wrap if needed, and the limit refreshed.
    #[inline(never)]
    fn try_reserve_slow(&mut self, len: usize, align: usize) -> Result<u64, ReserveError> {
        let ring_len = self.region.len();
        let size = record_size_of(len);
        if Rewind::applies(size, ring_len) {
            let offset = self.region.mask(self.write);
            if Rewind::consumer_waits_at(self.reader(), self.write, offset, size) {
                self.rewind_if_empty(offset)?;
            }
        }
        loop {
            let offset = self.region.mask(self.write);
            let to_end = ring_len - offset;
            // Records start at multiples of 64: only larger alignments can need padding (`align`
            // is a constant for typed ends, so this folds away).
            let pad = if align == RECORD_ALIGN {
                0
            } else {
                offset.next_multiple_of(align) - offset
            };
            if pad + size <= to_end {
                if !self.has_space(pad + size)? {
                    return Err(ReserveError::Full);
                }
                if pad > 0 {
                    // SAFETY: `pad + size` bytes from `offset` are free (checked above) and end
                    // before the region does.
                    unsafe { self.region.write_filler(offset, pad) };
                }
                self.refresh_limit();
                self.region.tracker().write(offset + pad, size);
                return Ok(self.write + pad as u64);
            }
            // Does not fit before the end: publish a filler up to the end on its own.
            self.wrap(offset, to_end)?;
        }
    }

    /// When the ring is empty (the consumer released everything we published), publishes a
    /// filler from ring offset `offset` to the end of the region, so that the next record goes
    /// to offset 0, whose lines the last large messages used and the caches still hold.
    #[cold]
    #[inline(never)]
    fn rewind_if_empty(&mut self, offset: usize) -> Result<(), ReserveError> {
        self.reload_read()?;
        if self.cached_read == self.write {
            self.wrap(offset, self.region.len() - offset)?;
        }
        Ok(())
    }

    /// Publishes a filler from ring offset `offset` (our write position) to the end of the
    /// region, or reports `Full`.
    #[cold]
    #[inline(never)]
    fn wrap(&mut self, offset: usize, to_end: usize) -> Result<(), ReserveError> {
        debug_assert_eq!(offset + to_end, self.region.len());
        if !self.has_space(to_end)? {
            return Err(ReserveError::Full);
        }
        // SAFETY: `to_end` bytes from `offset` are free (checked above): exactly up to the end
        // of the region.
        unsafe { self.region.write_filler(offset, to_end) };
        self.publish(self.write, self.write + to_end as u64, self.sequence, false);
        self.published = true;
        Ok(())
    }

    /// Address of the payload of the record whose header is at `pos`.
    #[inline(always)]
    pub(crate) fn payload(&self, pos: u64) -> NonNull<u8> {
        self.region.at(self.region.mask(pos) + HEADER)
    }

    /// Writes the header of the record reserved at `pos` (payload `len` bytes) and publishes it
    /// (with any alignment filler before it). The caller then wakes the consumer if it sleeps.
    ///
    /// `pos` must come from the last `try_reserve` (with the same `len` and `align`), with
    /// nothing published since, or be the next record of a [`Self::try_reserve_run`].
    #[inline(always)]
    pub(crate) fn commit(
        &mut self,
        pos: u64,
        len: usize,
        align: usize,
        type_id: u64,
        timestamp_ns: u64,
    ) {
        debug_assert!(pos >= self.write && pos - self.write < MAX_ALIGN as u64);
        let region = &self.region;
        let offset = region.mask(pos);
        let size = record_size_of(len);
        debug_assert!(offset + size <= region.len());
        // SAFETY: the record at `offset` was reserved for us by `try_reserve` (free space,
        // invisible to the consumer until its commit word is stored in `publish`).
        unsafe { region.write_header(offset, len as u32, 0, type_id, timestamp_ns) };
        // Only a payload aligned to more than a record start can have an alignment filler
        // before it (`align` is a constant for typed ends).
        self.publish(
            pos,
            pos + size as u64,
            self.sequence + 1,
            align > RECORD_ALIGN,
        );
        self.sequence += 1;
    }

    /// Publishes the record (message or wrap filler) whose header is at `record`, ending at
    /// `end`, together with an alignment filler at our write position if `record` is past it.
    /// `next` is the sequence number of the message after it (ours + 1 for a message, ours for a
    /// filler). `may_pad`: whether `record` may be past our write position (else it is not).
    ///
    /// Every header field but the commit words must be written already. Order: the pending mark
    /// of `next` goes into the commit word at `end` (free space: we always leave the line after
    /// our last record free), then the record's commit word and the filler's are stored
    /// (`Release`): a consumer that acquires either sees the header, the payload and the mark.
    #[inline(always)]
    fn publish(&mut self, record: u64, end: u64, next: u64, may_pad: bool) {
        let region = &self.region;
        debug_assert!(
            end > self.write && end - self.cached_read <= max_record(region.len()) as u64
        );
        debug_assert!(record >= self.write && record < end);
        debug_assert!(may_pad || record == self.write);
        debug_assert!(end.is_multiple_of(RECORD_ALIGN as u64));
        let seq = self.sequence;
        let after = region.mask(end);
        region.tracker().write(after, 8);
        // SAFETY: `after` is a multiple of 64 in the region and free space (see above); the
        // record and the filler (our write position) are record starts in space reserved by
        // `try_reserve`/`wrap`, still ours until these stores publish them.
        unsafe {
            region.store_commit(after, pending(next), Ordering::Relaxed);
            region.store_commit(region.mask(record), seq, Ordering::Release);
            if may_pad && record != self.write {
                region.store_commit(region.mask(self.write), seq, Ordering::Release);
            }
        }
        self.write = end;
    }

    /// Marks our end closed (we drop): the consumer drains what we published, then sees
    /// `Disconnected`, until a new producer claims the slot.
    pub(crate) fn close(&self) {
        self.ring.close(self.lane.producer);
    }

    /// Our lane.
    pub(crate) fn lane(&self) -> Lane {
        self.lane
    }
}

/// The consumer's cursor. Exactly one exists per ring.
#[derive(Debug)]
pub(crate) struct SpscConsumer {
    ring: Arc<Ring>,
    /// The ring bytes (our own copy of the geometry, see [`Region`]).
    region: Region,
    /// Which slots and region this consumer uses.
    lane: Lane,
    /// The slot holding our read position and waiting hint (in `ring`'s control block, alive
    /// as long as `ring`).
    own: NonNull<EndSlot>,
    /// The producer's presence slot.
    producer: NonNull<EndSlot>,
    /// Our read position (we are its only writer).
    read: u64,
    /// Sequence number of the next message: the commit word the header at our read position
    /// holds once it is published (message or filler).
    sequence: u64,
    /// `sequence` minus the messages released through this cursor (see
    /// [`Self::released_messages`]).
    origin: u64,
    /// The sequence number expected when we last skipped a filler (`u64::MAX`: none yet): an
    /// honest producer never publishes two fillers in a row, so a second one with no message
    /// between them (the same expected number) is corruption, and cannot make a peek loop.
    filler_at: u64,
    /// We skipped a filler (and so released space) since the end layer last asked.
    released: bool,
    /// The first failed check, reported again by every later peek.
    corrupt: Option<&'static str>,
    /// The region's length while `corrupt` is `None`, 0 after a failed check: the fast peek's
    /// bound (a record must end at or before it), so that it needs no test of its own for an
    /// earlier corruption (no record ends at or before 0).
    fast_end: usize,
    /// Whether we store our read position into the waiting word around blocking waits: only
    /// where records large enough to restart at the region's start can arrive.
    announce_waits: bool,
    /// Bits kept in the position word we store when we skip a filler (a broadcast consumer's
    /// hold bit, see `broadcast.rs`; 0 otherwise). A release always stores the bare position.
    skip_bits: u64,
}

impl SpscConsumer {
    /// The consumer of a ring at read position `read`, expecting message `sequence` there.
    fn at(ring: Arc<Ring>, lane: Lane, read: u64, sequence: u64) -> Self {
        // Only an SPSC ring restarts large records (a lane of a multi-producer ring does not:
        // its consumer polls several lanes and says nothing about where it waits).
        let announce_waits = lane == Lane::SPSC
            && ring.topology() == Topology::Spsc
            && Rewind::consumer_announces(ring.region().len(), None);
        let region = ring.region_of(lane.region).clone();
        SpscConsumer {
            fast_end: region.len(),
            region,
            own: ring.slot_ptr(lane.reader),
            producer: ring.slot_ptr(lane.producer),
            lane,
            ring,
            read,
            sequence,
            origin: sequence,
            filler_at: u64::MAX,
            released: false,
            corrupt: None,
            announce_waits,
            skip_bits: 0,
        }
    }

    /// The consumer of a freshly created ring.
    pub(crate) fn new(ring: Arc<Ring>) -> Self {
        Self::at(ring, Lane::SPSC, 0, 0)
    }

    /// The consumer of one lane of a freshly created ring.
    pub(crate) fn new_lane(ring: Arc<Ring>, lane: Lane) -> Self {
        Self::at(ring, lane, 0, 0)
    }

    /// The consumer of a ring whose consumer slot this process just claimed: continues at the
    /// read position the last consumer stored (a message it was reading when it died is
    /// delivered again), expecting the sequence number that the commit word there says.
    pub(crate) fn recover(ring: Arc<Ring>) -> Result<Self, &'static str> {
        Self::recover_lane(ring, Lane::SPSC)
    }

    /// [`Self::recover`] for one lane of a ring.
    pub(crate) fn recover_lane(ring: Arc<Ring>, lane: Lane) -> Result<Self, &'static str> {
        let read = stored_read(&ring, lane)?;
        let region = ring.region_of(lane.region);
        let word = region.load_commit(region.mask(read), Ordering::Acquire);
        Ok(Self::at(
            ring,
            lane,
            read,
            word & !super::format::PENDING_BIT,
        ))
    }

    /// The consumer of one lane at read position `read` (a multiple of 64, already loaded and
    /// checked by the caller), expecting the sequence number the commit word there says.
    pub(crate) fn resume_lane(ring: Arc<Ring>, lane: Lane, read: u64) -> Self {
        debug_assert!(read.is_multiple_of(RECORD_ALIGN as u64));
        let region = ring.region_of(lane.region);
        let word = region.load_commit(region.mask(read), Ordering::Acquire);
        Self::at(ring, lane, read, word & !super::format::PENDING_BIT)
    }

    /// Messages published after our read position and not yet received: a snapshot, found by
    /// following commit words (at most one region; nothing is released or changed).
    pub(crate) fn waiting(&self) -> usize {
        if self.corrupt.is_some() {
            return 0;
        }
        follow(&self.region, self.read, self.sequence).messages
    }

    /// Our end slot.
    #[inline(always)]
    fn own(&self) -> &EndSlot {
        // SAFETY: a slot of `self.ring`'s control block, which lives as long as `self.ring`;
        // every field is an atomic.
        unsafe { self.own.as_ref() }
    }

    /// The producer's end slot.
    #[inline(always)]
    fn producer(&self) -> &EndSlot {
        // SAFETY: as in `own`.
        unsafe { self.producer.as_ref() }
    }

    /// Records of `record_size` bytes at most arrive here (a typed consumer): if they are too
    /// small to restart at the region's start, we need not say when we wait.
    pub(crate) fn expect_records_of(&mut self, record_size: usize) {
        self.announce_waits = self.lane == Lane::SPSC
            && self.ring.topology() == Topology::Spsc
            && Rewind::consumer_announces(self.region.len(), Some(record_size));
    }

    /// The ring.
    #[inline(always)]
    pub(crate) fn ring(&self) -> &Arc<Ring> {
        &self.ring
    }

    /// The parked word of the producer, to wake it after a release.
    #[inline(always)]
    pub(crate) fn peer_parked(&self) -> &Futex {
        &self.producer().presence.parked
    }

    /// Whether the producer end is gone (it may still have published messages we did not read).
    #[inline(always)]
    pub(crate) fn producer_closed(&self) -> bool {
        Ring::owner_closed(self.producer())
    }

    /// Whether we skipped a filler (released space) since the last call: the end layer then
    /// wakes the producer if it sleeps. Only the (cold) skip sets the flag, so the common case
    /// costs one test and no store.
    #[inline(always)]
    pub(crate) fn take_released(&mut self) -> bool {
        if self.released {
            self.released = false;
            return true;
        }
        false
    }

    /// The next published message, skipping (and releasing) at most one filler. Does not
    /// release it. A failed check returns `Corrupted`, leaves the read position where it was,
    /// and is returned by every later call.
    #[inline(always)]
    pub(crate) fn try_peek(&mut self) -> Result<Peeked, PeekError> {
        if let Some(what) = self.corrupt {
            return Err(PeekError::Corrupted(what));
        }
        let mut closed_seen = false;
        loop {
            match self.region.classify(self.read, self.sequence) {
                Slot::Message { len, size } => {
                    let header = self.region.at(self.region.mask(self.read));
                    return Ok(Peeked::new(header, len, self.read + size));
                }
                Slot::Filler { skip } => self.skip_filler(skip)?,
                Slot::Pending if closed_seen => return Err(PeekError::Disconnected),
                // The producer stores its closed flag after its last commit: once we see the
                // flag (`Acquire`), one more look finds anything it published.
                Slot::Pending if self.producer_closed() => closed_seen = true,
                Slot::Pending => return Err(PeekError::Empty),
                Slot::Corrupt(what) => return Err(self.corrupted(what)),
            }
        }
    }

    /// The common case of [`Self::try_peek`] for a consumer that expects every message to have
    /// a payload of exactly `expected` bytes and type id `type_id` (a typed consumer): a
    /// published message of that length and type with no flags that lies inside the region,
    /// checked in a few compares against constants. `None` for anything else (nothing
    /// published, a filler, another length or type, a failed check, an earlier corruption):
    /// the caller then calls [`Self::try_peek`], which reads and checks the header again from
    /// scratch. Changes nothing.
    #[inline(always)]
    pub(crate) fn try_peek_fast(&self, expected: u32, type_id: u64) -> Option<Peeked> {
        debug_assert_eq!(self.fast_end == 0, self.corrupt.is_some());
        let region = &self.region;
        let offset = region.mask(self.read);
        // Computed before the `Acquire` load, so that the base is not loaded again after it.
        let header = region.at(offset);
        if region.load_commit(offset, Ordering::Acquire) != self.sequence {
            return None;
        }
        let size = record_size_of(expected as usize);
        // `fast_end` is 0 after a failed check (sticky: `try_peek` reports it).
        if offset + size > self.fast_end {
            return None;
        }
        // SAFETY: published (the commit word holds our sequence number, acquired above).
        if !unsafe { region.header_is(offset, header, expected, type_id) } {
            return None;
        }
        region.tracker().read(offset, size);
        Some(Peeked::new(header, expected, self.read + size as u64))
    }

    /// The message published right after `prev`, which is the message at our read position
    /// (`nth == 1`) or the one returned by the previous call (`nth - 1`), without releasing or
    /// changing anything: a reader that hands several records to one system call peeks them
    /// all, then releases them in order. `None` when the next record is not a published
    /// message: nothing yet, a filler (skipped only at our read position), or a failed check
    /// (which [`Self::try_peek`] reports once the records before it are released).
    #[inline]
    pub(crate) fn try_peek_ahead(&self, prev: &Peeked, nth: u64) -> Option<Peeked> {
        if self.corrupt.is_some() {
            return None;
        }
        match self.region.classify(prev.end, self.sequence + nth) {
            Slot::Message { len, size } => {
                let header = self.region.at(self.region.mask(prev.end));
                Some(Peeked::new(header, len, prev.end + size))
            }
            _ => None,
        }
    }

    /// Skips (releases) a filler of `skip` bytes at our read position.
    #[cold]
    #[inline(never)]
    fn skip_filler(&mut self, skip: u64) -> Result<(), PeekError> {
        if self.filler_at == self.sequence {
            return Err(self.corrupted("two fillers in a row"));
        }
        self.filler_at = self.sequence;
        self.released = true;
        self.advance(self.read + skip, self.skip_bits);
        Ok(())
    }

    /// Our read position (the end of what we released).
    #[inline(always)]
    pub(crate) fn read_position(&self) -> u64 {
        self.read
    }

    /// Messages released through this cursor (from sequence numbers: no counter on the hot
    /// path; only [`Self::release`] moves `sequence`).
    pub(crate) fn released_messages(&self) -> u64 {
        self.sequence.wrapping_sub(self.origin)
    }

    /// Counts `released` messages as released through this cursor (a cursor that replaces
    /// another of the same end carries its count on).
    pub(crate) fn carry_released(&mut self, released: u64) {
        self.origin = self.sequence.wrapping_sub(released);
    }

    /// Bits to keep in the position word when a peek skips a filler (see `skip_bits`).
    pub(crate) fn keep_on_skip(&mut self, bits: u64) {
        debug_assert!(bits < RECORD_ALIGN as u64);
        self.skip_bits = bits;
    }

    /// Records a failed check.
    #[cold]
    fn corrupted(&mut self, what: &'static str) -> PeekError {
        self.corrupt = Some(what);
        self.fast_end = 0;
        PeekError::Corrupted(what)
    }

    /// Tells the producer whether we wait, inside a blocking receive and polling (not parked),
    /// at our read position (see [`Rewind`]).
    #[inline]
    pub(crate) fn set_waiting(&self, waiting: bool) {
        if self.announce_waits {
            let word = if waiting {
                self.read
            } else {
                Rewind::NOT_WAITING
            };
            self.own().cursor.waiting.store(word, Ordering::Relaxed);
        }
    }

    /// Releases the message [`Self::try_peek`] returned (everything before `end`). The caller
    /// then wakes the producer if it sleeps.
    #[inline(always)]
    pub(crate) fn release(&mut self, end: u64) {
        self.sequence += 1;
        self.advance(end, 0);
    }

    /// Moves our read position to `end` and publishes it, with `bits` (see `skip_bits`) in the
    /// low bits of the word (`Release`).
    #[inline(always)]
    fn advance(&mut self, end: u64, bits: u64) {
        debug_assert!(end > self.read && end - self.read <= self.region.len() as u64);
        debug_assert!(end.is_multiple_of(RECORD_ALIGN as u64));
        self.read = end;
        self.own()
            .cursor
            .position
            .store(end | bits, Ordering::Release);
    }

    /// Marks our end closed (we drop).
    pub(crate) fn close(&self) {
        self.set_waiting(false);
        self.ring.close(self.lane.consumer);
    }

    /// Our lane.
    pub(crate) fn lane(&self) -> Lane {
        self.lane
    }
}

// SAFETY: the slot pointers point into the control block of the ring the cursor holds (an
// `Arc`), which is `Send + Sync`; the cursor accesses them through atomics only.
unsafe impl Send for SpscProducer {}
// SAFETY: as above.
unsafe impl Send for SpscConsumer {}
