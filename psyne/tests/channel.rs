//! Behaviour of typed and raw channels: delivery, errors, wrap-around, disconnection, wake-ups.

use psyne::{
    Channel, ChannelError, HugePages, Lock, Message, PsyneMessage, RecvError, SendError, Wait, ring,
};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, PsyneMessage)]
#[repr(C)]
struct Tensor {
    data: [f32; 16],
    seq: u64,
    tag: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, PsyneMessage)]
#[repr(C)]
struct Small {
    value: u32,
    other: u32,
}

fn tensor(seq: u64) -> Tensor {
    Tensor {
        data: core::array::from_fn(|i| (seq as f32) + i as f32),
        seq,
        tag: seq.wrapping_mul(0x9E37_79B9_7F4A_7C15),
    }
}

#[test]
fn typed_roundtrip_in_order_with_headers() {
    let (mut tx, mut rx) = Channel::<Tensor>::builder()
        .capacity(8)
        .timestamps(true)
        .build()
        .unwrap();
    for round in 0..10u64 {
        for i in 0..8 {
            let mut loan = tx.try_allocate().unwrap();
            *loan = tensor(round * 8 + i);
            loan.send();
        }
        for i in 0..8 {
            let msg = rx.try_recv().unwrap();
            assert_eq!(*msg, tensor(round * 8 + i));
            let h = msg.header();
            assert_eq!(h.sequence, round * 8 + i);
            assert_eq!(h.type_id, Tensor::TYPE_ID);
            assert_eq!(h.len as usize, core::mem::size_of::<Tensor>());
            assert!(h.timestamp_ns > 0);
            assert!(!h.is_wrap());
        }
        assert_eq!(rx.try_recv().unwrap_err(), RecvError::Empty);
    }
    assert_eq!(tx.stats().messages, 80);
    assert_eq!(rx.stats().messages, 80);
    assert_eq!(rx.stats().bytes, 80 * core::mem::size_of::<Tensor>() as u64);
}

#[test]
fn timestamps_off_by_default() {
    let (mut tx, mut rx) = Channel::<Small>::builder().build().unwrap();
    tx.send(&Small { value: 1, other: 2 }).unwrap();
    let m = rx.recv().unwrap();
    assert_eq!(m.header().timestamp_ns, 0);
    assert_eq!(*m, Small { value: 1, other: 2 });
}

#[test]
fn capacity_in_messages_is_a_guarantee() {
    for n in [1usize, 2, 3, 5, 7, 8, 100, 1000] {
        let (mut tx, mut rx) = Channel::<Tensor>::builder().capacity(n).build().unwrap();
        // Twice, so the second round starts mid-ring.
        for _ in 0..3 {
            for i in 0..n {
                let mut l = tx
                    .try_allocate()
                    .unwrap_or_else(|e| panic!("n={n} i={i}: {e}"));
                l.seq = i as u64;
                l.send();
            }
            for i in 0..n {
                assert_eq!(rx.try_recv().unwrap().seq, i as u64);
            }
            // shift the start by one record
            tx.send(&tensor(0)).unwrap();
            drop(rx.try_recv().unwrap());
        }
    }
}

#[test]
fn full_then_space_after_release() {
    let (mut tx, mut rx) = Channel::<Tensor>::builder().capacity(2).build().unwrap();
    // The producer always leaves one 64-byte line free (see `psyne::ring`).
    let cap = ring::max_record(tx.capacity_bytes())
        / ring::record_size(core::mem::size_of::<Tensor>()).unwrap();
    assert!(cap >= 2, "capacity(2) holds two messages");
    for i in 0..cap {
        tx.try_allocate().unwrap().send();
        let _ = i;
    }
    assert_eq!(tx.try_allocate().unwrap_err(), SendError::Full);
    assert_eq!(tx.stats().full, 1);
    {
        let _held = rx.try_recv().unwrap();
        // Not released yet: still full.
        assert_eq!(tx.try_allocate().unwrap_err(), SendError::Full);
    }
    tx.try_allocate().unwrap().send();
}

#[test]
fn dropped_loan_publishes_nothing_and_slot_is_reused() {
    let (mut tx, mut rx) = Channel::<Small>::builder().capacity(4).build().unwrap();
    {
        let mut l = tx.allocate().unwrap();
        l.value = 99;
    }
    assert_eq!(rx.try_recv().unwrap_err(), RecvError::Empty);
    // The loan exposes what the slot last held.
    let l = tx.allocate().unwrap();
    assert_eq!(l.value, 99);
    drop(l);
    let mut l = tx.allocate_zeroed().unwrap();
    assert_eq!(*l, Small { value: 0, other: 0 });
    l.other = 5;
    l.send();
    let m = rx.try_recv().unwrap();
    assert_eq!(*m, Small { value: 0, other: 5 });
    assert_eq!(
        m.header().sequence,
        0,
        "dropped loans take no sequence number"
    );
}

#[test]
fn forgotten_received_is_delivered_again() {
    let (mut tx, mut rx) = Channel::<Small>::builder().build().unwrap();
    tx.send(&Small { value: 7, other: 0 }).unwrap();
    std::mem::forget(rx.try_recv().unwrap());
    assert_eq!(rx.try_recv().unwrap().value, 7);
    assert_eq!(rx.try_recv().unwrap_err(), RecvError::Empty);
}

#[test]
fn build_errors() {
    assert_eq!(
        Channel::<Small>::builder().capacity(0).build().unwrap_err(),
        ChannelError::ZeroCapacity
    );
    assert_eq!(
        Channel::<Small>::builder()
            .capacity_bytes(0)
            .build()
            .unwrap_err(),
        ChannelError::ZeroCapacity
    );
    assert_eq!(
        Channel::raw().capacity_bytes(0).build().unwrap_err(),
        ChannelError::ZeroCapacity
    );
    assert!(matches!(
        Channel::<Small>::builder().capacity(usize::MAX).build(),
        Err(ChannelError::CapacityTooLarge { .. })
    ));
    assert!(matches!(
        Channel::raw().capacity_bytes(usize::MAX).build(),
        Err(ChannelError::CapacityTooLarge { .. })
    ));
    // Tensor is 80 bytes: a record is 128, more than the largest record of the smallest
    // (128-byte) ring, which keeps one line free.
    assert_eq!(
        Channel::<Tensor>::builder()
            .capacity_bytes(64)
            .build()
            .unwrap_err(),
        ChannelError::MessageTooLarge {
            record: 128,
            capacity_bytes: 128
        }
    );
    // Errors display something and are std errors.
    let e: Box<dyn std::error::Error> = Box::new(ChannelError::ZeroCapacity);
    assert!(!e.to_string().is_empty());
}

#[test]
fn slab_options_are_forwarded() {
    let (mut tx, mut rx) = Channel::<Small>::builder()
        .huge_pages(HugePages::Prefer)
        .lock(Lock::Prefer)
        .wait(Wait::BusySpin)
        .build()
        .unwrap();
    tx.send(&Small { value: 1, other: 1 }).unwrap();
    assert_eq!(rx.recv().unwrap().value, 1);
}

#[test]
fn timeouts() {
    let (mut tx, mut rx) = Channel::<Small>::builder().capacity(1).build().unwrap();
    let t = Instant::now();
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(50)).unwrap_err(),
        RecvError::Timeout
    );
    assert!(t.elapsed() >= Duration::from_millis(50));
    let n = ring::max_record(tx.capacity_bytes()) / 64;
    for _ in 0..n {
        tx.try_allocate().unwrap().send();
    }
    let t = Instant::now();
    assert_eq!(
        tx.allocate_timeout(Duration::from_millis(50)).unwrap_err(),
        SendError::Timeout
    );
    assert!(t.elapsed() >= Duration::from_millis(50));
    // Zero timeout behaves like try.
    assert_eq!(
        tx.allocate_timeout(Duration::ZERO).unwrap_err(),
        SendError::Timeout
    );
    drop(rx.recv_timeout(Duration::from_secs(1)).unwrap());
    tx.allocate_timeout(Duration::from_secs(1)).unwrap().send();
    // Huge timeouts do not overflow.
    drop(rx.recv_timeout(Duration::MAX).unwrap());
}

#[test]
fn messages_sent_before_producer_drop_are_delivered() {
    let (mut tx, mut rx) = Channel::<Small>::builder().capacity(16).build().unwrap();
    for i in 0..10 {
        tx.send(&Small { value: i, other: 0 }).unwrap();
    }
    drop(tx);
    for i in 0..10 {
        assert_eq!(rx.recv().unwrap().value, i);
    }
    assert_eq!(rx.recv().unwrap_err(), RecvError::Disconnected);
    assert_eq!(rx.try_recv().unwrap_err(), RecvError::Disconnected);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap_err(),
        RecvError::Disconnected
    );
}

#[test]
fn consumer_drop_disconnects_producer() {
    let (mut tx, rx) = Channel::<Small>::builder().capacity(16).build().unwrap();
    assert!(!tx.is_disconnected());
    drop(rx);
    assert!(tx.is_disconnected());
    assert_eq!(tx.allocate().unwrap_err(), SendError::Disconnected);
    assert_eq!(tx.try_allocate().unwrap_err(), SendError::Disconnected);
}

#[test]
fn dropping_producer_wakes_parked_consumer() {
    let (tx, mut rx) = Channel::<Small>::builder()
        .wait(Wait::SpinThenPark {
            spins: 0,
            yields: 0,
        })
        .build()
        .unwrap();
    let t = std::thread::spawn(move || {
        let r = rx.recv().map(|_| ()).unwrap_err();
        (r, rx.stats())
    });
    std::thread::sleep(Duration::from_millis(100));
    drop(tx);
    let (err, stats) = t.join().unwrap();
    assert_eq!(err, RecvError::Disconnected);
    assert!(stats.parked >= 1, "{stats:?}");
}

#[test]
fn dropping_consumer_wakes_parked_producer() {
    let (mut tx, rx) = Channel::<Small>::builder()
        .capacity(1)
        .wait(Wait::SpinThenPark {
            spins: 0,
            yields: 0,
        })
        .build()
        .unwrap();
    let t = std::thread::spawn(move || {
        loop {
            match tx.allocate() {
                Ok(l) => l.send(),
                Err(e) => return (e, tx.stats()),
            }
        }
    });
    std::thread::sleep(Duration::from_millis(100));
    drop(rx);
    let (err, stats) = t.join().unwrap();
    assert_eq!(err, SendError::Disconnected);
    assert!(stats.parked >= 1, "{stats:?}");
}

#[test]
fn parked_consumer_is_woken_by_a_message() {
    let (mut tx, mut rx) = Channel::<Small>::builder()
        .wait(Wait::SpinThenPark {
            spins: 0,
            yields: 0,
        })
        .build()
        .unwrap();
    let t = std::thread::spawn(move || {
        let v = rx.recv().unwrap().value;
        (v, rx.stats())
    });
    std::thread::sleep(Duration::from_millis(100));
    tx.send(&Small {
        value: 42,
        other: 0,
    })
    .unwrap();
    let (v, stats) = t.join().unwrap();
    assert_eq!(v, 42);
    assert!(stats.parked >= 1);
    assert_eq!(tx.stats().wakeups, 1);
}

#[test]
fn no_wakeups_while_nobody_parks() {
    let (mut tx, mut rx) = Channel::<Small>::builder().capacity(4).build().unwrap();
    for i in 0..1000 {
        tx.send(&Small { value: i, other: 0 }).unwrap();
        assert_eq!(rx.try_recv().unwrap().value, i);
    }
    assert_eq!(tx.stats().wakeups, 0);
    assert_eq!(rx.stats().wakeups, 0);
}

#[test]
fn raw_bytes_of_every_small_length_and_wraps() {
    let (mut tx, mut rx) = Channel::raw().capacity_bytes(1024).build().unwrap();
    assert_eq!(tx.capacity_bytes(), 1024);
    assert_eq!(tx.max_payload(), 1024 - 32 - 64);
    let mut wraps = 0;
    let mut last_ptr = 0usize;
    for (seq, len) in (0..=tx.max_payload()).enumerate() {
        let payload: Vec<u8> = (0..len).map(|i| (i as u8) ^ (len as u8)).collect();
        match tx.try_send_bytes(len as u64 + 1000, &payload) {
            Ok(()) => {}
            Err(SendError::Full) => {
                // A wrap filler was published on its own; the consumer skips it.
                assert_eq!(rx.try_recv().unwrap_err(), RecvError::Empty);
                tx.try_send_bytes(len as u64 + 1000, &payload).unwrap();
            }
            Err(e) => panic!("{e}"),
        }
        let m = rx.try_recv().unwrap();
        assert_eq!(m.type_id(), len as u64 + 1000);
        assert_eq!(m.bytes(), &payload[..]);
        assert_eq!(m.header().sequence, seq as u64);
        assert_eq!(m.bytes().as_ptr() as usize % 64, 0);
        if (m.bytes().as_ptr() as usize) <= last_ptr {
            wraps += 1;
        }
        last_ptr = m.bytes().as_ptr() as usize;
    }
    assert!(wraps > 100, "{wraps}");
    assert_eq!(rx.try_recv().unwrap_err(), RecvError::Empty);
}

#[test]
fn raw_too_large_is_an_error_not_a_hang() {
    let (mut tx, _rx) = Channel::raw().capacity_bytes(256).build().unwrap();
    assert_eq!(
        tx.try_allocate_bytes(161).unwrap_err(),
        SendError::TooLarge { len: 161, max: 160 }
    );
    assert_eq!(
        tx.allocate_bytes(usize::MAX).unwrap_err(),
        SendError::TooLarge {
            len: usize::MAX,
            max: 160
        }
    );
    assert!(matches!(
        tx.send_bytes(1, &[0u8; 1000]),
        Err(SendError::TooLarge { .. })
    ));
    // A maximal payload fits whatever the write position.
    let (mut tx, mut rx) = Channel::raw().capacity_bytes(256).build().unwrap();
    for first in [0usize, 1, 40, 100, 128, 160] {
        // A filler published on its own may have to be skipped first (see `try_allocate`).
        if tx.try_send_bytes(1, &vec![1u8; first]) == Err(SendError::Full) {
            assert_eq!(rx.try_recv().unwrap_err(), RecvError::Empty);
            tx.try_send_bytes(1, &vec![1u8; first]).unwrap();
        }
        drop(rx.try_recv().unwrap());
        // May need the filler to be consumed first: it is published on its own.
        match tx.try_allocate_bytes(160) {
            Ok(l) => l.send(2),
            Err(SendError::Full) => {
                assert_eq!(rx.try_recv().unwrap_err(), RecvError::Empty);
                tx.try_allocate_bytes(160).unwrap().send(2);
            }
            Err(e) => panic!("{e}"),
        }
        let m = rx.try_recv().unwrap();
        assert_eq!(m.type_id(), 2);
        assert_eq!(m.bytes().len(), 160);
    }
}

#[test]
fn raw_carries_several_types_and_downcasts() {
    let (mut tx, mut rx) = Channel::raw().capacity_bytes(4096).build().unwrap();
    let mut l = tx.allocate::<Tensor>().unwrap();
    *l = tensor(3);
    l.send();
    tx.allocate::<Small>().unwrap().send();
    tx.send_bytes(Small::TYPE_ID, &[0u8; 3]).unwrap();
    tx.send_bytes(77, b"hello").unwrap();

    let m = rx.recv().unwrap();
    assert_eq!(m.type_id(), Tensor::TYPE_ID);
    assert_eq!(m.downcast::<Tensor>(), Some(&tensor(3)));
    assert_eq!(m.downcast::<Small>(), None);
    drop(m);
    let m = rx.recv().unwrap();
    assert!(m.downcast::<Small>().is_some());
    assert_eq!(m.header().sequence, 1);
    drop(m);
    let m = rx.recv().unwrap();
    assert_eq!(m.downcast::<Small>(), None, "right type id, wrong length");
    drop(m);
    let m = rx.recv().unwrap();
    assert_eq!((m.type_id(), m.bytes()), (77, &b"hello"[..]));
    drop(m);
    drop(tx);
    assert_eq!(rx.recv().unwrap_err(), RecvError::Disconnected);
}

#[test]
fn raw_allocate_of_a_type_larger_than_the_ring() {
    let (mut tx, _rx) = Channel::raw().capacity_bytes(64).build().unwrap();
    assert!(matches!(
        tx.allocate::<Tensor>(),
        Err(SendError::TooLarge { len: 80, max: 32 })
    ));
}

#[test]
fn threads_typed_blocking_both_ways() {
    for wait in [
        Wait::BusySpin,
        Wait::default(),
        Wait::SpinThenPark {
            spins: 0,
            yields: 0,
        },
        Wait::SpinThenPark {
            spins: 10,
            yields: 1,
        },
    ] {
        let (mut tx, mut rx) = Channel::<Tensor>::builder()
            .capacity(3)
            .wait(wait)
            .build()
            .unwrap();
        const N: u64 = 20_000;
        let p = std::thread::spawn(move || {
            for i in 0..N {
                let mut l = tx.allocate().unwrap();
                *l = tensor(i);
                l.send();
            }
        });
        for i in 0..N {
            let m = rx.recv().unwrap();
            assert_eq!(*m, tensor(i));
        }
        assert_eq!(rx.recv().unwrap_err(), RecvError::Disconnected);
        p.join().unwrap();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, PsyneMessage)]
#[repr(C, align(256))]
struct Wide {
    data: [f64; 32],
}

#[test]
fn payloads_aligned_beyond_64_bytes() {
    assert_eq!(core::mem::align_of::<Wide>(), 256);
    let (mut tx, mut rx) = Channel::<Wide>::builder().capacity(3).build().unwrap();
    let (mut rtx, mut rrx) = Channel::raw().capacity_bytes(4096).build().unwrap();
    for i in 0..50 {
        let mut l = tx.try_allocate().unwrap();
        assert_eq!(&*l as *const Wide as usize % 256, 0);
        l.data[0] = i as f64;
        l.send();
        let m = rx.try_recv().unwrap();
        assert_eq!(&*m as *const Wide as usize % 256, 0);
        assert_eq!(m.data[0], i as f64);
        drop(m);
        // Raw: a small message first, so the wide one needs an alignment filler.
        rtx.try_send_bytes(1, &vec![0u8; i % 5 * 40]).unwrap();
        let mut l = match rtx.try_allocate::<Wide>() {
            Ok(l) => l,
            Err(SendError::Full) => {
                drop(rrx.try_recv().unwrap());
                assert_eq!(rrx.try_recv().unwrap_err(), RecvError::Empty);
                rtx.try_allocate::<Wide>().unwrap()
            }
            Err(e) => panic!("{e}"),
        };
        l.data[1] = i as f64;
        l.send();
        while let Ok(m) = rrx.try_recv() {
            if let Some(w) = m.downcast::<Wide>() {
                assert_eq!(w as *const Wide as usize % 256, 0);
                assert_eq!(w.data[1], i as f64);
            } else {
                assert_eq!(m.type_id(), 1);
            }
        }
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_registered_channel_without_the_feature_is_a_typed_error() {
    use psyne::SlabError;
    let err = Channel::<Small>::builder()
        .cuda_host_register(true)
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        ChannelError::Slab(SlabError::CudaUnavailable {
            reason: "psyne was built without the `cuda` feature".into()
        })
    );
}

/// 16 KiB of activations: a "large" record for the ring's restart at the region's start.
#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Big {
    data: [u64; 2048],
}

#[test]
fn large_messages_restart_at_the_region_start_when_the_consumer_waits_on_an_empty_ring() {
    // A busy-spinning consumer: it polls, so it says it waits, however long the producer sleeps
    // (a parking one stops saying so before it parks; see the next test). It spins for about
    // 100 ms in all.
    let (mut tx, mut rx) = Channel::<Big>::builder()
        .capacity(16)
        .wait(Wait::BusySpin)
        .build()
        .unwrap();
    let record = ring::record_size(size_of::<Big>()).unwrap();
    assert!(tx.capacity_bytes() > 8 * record);
    let addr = |m: &Big| m as *const Big as usize;

    // Single-threaded, the consumer never waits: though the ring is empty before every send,
    // messages walk on through the region.
    let mut addrs = Vec::new();
    for i in 0..3 {
        tx.send(&Big { data: [i; 2048] }).unwrap();
        addrs.push(addr(&rx.recv().unwrap()));
    }
    assert_eq!(addrs[1] - addrs[0], record);
    assert_eq!(addrs[2] - addrs[1], record);
    let region_start = addrs[0]; // message 0 went to ring offset 0

    // A consumer thread blocked in `recv`, and messages sent one at a time once it acknowledged
    // the previous one (after dropping it) and had a moment to start waiting: messages go back
    // to the region's start. Whether the consumer already waits when the producer reserves is
    // up to the scheduler, so each message lands either right after the previous one or at the
    // start; with two milliseconds for the consumer to start waiting before each message, at
    // least 10 of 50 must restart (all 50 do, on an idle machine).
    let (ack_tx, ack_rx) = std::sync::mpsc::channel::<usize>();
    let consumer = std::thread::spawn(move || {
        for i in 3..53u64 {
            let m = rx.recv().unwrap();
            assert!(m.data.iter().all(|&x| x == i), "message {i}");
            assert_eq!(m.header().sequence, i);
            let at = addr(&m);
            drop(m);
            ack_tx.send(at).unwrap();
        }
        rx
    });
    let mut prev = addrs[2];
    let mut restarts = 0;
    for i in 3..53u64 {
        std::thread::sleep(Duration::from_millis(2));
        tx.send(&Big { data: [i; 2048] }).unwrap();
        let at = ack_rx.recv().unwrap();
        if at == region_start && prev + record != region_start {
            restarts += 1;
        } else {
            assert_eq!(at, prev + record, "message {i}");
        }
        prev = at;
    }
    let mut rx = consumer.join().unwrap();
    assert!(
        restarts >= 10,
        "only {restarts} of 50 messages went back to the region's start"
    );

    // With messages in flight (the consumer busy elsewhere), nothing restarts: capacity is
    // never given up.
    for i in 53..56 {
        tx.send(&Big { data: [i; 2048] }).unwrap();
    }
    for i in 53..56u64 {
        let m = rx.recv().unwrap();
        assert_eq!(m.data[0], i);
        // Right after the previous one, or at the start after a wrap at the region's end.
        let wrapped = region_start + tx.capacity_bytes() - prev < 2 * record;
        assert!(
            addr(&m) == prev + record || (wrapped && addr(&m) == region_start),
            "message {i}"
        );
        prev = addr(&m);
    }
    println!("{restarts} of 50 one-at-a-time messages went back to the region's start");
}

/// Whether transparent huge pages of any size are enabled "always" (then a first touch may make
/// more than its own page resident).
fn thp_always() -> bool {
    let mut files = vec![std::path::PathBuf::from(
        "/sys/kernel/mm/transparent_hugepage/enabled",
    )];
    if let Ok(dir) = std::fs::read_dir("/sys/kernel/mm/transparent_hugepage") {
        files.extend(
            dir.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("hugepages-"))
                .map(|e| e.path().join("enabled")),
        );
    }
    files
        .iter()
        .any(|f| std::fs::read_to_string(f).is_ok_and(|s| s.contains("[always]")))
}

/// Whether the page holding `addr` is resident (`mincore`; does not fault it in).
fn resident(addr: usize) -> bool {
    let page = 4096;
    let mut v = 0u8;
    // SAFETY: `addr` rounded down to its page lies inside a live mapping of the caller's; mincore
    // only reports on it and writes one byte to `v`.
    let r = unsafe { libc::mincore((addr & !(page - 1)) as *mut _, page, &mut v) };
    assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
    v & 1 == 1
}

#[test]
fn rings_are_populated_when_built_unless_asked_not_to() {
    for populate in [true, false] {
        let (mut tx, mut rx) = Channel::<Big>::builder()
            .capacity(8)
            .populate(populate)
            .build()
            .unwrap();
        // Message 0 goes to the first record; the second record's payload was never written.
        tx.send(&Big { data: [1; 2048] }).unwrap();
        let loan = tx.allocate().unwrap();
        let last_page_of_payload = &*loan as *const Big as usize + size_of::<Big>() - 1;
        if populate {
            assert!(resident(last_page_of_payload), "populate(true)");
        } else if !thp_always() {
            // Where the kernel backs first touches with large folios (THP or mTHP "always"), a
            // neighbouring page can be resident without being written.
            assert!(!resident(last_page_of_payload), "populate(false)");
        }
        drop(loan);
        assert_eq!(rx.recv().unwrap().data[0], 1);
    }
}

/// A consumer parked on the futex does not say it waits: a producer's burst after one message
/// gets the whole capacity at once. (Had the producer restarted the large record at the region's
/// start, the ring would hold only one record until the woken consumer skipped the filler, and
/// the burst's second `try_allocate` would find it full.)
#[test]
fn a_parked_consumer_leaves_the_producer_its_whole_capacity() {
    let (mut tx, mut rx) = Channel::<Big>::builder()
        .capacity(16)
        .wait(Wait::SpinThenPark {
            spins: 0,
            yields: 0,
        })
        .build()
        .unwrap();
    let (ack_tx, ack_rx) = std::sync::mpsc::channel::<()>();
    let consumer = std::thread::spawn(move || {
        for i in 0..17u64 {
            let m = rx.recv().unwrap();
            assert_eq!((m.data[0], m.data[2047]), (i, i));
            drop(m);
            if i == 0 {
                ack_tx.send(()).unwrap();
            }
        }
        rx.stats()
    });
    tx.send(&Big { data: [0; 2048] }).unwrap();
    ack_rx.recv().unwrap();
    // The consumer is back in `recv`, on an empty ring, and parks at once (no spins, no yields).
    std::thread::sleep(Duration::from_millis(20));
    for i in 1..17u64 {
        let mut loan = tx
            .try_allocate()
            .unwrap_or_else(|e| panic!("message {i} of the burst: {e}"));
        loan.data.fill(i);
        loan.send();
    }
    let stats = consumer.join().unwrap();
    assert!(stats.parked >= 1, "{stats:?}");
}
