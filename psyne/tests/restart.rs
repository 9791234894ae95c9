//! Restart after a crash (issue 10 item 5): an end of a shared channel that was dropped, or
//! whose process was killed with SIGKILL, is opened again by a new process (or by the same
//! one), and the surviving end, never rebuilt, carries on with the new peer.
//!
//! What every test here checks of the messages the survivor receives: each one is complete
//! (its checksum over the whole payload holds), its payload's sequence number equals its
//! header's, and the header sequence numbers run 0, 1, 2, ... without a gap or a repeat across
//! every crash and restart (the one repeat allowed is the message a dead consumer held
//! unreleased, which its successor receives again). A half-written message (a producer killed
//! inside a loan) is never delivered: its checksum would fail and its sequence number would
//! repeat.
//!
//! The peer processes are this test binary itself, started with `--exact restart_child` and the
//! environment variable `PSYNE_RESTART_ROLE` (plus the channel name and parameters);
//! `restart_child` returns at once when that variable is absent. Each peer reports progress on
//! its stdout as lines `restart: WORD ...`, which the test waits for with a deadline. Every
//! shared name is unique and removed when its test ends, even if it fails.
//!
//! `PSYNE_RESTART_SEED` picks the random kill points (default fixed; each round prints its
//! parameters), `PSYNE_RESTART_ROUNDS` the number of producer crashes (default 20).

use psyne::{Channel, MessageHeader, OpenError, PsyneMessage, RecvError, SendError};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

const ROLE: &str = "PSYNE_RESTART_ROLE";
const NAME: &str = "PSYNE_RESTART_NAME";
const START: &str = "PSYNE_RESTART_START";
const COUNT: &str = "PSYNE_RESTART_COUNT";

/// How long a test waits for a peer's report, or a peer for a message, before failing.
const PATIENCE: Duration = Duration::from_secs(20);

/// One message: 152 bytes, so a record is 192 bytes, which does not divide the power-of-two
/// ring: wrap fillers appear, and a recovering producer has to follow them.
#[derive(Clone, Copy, Debug, PsyneMessage)]
#[repr(C)]
struct Record {
    seq: u64,
    words: [u64; 17],
    checksum: u64,
}

/// A well-mixed 64-bit function of `x` (splitmix64's finaliser).
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Word `i` of message `seq`.
fn word(seq: u64, i: usize) -> u64 {
    mix(seq.wrapping_mul(64).wrapping_add(i as u64))
}

/// The checksum of a message: over its sequence number and every word.
fn checksum(seq: u64, words: &[u64; 17]) -> u64 {
    words
        .iter()
        .fold(mix(!seq), |h, &w| (h ^ w).wrapping_mul(0x100_0000_01B3))
}

/// Writes the whole message `seq` into `m`.
fn write(m: &mut Record, seq: u64) {
    m.seq = seq;
    for (i, w) in m.words.iter_mut().enumerate() {
        *w = word(seq, i);
    }
    m.checksum = checksum(seq, &m.words);
}

/// Writes half of message `seq` into `m` (the sequence number, the first words and the full
/// message's checksum): what a producer killed in the middle of writing leaves behind.
fn write_half(m: &mut Record, seq: u64) {
    m.seq = seq;
    for (i, w) in m.words.iter_mut().enumerate().take(8) {
        *w = word(seq, i);
    }
    let mut full = m.words;
    for (i, w) in full.iter_mut().enumerate().skip(8) {
        *w = word(seq, i);
    }
    m.checksum = checksum(seq, &full);
}

/// Checks a received message against the sequence number it must have: payload and header
/// agree, and the payload is whole.
fn verify(m: &Record, header: MessageHeader, expected: u64) {
    assert_eq!(header.sequence, expected, "header sequence");
    assert_eq!(m.seq, expected, "payload sequence");
    assert_eq!(
        m.checksum,
        checksum(m.seq, &m.words),
        "message {expected} is not whole"
    );
}

/// A fresh value of `m` holding message `seq`.
fn record(seq: u64) -> Record {
    let mut m: Record = psyne::bytemuck::Zeroable::zeroed();
    write(&mut m, seq);
    m
}

#[path = "common/peer.rs"]
mod peer;
use peer::Cleanup;

fn unique(tag: &str) -> String {
    peer::unique("restart", tag)
}

/// xorshift64*: the seeded choice of kill points.
struct Rng(u64);

impl Rng {
    fn from_env(salt: u64) -> Self {
        let seed = std::env::var("PSYNE_RESTART_SEED").map_or(0x2545_F491_4F6C_DD1D, |s| {
            s.parse().expect("PSYNE_RESTART_SEED")
        });
        println!("seed {seed} (PSYNE_RESTART_SEED)");
        Rng(mix(seed ^ salt) | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// A peer process: this test binary in a role, reporting lines `restart: WORD ...`; killed when
/// dropped.
struct Peer(peer::Peer);

impl Peer {
    /// Starts the peer with `role` on channel `name`.
    fn spawn(role: &str, name: &str, env: &[(&str, u64)]) -> Peer {
        let mut vars = vec![(ROLE, role.to_owned()), (NAME, name.to_owned())];
        vars.extend(env.iter().map(|(k, v)| (*k, v.to_string())));
        Peer(peer::Peer::spawn("restart_child", &vars))
    }

    /// Waits for the next report, which must start with `word`; returns the rest of the line.
    fn expect(&self, word: &str) -> String {
        self.0.expect("restart: ", word)
    }

    /// The peer's process id.
    fn pid(&self) -> u32 {
        self.0.pid()
    }

    /// SIGKILL, then reaps the process.
    fn kill(self) {
        self.0.kill()
    }

    /// Waits (with a deadline) for the peer to exit on its own.
    fn finish(self) -> ExitStatus {
        self.0.finish()
    }
}

fn env_u64(key: &str) -> u64 {
    std::env::var(key).map_or(0, |v| v.parse().expect(key))
}

/// The peer process. Does nothing unless started by [`Peer::spawn`]. Every role panics (exit
/// status 101) on anything unexpected, which the test reports.
#[test]
fn restart_child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let name = std::env::var(NAME).expect(NAME);
    let start = env_u64(START);
    let count = env_u64(COUNT);
    match role.as_str() {
        // Opens the producer, says READY, sends messages `start ..` until killed.
        "stream" => {
            let mut tx = Channel::<Record>::open_producer(&name).expect("open_producer");
            println!("restart: READY");
            for seq in start.. {
                let mut m = tx.allocate_timeout(PATIENCE).expect("allocate");
                write(&mut m, seq);
                m.send();
            }
        }
        // Opens the producer, says READY, sends `count` messages from `start`, then takes a
        // loan, writes half of message `start + count` into it, says IN_LOAN and sleeps until
        // killed.
        "produce_then_die_in_loan" => {
            let mut tx = Channel::<Record>::open_producer(&name).expect("open_producer");
            println!("restart: READY");
            for seq in start..start + count {
                let mut m = tx.allocate_timeout(PATIENCE).expect("allocate");
                write(&mut m, seq);
                m.send();
            }
            let mut m = tx.allocate_timeout(PATIENCE).expect("allocate");
            write_half(&mut m, start + count);
            println!("restart: IN_LOAN");
            std::thread::sleep(Duration::from_secs(60));
            m.send(); // never reached: the test kills us first
        }
        // Opens the producer, says READY, sends `count` messages from `start`, and exits (its
        // end is dropped: a clean leave).
        "produce" => {
            let mut tx = Channel::<Record>::open_producer(&name).expect("open_producer");
            println!("restart: READY");
            for seq in start..start + count {
                tx.send_timeout(&record(seq), PATIENCE).expect("send");
            }
        }
        // Opens the producer, says READY and holds it until killed.
        "hold_producer" => {
            let _tx = Channel::<Record>::open_producer(&name).expect("open_producer");
            println!("restart: READY");
            std::thread::sleep(Duration::from_secs(60));
        }
        // Opens the consumer, says READY, receives `count` messages from `start`, then receives
        // the next one, says HOLDING with its sequence number and sleeps holding it, unreleased,
        // until killed.
        "consume_then_die_holding" => {
            let mut rx = Channel::<Record>::open_consumer(&name).expect("open_consumer");
            println!("restart: READY");
            for seq in start..start + count {
                let m = rx.recv_timeout(PATIENCE).expect("recv");
                verify(&m, m.header(), seq);
            }
            let held = rx.recv_timeout(PATIENCE).expect("recv");
            verify(&held, held.header(), start + count);
            println!("restart: HOLDING {}", held.header().sequence);
            std::thread::sleep(Duration::from_secs(60));
            drop(held); // never reached: the test kills us first
        }
        // Opens the consumer, says READY, receives `count` messages from `start`, says GOT with
        // the first and last sequence numbers, and exits (a clean leave).
        "consume" => {
            let mut rx = Channel::<Record>::open_consumer(&name).expect("open_consumer");
            println!("restart: READY");
            let (mut first, mut last) = (None, None);
            for seq in start..start + count {
                let m = rx.recv_timeout(PATIENCE).expect("recv");
                verify(&m, m.header(), seq);
                first.get_or_insert(seq);
                last = Some(seq);
            }
            println!("restart: GOT {} {}", first.unwrap_or(0), last.unwrap_or(0));
        }
        other => panic!("unknown role {other}"),
    }
}

/// Receives from `rx` until `Disconnected`, checking that the messages continue at `*next`;
/// returns how many came and how long `Disconnected` took after `since`.
fn drain_until_disconnected(
    rx: &mut psyne::Consumer<Record>,
    next: &mut u64,
    since: Instant,
) -> (u64, Duration) {
    let mut got = 0;
    loop {
        match rx.recv_timeout(PATIENCE) {
            Ok(m) => {
                verify(&m, m.header(), *next);
                *next += 1;
                got += 1;
            }
            Err(RecvError::Disconnected) => return (got, since.elapsed()),
            Err(e) => panic!("after message {}: {e}", *next),
        }
    }
}

/// Guards: a producer process killed with SIGKILL at a random point of its stream (while it
/// writes, waits for space, or sits inside a loan with half a message written) loses nothing it
/// published and leaks nothing it did not; the consumer, never rebuilt, drains, gets
/// `Disconnected` once the death is detected, and then receives the messages of a new producer
/// process that opened the same end, with sequence numbers continuing exactly where the dead
/// one's published messages stopped. Twenty crashes on one channel by default: the even rounds
/// kill inside a loan (after a random number of messages, a random part of them unread), the
/// odd ones after a random time streaming.
#[test]
fn killed_producer_is_replaced_and_the_consumer_continues_unrebuilt() {
    let name = unique("producer");
    let _cleanup = Cleanup(name.clone());
    let rounds = std::env::var("PSYNE_RESTART_ROUNDS").map_or(20, |v| v.parse().unwrap());
    let mut rng = Rng::from_env(1);
    let mut rx = Channel::<Record>::builder()
        .capacity(16)
        .shared(&name)
        .create_consumer()
        .unwrap();
    let capacity = ((rx.capacity_bytes() - 64) / 192) as u64;
    let mut next = 0u64;
    let (mut in_loan, mut slowest) = (0, Duration::ZERO);
    for round in 0..rounds {
        // Producer A: killed at a random point.
        let from = next;
        let mut published = None;
        let since = if round % 2 == 0 {
            // Inside a loan, with up to a ring's worth of messages published and unread.
            let before = rng.below(200);
            // `unread` and the loan must fit in the ring at once, whatever the wrap filler.
            let unread = rng.below(capacity - 2).min(before);
            let a = Peer::spawn(
                "produce_then_die_in_loan",
                &name,
                &[(START, next), (COUNT, before)],
            );
            a.expect("READY");
            for _ in 0..before - unread {
                let m = rx.recv_timeout(PATIENCE).unwrap();
                verify(&m, m.header(), next);
                next += 1;
            }
            a.expect("IN_LOAN");
            a.kill();
            in_loan += 1;
            published = Some(before);
            println!(
                "round {round}: A sent {before} (left {unread} unread), killed inside a loan \
                 (half of message {} written)",
                from + before
            );
            Instant::now()
        } else {
            // While it streams and the consumer reads.
            let delay = Duration::from_micros(rng.below(20_000));
            let a = Peer::spawn("stream", &name, &[(START, next)]);
            a.expect("READY");
            let killer = std::thread::spawn(move || {
                std::thread::sleep(delay);
                let killing = Instant::now();
                a.kill();
                (killing, Instant::now())
            });
            let mut disconnected = None;
            while !killer.is_finished() {
                match rx.recv_timeout(Duration::from_millis(1)) {
                    Ok(m) => {
                        verify(&m, m.header(), next);
                        next += 1;
                    }
                    Err(RecvError::Timeout) => {}
                    // Detected while the killer reaps A.
                    Err(RecvError::Disconnected) => {
                        disconnected = Some(Instant::now());
                        break;
                    }
                    Err(e) => panic!("while A streams: {e}"),
                }
            }
            let (killing, killed) = killer.join().unwrap();
            if let Some(at) = disconnected {
                assert!(at >= killing, "Disconnected before the kill");
            }
            println!("round {round}: A streamed for {delay:.2?}, killed");
            killed.min(disconnected.unwrap_or(killed))
        };
        let (drained, took) = drain_until_disconnected(&mut rx, &mut next, since);
        slowest = slowest.max(took);
        if let Some(before) = published {
            assert_eq!(
                next - from,
                before,
                "every message A published is delivered"
            );
        }
        println!(
            "  consumer: {} of A's messages in all ({drained} after the kill), Disconnected \
             {took:.2?} after it",
            next - from
        );
        assert!(rx.is_disconnected());
        assert_eq!(rx.try_recv().unwrap_err(), RecvError::Disconnected);
        assert_eq!(rx.len(), 0);

        // Producer B: opens the same end and continues the stream, then leaves cleanly.
        let count = 1 + rng.below(100);
        let b = Peer::spawn("produce", &name, &[(START, next), (COUNT, count)]);
        b.expect("READY");
        let from_b = next;
        let (got, _) = drain_until_disconnected(&mut rx, &mut next, Instant::now());
        assert_eq!(got, count, "B's messages");
        assert!(b.finish().success(), "B failed");
        println!("  B sent {count}: received {from_b}..={}", next - 1);
    }
    println!(
        "{rounds} producer crashes ({in_loan} inside a loan): {next} messages received whole, in \
         order, none twice; Disconnected at most {slowest:.2?} after a kill"
    );
    assert_eq!(rx.stats().messages, next);
}

/// Guards: a consumer process killed with SIGKILL while it holds a received message, not
/// released, is replaced by a new consumer process that receives that message again and then
/// the rest in order; the producer (the creating end, never rebuilt) keeps sending into free
/// space until it finds the ring full, reports the dead consumer (`is_disconnected`, then
/// `Disconnected` from `try_allocate`), and sends again once the new consumer attached.
#[test]
fn killed_consumer_is_replaced_and_the_held_message_comes_again() {
    let name = unique("consumer");
    let _cleanup = Cleanup(name.clone());
    let mut rng = Rng::from_env(2);
    let mut tx = Channel::<Record>::builder()
        .capacity(16)
        .shared(&name)
        .create_producer()
        .unwrap();
    let capacity = ((tx.capacity_bytes() - 64) / 192) as u64;
    let (mut sent, mut next) = (0u64, 0u64);
    for round in 0..5 {
        // Consumer C1 receives a few, then dies holding the next one.
        let received = rng.below(capacity / 2);
        let c1 = Peer::spawn(
            "consume_then_die_holding",
            &name,
            &[(START, next), (COUNT, received)],
        );
        c1.expect("READY");
        while sent < next + received + 1 + rng.below(capacity / 4) {
            tx.send_timeout(&record(sent), PATIENCE).unwrap();
            sent += 1;
        }
        let held: u64 = c1.expect("HOLDING").parse().unwrap();
        assert_eq!(held, next + received);
        c1.kill();

        // Nobody reads: sends succeed while there is room, and end when the ring is full (`Full`,
        // or `Disconnected` once the check of the consumer's process has run).
        let before = sent;
        let stopped = loop {
            match tx.try_allocate() {
                Ok(mut m) => {
                    write(&mut m, sent);
                    m.send();
                    sent += 1;
                }
                Err(e) => break e,
            }
        };
        assert!(
            matches!(stopped, SendError::Full | SendError::Disconnected),
            "{stopped}"
        );
        assert!(sent > before, "the ring had room after the kill");
        // `held .. sent` are unreleased: the ring holds all of them (one ring's worth).
        assert!(sent - held <= capacity, "{} > {capacity}", sent - held);
        assert!(tx.is_disconnected());
        assert_eq!(tx.try_allocate().unwrap_err(), SendError::Disconnected);
        println!(
            "round {round}: C1 received {received}, died holding {held}; the producer then sent \
             {} more until {stopped:?}",
            sent - before
        );

        // Consumer C2 takes the end over: the held message again, then the rest; the producer
        // sends more meanwhile.
        let more = 1 + rng.below(3 * capacity);
        let c2 = Peer::spawn(
            "consume",
            &name,
            &[(START, held), (COUNT, sent + more - held)],
        );
        c2.expect("READY");
        assert!(!tx.is_disconnected());
        for _ in 0..more {
            tx.send_timeout(&record(sent), PATIENCE).unwrap();
            sent += 1;
        }
        assert_eq!(c2.expect("GOT"), format!("{held} {}", sent - 1));
        assert!(c2.finish().success(), "C2 failed");
        next = sent;
        println!(
            "  C2 received {held}..={} (the held one again first)",
            sent - 1
        );
    }
    assert_eq!(tx.stats().messages, sent);
}

/// Guards: in one process, an opened end that is dropped can be opened again: a producer
/// dropped with a loan half written (and never sent) leaves every message it sent for the
/// consumer and nothing of the loan; the reopened producer continues the sequence. A consumer
/// dropped while a received message was never released (leaked) leaves that message for the
/// reopened consumer. The creating ends are never rebuilt.
#[test]
fn dropped_ends_reopen_in_the_same_process() {
    // The producer side: the creator is the consumer.
    let name = unique("same-producer");
    let _cleanup = Cleanup(name.clone());
    let mut rx = Channel::<Record>::builder()
        .capacity(16)
        .shared(&name)
        .create_consumer()
        .unwrap();
    let mut next = 0;
    for round in 0..4u64 {
        let mut tx = Channel::<Record>::open_producer(&name).unwrap();
        assert!(!rx.is_disconnected());
        let count = 3 + round * 7; // past the ring's end from the second round on
        let base = next;
        for seq in base..base + count {
            tx.send_timeout(&record(seq), PATIENCE).unwrap();
            if seq % 4 == 3 {
                // Keep the ring from filling: read what was sent so far.
                while let Ok(m) = rx.try_recv() {
                    verify(&m, m.header(), next);
                    next += 1;
                }
            }
        }
        let mut loan = tx.try_allocate().unwrap();
        write_half(&mut loan, base + count);
        drop(loan); // never sent: as if the program had stopped mid-write
        drop(tx);
        assert!(rx.is_disconnected());
        drain_until_disconnected(&mut rx, &mut next, Instant::now());
        assert_eq!(next, base + count);
        assert_eq!(rx.try_recv().unwrap_err(), RecvError::Disconnected);
    }
    assert_eq!(next, (0..4).map(|r| 3 + r * 7).sum::<u64>());

    // The consumer side: the creator is the producer.
    let name = unique("same-consumer");
    let _cleanup = Cleanup(name.clone());
    let mut tx = Channel::<Record>::builder()
        .capacity(16)
        .shared(&name)
        .create_producer()
        .unwrap();
    let (mut sent, mut next) = (0, 0);
    for _ in 0..4 {
        let mut rx = Channel::<Record>::open_consumer(&name).unwrap();
        assert!(!tx.is_disconnected());
        for _ in 0..5 {
            tx.try_send(&record(sent)).unwrap();
            sent += 1;
        }
        for _ in 0..3 {
            let m = rx.try_recv().unwrap();
            verify(&m, m.header(), next);
            next += 1;
        }
        let held = rx.try_recv().unwrap();
        verify(&held, held.header(), next);
        std::mem::forget(held); // never released
        drop(rx);
        assert!(tx.is_disconnected());
        assert_eq!(
            tx.try_send(&record(sent)).unwrap_err(),
            SendError::Disconnected
        );
        // The next consumer receives message `next` (the leaked one) again.
    }
    let mut rx = Channel::<Record>::open_consumer(&name).unwrap();
    assert_eq!(rx.len() as u64, sent - next);
    for m in rx.try_iter() {
        assert_eq!(m.seq, next);
        assert_eq!(m.checksum, checksum(m.seq, &m.words));
        next += 1;
    }
    assert_eq!(next, sent);
}

/// Guards: an end whose holder is alive cannot be taken: opening it fails with
/// `OpenError::AlreadyConnected` naming the holder's pid (another process's, or this one's for
/// the creating end), and succeeds once that holder has been killed.
#[test]
fn a_live_end_cannot_be_taken() {
    let name = unique("live");
    let _cleanup = Cleanup(name.clone());
    let mut rx = Channel::<Record>::builder()
        .capacity(16)
        .shared(&name)
        .create_consumer()
        .unwrap();
    // The creator's own end.
    assert_eq!(
        Channel::<Record>::open_consumer(&name).unwrap_err(),
        OpenError::AlreadyConnected {
            pid: std::process::id()
        }
    );
    // An end held by another process.
    let holder = Peer::spawn("hold_producer", &name, &[]);
    holder.expect("READY");
    assert_eq!(
        Channel::<Record>::open_producer(&name).unwrap_err(),
        OpenError::AlreadyConnected { pid: holder.pid() }
    );
    assert!(!rx.is_disconnected());
    holder.kill();
    // Dead now (the consumer has not even noticed yet): the end can be opened.
    let mut tx = Channel::<Record>::open_producer(&name).unwrap();
    tx.try_send(&record(0)).unwrap();
    let m = rx.recv_timeout(PATIENCE).unwrap();
    verify(&m, m.header(), 0);
    drop(m);
    // And this process's producer is now the live holder.
    assert_eq!(
        Channel::<Record>::open_producer(&name).unwrap_err(),
        OpenError::AlreadyConnected {
            pid: std::process::id()
        }
    );
}
