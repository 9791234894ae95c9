//! The single-threaded message loop that `scripts/icount.sh` runs under
//! `valgrind --tool=callgrind` to count instructions per message: a measure that, unlike time on a
//! shared VM, is the same from one run to the next.
//!
//! ```text
//! cargo run --release --example icount -- --contender psyne|psyne-async|psyne-mpsc|rtrb|floor --payload 64|emb256
//!     [--messages N] [--capacity N] [--wait default|busy-spin]
//! ```
//!
//! Each of the `N` iterations, in one thread: allocate a message, write every 32-bit word of the
//! payload, send it, receive it, read every word (a wrapping sum, checked against the stamp
//! written), release it. Psyne does this in place: `Producer::allocate` lends ring memory, the
//! payload is written into it, `Loan::send` publishes it, `Consumer::recv` hands it back in place
//! and dropping the `Received` releases it. `rtrb` does the same work by value: the payload is
//! written on the stack, moved into the ring by `push` and out of it by `pop`. The payload work is
//! psyne_bench's (`bench/payload.rs`), so both contenders do exactly the work psyne_bench times.
//! A third "contender", `floor`, does that payload work alone (one buffer, no channel): what is
//! above it is the channel's cost (and, for `rtrb`, the copies).
//!
//! The start-up (process, channel, ring) costs the same whatever `N` is, so the script runs the
//! loop twice with different `N` and divides the difference of the totals by the difference of
//! the `N`s. The loop runs in a function of its own (`psyne_loop`, `rtrb_loop`) so that
//! `callgrind_annotate` can tell it apart from the rest.

#[path = "bench/payload.rs"]
#[allow(
    dead_code,
    reason = "psyne_bench's payload module, shared as is: this example uses part of it"
)]
mod payload;

use bytemuck::Pod;
use payload::{Embedding256, Words};
use psyne_examples::args::Args;
use std::future::Future;
use std::hint::black_box;
use std::mem::MaybeUninit;

type Error = Box<dyn std::error::Error>;

const USAGE: &str = "\
icount: one thread allocates, writes, sends, receives, reads and releases N messages
(the loop that scripts/icount.sh runs under callgrind to count its instructions)

usage: icount --contender psyne|psyne-async|psyne-mpsc|rtrb|floor --payload 64|emb256 [--messages N] [--capacity N]
              [--wait default|busy-spin]

  --contender  psyne (in place, through a loan), psyne-async (the same through allocate_async()
               and recv_async(), each polled once), psyne-mpsc (Channel::mpsc() with two
               producers taking turns), rtrb (by value, push and pop) or floor (the payload work
               alone: written into and read from one buffer, no channel)
  --payload    64 (a 64-byte message of 16 u32 words) or emb256 (psyne_schemas::Embedding256,
               1032 bytes)
  --messages   iterations of the loop (default 100000)
  --capacity   messages the channel holds (default 1024, as psyne_bench; one is in flight)
  --wait       Psyne's wait strategy: default (Wait::default(), spin then park: each send and
               release checks whether the other end sleeps) or busy-spin (as psyne_bench)";

/// What the loop returns: the sum of the stamps read and the number of messages whose words did
/// not add up, checked after the loop (and kept alive through `black_box` inside it).
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    stamps: u64,
    bad: u64,
}

impl Tally {
    #[inline(always)]
    fn add(&mut self, (stamp, ok): (u64, bool)) {
        self.stamps = self.stamps.wrapping_add(stamp);
        self.bad += u64::from(!ok);
        *self = black_box(*self);
    }
}

/// Psyne: allocate a loan, write the payload in place, send, receive in place, read, release.
#[inline(never)]
fn psyne_loop<P: psyne::Message + Pod>(
    tx: &mut psyne::Producer<P>,
    rx: &mut psyne::Consumer<P>,
    messages: u64,
) -> Result<Tally, Error> {
    let mut tally = Tally::default();
    for seq in 0..messages {
        let mut loan = tx.allocate()?;
        payload::write(&mut *loan, seq);
        loan.send();
        let received = rx.recv()?;
        tally.add(payload::read(&*received));
        drop(received);
    }
    Ok(tally)
}

/// Psyne through its async ends: as [`psyne_loop`], but the loan comes from polling an
/// `allocate_async()` future once and the message from polling a `recv_async()` future once (a
/// no-op waker; there is always room and a message), as async ends that keep up with each other
/// do: what the async path adds to the blocking one.
#[inline(never)]
fn psyne_async_loop<P: psyne::Message + Pod>(
    tx: &mut psyne::Producer<P>,
    rx: &mut psyne::Consumer<P>,
    messages: u64,
) -> Result<Tally, Error> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut tally = Tally::default();
    for seq in 0..messages {
        let mut alloc = std::pin::pin!(tx.allocate_async());
        let std::task::Poll::Ready(loan) = alloc.as_mut().poll(&mut cx) else {
            return Err("allocate_async: pending with the ring empty".into());
        };
        let mut loan = loan?;
        payload::write(&mut *loan, seq);
        loan.send();
        let mut fut = std::pin::pin!(rx.recv_async());
        let std::task::Poll::Ready(received) = fut.as_mut().poll(&mut cx) else {
            return Err("recv_async: pending with a message published".into());
        };
        let received = received?;
        tally.add(payload::read(&*received));
        drop(received);
    }
    Ok(tally)
}

/// Psyne's MPSC channel with two producers, taking turns: as [`psyne_loop`], message `seq` from
/// producer `seq % 2`, through `Channel::mpsc()` (one lane per producer, the consumer merges).
#[inline(never)]
fn psyne_mpsc_loop<P: psyne::Message + Pod>(
    tx: &mut [psyne::MpscProducer<P>; 2],
    rx: &mut psyne::MpscConsumer<P>,
    messages: u64,
) -> Result<Tally, Error> {
    let mut tally = Tally::default();
    for seq in 0..messages {
        let mut loan = tx[(seq & 1) as usize].allocate()?;
        payload::write(&mut *loan, seq);
        loan.send();
        let received = rx.recv()?;
        tally.add(payload::read(&*received));
        drop(received);
    }
    Ok(tally)
}

/// rtrb: write the payload on the stack, push it by value, pop it by value, read it.
#[inline(never)]
fn rtrb_loop<P: Pod>(
    tx: &mut rtrb::Producer<P>,
    rx: &mut rtrb::Consumer<P>,
    messages: u64,
) -> Result<Tally, Error> {
    let mut tally = Tally::default();
    for seq in 0..messages {
        let mut v = MaybeUninit::<P>::uninit();
        if tx.push(*payload::write_uninit(&mut v, seq)).is_err() {
            return Err("rtrb: ring full with no message in flight".into());
        }
        let received = rx.pop()?;
        tally.add(payload::read(&received));
    }
    Ok(tally)
}

/// The payload work alone, no channel: write the payload into one heap buffer, read it back. The
/// buffer's address goes through `black_box` between the two, so neither is folded away.
#[inline(never)]
fn floor_loop<P: Pod>(messages: u64) -> Tally {
    let mut buf = Box::<P>::new_uninit();
    let mut tally = Tally::default();
    for seq in 0..messages {
        let written: &P = payload::write_uninit(black_box(&mut *buf), seq);
        tally.add(payload::read(black_box(written)));
    }
    tally
}

fn run<P: psyne::Message + Pod>(
    contender: &str,
    wait: psyne::Wait,
    capacity: usize,
    messages: u64,
) -> Result<Tally, Error> {
    match contender {
        "psyne" | "psyne-async" => {
            let (mut tx, mut rx) = psyne::Channel::<P>::builder()
                .capacity(capacity)
                .wait(wait)
                .build()?;
            if contender == "psyne" {
                psyne_loop(&mut tx, &mut rx, messages)
            } else {
                psyne_async_loop(&mut tx, &mut rx, messages)
            }
        }
        "psyne-mpsc" => {
            let (tx, mut rx) = psyne::Channel::<P>::mpsc()
                .capacity(capacity)
                .max_producers(2)
                .wait(wait)
                .build()?;
            let second = tx.try_clone()?;
            psyne_mpsc_loop(&mut [tx, second], &mut rx, messages)
        }
        "rtrb" => {
            let (mut tx, mut rx) = rtrb::RingBuffer::<P>::new(capacity);
            rtrb_loop(&mut tx, &mut rx, messages)
        }
        "floor" => Ok(floor_loop::<P>(messages)),
        other => Err(format!(
            "--contender {other:?}: expected psyne, psyne-async, psyne-mpsc, rtrb or floor"
        )
        .into()),
    }
}

fn main() -> Result<(), Error> {
    let args = Args::parse(
        &["contender", "payload", "messages", "capacity", "wait"],
        USAGE,
    )?;
    let contender = args
        .get("contender")
        .ok_or("--contender psyne|psyne-async|psyne-mpsc|rtrb|floor is required")?;
    let size = args
        .get("payload")
        .ok_or("--payload 64|emb256 is required")?;
    let messages: u64 = args.value("messages", 100_000)?;
    let capacity: usize = args.value("capacity", 1024)?;
    let wait = match args.get("wait").unwrap_or("default") {
        "default" => psyne::Wait::default(),
        "busy-spin" => psyne::Wait::BusySpin,
        other => return Err(format!("--wait {other:?}: expected default or busy-spin").into()),
    };
    let tally = match size {
        "64" => run::<Words<16>>(contender, wait, capacity, messages)?,
        "emb256" => run::<Embedding256>(contender, wait, capacity, messages)?,
        other => return Err(format!("--payload {other:?}: expected 64 or emb256").into()),
    };

    // The stamps are the sequence numbers 0..messages.
    let expect = (0..messages).fold(0u64, u64::wrapping_add);
    if tally.bad != 0 || tally.stamps != expect {
        return Err(format!(
            "check failed: {} of {messages} messages did not add up, stamp sum {} (expected {expect})",
            tally.bad, tally.stamps
        )
        .into());
    }
    println!("icount: {contender} {size}: {messages} messages, all read back intact");
    Ok(())
}
