//! Many producers, one consumer: Psyne's MPSC channel against `crossbeam_channel::bounded` (by
//! value) and disruptor-rs's multi-producer ring (`disruptor::build_multi_producer` with an
//! event poller), 2 and 4 producers, a 64-byte payload and `Embedding256`, in one run.
//!
//! Every contender does the same work (examples/bench/payload.rs): each producer writes the whole
//! payload (Psyne: in place in a loan of its lane; disruptor: in place in its claimed slot;
//! crossbeam: into a value on the stack that `send` moves into the channel and `recv` moves out),
//! the consumer reads all of it (a wrapping sum checked against the stamp). Every contender
//! holds the same number of messages in total: Psyne's lanes hold `capacity / producers` each.
//!
//! * **Throughput**: each producer streams its share of `--messages`, stamped with its index and
//!   sequence number; the consumer checks every message's per-producer order and content. Time
//!   from the start barrier to the consumer's last message; median (and spread) of `--reps`.
//!   The contenders run in rounds (each once per round, in turn); the targets' ratios are
//!   printed as ratios of the medians and, because a shared VM's speed can swing 3-4x for
//!   minutes at a time, also round by round (each round's rates divided, then the median and
//!   range of those ratios), which a swing longer than a round moves less.
//! * **One-way latency**: each producer sends one message every `--pace-us` microseconds,
//!   stamped with the clock read just before it writes; the consumer reads the clock when it
//!   has the message. p50 and p99 over all producers' messages; the median of the reps.
//! * **Idle consumer**: CPU time (getrusage, this thread) of a consumer waiting one second on a
//!   channel whose producers are alive and silent.
//!
//! Waiting: each contender waits its own way where it has one: Psyne's default
//! `Wait::SpinThenPark` (up to 1024 spins, fewer where a yield shows the CPUs crowded, 16 yields,
//! then sleep on a futex), crossbeam's blocking
//! `send`/`recv` (a backoff, then parking). disruptor-rs's `publish` and poller only spin; on
//! machines with fewer cores than threads a pure spin starves the thread it waits for, so its
//! producers and consumer here try, spin 64 times, then `yield_now` (the gentlest wait it can be
//! given without a lock). No thread is pinned: with 2 or 4 producers and a consumer there are
//! more threads than cores on a 2-core machine, and the scheduler places them.
//!
//! Run with `cargo run --release --example mpsc_bench -- [--reps 5] [--messages N]
//! [--producers 2,4] [--capacity 1024] [--pace-us 50] [--samples N]` (`--help` for the usage).

#[path = "bench/payload.rs"]
#[allow(
    dead_code,
    reason = "psyne_bench's payload module, shared as is: this example uses part of it"
)]
mod payload;

use bytemuck::Pod;
use hdrhistogram::Histogram;
use payload::{Embedding256, Words};
use psyne_examples::args::Args;
use psyne_examples::timer::Clock;
use std::mem::MaybeUninit;
use std::sync::Barrier;
use std::time::{Duration, Instant};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// What `--help` prints.
const USAGE: &str = "\
Many producers, one consumer: Psyne MPSC vs crossbeam_channel::bounded and disruptor-rs's
multi-producer ring; 64 B and Embedding256 payloads; throughput, one-way latency, idle CPU.

usage: mpsc_bench [--reps R] [--messages N] [--producers 2,4] [--capacity C] [--pace-us U]
                  [--samples S]

  --reps R         repetitions of every measurement (default 5; the median is shown)
  --messages N     messages per throughput repetition, all producers together (default
                   4000000 for 64 B, a quarter of it for Embedding256)
  --producers L    producer counts (default 2,4)
  --capacity C     messages every channel holds in total (default 1024)
  --pace-us U      each producer's interval between messages in the latency runs (default 50)
  --samples S      latency samples per repetition, all producers together (default 20000)
";

/// A many-producers, one-consumer channel carrying `P`.
trait Contender<P: Pod> {
    /// Name in tables.
    const NAME: &'static str;
    /// A producer end.
    type Tx: Send;
    /// The consumer end.
    type Rx: Send;
    /// A channel holding `capacity` messages in total, with `producers` producer ends.
    fn build(capacity: usize, producers: usize) -> Result<(Vec<Self::Tx>, Self::Rx), Error>;
    /// Writes a whole message stamped `stamp` and publishes it, waiting for room if needed.
    fn send(tx: &mut Self::Tx, stamp: u64);
    /// Waits for at least one message and hands each available one to `f` (at least one);
    /// returns how many, or 0 once every producer is gone and everything was read.
    fn recv_some(rx: &mut Self::Rx, f: &mut impl FnMut(&P)) -> usize;
    /// Waits up to `timeout` for a message with every producer alive and silent (the idle
    /// measurement); `None` if this contender has no blocking receive.
    fn idle_wait(rx: &mut Self::Rx, timeout: Duration) -> Option<()>;
    /// The consumer's counters, where it keeps them: times it went to sleep, and wake-up
    /// system calls it made to sleeping producers.
    fn sleeps_and_wakeups(_rx: &Self::Rx) -> Option<(u64, u64)> {
        None
    }
}

/// Psyne MPSC: in place on both sides; default waiting, or (`YIELD`) about the wait this
/// benchmark gives disruptor-rs (64 spins, then yields: `SpinThenPark { spins: 64, yields: 4096 }`,
/// which sleeps only after 4096 yields), to tell the channel's cost from its waiting's.
struct Psyne<const YIELD: bool>;

impl<P: psyne::Message + Send, const YIELD: bool> Contender<P> for Psyne<YIELD> {
    const NAME: &'static str = if YIELD {
        "Psyne MPSC, yield"
    } else {
        "Psyne MPSC"
    };
    type Tx = psyne::MpscProducer<P>;
    type Rx = psyne::MpscConsumer<P>;
    fn build(capacity: usize, producers: usize) -> Result<(Vec<Self::Tx>, Self::Rx), Error> {
        let wait = if YIELD {
            psyne::Wait::SpinThenPark {
                spins: 64,
                yields: 4096,
            }
        } else {
            psyne::Wait::default()
        };
        let (tx, rx) = psyne::Channel::<P>::mpsc()
            .capacity((capacity / producers).max(1))
            .max_producers(producers)
            .wait(wait)
            .build()?;
        let mut txs = vec![tx];
        for _ in 1..producers {
            txs.push(txs[0].try_clone()?);
        }
        Ok((txs, rx))
    }
    #[inline(always)]
    fn send(tx: &mut Self::Tx, stamp: u64) {
        let mut loan = tx.allocate().expect("psyne allocate");
        payload::write(&mut *loan, stamp);
        loan.send();
    }
    #[inline(always)]
    fn recv_some(rx: &mut Self::Rx, f: &mut impl FnMut(&P)) -> usize {
        match rx.recv() {
            Ok(m) => {
                f(&m);
                1
            }
            Err(psyne::RecvError::Disconnected) => 0,
            Err(e) => panic!("psyne recv: {e}"),
        }
    }
    fn idle_wait(rx: &mut Self::Rx, timeout: Duration) -> Option<()> {
        assert!(rx.recv_timeout(timeout).is_err());
        Some(())
    }
    fn sleeps_and_wakeups(rx: &Self::Rx) -> Option<(u64, u64)> {
        let s = rx.stats();
        Some((s.parked, s.wakeups))
    }
}

/// `crossbeam_channel::bounded`: by value, its own blocking send and receive.
struct Crossbeam;

impl<P: Pod + Send> Contender<P> for Crossbeam {
    const NAME: &'static str = "crossbeam bounded";
    type Tx = crossbeam_channel::Sender<P>;
    type Rx = crossbeam_channel::Receiver<P>;
    fn build(capacity: usize, producers: usize) -> Result<(Vec<Self::Tx>, Self::Rx), Error> {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        Ok(((0..producers).map(|_| tx.clone()).collect(), rx))
    }
    #[inline(always)]
    fn send(tx: &mut Self::Tx, stamp: u64) {
        let mut v = MaybeUninit::<P>::uninit();
        tx.send(*payload::write_uninit(&mut v, stamp))
            .expect("crossbeam send");
    }
    #[inline(always)]
    fn recv_some(rx: &mut Self::Rx, f: &mut impl FnMut(&P)) -> usize {
        match rx.recv() {
            Ok(v) => {
                f(&v);
                1
            }
            Err(_) => 0,
        }
    }
    fn idle_wait(rx: &mut Self::Rx, timeout: Duration) -> Option<()> {
        assert!(rx.recv_timeout(timeout).is_err());
        Some(())
    }
}

/// disruptor-rs: a multi-producer ring of `P` slots written and read in place; an event
/// poller as the consumer.
struct Disruptor;

/// Spins 64 times, then yields, per failed try (see the module docs).
struct Backoff(u32);

impl Backoff {
    #[inline(always)]
    fn wait(&mut self) {
        self.0 += 1;
        if self.0 < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

type DisruptorTx<P> = disruptor::MultiProducer<P, disruptor::SingleConsumerBarrier>;
type DisruptorRx<P> = disruptor::EventPoller<P, disruptor::MultiProducerBarrier>;

impl<P: Pod + Send + Sync> Contender<P> for Disruptor {
    const NAME: &'static str = "disruptor-rs multi";
    type Tx = DisruptorTx<P>;
    type Rx = DisruptorRx<P>;
    fn build(capacity: usize, producers: usize) -> Result<(Vec<Self::Tx>, Self::Rx), Error> {
        let builder = disruptor::build_multi_producer(
            capacity.next_power_of_two(),
            P::zeroed,
            disruptor::BusySpinWithSpinLoopHint,
        );
        let (poller, builder) = builder.new_event_poller();
        let tx = builder.build();
        let mut txs: Vec<_> = (1..producers).map(|_| tx.clone()).collect();
        txs.push(tx);
        Ok((txs, poller))
    }
    #[inline(always)]
    fn send(tx: &mut Self::Tx, stamp: u64) {
        use disruptor::Producer;
        let mut backoff = Backoff(0);
        while tx.try_publish(|e| payload::write(e, stamp)).is_err() {
            backoff.wait();
        }
    }
    #[inline(always)]
    fn recv_some(rx: &mut Self::Rx, f: &mut impl FnMut(&P)) -> usize {
        let mut backoff = Backoff(0);
        loop {
            match rx.poll() {
                Ok(mut events) => {
                    let mut n = 0;
                    for e in &mut events {
                        f(e);
                        n += 1;
                    }
                    return n;
                }
                Err(disruptor::Polling::NoEvents) => backoff.wait(),
                Err(disruptor::Polling::Shutdown) => return 0,
            }
        }
    }
    fn idle_wait(rx: &mut Self::Rx, timeout: Duration) -> Option<()> {
        // The poller never blocks: the wait this benchmark gives it (spin, then yield).
        let end = Instant::now() + timeout;
        let mut backoff = Backoff(0);
        while Instant::now() < end {
            assert!(matches!(rx.poll(), Err(disruptor::Polling::NoEvents)));
            backoff.wait();
        }
        Some(())
    }
}

/// Producer `p`'s stamp for its message `seq` in the throughput runs.
fn stamp(p: usize, seq: u64) -> u64 {
    (p as u64) << 48 | seq
}

/// One throughput repetition.
struct Rep {
    /// Messages per second.
    rate: f64,
    /// Messages that were wrong, lost or out of order (must be 0).
    bad: u64,
    /// CPU time of the whole process over the wall time: cores kept busy.
    cores_busy: f64,
    /// See [`Contender::sleeps_and_wakeups`].
    sleeps_and_wakeups: Option<(u64, u64)>,
}

/// One throughput repetition.
fn throughput<P: Pod, C: Contender<P>>(
    capacity: usize,
    producers: usize,
    messages: u64,
) -> Result<Rep, Error> {
    let (txs, mut rx) = C::build(capacity, producers)?;
    let each = messages / producers as u64;
    let barrier = Barrier::new(producers + 1);
    let (cpu0, wall0) = (process_cpu(), Instant::now());
    let (elapsed, bad) = std::thread::scope(|s| {
        for (p, mut tx) in txs.into_iter().enumerate() {
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                for seq in 0..each {
                    C::send(&mut tx, stamp(p, seq));
                }
            });
        }
        let rx = &mut rx;
        let barrier = &barrier;
        s.spawn(move || {
            let mut next = vec![0u64; producers];
            let mut bad = 0u64;
            let mut got = 0u64;
            barrier.wait();
            let t0 = Instant::now();
            let mut check = |m: &P| {
                let (st, ok) = payload::read(m);
                let (p, seq) = ((st >> 48) as usize, st & ((1 << 48) - 1));
                if !ok || p >= producers || next[p] != seq {
                    bad += 1;
                } else {
                    next[p] += 1;
                }
                got += 1;
            };
            while C::recv_some(rx, &mut check) > 0 {}
            let elapsed = t0.elapsed();
            (elapsed, bad + (each * producers as u64 - got))
        })
        .join()
        .expect("consumer")
    });
    let cores_busy = (process_cpu() - cpu0).as_secs_f64() / wall0.elapsed().as_secs_f64();
    Ok(Rep {
        rate: (each * producers as u64) as f64 / elapsed.as_secs_f64(),
        bad,
        cores_busy,
        sleeps_and_wakeups: C::sleeps_and_wakeups(&rx),
    })
}

/// One latency repetition: p50 and p99 in nanoseconds, and wrong messages.
fn latency<P: Pod, C: Contender<P>>(
    capacity: usize,
    producers: usize,
    samples: u64,
    pace: Duration,
    clock: Clock,
) -> Result<(f64, f64, u64), Error> {
    let (txs, mut rx) = C::build(capacity, producers)?;
    let each = samples / producers as u64;
    let warmup = 100u64;
    let pace_ticks = clock.ns_to_ticks(pace.as_nanos() as f64);
    let barrier = Barrier::new(producers + 1);
    std::thread::scope(|s| {
        for (p, mut tx) in txs.into_iter().enumerate() {
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                // Spread the producers over the interval.
                let mut next = clock.now() + pace_ticks * p as u64 / producers as u64;
                for _ in 0..warmup + each {
                    while clock.now() < next {
                        std::thread::yield_now(); // leave the cores to the others
                    }
                    let t0 = clock.now();
                    C::send(&mut tx, t0);
                    next = t0 + pace_ticks;
                }
            });
        }
        let rx = &mut rx;
        let barrier = &barrier;
        s.spawn(move || -> Result<(f64, f64, u64), Error> {
            // 1 ns to 100 s, 3 significant digits.
            let mut hist = Histogram::<u64>::new_with_bounds(1, 100_000_000_000, 3)?;
            let mut bad = 0u64;
            let mut got = 0u64;
            barrier.wait();
            let mut take = |m: &P| {
                let t1 = clock.now();
                let (t0, ok) = payload::read(m);
                bad += u64::from(!ok);
                got += 1;
                if got > warmup * producers as u64 {
                    let ns = clock.ticks_to_ns(t1.saturating_sub(t0)).round() as u64;
                    hist.saturating_record(ns.max(1));
                }
            };
            while C::recv_some(rx, &mut take) > 0 {}
            bad += (warmup + each) * producers as u64 - got;
            Ok((
                hist.value_at_quantile(0.5) as f64,
                hist.value_at_quantile(0.99) as f64,
                bad,
            ))
        })
        .join()
        .expect("consumer")
    })
}

/// User plus system CPU time of `who` (`RUSAGE_THREAD` or `RUSAGE_SELF`).
fn cpu_time(who: libc::c_int) -> Duration {
    // SAFETY: an all-zero rusage is a valid value; getrusage only writes it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    let r = unsafe { libc::getrusage(who, &mut ru) };
    assert_eq!(r, 0, "getrusage");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    cpu_time(libc::RUSAGE_THREAD)
}

/// CPU time of the whole process (threads that ended included).
fn process_cpu() -> Duration {
    cpu_time(libc::RUSAGE_SELF)
}

/// Share of a core an idle consumer uses over one second (producers alive and silent).
fn idle<P: Pod, C: Contender<P>>(capacity: usize, producers: usize) -> Result<f64, Error> {
    let (txs, mut rx) = C::build(capacity, producers)?;
    let share = std::thread::scope(|s| {
        s.spawn(|| {
            let (cpu0, t0) = (thread_cpu(), Instant::now());
            C::idle_wait(&mut rx, Duration::from_secs(1));
            (thread_cpu() - cpu0).as_secs_f64() / t0.elapsed().as_secs_f64()
        })
        .join()
        .expect("idle consumer")
    });
    drop(txs);
    Ok(share)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Results of one contender on one payload and producer count.
struct Row {
    name: &'static str,
    producers: usize,
    /// Median, smallest and largest messages per second of the reps.
    msgs_per_s: f64,
    min: f64,
    max: f64,
    /// Messages per second of each round, in round order (every contender runs once per
    /// round, so round `i` of two rows ran within the same second or two).
    rounds: Vec<f64>,
    /// Median cores kept busy during the throughput reps.
    cores_busy: f64,
    /// Consumer sleeps and wake-ups per 1000 messages over the throughput reps (Psyne).
    sleeps_wakeups_per_k: Option<(f64, f64)>,
    p50_ns: f64,
    p99_ns: f64,
    bad: u64,
}

struct Config {
    reps: usize,
    capacity: usize,
    samples: u64,
    pace: Duration,
    clock: Clock,
}

/// One latency repetition's p50 and p99 (ns) and wrong messages.
type LatencyRep = Result<(f64, f64, u64), Error>;

/// The measurements of one contender, as functions (so that contenders can be interleaved).
struct Entry {
    name: &'static str,
    throughput: fn(usize, usize, u64) -> Result<Rep, Error>,
    latency: fn(usize, usize, u64, Duration, Clock) -> LatencyRep,
}

fn entry<P: Pod, C: Contender<P>>() -> Entry {
    Entry {
        name: C::NAME,
        throughput: throughput::<P, C>,
        latency: latency::<P, C>,
    }
}

/// Every contender at `producers` producers: a warm-up repetition each (page faults, clock
/// frequency; not counted), then `reps` rounds in which every contender runs once, in turn (so a
/// burst of load from outside hits all of them alike), for throughput and then for latency.
fn measure(
    cfg: &Config,
    entries: &[Entry],
    producers: usize,
    messages: u64,
) -> Result<Vec<Row>, Error> {
    for e in entries {
        (e.throughput)(cfg.capacity, producers, messages / 10)?;
    }
    let n = entries.len();
    let mut reps: Vec<Vec<Rep>> = (0..n).map(|_| Vec::new()).collect();
    let mut lat: Vec<Vec<(f64, f64, u64)>> = (0..n).map(|_| Vec::new()).collect();
    for _ in 0..cfg.reps {
        for (i, e) in entries.iter().enumerate() {
            reps[i].push((e.throughput)(cfg.capacity, producers, messages)?);
        }
    }
    for _ in 0..cfg.reps {
        for (i, e) in entries.iter().enumerate() {
            lat[i].push((e.latency)(
                cfg.capacity,
                producers,
                cfg.samples,
                cfg.pace,
                cfg.clock,
            )?);
        }
    }
    let per_k = 1000.0 / (messages as f64 * cfg.reps as f64);
    Ok(entries
        .iter()
        .zip(reps.iter().zip(&lat))
        .map(|(e, (reps, lat))| {
            let rounds: Vec<f64> = reps.iter().map(|r| r.rate).collect();
            let mut rates = rounds.clone();
            let mut busy: Vec<f64> = reps.iter().map(|r| r.cores_busy).collect();
            let waits = reps.iter().try_fold((0u64, 0u64), |(s, w), r| {
                r.sleeps_and_wakeups.map(|(s1, w1)| (s + s1, w + w1))
            });
            let mut p50: Vec<f64> = lat.iter().map(|l| l.0).collect();
            let mut p99: Vec<f64> = lat.iter().map(|l| l.1).collect();
            let m = median(&mut rates);
            Row {
                name: e.name,
                producers,
                msgs_per_s: m,
                min: rates[0],
                max: rates[rates.len() - 1],
                rounds,
                cores_busy: median(&mut busy),
                sleeps_wakeups_per_k: waits.map(|(s, w)| (s as f64 * per_k, w as f64 * per_k)),
                p50_ns: median(&mut p50),
                p99_ns: median(&mut p99),
                bad: reps.iter().map(|r| r.bad).sum::<u64>() + lat.iter().map(|l| l.2).sum::<u64>(),
            }
        })
        .collect())
}

fn payload_section<P: Pod + psyne::Message + Send + Sync>(
    label: &str,
    cfg: &Config,
    producer_counts: &[usize],
    messages: u64,
) -> Result<Vec<Row>, Error> {
    println!(
        "\n{label} ({} bytes), {messages} messages per repetition, capacity {} in total:",
        size_of::<P>(),
        cfg.capacity
    );
    println!(
        "{:<18} {:>3} {:>22} {:>7} {:>6} {:>8} {:>9} {:>13} {:>4}",
        "contender",
        "k",
        "M msg/s med [min-max]",
        "MB/s",
        "cores",
        "p50 us",
        "p99 us",
        "sleeps/wakes",
        "bad"
    );
    let entries = [
        entry::<P, Psyne<false>>(),
        entry::<P, Psyne<true>>(),
        entry::<P, Crossbeam>(),
        entry::<P, Disruptor>(),
    ];
    let mut rows = Vec::new();
    for &k in producer_counts {
        for row in measure(cfg, &entries, k, messages)? {
            let waits = row
                .sleeps_wakeups_per_k
                .map_or("-".to_string(), |(s, w)| format!("{s:.2}/{w:.2}"));
            println!(
                "{:<18} {:>3} {:>7.2} [{:>5.2}-{:>5.2}] {:>7.0} {:>6.2} {:>8.2} {:>9.2} {:>13} {:>4}",
                row.name,
                row.producers,
                row.msgs_per_s / 1e6,
                row.min / 1e6,
                row.max / 1e6,
                row.msgs_per_s * size_of::<P>() as f64 / 1e6,
                row.cores_busy,
                row.p50_ns / 1e3,
                row.p99_ns / 1e3,
                waits,
                row.bad
            );
            rows.push(row);
        }
    }
    println!(
        "(k: producers; cores: process CPU time / wall time during the throughput runs; \
         sleeps/wakes: the Psyne consumer's sleeps and wake-up calls per 1000 messages)"
    );
    Ok(rows)
}

/// `a / b` round by round (the two rows' rounds ran back to back, so a swing in the machine's
/// speed that lasts longer than a round moves both): median, smallest and largest.
fn round_ratios(a: &Row, b: &Row) -> (f64, f64, f64) {
    let mut r: Vec<f64> = a.rounds.iter().zip(&b.rounds).map(|(x, y)| x / y).collect();
    let m = median(&mut r);
    (m, r[0], r[r.len() - 1])
}

/// The targets, from the `Embedding256` rows: ratios of the medians, and the same
/// ratios taken round by round.
fn targets(rows: &[Row]) {
    let row = |name: &str, k: usize| rows.iter().find(|r| r.name == name && r.producers == k);
    println!("\ntargets (Embedding256):");
    if let (Some(p2), Some(c2), Some(d2)) = (
        row("Psyne MPSC", 2),
        row("crossbeam bounded", 2),
        row("disruptor-rs multi", 2),
    ) {
        let (cm, cl, ch) = round_ratios(p2, c2);
        let (dm, dl, dh) = round_ratios(p2, d2);
        println!(
            "  2 producers: Psyne / crossbeam = {:.2}x (target >= 2x), Psyne / disruptor = {:.2}x \
             (target >= 1x)",
            p2.msgs_per_s / c2.msgs_per_s,
            p2.msgs_per_s / d2.msgs_per_s
        );
        println!(
            "  the same, round by round: / crossbeam {cm:.2}x [{cl:.2}-{ch:.2}x], \
             / disruptor {dm:.2}x [{dl:.2}-{dh:.2}x] (median [min-max])"
        );
        if let Some(p4) = row("Psyne MPSC", 4) {
            println!(
                "  4 producers: Psyne 4 / Psyne 2 = {:.2}x (target >= 0.8x)",
                p4.msgs_per_s / p2.msgs_per_s
            );
        }
    }
}

fn main() -> Result<(), Error> {
    let args = Args::parse(
        &[
            "reps",
            "messages",
            "producers",
            "capacity",
            "pace-us",
            "samples",
        ],
        USAGE,
    )
    .map_err(|e| e.to_string())?;
    let value = |e: Box<dyn std::error::Error>| -> Error { e.to_string().into() };
    let cfg = Config {
        reps: args.value("reps", 5usize).map_err(value)?.max(1),
        capacity: args.value("capacity", 1024usize).map_err(value)?,
        samples: args.value("samples", 20_000u64).map_err(value)?,
        pace: Duration::from_micros(args.value("pace-us", 50u64).map_err(value)?),
        clock: Clock::best(),
    };
    let producers: Vec<usize> = args.list("producers", vec![2, 4]).map_err(value)?;
    let messages: u64 = args.value("messages", 4_000_000u64).map_err(value)?;
    if producers.iter().any(|&k| k == 0 || k > cfg.capacity) || cfg.capacity == 0 {
        return Err("--producers must be 1 ..= --capacity".into());
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "mpsc_bench: {cores} cores available, threads unpinned (producers + 1 consumer each); \
         clock {:?} ({:.0} ns per read); {} reps, median shown",
        cfg.clock.source(),
        cfg.clock.overhead().mean_ns,
        cfg.reps
    );
    payload_section::<Words<16>>("64 B", &cfg, &producers, messages)?;
    let rows = payload_section::<Embedding256>("Embedding256", &cfg, &producers, messages / 4)?;
    targets(&rows);

    println!("\nidle consumer (producers alive and silent, 1 s, CPU share of one core):");
    let k = producers[0];
    println!(
        "  Psyne MPSC (default wait): {:.3}%",
        idle::<Embedding256, Psyne<false>>(cfg.capacity, k)? * 100.0
    );
    println!(
        "  crossbeam bounded (recv_timeout): {:.3}%",
        idle::<Embedding256, Crossbeam>(cfg.capacity, k)? * 100.0
    );
    println!(
        "  disruptor-rs poller (spin, then yield; it has no blocking wait): {:.1}%",
        idle::<Embedding256, Disruptor>(cfg.capacity, k)? * 100.0
    );
    Ok(())
}
