//! Async ends: `recv_async` / `allocate_async` on every kind (SPSC, MPSC, broadcast, raw, tensor; in
//! process, shared memory, TCP) under tokio (multi-thread and current-thread) and
//! futures-executor; `tokio::select!` over channels and a timer; cancellation at random points
//! under load with exactly-once delivery and no registration left behind; one runtime awaiting
//! 1,000 shared-memory channels fed by another process with a bounded number of helper threads.
//!
//! The producer processes are this test binary itself, started with `--exact async_child` and
//! the environment variable `PSYNE_ASYNC_ROLE`; `async_child` returns at once without it.
//! Tests in this binary take one lock (they count process-wide registrations and threads).
#![cfg(not(loom))]

use psyne::net::Listener;
use psyne::transport::shm;
use psyne::wait::async_wait;
use psyne::{Channel, PsyneMessage, RecvError, SendError};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A message that checks itself.
#[derive(Clone, Copy, Debug, PsyneMessage)]
#[repr(C)]
#[psyne(name = "test.async.Seq")]
struct Seq {
    seq: u64,
    check: u64,
}

impl Seq {
    fn new(seq: u64) -> Self {
        Seq {
            seq,
            check: seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xA5A5,
        }
    }
    fn valid(&self) -> bool {
        self.check == Seq::new(self.seq).check
    }
}

const ROLE: &str = "PSYNE_ASYNC_ROLE";
const NAME: &str = "PSYNE_ASYNC_NAME";
const COUNT: &str = "PSYNE_ASYNC_COUNT";

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

#[path = "common/peer.rs"]
mod peer;
use peer::Peer;

fn unique(tag: &str) -> String {
    peer::unique("async", tag)
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// Waits (up to 5 s: helpers linger 1 s) until no registration is held.
fn assert_no_registration_left() {
    let t = Instant::now();
    while async_wait::registrations() != 0 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{} registrations left behind",
            async_wait::registrations()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A producer thread sending `n` messages, pausing now and then so that the consumer waits.
fn paced_producer(mut tx: psyne::Producer<Seq>, n: u64) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for seq in 0..n {
            tx.send(&Seq::new(seq)).unwrap();
            if seq % 997 == 0 {
                std::thread::sleep(Duration::from_micros(300));
            }
        }
    })
}

/// Receives `n` messages in order with `recv_async`, then expects `Disconnected`.
async fn receive_all(rx: &mut psyne::Consumer<Seq>, n: u64) {
    for seq in 0..n {
        let m = rx.recv_async().await.unwrap();
        assert_eq!(m.seq, seq);
        assert!(m.valid());
    }
    assert_eq!(rx.recv_async().await.unwrap_err(), RecvError::Disconnected);
}

#[test]
fn thread_producer_tokio_multi_thread() {
    let _g = serial();
    let (tx, mut rx) = Channel::<Seq>::builder().capacity(64).build().unwrap();
    let p = paced_producer(tx, 100_000);
    multi_thread().block_on(async move {
        tokio::spawn(async move { receive_all(&mut rx, 100_000).await })
            .await
            .unwrap()
    });
    p.join().unwrap();
    assert_no_registration_left();
}

#[test]
fn thread_producer_tokio_current_thread() {
    let _g = serial();
    let (tx, mut rx) = Channel::<Seq>::builder().capacity(64).build().unwrap();
    let p = paced_producer(tx, 100_000);
    current_thread().block_on(receive_all(&mut rx, 100_000));
    p.join().unwrap();
    assert_no_registration_left();
}

#[test]
fn thread_producer_futures_executor() {
    let _g = serial();
    let (tx, mut rx) = Channel::<Seq>::builder().capacity(64).build().unwrap();
    let p = paced_producer(tx, 100_000);
    futures_executor::block_on(receive_all(&mut rx, 100_000));
    p.join().unwrap();
    assert_no_registration_left();
}

/// An idle consumer registers (it does not spin) and is woken by a later publication.
#[test]
fn idle_consumer_registers_and_is_woken() {
    let _g = serial();
    let (mut tx, mut rx) = Channel::<Seq>::builder().build().unwrap();
    let rt = current_thread();
    for round in 0..20u64 {
        let p = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            tx.send(&Seq::new(round)).unwrap();
            tx
        });
        rt.block_on(async {
            let m = rx.recv_async().await.unwrap();
            assert_eq!(m.seq, round);
        });
        tx = p.join().unwrap();
    }
    // Every round waited 5 ms: far longer than the yield phase, so each one registered.
    assert!(rx.stats().parked >= 20, "{:?}", rx.stats());
    assert!(async_wait::helper_threads() <= 1);
    drop(tx);
    assert_no_registration_left();
}

/// Records the names of the threads that wake it.
#[derive(Default)]
struct Recorder {
    by: Mutex<Vec<String>>,
    cv: std::sync::Condvar,
}

impl std::task::Wake for Recorder {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        let name = std::thread::current().name().unwrap_or("?").to_string();
        self.by.lock().unwrap().push(name);
        self.cv.notify_all();
    }
}

impl Recorder {
    /// Polls `fut` until it returns `Pending` without waking itself (it registered).
    fn poll_until_registered<F: Future>(
        self: &std::sync::Arc<Self>,
        mut fut: std::pin::Pin<&mut F>,
    ) {
        let waker = Waker::from(std::sync::Arc::clone(self));
        let mut cx = Context::from_waker(&waker);
        for _ in 0..100 {
            self.by.lock().unwrap().clear();
            assert!(fut.as_mut().poll(&mut cx).is_pending());
            if self.by.lock().unwrap().is_empty() {
                return;
            }
        }
        panic!("the future never registered");
    }

    /// The name of the first thread that woke it (within 5 s).
    fn first_waker(&self) -> String {
        let by = self.by.lock().unwrap();
        let (by, _) = self
            .cv
            .wait_timeout_while(by, Duration::from_secs(5), |b| b.is_empty())
            .unwrap();
        by.first().cloned().expect("not woken within 5 s")
    }
}

/// In one process, the notifying end calls a registered future's waker itself (the direct
/// wake-up), for a consumer awaiting a message and a producer awaiting room, and these waits
/// start no helper thread; a ring opened twice through shared memory (two mappings, as two
/// processes would) keeps the helper path.
#[test]
fn in_process_wake_up_is_direct() {
    let _g = serial();
    // Helpers of earlier tests end after `LINGER` (1 s) without registrations.
    let t = Instant::now();
    while async_wait::helper_threads() != 0 {
        assert!(t.elapsed() < Duration::from_secs(5), "helpers left running");
        std::thread::sleep(Duration::from_millis(5));
    }
    let named = |name: &str| std::thread::Builder::new().name(name.into());
    // A consumer awaiting a message, woken by the producer thread.
    let (mut tx, mut rx) = Channel::<Seq>::builder().capacity(2).build().unwrap();
    for round in 0..3u64 {
        let rec = std::sync::Arc::new(Recorder::default());
        let mut fut = pin!(rx.recv_async());
        rec.poll_until_registered(fut.as_mut());
        tx = named("direct-producer")
            .spawn(move || {
                tx.send(&Seq::new(round)).unwrap();
                tx
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(rec.first_waker(), "direct-producer");
        let waker = Waker::from(std::sync::Arc::clone(&rec));
        match fut.as_mut().poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(Ok(m)) => assert_eq!(m.seq, round),
            _ => panic!("woken, but no message"),
        }
    }
    // A producer awaiting room, woken by the consumer thread's release.
    while tx.try_send(&Seq::new(9)).is_ok() {}
    {
        let rec = std::sync::Arc::new(Recorder::default());
        let mut fut = pin!(tx.allocate_async());
        rec.poll_until_registered(fut.as_mut());
        rx = named("direct-consumer")
            .spawn(move || {
                assert_eq!(rx.recv().unwrap().seq, 9);
                rx
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(rec.first_waker(), "direct-consumer");
    }
    assert_eq!(
        async_wait::helper_threads(),
        0,
        "an in-process wait started a helper thread"
    );
    drop((tx, rx));
    // Shared memory: the producer's mapping of the consumer's parked word lies elsewhere.
    let name = unique("direct");
    let mut rx = Channel::<Seq>::builder()
        .shared(&name)
        .create_consumer()
        .unwrap();
    let mut tx = Channel::<Seq>::open_producer(&name).unwrap();
    {
        let rec = std::sync::Arc::new(Recorder::default());
        let mut fut = pin!(rx.recv_async());
        rec.poll_until_registered(fut.as_mut());
        named("shm-producer")
            .spawn(move || tx.send(&Seq::new(7)).unwrap())
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(rec.first_waker(), "psyne-async");
        let waker = Waker::from(std::sync::Arc::clone(&rec));
        match fut.as_mut().poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(Ok(m)) => assert_eq!(m.seq, 7),
            _ => panic!("woken, but no message"),
        }
    }
    drop(rx);
    let _ = shm::remove(&name);
    assert_no_registration_left();
}

/// A producer awaits room that a slow blocking consumer releases.
#[test]
fn allocate_async_awaits_room() {
    let _g = serial();
    let (mut tx, mut rx) = Channel::<Seq>::builder().capacity(4).build().unwrap();
    const N: u64 = 20_000;
    let c = std::thread::spawn(move || {
        for seq in 0..N {
            if seq % 1000 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
            let m = rx.recv().unwrap();
            assert_eq!(m.seq, seq);
        }
        assert_eq!(rx.recv().unwrap_err(), RecvError::Disconnected);
    });
    multi_thread().block_on(async move {
        for seq in 0..N {
            let mut loan = tx.allocate_async().await.unwrap();
            *loan = Seq::new(seq);
            loan.send();
        }
        assert!(tx.stats().parked > 0, "{:?}", tx.stats());
    });
    c.join().unwrap();
    assert_no_registration_left();
}

#[test]
fn allocate_async_reports_disconnected() {
    let _g = serial();
    let (mut tx, rx) = Channel::<Seq>::builder().capacity(2).build().unwrap();
    let rt = current_thread();
    rt.block_on(async {
        tx.send_async(&Seq::new(0)).await.unwrap();
        while tx.try_send(&Seq::new(1)).is_ok() {}
        let dropper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            drop(rx);
        });
        assert_eq!(
            tx.allocate_async().await.unwrap_err(),
            SendError::Disconnected
        );
        dropper.join().unwrap();
    });
    assert_no_registration_left();
}

/// `tokio::select!` over three channels fed at different rates and a timer.
#[test]
fn select_over_channels_and_a_timer() {
    let _g = serial();
    const N: u64 = 2_000;
    let mut rxs = Vec::new();
    let mut producers = Vec::new();
    for (i, pause_us) in [0u64, 50, 200].into_iter().enumerate() {
        let (mut tx, rx) = Channel::<Seq>::builder().capacity(16).build().unwrap();
        rxs.push(rx);
        producers.push(std::thread::spawn(move || {
            for seq in 0..N {
                tx.send(&Seq::new(seq * 3 + i as u64)).unwrap();
                if pause_us > 0 && seq % 10 == 0 {
                    std::thread::sleep(Duration::from_micros(pause_us * 10));
                }
            }
        }));
    }
    let [mut a, mut b, mut c]: [psyne::Consumer<Seq>; 3] = rxs.try_into().unwrap();
    let (ticks, got) = multi_thread().block_on(async {
        let mut next = [0u64; 3];
        let mut open = [true; 3];
        let mut ticks = 0u64;
        let mut timer = tokio::time::interval(Duration::from_millis(1));
        while open.iter().any(|&o| o) {
            let (i, r) = tokio::select! {
                r = a.recv_async(), if open[0] => (0, r.map(|m| m.seq)),
                r = b.recv_async(), if open[1] => (1, r.map(|m| m.seq)),
                r = c.recv_async(), if open[2] => (2, r.map(|m| m.seq)),
                _ = timer.tick() => { ticks += 1; continue; }
            };
            match r {
                Ok(seq) => {
                    assert_eq!(seq, next[i] * 3 + i as u64);
                    next[i] += 1;
                }
                Err(RecvError::Disconnected) => open[i] = false,
                Err(e) => panic!("{e}"),
            }
        }
        (ticks, next)
    });
    for p in producers {
        p.join().unwrap();
    }
    assert_eq!(got, [N; 3]);
    assert!(ticks > 0, "the timer never fired");
    assert_no_registration_left();
}

/// A small xorshift generator (deterministic, seedable by `PSYNE_ASYNC_SEED`).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Polls `fut` once with a waker that does nothing, then drops it.
fn poll_once_and_drop<F: Future>(fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

/// Futures dropped at random points (after one poll, in a `select!` lost to a short timer, or
/// awaited) while a producer streams: every message arrives exactly once, in order, and no
/// registration is left behind.
#[test]
fn cancellation_at_random_points_loses_nothing() {
    let _g = serial();
    const N: u64 = 100_000;
    let seed = std::env::var("PSYNE_ASYNC_SEED").map_or(0x5EED_1234, |s| s.parse().unwrap());
    let (mut tx, mut rx) = Channel::<Seq>::builder().capacity(32).build().unwrap();
    let p = std::thread::spawn(move || {
        let mut rng = Rng(seed ^ 0xFFFF);
        for seq in 0..N {
            tx.send(&Seq::new(seq)).unwrap();
            // Twenty pauses longer than tokio's 1 ms timer resolution, so that some `select!`s
            // lose to their timer on any machine (on a quiet one the consumer otherwise never
            // waits long enough for a sub-millisecond timer to fire).
            if seq % 5_000 == 2_500 {
                std::thread::sleep(Duration::from_millis(5));
            }
            match rng.next() % 512 {
                0 => std::thread::sleep(Duration::from_micros(200)),
                1..=8 => std::thread::yield_now(),
                _ => {}
            }
        }
    });
    let (dropped, timed_out) = multi_thread().block_on(async move {
        let mut rng = Rng(seed);
        let mut next = 0u64;
        let (mut dropped, mut timed_out) = (0u64, 0u64);
        loop {
            let r = match rng.next() % 4 {
                0 => match poll_once_and_drop(rx.recv_async()) {
                    Some(r) => r.map(|m| m.seq),
                    None => {
                        dropped += 1;
                        continue;
                    }
                },
                1 => {
                    let wait = Duration::from_micros(rng.next() % 50);
                    tokio::select! {
                        r = rx.recv_async() => r.map(|m| m.seq),
                        _ = tokio::time::sleep(wait) => { timed_out += 1; continue; }
                    }
                }
                _ => rx.recv_async().await.map(|m| m.seq),
            };
            match r {
                Ok(seq) => {
                    assert_eq!(seq, next, "lost or duplicated message");
                    next += 1;
                }
                Err(RecvError::Disconnected) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(next, N);
        assert_eq!(async_wait::registrations(), 0);
        (dropped, timed_out)
    });
    p.join().unwrap();
    assert!(
        dropped > 0 && timed_out > 0,
        "{dropped} dropped, {timed_out} timed out"
    );
    assert_no_registration_left();
}

#[test]
fn mpsc_recv_async_and_allocate_async() {
    let _g = serial();
    const N: u64 = 20_000;
    let (tx, mut rx) = Channel::<Seq>::mpsc()
        .capacity(8)
        .max_producers(3)
        .build()
        .unwrap();
    let mut txs = vec![tx.try_clone().unwrap(), tx.try_clone().unwrap(), tx];
    let rt = multi_thread();
    let handles: Vec<_> = txs
        .drain(..)
        .map(|mut tx| {
            rt.spawn(async move {
                for seq in 0..N {
                    let mut loan = tx.allocate_async().await.unwrap();
                    *loan = Seq::new(seq);
                    loan.send();
                }
            })
        })
        .collect();
    rt.block_on(async {
        let mut next = [0u64; 3];
        loop {
            match rx.recv_async().await {
                Ok(m) => {
                    let p = m.producer();
                    assert_eq!(m.seq, next[p]);
                    next[p] += 1;
                }
                Err(RecvError::Disconnected) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(next, [N; 3]);
        for h in handles {
            h.await.unwrap();
        }
    });
    assert_no_registration_left();
}

/// Broadcast: two consumers awaiting on a runtime, the producer awaiting room (the slowest
/// consumer gates it); every consumer sees every message, in order.
#[test]
fn broadcast_recv_async_and_allocate_async() {
    let _g = serial();
    const N: u64 = 20_000;
    let (mut tx, rx1) = Channel::<Seq>::broadcast()
        .capacity(8)
        .max_consumers(2)
        .build()
        .unwrap();
    let rx2 = tx.subscribe().unwrap();
    let rt = multi_thread();
    let consumers: Vec<_> = [rx1, rx2]
        .into_iter()
        .map(|mut rx| {
            rt.spawn(async move {
                let mut next = 0u64;
                loop {
                    match rx.recv_async().await {
                        Ok(m) => {
                            assert!(m.valid());
                            assert_eq!(m.seq, next);
                            next += 1;
                        }
                        Err(RecvError::Disconnected) => break next,
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    rt.block_on(async {
        for seq in 0..N {
            tx.send_async(&Seq::new(seq)).await.unwrap();
        }
        drop(tx);
        for c in consumers {
            assert_eq!(c.await.unwrap(), N);
        }
    });
    assert_no_registration_left();
}

/// Broadcast with `DropLagging`: a producer awaiting room behind a consumer that never reads
/// is not left waiting forever: the lagging consumer is cut off (`Lagged`), the other one keeps
/// receiving.
#[test]
fn broadcast_allocate_async_cuts_off_a_lagging_consumer() {
    let _g = serial();
    let (mut tx, mut stuck) = Channel::<Seq>::broadcast()
        .capacity(4)
        .max_consumers(2)
        .backpressure(psyne::Backpressure::DropLagging {
            after: Duration::from_millis(20),
        })
        .build()
        .unwrap();
    let mut live = tx.subscribe().unwrap();
    // An executor without timers: nothing but psyne's own wake-ups polls the producer again.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        futures_executor::block_on(async {
            for seq in 0..64u64 {
                tx.send_async(&Seq::new(seq)).await.unwrap();
                assert_eq!(live.recv_async().await.unwrap().seq, seq);
            }
        });
        let _ = done.send(());
    });
    finished
        .recv_timeout(Duration::from_secs(10))
        .expect("the producer was left waiting behind a lagging consumer");
    assert!(matches!(stuck.try_recv(), Err(RecvError::Lagged)));
    assert_no_registration_left();
}

#[test]
fn raw_and_tensor_ends() {
    let _g = serial();
    let rt = current_thread();
    let (mut tx, mut rx) = Channel::raw().capacity_bytes(1024).build().unwrap();
    let c = std::thread::spawn(move || {
        for i in 0..5_000u64 {
            let m = rx.recv().unwrap();
            assert_eq!(m.type_id(), i);
            assert_eq!(m.bytes().len(), (i % 300) as usize + 1);
        }
        rx
    });
    rt.block_on(async {
        for i in 0..5_000u64 {
            tx.send_bytes_async(i, &vec![i as u8; (i % 300) as usize + 1])
                .await
                .unwrap();
        }
    });
    let mut rx = c.join().unwrap();
    let p = std::thread::spawn(move || {
        for i in 0..5_000u64 {
            tx.send_bytes(7, &i.to_le_bytes()).unwrap();
        }
    });
    rt.block_on(async {
        for i in 0..5_000u64 {
            let m = rx.recv_async().await.unwrap();
            assert_eq!(m.bytes(), &i.to_le_bytes());
        }
        assert_eq!(rx.recv_async().await.unwrap_err(), RecvError::Disconnected);
    });
    p.join().unwrap();

    let (mut tx, mut rx) = Channel::tensors().capacity_bytes(8192).build().unwrap();
    let p = std::thread::spawn(move || {
        futures_executor::block_on(async {
            for i in 0..2_000u32 {
                let mut t = tx.allocate_async::<f32>(&[4, 8]).await.unwrap();
                t.as_mut_slice().fill(i as f32);
                t.send();
            }
        })
    });
    rt.block_on(async {
        for i in 0..2_000u32 {
            let t = rx.recv_async().await.unwrap();
            let v = t.view::<f32>().unwrap();
            assert_eq!(v.shape(), &[4, 8]);
            assert!(v.as_slice().iter().all(|&x| x == i as f32));
        }
    });
    p.join().unwrap();
    assert_no_registration_left();
}

/// TCP: the consumer awaits a ring filled by the receiving pump; the producer awaits room that
/// the sending pump releases.
#[test]
fn tcp_ends() {
    let _g = serial();
    const N: u64 = 50_000;
    let l = Listener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let p = std::thread::spawn(move || {
        let mut tx = Channel::<Seq>::builder()
            .capacity(16)
            .connect_producer(addr)
            .unwrap();
        current_thread().block_on(async {
            for seq in 0..N {
                let mut loan = tx.allocate_async().await.unwrap();
                *loan = Seq::new(seq);
                loan.send();
                if seq % 5000 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        });
    });
    let mut rx = Channel::<Seq>::builder()
        .capacity(16)
        .accept_consumer(&l)
        .unwrap();
    multi_thread().block_on(receive_all(&mut rx, N));
    p.join().unwrap();
    assert_no_registration_left();
}

/// Starts this test binary as a producer process with `role` on channel `name` (`count`
/// messages, or channels) and waits for its `READY` line; it is killed when dropped.
fn spawn(role: &str, name: &str, count: u64) -> Peer {
    let peer = Peer::spawn(
        "async_child",
        &[
            (ROLE, role.to_owned()),
            (NAME, name.to_owned()),
            (COUNT, count.to_string()),
        ],
    );
    peer.ready();
    peer
}

/// The producer processes. Does nothing unless started by [`spawn`].
#[test]
fn async_child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let name = std::env::var(NAME).unwrap();
    let count: u64 = std::env::var(COUNT).unwrap().parse().unwrap();
    match role.as_str() {
        // `count` messages with pauses, then exit.
        "stream" => {
            let mut tx = Channel::<Seq>::open_producer(&name).unwrap();
            println!("READY");
            for seq in 0..count {
                tx.send(&Seq::new(seq)).unwrap();
                if seq % 997 == 0 {
                    std::thread::sleep(Duration::from_micros(300));
                }
            }
        }
        // Opens `count` channels `name-<i>`, then sends 5 rounds of one message to each, in a
        // scattered order, with pauses (the consumers park between rounds).
        "many" => {
            let mut txs: Vec<_> = (0..count)
                .map(|i| Channel::<Seq>::open_producer(&format!("{name}-{i}")).unwrap())
                .collect();
            println!("READY");
            for round in 0..5u64 {
                std::thread::sleep(Duration::from_millis(if round == 0 { 300 } else { 150 }));
                for k in 0..count {
                    // 7919 is prime: k -> 7919 k mod count visits every channel once.
                    let i = (k * 7919 + round) % count;
                    txs[i as usize].send(&Seq::new(round)).unwrap();
                }
            }
        }
        // Opens `count` channels `name-<i>`, sends nothing, waits to be killed.
        "idle" => {
            let txs: Vec<_> = (0..count)
                .map(|i| Channel::<Seq>::open_producer(&format!("{name}-{i}")).unwrap())
                .collect();
            println!("READY");
            std::thread::sleep(Duration::from_secs(60));
            drop(txs);
        }
        // Sends one message, then waits to be killed.
        "hold" => {
            let mut tx = Channel::<Seq>::open_producer(&name).unwrap();
            tx.send(&Seq::new(0)).unwrap();
            println!("READY");
            std::thread::sleep(Duration::from_secs(60));
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn shared_memory_producer_in_another_process() {
    let _g = serial();
    const N: u64 = 100_000;
    let name = unique("stream");
    let mut rx = Channel::<Seq>::builder()
        .capacity(64)
        .shared(&name)
        .create_consumer()
        .unwrap();
    let peer = spawn("stream", &name, N);
    multi_thread().block_on(async {
        for seq in 0..N {
            let m = rx.recv_async().await.unwrap();
            assert_eq!(m.seq, seq);
            assert!(m.valid());
        }
    });
    assert!(peer.finish().success());
    let rt = current_thread();
    assert_eq!(
        rt.block_on(rx.recv_async()).unwrap_err(),
        RecvError::Disconnected
    );
    assert_no_registration_left();
}

/// A producer process killed while the consumer awaits: `Disconnected` within the re-poll time.
#[test]
fn killed_producer_process_is_reported() {
    let _g = serial();
    let name = unique("kill");
    let mut rx = Channel::<Seq>::builder()
        .shared(&name)
        .create_consumer()
        .unwrap();
    let peer = spawn("hold", &name, 1);
    let rt = current_thread();
    rt.block_on(async {
        assert_eq!(rx.recv_async().await.unwrap().seq, 0);
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            peer.kill();
            Instant::now()
        });
        let r = tokio::time::timeout(Duration::from_secs(5), rx.recv_async()).await;
        let seen = Instant::now();
        let killed = killer.join().unwrap();
        assert_eq!(
            r.expect("no Disconnected within 5 s").unwrap_err(),
            RecvError::Disconnected
        );
        let late = seen.saturating_duration_since(killed);
        assert!(
            late < Duration::from_secs(1),
            "reported {late:?} after the kill"
        );
    });
    assert_no_registration_left();
}

/// The threads of this process named `psyne-async` (the reactor's helpers).
fn helper_threads_in_proc() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|c| c.trim_end() == "psyne-async")
        .count()
}

/// One current-thread runtime awaits 1,000 shared-memory channels fed by another process; the
/// helper threads stay within ceil(1000 / 127) = 8.
#[test]
fn one_runtime_awaits_1000_shared_channels() {
    let _g = serial();
    const CHANNELS: u64 = 1000;
    let name = unique("many");
    let mut rxs: Vec<_> = (0..CHANNELS)
        .map(|i| {
            Channel::<Seq>::builder()
                .capacity(8)
                .shared(&format!("{name}-{i}"))
                .create_consumer()
                .unwrap()
        })
        .collect();
    let tasks_before = std::fs::read_dir("/proc/self/task").unwrap().count();
    let peer = spawn("many", &name, CHANNELS);
    let rt = current_thread();
    let (max_helpers, max_registered) = rt.block_on(async {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        for mut rx in rxs.drain(..) {
            let done = std::sync::Arc::clone(&done);
            tokio::spawn(async move {
                for round in 0..5u64 {
                    let m = rx.recv_async().await.unwrap();
                    assert_eq!(m.seq, round);
                }
                assert_eq!(rx.recv_async().await.unwrap_err(), RecvError::Disconnected);
                done.fetch_add(1, Ordering::Relaxed);
            });
        }
        let (mut helpers, mut registered) = (0, 0);
        let t = Instant::now();
        while done.load(Ordering::Relaxed) < CHANNELS {
            helpers = helpers.max(helper_threads_in_proc());
            registered = registered.max(async_wait::registrations());
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "{} done",
                done.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        (helpers, registered)
    });
    assert!(peer.finish().success());
    let bound = CHANNELS.div_ceil(async_wait::PER_GROUP as u64) as usize;
    assert!(max_helpers >= 1, "no helper thread seen");
    assert!(
        max_helpers <= bound,
        "{max_helpers} helper threads > {bound}"
    );
    let tasks_peak_bound = tasks_before + bound;
    assert!(
        std::fs::read_dir("/proc/self/task").unwrap().count() <= tasks_peak_bound,
        "more threads than the helpers"
    );
    // The channels were awaited at once (the producer pauses 150 ms between rounds).
    assert!(
        max_registered >= 900,
        "only {max_registered} futures registered at once"
    );
    println!(
        "1000 channels: at most {max_registered} registered at once, {max_helpers} helper \
         threads (bound {bound})"
    );
    assert_no_registration_left();
    for i in 0..CHANNELS {
        let _ = shm::remove(&format!("{name}-{i}"));
    }
}

/// CPU time (user + system, clock ticks) of this process's threads, split into the reactor's
/// helpers (`psyne-async`) and the rest.
fn cpu_ticks() -> (u64, u64) {
    let (mut helpers, mut others) = (0, 0);
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        // Fields after the command name in parentheses: state is field 3, utime 14, stime 15.
        let Some((comm, rest)) = stat.split_once(" (").and_then(|(_, r)| r.rsplit_once(") "))
        else {
            continue;
        };
        let f: Vec<&str> = rest.split(' ').collect();
        let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        if comm == "psyne-async" {
            helpers += ticks;
        } else {
            others += ticks;
        }
    }
    (helpers, others)
}

/// Measures (prints) the CPU that 1,000 idle shared-memory channels cost while one runtime
/// awaits them all, their producer process alive and silent: the helpers' re-polls and the
/// consumers' liveness checks. Bound: less than half a core in all (it is mostly the
/// `ASYNC_PEER_POLL` re-polls). Run with `--ignored --nocapture`.
#[test]
#[ignore = "a measurement (3 s), run by hand"]
fn idle_shared_channels_cpu() {
    let _g = serial();
    const CHANNELS: u64 = 1000;
    let name = unique("idle");
    let rxs: Vec<_> = (0..CHANNELS)
        .map(|i| {
            Channel::<Seq>::builder()
                .capacity(8)
                .shared(&format!("{name}-{i}"))
                .create_consumer()
                .unwrap()
        })
        .collect();
    let peer = spawn("idle", &name, CHANNELS);
    let rt = current_thread();
    let (helpers, others, secs) = rt.block_on(async {
        let mut tasks = Vec::new();
        for mut rx in rxs {
            tasks.push(tokio::spawn(async move {
                assert_eq!(rx.recv_async().await.unwrap_err(), RecvError::Disconnected);
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(async_wait::registrations() >= 990, "not all registered");
        let (h0, o0) = cpu_ticks();
        let t = Instant::now();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (h1, o1) = cpu_ticks();
        let secs = t.elapsed().as_secs_f64();
        peer.kill();
        for t in tasks {
            t.await.unwrap();
        }
        (h1 - h0, o1 - o0, secs)
    });
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let (h, o) = (helpers as f64 / hz / secs, others as f64 / hz / secs);
    println!(
        "1000 idle shared channels: helper threads {:.1}% of a core, other threads (runtime) \
         {:.1}% (load {})",
        h * 100.0,
        o * 100.0,
        std::fs::read_to_string("/proc/loadavg").unwrap().trim()
    );
    assert!(
        h + o < 0.5,
        "idle channels cost {:.0}% of a core",
        (h + o) * 100.0
    );
    assert_no_registration_left();
    for i in 0..CHANNELS {
        let _ = shm::remove(&format!("{name}-{i}"));
    }
}
