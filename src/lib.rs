//! gomalloc: a drop-in global allocator built the way Go's runtime manages memory.
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: gomalloc::GoMalloc = gomalloc::GoMalloc;
//!
//! let v: Vec<u64> = (0..1000).collect();
//! assert_eq!(v.iter().sum::<u64>(), 499_500);
//! println!("{}", gomalloc::stats());
//! ```
//!
//! The layers, top to bottom (each module's docs say what it owns, its invariants, its locks):
//!
//! | Go's name   | module       | what it does |
//! |-------------|--------------|--------------|
//! | mallocgc    | `malloc`     | picks small / large / huge for a request |
//! | sizeclasses | [`size_class`] | 66 object sizes (+ class 0 = large), O(1) lookup |
//! | mcache      | `mcache`     | per-thread free lists, no locks |
//! | mcentral    | `mcentral`   | per-class lists of spans + transfer cache, one lock each |
//! | mheap       | `mheap`      | 8 KiB pages in 64 MiB arenas, free-run coalescing, scavenger |
//! | mspan       | `span`       | a run of pages and its descriptor pool |
//! | fixalloc    | `fixalloc`   | metadata cut from OS chunks, never unmapped |
//! | heapArena   | `pagemap`    | address -> span in O(1) |
//! | sysAlloc    | `os`         | mmap / munmap / madvise / mremap |
//! | MemStats    | `stats`      | Go's statistics |
//!
//! Huge requests (`HUGE_THRESHOLD` and up) are mapped on their own (`huge`); `scavenger` is the
//! background thread that returns long-idle pages to the OS; `fork` keeps the locks sane across
//! `fork()`; `sync` is the one place locks and atomics come from; `valgrind` describes blocks
//! to valgrind's memcheck (feature `valgrind`, no-ops without it).

#![deny(unsafe_op_in_unsafe_fn)]
// Under loom only the structures with models are built; the rest of their API goes unused.
#![cfg_attr(loom, allow(dead_code, unused_imports))]
#![allow(clippy::missing_safety_doc)]
// Loops over size classes index several parallel per-class tables; constructors are `const fn`
// for statics, where `Default` would not help.
#![allow(clippy::needless_range_loop, clippy::new_without_default)]

mod diag;
mod fixalloc;
#[doc(hidden)]
pub mod mcentral;
#[doc(hidden)]
pub mod mheap;
mod os;
#[doc(hidden)]
pub mod pagemap;
pub mod size_class;
#[doc(hidden)]
pub mod span;
mod sync;
mod valgrind;

use mcentral::MCentral;
use mheap::MHeap;
use size_class::NUM_CLASSES;

#[cfg(all(feature = "c-abi", not(loom)))]
mod cabi;
#[cfg(all(feature = "checked", not(loom)))]
mod check;
#[cfg(not(loom))]
mod fork;
#[cfg(all(feature = "gc", not(loom)))]
pub mod gc;
/// Under loom only the collector's stop-the-world handshake is built (the same file as in
/// `gc::stw`), for its model in `loom-tests/tests/stw.rs`.
#[cfg(loom)]
#[doc(hidden)]
pub mod gc {
    pub mod stw {
        pub mod handshake;
    }
}
#[cfg(not(loom))]
mod huge;
#[cfg(not(loom))]
mod malloc;
#[cfg(not(loom))]
mod mcache;
/// Under loom the thread cache is public so that the models in `loom-tests/` can drive it.
#[cfg(loom)]
#[doc(hidden)]
pub mod mcache;
#[cfg(not(loom))]
mod scavenger;
#[cfg(not(loom))]
pub mod stats;

/// Shards of the page heap. Each thread allocates spans from one shard (chosen round-robin
/// when its cache is set up, over at most as many shards as there are CPUs); a span goes
/// back to the shard that handed it out. Each shard has its own lock and arenas, and its own
/// central lists (`CENTRAL`), so threads on different shards do not queue behind one lock
/// (jemalloc's arenas).
#[cfg(not(loom))]
pub(crate) const NHEAPS: usize = 16;
/// Under loom, one shard: the models' threads then meet on the same central lists and heap
/// (cross-shard homing has its own model on `mcentral`).
#[cfg(loom)]
pub(crate) const NHEAPS: usize = 1;
sync::global! {
    pub(crate) static HEAPS: [MHeap; NHEAPS] = sync::array![MHeap::new_global(); NHEAPS];
}
sync::global! {
    /// Central lists: one per size class for each heap shard. A thread's cache refills from
    /// and spills to its shard's lists (so threads on different shards do not meet on a lock);
    /// an object always goes home to the list whose span holds it.
    pub(crate) static CENTRAL: [[MCentral; NUM_CLASSES]; NHEAPS] =
        sync::array![sync::array![MCentral::new(); NUM_CLASSES]; NHEAPS];
}

/// The central lists of the shards in use (see `mcache::active_shards`).
pub(crate) fn active_centrals() -> impl Iterator<Item = (usize, &'static MCentral)> {
    centrals_of(mcache::active_shards())
}

/// The central lists of the first `shards` shards, with their classes.
pub(crate) fn centrals_of(shards: usize) -> impl Iterator<Item = (usize, &'static MCentral)> {
    let all: &'static [[MCentral; NUM_CLASSES]; NHEAPS] = &CENTRAL;
    all.iter()
        .take(shards)
        .flat_map(|shard| shard.iter().enumerate().skip(1))
}

/// The heap shards in use.
pub(crate) fn active_heaps() -> &'static [MHeap] {
    let all: &'static [MHeap; NHEAPS] = &HEAPS;
    &all[..mcache::active_shards()]
}

/// What the loom models in `loom-tests/` look at besides the thread cache: the globals of the
/// current model execution.
#[cfg(loom)]
#[doc(hidden)]
pub mod model {
    pub use crate::mcache;
    use crate::mcentral::MCentral;
    use crate::mheap::MHeap;

    /// The page-heap shards.
    pub fn heaps() -> &'static [MHeap] {
        crate::active_heaps()
    }

    /// The central list of `class` in shard 0.
    pub fn central(class: usize) -> &'static MCentral {
        &crate::CENTRAL[0][class]
    }
}

#[cfg(not(loom))]
pub use api::*;

#[cfg(not(loom))]
mod api {
    use crate::{active_centrals, active_heaps, malloc, mcache};
    use core::alloc::{GlobalAlloc, Layout};

    pub use crate::malloc::HUGE_THRESHOLD;
    pub use crate::stats::{BySize, MemStats};

    /// The allocator. Install it with
    /// `#[global_allocator] static GLOBAL: gomalloc::GoMalloc = gomalloc::GoMalloc;`.
    #[derive(Clone, Copy, Debug, Default)]
    pub struct GoMalloc;

    // SAFETY: every method returns memory that is valid for the layout and aligned to it, or
    // null; blocks never overlap; dealloc/realloc accept exactly what alloc handed out.
    unsafe impl GlobalAlloc for GoMalloc {
        #[inline(always)]
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            malloc::alloc(layout.size(), layout.align())
        }

        #[inline(always)]
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: the GlobalAlloc contract: `ptr` came from us with this layout.
            unsafe { malloc::dealloc(ptr, layout.size(), layout.align()) }
        }

        #[inline]
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            malloc::alloc_zeroed(layout.size(), layout.align())
        }

        #[inline]
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: the GlobalAlloc contract: `ptr` came from us with `layout`, and
            // `new_size` rounded to the alignment fits in isize.
            unsafe { malloc::realloc(ptr, layout.size(), layout.align(), new_size) }
        }
    }

    /// Reads the statistics (Go's `runtime.ReadMemStats`).
    pub fn stats() -> MemStats {
        crate::stats::read()
    }

    /// Returns this thread's cached free objects to the central lists.
    pub fn flush_thread_cache() {
        mcache::flush_current();
    }

    /// Go's `debug.FreeOSMemory`: flushes this thread's cache, sends the central transfer
    /// caches home to their spans, and returns every idle page to the OS.
    pub fn release_memory() {
        mcache::flush_current();
        for (class, c) in active_centrals() {
            c.drain(class);
        }
        for h in active_heaps() {
            h.scavenge_all();
        }
    }

    /// Usable bytes of a live block returned by gomalloc (0 for a pointer it does not know).
    /// With the `valgrind` feature, memcheck still holds the program to the size it asked for
    /// (a write past it is reported; grow with `realloc` instead).
    ///
    /// # Safety
    /// `ptr` is a live block of gomalloc's, or any pointer gomalloc never returned (then 0).
    pub unsafe fn usable_size(ptr: *const u8) -> usize {
        malloc::usable_size(ptr)
    }

    /// Number of threads whose caches are registered now (for tests and diagnostics).
    pub fn live_thread_caches() -> usize {
        mcache::live_caches()
    }
}
