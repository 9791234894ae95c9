//! Raw ends: any message types and raw byte payloads over one ring. The typed ends wrap these;
//! both are thin layers over the end layer (`end.rs`).

use super::end::{Patience, Receiver, Release, Sender, await_peek, await_reserve};
use super::{ConsumerStats, Loan, ProducerStats, RecvError, SendError};
use crate::message::{Message, MessageHeader};
use crate::ring::spsc::{SpscConsumer, SpscProducer};
use crate::ring::{self, MAX_ALIGN, Peeked};
use core::fmt;
use core::time::Duration;

/// The sending end of a raw channel: sends any [`Message`] type in place ([`allocate`]) or raw
/// bytes ([`allocate_bytes`], [`send_bytes`]), each tagged with a type id.
///
/// [`allocate`]: RawProducer::allocate
/// [`allocate_bytes`]: RawProducer::allocate_bytes
/// [`send_bytes`]: RawProducer::send_bytes
pub struct RawProducer {
    pub(crate) end: Sender<SpscProducer>,
    /// Dropped right after `end` has closed (fields drop in order): a transport's guard that
    /// waits, with a deadline, for the messages still in the ring to leave (TCP: the sending
    /// pump's flush). `None` for local rings.
    pub(crate) after_close: Option<Box<dyn Send + Sync>>,
    /// [`max_payload`](Self::max_payload), computed once (the ring's size never changes), so
    /// that a byte allocation's length check is one comparison.
    max_payload: usize,
}

impl RawProducer {
    /// The end over `cursor`.
    pub(crate) fn new(cursor: SpscProducer) -> Self {
        let end = Sender::new(cursor);
        let max_payload =
            (ring::max_record(end.region_len()) - MessageHeader::SIZE).min(u32::MAX as usize);
        RawProducer {
            end,
            after_close: None,
            max_payload,
        }
    }

    /// The largest payload this channel takes, in bytes: the ring size minus the 32-byte header
    /// and the one line the producer always leaves free.
    #[inline]
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Size of the ring in bytes.
    pub fn capacity_bytes(&self) -> usize {
        self.end.region_len()
    }

    /// Whether the consumer is gone (a later allocation then fails with `Disconnected`).
    ///
    /// For a shared channel this also checks whether the consumer's process died (a system
    /// call and a read of `/proc`: not for a hot loop).
    pub fn is_disconnected(&self) -> bool {
        self.end.is_disconnected()
    }

    /// This end's counters.
    pub fn stats(&self) -> ProducerStats {
        self.end.stats()
    }

    /// Checks that a `T` fits this ring.
    #[inline]
    fn check_type<T: Message>(&self) -> Result<(usize, usize), SendError> {
        let align = super::typed::align_of_payload::<T>();
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

    /// A loan for a `T`, whose fit was checked (typed ends: when the channel was built).
    #[inline(always)]
    pub(crate) fn loan<T: Message>(
        &mut self,
        patience: Patience,
    ) -> Result<Loan<'_, T>, SendError> {
        let len = core::mem::size_of::<T>();
        let align = super::typed::align_of_payload::<T>();
        let pos = self.end.reserve(len, align, patience)?;
        // SAFETY: `pos` was just reserved for a payload of `size_of::<T>()` bytes aligned to
        // `align_of::<T>()`, and nothing was published since.
        Ok(unsafe { Loan::new(&mut self.end, pos) })
    }

    /// [`Self::loan`], awaiting space. The first attempt (room that is there already) runs
    /// in the caller's own state machine, before any waiting state exists, as the async
    /// receives do (see `Receiver::peek_now`): an async producer with room pays what a
    /// blocking one does.
    #[inline(always)]
    pub(crate) async fn loan_async<T: Message>(&mut self) -> Result<Loan<'_, T>, SendError> {
        let len = core::mem::size_of::<T>();
        let align = super::typed::align_of_payload::<T>();
        let pos = await_reserve!(self.end, len, align)?;
        // SAFETY: `pos` was just reserved for a payload of `size_of::<T>()` bytes aligned to
        // `align_of::<T>()`, and nothing was published since.
        Ok(unsafe { Loan::new(&mut self.end, pos) })
    }

    /// Like [`allocate`](Self::allocate), but awaits space instead of blocking the thread (see
    /// [`Producer::allocate_async`](crate::Producer::allocate_async)). Cancellation-safe.
    pub async fn allocate_async<T: Message>(&mut self) -> Result<Loan<'_, T>, SendError> {
        let (len, align) = self.check_type::<T>()?;
        let pos = await_reserve!(self.end, len, align)?;
        // SAFETY: `pos` was just reserved for a payload of `size_of::<T>()` bytes aligned to
        // `align_of::<T>()` (checked against the ring by `check_type`), and nothing was
        // published since.
        Ok(unsafe { Loan::new(&mut self.end, pos) })
    }

    /// Like [`allocate_bytes`](Self::allocate_bytes), but awaits space instead of blocking the
    /// thread. Cancellation-safe.
    pub async fn allocate_bytes_async(&mut self, len: usize) -> Result<BytesLoan<'_>, SendError> {
        self.check_len(len)?;
        let pos = await_reserve!(self.end, len, ring::RECORD_ALIGN)?;
        Ok(BytesLoan {
            end: &mut self.end,
            pos,
            len,
        })
    }

    /// Like [`send_bytes`](Self::send_bytes), but awaits space. Cancellation-safe: nothing is
    /// sent unless the future completes.
    pub async fn send_bytes_async(&mut self, type_id: u64, bytes: &[u8]) -> Result<(), SendError> {
        let mut loan = self.allocate_bytes_async(bytes.len()).await?;
        loan.copy_from_slice(bytes);
        loan.send(type_id);
        Ok(())
    }

    #[inline]
    fn allocate_with<T: Message>(&mut self, patience: Patience) -> Result<Loan<'_, T>, SendError> {
        self.check_type::<T>()?;
        self.loan(patience)
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

    // Always inlined, as the typed ends' `loan` is: outlined (as `#[inline]` left it for the
    // tensor ends' callers) it cost a call, six saved registers and a call to `max_payload`
    // per message (about 60 instructions, `scripts/tensor-icount.sh raw`).
    #[inline(always)]
    fn allocate_bytes_with(
        &mut self,
        len: usize,
        patience: Patience,
    ) -> Result<BytesLoan<'_>, SendError> {
        self.check_len(len)?;
        let pos = self.end.reserve(len, ring::RECORD_ALIGN, patience)?;
        Ok(BytesLoan {
            end: &mut self.end,
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
        self.send_bytes_with(type_id, bytes, Patience::Forever)
    }

    /// Like [`send_bytes`](Self::send_bytes), but fails with `Full` instead of waiting.
    #[inline]
    pub fn try_send_bytes(&mut self, type_id: u64, bytes: &[u8]) -> Result<(), SendError> {
        self.send_bytes_with(type_id, bytes, Patience::Never)
    }

    #[inline]
    fn send_bytes_with(
        &mut self,
        type_id: u64,
        bytes: &[u8],
        patience: Patience,
    ) -> Result<(), SendError> {
        let mut loan = self.allocate_bytes_with(bytes.len(), patience)?;
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
    end: &'a mut Sender<SpscProducer>,
    /// Header position of the reserved record.
    pos: u64,
    /// Payload length in bytes.
    len: usize,
}

impl BytesLoan<'_> {
    /// Publishes the payload, tagged with `type_id`.
    #[inline]
    pub fn send(self, type_id: u64) {
        self.end
            .commit(self.pos, self.len, ring::RECORD_ALIGN, type_id);
    }
}

super::bytes_loan_access!(BytesLoan);

/// The receiving end of a raw channel: messages of any type, told apart by
/// [`RawReceived::type_id`].
pub struct RawConsumer {
    pub(crate) end: Receiver<SpscConsumer>,
}

impl RawConsumer {
    /// The end over `cursor`.
    pub(crate) fn new(cursor: SpscConsumer) -> Self {
        RawConsumer {
            end: Receiver::new(cursor),
        }
    }

    /// Size of the ring in bytes.
    pub fn capacity_bytes(&self) -> usize {
        self.end.region_len()
    }

    /// This end's counters.
    pub fn stats(&self) -> ConsumerStats {
        self.end.stats()
    }

    /// Whether the producer is gone. Messages it published before may still be waiting: `recv`
    /// returns them first. For a shared channel this also checks whether the producer's process
    /// died, and a new producer may attach later (see [`Channel`](crate::Channel)).
    pub fn is_disconnected(&self) -> bool {
        self.end.is_disconnected()
    }

    #[inline]
    fn recv_with(&mut self, patience: Patience) -> Result<RawReceived<'_>, RecvError> {
        let peeked = self.end.peek(patience, None)?;
        Ok(RawReceived {
            end: self.end.release_handle(&peeked),
            peeked,
        })
    }

    /// [`recv_with`](Self::recv_with) for a consumer that expects, without requiring it, a
    /// payload of `len` bytes tagged `type_id` (a tensor consumer: its last tensor's): such a
    /// record takes the typed ends' fast check of the header, and comes with `true` (its
    /// payload is `len` bytes and it was tagged `type_id`); any other with `false`.
    #[inline(always)]
    pub(crate) fn recv_likely(
        &mut self,
        patience: Patience,
        len: u32,
        type_id: u64,
    ) -> Result<(RawReceived<'_>, bool), RecvError> {
        let (peeked, likely) = self.end.peek_likely(patience, len, type_id)?;
        Ok((
            RawReceived {
                end: self.end.release_handle(&peeked),
                peeked,
            },
            likely,
        ))
    }

    /// The next message, waiting for one if needed. Fails only with `Disconnected` (once the
    /// producer is gone and every message it sent has been received) or `Corrupted`.
    #[inline]
    pub fn recv(&mut self) -> Result<RawReceived<'_>, RecvError> {
        self.recv_with(Patience::Forever)
    }

    /// Like [`recv`](Self::recv), but awaits the message instead of blocking the thread (see
    /// [`Consumer::recv_async`](crate::Consumer::recv_async)). Cancellation-safe.
    pub async fn recv_async(&mut self) -> Result<RawReceived<'_>, RecvError> {
        let peeked = await_peek!(self.end, None)?;
        Ok(RawReceived {
            end: self.end.release_handle(&peeked),
            peeked,
        })
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
    end: Release<'a>,
    peeked: Peeked,
}

impl<'a> RawReceived<'a> {
    /// A received message of the end `end` hands back.
    #[inline(always)]
    pub(crate) fn new(end: Release<'a>, peeked: Peeked) -> Self {
        RawReceived { end, peeked }
    }
}

impl RawReceived<'_> {
    /// Which producer sent the message: its index in a multi-producer channel, 0 in a
    /// single-producer one.
    #[inline]
    pub fn producer(&self) -> usize {
        self.peeked.lane() as usize
    }

    /// A copy of the message's header: type id, length, sequence number, send timestamp (each
    /// field read once: in a shared channel the other process could still change them).
    /// [`bytes`](Self::bytes) uses the length checked when the message was received.
    #[inline]
    pub fn header(&self) -> MessageHeader {
        self.peeked.header_copy()
    }

    /// The type id the producer tagged the message with ([`Message::TYPE_ID`] for
    /// [`RawProducer::allocate`]).
    #[inline]
    pub fn type_id(&self) -> u64 {
        self.peeked.type_id()
    }

    /// The payload bytes. They start 64-byte aligned: every record starts a multiple of 64
    /// bytes into the ring, whose first byte is 32 modulo 64, and its 32-byte header comes
    /// first.
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        debug_assert!(
            (self.peeked.payload().as_ptr() as usize).is_multiple_of(crate::ring::RECORD_ALIGN)
        );
        // SAFETY: the record is published (acquired in `peek`) and not yet released, so the
        // producer does not write it; `peek` checked that the `len()` bytes from the payload
        // lie inside the region; any bytes are valid `u8`s.
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
        self.end.release(&self.peeked);
    }
}

impl fmt::Debug for RawReceived<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawReceived")
            .field("header", &self.header())
            .finish()
    }
}
