//! The end layer's async operations: [`Receiver::poll_peek`] and [`Sender::poll_reserve`], the
//! same attempts as the blocking paths, waiting through [`crate::wait::async_wait`] instead of
//! sleeping. Every consumer kind (`Receiver<C: RecvCursor>`) and producer kind
//! (`Sender<C: SendCursor>`) gets them; the public `recv_async` / `allocate_async` are thin
//! wrappers over them.
//!
//! Waiting goes through three phases, as the blocking wait does: a poll that finds nothing first
//! checks a peer in another process (throttled, see [`PeerWatch`]); then, for the strategy's
//! `yields` polls (at most [`ASYNC_YIELDS`]), it wakes itself and returns `Pending` (the executor runs other tasks
//! and polls again soon: the async form of spinning); then it registers (see the protocol in
//! [`crate::wait::async_wait`]). A ring whose ends busy-spin ([`Wait::BusySpin`]) never has its
//! parked words checked by the other end, so there a future always wakes itself: it busy-polls
//! through the executor.

use super::*;
use crate::wait::async_wait::Armed;
use core::task::{Context, Poll};

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
    /// Polls for the next message: `Ready` as [`Self::peek`] with `Patience::Forever` would
    /// return, or `Pending` with `cx`'s waker registered (in `park`, which the caller keeps
    /// across polls and drops to cancel).
    #[inline]
    pub(crate) fn poll_peek(
        &mut self,
        cx: &mut Context<'_>,
        park: &mut AsyncPark,
        expected: Option<&ChannelIdentity>,
    ) -> Poll<Result<Peeked, RecvError>> {
        match self.attempt() {
            Ok(p) => {
                park.disarm();
                Poll::Ready(check_expected(p, expected))
            }
            Err(PeekError::Empty) => self.poll_peek_slow(cx, park, expected),
            Err(e) => {
                park.disarm();
                Poll::Ready(Err(e.into()))
            }
        }
    }

    /// [`Self::poll_peek`] after the ring was found empty.
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
    /// One attempt to reserve, waking the consumer if a filler was published on its own.
    #[inline]
    fn attempt_reserve(&mut self, len: usize, align: usize) -> Result<u64, ReserveError> {
        let r = self.cursor.try_reserve(len, align);
        self.wake_after_filler();
        r
    }

    /// Polls for a reservation: `Ready` as [`Self::reserve`] with `Patience::Forever` would
    /// return, or `Pending` with `cx`'s waker registered (in `park`). `len`/`align` must have
    /// been validated.
    #[inline]
    pub(crate) fn poll_reserve(
        &mut self,
        cx: &mut Context<'_>,
        park: &mut AsyncPark,
        len: usize,
        align: usize,
    ) -> Poll<Result<u64, SendError>> {
        match self.cursor.try_reserve(len, align) {
            Ok(pos) => {
                park.disarm();
                Poll::Ready(Ok(pos))
            }
            Err(ReserveError::Full) => self.poll_reserve_slow(cx, park, len, align),
            Err(e) => {
                park.disarm();
                Poll::Ready(Err(e.into()))
            }
        }
    }

    /// [`Self::poll_reserve`] after the ring was found full.
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
