//! Per-thread caches of GC slots (Go's `mcache`, for the GC heap): a small GC object is popped
//! from this thread's list for its size class without a lock; only a refill takes `GC_HEAP`.
//!
//! Owns: each thread's [`GcCache`] (a thread-local) and the registry of caches, which the
//! collector walks while the world is stopped.
//!
//! A cached slot is *reserved*: its alloc bit is set and it is counted in the heap's `live`
//! and `nmalloc` (so the pacer sees it, as Go's sees whole cached spans), its first word links
//! it to the next cached slot of the list, and the rest is zeroed by the refill once it has
//! released `GC_HEAP` (before it returns). Handing a slot out clears the link.
//!
//! Invariants the collector relies on:
//! - a refill publishes its list in the thread-local before it releases `GC_HEAP`; since a
//!   cycle takes `GC_HEAP` before it stops the world, a stopped thread's reserved slots are all
//!   on its lists, or the one being handed out is in its registers or on its stack;
//! - a pop stores the new head before it clears the handed-out slot's link (a compiler fence
//!   keeps that order, which is all a signal handler on the same thread can observe), so a
//!   walk from the head a stopped thread left always reaches every slot still cached.
//!
//! The collector marks every cached slot first, before any root is scanned, and never scans
//! it (it holds a link and zeros, or, in a thread stopped inside its refill's zeroing, a dead
//! object's old words), so the sweep keeps them; a concurrent mark does so in its first pause as well, so
//! that every slot handed out during the mark is black (Go allocates black; a refill during
//! the mark reserves marked slots, see `GcHeap::alloc_batch`). At thread exit the cache gives its slots back
//! (`GcHeap::unreserve`) and leaves the registry. A child of `fork` keeps only the forking
//! thread's cache registered; the slots of the other threads' caches are not marked there any
//! more and the child's first sweep frees them.
//!
//! Each cache also holds the thread's barrier buffer for concurrent marking: words a
//! `GcCell::set`/`write_barrier` or `Gc::new` shaded, appended without a lock and handed to
//! the markers'
//! pool when full, at thread exit, and by mark termination (world stopped). Entries are zeroed
//! once used: the buffer lies in scanned TLS.
//!
//! Locks: `CACHES` (the registry), taken alone to register, and after `GC_HEAP` by the
//! collector and by a cache at thread exit. A flush takes the markers' pool lock alone.

use super::heap::{find_object, GC_HEAP};
use crate::size_class::{self, NUM_CLASSES};
use crate::sync::Mutex;
use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{compiler_fence, AtomicU32, Ordering};

/// Bytes a refill reserves at most (and at least one object). 32 KiB, not 8: on 16 CPUs with
/// 16 allocating threads, binary-trees ran 1.2-1.3x faster (fewer refills queue on
/// `GC_HEAP`), for a few more slots to mark per thread in the pauses.
const REFILL_BYTES: usize = 32 << 10;
/// Objects a refill reserves at most.
const REFILL_OBJECTS: usize = 2048;

/// Words a thread's barrier buffer holds before it is flushed to the markers.
const WB_CAP: usize = 256;

/// One thread's cached slots: a list head and a count per (noscan, size class).
pub struct GcCache {
    lists: [[*mut u8; NUM_CLASSES]; 2],
    /// Slots on each list (written by the owner only; read by `stats`).
    counts: [[AtomicU32; NUM_CLASSES]; 2],
    /// The barrier buffer: pointers this thread stored into GC objects (or into a new object,
    /// `Gc::new`) during a concurrent mark, not yet marked (`shade`). Written by the owner;
    /// read and emptied by the collector while the owner is stopped.
    wb: [usize; WB_CAP],
    wb_len: usize,
    registered: bool,
    next: *mut GcCache,
    prev: *mut GcCache,
}

/// Where this thread's cache lies (its address and size), for the root scan to skip it in
/// every thread (`roots::Segments`); `None` while the thread-local is being destroyed.
pub fn own_range() -> Option<(usize, usize)> {
    CACHE
        .try_with(|l| (l.0.get().addr(), core::mem::size_of::<GcCache>()))
        .ok()
}

/// The registry: a doubly linked list of the registered caches.
struct Registry {
    head: *mut GcCache,
}

// SAFETY: the pointers are thread-locals of live threads, used under the registry's lock (and,
// for another thread's cache, only while that thread is stopped).
unsafe impl Send for Registry {}

static CACHES: Mutex<Registry> = Mutex::new(Registry {
    head: ptr::null_mut(),
});

/// The thread-local wrapper whose destructor gives the slots back.
struct Local(UnsafeCell<GcCache>);

impl Drop for Local {
    fn drop(&mut self) {
        let c = self.0.get();
        // SAFETY: our own cache, at thread exit: nothing else of this thread runs.
        unsafe { give_back(c) };
    }
}

std::thread_local! {
    static CACHE: Local = const {
        Local(UnsafeCell::new(GcCache {
            lists: [[ptr::null_mut(); NUM_CLASSES]; 2],
            counts: [const { [const { AtomicU32::new(0) }; NUM_CLASSES] }; 2],
            wb: [0; WB_CAP],
            wb_len: 0,
            registered: false,
            next: ptr::null_mut(),
            prev: ptr::null_mut(),
        }))
    };
}

/// How many slots a refill of `class` reserves.
fn batch(class: usize) -> usize {
    (REFILL_BYTES / size_class::class_size(class)).clamp(1, REFILL_OBJECTS)
}

/// Bytes a refill of `class` reserves.
pub fn refill_bytes(class: usize) -> usize {
    batch(class) * size_class::class_size(class)
}

/// A zeroed small object of `class` for this thread, and whether the heap reached its goal
/// (the caller then runs a cycle). Falls back to the locked path when the thread-local is gone
/// (during thread exit). Not async-signal-safe: a signal handler must not allocate GC objects
/// (a refill takes a lock, and publishes its slots before it zeroes them).
#[inline]
pub fn alloc(class: usize, noscan: bool, goal: usize) -> (*mut u8, bool) {
    let Ok(c) = CACHE.try_with(|l| l.0.get()) else {
        let mut h = GC_HEAP.lock();
        let p = h.alloc_class(class, 0, noscan);
        return (p, h.over(goal));
    };
    let n = noscan as usize;
    // SAFETY: this thread's own cache; only this thread writes it (the collector reads it
    // while this thread is stopped).
    unsafe {
        let head = (*c).lists[n][class];
        if !head.is_null() {
            let next = head.cast::<*mut u8>().read();
            (*c).lists[n][class] = next;
            // The new head is stored before the link is cleared (see the module docs).
            compiler_fence(Ordering::SeqCst);
            head.cast::<*mut u8>().write(ptr::null_mut());
            let k = &(*c).counts[n][class];
            k.store(k.load(Ordering::Relaxed) - 1, Ordering::Relaxed);
            return (head, false);
        }
        refill(c, class, noscan, goal)
    }
}

/// Reserves a batch of slots under `GC_HEAP`, publishes all but one on the list, and hands
/// that one out.
///
/// # Safety
/// `c` is this thread's cache and its list for `(noscan, class)` is empty.
#[cold]
unsafe fn refill(c: *mut GcCache, class: usize, noscan: bool, goal: usize) -> (*mut u8, bool) {
    // SAFETY: precondition: our own cache.
    if unsafe { !(*c).registered } {
        // SAFETY: as above.
        unsafe { register(c) };
    }
    let n = noscan as usize;
    let mut h = super::stw::lock_at_safepoint(&GC_HEAP);
    let mut first: *mut u8 = ptr::null_mut();
    let mut head: *mut u8 = ptr::null_mut();
    let mut count = 0u32;
    h.alloc_batch(class, noscan, batch(class), |p| {
        if first.is_null() {
            first = p;
        } else {
            // SAFETY: a fresh slot of ours: its first word becomes the link.
            unsafe { p.cast::<*mut u8>().write(head) };
            head = p;
            count += 1;
        }
    });
    if first.is_null() {
        return (first, false);
    }
    // SAFETY: our own cache; published before the lock is released (see the module docs).
    unsafe {
        (*c).lists[n][class] = head;
        (*c).counts[n][class].store(count, Ordering::Relaxed);
    }
    let over = h.over(goal);
    drop(h);
    // Zeroed outside the lock: the slots are this thread's (reserved, on its list or in
    // `first`), and nothing reads a reserved slot's contents but its link (the collector marks
    // cached slots without scanning them; a conservative word that reaches one before it is
    // zeroed retains what it holds for a cycle at most).
    let size = size_class::class_size(class);
    // SAFETY: `first` and every slot on the new list are reserved slots of `size` bytes,
    // 8-byte aligned, that only this thread uses; each list slot's first word is its link.
    unsafe {
        super::heap::zero(first, size);
        let mut p = head;
        while !p.is_null() {
            let next = p.cast::<*mut u8>().read();
            super::heap::zero(p.add(8), size - 8);
            p = next;
        }
    }
    (first, over)
}

/// Adds this thread's cache to the registry.
///
/// # Safety
/// `c` is the calling thread's cache.
unsafe fn register(c: *mut GcCache) {
    let mut r = CACHES.lock();
    // SAFETY: precondition; the registry's records are live caches, under its lock.
    unsafe {
        (*c).registered = true;
        (*c).prev = ptr::null_mut();
        (*c).next = r.head;
        if !r.head.is_null() {
            (*r.head).prev = c;
        }
    }
    r.head = c;
}

/// Queues the GC object `w` points into (if any and not yet marked) for the concurrent mark:
/// the write barrier's and a new object's shading (Dijkstra's insertion barrier: the object a
/// pointer is stored to turns grey). Called only while `mark::marking()`.
///
/// A word is appended to the buffer before the count covers it (a compiler fence keeps the
/// order a signal handler sees): a thread stopped in between still holds `w` in a register or
/// on its stack, which mark termination scans. Nothing here sets a mark bit, so no object is
/// ever marked without being queued.
#[inline]
pub fn shade(w: usize) {
    if let Some((g, i)) = find_object(w) {
        // SAFETY: a live record (GC spans stay GC spans while the mark runs).
        if unsafe { (*g).is_marked(i) } {
            return;
        }
    } else {
        return;
    }
    push(w);
}

/// Appends the entry `w` to this thread's barrier buffer.
#[inline]
fn push(w: usize) {
    let Ok(c) = CACHE.try_with(|l| l.0.get()) else {
        super::mark::mark_into_pool(&[w]);
        return;
    };
    // SAFETY: this thread's own cache (the collector reads it only while we are stopped).
    unsafe {
        if !(*c).registered {
            register(c);
        }
        let n = (*c).wb_len;
        if n >= WB_CAP {
            flush(c);
            return push(w);
        }
        (*c).wb[n] = w;
        compiler_fence(Ordering::SeqCst);
        (*c).wb_len = n + 1;
        if n + 1 == WB_CAP {
            flush(c);
        }
    }
}

/// Hands this thread's barrier buffer to the markers and empties it.
///
/// # Safety
/// `c` is the calling thread's cache.
#[cold]
unsafe fn flush(c: *mut GcCache) {
    // SAFETY: precondition; the entries below `wb_len` were written by us.
    unsafe {
        let n = (*c).wb_len.min(WB_CAP);
        if n == 0 {
            return;
        }
        super::mark::mark_into_pool(&(&(*c).wb)[..n]);
        compiler_fence(Ordering::SeqCst);
        (*c).wb_len = 0;
        // The buffer is in thread-local storage, which is scanned as a root: stale entries
        // would keep their objects alive in later cycles.
        (&mut (*c).wb)[..n].fill(0);
    }
}

/// At thread exit: gives every cached slot back and leaves the registry.
///
/// # Safety
/// `c` is the exiting thread's cache.
unsafe fn give_back(c: *mut GcCache) {
    // SAFETY: precondition.
    if unsafe { !(*c).registered } {
        return;
    }
    // The shaded objects of a concurrent mark go to the markers (dropped if none runs).
    // SAFETY: our own cache.
    unsafe { flush(c) };
    let mut h = GC_HEAP.lock();
    for n in 0..2 {
        for class in 1..NUM_CLASSES {
            // SAFETY: our own cache's lists of reserved slots, nobody else's.
            unsafe {
                let mut p = (*c).lists[n][class];
                while !p.is_null() {
                    let next = p.cast::<*mut u8>().read();
                    p.cast::<*mut u8>().write(ptr::null_mut());
                    h.unreserve(p);
                    p = next;
                }
                (*c).lists[n][class] = ptr::null_mut();
                (*c).counts[n][class].store(0, Ordering::Relaxed);
            }
        }
    }
    let mut r = CACHES.lock();
    // SAFETY: `c` and its neighbours are registered caches, under the registry's lock.
    unsafe {
        if (*c).prev.is_null() {
            r.head = (*c).next;
        } else {
            (*(*c).prev).next = (*c).next;
        }
        if !(*c).next.is_null() {
            (*(*c).next).prev = (*c).prev;
        }
        (*c).registered = false;
    }
    drop(r);
    drop(h);
}

/// The registry, locked (by the collector, before the world stops).
pub struct Caches(crate::sync::MutexGuard<'static, Registry>);

pub fn lock() -> Caches {
    Caches(CACHES.lock())
}

impl Caches {
    /// Marks every cached slot of every thread, so the sweep keeps them. The world is
    /// stopped (or the caches' threads otherwise quiet) and `GC_HEAP` held.
    pub fn mark_all(&self) {
        // A list's slots mostly come from one span, in order: the span of the last slot is
        // tried first (no page-map lookup), and its mark bits are gathered per bitmap word
        // and set with one atomic OR (a pause with many threads walks many slots).
        let mut g: *mut super::heap::GcSpan = ptr::null_mut();
        let (mut lo, mut hi) = (0usize, 0usize);
        let (mut word, mut bits) = (0usize, 0u64);
        let flush = |g: *mut super::heap::GcSpan, word: usize, bits: u64| {
            if bits != 0 {
                // SAFETY: a live record, under `GC_HEAP`, held by the caller.
                unsafe { (*g).set_marks(word, bits) };
            }
        };
        self.for_each_slot(|p| {
            let a = p.addr();
            if a.wrapping_sub(lo) >= hi - lo {
                let Some((h, _)) = find_object(a) else {
                    return;
                };
                flush(g, word, bits);
                bits = 0;
                g = h;
                // SAFETY: a live record and its live span.
                unsafe {
                    lo = (*(*g).span).start.addr();
                    hi = lo + (*g).nelems * (*g).size;
                }
            }
            // SAFETY: `a` lies in `g`'s objects.
            let i = unsafe { (*g).index_of(a - lo) };
            if i / 64 != word {
                flush(g, word, bits);
                (word, bits) = (i / 64, 0);
            }
            bits |= 1 << (i % 64);
        });
        flush(g, word, bits);
    }

    /// Marks what every thread's barrier buffer holds (queueing it on `grey`) and empties the
    /// buffers: at mark termination, with the world stopped.
    pub fn drain_barrier_buffers(&self, grey: &mut super::mark::GreyStack) {
        self.empty_barrier_buffers(|e| super::mark::mark_word(e, grey));
    }

    /// Empties every thread's barrier buffer, dropping what it holds: at the start of a cycle,
    /// with the world stopped. Entries are left only by a thread caught in the barrier across
    /// the previous mark's end (they belong to no mark any more); kept, they would hold
    /// objects alive from scanned TLS, for good once concurrent marking is turned off.
    pub fn clear_barrier_buffers(&self) {
        self.empty_barrier_buffers(|_| {});
    }

    fn empty_barrier_buffers(&self, mut f: impl FnMut(usize)) {
        let mut c = self.0.head;
        while !c.is_null() {
            // SAFETY: a registered cache under the registry's lock whose thread is stopped or
            // is the caller; its entries below `wb_len` are words it wrote.
            unsafe {
                let n = (*c).wb_len.min(WB_CAP);
                for &e in &(&(*c).wb)[..n] {
                    f(e);
                }
                (*c).wb_len = 0;
                (&mut (*c).wb)[..n].fill(0);
                c = (*c).next;
            }
        }
    }

    /// Cached slots and their bytes, over all threads (read racily: for statistics).
    pub fn totals(&self) -> (u64, usize) {
        let (mut n, mut bytes) = (0u64, 0usize);
        let mut c = self.0.head;
        while !c.is_null() {
            // SAFETY: a registered cache, under the registry's lock; the counts are atomics.
            let counts = unsafe { &(*c).counts };
            for list in counts {
                for (class, cnt) in list.iter().enumerate().skip(1) {
                    let m = cnt.load(Ordering::Relaxed) as usize;
                    n += m as u64;
                    bytes += m * size_class::class_size(class);
                }
            }
            // SAFETY: as above.
            c = unsafe { (*c).next };
        }
        (n, bytes)
    }

    fn for_each_slot(&self, mut f: impl FnMut(*mut u8)) {
        let mut c = self.0.head;
        while !c.is_null() {
            // SAFETY: a registered cache under the registry's lock whose thread is stopped or
            // is the caller; its lists are made of reserved slots linked by their first word.
            unsafe {
                for n in 0..2 {
                    for class in 1..NUM_CLASSES {
                        let mut p = (*c).lists[n][class];
                        while !p.is_null() {
                            f(p);
                            p = ptr::read_volatile(p.cast::<*mut u8>());
                        }
                    }
                }
                c = (*c).next;
            }
        }
    }
}

/// The registry's lock, for the fork handlers.
pub fn lock_ref() -> &'static dyn crate::sync::RawLock {
    &CACHES
}

/// In a `fork` child: only the forking thread's cache stays registered (the others' threads
/// do not exist there).
pub fn reset_after_fork_child() {
    let me = CACHE.try_with(|l| l.0.get()).unwrap_or(ptr::null_mut());
    let mut r = CACHES.lock();
    r.head = ptr::null_mut();
    // SAFETY: our own cache, in the child's only thread.
    unsafe {
        if !me.is_null() && (*me).registered {
            (*me).next = ptr::null_mut();
            (*me).prev = ptr::null_mut();
            r.head = me;
        }
    }
}
