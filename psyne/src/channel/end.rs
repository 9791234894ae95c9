//! The end layer: the one place where ends block and time out, watch a peer in another
//! process, wake the other end, count, and turn cursor failures into the public errors.
//!
//! A [`Sender`] drives any [`SendCursor`], a [`Receiver`] any [`RecvCursor`]: the ring
//! protocols (`crate::ring`) only report `Full`/`Empty`, and the typed and raw ends of
//! `typed.rs` and `raw.rs` are thin wrappers that add what their message kind needs (a type, or
//! byte slices). Nothing here touches ring memory except through a cursor.

mod async_end;
pub(crate) use async_end::{await_peek, await_reserve};

pub(crate) use crate::wait::async_wait::AsyncPark;

use super::{RecvError, SendError};
use crate::ring::mpsc::MpscConsumer;
use crate::ring::spsc::{PeekError, ReserveError, SpscConsumer, SpscProducer};
use crate::ring::{ChannelIdentity, Peeked, ProcessStamp, Ring, WaitWords};
use crate::sync::Futex;
use crate::wait::{self, Notifier, PeerWatch, Wait, Waited};
use core::ops::Range;
use core::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long an operation may wait.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Patience {
    /// Not at all (`try_`).
    Never,
    /// Until it succeeds or the other end is gone.
    Forever,
    /// Until this instant.
    Until(Instant),
}

impl Patience {
    /// `Until(now + timeout)`, or `Forever` if that overflows.
    pub(crate) fn timeout(timeout: Duration) -> Self {
        match Instant::now().checked_add(timeout) {
            Some(t) => Patience::Until(t),
            None => Patience::Forever,
        }
    }
}

/// Counters of a sending end (`stats()` of [`Producer`](crate::Producer) and
/// [`RawProducer`](crate::RawProducer)).
///
/// Kept by the end itself, nothing counted through shared memory: `messages` is derived from its
/// cursors' sequence numbers and `wakeups` counted by its notifier when `stats()` is read.
/// Reading them synchronises nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProducerStats {
    /// Messages published.
    pub messages: u64,
    /// Payload bytes published (headers and padding not counted).
    pub bytes: u64,
    /// Times an allocation found the ring full (once per blocking call that had to wait, once per
    /// failed `try_` call).
    pub full: u64,
    /// Times this end went to sleep on its futex waiting for space.
    pub parked: u64,
    /// Wake-up system calls this end issued to a sleeping consumer.
    pub wakeups: u64,
}

/// Counters of a receiving end (`stats()` of [`Consumer`](crate::Consumer) and
/// [`RawConsumer`](crate::RawConsumer)).
///
/// Kept by the end itself, nothing counted through shared memory: `messages` is derived from its
/// cursors' sequence numbers and `wakeups` counted by its notifier when `stats()` is read.
/// Reading them synchronises nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerStats {
    /// Messages received and released.
    pub messages: u64,
    /// Payload bytes of those messages.
    pub bytes: u64,
    /// Times a receive found the ring empty (once per blocking call that had to wait, once per
    /// failed `try_` call).
    pub empty: u64,
    /// Times this end went to sleep on its futex waiting for a message.
    pub parked: u64,
    /// Wake-up system calls this end issued to a sleeping producer.
    pub wakeups: u64,
}

impl From<ReserveError> for SendError {
    #[inline]
    fn from(e: ReserveError) -> Self {
        match e {
            ReserveError::Full => SendError::Full,
            ReserveError::Disconnected => SendError::Disconnected,
            ReserveError::Corrupted(what) => SendError::Corrupted { what },
        }
    }
}

impl From<PeekError> for RecvError {
    #[inline]
    fn from(e: PeekError) -> Self {
        match e {
            PeekError::Empty => RecvError::Empty,
            PeekError::Disconnected => RecvError::Disconnected,
            PeekError::Corrupted(what) => RecvError::Corrupted { what },
            PeekError::Lagged => RecvError::Lagged,
        }
    }
}

/// What the end layer needs of a producer protocol.
pub(crate) trait SendCursor {
    /// Reserves a record (see [`SpscProducer::try_reserve`]).
    fn try_reserve(&mut self, len: usize, align: usize) -> Result<u64, ReserveError>;
    /// Whether a reservation published a filler on its own since the last call.
    fn take_published(&mut self) -> bool;
    /// Publishes the record reserved at `pos` (reserved with alignment `align`).
    fn commit(&mut self, pos: u64, len: usize, align: usize, type_id: u64, timestamp_ns: u64);
    /// Address of the payload of the record reserved at `pos`.
    fn payload(&self, pos: u64) -> NonNull<u8>;
    /// The ring.
    fn ring(&self) -> &Arc<Ring>;
    /// The parked word to wake after a publication.
    fn peer_parked(&self) -> &Futex;
    /// Our end slot (its parked word is where we sleep).
    fn own_slot(&self) -> usize;
    /// Whether every consumer is gone.
    fn is_disconnected(&self) -> bool;
    /// The end slots of the consumers, for liveness checks.
    fn peer_slots(&self) -> Range<usize>;
    /// Marks our end closed.
    fn close(&self);
    /// Messages this cursor published (its sequence numbers since it was made).
    fn published(&self) -> u64;
    /// After a publication: wakes every consumer that sleeps; returns the wake-up calls made.
    /// One consumer: its [`peer_parked`](Self::peer_parked) word (a broadcast producer wakes
    /// each of its consumers).
    #[inline(always)]
    fn notify_peers(&self, notifier: &mut Notifier) -> u64 {
        u64::from(notifier.notify(self.peer_parked()))
    }
    /// When our end drops: wakes every consumer that sleeps, without rate limit.
    fn notify_peers_final(&self, notifier: &mut Notifier) {
        notifier.notify_final(self.peer_parked());
    }
    /// Whether a waiting producer must try again at least every
    /// [`PEER_POLL`](crate::wait::PEER_POLL) even when nobody wakes it (as for a peer in
    /// another process): a broadcast producer that cuts off lagging consumers after a time.
    fn polls_while_waiting(&self) -> bool {
        false
    }
}

/// What the end layer needs of a consumer protocol.
pub(crate) trait RecvCursor {
    /// The next published message, not released.
    fn try_peek(&mut self) -> Result<Peeked, PeekError>;
    /// For a consumer that expects payloads of exactly `expected` bytes and type id `type_id`:
    /// the next message if it is a published message of that length and type that the cursor
    /// can check quickly, else `None`
    /// (then [`Self::try_peek`] decides). Changes nothing.
    #[inline(always)]
    fn try_peek_fast(&mut self, expected: u32, type_id: u64) -> Option<Peeked> {
        let _ = (expected, type_id);
        None
    }
    /// The lanes (one bit each) in which a peek released space (skipped a filler) since the
    /// last call.
    fn take_released(&mut self) -> u64;
    /// The parked word of the producer of lane `lane`, to wake after a release there.
    fn lane_parked(&self, lane: usize) -> &Futex;
    /// The cursor of lane `lane` (which releases the messages peeked from it).
    fn lane_mut(&mut self, lane: usize) -> &mut SpscConsumer;
    /// Says whether we wait in a blocking receive (see the ring's large-record restart).
    fn set_waiting(&self, waiting: bool);
    /// The ring.
    fn ring(&self) -> &Arc<Ring>;
    /// Our end slot (its parked word is where we sleep).
    fn own_slot(&self) -> usize;
    /// Whether the producers are gone.
    fn peer_closed(&self) -> bool;
    /// Messages waiting (a snapshot).
    fn waiting(&self) -> usize;
    /// The end slots of the producers, for liveness checks.
    fn peer_slots(&self) -> Range<usize>;
    /// Marks our end closed.
    fn close(&self);
    /// Messages released through this cursor, every lane (from sequence numbers).
    fn released(&self) -> u64;
}

impl SendCursor for SpscProducer {
    #[inline(always)]
    fn try_reserve(&mut self, len: usize, align: usize) -> Result<u64, ReserveError> {
        SpscProducer::try_reserve(self, len, align)
    }
    #[inline(always)]
    fn take_published(&mut self) -> bool {
        SpscProducer::take_published(self)
    }
    #[inline(always)]
    fn commit(&mut self, pos: u64, len: usize, align: usize, type_id: u64, timestamp_ns: u64) {
        SpscProducer::commit(self, pos, len, align, type_id, timestamp_ns)
    }
    #[inline(always)]
    fn payload(&self, pos: u64) -> NonNull<u8> {
        SpscProducer::payload(self, pos)
    }
    #[inline(always)]
    fn ring(&self) -> &Arc<Ring> {
        SpscProducer::ring(self)
    }
    #[inline(always)]
    fn peer_parked(&self) -> &Futex {
        SpscProducer::peer_parked(self)
    }
    fn own_slot(&self) -> usize {
        self.lane().producer
    }
    #[inline(always)]
    fn is_disconnected(&self) -> bool {
        SpscProducer::is_disconnected(self)
    }
    fn peer_slots(&self) -> Range<usize> {
        let consumer = self.lane().consumer;
        consumer..consumer + 1
    }
    fn close(&self) {
        SpscProducer::close(self)
    }
    fn published(&self) -> u64 {
        SpscProducer::published(self)
    }
}

impl RecvCursor for SpscConsumer {
    #[inline(always)]
    fn try_peek(&mut self) -> Result<Peeked, PeekError> {
        SpscConsumer::try_peek(self)
    }
    #[inline(always)]
    fn try_peek_fast(&mut self, expected: u32, type_id: u64) -> Option<Peeked> {
        SpscConsumer::try_peek_fast(self, expected, type_id)
    }
    #[inline(always)]
    fn take_released(&mut self) -> u64 {
        u64::from(SpscConsumer::take_released(self))
    }
    #[inline(always)]
    fn lane_parked(&self, _lane: usize) -> &Futex {
        self.peer_parked()
    }
    #[inline(always)]
    fn lane_mut(&mut self, _lane: usize) -> &mut SpscConsumer {
        self
    }
    #[inline(always)]
    fn set_waiting(&self, waiting: bool) {
        SpscConsumer::set_waiting(self, waiting)
    }
    #[inline(always)]
    fn ring(&self) -> &Arc<Ring> {
        SpscConsumer::ring(self)
    }
    fn own_slot(&self) -> usize {
        self.lane().consumer
    }
    #[inline(always)]
    fn peer_closed(&self) -> bool {
        self.producer_closed()
    }
    fn waiting(&self) -> usize {
        SpscConsumer::waiting(self)
    }
    fn peer_slots(&self) -> Range<usize> {
        let producer = self.lane().producer;
        producer..producer + 1
    }
    fn close(&self) {
        SpscConsumer::close(self)
    }
    fn released(&self) -> u64 {
        self.released_messages()
    }
}

impl RecvCursor for MpscConsumer {
    #[inline(always)]
    fn try_peek(&mut self) -> Result<Peeked, PeekError> {
        MpscConsumer::try_peek(self)
    }
    #[inline(always)]
    fn try_peek_fast(&mut self, expected: u32, type_id: u64) -> Option<Peeked> {
        MpscConsumer::try_peek_fast(self, expected, type_id)
    }
    #[inline(always)]
    fn take_released(&mut self) -> u64 {
        MpscConsumer::take_released(self)
    }
    #[inline(always)]
    fn lane_parked(&self, lane: usize) -> &Futex {
        self.producer_parked(lane)
    }
    #[inline(always)]
    fn lane_mut(&mut self, lane: usize) -> &mut SpscConsumer {
        MpscConsumer::lane_mut(self, lane)
    }
    fn set_waiting(&self, _waiting: bool) {}
    fn ring(&self) -> &Arc<Ring> {
        MpscConsumer::ring(self)
    }
    fn own_slot(&self) -> usize {
        crate::ring::mpsc::consumer_slot(self.producers())
    }
    fn peer_closed(&self) -> bool {
        self.producers_closed()
    }
    fn waiting(&self) -> usize {
        MpscConsumer::waiting(self)
    }
    fn peer_slots(&self) -> Range<usize> {
        0..self.producers()
    }
    fn close(&self) {
        MpscConsumer::close(self)
    }
    fn released(&self) -> u64 {
        self.released_messages()
    }
}

/// Liveness of a process recorded in a control block (the shared-memory transport's check).
fn alive(p: ProcessStamp) -> bool {
    crate::transport::shm::process_alive(p)
}

/// If the ring is shared and a check is due (see [`PeerWatch`]), checks that the processes of
/// the peers in `slots` are alive; a dead one is marked closed, so that the next attempt reports
/// `Disconnected` (after draining, for a consumer).
#[cold]
fn check_peers(ring: &Ring, slots: Range<usize>, watch: &mut PeerWatch) {
    if ring.is_shared() && watch.due() {
        for slot in slots {
            ring.close_if_dead(slot, alive);
        }
    }
}

/// Per-end facts shared by both directions.
#[derive(Debug)]
pub(crate) struct Common {
    /// How this end waits (the ring's strategy).
    wait: Wait,
    /// Wakes the other end.
    notifier: Notifier,
    /// Throttle of liveness checks of a peer in another process.
    watch: PeerWatch,
    /// Payload bytes published (a sending end) or released (a receiving end): the `bytes`
    /// counter, kept here so that a received message's release handle reaches it through the
    /// same reference as the notifier.
    bytes: u64,
    /// How many polls a wait of this end spins before it yields (`wait::wait_for` adapts it).
    spin_budget: u32,
    /// The slab's device address, asked of the driver once (`None`: not CUDA-registered).
    #[cfg(feature = "cuda")]
    cuda_base: Option<u64>,
}

impl Common {
    fn new(ring: &Ring) -> Self {
        let words: WaitWords = ring.wait_words();
        Common {
            wait: Wait::from_words(words),
            notifier: Notifier::new(words.park, ring.is_shared()),
            watch: PeerWatch::default(),
            bytes: 0,
            spin_budget: words.spins,
            // Only a registered slab has a device address (asking an unregistered one builds an
            // error message: an allocation that `subscribe` and reopening ends must not make).
            #[cfg(feature = "cuda")]
            cuda_base: match ring.slab().cuda_context() {
                Some(_) => ring.slab().cuda_device_ptr().ok(),
                None => None,
            },
        }
    }

    /// The device address of `ptr`, a byte of `ring`'s slab.
    #[cfg(feature = "cuda")]
    fn cuda_device_ptr(&self, ring: &Ring, ptr: NonNull<u8>) -> Result<u64, crate::SlabError> {
        let slab = ring.slab();
        let offset = (ptr.as_ptr() as usize).wrapping_sub(slab.as_ptr().as_ptr() as usize);
        debug_assert!(offset < slab.len());
        match self.cuda_base {
            Some(device) => Ok(device + offset as u64),
            None => Ok(slab.cuda_device_ptr()? + offset as u64),
        }
    }
}

/// The sending end over a producer cursor.
#[derive(Debug)]
pub(crate) struct Sender<C: SendCursor> {
    cursor: C,
    common: Common,
    /// Stamp headers with send times.
    timestamps: bool,
    stats: ProducerStats,
}

impl<C: SendCursor> Sender<C> {
    /// The end over `cursor`.
    pub(crate) fn new(cursor: C) -> Self {
        let common = Common::new(cursor.ring());
        let timestamps = cursor.ring().timestamps();
        Sender {
            cursor,
            common,
            timestamps,
            stats: ProducerStats::default(),
        }
    }

    /// Region length in bytes.
    #[inline(always)]
    pub(crate) fn region_len(&self) -> usize {
        self.cursor.ring().region().len()
    }

    /// The cursor.
    pub(crate) fn cursor(&self) -> &C {
        &self.cursor
    }

    /// This end's counters (`messages` from the cursor's sequence numbers).
    pub(crate) fn stats(&self) -> ProducerStats {
        ProducerStats {
            messages: self.cursor.published(),
            bytes: self.common.bytes,
            wakeups: self.common.notifier.calls(),
            ..self.stats
        }
    }

    /// Whether every consumer is gone; for a shared ring this checks their processes first.
    pub(crate) fn is_disconnected(&self) -> bool {
        check_peers(
            self.cursor.ring(),
            self.cursor.peer_slots(),
            &mut PeerWatch::default(),
        );
        self.cursor.is_disconnected()
    }

    /// Reserves a record, waiting as `patience` allows. `len`/`align` must have been validated.
    #[inline(always)]
    pub(crate) fn reserve(
        &mut self,
        len: usize,
        align: usize,
        patience: Patience,
    ) -> Result<u64, SendError> {
        match self.cursor.try_reserve(len, align) {
            Ok(pos) => Ok(pos),
            Err(ReserveError::Full) => self.reserve_slow(len, align, patience),
            Err(e) => Err(e.into()),
        }
    }

    /// [`Self::reserve`] after the ring was found full.
    #[inline(never)]
    fn reserve_slow(
        &mut self,
        len: usize,
        align: usize,
        patience: Patience,
    ) -> Result<u64, SendError> {
        self.stats.full += 1;
        // A wrap filler published before the ring was found full is a publication the consumer
        // may be asleep waiting for: wake it before we wait for it in turn.
        self.wake_after_filler();
        let ring = Arc::clone(self.cursor.ring());
        let deadline = match patience {
            Patience::Never if !ring.is_shared() => return Err(SendError::Full),
            Patience::Never => {
                // A consumer in another process may have died: say so rather than `Full`.
                check_peers(&ring, self.cursor.peer_slots(), &mut self.common.watch);
                return Err(if self.cursor.is_disconnected() {
                    SendError::Disconnected
                } else {
                    SendError::Full
                });
            }
            Patience::Forever => None,
            Patience::Until(t) => Some(t),
        };
        let slots = self.cursor.peer_slots();
        let poll = ring.is_shared() || self.cursor.polls_while_waiting();
        let cursor = &mut self.cursor;
        let watch = &mut self.common.watch;
        let notifier = &mut self.common.notifier;
        let mut check = || check_peers(&ring, slots.clone(), watch);
        let mut parks = 0;
        // Our parked word lives in the ring (kept alive by the clone `ring`), not in the cursor,
        // which the attempt closure borrows mutably.
        let parked: &Futex = ring.parked(cursor.own_slot());
        let budget = &mut self.common.spin_budget;
        let waited = wait::wait_for(
            self.common.wait,
            deadline,
            parked,
            || parks += 1,
            budget,
            if poll {
                Some(&mut check as &mut dyn FnMut())
            } else {
                None
            },
            || {
                let r = cursor.try_reserve(len, align);
                if cursor.take_published() {
                    cursor.notify_peers(notifier);
                }
                match r {
                    Ok(pos) => Some(Ok(pos)),
                    Err(ReserveError::Full) => None,
                    Err(e) => Some(Err(e.into())),
                }
            },
        );
        self.stats.parked += parks;
        match waited {
            Waited::Ready(r) => r,
            Waited::TimedOut => Err(SendError::Timeout),
        }
    }

    /// Wakes the consumer if a reservation published a filler on its own since the last check.
    #[cold]
    fn wake_after_filler(&mut self) {
        if self.cursor.take_published() {
            self.cursor.notify_peers(&mut self.common.notifier);
        }
    }

    /// Publishes the record reserved at `pos` (with alignment `align`, as reserved) and wakes
    /// the consumer if it sleeps.
    #[inline(always)]
    pub(crate) fn commit(&mut self, pos: u64, len: usize, align: usize, type_id: u64) {
        let ts = if self.timestamps {
            super::monotonic_ns()
        } else {
            0
        };
        self.cursor.commit(pos, len, align, type_id, ts);
        // `messages` is the cursor's sequence numbers (see `stats`).
        self.common.bytes += len as u64;
        // The notifier counts its wake-up calls (`wakeups`).
        self.cursor.notify_peers(&mut self.common.notifier);
    }

    /// Address of the payload of the record reserved at `pos`.
    #[inline(always)]
    pub(crate) fn payload(&self, pos: u64) -> NonNull<u8> {
        self.cursor.payload(pos)
    }

    /// The device address of `ptr`, a byte of this channel's slab (feature `cuda`).
    #[cfg(feature = "cuda")]
    pub(crate) fn cuda_device_ptr(&self, ptr: NonNull<u8>) -> Result<u64, crate::SlabError> {
        self.common.cuda_device_ptr(self.cursor.ring(), ptr)
    }
}

impl Sender<SpscProducer> {
    /// Room for up to `count` records of `len`-byte payloads back to back, if there is room now
    /// for two or more before the region's end (see [`SpscProducer::try_reserve_run`]): their
    /// position and number; commit them in order with [`Self::commit`], record `i` at
    /// `pos + i * record_size_of(len)`. `len` and `count` must have been validated (their
    /// total fits the ring's largest payload).
    pub(crate) fn try_reserve_run(&mut self, len: usize, count: usize) -> Option<(u64, usize)> {
        self.cursor.try_reserve_run(len, count).ok()
    }
}

impl<C: SendCursor> Drop for Sender<C> {
    fn drop(&mut self) {
        self.cursor.close();
        self.cursor.notify_peers_final(&mut self.common.notifier);
    }
}

/// What a [`Source`] did in one [`Source::pull`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pulled {
    /// It published at least one message into the ring.
    Published,
    /// Nothing yet: the wait ended (or there was no room to publish into).
    Nothing,
    /// The source is over (connection closed or broken): it has dropped its producer of the
    /// ring, whose consumer sees `Disconnected` once the ring is drained.
    Ended,
}

/// What fills a receiving end's ring inside the consumer's own calls, where no other thread
/// does: a TCP receiver reads its socket when the consumer finds its ring empty (see
/// `crate::transport::net`), so a message crosses no thread between the kernel and the user.
pub(crate) trait Source: Send {
    /// Moves what has arrived into the ring, waiting for it as `patience` allows; called only
    /// with the ring empty.
    fn pull(&mut self, patience: Patience) -> Pulled;
    /// Whether the peer is gone (a check that does not wait).
    fn peer_gone(&self) -> bool;
    /// Hands the source to a thread of its own that fills the ring from now on (for the async
    /// waits, whose wake-ups come from the ring's producer). A source that cannot get its
    /// thread drops its producer (the consumer then sees `Disconnected`).
    fn detach(self: Box<Self>);
}

/// The receiving end over a consumer cursor.
pub(crate) struct Receiver<C: RecvCursor> {
    cursor: C,
    common: Common,
    /// `recv` spins in place ([`Wait::BusySpin`], both ends in this process).
    spin_here: bool,
    stats: ConsumerStats,
    /// Fills the ring in this end's calls when no thread does (a TCP receiver).
    source: Option<Box<dyn Source>>,
}

impl<C: RecvCursor + core::fmt::Debug> core::fmt::Debug for Receiver<C> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Receiver")
            .field("cursor", &self.cursor)
            .field("common", &self.common)
            .field("spin_here", &self.spin_here)
            .field("stats", &self.stats)
            .field("source", &self.source.is_some())
            .finish()
    }
}

impl<C: RecvCursor> Receiver<C> {
    /// The end over `cursor`.
    pub(crate) fn new(cursor: C) -> Self {
        let common = Common::new(cursor.ring());
        let spin_here = matches!(common.wait, Wait::BusySpin) && !cursor.ring().is_shared();
        Receiver {
            cursor,
            common,
            spin_here,
            stats: ConsumerStats::default(),
            source: None,
        }
    }

    /// Makes `source` fill this end's ring in its own calls (its waits then read the source,
    /// never spin in place).
    pub(crate) fn set_source(&mut self, source: Box<dyn Source>) {
        self.spin_here = false;
        self.source = Some(source);
    }

    /// Hands the source, if any, to a thread of its own (before an async wait).
    #[cold]
    pub(crate) fn detach_source(&mut self) {
        if let Some(s) = self.source.take() {
            s.detach();
        }
    }

    /// The cursor.
    pub(crate) fn cursor_mut(&mut self) -> &mut C {
        &mut self.cursor
    }

    /// Region length in bytes.
    #[inline(always)]
    pub(crate) fn region_len(&self) -> usize {
        self.cursor.ring().region().len()
    }

    /// Messages waiting (a snapshot).
    pub(crate) fn cursor_len(&self) -> usize {
        self.cursor.waiting()
    }

    /// This end's counters (`messages` from the cursors' sequence numbers).
    pub(crate) fn stats(&self) -> ConsumerStats {
        ConsumerStats {
            messages: self.cursor.released(),
            bytes: self.common.bytes,
            wakeups: self.common.notifier.calls(),
            ..self.stats
        }
    }

    /// Whether the producers are gone (messages they published may still be waiting); for a
    /// shared ring this checks their processes first.
    pub(crate) fn is_disconnected(&self) -> bool {
        if let Some(s) = &self.source {
            return s.peer_gone();
        }
        check_peers(
            self.cursor.ring(),
            self.cursor.peer_slots(),
            &mut PeerWatch::default(),
        );
        self.cursor.peer_closed()
    }

    /// One non-blocking attempt, waking the producer if a filler skip released space.
    #[inline(always)]
    fn attempt(&mut self) -> Result<Peeked, PeekError> {
        let r = self.cursor.try_peek();
        let released = self.cursor.take_released();
        if released != 0 {
            wake_lanes(&self.cursor, &mut self.common.notifier, released);
        }
        r
    }

    /// A typed consumer's common case (its payload length is a constant): the next message if
    /// the cursor's fast check finds one of exactly the expected type and length (then checked
    /// for alignment), else `None` and nothing changed (the general attempt decides). Nothing
    /// is skipped on this path, so no producer needs waking.
    #[inline(always)]
    pub(crate) fn peek_expected_fast(
        &mut self,
        expected: Option<&ChannelIdentity>,
    ) -> Option<Result<Peeked, RecvError>> {
        let e = expected?;
        let layout = e.payload?;
        let size = u32::try_from(layout.size).ok()?;
        let peeked = self.cursor.try_peek_fast(size, e.type_id)?;
        // Type id and length checked by the cursor; only a larger alignment needs a look.
        Some(check_alignment(peeked, layout.align))
    }

    /// The next message, waiting as `patience` allows; for a typed consumer, `expected` is
    /// checked against the record (type id, length, payload alignment: `Corrupted` if they
    /// disagree, and the record stays unreleased).
    #[inline(always)]
    pub(crate) fn peek(
        &mut self,
        patience: Patience,
        expected: Option<&ChannelIdentity>,
    ) -> Result<Peeked, RecvError> {
        if let Some(r) = self.peek_expected_fast(expected) {
            return r;
        }
        let peeked = match self.attempt() {
            Ok(p) => p,
            Err(PeekError::Empty) if self.spin_here && matches!(patience, Patience::Forever) => {
                self.spin_forever()?
            }
            Err(PeekError::Empty) => self.peek_slow(patience)?,
            Err(e) => return Err(e.into()),
        };
        check_expected(peeked, expected)
    }

    /// [`Self::peek`] for a consumer that expects, without requiring it, a payload of `len`
    /// bytes and type id `type_id` (a tensor consumer: those of its last tensor): such a
    /// record is taken by the cursor's fast check, as a typed consumer's is, and comes with
    /// `true` (its header held `len` and `type_id` when checked); any other by the general
    /// path, as with no expectation, with `false`.
    #[inline(always)]
    pub(crate) fn peek_likely(
        &mut self,
        patience: Patience,
        len: u32,
        type_id: u64,
    ) -> Result<(Peeked, bool), RecvError> {
        // As in `peek`: nothing was skipped (no producer to wake); the record holds exactly
        // `len` bytes, aligned to 64 as every record is.
        if let Some(peeked) = self.cursor.try_peek_fast(len, type_id) {
            return Ok((peeked, true));
        }
        self.peek_general(patience).map(|p| (p, false))
    }

    /// [`Self::peek`] without an expectation, out of line: [`Self::peek_likely`]'s other
    /// records (a new shape: checked in full after this anyway). Kept out of the fast path so
    /// that its result, returned through memory, does not make the fast path's go there too.
    #[inline(never)]
    fn peek_general(&mut self, patience: Patience) -> Result<Peeked, RecvError> {
        self.peek(patience, None)
    }

    /// [`Self::peek`] after the ring was found empty.
    #[inline(never)]
    fn peek_slow(&mut self, patience: Patience) -> Result<Peeked, RecvError> {
        self.stats.empty += 1;
        if self.source.is_some() {
            return self.pull_slow(patience);
        }
        let ring = Arc::clone(self.cursor.ring());
        let deadline = match patience {
            Patience::Never if !ring.is_shared() => return Err(RecvError::Empty),
            Patience::Never => {
                // A producer in another process may have died: say so rather than `Empty` once
                // everything it published is received.
                check_peers(&ring, self.cursor.peer_slots(), &mut self.common.watch);
                return self.attempt().map_err(RecvError::from);
            }
            Patience::Forever => None,
            Patience::Until(t) => Some(t),
        };
        let slots = self.cursor.peer_slots();
        let own = self.cursor.own_slot();
        let parked: &Futex = ring.parked(own);
        let strategy = self.common.wait;
        let watch = &mut self.common.watch;
        let mut check = || check_peers(&ring, slots.clone(), watch);
        let mut parks = 0;
        let cursor = &mut self.cursor;
        let notifier = &mut self.common.notifier;
        let budget = &mut self.common.spin_budget;
        cursor.set_waiting(true);
        let waited = wait::wait_for(
            strategy,
            deadline,
            parked,
            || {
                // A parked consumer would skip a restart filler only after a futex wake-up:
                // stop saying we wait (see the ring's large-record restart).
                ring.stop_waiting(own);
                parks += 1;
            },
            budget,
            if ring.is_shared() {
                Some(&mut check as &mut dyn FnMut())
            } else {
                None
            },
            || {
                let r = cursor.try_peek();
                let released = cursor.take_released();
                if released != 0 {
                    wake_lanes(&*cursor, notifier, released);
                }
                match r {
                    Ok(p) => Some(Ok(p)),
                    Err(PeekError::Empty) => None,
                    Err(e) => Some(Err(e.into())),
                }
            },
        );
        self.cursor.set_waiting(false);
        self.stats.parked += parks;
        match waited {
            Waited::Ready(r) => r,
            Waited::TimedOut => Err(RecvError::Timeout),
        }
    }

    /// [`Self::peek_slow`] with a source: the source fills the ring in this call, waiting as
    /// `patience` allows, until the ring holds a message or the source is over.
    fn pull_slow(&mut self, patience: Patience) -> Result<Peeked, RecvError> {
        // `try_recv`: a second pull after an attempt, in case the first found no room only
        // because of a wrap filler (which that attempt skips).
        let mut tries = 0;
        loop {
            let Some(source) = self.source.as_mut() else {
                // Over: what it published is received first, then `Disconnected`.
                return self.attempt().map_err(RecvError::from);
            };
            match source.pull(patience) {
                Pulled::Published => {}
                Pulled::Nothing => match patience {
                    Patience::Never if tries == 1 => return Err(RecvError::Empty),
                    Patience::Never => tries += 1,
                    Patience::Until(t) if Instant::now() >= t => return Err(RecvError::Timeout),
                    _ => {}
                },
                Pulled::Ended => self.source = None,
            }
            match self.attempt() {
                Ok(p) => return Ok(p),
                Err(PeekError::Empty) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// `recv` on a busy-spinning, in-process ring: polls until a message comes, with nothing
    /// else in the loop (no deadline, no peer to watch, never parks), as a caller's own loop of
    /// `try_recv` and `spin_loop` would.
    #[inline(always)]
    fn spin_forever(&mut self) -> Result<Peeked, RecvError> {
        self.stats.empty += 1;
        self.cursor.set_waiting(true);
        let r = loop {
            match self.attempt() {
                Ok(p) => break Ok(p),
                Err(PeekError::Empty) => crate::sync::spin_loop(),
                Err(e) => break Err(e.into()),
            }
        };
        self.cursor.set_waiting(false);
        r
    }

    /// What releasing `peeked` needs, borrowed from this end: its lane's cursor, the counters
    /// and the notifier (so that a received message holds no reference to the consumer kind).
    #[inline(always)]
    pub(crate) fn release_handle(&mut self, peeked: &Peeked) -> Release<'_> {
        let Receiver { cursor, common, .. } = self;
        Release {
            lane: cursor.lane_mut(peeked.lane() as usize),
            common,
        }
    }
}

impl<C: RecvCursor> Drop for Receiver<C> {
    fn drop(&mut self) {
        self.cursor.close();
        for lane in self.cursor.peer_slots() {
            self.common
                .notifier
                .notify_final(self.cursor.lane_parked(lane));
        }
    }
}

/// What a received message needs to give its record back: the cursor of the lane it came
/// from, the end's counters and notifier. The same type for every consumer kind.
#[derive(Debug)]
pub(crate) struct Release<'a> {
    lane: &'a mut SpscConsumer,
    common: &'a mut Common,
}

impl Release<'_> {
    /// Releases `peeked` (counted as received now) and wakes its producer if it sleeps.
    #[inline(always)]
    pub(crate) fn release(&mut self, peeked: &Peeked) {
        // `messages` is the cursors' sequence numbers (see `Receiver::stats`).
        self.lane.release(peeked.end);
        self.common.bytes += u64::from(peeked.len());
        // The notifier counts its wake-up calls (`wakeups`).
        self.common.notifier.notify(self.lane.peer_parked());
    }

    /// The device address of `ptr`, a byte of this channel's slab (feature `cuda`).
    #[cfg(feature = "cuda")]
    pub(crate) fn cuda_device_ptr(&self, ptr: NonNull<u8>) -> Result<u64, crate::SlabError> {
        self.common.cuda_device_ptr(self.lane.ring(), ptr)
    }
}

/// Wakes the producers of the lanes in `released` (bits) if they sleep (the notifier counts
/// the calls).
#[cold]
#[inline(never)]
fn wake_lanes<C: RecvCursor>(cursor: &C, notifier: &mut Notifier, mut released: u64) {
    while released != 0 {
        let lane = released.trailing_zeros() as usize;
        released &= released - 1;
        notifier.notify(cursor.lane_parked(lane));
    }
}

/// `peeked` if it is what a typed consumer expects (`expected`: type id, length, payload
/// alignment), else `Corrupted` (and the record stays unreleased).
#[inline(always)]
fn check_expected(peeked: Peeked, expected: Option<&ChannelIdentity>) -> Result<Peeked, RecvError> {
    if let Some(e) = expected
        && let Some(layout) = e.payload
    {
        let type_id = peeked.type_id();
        if type_id != e.type_id || peeked.len() as usize != layout.size {
            return Err(unexpected(type_id, e));
        }
        return check_alignment(peeked, layout.align);
    }
    Ok(peeked)
}

/// `peeked` if its payload is aligned to `align`, else `Corrupted` (and the record stays
/// unreleased). Payloads are 64-byte aligned by construction (record starts are multiples of 64
/// and the region's base is 32 modulo 64): only larger alignments need a look.
#[inline(always)]
fn check_alignment(peeked: Peeked, align: usize) -> Result<Peeked, RecvError> {
    if align > crate::ring::RECORD_ALIGN
        && !(peeked.payload().as_ptr() as usize).is_multiple_of(align)
    {
        return Err(RecvError::Corrupted {
            what: "payload misaligned for the message type",
        });
    }
    Ok(peeked)
}

/// The error for a record whose type id (`type_id`) or length a typed consumer (`e`) did not
/// expect.
#[cold]
fn unexpected(type_id: u64, e: &ChannelIdentity) -> RecvError {
    RecvError::Corrupted {
        what: if type_id != e.type_id {
            "header type id differs from the channel's"
        } else {
            "header length differs from the message size"
        },
    }
}
