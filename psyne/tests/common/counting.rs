//! The counting global allocator shared by the allocation tests (`alloc`, `tensor_alloc`,
//! `mpsc_alloc`), each of which installs it with `#[global_allocator]` in its own binary.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The global allocator of these test binaries: `System`, counting allocations while
/// [`COUNTING`] is set.
pub struct Counting;

/// Whether allocations are counted now.
pub static COUNTING: AtomicBool = AtomicBool::new(false);
/// Allocations counted (allocations, zeroed allocations and reallocations; not frees).
pub static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to `System` unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// The wait strategies every allocation test runs under: the default (spin, yield, sleep),
/// busy-spinning, and sleeping at once.
pub fn waits() -> [psyne::Wait; 3] {
    [
        psyne::Wait::default(),
        psyne::Wait::BusySpin,
        psyne::Wait::SpinThenPark {
            spins: 0,
            yields: 0,
        },
    ]
}

/// Runs `produce` and `consume` on two threads; counts allocations between the start and end
/// barriers (thread creation and joining happen outside the window).
#[allow(
    dead_code,
    reason = "not every allocation test binary runs two closures"
)]
pub fn count(
    produce: impl FnOnce() + Send + 'static,
    consume: impl FnOnce() + Send + 'static,
) -> usize {
    use std::sync::Barrier;
    static START: Barrier = Barrier::new(3);
    static END: Barrier = Barrier::new(3);
    let p = std::thread::spawn(move || {
        START.wait();
        produce();
        END.wait();
    });
    let c = std::thread::spawn(move || {
        START.wait();
        consume();
        END.wait();
    });
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    START.wait();
    END.wait();
    COUNTING.store(false, Ordering::SeqCst);
    p.join().unwrap();
    c.join().unwrap();
    ALLOCATIONS.load(Ordering::SeqCst)
}

/// Fails unless the counter sees an allocation made inside a counting window (so a count of 0
/// means something).
pub fn assert_counter_works() {
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    drop(std::hint::black_box(vec![1u8; 16]));
    COUNTING.store(false, Ordering::SeqCst);
    let seen = ALLOCATIONS.load(Ordering::SeqCst);
    assert!(
        seen >= 1,
        "the counting allocator saw {seen} of 1 allocation"
    );
}
