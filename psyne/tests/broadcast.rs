//! One producer, many consumers (`Channel::broadcast`): every consumer reads the same bytes in
//! place, subscribe sees exactly what is sent after it, the consumer limit and place reuse,
//! `Block` gating by the slowest consumer, `DropLagging` cutting off a consumer that keeps the
//! ring full (never one that holds a message), dropping consumers and the producer, raw ends,
//! counters, a 3-consumer stress with checksums, and shared channels between processes
//! (consumers in two processes, a refused one past the limit, `kill -9` of a consumer that
//! keeps the ring full: the producer goes on within 100 ms).
//!
//! `PSYNE_BROADCAST_STRESS` sets the messages of the stress test (default 5 000 000 in release
//! builds, 200 000 in debug builds).
//!
//! The consumer processes are this test binary itself, started with `--exact broadcast_child`
//! and `PSYNE_BROADCAST_ROLE`; `broadcast_child` returns at once without that variable.

use psyne::{
    Backpressure, Channel, ChannelError, OpenError, PsyneMessage, RecvError, SendError, Wait,
};
use std::time::{Duration, Instant};

/// A message that checks itself.
#[derive(Clone, Copy, Debug, PsyneMessage)]
#[repr(C)]
struct Tagged {
    seq: u64,
    data: [u64; 6],
    checksum: u64,
}

#[path = "common/mix.rs"]
mod mix;
use mix::splitmix;

impl Tagged {
    fn fill(&mut self, seq: u64) {
        self.seq = seq;
        for (i, d) in self.data.iter_mut().enumerate() {
            *d = splitmix(seq ^ (i as u64) << 56);
        }
        self.checksum = self.sum();
    }

    fn new(seq: u64) -> Self {
        let mut t: Tagged = psyne::bytemuck::Zeroable::zeroed();
        t.fill(seq);
        t
    }

    fn sum(&self) -> u64 {
        self.data
            .iter()
            .fold(self.seq, |h, &w| (h ^ w).wrapping_mul(0x100_0000_01B3))
    }

    /// Panics unless the message is whole and is `seq`.
    fn check(&self, seq: u64) {
        assert_eq!(self.seq, seq, "order");
        assert_eq!(self.checksum, self.sum(), "checksum of message {seq}");
    }
}

#[test]
fn every_consumer_reads_the_same_bytes_in_place_then_disconnected() {
    let (mut tx, mut rx) = Channel::<Tagged>::broadcast()
        .capacity(16)
        .max_consumers(3)
        .build()
        .unwrap();
    let mut rx2 = tx.subscribe().unwrap();
    let mut rx3 = tx.subscribe().unwrap();
    assert_eq!(tx.consumers(), 3);
    for seq in 0..100 {
        let mut m = tx.allocate().unwrap();
        m.fill(seq);
        m.send();
        let (a, b, c) = (rx.recv().unwrap(), rx2.recv().unwrap(), rx3.recv().unwrap());
        a.check(seq);
        assert!(core::ptr::eq(&*a, &*b) && core::ptr::eq(&*b, &*c));
        assert_eq!(a.header().sequence, seq);
    }
    tx.send(&Tagged::new(100)).unwrap();
    drop(tx);
    for rx in [&mut rx, &mut rx2, &mut rx3] {
        rx.recv().unwrap().check(100);
        assert_eq!(rx.recv().map(|_| ()), Err(RecvError::Disconnected));
        assert!(rx.is_disconnected());
    }
    assert_eq!(rx.stats().messages, 101);
}

#[test]
fn subscribe_sees_exactly_what_is_sent_after_it() {
    let (mut tx, mut rx) = Channel::<Tagged>::broadcast().capacity(8).build().unwrap();
    // Before the first send nothing is waiting for anyone.
    assert_eq!(rx.try_recv().map(|_| ()), Err(RecvError::Empty));
    for seq in 0..5 {
        tx.send(&Tagged::new(seq)).unwrap();
    }
    let mut late = tx.subscribe().unwrap();
    assert_eq!(late.try_recv().map(|_| ()), Err(RecvError::Empty));
    assert_eq!(late.len(), 0);
    for seq in 5..7 {
        tx.send(&Tagged::new(seq)).unwrap();
    }
    assert_eq!(late.len(), 2);
    assert_eq!(rx.len(), 7);
    let got: Vec<u64> = late.try_iter().map(|m| m.seq).collect();
    assert_eq!(got, [5, 6]);
    let got: Vec<u64> = rx.try_iter().map(|m| m.seq).collect();
    assert_eq!(got, [0, 1, 2, 3, 4, 5, 6]);
}

#[test]
fn consumer_limit_and_a_dropped_place_is_reused() {
    let (mut tx, rx) = Channel::<Tagged>::broadcast()
        .capacity(8)
        .max_consumers(2)
        .build()
        .unwrap();
    let rx2 = tx.subscribe().unwrap();
    assert_eq!(
        tx.subscribe().map(|_| ()),
        Err(ChannelError::TooManyConsumers { max: 2 })
    );
    drop(rx2);
    assert_eq!(tx.consumers(), 1);
    tx.send(&Tagged::new(0)).unwrap();
    let mut again = tx.subscribe().unwrap();
    tx.send(&Tagged::new(1)).unwrap();
    again.recv().unwrap().check(1);
    assert_eq!(again.try_recv().map(|_| ()), Err(RecvError::Empty));
    drop(rx);
    assert!(matches!(
        Channel::<Tagged>::broadcast().max_consumers(0).build(),
        Err(ChannelError::InvalidConsumerCount { requested: 0, .. })
    ));
    assert!(matches!(
        Channel::<Tagged>::broadcast().max_consumers(65).build(),
        Err(ChannelError::InvalidConsumerCount { max: 64, .. })
    ));
}

#[test]
fn block_waits_for_the_slowest_consumer() {
    let (mut tx, mut fast) = Channel::<Tagged>::broadcast().capacity(4).build().unwrap();
    let mut slow = tx.subscribe().unwrap();
    let mut sent = 0;
    loop {
        match tx.try_send(&Tagged::new(sent)) {
            Ok(()) => sent += 1,
            Err(SendError::Full) => break,
            Err(e) => panic!("{e}"),
        }
        // The fast consumer keeps up; only the slow one fills the ring.
        fast.recv().unwrap().check(sent - 1);
    }
    assert!(sent >= 4, "room for at least the capacity: {sent}");
    assert_eq!(
        tx.send_timeout(&Tagged::new(sent), Duration::from_millis(20)),
        Err(SendError::Timeout)
    );
    assert!(tx.stats().full >= 2);
    // The slow consumer sees everything, in order, and its releases make room.
    slow.recv().unwrap().check(0);
    tx.try_send(&Tagged::new(sent)).unwrap();
    for seq in 1..=sent {
        slow.recv().unwrap().check(seq);
    }
    fast.recv().unwrap().check(sent);
}

#[test]
fn a_waiting_producer_goes_on_when_the_slow_consumer_drops() {
    let (mut tx, mut rx) = Channel::<Tagged>::broadcast().capacity(4).build().unwrap();
    let slow = tx.subscribe().unwrap();
    let reader = std::thread::spawn(move || {
        let mut n = 0;
        while let Ok(m) = rx.recv() {
            m.check(n);
            n += 1;
        }
        n
    });
    let dropper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        drop(slow);
    });
    let t = Instant::now();
    for seq in 0..1000 {
        tx.send(&Tagged::new(seq)).unwrap();
    }
    assert!(
        t.elapsed() >= Duration::from_millis(40),
        "the slow consumer gated the producer"
    );
    drop(tx);
    dropper.join().unwrap();
    assert_eq!(reader.join().unwrap(), 1000);
}

#[test]
fn drop_lagging_cuts_off_a_consumer_that_keeps_the_ring_full() {
    let (mut tx, mut fast) = Channel::<Tagged>::broadcast()
        .capacity(4)
        .backpressure(Backpressure::DropLagging {
            after: Duration::from_millis(20),
        })
        .build()
        .unwrap();
    let mut slow = tx.subscribe().unwrap();
    let reader = std::thread::spawn(move || {
        let mut n = 0;
        while let Ok(m) = fast.recv() {
            m.check(n);
            n += 1;
        }
        n
    });
    let t = Instant::now();
    for seq in 0..200 {
        tx.send(&Tagged::new(seq)).unwrap();
    }
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(20),
        "waited `after` first: {took:?}"
    );
    // Cut off: told once, then it continues with what is sent after it was readmitted.
    assert_eq!(slow.try_recv().map(|_| ()), Err(RecvError::Lagged));
    assert_eq!(slow.try_recv().map(|_| ()), Err(RecvError::Empty));
    tx.send(&Tagged::new(200)).unwrap();
    slow.recv().unwrap().check(200);
    drop(tx);
    assert_eq!(reader.join().unwrap(), 201);
    assert_eq!(slow.recv().map(|_| ()), Err(RecvError::Disconnected));
}

/// `stats().messages` (computed from sequence numbers) keeps what a consumer received before
/// it was cut off and re-admitted, and counts what it receives after.
#[test]
fn drop_lagging_consumer_counts_messages_across_the_rejoin() {
    let (mut tx, mut fast) = Channel::<Tagged>::broadcast()
        .capacity(4)
        .backpressure(Backpressure::DropLagging {
            after: Duration::from_millis(20),
        })
        .build()
        .unwrap();
    let mut slow = tx.subscribe().unwrap();
    for seq in 0..2 {
        tx.send(&Tagged::new(seq)).unwrap();
        slow.recv().unwrap().check(seq);
    }
    assert_eq!(slow.stats().messages, 2);
    let reader = std::thread::spawn(move || {
        let mut n = 0;
        while let Ok(m) = fast.recv() {
            m.check(n);
            n += 1;
        }
        n
    });
    for seq in 2..200 {
        tx.send(&Tagged::new(seq)).unwrap();
    }
    assert_eq!(slow.try_recv().map(|_| ()), Err(RecvError::Lagged));
    assert_eq!(
        slow.stats().messages,
        2,
        "nothing counted for the messages it missed"
    );
    tx.send(&Tagged::new(200)).unwrap();
    slow.recv().unwrap().check(200);
    assert_eq!(slow.stats().messages, 3);
    assert_eq!(tx.stats().messages, 201);
    drop(tx);
    assert_eq!(reader.join().unwrap(), 201);
}

#[test]
fn drop_lagging_never_reuses_space_behind_a_held_message() {
    let (mut tx, mut rx) = Channel::<Tagged>::broadcast()
        .capacity(4)
        .backpressure(Backpressure::DropLagging {
            after: Duration::from_millis(5),
        })
        .build()
        .unwrap();
    tx.send(&Tagged::new(0)).unwrap();
    let held = rx.recv().unwrap();
    let mut sent = 1;
    let t = Instant::now();
    // Far longer than `after`: the holder still gates, the producer only times out.
    while t.elapsed() < Duration::from_millis(60) {
        match tx.send_timeout(&Tagged::new(sent), Duration::from_millis(10)) {
            Ok(()) => sent += 1,
            Err(SendError::Timeout) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        sent < 8,
        "space behind a held message was reused ({sent} sent)"
    );
    held.check(0);
    drop(held);
    // Released: the consumer now lags without a hold; once the ring is full for `after`
    // again, it is cut off.
    for seq in sent..sent + 8 {
        tx.send_timeout(&Tagged::new(seq), Duration::from_secs(5))
            .unwrap();
    }
    assert_eq!(rx.try_recv().map(|_| ()), Err(RecvError::Lagged));
}

#[test]
fn raw_broadcast_ends() {
    let (mut tx, mut rx) = Channel::raw_broadcast()
        .capacity_bytes(4096)
        .max_consumers(2)
        .build()
        .unwrap();
    let mut rx2 = tx.subscribe().unwrap();
    assert!(matches!(
        tx.subscribe(),
        Err(ChannelError::TooManyConsumers { max: 2 })
    ));
    tx.send_bytes(7, b"to every consumer").unwrap();
    let mut loan = tx.allocate_bytes(3).unwrap();
    loan.copy_from_slice(b"abc");
    loan.send(8);
    for rx in [&mut rx, &mut rx2] {
        let m = rx.recv().unwrap();
        assert_eq!((m.type_id(), m.bytes()), (7, &b"to every consumer"[..]));
        drop(m);
        let m = rx.recv().unwrap();
        assert_eq!((m.type_id(), m.bytes()), (8, &b"abc"[..]));
    }
    let max = tx.max_payload();
    assert_eq!(
        tx.try_send_bytes(1, &vec![0; max + 1]),
        Err(SendError::TooLarge { len: max + 1, max })
    );
    assert_eq!(rx.try_recv().map(|_| ()), Err(RecvError::Empty));
}

#[test]
fn parked_consumers_are_all_woken() {
    let (mut tx, rx) = Channel::<Tagged>::broadcast()
        .capacity(8)
        .wait(Wait::SpinThenPark {
            spins: 16,
            yields: 1,
        })
        .build()
        .unwrap();
    let mut ends = vec![rx, tx.subscribe().unwrap(), tx.subscribe().unwrap()];
    // The first send admits the subscribers.
    tx.send(&Tagged::new(0)).unwrap();
    let threads: Vec<_> = ends
        .drain(..)
        .map(|mut rx| {
            std::thread::spawn(move || {
                let mut n = 0;
                while let Ok(m) = rx.recv() {
                    m.check(n);
                    n += 1;
                }
                (n, rx.stats().parked)
            })
        })
        .collect();
    for seq in 1..20 {
        std::thread::sleep(Duration::from_millis(3));
        tx.send(&Tagged::new(seq)).unwrap();
    }
    let wakeups = tx.stats().wakeups;
    drop(tx);
    let mut parked = 0;
    for t in threads {
        let (n, p) = t.join().unwrap();
        assert_eq!(n, 20);
        parked += p;
    }
    assert!(
        parked > 0 && wakeups > 0,
        "parked {parked}, wake-ups {wakeups}"
    );
}

fn stress_messages() -> u64 {
    let default = if cfg!(debug_assertions) {
        200_000
    } else {
        5_000_000
    };
    std::env::var("PSYNE_BROADCAST_STRESS")
        .map_or(default, |v| v.parse().expect("PSYNE_BROADCAST_STRESS"))
}

#[test]
fn stress_three_consumers_with_checksums() {
    let n = stress_messages();
    let (mut tx, rx) = Channel::<Tagged>::broadcast()
        .capacity(64)
        .max_consumers(3)
        .build()
        .unwrap();
    let ends = vec![rx, tx.subscribe().unwrap(), tx.subscribe().unwrap()];
    let threads: Vec<_> = ends
        .into_iter()
        .enumerate()
        .map(|(i, mut rx)| {
            std::thread::spawn(move || {
                let mut next = 0u64;
                let mut sum = 0u64;
                loop {
                    // Alternate the receive paths.
                    let m = match next % 3 {
                        0 => rx.recv(),
                        1 => rx.recv_timeout(Duration::from_secs(10)),
                        _ => loop {
                            match rx.try_recv() {
                                Err(RecvError::Empty) => std::thread::yield_now(),
                                r => break r,
                            }
                        },
                    };
                    let Ok(m) = m else { break };
                    m.check(next);
                    sum = sum.wrapping_add(m.checksum);
                    if i == 2 && next.is_multiple_of(4096) {
                        // One consumer holds a message a little now and then.
                        std::thread::yield_now();
                    }
                    next += 1;
                }
                (next, sum)
            })
        })
        .collect();
    let mut expected = 0u64;
    for seq in 0..n {
        let mut m = tx.allocate().unwrap();
        m.fill(seq);
        expected = expected.wrapping_add(m.checksum);
        m.send();
    }
    drop(tx);
    for t in threads {
        assert_eq!(t.join().unwrap(), (n, expected));
    }
}

// ---- shared memory, across processes ----

const ROLE: &str = "PSYNE_BROADCAST_ROLE";
const NAME: &str = "PSYNE_BROADCAST_NAME";

#[path = "common/peer.rs"]
mod peer;
use peer::{Cleanup, Peer};

fn unique(tag: &str) -> String {
    peer::unique("bcast", tag)
}

/// Starts this test binary as a consumer process with `role` on channel `name` and waits for
/// its `READY` line; it is killed when dropped.
fn spawn(role: &str, name: &str) -> Peer {
    let peer = Peer::spawn(
        "broadcast_child",
        &[(ROLE, role.to_owned()), (NAME, name.to_owned())],
    );
    peer.ready();
    peer
}

/// The consumer processes. Does nothing unless started by [`spawn`].
#[test]
fn broadcast_child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let name = std::env::var(NAME).unwrap();
    let mut rx = Channel::<Tagged>::open_broadcast_consumer(&name).expect("open a consumer");
    println!("READY");
    match role.as_str() {
        // Everything until the producer is gone: the count and the first sequence number.
        "drain" => {
            let mut first = None;
            let mut n = 0u64;
            while let Ok(m) = rx.recv() {
                let f = *first.get_or_insert(m.seq);
                m.check(f + n);
                n += 1;
            }
            println!("COUNT {n} FIRST {}", first.unwrap_or(u64::MAX));
        }
        // Receive one message, then hold it (never release) until killed.
        "hold" => {
            let m = rx.recv().unwrap();
            println!("HOLDING {}", m.seq);
            std::thread::sleep(Duration::from_secs(60));
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn shared_consumers_in_two_processes_and_a_third_is_refused() {
    let name = unique("two");
    let _cleanup = Cleanup(name.clone());
    let mut tx = Channel::<Tagged>::broadcast()
        .capacity(32)
        .max_consumers(2)
        .shared(&name)
        .create_producer()
        .unwrap();
    let a = spawn("drain", &name);
    let b = spawn("drain", &name);
    assert_eq!(
        Channel::<Tagged>::open_broadcast_consumer(&name).map(|_| ()),
        Err(OpenError::TooManyConsumers { max: 2 })
    );
    assert_eq!(tx.consumers(), 2);
    const N: u64 = 20_000;
    for seq in 0..N {
        let mut m = tx.allocate().unwrap();
        m.fill(seq);
        m.send();
    }
    drop(tx);
    for p in [&a, &b] {
        assert_eq!(p.wait_for("COUNT"), format!("{N} FIRST 0"));
    }
    assert!(a.finish().success());
    assert!(b.finish().success());
}

#[test]
fn a_killed_consumer_stops_gating_within_100_ms() {
    let name = unique("kill");
    let _cleanup = Cleanup(name.clone());
    let mut tx = Channel::<Tagged>::broadcast()
        .capacity(8)
        .max_consumers(2)
        .shared(&name)
        .create_producer()
        .unwrap();
    for round in 0..3 {
        let holder = spawn("hold", &name);
        let first = tx.stats().messages;
        tx.send(&Tagged::new(first)).unwrap();
        assert_eq!(holder.wait_for("HOLDING"), first.to_string());
        // It holds its message: the ring fills and the producer waits for it.
        let mut sent = 1;
        while tx.try_send(&Tagged::new(first + sent)).is_ok() {
            sent += 1;
        }
        assert_eq!(
            tx.send_timeout(&Tagged::new(first + sent), Duration::from_millis(30)),
            Err(SendError::Timeout),
            "round {round}"
        );
        holder.kill();
        let t = Instant::now();
        tx.send_timeout(&Tagged::new(first + sent), Duration::from_secs(5))
            .unwrap();
        let took = t.elapsed();
        assert!(took < Duration::from_millis(100), "round {round}: {took:?}");
    }
    // Its place is free again: another process opens it.
    let c = spawn("drain", &name);
    tx.send(&Tagged::new(1000)).unwrap();
    drop(tx);
    assert_eq!(c.wait_for("COUNT"), "1 FIRST 1000");
    assert!(c.finish().success());
}

// ---- property test against a model ----

mod model {
    use super::Tagged;
    use proptest::prelude::*;
    use psyne::{
        BroadcastConsumer, BroadcastProducer, Channel, ChannelError, RecvError, SendError,
    };
    use std::collections::VecDeque;

    const CAPACITY: usize = 6;
    const MAX: usize = 3;

    #[derive(Clone, Debug)]
    enum Op {
        /// `try_send`: every live consumer then expects it.
        Send,
        /// `try_recv` on consumer `i` (modulo the live ones).
        Recv(usize),
        /// `try_recv` on consumer `i` and hold the message across a `try_send`.
        RecvHoldSend(usize),
        /// `subscribe`.
        Subscribe,
        /// Drop consumer `i`.
        Drop(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => Just(Op::Send),
            5 => (0..MAX).prop_map(Op::Recv),
            1 => (0..MAX).prop_map(Op::RecvHoldSend),
            1 => Just(Op::Subscribe),
            1 => (0..MAX).prop_map(Op::Drop),
        ]
    }

    /// Checks a received message against the model queue of that consumer.
    fn expect(rx: &mut BroadcastConsumer<Tagged>, q: &mut VecDeque<u64>) -> Result<(), String> {
        match (rx.try_recv(), q.pop_front()) {
            (Ok(m), Some(seq)) if m.seq == seq && m.checksum == m.sum() => Ok(()),
            (Err(RecvError::Empty), None) => Ok(()),
            (r, want) => Err(format!("got {:?}, model {want:?}", r.map(|m| m.seq))),
        }
    }

    /// `try_send` of message `*seq`, checked against the model queues (each with the messages
    /// its consumer holds but has not released).
    fn send(
        tx: &mut BroadcastProducer<Tagged>,
        seq: &mut u64,
        queues: &mut [(&mut VecDeque<u64>, usize)],
    ) -> Result<(), TestCaseError> {
        match tx.try_send(&Tagged::new(*seq)) {
            Ok(()) => {
                for (q, _) in queues.iter_mut() {
                    q.push_back(*seq);
                }
                *seq += 1;
            }
            Err(SendError::Full) => {
                // Full only when some consumer has at least the capacity unreleased.
                let slowest = queues.iter().map(|(q, h)| q.len() + h).max().unwrap_or(0);
                prop_assert!(slowest >= CAPACITY, "Full with {} unreleased", slowest);
            }
            Err(e) => return Err(TestCaseError::fail(format!("{e}"))),
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn broadcast_matches_a_model(ops in proptest::collection::vec(op(), 1..200)) {
            let (mut tx, rx) = Channel::<Tagged>::broadcast()
                .capacity(CAPACITY)
                .max_consumers(MAX)
                .build()
                .unwrap();
            let mut ends: Vec<(BroadcastConsumer<Tagged>, VecDeque<u64>)> =
                vec![(rx, VecDeque::new())];
            let mut seq = 0u64;
            for op in ops {
                match op {
                    Op::Send => {
                        let mut queues: Vec<_> = ends.iter_mut().map(|(_, q)| (q, 0)).collect();
                        send(&mut tx, &mut seq, &mut queues)?;
                    }
                    Op::Recv(i) if !ends.is_empty() => {
                        let n = ends.len();
                        let (rx, q) = &mut ends[i % n];
                        expect(rx, q).map_err(TestCaseError::fail)?;
                    }
                    Op::RecvHoldSend(i) if !ends.is_empty() => {
                        let n = ends.len();
                        let (mut rx, mut q) = ends.swap_remove(i % n);
                        let held = rx.try_recv();
                        let want = q.pop_front();
                        prop_assert_eq!(held.as_ref().ok().map(|m| m.seq), want);
                        // Sending while it is held: the holder still gates with its message.
                        let mut queues: Vec<_> = ends.iter_mut().map(|(_, q)| (q, 0)).collect();
                        queues.push((&mut q, usize::from(want.is_some())));
                        send(&mut tx, &mut seq, &mut queues)?;
                        drop(queues);
                        drop(held);
                        ends.push((rx, q));
                    }
                    Op::Subscribe => match tx.subscribe() {
                        Ok(rx) => {
                            prop_assert!(ends.len() < MAX);
                            ends.push((rx, VecDeque::new()));
                        }
                        Err(ChannelError::TooManyConsumers { max }) => {
                            prop_assert_eq!((max, ends.len()), (MAX, MAX));
                        }
                        Err(e) => return Err(TestCaseError::fail(format!("{e}"))),
                    },
                    Op::Drop(i) if !ends.is_empty() => {
                        let n = ends.len();
                        ends.swap_remove(i % n);
                    }
                    _ => {}
                }
                prop_assert_eq!(tx.consumers(), ends.len());
            }
            drop(tx);
            for (rx, q) in &mut ends {
                while !q.is_empty() {
                    expect(rx, q).map_err(TestCaseError::fail)?;
                }
                prop_assert_eq!(rx.try_recv().map(|_| ()), Err(RecvError::Disconnected));
            }
        }
    }
}
