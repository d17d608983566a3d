//! The thread cache (Go's `mcache`): per thread, one free list per size class.
//!
//! Owns: this thread's cached free objects, its allocation counters, the registry of live
//! caches (so `stats()` can merge counters), and the thread-exit hook that returns a cache in
//! full when its thread ends.
//!
//! Fast path and fallback in one sentence: `alloc` pops the class's list and `free` pushes onto
//! it, with no lock and no atomic read-modify-write (the counters are relaxed load + store by
//! their one writer); an empty list refills a whole batch from the central list, and a list
//! over its bound spills a batch back. A list starts unprimed (bound 0): until the thread
//! first refills it, or has freed a batch into it, its frees are objects other threads
//! allocated and go home to the central list, so a thread never starts out reusing a foreign
//! object whose neighbours other threads are writing (Hoard's cache-scratch false sharing).
//! Primed bounds start at two batches; a list that keeps overflowing grows a batch at a time
//! while the thread's `GROWTH_BUDGET` (1 MiB of objects) lasts, so a thread that frees many
//! objects of one size and allocates them again keeps them.
//!
//! Thread life cycle. Each thread has one const-initialised `thread_local!` pointer without
//! `Drop` (`CURRENT`), so touching it never allocates or registers a destructor, and it works
//! before `main`, after other TLS destructors and inside them. It points at:
//! - `UNINIT_CACHE`, a static placeholder whose lists are all empty with bound 0, so the first
//!   alloc or free takes the slow path. That path takes a cache node from the registry's pool,
//!   registers it, arms the exit hook (a pthread key destructor; glibc runs those after the
//!   `thread_local!`/C++ TLS destructors, so their frees are cached and then flushed too) and
//!   points `CURRENT` at the node (state `ACTIVE`).
//! - `DEAD_CACHE`, another placeholder (state `DIRECT`), while the node is being set up and
//!   after the exit hook has flushed and retired it: every operation then goes straight to the
//!   central list, one object at a time.
//!
//! Nodes live in memory mapped for them and are never unmapped, only recycled through the
//! registry's free list after their thread retired them. So the registry never points into a
//! thread's TLS: a thread whose exit hook never runs (one that first allocates in the last round
//! of pthread key destructors) leaks its node and cached objects, but `stats()` stays sound.
//! The placeholders are never written: every path that writes checks for `ACTIVE` first.
//!
//! Remote frees: an object freed on a thread other than the one that allocated it simply joins
//! the freeing thread's list; batches of them travel through the central transfer cache to
//! whichever thread next runs dry (see `mcentral`).
//!
//! Large spans: a few freed large spans (up to `LARGE_SPAN_MAX_PAGES` each, `LARGE_CACHE_BYTES`
//! in all) are kept per thread and reused for a request of exactly their page count, so a
//! program that cycles through same-sized buffers skips the heap lock. They stay in use as far
//! as the page heap knows, and go back to it when the thread exits or the cache is flushed.
//!
//! Free objects are linked through their first word, touched only through `span::free_link`
//! and `span::set_free_link` (which tell memcheck, with the `valgrind` feature).
//!
//! Locks: none on the fast path. The registry lock is taken to register, retire and read
//! counters, never while a central or heap lock is held.
//!
//! Under `--cfg loom` the module is public and its statics are loom lazy statics (fresh for each
//! model execution); there are no pthread keys, so a model thread calls [`exit_thread`] last and
//! the key is a counter of creations. The models are in `loom-tests/tests/mcache.rs`.

use crate::fixalloc::FixAlloc;
use crate::mcentral::Batch;
use crate::mheap::MHeap;
use crate::size_class::{self, CLASS_BATCH, NUM_CLASSES, PAGE_SHIFT};
use crate::span::{self, Span};
use crate::sync::{self, const_fn, AtomicU32, AtomicU64, AtomicU8, Mutex, Ordering};
use crate::{CENTRAL, HEAPS, NHEAPS};
use core::cell::Cell;
use core::ptr;

const UNINIT: u8 = 0;
const ACTIVE: u8 = 1;
const DIRECT: u8 = 2;

/// One class's list plus its counters.
#[repr(C)]
pub struct ClassCache {
    head: Cell<*mut u8>,
    len: Cell<u32>,
    /// Bound on `len`; 0 while the class is unprimed (see `push_overflowing`).
    max: Cell<u32>,
    /// Objects freed while unprimed, sent home.
    homed: Cell<u32>,
    /// Objects allocated / freed by this thread (read by other threads in `stats()`).
    nmalloc: AtomicU64,
    nfree: AtomicU64,
}

impl ClassCache {
    const_fn! {
        fn new() -> Self {
            ClassCache {
                head: Cell::new(ptr::null_mut()),
                len: Cell::new(0),
                max: Cell::new(0),
                homed: Cell::new(0),
                nmalloc: AtomicU64::new(0),
                nfree: AtomicU64::new(0),
            }
        }
    }
}

/// Adds one to a counter that only this thread writes: no read-modify-write instruction.
#[inline(always)]
fn bump(c: &AtomicU64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
}

/// How far, in bytes of objects, one thread's list bounds may grow past `2 * batch` each.
const GROWTH_BUDGET: usize = 1 << 20;

/// Large spans kept per thread: at most this many, this big each, this much in all.
/// A thread's first batch of a class is about this many bytes (at least 2 objects, at most a
/// full batch); see `MCache::refill`.
const SLOW_START_BYTES: usize = 8 << 10;
const LARGE_SLOTS: usize = 8;
const LARGE_SPAN_MAX_PAGES: usize = 128;
const LARGE_CACHE_BYTES: usize = 2 << 20;

#[repr(C, align(128))]
pub struct MCache {
    /// Index 0 is unused as a list; its counters count large objects.
    lists: [ClassCache; NUM_CLASSES],
    /// Cached large spans with their page counts (0 = empty slot).
    large: [Cell<(usize, *mut Span)>; LARGE_SLOTS],
    large_bytes: Cell<usize>,
    /// Bytes by which list bounds have grown past their starting `2 * batch`.
    grown: Cell<usize>,
    /// Bytes of large objects allocated / freed by this thread.
    large_alloc_bytes: AtomicU64,
    large_freed_bytes: AtomicU64,
    state: Cell<u8>,
    /// The page-heap shard this thread takes spans from (index into `HEAPS`).
    heap: Cell<u8>,
    /// Registry links, only touched under the registry lock.
    next: Cell<*const MCache>,
    prev: Cell<*const MCache>,
}

// SAFETY: other threads reach a cache only through the registry, under its lock, and then only
// touch the atomic counters and the registry links (which the lock guards); the `Cell` lists
// are touched by the owning thread alone; the two static placeholders are never written.
unsafe impl Sync for MCache {}

impl MCache {
    const_fn! {
        fn new(state: u8) -> Self {
            MCache {
                lists: sync::array![ClassCache::new(); NUM_CLASSES],
                large: [const { Cell::new((0, ptr::null_mut())) }; LARGE_SLOTS],
                large_bytes: Cell::new(0),
                grown: Cell::new(0),
                large_alloc_bytes: AtomicU64::new(0),
                large_freed_bytes: AtomicU64::new(0),
                state: Cell::new(state),
                heap: Cell::new(0),
                next: Cell::new(ptr::null()),
                prev: Cell::new(ptr::null()),
            }
        }
    }
}

sync::global! {
    /// What a thread points at before its first call (see the module docs); never written.
    static UNINIT_CACHE: MCache = MCache::new(UNINIT);
}
sync::global! {
    /// What a thread points at while setting up and after retiring; never written.
    static DEAD_CACHE: MCache = MCache::new(DIRECT);
}

/// The placeholder for threads that have not set up their cache.
#[cfg(loom)]
fn uninit_cache() -> &'static MCache {
    &UNINIT_CACHE
}

/// The placeholder for threads without a usable cache.
#[inline]
fn dead_cache() -> &'static MCache {
    &DEAD_CACHE
}

#[cfg(not(loom))]
thread_local! {
    /// This thread's cache: a registry node once activated, else a static placeholder.
    static CURRENT: Cell<*const MCache> = const { Cell::new(&UNINIT_CACHE) };
}
// Under loom: loom's thread-local, fresh for each model thread of each execution.
#[cfg(loom)]
loom::thread_local! {
    static CURRENT: Cell<*const MCache> = Cell::new(uninit_cache());
}

/// Runs `f` on this thread's cache.
#[inline(always)]
fn with_cache<R>(f: impl FnOnce(&'static MCache) -> R) -> R {
    CURRENT.with(|c| {
        // SAFETY: CURRENT always points at a static placeholder or a registry node, and nodes
        // are never unmapped.
        f(unsafe { &*c.get() })
    })
}

/// Points this thread at `c`.
fn set_current(c: *const MCache) {
    CURRENT.with(|cur| cur.set(c));
}

sync::global! {
    /// Counters of caches that have gone (and of DIRECT-mode operations), per class; class 0
    /// counts large objects.
    static RETIRED: [[AtomicU64; 2]; NUM_CLASSES] =
        sync::array![sync::array![AtomicU64::new(0); 2]; NUM_CLASSES];
}
sync::global! {
    /// Bytes of large objects allocated / freed by gone caches and in DIRECT mode.
    static RETIRED_LARGE_BYTES: [AtomicU64; 2] = sync::array![AtomicU64::new(0); 2];
}

/// The live cache nodes (for `stats()`), and the pool that makes and recycles nodes.
struct Registry {
    head: *const MCache,
    /// Where nodes come from and retired ones go back to.
    nodes: FixAlloc,
}
// SAFETY: the pointers name nodes in memory that is never unmapped; only used under the lock.
unsafe impl Send for Registry {}

sync::global! {
    static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
        head: ptr::null(),
        nodes: FixAlloc::new(core::mem::size_of::<MCache>()),
    });
}

impl Registry {
    /// A fresh `ACTIVE` node linked into the registry, or null if the OS refuses memory.
    fn new_node(&mut self) -> *const MCache {
        let node = self.nodes.alloc() as *mut MCache;
        if node.is_null() {
            return ptr::null();
        }
        // SAFETY: `node` is unused, aligned memory for one MCache (chunks are page-aligned and
        // the size is a multiple of the alignment); nobody else can reach it.
        unsafe {
            node.write(MCache::new(ACTIVE));
            (*node).next.set(self.head);
            if !self.head.is_null() {
                (*self.head).prev.set(node);
            }
        }
        self.head = node;
        node
    }
}

/// Allocates one object of `class`. Null only if the OS refused memory.
#[inline(always)]
pub fn alloc(class: usize) -> *mut u8 {
    with_cache(|c| {
        debug_assert!(class > 0 && class < NUM_CLASSES);
        // SAFETY: class comes from the size-class tables, so it is in bounds.
        let l = unsafe { c.lists.get_unchecked(class) };
        let h = l.head.get();
        if !h.is_null() {
            // SAFETY: a cached object is free and holds the link to the next one.
            l.head.set(unsafe { span::free_link(h) });
            l.len.set(l.len.get() - 1);
            bump(&l.nmalloc);
            return h;
        }
        alloc_slow(c, class)
    })
}

/// Frees an object of `class`.
///
/// # Safety
/// `p` was allocated for `class` by this allocator and is not used any more.
#[inline(always)]
pub unsafe fn free(class: usize, p: *mut u8) {
    with_cache(|c| {
        debug_assert!(class > 0 && class < NUM_CLASSES);
        // SAFETY: class comes from the size-class tables, so it is in bounds.
        let l = unsafe { c.lists.get_unchecked(class) };
        let len = l.len.get();
        if len < l.max.get() {
            // SAFETY: the object is free (precondition) and at least 8 bytes.
            unsafe { span::set_free_link(p, l.head.get()) };
            l.head.set(p);
            l.len.set(len + 1);
            bump(&l.nfree);
            return;
        }
        // SAFETY: forwarded precondition.
        unsafe { free_slow(c, class, p) }
    })
}

#[cold]
#[inline(never)]
fn alloc_slow(c: &'static MCache, class: usize) -> *mut u8 {
    let c = if c.state.get() == UNINIT {
        activate()
    } else {
        c
    };
    if c.state.get() != ACTIVE {
        return direct_alloc(class);
    }
    c.refill(class)
}

/// # Safety
/// As for [`free`].
#[cold]
#[inline(never)]
unsafe fn free_slow(c: &'static MCache, class: usize, p: *mut u8) {
    let c = if c.state.get() == UNINIT {
        activate()
    } else {
        c
    };
    if c.state.get() != ACTIVE {
        // SAFETY: forwarded precondition.
        unsafe { direct_free(class, p) };
        return;
    }
    // SAFETY: forwarded precondition.
    unsafe { c.push_overflowing(class, p) }
}

impl MCache {
    /// This thread's central list for `class` (its heap shard's).
    #[inline]
    fn central(&self, class: usize) -> &'static crate::mcentral::MCentral {
        &CENTRAL[self.heap.get() as usize][class]
    }

    /// Refills the empty list of `class` with a batch and returns one object of it.
    ///
    /// Slow start: a batch carved from a span writes a link into every object, so a full batch
    /// of a big class touches 64 KiB. A thread's first batches of a class are smaller, about
    /// as many objects as it has allocated of that class so far (at least `SLOW_START_BYTES`
    /// worth), so a program that uses a few objects of many classes touches few pages; a
    /// cached full batch is still taken whole (it is touched memory already).
    fn refill(&self, class: usize) -> *mut u8 {
        let l = &self.lists[class];
        let full = CLASS_BATCH[class];
        let first = (SLOW_START_BYTES / size_class::class_size(class)).max(2) as u32;
        let done = l.nmalloc.load(Ordering::Relaxed).min(u64::from(full)) as u32;
        let want = done.max(first).min(full);
        let b = self
            .central(class)
            .refill(&HEAPS[self.heap.get() as usize], class, want);
        if b.len == 0 {
            return ptr::null_mut();
        }
        if l.max.get() == 0 {
            l.max.set(2 * CLASS_BATCH[class]);
        }
        let obj = b.head;
        // SAFETY: the batch's objects are free and linked; its tail links to null.
        l.head.set(unsafe { span::free_link(obj) });
        l.len.set(b.len - 1);
        bump(&l.nmalloc);
        obj
    }

    /// Pushes `p` onto a full list, then grows the bound or spills a batch.
    ///
    /// # Safety
    /// As for [`free`]; `self` is this thread's active node.
    unsafe fn push_overflowing(&self, class: usize, p: *mut u8) {
        let l = &self.lists[class];
        if l.max.get() == 0 {
            // Unprimed: this thread has not allocated from this class yet, so what it frees
            // was allocated by another thread. Those objects go home instead of being handed
            // out here again next to their neighbours' objects (Hoard's "cache-scratch" false
            // sharing). After a batch of them, or the first refill, the list caches normally.
            // SAFETY: `p` is a free object of this class (precondition).
            unsafe { give_back_one(self.central(class), class, p) };
            bump(&l.nfree);
            l.homed.set(l.homed.get() + 1);
            if l.homed.get() >= CLASS_BATCH[class] {
                l.max.set(2 * CLASS_BATCH[class]);
            }
            return;
        }
        // SAFETY: `p` is free (precondition).
        unsafe { span::set_free_link(p, l.head.get()) };
        l.head.set(p);
        l.len.set(l.len.get() + 1);
        bump(&l.nfree);
        if l.len.get() > l.max.get() {
            // A list that keeps overflowing grows by a batch at a time (tcmalloc's slow start)
            // while this thread's growth budget lasts; then it spills a batch.
            let grow = CLASS_BATCH[class] as usize * crate::size_class::class_size(class);
            if self.grown.get() + grow <= GROWTH_BUDGET {
                self.grown.set(self.grown.get() + grow);
                l.max.set(l.max.get() + CLASS_BATCH[class]);
                return;
            }
            let n = CLASS_BATCH[class].min(l.len.get());
            // SAFETY: the list holds at least `n` linked free objects of this class.
            let b = unsafe { self.take(class, n) };
            // SAFETY: the batch holds free objects of this class.
            unsafe { self.central(class).spill(class, b) };
        }
    }

    /// Unlinks the first `n` objects of a class's list as a null-terminated batch.
    ///
    /// # Safety
    /// `1 <= n <= len` of that list.
    unsafe fn take(&self, class: usize, n: u32) -> Batch {
        let l = &self.lists[class];
        let head = l.head.get();
        let mut tail = head;
        // SAFETY: the list has at least `n` linked objects (precondition).
        unsafe {
            for _ in 1..n {
                tail = span::free_link(tail);
            }
            l.head.set(span::free_link(tail));
            span::set_free_link(tail, ptr::null_mut());
        }
        l.len.set(l.len.get() - n);
        Batch { head, tail, len: n }
    }

    /// Returns every cached object to the central lists, and cached large spans to the heap.
    fn flush(&self) {
        for slot in &self.large {
            let (n, s) = slot.replace((0, ptr::null_mut()));
            if n != 0 {
                // SAFETY: a cached large span is in use, ours alone, and holds no live data.
                unsafe { MHeap::free_to_owner(s) };
            }
        }
        self.large_bytes.set(0);
        for class in 1..NUM_CLASSES {
            // Whole batches first, so they can land in the transfer cache for other threads.
            loop {
                let n = self.lists[class].len.get().min(CLASS_BATCH[class]);
                if n == 0 {
                    break;
                }
                // SAFETY: 1 <= n <= len.
                let b = unsafe { self.take(class, n) };
                // SAFETY: cached objects are free objects of this class.
                unsafe { self.central(class).spill(class, b) };
            }
        }
    }

    /// Every list back to unprimed.
    fn reset_bounds(&self) {
        for class in 1..NUM_CLASSES {
            self.lists[class].max.set(0);
            self.lists[class].homed.set(0);
        }
        self.grown.set(0);
    }
}

/// First use on this thread: take a node, register it, arm the exit hook. Returns the cache to
/// use from now on (the node, or `DEAD_CACHE` if any step failed).
#[cold]
fn activate() -> &'static MCache {
    // Anything this thread allocates while we set up goes straight to central.
    set_current(dead_cache());
    let Some(key) = exit_key() else {
        return dead_cache();
    };
    // The node's raw pointer (with the pool's provenance) is what `CURRENT` keeps and what
    // goes back to the pool; references are only ever derived from it.
    let raw = {
        let mut r = REGISTRY.lock();
        // Under the registry lock, so that `fork`'s prepare handler (which holds it) sees a
        // shard count that no thread can exceed until the fork is over.
        init_shards();
        r.new_node()
    };
    if raw.is_null() {
        return dead_cache();
    }
    if !arm_exit_hook(key) {
        let mut r = REGISTRY.lock();
        // SAFETY: the node is registered and empty; we hold the lock.
        unsafe { retire_node(&mut r, raw) };
        return dead_cache();
    }
    // SAFETY: nodes are never unmapped.
    let node: &'static MCache = unsafe { &*raw };
    node.reset_bounds();
    node.heap.set(next_shard());
    set_current(raw);
    node
}

/// Thread exit: return everything, fold the counters into the retired totals, recycle the node,
/// and serve any later request of this thread directly.
fn retire_current() {
    let raw = CURRENT.with(|c| c.get());
    // SAFETY: CURRENT points at a static placeholder or a registry node (never unmapped).
    let c = unsafe { &*raw };
    if c.state.get() != ACTIVE {
        return;
    }
    set_current(dead_cache());
    c.flush();
    let mut r = REGISTRY.lock();
    // SAFETY: `raw` is this thread's registered node, now empty; we hold the lock.
    unsafe { retire_node(&mut r, raw) };
}

/// Unlinks `c`, folds its counters into `RETIRED` and puts the node on the free list.
///
/// `c` must be the node's pointer as the pool made it (as `new_node` returns it and `CURRENT`
/// and the registry links keep it), never one derived from a `&MCache`: the pool writes its
/// link into the node, and `new_node` later writes a whole `MCache` (padding included) through
/// it, which a shared reference's provenance does not allow (found by Miri, Tree Borrows:
/// "write access ... forbidden", tag in state Frozen).
///
/// # Safety
/// `c` is a registered node that no thread will use again; the caller holds the registry lock.
unsafe fn retire_node(r: &mut Registry, c: *const MCache) {
    // SAFETY: forwarded precondition.
    unsafe { unlink(r, &*c) };
    // SAFETY: the node came from this pool and no thread uses it any more (precondition).
    unsafe { r.nodes.free(c.cast_mut().cast()) };
}

/// Removes `c` from the registry, folding its counters into `RETIRED`.
///
/// # Safety
/// `c` is registered and alive; the caller holds the registry lock.
unsafe fn unlink(r: &mut Registry, c: &MCache) {
    let (prev, next) = (c.prev.get(), c.next.get());
    // SAFETY: neighbours are registered, live caches.
    unsafe {
        if prev.is_null() {
            r.head = next;
        } else {
            (*prev).next.set(next);
        }
        if !next.is_null() {
            (*next).prev.set(prev);
        }
    }
    RETIRED_LARGE_BYTES[0].fetch_add(
        c.large_alloc_bytes.swap(0, Ordering::Relaxed),
        Ordering::Relaxed,
    );
    RETIRED_LARGE_BYTES[1].fetch_add(
        c.large_freed_bytes.swap(0, Ordering::Relaxed),
        Ordering::Relaxed,
    );
    for class in 0..NUM_CLASSES {
        let l = &c.lists[class];
        RETIRED[class][0].fetch_add(l.nmalloc.swap(0, Ordering::Relaxed), Ordering::Relaxed);
        RETIRED[class][1].fetch_add(l.nfree.swap(0, Ordering::Relaxed), Ordering::Relaxed);
    }
}

fn direct_alloc(class: usize) -> *mut u8 {
    let b = CENTRAL[0][class].refill(&HEAPS[0], class, 1);
    if b.len == 0 {
        return ptr::null_mut();
    }
    RETIRED[class][0].fetch_add(1, Ordering::Relaxed);
    b.head
}

/// # Safety
/// As for [`free`].
unsafe fn direct_free(class: usize, p: *mut u8) {
    // SAFETY: `p` is a free object of this class.
    unsafe { give_back_one(&CENTRAL[0][class], class, p) };
    RETIRED[class][1].fetch_add(1, Ordering::Relaxed);
}

/// Gives one free object back through central list `c` (it goes home to its span).
///
/// # Safety
/// `p` is a free object of `class`.
unsafe fn give_back_one(c: &crate::mcentral::MCentral, class: usize, p: *mut u8) {
    let mut b = Batch::EMPTY;
    // SAFETY: forwarded precondition.
    unsafe {
        b.push(p);
        c.spill(class, b);
    }
}

/// A cached large span of exactly `npages` pages, or null.
#[inline]
pub fn take_large(npages: usize) -> *mut Span {
    with_cache(|c| {
        for slot in &c.large {
            let (n, s) = slot.get();
            if n == npages {
                slot.set((0, ptr::null_mut()));
                c.large_bytes
                    .set(c.large_bytes.get() - (npages << PAGE_SHIFT));
                return s;
            }
        }
        ptr::null_mut()
    })
}

/// Offers a freed large span to this thread's cache; false if the cache does not keep it (the
/// caller then frees it to the heap).
///
/// # Safety
/// `s` is a live large span whose memory is dead.
#[inline]
pub unsafe fn put_large(s: *mut Span) -> bool {
    // SAFETY: `s` is a live large span (precondition).
    let npages = unsafe { (*s).npages };
    let bytes = npages << PAGE_SHIFT;
    with_cache(|c| {
        if c.state.get() != ACTIVE
            // A cached span would hide a double free from the checked mode.
            || cfg!(feature = "checked")
            || npages > LARGE_SPAN_MAX_PAGES
            || c.large_bytes.get() + bytes > LARGE_CACHE_BYTES
        {
            return false;
        }
        for slot in &c.large {
            if slot.get().0 == 0 {
                // SAFETY: the span is ours now; its memory is dirty.
                unsafe { (*s).zeroed = false };
                slot.set((npages, s));
                c.large_bytes.set(c.large_bytes.get() + bytes);
                return true;
            }
        }
        false
    })
}

/// Counts a large object of `bytes` allocated (`alloc`) or freed on this thread.
#[inline]
pub fn count_large(alloc: bool, bytes: usize) {
    count_large_event(alloc, 1, bytes);
}

/// Records an in-place resize of a large object from `old` to `new` bytes.
pub fn count_large_resize(old: usize, new: usize) {
    count_large_event(new > old, 0, new.abs_diff(old));
}

/// Adds `objects` and `bytes` to this thread's allocated (`alloc`) or freed large-object
/// counters, or to the retired totals if the thread has no active cache.
fn count_large_event(alloc: bool, objects: u64, bytes: usize) {
    let i = if alloc { 0 } else { 1 };
    with_cache(|c| {
        let (n, b) = if alloc {
            (&c.lists[0].nmalloc, &c.large_alloc_bytes)
        } else {
            (&c.lists[0].nfree, &c.large_freed_bytes)
        };
        if c.state.get() == ACTIVE {
            n.store(
                n.load(Ordering::Relaxed).wrapping_add(objects),
                Ordering::Relaxed,
            );
            b.store(
                b.load(Ordering::Relaxed).wrapping_add(bytes as u64),
                Ordering::Relaxed,
            );
        } else {
            RETIRED[0][i].fetch_add(objects, Ordering::Relaxed);
            RETIRED_LARGE_BYTES[i].fetch_add(bytes as u64, Ordering::Relaxed);
        }
    })
}

/// Returns this thread's cached objects to the central lists (they stay cacheable).
pub fn flush_current() {
    with_cache(|c| {
        if c.state.get() == ACTIVE {
            c.flush();
            c.reset_bounds();
        }
    });
}

/// Adds every class's (mallocs, frees) over live and retired caches into `out` (class 0:
/// large objects), and the bytes of large objects (allocated, freed) into `large_bytes`.
pub fn sum_counters(out: &mut [[u64; 2]; NUM_CLASSES], large_bytes: &mut [u64; 2]) {
    let r = REGISTRY.lock();
    for class in 0..NUM_CLASSES {
        out[class][0] += RETIRED[class][0].load(Ordering::Relaxed);
        out[class][1] += RETIRED[class][1].load(Ordering::Relaxed);
    }
    large_bytes[0] += RETIRED_LARGE_BYTES[0].load(Ordering::Relaxed);
    large_bytes[1] += RETIRED_LARGE_BYTES[1].load(Ordering::Relaxed);
    let mut c = r.head;
    for _ in 0..r.nodes.inuse {
        if c.is_null() {
            break;
        }
        // SAFETY: registered nodes are valid memory (never unmapped); we read atomics only.
        unsafe {
            large_bytes[0] += (*c).large_alloc_bytes.load(Ordering::Relaxed);
            large_bytes[1] += (*c).large_freed_bytes.load(Ordering::Relaxed);
            for class in 0..NUM_CLASSES {
                out[class][0] += (*c).lists[class].nmalloc.load(Ordering::Relaxed);
                out[class][1] += (*c).lists[class].nfree.load(Ordering::Relaxed);
            }
            c = (*c).next.get();
        }
    }
}

/// Number of live registered thread caches.
pub fn live_caches() -> usize {
    REGISTRY.lock().nodes.inuse
}

/// Bytes of cache nodes in use, and mapped (Go's `MCacheInuse`, `MCacheSys`).
pub fn node_stats() -> (usize, usize) {
    let r = REGISTRY.lock();
    (r.nodes.inuse * core::mem::size_of::<MCache>(), r.nodes.sys)
}

// ---- the exit hook ------------------------------------------------------------------------

sync::global! {
    /// 0 none, 1 being created, 2 ready, 3 failed.
    static KEY_STATE: AtomicU8 = AtomicU8::new(0);
}
sync::global! {
    static KEY: AtomicU32 = AtomicU32::new(0);
}

/// The pthread key whose destructor retires a thread's cache, created once by whichever thread
/// first sets up a cache (others wait for it).
fn exit_key() -> Option<u32> {
    loop {
        match KEY_STATE.load(Ordering::Acquire) {
            2 => return Some(KEY.load(Ordering::Relaxed)),
            3 => return None,
            0 => {
                if KEY_STATE
                    .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    let key = create_exit_key();
                    KEY.store(key.unwrap_or(0), Ordering::Relaxed);
                    KEY_STATE.store(if key.is_some() { 2 } else { 3 }, Ordering::Release);
                }
            }
            _ => sync::spin_hint(),
        }
    }
}

/// Creates the exit key (after installing the fork handlers: a fork from here on keeps the
/// locks sane, and a child forked mid-creation starts over, see `reset_key_after_fork_child`).
#[cfg(not(loom))]
fn create_exit_key() -> Option<u32> {
    crate::fork::install();
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is a valid out-pointer; the destructor is an extern "C" fn that lives
    // forever.
    let ok = unsafe { libc::pthread_key_create(&mut key, Some(on_thread_exit)) } == 0;
    ok.then_some(key as u32)
}

/// Makes the exit hook run for this thread.
#[cfg(not(loom))]
fn arm_exit_hook(key: u32) -> bool {
    // SAFETY: the key is valid; a non-null value makes glibc call our destructor at exit.
    unsafe { libc::pthread_setspecific(key as libc::pthread_key_t, ptr::dangling()) == 0 }
}

#[cfg(not(loom))]
extern "C" fn on_thread_exit(_: *mut libc::c_void) {
    retire_current();
}

// Under loom there are no pthread keys: the key is a counter of creations (a model checks it is
// created once), and a model thread runs the exit hook itself, by calling `exit_thread` last.
#[cfg(loom)]
sync::global! {
    static KEYS_CREATED: AtomicU32 = AtomicU32::new(0);
}

#[cfg(loom)]
fn create_exit_key() -> Option<u32> {
    Some(KEYS_CREATED.fetch_add(1, Ordering::Relaxed))
}

#[cfg(loom)]
fn arm_exit_hook(_key: u32) -> bool {
    true
}

/// The exit hook, as glibc would run it at the end of a model thread.
#[cfg(loom)]
pub fn exit_thread() {
    retire_current();
}

/// How many times the exit key was created in this execution.
#[cfg(loom)]
pub fn exit_keys_created() -> u32 {
    KEYS_CREATED.load(Ordering::Relaxed)
}

// ---- fork ---------------------------------------------------------------------------------

/// The registry lock, for `fork()` handling.
#[cfg(not(loom))]
pub fn registry_lock() -> &'static dyn crate::sync::RawLock {
    &REGISTRY
}

/// In a `fork()` child: a key creation that another thread of the parent had under way will
/// never finish here, so the next activation starts it over.
pub fn reset_key_after_fork_child() {
    let _ = KEY_STATE.compare_exchange(1, 0, Ordering::AcqRel, Ordering::Relaxed);
}

/// In the child, after every lock was reset: every cache but this thread's is dropped from
/// the registry (their threads do not exist here; their cached objects are abandoned, their
/// counters kept).
///
/// # Safety
/// In the child after `fork()`, single-threaded.
pub unsafe fn reset_registry_after_fork_child() {
    let me = with_cache(|c| c as *const MCache);
    let mut r = REGISTRY.lock();
    let mut c = r.head;
    while !c.is_null() {
        // SAFETY: registered nodes are valid memory; their threads do not exist in the child,
        // so we fold their counters and recycle them (their cached objects are abandoned).
        unsafe {
            let next = (*c).next.get();
            if c != me {
                retire_node(&mut r, c);
            }
            c = next;
        }
    }
}

/// The page-heap shard this thread allocates spans from.
#[inline]
pub fn heap() -> &'static MHeap {
    // `heap` is below NHEAPS by construction (placeholders: 0).
    with_cache(|c| &HEAPS[c.heap.get() as usize])
}

sync::global! {
    /// How many heap shards threads are spread over (0 until the first cache is set up).
    static SHARDS: AtomicU8 = AtomicU8::new(0);
}
sync::global! {
    /// The next shard to hand out, modulo `SHARDS`.
    static NEXT_SHARD: AtomicU8 = AtomicU8::new(0);
}

/// The heap shards in use: threads only ever use shards below this (threads without a cache
/// use shard 0). Scanning only these keeps the unused shards' memory untouched.
pub fn active_shards() -> usize {
    (SHARDS.load(Ordering::Relaxed) as usize).clamp(1, NHEAPS)
}

/// The shard for a newly set-up thread cache: round-robin over as many shards as there are
/// CPUs (at most `NHEAPS`), so that few threads share a heap lock and a small machine keeps
/// few shards' worth of idle pages.
fn next_shard() -> u8 {
    let n = SHARDS.load(Ordering::Relaxed).max(1);
    NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % n
}

/// Sets the shard count once, from the CPU count. Called with the registry lock held (see
/// `activate`), before any thread can be handed a shard other than 0.
fn init_shards() {
    if SHARDS.load(Ordering::Relaxed) == 0 {
        // SAFETY: sysconf has no preconditions.
        let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        SHARDS.store(
            cpus.clamp(1, NHEAPS as libc::c_long) as u8,
            Ordering::Relaxed,
        );
    }
}
