//! CUDA host registration of a slab (feature `cuda`): `cuMemHostRegister` on build,
//! `cuMemHostUnregister` on drop. This module owns the registration and the CUDA context it was
//! made in (device 0's primary context); it never allocates device memory or copies anything.

use std::sync::Arc;

use cudarc::driver::CudaContext;
use cudarc::driver::sys;

use super::SlabError;

/// A live registration of `ptr..ptr+len` with the CUDA driver; unregisters on drop.
pub(crate) struct Registration {
    ctx: Arc<CudaContext>,
    ptr: *mut core::ffi::c_void,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("device", &self.ctx.ordinal())
            .field("ptr", &self.ptr)
            .finish()
    }
}

// SAFETY: the registration is a token for driver state; the pointer is only passed back to the
// driver (which is thread-safe) and the context is Send + Sync.
unsafe impl Send for Registration {}
// SAFETY: as above; `&Registration` exposes only the context.
unsafe impl Sync for Registration {}

/// Whether the driver library (`libcuda.so`) can be loaded.
fn driver_loadable() -> bool {
    // SAFETY: is_culib_present only tries to dlopen libcuda and drops the handle.
    unsafe { sys::is_culib_present() }
}

/// Whether the driver library can be loaded, as a typed error.
pub(crate) fn driver_present() -> Result<(), SlabError> {
    if driver_loadable() {
        Ok(())
    } else {
        Err(SlabError::CudaUnavailable {
            reason: "the CUDA driver library (libcuda.so) was not found; install the NVIDIA \
                     driver, or do not request cuda_host_register"
                .into(),
        })
    }
}

/// Opens device `ordinal`'s primary context, or says in words why it cannot be: no driver
/// library, no such device, or a panic inside cudarc (a driver missing a symbol it expects,
/// older than CUDA 12.8). For the slab's registration and the device channels, which wrap the
/// reason in their own `CudaUnavailable`.
pub(crate) fn open_context(ordinal: usize) -> Result<Arc<CudaContext>, String> {
    if !driver_loadable() {
        return Err(
            "the CUDA driver library (libcuda.so) was not found; install the NVIDIA driver".into(),
        );
    }
    match std::panic::catch_unwind(|| CudaContext::new(ordinal)) {
        Ok(Ok(ctx)) => Ok(ctx),
        Ok(Err(e)) => Err(format!("no usable CUDA device {ordinal}: {e}")),
        Err(_) => Err(
            "the CUDA driver could not be initialised (cudarc panicked; is the \
                       driver older than CUDA 12.8?)"
                .into(),
        ),
    }
}

/// Opens device 0's primary context (see [`open_context`]) for a registration.
pub(crate) fn context() -> Result<Arc<CudaContext>, SlabError> {
    driver_present()?;
    open_context(0).map_err(|reason| SlabError::CudaUnavailable { reason })
}

impl Registration {
    /// Registers `ptr..ptr+len` as pinned, portable, device-mapped host memory.
    ///
    /// # Safety
    /// `ptr..ptr+len` must be a live, page-aligned mapping that outlives the registration.
    pub(crate) unsafe fn new(ptr: *mut u8, len: usize) -> Result<Self, SlabError> {
        let ctx = context()?;
        ctx.bind_to_thread().map_err(|e| SlabError::CudaRegister {
            reason: e.to_string(),
        })?;
        let flags = sys::CU_MEMHOSTREGISTER_PORTABLE | sys::CU_MEMHOSTREGISTER_DEVICEMAP;
        // SAFETY: the range is a live mapping (caller) and the context is current.
        unsafe { sys::cuMemHostRegister_v2(ptr.cast(), len, flags) }
            .result()
            .map_err(|e| SlabError::CudaRegister {
                reason: e.to_string(),
            })?;
        Ok(Self {
            ctx,
            ptr: ptr.cast(),
        })
    }

    /// The context the slab is registered in.
    pub(crate) fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The device address through which kernels can read the slab in place.
    pub(crate) fn device_ptr(&self) -> Result<sys::CUdeviceptr, SlabError> {
        let mut dptr: sys::CUdeviceptr = 0;
        self.ctx
            .bind_to_thread()
            .map_err(|e| SlabError::CudaRegister {
                reason: e.to_string(),
            })?;
        // SAFETY: `ptr` is registered with DEVICEMAP in this context, which is current.
        unsafe { sys::cuMemHostGetDevicePointer_v2(&mut dptr, self.ptr, 0) }
            .result()
            .map_err(|e| SlabError::CudaRegister {
                reason: e.to_string(),
            })?;
        Ok(dptr)
    }
}

/// Whether the driver reports `ptr` as registered host memory.
pub(crate) fn is_registered(ctx: &CudaContext, ptr: *mut u8) -> bool {
    let mut flags = 0;
    if ctx.bind_to_thread().is_err() {
        return false;
    }
    // SAFETY: cuMemHostGetFlags only looks `ptr` up; an unregistered address is an error return.
    unsafe { sys::cuMemHostGetFlags(&mut flags, ptr.cast()) }
        .result()
        .is_ok()
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Errors cannot be reported from drop; the memory is unmapped right after, which the
        // driver tolerates.
        let _ = self.ctx.bind_to_thread();
        // SAFETY: `ptr` was registered in this context by `new` and is unregistered only here.
        let _ = unsafe { sys::cuMemHostUnregister(self.ptr) };
    }
}
