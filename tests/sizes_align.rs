//! Theme 1: every size and every power-of-two alignment, through the
//! `GlobalAlloc` methods of `gomalloc::GoMalloc` directly.
//!
//! For each block: non-null, aligned, `usable_size >= size`, the `size` bytes
//! get a pattern derived from (address, size) and the slack `[size, usable)`
//! gets a second pattern (so an over-reporting `usable_size` or overlapping
//! blocks are caught). Many blocks are alive at once and all are verified
//! before being freed in a shuffled order.

#[global_allocator]
static GLOBAL: gomalloc::GoMalloc = gomalloc::GoMalloc;

mod common;
use common::*;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::alloc::GlobalAlloc;

const SLACK_SALT: u64 = 0x5EED_51AC;

/// A block whose payload AND slack (up to usable_size) are patterned.
struct Full {
    b: Blk,
    usable: usize,
    slack_key: u64,
}

fn alloc_full(size: usize, align: usize) -> Full {
    let b = alloc_blk(size, align, 0);
    let usable = unsafe { gomalloc::usable_size(b.ptr) };
    // Upper sanity bound: usable_size must not be a garbage value.
    let bound = size.max(align) * 4 + 4 * PAGE_SIZE;
    assert!(
        usable <= bound,
        "usable_size({:p}) = {usable} is absurd for size={size} align={align}",
        b.ptr
    );
    let slack_key = key_for(b.ptr as usize, size, SLACK_SALT);
    // The slack is patterned sparsely when large; use an offset-based view.
    let slack_len = usable - size;
    unsafe { fill(b.ptr.add(size), slack_len, slack_key) };
    Full {
        b,
        usable,
        slack_key,
    }
}

fn free_full(f: Full, ctx: &str) {
    let slack_len = f.usable - f.b.size();
    unsafe {
        if let Some(off) = check(f.b.ptr.add(f.b.size()), slack_len, f.slack_key) {
            panic!(
                "{ctx}: slack bytes [size..usable_size) of block {:p} (size {}, align {}, usable {}) \
                 were overwritten (by another block?): {}",
                f.b.ptr,
                f.b.size(),
                f.b.layout.align(),
                f.usable,
                describe_corruption(f.b.ptr.add(f.b.size()), off, f.slack_key, slack_len)
            );
        }
    }
    let now = unsafe { gomalloc::usable_size(f.b.ptr) };
    assert_eq!(now, f.usable, "{ctx}: usable_size of a live block changed");
    free_blk(f.b, ctx);
}

/// Small sizes with natural (<= 8) alignment must report exactly their class size.
fn check_small_usable(size: usize, align: usize, usable: usize) {
    // The checking mode reports exactly the asked size.
    if cfg!(feature = "checked") {
        assert_eq!(usable, size, "checked mode: usable_size is the asked size");
        return;
    }
    if (16..=MAX_SMALL_SIZE).contains(&size) && align <= 8 {
        let c = size_to_class(size);
        assert_eq!(
            usable,
            class_size(c),
            "usable_size for size {size} (align {align}) should be class_size({c}) = {}",
            class_size(c)
        );
    }
}

#[test]
#[allow(clippy::assertions_on_constants)]
fn size_class_table_is_consistent() {
    assert!(
        (2..=256).contains(&NUM_CLASSES),
        "NUM_CLASSES = {NUM_CLASSES}"
    );
    assert_eq!(PAGE_SIZE, 8192);
    assert_eq!(MAX_SMALL_SIZE, 32768);
    assert!(
        HUGE_THRESHOLD > MAX_SMALL_SIZE,
        "HUGE_THRESHOLD {HUGE_THRESHOLD} <= MAX_SMALL_SIZE"
    );
    let mut prev = 0;
    for c in 1..NUM_CLASSES {
        let s = class_size(c);
        assert!(
            s > prev,
            "class sizes not increasing at class {c}: {prev} then {s}"
        );
        assert_eq!(s % 8, 0, "class {c} size {s} is not a multiple of 8");
        let pages = class_pages(c);
        assert!(
            pages >= 1 && pages * PAGE_SIZE >= s,
            "class {c}: {pages} pages cannot hold {s} bytes"
        );
        prev = s;
    }
    assert_eq!(
        class_size(NUM_CLASSES - 1),
        MAX_SMALL_SIZE,
        "largest class must be MAX_SMALL_SIZE"
    );
    for s in 1..=MAX_SMALL_SIZE {
        let c = size_to_class(s);
        assert!(
            (1..NUM_CLASSES).contains(&c),
            "size_to_class({s}) = {c} out of range"
        );
        assert!(
            class_size(c) >= s,
            "size_to_class({s}) = {c} whose size {} is too small",
            class_size(c)
        );
        assert!(
            c == 1 || class_size(c - 1) < s,
            "size_to_class({s}) = {c} is not the smallest fitting class"
        );
    }
}

/// Sizes 0..=4096 one by one, all 4097 blocks alive at once; align 1 and the
/// size's natural alignment; three rounds so freed memory gets reused.
#[test]
fn every_size_0_to_4096_all_live_at_once() {
    let seed = seed("every_size_0_to_4096_all_live_at_once");
    let mut rng = StdRng::seed_from_u64(seed);
    for round in 0..3 {
        for natural in [false, true] {
            let mut blocks = Vec::with_capacity(4097);
            for size in 0..=4096usize {
                let align = if natural && size > 0 {
                    (1usize << size.trailing_zeros()).min(4096)
                } else {
                    1
                };
                let f = alloc_full(size, align);
                check_small_usable(size, align, f.usable);
                blocks.push(f);
            }
            // Zero-size requests are served by a real class: distinct live pointers.
            let mut addrs: Vec<usize> = blocks.iter().map(|f| f.b.ptr as usize).collect();
            addrs.sort_unstable();
            let n = addrs.len();
            addrs.dedup();
            assert_eq!(
                addrs.len(),
                n,
                "two live blocks share an address (round {round})"
            );
            blocks.shuffle(&mut rng);
            for f in blocks {
                free_full(f, &format!("seed {seed} round {round} natural {natural}"));
            }
        }
    }
}

/// Every size 4097..=70_000 in release builds (a dense sweep plus every class
/// and page boundary +-1 in debug builds), in batches of live blocks.
#[test]
fn sizes_4097_to_70000() {
    let seed = seed("sizes_4097_to_70000");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sizes: Vec<usize> = if RELEASE {
        (4097..=70_000).collect()
    } else {
        let mut v: Vec<usize> = (4097..=70_000).step_by(61).collect();
        v.extend(boundary_sizes(70_000).into_iter().filter(|&s| s >= 4097));
        v.sort_unstable();
        v.dedup();
        v
    };
    // Interleave ascending order with a shuffled copy of the same sizes.
    let asc = sizes.clone();
    sizes.shuffle(&mut rng);
    for (pass, order) in [asc, sizes].into_iter().enumerate() {
        let mut live: Vec<Full> = Vec::with_capacity(600);
        for size in order {
            let f = alloc_full(size, 8);
            check_small_usable(size, 8, f.usable);
            live.push(f);
            if live.len() >= 512 {
                // Free a random half, keep the others coexisting with the next batch.
                live.shuffle(&mut rng);
                for f in live.drain(..256) {
                    free_full(f, &format!("seed {seed} pass {pass}"));
                }
            }
        }
        for f in live {
            free_full(f, &format!("seed {seed} pass {pass} (final)"));
        }
    }
}

/// All class boundaries +-1, page multiples +-1, MAX_SMALL_SIZE and
/// HUGE_THRESHOLD +-1 (and +- an OS page), several copies of each alive at once.
#[test]
fn class_small_large_huge_boundaries() {
    let seed = seed("class_small_large_huge_boundaries");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sizes = boundary_sizes(4 * MAX_SMALL_SIZE);
    for d in [0usize, 1, 8, 4095, 4096, 4097, PAGE_SIZE] {
        sizes.push(HUGE_THRESHOLD - d);
        sizes.push(HUGE_THRESHOLD + d);
    }
    sizes.push(2 * HUGE_THRESHOLD + 12345);
    let mut live = Vec::new();
    for &size in &sizes {
        let copies = if size >= HUGE_THRESHOLD / 2 { 2 } else { 6 };
        for _ in 0..copies {
            let f = alloc_full(size, 8);
            check_small_usable(size, 8, f.usable);
            live.push(f);
        }
    }
    live.shuffle(&mut rng);
    for f in live {
        free_full(f, &format!("seed {seed}"));
    }
}

/// Every power-of-two alignment 1..=64 KiB with a set of sizes per alignment
/// (smaller, equal and larger than the alignment, small/large/huge), all blocks
/// of two consecutive alignments alive at once.
#[test]
fn every_alignment_up_to_64k() {
    let seed = seed("every_alignment_up_to_64k");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut prev: Vec<Full> = Vec::new();
    for shift in 0..=16u32 {
        let align = 1usize << shift;
        let mut sizes = vec![
            1,
            7,
            8,
            24,
            100,
            align.saturating_sub(1).max(1),
            align,
            align + 1,
            2 * align,
            3 * align + 5,
            4096,
            4097,
            PAGE_SIZE + 1,
            MAX_SMALL_SIZE - 1,
            MAX_SMALL_SIZE,
            MAX_SMALL_SIZE + 1,
            65536,
            100_000,
            HUGE_THRESHOLD - 1,
            HUGE_THRESHOLD + 1,
        ];
        for c in [1, NUM_CLASSES / 3, NUM_CLASSES / 2, NUM_CLASSES - 2] {
            sizes.push(class_size(c));
        }
        for _ in 0..10 {
            sizes.push(rng.gen_range(1..=MAX_SMALL_SIZE + 8192));
        }
        let mut cur = Vec::new();
        for &size in &sizes {
            let copies = if size >= HUGE_THRESHOLD / 2 { 1 } else { 4 };
            for _ in 0..copies {
                cur.push(alloc_full(size, align));
            }
        }
        prev.shuffle(&mut rng);
        for f in prev.drain(..) {
            free_full(f, &format!("seed {seed} align {}", align / 2));
        }
        prev = cur;
    }
    for f in prev {
        free_full(f, &format!("seed {seed} align 65536"));
    }
}

/// Random mix of sizes (log-uniform up to ~70 KB, occasionally huge) and
/// alignments, with up to 4096 blocks alive; also exercises realloc through
/// GlobalAlloc. Each block is verified before free/realloc.
#[test]
fn random_sizes_and_alignments_coexisting() {
    let seed = seed("random_sizes_and_alignments_coexisting");
    let mut rng = StdRng::seed_from_u64(seed);
    let ops = if RELEASE { 200_000 } else { 20_000 };
    let mut live: Vec<Full> = Vec::new();
    for i in 0..ops {
        let r = rng.gen_range(0..100);
        if live.is_empty() || (r < 55 && live.len() < 4096) {
            let size = if rng.gen_ratio(1, 2000) {
                HUGE_THRESHOLD + rng.gen_range(0..3 * PAGE_SIZE)
            } else {
                let bits = rng.gen_range(0..=16u32);
                rng.gen_range(0..=(1usize << bits) + 4464)
            };
            let align = if rng.gen_ratio(1, 8) {
                1usize << rng.gen_range(0..=16u32)
            } else {
                1 << rng.gen_range(0..=3u32)
            };
            live.push(alloc_full(size, align));
        } else if r < 95 {
            let idx = rng.gen_range(0..live.len());
            let f = live.swap_remove(idx);
            free_full(f, &format!("seed {seed} op {i}"));
        } else {
            // realloc: verify, move, verify the preserved prefix, re-pattern.
            let idx = rng.gen_range(0..live.len());
            let f = live.swap_remove(idx);
            let old = f.b.size();
            let align = f.b.layout.align();
            let new_size = rng.gen_range(1..=70_000usize);
            verify_blk(&f.b, "before realloc");
            let key = f.b.key;
            let p = unsafe { GoMalloc.realloc(f.b.ptr, f.b.layout, new_size) };
            assert!(
                !p.is_null(),
                "realloc {old}->{new_size} (align {align}) returned null"
            );
            assert_eq!(
                p as usize % align,
                0,
                "realloc result misaligned for align {align}"
            );
            let keep = old.min(new_size);
            if let Some(off) = unsafe { check_prefix(p, old, keep, key) } {
                panic!(
                    "seed {seed} op {i}: realloc {old}->{new_size} (align {align}) lost contents: {}",
                    unsafe { describe_corruption(p, off, key, keep) }
                );
            }
            unsafe { GoMalloc.dealloc(p, layout(new_size, align)) };
        }
    }
    for f in live {
        free_full(f, &format!("seed {seed} final"));
    }
}
