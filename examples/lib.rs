//! Shared helpers for the examples: a counting global allocator, CPU pinning, a calibrated
//! timer, percentiles and summaries of repeated measurements, and a tiny argument parser.
//!
//! Everything here is measurement plumbing; none of it is part of psyne's API.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod training;

pub mod alloc {
    //! A global allocator that counts allocations, globally and per thread.
    //!
    //! Install it in a binary with
    //! `#[global_allocator] static ALLOC: CountingAlloc = CountingAlloc;` and read
    //! [`thread_allocations`] before and after the loop that must not allocate.

    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, Ordering};

    static TOTAL: AtomicU64 = AtomicU64::new(0);

    thread_local! {
        // `const` initialisation and a type without `Drop`: reading it never allocates and never
        // registers a destructor, so the allocator may touch it.
        static THREAD: Cell<u64> = const { Cell::new(0) };
    }

    /// The system allocator, counting every `alloc`, `alloc_zeroed` and `realloc`.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct CountingAlloc;

    #[inline]
    fn count() {
        TOTAL.fetch_add(1, Ordering::Relaxed);
        let _ = THREAD.try_with(|c| c.set(c.get() + 1));
    }

    // SAFETY: every method forwards to `System` with the caller's arguments unchanged; counting
    // touches only an atomic and a destructor-free thread local, neither of which allocates.
    unsafe impl GlobalAlloc for CountingAlloc {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            count();
            // SAFETY: forwarded contract of `GlobalAlloc::alloc`.
            unsafe { System.alloc(layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            count();
            // SAFETY: forwarded contract of `GlobalAlloc::alloc_zeroed`.
            unsafe { System.alloc_zeroed(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: forwarded contract of `GlobalAlloc::dealloc`.
            unsafe { System.dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            count();
            // SAFETY: forwarded contract of `GlobalAlloc::realloc`.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    /// Allocations made by the calling thread since it started (needs [`CountingAlloc`]
    /// installed as the global allocator, else always 0).
    pub fn thread_allocations() -> u64 {
        THREAD.try_with(Cell::get).unwrap_or(0)
    }

    /// Allocations made by all threads since the process started.
    pub fn total_allocations() -> u64 {
        TOTAL.load(Ordering::Relaxed)
    }
}

pub mod affinity {
    //! Pinning the calling thread to one CPU (Linux `sched_setaffinity`).

    use std::io;

    /// Pins the calling thread to `cpu`.
    pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cpu index too large",
            ));
        }
        // SAFETY: `cpu_set_t` is a plain bit array; all zeroes is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `cpu < CPU_SETSIZE` was checked, so the bit lies inside `set`.
        unsafe { libc::CPU_SET(cpu, &mut set) };
        // SAFETY: pid 0 names the calling thread; `set` is a valid `cpu_set_t` of the size given.
        let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// The CPUs the calling thread may run on, in increasing order.
    pub fn allowed_cpus() -> Vec<usize> {
        // SAFETY: as in `pin_to_cpu`, all zeroes is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: pid 0 names the calling thread; `set` is writable and of the size given.
        let rc = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
        if rc != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize)
            // SAFETY: every index is below `CPU_SETSIZE`.
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
            .collect()
    }
}

pub mod timer {
    //! A timestamp source for latency measurements: the time-stamp counter, read with fences and
    //! calibrated against [`Instant`], or [`Instant`] itself where there is no usable TSC.
    //!
    //! Timestamps are raw ticks (`u64`), cheap to take and to carry inside a message; convert a
    //! difference with [`Clock::ticks_to_ns`]. The cost of one read is measured by
    //! [`Clock::overhead`] and must be reported beside every latency taken with it.

    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    /// Which counter a [`Clock`] reads.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Source {
        /// `lfence; rdtsc; lfence` (x86_64 with an invariant TSC).
        Tsc,
        /// `std::time::Instant` (`clock_gettime(CLOCK_MONOTONIC)`), in nanoseconds.
        Instant,
    }

    /// A calibrated timestamp source. `Copy`, so every thread holds its own.
    #[derive(Debug, Clone, Copy)]
    pub struct Clock {
        source: Source,
        ns_per_tick: f64,
    }

    /// What one read of a [`Clock`] costs, measured back to back on the calling thread.
    #[derive(Debug, Clone, Copy)]
    pub struct Overhead {
        /// Mean nanoseconds per read over a long run of consecutive reads.
        pub mean_ns: f64,
        /// Smallest difference seen between two consecutive reads, in nanoseconds.
        pub min_delta_ns: f64,
    }

    fn origin() -> Instant {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        *ORIGIN.get_or_init(Instant::now)
    }

    /// True when this CPU advertises an invariant TSC (constant rate, runs in all C-states).
    pub fn invariant_tsc() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            let line = flags.lines().find(|l| l.starts_with("flags")).unwrap_or("");
            line.split_whitespace().any(|f| f == "constant_tsc")
                && line.split_whitespace().any(|f| f == "nonstop_tsc")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn rdtsc_fenced() -> u64 {
        use core::arch::x86_64::{_mm_lfence, _rdtsc};
        // SAFETY: `lfence` (SSE2) and `rdtsc` exist on every x86_64 CPU. The leading fence keeps
        // the read from running ahead of earlier loads (the consumer's acquire), the trailing one
        // keeps later work from starting before it.
        unsafe {
            _mm_lfence();
            let t = _rdtsc();
            _mm_lfence();
            t
        }
    }

    impl Clock {
        /// The TSC when it is invariant (calibrated against `Instant` over ~2 x 25 ms), otherwise
        /// `Instant`.
        pub fn best() -> Self {
            if invariant_tsc() {
                Self::tsc()
            } else {
                Self::instant()
            }
        }

        /// `Instant`, in nanoseconds since the first use in this process.
        pub fn instant() -> Self {
            let _ = origin();
            Clock {
                source: Source::Instant,
                ns_per_tick: 1.0,
            }
        }

        /// The TSC, calibrated against `Instant` (falls back to `Instant` off x86_64).
        pub fn tsc() -> Self {
            #[cfg(target_arch = "x86_64")]
            {
                let calibrate = || {
                    let (i0, t0) = (Instant::now(), rdtsc_fenced());
                    while i0.elapsed() < Duration::from_millis(25) {
                        std::hint::spin_loop();
                    }
                    let (t1, i1) = (rdtsc_fenced(), Instant::now());
                    (i1 - i0).as_nanos() as f64 / (t1 - t0) as f64
                };
                let _ = calibrate(); // first pass warms caches and the frequency
                Clock {
                    source: Source::Tsc,
                    ns_per_tick: calibrate(),
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                Self::instant()
            }
        }

        /// Which counter this clock reads.
        pub fn source(&self) -> Source {
            self.source
        }

        /// Counter frequency in GHz (1.0 for `Instant`).
        pub fn ghz(&self) -> f64 {
            1.0 / self.ns_per_tick
        }

        /// A timestamp in ticks.
        #[inline(always)]
        pub fn now(&self) -> u64 {
            match self.source {
                #[cfg(target_arch = "x86_64")]
                Source::Tsc => rdtsc_fenced(),
                _ => origin().elapsed().as_nanos() as u64,
            }
        }

        /// Converts a tick count to nanoseconds.
        #[inline]
        pub fn ticks_to_ns(&self, ticks: u64) -> f64 {
            ticks as f64 * self.ns_per_tick
        }

        /// Converts nanoseconds to a tick count.
        #[inline]
        pub fn ns_to_ticks(&self, ns: f64) -> u64 {
            (ns / self.ns_per_tick) as u64
        }

        /// Measures what one read costs on the calling thread.
        pub fn overhead(&self) -> Overhead {
            const N: u64 = 200_000;
            let mut min = u64::MAX;
            let mut prev = self.now();
            let start = prev;
            for _ in 0..N {
                let t = self.now();
                min = min.min(t - prev);
                prev = t;
            }
            Overhead {
                mean_ns: self.ticks_to_ns(prev - start) / N as f64,
                min_delta_ns: self.ticks_to_ns(min),
            }
        }
    }

    /// `CLOCK_MONOTONIC` in nanoseconds: the clock psyne's header timestamps
    /// ([`MessageHeader::timestamp_ns`](psyne::MessageHeader)) are read from (psyne's own
    /// function, inlined across the crate boundary).
    pub use psyne::channel::monotonic_ns;

    /// Mean cost of one [`monotonic_ns`] call, in nanoseconds, measured back to back.
    pub fn monotonic_overhead_ns() -> f64 {
        const N: u64 = 200_000;
        let start = monotonic_ns();
        let mut last = start;
        for _ in 0..N {
            last = std::hint::black_box(monotonic_ns());
        }
        (last - start) as f64 / N as f64
    }

    impl std::fmt::Display for Clock {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self.source {
                Source::Tsc => write!(f, "TSC (lfence; rdtsc; lfence) at {:.3} GHz", self.ghz()),
                Source::Instant => f.write_str("Instant (clock_gettime MONOTONIC)"),
            }
        }
    }
}

pub mod stats {
    //! Percentiles of samples and summaries (median [min–max]) of repeated runs.

    /// The `q`-quantile (0..=1) of sorted samples, nearest rank.
    pub fn quantile_sorted(sorted: &[u64], q: f64) -> u64 {
        if sorted.is_empty() {
            return 0;
        }
        let rank = (q * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    /// Median, minimum and maximum of the repetitions of one figure.
    #[derive(Debug, Clone, Copy, Default, PartialEq)]
    pub struct Summary {
        /// Median over the repetitions (mean of the two middle values for an even count).
        pub median: f64,
        /// Smallest repetition.
        pub min: f64,
        /// Largest repetition.
        pub max: f64,
    }

    impl Summary {
        /// Summarises the repetitions (all zero when there are none).
        pub fn of(values: &[f64]) -> Self {
            if values.is_empty() {
                return Self::default();
            }
            let mut v = values.to_vec();
            v.sort_by(f64::total_cmp);
            let n = v.len();
            let median = if n % 2 == 1 {
                v[n / 2]
            } else {
                (v[n / 2 - 1] + v[n / 2]) / 2.0
            };
            Summary {
                median,
                min: v[0],
                max: v[n - 1],
            }
        }

        /// Formats as `median [min–max]` with `digits` decimals.
        pub fn show(&self, digits: usize) -> String {
            format!(
                "{:.d$} [{:.d$}–{:.d$}]",
                self.median,
                self.min,
                self.max,
                d = digits
            )
        }
    }
}

pub mod disturbance {
    //! Whether a benchmark run was disturbed too much for its figures to grade targets.
    //!
    //! A run is *disturbed* when either
    //!
    //! * the scheduler took a CPU away from it (involuntary context switches, `getrusage`'s
    //!   `ru_nivcsw` over the whole process) more than [`MAX_PREEMPTIONS_PER_S`] times per second
    //!   of the run on average, or
    //! * a central figure that a target grades (a streaming rate, a median latency, or the
    //!   per-repetition ratio of two of them) differs between its repetitions by more than
    //!   [`MAX_SPREAD`] times (largest over smallest; a repetition at or below zero counts as an
    //!   unbounded spread).
    //!
    //! Tails (p99, p99.9) are left out of the spread test: on a quiet machine they already vary
    //! several-fold between repetitions, which is what their targets measure.

    /// Preemptions per second of run above which a run is disturbed: 4x the quiet reference run
    /// (713 involuntary context switches in 29 s, about 25 per second, on the 16-core machine of
    /// BENCHMARKS.md).
    pub const MAX_PREEMPTIONS_PER_S: f64 = 100.0;

    /// Largest-over-smallest repetition of a central figure above which a run is disturbed. In
    /// the quiet reference run the widest graded figure spread 3.2x (Psyne / rtrb, Embedding256
    /// streaming, per repetition; rtrb's own rate spread 5.3x); the run of issue 10 had a ratio at
    /// `0.000-5569.937`.
    pub const MAX_SPREAD: f64 = 10.0;

    /// Largest over smallest of `reps` (`None` for fewer than two repetitions; infinite when the
    /// smallest is at or below zero, or a repetition is not a number).
    pub fn spread(reps: &[f64]) -> Option<f64> {
        if reps.len() < 2 {
            return None;
        }
        let min = reps.iter().copied().fold(f64::INFINITY, f64::min);
        let max = reps.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if reps.iter().any(|r| r.is_nan()) || min <= 0.0 {
            Some(f64::INFINITY)
        } else {
            Some(max / min)
        }
    }

    /// `v` with 3 decimals below 100, none from 100 up.
    fn short(v: f64) -> String {
        if v.abs() >= 100.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.3}")
        }
    }

    /// Why the run was disturbed, one reason a line; empty when it was not. `preemptions` is the
    /// run's involuntary context switch count (negative: unknown, not tested), `wall_s` its
    /// duration, `figures` each graded central figure's name and per-repetition values.
    pub fn reasons(preemptions: i64, wall_s: f64, figures: &[(String, Vec<f64>)]) -> Vec<String> {
        let mut why = Vec::new();
        if preemptions >= 0 && wall_s > 0.0 {
            let rate = preemptions as f64 / wall_s;
            if rate > MAX_PREEMPTIONS_PER_S {
                why.push(format!(
                    "preempted {preemptions} times in {wall_s:.0} s: {rate:.0}/s, over \
                     {MAX_PREEMPTIONS_PER_S:.0}/s"
                ));
            }
        }
        for (name, reps) in figures {
            if let Some(s) = spread(reps).filter(|&s| s > MAX_SPREAD) {
                let min = reps.iter().copied().fold(f64::INFINITY, f64::min);
                let max = reps.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let s = if s.is_finite() {
                    format!("{s:.1}x")
                } else {
                    "unboundedly".to_string()
                };
                why.push(format!(
                    "{name} varied {s} between repetitions ({}-{}), over {MAX_SPREAD:.0}x",
                    short(min),
                    short(max)
                ));
            }
        }
        why
    }

    #[cfg(test)]
    mod tests {
        use super::{MAX_PREEMPTIONS_PER_S, reasons, spread};

        fn fig(name: &str, reps: &[f64]) -> (String, Vec<f64>) {
            (name.to_string(), reps.to_vec())
        }

        #[test]
        fn spread_is_largest_over_smallest() {
            assert_eq!(spread(&[2.0, 8.0, 4.0]), Some(4.0));
            assert_eq!(spread(&[5.0]), None);
            assert_eq!(spread(&[]), None);
            assert_eq!(spread(&[0.0, 3.0]), Some(f64::INFINITY));
            assert_eq!(spread(&[f64::NAN, 3.0]), Some(f64::INFINITY));
        }

        #[test]
        fn the_quiet_reference_run_is_graded() {
            // Figures of the 16-core run in BENCHMARKS.md: 713 preemptions in 29 s, and the
            // widest central spreads it had.
            let figures = [
                fig("Embedding256 streaming, Psyne / rtrb", &[0.97, 1.91, 3.09]),
                fig("rtrb streaming", &[2.21, 6.19, 11.66]),
                fig("64 B one-way p50", &[236.0, 249.0, 267.0]),
            ];
            assert!(reasons(713, 29.0, &figures).is_empty());
            // One repetition has no spread; an unknown preemption count is not held against it.
            assert!(reasons(-1, 29.0, &[fig("x", &[0.0])]).is_empty());
        }

        #[test]
        fn heavy_preemption_is_a_disturbed_run() {
            let why = reasons(16_789, 30.0, &[]);
            assert_eq!(why.len(), 1);
            assert_eq!(why[0], "preempted 16789 times in 30 s: 560/s, over 100/s");
            // Exactly at the limit is still quiet.
            assert!(reasons(MAX_PREEMPTIONS_PER_S as i64 * 10, 10.0, &[]).is_empty());
        }

        #[test]
        fn a_wild_spread_is_a_disturbed_run() {
            // The run of issue 10: a ratio at 0.006 [0.000-5569.937].
            let why = reasons(100, 30.0, &[fig("ratio", &[0.0, 0.006, 5569.937])]);
            assert_eq!(why.len(), 1);
            assert_eq!(
                why[0],
                "ratio varied unboundedly between repetitions (0.000-5570), over 10x"
            );
            let why = reasons(
                100,
                30.0,
                &[fig("p50", &[100.0, 1100.0]), fig("ok", &[1.0, 9.0])],
            );
            assert_eq!(
                why,
                ["p50 varied 11.0x between repetitions (100-1100), over 10x"]
            );
        }
    }
}

pub mod dense {
    //! The demo's dense layer, `y = relu(W x)`, computed by nalgebra's `gemv` straight from a
    //! received message into a loaned one, with the CPU's vector units when it has them.
    //!
    //! The crate is compiled for baseline x86-64 (SSE2, 128-bit vectors), and so is nalgebra's
    //! `gemv` inlined into it. [`relu_gemv`] runs the same nalgebra call inside a function compiled
    //! with `#[target_feature(enable = "avx2,fma")]` when the CPU reports both at run time
    //! ([`Path::detect`]); nalgebra's `gemv` is `#[inline]`, so its loops are compiled there with
    //! 256-bit vectors, into a cache-line-aligned buffer copied to `y` at the end (see the
    //! function for why). Elsewhere (other CPUs, other architectures) the baseline code runs.

    use nalgebra::{DMatrix, SVectorView, SVectorViewMut};

    /// Which code computes the dense layer.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Path {
        /// nalgebra's `gemv` compiled with AVX2 and FMA (x86_64 CPUs that report both).
        Avx2Fma,
        /// nalgebra's `gemv` compiled for the crate's target (baseline x86-64: SSE2).
        Baseline,
    }

    impl Path {
        /// The fastest path this CPU runs: [`Path::Avx2Fma`] when it reports AVX2 and FMA.
        pub fn detect() -> Self {
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return Path::Avx2Fma;
            }
            Path::Baseline
        }

        /// What the demo prints about the path.
        pub fn describe(&self) -> &'static str {
            match self {
                Path::Avx2Fma => {
                    "AVX2+FMA (#[target_feature], detected at run time: this CPU has both)"
                }
                Path::Baseline => "baseline (the build's target features; no AVX2+FMA detected)",
            }
        }
    }

    /// `y = relu(W x)` for a square `N x N` `w`, on `path`.
    ///
    /// # Panics
    ///
    /// If `w` is not `N x N`, or if `path` is [`Path::Avx2Fma`] on an x86_64 CPU that does not
    /// report AVX2 and FMA (a `Path` other than [`Path::detect`]'s; off x86_64 it runs the
    /// baseline code).
    pub fn relu_gemv<const N: usize>(
        path: Path,
        y: &mut SVectorViewMut<'_, f32, N>,
        w: &DMatrix<f32>,
        x: &SVectorView<'_, f32, N>,
    ) {
        assert_eq!(w.shape(), (N, N), "W must be {N}x{N}");
        match path {
            #[cfg(target_arch = "x86_64")]
            Path::Avx2Fma => {
                assert_eq!(Path::detect(), Path::Avx2Fma, "this CPU lacks AVX2 or FMA");
                // SAFETY: `relu_gemv_avx2_fma` needs only AVX2 and FMA, and the CPU reported both
                // (checked just above; `is_x86_feature_detected!` caches, so this is cheap).
                unsafe { relu_gemv_avx2_fma(y, w, x) }
            }
            _ => relu_gemv_baseline(y, w, x),
        }
    }

    /// The baseline path: nalgebra's `gemv` for the crate's target.
    #[inline]
    fn relu_gemv_baseline<const N: usize>(
        y: &mut SVectorViewMut<'_, f32, N>,
        w: &DMatrix<f32>,
        x: &SVectorView<'_, f32, N>,
    ) {
        y.gemv(1.0, w, x, 0.0);
        y.apply(|a| *a = a.max(0.0));
    }

    /// The same code, compiled with AVX2 and FMA: the inlined nalgebra loops use 256-bit vectors.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn relu_gemv_avx2_fma<const N: usize>(
        y: &mut SVectorViewMut<'_, f32, N>,
        w: &DMatrix<f32>,
        x: &SVectorView<'_, f32, N>,
    ) {
        // `gemv` adds one column of `w` into `y` at a time, so each 32-byte store to `y` is loaded
        // again for the next column. Where `y` is not 32-byte aligned, half of those stores
        // straddle a cache line and cannot be forwarded to the load: measured, that made this path
        // slower than the baseline one (about 1.4x), and accumulating in a cache-line-aligned
        // buffer, copied out once, made it about 1.9x faster.
        let mut acc = Aligned([0.0f32; N]);
        relu_gemv_baseline(&mut SVectorViewMut::<f32, N>::from_slice(&mut acc.0), w, x);
        y.copy_from_slice(&acc.0);
    }

    /// A buffer that starts on a cache line.
    #[cfg(target_arch = "x86_64")]
    #[repr(C, align(64))]
    struct Aligned<const N: usize>([f32; N]);

    #[cfg(test)]
    mod tests {
        use super::{Path, relu_gemv};
        use nalgebra::{DMatrix, SVectorView, SVectorViewMut};

        const N: usize = 256;

        fn run(path: Path, w: &DMatrix<f32>, x: &[f32; N]) -> [f32; N] {
            let mut y = [f32::NAN; N];
            relu_gemv(
                path,
                &mut SVectorViewMut::<f32, N>::from_slice(&mut y),
                w,
                &SVectorView::<f32, N>::from_slice(x),
            );
            y
        }

        #[test]
        fn every_path_computes_relu_w_x() {
            let w = DMatrix::<f32>::from_fn(N, N, |r, c| {
                (((r * 7 + c * 13) % 29) as f32 / 29.0 - 0.5) / 16.0
            });
            let x: [f32; N] = std::array::from_fn(|j| ((j * 31) % 97) as f32 / 97.0 - 0.5);
            // Reference in f64, independently of nalgebra's gemv.
            let want: Vec<f64> = (0..N)
                .map(|r| {
                    (0..N)
                        .map(|c| f64::from(w[(r, c)]) * f64::from(x[c]))
                        .sum::<f64>()
                        .max(0.0)
                })
                .collect();
            let base = run(Path::Baseline, &w, &x);
            let fast = run(Path::detect(), &w, &x);
            // 256 products of magnitude at most 1/32 each: f32 sums of them stay within 1e-5.
            for r in 0..N {
                assert!((f64::from(base[r]) - want[r]).abs() < 1e-5, "row {r}");
                assert!(
                    (fast[r] - base[r]).abs() <= 1e-6,
                    "row {r}: {:?} {} vs baseline {}",
                    Path::detect(),
                    fast[r],
                    base[r]
                );
            }
            // The data exercise both sides of the relu.
            assert!(base.iter().any(|&v| v > 0.0) && base.contains(&0.0));
        }
    }
}

pub mod args {
    //! A minimal `--flag value` parser (the examples take a handful of options).

    use std::collections::HashMap;
    use std::str::FromStr;

    /// Parsed `--name value` pairs and bare `--switch`es.
    #[derive(Debug, Default)]
    pub struct Args {
        values: HashMap<String, String>,
    }

    /// Boxed error used by the examples.
    pub type Error = Box<dyn std::error::Error>;

    /// Why a command line does not start a run: what to print, and the exit status.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Stop {
        /// `--help` or `-h`: the usage, on standard output, exit status 0.
        Help(String),
        /// An unknown option or a stray argument: the error and the usage, on standard error,
        /// exit status 2 (the usual status of a command-line mistake).
        Usage(String),
    }

    impl Stop {
        /// The exit status this outcome ends the process with.
        pub fn code(&self) -> i32 {
            match self {
                Stop::Help(_) => 0,
                Stop::Usage(_) => 2,
            }
        }
    }

    impl Args {
        /// Parses `std::env::args()` with [`Self::parse_with`]; on `--help` or `-h` prints `usage`
        /// and exits with status 0; on an unknown option or stray argument prints the error and
        /// `usage` to standard error and exits with status 2.
        ///
        /// Every command-line mistake ends the process here, so this is always `Ok`; it returns a
        /// `Result` so that callers chain it with `?` like the accessors' errors (a bad value of a
        /// known option, reported when the value is read).
        pub fn parse(known: &[&str], usage: &str) -> Result<Self, Error> {
            match Self::parse_with(std::env::args().skip(1), known, usage) {
                Ok(args) => Ok(args),
                Err(stop) => {
                    match &stop {
                        Stop::Help(text) => println!("{text}"),
                        Stop::Usage(text) => eprintln!("{text}"),
                    }
                    std::process::exit(stop.code());
                }
            }
        }

        /// [`Self::parse_from`], with what to print and the exit status decided: the usage for
        /// `--help`, the error followed by the usage for a command-line mistake.
        pub fn parse_with(
            args: impl IntoIterator<Item = String>,
            known: &[&str],
            usage: &str,
        ) -> Result<Self, Stop> {
            let usage = usage.trim_end();
            match Self::parse_from(args, known) {
                Ok(Some(args)) => Ok(args),
                Ok(None) => Err(Stop::Help(usage.to_string())),
                Err(e) => Err(Stop::Usage(format!("error: {e}\n\n{usage}"))),
            }
        }

        /// Parses `args` (without the program name), accepting only the options in `known`
        /// (without `--`). A known option followed by another option or nothing is a switch
        /// (value "true"). `None` if `--help` or `-h` is among them.
        pub fn parse_from(
            args: impl IntoIterator<Item = String>,
            known: &[&str],
        ) -> Result<Option<Self>, Error> {
            let args: Vec<String> = args.into_iter().collect();
            if args.iter().any(|a| a == "--help" || a == "-h") {
                return Ok(None);
            }
            let mut values = HashMap::new();
            let mut it = args.into_iter().peekable();
            while let Some(a) = it.next() {
                let name = a
                    .strip_prefix("--")
                    .ok_or_else(|| format!("unexpected argument {a:?}"))?;
                let (name, inline) = match name.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_string())),
                    None => (name, None),
                };
                if !known.contains(&name) {
                    return Err(if known.is_empty() {
                        format!("unknown option --{name} (this example takes no options)")
                    } else {
                        format!(
                            "unknown option --{name} (known: --{}; --help for more)",
                            known.join(", --")
                        )
                    }
                    .into());
                }
                let value = match inline {
                    Some(v) => v,
                    None => match it.peek() {
                        Some(v) if !v.starts_with("--") => it.next().unwrap_or_default(),
                        _ => "true".to_string(),
                    },
                };
                values.insert(name.to_string(), value);
            }
            Ok(Some(Args { values }))
        }

        /// The raw value of `--name`, if given.
        pub fn get(&self, name: &str) -> Option<&str> {
            self.values.get(name).map(String::as_str)
        }

        /// `--name` parsed as `T`, or `default`.
        pub fn value<T: FromStr>(&self, name: &str, default: T) -> Result<T, Error>
        where
            T::Err: std::fmt::Display,
        {
            match self.get(name) {
                None => Ok(default),
                Some(v) => v.parse().map_err(|e| format!("--{name} {v:?}: {e}").into()),
            }
        }

        /// `--name a,b,c` parsed as a list, or `default`.
        pub fn list<T: FromStr>(&self, name: &str, default: Vec<T>) -> Result<Vec<T>, Error>
        where
            T::Err: std::fmt::Display,
        {
            match self.get(name) {
                None => Ok(default),
                Some(v) => v
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        s.trim()
                            .parse()
                            .map_err(|e| format!("--{name} {s:?}: {e}").into())
                    })
                    .collect(),
            }
        }

        /// Whether the switch `--name` was given.
        pub fn flag(&self, name: &str) -> bool {
            self.get(name).is_some_and(|v| v != "false")
        }
    }

    /// The two CPUs to pin producer and consumer to: `--cpus a,b`, else the first two the
    /// process may use (or `0,0` on a single CPU).
    pub fn cpu_pair(args: &Args) -> Result<(usize, usize), Error> {
        let allowed = crate::affinity::allowed_cpus();
        let default = vec![allowed[0], *allowed.get(1).unwrap_or(&allowed[0])];
        let cpus: Vec<usize> = args.list("cpus", default)?;
        match cpus.as_slice() {
            [a, b, ..] => Ok((*a, *b)),
            [a] => Ok((*a, *a)),
            [] => Err("--cpus needs at least one CPU".into()),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::{Args, Stop};

        fn parse(line: &str) -> Result<Option<Args>, super::Error> {
            Args::parse_from(
                line.split_whitespace().map(String::from),
                &["sizes", "reps", "json"],
            )
        }

        #[test]
        fn values_switches_and_inline_values() {
            let a = parse("--sizes 8,64 --reps=3 --json").unwrap().unwrap();
            assert_eq!(a.list::<usize>("sizes", vec![]).unwrap(), vec![8, 64]);
            assert_eq!(a.value("reps", 5usize).unwrap(), 3);
            assert_eq!(a.get("json"), Some("true"));
            assert_eq!(a.value("missing", 7u32).unwrap(), 7);
        }

        #[test]
        fn help_anywhere_asks_for_the_usage() {
            assert!(parse("--help").unwrap().is_none());
            assert!(parse("--reps 3 -h").unwrap().is_none());
            // `--help` wins over an unknown option, so the usage is reachable after a typo.
            assert!(parse("--bogus --help").unwrap().is_none());
        }

        #[test]
        fn unknown_options_and_bad_values_are_errors() {
            let e = parse("--bogus 1").err().unwrap().to_string();
            assert!(
                e.contains("unknown option --bogus") && e.contains("--help"),
                "{e}"
            );
            let e = parse("stray").err().unwrap().to_string();
            assert!(e.contains("unexpected argument"), "{e}");
            let a = parse("--reps many").unwrap().unwrap();
            let e = a.value("reps", 5usize).err().unwrap().to_string();
            assert!(e.contains("--reps \"many\""), "{e}");
        }

        fn stop(line: &str, known: &[&str]) -> Stop {
            Args::parse_with(
                line.split_whitespace().map(String::from),
                known,
                "usage: demo [--reps N]\n",
            )
            .err()
            .unwrap()
        }

        #[test]
        fn help_prints_the_usage_and_exits_0() {
            let s = stop("-h", &["reps"]);
            assert_eq!(s, Stop::Help("usage: demo [--reps N]".into()));
            assert_eq!(s.code(), 0);
            // An example without options answers `--help` too.
            assert_eq!(stop("--help", &[]).code(), 0);
        }

        #[test]
        fn mistakes_print_the_error_and_the_usage_and_exit_2() {
            for (line, known, what) in [
                ("--bogus", &["reps"][..], "unknown option --bogus"),
                (
                    "--reps 3 --bogus=1",
                    &["reps"][..],
                    "unknown option --bogus",
                ),
                ("stray", &["reps"][..], "unexpected argument \"stray\""),
                ("64", &[][..], "unexpected argument \"64\""),
                ("--reps 3", &[][..], "takes no options"),
            ] {
                let s = stop(line, known);
                assert_eq!(s.code(), 2, "{line}");
                let Stop::Usage(text) = s else {
                    panic!("{line}: not a usage error")
                };
                assert!(text.starts_with("error: ") && text.contains(what), "{text}");
                assert!(text.ends_with("usage: demo [--reps N]"), "{text}");
            }
        }

        #[test]
        fn a_good_line_starts_the_run() {
            let a =
                Args::parse_with(["--reps".to_string(), "3".to_string()], &["reps"], "u").unwrap();
            assert_eq!(a.value("reps", 0u32).unwrap(), 3);
            assert!(Args::parse_with(Vec::<String>::new(), &[], "u").is_ok());
        }
    }
}

#[cfg(feature = "iceoryx2")]
pub mod iceoryx {
    //! What the benches' iceoryx2 contenders share (feature `iceoryx2`): a payload wrapper iceoryx2
    //! accepts, unique service names, and quieter logging.

    use iceoryx2::prelude::{LogLevel, ServiceName, ZeroCopySend, set_log_level};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A plain-old-data payload as iceoryx2 wants it: a `ZeroCopySend` type (iceoryx2 cannot be
    /// told that a foreign type such as `Embedding256` is one, so the benches send this wrapper;
    /// same size, alignment and bytes).
    #[derive(Clone, Copy)]
    #[repr(transparent)]
    pub struct Shared<P>(pub P);

    impl<P> std::fmt::Debug for Shared<P> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Shared<{}>", std::any::type_name::<P>())
        }
    }

    // SAFETY: `P: Pod` has no pointers, references or drop glue and is valid for any bytes, so a
    // copy of its bytes in another process's mapping of the same memory is the same value; the
    // wrapper is `repr(transparent)`, and its type name (iceoryx2's check that both ends of a
    // service agree on the type) is the same in every process running the same binary.
    unsafe impl<P: bytemuck::Pod> ZeroCopySend for Shared<P> {}

    /// A service name no other run or contender uses: `psyne-bench/PID/TAG/N`.
    pub fn unique_name(tag: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        format!(
            "psyne-bench/{}/{tag}/{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// `name` as an iceoryx2 service name.
    ///
    /// # Errors
    /// iceoryx2's, when it rejects the name (the form [`unique_name`] makes is accepted).
    pub fn service_name(
        name: &str,
    ) -> Result<ServiceName, iceoryx2::service::service_name::ServiceNameError> {
        ServiceName::new(name)
    }

    /// Lets only iceoryx2's errors through to stderr (its default also prints warnings, e.g.
    /// about configuration files it did not find).
    pub fn quiet() {
        set_log_level(LogLevel::Error);
    }
}
