//! Raw ends: any message types and raw byte payloads over one ring. The typed ends wrap these.

use super::{Loan, Patience, RecvError, SendError, monotonic_ns};
use crate::message::{Message, MessageHeader};
use crate::ring::{
    self, ConsumerStats, MAX_ALIGN, PeekError, Peeked, Positions, ProducerStats, ReserveError,
    Ring, RingConsumer, RingProducer,
};
use crate::transport::shm::process_alive;
use crate::wait::{self, PeerWatch, Waited};
use core::fmt;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;
use core::time::Duration;
use std::sync::Arc;

/// Both raw ends of a freshly initialised ring.
pub(crate) fn pair(ring: Arc<Ring>, timestamps: bool) -> (RawProducer, RawConsumer) {
    (
        RawProducer::new(Arc::clone(&ring), Positions::default(), timestamps),
        RawConsumer::new(ring, Positions::default()),
    )
}

/// If `ring`'s other end lives in another process and a check is due (see [`PeerWatch`]),
/// checks that the process is alive; if it died without detaching, marks its end closed, so
/// that the next attempt reports `Disconnected` (after draining, for a consumer).
///
/// An end with pid 0 that is not closed has not attached yet (or is detaching): alive.
#[cold]
fn check_peer(ring: &Ring, watch: &mut PeerWatch) {
    if let Some(end) = ring.remote()
        && watch.due()
    {
        let (stamp, closed) = ring.end_state(end);
        if !closed && stamp.pid != 0 && !process_alive(stamp) {
            ring.mark_closed(end);
        }
    }
}

/// The sending end of a raw channel: sends any [`Message`] type in place ([`allocate`]) or raw
/// bytes ([`allocate_bytes`], [`send_bytes`]), each tagged with a type id.
///
/// [`allocate`]: RawProducer::allocate
/// [`allocate_bytes`]: RawProducer::allocate_bytes
/// [`send_bytes`]: RawProducer::send_bytes
pub struct RawProducer {
    inner: RingProducer,
    timestamps: bool,
    /// Counter: times found full.
    full: u64,
    /// Counter: times parked.
    parked: u64,
    /// Throttle of liveness checks of a consumer in another process.
    watch: PeerWatch,
}

impl RawProducer {
    /// The producer end of `ring`, starting at `positions`.
    pub(crate) fn new(ring: Arc<Ring>, positions: Positions, timestamps: bool) -> Self {
        RawProducer {
            inner: RingProducer::new(ring, positions),
            timestamps,
            full: 0,
            parked: 0,
            watch: PeerWatch::default(),
        }
    }

    /// The largest payload this channel takes, in bytes (the ring size minus the 32-byte header).
    pub fn max_payload(&self) -> usize {
        (self.inner.ring().len() - MessageHeader::SIZE).min(u32::MAX as usize)
    }

    /// Size of the ring in bytes.
    pub fn capacity_bytes(&self) -> usize {
        self.inner.ring().len()
    }

    /// Whether the consumer is gone (a later allocation then fails with `Disconnected`).
    ///
    /// For a shared channel this also checks whether the consumer's process died (a system
    /// call and a read of `/proc`: not for a hot loop).
    pub fn is_disconnected(&self) -> bool {
        check_peer(self.inner.ring(), &mut PeerWatch::default());
        self.inner.is_disconnected()
    }

    /// This end's counters.
    pub fn stats(&self) -> ProducerStats {
        ProducerStats {
            full: self.full,
            parked: self.parked,
            ..self.inner.stats
        }
    }

    /// Reserves a record, waiting as `patience` allows. `len`/`align` must have been validated.
    #[inline]
    pub(crate) fn reserve(
        &mut self,
        len: usize,
        align: usize,
        patience: Patience,
    ) -> Result<u64, SendError> {
        match self.inner.try_reserve(len, align) {
            Ok(pos) => Ok(pos),
            Err(ReserveError::Disconnected) => Err(SendError::Disconnected),
            Err(ReserveError::Corrupted(what)) => Err(SendError::Corrupted { what }),
            Err(ReserveError::Full) => self.reserve_slow(len, align, patience),
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
        self.full += 1;
        let deadline = match patience {
            Patience::Never if self.inner.ring().remote().is_none() => return Err(SendError::Full),
            Patience::Never => {
                // A consumer in another process may have died: say so rather than `Full`.
                check_peer(self.inner.ring(), &mut self.watch);
                return Err(if self.inner.is_disconnected() {
                    SendError::Disconnected
                } else {
                    SendError::Full
                });
            }
            Patience::Forever => None,
            Patience::Until(t) => Some(t),
        };
        // SAFETY: `inner` owns an `Arc` of the ring, so the ring outlives this function; the
        // closure below borrows `inner` (the `RingProducer`) mutably, not the `Ring` it points
        // to, which is only ever accessed through shared references.
        let ring: &Ring = unsafe { &*Arc::as_ptr(self.inner.ring_arc()) };
        let strategy = ring.wait();
        let inner = &mut self.inner;
        let watch = &mut self.watch;
        let mut check = || check_peer(ring, watch);
        let mut parks = 0;
        let waited = wait::wait_for(
            strategy,
            deadline,
            ring.producer_parked(),
            || parks += 1,
            match ring.remote() {
                Some(_) => Some(&mut check as &mut dyn FnMut()),
                None => None,
            },
            || match inner.try_reserve(len, align) {
                Ok(pos) => Some(Ok(pos)),
                Err(ReserveError::Disconnected) => Some(Err(SendError::Disconnected)),
                Err(ReserveError::Corrupted(what)) => Some(Err(SendError::Corrupted { what })),
                Err(ReserveError::Full) => None,
            },
        );
        self.parked += parks;
        match waited {
            Waited::Ready(r) => r,
            Waited::TimedOut => Err(SendError::Timeout),
        }
    }

    /// Publishes the record reserved at `pos`.
    #[inline(always)]
    pub(crate) fn commit(&mut self, pos: u64, len: usize, type_id: u64) {
        let ts = if self.timestamps { monotonic_ns() } else { 0 };
        self.inner.commit(pos, len, type_id, ts);
    }

    /// The device address of `ptr`, a byte of this channel's slab (feature `cuda`).
    #[cfg(feature = "cuda")]
    pub(crate) fn cuda_device_ptr(&self, ptr: NonNull<u8>) -> Result<u64, crate::SlabError> {
        self.inner.ring().cuda_device_ptr(ptr)
    }

    /// Address of the payload of the record reserved at `pos`.
    #[inline]
    pub(crate) fn payload(&self, pos: u64) -> NonNull<u8> {
        self.inner.payload(pos)
    }

    /// Checks that a `T` fits this ring.
    #[inline]
    fn check_type<T: Message>(&self) -> Result<(usize, usize), SendError> {
        let align = ring::payload_align(core::mem::align_of::<T>());
        let max_align = MAX_ALIGN.min(self.capacity_bytes());
        if align > max_align {
            return Err(SendError::Alignment {
                align,
                max: max_align,
            });
        }
        let len = core::mem::size_of::<T>();
        self.check_len(len)?;
        Ok((len, align))
    }

    /// Checks that a payload of `len` bytes fits this ring.
    #[inline]
    fn check_len(&self, len: usize) -> Result<(), SendError> {
        let max = self.max_payload();
        if len > max {
            return Err(SendError::TooLarge { len, max });
        }
        Ok(())
    }

    #[inline]
    fn allocate_with<T: Message>(&mut self, patience: Patience) -> Result<Loan<'_, T>, SendError> {
        let (len, align) = self.check_type::<T>()?;
        let pos = self.reserve(len, align, patience)?;
        // SAFETY: `pos` was just reserved for a payload of `size_of::<T>()` bytes aligned to
        // `align_of::<T>()`, and nothing was published since.
        Ok(unsafe { Loan::new(self, pos) })
    }

    /// Borrows room for a `T` in the ring, waiting for space if needed. The loan exposes the bytes
    /// the slot last held; write the message and [`Loan::send`] it.
    ///
    /// Errors: `Disconnected`, `TooLarge` or `Alignment`.
    #[inline]
    pub fn allocate<T: Message>(&mut self) -> Result<Loan<'_, T>, SendError> {
        self.allocate_with(Patience::Forever)
    }

    /// Like [`allocate`](Self::allocate), but fails with `Full` instead of waiting.
    ///
    /// When the message does not fit before the end of the ring, a wrap filler is published
    /// first; until the consumer has skipped it (its next `recv`/`try_recv` does), this may
    /// report `Full` even though no message is in flight.
    #[inline]
    pub fn try_allocate<T: Message>(&mut self) -> Result<Loan<'_, T>, SendError> {
        self.allocate_with(Patience::Never)
    }

    /// Like [`allocate`](Self::allocate), but fails with `Timeout` after `timeout`.
    pub fn allocate_timeout<T: Message>(
        &mut self,
        timeout: Duration,
    ) -> Result<Loan<'_, T>, SendError> {
        self.allocate_with(Patience::timeout(timeout))
    }

    /// Like [`allocate`](Self::allocate), with the message zeroed.
    pub fn allocate_zeroed<T: Message>(&mut self) -> Result<Loan<'_, T>, SendError> {
        let mut loan = self.allocate::<T>()?;
        *loan = T::zeroed();
        Ok(loan)
    }

    #[inline]
    fn allocate_bytes_with(
        &mut self,
        len: usize,
        patience: Patience,
    ) -> Result<BytesLoan<'_>, SendError> {
        self.check_len(len)?;
        let pos = self.reserve(len, ring::RECORD_ALIGN, patience)?;
        Ok(BytesLoan {
            producer: self,
            pos,
            len,
        })
    }

    /// Borrows `len` bytes in the ring (64-byte aligned), waiting for space if needed. The loan
    /// exposes the bytes the slot last held; fill them and [`BytesLoan::send`] them.
    ///
    /// Errors: `Disconnected` or `TooLarge`.
    #[inline]
    pub fn allocate_bytes(&mut self, len: usize) -> Result<BytesLoan<'_>, SendError> {
        self.allocate_bytes_with(len, Patience::Forever)
    }

    /// Like [`allocate_bytes`](Self::allocate_bytes), but fails with `Full` instead of waiting.
    /// (A pending wrap filler may make it report `Full`; see
    /// [`try_allocate`](Self::try_allocate).)
    #[inline]
    pub fn try_allocate_bytes(&mut self, len: usize) -> Result<BytesLoan<'_>, SendError> {
        self.allocate_bytes_with(len, Patience::Never)
    }

    /// Like [`allocate_bytes`](Self::allocate_bytes), but fails with `Timeout` after `timeout`.
    pub fn allocate_bytes_timeout(
        &mut self,
        len: usize,
        timeout: Duration,
    ) -> Result<BytesLoan<'_>, SendError> {
        self.allocate_bytes_with(len, Patience::timeout(timeout))
    }

    /// Copies `bytes` into the ring as one message tagged `type_id`, waiting for space if needed.
    #[inline]
    pub fn send_bytes(&mut self, type_id: u64, bytes: &[u8]) -> Result<(), SendError> {
        let mut loan = self.allocate_bytes(bytes.len())?;
        loan.copy_from_slice(bytes);
        loan.send(type_id);
        Ok(())
    }

    /// Like [`send_bytes`](Self::send_bytes), but fails with `Full` instead of waiting.
    #[inline]
    pub fn try_send_bytes(&mut self, type_id: u64, bytes: &[u8]) -> Result<(), SendError> {
        let mut loan = self.try_allocate_bytes(bytes.len())?;
        loan.copy_from_slice(bytes);
        loan.send(type_id);
        Ok(())
    }
}

impl fmt::Debug for RawProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawProducer")
            .field("capacity_bytes", &self.capacity_bytes())
            .field("stats", &self.stats())
            .finish()
    }
}

/// Room for a raw byte payload in the ring, from [`RawProducer::allocate_bytes`].
///
/// Dereferences to the payload bytes (what the slot last held). [`send`](BytesLoan::send)
/// publishes them; dropping the loan publishes nothing.
#[must_use = "dropping a loan publishes nothing; call `send`"]
pub struct BytesLoan<'a> {
    producer: &'a mut RawProducer,
    /// Header position of the reserved record.
    pos: u64,
    /// Payload length in bytes.
    len: usize,
}

impl BytesLoan<'_> {
    /// Publishes the payload, tagged with `type_id`.
    #[inline]
    pub fn send(self, type_id: u64) {
        self.producer.commit(self.pos, self.len, type_id);
    }
}

impl Deref for BytesLoan<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        // SAFETY: the record at `pos` is reserved for this loan (invisible to the consumer until
        // `send`), holds `len` initialised bytes (the ring memory is zero-filled at creation and
        // only ever holds Pod bytes) and stays inside the region.
        unsafe { core::slice::from_raw_parts(self.producer.payload(self.pos).as_ptr(), self.len) }
    }
}

impl DerefMut for BytesLoan<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; `&mut self` makes the access exclusive.
        unsafe {
            core::slice::from_raw_parts_mut(self.producer.payload(self.pos).as_ptr(), self.len)
        }
    }
}

impl fmt::Debug for BytesLoan<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BytesLoan").field("len", &self.len).finish()
    }
}

/// The receiving end of a raw channel: messages of any type, told apart by
/// [`RawReceived::type_id`].
pub struct RawConsumer {
    inner: RingConsumer,
    /// Counter: times found empty.
    empty: u64,
    /// Counter: times parked.
    parked: u64,
    /// Counter: messages received.
    messages: u64,
    /// Counter: payload bytes received.
    bytes: u64,
    /// `recv` spins in place ([`Wait::BusySpin`](crate::Wait::BusySpin), both ends in this
    /// process): see [`Self::spin_forever`].
    spin_here: bool,
    /// Throttle of liveness checks of a producer in another process.
    watch: PeerWatch,
}

/// What a typed consumer expects of every record: type id, payload length and alignment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expected {
    /// `T::TYPE_ID`.
    pub type_id: u64,
    /// `size_of::<T>()`.
    pub len: usize,
    /// `align_of::<T>()`.
    pub align: usize,
}

impl RawConsumer {
    /// The device address of `ptr`, a byte of this channel's slab (feature `cuda`).
    #[cfg(feature = "cuda")]
    pub(crate) fn cuda_device_ptr(&self, ptr: NonNull<u8>) -> Result<u64, crate::SlabError> {
        self.inner.ring().cuda_device_ptr(ptr)
    }

    /// A typed consumer's records are all `record_size` bytes (see
    /// [`RingConsumer::expect_records_of`]).
    pub(crate) fn expect_records_of(&mut self, record_size: usize) {
        self.inner.expect_records_of(record_size);
    }

    /// The consumer end of `ring`, starting at `positions`.
    pub(crate) fn new(ring: Arc<Ring>, positions: Positions) -> Self {
        let spin_here = matches!(ring.wait(), crate::Wait::BusySpin) && ring.remote().is_none();
        RawConsumer {
            spin_here,
            inner: RingConsumer::new(ring, positions),
            empty: 0,
            parked: 0,
            messages: 0,
            bytes: 0,
            watch: PeerWatch::default(),
        }
    }

    /// Size of the ring in bytes.
    pub fn capacity_bytes(&self) -> usize {
        self.inner.ring().len()
    }

    /// This end's counters.
    pub fn stats(&self) -> ConsumerStats {
        ConsumerStats {
            messages: self.messages,
            bytes: self.bytes,
            empty: self.empty,
            parked: self.parked,
            ..self.inner.stats
        }
    }

    /// The next message, waiting as `patience` allows; for a typed consumer, `expected` is
    /// checked against the record (type id, length, payload alignment: `Corrupted` if they
    /// disagree, and the record stays unreleased).
    #[inline]
    pub(crate) fn peek(
        &mut self,
        patience: Patience,
        expected: Option<Expected>,
    ) -> Result<Peeked, RecvError> {
        let peeked = match self.inner.try_peek() {
            Ok(p) => p,
            Err(PeekError::Disconnected) => return Err(RecvError::Disconnected),
            Err(PeekError::Corrupted(what)) => return Err(RecvError::Corrupted { what }),
            Err(PeekError::Empty) if self.spin_here && matches!(patience, Patience::Forever) => {
                self.spin_forever()?
            }
            Err(PeekError::Empty) => self.peek_slow(patience)?,
        };
        if let Some(e) = expected {
            // SAFETY: just peeked, not released. The type id is read once here.
            let type_id = unsafe { core::ptr::addr_of!(peeked.header().type_id).read_volatile() };
            if type_id != e.type_id
                || peeked.len() as usize != e.len
                || !(peeked.payload().as_ptr() as usize).is_multiple_of(e.align)
            {
                return Err(Self::unexpected(type_id, &peeked, e));
            }
        }
        self.messages += 1;
        self.bytes += u64::from(peeked.len());
        Ok(peeked)
    }

    /// The error for a record a typed consumer did not expect.
    #[cold]
    fn unexpected(type_id: u64, peeked: &Peeked, e: Expected) -> RecvError {
        RecvError::Corrupted {
            what: if type_id != e.type_id {
                "header type id differs from the channel's"
            } else if peeked.len() as usize != e.len {
                "header length differs from the message size"
            } else {
                "payload misaligned for the message type"
            },
        }
    }

    /// [`Self::peek`] after the ring was found empty.
    #[inline(never)]
    fn peek_slow(&mut self, patience: Patience) -> Result<Peeked, RecvError> {
        self.empty += 1;
        let deadline = match patience {
            Patience::Never if self.inner.ring().remote().is_none() => {
                return Err(RecvError::Empty);
            }
            Patience::Never => {
                // A producer in another process may have died: say so rather than `Empty` once
                // everything it published is received.
                check_peer(self.inner.ring(), &mut self.watch);
                return match self.inner.try_peek() {
                    Ok(p) => Ok(p),
                    Err(PeekError::Disconnected) => Err(RecvError::Disconnected),
                    Err(PeekError::Corrupted(what)) => Err(RecvError::Corrupted { what }),
                    Err(PeekError::Empty) => Err(RecvError::Empty),
                };
            }
            Patience::Forever => None,
            Patience::Until(t) => Some(t),
        };

        // SAFETY: as in `reserve_slow`: `inner` keeps the ring alive, and the closure borrows the
        // `RingConsumer` mutably, not the shared `Ring`.
        let ring: &Ring = unsafe { &*Arc::as_ptr(self.inner.ring_arc()) };
        let inner = &mut self.inner;
        let watch = &mut self.watch;
        let mut check = || check_peer(ring, watch);
        let mut parks = 0;
        inner.set_waiting(true);
        let waited = wait::wait_for(
            ring.wait(),
            deadline,
            ring.consumer_parked(),
            || {
                // A parked consumer would skip a restart filler only after a futex wake-up:
                // stop saying we wait (see the ring's "Large records restart ...").
                ring.stop_waiting();
                parks += 1;
            },
            match ring.remote() {
                Some(_) => Some(&mut check as &mut dyn FnMut()),
                None => None,
            },
            || match inner.try_peek() {
                Ok(p) => Some(Ok(p)),
                Err(PeekError::Disconnected) => Some(Err(RecvError::Disconnected)),
                Err(PeekError::Corrupted(what)) => Some(Err(RecvError::Corrupted { what })),
                Err(PeekError::Empty) => None,
            },
        );
        self.inner.set_waiting(false);
        self.parked += parks;
        match waited {
            Waited::Ready(r) => r,
            Waited::TimedOut => Err(RecvError::Timeout),
        }
    }

    /// `recv` on a busy-spinning, in-process ring: polls until a message comes, with nothing
    /// else in the loop (no deadline, no peer to watch, never parks), as a caller's own loop of
    /// `try_recv` and `spin_loop` would. Inlined into `recv`, so that a message found here costs
    /// no more than one found by `try_recv`.
    #[inline(always)]
    fn spin_forever(&mut self) -> Result<Peeked, RecvError> {
        self.empty += 1;
        self.inner.set_waiting(true);
        let r = loop {
            match self.inner.try_peek() {
                Ok(p) => break Ok(p),
                Err(PeekError::Empty) => crate::sync::spin_loop(),
                Err(PeekError::Disconnected) => break Err(RecvError::Disconnected),
                Err(PeekError::Corrupted(what)) => break Err(RecvError::Corrupted { what }),
            }
        };
        self.inner.set_waiting(false);
        r
    }

    /// Releases a record returned by `peek`.
    #[inline]
    pub(crate) fn release(&mut self, end: u64) {
        self.inner.release(end);
    }

    #[inline]
    fn recv_with(&mut self, patience: Patience) -> Result<RawReceived<'_>, RecvError> {
        let peeked = self.peek(patience, None)?;
        Ok(RawReceived {
            consumer: self,
            peeked,
        })
    }

    /// The next message, waiting for one if needed. Fails only with `Disconnected`, once the
    /// producer is gone and every message it sent has been received.
    #[inline]
    pub fn recv(&mut self) -> Result<RawReceived<'_>, RecvError> {
        self.recv_with(Patience::Forever)
    }

    /// The next message, or `Empty` (or `Disconnected`) at once.
    #[inline]
    pub fn try_recv(&mut self) -> Result<RawReceived<'_>, RecvError> {
        self.recv_with(Patience::Never)
    }

    /// The next message, waiting at most `timeout` (`Timeout`).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<RawReceived<'_>, RecvError> {
        self.recv_with(Patience::timeout(timeout))
    }
}

impl fmt::Debug for RawConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawConsumer")
            .field("capacity_bytes", &self.capacity_bytes())
            .field("stats", &self.stats())
            .finish()
    }
}

/// A message received from a raw channel, read in place; its space is released on drop.
pub struct RawReceived<'a> {
    consumer: &'a mut RawConsumer,
    peeked: Peeked,
}

impl<'a> RawReceived<'a> {
    /// The message's header: type id, length, sequence number, send timestamp.
    ///
    /// It is read in place; in a shared channel a misbehaving producer could still change it.
    /// [`bytes`](Self::bytes) uses the length checked when the message was received, not this
    /// header's `len`.
    #[inline]
    pub fn header(&self) -> &MessageHeader {
        // SAFETY: released only when `self` drops.
        unsafe { self.peeked.header() }
    }

    /// The type id the producer tagged the message with ([`Message::TYPE_ID`] for
    /// [`RawProducer::allocate`]).
    #[inline]
    pub fn type_id(&self) -> u64 {
        self.header().type_id
    }

    /// The payload bytes.
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the record is published (acquired in `peek`) and not yet released, so the
        // producer does not write it; `try_peek` checked that the `len()` bytes from the payload
        // lie inside the region (and the published bytes); any bytes are valid `u8`s.
        unsafe {
            core::slice::from_raw_parts(self.peeked.payload().as_ptr(), self.peeked.len() as usize)
        }
    }

    /// The payload as a `T`, if the type id is `T::TYPE_ID`, the length is `size_of::<T>()` and
    /// the payload is aligned for `T`; else `None`.
    #[inline]
    pub fn downcast<T: Message>(&self) -> Option<&T> {
        if self.type_id() != T::TYPE_ID || self.peeked.len() as usize != core::mem::size_of::<T>() {
            return None;
        }
        bytemuck::try_from_bytes(self.bytes()).ok()
    }
}

impl Drop for RawReceived<'_> {
    #[inline]
    fn drop(&mut self) {
        self.consumer.release(self.peeked.end);
    }
}

impl fmt::Debug for RawReceived<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawReceived")
            .field("header", self.header())
            .finish()
    }
}
