//! Typed ends: one message type `T`, checked at build time.

use super::raw::{Expected, RawConsumer, RawProducer};
use super::{Patience, RecvError, SendError};
use crate::message::{Message, MessageHeader};
use crate::ring::{ConsumerStats, Peeked, ProducerStats, RECORD_ALIGN};
use core::fmt;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;
use core::time::Duration;

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

    /// Payload length and alignment of a `T` record (validated when the channel was built).
    #[inline]
    fn layout() -> (usize, usize) {
        (
            core::mem::size_of::<T>(),
            crate::ring::payload_align(core::mem::align_of::<T>()),
        )
    }

    #[inline]
    fn allocate_with(&mut self, patience: Patience) -> Result<Loan<'_, T>, SendError> {
        let (len, align) = Self::layout();
        let pos = self.raw.reserve(len, align, patience)?;
        // SAFETY: `pos` was just reserved for a payload of `size_of::<T>()` bytes aligned to
        // `align_of::<T>()`, and nothing was published since.
        Ok(unsafe { Loan::new(&mut self.raw, pos) })
    }

    /// Borrows the next slot of the ring, waiting for space if needed. The loan exposes the bytes
    /// the slot last held (any bytes are a valid `T`); write the message and [`Loan::send`] it.
    ///
    /// Fails only with `Disconnected` (the consumer is gone).
    #[inline]
    pub fn allocate(&mut self) -> Result<Loan<'_, T>, SendError> {
        self.allocate_with(Patience::Forever)
    }

    /// Like [`allocate`](Self::allocate), but fails with `Full` instead of waiting.
    ///
    /// When the message does not fit before the end of the ring, a wrap filler is published
    /// first; until the consumer has skipped it (its next `recv`/`try_recv` does), this may
    /// report `Full` even though no message is in flight.
    #[inline]
    pub fn try_allocate(&mut self) -> Result<Loan<'_, T>, SendError> {
        self.allocate_with(Patience::Never)
    }

    /// Like [`allocate`](Self::allocate), but fails with `Timeout` after `timeout`.
    pub fn allocate_timeout(&mut self, timeout: Duration) -> Result<Loan<'_, T>, SendError> {
        self.allocate_with(Patience::timeout(timeout))
    }

    /// Like [`allocate`](Self::allocate), with the message zeroed.
    pub fn allocate_zeroed(&mut self) -> Result<Loan<'_, T>, SendError> {
        let mut loan = self.allocate()?;
        *loan = T::zeroed();
        Ok(loan)
    }

    /// Copies `value` into the ring and publishes it, waiting for space if needed.
    pub fn send(&mut self, value: &T) -> Result<(), SendError> {
        let mut loan = self.allocate()?;
        *loan = *value;
        loan.send();
        Ok(())
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
    pub(crate) fn new(mut raw: RawConsumer) -> Self {
        if let Some(size) = crate::ring::record_size(core::mem::size_of::<T>()) {
            raw.expect_records_of(size);
        }
        Consumer {
            raw,
            _t: PhantomData,
        }
    }

    #[inline]
    fn recv_with(&mut self, patience: Patience) -> Result<Received<'_, T>, RecvError> {
        // The record's type id, length and payload alignment are checked (a few compares): a
        // `T` is read in place only from a record of `T::TYPE_ID`, `size_of::<T>()` bytes,
        // aligned for `T`.
        let peeked = self.raw.peek(
            patience,
            Some(Expected {
                type_id: T::TYPE_ID,
                len: core::mem::size_of::<T>(),
                align: core::mem::align_of::<T>(),
            }),
        )?;
        Ok(Received {
            consumer: &mut self.raw,
            peeked,
            _t: PhantomData,
        })
    }

    /// The next message, waiting for one if needed. Fails only with `Disconnected`, once the
    /// producer is gone and every message it sent has been received.
    #[inline]
    pub fn recv(&mut self) -> Result<Received<'_, T>, RecvError> {
        self.recv_with(Patience::Forever)
    }

    /// The next message, or `Empty` (or `Disconnected`) at once.
    #[inline]
    pub fn try_recv(&mut self) -> Result<Received<'_, T>, RecvError> {
        self.recv_with(Patience::Never)
    }

    /// The next message, waiting at most `timeout` (`Timeout`).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Received<'_, T>, RecvError> {
        self.recv_with(Patience::timeout(timeout))
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
    producer: &'a mut RawProducer,
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
    /// `pos` must come from the producer's last reservation, for a payload of `size_of::<T>()`
    /// bytes aligned to at least `align_of::<T>()`, with nothing published since.
    #[inline]
    pub(crate) unsafe fn new(producer: &'a mut RawProducer, pos: u64) -> Self {
        let ptr = producer.payload(pos).cast::<T>();
        debug_assert_eq!(ptr.as_ptr() as usize % core::mem::align_of::<T>(), 0);
        debug_assert_eq!(ptr.as_ptr() as usize % RECORD_ALIGN, 0);
        Loan { producer, pos, ptr }
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
        self.producer.cuda_device_ptr(self.ptr.cast())
    }

    /// Publishes the message. Its header gets `T::TYPE_ID`, the next sequence number and (if the
    /// channel has timestamps) the send time.
    #[inline]
    pub fn send(self) {
        self.producer
            .commit(self.pos, core::mem::size_of::<T>(), T::TYPE_ID);
    }
}

impl<T> Deref for Loan<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: `ptr` points to `size_of::<T>()` initialised bytes (the ring is zero-filled at
        // creation and only ever holds Pod bytes), aligned for `T`, inside a record reserved for
        // this loan: the consumer does not read it before `send`.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> DerefMut for Loan<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes the access exclusive, and any bytes written
        // through a `T: Pod` keep the memory initialised.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T: fmt::Debug> fmt::Debug for Loan<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Loan").field(&**self).finish()
    }
}

/// A message received from a channel of `T`s, read in place: dereferences to the `T` in channel
/// memory. Its space goes back to the producer when it is dropped.
pub struct Received<'a, T> {
    consumer: &'a mut RawConsumer,
    peeked: Peeked,
    _t: PhantomData<&'a T>,
}

impl<T> Received<'_, T> {
    /// The message's header: sequence number, send timestamp, type id, length.
    #[inline]
    pub fn header(&self) -> &MessageHeader {
        // SAFETY: released only when `self` drops.
        unsafe { self.peeked.header() }
    }

    /// The device address of the received payload, for a channel built with
    /// [`cuda_host_register(true)`](crate::ChannelBuilder::cuda_host_register): a GPU copy or
    /// kernel can read the message there in place (finish that work before dropping `self`,
    /// which hands the space back to the producer). Feature `cuda`.
    ///
    /// # Errors
    /// [`SlabError::CudaUnavailable`](crate::SlabError::CudaUnavailable) if the channel's slab is
    /// not registered in this process; [`SlabError::CudaRegister`](crate::SlabError::CudaRegister)
    /// if the driver refuses. The address comes from the one the driver gave when the channel was
    /// built: no driver call here.
    #[cfg(feature = "cuda")]
    pub fn cuda_device_ptr(&self) -> Result<u64, crate::SlabError> {
        self.consumer.cuda_device_ptr(self.peeked.payload())
    }
}

impl<T> Deref for Received<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: `peek` checked that the record lies inside the region and the published bytes,
        // that its type id is `T::TYPE_ID`, its length `size_of::<T>()` and its payload aligned
        // for `T`; any bytes are a valid `T` (`Pod`). The Acquire load in `peek` made them
        // visible; the producer does not write them until we release them on drop.
        unsafe { self.peeked.payload().cast::<T>().as_ref() }
    }
}

impl<T> Drop for Received<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.consumer.release(self.peeked.end);
    }
}

impl<T: fmt::Debug> fmt::Debug for Received<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Received")
            .field("header", self.header())
            .field("message", &**self)
            .finish()
    }
}
