//! Two-thread stress tests: 10 million typed messages with sequence numbers and checksums, and
//! raw messages of random sizes (1 B ..= 64 KiB) whose positions are checked against the ring's
//! layout rules, until a wrap has happened at every reachable position.
//!
//! `PSYNE_STRESS_MESSAGES` overrides the typed message count (default 10 000 000).

use psyne::{Channel, PsyneMessage, RecvError, Wait, ring};
use std::collections::BTreeSet;

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Stress {
    seq: u64,
    checksum: u64,
    data: [u64; 10],
}

#[path = "common/mix.rs"]
mod mix;
use mix::splitmix;

fn checksum(data: &[u64; 10]) -> u64 {
    data.iter().fold(0xCBF2_9CE4_8422_2325u64, |h, &d| {
        (h ^ d).wrapping_mul(0x100_0000_01B3)
    })
}

fn typed_run(messages: u64, wait: Wait, capacity: usize) {
    assert_eq!(ring::record_size(core::mem::size_of::<Stress>()), Some(128));
    let (mut tx, mut rx) = Channel::<Stress>::builder()
        .capacity(capacity)
        .wait(wait)
        .build()
        .unwrap();
    let producer = std::thread::spawn(move || {
        for seq in 0..messages {
            let mut m = tx.allocate().unwrap();
            m.seq = seq;
            // Only two words vary per message: cheap enough for 10M in a debug build, and a
            // stale or torn slot still fails the checksum.
            m.data[seq as usize % 10] = splitmix(seq);
            m.data[(seq as usize + 3) % 10] = seq;
            m.checksum = checksum(&m.data);
            m.send();
        }
        tx.stats()
    });
    let mut expected = 0u64;
    loop {
        match rx.recv() {
            Ok(m) => {
                assert_eq!(m.seq, expected, "sequence");
                assert_eq!(m.header().sequence, expected, "header sequence");
                assert_eq!(m.data[expected as usize % 10], splitmix(expected));
                assert_eq!(m.data[(expected as usize + 3) % 10], expected);
                assert_eq!(
                    m.checksum,
                    checksum(&m.data),
                    "checksum of message {expected}"
                );
                expected += 1;
            }
            Err(RecvError::Disconnected) => break,
            Err(e) => panic!("{e}"),
        }
    }
    let tx_stats = producer.join().unwrap();
    assert_eq!(expected, messages);
    let rx_stats = rx.stats();
    assert_eq!(tx_stats.messages, messages);
    assert_eq!(rx_stats.messages, messages);
    assert_eq!(
        rx_stats.bytes,
        messages * core::mem::size_of::<Stress>() as u64
    );
    println!("{wait:?}: producer {tx_stats:?}\n    consumer {rx_stats:?}");
}

#[test]
fn typed_ten_million_messages() {
    let messages = std::env::var("PSYNE_STRESS_MESSAGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_000);
    typed_run(messages, Wait::default(), 64);
}

#[test]
fn typed_busy_spin_and_eager_parking() {
    typed_run(300_000, Wait::BusySpin, 8);
    typed_run(
        100_000,
        Wait::SpinThenPark {
            spins: 0,
            yields: 0,
        },
        3,
    );
}

const RING: usize = 128 << 10;
const MAX_LEN: usize = 64 << 10;

/// Random payload lengths in 1 ..= 64 KiB: half uniform, half log-uniform (many small ones).
fn length(seq: u64) -> usize {
    let r = splitmix(seq ^ 0x5151);
    let len = if r & 1 == 0 {
        (r >> 1) as usize % MAX_LEN + 1
    } else {
        let bits = (r >> 1) % 17; // 2^0 ..= 2^16
        ((r >> 8) as usize % (1usize << bits)) + 1
    };
    len.min(MAX_LEN)
}

#[test]
fn raw_random_sizes_every_wrap_position() {
    const MESSAGES: u64 = 200_000;
    let pattern: Vec<u8> = (0..(MAX_LEN + 4096) as u64 / 8)
        .flat_map(|i| splitmix(i).to_le_bytes())
        .collect();
    let pattern = std::sync::Arc::new(pattern);

    // Where every record must land, and where the wrap fillers go: the producer's positions are
    // a pure function of the lengths, whatever the timing.
    let mut expected_offsets = Vec::with_capacity(MESSAGES as usize);
    let mut wraps = BTreeSet::new();
    let mut w = 0usize;
    for seq in 0..MESSAGES {
        let size = ring::record_size(length(seq)).unwrap();
        let offset = w % RING;
        if size > RING - offset {
            wraps.insert(offset);
            w += RING - offset;
        }
        expected_offsets.push(w % RING);
        w += size;
    }

    let (mut tx, mut rx) = Channel::raw().capacity_bytes(RING).build().unwrap();
    assert_eq!(tx.capacity_bytes(), RING);
    let p = pattern.clone();
    let producer = std::thread::spawn(move || {
        for seq in 0..MESSAGES {
            let len = length(seq);
            let start = (seq as usize * 61) % 4096;
            let mut loan = tx.allocate_bytes(len).unwrap();
            loan.copy_from_slice(&p[start..start + len]);
            loan.send(seq ^ len as u64);
        }
    });
    let mut base = 0usize;
    for seq in 0..MESSAGES {
        let m = rx.recv().unwrap();
        let len = length(seq);
        let start = (seq as usize * 61) % 4096;
        assert_eq!(m.header().sequence, seq);
        assert_eq!(m.type_id(), seq ^ len as u64);
        assert_eq!(m.bytes().len(), len);
        assert!(m.bytes() == &pattern[start..start + len], "payload {seq}");
        let addr = m.bytes().as_ptr() as usize;
        assert_eq!(addr % 64, 0);
        if seq == 0 {
            base = addr; // ring offset 0
        }
        assert_eq!(
            addr - base,
            expected_offsets[seq as usize],
            "offset of {seq}"
        );
    }
    assert_eq!(rx.recv().unwrap_err(), RecvError::Disconnected);
    producer.join().unwrap();

    // A wrap at ring offset `o` needs a record larger than `RING - o`. Every offset where that
    // happens with a fair probability (at least 1/8 per visit: the last 48 KiB) must have seen one.
    let reachable: Vec<usize> = (RING - (48 << 10)..RING).step_by(64).collect();
    let missing: Vec<_> = reachable.iter().filter(|o| !wraps.contains(o)).collect();
    assert!(missing.is_empty(), "no wrap at offsets {missing:?}");
    println!(
        "{} wraps at {} distinct offsets (all {} offsets of the last 48 KiB covered)",
        w / RING,
        wraps.len(),
        reachable.len()
    );
}
