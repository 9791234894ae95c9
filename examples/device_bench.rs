//! GPU channel checks and figures (psyne's device channels, feature `cuda`), in two processes
//! on one GPU:
//!
//! * `--check`: a kernel-free check. The producer process fills each message with a known
//!   pattern (`cuMemsetD32Async` into a scratch buffer, then `cuMemcpyDtoDAsync` into the loaned
//!   slot) and never synchronises; the consumer process copies each received payload to the
//!   host after `wait_on` and verifies every word. Three laps of the slots, so slot reuse and
//!   both events' ordering are exercised, across processes through CUDA IPC.
//! * `--bench`: for 64 KiB, 1 MiB and 64 MiB messages, device to device across processes:
//!   throughput (the producer copies a source buffer into each slot; the consumer waits and
//!   either reads 256 bytes of it, or copies all of it to its own buffer), and one-way latency
//!   (one message at a time: from the producer's host clock before the loan, to the consumer's
//!   after its stream, which read 256 bytes of the payload, is synchronised), beside the floors
//!   measured in the same run: `cuMemcpyDtoD` of the same bytes (GB/s), and, between two
//!   streams of one process, a copy of the same bytes + one event record + a stream wait + a
//!   256-byte read (latency). Ratios: `touch/flr` (target >= 0.9 at 64 MiB) and latency
//!   `ratio` (target <= 2 at 64 KiB).
//!
//! Run: `cargo run --release -p psyne-examples --features cuda --example device_bench --
//! --check --bench` (both by default). Without the `cuda` feature, a driver or a device it
//! prints why CUDA is unavailable and exits with status 2.

use std::process::ExitCode;

/// What `--help` prints.
const USAGE: &str = "\
usage: device_bench [--check] [--bench]   (both when neither is given; needs --features cuda)

GPU channels across two processes on one GPU: --check verifies a cross-process memset + copy
pattern through three laps of the slots; --bench measures 64 KiB, 1 MiB and 64 MiB messages
device to device (GB/s and one-way latency) beside the floors measured in the same run.
Without the cuda feature, a driver or a device, it prints why CUDA is unavailable and exits
with status 2.";

/// `--check` and `--bench` (both when neither is given); `--help` prints [`USAGE`] and exits.
fn modes() -> Result<(bool, bool), psyne_examples::args::Error> {
    let args = psyne_examples::args::Args::parse(&["check", "bench"], USAGE)?;
    let (check, bench) = (args.get("check").is_some(), args.get("bench").is_some());
    Ok(if check || bench {
        (check, bench)
    } else {
        (true, true)
    })
}

#[cfg(not(feature = "cuda"))]
fn main() -> ExitCode {
    if let Err(e) = modes() {
        eprintln!("device_bench: {e}");
        return ExitCode::from(2);
    }
    match psyne::device::Cuda::new(0) {
        Err(e) => {
            eprintln!("device_bench: {e}");
            ExitCode::from(2)
        }
        Ok(_) => ExitCode::SUCCESS,
    }
}

#[cfg(feature = "cuda")]
fn main() -> ExitCode {
    match gpu::main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("device_bench: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(feature = "cuda")]
mod gpu {
    use std::process::{Command, ExitCode, Stdio};
    use std::sync::Arc;
    use std::time::Duration;

    use psyne::cudarc::driver::CudaStream;
    use psyne::device::{Cuda, Device, DeviceChannel, DeviceError, DevicePtr};
    use psyne::{Channel, PsyneMessage};

    type Error = Box<dyn std::error::Error>;

    const ROLE: &str = "PSYNE_DEVICE_BENCH_ROLE";
    const NAME: &str = "PSYNE_DEVICE_BENCH_NAME";
    const SIZE: &str = "PSYNE_DEVICE_BENCH_SIZE";
    const SLOTS: usize = 4;
    const CHECK_BYTES: usize = 1 << 20;
    /// What the consumer reads of each message in the "touch" throughput phase.
    const TOUCH: usize = 256;

    /// A host clock reading, or an acknowledgement, between the two processes.
    #[derive(Clone, Copy, PsyneMessage)]
    #[repr(C)]
    #[psyne(name = "device_bench.Stamp")]
    struct Stamp {
        ns: u64,
        seq: u64,
    }

    fn now_ns() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid out-parameter; CLOCK_MONOTONIC is the same clock in both processes.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    fn pattern(seq: u64) -> u32 {
        0x9E37_79B9u32.wrapping_mul(seq as u32 + 1) ^ 0x00C0_FFEE
    }

    /// Rounds (messages) per phase for a message size.
    fn rounds(size: usize) -> (u64, u64) {
        match size {
            s if s <= 64 << 10 => (4000, 400),
            s if s <= 1 << 20 => (1000, 200),
            _ => (100, 50),
        }
    }

    fn percentile(sorted: &[f64], p: f64) -> f64 {
        if sorted.is_empty() {
            return f64::NAN;
        }
        sorted[((sorted.len() - 1) as f64 * p).round() as usize]
    }

    struct Gpu {
        cuda: Cuda,
        stream: Arc<CudaStream>,
    }

    impl Gpu {
        fn new() -> Result<Gpu, Error> {
            let cuda = Cuda::new(0)?;
            let stream = cuda.context().new_stream()?;
            Ok(Gpu { cuda, stream })
        }
    }

    pub fn main() -> Result<ExitCode, Error> {
        if let Ok(role) = std::env::var(ROLE) {
            let name = std::env::var(NAME)?;
            let size: usize = std::env::var(SIZE)?.parse()?;
            consumer(&role, &name, size)?;
            return Ok(ExitCode::SUCCESS);
        }
        let (check, bench) = super::modes()?;
        let gpu = match Gpu::new() {
            Ok(g) => g,
            Err(e) => {
                eprintln!("device_bench: {e}");
                return Ok(ExitCode::from(2));
            }
        };
        println!("device_bench: GPU {} (device 0)", gpu.cuda.uuid());
        if check {
            run_check(&gpu)?;
        }
        if bench {
            println!(
                "{:>8}  {:>12} {:>12} {:>12} {:>10} | {:>10} {:>10} {:>10} {:>10}",
                "size",
                "floor GB/s",
                "touch GB/s",
                "copy GB/s",
                "touch/flr",
                "lat p50 us",
                "lat p99",
                "floor p50",
                "ratio"
            );
            for size in [64 << 10, 1 << 20, 64 << 20] {
                run_bench(&gpu, size)?;
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    fn spawn(role: &str, name: &str, size: usize) -> Result<std::process::Child, Error> {
        Ok(Command::new(std::env::current_exe()?)
            .env(ROLE, role)
            .env(NAME, name)
            .env(SIZE, size.to_string())
            .stdout(Stdio::inherit())
            .spawn()?)
    }

    fn finish(mut child: std::process::Child, what: &str) -> Result<(), Error> {
        let status = child.wait()?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("{what}: consumer process failed ({status})").into())
        }
    }

    fn run_check(gpu: &Gpu) -> Result<(), Error> {
        let name = format!("psyne-devbench-{}-check", std::process::id());
        let mut tx = DeviceChannel::builder()
            .slots(SLOTS)
            .slot_bytes(CHECK_BYTES)
            .shared(&name)
            .create_producer(&gpu.cuda)?;
        let child = spawn("check", &name, CHECK_BYTES)?;
        let scratch = gpu.cuda.alloc(CHECK_BYTES)?;
        let s = &*gpu.stream;
        for seq in 0..3 * SLOTS as u64 {
            let loan = tx.loan(s, CHECK_BYTES)?;
            let src = <Cuda as Device>::memory_ptr(&scratch);
            // SAFETY: `scratch` and the loan's slot are live device memory; the stream orders
            // the fill before the copy and the loan's wait orders the copy after the consumer's
            // reads of the slot's previous message. The fill of `scratch` for the next message
            // is ordered after this copy by the same stream.
            unsafe {
                gpu.cuda.memset_d32(src, pattern(seq), CHECK_BYTES / 4, s)?;
                gpu.cuda.copy(loan.device_ptr(), src, CHECK_BYTES, s)?;
            }
            loan.send_after(s)?;
        }
        drop(tx); // waits for the consumer to release everything
        finish(child, "check")?;
        println!(
            "device_bench: CHECK ok ({} messages of {} bytes across processes)",
            3 * SLOTS,
            CHECK_BYTES
        );
        Ok(())
    }

    fn run_bench(gpu: &Gpu, size: usize) -> Result<(), Error> {
        let (n, lat_rounds) = rounds(size);
        let s = &*gpu.stream;
        let src = gpu.cuda.alloc(size)?;
        let dst = gpu.cuda.alloc(size)?;
        let (srcp, dstp) = (
            <Cuda as Device>::memory_ptr(&src),
            <Cuda as Device>::memory_ptr(&dst),
        );
        // SAFETY: `src` is live device memory of `size` bytes.
        unsafe { gpu.cuda.memset_d32(srcp, 0x1234_5678, size / 4, s)? };
        gpu.cuda.synchronize(s)?;

        // Floor 1: cuMemcpyDtoD of the same bytes, n times.
        let t = now_ns();
        for _ in 0..n {
            // SAFETY: distinct live allocations of `size` bytes.
            unsafe { gpu.cuda.copy(dstp, srcp, size, s)? };
        }
        gpu.cuda.synchronize(s)?;
        let floor_gbs = (n as f64 * size as f64) / (now_ns() - t) as f64;

        // Floor 2: record + wait + copy between two streams of one process, one at a time.
        let other = gpu.cuda.context().new_stream()?;
        let ev = gpu.cuda.event(false)?;
        let mut floor_lat = Vec::with_capacity(lat_rounds as usize);
        for _ in 0..lat_rounds {
            let t = now_ns();
            // SAFETY: live allocations; one stream's copy, the other waits on the event.
            unsafe { gpu.cuda.copy(dstp, srcp, size, s)? };
            gpu.cuda.record(&ev, s)?;
            gpu.cuda.wait(&other, &ev)?;
            // SAFETY: the copy on `other` is ordered after the event.
            unsafe { gpu.cuda.copy(srcp, dstp, TOUCH.min(size), &other)? };
            gpu.cuda.synchronize(&other)?;
            floor_lat.push((now_ns() - t) as f64 / 1e3);
        }
        floor_lat.sort_by(f64::total_cmp);

        // The channel, across processes.
        let name = format!("psyne-devbench-{}-{size}", std::process::id());
        let mut tx = DeviceChannel::builder()
            .slots(SLOTS)
            .slot_bytes(size)
            .shared(&name)
            .create_producer(&gpu.cuda)?;
        let mut stamps = Channel::<Stamp>::builder()
            .capacity(64)
            .shared(&format!("{name}-ts"))
            .create_producer()?;
        let mut acks = Channel::<Stamp>::builder()
            .capacity(64)
            .shared(&format!("{name}-ack"))
            .create_consumer()?;
        let child = spawn("bench", &name, size)?;
        let send = |tx: &mut psyne::device::DeviceProducer<Cuda>| -> Result<(), DeviceError> {
            let loan = tx.loan(s, size)?;
            // SAFETY: the slot and `src` are live; the loan ordered the slot's reuse.
            unsafe { gpu.cuda.copy(loan.device_ptr(), srcp, size, s)? };
            loan.send_after(s)
        };
        let mut touch_copy = [0.0f64; 2];
        for gbs in &mut touch_copy {
            let t0 = now_ns();
            for _ in 0..n {
                send(&mut tx)?;
            }
            stamps.send(&Stamp { ns: t0, seq: n })?;
            let done = acks.recv_timeout(Duration::from_secs(120))?;
            *gbs = (n as f64 * size as f64) / (done.ns - t0) as f64;
        }
        let mut lat = Vec::with_capacity(lat_rounds as usize);
        for seq in 0..lat_rounds {
            let t0 = now_ns();
            send(&mut tx)?;
            stamps.send(&Stamp { ns: t0, seq })?;
            let done = acks.recv_timeout(Duration::from_secs(60))?;
            lat.push((done.ns - t0) as f64 / 1e3);
        }
        lat.sort_by(f64::total_cmp);
        drop(tx);
        finish(child, "bench")?;
        let (p50, p99, f50) = (
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            percentile(&floor_lat, 0.5),
        );
        println!(
            "{:>8}  {:>12.1} {:>12.1} {:>12.1} {:>10.2} | {:>10.1} {:>10.1} {:>10.1} {:>10.2}",
            format!("{}K", size >> 10),
            floor_gbs,
            touch_copy[0],
            touch_copy[1],
            touch_copy[0] / floor_gbs,
            p50,
            p99,
            f50,
            p50 / f50
        );
        Ok(())
    }

    /// The consumer process.
    fn consumer(role: &str, name: &str, size: usize) -> Result<(), Error> {
        let gpu = Gpu::new()?;
        let s = &*gpu.stream;
        let mut rx = DeviceChannel::open_consumer(&gpu.cuda, name)?;
        match role {
            "check" => {
                let mut host = vec![0u32; size / 4];
                for want in 0..3 * SLOTS as u64 {
                    let mut m = rx.recv_timeout(Duration::from_secs(60))?;
                    if m.sequence() != want || m.len() != size {
                        return Err(format!(
                            "message {} of {} bytes, expected {want}",
                            m.sequence(),
                            m.len()
                        )
                        .into());
                    }
                    m.wait_on(s)?;
                    // SAFETY: `host` holds `size` bytes and is read only after the synchronise.
                    unsafe {
                        gpu.cuda
                            .copy_to_host(host.as_mut_ptr().cast(), m.device_ptr(), size, s)?
                    };
                    m.release_after(s)?;
                    gpu.cuda.synchronize(s)?;
                    let p = pattern(want);
                    if let Some(i) = host.iter().position(|&w| w != p) {
                        return Err(format!(
                            "message {want}: word {i} is {:#x}, expected {p:#x}",
                            host[i]
                        )
                        .into());
                    }
                }
                Ok(())
            }
            "bench" => {
                let mut stamps =
                    open_retry(|| Channel::<Stamp>::open_consumer(&format!("{name}-ts")))?;
                let mut acks =
                    open_retry(|| Channel::<Stamp>::open_producer(&format!("{name}-ack")))?;
                let dst = gpu.cuda.alloc(size)?;
                let dstp = <Cuda as Device>::memory_ptr(&dst);
                let (n, lat_rounds) = rounds(size);
                let read = |rx: &mut psyne::device::DeviceConsumer<Cuda>,
                            bytes: usize|
                 -> Result<(), Error> {
                    let mut m = rx.recv_timeout(Duration::from_secs(60))?;
                    m.wait_on(s)?;
                    let from: DevicePtr = m.device_ptr();
                    // SAFETY: the payload is ordered after the producer's work by `wait_on`;
                    // `dst` is our own allocation of `size` bytes.
                    unsafe { gpu.cuda.copy(dstp, from, bytes, s)? };
                    m.release_after(s)?;
                    Ok(())
                };
                for bytes in [TOUCH.min(size), size] {
                    for _ in 0..n {
                        read(&mut rx, bytes)?;
                    }
                    gpu.cuda.synchronize(s)?;
                    let done = now_ns();
                    let _ = stamps.recv_timeout(Duration::from_secs(60))?;
                    acks.send(&Stamp { ns: done, seq: n })?;
                }
                for seq in 0..lat_rounds {
                    read(&mut rx, TOUCH.min(size))?;
                    gpu.cuda.synchronize(s)?;
                    let done = now_ns();
                    let _ = stamps.recv_timeout(Duration::from_secs(60))?;
                    acks.send(&Stamp { ns: done, seq })?;
                }
                Ok(())
            }
            other => Err(format!("unknown role {other}").into()),
        }
    }

    fn open_retry<R>(f: impl Fn() -> Result<R, psyne::OpenError>) -> Result<R, Error> {
        let start = std::time::Instant::now();
        loop {
            match f() {
                Ok(r) => return Ok(r),
                Err(e) if start.elapsed() > Duration::from_secs(10) => return Err(e.into()),
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }
}
