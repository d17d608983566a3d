//! The page heap (Go's `mheap`): spans of 8 KiB pages over 64 MiB arenas mapped from the OS.
//! The global allocator runs several of them side by side, one per heap shard (`HEAPS` in
//! `lib.rs`, as many as CPUs up to 16); each thread takes spans from its shard, and a span goes
//! back to the shard that handed it out (`Span::owner`).
//!
//! Owns: the arenas and their page-map metadata, every free span, the span descriptor pool,
//! and the scavenger policy that returns idle pages to the OS.
//!
//! How it works. Arenas are mapped 64 MiB-aligned and grown into in chunks of at least 4 MiB,
//! whole 2 MiB huge pages (the rest of an arena is reserved address space, not counted in
//! `heap_sys`, as in Go); once a heap holds 64 MiB it asks for transparent huge pages on further
//! growth (`MADV_HUGEPAGE`), which cuts page faults and TLB misses for big heaps and leaves
//! smaller ones on 4 KiB pages: a huge page is resident whole once touched, which cost a C++
//! program with a 16 MiB heap 10% more peak RSS when this started at 8 MiB (glibc, jemalloc and
//! mimalloc do not ask for huge pages by default). Free spans sit on per-size lists for
//! 1..=128 pages, split into "unreleased" (pages still backed, reused without page faults) and
//! "released" (returned to the OS, reading as zero), with a bitmask of non-empty lists so the
//! best bucket is found with one `trailing_zeros`; bigger free spans are on one list searched
//! best-fit. A request takes the smallest fitting span and splits off the rest. A freed span
//! merges with free neighbours found through the page map, never across an arena boundary (the
//! next arena may be another shard's).
//!
//! Scavenger policy. A heap in use may keep `max(1 MiB, heap_inuse / 8)` of idle pages backed
//! by memory; the heap that holds the collector's spans may also keep in use plus idle up to
//! its retain floor, 10% over the collector's goal or over the most span bytes its last cycle
//! reached (Go keeps about 10% over its goal). Above that, idle spans are released with
//! `MADV_DONTNEED`, biggest first, once they have been idle for `SCAVENGE_DELAY_MS`: pages freed
//! and soon reused (a program cycling through big buffers) are never released and faulted back
//! in. A heap that has handed out no span for `SCAVENGE_DELAY_MS` is idle and releases every
//! idle page. Ageing needs a clock to look at them, so the global heaps wake a background thread
//! (`scavenger`) that sleeps on a futex and ticks while idle pages or transfer-cache batches
//! remain; a program that frees everything and goes idle is back within a few MiB of its
//! starting RSS about a second later. If that thread cannot start, or idle backed pages exceed
//! `max(64 MiB, heap_inuse, retain floor)`, the freeing thread releases at once instead (down
//! to half the retain limit; under a retain floor, down to the limit).
//! [`MHeap::scavenge_all`] (behind `gomalloc::release_memory`) releases everything now.
//!
//! Pages the collector frees (`free_from_gc`) are marked `dirty` and keep the mark through
//! splits and merges; every path that hands pages to the allocator (`alloc`,
//! `alloc_for_growth`, `alloc_aligned`, `grow_in_place`) zeroes dirty pages first, outside the
//! lock (the collector, which zeroes its objects itself, takes pages with `alloc_for_gc`). The
//! collector scans malloc memory conservatively, free blocks included: without this, a dead GC
//! object's pointers left in a recycled page kept whole dead graphs alive (`gc_concurrent`:
//! up to 200 000 objects left after the threads' graphs died, against about 40 with it).
//!
//! Invariants (all under the heap's one lock): `inuse + idle == sys`; a free span is on exactly
//! one free list, which one decided by its page count and whether it is fully released; the
//! page map points at a free span from its first and last page and at an in-use span from
//! every page; two free spans of one arena are never adjacent once `free` returns.
//!
//! Locks: one `Mutex` around everything, per heap. Callers may hold a central lock when calling
//! in (lock order central -> heap); the heap never calls up, never takes another heap's lock,
//! and never allocates through the global allocator (descriptors come from [`SpanPool`],
//! metadata from `os::map`).

use crate::os;
use crate::pagemap::{self, ARENA_SIZE};
use crate::size_class::{self, PAGE_SHIFT, PAGE_SIZE};
use crate::span::{self, Span, SpanList, SpanPool};
use crate::sync::{const_fn, Mutex, RawLock};
use core::ptr;

/// Free spans up to this many pages have a list per size.
const MAX_BUCKET: usize = 128;
/// The heap grows by at least this much at a time.
const GROW_MIN_PAGES: usize = (4 << 20) / PAGE_SIZE;
/// Idle-but-backed bytes the scavenger lets a heap in use keep (per shard).
pub const RETAIN_MIN: usize = 1 << 20;
/// Idle-but-backed bytes beyond which the freeing thread releases at once.
const RETAIN_HARD: usize = 64 << 20;
/// A transparent huge page (x86-64 and most arm64 kernels).
const HUGE_PAGE: usize = 2 << 20;
/// A heap shard that has this much memory asks for huge pages on further growth.
const HUGE_PAGES_FROM: usize = 64 << 20;
/// How long a span must have been idle before the background scavenger releases it.
pub const SCAVENGE_DELAY_MS: u64 = 500;

/// A consistent snapshot of the heap's counters (bytes).
#[derive(Clone, Copy, Debug, Default)]
pub struct HeapStats {
    pub sys: usize,
    pub inuse: usize,
    pub released: usize,
    pub span_sys: usize,
    pub span_inuse: usize,
    pub meta_sys: usize,
    pub free_spans: usize,
}

impl core::ops::Add for HeapStats {
    type Output = HeapStats;
    fn add(self, o: HeapStats) -> HeapStats {
        HeapStats {
            sys: self.sys + o.sys,
            inuse: self.inuse + o.inuse,
            released: self.released + o.released,
            span_sys: self.span_sys + o.span_sys,
            span_inuse: self.span_inuse + o.span_inuse,
            meta_sys: self.meta_sys + o.meta_sys,
            free_spans: self.free_spans + o.free_spans,
        }
    }
}

pub struct MHeap {
    inner: Mutex<HeapInner>,
}

struct HeapInner {
    free: [SpanList; MAX_BUCKET + 1],
    released: [SpanList; MAX_BUCKET + 1],
    /// Bit `n - 1` set when `free[n]` (resp. `released[n]`) is non-empty.
    free_mask: u128,
    released_mask: u128,
    /// Free spans of more than `MAX_BUCKET` pages, released or not.
    large: SpanList,
    /// The unused rest of the newest arena mapping: `arena_cur` keeps the mapping's
    /// provenance, every span's `start` is derived from it.
    arena_cur: *mut u8,
    arena_end: usize,
    pool: SpanPool,
    sys: usize,
    inuse: usize,
    released_bytes: usize,
    meta_sys: usize,
    /// Whether a background scavenger serves this heap (only the global ones).
    background: bool,
    /// When a span was last handed out (`os::now_ms`): a heap unused for `SCAVENGE_DELAY_MS`
    /// is idle and gives all its idle pages back.
    last_use_ms: u64,
    /// Bytes (in use plus idle and backed) the heap may keep whatever `inuse / 8` says, set by
    /// the collector on the heap that holds its spans (see [`MHeap::set_retain_floor`]); 0
    /// otherwise.
    retain_floor: usize,
}

// SAFETY: `arena_cur` points into memory the heap owns; like every span pointer in here, it is
// only used under the heap's lock.
unsafe impl Send for HeapInner {}

impl MHeap {
    const_fn! {
        /// A heap whose freeing threads release excess idle pages themselves.
        pub fn new() -> MHeap {
            MHeap::with_background(false)
        }
    }

    const_fn! {
        /// The global heap, served by the background scavenger.
        pub fn new_global() -> MHeap {
            MHeap::with_background(true)
        }
    }

    const_fn! {
        fn with_background(background: bool) -> MHeap {
            MHeap {
                inner: Mutex::new(HeapInner {
                    free: [const { SpanList::new() }; MAX_BUCKET + 1],
                    released: [const { SpanList::new() }; MAX_BUCKET + 1],
                    free_mask: 0,
                    released_mask: 0,
                    large: SpanList::new(),
                    arena_cur: ptr::null_mut(),
                    arena_end: 0,
                    pool: SpanPool::new(),
                    sys: 0,
                    inuse: 0,
                    released_bytes: 0,
                    meta_sys: 0,
                    background,
                    last_use_ms: 0,
                    retain_floor: 0,
                }),
            }
        }
    }

    /// A span of `npages` pages for size class `class` (0: one large object), fully described
    /// and published in the page map; null if the OS refuses memory.
    pub fn alloc(&self, npages: usize, class: usize) -> *mut Span {
        let s = self.alloc_for_gc(npages, class);
        // SAFETY: a span just handed out to us, in use by nobody else yet.
        unsafe { clean(s) };
        s
    }

    /// As [`MHeap::alloc`], for the collector's spans: pages that held GC objects are not
    /// zeroed here (the collector zeroes each object before it hands it out).
    pub fn alloc_for_gc(&self, npages: usize, class: usize) -> *mut Span {
        let mut h = self.inner.lock();
        let s = h.alloc_pages(npages);
        if !s.is_null() {
            // SAFETY: `s` is a fresh in-use span owned by us under the heap lock.
            unsafe { self.hand_out(&mut h, s, class) };
        }
        s
    }

    /// Publishes the in-use span `s` for `class` as this heap's.
    ///
    /// # Safety
    /// `s` is an in-use span just taken from this heap's free lists; `h` is this heap's guard.
    unsafe fn hand_out(&self, h: &mut HeapInner, s: *mut Span, class: usize) {
        // SAFETY: forwarded precondition.
        unsafe {
            h.publish(s, class);
            (*s).owner = self;
        }
        h.last_use_ms = os::now_ms();
    }

    /// A large span of `npages` pages for a block that is growing by realloc: taken from the
    /// front of the roomiest backed free run (at least twice the size) when there is one, so
    /// that the next growth can happen in place; else as [`MHeap::alloc`].
    pub fn alloc_for_growth(&self, npages: usize) -> *mut Span {
        let mut h = self.inner.lock();
        let roomy = h.roomiest(npages.saturating_mul(2));
        if roomy.is_null() {
            drop(h);
            return self.alloc(npages, 0);
        }
        // SAFETY: `roomy` is a free span on our lists with at least `npages` pages.
        unsafe {
            h.remove_free(roomy);
            h.take_front(roomy, npages);
            self.hand_out(&mut h, roomy, 0);
        }
        drop(h);
        // SAFETY: a span just handed out to us.
        unsafe { clean(roomy) };
        roomy
    }

    /// A large span of `npages` pages whose start is aligned to `align` bytes (> PAGE_SIZE).
    pub fn alloc_aligned(&self, npages: usize, align: usize) -> *mut Span {
        let extra = align / PAGE_SIZE - 1;
        let Some(total) = npages.checked_add(extra) else {
            return ptr::null_mut();
        };
        let mut h = self.inner.lock();
        let s = h.alloc_pages(total);
        if s.is_null() {
            return s;
        }
        // SAFETY: `s` is an in-use span we own; the pieces we cut off are inside it.
        unsafe {
            let start = (*s).start;
            let aligned = start.map_addr(|a| (a + align - 1) & !(align - 1));
            let head = (aligned.addr() - start.addr()) >> PAGE_SHIFT;
            if head > 0 {
                (*s).start = aligned;
                (*s).npages -= head;
                h.free_part(start, head, (*s).dirty);
            }
            let tail = (*s).npages - npages;
            if tail > 0 {
                (*s).npages = npages;
                h.free_part(aligned.add(npages << PAGE_SHIFT), tail, (*s).dirty);
            }
            self.hand_out(&mut h, s, 0);
        }
        drop(h);
        // SAFETY: a span just handed out to us.
        unsafe { clean(s) };
        s
    }

    /// Returns an in-use span to the heap that handed it out (its owner shard).
    ///
    /// # Safety
    /// `s` came from a heap that still exists, is in use, and nothing refers to its memory any
    /// more.
    pub unsafe fn free_to_owner(s: *mut Span) {
        // SAFETY: an in-use span's owner is the live heap that handed it out (precondition).
        unsafe { (*(*s).owner).free(s) }
    }

    /// The heap that handed out the in-use span `s`.
    ///
    /// # Safety
    /// `s` is an in-use span of a heap that lives for `'a`.
    pub unsafe fn owner<'a>(s: *const Span) -> &'a MHeap {
        // SAFETY: forwarded precondition.
        unsafe { &*(*s).owner }
    }

    /// Returns an in-use span to the heap.
    ///
    /// # Safety
    /// `s` came from this heap, is in use, and nothing refers to its memory any more.
    pub unsafe fn free(&self, s: *mut Span) {
        // SAFETY: forwarded precondition.
        unsafe { self.free_with(s, false) }
    }

    /// Returns a span that held GC objects to the heap: its pages are zeroed before the
    /// allocator gets them again (see `Span::dirty`).
    ///
    /// # Safety
    /// As [`MHeap::free`].
    pub unsafe fn free_from_gc(&self, s: *mut Span) {
        // SAFETY: forwarded precondition.
        unsafe { self.free_with(s, true) }
    }

    /// # Safety
    /// As [`MHeap::free`].
    unsafe fn free_with(&self, s: *mut Span, dirty: bool) {
        let mut h = self.inner.lock();
        // SAFETY: forwarded precondition.
        unsafe {
            h.inuse -= (*s).bytes();
            (*s).state = span::FREE;
            (*s).class = 0;
            (*s).zeroed = false;
            (*s).dirty = dirty;
            (*s).released = 0;
            (*s).idle_since = os::now_ms();
            h.insert_coalesced(s);
        }
        let wake = h.after_free();
        drop(h);
        self.wake_scavenger(wake);
    }

    /// Lets the heap keep up to `bytes` in use plus idle and backed (Go's scavenger keeps the
    /// heap's retained memory up to 10% over the collector's goal): a collected heap shrinks
    /// after each sweep and grows back to its goal before the next cycle, so idle pages under
    /// the goal are about to be used again, and releasing them costs a page fault per page
    /// when they are (GCBench released 1.5 GB in bursts after its sweeps, and faulted it back
    /// in). The collector sets it on the heap that holds its spans; a lower floor lets the
    /// background scavenger release the excess once it has been idle for `SCAVENGE_DELAY_MS`
    /// (the goal falls after a cycle that found less live data, and the heap may grow back
    /// soon: releasing at once released 460-730 MB in a GCBench run at GOGC=200). A heap
    /// without the background scavenger releases it at once.
    pub fn set_retain_floor(&self, bytes: usize) {
        let mut h = self.inner.lock();
        if h.retain_floor == bytes {
            return;
        }
        let lower = bytes < h.retain_floor;
        h.retain_floor = bytes;
        let wake = if h.background {
            lower && h.backed_idle() > 0
        } else {
            h.after_free()
        };
        drop(h);
        self.wake_scavenger(wake);
    }

    /// Wakes the background scavenger, or releases at once if it cannot run.
    fn wake_scavenger(&self, wake: bool) {
        #[cfg(not(loom))]
        if wake && !crate::scavenger::wake() {
            let mut h = self.inner.lock();
            h.background = false;
            h.after_free();
        }
        #[cfg(loom)]
        let _ = wake;
    }

    /// One pass of the background scavenger: releases spans idle since before `now_ms -
    /// SCAVENGE_DELAY_MS` while backed idle pages exceed the bound. Returns whether pages are
    /// still over the bound (so another pass is due).
    pub fn scavenge_aged(&self, now_ms: u64) -> bool {
        let mut h = self.inner.lock();
        let backed = h.backed_idle();
        if backed == 0 {
            return false;
        }
        if h.idle(now_ms) {
            // Nothing handed out for a while: every idle page goes back.
            h.scavenge(usize::MAX, u64::MAX);
            return false;
        }
        let limit = h.retain_limit();
        if backed > limit {
            let want = backed - h.keep(limit);
            h.scavenge(want, now_ms.saturating_sub(SCAVENGE_DELAY_MS));
        }
        // Keep looking while idle pages remain: they go back once this heap falls idle.
        h.backed_idle() > 0
    }

    /// Whether no span was handed out during the last `SCAVENGE_DELAY_MS`.
    pub fn is_idle(&self, now_ms: u64) -> bool {
        self.inner.lock().idle(now_ms)
    }

    /// Grows the large span `s` in place to `npages` pages if the pages after it are free.
    ///
    /// # Safety
    /// `s` is a live large span of this heap.
    pub unsafe fn grow_in_place(&self, s: *mut Span, npages: usize) -> bool {
        let mut h = self.inner.lock();
        // SAFETY: `s` is live (precondition); neighbours are checked before use.
        unsafe {
            let have = (*s).npages;
            if npages <= have {
                return true;
            }
            let need = npages - have;
            let end = (*s).end();
            if end & (ARENA_SIZE - 1) == 0 {
                // The next arena may belong to another heap shard.
                return false;
            }
            let next = pagemap::lookup(end);
            if next.is_null()
                || (*next).state != span::FREE
                || !(*next).in_list
                || (*next).base() != end
                || (*next).npages < need
            {
                return false;
            }
            h.remove_free(next);
            h.take_front(next, need);
            // `next` now describes the pages taken (all of it if no descriptor was left for a
            // remainder); `s` absorbs them and the descriptor goes back to the pool.
            let got = (*next).npages;
            let dirty = (*next).dirty && !(*next).zeroed;
            (*s).npages = have + got;
            pagemap::set_range(end, got, s);
            h.pool.free(next);
            h.last_use_ms = os::now_ms();
            drop(h);
            if dirty {
                // SAFETY: the pages just added to our in-use span `s`.
                zero_pages((*s).start.add(have << PAGE_SHIFT), got);
            }
        }
        true
    }

    /// Shrinks the large span `s` in place to `npages` pages, freeing the tail.
    ///
    /// # Safety
    /// `s` is a live large span of this heap with more than `npages` pages.
    pub unsafe fn shrink_in_place(&self, s: *mut Span, npages: usize) {
        let mut h = self.inner.lock();
        // SAFETY: `s` is live; the tail is part of it and holds no live data after the caller's
        // shrink.
        unsafe {
            let tail = (*s).npages - npages;
            (*s).npages = npages;
            h.free_part((*s).start.add(npages << PAGE_SHIFT), tail, false);
        }
        let wake = h.after_free();
        drop(h);
        self.wake_scavenger(wake);
    }

    /// Releases every idle page to the OS (Go's `debug.FreeOSMemory` for the page heap).
    pub fn scavenge_all(&self) {
        let mut h = self.inner.lock();
        h.scavenge(usize::MAX, u64::MAX);
    }

    pub fn stats(&self) -> HeapStats {
        let h = self.inner.lock();
        let mut free_spans = h.large.len;
        for n in 1..=MAX_BUCKET {
            free_spans += h.free[n].len + h.released[n].len;
        }
        HeapStats {
            sys: h.sys,
            inuse: h.inuse,
            released: h.released_bytes,
            span_sys: h.pool.sys(),
            span_inuse: h.pool.inuse() * core::mem::size_of::<Span>(),
            meta_sys: h.meta_sys,
            free_spans,
        }
    }

    /// The heap lock, for `fork()` handling.
    pub(crate) fn lock_ref(&self) -> &dyn RawLock {
        &self.inner
    }
}

/// Zeroes a span just handed out to the allocator if its pages held GC objects (see
/// `Span::dirty`). Outside the heap lock: the span is ours alone now. (A collector that scans
/// malloc memory meanwhile may still read a stale word of it: one cycle of false retention
/// at most, as with any word it reads conservatively.)
///
/// # Safety
/// `s` is null or an in-use span just handed out to the caller.
unsafe fn clean(s: *mut Span) {
    // SAFETY: precondition.
    unsafe {
        if s.is_null() || !(*s).dirty {
            return;
        }
        if !(*s).zeroed {
            zero_pages((*s).start, (*s).npages);
            (*s).zeroed = true;
        }
        (*s).dirty = false;
    }
}

/// Zeroes `npages` pages at `start`.
///
/// # Safety
/// The pages are in use by the caller alone.
unsafe fn zero_pages(start: *mut u8, npages: usize) {
    // SAFETY: precondition: writable memory of ours.
    unsafe { ptr::write_bytes(start, 0, npages << PAGE_SHIFT) };
}

impl HeapInner {
    /// Finds, unlinks and trims a free run of exactly `n` pages, growing the heap if needed;
    /// the result is counted as in use but not yet published.
    fn alloc_pages(&mut self, n: usize) -> *mut Span {
        if n == 0 || n > (isize::MAX as usize) >> PAGE_SHIFT {
            return ptr::null_mut();
        }
        let mut s = self.find(n);
        if s.is_null() {
            if !self.grow(n) {
                return ptr::null_mut();
            }
            s = self.find(n);
            if s.is_null() {
                return s;
            }
        }
        // SAFETY: `s` is a free span on our lists.
        unsafe {
            self.remove_free(s);
            self.take_front(s, n);
        }
        s
    }

    /// Turns the first `n` pages of the unlinked free span `s` into an in-use run (updating
    /// `inuse` and `released`), putting any remainder back on the free lists.
    ///
    /// # Safety
    /// `s` is a free span we own that is on no list, with at least `n` pages.
    unsafe fn take_front(&mut self, s: *mut Span, n: usize) {
        // SAFETY: precondition; the remainder descriptor is fresh.
        unsafe {
            let bytes = n << PAGE_SHIFT;
            let rel_taken = (*s).released.min(bytes);
            if (*s).npages > n {
                let rest = self.pool.alloc((*s).start.add(bytes), (*s).npages - n);
                if rest.is_null() {
                    // No descriptor: keep the whole span in use rather than lose pages.
                    self.inuse += (*s).bytes();
                    self.released_bytes -= (*s).released;
                    (*s).released = 0;
                    (*s).state = span::LARGE;
                    return;
                }
                (*rest).zeroed = (*s).zeroed;
                (*rest).dirty = (*s).dirty;
                (*rest).released = (*s).released - rel_taken;
                (*s).npages = n;
                self.insert_free(rest);
            }
            self.released_bytes -= rel_taken;
            (*s).released = 0;
            self.inuse += bytes;
            (*s).state = span::LARGE;
        }
    }

    /// Describes the in-use span `s` for `class` and points every page of it at `s`.
    ///
    /// # Safety
    /// `s` is an in-use span just taken from the free lists.
    unsafe fn publish(&mut self, s: *mut Span, class: usize) {
        // SAFETY: precondition; we hold the heap lock, which page-map writers need.
        unsafe {
            (*s).next = ptr::null_mut();
            (*s).prev = ptr::null_mut();
            (*s).in_list = false;
            (*s).allocated = 0;
            (*s).bump = 0;
            (*s).freelist = ptr::null_mut();
            if class == 0 {
                (*s).state = span::LARGE;
                (*s).class = 0;
                (*s).elem_size = 0;
                (*s).nelems = 0;
            } else {
                (*s).state = span::SMALL;
                (*s).class = class as u8;
                (*s).elem_size = size_class::class_size(class) as u32;
                (*s).nelems = size_class::class_objects(class) as u32;
            }
            pagemap::set_range((*s).base(), (*s).npages, s);
        }
    }

    /// Frees `npages` pages at `start` that were part of an in-use span.
    ///
    /// # Safety
    /// The pages are ours, in use and dead.
    unsafe fn free_part(&mut self, start: *mut u8, npages: usize, dirty: bool) {
        let part = self.pool.alloc(start, npages);
        if part.is_null() {
            // No descriptor: the pages stay counted in use (leaked) rather than lost track of.
            return;
        }
        // SAFETY: `part` is a fresh descriptor for dead pages of ours.
        unsafe {
            (*part).dirty = dirty;
            self.inuse -= (*part).bytes();
            (*part).idle_since = os::now_ms();
            self.insert_coalesced(part);
        }
    }

    /// The biggest backed (not fully released) free span with at least `n` pages, or null.
    fn roomiest(&self, n: usize) -> *mut Span {
        let mut best: *mut Span = ptr::null_mut();
        let mut s = self.large.head;
        while !s.is_null() {
            // SAFETY: spans on our lists are valid.
            unsafe {
                if (*s).npages >= n
                    && !fully_released(s)
                    && (best.is_null() || (*s).npages > (*best).npages)
                {
                    best = s;
                }
                s = (*s).next;
            }
        }
        if best.is_null() && n <= MAX_BUCKET && self.free_mask >> (n - 1) != 0 {
            best = self.free[128 - self.free_mask.leading_zeros() as usize].head;
        }
        best
    }

    /// The best free span with at least `n` pages, or null.
    fn find(&mut self, n: usize) -> *mut Span {
        if n <= MAX_BUCKET {
            let f = bucket_at_least(self.free_mask, n);
            let r = bucket_at_least(self.released_mask, n);
            if f != 0 && (r == 0 || f <= r) {
                return self.free[f].head;
            }
            if r != 0 {
                return self.released[r].head;
            }
        }
        // Best fit among the big ones; ties go to the lower address.
        let mut best: *mut Span = ptr::null_mut();
        let mut s = self.large.head;
        while !s.is_null() {
            // SAFETY: spans on our lists are valid.
            unsafe {
                if (*s).npages >= n
                    && (best.is_null()
                        || (*s).npages < (*best).npages
                        || ((*s).npages == (*best).npages && (*s).base() < (*best).base()))
                {
                    best = s;
                }
                s = (*s).next;
            }
        }
        best
    }

    /// Maps more memory: the rest of the current arena, or new arenas.
    fn grow(&mut self, n: usize) -> bool {
        let need = n << PAGE_SHIFT;
        if self.arena_end - self.arena_cur.addr() < need {
            let Some(size) = os::round_up(need, ARENA_SIZE) else {
                return false;
            };
            // SAFETY: size is a non-zero multiple of the arena size (and so of the OS page).
            let base = unsafe { os::map_aligned(size, ARENA_SIZE) };
            if base.is_null() {
                return false;
            }
            if !pagemap::covers(base.addr(), size) || !self.install_arenas(base.addr(), size) {
                // SAFETY: we just mapped it and handed out nothing from it.
                unsafe { os::unmap(base, size) };
                return false;
            }
            let rest = self.arena_end - self.arena_cur.addr();
            if rest > 0 {
                self.add_fresh(self.arena_cur, rest);
            }
            self.arena_cur = base;
            self.arena_end = base.addr() + size;
        }
        // Grow in whole huge pages, so that a big heap's memory can be backed by them.
        let ask = os::round_up(need.max(GROW_MIN_PAGES << PAGE_SHIFT), HUGE_PAGE)
            .unwrap_or(usize::MAX)
            .min(self.arena_end - self.arena_cur.addr());
        let start = self.arena_cur;
        // SAFETY: `ask` bytes fit in the rest of the arena mapping `arena_cur` points into.
        self.arena_cur = unsafe { start.add(ask) };
        if self.sys >= HUGE_PAGES_FROM {
            // A big heap: fewer page faults and TLB misses are worth more than the memory a
            // partly used huge page costs. Small heaps stay on 4 KiB pages.
            // SAFETY: the range was just carved from our arena.
            unsafe { os::hugepage(start, ask) };
        }
        self.add_fresh(start, ask)
    }

    /// Creates page-map metadata for each arena in `[base, base + size)`.
    fn install_arenas(&mut self, base: usize, size: usize) -> bool {
        let mut a = base;
        while a < base + size {
            if !pagemap::has_arena(a) {
                // SAFETY: non-zero length.
                let meta = unsafe { os::map(pagemap::META_BYTES) };
                if meta.is_null() {
                    return false;
                }
                self.meta_sys += pagemap::META_BYTES;
                // SAFETY: fresh zeroed metadata that is never freed; `a` is arena-aligned
                // below 2^48; we hold the heap lock.
                unsafe { pagemap::install_arena(a, meta.cast()) };
            }
            a += ARENA_SIZE;
        }
        true
    }

    /// Adds `len` bytes of never-used memory at `start` to the heap as a free, released,
    /// zeroed span.
    fn add_fresh(&mut self, start: *mut u8, len: usize) -> bool {
        let s = self.pool.alloc(start, len >> PAGE_SHIFT);
        if s.is_null() {
            return false;
        }
        #[cfg(feature = "gc")]
        pagemap::note_carved(start.addr(), len);
        // SAFETY: fresh descriptor for fresh memory.
        unsafe {
            (*s).zeroed = true;
            (*s).released = (*s).bytes();
            self.sys += (*s).bytes();
            self.released_bytes += (*s).bytes();
            self.insert_coalesced(s);
        }
        true
    }

    /// Merges the free span `s` (on no list) with free neighbours and puts it on its list.
    ///
    /// # Safety
    /// `s` is a valid free span of ours on no list, whose accounting is already done.
    unsafe fn insert_coalesced(&mut self, s: *mut Span) {
        // SAFETY: neighbours come from the page map and are checked to be free spans of ours
        // that are adjacent and on a list before they are touched.
        unsafe {
            (*s).state = span::FREE;
            let start = (*s).base();
            // Free runs never cross an arena boundary: the neighbouring arena may belong to
            // another heap shard, whose spans only its own lock guards.
            if start & (ARENA_SIZE - 1) != 0 {
                let prev = pagemap::lookup(start - PAGE_SIZE);
                if !prev.is_null()
                    && (*prev).state == span::FREE
                    && (*prev).in_list
                    && (*prev).end() == start
                {
                    self.remove_free(prev);
                    (*s).start = (*prev).start;
                    (*s).npages += (*prev).npages;
                    (*s).released += (*prev).released;
                    (*s).zeroed &= (*prev).zeroed;
                    (*s).dirty |= (*prev).dirty;
                    (*s).idle_since = (*s).idle_since.max((*prev).idle_since);
                    self.pool.free(prev);
                }
            }
            let end = (*s).end();
            let next = if end & (ARENA_SIZE - 1) != 0 {
                pagemap::lookup(end)
            } else {
                ptr::null_mut()
            };
            if !next.is_null()
                && (*next).state == span::FREE
                && (*next).in_list
                && (*next).base() == end
            {
                self.remove_free(next);
                (*s).npages += (*next).npages;
                (*s).released += (*next).released;
                (*s).zeroed &= (*next).zeroed;
                (*s).dirty |= (*next).dirty;
                (*s).idle_since = (*s).idle_since.max((*next).idle_since);
                self.pool.free(next);
            }
            self.insert_free(s);
        }
    }

    /// Links the free span `s` on the list for its size and kind, and records it in the page
    /// map at its first and last page.
    ///
    /// # Safety
    /// `s` is a valid free span of ours on no list.
    unsafe fn insert_free(&mut self, s: *mut Span) {
        // SAFETY: precondition; we hold the heap lock.
        unsafe {
            (*s).state = span::FREE;
            let n = (*s).npages;
            pagemap::set((*s).base(), s);
            pagemap::set((*s).base() + ((n - 1) << PAGE_SHIFT), s);
            if n > MAX_BUCKET {
                self.large.push(s);
            } else if fully_released(s) {
                self.released[n].push(s);
                self.released_mask |= 1u128 << (n - 1);
            } else {
                self.free[n].push(s);
                self.free_mask |= 1u128 << (n - 1);
            }
        }
    }

    /// Unlinks the free span `s` from its list.
    ///
    /// # Safety
    /// `s` is on one of our free lists, unchanged since [`HeapInner::insert_free`].
    unsafe fn remove_free(&mut self, s: *mut Span) {
        // SAFETY: precondition.
        unsafe {
            let n = (*s).npages;
            if n > MAX_BUCKET {
                self.large.remove(s);
            } else if fully_released(s) {
                self.released[n].remove(s);
                if self.released[n].is_empty() {
                    self.released_mask &= !(1u128 << (n - 1));
                }
            } else {
                self.free[n].remove(s);
                if self.free[n].is_empty() {
                    self.free_mask &= !(1u128 << (n - 1));
                }
            }
        }
    }

    /// Idle pages still backed by memory.
    fn backed_idle(&self) -> usize {
        (self.sys - self.inuse).saturating_sub(self.released_bytes)
    }

    /// Backed idle bytes the heap may keep: `max(RETAIN_MIN, inuse / 8)`, or up to the retain
    /// floor in all.
    fn retain_limit(&self) -> usize {
        RETAIN_MIN
            .max(self.inuse / 8)
            .max(self.retain_floor.saturating_sub(self.inuse))
    }

    /// Applies the scavenger policy (module docs) after pages became idle: releases at once
    /// when there is no background scavenger or the hard bound is passed; returns whether the
    /// background scavenger should look later.
    fn after_free(&mut self) -> bool {
        let backed = self.backed_idle();
        let limit = self.retain_limit();
        // The hard bound: the idle pages the scavenger may leave until they age, at least the
        // retain floor (a collected heap's idle pages after a sweep, until it grows back).
        let hard = RETAIN_HARD.max(self.inuse).max(self.retain_floor);
        if backed > limit && (!self.background || backed > hard) {
            let want = backed - self.keep(limit);
            self.scavenge(want, u64::MAX);
        }
        self.background && self.backed_idle() > 0
    }

    /// Backed idle bytes a release leaves, for a retain limit of `limit`: half of it (a freed
    /// span's neighbours are likely to follow), or all of it under a retain floor (the
    /// collector's heap grows back to its goal, so what is released is soon faulted in again).
    fn keep(&self, limit: usize) -> usize {
        if self.retain_floor > 0 {
            limit
        } else {
            limit / 2
        }
    }

    fn idle(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_use_ms) >= SCAVENGE_DELAY_MS
    }

    /// Releases idle spans that became idle no later than `idle_before` to the OS, biggest
    /// first, until `want` bytes were released or no such span is left.
    fn scavenge(&mut self, want: usize, idle_before: u64) {
        let mut done = 0usize;
        // Each span is looked at most once: those the OS page size keeps us from releasing in
        // full go back on the unreleased lists, so bound the loop by the starting count.
        let mut budget = self.large.len;
        for n in 1..=MAX_BUCKET {
            budget += self.free[n].len;
        }
        while done < want && budget > 0 {
            budget -= 1;
            let s = self.biggest_unreleased(idle_before);
            if s.is_null() {
                break;
            }
            // SAFETY: `s` is an idle span on our lists; its memory holds no live data.
            unsafe {
                self.remove_free(s);
                let bytes = (*s).bytes();
                let got = os::release((*s).start, bytes);
                let newly = got.saturating_sub((*s).released);
                if got >= bytes {
                    (*s).zeroed = true;
                    (*s).dirty = false;
                }
                (*s).released = (*s).released.max(got);
                self.released_bytes += newly;
                done += newly;
                self.insert_free(s);
            }
        }
    }

    /// The biggest idle span not yet fully released that became idle by `idle_before`.
    fn biggest_unreleased(&self, idle_before: u64) -> *mut Span {
        let eligible = |s: *mut Span| {
            // SAFETY: spans on our lists are valid.
            unsafe { !fully_released(s) && (*s).idle_since <= idle_before }
        };
        let mut best: *mut Span = ptr::null_mut();
        let mut s = self.large.head;
        while !s.is_null() {
            // SAFETY: spans on our lists are valid.
            unsafe {
                if eligible(s) && (best.is_null() || (*s).npages > (*best).npages) {
                    best = s;
                }
                s = (*s).next;
            }
        }
        if !best.is_null() {
            return best;
        }
        let mut mask = self.free_mask;
        while mask != 0 {
            let n = 128 - mask.leading_zeros() as usize;
            let mut s = self.free[n].head;
            while !s.is_null() {
                if eligible(s) {
                    return s;
                }
                // SAFETY: spans on our lists are valid.
                s = unsafe { (*s).next };
            }
            mask &= !(1u128 << (n - 1));
        }
        ptr::null_mut()
    }
}

/// Whether every OS page inside the free span `s` has been returned: on a kernel whose pages
/// are bigger than ours the partial OS pages at the ends can never be, so they do not count.
///
/// # Safety
/// `s` is a valid span.
#[inline]
unsafe fn fully_released(s: *mut Span) -> bool {
    let page = os::page_size();
    // SAFETY: precondition.
    let (start, end, released) = unsafe { ((*s).base(), (*s).end(), (*s).released) };
    let lo = (start + page - 1) & !(page - 1);
    let hi = end & !(page - 1);
    released >= hi.saturating_sub(lo)
}

/// The smallest `m >= n` whose bit `m - 1` is set in `mask`, or 0.
#[inline]
fn bucket_at_least(mask: u128, n: usize) -> usize {
    let m = mask >> (n - 1);
    if m == 0 {
        0
    } else {
        n + m.trailing_zeros() as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_search() {
        assert_eq!(bucket_at_least(0, 1), 0);
        assert_eq!(bucket_at_least(1, 1), 1);
        assert_eq!(bucket_at_least(1 << 5, 1), 6);
        assert_eq!(bucket_at_least(1 << 5, 7), 0);
        assert_eq!(bucket_at_least(1 << 127, 128), 128);
    }

    #[test]
    fn alloc_free_coalesces_and_accounts() {
        let h = MHeap::new();
        let a = h.alloc(3, 0);
        let b = h.alloc(5, 0);
        let c = h.alloc(1, 0);
        assert!(!a.is_null() && !b.is_null() && !c.is_null());
        // SAFETY: the spans are live and ours.
        unsafe {
            assert_eq!(
                (*a).base() + 3 * PAGE_SIZE,
                (*b).base(),
                "first fit from one chunk"
            );
            assert_eq!(pagemap::span_of((*b).base() + 5 * PAGE_SIZE - 1), b);
            let st = h.stats();
            assert_eq!(st.inuse, 9 * PAGE_SIZE);
            let a_start = (*a).base();
            h.free(b);
            h.free(a);
            assert_eq!(h.stats().inuse, PAGE_SIZE);
            // a and b merged: an 8-page request fits exactly where they were.
            let d = h.alloc(8, 0);
            assert_eq!((*d).base(), a_start);
            h.free(d);
            h.free(c);
        }
        let st = h.stats();
        assert_eq!(st.inuse, 0);
        assert!(st.released <= st.sys);
        // Everything merged back into one span.
        assert_eq!(st.free_spans, 1);
    }

    #[test]
    fn aligned_and_in_place() {
        let h = MHeap::new();
        let s = h.alloc_aligned(3, 1 << 20);
        assert!(!s.is_null());
        // SAFETY: live spans of ours.
        unsafe {
            assert_eq!((*s).base() % (1 << 20), 0);
            assert_eq!((*s).npages, 3);
            assert!(h.grow_in_place(s, 10));
            assert_eq!((*s).npages, 10);
            assert_eq!(pagemap::span_of((*s).base() + 9 * PAGE_SIZE), s);
            h.shrink_in_place(s, 2);
            assert_eq!((*s).npages, 2);
            assert!(pagemap::span_of((*s).base() + 5 * PAGE_SIZE).is_null());
            assert_eq!(h.stats().inuse, 2 * PAGE_SIZE);
            h.free(s);
        }
        assert_eq!(h.stats().inuse, 0);
    }

    #[test]
    fn growing_in_place_keeps_no_extra_descriptor() {
        let h = MHeap::new();
        let s = h.alloc(8, 0);
        let baseline = h.stats().span_inuse;
        for _ in 0..100 {
            // SAFETY: `s` is a live large span of ours.
            unsafe {
                assert!(h.grow_in_place(s, 32));
                h.shrink_in_place(s, 8);
            }
        }
        assert_eq!(
            h.stats().span_inuse,
            baseline,
            "grow_in_place leaked descriptors"
        );
        // SAFETY: live span of ours.
        unsafe { h.free(s) };
    }

    /// Pages that held GC objects reach the allocator zeroed on every path that hands pages to
    /// it (the collector's scan of malloc memory must not find the dead objects' pointers),
    /// after a split or a merge too.
    #[test]
    fn pages_freed_by_the_collector_are_zeroed_for_the_allocator() {
        let h = MHeap::new();
        // A span for the collector, filled with pointer-like garbage and freed by it.
        let gc_span = |n: usize| {
            let g = h.alloc_for_gc(n, 0);
            assert!(!g.is_null());
            // SAFETY: a live span of ours.
            unsafe {
                ptr::write_bytes((*g).start, 0xA5, (*g).bytes());
                let base = (*g).base();
                h.free_from_gc(g);
                base
            }
        };
        // SAFETY: `s` is a live span of ours; `pages` of it from `from` are checked.
        let zero = |s: *mut Span, from: usize, pages: usize| unsafe {
            core::slice::from_raw_parts((*s).start.add(from * PAGE_SIZE), pages * PAGE_SIZE)
                .iter()
                .all(|&b| b == 0)
        };
        // SAFETY: live spans of ours throughout.
        unsafe {
            // `alloc`, both halves of a split dirty span.
            let base = gc_span(4);
            let (a, b) = (h.alloc(2, 1), h.alloc(2, 0));
            assert_eq!(((*a).base(), (*b).base()), (base, base + 2 * PAGE_SIZE));
            assert!(
                zero(a, 0, 2) && zero(b, 0, 2),
                "alloc handed out GC pages unzeroed"
            );
            // A merge of a dirty span with a clean neighbour stays dirty, whichever side the
            // dirty one is on.
            ptr::write_bytes((*b).start, 0x5A, 2 * PAGE_SIZE);
            let base2 = gc_span(2);
            assert_eq!(base2, base + 4 * PAGE_SIZE);
            h.free(b);
            h.free(a);
            let c = h.alloc(6, 0);
            assert_eq!((*c).base(), base);
            assert!(
                zero(c, 0, 6),
                "a merge with a dirty next span lost its mark"
            );
            ptr::write_bytes((*c).start, 0x5A, 6 * PAGE_SIZE);
            h.free(c);
            // (A fresh heap, so that only the span before is dirty.)
            let h2 = MHeap::new();
            let g = h2.alloc_for_gc(2, 0);
            let m = h2.alloc(2, 0);
            ptr::write_bytes((*g).start, 0xA5, 2 * PAGE_SIZE);
            ptr::write_bytes((*m).start, 0x5A, 2 * PAGE_SIZE);
            let base = (*g).base();
            h2.free_from_gc(g);
            h2.free(m);
            let c = h2.alloc(4, 0);
            assert_eq!((*c).base(), base);
            assert!(
                zero(c, 0, 2),
                "a merge with a dirty previous span lost its mark"
            );
            h2.free(c);
            // `alloc_for_growth` (the roomiest backed run) and `alloc_aligned`.
            let base = gc_span(8);
            let d = h.alloc_for_growth(2);
            assert_eq!((*d).base(), base);
            assert!(
                zero(d, 0, 2),
                "alloc_for_growth handed out GC pages unzeroed"
            );
            h.free(d);
            // (Small enough that the heap keeps the idle pages backed: a release would zero
            // them anyway.)
            let base = gc_span(16);
            assert_eq!(
                base % (64 << 10),
                0,
                "the heap's first pages are 64 KiB-aligned"
            );
            let e = h.alloc_aligned(3, 64 << 10);
            assert_eq!((*e).base(), base);
            assert!(zero(e, 0, 3), "alloc_aligned handed out GC pages unzeroed");
            h.free(e);
            // `grow_in_place` into the pages after a span.
            let f = h.alloc(2, 0);
            let base = gc_span(4);
            assert_eq!(base, (*f).base() + 2 * PAGE_SIZE);
            assert!(h.grow_in_place(f, 6));
            assert!(zero(f, 2, 4), "grow_in_place took GC pages unzeroed");
            h.free(f);
        }
    }

    /// Sets `floor` on `h`, allocates a span of `keep` pages and then one of `big` pages, frees
    /// the big one and returns the kept span and the bytes that free released.
    fn free_under_floor(h: &MHeap, floor: usize, keep: usize, big: usize) -> (*mut Span, usize) {
        h.set_retain_floor(floor);
        let kept = h.alloc(keep, 0);
        let s = h.alloc(big, 0);
        assert!(!s.is_null() && !kept.is_null());
        let before = h.stats().released;
        // SAFETY: ours, in use, never touched.
        unsafe { h.free(s) };
        (kept, h.stats().released - before)
    }

    /// Idle pages under the retain floor stay backed (a heap without a background scavenger
    /// releases the excess at once when a span is freed); lowering the floor releases them.
    #[test]
    fn retain_floor_keeps_idle_pages() {
        let h = MHeap::new();
        // 1.5 MiB idle (over RETAIN_MIN) under a 4 MiB floor.
        let (keep, released) = free_under_floor(&h, 4 << 20, 64, 192);
        assert_eq!(released, 0, "1.5 MiB idle under a 4 MiB floor");
        h.set_retain_floor(0);
        let st = h.stats();
        assert!(
            st.sys - st.inuse - st.released <= RETAIN_MIN,
            "idle and backed after the floor fell: {}",
            st.sys - st.inuse - st.released
        );
        // SAFETY: ours, in use.
        unsafe { h.free(keep) };
    }

    /// With the background scavenger, idle pages under the retain floor are not released at
    /// once even past the hard bound (`max(64 MiB, inuse)`) and the retain limit (here 100 - 40
    /// MiB): the collector's heap leaves that much idle after each sweep and grows back into
    /// it (the scavenger releases what stays idle for `SCAVENGE_DELAY_MS`).
    #[test]
    #[cfg_attr(miri, ignore = "110 MiB of heap, and no scavenger thread under Miri")]
    fn retain_floor_raises_the_hard_bound() {
        let h = MHeap::new_global();
        // 40 MiB in use, then 70 MiB idle, of 8 KiB pages.
        let (keep, released) = free_under_floor(&h, 100 << 20, 40 << 7, 70 << 7);
        assert_eq!(released, 0, "70 MiB idle under a 100 MiB floor");
        // SAFETY: ours, in use.
        unsafe { h.free(keep) };
    }

    #[test]
    fn scavenge_releases_idle_pages() {
        let h = MHeap::new();
        // Most of the first 4 MiB stays in use, so the idle rest is under the retain bound
        // and only `scavenge_all` releases it.
        let keep = h.alloc(448, 0);
        let s = h.alloc(56, 0);
        assert!(!s.is_null() && !keep.is_null());
        // SAFETY: the span is ours; we dirty its pages, then free it.
        unsafe {
            core::ptr::write_bytes((*s).start, 1, (*s).bytes());
            h.free(s);
        }
        let before = h.stats();
        h.scavenge_all();
        let after = h.stats();
        assert_eq!(after.released, after.sys - after.inuse);
        assert!(after.released > before.released);
        let again = h.alloc(56, 0);
        // SAFETY: released pages read back as zero.
        unsafe {
            assert!((*again).zeroed);
            let p = (*again).start;
            assert_eq!(*p, 0);
            h.free(again);
            h.free(keep);
        }
    }
}
