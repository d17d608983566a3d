//! Theme 3: thread caches are flushed when threads exit.
//!
//! 2_000 short-lived threads are spawned in waves; each allocates and frees a
//! few thousand small objects over many size classes and exits with its cache
//! populated. If exiting threads did not hand their cached objects/spans back,
//! heap_inuse and RSS would grow by hundreds of KiB per thread; we require the
//! growth after the first wave to stay under a small bound.

#[global_allocator]
static GLOBAL: gomalloc::GoMalloc = gomalloc::GoMalloc;

mod common;
use common::*;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::{Arc, Barrier};

const WAVES: usize = 20;
const PER_WAVE: usize = 100;

/// Work of one short-lived thread. Returns a few blocks that outlive the
/// thread (freed later by the main thread) and the number of allocations.
fn short_lived(seed: u64, wave: usize, idx: usize, barrier: &Barrier) -> (Vec<Blk>, u64) {
    let mut rng = StdRng::seed_from_u64(seed ^ mix((wave * 1_000_003 + idx) as u64));
    let ctx = format!("seed {seed} wave {wave} thread {idx}");
    // "a few thousand" objects per thread (fewer in unoptimised debug builds).
    let n = if RELEASE {
        rng.gen_range(2000..4000)
    } else {
        rng.gen_range(300..600)
    };
    let mut held: Vec<Blk> = Vec::with_capacity(256);
    let mut allocs = 0u64;
    for i in 0..n {
        // Sizes spread over many small classes.
        let size = if i % 64 == 63 {
            rng.gen_range(513..=4096)
        } else {
            rng.gen_range(1..=512)
        };
        let b = alloc_blk(size, 8, 0);
        allocs += 1;
        if held.len() < 200 && rng.gen_bool(0.3) {
            held.push(b);
        } else {
            free_blk(b, &ctx);
        }
        if held.len() >= 200 {
            let k = rng.gen_range(0..held.len());
            free_blk(held.swap_remove(k), &ctx);
        }
    }
    // A large object too (page-heap path).
    let big = alloc_blk(rng.gen_range(MAX_SMALL_SIZE + 1..=3 * MAX_SMALL_SIZE), 8, 0);
    allocs += 1;
    // Hand a few blocks to the main thread; they are freed after this thread is gone.
    let escaped: Vec<Blk> = held.drain(..held.len().min(8)).collect();
    // Free the rest: these objects stay in this thread's cache at exit.
    for b in held {
        free_blk(b, &ctx);
    }
    free_blk(big, &ctx);
    // All threads of the wave are alive, with populated caches, at this point.
    barrier.wait();
    (escaped, allocs)
}

fn run_wave(seed: u64, wave: usize) -> u64 {
    let barrier = Arc::new(Barrier::new(PER_WAVE));
    let handles: Vec<_> = (0..PER_WAVE)
        .map(|idx| {
            let barrier = barrier.clone();
            std::thread::Builder::new()
                .stack_size(256 * KIB)
                .spawn(move || short_lived(seed, wave, idx, &barrier))
                .expect("spawn failed")
        })
        .collect();
    let mut allocs = 0;
    for h in handles {
        let (escaped, n) = h
            .join()
            .unwrap_or_else(|_| panic!("seed {seed}: a thread of wave {wave} panicked"));
        allocs += n;
        for b in escaped {
            free_blk(
                b,
                &format!("seed {seed} wave {wave}: block from a dead thread"),
            );
        }
    }
    allocs
}

#[test]
fn two_thousand_short_lived_threads_do_not_leak_caches() {
    let _g = global_lock();
    let seed = seed("two_thousand_short_lived_threads_do_not_leak_caches");
    run_wave(seed, 0);
    gomalloc::flush_thread_cache();
    let s1 = gomalloc::stats();
    let rss1 = rss_bytes();
    let mut max_inuse = s1.heap_inuse;
    for wave in 1..WAVES {
        run_wave(seed, wave);
        max_inuse = max_inuse.max(gomalloc::stats().heap_inuse);
    }
    gomalloc::flush_thread_cache();
    let s2 = gomalloc::stats();
    let rss2 = rss_bytes();
    eprintln!(
        "after wave 1: heap_inuse {} KiB, rss {} KiB; after {} waves: heap_inuse {} KiB (max {} KiB), rss {} KiB",
        s1.heap_inuse / 1024,
        rss1 / 1024,
        WAVES,
        s2.heap_inuse / 1024,
        max_inuse / 1024,
        rss2 / 1024
    );
    let inuse_growth = s2.heap_inuse.saturating_sub(s1.heap_inuse);
    assert!(
        inuse_growth < 16 * MIB as u64,
        "heap_inuse grew by {} KiB over {} more threads ({} bytes/thread): thread caches are not flushed at exit",
        inuse_growth / 1024,
        (WAVES - 1) * PER_WAVE,
        inuse_growth / ((WAVES - 1) * PER_WAVE) as u64
    );
    let rss_growth = rss2.saturating_sub(rss1);
    assert!(
        rss_growth < 32 * MIB,
        "RSS grew by {} KiB over {} more threads: memory cached by dead threads is not reused",
        rss_growth / 1024,
        (WAVES - 1) * PER_WAVE
    );
    // Live objects must be back near where they were: everything was freed.
    assert!(
        s2.heap_objects <= s1.heap_objects + 2_000,
        "heap_objects {} -> {}: objects freed into dead threads' caches are still counted live",
        s1.heap_objects,
        s2.heap_objects
    );
}

/// Counters kept per thread must survive the thread's exit (merged, not lost).
#[test]
fn counters_of_exited_threads_are_kept() {
    let _g = global_lock();
    const THREADS: usize = 64;
    const N: u64 = 5_000;
    let size = 200;
    // The checking mode adds 16 bytes (canary and size word) to every request.
    let c = size_to_class(if cfg!(feature = "checked") {
        size + 16
    } else {
        size
    });
    let before = gomalloc::stats();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                let mut v = Vec::with_capacity(N as usize);
                for _ in 0..N {
                    v.push(alloc_blk(size, 8, t as u64));
                }
                for b in v {
                    free_blk(b, "counters");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("worker panicked");
    }
    let after = gomalloc::stats();
    let total = THREADS as u64 * N;
    assert!(
        after.mallocs - before.mallocs >= total,
        "mallocs grew by {} after {total} allocations on exited threads",
        after.mallocs - before.mallocs
    );
    assert!(
        after.frees - before.frees >= total,
        "frees grew by {} after {total} frees on exited threads",
        after.frees - before.frees
    );
    let bm = after.by_size[c].mallocs - before.by_size[c].mallocs;
    let bf = after.by_size[c].frees - before.by_size[c].frees;
    assert!(
        bm >= total,
        "by_size[{c}].mallocs grew by {bm}, expected >= {total}"
    );
    assert!(
        bf >= total,
        "by_size[{c}].frees grew by {bf}, expected >= {total}"
    );
    assert!(
        after.total_alloc - before.total_alloc >= total * size as u64,
        "total_alloc grew by {} < {}",
        after.total_alloc - before.total_alloc,
        total * size as u64
    );
    assert!(
        after.heap_objects <= before.heap_objects + 1_000,
        "heap_objects {} -> {} though every object was freed",
        before.heap_objects,
        after.heap_objects
    );
}

/// Objects allocated by a thread that has exited can be freed by another
/// thread, and their memory is reused by new threads.
#[test]
fn blocks_outlive_their_allocating_thread() {
    let _g = global_lock();
    let seed = seed("blocks_outlive_their_allocating_thread");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut carried: Vec<Blk> = Vec::new();
    for round in 0..20 {
        let sizes: Vec<(usize, usize)> = (0..500)
            .map(|_| {
                (
                    rng.gen_range(1..=MAX_SMALL_SIZE + 20_000),
                    1usize << rng.gen_range(0..=6u32),
                )
            })
            .collect();
        let h = std::thread::spawn(move || {
            sizes
                .into_iter()
                .map(|(s, a)| alloc_blk(s, a, 0))
                .collect::<Vec<_>>()
        });
        let mut got = h.join().expect("allocating thread panicked");
        // Free half now, carry half into the next round (freed after more threads died).
        let keep = got.split_off(got.len() / 2);
        for b in got {
            free_blk(b, &format!("seed {seed} round {round}"));
        }
        for b in carried.drain(..) {
            free_blk(b, &format!("seed {seed} round {round} (carried)"));
        }
        carried = keep;
    }
    for b in carried {
        free_blk(b, &format!("seed {seed} final"));
    }
}
