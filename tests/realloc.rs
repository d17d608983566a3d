//! Theme 4: realloc keeps contents across class changes, the small->large
//! boundary (MAX_SMALL_SIZE = 32 KiB), the large->huge boundary
//! (HUGE_THRESHOLD), and back down, growing and shrinking, for several
//! alignments. The pattern is keyed per chain (not per address), so a moved
//! block must carry the exact bytes to the same offsets.

#[global_allocator]
static GLOBAL: gomalloc::GoMalloc = gomalloc::GoMalloc;

mod common;
use common::*;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::alloc::GlobalAlloc;

const ALIGNS: [usize; 8] = [1, 8, 16, 64, 256, 4096, 8192, 65536];

/// A chain of reallocs of one block; `len` bytes carry the pattern `key`.
struct Chain {
    ptr: *mut u8,
    size: usize,
    align: usize,
    key: u64,
    steps: usize,
}
unsafe impl Send for Chain {}

impl Chain {
    fn new(size: usize, align: usize, key: u64) -> Chain {
        let l = layout(size, align);
        let ptr = unsafe { GoMalloc.alloc(l) };
        assert!(!ptr.is_null(), "alloc({size}, {align}) returned null");
        assert_eq!(ptr as usize % align, 0);
        unsafe { fill(ptr, size, key) };
        Chain {
            ptr,
            size,
            align,
            key,
            steps: 0,
        }
    }

    fn resize(&mut self, new_size: usize, ctx: &str) {
        let old = self.size;
        if let Some(off) = unsafe { check(self.ptr, old, self.key) } {
            panic!(
                "{ctx}: block corrupted before realloc {old}->{new_size}: {}",
                unsafe { describe_corruption(self.ptr, off, self.key, old) }
            );
        }
        let p = unsafe { GoMalloc.realloc(self.ptr, layout(old, self.align), new_size) };
        assert!(
            !p.is_null(),
            "{ctx}: realloc {old}->{new_size} (align {}) returned null",
            self.align
        );
        assert_eq!(
            p as usize % self.align,
            0,
            "{ctx}: realloc {old}->{new_size} returned {p:p}, misaligned for align {}",
            self.align
        );
        let us = unsafe { gomalloc::usable_size(p) };
        assert!(
            us >= new_size,
            "{ctx}: usable_size {us} < new size {new_size} after realloc"
        );
        let keep = old.min(new_size);
        if let Some(off) = unsafe { check_prefix(p, old, keep, self.key) } {
            panic!(
                "{ctx}: realloc {old}->{new_size} (align {}, {:p} -> {p:p}) did not preserve the first {keep} bytes: {}",
                self.align,
                self.ptr,
                unsafe { describe_corruption(p, off, self.key, keep) }
            );
        }
        self.ptr = p;
        self.size = new_size;
        self.steps += 1;
        // Pattern the whole new block (the prefix is rewritten with identical bytes;
        // for sparse huge blocks this also covers the new tail window).
        unsafe { fill(p, new_size, self.key) };
    }

    fn free(self, ctx: &str) {
        if let Some(off) = unsafe { check(self.ptr, self.size, self.key) } {
            panic!("{ctx}: block corrupted before free: {}", unsafe {
                describe_corruption(self.ptr, off, self.key, self.size)
            });
        }
        unsafe { GoMalloc.dealloc(self.ptr, layout(self.size, self.align)) };
    }
}

/// Sizes ascending through every class boundary, the 32 KiB boundary, large
/// page counts and the huge threshold.
fn ladder() -> Vec<usize> {
    let mut v = vec![1, 2, 3, 7, 8, 9];
    for c in 1..NUM_CLASSES {
        let s = class_size(c);
        v.extend([s - 1, s, s + 1]);
    }
    v.extend([
        MAX_SMALL_SIZE - 1,
        MAX_SMALL_SIZE,
        MAX_SMALL_SIZE + 1,
        40_000,
        5 * PAGE_SIZE,
        5 * PAGE_SIZE + 1,
        65_536,
        100_000,
        256 * KIB + 3,
        MIB,
        HUGE_THRESHOLD / 2,
        HUGE_THRESHOLD - PAGE_SIZE,
        HUGE_THRESHOLD - 1,
        HUGE_THRESHOLD,
        HUGE_THRESHOLD + 1,
        HUGE_THRESHOLD + 4096,
        2 * HUGE_THRESHOLD + 12_345,
        3 * HUGE_THRESHOLD,
    ]);
    v.sort_unstable();
    v.dedup();
    v
}

#[test]
fn grow_then_shrink_through_every_boundary() {
    let lad = ladder();
    for &align in &ALIGNS {
        let mut ch = Chain::new(1, align, mix(align as u64));
        for &s in &lad {
            ch.resize(s, &format!("grow align {align}"));
        }
        for &s in lad.iter().rev() {
            ch.resize(s, &format!("shrink align {align}"));
        }
        ch.free(&format!("ladder align {align}"));
    }
}

/// Direct jumps across two boundaries at once (small <-> huge, small <-> large,
/// large <-> huge), in both directions.
#[test]
fn jumps_across_boundaries() {
    let small = [1usize, 24, 500, 4096, MAX_SMALL_SIZE];
    let large = [
        MAX_SMALL_SIZE + 1,
        3 * PAGE_SIZE + 17,
        200_000,
        HUGE_THRESHOLD - 1,
    ];
    let huge = [HUGE_THRESHOLD, HUGE_THRESHOLD + 1, 2 * HUGE_THRESHOLD + 7];
    for &align in &ALIGNS {
        for (i, &a) in small.iter().chain(&large).chain(&huge).enumerate() {
            for (j, &b) in small.iter().chain(&large).chain(&huge).enumerate() {
                if i == j {
                    continue;
                }
                let mut ch = Chain::new(a, align, mix((i * 100 + j) as u64 ^ align as u64));
                let ctx = format!("jump {a}->{b}->{a} align {align}");
                ch.resize(b, &ctx);
                ch.resize(a, &ctx);
                ch.free(&ctx);
            }
        }
    }
}

/// Huge blocks grown and shrunk repeatedly (the mremap path).
#[test]
fn huge_grow_and_shrink_repeatedly() {
    for &align in &[8usize, 4096, 65536] {
        let mut ch = Chain::new(HUGE_THRESHOLD, align, 0xABCD ^ align as u64);
        let ctx = format!("huge align {align}");
        for k in 1..=6 {
            ch.resize(HUGE_THRESHOLD * k + 4096 * k + 1, &ctx);
        }
        for k in (1..=5).rev() {
            ch.resize(HUGE_THRESHOLD * k + 3, &ctx);
        }
        ch.resize(MAX_SMALL_SIZE + 1, &ctx);
        ch.resize(HUGE_THRESHOLD * 2, &ctx);
        ch.resize(100, &ctx);
        ch.free(&ctx);
    }
}

/// Growing/shrinking within the usable size (likely in place) keeps contents.
#[test]
fn resize_within_usable_size() {
    for size in
        (1..=MAX_SMALL_SIZE)
            .step_by(97)
            .chain([MAX_SMALL_SIZE + 1, 100_000, HUGE_THRESHOLD + 1])
    {
        let mut ch = Chain::new(size, 8, size as u64);
        let us = unsafe { gomalloc::usable_size(ch.ptr) };
        let ctx = format!("within usable size={size} usable={us}");
        ch.resize(us, &ctx);
        ch.resize(size.div_ceil(2).max(1), &ctx);
        ch.resize(us, &ctx);
        ch.free(&ctx);
    }
}

/// Many chains alive at once doing a random walk over sizes (mostly small and
/// large, sometimes huge), random alignment per chain.
#[test]
fn random_walk_many_chains() {
    let seed = seed("random_walk_many_chains");
    let mut rng = StdRng::seed_from_u64(seed);
    let steps = if RELEASE { 40_000 } else { 4_000 };
    let mut chains: Vec<Chain> = (0..64)
        .map(|i| {
            Chain::new(
                rng.gen_range(1..=1000),
                ALIGNS[rng.gen_range(0..ALIGNS.len())],
                mix(seed ^ i),
            )
        })
        .collect();
    for step in 0..steps {
        let i = rng.gen_range(0..chains.len());
        let cur = chains[i].size;
        let new = match rng.gen_range(0..100) {
            0..=39 => (cur as f64 * rng.gen_range(0.5..2.0)) as usize,
            40..=69 => rng.gen_range(1..=MAX_SMALL_SIZE),
            70..=97 => rng.gen_range(MAX_SMALL_SIZE - 100..=300_000),
            _ => HUGE_THRESHOLD + rng.gen_range(0..HUGE_THRESHOLD),
        }
        .clamp(1, 3 * HUGE_THRESHOLD);
        chains[i].resize(new, &format!("seed {seed} step {step} chain {i}"));
        if rng.gen_ratio(1, 50) {
            // Replace a chain so frees interleave with reallocs.
            let nc = Chain::new(
                rng.gen_range(1..=5000),
                ALIGNS[rng.gen_range(0..ALIGNS.len())],
                mix(seed ^ step as u64),
            );
            std::mem::replace(&mut chains[i], nc).free(&format!("seed {seed} step {step}"));
        }
    }
    let total_steps: usize = chains.iter().map(|c| c.steps).sum();
    assert!(total_steps > 0);
    for c in chains {
        c.free(&format!("seed {seed} final"));
    }
}

/// A block allocated on one thread is realloc'ed on another and freed on a third.
#[test]
fn realloc_on_foreign_thread() {
    let seed = seed("realloc_on_foreign_thread");
    let chains: Vec<Chain> = std::thread::spawn(move || {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..200)
            .map(|i| {
                Chain::new(
                    rng.gen_range(1..=70_000),
                    ALIGNS[i % ALIGNS.len()],
                    mix(seed ^ i as u64),
                )
            })
            .collect()
    })
    .join()
    .unwrap();
    let chains: Vec<Chain> = std::thread::spawn(move || {
        let mut rng = StdRng::seed_from_u64(seed ^ 1);
        chains
            .into_iter()
            .map(|mut c| {
                let s = rng.gen_range(1..=70_000);
                c.resize(s, &format!("seed {seed} foreign realloc"));
                c
            })
            .collect()
    })
    .join()
    .unwrap();
    std::thread::spawn(move || {
        for c in chains {
            c.free(&format!("seed {seed} third thread"));
        }
    })
    .join()
    .unwrap();
}
