//! The shared side of the garbage-collector benchmarks (`gc-binarytrees`, `gc-gcbench`, feature
//! `gc` of this crate): options, peak RSS, pause percentiles and the one `RESULT` line that the
//! C (Boehm GC) and Go versions under `bench/gc/` print in the same form, so that
//! `ci/gc-compare.sh` can put the three side by side.
//!
//! Output contract (all three implementations): the program's check lines on stdout, identical
//! for the same options whatever the collector, then one line
//! `RESULT impl=.. prog=.. depth=.. threads=.. live_mib=.. scan_malloc=.. wall_ms=.. num_gc=..
//! pause_max_us=.. pause_median_us=.. pause_p99_us=.. pause_total_ms=.. peak_rss_kib=..`
//! (gomalloc adds `gc_cpu_pct=..`, `GcStats::gc_cpu_fraction` in %, and `threaded_gc=..`, the
//! cycles that completed while `--threads` workers ran). Pause percentiles are nearest-rank
//! over the most recent (at most 256) cycles' pauses.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Command-line options shared by both programs.
#[derive(Clone, Copy, Debug)]
pub struct GcOpts {
    /// Tree depth (binary-trees' N; GCBench's long-lived and maximum tree depth).
    pub depth: u32,
    /// Threads that build the short-lived trees.
    pub threads: usize,
    /// Whether cycles scan malloc'd memory (`--no-scan-malloc` turns it off).
    pub scan_malloc: bool,
    /// Extra MiB kept live (as trees) for the whole run.
    pub live_mib: usize,
    /// Whether cycles mark concurrently (`--concurrent`).
    pub concurrent: bool,
}

/// Parses `--depth N --threads N --no-scan-malloc --live-mib L --concurrent`; exits with a
/// usage line on anything else. Applies `--no-scan-malloc` and `--concurrent`.
pub fn parse(prog: &str, default_depth: u32) -> GcOpts {
    let usage = || -> ! {
        eprintln!(
            "usage: {prog} [--depth N] [--threads N] [--live-mib L] [--no-scan-malloc] \
             [--concurrent]"
        );
        std::process::exit(2)
    };
    let mut o = GcOpts {
        depth: default_depth,
        threads: 1,
        scan_malloc: true,
        live_mib: 0,
        concurrent: false,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let val = |i: usize| args.get(i + 1).and_then(|v| v.parse::<usize>().ok());
        match args[i].as_str() {
            "--depth" => o.depth = val(i).unwrap_or_else(|| usage()) as u32,
            "--threads" => o.threads = val(i).unwrap_or_else(|| usage()).max(1),
            "--live-mib" => o.live_mib = val(i).unwrap_or_else(|| usage()),
            "--no-scan-malloc" => {
                o.scan_malloc = false;
                i += 1;
                continue;
            }
            "--concurrent" => {
                o.concurrent = true;
                i += 1;
                continue;
            }
            _ => usage(),
        }
        i += 2;
    }
    if !o.scan_malloc {
        // SAFETY: both programs keep every `Gc` on the stack, in registers or in GC objects,
        // never in memory from the global allocator (the `Vec`s they use hold plain numbers).
        unsafe { gomalloc::gc::set_scan_malloc(false) };
    }
    if o.concurrent {
        // SAFETY: binary-trees never stores into a GC object after creating it, and GCBench
        // stores its pointers through `GcCell::set` (the write barrier).
        unsafe { gomalloc::gc::set_concurrent(true) };
    }
    o
}

/// Peak resident set size of this process in KiB (`getrusage`'s `ru_maxrss`).
pub fn peak_rss_kib() -> u64 {
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0;
    }
    ru.ru_maxrss as u64
}

/// The nearest-rank `p`-th percentile (0 < p <= 100) of sorted `v`; 0 when empty. Written the
/// same way in the C and Go versions.
pub fn percentile(sorted: &[u64], p: u64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let n = sorted.len() as u64;
    let rank = (p * n).div_ceil(100).max(1);
    sorted[(rank - 1) as usize]
}

/// The pauses of the most recent (at most 256) cycles, from `GcStats::pause_ns`, Go's circular
/// buffer (cycle k's pause at `(k - 1) % 256`, the latest at `(num_gc + 255) % 256`).
fn recent_pauses(s: &gomalloc::gc::GcStats) -> Vec<u64> {
    let len = s.pause_ns.len();
    let n = s.num_gc.min(len as u64) as usize;
    let newest = (s.num_gc as usize + len - 1) % len;
    (0..n)
        .map(|k| s.pause_ns[(newest + len - k) % len])
        .collect()
}

/// Cycles that completed inside [`threaded`].
static THREADED_GC: AtomicU64 = AtomicU64::new(0);

/// Runs `f` (which starts the worker threads and joins them) and counts the cycles that
/// completed meanwhile, for the `RESULT` line's `threaded_gc`: evidence that the collector
/// runs, stopping every thread, while several threads allocate.
pub fn threaded<R>(f: impl FnOnce() -> R) -> R {
    let before = gomalloc::gc::stats().num_gc;
    let r = f();
    let n = gomalloc::gc::stats().num_gc - before;
    THREADED_GC.fetch_add(n, Ordering::Relaxed);
    r
}

/// Prints the `RESULT` line for a run that started at `t0`.
pub fn report(prog: &str, o: &GcOpts, t0: Instant) {
    let wall = t0.elapsed();
    let s = gomalloc::gc::stats();
    let mut p = recent_pauses(&s);
    p.sort_unstable();
    let us = |ns: u64| ns as f64 / 1000.0;
    println!(
        "RESULT impl=gomalloc prog={prog} depth={} threads={} live_mib={} scan_malloc={} \
         wall_ms={:.1} num_gc={} pause_max_us={:.1} pause_median_us={:.1} pause_p99_us={:.1} \
         pause_total_ms={:.1} peak_rss_kib={} gc_cpu_pct={:.1} threaded_gc={}",
        o.depth,
        o.threads,
        o.live_mib,
        o.scan_malloc as u8,
        wall.as_secs_f64() * 1000.0,
        s.num_gc,
        us(p.last().copied().unwrap_or(0)),
        us(percentile(&p, 50)),
        us(percentile(&p, 99)),
        s.pause_total_ns as f64 / 1e6,
        peak_rss_kib(),
        s.gc_cpu_fraction * 100.0,
        THREADED_GC.load(Ordering::Relaxed),
    );
}

/// Splits `n` iterations over `threads` workers: worker `t` does `share(n, threads, t)`.
pub fn share(n: usize, threads: usize, t: usize) -> usize {
    n / threads + usize::from(t < n % threads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        assert_eq!(percentile(&[], 50), 0);
        assert_eq!(percentile(&[7], 99), 7);
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), 50);
        assert_eq!(percentile(&v, 99), 99);
        assert_eq!(percentile(&v, 100), 100);
        assert_eq!(percentile(&[1, 2, 3, 4], 50), 2);
    }

    #[test]
    fn pause_ring_newest_first() {
        let mut s = gomalloc::gc::GcStats::default();
        assert!(recent_pauses(&s).is_empty());
        s.num_gc = 3;
        s.pause_ns[..3].copy_from_slice(&[10, 20, 30]);
        assert_eq!(recent_pauses(&s), [30, 20, 10]);
        // 300 cycles: cycle k's pause (k) at (k - 1) % 256; the last 256 are cycles 45..=300.
        s.num_gc = 300;
        for k in 1..=300u64 {
            s.pause_ns[((k - 1) % 256) as usize] = k;
        }
        let p = recent_pauses(&s);
        assert_eq!(p.len(), 256);
        assert_eq!((p[0], p[255]), (300, 45));
    }

    #[test]
    fn shares_add_up() {
        for n in [0, 1, 5, 64] {
            for t in 1..5 {
                assert_eq!((0..t).map(|i| share(n, t, i)).sum::<usize>(), n);
            }
        }
    }
}
