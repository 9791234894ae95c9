//! The device abstraction: the few driver operations a device channel needs, as one trait, so
//! that the channel's logic runs unchanged over the CUDA driver ([`Cuda`](super::Cuda)) and over
//! host memory ([`FakeDevice`](super::FakeDevice), for the CPU tests).

use core::fmt;

use super::DeviceError;

/// A device address (`CUdeviceptr` for CUDA): valid in the process and context that produced it.
pub type DevicePtr = u64;

/// An opaque 64-byte inter-process handle (`CUipcMemHandle` / `CUipcEventHandle` for CUDA),
/// exchanged through the channel's shared memory.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IpcHandle(pub [u8; 64]);

impl IpcHandle {
    /// The all-zero handle (never a valid one for the devices here).
    pub const ZERO: IpcHandle = IpcHandle([0; 64]);
}

impl fmt::Debug for IpcHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IpcHandle(")?;
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "..)")
    }
}

/// A GPU's 16-byte UUID (`cuDeviceGetUuid`), the identity both ends of a channel compare.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct GpuUuid(pub [u8; 16]);

impl fmt::Debug for GpuUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for GpuUuid {
    /// The `nvidia-smi -L` spelling: `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GPU-")?;
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The driver operations of a device channel.
///
/// A device channel is generic over this trait: [`Cuda`](super::Cuda) is the real one (feature
/// `cuda`), [`FakeDevice`](super::FakeDevice) a host-memory model with the same ordering rules,
/// used to test the channel's CPU-side logic without a GPU. Every method that can fail returns a
/// [`DeviceError`]; none panics.
///
/// Event semantics are CUDA's: [`record`](Device::record) captures the work enqueued on the
/// stream so far; [`wait`](Device::wait) makes later work on a stream wait for the *most recent*
/// record of the event at the time of the call (an event never recorded is complete).
pub trait Device: Clone + Send + Sync + 'static {
    /// A stream of work (`cudarc::driver::CudaStream` for CUDA).
    type Stream: ?Sized;
    /// Device memory this process allocated or opened; freed (or closed) on drop.
    type Memory: Send + Sync;
    /// An event this process created or opened; destroyed on drop.
    type Event: Send + Sync;

    /// The UUID of the GPU this device handle works on.
    fn uuid(&self) -> GpuUuid;
    /// Whether memory and events of the GPU `peer` can be used from this device: `Ok` for the
    /// same GPU, or another one with peer access; [`DeviceError::DifferentGpu`] if `peer` is not
    /// visible here, [`DeviceError::NoPeerAccess`] if it is but has no peer access.
    fn check_peer(&self, peer: GpuUuid) -> Result<(), DeviceError>;
    /// Allocates `bytes` of device memory (uninitialised).
    fn alloc(&self, bytes: usize) -> Result<Self::Memory, DeviceError>;
    /// The device address of `memory` in this process.
    fn memory_ptr(memory: &Self::Memory) -> DevicePtr;
    /// Creates an event without timing; `interprocess` makes it exportable.
    fn event(&self, interprocess: bool) -> Result<Self::Event, DeviceError>;
    /// Records `event` on `stream`.
    fn record(&self, event: &Self::Event, stream: &Self::Stream) -> Result<(), DeviceError>;
    /// Makes `stream` wait (on the device) for the most recent record of `event`.
    fn wait(&self, stream: &Self::Stream, event: &Self::Event) -> Result<(), DeviceError>;
    /// Whether the work captured by the most recent record of `event` is complete.
    fn query(&self, event: &Self::Event) -> Result<bool, DeviceError>;
    /// Blocks the calling thread until `stream`'s work is complete (work the caller enqueued;
    /// used when an event could not be recorded, and by checks).
    fn synchronize(&self, stream: &Self::Stream) -> Result<(), DeviceError>;
    /// An inter-process handle for `memory` (which this process allocated).
    fn export_memory(&self, memory: &Self::Memory) -> Result<IpcHandle, DeviceError>;
    /// Opens memory of `bytes` exported by another process.
    fn open_memory(&self, handle: &IpcHandle, bytes: usize) -> Result<Self::Memory, DeviceError>;
    /// An inter-process handle for `event` (created with `interprocess`).
    fn export_event(&self, event: &Self::Event) -> Result<IpcHandle, DeviceError>;
    /// Opens an event exported by another process.
    fn open_event(&self, handle: &IpcHandle) -> Result<Self::Event, DeviceError>;

    /// Enqueues on `stream` a fill of `words` 32-bit words at `dst` with `value`
    /// (`cuMemsetD32Async`).
    ///
    /// # Safety
    /// `dst .. dst + 4 * words` must be device memory of this device that stays allocated until
    /// the work completes, and no other work may access it meanwhile unless ordered by events.
    unsafe fn memset_d32(
        &self,
        dst: DevicePtr,
        value: u32,
        words: usize,
        stream: &Self::Stream,
    ) -> Result<(), DeviceError>;
    /// Enqueues on `stream` a device-to-device copy of `bytes` (`cuMemcpyDtoDAsync`).
    ///
    /// # Safety
    /// As [`memset_d32`](Device::memset_d32), for both ranges; they must not overlap.
    unsafe fn copy(
        &self,
        dst: DevicePtr,
        src: DevicePtr,
        bytes: usize,
        stream: &Self::Stream,
    ) -> Result<(), DeviceError>;
    /// Enqueues on `stream` a copy of `bytes` from device memory to host memory
    /// (`cuMemcpyDtoHAsync`).
    ///
    /// # Safety
    /// As [`memset_d32`](Device::memset_d32) for `src`; `dst .. dst + bytes` must be writable host
    /// memory that nothing else accesses until the stream's work completes.
    unsafe fn copy_to_host(
        &self,
        dst: *mut u8,
        src: DevicePtr,
        bytes: usize,
        stream: &Self::Stream,
    ) -> Result<(), DeviceError>;
}
