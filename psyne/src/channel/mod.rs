//! Channels: typed [`Producer`]/[`Consumer`] ends and raw multi-type [`RawProducer`]/
//! [`RawConsumer`] ends over one SPSC [`ring`].
//!
//! This module owns the user-facing API: builders, loans (`Loan`, `BytesLoan`), received messages
//! (`Received`, `RawReceived`), errors and counters. It checks every user input (capacities,
//! payload sizes, alignments) and reports bad ones as typed errors; it never panics on them and
//! never allocates after [`ChannelBuilder::build`].
//!
//! Waiting is delegated to [`crate::wait`], the ring protocol to [`crate::ring`].
//!
//! # Across processes
//!
//! `.shared(name)` on a builder, then `create_producer()` or `create_consumer()`, creates the
//! channel in `/dev/shm/<name>` and returns one end; another process gets the other end with
//! [`Channel::open_consumer`] / [`Channel::open_producer`] (raw: [`Channel::raw_open_consumer`] /
//! [`Channel::raw_open_producer`]). They are the same `Producer<T>`/`Consumer<T>` (`RawProducer`/
//! `RawConsumer`) types with the same zero-copy path. What is checked and what is trusted is
//! described in [`crate::ring`]; names, liveness and stale names in [`crate::transport::shm`].
//!
//! ```
//! use psyne::{Channel, OpenError, PsyneMessage, RecvError};
//!
//! #[derive(Clone, Copy, PsyneMessage)]
//! #[repr(C)]
//! struct Embedding {
//!     data: [f32; 64],
//! }
//! let name = format!("psyne-doc-{}", std::process::id());
//! // Process A creates the channel and takes the producer end.
//! let mut tx = Channel::<Embedding>::builder().capacity(64).shared(&name).create_producer()?;
//! // Process B (here the same one, for the example) opens the consumer end by name.
//! let mut rx = Channel::<Embedding>::open_consumer(&name)?;
//! let mut msg = tx.allocate()?;
//! msg.data_vector_mut().fill(1.5);
//! msg.send();
//! assert_eq!(rx.recv()?.data[63], 1.5);
//! // Each end attaches once.
//! assert!(matches!(
//!     Channel::<Embedding>::open_consumer(&name),
//!     Err(OpenError::AlreadyConnected { .. })
//! ));
//! drop(tx); // the creator's end removes the name
//! assert!(matches!(rx.recv(), Err(RecvError::Disconnected)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod broadcast;
mod end;
mod mpsc;
pub(crate) mod net;
mod raw;
mod shm;
mod tensor;
mod typed;

pub use crate::transport::shm::{CreateError, OpenError};
pub use broadcast::{
    Backpressure, BroadcastBuilder, BroadcastConsumer, BroadcastIter, BroadcastLoan,
    BroadcastProducer, BroadcastTryIter, RawBroadcastBuilder, RawBroadcastBytesLoan,
    RawBroadcastConsumer, RawBroadcastProducer, SharedBroadcastBuilder,
};
pub use end::{ConsumerStats, ProducerStats};
pub use mpsc::{
    MpscBuilder, MpscConsumer, MpscIter, MpscProducer, MpscTryIter, RawMpscBuilder,
    RawMpscConsumer, RawMpscProducer, SharedMpscBuilder,
};
pub use raw::{BytesLoan, RawConsumer, RawProducer, RawReceived};
pub use shm::{SharedChannelBuilder, SharedRawChannelBuilder};
pub use tensor::{
    SharedTensorChannelBuilder, TensorChannelBuilder, TensorConsumer, TensorLoan, TensorProducer,
    TensorReceived, TensorSendError,
};
pub use typed::{Consumer, Iter, Loan, Producer, Received, TryIter};

use crate::message::Message;
use crate::ring::spsc::{SpscConsumer, SpscProducer};
use crate::ring::{
    self, ChannelIdentity, MAX_ALIGN, MAX_REGION, MIN_REGION, RECORD_ALIGN, Ring, RingConfig,
    Topology,
};
use crate::slab::{HugePages, Lock, Slab, SlabBuilder, SlabError};
use crate::wait::Wait;
use core::fmt;
use core::marker::PhantomData;

/// Entry point for building channels: [`Channel::builder`] (one message type) or
/// [`Channel::raw`] (any message types and raw bytes).
///
/// A channel is one single-producer single-consumer ring in a [`Slab`]. The producer borrows a
/// slot in the ring ([`Loan`]), writes the message in place and publishes it; the consumer reads it
/// in place ([`Received`]) and its space is released when the `Received` drops. No copy, no
/// allocation per message.
///
/// ```
/// use psyne::{Channel, PsyneMessage, RecvError};
///
/// #[derive(Clone, Copy, PsyneMessage)]
/// #[repr(C)]
/// struct Activations {
///     data: [f32; 256],
///     step: u64,
/// }
///
/// let (mut tx, mut rx) = Channel::<Activations>::builder().capacity(64).build()?;
///
/// let layer1 = std::thread::spawn(move || -> Result<(), psyne::SendError> {
///     for step in 0..1000u64 {
///         let mut msg = tx.allocate()?; // a slot in the ring: no copy, no allocation
///         msg.data_vector_mut().fill(0.5); // nalgebra view over the message memory
///         msg.step = step;
///         msg.send();
///     }
///     Ok(()) // dropping `tx` disconnects; messages already sent are still delivered
/// });
///
/// let weights = nalgebra::DVector::<f32>::from_element(256, 2.0);
/// let mut received = 0u64;
/// loop {
///     match rx.recv() {
///         Ok(msg) => {
///             assert_eq!(msg.step, received);
///             assert_eq!(msg.header().sequence, received);
///             assert_eq!(weights.dot(&msg.data_vector()), 256.0); // read in place
///             received += 1;
///         } // `msg` dropped: its space goes back to the producer
///         Err(RecvError::Disconnected) => break,
///         Err(e) => return Err(e.into()),
///     }
/// }
/// layer1.join().unwrap()?;
/// assert_eq!(received, 1000);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Channel<T = ()> {
    _t: PhantomData<fn() -> T>,
}

impl<T: Message> Channel<T> {
    /// A builder for a channel carrying messages of type `T`.
    pub fn builder() -> ChannelBuilder<T> {
        ChannelBuilder {
            opts: Options::default(),
            capacity: Capacity::Messages(256),
            _t: PhantomData,
        }
    }
}

impl Channel<()> {
    /// A builder for a raw channel: any [`Message`] types and raw byte payloads, told apart by the
    /// type id in each header.
    pub fn raw() -> RawChannelBuilder {
        RawChannelBuilder {
            opts: Options::default(),
            capacity_bytes: 1 << 16,
        }
    }
}

impl<T> fmt::Debug for Channel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Channel")
    }
}

/// Options shared by both builders.
#[derive(Debug, Clone, Copy)]
struct Options {
    huge_pages: HugePages,
    numa_node: Option<u32>,
    lock: Lock,
    wait: Wait,
    timestamps: bool,
    cuda_host_register: bool,
    /// Populate the slab when the channel is built (default: yes).
    populate: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            huge_pages: HugePages::default(),
            numa_node: None,
            lock: Lock::default(),
            wait: Wait::default(),
            timestamps: false,
            cuda_host_register: false,
            populate: true,
        }
    }
}

impl Options {
    /// The ring configuration for a region of `len` bytes.
    fn config(&self, len: usize) -> RingConfig {
        self.config_for(Topology::Spsc, len)
    }

    /// The ring configuration of `topology` with regions of `len` bytes.
    fn config_for(&self, topology: Topology, len: usize) -> RingConfig {
        RingConfig {
            len,
            topology,
            wait: self.wait.words(),
            timestamps: self.timestamps,
        }
    }

    fn slab(&self, region: usize) -> SlabBuilder {
        self.slab_for(Topology::Spsc, region)
    }

    /// The slab of a ring of `topology` with regions of `region` bytes.
    fn slab_for(&self, topology: Topology, region: usize) -> SlabBuilder {
        let mut b = Slab::builder(ring::slab_size(topology, region))
            .huge_pages(self.huge_pages)
            .lock(self.lock)
            .populate(self.populate)
            .cuda_host_register(self.cuda_host_register);
        if let Some(node) = self.numa_node {
            b = b.numa_node(node);
        }
        b
    }
}

#[derive(Debug, Clone, Copy)]
enum Capacity {
    Messages(usize),
    Bytes(usize),
}

/// Region length for `bytes` requested bytes: the next power of two, at least [`MIN_REGION`].
fn region_for_bytes(bytes: usize) -> Result<usize, ChannelError> {
    if bytes == 0 {
        return Err(ChannelError::ZeroCapacity);
    }
    match bytes.max(MIN_REGION).checked_next_power_of_two() {
        Some(r) if r <= MAX_REGION => Ok(r),
        _ => Err(ChannelError::CapacityTooLarge { bytes }),
    }
}

/// Builder of a typed channel; see [`Channel::builder`].
///
/// Defaults: room for 256 messages, normal pages, populated, no NUMA binding, no `mlock`,
/// [`Wait::default()`], no timestamps.
#[derive(Debug, Clone, Copy)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct ChannelBuilder<T> {
    opts: Options,
    capacity: Capacity,
    _t: PhantomData<fn() -> T>,
}

/// The slab and waiting setters of a builder, over its `Options` at `self.<path>`
/// (`slab_options!(opts)`; a builder that wraps a `ChannelBuilder` passes `inner.opts`).
/// `cuda` adds [`cuda_host_register`](ChannelBuilder::cuda_host_register).
macro_rules! slab_options {
    ($($path:ident).+ $(, $cuda:ident)?) => {
        /// Huge-page preference for the slab (see [`SlabBuilder::huge_pages`](crate::SlabBuilder::huge_pages)).
        pub fn huge_pages(mut self, huge_pages: crate::HugePages) -> Self {
            self.$($path).+.huge_pages = huge_pages;
            self
        }

        /// Binds the slab's memory to NUMA node `node` (see [`SlabBuilder::numa_node`](crate::SlabBuilder::numa_node)).
        pub fn numa_node(mut self, node: u32) -> Self {
            self.$($path).+.numa_node = Some(node);
            self
        }

        /// Whether to fault every page of the ring in when the channel is built (default `true`;
        /// see [`SlabBuilder::populate`](crate::SlabBuilder::populate)). Otherwise the first lap through the ring takes the
        /// page faults (a kernel allocation per page) on the hot path: with large messages, a
        /// send into fresh pages costs several times a send into used ones. `false` trades that
        /// for a faster `build` of a large ring. An opening process maps the ring without
        /// populating it.
        pub fn populate(mut self, populate: bool) -> Self {
            self.$($path).+.populate = populate;
            self
        }

        /// Whether to `mlock` the slab (see [`SlabBuilder::lock`](crate::SlabBuilder::lock)).
        pub fn lock(mut self, lock: crate::Lock) -> Self {
            self.$($path).+.lock = lock;
            self
        }

        /// How the channel's ends wait when the ring is full or empty (default [`Wait::default()`](crate::Wait::default)).
        pub fn wait(mut self, wait: crate::Wait) -> Self {
            self.$($path).+.wait = wait;
            self
        }

        /// Whether each message's header records its send time (`CLOCK_MONOTONIC`, ns) in
        /// [`MessageHeader::timestamp_ns`](crate::MessageHeader::timestamp_ns). Default: off
        /// (the field is 0), since reading the clock costs ~20 ns per message.
        pub fn timestamps(mut self, on: bool) -> Self {
            self.$($path).+.timestamps = on;
            self
        }
    };
}

/// The `cuda_host_register` setter of a builder, over its `Options` at `self.<path>`.
macro_rules! cuda_option {
    ($($path:ident).+) => {
        /// Registers the channel's slab with the CUDA driver as pinned, device-mapped host memory
        /// (see [`SlabBuilder::cuda_host_register`](crate::SlabBuilder::cuda_host_register)), so that GPU copies and kernels read and
        /// write messages in place: `Loan::cuda_device_ptr` and `Received::cuda_device_ptr`
        /// give a message's device address (feature `cuda`). Without the feature, or with no driver or device,
        /// `build`/`create_*` fail with [`SlabError::CudaUnavailable`](crate::SlabError::CudaUnavailable) inside
        /// [`ChannelError::Slab`](crate::ChannelError::Slab). For a shared channel only the creator's mapping is
        /// registered; an opener's messages report `CudaUnavailable` for their device address.
        pub fn cuda_host_register(mut self, register: bool) -> Self {
            self.$($path).+.cuda_host_register = register;
            self
        }
    };
}

/// `Deref`/`DerefMut` to the `T` at `self.ptr` and `Debug`, for a typed loan (`Loan`,
/// `BroadcastLoan`): a struct with a `ptr: NonNull<T>` to the payload of a record reserved for it.
macro_rules! typed_loan_access {
    ($loan:ident) => {
        impl<T> core::ops::Deref for $loan<'_, T> {
            type Target = T;
            #[inline(always)]
            fn deref(&self) -> &T {
                // SAFETY: `ptr` points to `size_of::<T>()` initialised bytes (the ring is
                // zero-filled at creation and only ever holds Pod bytes), aligned for `T`, inside
                // a record reserved for this loan: no consumer reads it before `send`.
                unsafe { self.ptr.as_ref() }
            }
        }

        impl<T> core::ops::DerefMut for $loan<'_, T> {
            #[inline(always)]
            fn deref_mut(&mut self) -> &mut T {
                // SAFETY: as in `deref`; `&mut self` makes the access exclusive, and any bytes
                // written through a `T: Pod` keep the memory initialised.
                unsafe { self.ptr.as_mut() }
            }
        }

        impl<T: core::fmt::Debug> core::fmt::Debug for $loan<'_, T> {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.debug_tuple(stringify!($loan)).field(&**self).finish()
            }
        }
    };
}

/// `Deref`/`DerefMut` to the payload bytes and `Debug`, for a bytes loan (`BytesLoan`,
/// `RawBroadcastBytesLoan`): a struct with `end` (its `Sender`), `pos` (the reserved record)
/// and `len` (the payload length).
macro_rules! bytes_loan_access {
    ($loan:ident) => {
        impl core::ops::Deref for $loan<'_> {
            type Target = [u8];
            #[inline]
            fn deref(&self) -> &[u8] {
                // SAFETY: the record at `pos` is reserved for this loan (invisible to consumers
                // until `send`), holds `len` initialised bytes (the ring memory is zero-filled at
                // creation and only ever holds Pod bytes) and lies inside the region.
                unsafe {
                    core::slice::from_raw_parts(self.end.payload(self.pos).as_ptr(), self.len)
                }
            }
        }

        impl core::ops::DerefMut for $loan<'_> {
            #[inline]
            fn deref_mut(&mut self) -> &mut [u8] {
                // SAFETY: as in `deref`; `&mut self` makes the access exclusive.
                unsafe {
                    core::slice::from_raw_parts_mut(self.end.payload(self.pos).as_ptr(), self.len)
                }
            }
        }

        impl core::fmt::Debug for $loan<'_> {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.debug_struct(stringify!($loan))
                    .field("len", &self.len)
                    .finish()
            }
        }
    };
}

pub(crate) use {bytes_loan_access, cuda_option, slab_options, typed_loan_access};

impl<T: Message> ChannelBuilder<T> {
    /// Room for at least `messages` messages in flight (the ring is rounded up to a power of two
    /// bytes, so there may be room for more).
    pub fn capacity(mut self, messages: usize) -> Self {
        self.capacity = Capacity::Messages(messages);
        self
    }

    /// A ring of at least `bytes` bytes (rounded up to a power of two). It must hold at least one
    /// record (`ring::record_size(size_of::<T>())` bytes) and the 64-byte line the producer
    /// always leaves free.
    pub fn capacity_bytes(mut self, bytes: usize) -> Self {
        self.capacity = Capacity::Bytes(bytes);
        self
    }

    slab_options!(opts);
    cuda_option!(opts);

    /// The ring region length this builder asks for, after checking the message type and the
    /// capacity.
    fn region(&self) -> Result<usize, ChannelError> {
        let size = core::mem::size_of::<T>();
        let align = typed::align_of_payload::<T>();
        if align > MAX_ALIGN {
            return Err(ChannelError::Alignment {
                align,
                max: MAX_ALIGN,
            });
        }
        let record = match ring::record_size(size) {
            Some(r) if size <= u32::MAX as usize && r <= ring::max_record(MAX_REGION) => r,
            Some(r) => {
                return Err(ChannelError::MessageTooLarge {
                    record: r,
                    capacity_bytes: MAX_REGION,
                });
            }
            None => {
                return Err(ChannelError::MessageTooLarge {
                    record: usize::MAX,
                    capacity_bytes: MAX_REGION,
                });
            }
        };
        let stride = record.next_multiple_of(align);
        // The producer always leaves one line free after its last record (see `crate::ring`):
        // room for `n` messages is `n` strides and that line.
        let region = match self.capacity {
            Capacity::Messages(0) | Capacity::Bytes(0) => return Err(ChannelError::ZeroCapacity),
            Capacity::Messages(n) => match n.checked_mul(stride) {
                Some(bytes) => region_for_bytes(bytes.saturating_add(RECORD_ALIGN))?,
                None => {
                    return Err(ChannelError::CapacityTooLarge { bytes: usize::MAX });
                }
            },
            Capacity::Bytes(n) => region_for_bytes(n)?,
        };
        if record > ring::max_record(region) || align > region {
            return Err(ChannelError::MessageTooLarge {
                record: record.max(align),
                capacity_bytes: region,
            });
        }
        Ok(region)
    }

    /// Maps the slab, initialises the ring and returns both ends.
    pub fn build(self) -> Result<(Producer<T>, Consumer<T>), ChannelError> {
        let region = self.region()?;
        let ring = Ring::create(
            self.opts.slab(region).build()?,
            self.opts.config(region),
            &ChannelIdentity::of::<T>(),
            None,
        );
        let (tx, rx) = pair(ring);
        Ok((Producer::new(tx), Consumer::new(rx)))
    }
}

/// Builder of a raw channel; see [`Channel::raw`].
///
/// Defaults: a 64 KiB ring, normal pages, populated, no NUMA binding, no `mlock`,
/// [`Wait::default()`], no timestamps.
#[derive(Debug, Clone, Copy)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct RawChannelBuilder {
    opts: Options,
    capacity_bytes: usize,
}

impl RawChannelBuilder {
    /// A ring of at least `bytes` bytes (rounded up to a power of two, at least 128). The
    /// largest payload is the ring size minus 96 bytes ([`RawProducer::max_payload`]: the
    /// header, and the line the producer always leaves free).
    pub fn capacity_bytes(mut self, bytes: usize) -> Self {
        self.capacity_bytes = bytes;
        self
    }

    slab_options!(opts);
    cuda_option!(opts);

    /// Maps the slab, initialises the ring and returns both ends.
    pub fn build(self) -> Result<(RawProducer, RawConsumer), ChannelError> {
        let region = region_for_bytes(self.capacity_bytes)?;
        let ring = Ring::create(
            self.opts.slab(region).build()?,
            self.opts.config(region),
            &ChannelIdentity::RAW,
            None,
        );
        Ok(pair(ring))
    }
}

/// Both raw ends of a freshly created in-process ring.
fn pair(ring: std::sync::Arc<Ring>) -> (RawProducer, RawConsumer) {
    (
        RawProducer::new(SpscProducer::new(std::sync::Arc::clone(&ring))),
        RawConsumer::new(SpscConsumer::new(ring)),
    )
}

/// Why a channel could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelError {
    /// A capacity of zero messages or zero bytes was requested.
    ZeroCapacity,
    /// The requested capacity exceeds the largest ring ([`ring::MAX_REGION`] bytes) or overflows.
    CapacityTooLarge {
        /// Requested bytes (`usize::MAX` when the request overflowed).
        bytes: usize,
    },
    /// One message record does not fit in the requested ring.
    MessageTooLarge {
        /// Bytes one record needs (header, payload, padding; or its alignment if larger).
        record: usize,
        /// Ring size in bytes.
        capacity_bytes: usize,
    },
    /// The message type's alignment exceeds what a ring supports.
    Alignment {
        /// The type's alignment.
        align: usize,
        /// The largest supported alignment ([`ring::MAX_ALIGN`]).
        max: usize,
    },
    /// The slab could not be mapped.
    Slab(SlabError),
    /// Every producer place of a multi-producer channel is taken
    /// ([`MpscProducer::try_clone`]).
    TooManyProducers {
        /// The channel's `max_producers`.
        max: usize,
    },
    /// Every consumer place of a broadcast channel is taken
    /// ([`BroadcastProducer::subscribe`]).
    TooManyConsumers {
        /// The channel's `max_consumers`.
        max: usize,
    },
    /// `max_consumers(0)`, or more than [`ring::MAX_CONSUMERS`].
    InvalidConsumerCount {
        /// The count asked for.
        requested: usize,
        /// The largest supported count.
        max: usize,
    },
    /// `max_producers(0)`, or more than [`ring::MAX_PRODUCERS`].
    InvalidProducerCount {
        /// The count asked for.
        requested: usize,
        /// The largest supported count.
        max: usize,
    },
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelError::ZeroCapacity => f.write_str("a channel capacity of 0 was requested"),
            ChannelError::CapacityTooLarge { bytes } => write!(
                f,
                "a channel of {bytes} bytes was requested; the largest ring is {MAX_REGION} bytes"
            ),
            ChannelError::MessageTooLarge {
                record,
                capacity_bytes,
            } => write!(
                f,
                "a message record needs {record} bytes but the ring has {capacity_bytes}"
            ),
            ChannelError::Alignment { align, max } => write!(
                f,
                "the message type is aligned to {align} bytes; rings support at most {max}"
            ),
            ChannelError::Slab(e) => write!(f, "the channel's slab could not be built: {e}"),
            ChannelError::TooManyProducers { max } => {
                write!(f, "all {max} producer places of the channel are taken")
            }
            ChannelError::TooManyConsumers { max } => {
                write!(f, "all {max} consumer places of the channel are taken")
            }
            ChannelError::InvalidConsumerCount { requested, max } => write!(
                f,
                "a broadcast channel takes 1 to {max} consumers, not {requested}"
            ),
            ChannelError::InvalidProducerCount { requested, max } => write!(
                f,
                "a multi-producer channel takes 1 to {max} producers, not {requested}"
            ),
        }
    }
}

impl std::error::Error for ChannelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ChannelError::Slab(e) => Some(e),
            _ => None,
        }
    }
}

impl From<SlabError> for ChannelError {
    fn from(e: SlabError) -> Self {
        ChannelError::Slab(e)
    }
}

/// Why a producer could not allocate (or send).
///
/// `allocate`/`allocate_zeroed` return only `Disconnected` and `Corrupted` (and, on raw ends,
/// `TooLarge` / `Alignment`); `try_allocate` adds `Full`; `allocate_timeout` adds `Timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The ring has no room for the message now (`try_` operations only).
    Full,
    /// The ring had no room before the timeout passed (`_timeout` operations only).
    Timeout,
    /// The consumer is gone (it dropped its end, or its process died): nobody will ever read
    /// the message.
    Disconnected,
    /// The consumer's read position in shared memory failed a check (it moved backwards, past
    /// the write position, or off a record boundary): the other process, or the memory, is
    /// corrupt. The producer stays where it was. Only a shared channel's other process can cause
    /// this.
    Corrupted {
        /// What failed the check.
        what: &'static str,
    },
    /// The payload can never fit in this ring (raw ends only; typed ends check at build time).
    TooLarge {
        /// Requested payload bytes.
        len: usize,
        /// The largest payload this ring takes ([`RawProducer::max_payload`]).
        max: usize,
    },
    /// The payload type's alignment exceeds what this ring supports (raw ends only).
    Alignment {
        /// The type's alignment.
        align: usize,
        /// The largest alignment this ring supports.
        max: usize,
    },
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full => f.write_str("the channel is full"),
            SendError::Timeout => f.write_str("timed out waiting for room in the channel"),
            SendError::Disconnected => f.write_str("the receiving end of the channel is gone"),
            SendError::Corrupted { what } => {
                write!(f, "the channel's shared memory is corrupt: bad {what}")
            }
            SendError::TooLarge { len, max } => write!(
                f,
                "a payload of {len} bytes does not fit in this channel (at most {max})"
            ),
            SendError::Alignment { align, max } => write!(
                f,
                "a payload aligned to {align} bytes is not supported by this channel (at most {max})"
            ),
        }
    }
}

impl std::error::Error for SendError {}

/// Why a consumer could not receive.
///
/// `recv` returns only `Disconnected` (and `Corrupted`); `try_recv` adds `Empty`;
/// `recv_timeout` adds `Timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecvError {
    /// No message now (`try_recv` only).
    Empty,
    /// No message arrived before the timeout passed (`recv_timeout` only).
    Timeout,
    /// The producer is gone (it dropped its end, or its process died) and every message it
    /// published has been received.
    Disconnected,
    /// The write position or a record header in shared memory failed a check (see
    /// [`crate::ring`]): the other process, or the memory, is corrupt. Nothing was read past the
    /// checked bounds; the consumer stays where it was and keeps reporting this. Only a shared
    /// channel's other process can cause this.
    Corrupted {
        /// What failed the check.
        what: &'static str,
    },
    /// Broadcast channels with [`Backpressure::DropLagging`] only: this consumer kept the
    /// producer waiting longer than the channel allows and was cut off; the messages it had not
    /// received are lost to it. The next receive continues with the messages sent after the
    /// producer readmits it (at its next send).
    Lagged,
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvError::Empty => f.write_str("the channel is empty"),
            RecvError::Timeout => f.write_str("timed out waiting for a message"),
            RecvError::Disconnected => {
                f.write_str("the sending end of the channel is gone and nothing is left to read")
            }
            RecvError::Corrupted { what } => {
                write!(f, "the channel's shared memory is corrupt: bad {what}")
            }
            RecvError::Lagged => f.write_str(
                "this consumer fell too far behind the broadcast producer and was cut off",
            ),
        }
    }
}

impl std::error::Error for RecvError {}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of
/// [`MessageHeader::timestamp_ns`](crate::MessageHeader::timestamp_ns), for measuring how long a
/// message took from `send` to the consumer (within one machine).
#[inline]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}
