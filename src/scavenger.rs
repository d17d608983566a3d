//! The background scavenger (Go's `bgscavenge`): a thread that returns pages that have stayed
//! idle for a while to the OS, so that freeing memory and reusing it soon costs no page faults,
//! and freeing it for good gives it back within about half a second without any further call
//! into the allocator.
//!
//! Owns: the thread (started on first need with `pthread_create`, never through std, so it
//! allocates nothing through the global allocator), its futex wake word, and its state.
//!
//! How it runs: the page heap calls [`wake`] after a free leaves more idle backed pages than it
//! may keep. The thread sleeps on the futex until then, then every `TICK_MS` asks the heap to
//! release spans idle for at least `SCAVENGE_DELAY_MS` (`MHeap::scavenge_aged`), and goes back to
//! sleep once the heap is under its bound. A program that never frees much never starts it.
//! After `IDLE_EXIT_MS` without work the thread ends, and the next `wake` starts another: a
//! process whose own threads have all exited (last one through `pthread_exit`) must end, not
//! wait for ours.
//!
//! Locks: none of its own. `wake` is called with no allocator lock held (the heap drops its lock
//! first), because starting the thread may allocate (glibc's thread set-up) and the thread takes
//! the heap lock.

// Under Miri the thread never starts (see `start`): its loop is built but unused.
#![cfg_attr(miri, allow(dead_code, unused_imports))]

use crate::sync::futex_wake;
use crate::{active_centrals, active_heaps};
use core::sync::atomic::{AtomicU32, AtomicU8, Ordering};

const NOT_STARTED: u8 = 0;
const STARTING: u8 = 1;
const RUNNING: u8 = 2;
const UNAVAILABLE: u8 = 3;

static STATE: AtomicU8 = AtomicU8::new(NOT_STARTED);
/// 1 when there is work; the thread sleeps on it while 0.
static WORK: AtomicU32 = AtomicU32::new(0);
/// The thread's id while it runs (0 otherwise): the collector does not stop it (it blocks
/// every signal and never holds a `Gc`).
#[cfg(feature = "gc")]
pub static TID: core::sync::atomic::AtomicI32 = core::sync::atomic::AtomicI32::new(0);

const TICK_MS: u64 = 250;

/// Asks the scavenger to look at the heap. Returns false if no scavenger thread can run (the
/// caller then releases pages itself).
pub fn wake() -> bool {
    match STATE.load(Ordering::SeqCst) {
        RUNNING | STARTING => {}
        UNAVAILABLE => return false,
        _ => {
            if STATE
                .compare_exchange(NOT_STARTED, STARTING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                let ok = start();
                STATE.store(if ok { RUNNING } else { UNAVAILABLE }, Ordering::Release);
                if !ok {
                    return false;
                }
            }
        }
    }
    // A plain load first: while the scavenger has work pending, frees write nothing shared.
    if WORK.load(Ordering::Relaxed) == 0 && WORK.swap(1, Ordering::SeqCst) == 0 {
        futex_wake(&WORK);
    }
    true
}

/// Under Miri (no `pthread_attr_*` shims) the thread is never started: `wake` reports it
/// unavailable, and freeing threads release excess idle pages themselves, as they do wherever
/// the thread cannot start.
#[cfg(miri)]
fn start() -> bool {
    false
}

#[cfg(not(miri))]
fn start() -> bool {
    crate::os::spawn_detached(run, core::ptr::null_mut(), 128 * 1024)
}

#[cfg(not(miri))]
extern "C" fn run(_: *mut libc::c_void) -> *mut libc::c_void {
    // Published before signals are blocked (the collector's `stw::is_exempt`).
    #[cfg(feature = "gc")]
    TID.store(crate::os::gettid(), Ordering::Release);
    crate::os::become_helper(c"gomalloc-scav");
    loop {
        if WORK.swap(0, Ordering::SeqCst) == 0 {
            wait_for_work(IDLE_EXIT_MS);
            if WORK.swap(0, Ordering::SeqCst) == 0 && retire() {
                #[cfg(feature = "gc")]
                // Before the exit: a collector that reads the tid still set after it counted
                // the process's threads knows this thread was counted (`stw::same_threads`).
                let _ = TID.compare_exchange(
                    crate::os::gettid(),
                    0,
                    Ordering::Release,
                    Ordering::Relaxed,
                );
                return core::ptr::null_mut();
            }
        }
        loop {
            sleep_ms(TICK_MS);
            if !pass() {
                break;
            }
        }
    }
}

/// How long the thread waits for work before it ends (see [`retire`]).
const IDLE_EXIT_MS: u64 = 1000;

/// Ends the thread's run after `IDLE_EXIT_MS` without work: a background thread must never keep
/// a process alive after its own threads have all gone (a C program whose last thread calls
/// `pthread_exit`, or a child forked from a non-main thread whose thread returns, ends only
/// when no thread is left). The next `wake` starts a new thread. Returns false if a wake came
/// in meanwhile, and the thread goes on.
fn retire() -> bool {
    STATE.store(NOT_STARTED, Ordering::SeqCst);
    // A `wake` that saw RUNNING before the store above has set WORK (both sides use SeqCst,
    // so at least one sees the other): stay, unless that wake already started a new thread.
    !(WORK.load(Ordering::SeqCst) != 0
        && STATE
            .compare_exchange(NOT_STARTED, RUNNING, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok())
}

/// Sleeps until WORK is set or `ms` pass.
#[cfg(not(miri))]
fn wait_for_work(ms: u64) {
    crate::sync::futex_wait_for(&WORK, 0, ms * 1_000_000);
}

#[cfg(miri)]
fn wait_for_work(ms: u64) {
    sleep_ms(ms);
}

/// Central-list activity seen by the previous pass.
static LAST_OPS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// One look at every heap shard; returns whether another pass is due. When no shard handed out
/// a span and no central list was refilled or spilled since the previous pass, the program is
/// idle: the central transfer caches are sent home first, so the spans they kept in use can go
/// back to the OS with the rest.
fn pass() -> bool {
    let now = crate::os::now_ms();
    let ops = active_centrals().fold(0u64, |a, (_, c)| a.wrapping_add(c.ops()));
    let quiet = LAST_OPS.swap(ops, Ordering::Relaxed) == ops;
    if quiet && active_heaps().iter().all(|h| h.is_idle(now)) {
        for (class, c) in active_centrals() {
            c.drain(class);
        }
    }
    let mut more = false;
    for h in active_heaps() {
        more |= h.scavenge_aged(now);
    }
    // Objects waiting in transfer caches go home once the program is quiet: keep looking.
    more || active_centrals().any(|(_, c)| c.cached_objects() > 0)
}

fn sleep_ms(ms: u64) {
    let ts = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as _,
    };
    // SAFETY: valid timespec; an early wake-up only shortens one tick.
    unsafe { libc::nanosleep(&ts, core::ptr::null_mut()) };
}

/// In a `fork()` child the thread does not exist: let the next `wake` start a new one.
pub fn reset_after_fork_child() {
    STATE.store(NOT_STARTED, Ordering::Release);
    WORK.store(0, Ordering::Release);
    // The thread does not exist in the child; its tid may be reused there.
    #[cfg(feature = "gc")]
    TID.store(0, Ordering::Release);
}
