//! Theme 5: alloc_zeroed returns zeroed memory, including when the memory is
//! reused after having been dirtied and freed, for small, large and huge sizes,
//! across release_memory() (madvise) and across threads.

#[global_allocator]
static GLOBAL: gomalloc::GoMalloc = gomalloc::GoMalloc;

mod common;
use common::*;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::alloc::GlobalAlloc;

const DIRT: u8 = 0xA5;

/// Offset of the first non-zero byte among the first `size` bytes.
fn first_nonzero(p: *const u8, size: usize) -> Option<usize> {
    let s = unsafe { std::slice::from_raw_parts(p, size) };
    // Fast path over 4 KiB chunks, locate only on failure.
    for (ci, chunk) in s.chunks(4096).enumerate() {
        if chunk.iter().fold(0u8, |a, &b| a | b) != 0 {
            return Some(ci * 4096 + chunk.iter().position(|&b| b != 0).unwrap());
        }
    }
    None
}

/// Dirty `count` blocks of (size, align) over their whole usable size, free
/// them (reverse order so LIFO caches hand them back first), then
/// alloc_zeroed `count` blocks of the same layout and check every byte.
fn dirty_free_then_zeroed(
    size: usize,
    align: usize,
    count: usize,
    release_between: bool,
    ctx: &str,
) {
    let l = layout(size, align);
    let mut dirty_addrs = Vec::with_capacity(count);
    let mut ps = Vec::with_capacity(count);
    for _ in 0..count {
        let p = unsafe { GoMalloc.alloc(l) };
        assert!(!p.is_null(), "{ctx}: alloc({size}, {align}) returned null");
        let us = unsafe { gomalloc::usable_size(p) };
        unsafe { std::ptr::write_bytes(p, DIRT, us) };
        dirty_addrs.push(p as usize);
        ps.push(p);
    }
    for p in ps.into_iter().rev() {
        unsafe { GoMalloc.dealloc(p, l) };
    }
    if release_between {
        gomalloc::release_memory();
    }
    dirty_addrs.sort_unstable();
    let mut reused = 0;
    let mut zs = Vec::with_capacity(count);
    for i in 0..count {
        let p = unsafe { GoMalloc.alloc_zeroed(l) };
        assert!(
            !p.is_null(),
            "{ctx}: alloc_zeroed({size}, {align}) returned null"
        );
        assert_eq!(p as usize % align, 0, "{ctx}: alloc_zeroed misaligned");
        if dirty_addrs.binary_search(&(p as usize)).is_ok() {
            reused += 1;
        }
        if let Some(off) = first_nonzero(p, size) {
            panic!(
                "{ctx}: alloc_zeroed(size {size}, align {align}) #{i} at {p:p} has byte {:#04x} at offset {off} \
                 (memory {} a just-freed dirty block)",
                unsafe { *p.add(off) },
                if dirty_addrs.binary_search(&(p as usize)).is_ok() {
                    "reuses"
                } else {
                    "is not"
                }
            );
        }
        // Dirty it again so the next round reuses dirty memory once more.
        unsafe { std::ptr::write_bytes(p, DIRT, size) };
        zs.push(p);
    }
    for p in zs {
        unsafe { GoMalloc.dealloc(p, l) };
    }
    let _ = reused;
}

#[test]
fn small_classes_zeroed_after_reuse() {
    for c in 1..NUM_CLASSES {
        let s = class_size(c);
        let count = (64 * KIB / s).clamp(4, 256);
        for size in [s, s - 1, (s / 2).max(1)] {
            dirty_free_then_zeroed(size, 8, count, false, &format!("class {c}"));
        }
    }
    for size in [1usize, 2, 3, 5, 8, 15, 16, 17, 33] {
        dirty_free_then_zeroed(size, 1, 512, false, "tiny");
    }
}

#[test]
fn large_zeroed_after_reuse() {
    for size in [
        MAX_SMALL_SIZE + 1,
        40_000,
        5 * PAGE_SIZE,
        65_536 + 1,
        100_000,
        256 * KIB,
        MIB + 17,
        HUGE_THRESHOLD - 1,
    ] {
        let count = (8 * MIB / size).clamp(2, 64);
        dirty_free_then_zeroed(size, 8, count, false, "large");
        // After release_memory() the freed pages may be MADV_FREE'd/DONTNEED'd;
        // whatever the allocator assumes about them, alloc_zeroed must be zero.
        dirty_free_then_zeroed(size, 8, count, true, "large after release_memory");
    }
}

#[test]
fn huge_zeroed_after_reuse() {
    for size in [
        HUGE_THRESHOLD,
        HUGE_THRESHOLD + 1,
        2 * HUGE_THRESHOLD + 4095,
    ] {
        dirty_free_then_zeroed(size, 8, 3, false, "huge");
        dirty_free_then_zeroed(size, 4096, 2, true, "huge after release_memory");
    }
}

#[test]
fn aligned_zeroed_after_reuse() {
    for shift in 0..=16u32 {
        let align = 1usize << shift;
        for size in [1, align, align + 1, 3 * align, MAX_SMALL_SIZE + 3, 200_000] {
            dirty_free_then_zeroed(size, align, 8, false, &format!("align {align}"));
        }
    }
}

/// Dirty blocks are freed on some threads while other threads alloc_zeroed the
/// same classes (memory flows back through the central lists).
#[test]
fn zeroed_across_threads() {
    let seed = seed("zeroed_across_threads");
    let iters = if RELEASE { 20_000 } else { 2_000 };
    let handles: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed ^ mix(t));
                let mut held: Vec<(*mut u8, std::alloc::Layout)> = Vec::new();
                for i in 0..iters {
                    let size = if rng.gen_ratio(1, 100) {
                        rng.gen_range(MAX_SMALL_SIZE + 1..=200_000)
                    } else {
                        rng.gen_range(1..=2048)
                    };
                    let l = layout(size, 8);
                    if t % 2 == 0 {
                        // dirtier
                        let p = unsafe { GoMalloc.alloc(l) };
                        assert!(!p.is_null());
                        unsafe { std::ptr::write_bytes(p, DIRT, gomalloc::usable_size(p)) };
                        held.push((p, l));
                    } else {
                        let p = unsafe { GoMalloc.alloc_zeroed(l) };
                        assert!(!p.is_null());
                        if let Some(off) = first_nonzero(p, size) {
                            panic!("seed {seed} thread {t} iter {i}: alloc_zeroed({size}) has non-zero byte at {off}");
                        }
                        unsafe { std::ptr::write_bytes(p, DIRT, size) };
                        held.push((p, l));
                    }
                    if held.len() > 512 || rng.gen_ratio(1, 4) {
                        let k = rng.gen_range(0..held.len());
                        let (p, l) = held.swap_remove(k);
                        unsafe { GoMalloc.dealloc(p, l) };
                    }
                    if i % 5000 == 4999 {
                        gomalloc::flush_thread_cache();
                    }
                }
                for (p, l) in held {
                    unsafe { GoMalloc.dealloc(p, l) };
                }
            })
        })
        .collect();
    for h in handles {
        h.join()
            .unwrap_or_else(|_| panic!("seed {seed}: a thread panicked"));
    }
}

/// std's zeroed allocations (vec![0; n]) use alloc_zeroed through the global allocator.
#[test]
fn std_zeroed_vecs_after_dirty_reuse() {
    for round in 0..20 {
        for n in [1usize, 100, 4096, 40_000, 1 << 20] {
            let mut v = vec![0xFFu8; n];
            v[n / 2] = 1;
            drop(v);
            let z = vec![0u8; n];
            assert!(
                z.iter().all(|&b| b == 0),
                "round {round}: vec![0u8; {n}] not zeroed"
            );
            let z64 = vec![0u64; n / 8 + 1];
            assert!(
                z64.iter().all(|&b| b == 0),
                "round {round}: vec![0u64; {}] not zeroed",
                n / 8 + 1
            );
        }
    }
}
