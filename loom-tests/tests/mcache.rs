//! Models of the thread cache (`mcache`) with the real globals: the registry of caches, the
//! central lists, the page heap, the exit key. Under loom every global is made afresh for each
//! execution, each model thread has its own cache (loom's thread-local), and a thread runs the
//! exit hook glibc would run for it by calling `mcache::exit_thread()` last.
//!
//! What they prove, for every interleaving loom explores:
//! - `exit_flush_races_allocation`: a thread's exit flush (its cached objects spilled as a batch
//!   to the central transfer cache, its counters folded into the retired totals, its node
//!   recycled) racing another thread's refill never hands a live object out twice and loses
//!   nothing: afterwards every span comes home to the page heap and the counters are exact.
//! - `stats_read_races_thread_exit`: `stats()`'s merge of per-thread counters, read while a
//!   thread exits, sees every operation that happened before the read, exactly once (no count
//!   is missed or counted twice while it moves from the thread's node to the retired totals).
//! - `first_allocations_at_once`: two threads' very first allocations at once (lazy global
//!   set-up: the exit key created exactly once while the other thread waits, two cache nodes
//!   registered, the heap's first arena mapped and published in the page map) give two distinct
//!   objects whose spans the page map finds from either thread.
#![cfg(loom)]

use gomalloc::model::{central, heaps, mcache};
use gomalloc::pagemap;
use gomalloc::size_class::{self, NUM_CLASSES};
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// Addresses of objects live now; a second claim of one is an object handed out twice.
/// (A std mutex: only held for the set operation, never across a loom operation.)
#[derive(Clone, Default)]
struct Live(Arc<Mutex<HashSet<usize>>>);

impl Live {
    fn claim(&self, p: *mut u8) {
        assert!(!p.is_null(), "allocation failed");
        assert!(
            self.0.lock().unwrap().insert(p as usize),
            "object {p:p} handed out while live"
        );
    }
    fn release(&self, p: *mut u8) {
        assert!(self.0.lock().unwrap().remove(&(p as usize)));
    }
}

/// (mallocs, frees) of `class` as `stats()` would merge them now.
fn counts(class: usize) -> (u64, u64) {
    let mut c = [[0u64; 2]; NUM_CLASSES];
    let mut large = [0u64; 2];
    mcache::sum_counters(&mut c, &mut large);
    (c[class][0], c[class][1])
}

/// One object per span, batches of 2: the most span traffic per object.
fn big_class() -> usize {
    size_class::size_to_class(32768)
}

/// Allocates `n` objects of `class`, writes to each, frees them (into this thread's cache).
fn churn(live: &Live, class: usize, n: usize) {
    let ps: Vec<*mut u8> = (0..n).map(|_| mcache::alloc(class)).collect();
    for &p in &ps {
        live.claim(p);
        // SAFETY: a live object of at least 8 bytes, ours alone.
        unsafe { p.cast::<u64>().write(p as u64) };
    }
    for &p in &ps {
        // SAFETY: as above; nobody else wrote it while we held it.
        assert_eq!(
            unsafe { p.cast::<u64>().read() },
            p as u64,
            "object overwritten"
        );
        live.release(p);
        // SAFETY: allocated above for `class`, freed once.
        unsafe { mcache::free(class, p) };
    }
}

/// `loom::model` with room for the branches of the counter merge and the exit flush (a few per
/// size class: well over loom's default of 1 000 per execution).
/// The model body runs on a big-stack thread of its own (loom's default stack of 32 KiB is too
/// small for building the globals: the central lists take ~120 KiB under loom).
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.max_branches = 50_000;
    let f = Arc::new(f);
    b.check(move || {
        let f = f.clone();
        spawn(move || f()).join().unwrap();
    });
}

/// A model thread with room for the allocator's slow paths (loom's default stack is 32 KiB).
fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> thread::JoinHandle<T> {
    thread::Builder::new().stack_size(1 << 20).spawn(f).unwrap()
}

fn heap_inuse() -> usize {
    heaps().iter().map(|h| h.stats().inuse).sum()
}

#[test]
fn exit_flush_races_allocation() {
    model(|| {
        let c = big_class();
        let live = Live::default();
        let l1 = live.clone();
        // Fills its list twice, frees all four objects into it (its bound: two batches) and
        // exits: the flush spills two full batches to the central transfer cache.
        let exiting = spawn(move || {
            churn(&l1, c, 4);
            mcache::exit_thread();
        });
        let l2 = live.clone();
        // Refills at the same time, maybe from the batch the other thread just spilled.
        let allocating = spawn(move || {
            churn(&l2, c, 1);
            mcache::exit_thread();
        });
        exiting.join().unwrap();
        allocating.join().unwrap();
        assert_eq!(mcache::live_caches(), 0, "a cache node was not retired");
        assert_eq!(counts(c), (5, 5), "counters lost or doubled");
        central(c).drain(c);
        assert_eq!(central(c).cached_objects(), 0);
        assert_eq!(heap_inuse(), 0, "a span did not come home");
    });
}

#[test]
fn stats_read_races_thread_exit() {
    model(|| {
        let c = big_class();
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let worker = spawn(move || {
            churn(&Live::default(), c, 1);
            churn(&Live::default(), c, 1);
            d.store(true, Ordering::Release);
            // Its counters move from its node to the retired totals while `main` reads them.
            mcache::exit_thread();
        });
        // A read while the worker runs sees a moment's counts: at most what it will do.
        let early = counts(c);
        while !done.load(Ordering::Acquire) {
            thread::yield_now();
        }
        // A read after the worker's operations (they happen-before it) sees all of them,
        // whether the worker's node is live, being retired or gone.
        let seen = counts(c);
        assert_eq!(seen, (2, 2), "a merge missed or doubled counts");
        assert!(
            early.0 <= 2 && early.1 <= early.0.max(2),
            "counted twice: {early:?}"
        );
        worker.join().unwrap();
        assert_eq!(counts(c), (2, 2));
    });
}

#[test]
fn first_allocations_at_once() {
    model(|| {
        let c = size_class::size_to_class(16);
        let live = Live::default();
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let live = live.clone();
                spawn(move || {
                    let p = mcache::alloc(c);
                    live.claim(p);
                    let s = pagemap::span_of(p as usize);
                    assert!(!s.is_null(), "the page map does not know a fresh object");
                    // SAFETY: a live span of ours.
                    assert_eq!(unsafe { (*s).class } as usize, c);
                    live.release(p);
                    // SAFETY: allocated above for `c`, freed once.
                    unsafe { mcache::free(c, p) };
                    mcache::exit_thread();
                    p as usize
                })
            })
            .collect();
        let ps: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(mcache::exit_keys_created(), 1, "exit key created twice");
        assert_eq!(mcache::live_caches(), 0);
        assert_eq!(counts(c), (2, 2));
        assert!(ps.iter().all(|&p| p % 16 == 0));
    });
}
