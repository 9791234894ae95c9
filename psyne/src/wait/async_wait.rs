//! Async waiting: a future that finds its ring empty (or full) sleeps on the same parked word a
//! blocking waiter would, and a small reactor turns the other end's futex wake-up into a
//! [`Waker`] call. Runtime-agnostic: only `std::task::Waker`s, no executor is named.
//!
//! # Protocol (no lost wake-up)
//!
//! The other end is unchanged: after each publication (or release) its `Notifier` fences and
//! reads the parked word; only if it is raised (`PARKED`) does it lower it (`AWAKE`) and call
//! `FUTEX_WAKE`. An end with no async waiter therefore pays nothing new: no extra read-modify-
//! write, no extra load, per message.
//!
//! A future that must wait (`AsyncPark::arm`):
//! 1. raises its end's parked word (exactly as a blocking waiter does before `FUTEX_WAIT`),
//! 2. registers its `Waker` and the word with a reactor group (under the group's lock), waking
//!    the group's helper thread if it sleeps so that it adds the word to the set it waits on,
//! 3. fences (`SeqCst`) and polls the ring once more; only if that finds nothing does it return
//!    `Pending`.
//!
//! The helper thread, under the group lock, reads every registered word: a word that is no longer
//! raised (the other end lowered it) fires its `Waker` and leaves the set. It then sleeps in one
//! `futex_waitv` on all words still raised (expected value `PARKED`) plus the group's control
//! word. The kernel compares each word with the expected value atomically with respect to
//! `FUTEX_WAKE`, so a word lowered after the scan makes the call return at once. By the Dekker
//! handshake of [`crate::wait`], either the future's last poll sees the publication, or the other
//! end sees the raised word and lowers it, which the reactor then sees: no publication is missed.
//! The loom model `async_registration_against_publication` in `psyne/tests/loom.rs` checks this
//! with the helper thread's sleep replaced by a yield (loom has no `futex_waitv`).
//!
//! # Direct wake-up in one process
//!
//! When the other end lives in this process and sees the same mapping (every in-process ring),
//! its notifier's cold path (the word found raised) first calls `wake_direct`: one relaxed
//! load of a process-wide count of registrations (zero: nothing more), else a lookup of the
//! word's *address* in a sharded index kept in process memory (never in the shared mapping, so
//! another process cannot steer it), and, under the entry's group lock, the entry's `Waker` is
//! taken and the entry disarmed, so exactly one of the direct path and the helper fires it.
//! Only then does the notifier lower the word and call `FUTEX_WAKE`, as before: the helper
//! still watches the word, and it is needed. A future that was woken directly, found its
//! message, and registered again before the notifier lowered the word has its raise overwritten;
//! only the helper, which fires any armed entry whose word is not raised, wakes it. (Two
//! variants without the helper for in-process rings were tried and lost wake-ups: skipping the
//! `FUTEX_WAKE` when the direct path fired, which hung `async_bench`; and lowering the word
//! with a swap before the direct lookup, registering before raising, with the helper not
//! watching in-process words, which loom's `async_cancelled_future_leaves_nothing_behind`
//! found deadlocking, not diagnosed further. A third attempt, on 2026-12-02, made the
//! protocol of the second explicit: in-process registrations kept only in the direct index,
//! registered under the group lock before a `Release` raise, the notifier lowering with an
//! `Acquire` swap before its lookup and skipping `FUTEX_WAKE` when it fired such a
//! registration. The async tests passed; loom's model deadlocked again, in an interleaving
//! where the future's own load of its word right after its raise returned the value before
//! the raise. Not understood, so not kept.) Rings shared with another process map the word
//! elsewhere, so the lookup finds nothing there and the helper path is unchanged. The loom
//! models `async_direct_wake_against_cancellation` and `async_direct_wake_of_a_producer` check
//! the direct path against deregistration and for a producer awaiting room.
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
//! A registration is one lock of its group and one of an index shard, a `futex` wake of the
//! helper if it sleeps, and a clone of the `Waker`. The blocking path is unchanged:
//! `scripts/icount.sh` counts 204.02 instructions per 64-byte message and 506.09 per
//! `Embedding256`, before and after this module and before and after the direct wake-up (the
//! notifier's hot path, word not raised, is the same code; the direct path is inside its
//! `#[cold]` function; the later hot-path work brought the counts to 148.09 and 450.19). A
//! future that finds a message at once costs one poll of the ring, as `try_recv` does.
//!
//! `async_bench` (examples; `Embedding256`, capacity 256, 5 interleaved repetitions a run, the
//! producer a plain thread, the consumer a tokio current-thread runtime) on the 2-vCPU VM shared
//! with other builds (1-minute load averages given), with the direct wake-up:
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

use super::{AWAKE, Notifier, PARKED};
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
    group: Arc<Group>,
    index: usize,
}

/// Registrations by the address of their parked word, for the direct wake-up
/// ([`wake_direct`]): sharded by address. Lives in process memory only; an address is a key
/// compared with an entry's own word under the group lock, never dereferenced from here.
struct Direct {
    /// Slots in all shards: the notifier's cold path skips the lookup while it is 0.
    count: AtomicU64,
    shards: Vec<Mutex<Vec<Slot>>>,
}

impl Default for Direct {
    fn default() -> Self {
        Direct {
            count: AtomicU64::new(0),
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
            group: Arc::clone(group),
            index,
        });
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn remove(&self, key: usize, group: &Arc<Group>, index: usize) {
        let mut shard = self.shard(key);
        if let Some(i) = shard
            .iter()
            .position(|s| s.key == key && s.index == index && Arc::ptr_eq(&s.group, group))
        {
            let slot = shard.swap_remove(i);
            drop(shard);
            self.count.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        }
    }

    /// Takes the waker of every armed registration on the word at `key` (under its group's
    /// lock, so that the helper, which fires only armed entries, finds it fired) and wakes it.
    fn wake(&self, key: usize) {
        let mut first: Option<Waker> = None;
        let mut more: Vec<Waker> = Vec::new();
        {
            let shard = self.shard(key);
            for s in shard.iter().filter(|s| s.key == key) {
                // Lock order: shard, then group (nothing takes a shard under a group lock).
                let mut st = s.group.lock();
                let e = &mut st.entries[s.index];
                if e.used && e.armed && e.word as usize == key {
                    e.armed = false;
                    if let Some(w) = e.waker.take() {
                        if first.is_none() {
                            first = Some(w);
                        } else {
                            more.push(w);
                        }
                    }
                }
            }
        }
        // Outside every lock: a waker may run arbitrary executor code.
        first.into_iter().chain(more).for_each(Waker::wake);
    }
}

/// The notifier's cold path (it found the peer's parked word `word` raised), before it lowers
/// the word and calls `FUTEX_WAKE`: wakes directly the future of this process registered on
/// `word` at the same address, if any, saving the helper thread's hop. Costs one relaxed load
/// while no future of this process is registered; never touches `word` itself.
#[inline]
pub(crate) fn wake_direct(word: &Futex) {
    if let Some(reg) = registry_if_any()
        && reg.direct.count.load(Ordering::Relaxed) != 0
    {
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
    reg: Option<(Arc<Group>, usize)>,
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
    /// another process (see the module docs for the re-poll deadlines). The caller must then
    /// fence (`sync::dekker_fence`) and poll the ring once more before returning `Pending`.
    pub(crate) fn arm<K: Send + Sync + 'static>(
        &mut self,
        word: &Futex,
        keep: &Arc<K>,
        waker: &Waker,
        remote: bool,
    ) -> Armed {
        let was_raised = word.load(Ordering::Relaxed) == PARKED;
        word.store(PARKED, Ordering::Relaxed);
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
            Some((g, i)) => (Arc::clone(g), *i),
            None => {
                let reg = registry();
                let r = reg.claim();
                reg.direct.insert(key_of(word), &r.0, r.1);
                self.reg = Some((Arc::clone(&r.0), r.1));
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

    /// Ends the wait (the operation completed or is dropped): frees the registration and lowers
    /// the parked word if it is still raised.
    pub(crate) fn disarm(&mut self) {
        if let Some((group, index)) = self.reg.take() {
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
