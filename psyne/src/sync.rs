//! Synchronisation primitives: the one door through which every atomic, fence, spin hint, thread
//! yield and park/wake of psyne passes.
//!
//! Under `cfg(loom)` ([loom](https://docs.rs/loom)), every item here is replaced by its loom
//! counterpart, so that the model tests in `psyne/tests/loom.rs` explore all interleavings and
//! weak-memory outcomes of the ring protocol. No other module may name `core::sync::atomic`,
//! `std::thread::yield_now`, `core::hint::spin_loop` or the futex system call directly.
//!
//! [`Futex`] is a 32-bit word with wait/wake operations: a Linux futex outside loom (the shared,
//! not the process-private, variant, because the control block that holds it will be mapped into
//! two processes), a mutex and condition variable with the same semantics under loom.
//!
//! `AccessTracker` (crate-private) lets loom check the ring's *non-atomic* payload accesses for
//! data races: under loom it holds one `loom::cell::UnsafeCell` per 64-byte chunk of the ring,
//! outside loom it is an empty type whose methods compile to nothing.

#[cfg(not(loom))]
pub use core::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
#[cfg(loom)]
pub use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

use core::time::Duration;

/// A hint that the caller is busy-waiting (`core::hint::spin_loop`; a yield point under loom).
#[inline]
pub fn spin_loop() {
    #[cfg(not(loom))]
    core::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// Gives up the rest of the time slice (`std::thread::yield_now`, or loom's).
#[inline]
pub fn yield_now() {
    #[cfg(not(loom))]
    std::thread::yield_now();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// The full (`SeqCst`) fence of a Dekker handshake: after it, a thread's earlier stores are
/// visible to any thread that runs its own `dekker_fence` later, and its later loads see every
/// store made before such an earlier fence.
#[inline]
pub fn dekker_fence() {
    fence(Ordering::SeqCst);
}

/// A 32-bit word that threads (or processes) can sleep on until another one wakes them.
///
/// Semantics are those of a Linux futex: [`Futex::wait`] sleeps only if the word still holds the
/// expected value, checked atomically with respect to [`Futex::wake`]; it may return spuriously.
#[cfg(not(loom))]
#[repr(transparent)]
#[derive(Debug)]
pub struct Futex {
    word: AtomicU32,
}

/// A 32-bit word that threads can sleep on until another one wakes them (loom model: a mutex and
/// a condition variable with futex semantics).
#[cfg(loom)]
#[derive(Debug)]
pub struct Futex {
    word: AtomicU32,
    lock: loom::sync::Mutex<()>,
    cond: loom::sync::Condvar,
}

impl Futex {
    /// A futex word holding `value`.
    pub fn new(value: u32) -> Self {
        Futex {
            word: AtomicU32::new(value),
            #[cfg(loom)]
            lock: loom::sync::Mutex::new(()),
            #[cfg(loom)]
            cond: loom::sync::Condvar::new(),
        }
    }

    /// Loads the word.
    #[inline]
    pub fn load(&self, order: Ordering) -> u32 {
        self.word.load(order)
    }

    /// Stores `value` into the word.
    ///
    /// Under loom, a `swap` whose result is dropped: loom 0.7 does not apply the atomicity of
    /// a read-modify-write to a plain store made concurrently with it (tokio-rs/loom#254, fix
    /// unmerged in #391), so a store could "squeeze in" between the read and the write of a
    /// notifier's `swap` of a parked word, and the storing thread then read back an older
    /// value than its own store (an execution C++ forbids: an RMW reads the last value before
    /// its write in the modification order). As RMWs, stores to a futex word get the total
    /// modification order C++ gives every atomic; the values stored and orderings are the same.
    #[inline]
    pub fn store(&self, value: u32, order: Ordering) {
        #[cfg(not(loom))]
        self.word.store(value, order);
        #[cfg(loom)]
        self.word.swap(value, order);
    }

    /// Stores `value` into the word and returns the value it replaced (one read-modify-write).
    #[inline]
    pub fn swap(&self, value: u32, order: Ordering) -> u32 {
        self.word.swap(value, order)
    }

    /// The word's address, for system calls that wait on several words (`futex_waitv`).
    /// Under loom, an address that stands for the word (never dereferenced).
    #[inline]
    pub fn word_ptr(&self) -> *const u32 {
        #[cfg(not(loom))]
        return self.word.as_ptr();
        #[cfg(loom)]
        return (self as *const Self).cast();
    }

    /// Sleeps while the word equals `expected`, until woken, until `timeout` passed (`None`: no
    /// limit), or spuriously. Returns at once if the word differs from `expected`.
    ///
    /// Under loom the timeout is ignored (loom has no clock): models must not depend on it.
    pub fn wait(&self, expected: u32, timeout: Option<Duration>) {
        #[cfg(not(loom))]
        {
            let ts;
            let ts_ptr = match timeout {
                Some(d) => {
                    ts = libc::timespec {
                        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
                        tv_nsec: d.subsec_nanos() as libc::c_long,
                    };
                    &ts as *const libc::timespec
                }
                None => core::ptr::null(),
            };
            // SAFETY: FUTEX_WAIT reads the aligned 32-bit word at `self.word.as_ptr()`, which is
            // valid for the duration of the call (we hold `&self`); `ts_ptr` is null or points to
            // a live timespec; the remaining arguments are ignored by FUTEX_WAIT. Errors (EAGAIN:
            // the word differs, EINTR, ETIMEDOUT) all mean "return to the caller", who rechecks.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    self.word.as_ptr(),
                    libc::FUTEX_WAIT,
                    expected,
                    ts_ptr,
                    core::ptr::null::<u32>(),
                    0u32,
                );
            }
        }
        #[cfg(loom)]
        {
            let _ = timeout;
            let guard = self.lock.lock().unwrap();
            if self.word.load(Ordering::Relaxed) == expected {
                drop(self.cond.wait(guard).unwrap());
            }
        }
    }

    /// Wakes every thread sleeping in [`Futex::wait`] on this word. Change the word before
    /// calling it, or a waiter that has not yet gone to sleep will.
    pub fn wake(&self) {
        #[cfg(not(loom))]
        // SAFETY: FUTEX_WAKE only uses the address as a key (it never dereferences it beyond
        // looking up waiters); the word is valid while we hold `&self`.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.word.as_ptr(),
                libc::FUTEX_WAKE,
                i32::MAX,
                core::ptr::null::<libc::timespec>(),
                core::ptr::null::<u32>(),
                0u32,
            );
        }
        #[cfg(loom)]
        {
            let _guard = self.lock.lock().unwrap();
            self.cond.notify_all();
        }
    }
}

/// Checks, under loom, that non-atomic accesses to ring memory are ordered by the protocol: one
/// tracking cell per 64-byte chunk of the ring. Outside loom, an empty type.
#[derive(Debug)]
pub(crate) struct AccessTracker {
    #[cfg(loom)]
    cells: Vec<loom::cell::UnsafeCell<()>>,
}

/// Granularity of [`AccessTracker`] in bytes.
#[cfg(loom)]
const TRACK_CHUNK: usize = 64;

impl AccessTracker {
    /// A tracker for a ring region of `len` bytes.
    pub(crate) fn new(len: usize) -> Self {
        #[cfg(not(loom))]
        {
            let _ = len;
            AccessTracker {}
        }
        #[cfg(loom)]
        AccessTracker {
            cells: (0..len.div_ceil(TRACK_CHUNK))
                .map(|_| loom::cell::UnsafeCell::new(()))
                .collect(),
        }
    }

    /// Records a write of bytes `start .. start + len` of the ring (no wrap-around).
    #[inline]
    pub(crate) fn write(&self, start: usize, len: usize) {
        #[cfg(not(loom))]
        let _ = (start, len);
        #[cfg(loom)]
        for cell in &self.cells[start / TRACK_CHUNK..(start + len).div_ceil(TRACK_CHUNK)] {
            cell.with_mut(|_| ());
        }
    }

    /// Records a read of bytes `start .. start + len` of the ring (no wrap-around).
    #[inline]
    pub(crate) fn read(&self, start: usize, len: usize) {
        #[cfg(not(loom))]
        let _ = (start, len);
        #[cfg(loom)]
        for cell in &self.cells[start / TRACK_CHUNK..(start + len).div_ceil(TRACK_CHUNK)] {
            cell.with(|_| ());
        }
    }
}

/// The commit words of a ring: the `sequence` word of the header at each record start, which the
/// producer publishes with one `Release` store and the consumer `Acquire`-loads (see
/// [`crate::ring`]'s module docs).
///
/// Outside loom the word *is* the header's `sequence` field, accessed as an atomic in place (an
/// empty type: the methods take the field's address). Under loom, whose atomics cannot live at
/// an arbitrary address, each 64-byte slot of the ring has its own loom atomic that stands for
/// the field; stores also write the field itself (plainly: loom runs one thread at a time), so
/// that readers of the header see the same value. If the field's bytes were overwritten by a
/// plain write since the last commit store (payload of a later record), a load returns those
/// bytes, as the hardware could: so a model fails if stale payload can pass for a commit.
#[derive(Debug)]
pub(crate) struct CommitWords {
    #[cfg(loom)]
    words: Vec<AtomicU64>,
    /// The value each loom word was last stored (not a loom atomic: bookkeeping only).
    #[cfg(loom)]
    last: Vec<std::sync::atomic::AtomicU64>,
}

impl CommitWords {
    /// The commit words of a ring region of `len` bytes (zero, like a fresh region).
    pub(crate) fn new(len: usize) -> Self {
        #[cfg(not(loom))]
        {
            let _ = len;
            CommitWords {}
        }
        #[cfg(loom)]
        CommitWords {
            words: (0..len.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            last: (0..len.div_ceil(64))
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
        }
    }

    /// Loads the commit word of the record at ring offset `offset`, whose `sequence` field is at
    /// `word`.
    ///
    /// # Safety
    ///
    /// `word` must be valid, 8-aligned and stay mapped for the call, and every access to it that
    /// may run concurrently with this one must be atomic.
    #[inline(always)]
    pub(crate) unsafe fn load(&self, offset: usize, word: *mut u64, order: Ordering) -> u64 {
        #[cfg(not(loom))]
        {
            let _ = offset;
            // SAFETY: guaranteed by the caller (valid, aligned, only atomic concurrent access).
            unsafe { AtomicU64::from_ptr(word) }.load(order)
        }
        #[cfg(loom)]
        {
            let value = self.words[offset / 64].load(order);
            // SAFETY: valid and aligned (caller); loom runs one thread at a time.
            let bytes = unsafe { word.read() };
            if bytes != self.last[offset / 64].load(std::sync::atomic::Ordering::Relaxed) {
                // Overwritten by a plain write (a later record's payload) since the last commit.
                return bytes;
            }
            value
        }
    }

    /// Stores `value` into the commit word of the record at ring offset `offset`, whose
    /// `sequence` field is at `word`.
    ///
    /// # Safety
    ///
    /// As for [`Self::load`]; in addition the caller (the producer) must own the word: it lies in
    /// free space, which the consumer only loads atomically.
    #[inline(always)]
    pub(crate) unsafe fn store(&self, offset: usize, word: *mut u64, value: u64, order: Ordering) {
        #[cfg(not(loom))]
        {
            let _ = offset;
            // SAFETY: guaranteed by the caller (valid, aligned, only atomic concurrent access).
            unsafe { AtomicU64::from_ptr(word) }.store(value, order)
        }
        #[cfg(loom)]
        {
            // SAFETY: valid and aligned (caller); loom runs one thread at a time, so this plain
            // write races with nothing, and readers of the field read it only after acquiring
            // the loom word below (or the record's release).
            unsafe { word.write(value) };
            self.last[offset / 64].store(value, std::sync::atomic::Ordering::Relaxed);
            self.words[offset / 64].store(value, order)
        }
    }
}
