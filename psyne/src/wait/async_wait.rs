//! Async waiting: a future that finds its ring empty (or full) sleeps on the same parked word a
//! blocking waiter would, and a small reactor turns the other end's futex wake-up into a
//! [`Waker`] call. Runtime-agnostic: only `std::task::Waker`s, no executor is named.
//!
//! # Two kinds of registration
//!
//! - **Direct-only**, when the other end lives in this process and sees the ring at the same
//!   address (every in-process ring, TCP ends included: their pump is a thread of this process)
//!   and nothing has to fire on a deadline: the registration lives in a sharded index kept in
//!   process memory, keyed by the parked word's address, and the other end's notifier calls the
//!   `Waker` itself. No helper thread is involved, and no system call.
//! - **With a helper**, when the other end may live in another process (a shared-memory ring) or
//!   the wait must also end on a deadline (a broadcast producer that cuts lagging consumers
//!   off): a helper thread waits on the parked word with `futex_waitv` and calls the `Waker`.
//!
//! The parked word's value says which kind waits: `PARKED` (1) for a blocking waiter or a
//! helper's registration, `AWAITING` (2) for a direct-only registration, `AWAKE` (0) for none.
//!
//! # Protocol (no lost wake-up)
//!
//! The other end's hot path is unchanged: after each publication (or release) its `Notifier`
//! fences (`SeqCst`) and reads the parked word (a plain load); only if it is not `AWAKE` does it
//! take its cold path. An end with no async waiter therefore pays nothing new: no extra
//! read-modify-write, no extra load, per message. The cold path lowers the word with a `swap`
//! (`Acquire`) and acts on the value it replaced: `AWAITING`, it takes (under the index's shard
//! lock) the `Waker` of every armed direct-only registration on the word's address, disarms
//! them, and calls them, with no `FUTEX_WAKE`; `PARKED`, it fires a helper's registration of
//! this process on the same address, if any (see below), then calls `FUTEX_WAKE`; `AWAKE`,
//! nothing (another notifier, or the owner, lowered it first).
//!
//! A future that must wait (`AsyncPark::arm`), direct-only:
//! 1. arms its slot in the index (its `Waker`, under the shard lock),
//! 2. raises its parked word to `AWAITING` with a `Release` store,
//! 3. fences (`SeqCst`) and polls the ring once more; only if that finds nothing does it return
//!    `Pending`.
//!
//! Why no wake-up is lost: by the fences (Dekker's handshake of [`crate::wait`]), either the
//! future's last poll sees the publication, or the notifier's load sees the raise or a later
//! value of the word. While the future waits, its owner writes nothing more to the word, so the
//! value that follows the raise in the word's modification order is a notifier's swap, which
//! (a read-modify-write) reads the raise itself; its `Acquire` synchronises with the `Release`
//! raise, so its lookup finds the slot armed in step 1, or already disarmed by an earlier
//! lookup that took and called the same `Waker`. Either way the `Waker` is called. The notifier
//! lowers the word before its lookup, so a future it woke that registers again raises the word
//! after the swap: a new raise is never overwritten by the notification of the previous message
//! (what lost a wake-up in the first helper-less attempt, below). And the notifier skips
//! `FUTEX_WAKE` only for a word that read `AWAITING`, which only a direct-only registration
//! writes: a blocking waiter (which raises `PARKED`, also with `Release`) always gets its
//! `FUTEX_WAKE`, whatever registrations the index still holds for the word (a future leaked
//! with `mem::forget` leaves one behind; firing it is a spurious wake-up, nothing more).
//!
//! With a helper (`PARKED`): the future raises the word, registers its `Waker` and the word
//! with a reactor group (under the group's lock), waking the group's helper thread if it
//! sleeps so that it adds the word to the set it waits on, and fences and polls as above. The
//! helper thread, under the group lock, reads every registered word: a word that is no longer
//! raised (the other end lowered it) fires its `Waker` and leaves the set. It then sleeps in
//! one `futex_waitv` on all words still raised (expected value `PARKED`) plus the group's
//! control word. The kernel compares each word with the expected value atomically with respect
//! to `FUTEX_WAKE`, so a word lowered after the scan makes the call return at once. By the
//! same handshake, either the future's last poll sees the publication, or the other end sees
//! the raised word and lowers it, which the reactor then sees: no publication is missed. When
//! the notifier is in this process and sees the word at the same address (a shared-memory ring
//! with both ends in one process), its cold path also fires the entry directly (the index
//! holds helper registrations too, fired under their group lock, so exactly one of the direct
//! path and the helper fires it), then calls `FUTEX_WAKE` as before.
//!
//! The loom models in `psyne/tests/loom.rs` check both kinds (`async_*`; the `_helper`
//! variants force helper registrations on in-process rings, with the helper thread's sleep
//! replaced by a yield: loom has no `futex_waitv`), including a future that registers again
//! right after a direct wake-up (`async_registers_again_after_a_direct_wake`). Both fail when
//! the protocol is broken on purpose: with the notifier's `AWAITING` case doing nothing,
//! `async_registration_against_publication` deadlocks; with the notifier looking up before it
//! lowers the word (a load, the lookup, then a store of `AWAKE`: the first helper-less
//! attempt's order), `async_registers_again_after_a_direct_wake` deadlocks.
//!
//! # History of the direct wake-up
//!
//! Before the direct-only kind, every registration had a helper, and the notifier's cold path
//! called the `Waker` of a registration of this process before lowering the word and calling
//! `FUTEX_WAKE`; the helper, woken by that `FUTEX_WAKE` and again by the future's next
//! registration, was still needed. Three helper-less variants failed before this one: skipping
//! the `FUTEX_WAKE` when the direct path fired (with the word still lowered after the lookup),
//! which hung `async_bench` (a future woken directly that registered again before the notifier
//! lowered its word had its raise overwritten); and twice a variant that lowered the word with
//! a swap before the lookup, registered before a raise and skipped `FUTEX_WAKE` when it fired a
//! registration, with one raised value (`PARKED`) for every kind, which deadlocked loom's
//! `async_cancelled_future_leaves_nothing_behind`. The kept design deadlocked that model too,
//! and the trace showed why, and that the model was wrong, not the protocol: the consumer's
//! blocking `recv` found the message after raising its word (`PARKED`) and lowered it with a
//! plain store while the producer's notifier swapped it from `PARKED` to `AWAKE`; the
//! consumer's next async wait then stored `AWAITING` and a load of the word right after that
//! store, in the same thread, read 0. C++ forbids this (an RMW reads the last value before
//! its write in the modification order, so the consumer's store must follow the swap, and a
//! thread reads back its own store or a later one), but loom 0.7 does not apply an RMW's
//! atomicity to a concurrent plain store (tokio-rs/loom#254, the fix unmerged in #391): the
//! store sat "between" the swap's read and write, the notifier's final load then also read 0,
//! and the model hung. This is what the third attempt's note above describes. Under loom,
//! `sync::Futex::store` is therefore a swap (same value and ordering, result dropped), which
//! gives the parked words the total modification order C++ guarantees; with it every model
//! passes. The kept design also differs from the earlier ones in that the kind of waiter is in
//! the word's value (`AWAITING` against `PARKED`), so whether a `FUTEX_WAKE` is due no longer
//! depends on what a lookup racing the owner's deregistration found, and the blocking raise is
//! a `Release` store too (on x86-64 the same plain store).
//!
//! # Helper threads
//!
//! `futex_waitv` (Linux 5.16 or later) waits on at most 128 words, so a group holds at most
//! [`PER_GROUP`] = 127 registrations plus its control word. With `n` futures waiting at once
//! there are at most `ceil(n / 127)` helper threads (1,000 awaited channels: 8), each started on
//! the first registration of its group and ended after [`LINGER`] without any. Where
//! `futex_waitv` is missing (`ENOSYS`), a helper instead sleeps on its control word for at most
//! [`FALLBACK_POLL`] at a time and rescans (a registered future then waits up to that long).
//!
//! # A peer in another process
//!
//! The other end's notifier rate-limits wake-ups to a remote peer (see `Notifier`): a skipped
//! wake-up can only follow a wake-up call less than `REMOTE_INTERVAL` earlier. A registration
//! whose word was found lowered (woken since, or the first of this wait) is therefore re-polled
//! after [`GRACE`] = 2 x `REMOTE_INTERVAL` even if nobody wakes it; one that was found still
//! raised (its previous registration timed out, so no wake-up call came since) after
//! [`ASYNC_PEER_POLL`], rounded up to a process-wide grid of [`IDLE_TICK`] so that idle
//! registrations fall due together (their helper wakes once for a batch, not once each). Each
//! re-poll may check that the peer process lives; the async ends share that check per peer
//! process (`wait::alive_shared`: at most one per `PEER_POLL` for each process found alive), so
//! a runtime awaiting 1,000 channels fed by one process checks it about 100 times a second, not
//! 20,000. A dead peer process is noticed within about `ASYNC_PEER_POLL` + `IDLE_TICK` +
//! `PEER_POLL` (70 ms).
//!
//! # Measured cost
//!
//! A direct-only registration is one lock of an index shard, a clone of the `Waker` (none when
//! the same waker registers again) and of the ring's `Arc`, and a `Release` store; its wake-up,
//! in the notifier, a swap, the shard lock and the `Waker` call. A helper registration is one
//! lock of its group and one of an index shard, a `futex` wake of the helper if it sleeps, and
//! a clone of the `Waker`. The blocking path is unchanged (148.09 and 450.19 instructions per
//! message with the direct-only registrations too: the hot path's compare is with `AWAKE`
//! instead of `PARKED`, one compare either way). Earlier counts:
//! `scripts/icount.sh` counts 204.02 instructions per 64-byte message and 506.09 per
//! `Embedding256`, before and after this module and before and after the direct wake-up (the
//! notifier's hot path, word not raised, is the same code; the direct path is inside its
//! `#[cold]` function; the later hot-path work brought the counts to 148.09 and 450.19). A
//! future that finds a message at once costs one poll of the ring, as `try_recv` does.
//!
//! Direct-only against the previous design (every registration with a helper, the direct
//! wake-up before the `FUTEX_WAKE`), `async_bench --pieces 0`, the two binaries alternated,
//! three runs each, at load 8.7-9.1 (other helpers' builds and a loom build): idle one-way p50
//! of `recv_async` 6.9-11.3 us against tokio mpsc's 6.9-15.0 us in the same runs (no worse in 2
//! of 3), where the helper design's was 2.1-3.6 ms against tokio's 8.3-9.7 us (its helper,
//! woken twice per message, waits for a core before the `Waker` is called). Details in
//! BENCHMARKS.md, "Async ends (issue 16)".
//!
//! `async_bench` (examples; `Embedding256`, capacity 256, 5 interleaved repetitions a run, the
//! producer a plain thread, the consumer a tokio current-thread runtime) on the 2-vCPU VM shared
//! with other builds (1-minute load averages given), with the earlier direct wake-up (helper
//! registrations only):
//!
//! - streaming, M msg/s (median of a run), 10 runs at load 2.9-8.5: `recv_async` 1.07-2.71x
//!   `tokio::sync::mpsc` by value (2.2-2.7x in the 4 runs at load 2.9-4.6: 2.61-2.84 against
//!   1.05-1.19) and 0.82-1.61x Psyne's blocking `recv` (5 of 10 runs at or above 0.9x);
//! - one-way latency to an idle awaiting consumer (a message every 200 us), p50 (median of a
//!   run) without the recording waker: met in 3 of 9 runs (6.3 vs 7.0 us for tokio mpsc at load
//!   8.5, 7.6 vs 8.4 at 5.7, 8.2 vs 9.9 at 3.9), missed in 6 (6.5 vs 6.0 at 8.0, 25-32 vs 6.5-8.0
//!   at 6.4-8.1, 18.1-23.6 vs 10.8-14.3 at 2.5-4.6). Before the direct wake-up: 32 us against
//!   5.7 us (load ~7).
//! - where the time goes (`--pieces 1`: both async consumers polled through a waker that
//!   records when it is called): send stamp to `Waker::wake` 0.4-0.8 us for `recv_async` (the
//!   direct wake-up) against 0.8-1.2 us for tokio mpsc, in every run; `Waker::wake` to the
//!   message in hand 16.8-18.6 us against 7.9-8.2 us at load 2.9-3.9, about equal (15-18 us
//!   both) at load 6-6.7. So the wake-up call itself now comes sooner than tokio's and the
//!   difference lies after it, in the runtime thread's wake-up. The likely cause (not isolated:
//!   both variants without it lost wake-ups, see above) is the helper thread, which the same
//!   notification's `FUTEX_WAKE` wakes too (and the future's next registration wakes again), on
//!   2 vCPUs of which the spinning producer takes one. The p50 target is met only in runs where
//!   the machine is so busy that both contenders wait for a core anyway.
//!
//! An idle shared-memory registration is re-polled every [`ASYNC_PEER_POLL`] (on the
//! [`IDLE_TICK`] grid). `idle_shared_channels_cpu` in `psyne/tests/async.rs` (ignored; 1,000
//! idle channels fed by a live, silent process; debug build, load ~10): helper threads 45-68% of
//! a core and the runtime thread 43-52% before the shared liveness check and the grid; 10-17%
//! and 8-11% after.
//!
//! This module never touches ring memory other than the parked words it is given.

use super::{AWAITING, AWAKE, Notifier, PARKED};
use crate::sync::{AtomicU64, Futex, Ordering};
use core::task::Waker;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[cfg(loom)]
use loom::sync::{Mutex, MutexGuard};
#[cfg(not(loom))]
use std::sync::{Mutex, MutexGuard};

/// Registrations per reactor group (one helper thread each): `futex_waitv`'s limit of 128 words,
/// less the group's control word.
pub const PER_GROUP: usize = 127;

/// How long a helper thread with nothing registered stays before it ends.
pub const LINGER: Duration = Duration::from_secs(1);

/// Longest a helper sleeps between rescans where `futex_waitv` is missing.
pub const FALLBACK_POLL: Duration = Duration::from_millis(1);

/// How soon a registration on a ring shared with another process is re-polled when its word
/// was found lowered: twice the notifier's rate-limit interval for remote peers.
pub const GRACE: Duration = Duration::from_micros(200);

/// How often an idle registration on a ring shared with another process is re-polled (to
/// notice a dead peer process; see [`PEER_POLL`](super::PEER_POLL) for blocking waiters),
/// rounded up to the [`IDLE_TICK`] grid.
pub const ASYNC_PEER_POLL: Duration = Duration::from_millis(50);

/// The grid that idle re-polls ([`ASYNC_PEER_POLL`]) are rounded up to, so that the idle
/// registrations of a process fall due together: their helper wakes once for all of them, and
/// the runtime polls them in one batch (whose liveness checks `wait::alive_shared` turns into
/// one per peer process).
pub const IDLE_TICK: Duration = Duration::from_millis(10);

const _: () = assert!(GRACE.as_nanos() >= 2 * Notifier::REMOTE_INTERVAL.as_nanos());

/// When an idle registration armed at `now` is re-polled: [`ASYNC_PEER_POLL`] later, rounded up
/// to the process-wide [`IDLE_TICK`] grid.
fn idle_deadline(now: Instant) -> Option<Instant> {
    #[cfg(not(loom))]
    let epoch = {
        static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *EPOCH.get_or_init(Instant::now)
    };
    #[cfg(loom)]
    let epoch = now;
    let due = now.checked_add(ASYNC_PEER_POLL)?;
    let tick = IDLE_TICK.as_nanos();
    let since = due.saturating_duration_since(epoch).as_nanos();
    let up = (tick - since % tick) % tick;
    due.checked_add(Duration::from_nanos(up as u64))
}

/// One registered wait.
struct Entry {
    /// The parked word (valid while `keep` holds its memory).
    word: *const Futex,
    /// Keeps the memory of `word` alive while registered (the ring).
    keep: Option<Arc<dyn Send + Sync>>,
    /// Who to wake (taken when fired).
    waker: Option<Waker>,
    /// The word is in the set the helper waits on.
    armed: bool,
    /// Fire at this instant even if the word stays raised.
    deadline: Option<Instant>,
    /// Held by a registration.
    used: bool,
}

// SAFETY: `word` points to a `Futex` (atomic, `Sync`) inside memory that `keep` (`Send + Sync`)
// keeps alive while the entry is used; the entry is only accessed under its group's lock.
unsafe impl Send for Entry {}

impl Entry {
    const FREE: Entry = Entry {
        word: core::ptr::null(),
        keep: None,
        waker: None,
        armed: false,
        deadline: None,
        used: false,
    };
}

/// What a group's lock protects.
struct GroupState {
    entries: Vec<Entry>,
    /// Entries held by registrations.
    used: usize,
    /// A helper thread serves this group.
    running: bool,
    /// The helper sleeps (or is about to) on the words it read under this lock: a change must
    /// bump and wake the control word.
    sleeping: bool,
}

/// Up to [`PER_GROUP`] registrations served by one helper thread.
struct Group {
    /// Bumped (and woken) when the set of armed words changes while the helper sleeps.
    control: Futex,
    state: Mutex<GroupState>,
}

impl Group {
    fn new() -> Self {
        Group {
            control: Futex::new(0),
            state: Mutex::new(GroupState {
                entries: (0..PER_GROUP).map(|_| Entry::FREE).collect(),
                used: 0,
                running: false,
                sleeping: false,
            }),
        }
    }

    fn lock(&self) -> GroupGuard<'_> {
        // A helper or a future that panicked while holding the lock left consistent data: every
        // update under it is a few plain field stores.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

type GroupGuard<'a> = MutexGuard<'a, GroupState>;

/// Every group of this process, and the index of registrations by parked word.
#[derive(Default)]
struct Registry {
    groups: Mutex<Vec<Arc<Group>>>,
    direct: Direct,
    /// Under loom: in-process rings register with a helper too ([`force_helper`]).
    #[cfg(loom)]
    force_helper: crate::sync::AtomicU32,
}

/// Under loom only: makes the waits of this model's in-process rings register with a helper
/// thread (as a ring shared with another process does) instead of in the direct index alone, so
/// that the models check the helper's protocol too (loom cannot build a shared ring).
#[cfg(loom)]
pub fn force_helper(on: bool) {
    registry()
        .force_helper
        .store(u32::from(on), Ordering::Relaxed);
}

#[cfg(not(loom))]
static REGISTRY: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();

#[cfg(not(loom))]
fn registry() -> &'static Registry {
    REGISTRY.get_or_init(Registry::default)
}

/// The registry if any future of this process ever registered (the notifier's cold path must
/// not create it).
#[cfg(not(loom))]
fn registry_if_any() -> Option<&'static Registry> {
    REGISTRY.get()
}

#[cfg(loom)]
loom::lazy_static! {
    static ref REGISTRY: Registry = Registry::default();
}

#[cfg(loom)]
fn registry() -> &'static Registry {
    &REGISTRY
}

#[cfg(loom)]
fn registry_if_any() -> Option<&'static Registry> {
    Some(&REGISTRY)
}

/// Shards of the [`Direct`] index (a power of two).
#[cfg(not(loom))]
const SHARDS: usize = 64;
#[cfg(loom)]
const SHARDS: usize = 1;

/// One registration as the [`Direct`] index knows it.
struct Slot {
    /// The parked word's address in this process (a key only: never dereferenced).
    key: usize,
    kind: SlotKind,
}

/// Who serves a [`Slot`].
enum SlotKind {
    /// A helper's registration (its word is also watched by the group's helper thread): the
    /// notifier fires it under the group lock, then still calls `FUTEX_WAKE`.
    Group { group: Arc<Group>, index: usize },
    /// A direct-only registration (the word raised to `AWAITING`): only the notifier fires it,
    /// under the shard lock; no helper watches its word.
    Local {
        /// Which registration (several could share a word if a future was leaked).
        id: u64,
        /// Who to wake (taken when fired).
        waker: Option<Waker>,
        /// Not fired since the last raise.
        armed: bool,
    },
}

/// Registrations by the address of their parked word, for the direct wake-up
/// ([`wake_direct`]): sharded by address. Lives in process memory only; an address is a key
/// compared with an entry's own word under the group lock, never dereferenced from here.
struct Direct {
    /// Slots in all shards: the notifier's cold path skips the lookup while it is 0.
    count: AtomicU64,
    /// The next [`SlotKind::Local`] id.
    next_id: AtomicU64,
    shards: Vec<Mutex<Vec<Slot>>>,
}

impl Default for Direct {
    fn default() -> Self {
        Direct {
            count: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
            shards: (0..SHARDS).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }
}

/// The index key of `word`: its address in this process.
fn key_of(word: &Futex) -> usize {
    word as *const Futex as usize
}

impl Direct {
    fn shard(&self, key: usize) -> MutexGuard<'_, Vec<Slot>> {
        // Fibonacci hashing of the word address (words are 4-byte aligned, ends 64 apart).
        let h = ((key >> 2) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let i = (h >> 32) as usize & (SHARDS - 1);
        // Every update under a shard lock is a push or a swap-remove: consistent after a panic.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn insert(&self, key: usize, group: &Arc<Group>, index: usize) {
        self.shard(key).push(Slot {
            key,
            kind: SlotKind::Group {
                group: Arc::clone(group),
                index,
            },
        });
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn remove(&self, key: usize, group: &Arc<Group>, index: usize) {
        let mut shard = self.shard(key);
        if let Some(i) = shard.iter().position(|s| {
            s.key == key
                && matches!(&s.kind, SlotKind::Group { group: g, index: j }
                    if *j == index && Arc::ptr_eq(g, group))
        }) {
            let slot = shard.swap_remove(i);
            drop(shard);
            self.count.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        }
    }

    /// Arms the direct-only registration `id` on the word at `key` (a new slot if `id` is
    /// `None` or not found) with `waker`; returns its id. Under the shard lock, which the
    /// notifier takes to fire it.
    fn arm_local(&self, key: usize, id: Option<u64>, waker: &Waker) -> u64 {
        let mut shard = self.shard(key);
        if let Some(id) = id {
            for s in shard.iter_mut().filter(|s| s.key == key) {
                if let SlotKind::Local {
                    id: sid,
                    waker: w,
                    armed,
                } = &mut s.kind
                    && *sid == id
                {
                    match w {
                        Some(w) if w.will_wake(waker) => {}
                        _ => *w = Some(waker.clone()),
                    }
                    *armed = true;
                    return id;
                }
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        shard.push(Slot {
            key,
            kind: SlotKind::Local {
                id,
                waker: Some(waker.clone()),
                armed: true,
            },
        });
        self.count.fetch_add(1, Ordering::Relaxed);
        id
    }

    /// Frees the direct-only registration `id` on the word at `key`; returns its waker (to be
    /// dropped outside the lock).
    fn remove_local(&self, key: usize, id: u64) -> Option<Waker> {
        let mut shard = self.shard(key);
        let i = shard.iter().position(|s| {
            s.key == key && matches!(s.kind, SlotKind::Local { id: j, .. } if j == id)
        })?;
        let slot = shard.swap_remove(i);
        drop(shard);
        self.count.fetch_sub(1, Ordering::Relaxed);
        match slot.kind {
            SlotKind::Local { waker, .. } => waker,
            SlotKind::Group { .. } => None,
        }
    }

    /// Takes the waker of every armed registration on the word at `key` (for a helper's
    /// registration, under its group's lock, so that the helper, which fires only armed
    /// entries, finds it fired; for a direct-only one, under the shard lock) and wakes it.
    fn wake(&self, key: usize) {
        let mut first: Option<Waker> = None;
        let mut more: Vec<Waker> = Vec::new();
        {
            let mut shard = self.shard(key);
            for s in shard.iter_mut().filter(|s| s.key == key) {
                let taken = match &mut s.kind {
                    SlotKind::Group { group, index } => {
                        // Lock order: shard, then group (nothing takes a shard under a group lock).
                        let mut st = group.lock();
                        let e = &mut st.entries[*index];
                        if e.used && e.armed && e.word as usize == key {
                            e.armed = false;
                            e.waker.take()
                        } else {
                            None
                        }
                    }
                    SlotKind::Local { waker, armed, .. } => {
                        if *armed {
                            *armed = false;
                            waker.take()
                        } else {
                            None
                        }
                    }
                };
                if let Some(w) = taken {
                    if first.is_none() {
                        first = Some(w);
                    } else {
                        more.push(w);
                    }
                }
            }
        }
        // Outside every lock: a waker may run arbitrary executor code.
        first.into_iter().chain(more).for_each(Waker::wake);
    }
}

/// The notifier's cold path for a word it lowered from `PARKED` (a blocking waiter, or a
/// helper's registration), before it calls `FUTEX_WAKE`: wakes directly the future of this
/// process registered with a helper on `word` at the same address, if any, saving the helper
/// thread's hop. Costs one relaxed load while no future of this process is registered; never
/// touches `word` itself.
#[inline]
pub(crate) fn wake_direct(word: &Futex) {
    if let Some(reg) = registry_if_any()
        && reg.direct.count.load(Ordering::Relaxed) != 0
    {
        reg.direct.wake(key_of(word));
    }
}

/// The notifier's cold path for a word it lowered from `AWAITING` (with an `Acquire` swap that
/// read the owner's `Release` raise, so the registration made before that raise is visible):
/// wakes the direct-only registrations on `word`. Nothing sleeps on the word itself: no
/// `FUTEX_WAKE` follows. Never touches `word`.
#[inline]
pub(crate) fn wake_local(word: &Futex) {
    if let Some(reg) = registry_if_any() {
        reg.direct.wake(key_of(word));
    }
}

impl Registry {
    /// A free entry in some group (a new group if all are full).
    fn claim(&self) -> (Arc<Group>, usize) {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        for g in groups.iter() {
            let mut st = g.lock();
            if st.used < PER_GROUP
                && let Some(i) = st.entries.iter().position(|e| !e.used)
            {
                st.entries[i].used = true;
                st.used += 1;
                return (Arc::clone(g), i);
            }
        }
        let g = Arc::new(Group::new());
        {
            let mut st = g.lock();
            st.entries[0].used = true;
            st.used = 1;
        }
        groups.push(Arc::clone(&g));
        (g, 0)
    }
}

/// Helper threads currently running in this process (they are named `psyne-async`); for tests
/// and reports.
pub fn helper_threads() -> usize {
    let groups = registry().groups.lock().unwrap_or_else(|e| e.into_inner());
    groups.iter().filter(|g| g.lock().running).count()
}

/// Registrations currently held in this process: one per pending async operation that had to
/// wait, none once every such future completed or was dropped; for tests and reports. (The
/// larger of the reactor's count and the direct wake-up index's, so a leftover in either shows.)
pub fn registrations() -> usize {
    let reg = registry();
    let used: usize = {
        let groups = reg.groups.lock().unwrap_or_else(|e| e.into_inner());
        groups.iter().map(|g| g.lock().used).sum()
    };
    let indexed = usize::try_from(reg.direct.count.load(Ordering::Relaxed)).unwrap_or(usize::MAX);
    used.max(indexed)
}

/// The async wait state of one pending operation of an end: at most one registration. Dropping
/// it deregisters (and lowers the parked word), so a dropped future leaves nothing behind.
#[derive(Default)]
pub(crate) struct AsyncPark {
    reg: Option<Reg>,
    /// Polls that returned `Pending` after waking themselves (the yield phase).
    pub(crate) yields: u32,
    /// This operation already counted that it had to wait.
    pub(crate) counted: bool,
}

impl core::fmt::Debug for AsyncPark {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AsyncPark")
            .field("registered", &self.reg.is_some())
            .field("yields", &self.yields)
            .finish()
    }
}

/// An [`AsyncPark`]'s registration.
enum Reg {
    /// With a helper thread: the group and the entry's index in it.
    Helper(Arc<Group>, usize),
    /// Direct-only, in the index ([`SlotKind::Local`]).
    Local {
        /// The parked word (valid while `keep` holds its memory).
        word: *const Futex,
        /// Keeps the memory of `word` alive while registered (the ring).
        keep: Arc<dyn Send + Sync>,
        /// The slot's id.
        id: u64,
    },
}

// SAFETY: `word` points to a `Futex` (atomic, `Sync`) inside memory that `keep` (`Send + Sync`)
// keeps alive; it is only read through as a shared reference.
unsafe impl Send for Reg {}
// SAFETY: as for `Send`: nothing in `Reg` is mutated through a shared reference.
unsafe impl Sync for Reg {}

/// What [`AsyncPark::arm`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Armed {
    /// The waker will be called when the word is lowered (or the deadline passes).
    Registered,
    /// No helper thread could be started: the caller must wake itself (poll again).
    NoHelper,
}

impl AsyncPark {
    /// Raises `word` (this end's parked word, inside memory that `keep` holds) and registers
    /// `waker` to be called once the other end lowers it. `remote`: the other end may live in
    /// another process (see the module docs for the re-poll deadlines). `direct`: the other
    /// end is in this process, sees `word` at this address, and no deadline is needed, so the
    /// registration is direct-only (no helper). The caller must then fence
    /// (`sync::dekker_fence`) and poll the ring once more before returning `Pending`.
    pub(crate) fn arm<K: Send + Sync + 'static>(
        &mut self,
        word: &Futex,
        keep: &Arc<K>,
        waker: &Waker,
        remote: bool,
        direct: bool,
    ) -> Armed {
        #[cfg(loom)]
        let direct = direct && registry().force_helper.load(Ordering::Relaxed) == 0;
        if direct {
            self.arm_local(word, keep, waker);
            return Armed::Registered;
        }
        let was_raised = word.load(Ordering::Relaxed) == PARKED;
        word.store(PARKED, Ordering::Release);
        let deadline = if remote {
            let now = Instant::now();
            if was_raised {
                idle_deadline(now)
            } else {
                now.checked_add(GRACE)
            }
        } else {
            None
        };
        let (group, index) = match &self.reg {
            Some(Reg::Helper(g, i)) => (Arc::clone(g), *i),
            _ => {
                self.disarm();
                let reg = registry();
                let r = reg.claim();
                reg.direct.insert(key_of(word), &r.0, r.1);
                self.reg = Some(Reg::Helper(Arc::clone(&r.0), r.1));
                r
            }
        };
        let mut st = group.lock();
        let e = &mut st.entries[index];
        debug_assert!(e.word.is_null() || core::ptr::eq(e.word, word));
        e.word = word;
        if e.keep.is_none() {
            e.keep = Some(Arc::clone(keep) as Arc<dyn Send + Sync>);
        }
        match &e.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => e.waker = Some(waker.clone()),
        }
        e.armed = true;
        e.deadline = deadline;
        let mut wake_helper = false;
        if st.sleeping {
            st.sleeping = false;
            let c = group.control.load(Ordering::Relaxed);
            group.control.store(c.wrapping_add(1), Ordering::Relaxed);
            wake_helper = true;
        }
        let spawn = !st.running;
        st.running = true;
        drop(st);
        if wake_helper {
            group.control.wake();
        }
        if spawn && !spawn_helper(Arc::clone(&group)) {
            group.lock().running = false;
            return Armed::NoHelper;
        }
        Armed::Registered
    }

    /// [`Self::arm`] for a direct-only registration: armed in the index (under its shard
    /// lock), then the word raised to `AWAITING` with `Release`, so that a notifier whose
    /// `Acquire` swap reads this raise finds the registration armed (see the module docs).
    fn arm_local<K: Send + Sync + 'static>(&mut self, word: &Futex, keep: &Arc<K>, waker: &Waker) {
        let key = key_of(word);
        let direct = &registry().direct;
        match &mut self.reg {
            Some(Reg::Local { word: w, id, .. }) if core::ptr::eq(*w, word) => {
                *id = direct.arm_local(key, Some(*id), waker);
            }
            _ => {
                self.disarm();
                let id = direct.arm_local(key, None, waker);
                self.reg = Some(Reg::Local {
                    word,
                    keep: Arc::clone(keep) as Arc<dyn Send + Sync>,
                    id,
                });
            }
        }
        word.store(AWAITING, Ordering::Release);
    }

    /// Ends the wait (the operation completed or is dropped): frees the registration and lowers
    /// the parked word if it is still raised. Without a registration (an operation that never
    /// waited: the common case of a consumer that keeps up) one test, inlined.
    #[inline(always)]
    pub(crate) fn disarm(&mut self) {
        if self.reg.is_some() {
            self.disarm_registered();
        }
    }

    /// [`Self::disarm`] with a registration.
    #[cold]
    #[inline(never)]
    fn disarm_registered(&mut self) {
        if let Some(Reg::Local { word, keep, id }) =
            self.reg.take_if(|r| matches!(r, Reg::Local { .. }))
        {
            let waker = registry().direct.remove_local(word as usize, id);
            // SAFETY: `word` lies in memory kept alive by `keep`, still held here.
            unsafe { &*word }.store(AWAKE, Ordering::Relaxed);
            // Dropped outside the lock: a waker's drop may run arbitrary executor code.
            drop((keep, waker));
            return;
        }
        if let Some(Reg::Helper(group, index)) = self.reg.take() {
            let mut st = group.lock();
            let e = &mut st.entries[index];
            let key = e.word as usize;
            if !e.word.is_null() {
                // SAFETY: `word` lies in memory kept alive by `e.keep`, still held here.
                unsafe { &*e.word }.store(AWAKE, Ordering::Relaxed);
            }
            let keep = e.keep.take();
            let waker = e.waker.take();
            *e = Entry::FREE;
            st.used -= 1;
            drop(st);
            if key != 0 {
                registry().direct.remove(key, &group, index);
            }
            // Dropped outside the lock: a waker's drop may run arbitrary executor code.
            drop((keep, waker));
        }
    }
}

impl Drop for AsyncPark {
    fn drop(&mut self) {
        self.disarm();
    }
}

/// Starts the helper thread of `group`; `false` if the system refused.
fn spawn_helper(group: Arc<Group>) -> bool {
    #[cfg(not(loom))]
    {
        std::thread::Builder::new()
            .name("psyne-async".into())
            .spawn(move || serve(&group))
            .is_ok()
    }
    #[cfg(loom)]
    {
        loom::thread::spawn(move || serve(&group));
        true
    }
}

/// One word of a `futex_waitv` call (`struct futex_waitv` of `<linux/futex.h>`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct WaitV {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

/// `FUTEX2_SIZE_U32`: a 32-bit word, shared (not process-private) like the parked words.
const FUTEX2_SIZE_U32: u32 = 0x02;

/// The helper thread's loop: fire lowered words and passed deadlines, sleep on the rest.
fn serve(group: &Group) {
    let mut waitv: Vec<WaitV> = Vec::with_capacity(PER_GROUP + 1);
    let mut wake: Vec<Waker> = Vec::new();
    let mut idle_since: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let mut st = group.lock();
        st.sleeping = false;
        waitv.clear();
        let mut next: Option<Instant> = None;
        for e in st.entries.iter_mut().filter(|e| e.armed) {
            // SAFETY: an armed entry's word lies in memory its `keep` holds.
            let word = unsafe { &*e.word };
            if word.load(Ordering::Relaxed) != PARKED || e.deadline.is_some_and(|d| d <= now) {
                e.armed = false;
                wake.extend(e.waker.take());
            } else {
                waitv.push(WaitV {
                    val: u64::from(PARKED),
                    uaddr: word.word_ptr() as u64,
                    flags: FUTEX2_SIZE_U32,
                    reserved: 0,
                });
                next = match (next, e.deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        if waitv.is_empty() {
            let since = *idle_since.get_or_insert(now);
            if cfg!(loom) || now.saturating_duration_since(since) >= LINGER {
                st.running = false;
                drop(st);
                wake.drain(..).for_each(Waker::wake);
                return;
            }
            next = since.checked_add(LINGER);
        } else {
            idle_since = None;
        }
        let control = group.control.load(Ordering::Relaxed);
        st.sleeping = true;
        drop(st);
        wake.drain(..).for_each(Waker::wake);
        waitv.push(WaitV {
            val: u64::from(control),
            uaddr: group.control.word_ptr() as u64,
            flags: FUTEX2_SIZE_U32,
            reserved: 0,
        });
        wait_any(&waitv, &group.control, control, next);
    }
}

/// Sleeps until one of `waitv`'s words differs from its expected value, is woken, `deadline`
/// passes (`None`: no limit) or spuriously. `control`/`seen` is the last entry, for the fallback.
#[cfg(not(loom))]
fn wait_any(waitv: &[WaitV], control: &Futex, seen: u32, deadline: Option<Instant>) {
    use core::sync::atomic::{AtomicU8, Ordering as O};
    /// 0: not yet known; 1: `futex_waitv` works; 2: fallback.
    static MODE: AtomicU8 = AtomicU8::new(0);
    let mut mode = MODE.load(O::Relaxed);
    if mode == 0 {
        mode = if std::env::var_os(FORCE_FALLBACK).is_some() {
            2
        } else {
            1
        };
        MODE.store(mode, O::Relaxed);
    }
    let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    if mode == 1 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let ts_ptr = match left {
            Some(d) => {
                // SAFETY: `ts` is a valid timespec to write.
                unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
                let nanos = ts.tv_nsec as u64 + u64::from(d.subsec_nanos());
                ts.tv_sec = ts
                    .tv_sec
                    .saturating_add(d.as_secs().min(i64::MAX as u64 / 2) as libc::time_t)
                    .saturating_add((nanos / 1_000_000_000) as libc::time_t);
                ts.tv_nsec = (nanos % 1_000_000_000) as libc::c_long;
                &ts as *const libc::timespec
            }
            None => core::ptr::null(),
        };
        // SAFETY: `waitv` is a valid array of `waitv.len()` (at most 128) `struct futex_waitv`
        // whose addresses are aligned 32-bit words kept alive by their registrations (and the
        // group) for the call; `ts_ptr` is null or an absolute CLOCK_MONOTONIC time; flags 0.
        // Every error (EAGAIN: a word differs, ETIMEDOUT, EINTR) means "rescan".
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex_waitv,
                waitv.as_ptr(),
                waitv.len() as libc::c_uint,
                0 as libc::c_uint,
                ts_ptr,
                libc::CLOCK_MONOTONIC,
            )
        };
        if r >= 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS) {
            return;
        }
        MODE.store(2, O::Relaxed);
    }
    let limit = left.map_or(FALLBACK_POLL, |d| d.min(FALLBACK_POLL));
    control.wait(seen, Some(limit));
}

/// Environment variable that makes helpers use the fallback (no `futex_waitv`): for tests.
#[cfg(not(loom))]
const FORCE_FALLBACK: &str = "PSYNE_ASYNC_NO_FUTEX_WAITV";

/// Under loom (no `futex_waitv`): a yield, then "spuriously" back to the rescan.
#[cfg(loom)]
fn wait_any(_waitv: &[WaitV], _control: &Futex, _seen: u32, _deadline: Option<Instant>) {
    crate::sync::yield_now();
}
