//! Shared channels: creating one end in `/dev/shm` and opening the other end from another
//! process (see the [module docs](super#across-processes)).
//!
//! Create: `.shared(name)` on a builder ([`ChannelBuilder::shared`],
//! [`RawChannelBuilder::shared`]), then `create_producer()` or `create_consumer()`. Open:
//! [`Channel::open_consumer`], [`Channel::open_producer`], [`Channel::raw_open_consumer`],
//! [`Channel::raw_open_producer`]. Each operation has its own error type: [`CreateError`],
//! [`OpenError`].

use super::raw::{RawConsumer, RawProducer};
use super::{Channel, ChannelBuilder, ChannelError, Consumer, Producer, RawChannelBuilder};
use crate::message::Message;
use crate::ring::{
    self, End, Expect, OpenFailure, PROTOCOL_VERSION, Positions, Ring, RingSpec, SharedInit,
};
use crate::slab::{Slab, SlabError};
use crate::transport::shm::{self as os, Stale};
use core::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long an open waits for a creator that is still initialising the name it just created
/// (size 0, or magic word not yet stored) before reporting [`OpenError::NotReady`].
const OPEN_GRACE: Duration = Duration::from_millis(50);

/// How often a create retries after removing a stale name (another process may race for it).
const CREATE_ATTEMPTS: usize = 4;

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

/// Creates the shared slab `name` and initialises its control block for `local`, applying the
/// stale-name policy of [`crate::transport::shm`].
fn create_ring(
    name: &str,
    slab: crate::slab::SlabBuilder,
    spec: RingSpec,
    local: End,
    timestamps: bool,
) -> Result<Arc<Ring>, CreateError> {
    let cname = os::validate(name)?;
    let mut attempts = 0;
    let slab = loop {
        match Slab::create_shared(name, slab.clone()) {
            Ok(slab) => break slab,
            Err(SlabError::AlreadyExists { .. }) if attempts < CREATE_ATTEMPTS => {
                attempts += 1;
                match os::remove_if_stale(&cname) {
                    Stale::Removed => continue,
                    Stale::Keep(creator_pid) => {
                        return Err(CreateError::AlreadyExists {
                            name: name.to_owned(),
                            creator_pid,
                        });
                    }
                }
            }
            Err(SlabError::AlreadyExists { .. }) => {
                return Err(CreateError::AlreadyExists {
                    name: name.to_owned(),
                    creator_pid: None,
                });
            }
            Err(e) => return Err(CreateError::Slab(e)),
        }
    };
    Ok(Ring::create_shared(
        slab,
        spec,
        SharedInit {
            local,
            me: os::this_process(),
            pid_namespace: os::pid_namespace(),
            timestamps,
        },
    ))
}

/// Maps the shared slab `name` and attaches `local`, waiting up to [`OPEN_GRACE`] for a creator
/// that is still initialising it.
fn open_ring(
    name: &str,
    local: End,
    expect: Expect,
) -> Result<(Arc<Ring>, Positions, bool), OpenError> {
    let started = Instant::now();
    let me = os::this_process();
    let ns = os::pid_namespace();
    loop {
        let not_ready = match Slab::open_shared(name) {
            Ok(slab) => match Ring::open_shared(slab, local, expect, me, ns, os::process_alive) {
                Ok(opened) => return Ok(opened),
                Err(OpenFailure::NotReady) => true,
                Err(f) => return Err(OpenError::from_failure(f)),
            },
            Err(SlabError::NotFound { name }) => return Err(OpenError::NotFound { name }),
            Err(SlabError::SharedEmpty { .. }) => true,
            Err(e) => return Err(OpenError::Slab(e)),
        };
        debug_assert!(not_ready);
        if started.elapsed() >= OPEN_GRACE {
            return Err(OpenError::NotReady {
                name: name.to_owned(),
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

impl<T: Message> SharedChannelBuilder<T> {
    fn create(&self, local: End) -> Result<Arc<Ring>, CreateError> {
        let region = self.builder.region()?;
        create_ring(
            &self.name,
            self.builder.opts.slab(region),
            self.builder.spec(region),
            local,
            self.builder.opts.timestamps,
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
        let ring = self.create(End::Producer)?;
        Ok(Producer::new(RawProducer::new(
            ring,
            Positions::default(),
            self.builder.opts.timestamps,
        )))
    }

    /// Creates the channel `/dev/shm/<name>` and returns its consumer end; another process opens
    /// the producer with [`Channel::open_producer`]. Until it does, `recv` waits for it (use
    /// `recv_timeout` to bound the wait). Dropping the consumer removes the name.
    ///
    /// # Errors
    /// As [`create_producer`](Self::create_producer).
    pub fn create_consumer(self) -> Result<Consumer<T>, CreateError> {
        let ring = self.create(End::Consumer)?;
        Ok(Consumer::new(RawConsumer::new(ring, Positions::default())))
    }
}

impl SharedRawChannelBuilder {
    fn create(&self, local: End) -> Result<Arc<Ring>, CreateError> {
        let region = super::region_for_bytes(self.builder.capacity_bytes)?;
        create_ring(
            &self.name,
            self.builder.opts.slab(region),
            RingSpec {
                len: region,
                type_id: 0,
                fingerprint: 0,
                wait: self.builder.opts.wait,
            },
            local,
            self.builder.opts.timestamps,
        )
    }

    /// Creates the raw channel `/dev/shm/<name>` and returns its producer end; another process
    /// opens the consumer with [`Channel::raw_open_consumer`].
    ///
    /// # Errors
    /// As [`SharedChannelBuilder::create_producer`].
    pub fn create_producer(self) -> Result<RawProducer, CreateError> {
        let ring = self.create(End::Producer)?;
        Ok(RawProducer::new(
            ring,
            Positions::default(),
            self.builder.opts.timestamps,
        ))
    }

    /// Creates the raw channel `/dev/shm/<name>` and returns its consumer end; another process
    /// opens the producer with [`Channel::raw_open_producer`].
    ///
    /// # Errors
    /// As [`SharedChannelBuilder::create_producer`].
    pub fn create_consumer(self) -> Result<RawConsumer, CreateError> {
        let ring = self.create(End::Consumer)?;
        Ok(RawConsumer::new(ring, Positions::default()))
    }
}

impl<T: Message> Channel<T> {
    fn expect() -> Expect {
        Expect {
            type_id: T::TYPE_ID,
            fingerprint: T::FINGERPRINT,
            payload: Some((
                core::mem::size_of::<T>(),
                ring::payload_align(core::mem::align_of::<T>()),
            )),
        }
    }

    /// Opens the consumer end of the shared channel `name`, created by another process (or this
    /// one) with `.shared(name).create_producer()` for messages of type `T`.
    ///
    /// Everything in the control block is checked before the end attaches (see
    /// [`crate::ring`]); the end attaches with a compare-and-swap of its pid word, so of two
    /// processes racing to open it exactly one succeeds. The capacity, wait strategy and
    /// timestamp setting are the creator's.
    ///
    /// # Errors
    /// [`OpenError::NotFound`], [`OpenError::NotReady`], [`OpenError::VersionMismatch`],
    /// [`OpenError::IncompatibleType`] (another message type, or a raw channel),
    /// [`OpenError::IncompatibleLayout`] (same type id, another layout),
    /// [`OpenError::AlreadyConnected`], [`OpenError::EndClosed`],
    /// [`OpenError::ForeignPidNamespace`], [`OpenError::Corrupted`], [`OpenError::Slab`].
    pub fn open_consumer(name: &str) -> Result<Consumer<T>, OpenError> {
        let (ring, positions, _) = open_ring(name, End::Consumer, Self::expect())?;
        Ok(Consumer::new(RawConsumer::new(ring, positions)))
    }

    /// Opens the producer end of the shared channel `name`, created with
    /// `.shared(name).create_consumer()` for messages of type `T`. As
    /// [`open_consumer`](Self::open_consumer); headers get send times if the creator asked for
    /// timestamps.
    ///
    /// # Errors
    /// As [`open_consumer`](Self::open_consumer).
    pub fn open_producer(name: &str) -> Result<Producer<T>, OpenError> {
        let (ring, positions, timestamps) = open_ring(name, End::Producer, Self::expect())?;
        Ok(Producer::new(RawProducer::new(ring, positions, timestamps)))
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
        let (ring, positions, _) = open_ring(name, End::Consumer, RAW)?;
        Ok(RawConsumer::new(ring, positions))
    }

    /// Opens the producer end of the shared raw channel `name`, created with
    /// `Channel::raw().shared(name).create_consumer()`. As [`Channel::raw_open_consumer`].
    ///
    /// # Errors
    /// As [`Channel::open_consumer`].
    pub fn raw_open_producer(name: &str) -> Result<RawProducer, OpenError> {
        let (ring, positions, timestamps) = open_ring(name, End::Producer, RAW)?;
        Ok(RawProducer::new(ring, positions, timestamps))
    }
}

/// What a raw opener expects: a raw channel.
const RAW: Expect = Expect {
    type_id: 0,
    fingerprint: 0,
    payload: None,
};

/// Why a shared channel could not be created.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CreateError {
    /// The capacity or message type cannot make a ring (as [`ChannelBuilder::build`]).
    Channel(ChannelError),
    /// The name is taken: by a channel whose creator is alive (`creator_pid`), or by something
    /// that is not a stale psyne channel of this version (`creator_pid: None`: another kind of
    /// object, another protocol version or PID namespace, or one never initialised). Nothing was
    /// removed; see [`crate::transport::shm::remove`].
    AlreadyExists {
        /// The name.
        name: String,
        /// The pid of the live creator, when the name holds a live psyne channel.
        creator_pid: Option<u32>,
    },
    /// The shared memory could not be created, sized or mapped, or the name is invalid
    /// ([`SlabError::InvalidName`], [`SlabError::Shm`], [`SlabError::Map`], ...).
    Slab(SlabError),
}

impl fmt::Display for CreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CreateError::Channel(e) => e.fmt(f),
            CreateError::AlreadyExists {
                name,
                creator_pid: Some(pid),
            } => write!(
                f,
                "shared channel {name:?} already exists and its creator (pid {pid}) is alive"
            ),
            CreateError::AlreadyExists {
                name,
                creator_pid: None,
            } => write!(
                f,
                "/dev/shm/{name} exists and is not a stale psyne channel of protocol version \
                 {PROTOCOL_VERSION}; pick another name or remove it"
            ),
            CreateError::Slab(e) => write!(f, "the shared channel could not be created: {e}"),
        }
    }
}

impl std::error::Error for CreateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CreateError::Channel(e) => Some(e),
            CreateError::Slab(e) => Some(e),
            CreateError::AlreadyExists { .. } => None,
        }
    }
}

impl From<ChannelError> for CreateError {
    fn from(e: ChannelError) -> Self {
        CreateError::Channel(e)
    }
}

impl From<SlabError> for CreateError {
    fn from(e: SlabError) -> Self {
        CreateError::Slab(e)
    }
}

/// Why an end of a shared channel could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenError {
    /// No shared channel of this name exists (never created, or its creator's end was dropped).
    NotFound {
        /// The name.
        name: String,
    },
    /// The name exists but its creator had not finished initialising it within 50 ms (or died
    /// while doing so). Retry, or remove the name if its creator is gone.
    NotReady {
        /// The name.
        name: String,
    },
    /// The channel was created by a psyne speaking another protocol version.
    VersionMismatch {
        /// This psyne's [`ring::PROTOCOL_VERSION`].
        expected: u32,
        /// The version in the control block.
        found: u32,
    },
    /// The channel carries another message type (`found` is its [`Message::TYPE_ID`], 0 for a
    /// raw channel; `expected` is 0 when a raw end was asked of a typed channel).
    IncompatibleType {
        /// The type id asked for.
        expected: u64,
        /// The channel's type id.
        found: u64,
    },
    /// The channel carries a message of the same type id but another layout
    /// ([`Message::FINGERPRINT`]): the two programs were built from different schemas.
    IncompatibleLayout {
        /// The fingerprint asked for.
        expected: u64,
        /// The channel's fingerprint.
        found: u64,
    },
    /// The end is already attached to a live process.
    AlreadyConnected {
        /// That process's id.
        pid: u32,
    },
    /// The end was attached before and is gone (dropped, or its process died): each end of a
    /// shared channel attaches once. Create a new channel.
    EndClosed,
    /// The channel was created in another PID namespace, where pids (and so liveness checks)
    /// mean something else (see [`crate::transport::shm`]).
    ForeignPidNamespace {
        /// This process's PID namespace inode.
        expected: u64,
        /// The creator's.
        found: u64,
    },
    /// The control block failed a check (magic word, region offset or length, positions...):
    /// not a psyne channel, or corrupt memory.
    Corrupted {
        /// What failed the check.
        what: &'static str,
    },
    /// The shared memory could not be opened or mapped, or the name is invalid
    /// ([`SlabError::InvalidName`], [`SlabError::Shm`], [`SlabError::Map`]).
    Slab(SlabError),
}

impl OpenError {
    fn from_failure(f: OpenFailure) -> Self {
        match f {
            // Mapped to `NotReady { name }` by the caller.
            OpenFailure::NotReady => OpenError::Corrupted {
                what: "control block not initialised",
            },
            OpenFailure::VersionMismatch { expected, found } => {
                OpenError::VersionMismatch { expected, found }
            }
            OpenFailure::IncompatibleType { expected, found } => {
                OpenError::IncompatibleType { expected, found }
            }
            OpenFailure::IncompatibleLayout { expected, found } => {
                OpenError::IncompatibleLayout { expected, found }
            }
            OpenFailure::AlreadyConnected { pid } => OpenError::AlreadyConnected { pid },
            OpenFailure::EndClosed => OpenError::EndClosed,
            OpenFailure::ForeignPidNamespace { expected, found } => {
                OpenError::ForeignPidNamespace { expected, found }
            }
            OpenFailure::Corrupted(what) => OpenError::Corrupted { what },
        }
    }
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::NotFound { name } => {
                write!(f, "no shared channel named {name:?} (/dev/shm/{name})")
            }
            OpenError::NotReady { name } => write!(
                f,
                "shared channel {name:?} exists but its creator has not initialised it"
            ),
            OpenError::VersionMismatch { expected, found } => write!(
                f,
                "the channel speaks protocol version {found}, this psyne speaks {expected}"
            ),
            OpenError::IncompatibleType { expected, found } => write!(
                f,
                "the channel carries type id {found:#018x}, not the expected {expected:#018x} \
                 (0 is a raw channel)"
            ),
            OpenError::IncompatibleLayout { expected, found } => write!(
                f,
                "the channel's message has the expected type id but layout fingerprint \
                 {found:#018x}, not {expected:#018x}: the programs were built from different \
                 schemas"
            ),
            OpenError::AlreadyConnected { pid } => {
                write!(f, "that end of the channel is attached to process {pid}")
            }
            OpenError::EndClosed => f.write_str(
                "that end of the channel was attached before and is gone; ends attach once",
            ),
            OpenError::ForeignPidNamespace { expected, found } => write!(
                f,
                "the channel was created in PID namespace {found}, this process is in {expected}"
            ),
            OpenError::Corrupted { what } => {
                write!(f, "the channel's control block is corrupt: bad {what}")
            }
            OpenError::Slab(e) => write!(f, "the shared channel could not be opened: {e}"),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::Slab(e) => Some(e),
            _ => None,
        }
    }
}
