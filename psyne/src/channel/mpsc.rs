//! Many producers, one consumer: [`Channel::mpsc`] (the protocol and why it is one lane per
//! producer: `crate::ring`'s `mpsc.rs`, summarised in [`MpscBuilder`]).

use super::end::{Patience, Receiver, await_peek};
use super::raw::RawProducer;
use super::typed::{Loan, Producer};
use super::{
    Capacity, Channel, ChannelBuilder, ChannelError, ConsumerStats, Options, ProducerStats,
    Received, RecvError, SendError,
};
use crate::message::Message;
use crate::ring::mpsc::{MpscConsumer as MpscCursor, consumer_slot, lane};
use crate::ring::spsc::SpscProducer;
use crate::ring::{
    ChannelIdentity, Creator, MAX_PRODUCERS, OpenFailure, ProcessStamp, Ring, Topology,
};
use crate::slab::Slab;
use crate::transport::shm::{CreateError, Local, OpenError, create_channel, open_channel};
use core::fmt;
use core::marker::PhantomData;
use core::time::Duration;
use std::sync::Arc;

/// Builder of a many-producers, one-consumer channel; see [`Channel::mpsc`].
///
/// Each producer has a **lane** of its own: a ring region of `capacity` messages (capacity is
/// **per producer**), its own place in the control block, and the consumer polls the lanes
/// round-robin. So no producer ever waits for another or shares a cache line with one, a
/// producer stalled or killed in the middle of a message costs only that message, per-producer
/// order is kept (messages of different producers have no common order), and a message at the
/// head of a lane is received within `max_producers` receives however busy the other lanes are.
/// Memory: `max_producers` regions. Defaults: 256 messages per producer, 8 producers, the
/// memory options of [`ChannelBuilder`].
#[derive(Debug, Clone, Copy)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct MpscBuilder<T> {
    inner: ChannelBuilder<T>,
    max_producers: usize,
}

impl<T: Message> Channel<T> {
    /// A builder for a channel from many producers (threads, or processes through
    /// [`MpscBuilder::shared`] and [`Channel::open_mpsc_producer`]) to one consumer: gradient
    /// aggregation, request collection.
    ///
    /// ```
    /// use psyne::{Channel, PsyneMessage};
    ///
    /// #[derive(Clone, Copy, PsyneMessage)]
    /// #[repr(C)]
    /// struct Gradient {
    ///     grad: [f32; 4],
    /// }
    ///
    /// let (tx, mut rx) = Channel::<Gradient>::mpsc().capacity(8).max_producers(2).build()?;
    /// let tx2 = tx.try_clone()?;
    /// let workers: Vec<_> = [tx, tx2]
    ///     .into_iter()
    ///     .enumerate()
    ///     .map(|(w, mut tx)| {
    ///         std::thread::spawn(move || -> Result<(), psyne::SendError> {
    ///             let mut g = tx.allocate_zeroed()?; // in ring memory
    ///             g.grad = [w as f32 + 1.0; 4];
    ///             g.send();
    ///             Ok(())
    ///         })
    ///     })
    ///     .collect();
    /// let mut sum = [0.0f32; 4];
    /// for _ in 0..2 {
    ///     let g = rx.recv()?; // read in place; g.producer() says which worker
    ///     for (s, x) in sum.iter_mut().zip(g.grad) {
    ///         *s += x;
    ///     }
    /// }
    /// for w in workers {
    ///     w.join().unwrap()?;
    /// }
    /// assert_eq!(sum, [3.0; 4]);
    /// assert!(rx.recv().is_err()); // every producer is gone: Disconnected
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn mpsc() -> MpscBuilder<T> {
        MpscBuilder {
            inner: Channel::<T>::builder(),
            max_producers: 8,
        }
    }

    /// Opens a producer of the shared multi-producer channel `name` (created with
    /// `Channel::<T>::mpsc().shared(name).create_consumer()`), in the first free producer place:
    /// one never used, or one whose producer dropped or died (its lane continues after the
    /// last message that producer published).
    ///
    /// # Errors
    /// [`OpenError::TooManyProducers`] when every place is held by a live producer; otherwise
    /// as [`Channel::open_producer`] (with [`OpenError::TopologyMismatch`] for a channel that is
    /// not multi-producer).
    pub fn open_mpsc_producer(name: &str) -> Result<MpscProducer<T>, OpenError> {
        let (ring, slot, _) = open_channel(
            name,
            Topology::Mpsc { producers: 0 },
            &ChannelIdentity::of::<T>(),
            Local::AnyProducer,
            &Slab::builder(0),
        )?;
        MpscProducer::in_slot(ring, slot).map_err(|what| OpenError::Corrupted { what })
    }
}

impl<T: Message> MpscBuilder<T> {
    /// Room for at least `messages` messages in flight **per producer**.
    pub fn capacity(mut self, messages: usize) -> Self {
        self.inner.capacity = Capacity::Messages(messages);
        self
    }

    /// A lane of at least `bytes` bytes per producer (rounded up to a power of two).
    pub fn capacity_bytes(mut self, bytes: usize) -> Self {
        self.inner.capacity = Capacity::Bytes(bytes);
        self
    }

    /// The most producers at once (default 8, at most [`crate::ring::MAX_PRODUCERS`]): one lane
    /// each. A dropped producer's place is reused by the next [`MpscProducer::try_clone`] (or,
    /// shared, by the next [`Channel::open_mpsc_producer`]).
    pub fn max_producers(mut self, producers: usize) -> Self {
        self.max_producers = producers;
        self
    }

    super::slab_options!(inner.opts);

    /// The topology, after checking the producer count.
    fn topology(&self) -> Result<Topology, ChannelError> {
        if self.max_producers == 0 || self.max_producers > MAX_PRODUCERS {
            return Err(ChannelError::InvalidProducerCount {
                requested: self.max_producers,
                max: MAX_PRODUCERS,
            });
        }
        Ok(Topology::Mpsc {
            producers: self.max_producers,
        })
    }

    /// Maps the slab, initialises the lanes and returns the consumer and a first producer
    /// (more with [`MpscProducer::try_clone`]).
    pub fn build(self) -> Result<(MpscProducer<T>, MpscConsumer<T>), ChannelError> {
        let topology = self.topology()?;
        let region = self.inner.region()?;
        let opts: Options = self.inner.opts;
        let consumer = consumer_slot(self.max_producers);
        let ring = Ring::create(
            opts.slab_for(topology, region).build()?,
            opts.config_for(topology, region),
            &ChannelIdentity::of::<T>(),
            Some(Creator {
                me: in_process(),
                pid_namespace: 0,
                slot: consumer,
                shared: false,
            }),
        );
        let rx = MpscConsumer::new(MpscCursor::new(Arc::clone(&ring), self.max_producers));
        let tx = MpscProducer::claim_in(&ring).map_err(|_| ChannelError::TooManyProducers {
            max: self.max_producers,
        })?;
        Ok((tx, rx))
    }

    /// Makes the channel a named shared channel, `/dev/shm/<name>`: finish with
    /// [`SharedMpscBuilder::create_consumer`]; producers in other processes (or this one) open
    /// places with [`Channel::open_mpsc_producer`].
    pub fn shared(self, name: &str) -> SharedMpscBuilder<T> {
        SharedMpscBuilder {
            builder: self,
            name: name.to_owned(),
        }
    }
}

/// The producers (lanes) of `ring`.
fn producers_of(ring: &Ring) -> usize {
    match ring.topology() {
        Topology::Mpsc { producers } => producers,
        Topology::Spsc | Topology::Broadcast { .. } => 1,
    }
}

/// Claims the first free producer place of the in-process multi-producer `ring` (never used,
/// or its producer dropped) and returns its index and a cursor continuing its lane.
fn claim_lane(ring: &Arc<Ring>) -> Result<(usize, SpscProducer), ChannelError> {
    let producers = producers_of(ring);
    let full = ChannelError::TooManyProducers { max: producers };
    for slot in 0..producers {
        match ring.claim(slot, in_process(), crate::transport::shm::process_alive) {
            Ok(_) => {
                let cursor = SpscProducer::recover_lane(Arc::clone(ring), lane(producers, slot))
                    .map_err(|_| full.clone())?;
                return Ok((slot, cursor));
            }
            Err(OpenFailure::AlreadyConnected { .. }) => continue,
            Err(_) => break,
        }
    }
    Err(full)
}

/// This process as an in-process ring records it (no start time: never checked).
pub(super) fn in_process() -> ProcessStamp {
    ProcessStamp {
        pid: std::process::id(),
        start: 0,
    }
}

/// Builder of a shared multi-producer channel; see [`MpscBuilder::shared`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `create_consumer` is called"]
pub struct SharedMpscBuilder<T> {
    builder: MpscBuilder<T>,
    name: String,
}

impl<T: Message> SharedMpscBuilder<T> {
    /// Creates the channel `/dev/shm/<name>` and returns its consumer; producers attach with
    /// [`Channel::open_mpsc_producer`] (up to `max_producers` at once). Dropping the consumer
    /// removes the name.
    ///
    /// # Errors
    /// As [`SharedChannelBuilder::create_consumer`](crate::SharedChannelBuilder::create_consumer).
    pub fn create_consumer(self) -> Result<MpscConsumer<T>, CreateError> {
        let topology = self.builder.topology()?;
        let region = self.builder.inner.region()?;
        let opts = self.builder.inner.opts;
        let ring = create_channel(
            &self.name,
            opts.slab_for(topology, region),
            opts.config_for(topology, region),
            &ChannelIdentity::of::<T>(),
            consumer_slot(self.builder.max_producers),
        )?;
        Ok(MpscConsumer::new(MpscCursor::new(
            ring,
            self.builder.max_producers,
        )))
    }
}

/// One producer of a multi-producer channel: the same in-place [`Loan`]s as [`Producer`]. Its
/// place (lane) is freed when it drops.
pub struct MpscProducer<T> {
    inner: Producer<T>,
    index: usize,
}

impl<T: Message> MpscProducer<T> {
    /// A producer in slot `slot` of `ring` (claimed by the caller), continuing its lane.
    fn in_slot(ring: Arc<Ring>, slot: usize) -> Result<Self, &'static str> {
        let producers = producers_of(&ring);
        let cursor = SpscProducer::recover_lane(ring, lane(producers, slot))?;
        Ok(MpscProducer {
            inner: Producer::new(RawProducer::new(cursor)),
            index: slot,
        })
    }

    /// Claims the first free producer place of the in-process `ring`.
    fn claim_in(ring: &Arc<Ring>) -> Result<Self, ChannelError> {
        let (index, cursor) = claim_lane(ring)?;
        Ok(MpscProducer {
            inner: Producer::new(RawProducer::new(cursor)),
            index,
        })
    }

    /// Another producer of the same channel, in the first free place.
    ///
    /// # Errors
    /// [`ChannelError::TooManyProducers`] when `max_producers` producers are alive.
    pub fn try_clone(&self) -> Result<MpscProducer<T>, ChannelError> {
        Self::claim_in(self.inner.raw_end().cursor().ring())
    }

    /// This producer's place: what [`Received::producer`] reports for its messages.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Borrows the next slot of this producer's lane, waiting for space if needed (see
    /// [`Producer::allocate`]).
    #[inline]
    pub fn allocate(&mut self) -> Result<Loan<'_, T>, SendError> {
        self.inner.allocate()
    }

    /// Like [`allocate`](Self::allocate), but fails with `Full` instead of waiting.
    #[inline]
    pub fn try_allocate(&mut self) -> Result<Loan<'_, T>, SendError> {
        self.inner.try_allocate()
    }

    /// Like [`allocate`](Self::allocate), but fails with `Timeout` after `timeout`.
    pub fn allocate_timeout(&mut self, timeout: Duration) -> Result<Loan<'_, T>, SendError> {
        self.inner.allocate_timeout(timeout)
    }

    /// Like [`allocate`](Self::allocate), but awaits space in this producer's lane (see
    /// [`Producer::allocate_async`]). Cancellation-safe.
    #[inline(always)]
    pub fn allocate_async(
        &mut self,
    ) -> impl core::future::Future<Output = Result<Loan<'_, T>, SendError>> + '_ {
        self.inner.allocate_async()
    }

    /// Like [`send`](Self::send), but awaits space.
    pub async fn send_async(&mut self, value: &T) -> Result<(), SendError> {
        self.inner.send_async(value).await
    }

    /// Like [`allocate`](Self::allocate), with the message zeroed.
    pub fn allocate_zeroed(&mut self) -> Result<Loan<'_, T>, SendError> {
        self.inner.allocate_zeroed()
    }

    /// Copies `value` into the lane and publishes it, waiting for space if needed.
    pub fn send(&mut self, value: &T) -> Result<(), SendError> {
        self.inner.send(value)
    }

    /// Like [`send`](Self::send), but fails with `Full` instead of waiting.
    pub fn try_send(&mut self, value: &T) -> Result<(), SendError> {
        self.inner.try_send(value)
    }

    /// Like [`send`](Self::send), but fails with `Timeout` after `timeout`.
    pub fn send_timeout(&mut self, value: &T, timeout: Duration) -> Result<(), SendError> {
        self.inner.send_timeout(value, timeout)
    }

    /// Whether the consumer is gone.
    pub fn is_disconnected(&self) -> bool {
        self.inner.is_disconnected()
    }

    /// This producer's counters.
    pub fn stats(&self) -> ProducerStats {
        self.inner.stats()
    }

    /// Size of this producer's lane in bytes.
    pub fn capacity_bytes(&self) -> usize {
        self.inner.capacity_bytes()
    }
}

impl<T> fmt::Debug for MpscProducer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MpscProducer")
            .field("index", &self.index)
            .field("inner", &self.inner)
            .finish()
    }
}

/// The consumer of a multi-producer channel: receives from every producer's lane in place,
/// round-robin.
pub struct MpscConsumer<T> {
    end: Receiver<MpscCursor>,
    _t: PhantomData<T>,
}

impl<T: Message> MpscConsumer<T> {
    /// What every record must be: `T::TYPE_ID`, `size_of::<T>()` bytes, aligned for `T`.
    const IDENTITY: ChannelIdentity = ChannelIdentity::of::<T>();

    fn new(mut cursor: MpscCursor) -> Self {
        if let Some(size) = crate::ring::record_size(core::mem::size_of::<T>()) {
            cursor.expect_records_of(size);
        }
        MpscConsumer {
            end: Receiver::new(cursor),
            _t: PhantomData,
        }
    }

    #[inline(always)]
    fn recv_with(&mut self, patience: Patience) -> Result<Received<'_, T>, RecvError> {
        let peeked = self.end.peek(patience, Some(&Self::IDENTITY))?;
        Ok(Received::new(self.end.release_handle(&peeked), peeked))
    }

    /// The next message of any producer, waiting for one if needed;
    /// [`Received::producer`] says which. Fails with `Disconnected` once every producer that
    /// attached is gone and everything they sent was received.
    #[inline]
    pub fn recv(&mut self) -> Result<Received<'_, T>, RecvError> {
        self.recv_with(Patience::Forever)
    }

    /// Like [`recv`](Self::recv), but awaits a message of any producer instead of blocking
    /// the thread (see [`Consumer::recv_async`](crate::Consumer::recv_async)).
    /// Cancellation-safe.
    pub async fn recv_async(&mut self) -> Result<Received<'_, T>, RecvError> {
        let peeked = await_peek!(self.end, Some(&Self::IDENTITY))?;
        Ok(Received::new(self.end.release_handle(&peeked), peeked))
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

    /// Copies of the messages waiting now (see [`Consumer::try_iter`](crate::Consumer::try_iter)).
    pub fn try_iter(&mut self) -> MpscTryIter<'_, T> {
        MpscTryIter { consumer: self }
    }

    /// Copies of the messages as they arrive, until every producer is gone.
    pub fn iter(&mut self) -> MpscIter<'_, T> {
        MpscIter { consumer: self }
    }

    /// Messages waiting in every lane (a snapshot).
    pub fn len(&self) -> usize {
        self.end.cursor_len()
    }

    /// Whether no message is waiting now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether every producer that attached is gone (messages may still be waiting).
    pub fn is_disconnected(&self) -> bool {
        self.end.is_disconnected()
    }

    /// The consumer's counters (all producers together).
    pub fn stats(&self) -> ConsumerStats {
        self.end.stats()
    }
}

impl<T> fmt::Debug for MpscConsumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MpscConsumer").finish_non_exhaustive()
    }
}

/// Copies of the messages waiting now; see [`MpscConsumer::try_iter`].
#[derive(Debug)]
pub struct MpscTryIter<'a, T> {
    consumer: &'a mut MpscConsumer<T>,
}

impl<T: Message> Iterator for MpscTryIter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.consumer.try_recv().ok().map(|m| *m)
    }
}

/// Copies of the messages as they arrive; see [`MpscConsumer::iter`].
#[derive(Debug)]
pub struct MpscIter<'a, T> {
    consumer: &'a mut MpscConsumer<T>,
}

impl<T: Message> Iterator for MpscIter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.consumer.recv().ok().map(|m| *m)
    }
}

/// Builder of a raw (multi-type) many-producers, one-consumer channel; see
/// [`Channel::raw_mpsc`]. As [`MpscBuilder`], with a byte capacity per producer (default 64 KiB)
/// and, of the memory options, only the defaults of [`Channel::raw`] (in-process only).
#[derive(Debug, Clone, Copy)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct RawMpscBuilder {
    inner: super::RawChannelBuilder,
    max_producers: usize,
}

impl Channel<()> {
    /// A builder for a raw channel (any message types and byte payloads, as [`Channel::raw`])
    /// from many producers to one consumer.
    ///
    /// ```
    /// let (mut tx, mut rx) = psyne::Channel::raw_mpsc().max_producers(2).build()?;
    /// let mut tx2 = tx.try_clone()?;
    /// tx.send_bytes(1, b"from 0")?;
    /// tx2.send_bytes(2, b"from 1")?;
    /// let mut got = Vec::new();
    /// for _ in 0..2 {
    ///     let m = rx.recv()?;
    ///     got.push((m.producer(), m.type_id(), m.bytes().to_vec()));
    /// }
    /// got.sort();
    /// assert_eq!(got, [(0, 1, b"from 0".to_vec()), (1, 2, b"from 1".to_vec())]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn raw_mpsc() -> RawMpscBuilder {
        RawMpscBuilder {
            inner: Channel::raw(),
            max_producers: 8,
        }
    }
}

impl RawMpscBuilder {
    /// A lane of at least `bytes` bytes per producer (see
    /// [`RawChannelBuilder::capacity_bytes`](super::RawChannelBuilder::capacity_bytes)).
    pub fn capacity_bytes(mut self, bytes: usize) -> Self {
        self.inner = self.inner.capacity_bytes(bytes);
        self
    }

    /// The most producers at once (default 8); see [`MpscBuilder::max_producers`].
    pub fn max_producers(mut self, producers: usize) -> Self {
        self.max_producers = producers;
        self
    }

    super::slab_options!(inner.opts);

    /// Maps the slab, initialises the lanes and returns the consumer and a first producer.
    pub fn build(self) -> Result<(RawMpscProducer, RawMpscConsumer), ChannelError> {
        if self.max_producers == 0 || self.max_producers > MAX_PRODUCERS {
            return Err(ChannelError::InvalidProducerCount {
                requested: self.max_producers,
                max: MAX_PRODUCERS,
            });
        }
        let topology = Topology::Mpsc {
            producers: self.max_producers,
        };
        let region = super::region_for_bytes(self.inner.capacity_bytes)?;
        let opts = self.inner.opts;
        let ring = Ring::create(
            opts.slab_for(topology, region).build()?,
            opts.config_for(topology, region),
            &ChannelIdentity::RAW,
            Some(Creator {
                me: in_process(),
                pid_namespace: 0,
                slot: consumer_slot(self.max_producers),
                shared: false,
            }),
        );
        let rx = RawMpscConsumer {
            end: Receiver::new(MpscCursor::new(Arc::clone(&ring), self.max_producers)),
        };
        let tx = RawMpscProducer::claim_in(&ring)?;
        Ok((tx, rx))
    }
}

/// One producer of a raw multi-producer channel: the methods of [`RawProducer`] (through
/// `Deref`), plus [`try_clone`](Self::try_clone) and [`index`](Self::index).
pub struct RawMpscProducer {
    inner: RawProducer,
    index: usize,
}

impl RawMpscProducer {
    /// Claims the first free producer place of the in-process `ring`.
    fn claim_in(ring: &Arc<Ring>) -> Result<Self, ChannelError> {
        let (index, cursor) = claim_lane(ring)?;
        Ok(RawMpscProducer {
            inner: RawProducer::new(cursor),
            index,
        })
    }

    /// Another producer of the same channel, in the first free place.
    ///
    /// # Errors
    /// [`ChannelError::TooManyProducers`] when `max_producers` producers are alive.
    pub fn try_clone(&self) -> Result<RawMpscProducer, ChannelError> {
        Self::claim_in(self.inner.end.cursor().ring())
    }

    /// This producer's place: what [`RawReceived::producer`](super::RawReceived::producer)
    /// reports for its messages.
    pub fn index(&self) -> usize {
        self.index
    }
}

impl core::ops::Deref for RawMpscProducer {
    type Target = RawProducer;
    fn deref(&self) -> &RawProducer {
        &self.inner
    }
}

impl core::ops::DerefMut for RawMpscProducer {
    fn deref_mut(&mut self) -> &mut RawProducer {
        &mut self.inner
    }
}

impl fmt::Debug for RawMpscProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawMpscProducer")
            .field("index", &self.index)
            .field("inner", &self.inner)
            .finish()
    }
}

/// The consumer of a raw multi-producer channel.
pub struct RawMpscConsumer {
    end: Receiver<MpscCursor>,
}

impl RawMpscConsumer {
    #[inline]
    fn recv_with(&mut self, patience: Patience) -> Result<super::RawReceived<'_>, RecvError> {
        let peeked = self.end.peek(patience, None)?;
        Ok(super::RawReceived::new(
            self.end.release_handle(&peeked),
            peeked,
        ))
    }

    /// The next message of any producer, waiting for one if needed.
    #[inline]
    pub fn recv(&mut self) -> Result<super::RawReceived<'_>, RecvError> {
        self.recv_with(Patience::Forever)
    }

    /// Like [`recv`](Self::recv), but awaits a message instead of blocking the thread.
    /// Cancellation-safe.
    pub async fn recv_async(&mut self) -> Result<super::RawReceived<'_>, RecvError> {
        let peeked = await_peek!(self.end, None)?;
        Ok(super::RawReceived::new(
            self.end.release_handle(&peeked),
            peeked,
        ))
    }

    /// The next message, or `Empty` (or `Disconnected`) at once.
    #[inline]
    pub fn try_recv(&mut self) -> Result<super::RawReceived<'_>, RecvError> {
        self.recv_with(Patience::Never)
    }

    /// The next message, waiting at most `timeout` (`Timeout`).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<super::RawReceived<'_>, RecvError> {
        self.recv_with(Patience::timeout(timeout))
    }

    /// Whether every producer that attached is gone (messages may still be waiting).
    pub fn is_disconnected(&self) -> bool {
        self.end.is_disconnected()
    }

    /// The consumer's counters.
    pub fn stats(&self) -> ConsumerStats {
        self.end.stats()
    }
}

impl fmt::Debug for RawMpscConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawMpscConsumer").finish_non_exhaustive()
    }
}
