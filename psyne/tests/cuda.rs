//! CUDA-registered channels (feature `cuda`): the GPU writes a loaned message and reads a
//! received one in place, through their device addresses.
//!
//! Without a driver (CI), the tests check the typed errors. With a GPU they run only when
//! `PSYNE_CUDA_TESTS=1` (`scripts/gpu-check.sh` sets it), like the slab's CUDA tests.
#![cfg(feature = "cuda")]

use psyne::cudarc::driver::{CudaContext, DevicePtr, result, sys};
use psyne::{Channel, ChannelError, PsyneMessage, SlabError};

/// 16 KiB of activations.
#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Block {
    step: u64,
    _reserved: u64,
    data: [f32; 4096],
}

fn driver_present() -> bool {
    // SAFETY: only tries to dlopen libcuda.
    unsafe { sys::is_culib_present() }
}

fn gpu_tests_enabled(test: &str) -> bool {
    let on = std::env::var("PSYNE_CUDA_TESTS").as_deref() == Ok("1");
    if !on {
        println!("{test}: skipped (set PSYNE_CUDA_TESTS=1 on a machine with a GPU)");
    }
    on
}

#[test]
fn without_a_driver_a_registered_channel_is_a_typed_error() {
    if driver_present() {
        println!("branch: a CUDA driver is present; see gpu_reads_and_writes_messages_in_place");
        return;
    }
    let err = Channel::<Block>::builder()
        .cuda_host_register(true)
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, ChannelError::Slab(SlabError::CudaUnavailable { reason }) if reason.contains("libcuda")),
        "{err:?}"
    );
}

#[test]
fn unregistered_channel_has_no_device_addresses() {
    let (mut tx, mut rx) = Channel::<Block>::builder().capacity(2).build().unwrap();
    let loan = tx.allocate_zeroed().unwrap();
    assert!(matches!(
        loan.cuda_device_ptr(),
        Err(SlabError::CudaUnavailable { .. })
    ));
    loan.send();
    let m = rx.recv().unwrap();
    let err = m.cuda_device_ptr().unwrap_err();
    assert!(err.to_string().contains("not CUDA-registered"), "{err}");
}

#[test]
fn gpu_reads_and_writes_messages_in_place() {
    if !gpu_tests_enabled("gpu_reads_and_writes_messages_in_place") {
        return;
    }
    assert!(driver_present(), "PSYNE_CUDA_TESTS=1 but no CUDA driver");
    let (mut tx, mut rx) = Channel::<Block>::builder()
        .capacity(4)
        .cuda_host_register(true)
        .build()
        .unwrap();
    let ctx = CudaContext::new(0).unwrap();
    let stream = ctx.default_stream();
    let bytes = core::mem::size_of::<[f32; 4096]>();
    let mut addresses = Vec::new();
    for step in 0..6u64 {
        // The GPU writes the loaned message's tensor in place (device-to-device copy into the
        // loan's device address); the host writes only the step number.
        let pattern: Vec<f32> = (0..4096).map(|i| (i as f32) * 0.5 + step as f32).collect();
        let dev = stream.clone_htod(&pattern).unwrap();
        let mut loan = tx.allocate_zeroed().unwrap();
        loan.step = step;
        let base = loan.cuda_device_ptr().unwrap();
        let data_offset = core::mem::offset_of!(Block, data) as u64;
        {
            let (src, _sync) = dev.device_ptr(&stream);
            stream.synchronize().unwrap();
            ctx.bind_to_thread().unwrap();
            // SAFETY: `base + data_offset` is the device address of the loan's 16 KiB tensor in
            // the registered slab (the loan is ours until `send`); `src` is a live device
            // allocation of the same size.
            unsafe { result::memcpy_dtod_sync(base + data_offset, src, bytes) }.unwrap();
        }
        stream.synchronize().unwrap();
        loan.send();

        // The host reads what the GPU wrote, in place.
        let m = rx.recv().unwrap();
        assert_eq!(m.step, step);
        assert!(m.data[..] == pattern[..], "step {step}: host view differs");
        // The GPU reads the received message in place (device address -> host buffer).
        let addr = m.cuda_device_ptr().unwrap();
        assert_eq!(
            addr, base,
            "loan and received message have different device addresses"
        );
        addresses.push(addr);
        let mut back = vec![0u8; core::mem::size_of::<Block>()];
        // SAFETY: `addr` is the device address of the received message, which stays ours (not
        // released) until `m` drops; `back` has room for it.
        unsafe { result::memcpy_dtoh_sync(&mut back[..], addr) }.unwrap();
        assert!(
            back[..] == *bytemuck_bytes(&m),
            "step {step}: GPU read of the message differs"
        );
    }
    // Consecutive messages sit at consecutive records of the ring: their device addresses move.
    addresses.sort_unstable();
    addresses.dedup();
    assert!(addresses.len() >= 2, "{addresses:x?}");
    println!(
        "GPU wrote and read 6 messages of 16 KiB in place at {} distinct device addresses",
        addresses.len()
    );
}

fn bytemuck_bytes(m: &Block) -> &[u8] {
    psyne::bytemuck::bytes_of(m)
}
