//! The collector's heap: spans of garbage-collected objects, their allocation and mark bits,
//! allocation and sweeping.
//!
//! Owns: every span whose state is `span::GC`, its [`GcSpan`] record, the per-class lists of
//! GC spans with a free slot, the list of all GC spans, and the byte counters the pacer reads.
//!
//! GC spans come from shard 0's page heap like any other span and are published in the page
//! map, so a conservative word finds its span in O(1) (`pagemap::span_of`); their state is
//! `GC`, so the allocator's own free paths refuse their objects. A small object (up to 32 KiB)
//! takes a slot of the allocator's size class for its size in a span of that class; a span
//! holds either objects to scan or objects never scanned (`noscan`, Go's noscan spans), never
//! both. A large object has a span to itself. Objects are handed out zeroed, so a stale word
//! left by a dead object never looks like a pointer (a thread cache's reserved slots are
//! zeroed by the refill after it releases the lock; the collector never scans cached slots).
//!
//! Invariants (under `GC_HEAP`'s lock): an object is allocated iff its alloc bit is set (a
//! span not yet swept still has the alloc bits of the objects its sweep will free); mark bits
//! are clear outside a collection, and in a swept span; `nfree` counts the clear alloc bits
//! below `nelems`; a span is on its class's partial list iff `nfree > 0`; every GC span is on
//! `all`; no object is allocated from a span not yet swept (`swept_partial` sweeps it first:
//! its sweep would free the new object, unmarked); every span is swept before a mark starts.
//!
//! The sweep is Go's lazy one: when a mark ends, `begin_sweep` makes every span unswept (a
//! generation number), and spans are swept one at a time, by the collector in chunks that
//! release the lock between them (`sweep_some`) and by allocations that need a span of their
//! class (`swept_partial`); what is allocated counts against the sweep (`sweep_alloc`) until
//! the collector has read what the mark kept (`end_sweep`), even if allocations swept the last
//! span before. During a
//! concurrent mark, markers read records without the lock: a span becomes a GC span with its
//! record initialised before its state is published (release/acquire), alloc and mark words
//! are accessed atomically, and no GC span stops being one (no sweep, no release of an empty
//! span) until mark termination.
//!
//! Locks: one `Mutex` (`GC_HEAP`), taken before a page-heap lock (gc -> heap), never while an
//! allocator lock is held. A stop-the-world collection holds it from start to the end of the
//! mark (so allocation waits); a concurrent one releases it for its mark; the sweep releases
//! it between chunks.

use crate::fixalloc::FixAlloc;
use crate::size_class::{self, NUM_CLASSES};
use crate::span::{self, Span};
use crate::sync::Mutex;
use crate::HEAPS;
use core::ptr;

/// Spans a refill (at most 32 KiB of slots) sweeps first during a sweep: the sweep is over
/// before the heap grows by about 1/16 of itself.
const SWEEP_RATIO: usize = 64;
/// Spans a large object sweeps first per page of it, for the same 1/16.
const SWEEP_PER_PAGE: usize = 16;

/// Spans an allocation sweeps at most, looking for a free slot of its class, before it takes
/// a new span (Go's `mcentral.cacheSpan` budget is 100).
const SWEEP_HELP: usize = 64;

/// Objects in a span at most (class 1, 8-byte objects, in one 8 KiB page).
const MAX_OBJECTS: usize = 1024;
const WORDS: usize = MAX_OBJECTS / 64;

/// Index of the alloc word and of the mark word in a pair of [`GcSpan::bits`].
const A: usize = 0;
const M: usize = 1;

/// The collector's record of one GC span. Laid out for the mark (`find_object` and
/// `try_mark`): the fields it reads come first, and each alloc word sits beside its mark word,
/// so that a lookup touches two cache lines of the record, not three (cachegrind: a third fewer
/// L1 data misses in `mark_word` on GCBench; the wall time of its marks did not move beyond
/// this VM's noise, as the scan's own misses on object contents dominate).
#[repr(C)]
pub struct GcSpan {
    pub span: *mut Span,
    /// Object size (span bytes for a large object) and count.
    pub size: usize,
    pub nelems: usize,
    /// `u32::MAX / size + 1`, for [`GcSpan::index_of`] (0 for a large object's span).
    div_mul: u32,
    /// Its objects are never scanned.
    pub noscan: bool,
    in_partial: bool,
    /// The sweep generation this span was last swept in (`GcHeap::gen`): behind it, its
    /// mark bits are those of the last mark, not yet applied.
    swept: u32,
    pub nfree: usize,
    /// Where the search for a free slot starts.
    hint: usize,
    next_partial: *mut GcSpan,
    next: *mut GcSpan,
    prev: *mut GcSpan,
    /// Word `w` of the alloc bitmap (`[A]`: bit `i % 64` set when object `i` is allocated)
    /// and of the mark bitmap (`[M]`: object `i` was reached by the current mark).
    bits: [[u64; 2]; WORDS],
    /// The concurrent mark's bits while `gccheckmark` marks again (`save_marks`).
    check: [u64; WORDS],
}

impl GcSpan {
    /// Alloc word `w`, read atomically: markers of a concurrent mark read it while a refill
    /// (under `GC_HEAP`) writes it.
    #[inline]
    fn alloc_word(&self, w: usize) -> u64 {
        // SAFETY: an aligned u64 of this live record; every access during a concurrent mark is
        // atomic (reads here, writes through `set_alloc_word`).
        unsafe {
            core::sync::atomic::AtomicU64::from_ptr(ptr::addr_of!(self.bits[w][A]).cast_mut())
                .load(core::sync::atomic::Ordering::Relaxed)
        }
    }

    /// Stores alloc word `w` (the caller holds `GC_HEAP`, so it is the only writer).
    #[inline]
    fn set_alloc_word(&mut self, w: usize, v: u64) {
        // SAFETY: as `alloc_word`.
        unsafe {
            core::sync::atomic::AtomicU64::from_ptr(&mut self.bits[w][A])
                .store(v, core::sync::atomic::Ordering::Relaxed)
        }
    }

    #[inline]
    pub fn is_allocated(&self, i: usize) -> bool {
        self.alloc_word(i / 64) & (1 << (i % 64)) != 0
    }

    /// Mark bit `i`, read atomically (markers set mark bits while mutators read them in the
    /// write barrier).
    #[inline]
    pub fn is_marked(&self, i: usize) -> bool {
        // SAFETY: an aligned u64 of this live record, accessed atomically while markers run.
        let m = unsafe {
            core::sync::atomic::AtomicU64::from_ptr(ptr::addr_of!(self.bits[i / 64][M]).cast_mut())
                .load(core::sync::atomic::Ordering::Relaxed)
        };
        m & (1 << (i % 64)) != 0
    }

    /// Sets mark bit `i` unless set; true if this call set it. Atomic, for parallel markers
    /// (every other access to the mark bits happens while no marker runs).
    #[inline]
    pub fn try_mark(&mut self, i: usize) -> bool {
        let bit = 1u64 << (i % 64);
        // SAFETY: an aligned u64 of this record, accessed atomically by every marker.
        let word = unsafe { core::sync::atomic::AtomicU64::from_ptr(&mut self.bits[i / 64][M]) };
        if word.load(core::sync::atomic::Ordering::Relaxed) & bit != 0 {
            return false;
        }
        word.fetch_or(bit, core::sync::atomic::Ordering::Relaxed) & bit == 0
    }

    /// Sets mark bit `i` (atomically: markers may run).
    #[inline]
    pub fn set_mark(&mut self, i: usize) {
        self.try_mark(i);
    }

    /// Sets the mark bits `bits` of mark word `w` (atomically: markers may run).
    #[inline]
    pub fn set_marks(&mut self, w: usize, bits: u64) {
        // SAFETY: an aligned u64 of this record, accessed atomically by every marker.
        let word = unsafe { core::sync::atomic::AtomicU64::from_ptr(&mut self.bits[w][M]) };
        word.fetch_or(bits, core::sync::atomic::Ordering::Relaxed);
    }

    /// The start of object `i` (`i < nelems`), derived from the span's first page, so that it
    /// carries the mapping's provenance however the object was found (a conservative word is
    /// only ever an address to look up).
    #[inline]
    pub fn object(&self, i: usize) -> *mut u8 {
        // SAFETY: `span` is the live span this record belongs to; object `i` lies inside it.
        unsafe { (*self.span).start.add(i * self.size) }
    }

    /// The first clear alloc bit at or after `hint` (wrapping), or None: a word at a time.
    fn find_free(&self) -> Option<usize> {
        let words = self.nelems.div_ceil(64);
        let start = self.hint.min(self.nelems) / 64;
        for k in 0..=words {
            let w = (start + k) % words;
            let mut free = !self.bits[w][A];
            if k == 0 {
                // Below the hint in the first word only on the wrap-around (k == words).
                free &= u64::MAX << (self.hint % 64);
            }
            if w == words - 1 && self.nelems % 64 != 0 {
                free &= (1u64 << (self.nelems % 64)) - 1;
            }
            if free != 0 {
                return Some(w * 64 + free.trailing_zeros() as usize);
            }
        }
        None
    }

    /// The index of the object holding byte `off` of the span (`off` < span bytes): a
    /// multiply and a shift instead of a division (Go's `divMagic`), exact for every offset
    /// in a span checked for every class by a unit test.
    #[inline]
    pub fn index_of(&self, off: usize) -> usize {
        ((off as u64).wrapping_mul(u64::from(self.div_mul)) >> 32) as usize
    }
}

/// Zeroes an object: small ones a word at a time inline (class sizes are multiples of 8), the
/// rest with `write_bytes`.
///
/// # Safety
/// `p` is writable for `size` bytes and 8-byte aligned.
#[inline]
pub unsafe fn zero(p: *mut u8, size: usize) {
    if size <= 128 && size % 8 == 0 {
        let w = p.cast::<u64>();
        for k in 0..size / 8 {
            // SAFETY: inside the object (precondition). Volatile only so that the loop is not
            // turned back into a `memset` call, whose overhead dominates for 16 bytes.
            unsafe { w.add(k).write_volatile(0) };
        }
    } else {
        // SAFETY: precondition.
        unsafe { ptr::write_bytes(p, 0, size) };
    }
}

/// Counters the pacer and `MemStats` read (bytes).
#[derive(Clone, Copy, Debug, Default)]
pub struct GcHeapStats {
    /// Bytes of allocated GC objects (slot sizes).
    pub live: usize,
    /// Bytes of GC spans.
    pub spans: usize,
    /// The most bytes of GC spans since the last `take_peak_spans` (the collector takes it at
    /// each cycle's end, for the page heap's retain floor).
    pub peak_spans: usize,
    /// Objects allocated and freed since the start.
    pub nmalloc: u64,
    pub nfree: u64,
}

pub(crate) struct GcHeap {
    partial: [[*mut GcSpan; NUM_CLASSES]; 2],
    all: *mut GcSpan,
    pool: FixAlloc,
    pub stats: GcHeapStats,
    /// The sweep generation: bumped when a mark ends (`begin_sweep`).
    gen: u32,
    /// The next span on `all` the sweep looks at; null once every span is swept.
    cursor: *mut GcSpan,
    /// Bytes allocated since the current (or last) sweep began: `live` less these, once the
    /// sweep is over, is what the mark kept (Go's heapMarked), which the next goal is set
    /// from.
    sweep_alloc: usize,
    /// Between `begin_sweep` and `end_sweep`: allocations count in `sweep_alloc`. Not the
    /// same as `sweeping()`: allocating threads may sweep the last span before the collector
    /// takes the lock back, and what they allocate until it does must still count (when it
    /// did not, a thread allocating while the collector's thread waited for a CPU put
    /// megabytes into what the mark seemed to keep, and the next goal doubled).
    sweep_open: bool,
}

// SAFETY: the raw pointers are records and spans owned by this structure, used under its lock.
unsafe impl Send for GcHeap {}

pub(crate) static GC_HEAP: Mutex<GcHeap> = Mutex::new(GcHeap {
    partial: [[ptr::null_mut(); NUM_CLASSES]; 2],
    all: ptr::null_mut(),
    pool: FixAlloc::new(core::mem::size_of::<GcSpan>()),
    gen: 0,
    cursor: ptr::null_mut(),
    sweep_alloc: 0,
    sweep_open: false,
    stats: GcHeapStats {
        live: 0,
        spans: 0,
        peak_spans: 0,
        nmalloc: 0,
        nfree: 0,
    },
});

impl GcHeap {
    /// A zeroed object of `size` bytes aligned to 16 (scanned unless `noscan`), or null if
    /// the OS refuses memory.
    pub fn alloc(&mut self, size: usize, noscan: bool) -> *mut u8 {
        let class = size_class::class_for_layout(size.max(1), 16);
        self.alloc_class(class, size, noscan)
    }

    /// A zeroed object of size class `class` (0: a large object of `size` bytes), counted as
    /// allocated; null if the OS refuses memory.
    pub fn alloc_class(&mut self, class: usize, size: usize, noscan: bool) -> *mut u8 {
        let g = if class == 0 {
            let npages = size.div_ceil(size_class::PAGE_SIZE);
            // Proportional sweep (Go's deductSweepCredit), by its pages, within a bound (one
            // huge object must not sweep the whole heap under the lock).
            if self.sweeping() {
                self.sweep_some(npages.saturating_mul(SWEEP_PER_PAGE).min(1024));
            }
            self.new_span(npages, 0, noscan)
        } else {
            let head = self.swept_partial(class, noscan);
            if head.is_null() {
                self.new_span(size_class::class_pages(class), class, noscan)
            } else {
                head
            }
        };
        if g.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: `g` is a live record of ours with a free slot (new or on a partial list).
        unsafe {
            let Some(i) = (*g).find_free() else {
                return ptr::null_mut();
            };
            let w = (*g).bits[i / 64][A] | 1 << (i % 64);
            (*g).set_alloc_word(i / 64, w);
            (*g).nfree -= 1;
            (*g).hint = i + 1;
            if (*g).nfree == 0 && (*g).in_partial {
                self.unlink_partial(g, class);
            }
            if super::mark::marking() {
                // Allocate black (see `alloc_batch`).
                (*g).set_mark(i);
            }
            let p = (*g).object(i);
            zero(p, (*g).size);
            self.count_alloc((*g).size);
            p
        }
    }

    /// Allocates up to `max` objects of size class `class` (not 0) and passes each to `f`,
    /// taking free slots a bitmap word at a time; returns how many (fewer only if the OS
    /// refuses memory). The objects are not zeroed: the caller zeroes them after it releases
    /// the lock (a thread cache's refill, so that threads do not queue behind each other's
    /// `memset`s).
    ///
    /// During a concurrent mark the new objects are black (Go's rule): their mark bits are
    /// set here, under `GC_HEAP`, where `mark::marking()` cannot change (the collector turns
    /// it on and off holding this lock), so a mark bit set here never outlives its cycle. A
    /// black object is never scanned by the markers: whoever fills it shades what it stores
    /// (`Gc::new` its contents, the write barrier later stores).
    pub fn alloc_batch(
        &mut self,
        class: usize,
        noscan: bool,
        max: usize,
        mut f: impl FnMut(*mut u8),
    ) -> usize {
        // Proportional sweep (Go's deductSweepCredit): every refill during a sweep sweeps
        // `SWEEP_RATIO` spans first, so the sweep ends within an allocation of a fraction of
        // the heap, whoever else holds the lock (allocation starts no cycle until it ends).
        if self.sweeping() {
            self.sweep_some(SWEEP_RATIO);
        }
        let mut got = 0;
        while got < max {
            let mut g = self.swept_partial(class, noscan);
            if g.is_null() {
                g = self.new_span(size_class::class_pages(class), class, noscan);
                if g.is_null() {
                    break;
                }
            }
            // SAFETY: `g` is a live record of ours with a free slot (new or on a partial
            // list); the bits taken are below `nelems`.
            unsafe {
                let (nelems, size) = ((*g).nelems, (*g).size);
                let black = super::mark::marking();
                for w in 0..nelems.div_ceil(64) {
                    let mut free = !(*g).bits[w][A];
                    if w == nelems / 64 {
                        free &= (1u64 << (nelems % 64)) - 1;
                    }
                    let mut taken = 0u64;
                    while free != 0 && got < max {
                        let b = free.trailing_zeros() as usize;
                        free &= free - 1;
                        taken |= 1 << b;
                        let v = (*g).bits[w][A] | 1 << b;
                        (*g).set_alloc_word(w, v);
                        let p = (*g).object(w * 64 + b);
                        f(p);
                        got += 1;
                        (*g).nfree -= 1;
                        self.count_alloc(size);
                    }
                    if black && taken != 0 {
                        (*g).set_marks(w, taken);
                    }
                    if got == max || (*g).nfree == 0 {
                        break;
                    }
                }
                if (*g).nfree == 0 && (*g).in_partial {
                    self.unlink_partial(g, class);
                }
            }
        }
        got
    }

    /// Takes back a slot that a thread cache reserved (allocated, its first word a link) and
    /// never handed out: it is free again and no longer counted.
    ///
    /// # Safety
    /// `p` is such a slot, and no one else refers to it.
    pub unsafe fn unreserve(&mut self, p: *mut u8) {
        let Some((g, i)) = find_object(p.addr()) else {
            return;
        };
        // SAFETY: `g` is a live record of ours (found under our lock) and `i` an allocated
        // object of it, which the precondition says nobody uses.
        unsafe {
            let w = (*g).bits[i / 64][A] & !(1 << (i % 64));
            (*g).set_alloc_word(i / 64, w);
            // A reserved slot may have been marked (conservative words point at cached
            // slots); the free slot starts white.
            core::sync::atomic::AtomicU64::from_ptr(&mut (*g).bits[i / 64][M])
                .fetch_and(!(1 << (i % 64)), core::sync::atomic::Ordering::Relaxed);
            (*g).nfree += 1;
            self.stats.live -= (*g).size;
            self.stats.nmalloc -= 1;
            let class = (*(*g).span).class as usize;
            // During a concurrent mark a marker may be reading this record: an empty span
            // stays (the sweep after the mark returns it).
            if (*g).nfree == (*g).nelems && !super::mark::marking() {
                self.release(g);
            } else if !(*g).in_partial {
                self.push_partial(g, class);
            }
        }
    }

    /// A new GC span (`class` 0: one large object of `npages` pages), on the lists.
    fn new_span(&mut self, npages: usize, class: usize, noscan: bool) -> *mut GcSpan {
        let g = self.pool.alloc() as *mut GcSpan;
        if g.is_null() {
            return g;
        }
        let s = HEAPS[0].alloc_for_gc(npages, class);
        if s.is_null() {
            // SAFETY: `g` came from our pool just now and is unused.
            unsafe { self.pool.free(g as *mut u8) };
            return ptr::null_mut();
        }
        // SAFETY: the pages of a span the page heap just handed us, inside its arena.
        unsafe { crate::pagemap::set_gc_pages((*s).base(), (*s).npages, true) };
        // SAFETY: `s` is a fresh in-use span, ours alone; `g` is memory for one record.
        unsafe {
            let (size, nelems) = if class == 0 {
                ((*s).bytes(), 1)
            } else {
                (
                    size_class::class_size(class),
                    size_class::class_objects(class),
                )
            };
            g.write(GcSpan {
                span: s,
                bits: [[0; 2]; WORDS],
                check: [0; WORDS],
                noscan,
                size,
                nelems,
                nfree: nelems,
                hint: 0,
                div_mul: if class == 0 {
                    0
                } else {
                    (u32::MAX / size as u32).wrapping_add(1)
                },
                in_partial: false,
                swept: self.gen,
                next_partial: ptr::null_mut(),
                next: self.all,
                prev: ptr::null_mut(),
            });
            if !self.all.is_null() {
                (*self.all).prev = g;
            }
            self.all = g;
            (*s).gc = g;
            // The range grows before the span is published (a lookup that finds the state
            // GC passed the range check with the new bounds or did not need them).
            let ord = core::sync::atomic::Ordering::Relaxed;
            RANGE_LO.fetch_min((*s).base(), ord);
            RANGE_HI.fetch_max((*s).base() + (*s).bytes(), ord);
            // Published last, with release: a conservative lookup that finds the span state
            // GC (an acquire load in `find_object`, which a concurrent marker runs without our
            // lock) also finds its record, initialised.
            core::sync::atomic::AtomicU8::from_ptr(&mut (*s).state)
                .store(span::GC, core::sync::atomic::Ordering::Release);
            if class != 0 {
                self.push_partial(g, class);
            }
            self.stats.spans += (*s).bytes();
            self.stats.peak_spans = self.stats.peak_spans.max(self.stats.spans);
        }
        g
    }

    fn push_partial(&mut self, g: *mut GcSpan, class: usize) {
        // SAFETY: `g` is a live record of ours.
        unsafe {
            let noscan = (*g).noscan as usize;
            (*g).next_partial = self.partial[noscan][class];
            (*g).in_partial = true;
            self.partial[noscan][class] = g;
        }
    }

    fn unlink_partial(&mut self, g: *mut GcSpan, class: usize) {
        // SAFETY: `g` and the list's records are live records of ours.
        unsafe {
            let noscan = (*g).noscan as usize;
            let mut at: *mut *mut GcSpan = &mut self.partial[noscan][class];
            while !(*at).is_null() {
                if *at == g {
                    *at = (*g).next_partial;
                    break;
                }
                at = &mut (**at).next_partial;
            }
            (*g).in_partial = false;
            (*g).next_partial = ptr::null_mut();
        }
    }

    /// Every GC span, for marking and sweeping.
    pub fn spans(&self) -> GcSpans {
        GcSpans { next: self.all }
    }

    /// A swept span of `class` with a free slot, or null: the head of its partial list, swept
    /// first if the sweep has not reached it (Go's lazy sweep: a span is swept before it is
    /// allocated from, or the sweep would free what is allocated in it now); with the list
    /// empty while a sweep runs, up to `SWEEP_HELP` spans are swept in order, until one of
    /// the class frees a slot (an allocation helps the sweep before the heap grows, as Go's
    /// `mcentral.cacheSpan` does, within a budget so that one refill never sweeps the heap).
    fn swept_partial(&mut self, class: usize, noscan: bool) -> *mut GcSpan {
        let mut help = SWEEP_HELP;
        loop {
            let g = self.partial[noscan as usize][class];
            if g.is_null() {
                if !self.sweeping() || help == 0 {
                    return g;
                }
                self.sweep_some(8);
                help = help.saturating_sub(8);
                continue;
            }
            // SAFETY: records on the partial lists are live records of ours.
            if unsafe { (*g).swept } == self.gen {
                return g;
            }
            // Swept now: released (and off the list) if it ends empty, else still the head with
            // a free slot, which the next turn returns.
            self.sweep_span(g);
        }
    }

    /// Starts the sweep of the mark that just ended (its mark bits are final): every span is
    /// unswept from here until the sweep reaches it (`sweep_some`) or an allocation needs it
    /// (`swept_partial`). No marker runs; the next mark starts only once the sweep is over.
    pub fn begin_sweep(&mut self) {
        self.gen = self.gen.wrapping_add(1);
        self.cursor = self.all;
        self.sweep_alloc = 0;
        self.sweep_open = true;
    }

    /// Ends the sweep (every span is swept by then) and returns what the mark kept (Go's
    /// heapMarked): `live` less what was allocated since the sweep began, read in the same
    /// call that closes that count.
    pub fn end_sweep(&mut self) -> usize {
        debug_assert!(!self.sweeping());
        self.sweep_open = false;
        self.stats.live.saturating_sub(self.sweep_alloc)
    }

    /// The most bytes of GC spans since the last call, and starts the next count from now.
    pub fn take_peak_spans(&mut self) -> usize {
        core::mem::replace(&mut self.stats.peak_spans, self.stats.spans)
    }

    /// Whether a sweep is in progress (between a mark's end and the end of its sweep, `live`
    /// still counts the unreached objects of spans not yet swept).
    pub fn sweeping(&self) -> bool {
        !self.cursor.is_null()
    }

    /// Counts an object of `size` bytes handed out (or reserved by a thread's cache).
    fn count_alloc(&mut self, size: usize) {
        self.stats.live += size;
        self.stats.nmalloc += 1;
        if self.sweep_open {
            self.sweep_alloc += size;
        }
    }

    /// Whether `live` reached `goal`. Not while a sweep runs: `live` then still counts what
    /// the sweep is freeing (the goal is set again when it ends).
    pub fn over(&self, goal: usize) -> bool {
        self.stats.live >= goal && !self.sweeping()
    }

    /// Sweeps up to `n` unswept spans from the sweep's cursor; true once every span is swept.
    pub fn sweep_some(&mut self, n: usize) -> bool {
        let mut k = 0;
        while !self.cursor.is_null() && k < n {
            let g = self.cursor;
            // SAFETY: the cursor is a live record on `all` (`release` moves it off a record
            // it frees); the next one is read before `g` may be released.
            unsafe {
                self.cursor = (*g).next;
                if (*g).swept != self.gen {
                    self.sweep_span(g);
                    k += 1;
                }
            }
        }
        self.cursor.is_null()
    }

    /// Sweeps every span left (the sweep's end, or a stop-the-world sweep).
    pub fn finish_sweep(&mut self) {
        while !self.sweep_some(usize::MAX) {}
    }

    /// Frees every allocated object of `g` not marked and clears its marks; a span left empty
    /// goes back to the page heap, one with a free slot goes on its partial list.
    fn sweep_span(&mut self, g: *mut GcSpan) {
        // SAFETY: a live record of ours, under our lock; we unlink before recycling it.
        unsafe {
            (*g).swept = self.gen;
            let mut dead = 0usize;
            for w in 0..WORDS {
                let gone = (*g).bits[w][A] & !(*g).bits[w][M];
                dead += gone.count_ones() as usize;
                (*g).bits[w][A] &= (*g).bits[w][M];
                (*g).bits[w][M] = 0;
            }
            if dead > 0 {
                self.stats.live -= dead * (*g).size;
                self.stats.nfree += dead as u64;
                (*g).nfree += dead;
                let s = (*g).span;
                let class = (*s).class as usize;
                if (*g).nfree == (*g).nelems {
                    self.release(g);
                } else if !(*g).in_partial {
                    self.push_partial(g, class);
                }
            } else if (*g).nfree == (*g).nelems {
                // Emptied by thread-exit give-backs during a concurrent mark, which keep
                // spans (see `unreserve`).
                self.release(g);
            }
        }
    }

    /// Clears every mark bit (a mark given up). No marker runs.
    pub fn clear_marks(&mut self) {
        for g in self.spans() {
            // SAFETY: live records under our lock; no marker runs.
            unsafe {
                for b in &mut (*g).bits {
                    b[M] = 0;
                }
            }
        }
    }

    /// `gccheckmark`: moves the mark bits aside and clears them for a second mark.
    pub fn save_marks(&mut self) {
        for g in self.spans() {
            // SAFETY: as `clear_marks`.
            unsafe {
                for (c, b) in (*g).check.iter_mut().zip(&mut (*g).bits) {
                    *c = b[M];
                    b[M] = 0;
                }
            }
        }
    }

    /// `gccheckmark`: the first allocated object that the second mark reached and the saved
    /// one did not, if any; the mark bits become the union of both.
    pub fn merge_checked_marks(&mut self) -> Option<usize> {
        let mut missed = None;
        for g in self.spans() {
            // SAFETY: as `clear_marks`.
            unsafe {
                for w in 0..WORDS {
                    let m = (*g).bits[w][M] & !(*g).check[w] & (*g).bits[w][A];
                    if m != 0 && missed.is_none() {
                        missed = Some((*g).object(w * 64 + m.trailing_zeros() as usize).addr());
                    }
                    (*g).bits[w][M] |= (*g).check[w];
                }
            }
        }
        missed
    }

    /// Returns an empty span to the page heap and recycles its record.
    ///
    /// # Safety
    /// `g` is a live record of ours with no allocated object.
    unsafe fn release(&mut self, g: *mut GcSpan) {
        // SAFETY: precondition.
        unsafe {
            let s = (*g).span;
            if self.cursor == g {
                self.cursor = (*g).next;
            }
            if (*g).in_partial {
                self.unlink_partial(g, (*s).class as usize);
            }
            if (*g).prev.is_null() {
                self.all = (*g).next;
            } else {
                (*(*g).prev).next = (*g).next;
            }
            if !(*g).next.is_null() {
                (*(*g).next).prev = (*g).prev;
            }
            self.stats.spans -= (*s).bytes();
            // The state first, then the record: a lookup that saw the state GC finds either
            // the record or null (see `find_object`).
            let state = if (*s).class == 0 {
                span::LARGE
            } else {
                span::SMALL
            };
            core::sync::atomic::AtomicU8::from_ptr(&mut (*s).state)
                .store(state, core::sync::atomic::Ordering::Release);
            core::sync::atomic::AtomicPtr::from_ptr(&mut (*s).gc)
                .store(ptr::null_mut(), core::sync::atomic::Ordering::Release);
            // SAFETY: our span's pages, inside its arena, before they go back.
            crate::pagemap::set_gc_pages((*s).base(), (*s).npages, false);
            HEAPS[0].free_from_gc(s);
            self.pool.free(g as *mut u8);
        }
    }
}

/// Iterator over all GC spans' records.
pub struct GcSpans {
    next: *mut GcSpan,
}

impl Iterator for GcSpans {
    type Item = *mut GcSpan;
    fn next(&mut self) -> Option<*mut GcSpan> {
        if self.next.is_null() {
            return None;
        }
        let g = self.next;
        // SAFETY: records on `all` are live while the caller holds the lock.
        self.next = unsafe { (*g).next };
        Some(g)
    }
}

/// The lowest and highest (exclusive) address any GC span has covered: a word outside is no
/// pointer to a GC object, without a page-map lookup (most words that conservative scans read
/// are not pointers, and a lookup of a random word misses the cache). Only grow.
static RANGE_LO: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(usize::MAX);
static RANGE_HI: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// The GC heap's address range as `(lowest, highest - lowest)`: a word `w` with
/// `w.wrapping_sub(lowest) >= size` points into no GC span that existed at this call. A scan
/// may filter with it, read once: a span created after the read holds only objects allocated
/// since, which need no marking (no mark runs, or they are allocated black).
#[inline]
pub fn range() -> (usize, usize) {
    let lo = RANGE_LO.load(core::sync::atomic::Ordering::Relaxed);
    let hi = RANGE_HI.load(core::sync::atomic::Ordering::Relaxed);
    (lo, hi.wrapping_sub(lo))
}

/// The GC span record and object index for a word that points into an allocated GC object,
/// or None. Caller holds `GC_HEAP`'s lock (GC spans change only under it), or is a marker of a
/// concurrent mark: then spans may become GC spans meanwhile (published with release, read
/// here with acquire) and slots may become allocated (atomic alloc words), but no GC span
/// stops being one (the sweep and the release of empty spans wait for the mark's end).
#[inline]
pub fn find_object(w: usize) -> Option<(*mut GcSpan, usize)> {
    let lo = RANGE_LO.load(core::sync::atomic::Ordering::Relaxed);
    if w.wrapping_sub(lo)
        >= RANGE_HI
            .load(core::sync::atomic::Ordering::Relaxed)
            .wrapping_sub(lo)
    {
        return None;
    }
    let s = crate::pagemap::span_of(w);
    if s.is_null() {
        return None;
    }
    // SAFETY: span descriptors are never unmapped; a GC span's state and record change only
    // under `GC_HEAP`, and while a concurrent mark runs a GC span's record stays (see above).
    unsafe {
        let state = core::sync::atomic::AtomicU8::from_ptr(ptr::addr_of!((*s).state).cast_mut())
            .load(core::sync::atomic::Ordering::Acquire);
        if state != span::GC {
            return None;
        }
        // Null if the span stopped being a GC span after the state was read (a sweep's
        // `release`, possible only for a mutator caught inside the barrier across mark
        // termination); a stale record is harmless (records are never unmapped).
        let g = core::sync::atomic::AtomicPtr::from_ptr(ptr::addr_of!((*s).gc).cast_mut())
            .load(core::sync::atomic::Ordering::Acquire);
        if g.is_null() {
            return None;
        }
        // Wrapping, and checked against the span's length: a concurrent marker may read a
        // descriptor recycled for another span since `span_of` checked it (then the index is
        // wrong, or out of range: a wrong mark at worst, never an overflow panic).
        let off = w.wrapping_sub((*s).base());
        if off >= (*s).bytes() {
            return None;
        }
        let i = (*g).index_of(off);
        if i < (*g).nelems && (*g).is_allocated(i) {
            Some((g, i))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_of_divides_exactly() {
        for c in 1..NUM_CLASSES {
            let size = size_class::class_size(c);
            let bytes = size_class::class_pages(c) * size_class::PAGE_SIZE;
            let g = GcSpan {
                span: ptr::null_mut(),
                bits: [[0; 2]; WORDS],
                check: [0; WORDS],
                noscan: false,
                size,
                nelems: bytes / size,
                nfree: 0,
                hint: 0,
                div_mul: (u32::MAX / size as u32).wrapping_add(1),
                in_partial: false,
                swept: 0,
                next_partial: ptr::null_mut(),
                next: ptr::null_mut(),
                prev: ptr::null_mut(),
            };
            for off in 0..bytes {
                assert_eq!(g.index_of(off), off / size, "class {c} offset {off}");
            }
        }
    }

    #[test]
    fn find_free_wraps_and_respects_nelems() {
        let mut g = GcSpan {
            span: ptr::null_mut(),
            bits: [[u64::MAX, 0]; WORDS],
            check: [0; WORDS],
            noscan: false,
            size: 80,
            nelems: 102,
            nfree: 0,
            hint: 0,
            div_mul: 0,
            in_partial: false,
            swept: 0,
            next_partial: ptr::null_mut(),
            next: ptr::null_mut(),
            prev: ptr::null_mut(),
        };
        assert_eq!(g.find_free(), None, "bits past nelems are not objects");
        g.bits[1][A] &= !(1 << 37); // object 101, the last
        g.bits[0][A] &= !(1 << 3);
        g.hint = 50;
        assert_eq!(g.find_free(), Some(101));
        g.hint = 102;
        assert_eq!(g.find_free(), Some(3), "wraps to the start");
        g.hint = 4;
        assert_eq!(g.find_free(), Some(101));
    }

    #[test]
    fn every_class_fits_the_bitmaps() {
        for c in 1..NUM_CLASSES {
            assert!(size_class::class_objects(c) <= MAX_OBJECTS, "class {c}");
        }
    }

    /// A GC span's pages are marked as the collector's while the span is one (so the walk
    /// over malloc memory skips them) and unmarked when it goes back to the page heap (a
    /// malloc span there later would be skipped, and the `Gc` pointers in it missed); the
    /// walk does not visit them meanwhile.
    #[test]
    fn gc_pages_marked_while_the_span_is_ours() {
        let mut h = GC_HEAP.lock();
        // A large object's span, over more than one bitmap word's worth of pages.
        let g = h.new_span(70, 0, false);
        assert!(!g.is_null());
        // SAFETY: our live record.
        let span = unsafe { (*g).span };
        // SAFETY: its live span.
        let (base, npages) = unsafe { ((*span).base(), (*span).npages) };
        let page = |k: usize| base + k * size_class::PAGE_SIZE;
        assert!((0..npages).all(|k| crate::pagemap::is_gc_page(page(k))));
        let mut seen = false;
        crate::pagemap::for_each_inuse_span(|s| seen |= s == span);
        assert!(!seen, "the walk visited a GC span");
        // SAFETY: our record, with no allocated object.
        unsafe { h.release(g) };
        assert!((0..npages).all(|k| !crate::pagemap::is_gc_page(page(k))));
    }

    /// The walk over malloc memory stops at each arena's carved bound (`note_carved`), never
    /// below a span in use: 96 MiB of large blocks, spread over whole arenas, are all visited.
    #[test]
    fn walk_visits_every_large_block() {
        use core::alloc::{GlobalAlloc, Layout};
        let layout = Layout::from_size_align(512 << 10, 8).unwrap();
        let mut blocks = [core::ptr::null_mut::<u8>(); 192];
        for b in blocks.iter_mut() {
            // SAFETY: a non-zero size.
            *b = unsafe { crate::GoMalloc.alloc(layout) };
            assert!(!b.is_null());
        }
        let mut seen = [false; 192];
        crate::pagemap::for_each_inuse_span(|s| {
            // SAFETY: descriptors are never freed.
            let base = unsafe { (*s).base() };
            for (k, b) in blocks.iter().enumerate() {
                seen[k] |= b.addr() == base;
            }
        });
        let missed = seen.iter().filter(|&&v| !v).count();
        for b in blocks {
            // SAFETY: allocated above with this layout.
            unsafe { crate::GoMalloc.dealloc(b, layout) };
        }
        assert_eq!(missed, 0, "the walk missed {missed} of 192 large blocks");
    }
}
