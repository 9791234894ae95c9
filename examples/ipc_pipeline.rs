//! Two layers of a network in two *processes*, streaming `Embedding256` activations through a
//! psyne channel in shared memory, beside the same stream between two threads of one process.
//!
//! The first process creates the channel (`.shared(name).create_consumer()`) and starts this same
//! executable again with `--producer <name> <messages>`; that second process opens the producer
//! end by name (`Channel::open_producer`), writes each activation in place through an nalgebra
//! view and publishes it. The consumer reads every message in place (no copy), checks it and sums
//! it into a checksum, and takes each message's latency from its header's send timestamp
//! (`CLOCK_MONOTONIC` is system-wide, so the two processes' clocks compare). Then it does the same
//! with an in-process channel and prints both.
//!
//! Run with `cargo run --release --example ipc_pipeline -- [--messages N]` (default 200 000
//! streaming messages; `--help` prints the usage).
//!
//! Two runs per transport: *streaming* (the producer runs as fast as the consumer frees space,
//! so its latencies include queueing in a full ring of 256 messages) and *paced* (one message
//! every 20 us, 10 000 messages: the ring is nearly empty and the latency is the hand-off,
//! including waking a consumer that went to sleep). Reading the clock costs ~20-30 ns per
//! message on each side.

use psyne::{Channel, Consumer, RecvError};
use psyne_examples::args::Args;
use psyne_schemas::Embedding256;
use std::process::Command;
use std::time::{Duration, Instant};

/// Messages in flight at most.
const CAPACITY: usize = 256;
/// Messages of the paced runs.
const PACED_MESSAGES: u64 = 10_000;
/// Interval between two messages of the paced runs, in nanoseconds.
const PACE_NS: u64 = 20_000;

/// The first argument that makes this executable the producer process (followed by the channel
/// name, the message count and the pace in nanoseconds); not for users, so not in [`USAGE`].
const PRODUCER_FLAG: &str = "--producer";

/// What `--help` prints.
const USAGE: &str = "\
Two layers in two processes (and then in two threads) streaming Embedding256 activations through
a psyne channel; prints throughput and latency percentiles from the header timestamps.

usage: ipc_pipeline [--messages N]

  --messages N   messages of the streaming runs (default 200000); the paced runs always send
                 10000, one every 20 us
";

/// The value layer 1 writes at position `k` of message `seq`.
fn value(seq: u64, k: usize) -> f32 {
    ((seq as usize + k) % 1024) as f32 * 0.125
}

/// Waits (yielding) until message `seq` is due when pacing every `pace_ns` from `start_ns`.
fn pace(start_ns: u64, pace_ns: u64, seq: u64) {
    if pace_ns == 0 {
        return;
    }
    let due = start_ns + seq * pace_ns;
    while psyne::channel::monotonic_ns() < due {
        std::thread::yield_now(); // leave the core to the consumer if they share one
    }
}

/// Writes message `seq` in place.
fn produce(msg: &mut Embedding256, seq: u64) {
    for (k, x) in msg.data_vector_mut().iter_mut().enumerate() {
        *x = value(seq, k);
    }
    msg.batch_idx = seq as u32;
    msg.layer_id = 1;
}

/// What the consumer measured.
struct Run {
    messages: u64,
    elapsed: Duration,
    checksum: f64,
    latencies_ns: Vec<u64>,
}

/// Receives `n` messages, checking each and collecting latencies.
fn consume(rx: &mut Consumer<Embedding256>, n: u64) -> Result<Run, Box<dyn std::error::Error>> {
    let mut latencies_ns = Vec::with_capacity(n as usize);
    let mut checksum = 0.0f64;
    let mut start = None;
    for seq in 0..n {
        let msg = rx.recv_timeout(Duration::from_secs(10))?;
        let now = psyne::channel::monotonic_ns();
        start.get_or_insert_with(Instant::now);
        if msg.batch_idx != seq as u32 || msg.data[255] != value(seq, 255) {
            return Err(format!("message {seq} is not what layer 1 wrote").into());
        }
        checksum += f64::from(msg.data_vector().sum()); // read in place
        latencies_ns.push(now.saturating_sub(msg.header().timestamp_ns));
    }
    let elapsed = start.map_or(Duration::ZERO, |s| s.elapsed());
    match rx.recv_timeout(Duration::from_secs(10)) {
        Err(RecvError::Disconnected) => {}
        Ok(_) => return Err("more messages than expected".into()),
        Err(e) => return Err(e.into()),
    }
    Ok(Run {
        messages: n,
        elapsed,
        checksum,
        latencies_ns,
    })
}

/// The checksum the consumer must find, computed independently.
fn expected_checksum(n: u64) -> f64 {
    (0..n)
        .map(|seq| f64::from((0..256).map(|k| value(seq, k)).sum::<f32>()))
        .sum()
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(label: &str, run: &mut Run) {
    run.latencies_ns.sort_unstable();
    let l = &run.latencies_ns;
    let secs = run.elapsed.as_secs_f64();
    println!(
        "{label:<14} {:>9} msgs  {:>7.2} M msg/s  {:>7.0} MB/s   latency p50 {:>7.2} us  p99 \
         {:>7.2} us  p99.9 {:>7.2} us  max {:>8.2} us",
        run.messages,
        run.messages as f64 / secs / 1e6,
        (run.messages * size_of::<Embedding256>() as u64) as f64 / secs / 1e6,
        percentile(l, 0.5) as f64 / 1e3,
        percentile(l, 0.99) as f64 / 1e3,
        percentile(l, 0.999) as f64 / 1e3,
        l.last().copied().unwrap_or(0) as f64 / 1e3,
    );
}

/// The second process: opens the producer end by name and sends `n` messages, one every
/// `pace_ns` (0: as fast as possible).
fn producer_process(name: &str, n: u64, pace_ns: u64) -> Result<(), Box<dyn std::error::Error>> {
    let mut tx = Channel::<Embedding256>::open_producer(name)?;
    let start = psyne::channel::monotonic_ns();
    for seq in 0..n {
        pace(start, pace_ns, seq);
        let mut msg = tx.allocate()?; // a slot in the shared ring
        produce(&mut msg, seq); // written in place, in shared memory
        msg.send();
    }
    Ok(()) // dropping `tx` disconnects: the consumer sees Disconnected after the last message
}

/// Streams `n` messages (one every `pace_ns`) from a child process, through a shared channel.
fn across_processes(n: u64, pace_ns: u64) -> Result<Run, Box<dyn std::error::Error>> {
    let name = format!("psyne-ipc-pipeline-{}", std::process::id());
    let mut rx = Channel::<Embedding256>::builder()
        .capacity(CAPACITY)
        .timestamps(true)
        .shared(&name)
        .create_consumer()?;
    let mut child = Command::new(std::env::current_exe()?)
        .args([PRODUCER_FLAG, &name, &n.to_string(), &pace_ns.to_string()])
        .spawn()?;
    let run = consume(&mut rx, n);
    let status = child.wait()?;
    let run = run?;
    if !status.success() {
        return Err(format!("the producer process failed: {status}").into());
    }
    Ok(run) // dropping `rx` removes /dev/shm/<name>
}

/// Streams `n` messages (one every `pace_ns`) from another thread, through an in-process channel.
fn across_threads(n: u64, pace_ns: u64) -> Result<Run, Box<dyn std::error::Error>> {
    let (mut tx, mut rx) = Channel::<Embedding256>::builder()
        .capacity(CAPACITY)
        .timestamps(true)
        .build()?;
    let producer = std::thread::spawn(move || -> Result<(), psyne::SendError> {
        let start = psyne::channel::monotonic_ns();
        for seq in 0..n {
            pace(start, pace_ns, seq);
            let mut msg = tx.allocate()?;
            produce(&mut msg, seq);
            msg.send();
        }
        Ok(())
    });
    let run = consume(&mut rx, n)?;
    producer.join().map_err(|_| "producer thread panicked")??;
    Ok(run)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(PRODUCER_FLAG) {
        let name = argv.get(2).ok_or("--producer needs a channel name")?;
        let n = argv.get(3).ok_or("--producer needs a count")?.parse()?;
        let pace_ns = argv.get(4).map_or(Ok(0), |p| p.parse())?;
        return producer_process(name, n, pace_ns);
    }
    let args = Args::parse(&["messages"], USAGE)?;
    let n: u64 = args.value("messages", 200_000)?;
    if n == 0 {
        return Err("--messages must be at least 1".into());
    }
    println!(
        "Embedding256 ({} bytes), ring of {CAPACITY} messages, timestamps on",
        size_of::<Embedding256>()
    );
    let mut streaming = [across_processes(n, 0)?, across_threads(n, 0)?];
    let mut paced = [
        across_processes(PACED_MESSAGES, PACE_NS)?,
        across_threads(PACED_MESSAGES, PACE_NS)?,
    ];
    println!("\nstreaming, {n} messages:");
    report("two processes", &mut streaming[0]);
    report("two threads", &mut streaming[1]);
    println!(
        "\npaced, one message every {} us ({PACED_MESSAGES} messages; throughput is the pace):",
        PACE_NS / 1000
    );
    report("two processes", &mut paced[0]);
    report("two threads", &mut paced[1]);
    for (run, count) in streaming
        .iter()
        .map(|r| (r, n))
        .chain(paced.iter().map(|r| (r, PACED_MESSAGES)))
    {
        if run.checksum != expected_checksum(count) {
            return Err("checksum mismatch".into());
        }
    }
    println!(
        "\nchecksums match ({:.1} for the streaming runs)",
        streaming[0].checksum
    );
    Ok(())
}
