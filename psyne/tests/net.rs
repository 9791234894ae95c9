//! TCP channels over loopback (and across two network namespaces when allowed): round trips,
//! every handshake refusal, authentication, and an in-test fault proxy that cuts, stalls, flips
//! bytes and slows the link.

use psyne::net::{Compression, Listener, NetError};
use psyne::{Channel, PsyneMessage, RecvError, SendError};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
#[psyne(name = "test.Embedding")]
struct Embedding {
    data: [f32; 256],
    step: u64,
    pad: u64,
}

/// Same name (so same type id), different layout.
mod changed {
    use psyne::PsyneMessage;
    #[derive(Clone, Copy, PsyneMessage)]
    #[repr(C)]
    #[psyne(name = "test.Embedding")]
    pub struct Embedding {
        pub data: [f32; 128],
        pub step: u64,
        pub pad: u64,
    }
}

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
#[psyne(name = "test.Other")]
struct Other {
    x: [u64; 8],
}

/// A 64-byte message for the stress test.
#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
#[psyne(name = "test.Small")]
struct Small {
    seq: u64,
    vals: [u64; 7],
}

fn listener() -> (Listener, SocketAddr) {
    let l = Listener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

fn embedding(step: u64) -> Embedding {
    let mut e: Embedding = bytemuck::Zeroable::zeroed();
    for (i, v) in e.data.iter_mut().enumerate() {
        *v = (step as f32) + i as f32 * 0.5;
    }
    e.step = step;
    e
}

fn check_embedding(e: &Embedding, step: u64) {
    assert_eq!(e.step, step);
    assert_eq!(e.data[0], step as f32);
    assert_eq!(e.data[255], step as f32 + 127.5);
}

/// Bytes the connecting sender writes before its first frame (greeting, identity with the type
/// name, verdict), without authentication.
fn sender_handshake_len(name: &str) -> usize {
    64 + 48 + name.len() + 16
}

/// Waits up to 10 s for a consumer to report `Disconnected` (or to have received `limit`
/// messages), counting messages received.
fn drain_until_disconnected(rx: &mut psyne::Consumer<Embedding>, limit: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    loop {
        if n == limit {
            return n;
        }
        assert!(Instant::now() < deadline, "no Disconnected after 10 s");
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(m) => {
                check_embedding(&m, n);
                n += 1;
            }
            Err(RecvError::Timeout) => {}
            Err(RecvError::Disconnected) => return n,
            Err(e) => panic!("unexpected {e}"),
        }
    }
}

#[test]
fn typed_messages_cross_loopback_in_order_then_disconnect() {
    let (l, addr) = listener();
    let sender = thread::spawn(move || {
        let mut tx = Channel::<Embedding>::builder()
            .capacity(64)
            .connect_producer(addr)
            .unwrap();
        for step in 0..5000 {
            let mut m = tx.allocate().unwrap();
            *m = embedding(step);
            m.send();
        }
    });
    let mut rx = Channel::<Embedding>::builder()
        .capacity(64)
        .accept_consumer(&l)
        .unwrap();
    for step in 0..5000 {
        let m = rx.recv().unwrap();
        check_embedding(&m, step);
        assert_eq!(m.header().sequence, step);
    }
    sender.join().unwrap();
    assert!(matches!(rx.recv(), Err(RecvError::Disconnected)));
}

#[test]
fn either_side_may_listen() {
    let (l, addr) = listener();
    let receiver = thread::spawn(move || {
        let mut rx = Channel::<Embedding>::builder()
            .connect_consumer(addr)
            .unwrap();
        (0..100).for_each(|s| check_embedding(&rx.recv().unwrap(), s));
        drain_until_disconnected(&mut rx, u64::MAX)
    });
    let mut tx = Channel::<Embedding>::builder().accept_producer(&l).unwrap();
    for s in 0..100 {
        tx.send(&embedding(s)).unwrap();
    }
    drop(tx);
    assert_eq!(receiver.join().unwrap(), 0);
}

#[test]
fn raw_channels_carry_several_types_and_lengths() {
    let (l, addr) = listener();
    let sender = thread::spawn(move || {
        let mut tx = Channel::raw()
            .capacity_bytes(1 << 16)
            .connect_producer(addr)
            .unwrap();
        for i in 0..300u32 {
            let len = (i as usize * 97) % 5000;
            let bytes: Vec<u8> = (0..len).map(|j| (j as u32 ^ i) as u8).collect();
            tx.send_bytes(u64::from(i), &bytes).unwrap();
        }
        let mut o = tx.allocate::<Other>().unwrap();
        o.x = [7; 8];
        o.send();
    });
    let mut rx = Channel::raw()
        .capacity_bytes(1 << 16)
        .accept_consumer(&l)
        .unwrap();
    for i in 0..300u32 {
        let m = rx.recv().unwrap();
        let len = (i as usize * 97) % 5000;
        assert_eq!(m.type_id(), u64::from(i));
        assert_eq!(m.bytes().len(), len);
        assert!(
            m.bytes()
                .iter()
                .enumerate()
                .all(|(j, &b)| b == (j as u32 ^ i) as u8)
        );
    }
    assert_eq!(rx.recv().unwrap().downcast::<Other>().unwrap().x, [7; 8]);
    sender.join().unwrap();
    assert!(matches!(rx.recv(), Err(RecvError::Disconnected)));
}

#[test]
fn a_typed_sender_feeds_a_raw_receiver() {
    let (l, addr) = listener();
    let sender = thread::spawn(move || {
        let mut tx = Channel::<Other>::builder().connect_producer(addr).unwrap();
        tx.send(&Other { x: [3; 8] }).unwrap();
    });
    let mut rx = Channel::raw().accept_consumer(&l).unwrap();
    assert_eq!(rx.recv().unwrap().downcast::<Other>().unwrap().x, [3; 8]);
    sender.join().unwrap();
}

#[test]
fn different_types_are_refused_on_both_sides_naming_both() {
    let (l, addr) = listener();
    let sender = thread::spawn(move || Channel::<Other>::builder().connect_producer(addr).err());
    let err = Channel::<Embedding>::builder()
        .accept_consumer(&l)
        .err()
        .unwrap();
    match err {
        NetError::IncompatibleType { local, remote } => {
            assert_eq!(
                (local.as_str(), remote.as_str()),
                ("test.Embedding", "test.Other")
            );
        }
        e => panic!("unexpected {e}"),
    }
    match sender.join().unwrap().unwrap() {
        NetError::IncompatibleType { local, remote } => {
            assert_eq!(
                (local.as_str(), remote.as_str()),
                ("test.Other", "test.Embedding")
            );
        }
        e => panic!("unexpected {e}"),
    }
    // A raw sender cannot feed a typed receiver.
    let sender = thread::spawn(move || Channel::raw().connect_producer(addr).err());
    let err = Channel::<Embedding>::builder()
        .accept_consumer(&l)
        .err()
        .unwrap();
    assert!(matches!(err, NetError::IncompatibleType { .. }), "{err}");
    assert!(matches!(
        sender.join().unwrap(),
        Some(NetError::IncompatibleType { .. })
    ));
}

#[test]
fn a_changed_layout_is_refused() {
    let (l, addr) = listener();
    let sender = thread::spawn(move || {
        Channel::<changed::Embedding>::builder()
            .connect_producer(addr)
            .err()
    });
    let err = Channel::<Embedding>::builder()
        .accept_consumer(&l)
        .err()
        .unwrap();
    assert!(
        matches!(&err, NetError::IncompatibleLayout { local, remote, local_fingerprint, remote_fingerprint }
            if local == "test.Embedding" && remote == "test.Embedding" && local_fingerprint != remote_fingerprint),
        "{err}"
    );
    let e = sender.join().unwrap().unwrap();
    assert!(matches!(e, NetError::IncompatibleLayout { .. }), "{e}");
}

#[test]
fn a_raw_sender_larger_than_the_receiver_is_refused() {
    let (l, addr) = listener();
    let sender = thread::spawn(move || {
        Channel::raw()
            .capacity_bytes(1 << 20)
            .connect_producer(addr)
            .err()
    });
    let err = Channel::raw()
        .capacity_bytes(1 << 12)
        .accept_consumer(&l)
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            NetError::MessageTooLarge {
                receiver_max: 4000,
                ..
            }
        ),
        "{err}"
    );
    let e = sender.join().unwrap().unwrap();
    assert!(
        matches!(
            e,
            NetError::MessageTooLarge {
                receiver_max: 4000,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn two_senders_are_refused() {
    let (l, addr) = listener();
    let sender = thread::spawn(move || Channel::<Other>::builder().connect_producer(addr).err());
    let err = Channel::<Other>::builder()
        .accept_producer(&l)
        .err()
        .unwrap();
    assert!(matches!(err, NetError::Handshake { .. }), "{err}");
    assert!(matches!(
        sender.join().unwrap(),
        Some(NetError::Handshake { .. })
    ));
}

/// Writes a greeting of `version` by hand, as a program following PROTOCOL.md would.
fn greeting(version: u16, role: u8) -> [u8; 64] {
    let mut g = [0u8; 64];
    g[..8].copy_from_slice(b"PSYNENET");
    g[8..10].copy_from_slice(&version.to_le_bytes());
    g[10] = role;
    g
}

#[test]
fn a_different_protocol_version_is_refused_with_a_verdict() {
    let (l, addr) = listener();
    let peer = thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&greeting(2, 1)).unwrap();
        let mut back = [0u8; 64 + 16];
        s.read_exact(&mut back).unwrap();
        back
    });
    let err = Channel::<Other>::builder()
        .accept_consumer(&l)
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            NetError::VersionMismatch {
                local: 1,
                remote: 2
            }
        ),
        "{err}"
    );
    let back = peer.join().unwrap();
    assert_eq!(&back[..8], b"PSYNENET");
    assert_eq!(back[10], 2, "the listener announced itself as receiver");
    assert_eq!(&back[64..68], b"PSYV");
    assert_eq!(
        u16::from_le_bytes([back[68], back[69]]),
        1,
        "code: version mismatch"
    );
    assert_eq!(back[72], 1, "detail: the listener's version");
}

#[test]
fn an_http_request_fails_that_accept_only() {
    let (l, addr) = listener();
    let peer = thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink); // the listener closes
        let mut tx = Channel::<Other>::builder().connect_producer(addr).unwrap();
        tx.send(&Other { x: [9; 8] }).unwrap();
    });
    let t = Instant::now();
    let err = Channel::<Other>::builder()
        .accept_consumer(&l)
        .err()
        .unwrap();
    assert!(matches!(err, NetError::Handshake { .. }), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "bad magic is caught at once"
    );
    let mut rx = Channel::<Other>::builder().accept_consumer(&l).unwrap();
    assert_eq!(rx.recv().unwrap().x, [9; 8]);
    peer.join().unwrap();
}

#[test]
fn a_silent_client_times_the_handshake_out() {
    let (l, addr) = listener();
    let _peer = TcpStream::connect(addr).unwrap();
    let t = Instant::now();
    let err = Channel::<Other>::builder()
        .net()
        .handshake_timeout(Duration::from_millis(300))
        .accept_consumer(&l)
        .err()
        .unwrap();
    assert!(
        matches!(err, NetError::Timeout { what: "handshake" }),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[test]
fn connect_and_accept_time_out() {
    let (l, _addr) = listener();
    let err = Channel::<Other>::builder()
        .accept_timeout(Duration::from_millis(100))
        .accept_consumer(&l)
        .err()
        .unwrap();
    assert!(matches!(err, NetError::Timeout { what: "accept" }), "{err}");
    // Nothing listens on a freshly closed port: refused, a typed Io error.
    let closed = {
        let t = TcpListener::bind("127.0.0.1:0").unwrap();
        t.local_addr().unwrap()
    };
    let err = Channel::<Other>::builder()
        .connect_producer(closed)
        .err()
        .unwrap();
    assert!(matches!(err, NetError::Io(_)), "{err}");
}

#[test]
fn listeners_bind_loopback_only_unless_told_otherwise() {
    let err = Listener::bind("0.0.0.0:0").err().unwrap();
    assert!(matches!(err, NetError::NotLoopback { .. }), "{err}");
    let l = Listener::bind_authenticated("0.0.0.0:0").unwrap();
    let err = Channel::<Other>::builder()
        .accept_consumer(&l)
        .err()
        .unwrap();
    assert!(matches!(err, NetError::AuthRequired), "{err}");
    assert!(Listener::bind_insecure_any("0.0.0.0:0").is_ok());
}

#[test]
fn the_same_key_authenticates_and_a_wrong_or_missing_key_fails_on_both_sides() {
    let (l, addr) = listener();
    let key = b"0123456789abcdef0123456789abcdef";
    let sender = thread::spawn(move || {
        let mut tx = Channel::<Other>::builder()
            .auth_key(key)
            .connect_producer(addr)
            .unwrap();
        tx.send(&Other { x: [1; 8] }).unwrap();
    });
    let mut rx = Channel::<Other>::builder()
        .auth_key(key)
        .accept_consumer(&l)
        .unwrap();
    assert_eq!(rx.recv().unwrap().x, [1; 8]);
    sender.join().unwrap();

    let sender = thread::spawn(move || {
        Channel::<Other>::builder()
            .auth_key(b"another key, same length.......!")
            .connect_producer(addr)
            .err()
    });
    let err = Channel::<Other>::builder()
        .auth_key(key)
        .accept_consumer(&l)
        .err()
        .unwrap();
    assert!(matches!(err, NetError::AuthFailed { .. }), "{err}");
    let e = sender.join().unwrap().unwrap();
    assert!(matches!(e, NetError::AuthFailed { .. }), "{e}");

    let sender = thread::spawn(move || Channel::<Other>::builder().connect_producer(addr).err());
    let err = Channel::<Other>::builder()
        .auth_key(key)
        .accept_consumer(&l)
        .err()
        .unwrap();
    assert!(matches!(err, NetError::AuthFailed { .. }), "{err}");
    assert!(matches!(
        sender.join().unwrap(),
        Some(NetError::AuthFailed { .. })
    ));

    let err = Channel::<Other>::builder()
        .auth_key(b"")
        .connect_producer(addr)
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            NetError::AuthFailed {
                why: "the key is empty"
            }
        ),
        "{err}"
    );
}

#[test]
fn a_full_receiving_ring_backs_up_to_the_producer() {
    let (l, addr) = listener();
    let sender = thread::spawn(move || {
        let mut tx = Channel::<Embedding>::builder()
            .capacity(16)
            .connect_producer(addr)
            .unwrap();
        // The consumer reads nothing: its ring, both socket buffers (autotuned up to tens of
        // MiB on some kernels), then this ring fill up. Backpressure has reached the producer
        // once no send succeeded for 300 ms in a row.
        let mut sent = 0u64;
        let mut last_progress = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match tx.try_send(&embedding(sent)) {
                Ok(()) => {
                    sent += 1;
                    last_progress = Instant::now();
                }
                Err(SendError::Full) => {
                    if last_progress.elapsed() > Duration::from_millis(300) {
                        break;
                    }
                    thread::sleep(Duration::from_micros(200));
                }
                Err(e) => panic!("{e}"),
            }
            assert!(Instant::now() < deadline, "the producer never stayed Full");
        }
        // Kept alive: dropping it now would wait for a consumer that reads only after the join.
        (sent, tx)
    });
    let mut rx = Channel::<Embedding>::builder()
        .capacity(16)
        .accept_consumer(&l)
        .unwrap();
    let (sent, tx) = sender.join().unwrap();
    assert!(sent >= 32, "at least both rings' worth was sent: {sent}");
    // A producer dropped with a full ring and full socket buffers: its drop waits while the
    // consumer drains them, and every message arrives.
    let dropper = thread::spawn(move || drop(tx));
    for s in 0..sent {
        check_embedding(&rx.recv().unwrap(), s);
    }
    assert!(matches!(rx.recv(), Err(RecvError::Disconnected)));
    dropper.join().unwrap();
}

/// Messages the child of the flush test sends: far more than both socket buffers hold, so the
/// child's ring is still full when it drops its producer.
const FLUSH_MESSAGES: u64 = 40_000;

#[test]
fn a_producer_process_exiting_right_after_its_drop_delivers_everything() {
    // The sender is a child process (this test binary, re-run with an environment variable)
    // that drops its producer right after its last send and exits at once: the exit kills its
    // pump thread, so only what the drop flushed to the kernel can arrive.
    if let Ok(addr) = std::env::var("PSYNE_NET_FLUSH_CHILD") {
        let mut tx = Channel::<Embedding>::builder()
            .capacity(4096)
            .connect_producer(addr.as_str())
            .unwrap();
        for s in 0..FLUSH_MESSAGES {
            tx.send(&embedding(s)).unwrap();
        }
        drop(tx);
        std::process::exit(0);
    }
    let (l, addr) = listener();
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(exe)
        .args([
            "--exact",
            "a_producer_process_exiting_right_after_its_drop_delivers_everything",
            "--nocapture",
        ])
        .env("PSYNE_NET_FLUSH_CHILD", addr.to_string())
        .spawn()
        .unwrap();
    let mut rx = Channel::<Embedding>::builder()
        .capacity(64)
        .accept_timeout(Duration::from_secs(60))
        .accept_consumer(&l)
        .unwrap();
    for s in 0..FLUSH_MESSAGES {
        match rx.recv() {
            Ok(m) => check_embedding(&m, s),
            Err(e) => panic!("message {s} of {FLUSH_MESSAGES} did not arrive: {e}"),
        }
    }
    assert!(matches!(rx.recv(), Err(RecvError::Disconnected)));
    assert!(child.wait().unwrap().success());
}

#[test]
fn dropping_a_producer_whose_peer_reads_nothing_gives_up_after_the_flush_timeout() {
    let (l, addr) = listener();
    let sender = thread::spawn(move || {
        let mut tx = Channel::<Embedding>::builder()
            .capacity(16)
            .net()
            .flush_timeout(Duration::from_millis(300))
            .connect_producer(addr)
            .unwrap();
        // Fill the consumer's ring, both socket buffers and this ring (as in the backpressure
        // test): full once no send succeeded for 300 ms in a row.
        let mut sent = 0u64;
        let mut last_progress = Instant::now();
        while last_progress.elapsed() < Duration::from_millis(300) {
            match tx.try_send(&embedding(sent)) {
                Ok(()) => {
                    sent += 1;
                    last_progress = Instant::now();
                }
                Err(SendError::Full) => thread::sleep(Duration::from_micros(200)),
                Err(e) => panic!("{e}"),
            }
        }
        // The consumer reads nothing until this drop returned: the drop must give up.
        drop(tx);
        sent
    });
    let mut rx = Channel::<Embedding>::builder()
        .capacity(16)
        .accept_consumer(&l)
        .unwrap();
    let sent = sender.join().unwrap();
    // What reached the consumer's side arrives whole and in order, then the cut shows.
    let got = drain_until_disconnected(&mut rx, sent);
    assert!(
        got < sent,
        "the producer's full ring was not written: {got} of {sent}"
    );
    assert!(matches!(rx.recv(), Err(RecvError::Disconnected)));
}

#[test]
fn dropping_the_consumer_disconnects_the_remote_producer() {
    let (l, addr) = listener();
    let sender = thread::spawn(move || {
        let mut tx = Channel::<Embedding>::builder()
            .capacity(16)
            .connect_producer(addr)
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match tx.send_timeout(&embedding(0), Duration::from_millis(50)) {
                Ok(()) | Err(SendError::Timeout) => {}
                Err(SendError::Disconnected) => return true,
                Err(e) => panic!("{e}"),
            }
            if Instant::now() > deadline {
                return false;
            }
        }
    });
    let rx = Channel::<Embedding>::builder()
        .capacity(16)
        .accept_consumer(&l)
        .unwrap();
    thread::sleep(Duration::from_millis(100));
    drop(rx);
    assert!(sender.join().unwrap(), "the producer saw Disconnected");
}

#[test]
fn compressed_channels_deliver_exact_bytes() {
    let mut codecs = vec![Compression::Lz4, Compression::None];
    if cfg!(feature = "zstd") {
        codecs.push(Compression::Zstd { level: 3 });
    }
    for compression in codecs {
        let (l, addr) = listener();
        let sender = thread::spawn(move || {
            let mut tx = Channel::<Embedding>::builder()
                .compression(compression)
                .connect_producer(addr)
                .unwrap();
            for s in 0..500 {
                let mut e = embedding(s);
                // ReLU-like: half zeros; every 7th message incompressible noise.
                for (i, v) in e.data.iter_mut().enumerate() {
                    if s % 7 == 0 {
                        *v = f32::from_bits((i as u32 + 1).wrapping_mul(2_654_435_761) ^ s as u32);
                    } else if i % 2 == 1 {
                        *v = 0.0;
                    }
                }
                tx.send(&e).unwrap();
            }
        });
        let mut rx = Channel::<Embedding>::builder().accept_consumer(&l).unwrap();
        for s in 0..500 {
            let m = rx.recv().unwrap();
            let mut e = embedding(s);
            for (i, v) in e.data.iter_mut().enumerate() {
                if s % 7 == 0 {
                    *v = f32::from_bits((i as u32 + 1).wrapping_mul(2_654_435_761) ^ s as u32);
                } else if i % 2 == 1 {
                    *v = 0.0;
                }
            }
            assert_eq!(bytemuck::bytes_of(&*m), bytemuck::bytes_of(&e));
        }
        sender.join().unwrap();
    }
    #[cfg(not(feature = "zstd"))]
    {
        let err = Channel::<Embedding>::builder()
            .compression(Compression::Zstd { level: 3 })
            .connect_producer("127.0.0.1:1")
            .err()
            .unwrap();
        assert!(
            matches!(err, NetError::CompressionUnavailable { codec: "zstd" }),
            "{err}"
        );
    }
}

/// What the fault proxy does to the client-to-server bytes.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Close both connections after forwarding `k` bytes.
    CutAt(usize),
    /// Forward `k` bytes, then nothing (connections stay open) until `release`.
    StallAt(usize),
    /// XOR byte `k` with `mask`.
    Flip(usize, u8),
    /// Forward in chunks of `n` bytes with `ms` milliseconds between them.
    Slow(usize, u64),
    /// Forward `k` bytes, then nothing until `release`, then the rest.
    PauseAt(usize),
}

/// A one-connection proxy in front of `target`; returns its address and a release flag.
fn proxy(target: SocketAddr, fault: Fault) -> (SocketAddr, Arc<AtomicBool>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let release = Arc::new(AtomicBool::new(false));
    let rel = Arc::clone(&release);
    thread::spawn(move || {
        let (client, _) = l.accept().unwrap();
        let server = TcpStream::connect(target).unwrap();
        let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        // Server to client: verbatim.
        thread::spawn(move || {
            let (mut from, mut to) = (s2, c2);
            let _ = std::io::copy(&mut from, &mut to);
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
        });
        let (mut from, mut to) = (client, server);
        let mut seen = 0usize;
        let mut paused = false;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let want = match fault {
                Fault::Slow(n, _) => n.min(buf.len()),
                _ => buf.len(),
            };
            let n = match from.read(&mut buf[..want]) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let (mut n, mut stop) = (n, false);
            match fault {
                Fault::CutAt(k) | Fault::StallAt(k) if seen + n >= k => {
                    n = k - seen;
                    stop = true;
                }
                Fault::Flip(k, mask) if seen <= k && k < seen + n => buf[k - seen] ^= mask,
                Fault::Slow(_, ms) => thread::sleep(Duration::from_millis(ms)),
                Fault::PauseAt(k) if !paused && seen + n >= k => {
                    let first = k - seen;
                    if to.write_all(&buf[..first]).is_err() {
                        break;
                    }
                    while !rel.load(Ordering::Relaxed) {
                        thread::sleep(Duration::from_millis(10));
                    }
                    paused = true;
                    buf.copy_within(first..n, 0);
                    (seen, n) = (k, n - first);
                }
                _ => {}
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
            seen += n;
            if stop {
                if let Fault::StallAt(_) = fault {
                    while !rel.load(Ordering::Relaxed) {
                        thread::sleep(Duration::from_millis(10));
                    }
                }
                break;
            }
        }
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    });
    (addr, release)
}

/// Runs a producer of `n` embeddings through a proxy with `fault`; returns what the consumer
/// received before `Disconnected`, and whether the producer ended with `Disconnected`.
fn through_proxy(fault: Fault, n: u64, stall: Duration) -> (u64, bool) {
    let (l, addr) = listener();
    let (paddr, release) = proxy(addr, fault);
    let sender = thread::spawn(move || {
        let mut tx = Channel::<Embedding>::builder()
            .capacity(8)
            .connect_producer(paddr)
            .unwrap();
        for s in 0..n {
            match tx.send_timeout(&embedding(s), Duration::from_secs(10)) {
                Ok(()) => {}
                Err(SendError::Disconnected) => return true,
                Err(e) => panic!("{e}"),
            }
        }
        // Everything was handed to the ring; wait for the connection to end.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !tx.is_disconnected() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        tx.is_disconnected()
    });
    let mut rx = Channel::<Embedding>::builder()
        .capacity(8)
        .net()
        .stall_timeout(stall)
        .accept_consumer(&l)
        .unwrap();
    let got = drain_until_disconnected(&mut rx, n);
    release.store(true, Ordering::Relaxed);
    drop(rx);
    (got, sender.join().unwrap())
}

const FRAME: usize = 32 + core::mem::size_of::<Embedding>();

#[test]
fn a_cut_mid_frame_delivers_only_whole_messages() {
    let hs = sender_handshake_len("test.Embedding");
    for (k, whole) in [
        (hs + 5 * FRAME + 100, 5),
        (hs + 3 * FRAME + 10, 3),
        (hs + 7 * FRAME, 7),
    ] {
        let (got, producer_disconnected) =
            through_proxy(Fault::CutAt(k), 50, Duration::from_secs(5));
        assert_eq!(got, whole, "cut at byte {k}");
        assert!(producer_disconnected);
    }
}

#[test]
fn a_cut_during_the_handshake_fails_the_accept() {
    let (l, addr) = listener();
    let (paddr, _r) = proxy(addr, Fault::CutAt(70));
    let sender = thread::spawn(move || {
        Channel::<Embedding>::builder()
            .connect_producer(paddr)
            .err()
    });
    let err = Channel::<Embedding>::builder()
        .accept_consumer(&l)
        .err()
        .unwrap();
    assert!(
        matches!(err, NetError::Handshake { .. } | NetError::Io(_)),
        "{err}"
    );
    assert!(sender.join().unwrap().is_some());
}

#[test]
fn a_stall_mid_frame_ends_in_disconnected_after_the_stall_timeout() {
    let hs = sender_handshake_len("test.Embedding");
    let t = Instant::now();
    let (got, producer_disconnected) = through_proxy(
        Fault::StallAt(hs + 4 * FRAME + 500),
        50,
        Duration::from_millis(300),
    );
    assert_eq!(got, 4);
    assert!(producer_disconnected);
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
}

#[test]
fn each_receive_keeps_its_own_deadline_while_a_frame_is_half_arrived() {
    // The consumer's calls read the socket themselves: a frame cut in two by a pause of the
    // link waits in the reader for its rest while each call returns on its own deadline, and
    // is delivered whole once the rest arrives.
    let hs = sender_handshake_len("test.Embedding");
    let (l, addr) = listener();
    let (paddr, release) = proxy(addr, Fault::PauseAt(hs + 2 * FRAME + 500));
    let sender = thread::spawn(move || {
        let mut tx = Channel::<Embedding>::builder()
            .capacity(8)
            .connect_producer(paddr)
            .unwrap();
        for s in 0..6 {
            tx.send(&embedding(s)).unwrap();
        }
    });
    let mut rx = Channel::<Embedding>::builder()
        .capacity(8)
        .net()
        .stall_timeout(Duration::from_secs(20))
        .accept_consumer(&l)
        .unwrap();
    for s in 0..2 {
        check_embedding(&rx.recv_timeout(Duration::from_secs(10)).unwrap(), s);
    }
    for _ in 0..3 {
        let t = Instant::now();
        let r = rx.recv_timeout(Duration::from_millis(100)).err();
        assert!(matches!(r, Some(RecvError::Timeout)), "{r:?}");
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(100), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
        assert!(matches!(rx.try_recv(), Err(RecvError::Empty)));
    }
    release.store(true, Ordering::Relaxed);
    for s in 2..6 {
        check_embedding(&rx.recv_timeout(Duration::from_secs(10)).unwrap(), s);
    }
    assert!(matches!(
        rx.recv_timeout(Duration::from_secs(10)),
        Err(RecvError::Disconnected)
    ));
    sender.join().unwrap();
}

#[test]
fn a_ring_of_two_large_messages_streams_without_waiting_for_itself() {
    // 1 MiB messages in 2 MiB rings: every other reservation wraps, and the wrap filler must
    // be skipped by the receiving consumer's own next attempt, not waited for (a wait there
    // would wait for the calling thread itself: 50 ms per message).
    const N: u64 = 40;
    let size = 1 << 20;
    let (l, addr) = listener();
    let sender = thread::spawn(move || {
        let mut tx = Channel::raw()
            .capacity_bytes(2 << 20)
            .connect_producer(addr)
            .unwrap();
        for s in 0..N {
            let mut loan = tx.allocate_bytes(size).unwrap();
            loan[..8].copy_from_slice(&s.to_le_bytes());
            loan.send(7);
        }
    });
    let mut rx = Channel::raw()
        .capacity_bytes(2 << 20)
        .accept_consumer(&l)
        .unwrap();
    let t = Instant::now();
    for s in 0..N {
        let m = rx.recv().unwrap();
        assert_eq!(m.bytes().len(), size);
        assert_eq!(m.bytes()[..8], s.to_le_bytes());
    }
    // 40 MiB over loopback take tens of milliseconds; 50 ms per message would be 2 s.
    let took = t.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "{took:?} for {N} messages"
    );
    sender.join().unwrap();
}

#[test]
fn a_huge_announced_length_closes_the_connection_and_delivers_nothing() {
    let hs = sender_handshake_len("test.Embedding");
    // Byte 3 of the first frame is the top byte of `len`: 0x80 makes it over 2 GiB.
    let (got, producer_disconnected) =
        through_proxy(Fault::Flip(hs + 3, 0x80), 50, Duration::from_secs(5));
    assert_eq!(got, 0);
    assert!(producer_disconnected);
}

#[test]
fn flipped_header_bytes_are_caught() {
    let hs = sender_handshake_len("test.Embedding");
    // Frame 2's type id (offset 8), frame 3's sequence (offset 16), frame 1's flags (offset 4).
    for (k, whole) in [
        (hs + 2 * FRAME + 8, 2),
        (hs + 3 * FRAME + 16, 3),
        (hs + FRAME + 4, 1),
    ] {
        let (got, producer_disconnected) =
            through_proxy(Fault::Flip(k, 0x01), 20, Duration::from_secs(5));
        assert_eq!(got, whole, "flip at {k}");
        assert!(producer_disconnected);
    }
    // A flip in the greeting's magic fails the accept.
    let (got, _) = {
        let (l, addr) = listener();
        let (paddr, _r) = proxy(addr, Fault::Flip(2, 0x20));
        let sender = thread::spawn(move || {
            Channel::<Embedding>::builder()
                .connect_producer(paddr)
                .err()
        });
        let err = Channel::<Embedding>::builder()
            .accept_consumer(&l)
            .err()
            .unwrap();
        assert!(matches!(err, NetError::Handshake { .. }), "{err}");
        (0, sender.join().unwrap().is_some())
    };
    assert_eq!(got, 0);
}

#[test]
fn a_slow_link_delivers_everything() {
    let (got, _) = through_proxy(Fault::Slow(333, 1), 40, Duration::from_secs(5));
    assert_eq!(got, 40);
}

#[test]
fn stress_a_million_small_messages_with_checksums() {
    let n: u64 = std::env::var("PSYNE_NET_STRESS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let (l, addr) = listener();
    let t = Instant::now();
    let sender = thread::spawn(move || {
        let mut tx = Channel::<Small>::builder()
            .capacity(4096)
            .connect_producer(addr)
            .unwrap();
        let mut sum = 0u64;
        for seq in 0..n {
            let mut m = tx.allocate().unwrap();
            m.seq = seq;
            for (i, v) in m.vals.iter_mut().enumerate() {
                *v = seq
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    .rotate_left(i as u32);
            }
            sum = sum.wrapping_add(m.vals.iter().fold(seq, |a, &v| a ^ v));
            m.send();
        }
        sum
    });
    let mut rx = Channel::<Small>::builder()
        .capacity(4096)
        .accept_consumer(&l)
        .unwrap();
    let mut sum = 0u64;
    for seq in 0..n {
        let m = rx.recv().unwrap();
        assert_eq!(m.seq, seq);
        sum = sum.wrapping_add(m.vals.iter().fold(m.seq, |a, &v| a ^ v));
    }
    assert_eq!(sum, sender.join().unwrap());
    assert!(matches!(rx.recv(), Err(RecvError::Disconnected)));
    let dt = t.elapsed();
    println!(
        "{n} messages of 64 B over loopback in {dt:?}: {:.0} msg/s",
        n as f64 / dt.as_secs_f64()
    );
}

/// Runs `ip` with `args`; whether it succeeded.
fn ip(args: &[&str]) -> bool {
    std::process::Command::new("ip")
        .args(args)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn across_two_network_namespaces_joined_by_veth() {
    // This test process stays in its namespace; a child (this test binary, re-run with an
    // environment variable) runs inside namespace B as the receiver.
    if let Ok(addr) = std::env::var("PSYNE_NET_NS_CHILD") {
        // The listener in namespace A may not be up yet: retry refused connections for 10 s.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut rx = loop {
            match Channel::<Embedding>::builder()
                .capacity(64)
                .auth_key(b"namespace test key 0123456789abc")
                .connect_consumer(addr.as_str())
            {
                Ok(rx) => break rx,
                Err(NetError::Io(e)) if Instant::now() < deadline => {
                    eprintln!("retrying: {e}");
                    thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("{e}"),
            }
        };
        for s in 0..2000 {
            check_embedding(&rx.recv().unwrap(), s);
        }
        drop(rx); // tells the producer everything arrived
        println!("child received 2000");
        return;
    }
    let id = std::process::id() % 100_000;
    let (a, b) = (format!("psyA{id}"), format!("psyB{id}"));
    let (va, vb) = (format!("pva{id}"), format!("pvb{id}"));
    if !ip(&["netns", "add", &a]) {
        println!("skipped: network namespaces are not allowed here (ip netns add failed)");
        return;
    }
    let cleanup = |a: &str, b: &str| {
        ip(&["netns", "del", a]);
        ip(&["netns", "del", b]);
    };
    let ok = ip(&["netns", "add", &b])
        && ip(&[
            "link", "add", &va, "netns", &a, "type", "veth", "peer", "name", &vb, "netns", &b,
        ])
        && ip(&["-n", &a, "addr", "add", "10.213.7.1/24", "dev", &va])
        && ip(&["-n", &b, "addr", "add", "10.213.7.2/24", "dev", &vb])
        && ip(&["-n", &a, "link", "set", &va, "up"])
        && ip(&["-n", &b, "link", "set", &vb, "up"])
        && ip(&["-n", &a, "link", "set", "lo", "up"])
        && ip(&["-n", &b, "link", "set", "lo", "up"]);
    if !ok {
        cleanup(&a, &b);
        println!("skipped: could not set up the veth pair");
        return;
    }
    // The listener runs in namespace A: a child of `ip netns exec A`, the same binary again.
    let exe = std::env::current_exe().unwrap();
    let listener_child = std::process::Command::new("ip")
        .args(["netns", "exec", &a])
        .arg(&exe)
        .args(["--exact", "namespace_listener_child", "--nocapture"])
        .env("PSYNE_NET_NS_LISTEN", "10.213.7.1:7411")
        .spawn();
    let Ok(mut listener_child) = listener_child else {
        cleanup(&a, &b);
        println!("skipped: ip netns exec failed");
        return;
    };
    thread::sleep(Duration::from_millis(500));
    let receiver = std::process::Command::new("ip")
        .args(["netns", "exec", &b])
        .arg(&exe)
        .args([
            "--exact",
            "across_two_network_namespaces_joined_by_veth",
            "--nocapture",
        ])
        .env("PSYNE_NET_NS_CHILD", "10.213.7.1:7411")
        .output();
    let listener_ok = listener_child.wait().map(|s| s.success()).unwrap_or(false);
    cleanup(&a, &b);
    let receiver = receiver.unwrap();
    let out = String::from_utf8_lossy(&receiver.stdout);
    let err = String::from_utf8_lossy(&receiver.stderr);
    assert!(
        receiver.status.success(),
        "receiver in B failed: {out}\n{err}"
    );
    assert!(out.contains("child received 2000"), "{out}");
    assert!(listener_ok, "the producer in A failed");
}

/// The producer side of the namespace test (inside namespace A).
#[test]
fn namespace_listener_child() {
    let Ok(addr) = std::env::var("PSYNE_NET_NS_LISTEN") else {
        return; // only meaningful inside the namespace test's child process
    };
    let l = Listener::bind_authenticated(addr.as_str()).unwrap();
    let mut tx = Channel::<Embedding>::builder()
        .capacity(64)
        .auth_key(b"namespace test key 0123456789abc")
        .accept_timeout(Duration::from_secs(10))
        .accept_producer(&l)
        .unwrap();
    for s in 0..2000 {
        tx.send(&embedding(s)).unwrap();
    }
    // Dropping the producer would flush the ring; waiting for the consumer to drop its end
    // also proves that it received everything.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tx.is_disconnected() {
        assert!(Instant::now() < deadline, "the consumer never finished");
        thread::sleep(Duration::from_millis(10));
    }
}
