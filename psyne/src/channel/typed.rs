//! Typed ends: one message type `T`, checked at build time. Thin wrappers over the raw ends.

use super::end::{Patience, Release, Sender, await_peek};
use super::raw::{RawConsumer, RawProducer};
use super::{ConsumerStats, ProducerStats, RecvError, SendError};
use crate::message::{Message, MessageHeader};
use crate::ring::spsc::SpscProducer;
use crate::ring::{ChannelIdentity, Peeked, RECORD_ALIGN};

use core::fmt;
use core::future::Future;
use core::marker::PhantomData;
use core::ops::Deref;
use core::ptr::NonNull;
use core::time::Duration;

/// The alignment a ring gives to payloads of type `T` (at least 64; a constant).
#[inline(always)]
pub(crate) const fn align_of_payload<T>() -> usize {
    crate::ring::payload_align(core::mem::align_of::<T>())
}

/// The sending end of a channel of `T`s; see [`Channel`](crate::Channel).
pub struct Producer<T> {
    raw: RawProducer,
    _t: PhantomData<T>,
}

impl<T: Message> Producer<T> {
    pub(crate) fn new(raw: RawProducer) -> Self {
        Producer {
            raw,
            _t: PhantomData,
        }
    }

    /// Borrows the next slot of the ring, waiting for space if needed. The loan exposes the bytes
    /// the slot last held (any bytes are a valid `T`); write the message and [`Loan::send`] it.
    ///
    /// Fails only with `Disconnected` (the consumer is gone) or `Corrupted` (a shared channel's
    /// other process wrote an impossible read position).
    #[inline]
    pub fn allocate(&mut self) -> Result<Loan<'_, T>, SendError> {
        self.raw.loan(Patience::Forever)
    }

    /// Like [`allocate`](Self::allocate), but fails with `Full` instead of waiting.
    ///
    /// When the message does not fit before the end of the ring, a wrap filler is published
    /// first; until the consumer has skipped it (its next `recv`/`try_recv` does), this may
    /// report `Full` even though no message is in flight.
    #[inline]
    pub fn try_allocate(&mut self) -> Result<Loan<'_, T>, SendError> {
        self.raw.loan(Patience::Never)
    }

    /// Like [`allocate`](Self::allocate), but fails with `Timeout` after `timeout`.
    pub fn allocate_timeout(&mut self, timeout: Duration) -> Result<Loan<'_, T>, SendError> {
        self.raw.loan(Patience::timeout(timeout))
    }

    /// Like [`allocate`](Self::allocate), with the message zeroed.
    pub fn allocate_zeroed(&mut self) -> Result<Loan<'_, T>, SendError> {
        let mut loan = self.allocate()?;
        *loan = T::zeroed();
        Ok(loan)
    }

    /// Like [`allocate`](Self::allocate), but awaits space instead of blocking the thread: the
    /// future is woken when the consumer releases room (see [`crate::wait::async_wait`]; works
    /// under any executor). Cancellation-safe: dropping the future reserves nothing.
    ///
    /// ```
    /// #[derive(Clone, Copy, psyne::PsyneMessage)]
    /// #[repr(C)]
    /// struct Scalar {
    ///     value: f32,
    /// }
    /// # futures_executor::block_on(async {
    /// let (mut tx, mut rx) = psyne::Channel::<Scalar>::builder().build()?;
    /// let mut loan = tx.allocate_async().await?;
    /// loan.value = 2.5;
    /// loan.send();
    /// assert_eq!(rx.recv_async().await?.value, 2.5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    // A plain function returning the raw end's future (not an `async fn` awaiting it), so that
    // its first attempt is inlined into the caller's poll.
    #[inline(always)]
    pub fn allocate_async(&mut self) -> impl Future<Output = Result<Loan<'_, T>, SendError>> + '_ {
        self.raw.loan_async::<T>()
    }

    /// Like [`send`](Self::send), but awaits space (see [`allocate_async`](Self::allocate_async)).
    pub async fn send_async(&mut self, value: &T) -> Result<(), SendError> {
        let mut loan = self.allocate_async().await?;
        *loan = *value;
        loan.send();
        Ok(())
    }

    #[inline]
    fn send_with(&mut self, value: &T, patience: Patience) -> Result<(), SendError> {
        let mut loan = self.raw.loan::<T>(patience)?;
        *loan = *value;
        loan.send();
        Ok(())
    }

    /// Copies `value` into the ring and publishes it, waiting for space if needed (one copy:
    /// to build the message in place instead, use [`allocate`](Self::allocate)).
    pub fn send(&mut self, value: &T) -> Result<(), SendError> {
        self.send_with(value, Patience::Forever)
    }

    /// Like [`send`](Self::send), but fails with `Full` instead of waiting.
    pub fn try_send(&mut self, value: &T) -> Result<(), SendError> {
        self.send_with(value, Patience::Never)
    }

    /// Like [`send`](Self::send), but fails with `Timeout` after `timeout`.
    pub fn send_timeout(&mut self, value: &T, timeout: Duration) -> Result<(), SendError> {
        self.send_with(value, Patience::timeout(timeout))
    }

    /// Whether the consumer is gone. For a shared channel this also checks whether the
    /// consumer's process died (a system call and a read of `/proc`: not for a hot loop).
    pub fn is_disconnected(&self) -> bool {
        self.raw.is_disconnected()
    }

    /// Size of the ring in bytes.
    pub fn capacity_bytes(&self) -> usize {
        self.raw.capacity_bytes()
    }

    /// This end's counters.
    pub fn stats(&self) -> ProducerStats {
        self.raw.stats()
    }

    /// The end layer under this producer.
    pub(crate) fn raw_end(&self) -> &Sender<SpscProducer> {
        &self.raw.end
    }
}

impl<T> fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Producer").field(&self.raw).finish()
    }
}

/// The receiving end of a channel of `T`s; see [`Channel`](crate::Channel).
pub struct Consumer<T> {
    raw: RawConsumer,
    _t: PhantomData<T>,
}

impl<T: Message> Consumer<T> {
    /// What every record must be: `T::TYPE_ID`, `size_of::<T>()` bytes, aligned for `T`.
    const IDENTITY: ChannelIdentity = ChannelIdentity::of::<T>();

    pub(crate) fn new(mut raw: RawConsumer) -> Self {
        if let Some(size) = crate::ring::record_size(core::mem::size_of::<T>()) {
            raw.end.cursor_mut().expect_records_of(size);
        }
        Consumer {
            raw,
            _t: PhantomData,
        }
    }

    #[inline(always)]
    fn recv_with(&mut self, patience: Patience) -> Result<Received<'_, T>, RecvError> {
        // The record's type id, length and payload alignment are checked (a few compares): a
        // `T` is read in place only from a record of `T::TYPE_ID`, `size_of::<T>()` bytes,
        // aligned for `T`.
        let peeked = self.raw.end.peek(patience, Some(&Self::IDENTITY))?;
        Ok(Received::new(self.raw.end.release_handle(&peeked), peeked))
    }

    /// The next message, waiting for one if needed. Fails only with `Disconnected`, once the
    /// producer is gone and every message it sent has been received (for a shared channel: no
    /// producer is attached now; a later `recv` succeeds once a new one attached), or with
    /// `Corrupted`.
    #[inline]
    pub fn recv(&mut self) -> Result<Received<'_, T>, RecvError> {
        self.recv_with(Patience::Forever)
    }

    /// The next message, or `Empty` (or `Disconnected`) at once.
    #[inline]
    pub fn try_recv(&mut self) -> Result<Received<'_, T>, RecvError> {
        self.recv_with(Patience::Never)
    }

    /// Like [`recv`](Self::recv), but awaits the message instead of blocking the thread: the
    /// future is woken when the producer publishes, whether it runs in this process, another
    /// process or behind a TCP pump (see [`crate::wait::async_wait`]; works under any executor).
    ///
    /// Cancellation-safe: dropping the future before it completes loses no message (the next
    /// receive returns it) and leaves no wake-up registration behind, so it can be raced in
    /// `tokio::select!` against other channels and timers.
    pub async fn recv_async(&mut self) -> Result<Received<'_, T>, RecvError> {
        let peeked = await_peek!(self.raw.end, Some(&Self::IDENTITY))?;
        Ok(Received::new(self.raw.end.release_handle(&peeked), peeked))
    }

    /// The next message, waiting at most `timeout` (`Timeout`).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Received<'_, T>, RecvError> {
        self.recv_with(Patience::timeout(timeout))
    }

    /// Whether the producer is gone. Messages it published before may still be waiting: `recv`
    /// returns them first. For a shared channel this also checks whether the producer's process
    /// died, and a new producer may attach later.
    pub fn is_disconnected(&self) -> bool {
        self.raw.is_disconnected()
    }

    /// Messages published and not yet received (a snapshot: the producer may add more at any
    /// moment). For a shared channel, the count the other process reports, capped at what the
    /// ring can hold.
    pub fn len(&self) -> usize {
        self.raw.end.cursor_len()
    }

    /// Whether no message is waiting now (`len() == 0`).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An iterator over the messages waiting now, without blocking: each item is a **copy** of
    /// the message (`T: Copy`; a std `Iterator` cannot lend items that borrow the consumer, so
    /// to read in place use `while let Ok(msg) = rx.try_recv()`). It ends at the first `Empty`,
    /// `Disconnected` or `Corrupted` (call `try_recv` to see which).
    pub fn try_iter(&mut self) -> TryIter<'_, T> {
        TryIter { consumer: self }
    }

    /// A blocking iterator: each item is a **copy** of the next message (see
    /// [`try_iter`](Self::try_iter)); it ends once the producer is gone and everything it sent
    /// was received (or on `Corrupted`). `for msg in &mut rx` is the same.
    pub fn iter(&mut self) -> Iter<'_, T> {
        Iter { consumer: self }
    }

    /// Size of the ring in bytes.
    pub fn capacity_bytes(&self) -> usize {
        self.raw.capacity_bytes()
    }

    /// This end's counters.
    pub fn stats(&self) -> ConsumerStats {
        self.raw.stats()
    }
}

/// Copies of the messages waiting now; see [`Consumer::try_iter`].
#[derive(Debug)]
pub struct TryIter<'a, T> {
    consumer: &'a mut Consumer<T>,
}

impl<T: Message> Iterator for TryIter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.consumer.try_recv().ok().map(|m| *m)
    }
}

/// Copies of the messages as they arrive; see [`Consumer::iter`].
#[derive(Debug)]
pub struct Iter<'a, T> {
    consumer: &'a mut Consumer<T>,
}

impl<T: Message> Iterator for Iter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.consumer.recv().ok().map(|m| *m)
    }
}

impl<'a, T: Message> IntoIterator for &'a mut Consumer<T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

impl<T> fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Consumer").field(&self.raw).finish()
    }
}

/// A slot in the ring lent to the producer: dereferences to a `T` in channel memory.
///
/// The slot holds whatever bytes it last held (any bytes are a valid `T`). [`send`](Loan::send)
/// publishes it; dropping the loan publishes nothing and the slot is reused by the next
/// allocation.
#[must_use = "dropping a loan publishes nothing; call `send`"]
pub struct Loan<'a, T> {
    end: &'a mut Sender<SpscProducer>,
    /// Header position of the reserved record.
    pos: u64,
    /// The payload, inside the reserved record.
    ptr: NonNull<T>,
}

impl<'a, T: Message> Loan<'a, T> {
    /// A loan of the record reserved at `pos`.
    ///
    /// # Safety
    ///
    /// `pos` must come from the end's last reservation, for a payload of `size_of::<T>()`
    /// bytes aligned to at least `align_of::<T>()`, with nothing published since.
    #[inline(always)]
    pub(crate) unsafe fn new(end: &'a mut Sender<SpscProducer>, pos: u64) -> Self {
        let ptr = end.payload(pos).cast::<T>();
        debug_assert_eq!(ptr.as_ptr() as usize % core::mem::align_of::<T>(), 0);
        debug_assert_eq!(ptr.as_ptr() as usize % RECORD_ALIGN, 0);
        Loan { end, pos, ptr }
    }

    /// The device address of the loaned payload, for a channel built with
    /// [`cuda_host_register(true)`](crate::ChannelBuilder::cuda_host_register): a GPU copy or
    /// kernel can write the message there in place (finish that work, e.g. synchronise its
    /// stream, before [`send`](Self::send)). Feature `cuda`.
    ///
    /// # Errors
    /// [`SlabError::CudaUnavailable`](crate::SlabError::CudaUnavailable) if the channel's slab is
    /// not registered in this process; [`SlabError::CudaRegister`](crate::SlabError::CudaRegister)
    /// if the driver refuses. The address comes from the one the driver gave when the channel was
    /// built: no driver call here.
    #[cfg(feature = "cuda")]
    pub fn cuda_device_ptr(&self) -> Result<u64, crate::SlabError> {
        self.end.cuda_device_ptr(self.ptr.cast())
    }

    /// Publishes the message. Its header gets `T::TYPE_ID`, the next sequence number and (if the
    /// channel has timestamps) the send time.
    #[inline(always)]
    pub fn send(self) {
        self.end.commit(
            self.pos,
            core::mem::size_of::<T>(),
            align_of_payload::<T>(),
            T::TYPE_ID,
        );
    }
}

super::typed_loan_access!(Loan);

/// A message received from a channel of `T`s, read in place: dereferences to the `T` in channel
/// memory. Its space goes back to the producer when it is dropped.
pub struct Received<'a, T> {
    end: Release<'a>,
    peeked: Peeked,
    _t: PhantomData<&'a T>,
}

impl<'a, T> Received<'a, T> {
    /// A received message of `end`.
    #[inline(always)]
    pub(crate) fn new(end: Release<'a>, peeked: Peeked) -> Self {
        Received {
            end,
            peeked,
            _t: PhantomData,
        }
    }
}

impl<T> Received<'_, T> {
    /// Which producer sent the message: its index in a multi-producer channel
    /// ([`MpscProducer::index`](crate::MpscProducer::index)), 0 in a single-producer one.
    #[inline]
    pub fn producer(&self) -> usize {
        self.peeked.lane() as usize
    }

    /// A copy of the message's header: sequence number, send timestamp, type id, length (each
    /// field read once).
    #[inline]
    pub fn header(&self) -> MessageHeader {
        self.peeked.header_copy()
    }

    /// The device address of the received payload, for a channel built with
    /// [`cuda_host_register(true)`](crate::ChannelBuilder::cuda_host_register): a GPU copy or
    /// kernel can read the message there in place (finish that work before dropping `self`,
    /// which hands the space back to the producer). Feature `cuda`.
    ///
    /// # Errors
    /// As [`Loan::cuda_device_ptr`].
    #[cfg(feature = "cuda")]
    pub fn cuda_device_ptr(&self) -> Result<u64, crate::SlabError> {
        self.end.cuda_device_ptr(self.peeked.payload())
    }
}

impl<T> Deref for Received<'_, T> {
    type Target = T;
    #[inline(always)]
    fn deref(&self) -> &T {
        // SAFETY: `peek` checked that the record lies inside the region, that its type id is
        // `T::TYPE_ID`, its length `size_of::<T>()` and its payload aligned for `T`; any bytes
        // are a valid `T` (`Pod`). The Acquire load in `peek` made them visible; the producer
        // does not write them until we release them on drop (see the ring's "What is trusted").
        unsafe { self.peeked.payload().cast::<T>().as_ref() }
    }
}

impl<T> Drop for Received<'_, T> {
    #[inline(always)]
    fn drop(&mut self) {
        self.end.release(&self.peeked);
    }
}

impl<T: fmt::Debug> fmt::Debug for Received<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Received")
            .field("header", &self.header())
            .field("message", &**self)
            .finish()
    }
}
