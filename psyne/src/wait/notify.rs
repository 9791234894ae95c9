//! The futex notifier: after a publication (or a release), wake the other end if it sleeps.
//!
//! A waiter raises its parked word, fences and re-polls before it sleeps (see the module docs of
//! [`crate::wait`]); the notifier fences and reads that word after the position it published,
//! and only when the word is raised does it lower it and make the wake-up system call. While the
//! peer merely spins, no system call is made.
//!
//! A peer in another process controls its parked word: one that holds it raised would make
//! every send a system call. For a remote peer the notifier therefore makes at most one wake-up
//! call per [`Notifier::REMOTE_EVERY`] notifications or per [`Notifier::REMOTE_INTERVAL`],
//! whichever comes first; a remote waiter sleeps at most [`PEER_POLL`](super::PEER_POLL) at a
//! time, so a wake-up skipped this way delays an honest peer that parks again within that
//! interval by at most that much.
//!
//! A peer that awaits (an async future of this process; see
//! [`async_wait`](super::async_wait)) raises its word to `AWAITING` instead of `PARKED` when its
//! registration is direct-only: the cold path then lowers the word with a swap and calls the
//! future's `Waker` itself, without a system call. For a word it lowered from `PARKED` it first
//! wakes directly any helper registration of this process on the same word, then makes the
//! `FUTEX_WAKE` (blocking waiters, reactor helpers). The hot path (word `AWAKE`) is one plain
//! load and compare, as before.

use super::{AWAITING, AWAKE};
use crate::sync::{self, Futex, Ordering};
use std::time::{Duration, Instant};

/// Wakes the other end of a ring after publications or releases; one per end.
#[derive(Debug)]
pub(crate) struct Notifier {
    /// Whether the other end may sleep at all (else nothing is ever checked).
    may_park: bool,
    /// Whether the other end may live in another process (rate-limited wake-ups).
    remote: bool,
    /// Notifications since the last wake-up call.
    since_wake: u32,
    /// When the last wake-up call was made (remote peers only).
    last_wake: Option<Instant>,
    /// Wake-up calls made by [`Self::notify`] and [`Self::notify_many`] (the final ones of a
    /// dropping end are not counted): an end's `wakeups` counter.
    calls: u64,
}

impl Notifier {
    /// A remote peer gets a wake-up call at least every this many notifications that find it
    /// parked...
    pub(crate) const REMOTE_EVERY: u32 = 64;
    /// ... or when this much time passed since the last one.
    pub(crate) const REMOTE_INTERVAL: Duration = Duration::from_micros(100);

    /// A notifier for a peer that may sleep (`may_park`) and may live in another process
    /// (`remote`).
    pub(crate) fn new(may_park: bool, remote: bool) -> Self {
        Notifier {
            may_park,
            remote,
            since_wake: 0,
            last_wake: None,
            calls: 0,
        }
    }

    /// Wake-up calls made so far (see `calls`).
    pub(crate) fn calls(&self) -> u64 {
        self.calls
    }

    /// After a publication or release (the position or commit word already stored): wakes the
    /// peer sleeping on `parked`, if it sleeps. Returns whether a wake-up call was made.
    #[inline(always)]
    pub(crate) fn notify(&mut self, parked: &Futex) -> bool {
        if !self.may_park {
            return false;
        }
        sync::dekker_fence();
        if parked.load(Ordering::Relaxed) == AWAKE {
            return false;
        }
        self.wake(parked)
    }

    /// [`Self::notify`] for several peers (a broadcast producer's consumers): one fence, then
    /// each parked word read; the remote rate limit is decided once per call, for all of them
    /// together (so one consumer that keeps its word raised costs the others no wake-up).
    /// Returns the wake-up calls made.
    #[inline]
    pub(crate) fn notify_many<'a>(&mut self, parked: impl Iterator<Item = &'a Futex>) -> u64 {
        if !self.may_park {
            return 0;
        }
        sync::dekker_fence();
        let mut due = None;
        let mut calls = 0;
        for word in parked {
            if word.load(Ordering::Relaxed) == AWAKE {
                continue;
            }
            if *due.get_or_insert_with(|| self.due()) {
                Self::fire(word);
                calls += 1;
            }
        }
        self.calls += calls;
        calls
    }

    /// [`Self::notify_final`] for several peers.
    pub(crate) fn notify_final_many<'a>(&mut self, parked: impl Iterator<Item = &'a Futex>) {
        sync::dekker_fence();
        for word in parked {
            if word.load(Ordering::Relaxed) != AWAKE {
                Self::fire(word);
            }
        }
    }

    /// The peer's parked word is raised.
    #[cold]
    #[inline(never)]
    fn wake(&mut self, parked: &Futex) -> bool {
        if !self.due() {
            return false;
        }
        Self::fire(parked);
        self.calls += 1;
        true
    }

    /// Whether a wake-up call may be made now (always for a local peer; rate-limited for a
    /// remote one, see the module docs), counting this one.
    fn due(&mut self) -> bool {
        if self.remote {
            self.since_wake = self.since_wake.saturating_add(1);
            let now = Instant::now();
            let due = self.since_wake >= Self::REMOTE_EVERY
                || self
                    .last_wake
                    .is_none_or(|t| now.saturating_duration_since(t) >= Self::REMOTE_INTERVAL);
            if !due {
                return false;
            }
            self.since_wake = 0;
            self.last_wake = Some(now);
        }
        true
    }

    /// Wakes the peer waiting on `parked` (found raised): lowers the word with an `Acquire`
    /// swap (which reads the owner's `Release` raise, so what the owner registered before it is
    /// visible, and which only one of several notifiers wins), then by the value it replaced:
    /// `AWAITING`, the direct-only async registrations on the word, their `Waker`s called here
    /// and no system call; `PARKED`, a helper's registration of this process on the word
    /// directly, then `FUTEX_WAKE` (blocking waiters, reactor helpers); `AWAKE`, nothing
    /// (another notifier, or the owner itself, lowered it first).
    #[inline]
    fn fire(parked: &Futex) {
        match parked.swap(AWAKE, Ordering::Acquire) {
            AWAKE => {}
            AWAITING => super::async_wait::wake_local(parked),
            _ => {
                super::async_wait::wake_direct(parked);
                parked.wake();
            }
        }
    }

    /// Wakes the peer unconditionally if it sleeps (when this end drops: no rate limit).
    pub(crate) fn notify_final(&mut self, parked: &Futex) {
        sync::dekker_fence();
        if parked.load(Ordering::Relaxed) != AWAKE {
            Self::fire(parked);
        }
    }
}
