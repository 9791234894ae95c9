//! The `layer_communication` pipeline split across two processes, over TCP, beside the same run
//! over shared memory:
//!
//! ```text
//!  process A                                   process B
//!  embedding layer ──Embedding256──▶ (TCP) ──▶ dense layer: y = relu(W x)
//!  output layer    ◀──DenseOutput── (TCP) ◀──┘
//! ```
//!
//! ```text
//! cargo run --release --example tcp_pipeline                          # both sides here, loopback
//! cargo run --release --example tcp_pipeline -- --listen 0.0.0.0:7700 --key SECRET   # A
//! cargo run --release --example tcp_pipeline -- --connect HOST:7700 --key SECRET     # B
//! ```
//!
//! Process A (`--listen ADDR`) runs the embedding and output layers; process B
//! (`--connect ADDR`) the dense layer, which multiplies its weights straight from the received
//! message into a loaned output message. With neither flag, this process is A, listens on
//! loopback, starts itself again as B, and then repeats the run with the two processes joined
//! by shared-memory channels instead (`.shared(name)`), printing both. A listener on an address
//! other than loopback needs `--key` on both sides (HMAC authentication of the peers; the
//! messages are not encrypted).
//!
//! `--messages N` go back to back (throughput, and latency with full queues: over TCP the
//! queues include both socket buffers, so thousands of messages wait), then, once every output
//! arrived, `N / 10` paced ones, one every `--pace-us` µs (default 100: latency with empty
//! queues). Latency is
//! end to end, from the embedding's send to the output's receive, both on A's clock. Each
//! output is checked: order, and for one message its values against a local computation.

use nalgebra::{DMatrix, SVector};
use psyne::net::Listener;
use psyne::{Channel, Consumer, Producer, PsyneMessage, RecvError};
use psyne_examples::args::Args;
use psyne_examples::dense::{Path, relu_gemv};
use psyne_examples::stats::quantile_sorted;
use psyne_schemas::Embedding256;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Width of every layer.
const DIM: usize = 256;
/// Messages each channel holds.
const CAPACITY: usize = 64;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// What the dense layer emits.
#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
#[psyne(name = "tcp_pipeline.DenseOutput")]
pub struct DenseOutput {
    /// `relu(W x)`.
    pub data: [f32; DIM],
    /// The number of the embedding this was computed from.
    pub batch_idx: u32,
    /// The layer that produced it (1: the dense layer).
    pub layer_id: u32,
}

/// Input of message `i`, element `j` (deterministic, so the result can be checked).
fn input_value(i: u64, j: usize) -> f32 {
    ((i as usize).wrapping_mul(31).wrapping_add(j * 7) % 97) as f32 / 97.0 - 0.5
}

/// Dense weight `(r, c)`.
fn weight(r: usize, c: usize) -> f32 {
    (((r * 7 + c * 13) % 29) as f32 / 29.0 - 0.5) / 16.0
}

const USAGE: &str = "\
The layer_communication pipeline across two processes, over TCP and over shared memory.

usage: tcp_pipeline [--listen ADDR | --connect ADDR] [--key KEY] [--messages N] [--pace-us US]

  --listen ADDR   be process A (embedding and output layers), listening on ADDR
  --connect ADDR  be process B (dense layer), connecting to A at ADDR
                  (neither: be A on loopback, start B, then repeat over shared memory)
  --key KEY       authentication key, the same on both sides (required off loopback)
  --messages N    messages sent back to back, then N/10 paced ones (default 100000)
  --pace-us US    microseconds between paced messages (default 100)
";

/// The dense layer (process B): until the embeddings end.
fn dense(mut rx: Consumer<Embedding256>, mut tx: Producer<DenseOutput>) -> Result<u64, Error> {
    let w = DMatrix::<f32>::from_fn(DIM, DIM, weight);
    let path = Path::detect();
    let mut n = 0;
    loop {
        let x = match rx.recv() {
            Ok(x) => x,
            Err(RecvError::Disconnected) => return Ok(n),
            Err(e) => return Err(e.into()),
        };
        let mut y = tx.allocate()?;
        relu_gemv(path, &mut y.data_vector_mut(), &w, &x.data_vector());
        y.batch_idx = x.batch_idx;
        y.layer_id = 1;
        drop(x);
        y.send();
        n += 1;
    }
}

/// What process A measured.
struct Report {
    /// Messages per second through the whole pipeline, back to back.
    rate: f64,
    /// End-to-end latencies (ns) of the back-to-back and of the paced messages.
    full: Vec<u64>,
    paced: Vec<u64>,
}

/// Process A: sends `n` embeddings back to back and `paced` more one every `pace`, receives
/// every output, checks it and times it.
fn source_and_sink(
    mut tx: Producer<Embedding256>,
    mut rx: Consumer<DenseOutput>,
    n: u64,
    paced: u64,
    pace: Duration,
) -> Result<Report, Error> {
    let total = n + paced;
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let epoch = Instant::now();
    let sent_by = Arc::clone(&sent);
    // Outputs received so far: the paced phase starts once the back-to-back backlog drained.
    let received = Arc::new(AtomicU64::new(0));
    let received_by = Arc::clone(&received);
    let source = thread::spawn(move || -> Result<(), Error> {
        let mut next = Instant::now();
        for i in 0..total {
            if i == n {
                while received_by.load(Ordering::Relaxed) < n {
                    thread::sleep(Duration::from_millis(1));
                }
                next = Instant::now();
            }
            if i >= n {
                // Sleeps (a spinning source would take a core from the pipeline).
                next += pace;
                thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            let mut x = tx.allocate()?;
            for (j, v) in x.data.iter_mut().enumerate() {
                *v = input_value(i, j);
            }
            x.batch_idx = i as u32;
            x.layer_id = 0;
            sent_by[i as usize].store(epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
            x.send();
        }
        Ok(()) // dropping `tx` flushes and ends the dense layer's input
    });
    let w = DMatrix::<f32>::from_fn(DIM, DIM, weight);
    let check_idx = n / 2;
    let x = SVector::<f32, DIM>::from_fn(|j, _| input_value(check_idx, j));
    let mut expected = SVector::<f32, DIM>::zeros();
    relu_gemv(
        Path::detect(),
        &mut expected.as_view_mut(),
        &w,
        &x.as_view(),
    );
    let warm = n / 10;
    let (mut full, mut paced_lat) = (Vec::new(), Vec::new());
    let (mut first, mut last) = (0u64, 0u64);
    for i in 0..total {
        let y = rx.recv()?;
        let now = epoch.elapsed().as_nanos() as u64;
        received.store(i + 1, Ordering::Relaxed);
        if u64::from(y.batch_idx) != i || y.layer_id != 1 {
            return Err(format!("output {i} is for input {}", y.batch_idx).into());
        }
        if i == check_idx {
            let diff = (y.data_vector() - expected).abs().max();
            if diff > 1e-4 {
                return Err(format!("output {i} differs from W x by {diff}").into());
            }
        }
        let lat = now.saturating_sub(sent[i as usize].load(Ordering::Relaxed));
        if i == warm {
            first = now;
        }
        if i + 1 == n {
            last = now;
        }
        if i >= warm && i < n {
            full.push(lat);
        } else if i >= n + paced / 10 {
            paced_lat.push(lat);
        }
    }
    source
        .join()
        .map_err(|_| "the embedding layer panicked")??;
    Ok(Report {
        rate: (n - warm - 1) as f64 / ((last - first) as f64 / 1e9),
        full,
        paced: paced_lat,
    })
}

fn print(title: &str, r: &Report) {
    let p = |v: &[u64]| {
        let mut v = v.to_vec();
        v.sort_unstable();
        let us = |q| quantile_sorted(&v, q) as f64 / 1e3;
        format!(
            "p50 {:>8.1}  p99 {:>8.1}  p99.9 {:>8.1} µs",
            us(0.5),
            us(0.99),
            us(0.999)
        )
    };
    println!("{title}");
    println!(
        "  back to back: {:>9.0} msg/s  {:>6.3} GB/s in + out   latency {}",
        r.rate,
        r.rate * (2 * DIM * 4) as f64 / 1e9,
        p(&r.full)
    );
    println!(
        "  paced:                                           latency {}",
        p(&r.paced)
    );
}

/// Starts this executable again with `args`.
fn spawn_self(args: &[&str]) -> Result<std::process::Child, Error> {
    Ok(std::process::Command::new(std::env::current_exe()?)
        .args(args)
        .spawn()?)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse(
        &["listen", "connect", "key", "shm", "messages", "pace-us"],
        USAGE,
    )?;
    let n: u64 = args.value("messages", 100_000)?;
    let pace = Duration::from_secs_f64(args.value("pace-us", 100.0f64)? / 1e6);
    let key = args.get("key").map(|k| k.as_bytes().to_vec());
    run(&args, n.max(100), pace, key).map_err(|e| e as Box<dyn std::error::Error>)
}

fn run(args: &Args, n: u64, pace: Duration, key: Option<Vec<u8>>) -> Result<(), Error> {
    let paced = n / 10;
    let emb = || Channel::<Embedding256>::builder().capacity(CAPACITY);
    let out = || Channel::<DenseOutput>::builder().capacity(CAPACITY);
    let keyed = |b: psyne::ChannelBuilder<Embedding256>| match &key {
        Some(k) => b.auth_key(k),
        None => b.net(),
    };
    let keyed_out = |b: psyne::ChannelBuilder<DenseOutput>| match &key {
        Some(k) => b.auth_key(k),
        None => b.net(),
    };
    // Process B over shared memory (started by A with a name prefix).
    if let Some(prefix) = args.get("shm") {
        let rx = Channel::<Embedding256>::open_consumer(&format!("{prefix}-emb"))?;
        let tx = Channel::<DenseOutput>::open_producer(&format!("{prefix}-out"))?;
        dense(rx, tx)?;
        return Ok(());
    }
    // Process B over TCP.
    if let Some(addr) = args.get("connect") {
        let rx = keyed(emb()).connect_consumer(addr)?;
        let tx = keyed_out(out()).connect_producer(addr)?;
        let done = dense(rx, tx)?;
        println!("dense layer: {done} messages");
        return Ok(());
    }
    // Process A.
    let spawned = args.get("listen").is_none();
    let listen = args.get("listen").unwrap_or("127.0.0.1:0");
    let listener = match &key {
        Some(_) => Listener::bind_authenticated(listen)?,
        None => Listener::bind(listen)?,
    };
    let addr = listener.local_addr()?;
    let mut child = None;
    if spawned {
        let a = addr.to_string();
        let mut b = vec!["--connect", a.as_str()];
        let k = key
            .as_ref()
            .map(|k| String::from_utf8_lossy(k).into_owned());
        if let Some(k) = &k {
            b.extend(["--key", k.as_str()]);
        }
        child = Some(spawn_self(&b)?);
    } else {
        println!("listening on {addr}: start process B with --connect {addr}");
    }
    let tx = keyed(emb()).accept_producer(&listener)?;
    let rx = keyed_out(out()).accept_consumer(&listener)?;
    let tcp = source_and_sink(tx, rx, n, paced, pace)?;
    if let Some(mut c) = child.take()
        && !c.wait()?.success()
    {
        return Err("process B failed".into());
    }
    println!(
        "{n} messages back to back, then {paced} paced (one every {:?}); Embedding256 in, \
         DenseOutput out; channels of {CAPACITY} messages",
        pace
    );
    print(&format!("TCP ({addr})"), &tcp);
    if !spawned {
        return Ok(());
    }
    // The same run, the two processes joined by shared-memory channels.
    let prefix = format!("psyne-tcp-pipeline-{}", std::process::id());
    let tx = emb().shared(&format!("{prefix}-emb")).create_producer()?;
    let rx = out().shared(&format!("{prefix}-out")).create_consumer()?;
    let mut c = spawn_self(&["--shm", &prefix])?;
    let shm = source_and_sink(tx, rx, n, paced, pace)?;
    if !c.wait()?.success() {
        return Err("process B (shared memory) failed".into());
    }
    print("shared memory", &shm);
    println!(
        "TCP / shared memory: {:.2}x the throughput, {:.1}x the paced p50 latency",
        tcp.rate / shm.rate,
        {
            let mut a = tcp.paced.clone();
            let mut b = shm.paced.clone();
            a.sort_unstable();
            b.sort_unstable();
            quantile_sorted(&a, 0.5) as f64 / quantile_sorted(&b, 0.5).max(1) as f64
        }
    );
    Ok(())
}
