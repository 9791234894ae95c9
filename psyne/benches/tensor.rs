//! What the tensor description costs: a tensor message against a fixed-size message of the
//! same element bytes, in the same run (issue 14's targets). `cargo bench -p psyne --bench
//! tensor` (about 20 s).
//!
//! One thread, as `scripts/icount.sh` measures: each iteration borrows room, writes every
//! 32-bit word of the payload, sends, receives, reads every word in place (a wrapping sum,
//! checked against the stamp) and releases. Pairs:
//!
//! * `emb256`: `Embedding256`'s layout (1032 bytes) through `Channel::<Embedding256>` against a
//!   `u32` tensor of shape `[258]` (the same 1032 bytes of elements) through
//!   `Channel::tensors()`: `allocate_tensor` + fill + send + `recv` + `view` + read;
//! * `64k`: a 64 KiB message (`[u32; 16384]`) against a `u32` tensor `[16384]`.
//!
//! How each contender writes and reads its elements (every contender writes every word and
//! reads every word):
//!
//! * `typed`: a plain loop over the message's words (`iter_mut().enumerate()`, `fold`). The
//!   length is a constant, so LLVM unrolls both loops fully and vectorises them: no loop
//!   control, no remainder. This is what a user of a fixed-size message gets for free.
//! * `typed-opaque-length`: the same loops with the slices passed through `black_box`, so
//!   their length is unknown to the optimiser, as a tensor's is: `tensor-flat` against it
//!   isolates what the description costs.
//! * `tensor`: the loops a user of a run-time shape should write (`psyne::tensor`, "Writing
//!   the element loops"): over `TensorLoan::as_chunks_mut::<16>()` /
//!   `TensorView::as_chunks::<16>()`, fixed-width chunks whose inner loops are unrolled and
//!   vectorised, plus the remainder; the sum goes into 16 lane-wise accumulators.
//! * `tensor-flat`: the `typed` loops over `as_mut_slice()` / `as_slice()`.
//! * `tensor-rows`: the tensor as rows of a compile-time width (`TensorLoan::rows_mut::<W>()`
//!   / `TensorView::rows::<W>()`), the `typed` loops over each row: shape `[1, 258]` at
//!   `emb256` (one row of the same 1032 bytes) and `[64, 256]` at `64k`, as a user whose
//!   hidden size is a constant and whose batch is not would write them.
//! * `tensor-array`: the tensor as one array of its compile-time element count
//!   (`TensorLoan::as_array_mut::<A>()` / `TensorView::as_array::<A>()`, shape `[258]` /
//!   `[16384]`), with the `typed` loops themselves: the loops are the same on both sides, so
//!   the difference to `typed` is the description's cost alone.
//!
//! Instruction counts: with
//! `PSYNE_TENSOR_ICOUNT=<typed|typed-opaque|raw|tx-only|tensor|tensor-flat|tensor-rows|tensor-array>:<emb256|64k>:<N>` the binary
//! runs that loop N times and exits, without criterion, for `valgrind --tool=callgrind`;
//! instructions per message = `(Ir(N2) - Ir(N1)) / (N2 - N1)`, as in `scripts/icount.sh`.
//! `scripts/tensor-icount.sh` runs them all. Timing: `PSYNE_TENSOR_TIME=<rounds>` runs the
//! typed, typed-opaque-length and every tensor loop in interleaved rounds and prints
//! each one's best and median time per message, and the tensors' ratios.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group};
use psyne::tensor::DESCRIPTION_SIZE;
use psyne::{Channel, Consumer, Message, Producer, PsyneMessage, TensorConsumer, TensorProducer};

/// `psyne_schemas::Embedding256`'s layout (1032 bytes; the schemas crate depends on this one).
#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Embedding256 {
    data: [f32; 256],
    batch_idx: u32,
    layer_id: u32,
}

/// A payload of `W` 32-bit words.
#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Words<const W: usize> {
    data: [u32; W],
}

/// Views a message as its 32-bit words.
trait AsWords: Message {
    fn words(&self) -> &[u32] {
        bytemuck::cast_slice(bytemuck::bytes_of(self))
    }
    fn words_mut(&mut self) -> &mut [u32] {
        bytemuck::cast_slice_mut(bytemuck::bytes_of_mut(self))
    }
}
impl AsWords for Embedding256 {}
impl<const W: usize> AsWords for Words<W> {}

#[inline(always)]
fn write(words: &mut [u32], seq: u64) {
    for (i, w) in words.iter_mut().enumerate() {
        *w = (seq as u32).wrapping_add(i as u32);
    }
}

/// The first word (the stamp) and the wrapping sum of all words.
#[inline(always)]
fn read(words: &[u32]) -> (u32, u32) {
    (words[0], words.iter().fold(0u32, |a, &x| a.wrapping_add(x)))
}

/// Width of the chunks the tensor contender loops over (see `psyne::tensor`'s "Writing the
/// element loops"): 16 `u32` lanes are 4 SSE registers of accumulators. Of 8, 16, 32 and
/// 64, 16 costs the fewest instructions at both sizes (`emb256`: 868, 813, 823, 914).
const LANES: usize = 16;

/// [`write`] over fixed-width chunks and the remainder: the same values in the same words.
#[inline(always)]
fn write_chunked(chunks: &mut [[u32; LANES]], rest: &mut [u32], seq: u64) {
    let mut next = seq as u32;
    for chunk in chunks {
        for (k, w) in chunk.iter_mut().enumerate() {
            *w = next.wrapping_add(k as u32);
        }
        next = next.wrapping_add(LANES as u32);
    }
    for (k, w) in rest.iter_mut().enumerate() {
        *w = next.wrapping_add(k as u32);
    }
}

/// [`read`] over fixed-width chunks and the remainder, summing into lane-wise accumulators:
/// the same first word and wrapping sum of every word.
#[inline(always)]
fn read_chunked(chunks: &[[u32; LANES]], rest: &[u32]) -> (u32, u32) {
    let first = chunks.first().map_or(rest.first().copied(), |c| Some(c[0]));
    let mut lanes = [0u32; LANES];
    for chunk in chunks {
        for (l, &x) in lanes.iter_mut().zip(chunk) {
            *l = l.wrapping_add(x);
        }
    }
    let sum = lanes
        .iter()
        .chain(rest)
        .fold(0u32, |a, &x| a.wrapping_add(x));
    (first.unwrap_or(0), sum)
}

/// The sum `read` must find for a payload of `n` words stamped `seq`.
fn expected(n: usize, seq: u64) -> u32 {
    (0..n as u32).fold(0u32, |a, i| a.wrapping_add((seq as u32).wrapping_add(i)))
}

/// One typed message: allocate, write, send, receive, read.
#[inline(always)]
fn typed_once<T: AsWords>(tx: &mut Producer<T>, rx: &mut Consumer<T>, seq: u64) -> (u32, u32) {
    let mut m = tx.allocate().unwrap();
    write(m.words_mut(), seq);
    m.send();
    let r = rx.recv().unwrap();
    read(black_box(&*r).words())
}

/// [`typed_once`] with the payload's length hidden from the optimiser (`black_box` on the
/// slices), so that its write and read loops compile as the tensor's do (for a length known only
/// at run time): the difference to [`tensor_once`] is then the description's cost alone.
#[inline(always)]
fn typed_opaque_once<T: AsWords>(
    tx: &mut Producer<T>,
    rx: &mut Consumer<T>,
    seq: u64,
) -> (u32, u32) {
    let mut m = tx.allocate().unwrap();
    write(black_box(m.words_mut()), seq);
    m.send();
    let r = rx.recv().unwrap();
    read(black_box(r.words()))
}

/// The raw bytes path the tensor ends are built on: `allocate_bytes` of the tensor's payload
/// length, the same words written after a gap of the description's size (64 bytes), `recv`,
/// read (no description).
#[inline(always)]
fn raw_once(
    tx: &mut psyne::RawProducer,
    rx: &mut psyne::RawConsumer,
    words: usize,
    seq: u64,
) -> (u32, u32) {
    let mut b = tx.allocate_bytes(DESCRIPTION_SIZE + 4 * words).unwrap();
    write(bytemuck::cast_slice_mut(&mut b[DESCRIPTION_SIZE..]), seq);
    b.send(1);
    let r = rx.recv().unwrap();
    read(black_box(bytemuck::cast_slice(
        &r.bytes()[DESCRIPTION_SIZE..],
    )))
}

/// One tensor: `allocate_tensor`, fill, send, `recv`, `view`, read, the loops over
/// fixed-width chunks (`as_chunks_mut` / `as_chunks`).
#[inline(always)]
fn tensor_once(
    tx: &mut TensorProducer,
    rx: &mut TensorConsumer,
    shape: &[usize],
    seq: u64,
) -> (u32, u32) {
    let mut t = tx.allocate_tensor::<u32>(shape).unwrap();
    let (chunks, rest) = t.as_chunks_mut::<LANES>();
    write_chunked(chunks, rest, seq);
    t.send();
    let r = rx.recv().unwrap();
    let v = r.view::<u32>().unwrap();
    let (chunks, rest) = v.as_chunks::<LANES>();
    read_chunked(black_box(chunks), black_box(rest))
}

/// [`tensor_once`] with the loops over the whole slices (`as_mut_slice` / `as_slice`), as
/// the typed contenders' loops are written.
#[inline(always)]
fn tensor_flat_once(
    tx: &mut TensorProducer,
    rx: &mut TensorConsumer,
    shape: &[usize],
    seq: u64,
) -> (u32, u32) {
    let mut t = tx.allocate_tensor::<u32>(shape).unwrap();
    write(t.as_mut_slice(), seq);
    t.send();
    let r = rx.recv().unwrap();
    let v = r.view::<u32>().unwrap();
    read(black_box(v.as_slice()))
}

/// [`write`] over rows of `W` words: the same values in the same words.
#[inline(always)]
fn write_rows<const W: usize>(rows: &mut [[u32; W]], seq: u64) {
    let mut next = seq;
    for row in rows {
        write(row, next);
        next = next.wrapping_add(W as u64);
    }
}

/// [`read`] over rows of `W` words: the same first word and wrapping sum of every word.
#[inline(always)]
fn read_rows<const W: usize>(rows: &[[u32; W]]) -> (u32, u32) {
    let first = rows.first().map_or(0, |r| r[0]);
    let sum = rows.iter().fold(0u32, |a, row| a.wrapping_add(read(row).1));
    (first, sum)
}

/// One tensor of shape `[rows, W]`: `allocate_tensor`, the `typed` loops over each row of
/// `rows_mut::<W>()`, send, `recv`, `view`, the loops over each row of `rows::<W>()`.
#[inline(always)]
fn tensor_rows_once<const W: usize>(
    tx: &mut TensorProducer,
    rx: &mut TensorConsumer,
    shape: &[usize; 2],
    seq: u64,
) -> (u32, u32) {
    let mut t = tx.allocate_tensor::<u32>(shape).unwrap();
    write_rows::<W>(t.rows_mut::<W>().unwrap(), seq);
    t.send();
    let r = rx.recv().unwrap();
    let v = r.view::<u32>().unwrap();
    read_rows::<W>(black_box(v.rows::<W>().unwrap()))
}

/// One tensor of shape `[A]` through arrays of its compile-time element count
/// (`TensorLoan::as_array_mut::<A>()` / `TensorView::as_array::<A>()`): `allocate_tensor`, the
/// `typed` loops over the array, send, `recv`, `view`, the `typed` read. The loops are the
/// `typed` contender's, so the difference is the description's cost alone.
#[inline(always)]
fn tensor_array_once<const A: usize>(
    tx: &mut TensorProducer,
    rx: &mut TensorConsumer,
    shape: &[usize; 1],
    seq: u64,
) -> (u32, u32) {
    let mut t = tx.allocate_tensor::<u32>(shape).unwrap();
    write(t.as_array_mut::<A>().unwrap(), seq);
    t.send();
    let r = rx.recv().unwrap();
    let v = r.view::<u32>().unwrap();
    // `black_box` on the array reference (as `typed` does on the message), not on a slice,
    // which would hide the length.
    let a: &[u32; A] = black_box(v.as_array::<A>().unwrap());
    read(a)
}

/// Words per payload and the rings: each holds a few records of its kind.
struct Pair<T: Message> {
    words: usize,
    typed: (Producer<T>, Consumer<T>),
    tensors: (TensorProducer, TensorConsumer),
}

fn pair<T: AsWords>(ring_bytes: usize) -> Pair<T> {
    let words = size_of::<T>() / 4;
    let typed = Channel::<T>::builder()
        .capacity_bytes(ring_bytes)
        .build()
        .unwrap();
    let tensors = Channel::tensors()
        .capacity_bytes(ring_bytes)
        .build()
        .unwrap();
    Pair {
        words,
        typed,
        tensors,
    }
}

fn bench_pair<T: AsWords, const W: usize, const A: usize>(
    c: &mut Criterion,
    name: &str,
    ring_bytes: usize,
) {
    let mut p = pair::<T>(ring_bytes);
    let shape = [p.words];
    let rows = [p.words / W, W];
    // Sanity before timing: both paths deliver what was written.
    for seq in 0..1000 {
        let want = (seq as u32, expected(p.words, seq));
        assert_eq!(typed_once(&mut p.typed.0, &mut p.typed.1, seq), want);
        assert_eq!(typed_opaque_once(&mut p.typed.0, &mut p.typed.1, seq), want);
        assert_eq!(
            tensor_once(&mut p.tensors.0, &mut p.tensors.1, &shape, seq),
            want
        );
        assert_eq!(
            tensor_flat_once(&mut p.tensors.0, &mut p.tensors.1, &shape, seq),
            want
        );
        assert_eq!(
            tensor_rows_once::<W>(&mut p.tensors.0, &mut p.tensors.1, &rows, seq),
            want
        );
        assert_eq!(
            tensor_array_once::<A>(&mut p.tensors.0, &mut p.tensors.1, &shape, seq),
            want
        );
    }
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Bytes((p.words * 4) as u64));
    let mut seq = 0u64;
    g.bench_function("typed", |b| {
        b.iter(|| {
            seq += 1;
            typed_once(&mut p.typed.0, &mut p.typed.1, seq)
        })
    });
    g.bench_function("typed-opaque-length", |b| {
        b.iter(|| {
            seq += 1;
            typed_opaque_once(&mut p.typed.0, &mut p.typed.1, seq)
        })
    });
    g.bench_function("tensor", |b| {
        b.iter(|| {
            seq += 1;
            tensor_once(&mut p.tensors.0, &mut p.tensors.1, black_box(&shape), seq)
        })
    });
    g.bench_function("tensor-flat", |b| {
        b.iter(|| {
            seq += 1;
            tensor_flat_once(&mut p.tensors.0, &mut p.tensors.1, black_box(&shape), seq)
        })
    });
    g.bench_function("tensor-rows", |b| {
        b.iter(|| {
            seq += 1;
            tensor_rows_once::<W>(&mut p.tensors.0, &mut p.tensors.1, black_box(&rows), seq)
        })
    });
    g.bench_function("tensor-array", |b| {
        b.iter(|| {
            seq += 1;
            tensor_array_once::<A>(&mut p.tensors.0, &mut p.tensors.1, black_box(&shape), seq)
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    bench_pair::<Embedding256, 258, 258>(c, "emb256", 1 << 16);
    bench_pair::<Words<16384>, 256, 16384>(c, "64k", 1 << 20);
}

/// One contender's loop over the sequence numbers `seqs`, with the message inlined into it
/// (`once`, chosen once outside the loop): both modes, `icount` and `timing`, run this same
/// loop, so the code whose instructions are counted is the code that is timed, and what the
/// loop itself costs is the same for every contender. Out of line, so that each contender's
/// loop is its own function (one per closure type), compiled on its own: in one function
/// with the others, a change to one path moved the optimiser's choices for another's loops.
/// Returns the sum of the stamps and the number of messages whose sum is not the expected
/// one.
#[inline(never)]
fn drive(
    seqs: std::ops::Range<u64>,
    words: usize,
    mut once: impl FnMut(u64) -> (u32, u32),
) -> (u64, u64) {
    let (mut stamps, mut bad) = (0u64, 0u64);
    for seq in seqs {
        let (stamp, sum) = once(seq);
        stamps += stamp as u64;
        bad += u64::from(sum != black_box(expected_fast(words, seq)));
    }
    (stamps, bad)
}

/// The `PSYNE_TENSOR_ICOUNT` mode: one loop, no criterion.
fn icount(spec: &str) {
    let parts: Vec<&str> = spec.split(':').collect();
    let [contender, payload, n] = parts[..] else {
        panic!(
            "PSYNE_TENSOR_ICOUNT={spec}: expected <typed|typed-opaque|raw|tx-only|tensor|tensor-flat|tensor-rows|tensor-array>:<emb256|64k>:<N>"
        );
    };
    let n: u64 = n.parse().expect("N is a number");
    fn run<T: AsWords, const W: usize, const A: usize>(contender: &str, ring_bytes: usize, n: u64) {
        let mut p = pair::<T>(ring_bytes);
        let shape = [p.words];
        let rows = [p.words / W, W];
        let (mut rtx, mut rrx) = Channel::raw().capacity_bytes(ring_bytes).build().unwrap();
        let words = p.words;
        let (t, r) = (&mut p.typed, &mut p.tensors);
        let (stamps, bad) = match contender {
            "typed" => drive(0..n, words, |seq| typed_once(&mut t.0, &mut t.1, seq)),
            "typed-opaque" => drive(0..n, words, |seq| {
                typed_opaque_once(&mut t.0, &mut t.1, seq)
            }),
            "raw" => drive(0..n, words, |seq| {
                raw_once(&mut rtx, &mut rrx, words, black_box(seq))
            }),
            "tx-only" => drive(0..n, words, |seq| {
                let mut t = rtx.allocate_tensor::<u32>(&shape).unwrap();
                write(t.as_mut_slice(), seq);
                t.send();
                let r = rrx.recv().unwrap();
                read(black_box(bytemuck::cast_slice(
                    &r.bytes()[DESCRIPTION_SIZE..],
                )))
            }),
            "tensor" => drive(0..n, words, |seq| {
                tensor_once(&mut r.0, &mut r.1, &shape, seq)
            }),
            "tensor-flat" => drive(0..n, words, |seq| {
                tensor_flat_once(&mut r.0, &mut r.1, &shape, seq)
            }),
            "tensor-rows" => drive(0..n, words, |seq| {
                tensor_rows_once::<W>(&mut r.0, &mut r.1, &rows, seq)
            }),
            "tensor-array" => drive(0..n, words, |seq| {
                tensor_array_once::<A>(&mut r.0, &mut r.1, &shape, seq)
            }),
            other => panic!("contender {other:?}: see the module doc"),
        };
        assert_eq!(bad, 0, "{bad} of {n} messages did not add up");
        println!("{contender}: {n} messages, stamp sum {stamps}");
    }
    match payload {
        "emb256" => run::<Embedding256, 258, 258>(contender, 1 << 16, n),
        "64k" => run::<Words<16384>, 256, 16384>(contender, 1 << 20, n),
        other => panic!("payload {other:?}: expected emb256 or 64k"),
    }
}

/// `expected` in closed form (the loop mode must not add a second pass over the payload):
/// the sum of `seq + i` for `i < n`, wrapping.
fn expected_fast(n: usize, seq: u64) -> u32 {
    let n = n as u64;
    ((seq.wrapping_mul(n)).wrapping_add(n * (n - 1) / 2)) as u32
}

/// The `PSYNE_TENSOR_TIME=<rounds>` mode: interleaved rounds of every contender on both
/// payloads (each round runs each loop for about 20 ms), printing each one's best and median
/// time per message and the tensor's ratio to the typed path. On a shared VM, interleaving
/// and the minimum are what make the ratio meaningful.
fn timing(rounds: usize) {
    use std::time::Instant;
    const NAMES: [&str; 6] = [
        "typed",
        "typed-opaque-length",
        "tensor",
        "tensor-flat",
        "tensor-rows",
        "tensor-array",
    ];
    fn run<T: AsWords, const W: usize, const A: usize>(
        name: &str,
        ring_bytes: usize,
        n: u64,
        rounds: usize,
    ) {
        let mut p = pair::<T>(ring_bytes);
        let shape = [p.words];
        let rows = [p.words / W, W];
        let words = p.words;
        let mut times: [Vec<f64>; 6] = Default::default();
        let (mut next, mut stamps, mut bad) = (0u64, 0u64, 0u64);
        for _ in 0..rounds {
            for (k, t) in times.iter_mut().enumerate() {
                let seqs = next..next + n;
                next += n;
                let (ty, te) = (&mut p.typed, &mut p.tensors);
                let start = Instant::now();
                // One loop per contender (`drive`, as in the `icount` mode), chosen here.
                let (s, b) = match k {
                    0 => drive(seqs, words, |seq| typed_once(&mut ty.0, &mut ty.1, seq)),
                    1 => drive(seqs, words, |seq| {
                        typed_opaque_once(&mut ty.0, &mut ty.1, seq)
                    }),
                    2 => drive(seqs, words, |seq| {
                        tensor_once(&mut te.0, &mut te.1, &shape, seq)
                    }),
                    3 => drive(seqs, words, |seq| {
                        tensor_flat_once(&mut te.0, &mut te.1, &shape, seq)
                    }),
                    4 => drive(seqs, words, |seq| {
                        tensor_rows_once::<W>(&mut te.0, &mut te.1, &rows, seq)
                    }),
                    _ => drive(seqs, words, |seq| {
                        tensor_array_once::<A>(&mut te.0, &mut te.1, &shape, seq)
                    }),
                };
                t.push(start.elapsed().as_nanos() as f64 / n as f64);
                stamps = stamps.wrapping_add(s);
                bad += b;
            }
        }
        assert_eq!(bad, 0, "{name}: {bad} messages did not add up");
        black_box(stamps);
        // Best and median of each contender's rounds.
        let stats = times.map(|mut v| {
            v.sort_by(f64::total_cmp);
            (v[0], v[v.len() / 2])
        });
        let line: Vec<String> = NAMES
            .iter()
            .zip(&stats)
            .map(|(c, (best, median))| format!("{c} {best:.1} ns (median {median:.1})"))
            .collect();
        println!("{name}: {}", line.join(", "));
        for (k, (c, _)) in NAMES.iter().zip(&stats).enumerate().skip(2) {
            println!(
                "  {c} / typed: best {:.3}, median {:.3}; / typed-opaque-length: best {:.3}, \
                 median {:.3}",
                stats[k].0 / stats[0].0,
                stats[k].1 / stats[0].1,
                stats[k].0 / stats[1].0,
                stats[k].1 / stats[1].1,
            );
        }
    }
    run::<Embedding256, 258, 258>("emb256", 1 << 16, 200_000, rounds);
    run::<Words<16384>, 256, 16384>("64k", 1 << 20, 4_000, rounds);
}

criterion_group!(tensor, benches);

fn main() {
    assert_eq!(expected_fast(258, 12345), expected(258, 12345));
    if let Ok(spec) = std::env::var("PSYNE_TENSOR_ICOUNT") {
        icount(&spec);
        return;
    }
    if let Ok(rounds) = std::env::var("PSYNE_TENSOR_TIME") {
        timing(rounds.parse().expect("PSYNE_TENSOR_TIME=<rounds>"));
        return;
    }
    tensor();
    Criterion::default().configure_from_args().final_summary();
}
