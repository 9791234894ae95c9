//! The measurement loops. Each run makes a fresh channel, starts a producer and a consumer
//! thread pinned to the two CPUs, warms up, then measures. Every loop waits the same way (try,
//! then `spin_loop`; for Psyne's consumer that loop runs inside its blocking `recv`), so
//! contenders differ only in the channel.

use super::links::{Error, Link};
use super::payload;
use bytemuck::Pod;
use crossbeam_utils::CachePadded;
use psyne_examples::affinity::pin_to_cpu;
use psyne_examples::alloc::thread_allocations;
use psyne_examples::timer::Clock;
use std::hint::spin_loop;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// What every run shares.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    /// Producer's CPU, consumer's CPU.
    pub cpus: (usize, usize),
    /// Messages each channel holds (the same for every contender).
    pub capacity: usize,
    /// Timestamp source for latencies.
    pub clock: Clock,
}

/// One streaming-throughput repetition.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    /// Messages timed.
    pub msgs: u64,
    /// From the producer's first timed send to the consumer's last receive.
    pub elapsed_ns: f64,
    /// Heap allocations by both threads during the timed part.
    pub allocs: u64,
    /// Messages whose content or order was wrong (must be 0).
    pub bad: u64,
}

/// The receiving side of a cross-process throughput repetition: `warmup` untimed messages, then
/// `count` timed ones, each taken by `next` as (stamp, payload intact). A message whose stamp is
/// not the next sequence number, or whose payload fails its check, counts as bad; the timed
/// loop's heap allocations (this thread's) are counted too.
pub fn receive_stream(
    warmup: u64,
    count: u64,
    mut next: impl FnMut() -> Result<(u64, bool), Error>,
) -> Result<Throughput, Error> {
    let mut bad = 0;
    for expect in 0..warmup {
        let (stamp, ok) = next()?;
        bad += u64::from(!ok || stamp != expect);
    }
    let a0 = thread_allocations();
    let t0 = std::time::Instant::now();
    for expect in warmup..warmup + count {
        let (stamp, ok) = next()?;
        bad += u64::from(!ok || stamp != expect);
    }
    let elapsed_ns = t0.elapsed().as_nanos() as f64;
    Ok(Throughput {
        msgs: count,
        elapsed_ns,
        allocs: thread_allocations() - a0,
        bad,
    })
}

/// One latency repetition: samples in nanoseconds.
#[derive(Debug, Clone, Default)]
pub struct Latency {
    /// One sample per message (one-way) or per round trip.
    pub ns: Vec<u64>,
    /// Messages whose content or order was wrong (must be 0).
    pub bad: u64,
    /// Samples where the consumer's clock read earlier than the producer's (clamped to 0).
    pub negative: u64,
}

/// The consumer side of a one-way measurement, shared by the in-process and cross-process
/// rows so that both count alike: `warmup + samples` messages from `next` (the consumer's clock
/// read on arrival, then the stamp and checksum verdict of [`payload::read`]); the first
/// `warmup` are checked but not timed.
pub fn one_way_samples<E>(
    clock: &Clock,
    warmup: usize,
    samples: usize,
    mut next: impl FnMut() -> Result<(u64, (u64, bool)), E>,
) -> Result<Latency, E> {
    let mut lat = Latency::default();
    let mut ticks = Vec::with_capacity(samples);
    let mut last = 0;
    for i in 0..warmup + samples {
        let (t1, (stamp, ok)) = next()?;
        lat.bad += u64::from(!ok || stamp <= last);
        last = stamp;
        if i >= warmup {
            lat.negative += u64::from(t1 < stamp);
            ticks.push(t1.saturating_sub(stamp));
        }
    }
    lat.ns = ticks_to_ns(clock, &ticks);
    Ok(lat)
}

/// Latency samples in whole nanoseconds from tick counts of `clock`.
pub fn ticks_to_ns(clock: &Clock, ticks: &[u64]) -> Vec<u64> {
    ticks
        .iter()
        .map(|&t| clock.ticks_to_ns(t).round() as u64)
        .collect()
}

fn pin(cpu: usize) -> Result<(), Error> {
    pin_to_cpu(cpu).map_err(|e| format!("pinning to CPU {cpu}: {e}").into())
}

#[inline(always)]
fn send<P: Pod, L: Link<P>>(tx: &mut L::Tx, stamp: u64) {
    while !L::try_send(tx, stamp) {
        spin_loop();
    }
}

#[inline(always)]
fn recv<P: Pod, L: Link<P>, R>(rx: &mut L::Rx, f: impl FnMut(&P) -> R) -> R {
    L::recv(rx, f)
}

/// Streams `warmup` then `count` messages as fast as the channel allows.
pub fn throughput<P: Pod, L: Link<P>>(
    s: &Setup,
    count: u64,
    warmup: u64,
) -> Result<Throughput, Error> {
    let (mut tx, mut rx) = L::channel(s.capacity)?;
    let barrier = Barrier::new(2);
    let total = warmup + count;
    let (prod, cons) = std::thread::scope(|sc| {
        let prod = sc.spawn(|| -> Result<(Instant, u64), Error> {
            let pinned = pin(s.cpus.0);
            for seq in 0..warmup {
                send::<P, L>(&mut tx, seq);
            }
            barrier.wait();
            let a0 = thread_allocations();
            let t0 = Instant::now();
            for seq in warmup..total {
                send::<P, L>(&mut tx, seq);
            }
            let allocs = thread_allocations() - a0;
            pinned.map(|()| (t0, allocs))
        });
        let cons = sc.spawn(|| -> Result<(Instant, u64, u64), Error> {
            let pinned = pin(s.cpus.1);
            let mut bad = 0;
            for expect in 0..warmup {
                let (stamp, ok) = recv::<P, L, _>(&mut rx, payload::read);
                bad += u64::from(!ok || stamp != expect);
            }
            barrier.wait();
            let a0 = thread_allocations();
            for expect in warmup..total {
                let (stamp, ok) = recv::<P, L, _>(&mut rx, payload::read);
                bad += u64::from(!ok || stamp != expect);
            }
            let t1 = Instant::now();
            let allocs = thread_allocations() - a0;
            pinned.map(|()| (t1, allocs, bad))
        });
        (prod.join(), cons.join())
    });
    let (t0, pa) = prod.map_err(|_| "producer panicked")??;
    let (t1, ca, bad) = cons.map_err(|_| "consumer panicked")??;
    Ok(Throughput {
        msgs: count,
        elapsed_ns: (t1 - t0).as_nanos() as f64,
        allocs: pa + ca,
        bad,
    })
}

/// Unloaded one-way latency: the producer sends one message every `pace_ns`, stamped with the
/// clock read just before it starts writing; the consumer reads the clock as soon as it has the
/// message (before reading the payload). `warmup` messages are discarded first.
pub fn one_way<P: Pod, L: Link<P>>(
    s: &Setup,
    samples: usize,
    warmup: usize,
    pace_ns: f64,
) -> Result<Latency, Error> {
    let (mut tx, mut rx) = L::channel(s.capacity)?;
    let clock = s.clock;
    let pace = clock.ns_to_ticks(pace_ns);
    let barrier = Barrier::new(2);
    let (prod, cons) = std::thread::scope(|sc| {
        let prod = sc.spawn(|| -> Result<(), Error> {
            let pinned = pin(s.cpus.0);
            barrier.wait();
            let mut next = clock.now();
            for _ in 0..warmup + samples {
                while clock.now() < next {
                    spin_loop();
                }
                let t0 = clock.now();
                send::<P, L>(&mut tx, t0);
                next = t0 + pace;
            }
            pinned
        });
        let cons = sc.spawn(|| -> Result<Latency, Error> {
            let pinned = pin(s.cpus.1);
            barrier.wait();
            let lat = one_way_samples(&clock, warmup, samples, || {
                Ok::<_, Error>(recv::<P, L, _>(&mut rx, |p| {
                    (clock.now(), payload::read(p))
                }))
            })?;
            pinned.map(|()| lat)
        });
        (prod.join(), cons.join())
    });
    prod.map_err(|_| "producer panicked")??;
    cons.map_err(|_| "consumer panicked")?
}

/// Round trips through two channels: A stamps and sends a message, B reads it whole and sends
/// a whole message back with the same stamp, A reads the clock when the reply arrives (before
/// reading it). A single clock, so no cross-CPU clock offset.
pub fn round_trip<P: Pod, L: Link<P>>(
    s: &Setup,
    samples: usize,
    warmup: usize,
) -> Result<Latency, Error> {
    let (mut tx1, mut rx1) = L::channel(s.capacity)?;
    let (mut tx2, mut rx2) = L::channel(s.capacity)?;
    let clock = s.clock;
    let barrier = Barrier::new(2);
    let (a, b) = std::thread::scope(|sc| {
        let a = sc.spawn(|| -> Result<Latency, Error> {
            let pinned = pin(s.cpus.0);
            barrier.wait();
            let mut lat = Latency::default();
            let mut ticks = Vec::with_capacity(samples);
            for i in 0..warmup + samples {
                let t0 = clock.now();
                send::<P, L>(&mut tx1, t0);
                let (t1, (stamp, ok)) =
                    recv::<P, L, _>(&mut rx2, |p| (clock.now(), payload::read(p)));
                lat.bad += u64::from(!ok || stamp != t0);
                if i >= warmup {
                    ticks.push(t1 - t0);
                }
            }
            lat.ns = ticks_to_ns(&clock, &ticks);
            pinned.map(|()| lat)
        });
        let b = sc.spawn(|| -> Result<u64, Error> {
            let pinned = pin(s.cpus.1);
            barrier.wait();
            let mut bad = 0;
            for _ in 0..warmup + samples {
                let (stamp, ok) = recv::<P, L, _>(&mut rx1, payload::read);
                bad += u64::from(!ok);
                send::<P, L>(&mut tx2, stamp);
            }
            pinned.map(|()| bad)
        });
        (a.join(), b.join())
    });
    let mut lat = a.map_err(|_| "thread A panicked")??;
    lat.bad += b.map_err(|_| "thread B panicked")??;
    Ok(lat)
}

/// The one-way floor: a single padded cache line carrying the producer's timestamp, paced,
/// pinned and timed exactly like [`one_way`] (same clock reads, same spin loop).
pub fn floor_one_way(
    s: &Setup,
    samples: usize,
    warmup: usize,
    pace_ns: f64,
) -> Result<Latency, Error> {
    let line = CachePadded::new(AtomicU64::new(0));
    let clock = s.clock;
    let barrier = Barrier::new(2);
    let pace = clock.ns_to_ticks(pace_ns);
    let n = warmup + samples;
    let (prod, cons) = std::thread::scope(|sc| {
        let prod = sc.spawn(|| -> Result<(), Error> {
            let pinned = pin(s.cpus.0);
            barrier.wait();
            let mut next = clock.now();
            for _ in 0..n {
                while clock.now() < next {
                    spin_loop();
                }
                let t0 = clock.now();
                line.store(t0, Ordering::Release);
                next = t0 + pace;
            }
            // In case the consumer missed an update, end with a value it cannot miss.
            while clock.now() < next {
                spin_loop();
            }
            line.store(u64::MAX, Ordering::Release);
            pinned
        });
        let cons = sc.spawn(|| -> Result<Latency, Error> {
            let pinned = pin(s.cpus.1);
            barrier.wait();
            let mut lat = Latency::default();
            let mut ticks = Vec::with_capacity(samples);
            let mut last = 0;
            let mut seen = 0;
            loop {
                let stamp = loop {
                    let v = line.load(Ordering::Acquire);
                    if v != last {
                        break v;
                    }
                    spin_loop();
                };
                let t1 = clock.now();
                if stamp == u64::MAX {
                    break;
                }
                last = stamp;
                seen += 1;
                if seen > warmup && ticks.len() < samples {
                    lat.negative += u64::from(t1 < stamp);
                    ticks.push(t1.saturating_sub(stamp));
                }
            }
            lat.bad = (n - seen) as u64; // updates overwritten before the consumer saw them
            lat.ns = ticks_to_ns(&clock, &ticks);
            pinned.map(|()| lat)
        });
        (prod.join(), cons.join())
    });
    prod.map_err(|_| "producer panicked")??;
    cons.map_err(|_| "consumer panicked")?
}

/// The round-trip floor: one padded cache line bounced between the two CPUs (A writes an odd
/// value, B answers with the next even one). Samples are full round trips.
pub fn floor_ping_pong(s: &Setup, samples: usize, warmup: usize) -> Result<Latency, Error> {
    let line = CachePadded::new(AtomicU64::new(0));
    let clock = s.clock;
    let barrier = Barrier::new(2);
    let n = (warmup + samples) as u64;
    let (a, b) = std::thread::scope(|sc| {
        let a = sc.spawn(|| -> Result<Latency, Error> {
            let pinned = pin(s.cpus.0);
            barrier.wait();
            let mut lat = Latency::default();
            let mut ticks = Vec::with_capacity(samples);
            for k in 0..n {
                let t0 = clock.now();
                line.store(2 * k + 1, Ordering::Release);
                while line.load(Ordering::Acquire) != 2 * k + 2 {
                    spin_loop();
                }
                let t1 = clock.now();
                if k >= warmup as u64 {
                    ticks.push(t1 - t0);
                }
            }
            lat.ns = ticks_to_ns(&clock, &ticks);
            pinned.map(|()| lat)
        });
        let b = sc.spawn(|| -> Result<(), Error> {
            let pinned = pin(s.cpus.1);
            barrier.wait();
            for k in 0..n {
                while line.load(Ordering::Acquire) != 2 * k + 1 {
                    spin_loop();
                }
                line.store(2 * k + 2, Ordering::Release);
            }
            pinned
        });
        (a.join(), b.join())
    });
    b.map_err(|_| "thread B panicked")??;
    a.map_err(|_| "thread A panicked")?
}
