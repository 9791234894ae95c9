//! One producer, many consumers: [`Channel::broadcast`]. Every consumer reads every message in
//! place, in the one copy the producer wrote (the protocol: `crate::ring`'s `broadcast.rs`).
//!
//! The ends are the end layer's [`Sender`] and [`Receiver`] over the broadcast cursors, so
//! waiting, timeouts, liveness checks of consumers in other processes, counters and error
//! mapping are those of every other channel. What this file adds: the builders, the typed and
//! raw ends, subscribing, and the one piece of policy that needs a clock:
//! [`Backpressure::DropLagging`]'s "waited longer than `after`", decided here (the ring layer
//! has no clock) and carried out by the ring cursor's cut-off.

use super::end::{Patience, Receiver, RecvCursor, SendCursor, Sender, await_peek, await_reserve};
use super::mpsc::in_process;
use super::raw::RawReceived;
use super::typed::Received;
use super::{
    Capacity, Channel, ChannelBuilder, ChannelError, ConsumerStats, Options, ProducerStats,
    RecvError, SendError,
};
use crate::message::{Message, MessageHeader};
use crate::ring::broadcast::{BroadcastConsumer as ConsumerCursor, BroadcastProducer as Gate};
use crate::ring::spsc::{PeekError, ReserveError, SpscConsumer};
use crate::ring::{
    self, ChannelIdentity, Creator, MAX_CONSUMERS, OpenFailure, Peeked, ProcessStamp, RECORD_ALIGN,
    Ring, Topology,
};
use crate::slab::Slab;
use crate::sync::Futex;
use crate::transport::shm::{
    CreateError, Local, OpenError, create_channel, open_channel, process_alive, this_process,
};
use crate::wait::Notifier;
use core::fmt;
use core::marker::PhantomData;
use core::ops::Range;
use core::ptr::NonNull;
use core::time::Duration;
use std::sync::Arc;
use std::time::Instant;

/// What a broadcast producer does when a consumer keeps the ring full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Backpressure {
    /// Wait for the slowest consumer (the default): a message's space is reused only after
    /// every consumer has released it.
    #[default]
    Block,
    /// Wait at most `after` for a consumer that keeps the ring full, then cut it off: it stops
    /// gating the producer, its next receive returns [`RecvError::Lagged`] (the messages it had
    /// not received are lost to it), and after that it receives the messages sent after the
    /// producer readmits it (at the producer's next send). The others go on.
    ///
    /// A consumer that holds a [`Received`] is never cut off while it holds it (its bytes are
    /// never reused under it): it gates as with `Block` until it releases. The time counts
    /// from the first reservation that found the ring full, across `try_` calls, until one
    /// succeeds; each cut-off starts it again for the next-slowest consumer. Consumers then
    /// take one compare-and-swap per receive (to hold their position while they read), which
    /// `Block` does without.
    DropLagging {
        /// How long the producer waits for the slowest consumer.
        after: Duration,
    },
}

/// Builder of a one-producer, many-consumers channel; see [`Channel::broadcast`].
///
/// Defaults: room for 256 messages, 4 consumer places, [`Backpressure::Block`], the memory
/// options of [`ChannelBuilder`].
#[derive(Debug, Clone, Copy)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct BroadcastBuilder<T> {
    inner: ChannelBuilder<T>,
    max_consumers: usize,
    backpressure: Backpressure,
}

impl<T: Message> Channel<T> {
    /// A builder for a channel from one producer to many consumers (threads, or processes
    /// through [`BroadcastBuilder::shared`] and [`Channel::open_broadcast_consumer`]): every
    /// consumer receives every message, read in place from the one copy in ring memory.
    ///
    /// ```
    /// use psyne::{Channel, PsyneMessage, RecvError};
    ///
    /// #[derive(Clone, Copy, PsyneMessage)]
    /// #[repr(C)]
    /// struct Activation {
    ///     x: [f32; 8],
    /// }
    ///
    /// let (mut tx, mut rx) = Channel::<Activation>::broadcast()
    ///     .capacity(64)
    ///     .max_consumers(4)
    ///     .build()?;
    /// let mut rx2 = tx.subscribe()?; // sees every message sent from now on
    /// let mut m = tx.allocate()?; // written once, in ring memory
    /// m.x = [1.5; 8];
    /// m.send();
    /// let (a, b) = (rx.recv()?, rx2.recv()?); // both read the same bytes in place
    /// assert_eq!(a.x, b.x);
    /// assert!(core::ptr::eq(&*a, &*b));
    /// drop((a, b));
    /// drop(tx);
    /// assert!(matches!(rx.recv(), Err(RecvError::Disconnected)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn broadcast() -> BroadcastBuilder<T> {
        BroadcastBuilder {
            inner: Channel::<T>::builder(),
            max_consumers: 4,
            backpressure: Backpressure::Block,
        }
    }

    /// Opens a consumer of the shared broadcast channel `name` (created with
    /// `Channel::<T>::broadcast().shared(name).create_producer()`), in the first free consumer
    /// place. It receives the messages the producer sends from its next send on; until then
    /// `recv` waits (and never hangs on a producer that is gone: `Disconnected`).
    ///
    /// # Errors
    /// [`OpenError::TooManyConsumers`] when every place is held by a live consumer; otherwise
    /// as [`Channel::open_consumer`] (with [`OpenError::TopologyMismatch`] for a channel that is
    /// not a broadcast one).
    pub fn open_broadcast_consumer(name: &str) -> Result<BroadcastConsumer<T>, OpenError> {
        let (ring, slot, _) = open_channel(
            name,
            Topology::Broadcast {
                consumers: 0,
                drop_lagging: false,
            },
            &ChannelIdentity::of::<T>(),
            Local::AnyConsumer,
            &Slab::builder(0),
        )?;
        Ok(BroadcastConsumer::new(joined(ring, slot)))
    }
}

/// The consumer cursor of `slot` (claimed by this process) of a broadcast `ring`: asks to join.
fn joined(ring: Arc<Ring>, slot: usize) -> ConsumerCursor {
    let hold = matches!(
        ring.topology(),
        Topology::Broadcast {
            drop_lagging: true,
            ..
        }
    );
    ConsumerCursor::join(ring, slot, hold)
}

/// Claims the first free consumer place of `ring` for this process and joins it.
fn subscribe_to(ring: &Arc<Ring>, consumers: usize) -> Result<ConsumerCursor, ChannelError> {
    let me = if ring.is_shared() {
        this_process()
    } else {
        in_process()
    };
    // In-process, every holder is this process: no `/proc` read (and no allocation).
    let alive: fn(ProcessStamp) -> bool = if ring.is_shared() {
        process_alive
    } else {
        |p| p.pid == std::process::id()
    };
    for slot in 1..=consumers {
        match ring.claim(slot, me, alive) {
            Ok(_) => return Ok(joined(Arc::clone(ring), slot)),
            Err(OpenFailure::AlreadyConnected { .. }) => continue,
            Err(_) => break,
        }
    }
    Err(ChannelError::TooManyConsumers { max: consumers })
}

/// The topology for `consumers` places and `backpressure`, after checking the count.
fn topology(consumers: usize, backpressure: Backpressure) -> Result<Topology, ChannelError> {
    if consumers == 0 || consumers > MAX_CONSUMERS {
        return Err(ChannelError::InvalidConsumerCount {
            requested: consumers,
            max: MAX_CONSUMERS,
        });
    }
    Ok(Topology::Broadcast {
        consumers,
        drop_lagging: matches!(backpressure, Backpressure::DropLagging { .. }),
    })
}

/// Maps an in-process broadcast ring and returns its producer cursor and a first consumer.
fn build_in_process(
    opts: &Options,
    topology: Topology,
    region: usize,
    identity: &ChannelIdentity,
    backpressure: Backpressure,
) -> Result<(ProducerCursor, ConsumerCursor), ChannelError> {
    let ring = Ring::create(
        opts.slab_for(topology, region).build()?,
        opts.config_for(topology, region),
        identity,
        Some(Creator {
            me: in_process(),
            pid_namespace: 0,
            slot: ring::broadcast::PRODUCER,
            shared: false,
        }),
    );
    let tx = ProducerCursor::new(Arc::clone(&ring), backpressure)?;
    let rx = subscribe_to(&ring, tx.gate.consumers())?;
    Ok((tx, rx))
}

impl<T: Message> BroadcastBuilder<T> {
    /// Room for at least `messages` messages in flight (the slowest consumer's backlog).
    pub fn capacity(mut self, messages: usize) -> Self {
        self.inner.capacity = Capacity::Messages(messages);
        self
    }

    /// A ring of at least `bytes` bytes (rounded up to a power of two).
    pub fn capacity_bytes(mut self, bytes: usize) -> Self {
        self.inner.capacity = Capacity::Bytes(bytes);
        self
    }

    /// The most consumers at once (default 4, at most [`crate::ring::MAX_CONSUMERS`]),
    /// counting the one [`build`](Self::build) returns. A dropped consumer's place is reused
    /// by the next [`BroadcastProducer::subscribe`] (or, shared, the next
    /// [`Channel::open_broadcast_consumer`]).
    pub fn max_consumers(mut self, consumers: usize) -> Self {
        self.max_consumers = consumers;
        self
    }

    /// What the producer does when a consumer keeps the ring full (default
    /// [`Backpressure::Block`]).
    pub fn backpressure(mut self, backpressure: Backpressure) -> Self {
        self.backpressure = backpressure;
        self
    }

    super::slab_options!(inner.opts);

    /// Maps the slab and returns the producer and a first consumer (more with
    /// [`BroadcastProducer::subscribe`]).
    ///
    /// # Errors
    /// As [`ChannelBuilder::build`], plus [`ChannelError::InvalidConsumerCount`].
    pub fn build(self) -> Result<(BroadcastProducer<T>, BroadcastConsumer<T>), ChannelError> {
        let topology = topology(self.max_consumers, self.backpressure)?;
        let region = self.inner.region()?;
        let (tx, rx) = build_in_process(
            &self.inner.opts,
            topology,
            region,
            &ChannelIdentity::of::<T>(),
            self.backpressure,
        )?;
        Ok((BroadcastProducer::new(tx), BroadcastConsumer::new(rx)))
    }

    /// Makes the channel a named shared channel, `/dev/shm/<name>`: finish with
    /// [`SharedBroadcastBuilder::create_producer`]; consumers in other processes (or this one)
    /// open places with [`Channel::open_broadcast_consumer`].
    pub fn shared(self, name: &str) -> SharedBroadcastBuilder<T> {
        SharedBroadcastBuilder {
            builder: self,
            name: name.to_owned(),
        }
    }
}

/// Builder of a shared broadcast channel; see [`BroadcastBuilder::shared`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `create_producer` is called"]
pub struct SharedBroadcastBuilder<T> {
    builder: BroadcastBuilder<T>,
    name: String,
}

impl<T: Message> SharedBroadcastBuilder<T> {
    /// Creates the channel `/dev/shm/<name>` and returns its producer, with no consumer yet:
    /// consumers attach with [`Channel::open_broadcast_consumer`] (up to `max_consumers` at
    /// once; a consumer whose process dies is dropped from the set the producer waits for
    /// within about 10 ms of the producer finding the ring full). Dropping the producer
    /// removes the name; consumers then drain what was sent and see `Disconnected`.
    ///
    /// # Errors
    /// As [`SharedChannelBuilder::create_producer`](crate::SharedChannelBuilder::create_producer).
    pub fn create_producer(self) -> Result<BroadcastProducer<T>, CreateError> {
        let b = self.builder;
        let topology = topology(b.max_consumers, b.backpressure)?;
        let region = b.inner.region()?;
        let opts = b.inner.opts;
        let ring = create_channel(
            &self.name,
            opts.slab_for(topology, region),
            opts.config_for(topology, region),
            &ChannelIdentity::of::<T>(),
            ring::broadcast::PRODUCER,
        )?;
        let cursor = ProducerCursor::new(ring, b.backpressure)?;
        Ok(BroadcastProducer::new(cursor))
    }
}

/// The producer's cursor for the end layer: the ring's gate plus the drop-lagging clock.
#[derive(Debug)]
pub(crate) struct ProducerCursor {
    gate: Gate,
    /// `Some(after)` for [`Backpressure::DropLagging`].
    lag: Option<Duration>,
    /// When the current run of full reservations began (drop-lagging only).
    full_since: Option<Instant>,
}

impl ProducerCursor {
    fn new(ring: Arc<Ring>, backpressure: Backpressure) -> Result<Self, ChannelError> {
        let consumers = match ring.topology() {
            Topology::Broadcast { consumers, .. } => consumers,
            _ => 1,
        };
        let gate = Gate::new(ring, consumers)
            .map_err(|_| ChannelError::TooManyConsumers { max: consumers })?;
        Ok(ProducerCursor {
            gate,
            lag: match backpressure {
                Backpressure::Block => None,
                Backpressure::DropLagging { after } => Some(after),
            },
            full_since: None,
        })
    }

    /// The ring was full: on a drop-lagging channel, cuts off the slowest consumers once the
    /// run of full reservations has lasted `after`, and tries again.
    #[cold]
    #[inline(never)]
    fn full(&mut self, len: usize, align: usize) -> Result<u64, ReserveError> {
        let Some(after) = self.lag else {
            return Err(ReserveError::Full);
        };
        let now = Instant::now();
        let since = *self.full_since.get_or_insert(now);
        if now.saturating_duration_since(since) < after || self.gate.cut_off_slowest() == 0 {
            return Err(ReserveError::Full);
        }
        // The next-slowest consumer gets its own `after`.
        self.full_since = Some(now);
        let r = self.gate.try_reserve(len, align);
        if r.is_ok() {
            self.full_since = None;
        }
        r
    }
}

impl SendCursor for ProducerCursor {
    #[inline(always)]
    fn try_reserve(&mut self, len: usize, align: usize) -> Result<u64, ReserveError> {
        match self.gate.try_reserve(len, align) {
            Ok(pos) => {
                self.full_since = None;
                Ok(pos)
            }
            Err(ReserveError::Full) => self.full(len, align),
            Err(e) => Err(e),
        }
    }
    #[inline(always)]
    fn take_published(&mut self) -> bool {
        self.gate.take_published()
    }
    fn published(&self) -> u64 {
        self.gate.published()
    }
    #[inline(always)]
    fn commit(&mut self, pos: u64, len: usize, align: usize, type_id: u64, timestamp_ns: u64) {
        self.gate.commit(pos, len, align, type_id, timestamp_ns)
    }
    #[inline(always)]
    fn payload(&self, pos: u64) -> NonNull<u8> {
        self.gate.payload(pos)
    }
    #[inline(always)]
    fn ring(&self) -> &Arc<Ring> {
        self.gate.ring()
    }
    /// Our own parked word (nobody sleeps on it for us): broadcast wakes its consumers through
    /// `notify_peers`.
    fn peer_parked(&self) -> &Futex {
        self.gate.ring().parked(ring::broadcast::PRODUCER)
    }
    fn own_slot(&self) -> usize {
        ring::broadcast::PRODUCER
    }
    /// Never: a consumer may subscribe at any time, and with none the ring is all free.
    fn is_disconnected(&self) -> bool {
        false
    }
    fn peer_slots(&self) -> Range<usize> {
        1..1 + self.gate.consumers()
    }
    fn close(&self) {
        self.gate.close()
    }
    #[inline(always)]
    fn notify_peers(&self, notifier: &mut Notifier) -> u64 {
        let ring = self.gate.ring();
        notifier.notify_many(Members(self.gate.members()).map(|slot| ring.parked(slot)))
    }
    fn notify_peers_final(&self, notifier: &mut Notifier) {
        let ring = self.gate.ring();
        notifier.notify_final_many(self.peer_slots().map(|slot| ring.parked(slot)));
    }
    /// Drop-lagging: nobody wakes a producer whose slowest consumer does nothing, so it looks
    /// at the clock at least every `PEER_POLL` (10 ms) while it waits.
    fn polls_while_waiting(&self) -> bool {
        self.lag.is_some()
    }
}

/// The slots of a member bit set.
struct Members(u64);

impl Iterator for Members {
    type Item = usize;
    #[inline(always)]
    fn next(&mut self) -> Option<usize> {
        if self.0 == 0 {
            return None;
        }
        let i = self.0.trailing_zeros() as usize;
        self.0 &= self.0 - 1;
        Some(1 + i)
    }
}

impl RecvCursor for ConsumerCursor {
    #[inline(always)]
    fn released(&self) -> u64 {
        self.released_messages()
    }
    fn try_peek(&mut self) -> Result<Peeked, PeekError> {
        ConsumerCursor::try_peek(self)
    }
    #[inline(always)]
    fn take_released(&mut self) -> u64 {
        u64::from(self.lane_mut().take_released())
    }
    #[inline(always)]
    fn lane_parked(&self, _lane: usize) -> &Futex {
        self.lane().peer_parked()
    }
    #[inline(always)]
    fn lane_mut(&mut self, _lane: usize) -> &mut SpscConsumer {
        ConsumerCursor::lane_mut(self)
    }
    #[inline(always)]
    fn set_waiting(&self, _waiting: bool) {}
    #[inline(always)]
    fn ring(&self) -> &Arc<Ring> {
        self.lane().ring()
    }
    fn own_slot(&self) -> usize {
        self.slot()
    }
    #[inline(always)]
    fn peer_closed(&self) -> bool {
        self.lane().producer_closed()
    }
    fn waiting(&self) -> usize {
        ConsumerCursor::waiting(self)
    }
    fn peer_slots(&self) -> Range<usize> {
        ring::broadcast::PRODUCER..ring::broadcast::PRODUCER + 1
    }
    fn close(&self) {
        ConsumerCursor::close(self)
    }
}

/// The producer of a broadcast channel: each message is written once, in ring memory, and
/// read in place by every consumer.
pub struct BroadcastProducer<T> {
    end: Sender<ProducerCursor>,
    _t: PhantomData<T>,
}

impl<T: Message> BroadcastProducer<T> {
    fn new(cursor: ProducerCursor) -> Self {
        BroadcastProducer {
            end: Sender::new(cursor),
            _t: PhantomData,
        }
    }

    /// A new consumer of this channel, in the first free place: it receives every message
    /// sent after this call (and none before).
    ///
    /// # Errors
    /// [`ChannelError::TooManyConsumers`] when `max_consumers` consumers are alive.
    pub fn subscribe(&self) -> Result<BroadcastConsumer<T>, ChannelError> {
        let cursor = self.end.cursor();
        subscribe_to(cursor.ring(), cursor.gate.consumers()).map(BroadcastConsumer::new)
    }

    /// Consumer places held by a live end now (a snapshot; a consumer in another process that
    /// died counts until a liveness check finds it, which the producer makes while it waits).
    pub fn consumers(&self) -> usize {
        let cursor = self.end.cursor();
        cursor
            .peer_slots()
            .filter(|&slot| cursor.ring().live(slot))
            .count()
    }

    /// The most consumers at once.
    pub fn max_consumers(&self) -> usize {
        self.end.cursor().gate.consumers()
    }

    #[inline(always)]
    fn loan(&mut self, patience: Patience) -> Result<BroadcastLoan<'_, T>, SendError> {
        let align = super::typed::align_of_payload::<T>();
        let pos = self
            .end
            .reserve(core::mem::size_of::<T>(), align, patience)?;
        let ptr = self.end.payload(pos).cast::<T>();
        debug_assert_eq!(ptr.as_ptr() as usize % core::mem::align_of::<T>(), 0);
        Ok(BroadcastLoan {
            end: &mut self.end,
            pos,
            ptr,
        })
    }

    /// Borrows the next slot of the ring, waiting for space if needed (for the slowest
    /// consumer, or as [`Backpressure`] says). The loan exposes the bytes the slot last held
    /// (any bytes are a valid `T`); write the message and [`BroadcastLoan::send`] it.
    ///
    /// Fails only with `Corrupted` (a shared channel's consumer process wrote an impossible
    /// position): a broadcast producer is never `Disconnected`.
    #[inline]
    pub fn allocate(&mut self) -> Result<BroadcastLoan<'_, T>, SendError> {
        self.loan(Patience::Forever)
    }

    /// Like [`allocate`](Self::allocate), but fails with `Full` instead of waiting.
    #[inline]
    pub fn try_allocate(&mut self) -> Result<BroadcastLoan<'_, T>, SendError> {
        self.loan(Patience::Never)
    }

    /// Like [`allocate`](Self::allocate), but fails with `Timeout` after `timeout`.
    pub fn allocate_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<BroadcastLoan<'_, T>, SendError> {
        self.loan(Patience::timeout(timeout))
    }

    /// Like [`allocate`](Self::allocate), but awaits space instead of blocking the thread: the
    /// future is woken when the slowest consumer releases room (see
    /// [`crate::wait::async_wait`]; works under any executor). Cancellation-safe: dropping the
    /// future reserves nothing and leaves no wake-up registration behind.
    pub async fn allocate_async(&mut self) -> Result<BroadcastLoan<'_, T>, SendError> {
        let len = core::mem::size_of::<T>();
        let align = super::typed::align_of_payload::<T>();
        let pos = await_reserve!(self.end, len, align)?;
        let ptr = self.end.payload(pos).cast::<T>();
        debug_assert_eq!(ptr.as_ptr() as usize % core::mem::align_of::<T>(), 0);
        Ok(BroadcastLoan {
            end: &mut self.end,
            pos,
            ptr,
        })
    }

    /// Like [`send`](Self::send), but awaits space (see [`allocate_async`](Self::allocate_async)).
    pub async fn send_async(&mut self, value: &T) -> Result<(), SendError> {
        let mut loan = self.allocate_async().await?;
        *loan = *value;
        loan.send();
        Ok(())
    }

    /// Like [`allocate`](Self::allocate), with the message zeroed.
    pub fn allocate_zeroed(&mut self) -> Result<BroadcastLoan<'_, T>, SendError> {
        let mut loan = self.allocate()?;
        *loan = T::zeroed();
        Ok(loan)
    }

    #[inline]
    fn send_with(&mut self, value: &T, patience: Patience) -> Result<(), SendError> {
        let mut loan = self.loan(patience)?;
        *loan = *value;
        loan.send();
        Ok(())
    }

    /// Copies `value` into the ring and publishes it to every consumer, waiting for space if
    /// needed.
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

    /// This end's counters (`wakeups` counts every consumer woken).
    pub fn stats(&self) -> ProducerStats {
        self.end.stats()
    }

    /// Size of the ring in bytes.
    pub fn capacity_bytes(&self) -> usize {
        self.end.region_len()
    }
}

impl<T> fmt::Debug for BroadcastProducer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BroadcastProducer")
            .field("stats", &self.end.stats())
            .finish_non_exhaustive()
    }
}

/// A slot of a broadcast ring lent to the producer: dereferences to a `T` in channel memory;
/// [`send`](Self::send) publishes it to every consumer, dropping it publishes nothing.
#[must_use = "dropping a loan publishes nothing; call `send`"]
pub struct BroadcastLoan<'a, T> {
    end: &'a mut Sender<ProducerCursor>,
    /// Header position of the reserved record.
    pos: u64,
    /// The payload, inside the reserved record.
    ptr: NonNull<T>,
}

impl<T: Message> BroadcastLoan<'_, T> {
    /// Publishes the message to every consumer.
    #[inline(always)]
    pub fn send(self) {
        self.end.commit(
            self.pos,
            core::mem::size_of::<T>(),
            super::typed::align_of_payload::<T>(),
            T::TYPE_ID,
        );
    }
}

super::typed_loan_access!(BroadcastLoan);

/// One consumer of a broadcast channel: receives every message sent after it subscribed, in
/// place, as the same [`Received`] as other channels.
pub struct BroadcastConsumer<T> {
    end: Receiver<ConsumerCursor>,
    _t: PhantomData<T>,
}

impl<T: Message> BroadcastConsumer<T> {
    /// What every record must be: `T::TYPE_ID`, `size_of::<T>()` bytes, aligned for `T`.
    const IDENTITY: ChannelIdentity = ChannelIdentity::of::<T>();

    fn new(cursor: ConsumerCursor) -> Self {
        BroadcastConsumer {
            end: Receiver::new(cursor),
            _t: PhantomData,
        }
    }

    #[inline(always)]
    fn recv_with(&mut self, patience: Patience) -> Result<Received<'_, T>, RecvError> {
        let peeked = self.end.peek(patience, Some(&Self::IDENTITY))?;
        Ok(Received::new(self.end.release_handle(&peeked), peeked))
    }

    /// The next message, waiting for one if needed. Its space goes back to the producer when
    /// every consumer has dropped its `Received` of it. Fails with `Disconnected` once the
    /// producer is gone and everything it sent (since this consumer joined) was received, with
    /// `Lagged` on a [`Backpressure::DropLagging`] channel that cut this consumer off, or with
    /// `Corrupted`.
    #[inline]
    pub fn recv(&mut self) -> Result<Received<'_, T>, RecvError> {
        self.recv_with(Patience::Forever)
    }

    /// Like [`recv`](Self::recv), but awaits the message instead of blocking the thread (see
    /// [`Consumer::recv_async`](crate::Consumer::recv_async)). Cancellation-safe.
    pub async fn recv_async(&mut self) -> Result<Received<'_, T>, RecvError> {
        let peeked = await_peek!(self.end, Some(&Self::IDENTITY))?;
        Ok(Received::new(self.end.release_handle(&peeked), peeked))
    }

    /// The next message, or `Empty` (or `Disconnected`, `Lagged`) at once.
    #[inline]
    pub fn try_recv(&mut self) -> Result<Received<'_, T>, RecvError> {
        self.recv_with(Patience::Never)
    }

    /// The next message, waiting at most `timeout` (`Timeout`).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Received<'_, T>, RecvError> {
        self.recv_with(Patience::timeout(timeout))
    }

    /// Copies of the messages waiting now (see [`Consumer::try_iter`](crate::Consumer::try_iter)):
    /// ends at the first error (`Empty`, `Disconnected`, `Lagged`...).
    pub fn try_iter(&mut self) -> BroadcastTryIter<'_, T> {
        BroadcastTryIter { consumer: self }
    }

    /// Copies of the messages as they arrive, until the producer is gone (or an error).
    pub fn iter(&mut self) -> BroadcastIter<'_, T> {
        BroadcastIter { consumer: self }
    }

    /// Messages published for this consumer and not yet received (a snapshot).
    pub fn len(&self) -> usize {
        self.end.cursor_len()
    }

    /// Whether no message is waiting now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the producer is gone (messages it sent may still be waiting). For a shared
    /// channel this also checks whether the producer's process died.
    pub fn is_disconnected(&self) -> bool {
        self.end.is_disconnected()
    }

    /// This consumer's counters.
    pub fn stats(&self) -> ConsumerStats {
        self.end.stats()
    }

    /// Size of the ring in bytes.
    pub fn capacity_bytes(&self) -> usize {
        self.end.region_len()
    }
}

impl<T> fmt::Debug for BroadcastConsumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BroadcastConsumer")
            .field("stats", &self.end.stats())
            .finish_non_exhaustive()
    }
}

/// Copies of the messages waiting now; see [`BroadcastConsumer::try_iter`].
#[derive(Debug)]
pub struct BroadcastTryIter<'a, T> {
    consumer: &'a mut BroadcastConsumer<T>,
}

impl<T: Message> Iterator for BroadcastTryIter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.consumer.try_recv().ok().map(|m| *m)
    }
}

/// Copies of the messages as they arrive; see [`BroadcastConsumer::iter`].
#[derive(Debug)]
pub struct BroadcastIter<'a, T> {
    consumer: &'a mut BroadcastConsumer<T>,
}

impl<T: Message> Iterator for BroadcastIter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.consumer.recv().ok().map(|m| *m)
    }
}

/// Builder of a raw (multi-type, byte payload) broadcast channel; see
/// [`Channel::raw_broadcast`]. A byte capacity (default 64 KiB), 4 consumer places,
/// [`Backpressure::Block`].
#[derive(Debug, Clone, Copy)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct RawBroadcastBuilder {
    inner: super::RawChannelBuilder,
    max_consumers: usize,
    backpressure: Backpressure,
}

impl Channel<()> {
    /// A builder for a raw broadcast channel: any message types and byte payloads (as
    /// [`Channel::raw`]), one producer, many consumers.
    ///
    /// ```
    /// let (mut tx, mut rx) = psyne::Channel::raw_broadcast().max_consumers(2).build()?;
    /// let mut rx2 = tx.subscribe()?;
    /// tx.send_bytes(7, b"to all")?;
    /// assert_eq!(rx.recv()?.bytes(), b"to all");
    /// assert_eq!(rx2.recv()?.type_id(), 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn raw_broadcast() -> RawBroadcastBuilder {
        RawBroadcastBuilder {
            inner: Channel::raw(),
            max_consumers: 4,
            backpressure: Backpressure::Block,
        }
    }
}

impl RawBroadcastBuilder {
    /// A ring of at least `bytes` bytes (see
    /// [`RawChannelBuilder::capacity_bytes`](super::RawChannelBuilder::capacity_bytes)).
    pub fn capacity_bytes(mut self, bytes: usize) -> Self {
        self.inner = self.inner.capacity_bytes(bytes);
        self
    }

    /// The most consumers at once (default 4); see [`BroadcastBuilder::max_consumers`].
    pub fn max_consumers(mut self, consumers: usize) -> Self {
        self.max_consumers = consumers;
        self
    }

    /// What the producer does when a consumer keeps the ring full (see [`Backpressure`]).
    pub fn backpressure(mut self, backpressure: Backpressure) -> Self {
        self.backpressure = backpressure;
        self
    }

    super::slab_options!(inner.opts);

    /// Maps the slab and returns the producer and a first consumer.
    ///
    /// # Errors
    /// As [`RawChannelBuilder::build`](super::RawChannelBuilder::build), plus
    /// [`ChannelError::InvalidConsumerCount`].
    pub fn build(self) -> Result<(RawBroadcastProducer, RawBroadcastConsumer), ChannelError> {
        let topology = topology(self.max_consumers, self.backpressure)?;
        let region = super::region_for_bytes(self.inner.capacity_bytes)?;
        let (tx, rx) = build_in_process(
            &self.inner.opts,
            topology,
            region,
            &ChannelIdentity::RAW,
            self.backpressure,
        )?;
        Ok((
            RawBroadcastProducer {
                end: Sender::new(tx),
            },
            RawBroadcastConsumer {
                end: Receiver::new(rx),
            },
        ))
    }
}

/// The producer of a raw broadcast channel: byte payloads tagged with a type id.
pub struct RawBroadcastProducer {
    end: Sender<ProducerCursor>,
}

impl RawBroadcastProducer {
    /// A new consumer in the first free place; see [`BroadcastProducer::subscribe`].
    ///
    /// # Errors
    /// [`ChannelError::TooManyConsumers`] when `max_consumers` consumers are alive.
    pub fn subscribe(&self) -> Result<RawBroadcastConsumer, ChannelError> {
        let cursor = self.end.cursor();
        subscribe_to(cursor.ring(), cursor.gate.consumers()).map(|c| RawBroadcastConsumer {
            end: Receiver::new(c),
        })
    }

    /// The largest payload this channel takes, in bytes.
    pub fn max_payload(&self) -> usize {
        (ring::max_record(self.end.region_len()) - MessageHeader::SIZE).min(u32::MAX as usize)
    }

    fn allocate_bytes_with(
        &mut self,
        len: usize,
        patience: Patience,
    ) -> Result<RawBroadcastBytesLoan<'_>, SendError> {
        let max = self.max_payload();
        if len > max {
            return Err(SendError::TooLarge { len, max });
        }
        let pos = self.end.reserve(len, RECORD_ALIGN, patience)?;
        Ok(RawBroadcastBytesLoan {
            end: &mut self.end,
            pos,
            len,
        })
    }

    /// Borrows `len` bytes in the ring (64-byte aligned), waiting for space if needed; fill
    /// them and [`RawBroadcastBytesLoan::send`] them. Errors: `TooLarge`, `Corrupted`.
    pub fn allocate_bytes(&mut self, len: usize) -> Result<RawBroadcastBytesLoan<'_>, SendError> {
        self.allocate_bytes_with(len, Patience::Forever)
    }

    /// Like [`allocate_bytes`](Self::allocate_bytes), but awaits space instead of blocking the
    /// thread. Cancellation-safe.
    pub async fn allocate_bytes_async(
        &mut self,
        len: usize,
    ) -> Result<RawBroadcastBytesLoan<'_>, SendError> {
        let max = self.max_payload();
        if len > max {
            return Err(SendError::TooLarge { len, max });
        }
        let pos = await_reserve!(self.end, len, RECORD_ALIGN)?;
        Ok(RawBroadcastBytesLoan {
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

    /// Like [`allocate_bytes`](Self::allocate_bytes), but fails with `Full` instead of waiting.
    pub fn try_allocate_bytes(
        &mut self,
        len: usize,
    ) -> Result<RawBroadcastBytesLoan<'_>, SendError> {
        self.allocate_bytes_with(len, Patience::Never)
    }

    /// Like [`allocate_bytes`](Self::allocate_bytes), but fails with `Timeout` after
    /// `timeout`.
    pub fn allocate_bytes_timeout(
        &mut self,
        len: usize,
        timeout: Duration,
    ) -> Result<RawBroadcastBytesLoan<'_>, SendError> {
        self.allocate_bytes_with(len, Patience::timeout(timeout))
    }

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

    /// Copies `bytes` into the ring as one message tagged `type_id`, waiting for space.
    pub fn send_bytes(&mut self, type_id: u64, bytes: &[u8]) -> Result<(), SendError> {
        self.send_bytes_with(type_id, bytes, Patience::Forever)
    }

    /// Like [`send_bytes`](Self::send_bytes), but fails with `Full` instead of waiting.
    pub fn try_send_bytes(&mut self, type_id: u64, bytes: &[u8]) -> Result<(), SendError> {
        self.send_bytes_with(type_id, bytes, Patience::Never)
    }

    /// This end's counters.
    pub fn stats(&self) -> ProducerStats {
        self.end.stats()
    }

    /// Size of the ring in bytes.
    pub fn capacity_bytes(&self) -> usize {
        self.end.region_len()
    }
}

impl fmt::Debug for RawBroadcastProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawBroadcastProducer")
            .field("stats", &self.end.stats())
            .finish_non_exhaustive()
    }
}

/// Room for a raw byte payload in a broadcast ring, from
/// [`RawBroadcastProducer::allocate_bytes`]; dereferences to the payload bytes.
#[must_use = "dropping a loan publishes nothing; call `send`"]
pub struct RawBroadcastBytesLoan<'a> {
    end: &'a mut Sender<ProducerCursor>,
    pos: u64,
    len: usize,
}

impl RawBroadcastBytesLoan<'_> {
    /// Publishes the payload to every consumer, tagged with `type_id`.
    pub fn send(self, type_id: u64) {
        self.end
            .commit(self.pos, self.len, crate::ring::RECORD_ALIGN, type_id);
    }
}

super::bytes_loan_access!(RawBroadcastBytesLoan);

/// A consumer of a raw broadcast channel.
pub struct RawBroadcastConsumer {
    end: Receiver<ConsumerCursor>,
}

impl RawBroadcastConsumer {
    fn recv_with(&mut self, patience: Patience) -> Result<RawReceived<'_>, RecvError> {
        let peeked = self.end.peek(patience, None)?;
        Ok(RawReceived::new(self.end.release_handle(&peeked), peeked))
    }

    /// The next message, waiting for one if needed (errors as [`BroadcastConsumer::recv`]).
    pub fn recv(&mut self) -> Result<RawReceived<'_>, RecvError> {
        self.recv_with(Patience::Forever)
    }

    /// Like [`recv`](Self::recv), but awaits the message instead of blocking the thread.
    /// Cancellation-safe.
    pub async fn recv_async(&mut self) -> Result<RawReceived<'_>, RecvError> {
        let peeked = await_peek!(self.end, None)?;
        Ok(RawReceived::new(self.end.release_handle(&peeked), peeked))
    }

    /// The next message, or `Empty` (or `Disconnected`, `Lagged`) at once.
    pub fn try_recv(&mut self) -> Result<RawReceived<'_>, RecvError> {
        self.recv_with(Patience::Never)
    }

    /// The next message, waiting at most `timeout` (`Timeout`).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<RawReceived<'_>, RecvError> {
        self.recv_with(Patience::timeout(timeout))
    }

    /// Whether the producer is gone (messages it sent may still be waiting).
    pub fn is_disconnected(&self) -> bool {
        self.end.is_disconnected()
    }

    /// This consumer's counters.
    pub fn stats(&self) -> ConsumerStats {
        self.end.stats()
    }
}

impl fmt::Debug for RawBroadcastConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawBroadcastConsumer")
            .field("stats", &self.end.stats())
            .finish_non_exhaustive()
    }
}
