//! Broadcast benchmark, all contenders in the same run: Psyne's broadcast channel to 1, 2 and 3
//! consumers vs `tokio::sync::broadcast` carrying an `Arc` of the payload (tokio clones each
//! value per receiver; an `Arc` makes that clone a reference-count increment, which is the
//! fair way to send a large payload through it; the producer still allocates and fills one
//! `Arc` per message). Payloads: `Embedding256` (1032 bytes) and 64 KiB. Every consumer reads
//! the whole payload (sums its words).
//!
//! * **throughput**: messages per second from the first send until the slowest consumer has
//!   read the last message (median of `--reps` repetitions, contenders interleaved within each
//!   repetition). tokio's sender never waits (a slow receiver loses messages: `Lagged`), so
//!   its producer is held to at most the channel's capacity ahead of the slowest receiver by
//!   counters the receivers bump (the same backpressure Psyne's `Block` gives);
//! * **latency**: one-way, send to the *slowest* consumer's receive, one message in flight at a
//!   time (p50 / p99 over `--pings` messages). Both contenders wait the same way: Psyne's ends
//!   spin 64 polls then yield (up to 2^20 times before parking), tokio's receivers poll
//!   `try_recv` and yield between polls (with the default wait, Psyne's ends park and pay a
//!   futex wake-up per message when oversubscribed: measured 0.35x tokio at Embedding256). on a 2-vCPU machine a
//!   producer and 2-3 busy-spinning consumers oversubscribe the cores and every figure
//!   collapses to scheduler time slices (measured: milliseconds).
//!
//! * **iceoryx2** (with `--features iceoryx2`, which needs libclang-dev for its bindgen build;
//!   without it the row is skipped and the bench says so): publish-subscribe over its `ipc`
//!   service (POSIX shared memory, as iceoryx2 is used), one subscriber per consumer thread, each
//!   with its own node. Configured like Psyne's ring: a subscriber buffer as deep as Psyne's
//!   capacity, no history, one publisher, and *no* safe overflow with the publisher's
//!   `RetryUntilDelivered` backpressure, so a full subscriber makes the publisher wait, as Psyne's
//!   `Block` does (safe overflow would drop the oldest sample instead, which Psyne's default never
//!   does). The publisher loans a sample (`loan_uninit`), writes the same stamp words Psyne's
//!   producer writes into its slot, and sends; subscribers poll `receive` and yield between
//!   polls, as tokio's receivers do;
//! * **producer alone**: the producer's own time per message with 1, 2 and 3 consumers, on one
//!   thread (bursts of `capacity` sends, timed, then every consumer drains the burst, untimed),
//!   so the figure is the cost of sending plus the release bookkeeping, without time slices.
//!
//! Run with `cargo run --release --example broadcast_bench -- [--messages N] [--reps R]
//! [--pings P]`.
//!
//! # Measured
//!
//! BENCHMARKS.md ("Broadcast") has the figures with iceoryx2 beside Psyne and tokio, and the
//! targets. In short, on the 2-vCPU VM shared with other builds (load 5-6): with 2-3 consumers
//! plus the producer on two cores the throughput figures are scheduler-bound and swing 2-5x
//! between runs (2 consumers, Embedding256: Psyne/tokio 0.88-4.09x, Psyne/iceoryx2
//! 0.76-1.48x); the producer alone costs 15-20 ns per message with 1, 2 or 3 consumers
//! (1.05-1.24x, target <= 1.5x), iceoryx2's publisher 200-550 ns.

use psyne::{Channel, PsyneMessage, Wait};
use psyne_schemas::Embedding256;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A 64 KiB payload.
#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Blob64K {
    words: [u64; 8192],
}

/// A payload the bench can stamp and read whole.
trait Payload: psyne::Message + Send + Sync + 'static {
    const LABEL: &'static str;
    /// Writes `stamp` everywhere it is checked.
    fn stamp(&mut self, stamp: u64);
    /// Reads every byte; returns the stamp and a sum of the words.
    fn read(&self) -> (u64, u64);
}

impl Payload for Embedding256 {
    const LABEL: &'static str = "Embedding256";
    fn stamp(&mut self, stamp: u64) {
        self.data[0] = f32::from_bits(stamp as u32);
        self.data[1] = f32::from_bits((stamp >> 32) as u32);
        self.data[255] = 1.0;
    }
    fn read(&self) -> (u64, u64) {
        let words: &[u32] = psyne::bytemuck::cast_slice(&self.data);
        let sum = words
            .iter()
            .fold(0u64, |s, &w| s.wrapping_add(u64::from(w)));
        (
            u64::from(self.data[0].to_bits()) | u64::from(self.data[1].to_bits()) << 32,
            sum,
        )
    }
}

impl Payload for Blob64K {
    const LABEL: &'static str = "64 KiB";
    fn stamp(&mut self, stamp: u64) {
        self.words[0] = stamp;
        self.words[8191] = stamp;
    }
    fn read(&self) -> (u64, u64) {
        let sum = self.words.iter().fold(0u64, |s, &w| s.wrapping_add(w));
        (self.words[0], sum)
    }
}

fn zeroed<T: Payload>() -> Box<T> {
    Box::new(psyne::bytemuck::Zeroable::zeroed())
}

/// Psyne broadcast: (messages/s, latencies to the slowest consumer in ns).
fn psyne<T: Payload>(
    consumers: usize,
    messages: u64,
    capacity: usize,
    pings: u64,
) -> (f64, Vec<u64>) {
    let (mut tx, rx) = Channel::<T>::broadcast()
        .capacity(capacity)
        .max_consumers(consumers)
        .wait(Wait::SpinThenPark {
            spins: 64,
            yields: 1 << 20,
        })
        .build()
        .unwrap();
    let mut rxs = vec![rx];
    for _ in 1..consumers {
        rxs.push(tx.subscribe().unwrap());
    }
    let total = messages + pings;
    let acked = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = rxs
        .into_iter()
        .map(|mut rx| {
            let acked = Arc::clone(&acked);
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(pings as usize);
                let mut sink = 0u64;
                for i in 0..total {
                    let m = rx.recv().unwrap();
                    let (stamp, sum) = m.read();
                    sink = sink.wrapping_add(sum);
                    if i >= messages {
                        lat.push(psyne::channel::monotonic_ns().saturating_sub(stamp));
                        acked.fetch_add(1, Ordering::Release);
                    }
                }
                std::hint::black_box(sink);
                lat
            })
        })
        .collect();
    let start = Instant::now();
    for _ in 0..messages {
        let mut m = tx.allocate().unwrap();
        m.stamp(0);
        m.send();
    }
    // Throughput ends when every consumer has read the last message: the first ping is only
    // sent once they have (the ring is empty again).
    while tx.try_allocate().is_err() {
        std::hint::spin_loop();
    }
    let mut elapsed = start.elapsed();
    for i in 0..pings {
        let target = i * consumers as u64;
        while acked.load(Ordering::Acquire) < target {
            backoff();
        }
        if i == 0 {
            elapsed = start.elapsed();
        }
        let mut m = tx.allocate().unwrap();
        m.stamp(psyne::channel::monotonic_ns());
        m.send();
    }
    let lats: Vec<Vec<u64>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    (messages as f64 / elapsed.as_secs_f64(), slowest(&lats))
}

/// tokio::sync::broadcast of `Arc<T>`, held to `capacity` ahead of the slowest receiver.
fn tokio<T: Payload>(
    consumers: usize,
    messages: u64,
    capacity: usize,
    pings: u64,
) -> (f64, Vec<u64>) {
    let (tx, _) = tokio::sync::broadcast::channel::<Arc<T>>(capacity);
    let total = messages + pings;
    let counts: Arc<Vec<AtomicU64>> = Arc::new((0..consumers).map(|_| AtomicU64::new(0)).collect());
    let threads: Vec<_> = (0..consumers)
        .map(|c| {
            let mut rx = tx.subscribe();
            let counts = Arc::clone(&counts);
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(pings as usize);
                let mut sink = 0u64;
                for i in 0..total {
                    let m = loop {
                        match rx.try_recv() {
                            Ok(m) => break m,
                            Err(tokio::sync::broadcast::error::TryRecvError::Empty) => backoff(),
                            Err(e) => panic!("tokio receiver: {e}"),
                        }
                    };
                    let (stamp, sum) = m.read();
                    sink = sink.wrapping_add(sum);
                    if i >= messages {
                        lat.push(psyne::channel::monotonic_ns().saturating_sub(stamp));
                    }
                    counts[c].store(i + 1, Ordering::Release);
                }
                std::hint::black_box(sink);
                lat
            })
        })
        .collect();
    let slowest_count = |counts: &[AtomicU64]| {
        counts
            .iter()
            .map(|c| c.load(Ordering::Acquire))
            .min()
            .unwrap_or(0)
    };
    let start = Instant::now();
    for i in 0..messages {
        while slowest_count(&counts) + (capacity as u64) <= i {
            backoff();
        }
        let mut m = zeroed::<T>();
        m.stamp(0);
        tx.send(Arc::from(m)).ok();
    }
    while slowest_count(&counts) < messages {
        std::hint::spin_loop();
    }
    let elapsed = start.elapsed();
    for i in 0..pings {
        while slowest_count(&counts) < messages + i {
            backoff();
        }
        let mut m = zeroed::<T>();
        m.stamp(psyne::channel::monotonic_ns());
        tx.send(Arc::from(m)).ok();
    }
    let lats: Vec<Vec<u64>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    (messages as f64 / elapsed.as_secs_f64(), slowest(&lats))
}

/// What a waiting thread of the tokio contender and the bench's own waits do: yield (with
/// more threads than cores, a spinning waiter would hold the core its peer needs).
fn backoff() {
    std::thread::yield_now();
}

/// Per message, the largest latency over the consumers.
fn slowest(lats: &[Vec<u64>]) -> Vec<u64> {
    let n = lats.iter().map(Vec::len).min().unwrap_or(0);
    (0..n)
        .map(|i| lats.iter().map(|l| l[i]).max().unwrap_or(0))
        .collect()
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn row<T: Payload>(messages: u64, capacity: usize, reps: usize, pings: u64) {
    for consumers in 1..=3 {
        let (mut p_tp, mut t_tp, mut p_lat, mut t_lat) = (vec![], vec![], vec![], vec![]);
        // (filled only with the `iceoryx2` feature)
        #[cfg_attr(not(feature = "iceoryx2"), allow(unused_mut))]
        let (mut i_tp, mut i_lat): (Vec<f64>, Vec<u64>) = (vec![], vec![]);
        for _ in 0..reps {
            let (tp, lat) = psyne::<T>(consumers, messages, capacity, pings);
            p_tp.push(tp);
            p_lat.extend(lat);
            let (tp, lat) = tokio::<T>(consumers, messages, capacity, pings);
            t_tp.push(tp);
            t_lat.extend(lat);
            #[cfg(feature = "iceoryx2")]
            {
                let (tp, lat) = ice::run::<T>(consumers, messages, capacity, pings);
                i_tp.push(tp);
                i_lat.extend(lat);
            }
        }
        p_lat.sort_unstable();
        t_lat.sort_unstable();
        i_lat.sort_unstable();
        let (p, t) = (median(p_tp), median(t_tp));
        let ice = if i_tp.is_empty() {
            String::new()
        } else {
            let i = median(i_tp);
            format!(
                " | iceoryx2 {:>8.3} M msg/s (p50 {:>6} ns, p99 {:>7} ns) | psyne/iceoryx2 {:.2}x",
                i / 1e6,
                percentile(&i_lat, 0.5),
                percentile(&i_lat, 0.99),
                p / i,
            )
        };
        println!(
            "{:<13} {consumers} consumer(s): psyne {:>8.3} M msg/s (p50 {:>6} ns, p99 {:>7} ns) | \
             tokio+Arc {:>8.3} M msg/s (p50 {:>6} ns, p99 {:>7} ns) | psyne/tokio {:.2}x{ice}",
            T::LABEL,
            p / 1e6,
            percentile(&p_lat, 0.5),
            percentile(&p_lat, 0.99),
            t / 1e6,
            percentile(&t_lat, 0.5),
            percentile(&t_lat, 0.99),
            p / t,
        );
    }
}

/// What `--help` prints.
const USAGE: &str = "\
usage: broadcast_bench [--messages N] [--reps R] [--pings P]

Psyne broadcast to 1, 2 and 3 consumers against tokio::sync::broadcast (an Arc of the payload)
and, built with --features iceoryx2, iceoryx2 publish-subscribe; Embedding256 and 64 KiB.

  --messages N  messages per throughput repetition at Embedding256 (64 KiB: N / 16; 200000)
  --reps R      repetitions, contenders interleaved within each (3)
  --pings P     one-way latency samples at Embedding256 (64 KiB: P / 4; 2000)";

fn main() -> Result<(), psyne_examples::args::Error> {
    let args = psyne_examples::args::Args::parse(&["messages", "reps", "pings"], USAGE)?;
    let messages: u64 = args.value("messages", 200_000u64)?.max(1);
    let reps: usize = args.value("reps", 3usize)?.max(1);
    let pings: u64 = args.value("pings", 2_000u64)?.max(4);
    #[cfg(feature = "iceoryx2")]
    psyne_examples::iceoryx::quiet();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "broadcast_bench: {messages} messages (64 KiB: /16), {reps} reps, {pings} pings; \
         load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    row::<Embedding256>(messages, 64, reps, pings);
    row::<Blob64K>((messages / 16).max(1), 16, reps, pings / 4);
    let _ = Duration::ZERO;
    #[cfg(not(feature = "iceoryx2"))]
    println!(
        "iceoryx2 rows skipped: built without the `iceoryx2` feature \
         (cargo run --release --example broadcast_bench --features iceoryx2; needs libclang-dev)"
    );
    producer_alone::<Embedding256>(messages, 64);
    producer_alone::<Blob64K>((messages / 16).max(1), 16);
    Ok(())
}

/// Nanoseconds per message the producer spends on one thread: bursts of `capacity` sends
/// (timed), each followed by every consumer draining the burst (untimed); the least of
/// [`ALONE_TRIES`] tries, since a preemption inside a timed burst only ever adds time.
fn producer_alone<T: Payload>(messages: u64, capacity: usize) {
    let rounds = (messages / capacity as u64).max(1);
    let mut line = format!("{:<13} producer alone, ns per message:", T::LABEL);
    let mut first = 0.0;
    let mut worst = 0.0f64;
    for consumers in 1..=3 {
        let ns = (0..ALONE_TRIES)
            .map(|_| producer_alone_psyne::<T>(consumers, capacity, rounds))
            .fold(f64::INFINITY, f64::min);
        if consumers == 1 {
            first = ns;
        }
        worst = worst.max(ns / first);
        line += &format!(" psyne x{consumers} {ns:.1}");
    }
    line += &format!(" (max / 1 consumer {worst:.2}x, target <= 1.5x)");
    #[cfg(feature = "iceoryx2")]
    {
        let (mut first, mut worst) = (0.0, 0.0f64);
        for consumers in 1..=3 {
            let ns = (0..ALONE_TRIES)
                .map(|_| ice::producer_alone::<T>(consumers, capacity, rounds))
                .fold(f64::INFINITY, f64::min);
            if consumers == 1 {
                first = ns;
            }
            worst = worst.max(ns / first);
            line += &format!(" | iceoryx2 x{consumers} {ns:.1}");
        }
        line += &format!(" (max / 1 consumer {worst:.2}x)");
    }
    println!("{line}");
}

/// Tries of each producer-alone figure.
const ALONE_TRIES: usize = 5;

fn producer_alone_psyne<T: Payload>(consumers: usize, capacity: usize, rounds: u64) -> f64 {
    let (mut tx, rx) = Channel::<T>::broadcast()
        .capacity(capacity)
        .max_consumers(consumers)
        .build()
        .unwrap();
    let mut rxs = vec![rx];
    for _ in 1..consumers {
        rxs.push(tx.subscribe().unwrap());
    }
    let mut timed = Duration::ZERO;
    let mut sink = 0u64;
    for _ in 0..rounds {
        let t0 = Instant::now();
        for _ in 0..capacity {
            let mut m = tx.try_allocate().unwrap();
            m.stamp(0);
            m.send();
        }
        timed += t0.elapsed();
        for rx in &mut rxs {
            for _ in 0..capacity {
                sink = sink.wrapping_add(rx.try_recv().unwrap().read().1);
            }
        }
    }
    std::hint::black_box(sink);
    timed.as_nanos() as f64 / (rounds * capacity as u64) as f64
}

#[cfg(feature = "iceoryx2")]
mod ice {
    //! The iceoryx2 contender (see the module docs for its configuration).

    use super::{Payload, backoff, slowest};
    use iceoryx2::port::publisher::Publisher;
    use iceoryx2::prelude::*;
    use psyne_examples::iceoryx::{Shared, service_name, unique_name};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Barrier};
    use std::time::{Duration, Instant};

    /// iceoryx2's handle on one publish-subscribe service of `Shared<T>`.
    type Factory<T> = iceoryx2::service::port_factory::publish_subscribe::PortFactory<
        ipc::Service,
        Shared<T>,
        (),
    >;

    /// Creates the service for `consumers` subscribers with `capacity`-deep buffers, and its
    /// publisher.
    fn open<T: Payload>(
        node: &Node<ipc::Service>,
        name: &str,
        consumers: usize,
        capacity: usize,
    ) -> (Factory<T>, Publisher<ipc::Service, Shared<T>, ()>) {
        let service = node
            .service_builder(&service_name(name).unwrap())
            .publish_subscribe::<Shared<T>>()
            .max_publishers(1)
            .max_subscribers(consumers)
            .history_size(0)
            .subscriber_max_buffer_size(capacity)
            .subscriber_max_borrowed_samples(1)
            .enable_safe_overflow(false)
            .create()
            .expect("iceoryx2 service");
        let publisher = service
            .publisher_builder()
            .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
            .max_loaned_samples(1)
            .create()
            .expect("iceoryx2 publisher");
        (service, publisher)
    }

    /// Loans a sample, writes `stamp` as Psyne's producer does into its slot, sends.
    #[inline(always)]
    fn send<T: Payload>(publisher: &Publisher<ipc::Service, Shared<T>, ()>, stamp: u64) {
        let sample = publisher.loan_uninit().expect("iceoryx2 loan");
        // SAFETY: the sample is a chunk of the publisher's data segment, POSIX shared memory the
        // kernel zero-filled when iceoryx2 created it, which only ever holds `Shared<T>` values
        // written whole (zeroes, then this function's stamps); `T: Pod` is valid for any bytes.
        // So the payload is initialised, as a Psyne slot is, and only the stamp is rewritten.
        let mut sample = unsafe { sample.assume_init() };
        sample.payload_mut().0.stamp(stamp);
        sample.send().expect("iceoryx2 send");
    }

    /// iceoryx2 publish-subscribe: (messages/s, latencies to the slowest consumer in ns).
    pub fn run<T: Payload>(
        consumers: usize,
        messages: u64,
        capacity: usize,
        pings: u64,
    ) -> (f64, Vec<u64>) {
        let name = unique_name("broadcast");
        let node = NodeBuilder::new()
            .create::<ipc::Service>()
            .expect("iceoryx2 node");
        let (_service, publisher) = open::<T>(&node, &name, consumers, capacity);
        let total = messages + pings;
        let counts: Arc<Vec<AtomicU64>> =
            Arc::new((0..consumers).map(|_| AtomicU64::new(0)).collect());
        let ready = Arc::new(Barrier::new(consumers + 1));
        let threads: Vec<_> = (0..consumers)
            .map(|c| {
                let (counts, ready, name) = (Arc::clone(&counts), Arc::clone(&ready), name.clone());
                std::thread::spawn(move || {
                    let node = NodeBuilder::new()
                        .create::<ipc::Service>()
                        .expect("iceoryx2 node");
                    let service = node
                        .service_builder(&service_name(&name).unwrap())
                        .publish_subscribe::<Shared<T>>()
                        .open()
                        .expect("iceoryx2 open");
                    let subscriber = service
                        .subscriber_builder()
                        .buffer_size(capacity)
                        .create()
                        .expect("iceoryx2 subscriber");
                    // Attach this side of the connection now: a publisher drops what it sends
                    // to a full buffer whose subscriber has not attached yet.
                    subscriber.has_samples().expect("iceoryx2 connect");
                    ready.wait();
                    let mut lat = Vec::with_capacity(pings as usize);
                    let mut sink = 0u64;
                    for i in 0..total {
                        let m = loop {
                            match subscriber.receive().expect("iceoryx2 receive") {
                                Some(m) => break m,
                                None => backoff(),
                            }
                        };
                        let (stamp, sum) = m.payload().0.read();
                        drop(m);
                        sink = sink.wrapping_add(sum);
                        if i >= messages {
                            lat.push(psyne::channel::monotonic_ns().saturating_sub(stamp));
                        }
                        counts[c].store(i + 1, Ordering::Release);
                    }
                    std::hint::black_box(sink);
                    lat
                })
            })
            .collect();
        ready.wait();
        let slowest_count = |counts: &[AtomicU64]| {
            counts
                .iter()
                .map(|c| c.load(Ordering::Acquire))
                .min()
                .unwrap_or(0)
        };
        let start = Instant::now();
        for _ in 0..messages {
            send(&publisher, 0);
        }
        while slowest_count(&counts) < messages {
            std::hint::spin_loop();
        }
        let elapsed = start.elapsed();
        for i in 0..pings {
            while slowest_count(&counts) < messages + i {
                backoff();
            }
            send(&publisher, psyne::channel::monotonic_ns());
        }
        let lats: Vec<Vec<u64>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        (messages as f64 / elapsed.as_secs_f64(), slowest(&lats))
    }

    /// As `producer_alone_psyne`: the publisher's time per message on one thread.
    pub fn producer_alone<T: Payload>(consumers: usize, capacity: usize, rounds: u64) -> f64 {
        let name = unique_name("alone");
        let node = NodeBuilder::new()
            .create::<ipc::Service>()
            .expect("iceoryx2 node");
        let (service, publisher) = open::<T>(&node, &name, consumers, capacity);
        let subscribers: Vec<_> = (0..consumers)
            .map(|_| {
                service
                    .subscriber_builder()
                    .buffer_size(capacity)
                    .create()
                    .expect("iceoryx2 subscriber")
            })
            .collect();
        for s in &subscribers {
            s.has_samples().expect("iceoryx2 connect");
        }
        let mut timed = Duration::ZERO;
        let mut sink = 0u64;
        for _ in 0..rounds {
            let t0 = Instant::now();
            for _ in 0..capacity {
                send(&publisher, 0);
            }
            timed += t0.elapsed();
            for s in &subscribers {
                for _ in 0..capacity {
                    let m = s.receive().expect("iceoryx2 receive").expect("a sample");
                    sink = sink.wrapping_add(m.payload().0.read().1);
                }
            }
        }
        std::hint::black_box(sink);
        timed.as_nanos() as f64 / (rounds * capacity as u64) as f64
    }
}
