//! The channels compared, behind one trait. Every contender gets the same capacity, and the
//! same work: [`payload::write`](super::payload) of the whole payload on the producer side,
//! [`payload::read`](super::payload) of the whole payload on the consumer side. Waiting is the
//! caller's job (the same spin loop for everyone): these are the `try_` operations.

use super::payload;
use bytemuck::Pod;
use crossbeam_queue::ArrayQueue;
use std::mem::MaybeUninit;
use std::sync::Arc;

/// Boxed error.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// One single-producer single-consumer channel implementation carrying payload `P`.
pub trait Link<P: Pod> {
    /// Name in tables.
    const NAME: &'static str;
    /// How the payload travels (shown in the table).
    const HOW: &'static str;
    /// Sending end.
    type Tx: Send;
    /// Receiving end.
    type Rx: Send;
    /// A channel holding `capacity` messages.
    fn channel(capacity: usize) -> Result<(Self::Tx, Self::Rx), Error>;
    /// Writes a whole message stamped `stamp` and publishes it; false (nothing written) if full.
    fn try_send(tx: &mut Self::Tx, stamp: u64) -> bool;
    /// Hands the oldest message to `f` and releases it; `None` if empty.
    fn try_recv<R>(rx: &mut Self::Rx, f: impl FnOnce(&P) -> R) -> Option<R>;
    /// Waits for the oldest message, hands it to `f` and releases it: the channel's own blocking
    /// receive where it has one, else (the default) `try_recv` in a loop with `spin_loop`
    /// between tries.
    #[inline(always)]
    fn recv<R>(rx: &mut Self::Rx, mut f: impl FnMut(&P) -> R) -> R {
        loop {
            if let Some(r) = Self::try_recv(rx, &mut f) {
                return r;
            }
            std::hint::spin_loop();
        }
    }
}

/// Psyne's SPSC channel: the producer writes the payload in place into a [`psyne::Loan`] of ring
/// memory, the consumer reads it in place through [`psyne::Received`]. Both ends use
/// [`psyne::Wait::BusySpin`] (no end ever parks, so none needs the wake-up check) and no header
/// timestamps (the default; the harness carries its own timestamp in the payload for every
/// contender). The producer spins on `try_allocate` like the peers' producers; the consumer waits
/// in Psyne's blocking `recv`, which under `BusySpin` is the same loop (`try` then `spin_loop`)
/// inside the library, and lets the ring know that the consumer waits (see the ring's "Large
/// records restart at the region's start").
pub struct Psyne;

impl<P: psyne::Message + Send> Link<P> for Psyne {
    const NAME: &'static str = "Psyne";
    const HOW: &'static str = "zero-copy";
    type Tx = psyne::Producer<P>;
    type Rx = psyne::Consumer<P>;
    fn channel(capacity: usize) -> Result<(Self::Tx, Self::Rx), Error> {
        let ends = psyne::Channel::<P>::builder()
            .capacity(capacity)
            .wait(psyne::Wait::BusySpin)
            .timestamps(false)
            .build()?;
        Ok(ends)
    }
    #[inline(always)]
    fn try_send(tx: &mut Self::Tx, stamp: u64) -> bool {
        match tx.try_allocate() {
            Ok(mut loan) => {
                payload::write(&mut *loan, stamp);
                loan.send();
                true
            }
            Err(psyne::SendError::Full) => false,
            Err(e) => panic!("psyne send: {e}"),
        }
    }
    #[inline(always)]
    fn try_recv<R>(rx: &mut Self::Rx, f: impl FnOnce(&P) -> R) -> Option<R> {
        match rx.try_recv() {
            Ok(m) => Some(f(&m)),
            Err(psyne::RecvError::Empty) => None,
            Err(e) => panic!("psyne recv: {e}"),
        }
    }
    #[inline(always)]
    fn recv<R>(rx: &mut Self::Rx, mut f: impl FnMut(&P) -> R) -> R {
        match rx.recv() {
            Ok(m) => f(&m),
            Err(e) => panic!("psyne recv: {e}"),
        }
    }
}

/// How many messages a Psyne ring of about `requested` messages of `P` holds: the ring is a power
/// of two bytes, so take the largest power of two not above `requested` records and count the
/// records in it. Every contender gets this capacity, so Psyne's rounding gives it no extra room.
pub fn ring_capacity<P>(requested: usize) -> usize {
    let record = psyne::ring::record_size(size_of::<P>()).expect("payload size fits");
    let bytes = requested.saturating_mul(record).max(record);
    let region = if bytes.is_power_of_two() {
        bytes
    } else {
        bytes.next_power_of_two() / 2
    };
    (region.max(record.next_power_of_two()) / record).max(1)
}

/// `rtrb::RingBuffer<P>`: the payload is built on the stack, then moved into the ring by
/// `push`, and moved out by `pop`.
pub struct Rtrb;

impl<P: Pod + Send> Link<P> for Rtrb {
    const NAME: &'static str = "rtrb";
    const HOW: &'static str = "by value";
    type Tx = rtrb::Producer<P>;
    type Rx = rtrb::Consumer<P>;
    fn channel(capacity: usize) -> Result<(Self::Tx, Self::Rx), Error> {
        Ok(rtrb::RingBuffer::new(capacity))
    }
    #[inline(always)]
    fn try_send(tx: &mut Self::Tx, stamp: u64) -> bool {
        if tx.is_full() {
            return false;
        }
        let mut v = MaybeUninit::<P>::uninit();
        tx.push(*payload::write_uninit(&mut v, stamp)).is_ok()
    }
    #[inline(always)]
    fn try_recv<R>(rx: &mut Self::Rx, f: impl FnOnce(&P) -> R) -> Option<R> {
        rx.pop().ok().map(|v| f(&v))
    }
}

/// `rtrb::RingBuffer<Box<P>>`: for payloads too large to move by value; one heap allocation
/// and one free per message.
pub struct RtrbBox;

impl<P: Pod + Send> Link<P> for RtrbBox {
    const NAME: &'static str = "rtrb";
    const HOW: &'static str = "Box";
    type Tx = rtrb::Producer<Box<P>>;
    type Rx = rtrb::Consumer<Box<P>>;
    fn channel(capacity: usize) -> Result<(Self::Tx, Self::Rx), Error> {
        Ok(rtrb::RingBuffer::new(capacity))
    }
    #[inline(always)]
    fn try_send(tx: &mut Self::Tx, stamp: u64) -> bool {
        if tx.is_full() {
            return false;
        }
        tx.push(payload::boxed(stamp)).is_ok()
    }
    #[inline(always)]
    fn try_recv<R>(rx: &mut Self::Rx, f: impl FnOnce(&P) -> R) -> Option<R> {
        rx.pop().ok().map(|v| f(&v))
    }
}

/// `crossbeam_queue::ArrayQueue<P>` (bounded MPMC, used here with one thread per end), by value.
pub struct ArrayQ;

impl<P: Pod + Send> Link<P> for ArrayQ {
    const NAME: &'static str = "crossbeam ArrayQueue";
    const HOW: &'static str = "by value";
    type Tx = Arc<ArrayQueue<P>>;
    type Rx = Arc<ArrayQueue<P>>;
    fn channel(capacity: usize) -> Result<(Self::Tx, Self::Rx), Error> {
        let q = Arc::new(ArrayQueue::new(capacity));
        Ok((q.clone(), q))
    }
    #[inline(always)]
    fn try_send(tx: &mut Self::Tx, stamp: u64) -> bool {
        if tx.is_full() {
            return false;
        }
        let mut v = MaybeUninit::<P>::uninit();
        tx.push(*payload::write_uninit(&mut v, stamp)).is_ok()
    }
    #[inline(always)]
    fn try_recv<R>(rx: &mut Self::Rx, f: impl FnOnce(&P) -> R) -> Option<R> {
        rx.pop().map(|v| f(&v))
    }
}

/// `crossbeam_queue::ArrayQueue<Box<P>>`, for payloads too large to move by value.
pub struct ArrayQBox;

impl<P: Pod + Send> Link<P> for ArrayQBox {
    const NAME: &'static str = "crossbeam ArrayQueue";
    const HOW: &'static str = "Box";
    type Tx = Arc<ArrayQueue<Box<P>>>;
    type Rx = Arc<ArrayQueue<Box<P>>>;
    fn channel(capacity: usize) -> Result<(Self::Tx, Self::Rx), Error> {
        let q = Arc::new(ArrayQueue::new(capacity));
        Ok((q.clone(), q))
    }
    #[inline(always)]
    fn try_send(tx: &mut Self::Tx, stamp: u64) -> bool {
        if tx.is_full() {
            return false;
        }
        tx.push(payload::boxed(stamp)).is_ok()
    }
    #[inline(always)]
    fn try_recv<R>(rx: &mut Self::Rx, f: impl FnOnce(&P) -> R) -> Option<R> {
        rx.pop().map(|v| f(&v))
    }
}
