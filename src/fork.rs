//! `fork()` safety: every allocator lock is taken before `fork()` and released after it in
//! both processes (pthread_atfork), so a child forked while other threads were inside the
//! allocator finds no lock held by a thread that does not exist there.
//!
//! Owns: the three handlers and their one-time registration. The order of taking is the
//! allocator's lock order (registry, central classes ascending, heap, huge), so `prepare`
//! cannot deadlock against a thread that is allocating.

use crate::{huge, mcache, scavenger, CENTRAL, HEAP};
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

extern "C" fn prepare() {
    mcache::lock_registry_for_fork();
    for c in CENTRAL.iter() {
        c.lock_for_fork();
    }
    HEAP.lock_for_fork();
    huge::lock_for_fork();
}

extern "C" fn parent() {
    // SAFETY: `prepare` took every one of these locks on this thread.
    unsafe {
        huge::unlock_after_fork_parent();
        HEAP.unlock_after_fork_parent();
        for c in CENTRAL.iter().rev() {
            c.unlock_after_fork_parent();
        }
        mcache::unlock_registry_after_fork_parent();
    }
}

extern "C" fn child() {
    // SAFETY: we are the only thread of the new process.
    unsafe {
        huge::unlock_after_fork_child();
        HEAP.unlock_after_fork_child();
        for c in CENTRAL.iter() {
            c.unlock_after_fork_child();
        }
        mcache::reset_registry_after_fork_child();
    }
    scavenger::reset_after_fork_child();
}
