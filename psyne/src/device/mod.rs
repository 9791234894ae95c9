//! Device channels: tensors that stay in GPU memory, ordered by device events, within a process
//! or across processes on one machine (CUDA IPC).
//!
//! A device channel moves *device* payloads from one producer to one consumer. Nothing is read
//! before it is written and nothing is overwritten while it is read, and neither end blocks its
//! CPU on the GPU for that: the ordering is done by events on the two ends' streams.
//!
//! ```
//! use psyne::device::{Device, DeviceChannel, FakeDevice, FakeStream, GpuUuid};
//!
//! // The same code runs over `psyne::device::Cuda` (feature `cuda`) with cudarc streams; the
//! // fake device models a GPU in host memory, for examples and tests without one.
//! let gpu = FakeDevice::new(GpuUuid([7; 16]));
//! let (mut tx, mut rx) = DeviceChannel::builder().slots(4).slot_bytes(4096).build(&gpu)?;
//! let (producer_stream, consumer_stream) = (FakeStream::new(), FakeStream::new());
//!
//! let loan = tx.loan(&producer_stream, 4096)?; // the stream waits until the slot is free
//! // Enqueue the producer's work on its stream: a kernel, or here a fill of the payload.
//! // SAFETY: the loan's range is device memory of `gpu`, ordered by the channel's events.
//! unsafe { gpu.memset_d32(loan.device_ptr(), 0xC0FFEE, 1024, &producer_stream)? };
//! loan.send_after(&producer_stream)?; // records the slot's event, then publishes
//!
//! let mut msg = rx.recv()?;
//! msg.wait_on(&consumer_stream)?; // the consumer's stream waits for the producer's event
//! let mut host = vec![0u32; 1024];
//! // SAFETY: `host` outlives the copy (synchronised below) and nothing else touches it.
//! unsafe {
//!     gpu.copy_to_host(host.as_mut_ptr().cast(), msg.device_ptr(), 4096, &consumer_stream)?;
//! }
//! msg.release_after(&consumer_stream)?; // the slot is reused once this stream's reads are done
//! gpu.synchronize(&consumer_stream)?;
//! assert!(host.iter().all(|&w| w == 0xC0FFEE));
//! # Ok::<(), psyne::device::DeviceError>(())
//! ```
//!
//! # Design
//!
//! * **Records in host memory, payloads in device memory.** The descriptors travel through an
//!   ordinary psyne SPSC ring ([`crate::ring`], one small `psyne.DeviceDescriptor` record per
//!   message: device offset, length, slot), so the record format, the checks of everything a
//!   peer writes, liveness and disconnection are the ring's. Each message's payload lives in a
//!   device region of `slots × slot_bytes` bytes (`cuMemAlloc`), allocated once by the producer:
//!   message `s` uses slot `s % slots`. The ring's control block and records are ordinary
//!   (shared) host memory: only the CPUs read them, so they are not pinned.
//! * **Events, created up front.** Each slot has a *ready* event (the producer's) and a
//!   *release* event (the consumer's), created when the end attaches, so nothing is allocated
//!   per message. [`DeviceProducer::loan`] makes the producer's stream wait for the slot's
//!   release event (when its last reader recorded one), [`DeviceLoan::send_after`] records the
//!   ready event on the producer's stream and then publishes the descriptor,
//!   [`DeviceReceived::wait_on`] makes the consumer's stream wait for it, and releasing records
//!   the release event on the consumer's stream. Per message: four driver calls and one ring
//!   record, no CPU wait on the GPU. Why every wait sees the record it is meant to: `slots.rs`.
//! * **Slot accounting on the CPU.** The consumer counts released messages in the *device
//!   block* (host memory beside the ring); a producer whose next slot is still held waits for
//!   that count (spinning, then sleeping; [`DeviceProducer::loan_timeout`] bounds it, and it
//!   ends when the consumer goes away). The consumer releases in order (one [`DeviceReceived`]
//!   at a time; it borrows the consumer), which costs no concurrency: releasing only enqueues
//!   an event, the GPU work it orders still runs asynchronously.
//! * **Across processes**, the device block is the shared object `/dev/shm/<name>.device`
//!   beside the ring `/dev/shm/<name>`. Each end writes its GPU's UUID and the IPC handles of
//!   what it created (producer: `cuIpcGetMemHandle` of the region and `cuIpcGetEventHandle` of
//!   its ready events; consumer: of its release events), then publishes its part. The other
//!   end checks the UUID ([`Device::check_peer`]: the same GPU, or another visible one with
//!   peer access) before it opens any handle, and refuses with [`DeviceError::DifferentGpu`] or
//!   [`DeviceError::NoPeerAccess`]; a driver that refuses IPC is
//!   [`DeviceError::IpcUnsupported`]; no driver is [`DeviceError::CudaUnavailable`].
//! * **The device is a trait** ([`Device`]): [`Cuda`] is the real one (feature `cuda`, through
//!   cudarc, driver loaded at run time); [`FakeDevice`] (hidden, for tests) models memory as
//!   shared host memory and events as counters with CUDA's rules, so all of the above is tested
//!   on CPU, across two processes too.
//!
//! # Limits (documented, not checked)
//!
//! * An end that leaves does not come back: a second producer or consumer of the same name is
//!   [`DeviceError::AlreadyAttached`] (its predecessor's region and events are gone).
//! * The producer's process owns the region: dropping the producer waits (at most two seconds)
//!   for the consumer to release what was sent and for its release events to complete, then
//!   frees it. A consumer that holds messages longer loses them (its mapping is then invalid).
//! * CUDA leaves it undefined to use an imported event after its exporter destroyed it: ends
//!   check that the peer is attached before each wait on its events, which narrows, but does
//!   not close, the window in which a peer that exits at that moment breaks this rule.
//! * Streams must belong to the device's context; payload ranges are only valid between the
//!   stream waits and records described above.
//!
//! # What is checked where
//!
//! Everything above except the driver calls is tested on CPU with [`FakeDevice`]
//! (`psyne/tests/device.rs`, in one process and in two). The [`Cuda`] implementation compiles
//! with `--features cuda` and, without a driver, returns [`DeviceError::CudaUnavailable`]
//! (tested); on a GPU it is exercised only by `scripts/gpu-check.sh`.

mod api;
mod block;
mod cuda;
mod fake;
mod slots;

pub use api::{Device, DevicePtr, GpuUuid, IpcHandle};
pub use cuda::{Cuda, CudaEvent, CudaMemory, CudaStream};
#[doc(hidden)]
pub use fake::{FakeDevice, FakeEvent, FakeMemory, FakeStream};

use core::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use block::{Block, PUBLISHED, Side};
use slots::{Plan, Reuse};

use crate::Channel;
use crate::channel::{Consumer, CreateError, OpenError, Producer, RecvError, SendError};
use crate::slab::SlabError;

/// Slot sizes are multiples of this (bytes): device copies and kernels like aligned payloads.
pub const SLOT_ALIGN: usize = 512;
/// Largest device region (`slots × slot_bytes`): 1 TiB.
pub const MAX_REGION: usize = 1 << 40;
/// Most slots of a device channel.
pub const MAX_SLOTS: usize = block::MAX_SLOTS;
/// How long an opening end waits for the creator to finish the device block.
const OPEN_PATIENCE: Duration = Duration::from_secs(5);
/// How long a dropped producer waits for the consumer to be done with its region.
const LINGER: Duration = Duration::from_secs(2);

/// One record of the descriptor ring: where message `sequence`'s payload is.
#[derive(Clone, Copy, crate::PsyneMessage)]
#[repr(C)]
#[psyne(name = "psyne.DeviceDescriptor")]
struct Descriptor {
    /// Byte offset of the payload in the device region.
    offset: u64,
    /// Payload length in bytes.
    len: u64,
    /// The slot (`sequence % slots`).
    slot: u32,
    /// Reserved (0).
    flags: u32,
}

/// Why a device-channel call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum DeviceError {
    /// CUDA cannot be used: psyne was built without the `cuda` feature, the driver library is
    /// missing or too old, or there is no such device.
    CudaUnavailable {
        /// What is missing.
        reason: String,
    },
    /// A driver call failed.
    Driver {
        /// The call.
        call: &'static str,
        /// The driver's error.
        reason: String,
    },
    /// The peer's GPU is not visible from this process, so its memory and events cannot be
    /// opened here.
    DifferentGpu {
        /// This end's GPU.
        ours: GpuUuid,
        /// The peer's GPU.
        theirs: GpuUuid,
    },
    /// The peer's GPU is visible but this GPU has no peer access to it.
    NoPeerAccess {
        /// This end's GPU.
        ours: GpuUuid,
        /// The peer's GPU.
        theirs: GpuUuid,
    },
    /// The driver refused to export or open an inter-process handle (IPC not supported here:
    /// some virtualised GPUs, WSL, MIG instances, or a handle from a gone process).
    IpcUnsupported {
        /// The driver's answer.
        reason: String,
    },
    /// A loan larger than a slot.
    TooLarge {
        /// Requested bytes.
        len: usize,
        /// Slot size.
        max: usize,
    },
    /// A builder setting out of range.
    InvalidConfig {
        /// Which setting, and its range.
        what: &'static str,
    },
    /// This end of the shared channel was taken already (ends do not come back).
    AlreadyAttached,
    /// `try_loan`: the next slot is still held by the consumer.
    Full,
    /// `try_recv`: nothing was sent.
    Empty,
    /// The wait ran out.
    Timeout,
    /// The other end is gone (for a consumer: and nothing is left to receive).
    Disconnected,
    /// Shared memory written by the peer failed a check.
    Corrupted {
        /// What was wrong.
        what: &'static str,
    },
    /// Creating the shared descriptor ring failed.
    Create(CreateError),
    /// Opening the shared descriptor ring failed.
    Open(OpenError),
    /// Mapping the device block failed.
    Slab(SlabError),
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceError::CudaUnavailable { reason } => write!(f, "CUDA is unavailable: {reason}"),
            DeviceError::Driver { call, reason } => write!(f, "{call} failed: {reason}"),
            DeviceError::DifferentGpu { ours, theirs } => write!(
                f,
                "the peer's GPU {theirs} is not visible from this process (ours: {ours})"
            ),
            DeviceError::NoPeerAccess { ours, theirs } => {
                write!(
                    f,
                    "GPU {ours} has no peer access to the peer's GPU {theirs}"
                )
            }
            DeviceError::IpcUnsupported { reason } => {
                write!(f, "CUDA IPC does not work here: {reason}")
            }
            DeviceError::TooLarge { len, max } => {
                write!(f, "a loan of {len} bytes exceeds the slot size {max}")
            }
            DeviceError::InvalidConfig { what } => write!(f, "invalid device channel: {what}"),
            DeviceError::AlreadyAttached => {
                f.write_str("this end of the device channel is taken (ends do not come back)")
            }
            DeviceError::Full => f.write_str("the next slot is still held by the consumer"),
            DeviceError::Empty => f.write_str("the device channel is empty"),
            DeviceError::Timeout => f.write_str("timed out"),
            DeviceError::Disconnected => f.write_str("the other end is gone"),
            DeviceError::Corrupted { what } => {
                write!(
                    f,
                    "the device channel's shared memory is corrupt: bad {what}"
                )
            }
            DeviceError::Create(e) => write!(f, "creating the descriptor ring: {e}"),
            DeviceError::Open(e) => write!(f, "opening the descriptor ring: {e}"),
            DeviceError::Slab(e) => write!(f, "mapping the device block: {e}"),
        }
    }
}

impl std::error::Error for DeviceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DeviceError::Create(e) => Some(e),
            DeviceError::Open(e) => Some(e),
            DeviceError::Slab(e) => Some(e),
            _ => None,
        }
    }
}

impl From<SendError> for DeviceError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Full => DeviceError::Full,
            SendError::Timeout => DeviceError::Timeout,
            SendError::Disconnected => DeviceError::Disconnected,
            SendError::Corrupted { what } => DeviceError::Corrupted { what },
            _ => DeviceError::Corrupted {
                what: "descriptor ring (refused a descriptor)",
            },
        }
    }
}

impl From<RecvError> for DeviceError {
    fn from(e: RecvError) -> Self {
        match e {
            RecvError::Empty => DeviceError::Empty,
            RecvError::Timeout => DeviceError::Timeout,
            RecvError::Disconnected => DeviceError::Disconnected,
            RecvError::Corrupted { what } => DeviceError::Corrupted { what },
            // Only broadcast rings cut a consumer off; the descriptor ring is SPSC.
            RecvError::Lagged => DeviceError::Corrupted {
                what: "descriptor ring (reported a broadcast cut-off)",
            },
        }
    }
}

/// Entry point of device channels: [`DeviceChannel::builder`], and
/// [`DeviceChannel::open_consumer`] / [`DeviceChannel::open_producer`] for the second process.
#[derive(Debug)]
pub struct DeviceChannel;

impl DeviceChannel {
    /// A builder: 4 slots of 1 MiB by default.
    pub fn builder() -> DeviceChannelBuilder {
        DeviceChannelBuilder {
            slots: 4,
            slot_bytes: 1 << 20,
        }
    }

    /// Opens the consumer end of the shared device channel `name` (created by another process
    /// with [`SharedDeviceChannelBuilder::create_producer`]) on `device`.
    ///
    /// # Errors
    /// [`DeviceError::Open`] for the ring; [`DeviceError::Timeout`] if the creator does not
    /// finish the device block within 5 s; [`DeviceError::AlreadyAttached`];
    /// [`DeviceError::DifferentGpu`] / [`DeviceError::NoPeerAccess`] if the producer already
    /// attached on a GPU this one cannot use; [`DeviceError::IpcUnsupported`] and driver errors.
    pub fn open_consumer<D: Device>(
        device: &D,
        name: &str,
    ) -> Result<DeviceConsumer<D>, DeviceError> {
        let ring = Channel::<Descriptor>::open_consumer(name).map_err(DeviceError::Open)?;
        let block = Block::open(name, OPEN_PATIENCE)?;
        DeviceConsumer::attach(device, ring, Arc::new(block), None)
    }

    /// Opens the producer end of the shared device channel `name` (created by another process
    /// with [`SharedDeviceChannelBuilder::create_consumer`]) on `device`.
    ///
    /// # Errors
    /// As [`open_consumer`](Self::open_consumer).
    pub fn open_producer<D: Device>(
        device: &D,
        name: &str,
    ) -> Result<DeviceProducer<D>, DeviceError> {
        let ring = Channel::<Descriptor>::open_producer(name).map_err(DeviceError::Open)?;
        let block = Block::open(name, OPEN_PATIENCE)?;
        DeviceProducer::attach(device, ring, Arc::new(block), None)
    }
}

/// Builder of a device channel; see [`DeviceChannel::builder`].
#[derive(Debug, Clone, Copy)]
#[must_use = "a builder does nothing until `build` or `create_*` is called"]
pub struct DeviceChannelBuilder {
    slots: usize,
    slot_bytes: usize,
}

/// Builder of a shared device channel; see [`DeviceChannelBuilder::shared`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `create_*` is called"]
pub struct SharedDeviceChannelBuilder {
    builder: DeviceChannelBuilder,
    name: String,
}

impl DeviceChannelBuilder {
    /// Messages in flight at most (1 ..= [`MAX_SLOTS`]): each has its own slot of device memory
    /// and its own pair of events.
    pub fn slots(mut self, slots: usize) -> Self {
        self.slots = slots;
        self
    }

    /// Largest payload in bytes; rounded up to a multiple of [`SLOT_ALIGN`].
    pub fn slot_bytes(mut self, bytes: usize) -> Self {
        self.slot_bytes = bytes;
        self
    }

    /// Makes the channel a shared one named `name` (`/dev/shm/<name>` and
    /// `/dev/shm/<name>.device`), for two processes on one machine.
    pub fn shared(self, name: &str) -> SharedDeviceChannelBuilder {
        SharedDeviceChannelBuilder {
            builder: self,
            name: name.to_owned(),
        }
    }

    fn plan(&self) -> Result<Plan, DeviceError> {
        if self.slots == 0 || self.slots > MAX_SLOTS {
            return Err(DeviceError::InvalidConfig {
                what: "slots must be 1 ..= 64",
            });
        }
        let slot_bytes = self
            .slot_bytes
            .max(1)
            .checked_next_multiple_of(SLOT_ALIGN)
            .filter(|b| b.checked_mul(self.slots).is_some_and(|t| t <= MAX_REGION))
            .ok_or(DeviceError::InvalidConfig {
                what: "slots x slot_bytes must be at most 1 TiB",
            })?;
        Ok(Plan {
            slots: self.slots,
            slot_bytes,
        })
    }

    fn ring(&self) -> crate::ChannelBuilder<Descriptor> {
        Channel::<Descriptor>::builder().capacity(self.slots)
    }

    /// Both ends of a channel in this process on `device`: the producer allocates the region
    /// and events, which the consumer uses directly (no IPC).
    ///
    /// # Errors
    /// [`DeviceError::InvalidConfig`]; allocation and driver errors.
    pub fn build<D: Device>(
        self,
        device: &D,
    ) -> Result<(DeviceProducer<D>, DeviceConsumer<D>), DeviceError> {
        let plan = self.plan()?;
        let (tx, rx) = self
            .ring()
            .build()
            .map_err(|e| DeviceError::Create(e.into()))?;
        let block = Arc::new(Block::private(plan.slots, plan.slot_bytes)?);
        let producer = DeviceProducer::attach(device, tx, block.clone(), Some(()))?;
        let mut consumer = DeviceConsumer::attach(device, rx, block, Some(()))?;
        consumer.peer = Some(PeerRegion {
            memory: producer.memory.clone(),
            ready: producer.ready.clone(),
        });
        let mut producer = producer;
        producer.release = Some(consumer.release.clone());
        Ok((producer, consumer))
    }
}

impl SharedDeviceChannelBuilder {
    /// Creates the shared channel and returns its producer on `device`; another process opens
    /// the consumer with [`DeviceChannel::open_consumer`].
    ///
    /// # Errors
    /// [`DeviceError::InvalidConfig`]; [`DeviceError::Create`] for the ring (a live channel of
    /// that name, an invalid name); [`DeviceError::IpcUnsupported`] if the region or events
    /// cannot be exported; allocation and driver errors.
    pub fn create_producer<D: Device>(self, device: &D) -> Result<DeviceProducer<D>, DeviceError> {
        let plan = self.builder.plan()?;
        let ring = self
            .builder
            .ring()
            .shared(&self.name)
            .create_producer()
            .map_err(DeviceError::Create)?;
        let block = Block::create(&self.name, plan.slots, plan.slot_bytes)?;
        DeviceProducer::attach(device, ring, Arc::new(block), None)
    }

    /// Creates the shared channel and returns its consumer on `device`; another process opens
    /// the producer with [`DeviceChannel::open_producer`].
    ///
    /// # Errors
    /// As [`create_producer`](Self::create_producer).
    pub fn create_consumer<D: Device>(self, device: &D) -> Result<DeviceConsumer<D>, DeviceError> {
        let plan = self.builder.plan()?;
        let ring = self
            .builder
            .ring()
            .shared(&self.name)
            .create_consumer()
            .map_err(DeviceError::Create)?;
        let block = Block::create(&self.name, plan.slots, plan.slot_bytes)?;
        DeviceConsumer::attach(device, ring, Arc::new(block), None)
    }
}

/// The producer's region and ready events, as the consumer uses them.
struct PeerRegion<D: Device> {
    memory: Arc<D::Memory>,
    ready: Arc<[D::Event]>,
}

/// Makes `count` events; exports each into the block for `side` unless `local`.
fn make_events<D: Device>(
    device: &D,
    block: &Block,
    side: Side,
    local: bool,
) -> Result<Arc<[D::Event]>, DeviceError> {
    let mut events = Vec::with_capacity(block.slots());
    for slot in 0..block.slots() {
        let e = device.event(!local)?;
        if !local {
            block.set_event_handle(side, slot, &device.export_event(&e)?);
        }
        events.push(e);
    }
    Ok(events.into())
}

/// Opens the `side` events published in the block.
fn open_events<D: Device>(
    device: &D,
    block: &Block,
    side: Side,
) -> Result<Arc<[D::Event]>, DeviceError> {
    let mut events = Vec::with_capacity(block.slots());
    for slot in 0..block.slots() {
        events.push(device.open_event(&block.event_handle(side, slot))?);
    }
    Ok(events.into())
}

/// Waits a little longer each round: spin, yield, then sleep up to 1 ms.
struct Backoff(u32);

impl Backoff {
    fn snooze(&mut self) {
        self.0 = self.0.saturating_add(1);
        match self.0 {
            0..64 => crate::sync::spin_loop(),
            64..128 => crate::sync::yield_now(),
            n => std::thread::sleep(Duration::from_micros(u64::from((n - 127).min(1000)))),
        }
    }
}

/// The producer end of a device channel.
pub struct DeviceProducer<D: Device = Cuda> {
    device: D,
    ring: Producer<Descriptor>,
    block: Arc<Block>,
    plan: Plan,
    memory: Arc<D::Memory>,
    base: DevicePtr,
    ready: Arc<[D::Event]>,
    /// The consumer's release events (opened when first needed, across processes).
    release: Option<Arc<[D::Event]>>,
    /// Sequence number of the next message.
    next: u64,
    shared: bool,
}

impl<D: Device> fmt::Debug for DeviceProducer<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceProducer")
            .field("slots", &self.plan.slots)
            .field("slot_bytes", &self.plan.slot_bytes)
            .field("next", &self.next)
            .finish()
    }
}

impl<D: Device> DeviceProducer<D> {
    /// Claims the producer part, allocates the region and ready events, and (across processes:
    /// `local` is `None`) exports them and checks the consumer's GPU if it attached already.
    fn attach(
        device: &D,
        ring: Producer<Descriptor>,
        block: Arc<Block>,
        local: Option<()>,
    ) -> Result<Self, DeviceError> {
        let local = local.is_some();
        block.claim(Side::Producer)?;
        let plan = Plan {
            slots: block.slots(),
            slot_bytes: block.slot_bytes(),
        };
        let memory = device.alloc(plan.slots * plan.slot_bytes)?;
        if !local {
            block.set_memory_handle(&device.export_memory(&memory)?);
        }
        let ready = make_events(device, &block, Side::Producer, local)?;
        block.set_uuid(Side::Producer, device.uuid());
        block.publish(Side::Producer);
        if !local && block.state(Side::Consumer) == PUBLISHED {
            device.check_peer(block.uuid(Side::Consumer))?;
        }
        Ok(DeviceProducer {
            base: D::memory_ptr(&memory),
            device: device.clone(),
            ring,
            block,
            plan,
            memory: Arc::new(memory),
            ready,
            release: None,
            next: 0,
            shared: !local,
        })
    }

    /// Number of slots (messages in flight at most).
    pub fn slots(&self) -> usize {
        self.plan.slots
    }

    /// Largest payload of a loan, in bytes.
    pub fn slot_bytes(&self) -> usize {
        self.plan.slot_bytes
    }

    /// The device this end works on.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// Whether the consumer is gone.
    pub fn is_disconnected(&self) -> bool {
        self.ring.is_disconnected()
    }

    /// Loans the next slot for a payload of `len` bytes, waiting (on the CPU) while the consumer
    /// still holds it, and makes `stream` wait (on the device) until the consumer's reads of the
    /// slot's previous message are complete. Enqueue the work that writes the payload on
    /// `stream` (or on a stream ordered after it), then [`DeviceLoan::send_after`].
    ///
    /// # Errors
    /// [`DeviceError::TooLarge`]; [`DeviceError::Disconnected`] when the consumer is gone;
    /// [`DeviceError::Corrupted`] for impossible counts in shared memory;
    /// [`DeviceError::DifferentGpu`] / [`DeviceError::NoPeerAccess`] /
    /// [`DeviceError::IpcUnsupported`] when the consumer's events are first opened; driver
    /// errors.
    pub fn loan(
        &mut self,
        stream: &D::Stream,
        len: usize,
    ) -> Result<DeviceLoan<'_, D>, DeviceError> {
        self.loan_until(stream, len, Some(None))
    }

    /// As [`loan`](Self::loan), but [`DeviceError::Full`] at once if the slot is held.
    ///
    /// # Errors
    /// As [`loan`](Self::loan), and [`DeviceError::Full`].
    pub fn try_loan(
        &mut self,
        stream: &D::Stream,
        len: usize,
    ) -> Result<DeviceLoan<'_, D>, DeviceError> {
        self.loan_until(stream, len, None)
    }

    /// As [`loan`](Self::loan), waiting at most `timeout` for the slot.
    ///
    /// # Errors
    /// As [`loan`](Self::loan), and [`DeviceError::Timeout`].
    pub fn loan_timeout(
        &mut self,
        stream: &D::Stream,
        len: usize,
        timeout: Duration,
    ) -> Result<DeviceLoan<'_, D>, DeviceError> {
        self.loan_until(stream, len, Some(Instant::now().checked_add(timeout)))
    }

    /// `wait`: `None` try once; `Some(None)` no deadline; `Some(Some(t))` until `t`.
    fn loan_until(
        &mut self,
        stream: &D::Stream,
        len: usize,
        wait: Option<Option<Instant>>,
    ) -> Result<DeviceLoan<'_, D>, DeviceError> {
        if len > self.plan.slot_bytes {
            return Err(DeviceError::TooLarge {
                len,
                max: self.plan.slot_bytes,
            });
        }
        let seq = self.next;
        let slot = self.plan.slot(seq);
        let mut backoff = Backoff(0);
        let wait_event = loop {
            let released = self.block.released();
            let evented = self.block.evented(slot);
            match self
                .plan
                .reuse(seq, released, evented)
                .map_err(|what| DeviceError::Corrupted { what })?
            {
                Reuse::Free { wait_event } => break wait_event,
                Reuse::Busy => {
                    if self.ring.is_disconnected() {
                        return Err(DeviceError::Disconnected);
                    }
                    match wait {
                        None => return Err(DeviceError::Full),
                        Some(Some(deadline)) if Instant::now() >= deadline => {
                            return Err(DeviceError::Timeout);
                        }
                        _ => backoff.snooze(),
                    }
                }
            }
        };
        if wait_event {
            if self.shared && self.ring.is_disconnected() {
                return Err(DeviceError::Disconnected);
            }
            let events = self.release_events()?;
            self.device.wait(stream, &events[slot])?;
        }
        Ok(DeviceLoan {
            ptr: self.base + self.plan.offset(seq) as u64,
            len,
            seq,
            producer: self,
        })
    }

    /// The consumer's release events, opened from the block the first time.
    fn release_events(&mut self) -> Result<Arc<[D::Event]>, DeviceError> {
        if let Some(e) = &self.release {
            return Ok(e.clone());
        }
        if self.block.state(Side::Consumer) != PUBLISHED {
            return Err(DeviceError::Corrupted {
                what: "release recorded by a consumer that never published its events",
            });
        }
        self.device.check_peer(self.block.uuid(Side::Consumer))?;
        let events = open_events(&self.device, &self.block, Side::Consumer)?;
        self.release = Some(events.clone());
        Ok(events)
    }

    /// Waits (at most `patience`) for the consumer to release everything sent and for the
    /// device work its releases recorded to complete.
    fn linger(&mut self, patience: Duration) {
        let deadline = Instant::now() + patience;
        let mut backoff = Backoff(0);
        while self.block.released() < self.next && !self.ring.is_disconnected() {
            if Instant::now() >= deadline {
                return;
            }
            backoff.snooze();
        }
        let Ok(events) = self.release_events() else {
            return;
        };
        for e in events.iter() {
            while !matches!(self.device.query(e), Ok(true) | Err(_)) {
                if Instant::now() >= deadline {
                    return;
                }
                backoff.snooze();
            }
        }
    }
}

impl<D: Device> Drop for DeviceProducer<D> {
    fn drop(&mut self) {
        if self.shared && self.next > 0 {
            self.linger(LINGER);
        }
    }
}

/// A loaned slot of device memory: [`device_ptr`](Self::device_ptr) .. `+ len()`. Write it with
/// work on a stream, then [`send_after`](Self::send_after) that stream. Dropping the loan
/// sends nothing (the next loan gets the same slot).
pub struct DeviceLoan<'a, D: Device = Cuda> {
    producer: &'a mut DeviceProducer<D>,
    ptr: DevicePtr,
    len: usize,
    seq: u64,
}

impl<D: Device> fmt::Debug for DeviceLoan<'_, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceLoan")
            .field("ptr", &format_args!("{:#x}", self.ptr))
            .field("len", &self.len)
            .field("sequence", &self.seq)
            .finish()
    }
}

impl<D: Device> DeviceLoan<'_, D> {
    /// The payload's device address (`CUdeviceptr`), valid in this process.
    pub fn device_ptr(&self) -> DevicePtr {
        self.ptr
    }

    /// The payload's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The message's sequence number (0, 1, 2, ...).
    pub fn sequence(&self) -> u64 {
        self.seq
    }

    /// Records the slot's ready event on `stream` (after the work that writes the payload) and
    /// publishes the message: the consumer's stream will wait for that event.
    ///
    /// # Errors
    /// A driver error recording the event (nothing is sent); [`DeviceError::Disconnected`] when
    /// the consumer is gone; [`DeviceError::Corrupted`] for the ring.
    pub fn send_after(self, stream: &D::Stream) -> Result<(), DeviceError> {
        let p = self.producer;
        let slot = p.plan.slot(self.seq);
        p.device.record(&p.ready[slot], stream)?;
        let mut record = p.ring.allocate_timeout(OPEN_PATIENCE)?;
        *record = Descriptor {
            offset: p.plan.offset(self.seq) as u64,
            len: self.len as u64,
            slot: slot as u32,
            flags: 0,
        };
        record.send();
        p.next = self.seq + 1;
        Ok(())
    }
}

/// The consumer end of a device channel.
pub struct DeviceConsumer<D: Device = Cuda> {
    device: D,
    ring: Consumer<Descriptor>,
    block: Arc<Block>,
    plan: Plan,
    release: Arc<[D::Event]>,
    /// The producer's region and events (opened at the first message, across processes).
    peer: Option<PeerRegion<D>>,
    next: u64,
}

impl<D: Device> fmt::Debug for DeviceConsumer<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceConsumer")
            .field("slots", &self.plan.slots)
            .field("slot_bytes", &self.plan.slot_bytes)
            .field("next", &self.next)
            .finish()
    }
}

impl<D: Device> DeviceConsumer<D> {
    fn attach(
        device: &D,
        ring: Consumer<Descriptor>,
        block: Arc<Block>,
        local: Option<()>,
    ) -> Result<Self, DeviceError> {
        let local = local.is_some();
        block.claim(Side::Consumer)?;
        let plan = Plan {
            slots: block.slots(),
            slot_bytes: block.slot_bytes(),
        };
        let release = make_events(device, &block, Side::Consumer, local)?;
        block.set_uuid(Side::Consumer, device.uuid());
        block.publish(Side::Consumer);
        if !local && block.state(Side::Producer) == PUBLISHED {
            device.check_peer(block.uuid(Side::Producer))?;
        }
        Ok(DeviceConsumer {
            device: device.clone(),
            ring,
            block,
            plan,
            release,
            peer: None,
            next: 0,
        })
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.plan.slots
    }

    /// Largest payload, in bytes.
    pub fn slot_bytes(&self) -> usize {
        self.plan.slot_bytes
    }

    /// The device this end works on.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// Whether the producer is gone.
    pub fn is_disconnected(&self) -> bool {
        self.ring.is_disconnected()
    }

    /// Receives the next message, waiting until one is sent or the producer is gone. Call
    /// [`DeviceReceived::wait_on`] before reading its payload on a stream.
    ///
    /// # Errors
    /// [`DeviceError::Disconnected`]; [`DeviceError::Corrupted`] for a bad descriptor;
    /// [`DeviceError::DifferentGpu`] / [`DeviceError::NoPeerAccess`] /
    /// [`DeviceError::IpcUnsupported`] when the producer's region is first opened.
    pub fn recv(&mut self) -> Result<DeviceReceived<'_, D>, DeviceError> {
        let d = self.ring.recv().map(|m| (*m, m.header().sequence))?;
        self.take(d)
    }

    /// As [`recv`](Self::recv), but [`DeviceError::Empty`] at once if nothing was sent.
    ///
    /// # Errors
    /// As [`recv`](Self::recv), and [`DeviceError::Empty`].
    pub fn try_recv(&mut self) -> Result<DeviceReceived<'_, D>, DeviceError> {
        let d = self.ring.try_recv().map(|m| (*m, m.header().sequence))?;
        self.take(d)
    }

    /// As [`recv`](Self::recv), waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`recv`](Self::recv), and [`DeviceError::Timeout`].
    pub fn recv_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<DeviceReceived<'_, D>, DeviceError> {
        let d = self
            .ring
            .recv_timeout(timeout)
            .map(|m| (*m, m.header().sequence))?;
        self.take(d)
    }

    fn take(&mut self, (d, seq): (Descriptor, u64)) -> Result<DeviceReceived<'_, D>, DeviceError> {
        if seq != self.next {
            return Err(DeviceError::Corrupted {
                what: "device message sequence",
            });
        }
        self.plan
            .check(seq, d.offset, d.len, d.slot)
            .map_err(|what| DeviceError::Corrupted { what })?;
        if self.peer.is_none() {
            self.peer = Some(self.open_peer()?);
        }
        let Some(peer) = &self.peer else {
            return Err(DeviceError::Corrupted {
                what: "producer part",
            });
        };
        let ptr = D::memory_ptr(&peer.memory) + d.offset;
        self.next = seq + 1;
        Ok(DeviceReceived {
            consumer: self,
            ptr,
            len: d.len as usize,
            seq,
            stream: None,
            released: false,
        })
    }

    fn open_peer(&self) -> Result<PeerRegion<D>, DeviceError> {
        if self.block.state(Side::Producer) != PUBLISHED {
            return Err(DeviceError::Corrupted {
                what: "descriptor from a producer that never published its region",
            });
        }
        self.device.check_peer(self.block.uuid(Side::Producer))?;
        let memory = self.device.open_memory(
            &self.block.memory_handle(),
            self.plan.slots * self.plan.slot_bytes,
        )?;
        let ready = open_events(&self.device, &self.block, Side::Producer)?;
        Ok(PeerRegion {
            memory: Arc::new(memory),
            ready,
        })
    }
}

/// A received message: device memory [`device_ptr`](Self::device_ptr) .. `+ len()`. Make a
/// stream wait for it with [`wait_on`](Self::wait_on), enqueue the reads on that stream, then
/// release it with [`release_after`](Self::release_after) (or drop it: the release event is
/// then recorded on the stream last waited on).
pub struct DeviceReceived<'a, D: Device = Cuda> {
    consumer: &'a mut DeviceConsumer<D>,
    ptr: DevicePtr,
    len: usize,
    seq: u64,
    /// The stream last given to `wait_on`.
    stream: Option<&'a D::Stream>,
    released: bool,
}

impl<D: Device> fmt::Debug for DeviceReceived<'_, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceReceived")
            .field("ptr", &format_args!("{:#x}", self.ptr))
            .field("len", &self.len)
            .field("sequence", &self.seq)
            .finish()
    }
}

impl<'a, D: Device> DeviceReceived<'a, D> {
    /// The payload's device address (`CUdeviceptr`) in this process.
    pub fn device_ptr(&self) -> DevicePtr {
        self.ptr
    }

    /// The payload's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The message's sequence number.
    pub fn sequence(&self) -> u64 {
        self.seq
    }

    /// Makes `stream` wait (on the device) until the producer's work on the payload is
    /// complete; work enqueued on `stream` afterwards may read it.
    ///
    /// # Errors
    /// A driver error.
    pub fn wait_on(&mut self, stream: &'a D::Stream) -> Result<(), DeviceError> {
        let c = &*self.consumer;
        let slot = c.plan.slot(self.seq);
        let Some(peer) = &c.peer else {
            return Err(DeviceError::Corrupted {
                what: "producer part",
            });
        };
        c.device.wait(stream, &peer.ready[slot])?;
        self.stream = Some(stream);
        Ok(())
    }

    /// Releases the slot once the work enqueued on `stream` so far is complete (records the
    /// slot's release event there; the producer's stream waits for it before reusing the slot).
    ///
    /// # Errors
    /// A driver error recording the event: the slot is then released after synchronising
    /// `stream` (a CPU wait), so the ordering holds.
    pub fn release_after(mut self, stream: &D::Stream) -> Result<(), DeviceError> {
        self.released = true;
        self.consumer.release_on(self.seq, Some(stream))
    }
}

impl<D: Device> DeviceConsumer<D> {
    fn release_on(&self, seq: u64, stream: Option<&D::Stream>) -> Result<(), DeviceError> {
        let slot = self.plan.slot(seq);
        let Some(stream) = stream else {
            self.block.release(slot, seq, false);
            return Ok(());
        };
        match self.device.record(&self.release[slot], stream) {
            Ok(()) => {
                self.block.release(slot, seq, true);
                Ok(())
            }
            Err(e) => {
                let synced = self.device.synchronize(stream);
                self.block.release(slot, seq, false);
                synced.and(Err(e))
            }
        }
    }
}

impl<D: Device> Drop for DeviceReceived<'_, D> {
    fn drop(&mut self) {
        if !self.released {
            // Errors cannot be reported here; `release_on` falls back to synchronising.
            let _ = self.consumer.release_on(self.seq, self.stream);
        }
    }
}
