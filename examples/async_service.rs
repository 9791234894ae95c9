//! An async inference service: a tokio task receives `Embedding256` requests from a shared-memory
//! channel fed by another process, answers each on a second shared-memory channel, and never
//! blocks a runtime thread (`recv_async` / `allocate_async`: no `spawn_blocking`, no polling
//! timer).
//!
//! The service process creates both channels (`.shared(name)`: requests as consumer, replies as
//! producer) and starts this same executable again with `--client <requests> <replies> <n>`.
//! The client opens the other ends by name and sends `n` requests, one every 50 us (so the
//! service is idle, awaiting, between requests), each carrying its index; a second thread of
//! the client receives the replies (blocking) and takes each round trip from the request's send
//! time. The service L2-normalises each embedding in place into the reply loan and reports the
//! one-way latency of the requests (header send timestamps, `CLOCK_MONOTONIC`, system-wide).
//!
//! Run with `cargo run --release --example async_service -- [--requests N]` (default 20 000).

use psyne::{Channel, RecvError};
use psyne_examples::args::Args;
use psyne_examples::stats::quantile_sorted;
use psyne_schemas::Embedding256;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The first argument that makes this executable the client process.
const CLIENT_FLAG: &str = "--client";
/// Interval between two requests.
const PACE: Duration = Duration::from_micros(50);

const USAGE: &str = "\
An async (tokio) service answering Embedding256 requests from another process over shared memory.

Usage: async_service [--requests N]

  --requests N   requests the client process sends (default 20000)";

fn percentiles(label: &str, mut ns: Vec<u64>) {
    ns.sort_unstable();
    println!(
        "{label}: p50 {:.1} us, p90 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us ({} samples)",
        quantile_sorted(&ns, 0.5) as f64 / 1e3,
        quantile_sorted(&ns, 0.9) as f64 / 1e3,
        quantile_sorted(&ns, 0.99) as f64 / 1e3,
        quantile_sorted(&ns, 0.999) as f64 / 1e3,
        ns.last().copied().unwrap_or(0) as f64 / 1e3,
        ns.len()
    );
}

/// The client process: sends `n` paced requests, receives the replies, prints round trips.
fn client(requests: &str, replies: &str, n: u64) -> Result<(), Box<dyn std::error::Error>> {
    let mut tx = Channel::<Embedding256>::open_producer(requests)?;
    let mut rx = Channel::<Embedding256>::open_consumer(replies)?;
    let start = Instant::now();
    let receiver = std::thread::spawn(move || -> Result<Vec<u64>, RecvError> {
        let mut rtt = Vec::with_capacity(n as usize);
        for i in 0..n {
            let reply = rx.recv()?;
            // data[0] holds the request index (exact in f32 below 2^24).
            assert_eq!(reply.data[0] as u64, i, "replies in request order");
            let sent_ns = reply.header().timestamp_ns;
            rtt.push(psyne::channel::monotonic_ns().saturating_sub(sent_ns));
        }
        Ok(rtt)
    });
    for i in 0..n {
        let due = start + PACE * i as u32;
        while Instant::now() < due {
            std::hint::spin_loop();
        }
        let mut req = tx.allocate()?;
        for (k, v) in req.data.iter_mut().enumerate() {
            *v = ((i as usize + k) % 17) as f32 + 1.0;
        }
        req.data[0] = i as f32;
        req.send();
    }
    let rtt = receiver.join().map_err(|_| "reply thread panicked")??;
    percentiles(
        "client: reply one-way (service send -> client receive)",
        rtt,
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(CLIENT_FLAG) {
        let n = argv.get(4).ok_or("missing count")?.parse()?;
        return client(&argv[2], &argv[3], n);
    }
    let args = Args::parse(&["requests"], USAGE)?;
    let n: u64 = args.value("requests", 20_000)?;
    if n == 0 || n >= 1 << 24 {
        return Err("--requests must be between 1 and 2^24 - 1".into());
    }
    let base = format!("psyne-async-service-{}", std::process::id());
    let (req_name, rep_name) = (format!("{base}-req"), format!("{base}-rep"));
    let mut requests = Channel::<Embedding256>::builder()
        .capacity(256)
        .timestamps(true)
        .shared(&req_name)
        .create_consumer()?;
    let mut replies = Channel::<Embedding256>::builder()
        .capacity(256)
        .timestamps(true)
        .shared(&rep_name)
        .create_producer()?;
    let mut child = Command::new(std::env::current_exe()?)
        .args([CLIENT_FLAG, &req_name, &rep_name, &n.to_string()])
        .stdout(Stdio::inherit())
        .spawn()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()?;
    // The service runs as the runtime's main future: a `Received` held across an `.await` (the
    // request, while the reply loan is awaited) is not `Send`, so it is not `tokio::spawn`ed.
    let one_way = rt.block_on(async move {
        {
            let mut one_way = Vec::with_capacity(n as usize);
            loop {
                let req = match requests.recv_async().await {
                    Ok(r) => r,
                    Err(RecvError::Disconnected) => break,
                    Err(e) => return Err(e.to_string()),
                };
                one_way
                    .push(psyne::channel::monotonic_ns().saturating_sub(req.header().timestamp_ns));
                // The "model": L2-normalise the embedding (data[0], the index, is kept).
                let norm = req.data[1..].iter().map(|v| v * v).sum::<f32>().sqrt();
                let mut reply = replies.allocate_async().await.map_err(|e| e.to_string())?;
                reply.data[0] = req.data[0];
                for (o, v) in reply.data[1..].iter_mut().zip(&req.data[1..]) {
                    *o = v / norm;
                }
                drop(req);
                reply.send();
                if one_way.len() as u64 == n {
                    break;
                }
            }
            Ok::<_, String>(one_way)
        }
    })?;
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("client process failed: {status}").into());
    }
    percentiles(
        "service: request one-way (client send -> recv_async)",
        one_way,
    );
    println!(
        "requests answered: {n}; helper threads now: {}",
        psyne::wait::async_wait::helper_threads()
    );
    Ok(())
}
