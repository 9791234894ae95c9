//! The cross-process row: Psyne's shared-memory channel with the producer in a second process.
//!
//! The bench re-executes itself as `psyne_bench --ipc-child MODE SIZE ...` to run the other end;
//! the payload work, pinning and spin loop are the same as for the in-process rows. Differences,
//! stated in the table's notes:
//! - streaming throughput is timed by the consumer alone, from the receipt of the last warm-up
//!   message to the receipt of the last message (the ring is full throughout, so this is the
//!   sustained rate); heap allocations are counted in the parent's consumer only;
//! - one-way latency needs a clock both processes read alike: the invariant TSC (the phase is
//!   skipped with `--timer instant`);
//! - round trips are timed by the parent alone, as in-process.

use super::links::Error;
use super::payload::{self, Embedding256, Words};
use super::run::{Latency, Setup, Throughput, one_way_samples, receive_stream, ticks_to_ns};
use psyne::{Channel, Consumer, Message, Producer, SendError, Wait};
use psyne_examples::affinity::pin_to_cpu;
use psyne_examples::timer::{Clock, Source};
use std::hint::spin_loop;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The first argument that makes `psyne_bench` run as the other end of a cross-process row.
pub const CHILD_FLAG: &str = "--ipc-child";

/// Name in tables.
pub const NAME: &str = "Psyne 2 procs";
/// How the payload travels.
pub const HOW: &str = "zero-copy, shm";

fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "psyne-bench-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn spawn(args: &[String]) -> Result<Child, Error> {
    Ok(Command::new(std::env::current_exe()?)
        .arg(CHILD_FLAG)
        .args(args)
        .stdin(Stdio::null())
        .spawn()?)
}

fn finish(mut child: Child) -> Result<(), Error> {
    let status = child.wait()?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("bench child process failed: {status}").into())
    }
}

#[inline(always)]
fn send<P: Message>(tx: &mut Producer<P>, stamp: u64) -> Result<(), Error> {
    loop {
        match tx.try_allocate() {
            Ok(mut loan) => {
                payload::write(&mut *loan, stamp);
                loan.send();
                return Ok(());
            }
            Err(SendError::Full) => spin_loop(),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Psyne's blocking receive (`BusySpin`: try, then `spin_loop`, inside the library), as in the
/// in-process rows.
#[inline(always)]
fn recv<P: Message, R>(rx: &mut Consumer<P>, mut f: impl FnMut(&P) -> R) -> Result<R, Error> {
    Ok(f(&*rx.recv()?))
}

fn consumer<P: Message>(s: &Setup, name: &str) -> Result<Consumer<P>, Error> {
    Ok(Channel::<P>::builder()
        .capacity(s.capacity)
        .wait(Wait::BusySpin)
        .shared(name)
        .create_consumer()?)
}

/// Streams `warmup` then `count` messages from a child process.
pub fn throughput<P: Message + Send>(
    s: &Setup,
    count: u64,
    warmup: u64,
) -> Result<Throughput, Error> {
    let name = unique("thr");
    let mut rx = consumer::<P>(s, &name)?;
    let total = warmup + count;
    let child = spawn(&[
        "thr".into(),
        size_of::<P>().to_string(),
        name,
        total.to_string(),
        s.cpus.0.to_string(),
    ])?;
    let cpu = s.cpus.1;
    let result = std::thread::scope(|sc| {
        sc.spawn(|| -> Result<Throughput, Error> {
            pin_to_cpu(cpu)?;
            receive_stream(warmup, count, || recv(&mut rx, payload::read))
        })
        .join()
    });
    finish(child)?;
    result.map_err(|_| "consumer panicked")?
}

/// Unloaded one-way latency from a child process, stamped with the TSC (comparable across
/// processes); `None` when the clock is not the TSC.
pub fn one_way<P: Message + Send>(
    s: &Setup,
    samples: usize,
    warmup: usize,
    pace_ns: f64,
) -> Result<Option<Latency>, Error> {
    if !matches!(s.clock.source(), Source::Tsc) {
        return Ok(None);
    }
    let name = unique("ow");
    let mut rx = consumer::<P>(s, &name)?;
    let total = warmup + samples;
    let child = spawn(&[
        "ow".into(),
        size_of::<P>().to_string(),
        name,
        total.to_string(),
        s.cpus.0.to_string(),
        s.clock.ns_to_ticks(pace_ns).to_string(),
    ])?;
    let (cpu, clock) = (s.cpus.1, s.clock);
    let result = std::thread::scope(|sc| {
        sc.spawn(|| -> Result<Latency, Error> {
            pin_to_cpu(cpu)?;
            one_way_samples(&clock, warmup, samples, || {
                recv(&mut rx, |p| (clock.now(), payload::read(p)))
            })
        })
        .join()
    });
    finish(child)?;
    result.map_err(|_| "consumer panicked")?.map(Some)
}

/// Round trips through two shared channels to a child process that echoes every message.
pub fn round_trip<P: Message + Send>(
    s: &Setup,
    samples: usize,
    warmup: usize,
) -> Result<Latency, Error> {
    let (out_name, back_name) = (unique("rt-out"), unique("rt-back"));
    let mut tx = Channel::<P>::builder()
        .capacity(s.capacity)
        .wait(Wait::BusySpin)
        .shared(&out_name)
        .create_producer()?;
    let mut rx = consumer::<P>(s, &back_name)?;
    let total = warmup + samples;
    let child = spawn(&[
        "rt".into(),
        size_of::<P>().to_string(),
        out_name,
        total.to_string(),
        s.cpus.1.to_string(),
        back_name,
    ])?;
    let (cpu, clock) = (s.cpus.0, s.clock);
    let result = std::thread::scope(|sc| {
        sc.spawn(|| -> Result<Latency, Error> {
            pin_to_cpu(cpu)?;
            let mut lat = Latency::default();
            let mut ticks = Vec::with_capacity(samples);
            for i in 0..total {
                let t0 = clock.now();
                send(&mut tx, t0)?;
                let (t1, (stamp, ok)) = recv(&mut rx, |p| (clock.now(), payload::read(p)))?;
                lat.bad += u64::from(!ok || stamp != t0);
                if i >= warmup {
                    ticks.push(t1.saturating_sub(t0));
                }
            }
            lat.ns = ticks_to_ns(&clock, &ticks);
            Ok(lat)
        })
        .join()
    });
    finish(child)?;
    result.map_err(|_| "round-trip thread panicked")?
}

/// Runs the child side: `MODE SIZE NAME COUNT CPU [PACE_TICKS | BACK_NAME]`.
pub fn child_main(args: &[String]) -> Result<(), Error> {
    #[cfg(feature = "iceoryx2")]
    if args.first().is_some_and(|mode| mode.starts_with("ice-")) {
        return super::ice::child_main(args);
    }
    match args.get(1).map(String::as_str) {
        Some("64") => child::<Words<16>>(args),
        Some("1032") => child::<Embedding256>(args),
        other => Err(format!("cross-process row: unsupported size {other:?}").into()),
    }
}

fn child<P: Message>(args: &[String]) -> Result<(), Error> {
    let arg = |i: usize| -> Result<&str, Error> {
        args.get(i)
            .map(String::as_str)
            .ok_or_else(|| format!("bench child: missing argument {i}").into())
    };
    let name = arg(2)?;
    let total: u64 = arg(3)?.parse()?;
    pin_to_cpu(arg(4)?.parse()?)?;
    match arg(0)? {
        "thr" => {
            let mut tx = Channel::<P>::open_producer(name)?;
            for seq in 0..total {
                send(&mut tx, seq)?;
            }
        }
        "ow" => {
            let mut tx = Channel::<P>::open_producer(name)?;
            let pace: u64 = arg(5)?.parse()?;
            let clock = Clock::tsc();
            let mut next = clock.now();
            for _ in 0..total {
                while clock.now() < next {
                    spin_loop();
                }
                let t0 = clock.now();
                send(&mut tx, t0)?;
                next = t0 + pace;
            }
        }
        "rt" => {
            let mut rx = Channel::<P>::open_consumer(name)?;
            let mut tx = Channel::<P>::open_producer(arg(5)?)?;
            for _ in 0..total {
                let (stamp, _) = recv(&mut rx, payload::read)?;
                send(&mut tx, stamp)?;
            }
        }
        mode => return Err(format!("bench child: unknown mode {mode}").into()),
    }
    // Linger until the parent has read everything: the producer's drop would otherwise be
    // reported to it only after the ring drained, which it does anyway; nothing else to wait for.
    Ok(())
}
