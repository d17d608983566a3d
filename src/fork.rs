//! `fork()` safety: every allocator lock is taken before `fork()` and released after it in
//! both processes (pthread_atfork), so a child forked while other threads were inside the
//! allocator finds no lock held by a thread that does not exist there.
//!
//! Owns: the three handlers and their one-time registration, and `FORK_SHARDS`. The order of
//! taking is the allocator's lock order (registry, central classes ascending, heap, huge), so
//! `prepare` cannot deadlock against a thread that is allocating.
//!
//! Only the shards in use are locked (`mcache::active_shards`, read once the registry lock is
//! held: the shard count is only ever set under that lock, and no thread uses a shard at or
//! above it). Locking all 16 shards' central lists would write about 435 pages of lock words
//! on every fork, which the parent and the child then each copy on their next write to them.

// Under Miri nothing is registered (see `install`): the handlers are built but unused.
#![cfg_attr(miri, allow(dead_code, unused_imports))]

use crate::sync::RawLock;
use crate::{centrals_of, huge, mcache, scavenger, HEAPS};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// How many shards `prepare` locked, so that `parent` and `child` release exactly those.
static FORK_SHARDS: AtomicUsize = AtomicUsize::new(0);

/// Registers the handlers once (called during the first thread cache's set-up). Not under
/// Miri, which can neither fork nor register `pthread_atfork` handlers.
#[cfg(miri)]
pub fn install() {}

/// Registers the handlers once (called during the first thread cache's set-up).
#[cfg(not(miri))]
pub fn install() {
    if !INSTALLED.swap(true, Ordering::AcqRel) {
        // SAFETY: the handlers are extern "C" functions that live forever.
        unsafe {
            libc::pthread_atfork(Some(prepare), Some(parent), Some(child));
        }
    }
}

/// Calls `f` on every allocator lock of the first `shards` shards, in the allocator's lock
/// order, after the registry lock.
fn each_lock_after_registry(shards: usize, mut f: impl FnMut(&dyn RawLock)) {
    for (_, c) in centrals_of(shards) {
        f(c.lock_ref());
    }
    for h in HEAPS.iter().take(shards) {
        f(h.lock_ref());
    }
    f(huge::lock_ref());
}

/// Calls `f` on every lock `prepare` took.
fn each_lock(mut f: impl FnMut(&dyn RawLock)) {
    f(mcache::registry_lock());
    each_lock_after_registry(FORK_SHARDS.load(Ordering::Relaxed), f);
}

extern "C" fn prepare() {
    mcache::registry_lock().raw_lock();
    let shards = mcache::active_shards();
    FORK_SHARDS.store(shards, Ordering::Relaxed);
    each_lock_after_registry(shards, |l| l.raw_lock());
}

extern "C" fn parent() {
    // SAFETY: `prepare` took every one of these locks on this thread (release order does not
    // matter for deadlock freedom).
    each_lock(|l| unsafe { l.raw_unlock() });
}

extern "C" fn child() {
    // SAFETY: we are the only thread of the new process.
    each_lock(|l| unsafe { l.force_unlock() });
    // SAFETY: as above; every lock is free again.
    unsafe { mcache::reset_registry_after_fork_child() };
    mcache::reset_key_after_fork_child();
    scavenger::reset_after_fork_child();
}
