//! Theme 9: MemStats consistency.
//!
//! Invariants (heap_inuse + heap_idle == heap_sys, heap_released <= heap_idle,
//! heap_objects == mallocs - frees, alloc == heap_alloc, sys >= heap_sys),
//! monotonic counters under concurrency, per-class counters, and memory going
//! back (heap_alloc, RSS) after freeing everything and release_memory().
//!
//! Tests in this binary take a global lock so they do not disturb each other's
//! measurements; the exact-equality invariants are checked on a quiescent
//! process (retried a few times, in case the test harness thread allocates
//! concurrently), so a consistently broken invariant always fails.

#[global_allocator]
static GLOBAL: gomalloc::GoMalloc = gomalloc::GoMalloc;

mod common;
use common::*;

use gomalloc::MemStats;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::alloc::GlobalAlloc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn invariant_violations(s: &MemStats) -> Vec<String> {
    let mut v = Vec::new();
    if s.heap_inuse + s.heap_idle != s.heap_sys {
        v.push(format!(
            "heap_inuse {} + heap_idle {} != heap_sys {}",
            s.heap_inuse, s.heap_idle, s.heap_sys
        ));
    }
    if s.heap_released > s.heap_idle {
        v.push(format!(
            "heap_released {} > heap_idle {}",
            s.heap_released, s.heap_idle
        ));
    }
    if s.mallocs < s.frees || s.heap_objects != s.mallocs - s.frees {
        v.push(format!(
            "heap_objects {} != mallocs {} - frees {}",
            s.heap_objects, s.mallocs, s.frees
        ));
    }
    if s.alloc != s.heap_alloc {
        v.push(format!("alloc {} != heap_alloc {}", s.alloc, s.heap_alloc));
    }
    if s.sys < s.heap_sys {
        v.push(format!("sys {} < heap_sys {}", s.sys, s.heap_sys));
    }
    if s.total_alloc < s.heap_alloc {
        v.push(format!(
            "total_alloc {} < heap_alloc {}",
            s.total_alloc, s.heap_alloc
        ));
    }
    for c in 1..NUM_CLASSES {
        let b = s.by_size[c];
        if b.size as usize != class_size(c) {
            v.push(format!(
                "by_size[{c}].size = {} != class_size({c}) = {}",
                b.size,
                class_size(c)
            ));
        }
        if b.frees > b.mallocs {
            v.push(format!(
                "by_size[{c}]: frees {} > mallocs {}",
                b.frees, b.mallocs
            ));
        }
    }
    let sum: u64 = (1..NUM_CLASSES).map(|c| s.by_size[c].mallocs).sum();
    if sum > s.mallocs {
        v.push(format!(
            "sum of by_size mallocs {sum} > mallocs {}",
            s.mallocs
        ));
    }
    v
}

/// Check the invariants on a quiescent process; a few retries tolerate a
/// harness thread allocating at the same moment.
fn assert_invariants(when: &str) -> MemStats {
    let mut last = Vec::new();
    for _ in 0..20 {
        let s = gomalloc::stats();
        last = invariant_violations(&s);
        if last.is_empty() {
            return s;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    panic!(
        "{when}: MemStats invariants violated: {last:#?}\n{}",
        gomalloc::stats()
    );
}

#[test]
fn invariants_hold_in_various_states() {
    let _g = global_lock();
    let seed = seed("invariants_hold_in_various_states");
    let mut rng = StdRng::seed_from_u64(seed);
    assert_invariants("start");
    let mut blocks: Vec<Blk> = Vec::new();
    for phase in 0..6 {
        for _ in 0..5000 {
            let size = match rng.gen_range(0..100) {
                0..=79 => rng.gen_range(1..=2048),
                80..=98 => rng.gen_range(2049..=200_000),
                _ => HUGE_THRESHOLD + rng.gen_range(0..MIB),
            };
            blocks.push(alloc_blk(size, 8, 0));
        }
        assert_invariants(&format!("phase {phase} after allocating"));
        let n = blocks.len() / 2;
        for _ in 0..n {
            let i = rng.gen_range(0..blocks.len());
            free_blk(blocks.swap_remove(i), "invariants");
        }
        assert_invariants(&format!("phase {phase} after freeing half"));
        if phase % 2 == 1 {
            gomalloc::flush_thread_cache();
            assert_invariants(&format!("phase {phase} after flush_thread_cache"));
            gomalloc::release_memory();
            assert_invariants(&format!("phase {phase} after release_memory"));
        }
    }
    for b in blocks {
        free_blk(b, "invariants end");
    }
    gomalloc::release_memory();
    let s = assert_invariants("end");
    let shown = format!("{s}");
    assert!(!shown.is_empty(), "Display for MemStats printed nothing");
}

/// With threads allocating, freeing and exiting concurrently, the cumulative
/// counters never go backwards and the invariants hold again once quiet.
#[test]
fn cumulative_counters_are_monotonic_under_concurrency() {
    let _g = global_lock();
    let seed = seed("cumulative_counters_are_monotonic_under_concurrency");
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for t in 0..3u64 {
        let stop = stop.clone();
        handles.push(std::thread::spawn(move || {
            let mut rng = StdRng::seed_from_u64(seed ^ mix(t));
            while !stop.load(Ordering::Relaxed) {
                // Short-lived inner threads: per-thread counters get merged at exit.
                let h = std::thread::spawn({
                    let s = rng.gen::<u64>();
                    move || {
                        let mut rng = StdRng::seed_from_u64(s);
                        let v: Vec<Blk> = (0..500)
                            .map(|_| alloc_blk(rng.gen_range(1..=5000), 8, 0))
                            .collect();
                        v
                    }
                });
                let v = h.join().unwrap();
                // Free on this (other) thread.
                for b in v {
                    free_blk(b, "monotonic");
                }
                if rng.gen_ratio(1, 20) {
                    gomalloc::flush_thread_cache();
                }
            }
        }));
    }
    let mut prev = gomalloc::stats();
    let samples = if RELEASE { 3000 } else { 300 };
    for i in 0..samples {
        let s = gomalloc::stats();
        assert!(
            s.mallocs >= prev.mallocs,
            "sample {i}: mallocs went backwards {} -> {}",
            prev.mallocs,
            s.mallocs
        );
        assert!(
            s.frees >= prev.frees,
            "sample {i}: frees went backwards {} -> {}",
            prev.frees,
            s.frees
        );
        assert!(
            s.total_alloc >= prev.total_alloc,
            "sample {i}: total_alloc went backwards {} -> {}",
            prev.total_alloc,
            s.total_alloc
        );
        for c in 1..NUM_CLASSES {
            assert!(
                s.by_size[c].mallocs >= prev.by_size[c].mallocs
                    && s.by_size[c].frees >= prev.by_size[c].frees,
                "sample {i}: by_size[{c}] counters went backwards"
            );
        }
        prev = s;
        if i % 100 == 0 {
            std::thread::yield_now();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().expect("worker panicked");
    }
    let end = assert_invariants("after concurrent churn");
    assert!(
        end.mallocs >= prev.mallocs,
        "mallocs went backwards after the threads stopped"
    );
}

/// N allocations of one size class raise mallocs and by_size[class].mallocs by
/// at least N (and N frees raise frees), for a set of classes; heap_objects and
/// heap_alloc track the live set.
#[test]
fn per_class_counters_track_allocations() {
    let _g = global_lock();
    const N: usize = 10_000;
    for c in [
        1usize,
        2,
        5,
        10,
        NUM_CLASSES / 2,
        NUM_CLASSES - 5,
        NUM_CLASSES - 1,
    ] {
        // The checking mode adds 16 bytes (canary and size word) to every request, which moves
        // a request of exactly a class's size to the next class.
        let size = if cfg!(feature = "checked") {
            class_size(c).saturating_sub(16)
        } else {
            class_size(c)
        };
        if size == 0 {
            continue;
        }
        let n = N.min((64 * MIB) / size).max(100);
        let before = gomalloc::stats();
        let blocks: Vec<*mut u8> = (0..n)
            .map(|_| {
                let p = unsafe { GoMalloc.alloc(layout(size, 8)) };
                assert!(!p.is_null());
                p
            })
            .collect();
        let mid = gomalloc::stats();
        let dm = mid.mallocs - before.mallocs;
        let dc = mid.by_size[c].mallocs - before.by_size[c].mallocs;
        assert!(
            dm >= n as u64,
            "class {c} (size {size}): mallocs grew by {dm} after {n} allocations"
        );
        assert!(
            dc >= n as u64,
            "class {c} (size {size}): by_size[{c}].mallocs grew by {dc} after {n} allocations"
        );
        assert!(
            mid.total_alloc - before.total_alloc >= (n * size) as u64,
            "class {c}: total_alloc grew by {} < {}",
            mid.total_alloc - before.total_alloc,
            n * size
        );
        let slack_objs = 1000u64;
        assert!(
            mid.heap_objects + slack_objs >= before.heap_objects + n as u64,
            "class {c}: heap_objects {} -> {} after {n} live allocations",
            before.heap_objects,
            mid.heap_objects
        );
        assert!(
            mid.heap_alloc + (MIB as u64) >= before.heap_alloc + (n * size) as u64,
            "class {c}: heap_alloc {} -> {} after {n} x {size} bytes live",
            before.heap_alloc,
            mid.heap_alloc
        );
        assert!(
            mid.heap_inuse >= mid.heap_alloc.min((n * size) as u64),
            "class {c}: heap_inuse {} smaller than the {} live bytes",
            mid.heap_inuse,
            n * size
        );
        for p in blocks {
            unsafe { GoMalloc.dealloc(p, layout(size, 8)) };
        }
        let after = gomalloc::stats();
        let df = after.frees - mid.frees;
        let dcf = after.by_size[c].frees - mid.by_size[c].frees;
        assert!(
            df >= n as u64,
            "class {c}: frees grew by {df} after {n} frees"
        );
        assert!(
            dcf >= n as u64,
            "class {c}: by_size[{c}].frees grew by {dcf} after {n} frees"
        );
        assert!(
            after.heap_objects <= before.heap_objects + slack_objs,
            "class {c}: heap_objects {} -> {} after freeing all {n}",
            before.heap_objects,
            after.heap_objects
        );
        assert_invariants(&format!("class {c}"));
    }
}

/// Large (page-heap) and huge (direct mmap) objects are counted as mallocs and
/// in total_alloc / heap_alloc too.
#[test]
fn large_and_huge_allocations_are_counted() {
    let _g = global_lock();
    for (size, n) in [
        (MAX_SMALL_SIZE + 1, 200usize),
        (300_000, 50),
        (HUGE_THRESHOLD + 1, 3),
    ] {
        let before = gomalloc::stats();
        let blocks: Vec<Blk> = (0..n).map(|_| alloc_blk(size, 8, 0)).collect();
        let mid = gomalloc::stats();
        assert!(
            mid.mallocs - before.mallocs >= n as u64,
            "size {size}: mallocs grew by {} after {n} allocations",
            mid.mallocs - before.mallocs
        );
        assert!(
            mid.total_alloc - before.total_alloc >= (n * size) as u64,
            "size {size}: total_alloc grew by {} after {n} x {size}",
            mid.total_alloc - before.total_alloc
        );
        assert!(
            mid.heap_alloc + (MIB as u64) >= before.heap_alloc + (n * size) as u64,
            "size {size}: heap_alloc {} -> {} with {n} x {size} live",
            before.heap_alloc,
            mid.heap_alloc
        );
        assert!(
            mid.sys >= before.sys,
            "size {size}: sys shrank while allocating"
        );
        assert_invariants(&format!("{n} x {size} live"));
        for b in blocks {
            free_blk(b, "large/huge");
        }
        let after = gomalloc::stats();
        assert!(
            after.frees - mid.frees >= n as u64,
            "size {size}: frees grew by {} after {n} frees",
            after.frees - mid.frees
        );
        assert!(
            after.heap_alloc <= before.heap_alloc + MIB as u64,
            "size {size}: heap_alloc {} -> {} after freeing all",
            before.heap_alloc,
            after.heap_alloc
        );
        assert_invariants(&format!("{n} x {size} freed"));
    }
}

/// Allocate ~256 MiB (small, large, huge; from several threads), touch it,
/// free it all, release_memory(): heap_alloc returns near the start, free pages
/// are reported released, and RSS falls back within a few MiB.
#[test]
fn release_memory_returns_heap_alloc_and_rss() {
    let _g = global_lock();
    let seed = seed("release_memory_returns_heap_alloc_and_rss");
    // Warm up (thread caches, metadata) so the baseline is stable.
    {
        let v: Vec<Blk> = (0..10_000).map(|i| alloc_blk(1 + i % 3000, 8, 0)).collect();
        for b in v {
            free_blk(b, "warmup");
        }
    }
    gomalloc::release_memory();
    let base = assert_invariants("baseline");
    let rss0 = rss_bytes();

    let mut all: Vec<Blk> = Vec::new();
    let handles: Vec<_> = (0..2u64)
        .map(|t| {
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed ^ mix(t));
                let mut v = Vec::new();
                let mut bytes = 0;
                while bytes < 64 * MIB {
                    let size = if rng.gen_ratio(1, 50) {
                        rng.gen_range(40_000..400_000)
                    } else {
                        rng.gen_range(1..=4096)
                    };
                    bytes += size;
                    v.push(alloc_blk(size, 8, 0));
                }
                v
            })
        })
        .collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut bytes = 0;
    while bytes < 96 * MIB {
        let size = match rng.gen_range(0..100) {
            0..=69 => rng.gen_range(1..=MAX_SMALL_SIZE),
            70..=98 => rng.gen_range(MAX_SMALL_SIZE + 1..=MIB),
            _ => HUGE_THRESHOLD + rng.gen_range(0..MIB),
        };
        bytes += size;
        all.push(alloc_blk(size, 8, 0));
    }
    for h in handles {
        all.extend(h.join().expect("allocating thread panicked"));
    }
    // Touch everything fully so RSS really grows.
    for b in &all {
        unsafe { std::ptr::write_bytes(b.ptr, 0x5A, b.size()) };
    }
    // Huge blocks are checked separately (large_and_huge_allocations_are_counted).
    let live: u64 = all
        .iter()
        .filter(|b| b.size() < HUGE_THRESHOLD)
        .map(|b| b.size() as u64)
        .sum();
    let peak = gomalloc::stats();
    let rss_peak = rss_bytes();
    assert!(
        peak.heap_alloc + MIB as u64 >= base.heap_alloc + live,
        "heap_alloc {} -> {} with {live} bytes live in non-huge blocks",
        base.heap_alloc,
        peak.heap_alloc
    );
    for b in all {
        unsafe { GoMalloc.dealloc(b.ptr, b.layout) };
    }
    gomalloc::flush_thread_cache();
    gomalloc::release_memory();
    let end = assert_invariants("after free + release_memory");
    let rss_end = rss_bytes();
    eprintln!(
        "heap_alloc: base {} KiB, peak {} KiB, end {} KiB; heap_idle {} KiB released {} KiB; RSS: base {} KiB, peak {} KiB, end {} KiB",
        base.heap_alloc / 1024,
        peak.heap_alloc / 1024,
        end.heap_alloc / 1024,
        end.heap_idle / 1024,
        end.heap_released / 1024,
        rss0 / 1024,
        rss_peak / 1024,
        rss_end / 1024
    );
    assert!(
        end.heap_alloc <= base.heap_alloc + 2 * MIB as u64,
        "heap_alloc did not come back: base {} end {} (live at peak {live})",
        base.heap_alloc,
        end.heap_alloc
    );
    assert!(
        end.heap_idle.saturating_sub(end.heap_released) <= 16 * MIB as u64,
        "release_memory left {} KiB idle but not released (idle {}, released {})",
        (end.heap_idle - end.heap_released) / 1024,
        end.heap_idle,
        end.heap_released
    );
    assert!(
        rss_peak > rss0 + 100 * MIB,
        "test did not grow RSS (peak {rss_peak}, base {rss0})"
    );
    assert!(
        rss_end <= rss0 + 8 * MIB,
        "RSS did not fall back after release_memory: base {} KiB, peak {} KiB, end {} KiB",
        rss0 / 1024,
        rss_peak / 1024,
        rss_end / 1024
    );
}
