//! The end layer's async operations: [`Receiver::peek_now`] / [`Receiver::peek_async`] and
//! [`Sender::reserve_now`] / [`Sender::reserve_async`], the same attempts as the blocking paths,
//! waiting through [`crate::wait::async_wait`] instead of sleeping. Every consumer kind
//! (`Receiver<C: RecvCursor>`) and producer kind (`Sender<C: SendCursor>`) gets them; the public
//! `recv_async` / `allocate_async` are thin wrappers over them.
//!
//! # The first attempt is the blocking one
//!
//! Every public async operation first calls the `_now` attempt inline in its own state machine
//! (for a typed consumer, the cursor's fast check of the expected type and length, as the
//! blocking `peek` does), and builds its waiting future ([`PeekAsync`], [`ReserveAsync`], with
//! their [`AsyncPark`]) only when that finds nothing. Nested `async fn`s and `poll_fn` closures
//! are not inlined into the caller's poll, so the earlier form (every operation a `poll_fn`
//! over the waiting state) cost more than a blocking call even when the message was there:
//! `examples/icount.rs --contender psyne-async` (`allocate_async` and `recv_async`, each polled
//! once) counted 488.09 instructions per message at 64 B and 789.16 at `Embedding256`
//! (callgrind), against 148.09 and 450.19 for the blocking `allocate` / `recv`; with the first
//! attempt inlined, 168.09 and 470.18. So an async consumer that keeps up with its producer
//! pays about what a blocking one does (BENCHMARKS.md, "Async ends").
//!
//! Waiting goes through three phases, as the blocking wait does: a poll that finds nothing first
//! checks a peer in another process (throttled, see [`PeerWatch`]); then, for the strategy's
//! `yields` polls (at most [`ASYNC_YIELDS`]), it yields the thread's CPU once
//! (`std::thread::yield_now`, as each poll of the blocking wait's yield phase does), wakes
//! itself and returns `Pending` (the executor runs its other tasks and polls again soon); then
//! it registers (see the protocol in [`crate::wait::async_wait`]). `Wait::SpinThenPark {
//! yields: 0, .. }` registers at once, with no yield.
//!
//! Why the thread yield: on a machine with more runnable threads than CPUs the producer is
//! often off its CPU for longer than an executor's round of self-woken polls, so without it
//! the future registered and parked its runtime thread about once every 25-40 messages of a
//! stream (4,500-8,000 parks in 200,000 `Embedding256` messages at load 2.5-4, each costing
//! the producer a `Waker::wake` and a futex wake-up), where a blocking consumer, whose yields
//! hand the CPU to the producer, parked a few times. With it the async consumer parked 0-9
//! times in the same runs, and its streaming rate rose from 0.81-1.00x to 1.00-1.28x the
//! blocking `recv` (`async_bench --stats 1`, BENCHMARKS.md "Async ends"). A yield with nothing
//! else to run returns at once (well under a microsecond); at most 16 per wait.
//!
//! A ring whose ends busy-spin ([`Wait::BusySpin`]) never has its parked words checked by the
//! other end, so there a future always wakes itself: it busy-polls through the executor.

use super::*;
use crate::wait::async_wait::Armed;
use core::future::Future;
use core::task::{Context, Poll};

/// Awaits the next message of `$end` (a [`Receiver`]) expected as `$expected`: the blocking
/// call's first attempt ([`Receiver::peek_now`]) written into the calling `async fn` itself,
/// then, if it found nothing, [`Receiver::peek_async`]. A macro, not a function: a nested
/// future's poll is not inlined into the caller's (see the module docs).
macro_rules! await_peek {
    ($end:expr, $expected:expr) => {
        match $end.peek_now($expected) {
            Some(r) => r,
            None => $end.peek_async($expected).await,
        }
    };
}
pub(crate) use await_peek;

/// Awaits room in `$end` (a [`Sender`]) for `$len` bytes aligned to `$align`, as
/// [`await_peek`] does for messages ([`Sender::reserve_now`], then [`Sender::reserve_async`]).
macro_rules! await_reserve {
    ($end:expr, $len:expr, $align:expr) => {
        match $end.reserve_now($len, $align) {
            Some(r) => r,
            None => $end.reserve_async($len, $align).await,
        }
    };
}
pub(crate) use await_reserve;

/// Polls that wake themselves before a wait registers with the reactor, for a ring whose
/// strategy is `SpinThenPark { yields, .. }`: `yields`, at most this many (the default 16).
pub(crate) const ASYNC_YIELDS: u32 = 16;

/// The yield phase's length for `wait` (`u32::MAX`: never registers, see the module docs).
fn yield_polls(wait: Wait) -> u32 {
    match wait {
        Wait::BusySpin => u32::MAX,
        Wait::SpinThenPark { yields, .. } => yields.min(ASYNC_YIELDS),
    }
}

impl AsyncPark {
    /// Whether this poll checks a peer in another process (still throttled by [`PeerWatch`]):
    /// the first poll that found nothing and every poll after a registration, not the polls
    /// of the yield phase (a thousand futures yielding would otherwise check a thousand peers
    /// per round).
    fn checks_peer(&self, wait: Wait) -> bool {
        self.yields == 0 || self.yields >= yield_polls(wait)
    }
}

/// [`check_peers`] through the process-wide throttle [`wait::alive_shared`]: a runtime awaiting
/// many channels fed by one process checks that process once per `PEER_POLL`, not once per
/// channel.
fn check_peers_shared(ring: &Ring, slots: Range<usize>, watch: &mut PeerWatch) {
    if ring.is_shared() && watch.due() {
        for slot in slots {
            ring.close_if_dead(slot, alive_throttled);
        }
    }
}

/// [`alive`] at most once per `PEER_POLL` per peer process (see [`wait::alive_shared`]).
fn alive_throttled(p: ProcessStamp) -> bool {
    wait::alive_shared(p, alive)
}

/// What a future does when its attempt found nothing, before its last attempt.
enum Step {
    /// Woken already (yield phase, busy-spinning ring or no helper): return `Pending`.
    Yield,
    /// Registered: attempt once more (after the fence), then `Pending`.
    Registered,
}

/// The common part of both directions' slow path: count, yield or register on our parked word.
/// `repoll`: the registration must also fire on a deadline (a peer in another process, or a
/// broadcast producer that cuts lagging consumers off after a time), not only when woken.
fn park_step(
    ring: &Arc<Ring>,
    own_slot: usize,
    common: &Common,
    park: &mut AsyncPark,
    cx: &mut Context<'_>,
    parked_count: &mut u64,
    repoll: bool,
) -> Step {
    if park.yields < yield_polls(common.wait) {
        park.yields = park.yields.saturating_add(1);
        // Hand the CPU to the other end if it waits for one (see the module docs). Under loom
        // the self-wake alone (a yield there only adds schedules the models already explore).
        #[cfg(not(loom))]
        std::thread::yield_now();
        cx.waker().wake_by_ref();
        return Step::Yield;
    }
    // Direct-only (no helper thread) when the other end is in this process and nothing must
    // fire on a deadline.
    let direct = !ring.is_shared() && !repoll;
    match park.arm(ring.parked(own_slot), ring, cx.waker(), repoll, direct) {
        Armed::Registered => {
            *parked_count += 1;
            // Dekker: the raised word before the last attempt (see `crate::wait`).
            crate::sync::dekker_fence();
            Step::Registered
        }
        Armed::NoHelper => {
            cx.waker().wake_by_ref();
            Step::Yield
        }
    }
}

impl<C: RecvCursor> Receiver<C> {
    /// The future every consumer's `recv_async` awaits: the next message, as [`Self::peek`]
    /// with `Patience::Forever` would return it, but waiting through the reactor.
    #[inline(always)]
    pub(crate) fn peek_async<'a>(
        &'a mut self,
        expected: Option<&'a ChannelIdentity>,
    ) -> PeekAsync<'a, C> {
        PeekAsync {
            end: self,
            park: AsyncPark::default(),
            expected,
        }
    }

    /// One attempt, as the blocking `peek`'s first (a typed consumer's fast check, then the
    /// full one); `None` if the ring is empty. Every `recv_async` tries this before it builds
    /// its [`PeekAsync`], so that an async consumer that keeps up with its producer pays what a
    /// blocking one does (`examples/icount.rs`, contender `psyne-async`).
    #[inline(always)]
    pub(crate) fn peek_now(
        &mut self,
        expected: Option<&ChannelIdentity>,
    ) -> Option<Result<Peeked, RecvError>> {
        if let Some(r) = self.peek_expected_fast(expected) {
            return Some(r);
        }
        match self.attempt() {
            Err(PeekError::Empty) => None,
            r => Some(
                r.map_err(RecvError::from)
                    .and_then(|p| check_expected(p, expected)),
            ),
        }
    }

    /// [`PeekAsync`]'s poll after the ring was found empty.
    #[inline(never)]
    fn poll_peek_slow(
        &mut self,
        cx: &mut Context<'_>,
        park: &mut AsyncPark,
        expected: Option<&ChannelIdentity>,
    ) -> Poll<Result<Peeked, RecvError>> {
        if !park.counted {
            park.counted = true;
            self.stats.empty += 1;
            // The reactor's wake-ups come from the ring's producer: a source that fills the
            // ring in the consumer's calls moves to a thread of its own.
            self.detach_source();
            if let Ok(p) = self.attempt() {
                park.disarm();
                return Poll::Ready(check_expected(p, expected));
            }
        }
        if self.cursor.ring().is_shared() && park.checks_peer(self.common.wait) {
            // A producer in another process may have died: the next attempt reports it.
            check_peers_shared(
                self.cursor.ring(),
                self.cursor.peer_slots(),
                &mut self.common.watch,
            );
            match self.attempt() {
                Err(PeekError::Empty) => {}
                r => {
                    park.disarm();
                    return Poll::Ready(
                        r.map_err(RecvError::from)
                            .and_then(|p| check_expected(p, expected)),
                    );
                }
            }
        }
        let step = park_step(
            self.cursor.ring(),
            self.cursor.own_slot(),
            &self.common,
            park,
            cx,
            &mut self.stats.parked,
            self.cursor.ring().is_shared(),
        );
        if let Step::Yield = step {
            return Poll::Pending;
        }
        match self.attempt() {
            Err(PeekError::Empty) => Poll::Pending,
            r => {
                park.disarm();
                Poll::Ready(
                    r.map_err(RecvError::from)
                        .and_then(|p| check_expected(p, expected)),
                )
            }
        }
    }
}

impl<C: SendCursor> Sender<C> {
    /// [`Self::reserve_async`]'s first attempt, as [`Receiver::peek_now`] is for receives:
    /// every `allocate_async` tries this before it builds its [`ReserveAsync`].
    #[inline(always)]
    pub(crate) fn reserve_now(
        &mut self,
        len: usize,
        align: usize,
    ) -> Option<Result<u64, SendError>> {
        match self.cursor.try_reserve(len, align) {
            Err(ReserveError::Full) => None,
            r => Some(r.map_err(SendError::from)),
        }
    }

    /// The future every producer's `allocate_async` awaits: room for a record of `len` bytes
    /// aligned to `align` (validated by the caller), as [`Self::reserve`] with
    /// `Patience::Forever` would reserve it, but waiting through the reactor.
    #[inline(always)]
    pub(crate) fn reserve_async(&mut self, len: usize, align: usize) -> ReserveAsync<'_, C> {
        ReserveAsync {
            end: self,
            park: AsyncPark::default(),
            len,
            align,
        }
    }

    /// One attempt to reserve, waking the consumer if a filler was published on its own.
    #[inline]
    fn attempt_reserve(&mut self, len: usize, align: usize) -> Result<u64, ReserveError> {
        let r = self.cursor.try_reserve(len, align);
        self.wake_after_filler();
        r
    }

    /// [`ReserveAsync`]'s poll after the ring was found full.
    #[inline(never)]
    fn poll_reserve_slow(
        &mut self,
        cx: &mut Context<'_>,
        park: &mut AsyncPark,
        len: usize,
        align: usize,
    ) -> Poll<Result<u64, SendError>> {
        if !park.counted {
            park.counted = true;
            self.stats.full += 1;
        }
        // A wrap filler published before the ring was found full is a publication the consumer
        // may be asleep waiting for: wake it before we wait for it in turn.
        self.wake_after_filler();
        if self.cursor.ring().is_shared() && park.checks_peer(self.common.wait) {
            check_peers_shared(
                self.cursor.ring(),
                self.cursor.peer_slots(),
                &mut self.common.watch,
            );
            match self.attempt_reserve(len, align) {
                Err(ReserveError::Full) => {}
                r => {
                    park.disarm();
                    return Poll::Ready(r.map_err(SendError::from));
                }
            }
        }
        let step = park_step(
            self.cursor.ring(),
            self.cursor.own_slot(),
            &self.common,
            park,
            cx,
            &mut self.stats.parked,
            self.cursor.ring().is_shared() || self.cursor.polls_while_waiting(),
        );
        if let Step::Yield = step {
            return Poll::Pending;
        }
        match self.attempt_reserve(len, align) {
            Err(ReserveError::Full) => Poll::Pending,
            r => {
                park.disarm();
                Poll::Ready(r.map_err(SendError::from))
            }
        }
    }
}

/// The future of [`Receiver::peek_async`]. Its first attempt is the blocking `peek`'s, inlined
/// into the caller, before any waiting state exists: an async consumer that keeps up with its
/// producer pays what a blocking one does (`examples/icount.rs`, contender `psyne-async`).
/// Dropping it (cancelling) frees its registration, if any.
pub(crate) struct PeekAsync<'a, C: RecvCursor> {
    end: &'a mut Receiver<C>,
    park: AsyncPark,
    expected: Option<&'a ChannelIdentity>,
}

impl<C: RecvCursor> Future for PeekAsync<'_, C> {
    type Output = Result<Peeked, RecvError>;

    #[inline(always)]
    fn poll(self: core::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(r) = this.end.peek_now(this.expected) {
            this.park.disarm();
            return Poll::Ready(r);
        }
        this.end.poll_peek_slow(cx, &mut this.park, this.expected)
    }
}

/// The future of [`Sender::reserve_async`]: as [`PeekAsync`], for room. Dropping it
/// (cancelling) reserves nothing and frees its registration, if any.
pub(crate) struct ReserveAsync<'a, C: SendCursor> {
    end: &'a mut Sender<C>,
    park: AsyncPark,
    len: usize,
    align: usize,
}

impl<C: SendCursor> Future for ReserveAsync<'_, C> {
    type Output = Result<u64, SendError>;

    #[inline(always)]
    fn poll(self: core::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(r) = this.end.reserve_now(this.len, this.align) {
            this.park.disarm();
            return Poll::Ready(r);
        }
        this.end
            .poll_reserve_slow(cx, &mut this.park, this.len, this.align)
    }
}
