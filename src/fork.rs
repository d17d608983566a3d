//! `fork()` safety: every allocator lock is taken before `fork()` and released after it in
//! both processes (pthread_atfork), so a child forked while other threads were inside the
//! allocator finds no lock held by a thread that does not exist there.
//!
//! Owns: the three handlers and their one-time registration. The order of taking is the
//! allocator's lock order (registry, central classes ascending, heap, huge), so `prepare`
//! cannot deadlock against a thread that is allocating.

use crate::sync::RawLock;
use crate::{all_centrals, huge, mcache, scavenger, HEAPS};
use core::sync::atomic::{AtomicBool, Ordering};

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Registers the handlers once (called during the first thread cache's set-up).
pub fn install() {
    if !INSTALLED.swap(true, Ordering::AcqRel) {
        // SAFETY: the handlers are extern "C" functions that live forever.
        unsafe {
            libc::pthread_atfork(Some(prepare), Some(parent), Some(child));
        }
    }
}

/// Calls `f` on every allocator lock, in the allocator's lock order.
fn each_lock(mut f: impl FnMut(&dyn RawLock)) {
    f(mcache::registry_lock());
    for (_, c) in all_centrals() {
        f(c.lock_ref());
    }
    for h in &HEAPS {
        f(h.lock_ref());
    }
    f(huge::lock_ref());
}

extern "C" fn prepare() {
    each_lock(|l| l.raw_lock());
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
