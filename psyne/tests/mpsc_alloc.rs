//! Counting global allocator: after a many-producer channel is built, its producers cloned and
//! a warm-up round sent, sending (every producer path) and receiving (every consumer path,
//! including `try_iter`) allocates nothing, with spinning and parking ends.
//!
//! Its own test binary (`harness = false`): no test harness threads allocate while we count.

use psyne::{Channel, MpscConsumer, MpscProducer, PsyneMessage, RecvError, SendError, Wait};
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
    producer: u64,
    seq: u64,
}

const PRODUCERS: usize = 3;
/// Per producer.
const MESSAGES: u64 = 50_000;
const WARM_UP: u64 = 100;

/// Sends `from..to` on every path (allocate, allocate_timeout, try_allocate until it succeeds,
/// allocate_zeroed, send, try_send, send_timeout; and a loan dropped unsent).
fn produce(tx: &mut MpscProducer<Frame>, from: u64, to: u64) {
    let p = tx.index() as u64;
    let mut value = Frame {
        data: [0.5; 64],
        producer: p,
        seq: 0,
    };
    for seq in from..to {
        value.seq = seq;
        match seq % 8 {
            0 => {
                let mut m = tx.allocate().unwrap();
                (m.producer, m.seq) = (p, seq);
                m.send();
            }
            1 => {
                let mut m = tx.allocate_timeout(Duration::from_secs(30)).unwrap();
                (m.producer, m.seq) = (p, seq);
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
                (m.producer, m.seq) = (p, seq);
                m.send();
            }
            3 => {
                let mut m = tx.allocate_zeroed().unwrap();
                (m.producer, m.seq) = (p, seq);
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

/// Receives `count` messages on every path (recv, recv_timeout, try_recv, try_iter), checking
/// per-producer order against `next`.
fn consume(rx: &mut MpscConsumer<Frame>, next: &mut [u64; PRODUCERS], count: u64) {
    let mut got = 0;
    let check = |m: &Frame, next: &mut [u64; PRODUCERS]| {
        let p = m.producer as usize;
        assert_eq!(m.seq, next[p], "producer {p}");
        next[p] += 1;
    };
    while got < count {
        match got % 4 {
            0 => {
                let m = rx.recv().unwrap();
                assert_eq!(m.producer() as u64, m.producer);
                check(&m, next);
                got += 1;
            }
            1 => {
                let m = rx.recv_timeout(Duration::from_secs(30)).unwrap();
                check(&m, next);
                got += 1;
            }
            2 => match rx.try_recv() {
                Ok(m) => {
                    check(&m, next);
                    got += 1;
                }
                Err(RecvError::Empty) => std::hint::spin_loop(),
                Err(e) => panic!("{e}"),
            },
            _ => {
                for m in rx.try_iter().take((count - got).min(8) as usize) {
                    check(&m, next);
                    got += 1;
                }
            }
        }
    }
}

/// One run: build, clone, warm up (uncounted), then count allocations over `MESSAGES` per
/// producer between barriers (thread creation and joining happen outside the window).
fn run(wait: Wait) -> usize {
    let (tx, mut rx) = Channel::<Frame>::mpsc()
        .capacity(16)
        .max_producers(PRODUCERS)
        .wait(wait)
        .timestamps(true)
        .build()
        .unwrap();
    let mut txs = vec![tx];
    for _ in 1..PRODUCERS {
        txs.push(txs[0].try_clone().unwrap());
    }
    let ready = std::sync::Arc::new(Barrier::new(PRODUCERS + 2));
    let start = std::sync::Arc::new(Barrier::new(PRODUCERS + 2));
    let end = std::sync::Arc::new(Barrier::new(PRODUCERS + 2));
    let producers: Vec<_> = txs
        .into_iter()
        .map(|mut tx| {
            let (ready, start, end) = (ready.clone(), start.clone(), end.clone());
            std::thread::spawn(move || {
                produce(&mut tx, 0, WARM_UP);
                ready.wait();
                start.wait();
                produce(&mut tx, WARM_UP, WARM_UP + MESSAGES);
                end.wait();
                tx
            })
        })
        .collect();
    let consumer = {
        let (ready, start, end) = (ready.clone(), start.clone(), end.clone());
        std::thread::spawn(move || {
            let mut next = [0u64; PRODUCERS];
            consume(&mut rx, &mut next, WARM_UP * PRODUCERS as u64);
            ready.wait();
            start.wait();
            consume(&mut rx, &mut next, MESSAGES * PRODUCERS as u64);
            end.wait();
            assert_eq!(next, [WARM_UP + MESSAGES; PRODUCERS]);
            rx
        })
    };
    // Every party has finished its warm-up at `ready`; the window opens after it and before
    // `start`.
    ready.wait();
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    start.wait();
    end.wait();
    COUNTING.store(false, Ordering::SeqCst);
    let counted = ALLOCATIONS.load(Ordering::SeqCst);
    let txs: Vec<_> = producers.into_iter().map(|p| p.join().unwrap()).collect();
    let mut rx = consumer.join().unwrap();
    drop(txs);
    assert_eq!(rx.recv().unwrap_err(), RecvError::Disconnected);
    counted
}

fn main() {
    counting::assert_counter_works();

    let mut total = 0;
    for wait in counting::waits() {
        let n = run(wait);
        println!(
            "{wait:?}: {n} allocations over {PRODUCERS} producers x {MESSAGES} messages (both ends)"
        );
        total += n;
    }
    assert_eq!(total, 0, "the MPSC hot path allocated");
    println!("mpsc_alloc: ok, 0 heap allocations per message");
}
