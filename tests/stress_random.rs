//! Issue 4: long randomized stress with thread churn.
//!
//! `WORKERS` worker slots (default 4, `GOMALLOC_STRESS_THREADS`) each run a succession of
//! short-lived threads ("generations"). A generation does a random number of operations and
//! exits; the main thread then starts a replacement in its slot, until the deadline. Operations,
//! all called on `GoMalloc` through `GlobalAlloc` directly:
//!
//! - `alloc` / `alloc_zeroed` of sizes from 1 B to 4 MiB, skewed small, and rarely above
//!   `HUGE_THRESHOLD` (the huge path; on by default in release builds, `GOMALLOC_STRESS_HUGE=0|1`
//!   overrides); alignments 1..=4096, rarely 64 KiB and 2 MiB. `alloc_zeroed` memory must read
//!   zero.
//! - `realloc` growing and shrinking (within and across classes and the small / large / huge
//!   paths); the preserved prefix must keep its pattern.
//! - cross-thread frees: blocks are posted to another slot's mailbox and freed (or kept) by
//!   whichever generation runs there; an exiting generation leaves part of its live blocks in a
//!   shared orphan pool that later threads adopt, so blocks outlive the thread (and the cache)
//!   that allocated them.
//!
//! Every live block carries a pattern keyed by `(seed, block id)`, checked before each free and
//! realloc; every pointer returned is checked for alignment and `usable_size >= size`.
//!
//! Duration: `GOMALLOC_STRESS_SECS` (default 4 s in release builds, 2 s in debug builds); run
//! `GOMALLOC_STRESS_SECS=3600 cargo test --release --test stress_random -- --nocapture` by hand
//! for the long run. The seed is printed and `GOMALLOC_SEED` reproduces each thread's sequence
//! of decisions (thread interleaving, and so addresses, are not reproducible).

#[global_allocator]
static GLOBAL: gomalloc::GoMalloc = gomalloc::GoMalloc;

mod common;
use common::*;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Live blocks one thread holds at most.
const MAX_LIVE: usize = 3000;
/// Bytes (not counting huge blocks) one thread holds at most.
const MAX_LIVE_BYTES: usize = 48 * MIB;
/// Blocks kept in the orphan pool at most (the excess is freed by the exiting thread).
const MAX_ORPHANS: usize = 20_000;
/// Zero checks of `alloc_zeroed` memory read every byte up to this size, sparse ranges beyond.
const ZERO_DENSE: usize = MIB;

/// A live block: memory from `GoMalloc`, patterned with the key of `(seed, id)`.
struct Live {
    ptr: *mut u8,
    layout: Layout,
    id: u64,
    key: u64,
}
// SAFETY: a block is plain memory owned by whoever holds the `Live`; any thread may free it.
unsafe impl Send for Live {}

impl Live {
    fn size(&self) -> usize {
        self.layout.size()
    }
    fn huge(&self) -> bool {
        self.size() >= HUGE_THRESHOLD
    }
}

/// Totals over all threads.
#[derive(Default)]
struct Counts {
    allocs: AtomicU64,
    zeroed: AtomicU64,
    frees: AtomicU64,
    reallocs: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
    orphaned: AtomicU64,
    adopted: AtomicU64,
    huge: AtomicU64,
    big_align: AtomicU64,
    threads: AtomicU64,
    bytes: AtomicU64,
}

struct Shared {
    seed: u64,
    huge: bool,
    deadline: Instant,
    next_id: AtomicU64,
    /// Set by the first thread that fails, so the others stop soon.
    stop: AtomicBool,
    mailboxes: Vec<Mutex<Vec<Live>>>,
    orphans: Mutex<Vec<Live>>,
    c: Counts,
}

impl Shared {
    fn key(&self, id: u64) -> u64 {
        mix(self.seed ^ mix(id.wrapping_mul(0x2545_F491_4F6C_DD1D)))
    }
}

fn secs() -> u64 {
    env_usize("GOMALLOC_STRESS_SECS", if RELEASE { 4 } else { 2 }) as u64
}

fn huge_enabled() -> bool {
    match std::env::var("GOMALLOC_STRESS_HUGE") {
        Ok(v) => v.trim() != "0",
        Err(_) => RELEASE,
    }
}

/// A request size: 1 B .. 4 MiB skewed small; rarely huge when `huge`.
fn random_size(rng: &mut StdRng, huge: bool) -> usize {
    let r = rng.gen_range(0..10_000);
    if huge && r == 0 {
        return rng.gen_range(HUGE_THRESHOLD..=HUGE_THRESHOLD + 24 * MIB);
    }
    match r {
        0..=5_999 => rng.gen_range(1..=128),
        6_000..=8_499 => rng.gen_range(129..=4096),
        8_500..=9_499 => rng.gen_range(4097..=MAX_SMALL_SIZE + 4096),
        9_500..=9_949 => rng.gen_range(MAX_SMALL_SIZE..=MIB),
        _ => rng.gen_range(MIB..=4 * MIB),
    }
}

/// An alignment: mostly <= 16, some up to 4096, a few 64 KiB and 2 MiB.
fn random_align(rng: &mut StdRng) -> usize {
    match rng.gen_range(0..1000) {
        0..=849 => 1 << rng.gen_range(0..=4u32),
        850..=994 => 1 << rng.gen_range(5..=12u32),
        995..=997 => 64 * KIB,
        _ => 2 * MIB,
    }
}

fn check_returned(p: *mut u8, size: usize, align: usize, what: &str, ctx: &dyn Fn() -> String) {
    assert!(
        !p.is_null(),
        "{}: {what} returned null (size {size}, align {align})",
        ctx()
    );
    assert_eq!(
        p as usize % align,
        0,
        "{}: {what} returned {p:p}, misaligned for {align} (size {size})",
        ctx()
    );
    // SAFETY: `p` is a live block just returned by gomalloc.
    let us = unsafe { gomalloc::usable_size(p) };
    assert!(
        us >= size,
        "{}: usable_size({p:p}) = {us} < size {size} after {what} (align {align})",
        ctx()
    );
}

fn verify(b: &Live, what: &str, ctx: &dyn Fn() -> String) {
    // SAFETY: `b` is live and its first `size` bytes were patterned with `b.key`.
    if let Some(off) = unsafe { check(b.ptr, b.size(), b.key) } {
        panic!(
            "{}: before {what}: block id {} size {} align {} corrupted: {}",
            ctx(),
            b.id,
            b.size(),
            b.layout.align(),
            // SAFETY: as above, reads inside the block.
            unsafe { describe_corruption(b.ptr, off, b.key, b.size()) }
        );
    }
}

fn new_block(sh: &Shared, rng: &mut StdRng, zeroed: bool, ctx: &dyn Fn() -> String) -> Live {
    let size = random_size(rng, sh.huge);
    let align = random_align(rng);
    let layout = Layout::from_size_align(size, align).unwrap();
    // SAFETY: `layout` has a non-zero size.
    let p = unsafe {
        if zeroed {
            GoMalloc.alloc_zeroed(layout)
        } else {
            GoMalloc.alloc(layout)
        }
    };
    let what = if zeroed { "alloc_zeroed" } else { "alloc" };
    check_returned(p, size, align, what, ctx);
    if zeroed {
        let mut bad = None;
        let mut scan = |s: usize, e: usize| {
            for q in s..e {
                // SAFETY: `q < size`, inside the new block.
                if bad.is_none() && unsafe { *p.add(q) } != 0 {
                    bad = Some(q);
                }
            }
        };
        if size <= ZERO_DENSE {
            scan(0, size);
        } else {
            for_each_range(size, scan);
        }
        if let Some(q) = bad {
            panic!(
                "{}: alloc_zeroed({size}, align {align}) = {p:p}: byte {q} is {:#04x}, not 0",
                ctx(),
                // SAFETY: `q < size`.
                unsafe { *p.add(q) }
            );
        }
        sh.c.zeroed.fetch_add(1, Relaxed);
    }
    let id = sh.next_id.fetch_add(1, Relaxed);
    let key = sh.key(id);
    // SAFETY: the block is `size` bytes and ours.
    unsafe { fill(p, size, key) };
    sh.c.allocs.fetch_add(1, Relaxed);
    sh.c.bytes.fetch_add(size as u64, Relaxed);
    if size >= HUGE_THRESHOLD {
        sh.c.huge.fetch_add(1, Relaxed);
    }
    if align >= 64 * KIB {
        sh.c.big_align.fetch_add(1, Relaxed);
    }
    Live {
        ptr: p,
        layout,
        id,
        key,
    }
}

fn free_block(sh: &Shared, b: Live, ctx: &dyn Fn() -> String) {
    verify(&b, "dealloc", ctx);
    // SAFETY: `b` came from GoMalloc with `b.layout` and is freed once (we own it).
    unsafe { GoMalloc.dealloc(b.ptr, b.layout) };
    sh.c.frees.fetch_add(1, Relaxed);
}

fn realloc_block(sh: &Shared, b: Live, rng: &mut StdRng, ctx: &dyn Fn() -> String) -> Live {
    verify(&b, "realloc", ctx);
    let old = b.size();
    let align = b.layout.align();
    let new_size = match rng.gen_range(0..4) {
        0 => random_size(rng, sh.huge && !b.huge()),
        1 => (old / rng.gen_range(2..=8)).max(1), // shrink
        2 => old.saturating_add(rng.gen_range(1..=old.min(64 * KIB))), // grow a little
        _ => {
            // grow a lot (but not past 4 MiB unless the block already is huge)
            let cap = if b.huge() {
                (old + 8 * MIB).min(64 * MIB)
            } else {
                4 * MIB
            };
            old.saturating_mul(rng.gen_range(2..=4)).min(cap).max(old)
        }
    };
    // SAFETY: `b` came from GoMalloc with `b.layout`; `new_size` > 0 and far below isize::MAX.
    let p = unsafe { GoMalloc.realloc(b.ptr, b.layout, new_size) };
    check_returned(p, new_size, align, "realloc", ctx);
    let keep = old.min(new_size);
    // SAFETY: the first `keep` bytes of the new block are the old block's.
    if let Some(off) = unsafe { check_prefix(p, old, keep, b.key) } {
        panic!(
            "{}: realloc {old} -> {new_size} (align {align}, id {}, {:p} -> {p:p}) lost contents: {}",
            ctx(),
            b.id,
            b.ptr,
            // SAFETY: reads inside the new block (`off < keep`).
            unsafe { describe_corruption(p, off, b.key, keep) }
        );
    }
    // Same key (position-based pattern): only the bytes past `keep` change.
    // SAFETY: the new block is `new_size` bytes.
    unsafe { fill(p, new_size, b.key) };
    sh.c.reallocs.fetch_add(1, Relaxed);
    Live {
        ptr: p,
        layout: Layout::from_size_align(new_size, align).unwrap(),
        id: b.id,
        key: b.key,
    }
}

/// Bytes a thread counts against its budget (huge blocks are limited separately).
fn weight(b: &Live) -> usize {
    if b.huge() {
        0
    } else {
        b.size()
    }
}

/// One generation in slot `slot`: `ops` random operations, then exit, leaving some blocks behind.
fn generation(sh: &Shared, slot: usize, gen: u64, ops: usize) {
    let mut rng = StdRng::seed_from_u64(mix(sh.seed ^ mix(((slot as u64) << 40) ^ gen)));
    let mut live: Vec<Live> = Vec::with_capacity(MAX_LIVE);
    let mut bytes = 0usize;
    let mut op = 0usize;
    let ctx = |op: usize| {
        let seed = sh.seed;
        move || format!("seed {seed} slot {slot} generation {gen} op {op}")
    };
    // Start with some orphans: blocks whose allocating thread may be gone.
    if rng.gen_bool(0.7) {
        let mut o = sh.orphans.lock().unwrap();
        let n = rng.gen_range(0..=o.len().min(MAX_LIVE / 2));
        let at = o.len() - n;
        for b in o.drain(at..) {
            bytes += weight(&b);
            live.push(b);
        }
        sh.c.adopted.fetch_add(n as u64, Relaxed);
    }
    let n_slots = sh.mailboxes.len();
    while op < ops && !sh.stop.load(Relaxed) {
        if op % 1024 == 0 && Instant::now() >= sh.deadline {
            break;
        }
        let c = ctx(op);
        if op % 16 == 0 {
            // Take what other threads posted here: keep some, free the rest.
            let inbox = std::mem::take(&mut *sh.mailboxes[slot].lock().unwrap());
            sh.c.received.fetch_add(inbox.len() as u64, Relaxed);
            for b in inbox {
                if live.len() < MAX_LIVE
                    && bytes + weight(&b) <= MAX_LIVE_BYTES
                    && rng.gen_bool(0.3)
                {
                    bytes += weight(&b);
                    live.push(b);
                } else {
                    free_block(sh, b, &c);
                }
            }
        }
        let full = live.len() >= MAX_LIVE || bytes >= MAX_LIVE_BYTES;
        let r = rng.gen_range(0..100);
        if live.is_empty() || (!full && r < 45) {
            let b = new_block(sh, &mut rng, r % 6 == 0, &c);
            if b.huge() && live.iter().any(Live::huge) {
                free_block(sh, b, &c); // at most one huge block per thread
            } else {
                bytes += weight(&b);
                live.push(b);
            }
        } else if r < 75 {
            let b = live.swap_remove(rng.gen_range(0..live.len()));
            bytes -= weight(&b);
            free_block(sh, b, &c);
        } else if r < 87 {
            let b = live.swap_remove(rng.gen_range(0..live.len()));
            bytes -= weight(&b);
            let nb = realloc_block(sh, b, &mut rng, &c);
            if nb.huge() && live.iter().any(Live::huge) {
                free_block(sh, nb, &c);
            } else {
                bytes += weight(&nb);
                live.push(nb);
            }
        } else if n_slots > 1 {
            // Cross-thread: post a block to another slot.
            let b = live.swap_remove(rng.gen_range(0..live.len()));
            bytes -= weight(&b);
            let mut to = rng.gen_range(0..n_slots - 1);
            if to >= slot {
                to += 1;
            }
            sh.mailboxes[to].lock().unwrap().push(b);
            sh.c.sent.fetch_add(1, Relaxed);
        }
        if op % 50_000 == 49_999 {
            if rng.gen_bool(0.5) {
                gomalloc::flush_thread_cache();
            }
            if rng.gen_ratio(1, 20) {
                gomalloc::release_memory();
            }
        }
        op += 1;
    }
    // Exit: free some, leave the rest to outlive this thread.
    let c = ctx(op);
    let mut o = sh.orphans.lock().unwrap();
    for b in live.drain(..) {
        if !b.huge() && o.len() < MAX_ORPHANS && rng.gen_bool(0.6) {
            o.push(b);
            sh.c.orphaned.fetch_add(1, Relaxed);
        } else {
            free_block(sh, b, &c);
        }
    }
}

#[test]
fn random_mixed_ops_with_thread_churn() {
    let seed = seed("random_mixed_ops_with_thread_churn");
    let secs = secs();
    let workers = env_usize("GOMALLOC_STRESS_THREADS", 4).max(1);
    let huge = huge_enabled();
    eprintln!(
        "{workers} worker slots, {secs} s (GOMALLOC_STRESS_SECS), huge blocks {} (GOMALLOC_STRESS_HUGE)",
        if huge { "on" } else { "off" }
    );
    let start = Instant::now();
    let sh = Arc::new(Shared {
        seed,
        huge,
        deadline: start + Duration::from_secs(secs),
        next_id: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        mailboxes: (0..workers).map(|_| Mutex::new(Vec::new())).collect(),
        orphans: Mutex::new(Vec::new()),
        c: Counts::default(),
    });
    let mut rng = StdRng::seed_from_u64(mix(seed));
    let spawn = |slot: usize, gen: u64, ops: usize| {
        let sh = sh.clone();
        sh.c.threads.fetch_add(1, Relaxed);
        std::thread::Builder::new()
            .name(format!("churn-{slot}-{gen}"))
            .spawn(move || {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    generation(&sh, slot, gen, ops)
                }));
                if let Err(p) = r {
                    sh.stop.store(true, Relaxed);
                    std::panic::resume_unwind(p);
                }
            })
            .expect("spawn")
    };
    let mut gens = vec![0u64; workers];
    let mut handles: Vec<Option<std::thread::JoinHandle<()>>> = (0..workers)
        .map(|s| Some(spawn(s, 0, rng.gen_range(500..60_000))))
        .collect();
    let mut failures = Vec::new();
    let mut last_report = Instant::now();
    loop {
        let mut running = 0;
        for s in 0..workers {
            if handles[s].as_ref().is_some_and(|h| h.is_finished()) {
                let h = handles[s].take().unwrap();
                if h.join().is_err() {
                    failures.push(format!("slot {s} generation {}", gens[s]));
                }
                if Instant::now() < sh.deadline && !sh.stop.load(Relaxed) {
                    gens[s] += 1;
                    handles[s] = Some(spawn(s, gens[s], rng.gen_range(500..60_000)));
                }
            }
            running += handles[s].is_some() as usize;
        }
        if running == 0 {
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(60) {
            last_report = Instant::now();
            eprintln!(
                "  {:>5} s: {} allocs, {} threads so far",
                start.elapsed().as_secs(),
                sh.c.allocs.load(Relaxed),
                sh.c.threads.load(Relaxed)
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        failures.is_empty(),
        "seed {seed}: thread(s) {failures:?} failed (see their panic messages above)"
    );
    // Everything still alive: orphans and undelivered mail, verified and freed here.
    let end = || format!("seed {seed} final drain");
    let mut left: Vec<Live> = std::mem::take(&mut *sh.orphans.lock().unwrap());
    for m in &sh.mailboxes {
        left.append(&mut m.lock().unwrap());
    }
    for b in left {
        free_block(&sh, b, &end);
    }
    let c = &sh.c;
    let (allocs, frees) = (c.allocs.load(Relaxed), c.frees.load(Relaxed));
    let ops = allocs + frees + c.reallocs.load(Relaxed) + c.sent.load(Relaxed);
    eprintln!(
        "clean: {ops} ops in {:.1} s: {allocs} allocs ({} zeroed, {} huge, {} with 64 KiB/2 MiB alignment, {:.1} GiB), \
         {frees} frees, {} reallocs, {} cross-thread sends ({} received), {} orphaned / {} adopted, {} threads",
        start.elapsed().as_secs_f64(),
        c.zeroed.load(Relaxed),
        c.huge.load(Relaxed),
        c.big_align.load(Relaxed),
        c.bytes.load(Relaxed) as f64 / GIB as f64,
        c.reallocs.load(Relaxed),
        c.sent.load(Relaxed),
        c.received.load(Relaxed),
        c.orphaned.load(Relaxed),
        c.adopted.load(Relaxed),
        c.threads.load(Relaxed),
    );
    assert_eq!(
        allocs, frees,
        "seed {seed}: every block allocated was freed exactly once"
    );
    let st = gomalloc::stats();
    assert_eq!(st.heap_inuse + st.heap_idle, st.heap_sys, "{st}");
}
