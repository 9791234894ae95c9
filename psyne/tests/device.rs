//! Device channels on CPU: the channel's logic (slots, descriptors, the event ordering, the IPC
//! handle exchange through shared memory, the GPU identity check) over the fake device, in one
//! process and across two; and `CudaUnavailable` from the real device where there is no GPU.
//!
//! The fake device runs stream work in order and can hold a stream (a GPU that has not run the
//! work yet), so these tests tell a read ordered after a write from one that is not.

use std::time::{Duration, Instant};

use psyne::device::{
    Cuda, Device, DeviceChannel, DeviceError, DeviceProducer, FakeDevice, FakeStream, GpuUuid,
};

#[path = "common/peer.rs"]
mod peer;
use peer::{Cleanup, Peer};

const GPU: GpuUuid = GpuUuid([0xA1; 16]);
const OTHER_GPU: GpuUuid = GpuUuid([0xB2; 16]);
const ROLE: &str = "PSYNE_DEVICE_ROLE";
const NAME: &str = "PSYNE_DEVICE_NAME";
const COUNT: &str = "PSYNE_DEVICE_COUNT";
const UUID: &str = "PSYNE_DEVICE_UUID";

/// The word every 32-bit word of message `seq` is filled with.
fn pattern(seq: u64) -> u32 {
    0x5EED_0000 ^ (seq as u32).wrapping_mul(2_654_435_761)
}

/// Sends message `seq` of `words` words filled with its pattern, on `stream`.
fn send_pattern(
    gpu: &FakeDevice,
    tx: &mut DeviceProducer<FakeDevice>,
    stream: &FakeStream,
    words: usize,
) -> Result<u64, DeviceError> {
    let loan = tx.loan(stream, words * 4)?;
    let seq = loan.sequence();
    // SAFETY: the loan's range is fake device memory ordered by the channel's events.
    unsafe { gpu.memset_d32(loan.device_ptr(), pattern(seq), words, stream)? };
    loan.send_after(stream)?;
    Ok(seq)
}

/// Receives one message and copies it to `host` on `stream` (enqueued, not waited for).
/// Returns its sequence number.
fn recv_into(
    rx: &mut psyne::device::DeviceConsumer<FakeDevice>,
    stream: &FakeStream,
    host: &mut [u32],
) -> Result<u64, DeviceError> {
    let gpu = rx.device().clone();
    let mut m = rx.recv_timeout(Duration::from_secs(10))?;
    assert_eq!(m.len(), host.len() * 4);
    m.wait_on(stream)?;
    // SAFETY: `host` is not touched until the stream is synchronised by the caller.
    unsafe { gpu.copy_to_host(host.as_mut_ptr().cast(), m.device_ptr(), m.len(), stream)? };
    let seq = m.sequence();
    m.release_after(stream)?;
    Ok(seq)
}

fn check(host: &[u32], seq: u64) {
    let want = pattern(seq);
    if let Some(i) = host.iter().position(|&w| w != want) {
        panic!(
            "message {seq}: word {i} is {:#x}, expected {want:#x}",
            host[i]
        );
    }
}

#[test]
fn messages_cross_laps_of_the_slots_in_order() {
    let gpu = FakeDevice::new(GPU);
    let (mut tx, mut rx) = DeviceChannel::builder()
        .slots(3)
        .slot_bytes(1000)
        .build(&gpu)
        .unwrap();
    assert_eq!(tx.slot_bytes(), 1024, "rounded up to SLOT_ALIGN");
    let (ps, cs) = (FakeStream::new(), FakeStream::new());
    let mut host = vec![0u32; 256];
    let mut pointers = Vec::new();
    for round in 0..10u64 {
        assert_eq!(send_pattern(&gpu, &mut tx, &ps, 256).unwrap(), round);
        let m = rx.try_recv().unwrap();
        pointers.push(m.device_ptr());
    }
    // Slots are reused in order: message s uses slot s % 3.
    for (s, p) in pointers.iter().enumerate() {
        assert_eq!(*p, pointers[s % 3], "message {s}");
        assert_eq!(p - pointers[0], (s as u64 % 3) * 1024);
    }
    for round in 10..20u64 {
        send_pattern(&gpu, &mut tx, &ps, 256).unwrap();
        host.fill(0);
        assert_eq!(recv_into(&mut rx, &cs, &mut host).unwrap(), round);
        gpu.synchronize(&cs).unwrap();
        check(&host, round);
    }
}

#[test]
fn the_consumer_stream_waits_for_the_producer_work() {
    let gpu = FakeDevice::new(GPU);
    let (mut tx, mut rx) = DeviceChannel::builder()
        .slots(2)
        .slot_bytes(4096)
        .build(&gpu)
        .unwrap();
    let (ps, cs) = (FakeStream::new(), FakeStream::new());
    ps.hold(); // the producer's GPU has not run its work yet
    send_pattern(&gpu, &mut tx, &ps, 1024).unwrap();
    let mut host = vec![0u32; 1024];
    recv_into(&mut rx, &cs, &mut host).unwrap();
    cs.run();
    assert!(
        cs.pending() >= 2,
        "the copy must wait for the producer's event"
    );
    assert!(
        host.iter().all(|&w| w == 0),
        "nothing was read before it was written"
    );
    ps.resume();
    gpu.synchronize(&cs).unwrap();
    check(&host, 0);
}

#[test]
fn reuse_of_a_slot_waits_for_the_consumer_reads() {
    let gpu = FakeDevice::new(GPU);
    let (mut tx, mut rx) = DeviceChannel::builder()
        .slots(1)
        .slot_bytes(4096)
        .build(&gpu)
        .unwrap();
    let (ps, cs) = (FakeStream::new(), FakeStream::new());
    send_pattern(&gpu, &mut tx, &ps, 1024).unwrap();
    cs.hold(); // the consumer's GPU has not run its reads yet
    let mut host = vec![0u32; 1024];
    recv_into(&mut rx, &cs, &mut host).unwrap();
    // The slot is released on the CPU, so the producer gets it at once; its overwrite must
    // wait on its stream for the consumer's release event.
    send_pattern(&gpu, &mut tx, &ps, 1024).unwrap();
    assert!(
        ps.pending() >= 2,
        "the overwrite must wait for the release event"
    );
    cs.resume();
    gpu.synchronize(&cs).unwrap();
    check(&host, 0); // the consumer read message 0, not message 1's bytes
    gpu.synchronize(&ps).unwrap();
    let mut host = vec![0u32; 1024];
    recv_into(&mut rx, &cs, &mut host).unwrap();
    gpu.synchronize(&cs).unwrap();
    check(&host, 1);
}

#[test]
fn a_release_without_device_reads_needs_no_event() {
    let gpu = FakeDevice::new(GPU);
    let (mut tx, mut rx) = DeviceChannel::builder()
        .slots(1)
        .slot_bytes(512)
        .build(&gpu)
        .unwrap();
    let ps = FakeStream::new();
    let cs = FakeStream::new();
    cs.hold();
    send_pattern(&gpu, &mut tx, &ps, 128).unwrap();
    drop(rx.recv().unwrap()); // never waited on: nothing read on a stream
    send_pattern(&gpu, &mut tx, &ps, 128).unwrap();
    assert_eq!(
        ps.pending(),
        0,
        "no wait on a release event that was never recorded"
    );
    // A received message dropped after wait_on records its release on that stream.
    let mut m = rx.recv().unwrap();
    m.wait_on(&cs).unwrap();
    drop(m);
    send_pattern(&gpu, &mut tx, &ps, 128).unwrap();
    assert!(
        ps.pending() > 0,
        "the drop recorded the release event on the waited stream"
    );
    cs.resume();
    gpu.synchronize(&ps).unwrap();
}

#[test]
fn a_held_slot_is_full_then_times_out_then_disconnects() {
    let gpu = FakeDevice::new(GPU);
    let (mut tx, mut rx) = DeviceChannel::builder()
        .slots(1)
        .slot_bytes(512)
        .build(&gpu)
        .unwrap();
    let s = FakeStream::new();
    send_pattern(&gpu, &mut tx, &s, 128).unwrap();
    assert!(matches!(tx.try_loan(&s, 512), Err(DeviceError::Full)));
    let t = Instant::now();
    assert!(matches!(
        tx.loan_timeout(&s, 512, Duration::from_millis(30)),
        Err(DeviceError::Timeout)
    ));
    assert!(t.elapsed() >= Duration::from_millis(30));
    assert!(matches!(
        tx.try_loan(&s, 513),
        Err(DeviceError::TooLarge { len: 513, max: 512 })
    ));
    drop(rx.recv().unwrap());
    assert!(matches!(rx.try_recv(), Err(DeviceError::Empty)));
    // Released: the slot is free again.
    tx.loan(&s, 1).unwrap().send_after(&s).unwrap();
    // Held by a message nobody will receive: with the consumer gone the wait ends.
    drop(rx);
    let t = Instant::now();
    assert!(matches!(tx.loan(&s, 1), Err(DeviceError::Disconnected)));
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn consumer_sees_disconnected_after_the_last_message() {
    let gpu = FakeDevice::new(GPU);
    let (mut tx, mut rx) = DeviceChannel::builder()
        .slots(2)
        .slot_bytes(512)
        .build(&gpu)
        .unwrap();
    let s = FakeStream::new();
    send_pattern(&gpu, &mut tx, &s, 128).unwrap();
    drop(tx);
    let mut host = vec![0u32; 128];
    assert_eq!(recv_into(&mut rx, &s, &mut host).unwrap(), 0);
    check(&host, 0);
    assert!(matches!(rx.try_recv(), Err(DeviceError::Disconnected)));
}

#[test]
fn bad_settings_are_typed_errors() {
    let gpu = FakeDevice::new(GPU);
    for b in [
        DeviceChannel::builder().slots(0),
        DeviceChannel::builder().slots(65),
        DeviceChannel::builder().slots(64).slot_bytes(1 << 40),
    ] {
        assert!(matches!(
            b.build(&gpu),
            Err(DeviceError::InvalidConfig { .. })
        ));
    }
}

#[test]
fn without_a_gpu_cuda_is_unavailable() {
    // CI has no GPU and no libcuda; with the `cuda` feature on a GPU machine this branch is the
    // GPU check script's, not this test's.
    if cfg!(feature = "cuda") && std::env::var("PSYNE_CUDA_TESTS").as_deref() == Ok("1") {
        println!("branch: PSYNE_CUDA_TESTS=1; the GPU is checked by scripts/gpu-check.sh");
        return;
    }
    match Cuda::new(0) {
        Err(DeviceError::CudaUnavailable { reason }) => {
            println!("CudaUnavailable: {reason}");
            if !cfg!(feature = "cuda") {
                assert!(reason.contains("`cuda` feature"), "{reason}");
            }
        }
        Err(e) => panic!("expected CudaUnavailable, got {e}"),
        Ok(_) => println!("branch: a CUDA device is present"),
    }
    assert!(matches!(
        Cuda::new(usize::MAX >> 1),
        Err(DeviceError::CudaUnavailable { .. })
    ));
}

// ---- across processes -------------------------------------------------------------------

fn uuid_from(s: &str) -> GpuUuid {
    GpuUuid([u8::from_str_radix(s, 16).expect("uuid byte"); 16])
}

fn spawn(role: &str, name: &str, uuid: u8, count: u64) -> Peer {
    Peer::spawn(
        "device_child",
        &[
            (ROLE, role.to_owned()),
            (NAME, name.to_owned()),
            (UUID, format!("{uuid:02x}")),
            (COUNT, count.to_string()),
        ],
    )
}

/// The peer process; does nothing unless started by `spawn`.
#[test]
fn device_child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let name = std::env::var(NAME).unwrap();
    let uuid = uuid_from(&std::env::var(UUID).unwrap());
    let count: u64 = std::env::var(COUNT).unwrap().parse().unwrap();
    let gpu = FakeDevice::new(uuid).with_visible(OTHER_GPU, false);
    match role.as_str() {
        // Opens the consumer, receives `count` messages and checks each pattern; the first one's
        // copy must wait for the producer, which holds its stream until we say WAITING.
        "consume" => {
            let mut rx = match DeviceChannel::open_consumer(&gpu, &name) {
                Ok(rx) => rx,
                Err(e) => {
                    println!("RESULT open-error {e:?}");
                    return;
                }
            };
            println!("READY");
            let s = FakeStream::new();
            let words = rx.slot_bytes() / 4;
            let mut host = vec![0u32; words];
            for want in 0..count {
                host.fill(0);
                let seq = recv_into(&mut rx, &s, &mut host).expect("recv");
                assert_eq!(seq, want);
                if seq == 0 {
                    std::thread::sleep(Duration::from_millis(20));
                    assert!(s.run() > 0, "the first copy must wait for the producer");
                    assert!(host.iter().all(|&w| w == 0));
                    println!("WAITING");
                }
                gpu.synchronize(&s).expect("synchronize");
                check(&host, seq);
            }
            match rx.recv_timeout(Duration::from_secs(10)) {
                Err(DeviceError::Disconnected) => println!("RESULT ok {count}"),
                other => println!("RESULT unexpected {other:?}"),
            }
        }
        // Opens the producer and reports what the open said.
        "open-producer" => match DeviceChannel::open_producer(&gpu, &name) {
            Ok(_) => println!("RESULT opened"),
            Err(e) => println!("RESULT open-error {e:?}"),
        },
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn patterns_cross_processes_through_ipc_handles() {
    let name = peer::unique("device", "ipc");
    let _cleanup = (Cleanup(name.clone()), Cleanup(format!("{name}.device")));
    let gpu = FakeDevice::new(GPU);
    let mut tx = DeviceChannel::builder()
        .slots(3)
        .slot_bytes(64 * 1024)
        .shared(&name)
        .create_producer(&gpu)
        .unwrap();
    let count = 12;
    let child = spawn("consume", &name, GPU.0[0], count);
    child.ready();
    let s = FakeStream::new();
    s.hold();
    send_pattern(&gpu, &mut tx, &s, 16 * 1024).unwrap();
    child.wait_for("WAITING");
    s.resume();
    for _ in 1..count {
        send_pattern(&gpu, &mut tx, &s, 16 * 1024).unwrap();
    }
    drop(tx); // lingers until the consumer has released everything
    assert_eq!(child.expect("RESULT", "ok"), count.to_string());
    assert!(child.finish().success());
}

#[test]
fn a_consumer_on_another_gpu_is_refused() {
    let name = peer::unique("device", "gpu");
    let _cleanup = (Cleanup(name.clone()), Cleanup(format!("{name}.device")));
    let gpu = FakeDevice::new(GPU);
    let _tx = DeviceChannel::builder()
        .slots(2)
        .slot_bytes(512)
        .shared(&name)
        .create_producer(&gpu)
        .unwrap();
    // A GPU the producer's is not visible from.
    let child = spawn("consume", &name, 0x33, 1);
    let said = child.expect("RESULT", "open-error");
    assert!(said.starts_with("DifferentGpu"), "{said}");
    assert!(child.finish().success());
}

#[test]
fn a_visible_gpu_without_peer_access_is_refused() {
    let name = peer::unique("device", "peer");
    let _cleanup = (Cleanup(name.clone()), Cleanup(format!("{name}.device")));
    let gpu = FakeDevice::new(OTHER_GPU);
    let _rx = DeviceChannel::builder()
        .slots(2)
        .slot_bytes(512)
        .shared(&name)
        .create_consumer(&gpu)
        .unwrap();
    // The child's GPU sees OTHER_GPU without peer access.
    let child = spawn("open-producer", &name, GPU.0[0], 0);
    let said = child.expect("RESULT", "open-error");
    assert!(said.starts_with("NoPeerAccess"), "{said}");
    assert!(child.finish().success());
}

#[test]
fn a_driver_without_ipc_is_refused_at_create() {
    let name = peer::unique("device", "noipc");
    let _cleanup = (Cleanup(name.clone()), Cleanup(format!("{name}.device")));
    let gpu = FakeDevice::new(GPU).without_ipc();
    let err = DeviceChannel::builder()
        .shared(&name)
        .create_producer(&gpu)
        .unwrap_err();
    assert!(matches!(err, DeviceError::IpcUnsupported { .. }), "{err:?}");
    // In one process no IPC is needed.
    assert!(DeviceChannel::builder().build(&gpu).is_ok());
}

#[test]
fn a_second_consumer_is_refused() {
    let name = peer::unique("device", "twice");
    let _cleanup = (Cleanup(name.clone()), Cleanup(format!("{name}.device")));
    let gpu = FakeDevice::new(GPU);
    let _tx = DeviceChannel::builder()
        .slots(2)
        .slot_bytes(512)
        .shared(&name)
        .create_producer(&gpu)
        .unwrap();
    let _rx = DeviceChannel::open_consumer(&gpu, &name).unwrap();
    assert!(matches!(
        DeviceChannel::open_consumer(&gpu, &name),
        Err(DeviceError::Open(_) | DeviceError::AlreadyAttached)
    ));
}

#[test]
fn a_hostile_released_count_is_corrupted_not_a_reuse() {
    let name = peer::unique("device", "hostile");
    let _cleanup = (Cleanup(name.clone()), Cleanup(format!("{name}.device")));
    let gpu = FakeDevice::new(GPU);
    let mut tx = DeviceChannel::builder()
        .slots(1)
        .slot_bytes(512)
        .shared(&name)
        .create_producer(&gpu)
        .unwrap();
    let _rx = DeviceChannel::open_consumer(&gpu, &name).unwrap();
    let s = FakeStream::new();
    send_pattern(&gpu, &mut tx, &s, 128).unwrap();
    // A peer writes a released count ahead of what was sent (word 6 of the device block).
    let block = psyne::Slab::open_shared(&format!("{name}.device")).unwrap();
    // SAFETY: word 6 of the mapped block; the channel reads it atomically, and this test writes
    // it atomically too.
    unsafe {
        (*block
            .as_ptr()
            .as_ptr()
            .cast::<std::sync::atomic::AtomicU64>()
            .add(6))
        .store(99, std::sync::atomic::Ordering::Release)
    };
    let err = tx.loan(&s, 4).unwrap_err();
    assert!(matches!(err, DeviceError::Corrupted { .. }), "{err:?}");
}

/// On a GPU (`scripts/gpu-check.sh` sets `PSYNE_CUDA_TESTS=1`): the same pattern check over the
/// real driver in one process, the producer never synchronising.
#[cfg(feature = "cuda")]
#[test]
fn gpu_pattern_in_one_process() {
    if std::env::var("PSYNE_CUDA_TESTS").as_deref() != Ok("1") {
        println!("gpu_pattern_in_one_process: skipped (set PSYNE_CUDA_TESTS=1 on a GPU machine)");
        return;
    }
    const BYTES: usize = 1 << 20;
    let gpu = Cuda::new(0).expect("a CUDA device");
    let ps = gpu.context().new_stream().unwrap();
    let cs = gpu.context().new_stream().unwrap();
    let (mut tx, mut rx) = DeviceChannel::builder()
        .slots(2)
        .slot_bytes(BYTES)
        .build(&gpu)
        .unwrap();
    let mut host = vec![0u32; BYTES / 4];
    for seq in 0..6u64 {
        let loan = tx.loan(&ps, BYTES).unwrap();
        // SAFETY: the loan's slot is live device memory ordered by the channel's events.
        unsafe { gpu.memset_d32(loan.device_ptr(), pattern(seq), BYTES / 4, &ps) }.unwrap();
        loan.send_after(&ps).unwrap();
        let mut m = rx.recv().unwrap();
        m.wait_on(&cs).unwrap();
        // SAFETY: `host` is read only after the synchronise below.
        unsafe { gpu.copy_to_host(host.as_mut_ptr().cast(), m.device_ptr(), BYTES, &cs) }.unwrap();
        m.release_after(&cs).unwrap();
        gpu.synchronize(&cs).unwrap();
        check(&host, seq);
    }
}
