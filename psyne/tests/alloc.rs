//! Counting global allocator: after a channel is built, sending and receiving allocates nothing,
//! on every path (typed and raw, try and blocking, spinning and parking, timeouts).
//!
//! Its own test binary (`harness = false`): no test harness threads allocate while we count.

use psyne::{Channel, Message, PsyneMessage, RecvError, Wait};
use std::time::Duration;

#[path = "common/counting.rs"]
mod counting;
use counting::{Counting, count};

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Frame {
    data: [f32; 64],
    seq: u64,
}

const MESSAGES: u64 = 100_000;

fn typed(wait: Wait) -> usize {
    let (mut tx, mut rx) = Channel::<Frame>::builder()
        .capacity(16)
        .wait(wait)
        .timestamps(true)
        .build()
        .unwrap();
    count(
        move || {
            for seq in 0..MESSAGES {
                let mut m = match seq % 3 {
                    0 => tx.allocate().unwrap(),
                    1 => tx.allocate_timeout(Duration::from_secs(10)).unwrap(),
                    _ => loop {
                        // The try path, including Full.
                        if let Ok(m) = tx.try_allocate() {
                            break m;
                        }
                    },
                };
                m.seq = seq;
                m.data[0] = seq as f32;
                m.send();
            }
            {
                let _dropped = tx.allocate_zeroed().unwrap();
            }
            drop(tx);
        },
        move || {
            let mut seq = 0;
            loop {
                let r = match seq % 3 {
                    0 => rx.recv(),
                    1 => rx.recv_timeout(Duration::from_secs(10)),
                    _ => match rx.try_recv() {
                        Err(RecvError::Empty) => continue,
                        r => r,
                    },
                };
                match r {
                    Ok(m) => {
                        assert_eq!(m.seq, seq);
                        seq += 1;
                    }
                    Err(RecvError::Disconnected) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(seq, MESSAGES);
        },
    )
}

fn raw(wait: Wait) -> usize {
    let (mut tx, mut rx) = Channel::raw()
        .capacity_bytes(8192)
        .wait(wait)
        .build()
        .unwrap();
    count(
        move || {
            let bytes = [7u8; 3000];
            for seq in 0..MESSAGES {
                if seq % 2 == 0 {
                    let mut m = tx.allocate::<Frame>().unwrap();
                    m.seq = seq;
                    m.send();
                } else {
                    let len = (seq as usize * 37) % bytes.len();
                    tx.send_bytes(seq, &bytes[..len]).unwrap();
                }
            }
        },
        move || {
            for seq in 0..MESSAGES {
                let m = rx.recv().unwrap();
                if seq % 2 == 0 {
                    assert_eq!(m.type_id(), Frame::TYPE_ID);
                    assert_eq!(m.downcast::<Frame>().unwrap().seq, seq);
                } else {
                    assert_eq!(m.type_id(), seq);
                    assert_eq!(m.bytes().len(), (seq as usize * 37) % 3000);
                }
            }
            assert_eq!(rx.recv().unwrap_err(), RecvError::Disconnected);
        },
    )
}

/// A shared-memory channel (both ends here): the consumer waits (and sleeps) between bursts, so
/// its waits check the producer's liveness (`/proc/PID/stat`) again and again.
fn shared_waits() -> usize {
    let name = format!("psyne-alloc-{}", std::process::id());
    let mut rx = Channel::<Frame>::builder()
        .capacity(16)
        .shared(&name)
        .create_consumer()
        .unwrap();
    let mut tx = Channel::<Frame>::open_producer(&name).unwrap();
    let allocations = count(
        move || {
            for seq in 0..20u64 {
                // Long enough for the consumer to park and recheck its peer several times.
                std::thread::sleep(Duration::from_millis(25));
                let mut m = tx.allocate().unwrap();
                m.seq = seq;
                m.send();
            }
        },
        move || {
            for seq in 0..20u64 {
                assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap().seq, seq);
            }
            let stats = rx.stats();
            assert!(stats.parked > 0, "the consumer never slept: {stats:?}");
        },
    );
    let _ = psyne::transport::shm::remove(&name);
    allocations
}

fn main() {
    counting::assert_counter_works();

    let mut total = 0;
    for wait in counting::waits() {
        let t = typed(wait);
        let r = raw(wait);
        println!(
            "{wait:?}: {t} allocations over {MESSAGES} typed messages, {r} over {MESSAGES} raw"
        );
        total += t + r;
    }
    let s = shared_waits();
    println!("shared memory, the consumer waiting and checking its peer: {s} allocations");
    total += s;
    assert_eq!(total, 0, "the hot path allocated");
    println!("alloc: ok, 0 heap allocations per message");
}
