//! Counting global allocator: after a broadcast channel is built, its consumers subscribed and
//! a warm-up round sent, sending (every producer path) and receiving (every consumer path,
//! including `try_iter`) allocates nothing, with spinning and parking ends, on `Block` and on
//! `DropLagging` channels (where a subscribe, a cut-off and a rejoin happen inside the window).
//!
//! Its own test binary (`harness = false`): no test harness threads allocate while we count.

use psyne::{
    Backpressure, BroadcastConsumer, BroadcastProducer, Channel, PsyneMessage, RecvError,
    SendError, Wait,
};
use std::sync::Barrier;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[path = "common/counting.rs"]
mod counting;
use counting::{ALLOCATIONS, COUNTING, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Clone, Copy, Debug, PsyneMessage)]
#[repr(C)]
struct Frame {
    data: [f32; 64],
    seq: u64,
}

const CONSUMERS: usize = 3;
const MESSAGES: u64 = 30_000;
const WARM_UP: u64 = 100;

/// Sends `from..to` on every path.
fn produce(tx: &mut BroadcastProducer<Frame>, from: u64, to: u64) {
    let mut value = Frame {
        data: [0.5; 64],
        seq: 0,
    };
    for seq in from..to {
        value.seq = seq;
        match seq % 8 {
            0 => {
                let mut m = tx.allocate().unwrap();
                m.seq = seq;
                m.send();
            }
            1 => {
                let mut m = tx.allocate_timeout(Duration::from_secs(30)).unwrap();
                m.seq = seq;
                m.send();
            }
            2 => {
                let mut m = loop {
                    match tx.try_allocate() {
                        Ok(m) => break m,
                        Err(SendError::Full) => std::hint::spin_loop(),
                        Err(e) => panic!("{e}"),
                    }
                };
                m.seq = seq;
                m.send();
            }
            3 => {
                let mut m = tx.allocate_zeroed().unwrap();
                m.seq = seq;
                m.send();
            }
            4 => tx.send(&value).unwrap(),
            5 => loop {
                match tx.try_send(&value) {
                    Ok(()) => break,
                    Err(SendError::Full) => std::hint::spin_loop(),
                    Err(e) => panic!("{e}"),
                }
            },
            6 => tx.send_timeout(&value, Duration::from_secs(30)).unwrap(),
            _ => {
                drop(tx.allocate().unwrap()); // publishes nothing
                tx.send(&value).unwrap();
            }
        }
    }
}

/// Receives `count` messages on every path, in order from `*next`.
fn consume(rx: &mut BroadcastConsumer<Frame>, next: &mut u64, count: u64) {
    let mut got = 0;
    while got < count {
        match got % 4 {
            0 => {
                let m = rx.recv().unwrap();
                assert_eq!(m.seq, *next);
                *next += 1;
                got += 1;
            }
            1 => {
                let m = rx.recv_timeout(Duration::from_secs(30)).unwrap();
                assert_eq!(m.seq, *next);
                *next += 1;
                got += 1;
            }
            2 => match rx.try_recv() {
                Ok(m) => {
                    assert_eq!(m.seq, *next);
                    *next += 1;
                    got += 1;
                }
                Err(RecvError::Empty) => std::hint::spin_loop(),
                Err(e) => panic!("{e}"),
            },
            _ => {
                for m in rx.try_iter().take((count - got).min(8) as usize) {
                    assert_eq!(m.seq, *next);
                    *next += 1;
                    got += 1;
                }
            }
        }
    }
}

/// One run: build, subscribe, warm up (uncounted), then count allocations over `MESSAGES`
/// between barriers (thread creation and joining happen outside the window).
fn run(wait: Wait) -> usize {
    let (mut tx, rx) = Channel::<Frame>::broadcast()
        .capacity(16)
        .max_consumers(CONSUMERS + 1)
        .wait(wait)
        .timestamps(true)
        .build()
        .unwrap();
    let mut rxs = vec![rx];
    for _ in 1..CONSUMERS {
        rxs.push(tx.subscribe().unwrap());
    }
    let parties = CONSUMERS + 2;
    let ready = std::sync::Arc::new(Barrier::new(parties));
    let start = std::sync::Arc::new(Barrier::new(parties));
    let end = std::sync::Arc::new(Barrier::new(parties));
    let consumers: Vec<_> = rxs
        .into_iter()
        .map(|mut rx| {
            let (ready, start, end) = (ready.clone(), start.clone(), end.clone());
            std::thread::spawn(move || {
                let mut next = 0;
                consume(&mut rx, &mut next, WARM_UP);
                ready.wait();
                start.wait();
                consume(&mut rx, &mut next, MESSAGES);
                end.wait();
                assert_eq!(next, WARM_UP + MESSAGES);
                rx
            })
        })
        .collect();
    let producer = {
        let (ready, start, end) = (ready.clone(), start.clone(), end.clone());
        std::thread::spawn(move || {
            produce(&mut tx, 0, WARM_UP);
            ready.wait();
            start.wait();
            produce(&mut tx, WARM_UP, WARM_UP + MESSAGES);
            end.wait();
            tx
        })
    };
    ready.wait();
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    start.wait();
    end.wait();
    COUNTING.store(false, Ordering::SeqCst);
    let counted = ALLOCATIONS.load(Ordering::SeqCst);
    let tx = producer.join().unwrap();
    let mut rxs: Vec<_> = consumers.into_iter().map(|c| c.join().unwrap()).collect();
    drop(tx);
    for rx in &mut rxs {
        assert_eq!(rx.recv().unwrap_err(), RecvError::Disconnected);
    }
    counted
}

/// Drop-lagging: subscribe, be cut off, get `Lagged`, rejoin and receive, all in the window.
fn run_lagging() -> usize {
    let (mut tx, mut fast) = Channel::<Frame>::broadcast()
        .capacity(8)
        .max_consumers(2)
        .backpressure(Backpressure::DropLagging {
            after: Duration::from_millis(1),
        })
        .build()
        .unwrap();
    let value = Frame {
        data: [1.0; 64],
        seq: 0,
    };
    tx.send(&value).unwrap();
    fast.recv().unwrap();
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let mut slow = tx.subscribe().unwrap();
    for _ in 0..64 {
        tx.send(&value).unwrap();
        fast.recv().unwrap();
    }
    let lagged = slow.try_recv().map(|_| ()) == Err(RecvError::Lagged);
    tx.send(&value).unwrap();
    let rejoined = slow.try_recv().is_ok();
    COUNTING.store(false, Ordering::SeqCst);
    assert!(lagged && rejoined, "lagged {lagged}, rejoined {rejoined}");
    ALLOCATIONS.load(Ordering::SeqCst)
}

fn main() {
    counting::assert_counter_works();

    let mut total = 0;
    for wait in counting::waits() {
        let n = run(wait);
        println!("{wait:?}: {n} allocations over {CONSUMERS} consumers x {MESSAGES} messages");
        total += n;
    }
    let n = run_lagging();
    println!("DropLagging subscribe / cut-off / rejoin: {n} allocations");
    total += n;
    assert_eq!(total, 0, "the broadcast hot path allocated");
    println!("broadcast_alloc: ok, 0 heap allocations per message");
}
