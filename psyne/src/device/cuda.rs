//! The real device: the CUDA driver through cudarc (feature `cuda`, the driver loaded at run
//! time). Without the feature, or without a driver or device, [`Cuda::new`] returns
//! [`DeviceError::CudaUnavailable`] and nothing else of it can be reached: its stream, memory and
//! event types are then empty enums.

#[cfg(feature = "cuda")]
pub use with_cuda::{Cuda, CudaEvent, CudaMemory};
#[cfg(not(feature = "cuda"))]
pub use without_cuda::{Cuda, CudaEvent, CudaMemory, CudaStream};

/// The stream type of [`Cuda`]: cudarc's stream (`Arc<CudaStream>` from
/// `CudaContext::new_stream`, passed as `&stream`).
#[cfg(feature = "cuda")]
pub type CudaStream = cudarc::driver::CudaStream;

#[cfg(feature = "cuda")]
mod with_cuda {
    use std::sync::Arc;

    use cudarc::driver::sys::{self, CUresult};
    use cudarc::driver::{CudaContext, CudaStream};

    use crate::device::DeviceError;
    use crate::device::api::{Device, DevicePtr, GpuUuid, IpcHandle};

    /// One CUDA device's primary context, for device channels; cheap to clone.
    #[derive(Clone)]
    pub struct Cuda {
        ctx: Arc<CudaContext>,
        uuid: GpuUuid,
    }

    impl std::fmt::Debug for Cuda {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Cuda")
                .field("ordinal", &self.ctx.ordinal())
                .field("uuid", &self.uuid)
                .finish()
        }
    }

    /// Device memory: allocated here (`cuMemAlloc`, freed on drop) or opened from another
    /// process (`cuIpcOpenMemHandle`, closed on drop).
    pub struct CudaMemory {
        ctx: Arc<CudaContext>,
        ptr: sys::CUdeviceptr,
        opened: bool,
    }

    /// A CUDA event created here or opened from another process; destroyed on drop.
    pub struct CudaEvent {
        ctx: Arc<CudaContext>,
        event: sys::CUevent,
    }

    // SAFETY: a CUevent is a driver handle, usable from any thread once its context is bound
    // (every method binds it); the context is Send + Sync.
    unsafe impl Send for CudaEvent {}
    // SAFETY: as above; `&CudaEvent` only passes the handle to the (thread-safe) driver.
    unsafe impl Sync for CudaEvent {}

    fn driver(call: &'static str, r: CUresult) -> Result<(), DeviceError> {
        r.result().map_err(|e| DeviceError::Driver {
            call,
            reason: e.to_string(),
        })
    }

    fn ipc(call: &'static str, r: CUresult) -> Result<(), DeviceError> {
        r.result().map_err(|e| DeviceError::IpcUnsupported {
            reason: format!("{call}: {e}"),
        })
    }

    fn uuid_of(dev: sys::CUdevice) -> Result<GpuUuid, DeviceError> {
        let mut id = sys::CUuuid { bytes: [0; 16] };
        // SAFETY: `id` is a valid out-parameter; `dev` came from the driver.
        driver("cuDeviceGetUuid", unsafe {
            sys::cuDeviceGetUuid_v2(&mut id, dev)
        })?;
        Ok(GpuUuid(id.bytes.map(|b| b as u8)))
    }

    impl Cuda {
        /// Device `ordinal`'s primary context.
        ///
        /// # Errors
        /// [`DeviceError::CudaUnavailable`] when the driver library cannot be loaded, is too old
        /// (CUDA 12.8 is needed) or has no device `ordinal`.
        pub fn new(ordinal: usize) -> Result<Cuda, DeviceError> {
            let ctx = crate::slab::cuda::open_context(ordinal)
                .map_err(|reason| DeviceError::CudaUnavailable { reason })?;
            ctx.bind_to_thread()
                .map_err(|e| DeviceError::CudaUnavailable {
                    reason: e.to_string(),
                })?;
            let uuid = uuid_of(ctx.cu_device())?;
            Ok(Cuda { ctx, uuid })
        }

        /// The cudarc context (for streams: `cuda.context().new_stream()`, and kernels).
        pub fn context(&self) -> &Arc<CudaContext> {
            &self.ctx
        }

        fn bind(&self) -> Result<(), DeviceError> {
            self.ctx.bind_to_thread().map_err(|e| DeviceError::Driver {
                call: "cuCtxSetCurrent",
                reason: e.to_string(),
            })
        }
    }

    impl Device for Cuda {
        type Stream = CudaStream;
        type Memory = CudaMemory;
        type Event = CudaEvent;

        fn uuid(&self) -> GpuUuid {
            self.uuid
        }

        fn check_peer(&self, peer: GpuUuid) -> Result<(), DeviceError> {
            if peer == self.uuid {
                return Ok(());
            }
            self.bind()?;
            let mut count = 0;
            // SAFETY: a valid out-parameter.
            driver("cuDeviceGetCount", unsafe {
                sys::cuDeviceGetCount(&mut count)
            })?;
            for i in 0..count {
                let mut dev = 0;
                // SAFETY: a valid out-parameter and an ordinal below the count.
                driver("cuDeviceGet", unsafe { sys::cuDeviceGet(&mut dev, i) })?;
                if uuid_of(dev)? != peer {
                    continue;
                }
                let mut can = 0;
                // SAFETY: valid out-parameter and devices from the driver.
                driver("cuDeviceCanAccessPeer", unsafe {
                    sys::cuDeviceCanAccessPeer(&mut can, self.ctx.cu_device(), dev)
                })?;
                return if can == 1 {
                    Ok(())
                } else {
                    Err(DeviceError::NoPeerAccess {
                        ours: self.uuid,
                        theirs: peer,
                    })
                };
            }
            Err(DeviceError::DifferentGpu {
                ours: self.uuid,
                theirs: peer,
            })
        }

        fn alloc(&self, bytes: usize) -> Result<CudaMemory, DeviceError> {
            self.bind()?;
            let mut ptr = 0;
            // SAFETY: a valid out-parameter; the context is current.
            driver("cuMemAlloc", unsafe { sys::cuMemAlloc_v2(&mut ptr, bytes) })?;
            Ok(CudaMemory {
                ctx: self.ctx.clone(),
                ptr,
                opened: false,
            })
        }

        fn memory_ptr(memory: &CudaMemory) -> DevicePtr {
            memory.ptr
        }

        fn event(&self, interprocess: bool) -> Result<CudaEvent, DeviceError> {
            self.bind()?;
            let mut flags = sys::CUevent_flags_enum::CU_EVENT_DISABLE_TIMING as u32;
            if interprocess {
                flags |= sys::CUevent_flags_enum::CU_EVENT_INTERPROCESS as u32;
            }
            let mut event = core::ptr::null_mut();
            // SAFETY: a valid out-parameter; the context is current.
            driver("cuEventCreate", unsafe {
                sys::cuEventCreate(&mut event, flags)
            })?;
            Ok(CudaEvent {
                ctx: self.ctx.clone(),
                event,
            })
        }

        fn record(&self, event: &CudaEvent, stream: &CudaStream) -> Result<(), DeviceError> {
            self.bind()?;
            // SAFETY: both handles are live (owned by `event` and the caller's stream).
            driver("cuEventRecord", unsafe {
                sys::cuEventRecord(event.event, stream.cu_stream())
            })
        }

        fn wait(&self, stream: &CudaStream, event: &CudaEvent) -> Result<(), DeviceError> {
            self.bind()?;
            // SAFETY: both handles are live; flags 0 is CU_EVENT_WAIT_DEFAULT.
            driver("cuStreamWaitEvent", unsafe {
                sys::cuStreamWaitEvent(stream.cu_stream(), event.event, 0)
            })
        }

        fn query(&self, event: &CudaEvent) -> Result<bool, DeviceError> {
            self.bind()?;
            // SAFETY: the handle is live.
            match unsafe { sys::cuEventQuery(event.event) } {
                CUresult::CUDA_SUCCESS => Ok(true),
                CUresult::CUDA_ERROR_NOT_READY => Ok(false),
                other => driver("cuEventQuery", other).map(|()| false),
            }
        }

        fn synchronize(&self, stream: &CudaStream) -> Result<(), DeviceError> {
            self.bind()?;
            // SAFETY: the handle is live.
            driver("cuStreamSynchronize", unsafe {
                sys::cuStreamSynchronize(stream.cu_stream())
            })
        }

        fn export_memory(&self, memory: &CudaMemory) -> Result<IpcHandle, DeviceError> {
            self.bind()?;
            let mut h = sys::CUipcMemHandle { reserved: [0; 64] };
            // SAFETY: a valid out-parameter; `ptr` is a cuMemAlloc allocation of this context.
            ipc("cuIpcGetMemHandle", unsafe {
                sys::cuIpcGetMemHandle(&mut h, memory.ptr)
            })?;
            Ok(IpcHandle(h.reserved.map(|b| b as u8)))
        }

        fn open_memory(
            &self,
            handle: &IpcHandle,
            _bytes: usize,
        ) -> Result<CudaMemory, DeviceError> {
            self.bind()?;
            let h = sys::CUipcMemHandle {
                reserved: handle.0.map(|b| b as core::ffi::c_char),
            };
            let mut ptr = 0;
            let flags = sys::CUipcMem_flags_enum::CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS as u32;
            // SAFETY: a valid out-parameter; the driver validates the handle.
            ipc("cuIpcOpenMemHandle", unsafe {
                sys::cuIpcOpenMemHandle_v2(&mut ptr, h, flags)
            })?;
            Ok(CudaMemory {
                ctx: self.ctx.clone(),
                ptr,
                opened: true,
            })
        }

        fn export_event(&self, event: &CudaEvent) -> Result<IpcHandle, DeviceError> {
            self.bind()?;
            let mut h = sys::CUipcEventHandle { reserved: [0; 64] };
            // SAFETY: a valid out-parameter; the event is live (created INTERPROCESS by us).
            ipc("cuIpcGetEventHandle", unsafe {
                sys::cuIpcGetEventHandle(&mut h, event.event)
            })?;
            Ok(IpcHandle(h.reserved.map(|b| b as u8)))
        }

        fn open_event(&self, handle: &IpcHandle) -> Result<CudaEvent, DeviceError> {
            self.bind()?;
            let h = sys::CUipcEventHandle {
                reserved: handle.0.map(|b| b as core::ffi::c_char),
            };
            let mut event = core::ptr::null_mut();
            // SAFETY: a valid out-parameter; the driver validates the handle.
            ipc("cuIpcOpenEventHandle", unsafe {
                sys::cuIpcOpenEventHandle(&mut event, h)
            })?;
            Ok(CudaEvent {
                ctx: self.ctx.clone(),
                event,
            })
        }

        unsafe fn memset_d32(
            &self,
            dst: DevicePtr,
            value: u32,
            words: usize,
            stream: &CudaStream,
        ) -> Result<(), DeviceError> {
            self.bind()?;
            // SAFETY: the range is live device memory ordered by the caller (contract).
            driver("cuMemsetD32Async", unsafe {
                sys::cuMemsetD32Async(dst, value, words, stream.cu_stream())
            })
        }

        unsafe fn copy(
            &self,
            dst: DevicePtr,
            src: DevicePtr,
            bytes: usize,
            stream: &CudaStream,
        ) -> Result<(), DeviceError> {
            self.bind()?;
            // SAFETY: both ranges are live device memory ordered by the caller (contract).
            driver("cuMemcpyDtoDAsync", unsafe {
                sys::cuMemcpyDtoDAsync_v2(dst, src, bytes, stream.cu_stream())
            })
        }

        unsafe fn copy_to_host(
            &self,
            dst: *mut u8,
            src: DevicePtr,
            bytes: usize,
            stream: &CudaStream,
        ) -> Result<(), DeviceError> {
            self.bind()?;
            // SAFETY: `src` is live device memory and `dst` writable host memory (contract).
            driver("cuMemcpyDtoHAsync", unsafe {
                sys::cuMemcpyDtoHAsync_v2(dst.cast(), src, bytes, stream.cu_stream())
            })
        }
    }

    impl Drop for CudaMemory {
        fn drop(&mut self) {
            // Errors cannot be reported from drop; the context outlives the memory (we hold it).
            let _ = self.ctx.bind_to_thread();
            if self.opened {
                // SAFETY: `ptr` was opened by cuIpcOpenMemHandle in this context, closed only here.
                let _ = unsafe { sys::cuIpcCloseMemHandle(self.ptr) };
            } else {
                // SAFETY: `ptr` was allocated by cuMemAlloc in this context, freed only here.
                let _ = unsafe { sys::cuMemFree_v2(self.ptr) };
            }
        }
    }

    impl Drop for CudaEvent {
        fn drop(&mut self) {
            let _ = self.ctx.bind_to_thread();
            // SAFETY: the event was created (or opened) in this context and is destroyed only
            // here; the driver defers the release until recorded work completes.
            let _ = unsafe { sys::cuEventDestroy_v2(self.event) };
        }
    }
}

#[cfg(not(feature = "cuda"))]
mod without_cuda {
    use crate::device::DeviceError;
    use crate::device::api::{Device, DevicePtr, GpuUuid, IpcHandle};

    /// A CUDA device. psyne was built without the `cuda` feature, so [`Cuda::new`] always
    /// returns [`DeviceError::CudaUnavailable`] and no value of this type exists.
    #[derive(Debug, Clone)]
    pub struct Cuda {
        never: CudaStream,
    }

    /// CUDA streams (none exist without the `cuda` feature).
    #[derive(Debug)]
    pub enum CudaStream {}
    /// CUDA device memory (none exists without the `cuda` feature).
    pub enum CudaMemory {}
    /// CUDA events (none exist without the `cuda` feature).
    pub enum CudaEvent {}

    impl Clone for CudaStream {
        fn clone(&self) -> Self {
            match *self {}
        }
    }

    impl Cuda {
        /// Always [`DeviceError::CudaUnavailable`]: psyne was built without the `cuda` feature.
        ///
        /// # Errors
        /// Always.
        pub fn new(ordinal: usize) -> Result<Cuda, DeviceError> {
            Err(DeviceError::CudaUnavailable {
                reason: format!(
                    "psyne was built without the `cuda` feature (device {ordinal} requested)"
                ),
            })
        }
    }

    impl Device for Cuda {
        type Stream = CudaStream;
        type Memory = CudaMemory;
        type Event = CudaEvent;

        fn uuid(&self) -> GpuUuid {
            match self.never {}
        }
        fn check_peer(&self, _: GpuUuid) -> Result<(), DeviceError> {
            match self.never {}
        }
        fn alloc(&self, _: usize) -> Result<CudaMemory, DeviceError> {
            match self.never {}
        }
        fn memory_ptr(memory: &CudaMemory) -> DevicePtr {
            match *memory {}
        }
        fn event(&self, _: bool) -> Result<CudaEvent, DeviceError> {
            match self.never {}
        }
        fn record(&self, _: &CudaEvent, _: &CudaStream) -> Result<(), DeviceError> {
            match self.never {}
        }
        fn wait(&self, _: &CudaStream, _: &CudaEvent) -> Result<(), DeviceError> {
            match self.never {}
        }
        fn query(&self, _: &CudaEvent) -> Result<bool, DeviceError> {
            match self.never {}
        }
        fn synchronize(&self, _: &CudaStream) -> Result<(), DeviceError> {
            match self.never {}
        }
        fn export_memory(&self, _: &CudaMemory) -> Result<IpcHandle, DeviceError> {
            match self.never {}
        }
        fn open_memory(&self, _: &IpcHandle, _: usize) -> Result<CudaMemory, DeviceError> {
            match self.never {}
        }
        fn export_event(&self, _: &CudaEvent) -> Result<IpcHandle, DeviceError> {
            match self.never {}
        }
        fn open_event(&self, _: &IpcHandle) -> Result<CudaEvent, DeviceError> {
            match self.never {}
        }
        unsafe fn memset_d32(
            &self,
            _: DevicePtr,
            _: u32,
            _: usize,
            _: &CudaStream,
        ) -> Result<(), DeviceError> {
            match self.never {}
        }
        unsafe fn copy(
            &self,
            _: DevicePtr,
            _: DevicePtr,
            _: usize,
            _: &CudaStream,
        ) -> Result<(), DeviceError> {
            match self.never {}
        }
        unsafe fn copy_to_host(
            &self,
            _: *mut u8,
            _: DevicePtr,
            _: usize,
            _: &CudaStream,
        ) -> Result<(), DeviceError> {
            match self.never {}
        }
    }
}
