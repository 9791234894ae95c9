//! Cross-process channels over shared memory: a million messages between two processes, every
//! open-time check (type, layout, version, missing name, attach races), `kill -9` of either end
//! (the survivor gets `Disconnected` within 100 ms, measured), stale names left by a crashed
//! creator, and a seeded fuzz of the control block and headers (typed errors only: no panic, no
//! hang, no out-of-bounds access).
//!
//! The second process is this test binary itself, started with `--exact ipc_child` and the
//! environment variable `PSYNE_IPC_ROLE` (plus the channel name and parameters); `ipc_child`
//! returns at once when that variable is absent, so a normal run just passes it.
//!
//! Every shared name is unique (`psyne-ipc-<pid>-<tag>-<counter>`) and removed at the end of its
//! test even if the test fails ([`Cleanup`]).

use psyne::{
    Channel, CreateError, Message, OpenError, PsyneMessage, RecvError, SendError, Slab, ring,
};
use std::time::{Duration, Instant};

const ROLE: &str = "PSYNE_IPC_ROLE";
const NAME: &str = "PSYNE_IPC_NAME";
const COUNT: &str = "PSYNE_IPC_COUNT";
const START: &str = "PSYNE_IPC_START";

/// Longest a survivor may take to report a dead peer.
const DEATH_BOUND: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, Debug, PsyneMessage)]
#[repr(C)]
struct Sample {
    seq: u64,
    checksum: u64,
    data: [u64; 6],
}

/// Same name (so same type id) as `Sample`, another layout.
#[derive(Clone, Copy, Debug, PsyneMessage)]
#[repr(C)]
#[psyne(name = "Sample")]
struct SampleV2 {
    seq: u64,
    checksum: u64,
    data: [u64; 5],
    extra: u64,
}

#[derive(Clone, Copy, Debug, PsyneMessage)]
#[repr(C)]
struct Other {
    x: [f32; 4],
}

#[path = "common/mix.rs"]
mod mix;
use mix::splitmix;

fn checksum(seq: u64, data: &[u64; 6]) -> u64 {
    data.iter()
        .fold(splitmix(seq), |h, &d| (h ^ d).wrapping_mul(0x100_0000_01B3))
}

fn fill(m: &mut Sample, seq: u64) {
    m.seq = seq;
    for (i, d) in m.data.iter_mut().enumerate() {
        *d = splitmix(seq.wrapping_add(i as u64));
    }
    m.checksum = checksum(seq, &m.data);
}

/// Checks a received sample: its sequence number, header and checksum (a torn or half-written
/// message fails here).
fn check(m: &Sample, header: &psyne::MessageHeader, expected: u64) {
    assert_eq!(m.seq, expected, "sequence");
    assert_eq!(header.sequence, expected, "header sequence");
    assert_eq!(
        m.checksum,
        checksum(m.seq, &m.data),
        "checksum of {expected}"
    );
}

#[path = "common/peer.rs"]
mod peer;
use peer::{Cleanup, Peer};

fn unique(tag: &str) -> String {
    peer::unique("ipc", tag)
}

/// Starts this test binary as the peer process with `role` on channel `name`.
fn spawn(role: &str, name: &str, env: &[(&str, String)]) -> Peer {
    let mut vars = vec![(ROLE, role.to_owned()), (NAME, name.to_owned())];
    vars.extend(env.iter().map(|(k, v)| (*k, v.clone())));
    Peer::spawn("ipc_child", &vars)
}

/// Opens with a few retries (the parent creates before spawning, but be generous).
fn open_retry<R>(f: impl Fn() -> Result<R, OpenError>) -> R {
    let start = Instant::now();
    loop {
        match f() {
            Ok(r) => return r,
            Err(e) if start.elapsed() > Duration::from_secs(5) => panic!("open: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// The peer process. Does nothing unless started by `spawn`.
#[test]
fn ipc_child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let name = std::env::var(NAME).unwrap();
    let count: u64 = std::env::var(COUNT).map_or(0, |c| c.parse().unwrap());
    match role.as_str() {
        // Sends `count` samples, then drops its end (a clean exit).
        "produce" => {
            let mut tx = open_retry(|| Channel::<Sample>::open_producer(&name));
            for seq in 0..count {
                let mut m = tx.allocate().expect("allocate");
                fill(&mut m, seq);
                m.send();
            }
        }
        // Sends until killed (or until the consumer goes away).
        "stream" => {
            let mut tx = open_retry(|| Channel::<Sample>::open_producer(&name));
            for seq in 0.. {
                let Ok(mut m) = tx.allocate() else { break };
                fill(&mut m, seq);
                m.send();
            }
        }
        // Sends `count` samples, then says READY and sleeps until killed.
        "burst_then_hang" => {
            let mut tx = open_retry(|| Channel::<Sample>::open_producer(&name));
            for seq in 0..count {
                let mut m = tx.allocate().expect("allocate");
                fill(&mut m, seq);
                m.send();
            }
            println!("READY");
            std::thread::sleep(Duration::from_secs(60));
        }
        // Receives `count` samples, then says READY and sleeps until killed.
        "consume_then_hang" => {
            let mut rx = open_retry(|| Channel::<Sample>::open_consumer(&name));
            for seq in 0..count {
                let m = rx.recv_timeout(Duration::from_secs(10)).expect("recv");
                check(&m, &m.header(), seq);
            }
            println!("READY");
            std::thread::sleep(Duration::from_secs(60));
        }
        // Opens the consumer at the instant START (CLOCK_MONOTONIC ns): exit 0 and hold the end
        // for a second if it won, exit 3 if it got AlreadyConnected, 4 otherwise.
        "race" => {
            let start: u64 = std::env::var(START).unwrap().parse().unwrap();
            while psyne::channel::monotonic_ns() < start {
                std::hint::spin_loop();
            }
            match Channel::<Sample>::open_consumer(&name) {
                Ok(rx) => {
                    std::thread::sleep(Duration::from_secs(1));
                    drop(rx);
                    std::process::exit(0);
                }
                Err(OpenError::AlreadyConnected { .. }) => std::process::exit(3),
                Err(e) => {
                    eprintln!("race: {e}");
                    std::process::exit(4);
                }
            }
        }
        // Creates the channel (producer end), says READY and sleeps until killed.
        "create_and_hang" => {
            let mut tx = Channel::<Sample>::builder()
                .capacity(16)
                .shared(&name)
                .create_producer()
                .expect("create");
            let mut m = tx.allocate().unwrap();
            fill(&mut m, 0);
            m.send();
            println!("READY");
            std::thread::sleep(Duration::from_secs(60));
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn million_messages_across_processes() {
    const N: u64 = 1_000_000;
    let name = unique("million");
    let _cleanup = Cleanup(name.clone());
    let mut rx = Channel::<Sample>::builder()
        .capacity(1024)
        .shared(&name)
        .create_consumer()
        .unwrap();
    let child = spawn("produce", &name, &[(COUNT, N.to_string())]);
    let mut first = None;
    for seq in 0..N {
        let m = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("message {seq}: {e}"));
        first.get_or_insert_with(Instant::now);
        check(&m, &m.header(), seq);
    }
    let elapsed = first.unwrap().elapsed();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap_err(),
        RecvError::Disconnected
    );
    assert!(child.finish().success());
    let stats = rx.stats();
    assert_eq!(stats.messages, N);
    println!(
        "1M messages of {} bytes across processes: {:.2?} ({:.2} M msg/s, {:.0} MB/s, this \
         build's profile); consumer {stats:?}",
        size_of::<Sample>(),
        elapsed,
        N as f64 / elapsed.as_secs_f64() / 1e6,
        (N * size_of::<Sample>() as u64) as f64 / elapsed.as_secs_f64() / 1e6
    );
}

#[test]
fn type_and_layout_mismatches_are_named() {
    let name = unique("types");
    let _cleanup = Cleanup(name.clone());
    let _tx = Channel::<Sample>::builder()
        .shared(&name)
        .create_producer()
        .unwrap();
    assert_eq!(
        Channel::<Other>::open_consumer(&name).unwrap_err(),
        OpenError::IncompatibleType {
            expected: Other::TYPE_ID,
            found: Sample::TYPE_ID,
            expected_name: "Other".into(),
            found_name: "Sample".into(),
        }
    );
    assert_eq!(SampleV2::TYPE_ID, Sample::TYPE_ID);
    assert_eq!(
        Channel::<SampleV2>::open_consumer(&name).unwrap_err(),
        OpenError::IncompatibleLayout {
            expected: SampleV2::FINGERPRINT,
            found: Sample::FINGERPRINT,
            name: "Sample".into(),
        }
    );
    assert_eq!(
        Channel::raw_open_consumer(&name).unwrap_err(),
        OpenError::IncompatibleType {
            expected: 0,
            found: Sample::TYPE_ID,
            expected_name: "raw".into(),
            found_name: "Sample".into(),
        }
    );
    // A refused open attaches nothing: the right type still gets the end.
    let mut rx = Channel::<Sample>::open_consumer(&name).unwrap();
    assert_eq!(rx.try_recv().unwrap_err(), RecvError::Empty);
    let e = Channel::<Other>::open_producer(&name).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("type id") && text.contains("Sample") && text.contains("Other"),
        "{e}"
    );
}

/// Writes `value` at byte `offset` of the shared slab `name` (another mapping).
fn poke<V: Copy>(name: &str, offset: usize, value: V) {
    let slab = Slab::open_shared(name).unwrap();
    assert!(offset + size_of::<V>() <= slab.len());
    // SAFETY: inside the mapping (asserted), aligned by the caller's choice of offset; no other
    // thread uses the channel meanwhile.
    unsafe {
        slab.as_ptr()
            .as_ptr()
            .add(offset)
            .cast::<V>()
            .write_volatile(value)
    };
}

#[test]
fn version_and_control_block_checks() {
    let name = unique("version");
    let _cleanup = Cleanup(name.clone());
    let _tx = Channel::<Sample>::builder()
        .shared(&name)
        .create_producer()
        .unwrap();
    poke(&name, ring::layout::VERSION, 99u32);
    assert_eq!(
        Channel::<Sample>::open_consumer(&name).unwrap_err(),
        OpenError::VersionMismatch {
            expected: ring::PROTOCOL_VERSION,
            found: 99
        }
    );
    poke(&name, ring::layout::VERSION, ring::PROTOCOL_VERSION);
    poke(&name, ring::layout::REGION_LEN, 1u64 << 40);
    assert!(matches!(
        Channel::<Sample>::open_consumer(&name).unwrap_err(),
        OpenError::Corrupted { .. }
    ));
    poke(&name, ring::layout::REGION_LEN, 3000u64);
    assert!(matches!(
        Channel::<Sample>::open_consumer(&name).unwrap_err(),
        OpenError::Corrupted { .. }
    ));
    poke(&name, ring::layout::MAGIC, 0x1234u64);
    assert_eq!(
        Channel::<Sample>::open_consumer(&name).unwrap_err(),
        OpenError::Corrupted {
            what: "magic word (not a psyne channel)"
        }
    );
}

#[test]
fn opening_a_missing_name() {
    let name = unique("missing");
    assert_eq!(
        Channel::<Sample>::open_consumer(&name).unwrap_err(),
        OpenError::NotFound { name: name.clone() }
    );
    assert_eq!(
        Channel::raw_open_producer(&name).unwrap_err(),
        OpenError::NotFound { name: name.clone() }
    );
    assert!(matches!(
        Channel::<Sample>::open_consumer("a/b").unwrap_err(),
        OpenError::Slab(psyne::SlabError::InvalidName { .. })
    ));
    // A live channel's name cannot be taken; the error names the creator.
    let _tx = Channel::<Sample>::builder()
        .shared(&name)
        .create_producer()
        .unwrap();
    let _cleanup = Cleanup(name.clone());
    assert_eq!(
        Channel::<Sample>::builder()
            .shared(&name)
            .create_consumer()
            .unwrap_err(),
        CreateError::AlreadyExists {
            name: name.clone(),
            creator_pid: Some(std::process::id())
        }
    );
}

#[test]
fn racing_consumers_exactly_one_attaches() {
    // Across processes, once.
    let name = unique("race");
    let _cleanup = Cleanup(name.clone());
    let _tx = Channel::<Sample>::builder()
        .shared(&name)
        .create_producer()
        .unwrap();
    let start = (psyne::channel::monotonic_ns() + 300_000_000).to_string();
    let a = spawn("race", &name, &[(START, start.clone())]);
    let b = spawn("race", &name, &[(START, start)]);
    let mut codes = [a.finish().code().unwrap(), b.finish().code().unwrap()];
    codes.sort();
    assert_eq!(codes, [0, 3], "one winner, one AlreadyConnected");

    // In process, with threads, many times.
    for _ in 0..100 {
        let name = unique("race-threads");
        let _cleanup = Cleanup(name.clone());
        let _tx = Channel::<Sample>::builder()
            .capacity(4)
            .shared(&name)
            .create_producer()
            .unwrap();
        let barrier = std::sync::Barrier::new(2);
        let results: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        Channel::<Sample>::open_consumer(&name)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let wins = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1);
        for r in &results {
            if let Err(e) = r {
                assert_eq!(
                    *e,
                    OpenError::AlreadyConnected {
                        pid: std::process::id()
                    }
                );
            }
        }
    }
}

#[test]
fn kill_9_of_the_producer_mid_stream() {
    let name = unique("kill-producer");
    let _cleanup = Cleanup(name.clone());
    let mut rx = Channel::<Sample>::builder()
        .capacity(64)
        .shared(&name)
        .create_consumer()
        .unwrap();
    let mut child = spawn("stream", &name, &[]);
    let mut seq = 0;
    while seq < 20_000 {
        let m = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        check(&m, &m.header(), seq);
        seq += 1;
    }
    // Kill while it streams into a full ring; every message left is whole; then Disconnected.
    child.sigkill();
    let killed = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(m) => {
                check(&m, &m.header(), seq);
                seq += 1;
            }
            Err(RecvError::Disconnected) => break,
            Err(e) => panic!("{e}"),
        }
    }
    let latency = killed.elapsed();
    println!(
        "producer killed mid-stream: consumer Disconnected after {latency:.2?} ({seq} messages)"
    );
    assert!(latency < DEATH_BOUND, "{latency:?}");
    // The child is reaped only now: until here it was a zombie, which must count as dead.
    child.finish();

    // The survivor can create a fresh channel under the same name.
    drop(rx);
    let _rx = Channel::<Sample>::builder()
        .shared(&name)
        .create_consumer()
        .unwrap();
}

#[test]
fn kill_9_of_the_producer_while_the_consumer_sleeps() {
    let name = unique("kill-producer-parked");
    let _cleanup = Cleanup(name.clone());
    let mut rx = Channel::<Sample>::builder()
        .capacity(64)
        .shared(&name)
        .create_consumer()
        .unwrap();
    let child = spawn("burst_then_hang", &name, &[(COUNT, "1000".into())]);
    for seq in 0..1000 {
        let m = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        check(&m, &m.header(), seq);
    }
    child.ready();
    let killer = child.kill_after(Duration::from_millis(150));
    let r = rx.recv_timeout(Duration::from_secs(5)).map(|_| ());
    let returned = Instant::now();
    let (killed, child) = killer.join().unwrap();
    assert_eq!(r, Err(RecvError::Disconnected));
    let latency = returned.saturating_duration_since(killed);
    println!(
        "producer killed while the consumer waited: Disconnected after {latency:.2?} (consumer \
         parked {} times)",
        rx.stats().parked
    );
    assert!(latency < DEATH_BOUND, "{latency:?}");
    child.finish();
}

#[test]
fn kill_9_of_the_consumer_while_the_producer_waits_for_space() {
    let name = unique("kill-consumer");
    let _cleanup = Cleanup(name.clone());
    let mut tx = Channel::<Sample>::builder()
        .capacity(64)
        .shared(&name)
        .create_producer()
        .unwrap();
    let child = spawn("consume_then_hang", &name, &[(COUNT, "500".into())]);
    for seq in 0..500 {
        let mut m = tx.allocate_timeout(Duration::from_secs(10)).unwrap();
        fill(&mut m, seq);
        m.send();
    }
    child.ready();
    // Fill the ring: the consumer no longer reads.
    let mut seq = 500;
    loop {
        match tx.try_allocate() {
            Ok(mut m) => {
                fill(&mut m, seq);
                m.send();
                seq += 1;
            }
            Err(SendError::Full) => break,
            Err(e) => panic!("{e}"),
        }
    }
    let killer = child.kill_after(Duration::from_millis(150));
    let r = tx.allocate().map(|_| ());
    let returned = Instant::now();
    let (killed, child) = killer.join().unwrap();
    assert_eq!(r, Err(SendError::Disconnected));
    let latency = returned.saturating_duration_since(killed);
    println!(
        "consumer killed while the producer waited for space: Disconnected after {latency:.2?} \
         (producer parked {} times)",
        tx.stats().parked
    );
    assert!(latency < DEATH_BOUND, "{latency:?}");
    assert!(tx.is_disconnected());
    child.finish();
}

#[test]
fn stale_name_of_a_crashed_creator_is_replaced() {
    let name = unique("stale");
    let _cleanup = Cleanup(name.clone());
    let mut child = spawn("create_and_hang", &name, &[]);
    child.ready();
    let pid = child.pid();
    // While the creator lives, its name is taken.
    assert_eq!(
        Channel::<Sample>::builder()
            .shared(&name)
            .create_producer()
            .unwrap_err(),
        CreateError::AlreadyExists {
            name: name.clone(),
            creator_pid: Some(pid)
        }
    );
    let mut rx = Channel::<Sample>::open_consumer(&name).unwrap();
    let m = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    check(&m, &m.header(), 0);
    drop(m);
    child.sigkill();
    let killed = Instant::now();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap_err(),
        RecvError::Disconnected
    );
    let latency = killed.elapsed();
    assert!(latency < DEATH_BOUND, "{latency:?}");
    // The creator is dead (a zombie: not reaped yet) and its name is stale: a new channel
    // replaces it, and the survivor's old mapping is unaffected.
    let mut tx = Channel::<Sample>::builder()
        .shared(&name)
        .create_producer()
        .unwrap();
    let mut rx2 = Channel::<Sample>::open_consumer(&name).unwrap();
    tx.send(&{
        let mut s: Sample = psyne::bytemuck::Zeroable::zeroed();
        fill(&mut s, 0);
        s
    })
    .unwrap();
    let m = rx2.recv_timeout(Duration::from_secs(5)).unwrap();
    check(&m, &m.header(), 0);
    assert_eq!(rx.try_recv().unwrap_err(), RecvError::Disconnected);
    child.finish();

    // An object that is not an initialised psyne channel is never removed.
    let other = unique("foreign");
    let _cleanup2 = Cleanup(other.clone());
    let _foreign = Slab::create_shared(&other, Slab::builder(8192)).unwrap();
    assert_eq!(
        Channel::<Sample>::builder()
            .shared(&other)
            .create_producer()
            .unwrap_err(),
        CreateError::AlreadyExists {
            name: other.clone(),
            creator_pid: None
        }
    );
    assert_eq!(
        Channel::<Sample>::open_consumer(&other).unwrap_err(),
        OpenError::NotReady {
            name: other.clone()
        }
    );
}

#[test]
fn raw_ends_across_mappings() {
    let name = unique("raw");
    let _cleanup = Cleanup(name.clone());
    let mut rx = Channel::raw()
        .capacity_bytes(4096)
        .timestamps(true)
        .shared(&name)
        .create_consumer()
        .unwrap();
    let mut tx = Channel::raw_open_producer(&name).unwrap();
    tx.send_bytes(7, b"hello").unwrap();
    let mut m = tx.allocate::<Other>().unwrap();
    m.x = [1.0, 2.0, 3.0, 4.0];
    m.send();
    let a = rx.recv_timeout(Duration::from_secs(1)).unwrap();
    assert_eq!((a.type_id(), a.bytes()), (7, &b"hello"[..]));
    assert_ne!(a.header().timestamp_ns, 0, "the opener inherits timestamps");
    drop(a);
    let b = rx.recv_timeout(Duration::from_secs(1)).unwrap();
    assert_eq!(b.downcast::<Other>().unwrap().x[3], 4.0);
    drop(b);
    assert_eq!(
        Channel::<Other>::open_producer(&name).unwrap_err(),
        OpenError::IncompatibleType {
            expected: Other::TYPE_ID,
            found: 0,
            expected_name: "Other".into(),
            found_name: "raw".into(),
        }
    );
    drop(tx);
    assert_eq!(rx.try_recv().unwrap_err(), RecvError::Disconnected);
    // A producer that left can be replaced, and the consumer sees the new one unrebuilt.
    let mut tx = Channel::raw_open_producer(&name).unwrap();
    tx.send_bytes(8, b"again").unwrap();
    let c = rx.recv_timeout(Duration::from_secs(1)).unwrap();
    assert_eq!(
        (c.type_id(), c.bytes(), c.header().sequence),
        (8, &b"again"[..], 2)
    );
}

/// xorshift64*: the fuzz test's seeded generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A value worth scribbling: random, or one near a boundary the checks care about.
fn nasty(rng: &mut Rng, ring_len: u64) -> u64 {
    match rng.below(8) {
        0 => 0,
        1 => u64::MAX,
        2 => ring_len,
        3 => ring_len + 64,
        4 => rng.below(ring_len * 2) & !63,
        5 => rng.below(ring_len * 2),
        6 => u64::from(rng.next() as u32),
        _ => rng.next(),
    }
}

#[test]
fn fuzzed_control_blocks_and_headers_give_typed_errors() {
    let iterations: u64 = std::env::var("PSYNE_IPC_FUZZ").map_or(1500, |v| v.parse().unwrap());
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let mut outcomes = std::collections::BTreeMap::<String, u64>::new();
    let mut note = |what: String| *outcomes.entry(what).or_default() += 1;
    let started = Instant::now();
    for _ in 0..iterations {
        let name = unique("fuzz");
        let _cleanup = Cleanup(name.clone());
        let mut tx = Channel::<Sample>::builder()
            .capacity_bytes(1024)
            .shared(&name)
            .create_producer()
            .unwrap();
        let ring_len = tx.capacity_bytes() as u64;
        let scribble_before_open = rng.below(4) == 0;
        let slab = Slab::open_shared(&name).unwrap();
        let base = slab.as_ptr().as_ptr();
        // SAFETY: the region offset word is inside the control block, 8-aligned.
        let region_offset = unsafe {
            base.add(ring::layout::REGION_OFFSET)
                .cast::<u64>()
                .read_volatile()
        } as usize;
        let control_len = ring::layout::slot(2, 0) as u64;
        let scribble = |rng: &mut Rng| {
            for _ in 0..=rng.below(3) {
                let v = nasty(rng, ring_len);
                // Control block words (any 8-byte aligned word of its identity and two slots), or the ring:
                // mostly header words at record boundaries.
                let offset = match rng.below(3) {
                    0 => (rng.below(control_len / 8) * 8) as usize,
                    1 => region_offset + (rng.below(ring_len / 64) * 64) as usize,
                    _ => region_offset + (rng.below(ring_len / 8) * 8) as usize,
                };
                let width = [1usize, 4, 8][rng.below(3) as usize];
                let offset = offset & !(width - 1);
                // SAFETY: inside the slab (control block or region), aligned to `width`; this
                // thread is the only one using the channel.
                unsafe {
                    match width {
                        1 => base.add(offset).write_volatile(v as u8),
                        4 => base.add(offset).cast::<u32>().write_volatile(v as u32),
                        _ => base.add(offset).cast::<u64>().write_volatile(v),
                    }
                }
            }
        };
        if scribble_before_open {
            scribble(&mut rng);
        }
        let mut rx = match Channel::<Sample>::open_consumer(&name) {
            Ok(rx) => rx,
            Err(e) => {
                note(format!("open: {e:?}"));
                continue;
            }
        };
        let mut sent = 0u64;
        for _ in 0..rng.below(12) {
            match tx.try_allocate() {
                Ok(mut m) => {
                    fill(&mut m, sent);
                    m.send();
                    sent += 1;
                }
                Err(e) => note(format!("send before: {e:?}")),
            }
        }
        for _ in 0..rng.below(4) {
            let _ = rx.try_recv();
        }
        scribble(&mut rng);
        for _ in 0..24 {
            match rng.below(4) {
                0 => match rx.try_recv() {
                    Ok(m) => {
                        // Any bytes are a valid `Sample`; read them all.
                        let s: u64 = m.data.iter().fold(m.seq ^ m.checksum, |a, &d| a ^ d);
                        std::hint::black_box(s);
                        note("recv: Ok".into());
                    }
                    Err(e) => note(format!("recv: {e:?}")),
                },
                1 => match rx.recv_timeout(Duration::from_millis(1)) {
                    Ok(_) => note("recv_timeout: Ok".into()),
                    Err(e) => note(format!("recv_timeout: {e:?}")),
                },
                2 => match tx.try_allocate() {
                    Ok(mut m) => {
                        fill(&mut m, sent);
                        m.send();
                        sent += 1;
                        note("send: Ok".into());
                    }
                    Err(e) => note(format!("send: {e:?}")),
                },
                _ => match tx.allocate_timeout(Duration::from_millis(1)) {
                    Ok(m) => {
                        drop(m);
                        note("allocate_timeout: Ok".into());
                    }
                    Err(e) => note(format!("allocate_timeout: {e:?}")),
                },
            }
        }
        // Re-opening a scribbled channel is refused with a typed error (or, if the scribbles
        // missed everything that matters, succeeds).
        if let Err(e) = Channel::<Sample>::open_producer(&name) {
            note(format!("reopen: {e:?}"));
        }
    }
    let elapsed = started.elapsed();
    println!("{iterations} fuzz iterations in {elapsed:.2?}; outcomes:");
    for (what, n) in &outcomes {
        println!("  {n:6}  {what}");
    }
    assert!(
        outcomes.keys().any(|k| k.contains("Corrupted")),
        "the fuzz must reach the checks"
    );
}
