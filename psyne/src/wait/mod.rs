//! Waiting strategies: what an end does while the ring is full (producer) or empty (consumer).
//!
//! [`Wait::BusySpin`] polls with a spin hint and never sleeps: the lowest latency, one core burnt
//! per waiting end. [`Wait::SpinThenPark`] (the default) polls `spins` times, then yields the CPU
//! `yields` times, then sleeps on a futex word in the ring's control block until the other end
//! wakes it.
//!
//! # Spinning adapts to crowded CPUs
//!
//! Spinning helps only while the thread being waited for runs on another CPU. With more
//! runnable threads than CPUs (four producers and a consumer on two cores, or a machine busy
//! with other work), a waiter that spins holds a CPU the awaited thread needs, for nothing. So a
//! `SpinThenPark` end spins at most its *spin budget*, which starts at `spins` and adapts after
//! every wait, as adaptive mutexes do:
//! - the wait ended while spinning, or while yielding with every yield returning at once
//!   (nothing else wanted the CPU, so spinning longer would have cost nobody): spinning pays,
//!   the budget doubles (up to `spins`);
//! - it did not, and one of its yields lasted 5 us or more (a yield with nothing else to run
//!   returns in about a microsecond, so another thread ran on this CPU meanwhile): the CPUs are
//!   crowded, the budget halves (down to 64 polls, or `spins` if fewer);
//! - otherwise (the wait slept: the message came much later): unchanged.
//!
//! The budget is the end's own (no shared word); it costs a clock read around each yield, never
//! anything per message. Measured (`mpsc_bench`, BENCHMARKS.md "MPSC"): with 4 producers on 2
//! cores the fixed 1024 spins gave 0.62-0.87x the 2-producer throughput.
//!
//! # Yields and the tail of an idle consumer
//!
//! A yield hands the CPU to whatever else is runnable on it, and the yielding thread runs again
//! only when the scheduler says so. On a machine with few cores, a consumer woken from its
//! futex may share a CPU with its producer for a while; if that producer is busy (computing
//! the next tensor, or spinning), a yield queues the consumer behind it for the rest of a time
//! slice (measured here: yields of 1.7-4.0 ms, one tick). The consumer then sees a message that
//! arrived meanwhile milliseconds late. Measured on the 2-CPU development VM (`async_bench`,
//! `Embedding256` every 200 us, BENCHMARKS.md "Yields and the idle tail"): with the default 16
//! yields, an idle consumer's one-way p99 was 0.27-2.1 ms (blocking `recv`) and 0.23-2.1 ms
//! (`recv_async`), against 0.05-0.23 ms and 0.06-0.20 ms with `yields: 0`; the p50 did not
//! change, and streaming fell by 3-12%. So a consumer that waits mostly idle beside a busy
//! producer and cares about its tail is better off with
//! `Wait::SpinThenPark { spins: 1024, yields: 0 }`. The default keeps its yields because with
//! more threads than cores (many producers, one consumer on two cores) they are what keeps the
//! threads that do the work on the CPUs: of the rules tried that turn them off by themselves,
//! those that cut the tail cost that case 20-45% of its throughput, or (one not run there)
//! a streaming consumer 18% (same section).
//!
//! # No lost wake-ups, no syscall per message
//!
//! A waiter that wants to sleep raises its *parked* word, issues a `SeqCst` fence, then checks the
//! ring once more before `FUTEX_WAIT` (which itself sleeps only while the word is still raised).
//! The other end, after each publication (or release), issues a `SeqCst` fence and reads the
//! parked word; only if it is raised does it lower it and call `FUTEX_WAKE` (or, for an async
//! future of this process that raised it to `AWAITING`, call its `Waker`: see [`async_wait`]).
//! By the fences' total order, either the waiter's last check sees the new position, or the
//! other end sees the
//! raised word (Dekker's handshake); lowering the word before waking defeats the race where the
//! wake arrives before the waiter sleeps. While the peer merely spins, no system call is made.
//! The loom models in `psyne/tests/loom.rs` check this.
//!
//! # A peer in another process
//!
//! A process can die without dropping its end (`kill -9`), so nobody would ever wake a waiter
//! parked for it. When the other end lives in another process, a waiting end therefore sleeps at
//! most [`PEER_POLL`] at a time and calls a liveness check given by the channel: after each such
//! sleep, and every 1024 polls while spinning or yielding (the check itself reads the clock and
//! does real work at most once per [`PEER_POLL`]). Nothing of this runs while the ring has room
//! or messages: liveness is checked only when an end finds the ring full or empty.
//!
//! This module never touches ring memory itself; it drives closures given by the channel.
//! Waking is `notify`'s: the futex notifier that every end calls after a publication or a
//! release. Async waiting ([`async_wait`]) sleeps on the same parked words through a small
//! reactor, without touching the protocol.

pub mod async_wait;
mod notify;

pub(crate) use notify::Notifier;

use crate::sync::{self, Futex, Ordering};
use std::time::{Duration, Instant};

/// How an end waits for the ring to have room (producer) or a message (consumer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Wait {
    /// Poll forever with a spin-loop hint; never yield, never sleep. Lowest latency; burns a core
    /// while waiting. The other end then never needs a fence or a wake-up check.
    BusySpin,
    /// Poll up to `spins` times with a spin-loop hint, then `yields` times with a thread yield,
    /// then sleep on a futex until the other end wakes it (the default:
    /// `SpinThenPark { spins: 1024, yields: 16 }`). How many of the `spins` an end uses adapts
    /// to how crowded the CPUs are (down to 64; see the module docs). `yields: 0` trades a few
    /// percent of streaming throughput for a much shorter tail of an idle consumer next to a
    /// busy producer (module docs, "Yields and the tail of an idle consumer").
    SpinThenPark {
        /// Polls with `core::hint::spin_loop` before yielding.
        spins: u32,
        /// Polls with `std::thread::yield_now` before sleeping (an async wait: at most 16
        /// polls, each a thread yield and a self-wake, before it registers its `Waker`).
        yields: u32,
    },
}

impl Default for Wait {
    fn default() -> Self {
        Wait::SpinThenPark {
            spins: 1024,
            yields: 16,
        }
    }
}

impl Wait {
    /// The control-block words of this strategy.
    pub(crate) fn words(self) -> crate::ring::WaitWords {
        match self {
            Wait::BusySpin => crate::ring::WaitWords {
                park: false,
                spins: 0,
                yields: 0,
            },
            Wait::SpinThenPark { spins, yields } => crate::ring::WaitWords {
                park: true,
                spins,
                yields,
            },
        }
    }

    /// The strategy the control-block words `w` describe.
    pub(crate) fn from_words(w: crate::ring::WaitWords) -> Wait {
        if w.park {
            Wait::SpinThenPark {
                spins: w.spins,
                yields: w.yields,
            }
        } else {
            Wait::BusySpin
        }
    }
}

/// Value of a parked word while its owner sleeps (or is about to).
pub(crate) const PARKED: u32 = 1;
/// Value of a parked word while its owner is awake.
pub(crate) const AWAKE: u32 = 0;
/// Value of a parked word while its owner, an async future, waits with a direct-only
/// registration ([`async_wait`]: the other end is in this process and wakes the future's
/// `Waker` itself). Nothing sleeps on the word: the notifier makes no `FUTEX_WAKE` for it.
pub(crate) const AWAITING: u32 = 2;

/// Longest a waiter whose peer is in another process sleeps before checking that the peer is
/// still alive; also the least time between two liveness checks. A dead peer is reported within
/// about this time (plus the check) of its death, or of the wait starting.
pub const PEER_POLL: Duration = Duration::from_millis(10);

/// Throttles liveness checks of a peer in another process to one per [`PEER_POLL`].
#[derive(Debug, Default)]
pub(crate) struct PeerWatch {
    /// When the last check ran.
    last: Option<Instant>,
}

impl PeerWatch {
    /// Whether a check is due now (and if so, records that one runs now).
    pub(crate) fn due(&mut self) -> bool {
        let now = Instant::now();
        match self.last {
            Some(t) if now.saturating_duration_since(t) < PEER_POLL => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }
}

/// A liveness check shared by every end of this process: `check(p)` runs at most once per
/// [`PEER_POLL`] for each peer process `p` that it found alive; within that time `p` counts as
/// alive (a process found dead is checked again next time: it stays dead). The async ends use
/// it, so that a thousand idle channels fed by one process make one check per `PEER_POLL`, not
/// one each; a dead peer is then reported up to `PEER_POLL` later.
pub(crate) fn alive_shared(
    p: crate::ring::ProcessStamp,
    check: fn(crate::ring::ProcessStamp) -> bool,
) -> bool {
    #[cfg(not(loom))]
    {
        use std::sync::Mutex;
        /// Peer processes recently found alive, and when (at most [`CACHED_PEERS`]).
        static SEEN: Mutex<Vec<(crate::ring::ProcessStamp, Instant)>> = Mutex::new(Vec::new());
        const CACHED_PEERS: usize = 64;
        let now = Instant::now();
        {
            let seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
            if seen
                .iter()
                .any(|(q, t)| *q == p && now.saturating_duration_since(*t) < PEER_POLL)
            {
                return true;
            }
        }
        // The check runs outside the lock (it reads /proc): two ends may both run it.
        let alive = check(p);
        let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
        seen.retain(|(q, t)| *q != p && now.saturating_duration_since(*t) < PEER_POLL);
        if alive {
            if seen.len() >= CACHED_PEERS {
                seen.remove(0);
            }
            seen.push((p, now));
        }
        alive
    }
    #[cfg(loom)]
    check(p)
}

/// The fewest polls an adaptive spin phase shrinks to (or the strategy's `spins`, if fewer).
pub(crate) const MIN_SPINS: u32 = 64;

/// A yield that took at least this long gave the CPU to another thread: a yield with nothing
/// else to run returns in about a microsecond here (a system call).
const YIELD_RAN_ANOTHER: Duration = Duration::from_micros(5);

/// Adapts an end's spin budget after a wait (see the module docs): doubled, up to the
/// strategy's `spins`, when spinning found (`paid`) or would have found what the wait was for
/// without keeping another thread from the CPU; halved, down to [`MIN_SPINS`], when it did not
/// and a yield showed another thread waiting for this CPU; unchanged otherwise.
#[inline]
fn adapt(strategy: Wait, budget: &mut u32, paid: bool, crowded: bool) {
    if let Wait::SpinThenPark { spins, .. } = strategy {
        let floor = MIN_SPINS.min(spins);
        if paid {
            *budget = budget.saturating_mul(2).clamp(floor, spins);
        } else if crowded {
            *budget = (*budget / 2).clamp(floor, spins);
        }
    }
}

/// The outcome of [`wait_for`].
pub(crate) enum Waited<R> {
    /// `attempt` succeeded.
    Ready(R),
    /// The deadline passed first.
    TimedOut,
}

/// Calls `attempt` until it returns `Some`, waiting between calls according to `strategy`, until
/// `deadline` (`None`: forever). `attempt` must reload the other end's position (not only its
/// cache) before reporting "not ready", and must report "ready" when the other end is gone.
/// `parked` is this end's parked word; `on_park` counts sleeps. `budget` is this end's spin
/// budget (start it at the strategy's `spins`): a `SpinThenPark` wait spins at most that many
/// polls, and adapts it on the way out.
///
/// `peer`, for a ring whose other end is in another process, checks that end's liveness (and
/// marks it closed if it died, so that the next `attempt` reports it): it is called after every
/// sleep, each of which lasts at most [`PEER_POLL`], and every 1024 rounds of spinning or
/// yielding (see the module docs).
#[inline]
pub(crate) fn wait_for<R>(
    strategy: Wait,
    deadline: Option<Instant>,
    parked: &Futex,
    mut on_park: impl FnMut(),
    budget: &mut u32,
    mut peer: Option<&mut dyn FnMut()>,
    mut attempt: impl FnMut() -> Option<R>,
) -> Waited<R> {
    let (spins, yields) = match strategy {
        Wait::BusySpin => (u32::MAX, 0),
        Wait::SpinThenPark { spins, yields } => ((*budget).min(spins), yields),
    };
    let mut round: u64 = 0;
    // Whether a yield of this wait gave the CPU to another thread (see the module docs).
    let mut crowded = false;
    loop {
        if let Some(r) = attempt() {
            // Spinning paid, or would have: the wait ended while spinning, or while yielding on
            // a CPU that had nothing else to run.
            let paid = round <= u64::from(spins)
                || (!crowded && round <= u64::from(spins) + u64::from(yields));
            adapt(strategy, budget, paid, crowded);
            return Waited::Ready(r);
        }
        let remaining = match deadline {
            None => None,
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => {
                    adapt(strategy, budget, false, crowded);
                    return Waited::TimedOut;
                }
            },
        };
        if matches!(strategy, Wait::BusySpin) || round < u64::from(spins) {
            sync::spin_loop();
            if round % 1024 == 1023
                && let Some(check) = peer.as_deref_mut()
            {
                check();
            }
        } else if round < u64::from(spins) + u64::from(yields) {
            let before = Instant::now();
            sync::yield_now();
            crowded |= before.elapsed() >= YIELD_RAN_ANOTHER;
            if round % 1024 == 1023
                && let Some(check) = peer.as_deref_mut()
            {
                check();
            }
        } else {
            // Dekker: raise the word, fence, recheck; the other end stores its position, fences,
            // then reads the word (see the module docs).
            // Release: a notifier whose `Acquire` swap reads this raise sees what this end did
            // before (an async registration it freed: see `async_wait`).
            parked.store(PARKED, Ordering::Release);
            sync::dekker_fence();
            if let Some(r) = attempt() {
                parked.store(AWAKE, Ordering::Relaxed);
                return Waited::Ready(r);
            }
            on_park();
            let limit = if peer.is_some() {
                PEER_POLL
            } else {
                Duration::from_secs(3600)
            };
            let timeout = match remaining {
                Some(d) => Some(d.min(limit)),
                None if peer.is_some() => Some(limit),
                None => None,
            };
            parked.wait(PARKED, timeout);
            parked.store(AWAKE, Ordering::Relaxed);
            if let Some(check) = peer.as_deref_mut() {
                check();
            }
        }
        round = round.saturating_add(1);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    const DEFAULT: Wait = Wait::SpinThenPark {
        spins: 1024,
        yields: 16,
    };

    #[test]
    fn a_crowded_cpu_halves_the_spin_budget_down_to_the_floor() {
        let mut budget = 1024;
        let mut seen = Vec::new();
        for _ in 0..6 {
            adapt(DEFAULT, &mut budget, false, true);
            seen.push(budget);
        }
        assert_eq!(seen, [512, 256, 128, 64, 64, 64]);
    }

    #[test]
    fn spinning_that_pays_doubles_the_budget_back_up_to_spins() {
        let mut budget = MIN_SPINS;
        let mut seen = Vec::new();
        for _ in 0..6 {
            adapt(DEFAULT, &mut budget, true, false);
            seen.push(budget);
        }
        assert_eq!(seen, [128, 256, 512, 1024, 1024, 1024]);
    }

    #[test]
    fn a_wait_that_slept_leaves_the_budget_alone() {
        let mut budget = 256;
        adapt(DEFAULT, &mut budget, false, false);
        assert_eq!(budget, 256);
        // Busy-spinning ends have no budget to adapt.
        adapt(Wait::BusySpin, &mut budget, false, true);
        assert_eq!(budget, 256);
        // A strategy with fewer spins than the floor stays within its own spins.
        let few = Wait::SpinThenPark {
            spins: 8,
            yields: 0,
        };
        let mut small = 8;
        adapt(few, &mut small, false, true);
        assert_eq!(small, 8);
        let mut none = 0;
        adapt(
            Wait::SpinThenPark {
                spins: 0,
                yields: 4,
            },
            &mut none,
            true,
            false,
        );
        assert_eq!(none, 0);
    }

    /// A default wait on `parked` with `budget` whose attempt succeeds at its `n`-th poll.
    fn ready_at_poll(parked: &Futex, budget: &mut u32, n: u32) -> Waited<u32> {
        let mut polls = 0;
        wait_for(
            DEFAULT,
            None,
            parked,
            || {},
            budget,
            None,
            || {
                polls += 1;
                (polls == n).then_some(polls)
            },
        )
    }

    #[test]
    fn a_wait_whose_spinning_finds_the_message_keeps_its_budget_at_spins() {
        let parked = Futex::new(AWAKE);
        let mut budget = 1024;
        assert!(matches!(
            ready_at_poll(&parked, &mut budget, 10),
            Waited::Ready(10)
        ));
        assert_eq!(budget, 1024);
        // With the budget at the floor, a wait spins that many polls, then yields; one that
        // succeeds while yielding doubles it if every yield returned at once (an idle CPU) and
        // keeps it at the floor if one let another thread run (this machine's load decides).
        let mut budget = MIN_SPINS;
        assert!(matches!(
            ready_at_poll(&parked, &mut budget, 70),
            Waited::Ready(70)
        ));
        assert!(
            budget == MIN_SPINS || budget == 2 * MIN_SPINS,
            "budget {budget}"
        );
        // One that found nothing in its spins and yields (64 + 16 polls) and succeeds only
        // when it goes to sleep leaves the budget as it was, crowded or not.
        let mut budget = MIN_SPINS;
        assert!(matches!(
            ready_at_poll(&parked, &mut budget, 82),
            Waited::Ready(82)
        ));
        assert_eq!(budget, MIN_SPINS);
        assert_eq!(parked.load(Ordering::Relaxed), AWAKE);
    }
}
