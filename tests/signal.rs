//! Issue 4: signals delivered to threads in the middle of allocating.
//!
//! `WORKERS` threads allocate, fill, check, realloc and free blocks (some freed by another
//! thread) through `GoMalloc` while a signaller thread sends them `SIGUSR1` with
//! `pthread_kill`, round robin, `GOMALLOC_SIGNALS` times (8 000 in release builds). The handler only bumps an atomic counter (it
//! does not allocate). The signaller sends a worker its next signal only once the previous one
//! was handled, so every signal is counted (standard signals do not queue) and each worker's
//! handler count must equal the number sent to it. Every block's contents are checked before it is freed, and every
//! thread must finish.
//!
//! Run once with `SA_RESTART` and once without: without it, a system call the signal
//! interrupts (a futex wait on a contended allocator lock, say) returns `EINTR` instead of
//! being restarted, and the allocator must cope.

#[global_allocator]
static GLOBAL: gomalloc::GoMalloc = gomalloc::GoMalloc;

mod common;
use common::*;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::alloc::GlobalAlloc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const WORKERS: usize = 3;
/// Blocks one worker keeps live (a ring: the oldest is freed to make room).
const RING: usize = 256;

fn signals() -> u64 {
    env_usize("GOMALLOC_SIGNALS", if RELEASE { 8_000 } else { 2_000 }) as u64
}

/// The workers' pthread_t (as usize), so the handler can tell which one it interrupted.
static TIDS: [AtomicUsize; WORKERS] = [const { AtomicUsize::new(0) }; WORKERS];
/// Signals handled, per worker.
static HANDLED: [AtomicU64; WORKERS] = [const { AtomicU64::new(0) }; WORKERS];

extern "C" fn on_sigusr1(_sig: libc::c_int) {
    // Async-signal-safe: pthread_self and lock-free atomics; no allocation, no errno change.
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() } as usize;
    for (t, h) in TIDS.iter().zip(&HANDLED) {
        if t.load(Ordering::SeqCst) == me {
            h.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn handled(t: usize) -> u64 {
    HANDLED[t].load(Ordering::SeqCst)
}

/// Installs `on_sigusr1` for SIGUSR1 with or without SA_RESTART; returns the old action.
fn install(restart: bool) -> libc::sigaction {
    // SAFETY: zeroed sigaction structs are valid (empty mask, no flags); `sigaction` gets valid
    // pointers and a handler that is async-signal-safe.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigusr1 as extern "C" fn(libc::c_int) as libc::sighandler_t;
        sa.sa_flags = if restart { libc::SA_RESTART } else { 0 };
        libc::sigemptyset(&mut sa.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(
            libc::sigaction(libc::SIGUSR1, &sa, &mut old),
            0,
            "sigaction: {}",
            std::io::Error::last_os_error()
        );
        old
    }
}

fn restore(old: &libc::sigaction) {
    // SAFETY: `old` is the action `sigaction` returned earlier.
    let r = unsafe { libc::sigaction(libc::SIGUSR1, old, std::ptr::null_mut()) };
    assert_eq!(
        r,
        0,
        "sigaction restore: {}",
        std::io::Error::last_os_error()
    );
}

fn random_size(rng: &mut StdRng) -> (usize, usize) {
    let size = match rng.gen_range(0..100) {
        0..=69 => rng.gen_range(1..=256),
        70..=89 => rng.gen_range(257..=8192),
        90..=97 => rng.gen_range(8193..=256 * KIB), // large spans: the page-heap lock
        _ => rng.gen_range(256 * KIB..=2 * MIB),
    };
    let align = if rng.gen_ratio(1, 10) {
        1 << rng.gen_range(4..=12u32)
    } else {
        8
    };
    (size, align)
}

struct Shared {
    stop: AtomicBool,
    failed: AtomicBool,
    /// Blocks handed from one worker to another (freed by the taker).
    exchange: Mutex<Vec<Blk>>,
    ops: AtomicU64,
}

fn worker(sh: &Shared, seed: u64, id: usize) {
    let mut rng = StdRng::seed_from_u64(mix(seed ^ (id as u64 + 1)));
    let mut ring: Vec<Blk> = Vec::with_capacity(RING);
    let mut ops = 0u64;
    let ctx = |ops: u64| format!("seed {seed} worker {id} op {ops}");
    while !sh.stop.load(Ordering::Relaxed) {
        let (size, align) = random_size(&mut rng);
        let b = alloc_blk(size, align, id as u64);
        if ring.len() == RING {
            let old = ring.swap_remove(rng.gen_range(0..RING));
            match rng.gen_range(0..10) {
                0..=5 => free_blk(old, &ctx(ops)),
                6..=7 => {
                    // Realloc, check the preserved prefix, then free.
                    verify_blk(&old, &ctx(ops));
                    let (ns, _) = random_size(&mut rng);
                    // SAFETY: `old` came from GoMalloc with `old.layout`; `ns` > 0.
                    let p = unsafe { GoMalloc.realloc(old.ptr, old.layout, ns) };
                    assert!(!p.is_null(), "{}: realloc returned null", ctx(ops));
                    assert_eq!(
                        p as usize % old.layout.align(),
                        0,
                        "{}: realloc result {p:p} misaligned",
                        ctx(ops)
                    );
                    let keep = old.len.min(ns);
                    // SAFETY: the first `keep` bytes are the old block's.
                    if let Some(off) = unsafe { check_prefix(p, old.len, keep, old.key) } {
                        panic!("{}: realloc lost contents at offset {off}", ctx(ops));
                    }
                    // SAFETY: `p` is live with `ns` bytes, alignment `old.layout.align()`.
                    unsafe { GoMalloc.dealloc(p, layout(ns, old.layout.align())) };
                }
                _ => {
                    // Hand it to another worker; free one handed to us.
                    let theirs = {
                        let mut x = sh.exchange.lock().unwrap();
                        x.push(old);
                        if x.len() > 1 {
                            Some(x.swap_remove(0))
                        } else {
                            None
                        }
                    };
                    if let Some(t) = theirs {
                        free_blk(t, &ctx(ops));
                    }
                }
            }
        }
        ring.push(b);
        // Some std allocation too (Vec growth goes through realloc on the global allocator).
        if ops % 64 == 0 {
            let v: Vec<u64> = (0..rng.gen_range(1..2000u64)).collect();
            assert_eq!(
                v.iter().sum::<u64>(),
                v.len() as u64 * (v.len() as u64 - 1) / 2
            );
        }
        ops += 1;
    }
    for b in ring.drain(..) {
        free_blk(b, &ctx(ops));
    }
    sh.ops.fetch_add(ops, Ordering::Relaxed);
}

fn run(restart: bool, name: &str) {
    let _g = global_lock();
    let seed = seed(name);
    let total = signals();
    let old = install(restart);
    let sh = Arc::new(Shared {
        stop: AtomicBool::new(false),
        failed: AtomicBool::new(false),
        exchange: Mutex::new(Vec::new()),
        ops: AtomicU64::new(0),
    });
    let (tid_tx, tid_rx) = std::sync::mpsc::channel::<libc::pthread_t>();
    let handles: Vec<_> = (0..WORKERS)
        .map(|id| {
            let sh = sh.clone();
            let tid_tx = tid_tx.clone();
            std::thread::Builder::new()
                .name(format!("sig-worker-{id}"))
                .spawn(move || {
                    // SAFETY: pthread_self has no preconditions.
                    tid_tx.send(unsafe { libc::pthread_self() }).unwrap();
                    drop(tid_tx);
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        worker(&sh, seed, id)
                    }));
                    if let Err(p) = r {
                        sh.failed.store(true, Ordering::SeqCst);
                        std::panic::resume_unwind(p);
                    }
                })
                .unwrap()
        })
        .collect();
    drop(tid_tx);
    let tids: Vec<libc::pthread_t> = tid_rx.iter().collect();
    assert_eq!(tids.len(), WORKERS);

    // Signaller (this thread): round robin, at most one signal pending per worker (a standard
    // signal sent while one is pending would merge with it), so each one sent is handled once.
    // The workers are not joined until after this loop, so their pthread_t stay valid even if
    // one fails.
    for (slot, &t) in TIDS.iter().zip(&tids) {
        slot.store(t as usize, Ordering::SeqCst);
    }
    let base: Vec<u64> = (0..WORKERS).map(handled).collect();
    let mut sent_to = [0u64; WORKERS];
    let mut sent = 0u64;
    let failed = || sh.failed.load(Ordering::SeqCst);
    while sent < total && !failed() {
        let mut progressed = false;
        for t in 0..WORKERS {
            if sent < total && handled(t) == base[t] + sent_to[t] {
                // SAFETY: `tids[t]` is a thread of this process that has not been joined.
                let r = unsafe { libc::pthread_kill(tids[t], libc::SIGUSR1) };
                assert_eq!(r, 0, "pthread_kill failed: {r}");
                sent_to[t] += 1;
                sent += 1;
                progressed = true;
            }
        }
        if !progressed {
            std::thread::yield_now();
        }
    }
    // Let the last signals land.
    while (0..WORKERS).any(|t| handled(t) < base[t] + sent_to[t]) && !failed() {
        std::thread::yield_now();
    }
    sh.stop.store(true, Ordering::SeqCst);
    let mut failed = Vec::new();
    for (id, h) in handles.into_iter().enumerate() {
        if h.join().is_err() {
            failed.push(id);
        }
    }
    restore(&old);
    assert!(
        failed.is_empty(),
        "seed {seed}: workers {failed:?} failed (see the panic messages above)"
    );
    // Free what is left in the exchange (blocks of workers that have exited).
    for b in sh.exchange.lock().unwrap().drain(..) {
        free_blk(b, "exchange drain");
    }
    let got: Vec<u64> = (0..WORKERS).map(|t| handled(t) - base[t]).collect();
    let ops = sh.ops.load(Ordering::Relaxed);
    eprintln!(
        "SA_RESTART {}: {sent} signals sent, handled per worker {got:?}, {ops} worker iterations",
        if restart { "on" } else { "off" }
    );
    assert_eq!(sent, total, "seed {seed}: the signaller stopped early");
    assert_eq!(
        got,
        sent_to.to_vec(),
        "seed {seed}: every signal sent should have run the handler once, in its thread"
    );
    assert!(ops > 0, "seed {seed}: the workers did nothing");
}

#[test]
fn sigusr1_storm_with_sa_restart() {
    run(true, "sigusr1_storm_with_sa_restart");
}

#[test]
fn sigusr1_storm_without_sa_restart() {
    run(false, "sigusr1_storm_without_sa_restart");
}
