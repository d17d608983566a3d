//! Theme 2: multi-threaded random stress with cross-thread frees.
//!
//! 8 threads x GOMALLOC_STRESS_OPS random operations each (default 1_000_000 in
//! release builds, 100_000 in debug builds). Sizes are mostly 1..=4096, a few
//! large ones up to 256 KiB. Blocks travel between threads through channels and
//! through a table of shared slots; every block's contents are checked right
//! before it is freed (by whichever thread frees it).

#[global_allocator]
static GLOBAL: gomalloc::GoMalloc = gomalloc::GoMalloc;

mod common;
use common::*;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::alloc::GlobalAlloc;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Barrier, Mutex};

const THREADS: usize = 8;
const MAX_LIVE: usize = 4096;
const SLOTS: usize = 512;

fn ops_per_thread() -> usize {
    env_usize(
        "GOMALLOC_STRESS_OPS",
        if RELEASE { 1_000_000 } else { 100_000 },
    )
}

fn random_size(rng: &mut StdRng) -> (usize, usize) {
    let r = rng.gen_range(0..1000);
    let size = if r < 600 {
        rng.gen_range(1..=128)
    } else if r < 900 {
        rng.gen_range(129..=1024)
    } else if r < 995 {
        rng.gen_range(1025..=4096)
    } else {
        rng.gen_range(4097..=256 * KIB)
    };
    let align = match rng.gen_range(0..100) {
        0..=89 => 1 << rng.gen_range(0..=3u32),
        90..=97 => 1 << rng.gen_range(4..=7u32),
        _ => 1 << rng.gen_range(8..=13u32),
    };
    (size, align)
}

#[derive(Default, Debug, Clone, Copy)]
struct Counts {
    allocs: u64,
    frees: u64,
    sent: u64,
    received: u64,
    reallocs: u64,
    slot_swaps: u64,
}

fn realloc_blk(b: Blk, new_size: usize, ctx: &str) -> Blk {
    verify_blk(&b, ctx);
    let align = b.layout.align();
    let p = unsafe { GoMalloc.realloc(b.ptr, b.layout, new_size) };
    assert!(
        !p.is_null(),
        "{ctx}: realloc {}->{new_size} returned null",
        b.size()
    );
    assert_eq!(
        p as usize % align,
        0,
        "{ctx}: realloc result {p:p} misaligned for {align}"
    );
    let keep = b.size().min(new_size);
    if let Some(off) = unsafe { check_prefix(p, b.len, keep, b.key) } {
        panic!(
            "{ctx}: realloc {}->{new_size} (align {align}) lost contents: {}",
            b.size(),
            unsafe { describe_corruption(p, off, b.key, keep) }
        );
    }
    // Re-pattern for the new address.
    let key = key_for(p as usize, new_size, 0);
    unsafe { fill(p, new_size, key) };
    Blk {
        ptr: p,
        layout: layout(new_size, align),
        len: new_size,
        key,
    }
}

fn worker(
    id: usize,
    seed: u64,
    ops: usize,
    txs: Vec<Sender<Blk>>,
    rx: Receiver<Blk>,
    slots: Arc<Vec<Mutex<Option<Blk>>>>,
    barrier: Arc<Barrier>,
) -> Counts {
    let mut rng = StdRng::seed_from_u64(seed ^ mix(id as u64 + 1));
    let mut live: Vec<Blk> = Vec::with_capacity(MAX_LIVE);
    let mut c = Counts::default();
    let ctx = |op: usize| format!("seed {seed} thread {id} op {op}");
    // A panic must not leave the other threads stuck at the barrier.
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for op in 0..ops {
            if op % 8 == 0 {
                // Adopt or free blocks other threads sent us.
                while let Ok(b) = rx.try_recv() {
                    c.received += 1;
                    if live.len() < MAX_LIVE && rng.gen_bool(0.5) {
                        live.push(b);
                    } else {
                        free_blk(b, &ctx(op));
                        c.frees += 1;
                    }
                }
            }
            if op % 100_000 == 99_999 {
                // Burst: free half of the live set at once (spans go back centrally).
                let half = live.len() / 2;
                for b in live.drain(..half) {
                    free_blk(b, &ctx(op));
                    c.frees += 1;
                }
                if rng.gen_ratio(1, 3) {
                    gomalloc::flush_thread_cache();
                }
            }
            let r = rng.gen_range(0..100);
            if live.is_empty() || (r < 45 && live.len() < MAX_LIVE) {
                let (size, align) = random_size(&mut rng);
                live.push(alloc_blk(size, align, 0));
                c.allocs += 1;
            } else if r < 75 {
                let i = rng.gen_range(0..live.len());
                free_blk(live.swap_remove(i), &ctx(op));
                c.frees += 1;
            } else if r < 90 {
                let i = rng.gen_range(0..live.len());
                let b = live.swap_remove(i);
                let mut to = rng.gen_range(0..THREADS - 1);
                if to >= id {
                    to += 1;
                }
                txs[to].send(b).expect("receiver gone");
                c.sent += 1;
            } else if r < 95 {
                let i = rng.gen_range(0..live.len());
                let b = live.swap_remove(i);
                let (ns, _) = random_size(&mut rng);
                live.push(realloc_blk(b, ns, &ctx(op)));
                c.reallocs += 1;
            } else {
                // Swap a fresh block into a shared slot; free whatever was there
                // (usually allocated by another thread).
                let (size, align) = random_size(&mut rng);
                let nb = alloc_blk(size, align, 0);
                c.allocs += 1;
                let s = rng.gen_range(0..SLOTS);
                let old = slots[s].lock().unwrap().replace(nb);
                if let Some(ob) = old {
                    free_blk(ob, &ctx(op));
                    c.frees += 1;
                }
                c.slot_swaps += 1;
            }
        }
        for b in live.drain(..) {
            free_blk(b, &ctx(ops));
            c.frees += 1;
        }
    }));
    // Nobody sends after this barrier: drain what is left in our inbox.
    drop(txs);
    barrier.wait();
    if let Err(p) = res {
        std::mem::forget(live); // possibly corrupt: leak rather than free
        std::panic::resume_unwind(p);
    }
    while let Ok(b) = rx.try_recv() {
        c.received += 1;
        free_blk(b, &ctx(ops));
        c.frees += 1;
    }
    c
}

#[test]
fn eight_threads_random_ops_cross_thread_frees() {
    let _g = global_lock();
    let seed = seed("eight_threads_random_ops_cross_thread_frees");
    let ops = ops_per_thread();
    eprintln!("{THREADS} threads x {ops} ops (GOMALLOC_STRESS_OPS)");
    let before = gomalloc::stats();

    let slots: Arc<Vec<Mutex<Option<Blk>>>> =
        Arc::new((0..SLOTS).map(|_| Mutex::new(None)).collect());
    let barrier = Arc::new(Barrier::new(THREADS));
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..THREADS).map(|_| channel::<Blk>()).unzip();
    let mut handles = Vec::new();
    for (id, rx) in rxs.into_iter().enumerate() {
        let txs = txs.clone();
        let slots = slots.clone();
        let barrier = barrier.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("stress-{id}"))
                .spawn(move || worker(id, seed, ops, txs, rx, slots, barrier))
                .unwrap(),
        );
    }
    drop(txs);
    let mut total = Counts::default();
    let mut failed = Vec::new();
    for (id, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(c) => {
                total.allocs += c.allocs;
                total.frees += c.frees;
                total.sent += c.sent;
                total.received += c.received;
                total.reallocs += c.reallocs;
                total.slot_swaps += c.slot_swaps;
            }
            Err(_) => failed.push(id),
        }
    }
    assert!(
        failed.is_empty(),
        "seed {seed}: stress threads {failed:?} panicked (see their messages above)"
    );
    // The main thread frees what is left in the shared slots (cross-thread again).
    for s in slots.iter() {
        if let Some(b) = s.lock().unwrap().take() {
            free_blk(b, "slot drain");
            total.frees += 1;
        }
    }
    eprintln!("totals: {total:?}");
    assert_eq!(
        total.sent, total.received,
        "seed {seed}: blocks lost in channels"
    );
    assert_eq!(
        total.allocs, total.frees,
        "seed {seed}: test bookkeeping: not every block was freed"
    );

    let after = gomalloc::stats();
    assert!(
        after.mallocs - before.mallocs >= total.allocs,
        "stats().mallocs grew by {} but the stress did {} allocations",
        after.mallocs - before.mallocs,
        total.allocs
    );
    assert!(
        after.frees - before.frees >= total.frees,
        "stats().frees grew by {} but the stress did {} frees",
        after.frees - before.frees,
        total.frees
    );
    // Everything was freed: live objects/bytes must be back near the start
    // (slack for the harness and channel internals).
    assert!(
        after.heap_objects <= before.heap_objects + 10_000,
        "heap_objects {} -> {} after freeing everything (leak or lost frees)",
        before.heap_objects,
        after.heap_objects
    );
    assert!(
        after.heap_alloc <= before.heap_alloc + 8 * MIB as u64,
        "heap_alloc {} -> {} after freeing everything",
        before.heap_alloc,
        after.heap_alloc
    );
}

/// Pure producer/consumer pairs: every block is allocated on one thread and
/// checked+freed on another (the classic remote-free pattern), in batches.
#[test]
fn producer_consumer_remote_frees() {
    let _g = global_lock();
    let seed = seed("producer_consumer_remote_frees");
    let per_pair = (ops_per_thread() / 4).max(1000);
    let pairs = THREADS / 2;
    let mut handles = Vec::new();
    for pair in 0..pairs {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Blk>>(4);
        handles.push(std::thread::spawn(move || {
            let mut rng = StdRng::seed_from_u64(seed ^ mix(100 + pair as u64));
            let mut made = 0usize;
            while made < per_pair {
                let n = rng.gen_range(1..=256).min(per_pair - made);
                let batch: Vec<Blk> = (0..n)
                    .map(|_| {
                        let (s, a) = random_size(&mut rng);
                        alloc_blk(s, a, 0)
                    })
                    .collect();
                made += n;
                tx.send(batch).unwrap();
            }
            made
        }));
        handles.push(std::thread::spawn(move || {
            let mut freed = 0usize;
            for batch in rx {
                for b in batch {
                    free_blk(b, &format!("seed {seed} consumer {pair}"));
                    freed += 1;
                }
            }
            freed
        }));
    }
    let mut results = Vec::new();
    for h in handles {
        results.push(
            h.join()
                .unwrap_or_else(|_| panic!("seed {seed}: a producer/consumer thread panicked")),
        );
    }
    for pair in results.chunks(2) {
        assert_eq!(pair[0], pair[1], "produced != consumed");
        assert_eq!(pair[0], per_pair);
    }
}
