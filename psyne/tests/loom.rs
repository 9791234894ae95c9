//! Loom models of the SPSC ring: publication and release (with a wrap filler), parking and
//! waking (no lost wake-ups), and disconnection.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p psyne --release --test loom`. Under loom every
//! atomic, fence, futex and yield of `psyne::sync` is loom's, and each 64-byte chunk of the ring is
//! a loom `UnsafeCell`, so a payload read that is not ordered after its write (or a write not
//! ordered after the previous read of the same bytes) fails the model. A lost wake-up shows up as
//! a loom deadlock (every thread blocked).
#![cfg(loom)]

use core::future::Future;
use loom::thread;
use psyne::{Channel, PsyneMessage, RecvError, SendError, Wait};

#[derive(Clone, Copy, Debug, PsyneMessage)]
#[repr(C)]
struct Pair {
    a: u64,
    b: u64,
}

/// Park at once: the most interesting interleavings for wake-ups.
const PARK: Wait = Wait::SpinThenPark {
    spins: 0,
    yields: 0,
};

fn model(f: impl Fn() + Sync + Send + 'static) {
    model_bounded(3, f);
}

/// [`model`] with at most `bound` preemptions per execution (unless `LOOM_MAX_PREEMPTIONS`
/// says otherwise): for the larger models, whose full bound-3 exploration runs for many minutes.
fn model_bounded(bound: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(bound);
    }
    b.check(f);
}

/// Three raw messages in a 256-byte ring: 40 bytes (record 128 at 0), 100 bytes (record 192: does
/// not fit at 128, so a 128-byte filler is published on its own and the record goes to 0 once
/// the consumer has released both), 10 bytes (record 64 at 192). Both ends park.
#[test]
fn raw_wrap_publication_release_and_parking() {
    model(|| {
        let (mut tx, mut rx) = Channel::raw()
            .capacity_bytes(256)
            .wait(PARK)
            .build()
            .unwrap();
        let sizes = [40usize, 100, 10];
        let producer = thread::spawn(move || {
            for (i, &len) in sizes.iter().enumerate() {
                let mut loan = tx.allocate_bytes(len).unwrap();
                loan.fill(i as u8 + 1);
                loan.send(i as u64);
            }
        });
        for (i, &len) in sizes.iter().enumerate() {
            let m = rx.recv().unwrap();
            assert_eq!(m.type_id(), i as u64);
            assert_eq!(m.header().sequence, i as u64);
            assert_eq!(m.bytes().len(), len);
            assert!(m.bytes().iter().all(|&b| b == i as u8 + 1));
        }
        assert_eq!(rx.recv().unwrap_err(), RecvError::Disconnected);
        producer.join().unwrap();
    });
}

/// A typed ring with room for exactly one message: every message goes through a full ring and
/// an empty ring, so each side parks and must be woken by the other.
#[test]
fn typed_one_slot_ping_pong() {
    model(|| {
        let (mut tx, mut rx) = Channel::<Pair>::builder()
            .capacity(1)
            .wait(PARK)
            .build()
            .unwrap();
        // One 64-byte record and the line the producer always leaves free.
        assert_eq!(tx.capacity_bytes(), 128);
        let producer = thread::spawn(move || {
            for i in 0..3u64 {
                let mut loan = tx.allocate().unwrap();
                loan.a = i;
                loan.b = !i;
                loan.send();
            }
        });
        for i in 0..3u64 {
            let m = rx.recv().unwrap();
            assert_eq!((m.a, m.b), (i, !i));
        }
        producer.join().unwrap();
    });
}

/// One spin and one yield before parking, so that the spin path and the park path interleave.
#[test]
fn typed_spin_then_park() {
    model(|| {
        let (mut tx, mut rx) = Channel::<Pair>::builder()
            .capacity(1)
            .wait(Wait::SpinThenPark {
                spins: 1,
                yields: 1,
            })
            .build()
            .unwrap();
        let producer = thread::spawn(move || {
            for i in 0..2u64 {
                tx.allocate().unwrap().a = i; // dropped loan: publishes nothing
                let mut loan = tx.allocate().unwrap();
                loan.a = i;
                loan.send();
            }
        });
        for i in 0..2u64 {
            assert_eq!(rx.recv().unwrap().a, i);
        }
        producer.join().unwrap();
    });
}

/// The producer sends one message and drops: the (possibly parked) consumer gets the message,
/// then `Disconnected`, never a hang.
#[test]
fn producer_drop_wakes_consumer_after_delivery() {
    model(|| {
        let (mut tx, mut rx) = Channel::<Pair>::builder()
            .capacity(1)
            .wait(PARK)
            .build()
            .unwrap();
        let producer = thread::spawn(move || {
            tx.allocate().unwrap().send();
            drop(tx);
        });
        assert!(rx.recv().is_ok());
        assert_eq!(rx.recv().unwrap_err(), RecvError::Disconnected);
        producer.join().unwrap();
    });
}

/// The consumer drops while the producer waits on a full ring: the producer wakes and sees
/// `Disconnected`.
#[test]
fn consumer_drop_wakes_producer() {
    model(|| {
        let (mut tx, rx) = Channel::<Pair>::builder()
            .capacity(1)
            .wait(PARK)
            .build()
            .unwrap();
        tx.allocate().unwrap().send();
        let consumer = thread::spawn(move || drop(rx));
        assert_eq!(tx.allocate().unwrap_err(), SendError::Disconnected);
        consumer.join().unwrap();
    });
}

/// Busy-spinning ends (no fences, no futex): publication and release alone must order the data.
#[test]
fn busy_spin_publication() {
    model(|| {
        let (mut tx, mut rx) = Channel::raw()
            .capacity_bytes(256)
            .wait(Wait::BusySpin)
            .build()
            .unwrap();
        let producer = thread::spawn(move || {
            for i in 0..2u8 {
                tx.send_bytes(7, &[i; 50]).unwrap();
            }
        });
        for i in 0..2u8 {
            assert_eq!(rx.recv().unwrap().bytes(), &[i; 50][..]);
        }
        producer.join().unwrap();
    });
}

#[derive(Clone, Copy, Debug, PsyneMessage)]
#[repr(C, align(128))]
struct Aligned {
    v: [u64; 16],
}

/// Payload alignment above 64 bytes: an alignment filler is written in the same publication as
/// the record that follows it, in a 512-byte ring that fills up exactly to its end.
#[test]
fn raw_alignment_filler() {
    // Four records, an alignment filler and (under loom's small thresholds) possible rewinds:
    // bound 2 keeps the exploration to minutes on two cores.
    model_bounded(2, || {
        let (mut tx, mut rx) = Channel::raw()
            .capacity_bytes(512)
            .wait(PARK)
            .build()
            .unwrap();
        let producer = thread::spawn(move || {
            tx.send_bytes(1, &[1; 10]).unwrap(); // record 64 at 0
            tx.allocate::<Aligned>().unwrap().send(); // filler 64 at 64, record 192 at 128
            tx.send_bytes(3, &[3; 100]).unwrap(); // record 192 at 320, up to the end
            let mut m = tx.allocate::<Aligned>().unwrap(); // record at 0
            m.v[0] = 4;
            m.send();
        });
        assert_eq!(rx.recv().unwrap().bytes(), &[1; 10][..]);
        let m = rx.recv().unwrap();
        assert_eq!(m.bytes().as_ptr() as usize % 128, 0);
        assert!(m.downcast::<Aligned>().is_some());
        drop(m);
        assert_eq!(rx.recv().unwrap().bytes(), &[3; 100][..]);
        assert_eq!(rx.recv().unwrap().downcast::<Aligned>().unwrap().v[0], 4);
        assert_eq!(rx.recv().unwrap_err(), RecvError::Disconnected);
        producer.join().unwrap();
    });
}

/// Stale bytes never read as a commit: in a 256-byte ring, message 0 (160 bytes: a 192-byte
/// record, the largest the ring takes) fills its payload with the word 3, so ring offset 64
/// holds bytes that look like a header with sequence number 3. Messages 1 and 2 then go to
/// offsets 192 and 0, and message 3 to offset 64: the consumer must not take the old payload at
/// 64 for message 3 before the producer writes it (a read unordered with the producer's write
/// fails the model). Publishing message 2 writes the pending mark of message 3 at 64.
#[test]
fn stale_payload_is_not_a_commit() {
    model(|| {
        let (mut tx, mut rx) = Channel::raw()
            .capacity_bytes(256)
            .wait(PARK)
            .build()
            .unwrap();
        let producer = thread::spawn(move || {
            tx.send_bytes(0, &3u64.to_le_bytes().repeat(20)).unwrap();
            for i in 1..4u8 {
                tx.send_bytes(u64::from(i), &[i; 10]).unwrap();
            }
        });
        let m = rx.recv().unwrap();
        assert_eq!(
            (m.type_id(), m.header().sequence, m.bytes().len()),
            (0, 0, 160)
        );
        drop(m);
        for i in 1..4u64 {
            let m = rx.recv().unwrap();
            assert_eq!((m.type_id(), m.header().sequence), (i, i));
            assert_eq!(m.bytes(), &[i as u8; 10][..]);
        }
        assert_eq!(rx.recv().unwrap_err(), RecvError::Disconnected);
        producer.join().unwrap();
    });
}

/// Large records go back to the start of the region when the ring is empty (under loom "large"
/// is 128-byte records in a ring of more than two of them): in a 512-byte ring, three 96-byte
/// messages (128-byte records). Whether the producer finds the ring empty before messages 1 and
/// 2 depends on the interleaving; when it does, it publishes a filler up to the end of the
/// region and the record goes to offset 0, over the header of a record the consumer released.
/// Every interleaving must deliver the three payloads, in order, with their sequence numbers.
#[test]
fn large_records_rewind_when_empty() {
    model(|| {
        let (mut tx, mut rx) = Channel::raw()
            .capacity_bytes(512)
            .wait(PARK)
            .build()
            .unwrap();
        let producer = thread::spawn(move || {
            for i in 0..3u8 {
                tx.send_bytes(u64::from(i), &[i + 1; 96]).unwrap();
            }
        });
        let mut offsets = Vec::new();
        for i in 0..3u64 {
            let m = rx.recv().unwrap();
            assert_eq!((m.type_id(), m.header().sequence), (i, i));
            assert_eq!(m.bytes(), &[i as u8 + 1; 96][..]);
            offsets.push(m.bytes().as_ptr() as usize);
        }
        // Each record is either right after the previous one or back at the first one's address.
        for w in offsets.windows(2) {
            assert!(w[1] == offsets[0] || w[1] == w[0] + 128, "{offsets:x?}");
        }
        assert_eq!(rx.recv().unwrap_err(), RecvError::Disconnected);
        producer.join().unwrap();
    });
}

// ---- Many producers, one consumer (a lane per producer, polled round-robin) ----

/// Three threads: a preemption bound of 2 keeps each MPSC model within a minute in release.
fn mpsc_model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(2);
    }
    b.check(f);
}

/// Two producers, each sending two messages into a lane with room for one (so each second
/// message waits for the consumer to release the first, and its pending mark wraps to the
/// lane's offset 0); the consumer receives all four with parking ends and checks that each
/// producer's messages come in its order, with its index. A lost wake-up in either direction
/// (the consumer waiting for any lane, a producer waiting for room) is a loom deadlock.
#[test]
fn mpsc_two_producers_wrap_park_and_per_producer_order() {
    mpsc_model(|| {
        let (tx0, mut rx) = Channel::<Pair>::mpsc()
            .capacity(1)
            .max_producers(2)
            .wait(PARK)
            .build()
            .unwrap();
        let tx1 = tx0.try_clone().unwrap();
        assert_eq!((tx0.index(), tx1.index()), (0, 1));
        let producers: Vec<_> = [tx0, tx1]
            .into_iter()
            .map(|mut tx| {
                thread::spawn(move || {
                    let p = tx.index() as u64;
                    for i in 0..2u64 {
                        let mut loan = tx.allocate().unwrap();
                        loan.a = p;
                        loan.b = i;
                        loan.send();
                    }
                    tx // dropped after the consumer is done: no disconnection here
                })
            })
            .collect();
        let mut next = [0u64; 2];
        for _ in 0..4 {
            let m = rx.recv().unwrap();
            let p = m.producer();
            assert_eq!(m.a, p as u64, "message tagged with its producer");
            assert_eq!(m.b, next[p], "per-producer order");
            assert_eq!(m.header().sequence, next[p], "lane sequence");
            next[p] += 1;
        }
        assert_eq!(next, [2, 2]);
        for p in producers {
            drop(p.join().unwrap());
        }
    });
}

/// Two producers each send one message and drop: the (parked) consumer gets both messages and
/// then `Disconnected`, never `Disconnected` while a message or a live producer is left, and
/// never a hang.
#[test]
fn mpsc_disconnected_after_every_producer_dropped_and_all_read() {
    mpsc_model(|| {
        let (tx0, mut rx) = Channel::<Pair>::mpsc()
            .capacity(1)
            .max_producers(2)
            .wait(PARK)
            .build()
            .unwrap();
        let tx1 = tx0.try_clone().unwrap();
        let producers: Vec<_> = [tx0, tx1]
            .into_iter()
            .map(|mut tx| {
                thread::spawn(move || {
                    let p = tx.index() as u64;
                    let mut loan = tx.allocate().unwrap();
                    loan.a = p;
                    loan.send();
                })
            })
            .collect();
        let mut seen = [false; 2];
        for _ in 0..2 {
            let m = rx.recv().unwrap();
            assert_eq!(m.a, m.producer() as u64);
            assert!(!seen[m.producer()]);
            seen[m.producer()] = true;
        }
        assert_eq!(rx.recv().unwrap_err(), RecvError::Disconnected);
        for p in producers {
            p.join().unwrap();
        }
    });
}

/// A producer that drops with a message unread frees its place; a clone made afterwards takes
/// the same place and continues the lane (recovering its end by following commit words while
/// the consumer may be reading), so the parked consumer gets the old message and then the new
/// one, in lane order, with lane sequence numbers 0 and 1.
#[test]
fn mpsc_dropped_producer_place_is_reused_and_its_lane_continues() {
    mpsc_model(|| {
        let (tx0, mut rx) = Channel::<Pair>::mpsc()
            .capacity(2)
            .max_producers(2)
            .wait(PARK)
            .build()
            .unwrap();
        let consumer = thread::spawn(move || {
            for i in 0..2u64 {
                let m = rx.recv().unwrap();
                assert_eq!((m.producer(), m.header().sequence, m.b), (1, i, i));
            }
            rx
        });
        let mut tx1 = tx0.try_clone().unwrap();
        let mut loan = tx1.allocate().unwrap();
        loan.b = 0;
        loan.send();
        drop(tx1); // message 0 may still be unread
        let mut tx2 = tx0.try_clone().unwrap();
        assert_eq!(tx2.index(), 1, "the freed place is reused");
        let mut loan = tx2.allocate().unwrap();
        loan.b = 1;
        loan.send();
        let rx = consumer.join().unwrap();
        assert!(rx.is_empty());
        drop((tx0, tx2));
    });
}

/// Async: a consumer future registers its waker against a producer that publishes and then
/// finds the consumer's parked word raised. In-process, the registration is direct-only: armed
/// in the index, then the word raised to `AWAITING` (`Release`); the producer's notifier lowers
/// it with an `Acquire` swap and calls the waker itself (no helper thread, no `FUTEX_WAKE`). A
/// lost wake-up leaves `block_on` parked with no other thread runnable: loom reports it. The
/// message is read after its write (the ring's payload cells are checked as in the models
/// above).
#[test]
fn async_registration_against_publication() {
    model_bounded(2, || awaits_against_publication(false, 1));
}

/// [`async_registration_against_publication`] with the registration made with a helper thread
/// (`force_helper`: as a ring shared with another process registers), whose sleep is a yield (a
/// "spurious" return, then a rescan), racing the notifier's direct wake-up of the same entry.
#[test]
fn async_registration_against_publication_helper() {
    model_bounded(2, || awaits_against_publication(true, 1));
}

/// Async, twice in a row: the consumer awaits two messages and the producer sends two into a
/// one-message ring (so it also waits for room, blocking). The future woken directly for the
/// first message registers again for the second while the producer may still be inside its
/// notification of the first: the notifier lowers the word (its swap) before it looks the
/// registration up, so a raise for the second wait is never overwritten. A lost wake-up of
/// either end is a loom deadlock.
#[test]
fn async_registers_again_after_a_direct_wake() {
    model_bounded(2, || awaits_against_publication(false, 2));
}

/// A producer thread sends `messages` messages into a one-message ring while the consumer
/// awaits each with `recv_async` (registering with a helper thread if `helper`); every message
/// arrives intact and in order, and no registration is left behind.
fn awaits_against_publication(helper: bool, messages: u64) {
    psyne::wait::async_wait::force_helper(helper);
    let (mut tx, mut rx) = Channel::<Pair>::builder()
        .capacity(1)
        .wait(PARK)
        .build()
        .unwrap();
    let producer = thread::spawn(move || {
        for i in 0..messages {
            tx.send(&Pair { a: i, b: 20 + i }).unwrap();
        }
    });
    loom::future::block_on(async {
        for i in 0..messages {
            let m = rx.recv_async().await.unwrap();
            assert_eq!((m.a, m.b), (i, 20 + i));
        }
    });
    producer.join().unwrap();
    assert_eq!(psyne::wait::async_wait::registrations(), 0);
}

/// Async cancellation: a future polled once (it registers) and dropped leaves no registration
/// and loses nothing: a blocking `recv` then gets the message, and a second future is woken
/// by the producer's drop to report `Disconnected`.
#[test]
fn async_cancelled_future_leaves_nothing_behind() {
    model_bounded(2, || cancelled_future_leaves_nothing_behind(false));
}

/// [`async_cancelled_future_leaves_nothing_behind`] with helper registrations (`force_helper`).
#[test]
fn async_cancelled_future_leaves_nothing_behind_helper() {
    model_bounded(2, || cancelled_future_leaves_nothing_behind(true));
}

fn cancelled_future_leaves_nothing_behind(helper: bool) {
    psyne::wait::async_wait::force_helper(helper);
    let (mut tx, mut rx) = Channel::<Pair>::builder()
        .capacity(1)
        .wait(PARK)
        .build()
        .unwrap();
    {
        let mut fut = core::pin::pin!(rx.recv_async());
        let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
    }
    assert_eq!(psyne::wait::async_wait::registrations(), 0);
    let producer = thread::spawn(move || {
        tx.send(&Pair { a: 3, b: 4 }).unwrap();
    });
    assert_eq!(rx.recv().unwrap().a, 3);
    loom::future::block_on(async {
        assert_eq!(rx.recv_async().await.unwrap_err(), RecvError::Disconnected);
    });
    producer.join().unwrap();
}

/// Async, direct wake-up: the producer's notifier finds the consumer's future registered in
/// this process and takes its waker (under the index's shard lock) while the consumer drops the
/// future (deregisters) and then receives with a blocking `recv` (which raises the word to
/// `PARKED`, so the notifier, by the value its swap replaced, makes the `FUTEX_WAKE` the
/// blocking waiter needs). Whatever the interleaving, the message arrives once, the producer's
/// direct path never fires a freed registration into a new one wrongly (the message is read
/// after its write), and no registration is left.
#[test]
fn async_direct_wake_against_cancellation() {
    model_bounded(2, || {
        let (mut tx, mut rx) = Channel::<Pair>::builder()
            .capacity(1)
            .wait(PARK)
            .build()
            .unwrap();
        let producer = thread::spawn(move || {
            tx.send(&Pair { a: 5, b: 6 }).unwrap();
            tx
        });
        {
            let mut fut = core::pin::pin!(rx.recv_async());
            let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
            if let core::task::Poll::Ready(m) = fut.as_mut().poll(&mut cx) {
                assert_eq!(m.unwrap().b, 6);
                drop(fut);
                let tx = producer.join().unwrap();
                assert_eq!(psyne::wait::async_wait::registrations(), 0);
                drop(tx);
                return;
            }
        }
        assert_eq!(psyne::wait::async_wait::registrations(), 0);
        assert_eq!(rx.recv().unwrap().b, 6);
        let tx = producer.join().unwrap();
        drop(tx);
    });
}

/// Async, direct wake-up of a producer: its future awaits room in a full one-message ring,
/// registers, and the consumer thread's release wakes it directly. A lost wake-up leaves
/// `block_on` parked: loom reports it; the second message is read after its write.
#[test]
fn async_direct_wake_of_a_producer() {
    model_bounded(2, || direct_wake_of_a_producer(false));
}

/// [`async_direct_wake_of_a_producer`] with a helper registration (`force_helper`): the
/// consumer's direct wake-up and the helper race for the same entry.
#[test]
fn async_direct_wake_of_a_producer_helper() {
    model_bounded(2, || direct_wake_of_a_producer(true));
}

fn direct_wake_of_a_producer(helper: bool) {
    psyne::wait::async_wait::force_helper(helper);
    let (mut tx, mut rx) = Channel::<Pair>::builder()
        .capacity(1)
        .wait(PARK)
        .build()
        .unwrap();
    tx.send(&Pair { a: 0, b: 10 }).unwrap();
    let consumer = thread::spawn(move || {
        for i in 0..2u64 {
            let m = rx.recv().unwrap();
            assert_eq!((m.a, m.b), (i, 10 + i));
        }
    });
    loom::future::block_on(async {
        let mut loan = tx.allocate_async().await.unwrap();
        *loan = Pair { a: 1, b: 11 };
        loan.send();
    });
    consumer.join().unwrap();
    assert_eq!(psyne::wait::async_wait::registrations(), 0);
}

/// Broadcast models: a producer and two consumers, three threads (preemption bound 2, as the
/// MPSC models).
fn broadcast_model(f: impl Fn() + Sync + Send + 'static) {
    mpsc_model(f);
}

/// A consumer of `Pair`s that the producer fills as `(i, !i)`: receives until `Disconnected`,
/// checking each message whole (loom's tracker fails the model if the producer could write the
/// bytes while they are read), and returns the `a`s it saw.
fn drain_pairs(rx: &mut psyne::BroadcastConsumer<Pair>, lagged_ok: bool) -> Vec<u64> {
    let mut seen = Vec::new();
    loop {
        match rx.recv() {
            Ok(m) => {
                assert_eq!(m.b, !m.a, "whole message");
                seen.push(m.a);
            }
            Err(RecvError::Lagged) if lagged_ok => {}
            Err(RecvError::Disconnected) => return seen,
            Err(e) => panic!("{e}"),
        }
    }
}

/// Two messages into a ring with room for one, to two parked consumers: the second message
/// waits until *both* released the first (its pending mark wraps to offset 0), each consumer
/// receives both in order, then `Disconnected`. A lost wake-up is a loom deadlock.
#[test]
fn broadcast_two_consumers_release_order_wrap_and_full() {
    broadcast_model(|| {
        let (mut tx, mut rx1) = Channel::<Pair>::broadcast()
            .capacity(1)
            .max_consumers(2)
            .wait(PARK)
            .build()
            .unwrap();
        let mut rx2 = tx.subscribe().unwrap();
        let producer = thread::spawn(move || {
            for i in 0..2u64 {
                let mut m = tx.allocate().unwrap();
                m.a = i;
                m.b = !i;
                m.send();
            }
        });
        let other = thread::spawn(move || drain_pairs(&mut rx2, false));
        assert_eq!(drain_pairs(&mut rx1, false), [0, 1]);
        assert_eq!(other.join().unwrap(), [0, 1]);
        producer.join().unwrap();
    });
}

/// Subscribing during traffic and a consumer dropping: the producer sends 0, subscribes a
/// second consumer, sends 1 (which needs the space of 0: the first consumer never reads and
/// drops at any moment, which must wake the producer), then drops. The subscriber receives
/// exactly 1, then `Disconnected`.
#[test]
fn broadcast_subscribe_during_traffic_and_consumer_drop() {
    broadcast_model(|| {
        let (mut tx, rx1) = Channel::<Pair>::broadcast()
            .capacity(1)
            .max_consumers(2)
            .wait(PARK)
            .build()
            .unwrap();
        let producer = thread::spawn(move || {
            tx.send(&Pair { a: 0, b: !0 }).unwrap();
            let rx2 = tx.subscribe().unwrap();
            tx.send(&Pair { a: 1, b: !1 }).unwrap();
            rx2
        });
        let dropper = thread::spawn(move || drop(rx1));
        let mut rx2 = producer.join().unwrap();
        dropper.join().unwrap();
        assert_eq!(drain_pairs(&mut rx2, false), [1]);
    });
}

/// Drop-lagging with `after` zero: the producer cuts off any consumer that keeps the ring
/// full, at once, but never one that holds a message (loom's tracker checks that no byte of a
/// held message is written while it is read). One consumer races with the producer; the other
/// reads only after the producer is done (so it is cut off). Each sees an increasing subset of
/// the messages, each whole, then `Disconnected`.
#[test]
fn broadcast_drop_lagging_never_cuts_a_reader() {
    model_bounded(2, || {
        let (mut tx, mut rx1) = Channel::<Pair>::broadcast()
            .capacity(1)
            .max_consumers(2)
            .backpressure(psyne::Backpressure::DropLagging {
                after: std::time::Duration::ZERO,
            })
            .wait(PARK)
            .build()
            .unwrap();
        let mut rx2 = tx.subscribe().unwrap();
        let producer = thread::spawn(move || {
            for i in 0..2u64 {
                tx.send(&Pair { a: i, b: !i }).unwrap();
            }
        });
        let seen = drain_pairs(&mut rx2, true);
        producer.join().unwrap();
        for seen in [seen, drain_pairs(&mut rx1, true)] {
            assert!(seen.windows(2).all(|w| w[0] < w[1]) && seen.len() <= 2);
        }
    });
}
