//! Streaming throughput of one SPSC channel, per payload size, so regressions show in
//! `cargo bench -p psyne --bench throughput` (about 30 s).
//!
//! One producer and one consumer thread (pinned to CPUs 0 and 1 when there are two), started
//! together by a `Barrier`; the producer writes every word of each message in place into a loan,
//! the consumer reads every word in place (a sum) and checks the first. The time of one
//! iteration is the time per message from the producer's first send to the consumer's last
//! receive (`iter_custom`). The channel is built and its memory touched once per size, before
//! any timing. Comparisons against other queues live in `examples/psyne_bench.rs`.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use psyne::{Channel, Consumer, Message, Producer, PsyneMessage, Wait};

/// Messages each channel holds (lowered for large payloads, see [`RING_BYTES_MAX`]).
const CAPACITY: usize = 1024;
/// Largest ring built (bytes).
const RING_BYTES_MAX: usize = 64 << 20;

/// A payload of `W` 32-bit words.
#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Words<const W: usize> {
    data: [u32; W],
}

/// `psyne_schemas::Embedding256`'s layout (1032 bytes; the schemas crate depends on this one).
#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Embedding256 {
    data: [f32; 256],
    batch_idx: u32,
    layer_id: u32,
}

/// Views a message as its 32-bit words (every payload here is a whole number of them).
trait AsWords: Message {
    fn words(&self) -> &[u32] {
        bytemuck::cast_slice(bytemuck::bytes_of(self))
    }
    fn words_mut(&mut self) -> &mut [u32] {
        bytemuck::cast_slice_mut(bytemuck::bytes_of_mut(self))
    }
}
impl<const W: usize> AsWords for Words<W> {}
impl AsWords for Embedding256 {}

#[inline(always)]
fn write<T: AsWords>(m: &mut T, seq: u64) {
    for (i, w) in m.words_mut().iter_mut().enumerate() {
        *w = (seq as u32).wrapping_add(i as u32);
    }
}

#[inline(always)]
fn read<T: AsWords>(m: &T) -> (u32, u32) {
    let w = m.words();
    (w[0], w.iter().fold(0u32, |a, &x| a.wrapping_add(x)))
}

fn pin(cpu: usize) {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return;
    }
    // SAFETY: `cpu_set_t` is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is 0 or 1, inside the set.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is a valid `cpu_set_t` of the size given. A
    // failure only leaves the thread unpinned.
    unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
}

/// Streams `iters` messages; returns the time from the first send to the last receive.
fn stream<T: AsWords + Send>(tx: &mut Producer<T>, rx: &mut Consumer<T>, iters: u64) -> Duration {
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        let producer = s.spawn(|| {
            pin(0);
            barrier.wait();
            let start = Instant::now();
            for seq in 0..iters {
                let mut m = tx.allocate().expect("consumer alive");
                write(&mut *m, seq);
                m.send();
            }
            start
        });
        let consumer = s.spawn(|| {
            pin(1);
            barrier.wait();
            let mut bad = 0u64;
            for seq in 0..iters {
                let m = rx.recv().expect("producer alive");
                let (first, sum) = read(&*m);
                bad += u64::from(first != seq as u32);
                black_box(sum);
            }
            assert_eq!(bad, 0, "messages out of order");
            Instant::now()
        });
        let start = producer.join().expect("producer");
        let stop = consumer.join().expect("consumer");
        stop.duration_since(start)
    })
}

fn bench_payload<T: AsWords + Send>(c: &mut Criterion, name: &str) {
    let record = psyne::ring::record_size(size_of::<T>()).expect("payload fits");
    let capacity = CAPACITY.min(RING_BYTES_MAX / record).max(1);
    let (mut tx, mut rx) = Channel::<T>::builder()
        .capacity(capacity)
        .wait(Wait::BusySpin)
        .build()
        .expect("channel");

    // Sanity check before timing: contents and order survive, `Full` and `Empty` are reported.
    let mut sent = 0u64;
    while let Ok(mut m) = tx.try_allocate() {
        write(&mut *m, sent);
        m.send();
        sent += 1;
    }
    assert!(
        sent >= capacity as u64,
        "ring holds {sent} < {capacity} messages"
    );
    for seq in 0..sent {
        let m = rx.try_recv().expect("message");
        let want = (0..size_of::<T>() / 4).fold(0u32, |a, i| {
            a.wrapping_add((seq as u32).wrapping_add(i as u32))
        });
        assert_eq!(read(&*m), (seq as u32, want));
    }
    assert!(rx.try_recv().is_err());
    // Touch the whole ring once more from two threads, so no page fault is timed.
    stream(&mut tx, &mut rx, 2 * sent);

    let mut group = c.benchmark_group("spsc_stream");
    group.throughput(Throughput::Bytes(size_of::<T>() as u64));
    group.bench_function(name, |b| {
        b.iter_custom(|iters| stream(&mut tx, &mut rx, iters))
    });
    group.finish();
}

fn throughput(c: &mut Criterion) {
    bench_payload::<Words<2>>(c, "8B");
    bench_payload::<Words<16>>(c, "64B");
    bench_payload::<Embedding256>(c, "Embedding256_1032B");
    bench_payload::<Words<4096>>(c, "16KiB");
    bench_payload::<Words<262144>>(c, "1MiB");
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = throughput
}
criterion_main!(benches);
