//! TCP channels against a raw-socket floor and ZeroMQ, over loopback, in one run.
//!
//! ```text
//! cargo run --release --example net_bench [--features zmq] -- [--reps N] [--scale F] [--only NAME]
//! # NAME: streaming, rtt, veth, or one streaming workload (Embedding256, 64KiB, 1MiB, 16MiB)
//! ```
//!
//! * **Streaming**: one producer thread sends `N` messages, one consumer thread receives them;
//!   GB/s (payload bytes) and messages/s from the first send to the last receive, median
//!   [min–max] of `--reps` runs (default 5), contenders interleaved within each repetition.
//!   Sizes: `Embedding256` (1032 bytes, a typed channel), 64 KiB, 1 MiB and 16 MiB (raw
//!   channels, `allocate_bytes`).
//!   * *psyne tcp*: `connect_producer` / `accept_consumer`, the default wait strategy; rings of
//!     4096 messages for `Embedding256`, otherwise the smallest power of two holding one
//!     message and at least 8 MiB (8 MiB for 64 KiB and 1 MiB, 32 MiB for 16 MiB). On two
//!     CPUs a ring that holds a second large message lets the producer fill it while the pump
//!     sends the first and the consumer receives a third: three memory-bound threads on two
//!     CPUs. 16 MiB streamed at 1.23-1.26x the floor with 32 MiB rings, 0.81-0.96x with 64 MiB
//!     and 0.81x with 128 MiB (four messages rounded up, the sizing until 2026-12-04) in full
//!     runs of that day;
//!   * *raw floor*: one blocking socket (`TCP_NODELAY`), the sender writing the same bytes as
//!     psyne puts on the wire (a 32-byte header and the payload per message) in the largest
//!     sensible writes (about 256 KiB of whole frames, or one frame when larger), the receiver
//!     reading each frame with one `read_exact` into one reused buffer;
//!   * *zeromq*: `zmq` PUSH/PULL (with `--features zmq`; needs libzmq3-dev), one zmq message
//!     per payload, high-water marks bounding the queue to about 64 MiB.
//!
//!   Every contender's producer writes the message number into the first 8 bytes of every
//!   4 KiB of the payload and into its last 8 bytes; every consumer checks them.
//! * **Over veth** (when the machine allows network namespaces; else a printed reason): the
//!   same streaming runs for psyne and the raw floor with the listeners in one fresh network
//!   namespace and the senders in another, joined by a veth pair (each sending thread enters
//!   its namespace with `setns`). ZeroMQ is left out there: its I/O threads belong to its
//!   context, which lives in one namespace.
//! * **Round trip**: a 64-byte message and an `Embedding256` sent, echoed back by another
//!   thread, p50/p99 of 20 000 round trips after 2 000 warm-up ones: psyne (two TCP channels, one
//!   per direction), a raw ping-pong on one blocking socket (`write_all` of header and payload,
//!   `read_exact` of the echo), ZeroMQ PAIR sockets.
//!
//! # Results
//!
//! 2-CPU VM, other builds running (load average 8.7 → 9.2), `--reps 3 --scale 0.5`, medians:
//!
//! | workload | psyne tcp | raw floor | zeromq | psyne / floor |
//! |---|---|---|---|---|
//! | Embedding256 | 0.18 GB/s, 0.172 M msg/s | 0.41 GB/s, 0.396 M msg/s | 0.12 GB/s | 0.43x |
//! | 64 KiB | 0.63 GB/s | 0.94 GB/s | 0.39 GB/s | 0.67x |
//! | 1 MiB | 1.00 GB/s | 1.45 GB/s | 0.73 GB/s | 0.69x |
//! | 16 MiB | 0.89 GB/s | 0.74 GB/s | 0.46 GB/s | 1.20x |
//!
//! Round trip p50 / p99 (µs): 64 B psyne 222 / 4376, raw 22 / 70, ZeroMQ 74 / 3807;
//! Embedding256 psyne 257 / 5000, raw 24 / 86, ZeroMQ 107 / 5178. What meets its target and
//! what does not, and why: `psyne/src/transport/net/PROTOCOL.md`, "Performance".

use psyne::net::Listener;
use psyne::{Channel, PsyneMessage};
use psyne_examples::args::Args;
use psyne_examples::stats::{Summary, quantile_sorted};
use psyne_schemas::Embedding256;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::thread;
use std::time::Instant;

/// An error that can cross threads.
type Error = Box<dyn std::error::Error + Send + Sync>;

/// Bytes of psyne's frame header, written by the raw floor too.
const HEADER: usize = 32;

/// A 64-byte message for the round trips.
#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
#[psyne(name = "net_bench.Ping64")]
struct Ping64 {
    words: [u64; 8],
}

/// The byte offsets every producer stamps and every consumer checks.
fn stamps(len: usize) -> impl Iterator<Item = usize> {
    (0..len.saturating_sub(7))
        .step_by(4096)
        .chain(std::iter::once(len - 8))
}

fn touch(buf: &mut [u8], seq: u64) {
    for off in stamps(buf.len()) {
        buf[off..off + 8].copy_from_slice(&seq.to_le_bytes());
    }
}

fn check(buf: &[u8], seq: u64) -> Result<(), Error> {
    for off in stamps(buf.len()) {
        let mut w = [0u8; 8];
        w.copy_from_slice(&buf[off..off + 8]);
        if u64::from_le_bytes(w) != seq {
            return Err(format!("message {seq}: wrong stamp at byte {off}").into());
        }
    }
    Ok(())
}

/// One streaming workload.
#[derive(Clone, Copy)]
struct Workload {
    name: &'static str,
    /// Payload bytes per message.
    size: usize,
    /// Messages per run.
    count: u64,
}

/// Seconds from the first send to the last receive.
type Run = Result<f64, Error>;

/// The address listeners bind: loopback, or this side of the veth link (see [`Veth`]).
static LISTEN_IP: Mutex<&str> = Mutex::new("127.0.0.1");
/// The namespace every sending thread enters first (`None`: stay, on loopback).
static PEER_NS: Mutex<Option<File>> = Mutex::new(None);

fn listen_ip() -> &'static str {
    *LISTEN_IP.lock().unwrap_or_else(|p| p.into_inner())
}

/// Moves this thread into the namespace `ns` (its sockets made from now on live there).
fn enter(ns: &File) -> Result<(), Error> {
    // SAFETY: `ns` is an open namespace file; `setns` changes only this thread's network
    // namespace and touches no memory of ours.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

/// A sending thread's first step: the peer's namespace over the veth link, nothing on
/// loopback.
fn enter_peer() -> Result<(), Error> {
    match &*PEER_NS.lock().unwrap_or_else(|p| p.into_inner()) {
        Some(ns) => enter(ns),
        None => Ok(()),
    }
}

/// Two fresh network namespaces joined by a veth pair: listeners (the main thread) in A at
/// 10.213.9.1, senders in B at 10.213.9.2. Dropping it moves the main thread back and deletes
/// both namespaces.
struct Veth {
    names: [String; 2],
    home: File,
}

fn ip(args: &[&str]) -> bool {
    std::process::Command::new("ip")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Veth {
    fn up() -> Result<Veth, String> {
        let id = std::process::id() % 100_000;
        let (a, b) = (format!("nbA{id}"), format!("nbB{id}"));
        let (va, vb) = (format!("nba{id}"), format!("nbb{id}"));
        let home = File::open("/proc/thread-self/ns/net").map_err(|e| e.to_string())?;
        if !ip(&["netns", "add", &a]) {
            return Err("network namespaces are not allowed here (ip netns add failed)".into());
        }
        let veth = Veth {
            names: [a.clone(), b.clone()],
            home,
        };
        let ok = ip(&["netns", "add", &b])
            && ip(&[
                "link", "add", &va, "netns", &a, "type", "veth", "peer", "name", &vb, "netns", &b,
            ])
            && ip(&["-n", &a, "addr", "add", "10.213.9.1/24", "dev", &va])
            && ip(&["-n", &b, "addr", "add", "10.213.9.2/24", "dev", &vb])
            && ip(&["-n", &a, "link", "set", &va, "up"])
            && ip(&["-n", &b, "link", "set", &vb, "up"]);
        if !ok {
            return Err("could not set up the veth pair".into());
        }
        let open = |n: &str| File::open(format!("/run/netns/{n}")).map_err(|e| e.to_string());
        let (ns_a, ns_b) = (open(&a)?, open(&b)?);
        enter(&ns_a).map_err(|e| e.to_string())?;
        *PEER_NS.lock().unwrap_or_else(|p| p.into_inner()) = Some(ns_b);
        *LISTEN_IP.lock().unwrap_or_else(|p| p.into_inner()) = "10.213.9.1";
        Ok(veth)
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        *PEER_NS.lock().unwrap_or_else(|p| p.into_inner()) = None;
        *LISTEN_IP.lock().unwrap_or_else(|p| p.into_inner()) = "127.0.0.1";
        let _ = enter(&self.home);
        for n in &self.names {
            ip(&["netns", "del", n]);
        }
    }
}

fn loopback() -> Result<(Listener, std::net::SocketAddr), Error> {
    let l = match listen_ip() {
        // On the veth link between two namespaces of this machine: nothing else reaches it.
        "10.213.9.1" => Listener::bind_insecure_any("10.213.9.1:0")?,
        ip => Listener::bind((ip, 0))?,
    };
    let a = l.local_addr()?;
    Ok((l, a))
}

/// A ring of at least one message and 8 MiB (see the module docs).
fn ring_bytes(size: usize) -> usize {
    (size + 64).max(8 << 20).next_power_of_two()
}

fn psyne_stream(w: Workload) -> Run {
    let (l, addr) = loopback()?;
    let n = w.count;
    if w.size == core::mem::size_of::<Embedding256>() {
        let tx = thread::spawn(move || -> Result<Instant, Error> {
            enter_peer()?;
            let mut tx = Channel::<Embedding256>::builder()
                .capacity(4096)
                .connect_producer(addr)?;
            let start = Instant::now();
            for i in 0..n {
                let mut loan = tx.allocate()?;
                touch(psyne::bytemuck::bytes_of_mut(&mut *loan), i);
                loan.send();
            }
            Ok(start)
        });
        let mut rx = Channel::<Embedding256>::builder()
            .capacity(4096)
            .accept_consumer(&l)?;
        for i in 0..n {
            let m = rx.recv()?;
            check(psyne::bytemuck::bytes_of(&*m), i)?;
        }
        let end = Instant::now();
        let start = tx.join().map_err(|_| "producer panicked")??;
        return Ok((end - start).as_secs_f64());
    }
    let size = w.size;
    let cap = ring_bytes(size);
    let tx = thread::spawn(move || -> Result<Instant, Error> {
        enter_peer()?;
        let mut tx = Channel::raw().capacity_bytes(cap).connect_producer(addr)?;
        let start = Instant::now();
        for i in 0..n {
            let mut loan = tx.allocate_bytes(size)?;
            touch(&mut loan, i);
            loan.send(1);
        }
        Ok(start)
    });
    let mut rx = Channel::raw().capacity_bytes(cap).accept_consumer(&l)?;
    for i in 0..n {
        let m = rx.recv()?;
        check(m.bytes(), i)?;
    }
    let end = Instant::now();
    let start = tx.join().map_err(|_| "producer panicked")??;
    Ok((end - start).as_secs_f64())
}

fn raw_stream(w: Workload) -> Run {
    let l = TcpListener::bind((listen_ip(), 0))?;
    let addr = l.local_addr()?;
    let (size, n) = (w.size, w.count);
    let frame = HEADER + size;
    let per_write = ((256 << 10) / frame).max(1);
    let tx = thread::spawn(move || -> Result<Instant, Error> {
        enter_peer()?;
        let mut s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        let mut buf = vec![0u8; per_write * frame];
        let start = Instant::now();
        let mut i = 0;
        while i < n {
            let k = per_write.min((n - i) as usize);
            for (j, f) in buf.chunks_exact_mut(frame).take(k).enumerate() {
                f[..4].copy_from_slice(&(size as u32).to_le_bytes());
                f[16..24].copy_from_slice(&(i + j as u64).to_le_bytes());
                touch(&mut f[HEADER..], i + j as u64);
            }
            s.write_all(&buf[..k * frame])?;
            i += k as u64;
        }
        Ok(start)
    });
    let (mut s, _) = l.accept()?;
    s.set_nodelay(true)?;
    let mut buf = vec![0u8; frame];
    for i in 0..n {
        s.read_exact(&mut buf)?;
        check(&buf[HEADER..], i)?;
    }
    let end = Instant::now();
    let start = tx.join().map_err(|_| "producer panicked")??;
    Ok((end - start).as_secs_f64())
}

#[cfg(feature = "zmq")]
fn zmq_stream(w: Workload) -> Run {
    let ctx = zmq::Context::new();
    let pull = ctx.socket(zmq::PULL)?;
    let hwm = ((64 << 20) / w.size).max(4) as i32;
    pull.set_rcvhwm(hwm)?;
    pull.bind("tcp://127.0.0.1:*")?;
    let endpoint = pull
        .get_last_endpoint()?
        .map_err(|_| "endpoint not UTF-8")?;
    let (size, n) = (w.size, w.count);
    let push_ctx = ctx.clone();
    let tx = thread::spawn(move || -> Result<Instant, Error> {
        let push = push_ctx.socket(zmq::PUSH)?;
        push.set_sndhwm(hwm)?;
        push.connect(&endpoint)?;
        let start = Instant::now();
        for i in 0..n {
            let mut m = zmq::Message::with_size(size);
            touch(&mut m, i);
            push.send(m, 0)?;
        }
        Ok(start)
    });
    let mut m = zmq::Message::new();
    for i in 0..n {
        pull.recv(&mut m, 0)?;
        check(&m, i)?;
    }
    let end = Instant::now();
    let start = tx.join().map_err(|_| "producer panicked")??;
    Ok((end - start).as_secs_f64())
}

/// Round-trip times in ns.
type Trips = Result<Vec<u64>, Error>;

const WARMUP: usize = 2_000;

fn psyne_rtt<T: psyne::Message>(trips: usize) -> Trips {
    let (l1, a1) = loopback()?;
    let (l2, a2) = loopback()?;
    let echo = thread::spawn(move || -> Result<(), Error> {
        let mut rx = Channel::<T>::builder().capacity(64).accept_consumer(&l1)?;
        let mut tx = Channel::<T>::builder().capacity(64).connect_producer(a2)?;
        for _ in 0..WARMUP + trips {
            let m = rx.recv()?;
            let mut loan = tx.allocate()?;
            *loan = *m;
            drop(m);
            loan.send();
        }
        Ok(())
    });
    let mut tx = Channel::<T>::builder().capacity(64).connect_producer(a1)?;
    let mut rx = Channel::<T>::builder().capacity(64).accept_consumer(&l2)?;
    let mut out = Vec::with_capacity(trips);
    for i in 0..(WARMUP + trips) as u64 {
        let t = Instant::now();
        let mut loan = tx.allocate()?;
        touch(psyne::bytemuck::bytes_of_mut(&mut *loan), i);
        loan.send();
        let m = rx.recv()?;
        check(psyne::bytemuck::bytes_of(&*m), i)?;
        drop(m);
        if i as usize >= WARMUP {
            out.push(t.elapsed().as_nanos() as u64);
        }
    }
    echo.join().map_err(|_| "echo panicked")??;
    Ok(out)
}

fn raw_rtt(size: usize, trips: usize) -> Trips {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let frame = HEADER + size;
    let echo = thread::spawn(move || -> Result<(), Error> {
        let (mut s, _) = l.accept()?;
        s.set_nodelay(true)?;
        let mut buf = vec![0u8; frame];
        for _ in 0..WARMUP + trips {
            s.read_exact(&mut buf)?;
            s.write_all(&buf)?;
        }
        Ok(())
    });
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let mut buf = vec![0u8; frame];
    let mut back = vec![0u8; frame];
    let mut out = Vec::with_capacity(trips);
    for i in 0..(WARMUP + trips) as u64 {
        let t = Instant::now();
        buf[..4].copy_from_slice(&(size as u32).to_le_bytes());
        touch(&mut buf[HEADER..], i);
        s.write_all(&buf)?;
        s.read_exact(&mut back)?;
        check(&back[HEADER..], i)?;
        if i as usize >= WARMUP {
            out.push(t.elapsed().as_nanos() as u64);
        }
    }
    echo.join().map_err(|_| "echo panicked")??;
    Ok(out)
}

#[cfg(feature = "zmq")]
fn zmq_rtt(size: usize, trips: usize) -> Trips {
    let ctx = zmq::Context::new();
    let a = ctx.socket(zmq::PAIR)?;
    a.bind("tcp://127.0.0.1:*")?;
    let endpoint = a.get_last_endpoint()?.map_err(|_| "endpoint not UTF-8")?;
    let echo_ctx = ctx.clone();
    let echo = thread::spawn(move || -> Result<(), Error> {
        let b = echo_ctx.socket(zmq::PAIR)?;
        b.connect(&endpoint)?;
        let mut m = zmq::Message::new();
        for _ in 0..WARMUP + trips {
            b.recv(&mut m, 0)?;
            b.send(&m[..], 0)?;
        }
        Ok(())
    });
    let mut m = zmq::Message::new();
    let mut out = Vec::with_capacity(trips);
    for i in 0..(WARMUP + trips) as u64 {
        let t = Instant::now();
        let mut s = zmq::Message::with_size(size);
        touch(&mut s, i);
        a.send(s, 0)?;
        a.recv(&mut m, 0)?;
        check(&m, i)?;
        if i as usize >= WARMUP {
            out.push(t.elapsed().as_nanos() as u64);
        }
    }
    echo.join().map_err(|_| "echo panicked")??;
    Ok(out)
}

/// `/proc/loadavg`'s first three fields.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

type StreamFn = fn(Workload) -> Run;

fn contenders() -> Vec<(&'static str, StreamFn)> {
    #[allow(unused_mut)] // one more with `zmq`
    let mut v: Vec<(&'static str, StreamFn)> =
        vec![("psyne tcp", psyne_stream), ("raw floor", raw_stream)];
    #[cfg(feature = "zmq")]
    v.push(("zeromq", zmq_stream));
    v
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "net_bench [--reps N] [--scale F] [--only streaming|rtt|veth|WORKLOAD]\n\n\
                 WORKLOAD: Embedding256, 64KiB, 1MiB or 16MiB (that streaming run only)";
    let args = Args::parse(&["reps", "scale", "only"], usage)?;
    let reps: usize = args.value("reps", 5)?;
    let scale: f64 = args.value("scale", 1.0)?;
    run(reps, scale, args.get("only").unwrap_or("")).map_err(|e| e as Box<dyn std::error::Error>)
}

fn run(reps: usize, scale: f64, only: &str) -> Result<(), Error> {
    let count = |n: f64| ((n * scale) as u64).max(4);
    let workloads = [
        Workload {
            name: "Embedding256",
            size: core::mem::size_of::<Embedding256>(),
            count: count(400_000.0),
        },
        Workload {
            name: "64 KiB",
            size: 64 << 10,
            count: count(16_000.0),
        },
        Workload {
            name: "1 MiB",
            size: 1 << 20,
            count: count(1_200.0),
        },
        Workload {
            name: "16 MiB",
            size: 16 << 20,
            count: count(80.0),
        },
    ];
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    println!("net_bench: {cpus} CPUs, load average before: {}", load());
    if cfg!(not(feature = "zmq")) {
        println!("(zeromq skipped: build with --features zmq)");
    }
    if !matches!(only, "rtt" | "veth") {
        println!("\nstreaming, median [min–max] of {reps} runs");
        streaming(&workloads, &contenders(), reps, only)?;
    }
    if matches!(only, "" | "rtt") {
        let trips = 20_000;
        println!("\nround trip, {trips} trips after {WARMUP} warm-up ones (µs)");
        let show = |name: &str, what: &str, mut t: Vec<u64>| {
            t.sort_unstable();
            let (p50, p99) = (quantile_sorted(&t, 0.5), quantile_sorted(&t, 0.99));
            println!(
                "  {what:<13} {name:<10} p50 {:>7.1}  p99 {:>7.1}",
                p50 as f64 / 1e3,
                p99 as f64 / 1e3
            );
            p50
        };
        for (what, size) in [
            ("64 B", 64usize),
            ("Embedding256", core::mem::size_of::<Embedding256>()),
        ] {
            let p = if size == 64 {
                psyne_rtt::<Ping64>(trips)?
            } else {
                psyne_rtt::<Embedding256>(trips)?
            };
            let ps = show("psyne tcp", what, p);
            let raw = show("raw", what, raw_rtt(size, trips)?);
            #[cfg(feature = "zmq")]
            show("zeromq", what, zmq_rtt(size, trips)?);
            println!(
                "  {what:<13} psyne/raw  {:.2}x (p50)",
                ps as f64 / raw as f64
            );
        }
    }
    if matches!(only, "" | "veth") {
        // ZeroMQ's I/O threads belong to its context, made in one namespace: it cannot have a
        // side in each, so this section compares psyne with the raw floor only.
        match Veth::up() {
            Ok(_veth) => {
                println!(
                    "\nstreaming over a veth pair between two network namespaces \
                     (psyne and the raw floor), median [min–max] of {reps} runs"
                );
                let two = &contenders()[..2];
                streaming(&workloads, two, reps, "")?;
            }
            Err(why) => println!("\nveth: skipped: {why}"),
        }
    }
    println!("\nload average after: {}", load());
    Ok(())
}

/// The streaming runs of `workloads` (`only`: one of them, or all) for `names`, the raw floor
/// second.
fn streaming(
    workloads: &[Workload],
    names: &[(&'static str, StreamFn)],
    reps: usize,
    only: &str,
) -> Result<(), Error> {
    for &w in workloads {
        let id: String = w.name.split_whitespace().collect();
        if !matches!(only, "" | "streaming") && only != id {
            continue;
        }
        let mut secs: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
        for r in 0..reps {
            // Rotate the order so that no contender always runs first.
            for k in 0..names.len() {
                let c = (k + r) % names.len();
                secs[c].push((names[c].1)(w)?);
            }
        }
        let gbs = |s: &[f64]| {
            let v: Vec<f64> = s
                .iter()
                .map(|t| (w.size as u64 * w.count) as f64 / t / 1e9)
                .collect();
            Summary::of(&v)
        };
        let floor = gbs(&secs[1]).median;
        for (c, (name, _)) in names.iter().enumerate() {
            let g = gbs(&secs[c]);
            let rate: Vec<f64> = secs[c].iter().map(|t| w.count as f64 / t).collect();
            println!(
                "  {:<13} {:<10} {} GB/s  {} Mmsg/s  {:.2}x floor",
                w.name,
                name,
                g.show(2),
                Summary::of(&rate.iter().map(|r| r / 1e6).collect::<Vec<_>>()).show(3),
                g.median / floor
            );
        }
    }
    Ok(())
}
