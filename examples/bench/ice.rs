//! The cross-process row's iceoryx2 contender (feature `iceoryx2`): publish-subscribe over
//! iceoryx2's `ipc` service, one publisher in a child process and one subscriber here, laid out
//! exactly as [`super::ipc`] lays out Psyne's row (same child re-execution, pinning, payload
//! work, timing and clock).
//!
//! Configuration, chosen to match Psyne's ring: a subscriber buffer as deep as Psyne's capacity,
//! no history, one publisher and one subscriber, no safe overflow and the publisher's
//! `RetryUntilDelivered` backpressure (a full buffer makes the publisher wait, as a full Psyne
//! ring does; iceoryx2 waits with its adaptive wait: yields, then sleeps after 10,000). The
//! publisher loans an uninitialised sample (`loan_uninit`), writes every word of the payload in
//! place and sends; the subscriber polls `receive` in a spin loop (`spin_loop` between polls, as
//! Psyne's `BusySpin` does) and reads every word in place.
//!
//! A publisher drops what it sends to a full buffer whose subscriber has not yet attached its
//! side of the connection (it attaches on its first `receive` or `has_samples` after the
//! publisher exists), so a streaming child waits for the parent's go-ahead: it creates its
//! publisher, prints `ready`, and sends once the parent, having attached, writes `go` to its stdin.
//!
//! The child keeps its publisher (and so its data segment) alive until the parent closes the
//! child's stdin, so the parent never races the publisher's teardown for unread samples.

use super::links::Error;
use super::payload::{self, Embedding256, Words};
use super::run::{Latency, Setup, Throughput, one_way_samples, receive_stream, ticks_to_ns};
use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::port::update_connections::UpdateConnections as _;
use iceoryx2::prelude::*;
use iceoryx2::sample::Sample;
use psyne_examples::affinity::pin_to_cpu;
use psyne_examples::iceoryx::{Shared, service_name, unique_name};
use psyne_examples::timer::{Clock, Source};
use std::hint::spin_loop;
use std::io::{BufRead as _, Read as _, Write as _};
use std::process::{Child, Command, Stdio};

/// Name in tables.
pub const NAME: &str = "iceoryx2 2 procs";
/// How the payload travels.
pub const HOW: &str = "zero-copy, shm";

type Pub<P> = Publisher<ipc::Service, Shared<P>, ()>;
type Sub<P> = Subscriber<ipc::Service, Shared<P>, ()>;
type Factory<P> =
    iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, Shared<P>, ()>;

fn err(e: impl std::fmt::Debug) -> Error {
    format!("iceoryx2: {e:?}").into()
}

fn node() -> Result<Node<ipc::Service>, Error> {
    NodeBuilder::new().create::<ipc::Service>().map_err(err)
}

/// Creates (or, from the child, opens) the service `name` for one publisher and one subscriber
/// with `capacity`-deep buffers.
fn service<P: bytemuck::Pod>(
    node: &Node<ipc::Service>,
    name: &str,
    capacity: usize,
    create: bool,
) -> Result<Factory<P>, Error> {
    let builder = node
        .service_builder(&service_name(name).map_err(err)?)
        .publish_subscribe::<Shared<P>>()
        .max_publishers(1)
        .max_subscribers(1)
        .history_size(0)
        .subscriber_max_buffer_size(capacity)
        .subscriber_max_borrowed_samples(1)
        .enable_safe_overflow(false);
    if create {
        builder.create().map_err(err)
    } else {
        builder.open().map_err(err)
    }
}

fn publisher<P: bytemuck::Pod>(s: &Factory<P>) -> Result<Pub<P>, Error> {
    s.publisher_builder()
        .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
        .max_loaned_samples(1)
        .create()
        .map_err(err)
}

fn subscriber<P: bytemuck::Pod>(s: &Factory<P>, capacity: usize) -> Result<Sub<P>, Error> {
    s.subscriber_builder()
        .buffer_size(capacity)
        .create()
        .map_err(err)
}

/// Loans a sample, writes every word of the payload in place, sends.
#[inline(always)]
fn send<P: bytemuck::Pod>(tx: &Pub<P>, stamp: u64) -> Result<(), Error> {
    let mut sample = tx.loan_uninit().map_err(err)?;
    // `Shared<P>` is `repr(transparent)` over `P`: write the `P` inside.
    let slot = sample.payload_mut();
    // SAFETY: `MaybeUninit<Shared<P>>` and `MaybeUninit<P>` have the same layout
    // (`repr(transparent)`), so the cast views the same bytes as the inner payload.
    let inner = unsafe { &mut *slot.as_mut_ptr().cast::<std::mem::MaybeUninit<P>>() };
    payload::write_uninit(inner, stamp);
    // SAFETY: `write_uninit` wrote every byte of the payload.
    let sample = unsafe { sample.assume_init() };
    sample.send().map_err(err)?;
    Ok(())
}

/// Polls until a sample arrives (`spin_loop` between polls) and applies `f` to it in place.
#[inline(always)]
fn recv<P: bytemuck::Pod, R>(rx: &Sub<P>, mut f: impl FnMut(&P) -> R) -> Result<R, Error> {
    loop {
        if let Some(sample) = rx.receive().map_err(err)? {
            let s: &Sample<ipc::Service, Shared<P>, ()> = &sample;
            return Ok(f(&s.payload().0));
        }
        spin_loop();
    }
}

fn spawn(args: &[String]) -> Result<Child, Error> {
    Ok(Command::new(std::env::current_exe()?)
        .arg(super::ipc::CHILD_FLAG)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?)
}

/// The parent's half of the handshake (see the module docs): waits for the child's publisher,
/// attaches `rx` to it, lets the child go.
fn handshake<P: bytemuck::Pod>(child: &mut Child, rx: &Sub<P>) -> Result<(), Error> {
    let mut line = String::new();
    let out = child
        .stdout
        .as_mut()
        .ok_or("iceoryx2 bench child: no stdout")?;
    std::io::BufReader::new(out).read_line(&mut line)?;
    if line.trim() != "ready" {
        return Err(format!("iceoryx2 bench child: expected ready, got {line:?}").into());
    }
    rx.has_samples().map_err(err)?;
    let stdin = child
        .stdin
        .as_mut()
        .ok_or("iceoryx2 bench child: no stdin")?;
    stdin.write_all(b"go\n")?;
    stdin.flush()?;
    Ok(())
}

/// The child's half of the handshake: `tx` exists and is connected; say so, wait for `go`.
fn ready<P: bytemuck::Pod>(tx: &Pub<P>) -> Result<(), Error> {
    tx.update_connections().map_err(err)?;
    let mut out = std::io::stdout().lock();
    out.write_all(b"ready\n")?;
    out.flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if line.trim() != "go" {
        return Err(format!("iceoryx2 bench child: expected go, got {line:?}").into());
    }
    Ok(())
}

/// Closes the child's stdin (its signal to drop its ports and exit) and waits for it.
fn finish(mut child: Child) -> Result<(), Error> {
    drop(child.stdin.take());
    let status = child.wait()?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("iceoryx2 bench child process failed: {status}").into())
    }
}

/// Streams `warmup` then `count` messages from a child process.
pub fn throughput<P: bytemuck::Pod + Send>(
    s: &Setup,
    count: u64,
    warmup: u64,
) -> Result<Throughput, Error> {
    on_thread(|| throughput_here::<P>(s, count, warmup))
}

fn throughput_here<P: bytemuck::Pod>(
    s: &Setup,
    count: u64,
    warmup: u64,
) -> Result<Throughput, Error> {
    let name = unique_name("thr");
    let node = node()?;
    let svc = service::<P>(&node, &name, s.capacity, true)?;
    let rx = subscriber::<P>(&svc, s.capacity)?;
    let total = warmup + count;
    let mut child = spawn(&[
        "ice-thr".into(),
        size_of::<P>().to_string(),
        name,
        total.to_string(),
        s.cpus.0.to_string(),
        s.capacity.to_string(),
    ])?;
    handshake(&mut child, &rx)?;
    pin_to_cpu(s.cpus.1)?;
    let result = receive_stream(warmup, count, || recv(&rx, payload::read));
    finish(child)?;
    result
}

/// Unloaded one-way latency from a child process, stamped with the TSC; `None` when the clock
/// is not the TSC.
pub fn one_way<P: bytemuck::Pod + Send>(
    s: &Setup,
    samples: usize,
    warmup: usize,
    pace_ns: f64,
) -> Result<Option<Latency>, Error> {
    if !matches!(s.clock.source(), Source::Tsc) {
        return Ok(None);
    }
    on_thread(|| one_way_here::<P>(s, samples, warmup, pace_ns)).map(Some)
}

fn one_way_here<P: bytemuck::Pod>(
    s: &Setup,
    samples: usize,
    warmup: usize,
    pace_ns: f64,
) -> Result<Latency, Error> {
    let name = unique_name("ow");
    let node = node()?;
    let svc = service::<P>(&node, &name, s.capacity, true)?;
    let rx = subscriber::<P>(&svc, s.capacity)?;
    let total = warmup + samples;
    let mut child = spawn(&[
        "ice-ow".into(),
        size_of::<P>().to_string(),
        name,
        total.to_string(),
        s.cpus.0.to_string(),
        s.capacity.to_string(),
        s.clock.ns_to_ticks(pace_ns).to_string(),
    ])?;
    handshake(&mut child, &rx)?;
    pin_to_cpu(s.cpus.1)?;
    let clock = s.clock;
    let result = one_way_samples(&clock, warmup, samples, || {
        recv(&rx, |p| (clock.now(), payload::read(p)))
    });
    finish(child)?;
    result
}

/// Round trips through two services to a child process that echoes every message.
pub fn round_trip<P: bytemuck::Pod + Send>(
    s: &Setup,
    samples: usize,
    warmup: usize,
) -> Result<Latency, Error> {
    on_thread(|| round_trip_here::<P>(s, samples, warmup))
}

fn round_trip_here<P: bytemuck::Pod>(
    s: &Setup,
    samples: usize,
    warmup: usize,
) -> Result<Latency, Error> {
    let (out_name, back_name) = (unique_name("rt-out"), unique_name("rt-back"));
    let node = node()?;
    let out = service::<P>(&node, &out_name, s.capacity, true)?;
    let back = service::<P>(&node, &back_name, s.capacity, true)?;
    let tx = publisher::<P>(&out)?;
    let rx = subscriber::<P>(&back, s.capacity)?;
    let total = warmup + samples;
    let child = spawn(&[
        "ice-rt".into(),
        size_of::<P>().to_string(),
        out_name,
        total.to_string(),
        s.cpus.1.to_string(),
        s.capacity.to_string(),
        back_name,
    ])?;
    pin_to_cpu(s.cpus.0)?;
    let clock = s.clock;
    let result = (|| -> Result<Latency, Error> {
        // The child says it is subscribed (a message on the way back) before the first send:
        // a sample sent before its subscriber exists reaches no one.
        recv(&rx, |_| ())?;
        let mut lat = Latency::default();
        let mut ticks = Vec::with_capacity(samples);
        for i in 0..total {
            let t0 = clock.now();
            send(&tx, t0)?;
            let (t1, (stamp, ok)) = recv(&rx, |p| (clock.now(), payload::read(p)))?;
            lat.bad += u64::from(!ok || stamp != t0);
            if i >= warmup {
                ticks.push(t1.saturating_sub(t0));
            }
        }
        lat.ns = ticks_to_ns(&clock, &ticks);
        Ok(lat)
    })();
    finish(child)?;
    result
}

/// Runs `f` on a thread of its own (pinned by `f`): iceoryx2's `ipc` ports stay on the thread
/// that made them, and pinning the bench's main thread would outlast the row.
fn on_thread<R: Send>(f: impl FnOnce() -> Result<R, Error> + Send) -> Result<R, Error> {
    std::thread::scope(|sc| sc.spawn(f).join()).map_err(|_| "iceoryx2 bench thread panicked")?
}

/// Blocks until the parent closes stdin.
fn linger() -> Result<(), Error> {
    let mut sink = Vec::new();
    std::io::stdin().read_to_end(&mut sink)?;
    Ok(())
}

/// Runs the child side: `MODE SIZE NAME COUNT CPU CAPACITY [PACE_TICKS | BACK_NAME]`.
pub fn child_main(args: &[String]) -> Result<(), Error> {
    psyne_examples::iceoryx::quiet();
    match args.get(1).map(String::as_str) {
        Some("64") => child::<Words<16>>(args),
        Some("1032") => child::<Embedding256>(args),
        other => Err(format!("iceoryx2 cross-process row: unsupported size {other:?}").into()),
    }
}

fn child<P: bytemuck::Pod>(args: &[String]) -> Result<(), Error> {
    let arg = |i: usize| -> Result<&str, Error> {
        args.get(i)
            .map(String::as_str)
            .ok_or_else(|| format!("iceoryx2 bench child: missing argument {i}").into())
    };
    let name = arg(2)?;
    let total: u64 = arg(3)?.parse()?;
    pin_to_cpu(arg(4)?.parse()?)?;
    let capacity: usize = arg(5)?.parse()?;
    let node = node()?;
    let svc = service::<P>(&node, name, capacity, false)?;
    // Every arm holds its ports until the parent closes stdin (see the module docs).
    match arg(0)? {
        "ice-thr" => {
            let tx = publisher::<P>(&svc)?;
            ready(&tx)?;
            for seq in 0..total {
                send(&tx, seq)?;
            }
            linger()
        }
        "ice-ow" => {
            let tx = publisher::<P>(&svc)?;
            ready(&tx)?;
            let pace: u64 = arg(6)?.parse()?;
            let clock = Clock::tsc();
            let mut next = clock.now();
            for _ in 0..total {
                while clock.now() < next {
                    spin_loop();
                }
                let t0 = clock.now();
                send(&tx, t0)?;
                next = t0 + pace;
            }
            linger()
        }
        "ice-rt" => {
            let rx = subscriber::<P>(&svc, capacity)?;
            let back = service::<P>(&node, arg(6)?, capacity, false)?;
            let tx = publisher::<P>(&back)?;
            send(&tx, 0)?;
            for _ in 0..total {
                let (stamp, _) = recv(&rx, payload::read)?;
                send(&tx, stamp)?;
            }
            linger()
        }
        mode => Err(format!("iceoryx2 bench child: unknown mode {mode}").into()),
    }
}
