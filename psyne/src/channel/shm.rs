//! Shared channels: creating one end in `/dev/shm` and opening the other end from another
//! process (see the [module docs](super#across-processes)).
//!
//! Create: `.shared(name)` on a builder ([`ChannelBuilder::shared`],
//! [`RawChannelBuilder::shared`]), then `create_producer()` or `create_consumer()`. Open:
//! [`Channel::open_consumer`], [`Channel::open_producer`], [`Channel::raw_open_consumer`],
//! [`Channel::raw_open_producer`]. Each operation has its own error type: [`CreateError`],
//! [`OpenError`]. Creating and opening themselves are the shared-memory transport's
//! ([`crate::transport::shm`]); this file only picks the end slot and the cursor.

use super::raw::{RawConsumer, RawProducer};
use super::{Channel, ChannelBuilder, Consumer, Producer, RawChannelBuilder};
use crate::message::Message;
use crate::ring::spsc::{CONSUMER, PRODUCER, SpscConsumer, SpscProducer};
use crate::ring::{ChannelIdentity, Claimed, Ring, Topology};
use crate::slab::{Slab, SlabBuilder};
use crate::transport::shm::{CreateError, Local, OpenError, create_channel, open_channel};
use std::sync::Arc;

/// Builder of a shared typed channel: [`ChannelBuilder::shared`] with a name. Its options
/// (capacity, wait strategy, timestamps, slab options) were set on the [`ChannelBuilder`]
/// before `.shared(name)`.
///
/// On create, the options define the channel; the opener ([`Channel::open_consumer`],
/// [`Channel::open_producer`]) takes the capacity, wait strategy and timestamp setting recorded
/// in the control block, and maps the slab with normal pages, unlocked.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `create_producer` or `create_consumer` is called"]
pub struct SharedChannelBuilder<T> {
    builder: ChannelBuilder<T>,
    name: String,
}

/// Builder of a shared raw channel: [`RawChannelBuilder::shared`] with a name. As
/// [`SharedChannelBuilder`], for raw ends ([`Channel::raw_open_consumer`],
/// [`Channel::raw_open_producer`] open the other end).
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `create_producer` or `create_consumer` is called"]
pub struct SharedRawChannelBuilder {
    builder: RawChannelBuilder,
    name: String,
}

impl<T: Message> ChannelBuilder<T> {
    /// Makes the channel a named shared channel, `/dev/shm/<name>`, so that another process can
    /// open the other end by that name. Finish with
    /// [`create_producer`](SharedChannelBuilder::create_producer) or
    /// [`create_consumer`](SharedChannelBuilder::create_consumer).
    ///
    /// `name` is a bare file name (no `/`, at most 255 bytes). The options set so far (and only
    /// those) apply; see [`SharedChannelBuilder`] for what the opener inherits.
    pub fn shared(self, name: &str) -> SharedChannelBuilder<T> {
        SharedChannelBuilder {
            builder: self,
            name: name.to_owned(),
        }
    }
}

impl RawChannelBuilder {
    /// Makes the raw channel a named shared channel; see [`ChannelBuilder::shared`].
    pub fn shared(self, name: &str) -> SharedRawChannelBuilder {
        SharedRawChannelBuilder {
            builder: self,
            name: name.to_owned(),
        }
    }
}

impl<T: Message> SharedChannelBuilder<T> {
    fn create(&self, local: usize) -> Result<Arc<Ring>, CreateError> {
        let region = self.builder.region()?;
        create_channel(
            &self.name,
            self.builder.opts.slab(region),
            self.builder.opts.config(region),
            &ChannelIdentity::of::<T>(),
            local,
        )
    }

    /// Creates the channel `/dev/shm/<name>` and returns its producer end; another process opens
    /// the consumer with [`Channel::open_consumer`]. Messages sent before it does wait in the
    /// ring (and `allocate` waits for it once the ring is full). Dropping the producer removes
    /// the name (see [`crate::transport::shm`]).
    ///
    /// # Errors
    /// [`CreateError::Channel`] for a capacity or message type the ring cannot take (as
    /// [`ChannelBuilder::build`]); [`CreateError::AlreadyExists`] if a live channel (or something
    /// that is not a stale psyne channel) has the name; [`CreateError::Slab`] for an invalid name
    /// or a failure to create, size or map the memory.
    pub fn create_producer(self) -> Result<Producer<T>, CreateError> {
        let ring = self.create(PRODUCER)?;
        Ok(Producer::new(RawProducer::new(SpscProducer::new(ring))))
    }

    /// Creates the channel `/dev/shm/<name>` and returns its consumer end; another process opens
    /// the producer with [`Channel::open_producer`]. Until it does, `recv` waits for it (use
    /// `recv_timeout` to bound the wait). Dropping the consumer removes the name.
    ///
    /// # Errors
    /// As [`create_producer`](Self::create_producer).
    pub fn create_consumer(self) -> Result<Consumer<T>, CreateError> {
        let ring = self.create(CONSUMER)?;
        Ok(Consumer::new(RawConsumer::new(SpscConsumer::new(ring))))
    }
}

impl SharedRawChannelBuilder {
    fn create(&self, local: usize) -> Result<Arc<Ring>, CreateError> {
        let region = super::region_for_bytes(self.builder.capacity_bytes)?;
        create_channel(
            &self.name,
            self.builder.opts.slab(region),
            self.builder.opts.config(region),
            &ChannelIdentity::RAW,
            local,
        )
    }

    /// Creates the raw channel `/dev/shm/<name>` and returns its producer end; another process
    /// opens the consumer with [`Channel::raw_open_consumer`].
    ///
    /// # Errors
    /// As [`SharedChannelBuilder::create_producer`].
    pub fn create_producer(self) -> Result<RawProducer, CreateError> {
        let ring = self.create(PRODUCER)?;
        Ok(RawProducer::new(SpscProducer::new(ring)))
    }

    /// Creates the raw channel `/dev/shm/<name>` and returns its consumer end; another process
    /// opens the producer with [`Channel::raw_open_producer`].
    ///
    /// # Errors
    /// As [`SharedChannelBuilder::create_producer`].
    pub fn create_consumer(self) -> Result<RawConsumer, CreateError> {
        let ring = self.create(CONSUMER)?;
        Ok(RawConsumer::new(SpscConsumer::new(ring)))
    }
}

/// Opens the consumer end of the shared channel `name` carrying `identity`, mapping it with
/// `mapping`'s options.
fn open_consumer(
    name: &str,
    identity: &ChannelIdentity,
    mapping: &SlabBuilder,
) -> Result<RawConsumer, OpenError> {
    let (ring, _, claimed) = open_channel(
        name,
        Topology::Spsc,
        identity,
        Local::Slot(CONSUMER),
        mapping,
    )?;
    let cursor = match claimed {
        Claimed::Fresh => Ok(SpscConsumer::new(ring)),
        Claimed::TakenOver => SpscConsumer::recover(ring),
    };
    cursor
        .map(RawConsumer::new)
        .map_err(|what| OpenError::Corrupted { what })
}

/// Opens the producer end of the shared channel `name` carrying `identity`, mapping it with
/// `mapping`'s options.
fn open_producer(
    name: &str,
    identity: &ChannelIdentity,
    mapping: &SlabBuilder,
) -> Result<RawProducer, OpenError> {
    let (ring, _, _) = open_channel(
        name,
        Topology::Spsc,
        identity,
        Local::Slot(PRODUCER),
        mapping,
    )?;
    // A fresh slot's ring may still have been written to (never by a producer, but the
    // recovery costs one commit-word load when the ring is untouched): always recover.
    SpscProducer::recover(ring)
        .map(RawProducer::new)
        .map_err(|what| OpenError::Corrupted { what })
}

impl<T: Message> Channel<T> {
    /// Opens the consumer end of the shared channel `name`, created by another process (or this
    /// one) with `.shared(name).create_producer()` for messages of type `T`.
    ///
    /// Everything in the control block is checked before the end attaches (see
    /// [`crate::ring`]); the end attaches with a compare-and-swap of its slot's owner word, so
    /// of two processes racing to open it exactly one succeeds. The capacity, wait strategy and
    /// timestamp setting are the creator's. If a consumer was attached before and is gone
    /// (dropped, or its process died), this one takes its place and continues where it
    /// released (see [`crate::transport::shm`]).
    ///
    /// # Errors
    /// [`OpenError::NotFound`], [`OpenError::NotReady`], [`OpenError::VersionMismatch`],
    /// [`OpenError::TopologyMismatch`], [`OpenError::IncompatibleType`] (another message type,
    /// or a raw channel), [`OpenError::IncompatibleLayout`] (same type id, another layout),
    /// [`OpenError::AlreadyConnected`], [`OpenError::ForeignPidNamespace`],
    /// [`OpenError::Corrupted`], [`OpenError::Slab`].
    pub fn open_consumer(name: &str) -> Result<Consumer<T>, OpenError> {
        Self::open_consumer_with(name, Slab::builder(0))
    }

    /// [`open_consumer`](Self::open_consumer), mapping the channel with the opener's own
    /// memory options: `mapping`'s huge pages, populate, NUMA node and lock preferences apply
    /// to this process's mapping (its size is ignored: the channel's is used); see
    /// [`Slab::open_shared_with`]. The channel's capacity and wait strategy stay the creator's.
    ///
    /// ```
    /// use psyne::{Channel, Lock, PsyneMessage, Slab};
    ///
    /// #[derive(Clone, Copy, PsyneMessage)]
    /// #[repr(C)]
    /// struct Sample {
    ///     x: [f32; 16],
    /// }
    /// let name = format!("psyne-doc-open-with-{}", std::process::id());
    /// let _tx = Channel::<Sample>::builder().shared(&name).create_producer()?;
    /// let rx = Channel::<Sample>::open_consumer_with(
    ///     &name,
    ///     Slab::builder(0).populate(true).lock(Lock::Prefer),
    /// )?;
    /// assert!(rx.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`open_consumer`](Self::open_consumer), and the mapping option errors of
    /// [`Slab::open_shared_with`] (inside [`OpenError::Slab`]).
    pub fn open_consumer_with(name: &str, mapping: SlabBuilder) -> Result<Consumer<T>, OpenError> {
        open_consumer(name, &ChannelIdentity::of::<T>(), &mapping).map(Consumer::new)
    }

    /// Opens the producer end of the shared channel `name`, created with
    /// `.shared(name).create_consumer()` for messages of type `T`. As
    /// [`open_consumer`](Self::open_consumer); headers get send times if the creator asked for
    /// timestamps. If a producer was attached before and is gone, this one continues its stream:
    /// the messages it published are still delivered first.
    ///
    /// # Errors
    /// As [`open_consumer`](Self::open_consumer).
    pub fn open_producer(name: &str) -> Result<Producer<T>, OpenError> {
        Self::open_producer_with(name, Slab::builder(0))
    }

    /// [`open_producer`](Self::open_producer) with the opener's own memory options (see
    /// [`open_consumer_with`](Self::open_consumer_with)).
    ///
    /// # Errors
    /// As [`open_consumer_with`](Self::open_consumer_with).
    pub fn open_producer_with(name: &str, mapping: SlabBuilder) -> Result<Producer<T>, OpenError> {
        open_producer(name, &ChannelIdentity::of::<T>(), &mapping).map(Producer::new)
    }
}

impl Channel<()> {
    /// Opens the consumer end of the shared raw channel `name`, created with
    /// `Channel::raw().shared(name).create_producer()`. As [`Channel::open_consumer`]; a typed
    /// channel is refused with [`OpenError::IncompatibleType`] (`expected: 0`).
    ///
    /// # Errors
    /// As [`Channel::open_consumer`].
    pub fn raw_open_consumer(name: &str) -> Result<RawConsumer, OpenError> {
        open_consumer(name, &ChannelIdentity::RAW, &Slab::builder(0))
    }

    /// Opens the producer end of the shared raw channel `name`, created with
    /// `Channel::raw().shared(name).create_consumer()`. As [`Channel::raw_open_consumer`].
    ///
    /// # Errors
    /// As [`Channel::open_consumer`].
    pub fn raw_open_producer(name: &str) -> Result<RawProducer, OpenError> {
        open_producer(name, &ChannelIdentity::RAW, &Slab::builder(0))
    }
}
