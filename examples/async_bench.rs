//! `recv_async` against `tokio::sync::mpsc` (the same `Embedding256` payload, by value) and
//! against Psyne's own blocking `recv`, in the same run: streaming throughput, and one-way
//! latency to an idle consumer that awaits (or blocks) between messages.
//!
//! Every contender's producer is a plain thread that writes the whole payload (and, for the
//! latency runs, its send time, `CLOCK_MONOTONIC` in ns, in the first two words); every consumer
//! reads the whole payload (sums it). The async consumers run on a tokio current-thread runtime
//! in their own thread. Repetitions interleave the contenders, so a burst of outside load hits
//! all alike; figures are median [min–max] over the repetitions.
//!
//! The async consumers' futures are wrapped (for both, alike) in a waker that records when it is
//! called, so that an idle message's one-way latency splits into *to wake* (send stamp to the
//! `Waker::wake` call: the producer side) and *to run* (that call to the future's completion:
//! the executor thread's wake-up and poll).
//!
//! Run with `cargo run --release --example async_bench -- [--messages N] [--reps R]
//! [--latency-messages M] [--pace-us P] [--pieces 0|1]` (defaults 200 000, 5, 5 000, 200, 1;
//! `--pieces 0` awaits the bare futures, without the recording waker; `--stats 1` prints each
//! psyne run's counters: how often the consumer found the ring empty and parked, the producer
//! found it full and parked, and the producer's wake-up calls; `--yields Y` gives the psyne
//! channels `Wait::SpinThenPark { spins: 1024, yields: Y }`, default 16, the default strategy).

use psyne::{Channel, RecvError, Wait};
use psyne_examples::args::Args;
use psyne_examples::stats::{Summary, quantile_sorted};
use psyne_schemas::Embedding256;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

const USAGE: &str = "\
recv_async vs tokio::sync::mpsc vs blocking recv: Embedding256 throughput and idle one-way latency.

Usage: async_bench [--messages N] [--reps R] [--latency-messages M] [--pace-us P] [--pieces 0|1]
                   [--stats 0|1] [--yields Y]";

/// Messages in flight at most (every contender).
const CAPACITY: usize = 256;

fn now_ns() -> u64 {
    psyne::channel::monotonic_ns()
}

/// Fills `e` for message `i` (every word written) with `stamp` in words 0-1.
#[inline]
fn fill(e: &mut Embedding256, i: u64, stamp: u64) {
    for (k, v) in e.data.iter_mut().enumerate() {
        *v = (i as usize + k) as f32;
    }
    let [a, b] = bytemuck::cast::<u64, [f32; 2]>(stamp);
    e.data[0] = a;
    e.data[1] = b;
}

/// Reads every word of `e`; returns the stamp.
#[inline]
fn read(e: &Embedding256, sink: &mut f32) -> u64 {
    *sink += e.data[2..].iter().sum::<f32>();
    bytemuck::cast::<[f32; 2], u64>([e.data[0], e.data[1]])
}

/// Waits until `due` (spinning: the pacing must not depend on the scheduler's wake-up).
fn wait_until(due: Instant) {
    while Instant::now() < due {
        std::hint::spin_loop();
    }
}

/// A waker that records when it was last called, then wakes the executor's waker.
#[derive(Default)]
struct Tracer {
    inner: Mutex<Option<Waker>>,
    woke_ns: AtomicU64,
}

impl Wake for Tracer {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.woke_ns.store(now_ns(), Ordering::Relaxed);
        if let Some(w) = self.inner.lock().expect("tracer").as_ref() {
            w.wake_by_ref();
        }
    }
}

/// Polls `fut` with `tracer`'s waker (forwarding to the executor's).
struct Traced<'a, F> {
    fut: Pin<&'a mut F>,
    tracer: &'a Arc<Tracer>,
    waker: &'a Waker,
}

impl<F: Future> Future for Traced<'_, F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        {
            let mut inner = self.tracer.inner.lock().expect("tracer");
            if !inner.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *inner = Some(cx.waker().clone());
            }
        }
        let waker = self.waker;
        self.fut.as_mut().poll(&mut Context::from_waker(waker))
    }
}

/// Awaits `fut` through `tracer`.
async fn traced<F: Future>(fut: F, tracer: &Arc<Tracer>, waker: &Waker) -> F::Output {
    let fut = std::pin::pin!(fut);
    Traced { fut, tracer, waker }.await
}

/// Per message of a latency run: one-way, and its two pieces (ns; the pieces only for the async
/// consumers, whose last wake-up was by another thread).
#[derive(Default)]
struct Lat {
    one_way: Vec<u64>,
    to_wake: Vec<u64>,
    to_run: Vec<u64>,
}

impl Lat {
    /// Records a message stamped `sent`, completed now, whose future was last woken at
    /// `woke` (0: never woken: it was ready at the first poll).
    fn push(&mut self, sent: u64, woke: u64) {
        let now = now_ns();
        self.one_way.push(now.saturating_sub(sent));
        if woke > sent {
            self.to_wake.push(woke - sent);
            self.to_run.push(now.saturating_sub(woke));
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Contender {
    RecvAsync,
    TokioMpsc,
    BlockingRecv,
}

impl Contender {
    const ALL: [Contender; 3] = [
        Contender::RecvAsync,
        Contender::TokioMpsc,
        Contender::BlockingRecv,
    ];
    fn name(self) -> &'static str {
        match self {
            Contender::RecvAsync => "psyne recv_async (tokio current-thread)",
            Contender::TokioMpsc => "tokio::sync::mpsc (by value)",
            Contender::BlockingRecv => "psyne blocking recv",
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime")
}

/// One run: `n` messages, paced every `pace` (zero: streaming). Returns seconds and, for a
/// paced run, the latencies.
fn run(c: Contender, n: u64, pace: Duration, trace: bool, stats: bool, wait: Wait) -> (f64, Lat) {
    let paced = !pace.is_zero();
    let trace = paced && trace;
    let start = Instant::now();
    let mut lat = Lat::default();
    let mut sink = 0f32;
    let tracer = Arc::new(Tracer::default());
    let waker = Waker::from(Arc::clone(&tracer));
    match c {
        Contender::RecvAsync | Contender::BlockingRecv => {
            let (mut tx, mut rx) = Channel::<Embedding256>::builder()
                .capacity(CAPACITY)
                .wait(wait)
                .build()
                .expect("a channel");
            let p = std::thread::spawn(move || {
                for i in 0..n {
                    if paced {
                        wait_until(start + pace * i as u32);
                    }
                    let mut m = tx.allocate().expect("allocate");
                    fill(&mut m, i, if paced { now_ns() } else { 0 });
                    m.send();
                }
                tx.stats()
            });
            if c == Contender::RecvAsync {
                runtime().block_on(async {
                    loop {
                        let r = if trace {
                            tracer.woke_ns.store(0, Ordering::Relaxed);
                            traced(rx.recv_async(), &tracer, &waker).await
                        } else {
                            rx.recv_async().await
                        };
                        match r {
                            Ok(m) => {
                                let t = read(&m, &mut sink);
                                if paced {
                                    lat.push(t, tracer.woke_ns.load(Ordering::Relaxed));
                                }
                            }
                            Err(RecvError::Disconnected) => break,
                            Err(e) => panic!("{e}"),
                        }
                    }
                });
            } else {
                loop {
                    match rx.recv() {
                        Ok(m) => {
                            let t = read(&m, &mut sink);
                            if paced {
                                lat.push(t, 0);
                            }
                        }
                        Err(RecvError::Disconnected) => break,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            let ps = p.join().expect("producer");
            if stats {
                let cs = rx.stats();
                println!(
                    "    [{} {}] consumer: {} empty, {} parked; producer: {} full, {} parked, {} wake-up calls",
                    c.name(),
                    if paced { "paced" } else { "streaming" },
                    cs.empty,
                    cs.parked,
                    ps.full,
                    ps.parked,
                    ps.wakeups
                );
            }
        }
        Contender::TokioMpsc => {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Embedding256>(CAPACITY);
            let p = std::thread::spawn(move || {
                let mut m: Embedding256 = bytemuck::Zeroable::zeroed();
                for i in 0..n {
                    if paced {
                        wait_until(start + pace * i as u32);
                    }
                    fill(&mut m, i, if paced { now_ns() } else { 0 });
                    tx.blocking_send(m).expect("send");
                }
            });
            runtime().block_on(async {
                loop {
                    let r = if trace {
                        tracer.woke_ns.store(0, Ordering::Relaxed);
                        traced(rx.recv(), &tracer, &waker).await
                    } else {
                        rx.recv().await
                    };
                    let Some(m) = r else { break };
                    let t = read(&m, &mut sink);
                    if paced {
                        lat.push(t, tracer.woke_ns.load(Ordering::Relaxed));
                    }
                }
            });
            p.join().expect("producer");
        }
    }
    std::hint::black_box(sink);
    (start.elapsed().as_secs_f64(), lat)
}

/// The median of `v` in us (NaN when empty).
fn median_us(v: &mut [u64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    quantile_sorted(v, 0.5) as f64 / 1e3
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse(
        &[
            "messages",
            "reps",
            "latency-messages",
            "pace-us",
            "pieces",
            "stats",
            "yields",
        ],
        USAGE,
    )?;
    let trace = args.value::<u32>("pieces", 1)? != 0;
    let stats = args.value::<u32>("stats", 0)? != 0;
    let wait = Wait::SpinThenPark {
        spins: 1024,
        yields: args.value("yields", 16)?,
    };
    let n: u64 = args.value("messages", 200_000)?;
    let reps: usize = args.value("reps", 5)?;
    let m: u64 = args.value("latency-messages", 5_000)?;
    let pace = Duration::from_micros(args.value("pace-us", 200)?);
    if n == 0 || m == 0 || reps == 0 || pace.is_zero() {
        return Err("counts and the pace must be at least 1".into());
    }
    println!(
        "Embedding256 ({} bytes), capacity {CAPACITY}; {reps} interleaved repetitions; {} CPUs; \
         psyne waits {wait:?}",
        size_of::<Embedding256>(),
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let mut p50s: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let mut p99s: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let mut wakes: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); 3];
    for _ in 0..reps {
        for (k, c) in Contender::ALL.into_iter().enumerate() {
            let (secs, _) = run(c, n, Duration::ZERO, false, stats, wait);
            rates[k].push(n as f64 / secs / 1e6);
            let (_, mut l) = run(c, m, pace, trace, stats, wait);
            l.one_way.sort_unstable();
            p50s[k].push(quantile_sorted(&l.one_way, 0.5) as f64 / 1e3);
            p99s[k].push(quantile_sorted(&l.one_way, 0.99) as f64 / 1e3);
            if !l.to_wake.is_empty() {
                wakes[k].push(median_us(&mut l.to_wake));
                runs[k].push(median_us(&mut l.to_run));
            }
        }
    }
    println!("\nstreaming throughput, M msg/s (median [min–max]):");
    for (k, c) in Contender::ALL.into_iter().enumerate() {
        println!("  {:<42} {}", c.name(), Summary::of(&rates[k]).show(2));
    }
    println!(
        "\none-way latency to an idle consumer, one message every {} us, us (per-rep p50 / p99, median [min–max]):",
        pace.as_micros()
    );
    for (k, c) in Contender::ALL.into_iter().enumerate() {
        println!(
            "  {:<42} p50 {}  p99 {}",
            c.name(),
            Summary::of(&p50s[k]).show(1),
            Summary::of(&p99s[k]).show(1)
        );
    }
    println!(
        "\nthe async consumers' one-way latency in two pieces, us (per-rep median, median [min–max]):"
    );
    for (k, c) in Contender::ALL.into_iter().enumerate() {
        if c != Contender::BlockingRecv {
            println!(
                "  {:<42} send to Waker::wake {}  wake to completion {}",
                c.name(),
                Summary::of(&wakes[k]).show(1),
                Summary::of(&runs[k]).show(1)
            );
        }
    }
    let med = |k: usize| Summary::of(&rates[k]).median;
    let p50 = |k: usize| Summary::of(&p50s[k]).median;
    println!(
        "\nrecv_async / tokio mpsc throughput: {:.2}x (target >= 1.5x)",
        med(0) / med(1)
    );
    println!(
        "recv_async / blocking recv throughput: {:.2}x (target >= 0.9x)",
        med(0) / med(2)
    );
    println!(
        "one-way p50 recv_async {:.1} us vs tokio mpsc {:.1} us (target: no worse)",
        p50(0),
        p50(1)
    );
    Ok(())
}
