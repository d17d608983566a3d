//! Central free lists, one per size class and heap shard (Go's `mcentral`, with tcmalloc's
//! transfer cache, sharded like jemalloc's arenas).
//!
//! Owns, per (shard, class): the spans that still have free objects (`partial`), and a transfer
//! cache of whole batches of free objects that thread caches gave back. A thread cache talks to
//! its shard's lists only, so threads on different shards do not meet on a lock. Each span
//! records its list (`Span::central`): objects always go home to that list, taking its lock
//! alone (never two central locks at once), and a full batch spilled by a thread goes to the
//! transfer cache of the list its first object came from, so what a consumer frees flows back
//! to the producer's shard in O(1).
//!
//! Fast path and fallback in one sentence: a thread cache that runs dry takes a whole batch
//! from the transfer cache (one lock, O(1)), else objects are cut from partial spans (their free
//! list first, then never-used objects by bumping an index), else a new span comes from the page
//! heap; a thread cache that overflows hands a whole batch to the transfer cache, else its
//! objects go home to their spans, and a span whose objects are all home goes back to the heap.
//!
//! That is also how remote frees travel: an object freed on another thread joins that thread's
//! cache; it reaches its span, or (through its origin list's transfer cache) another thread's
//! cache, in batches, so a producer/consumer pair costs one lock round trip per batch (up to 64
//! objects). Spans of objects going home are looked up before the lock is taken.
//!
//! Invariants (under this class's lock): a `SMALL` span is on `partial` exactly when it has a
//! free object (free list non-empty or `bump < nelems`) and at least one object handed out;
//! `allocated` counts the objects outside the span (in thread caches, the transfer cache or in
//! use). Objects in a [`Batch`] are linked through their first word, read and written only
//! through `span::free_link` / `span::set_free_link` (with the `valgrind` feature a free
//! object is off limits to memcheck but for those accesses; a freshly carved span is made
//! `NOACCESS` in `refill`).
//!
//! Locks: one cache-padded lock per list. A heap shard's lock may be taken while it is held, never
//! the other way round; new spans are fetched with the lock dropped, so a slow `mmap` does not
//! block the class.

use crate::diag;
use crate::mheap::MHeap;
use crate::pagemap;
use crate::size_class::{self, CLASS_BATCH};
use crate::span::{self, Span, SpanList};
use crate::sync::{const_fn, Mutex, RawLock};
use core::ptr;
use crossbeam_utils::CachePadded;

/// Most batches a transfer cache holds.
const TC_SLOTS: usize = 64;
/// Bytes a class's transfer cache may hold.
const TC_BYTES: usize = 256 * 1024;

/// Free objects linked through their first word: `head` .. `tail`, `len` of them.
#[derive(Clone, Copy, Debug)]
pub struct Batch {
    pub head: *mut u8,
    pub tail: *mut u8,
    pub len: u32,
}

impl Batch {
    pub const EMPTY: Batch = Batch {
        head: ptr::null_mut(),
        tail: ptr::null_mut(),
        len: 0,
    };

    /// Links `obj` at the front.
    ///
    /// # Safety
    /// `obj` is a free object of at least one pointer in size that the batch now owns.
    #[inline]
    pub unsafe fn push(&mut self, obj: *mut u8) {
        // SAFETY: precondition: the object is ours and big enough for a link.
        unsafe { span::set_free_link(obj, self.head) };
        if self.head.is_null() {
            self.tail = obj;
        }
        self.head = obj;
        self.len += 1;
    }
}

/// How many full batches class `class` keeps in its transfer cache.
pub fn tc_capacity(class: usize) -> usize {
    let batch_bytes = CLASS_BATCH[class] as usize * size_class::class_size(class);
    (TC_BYTES / batch_bytes).clamp(1, TC_SLOTS)
}

pub struct MCentral {
    inner: CachePadded<Mutex<CentralInner>>,
}

struct CentralInner {
    partial: SpanList,
    batches: [Batch; TC_SLOTS],
    nbatches: usize,
    /// Refills plus spills, for the scavenger to tell a quiet heap.
    ops: u64,
}

// SAFETY: the raw pointers inside are owned by the structure and only used under its lock.
unsafe impl Send for CentralInner {}

impl MCentral {
    const_fn! {
        pub fn new() -> MCentral {
            MCentral {
                inner: CachePadded::new(Mutex::new(CentralInner {
                    partial: SpanList::new(),
                    batches: [Batch::EMPTY; TC_SLOTS],
                    nbatches: 0,
                    ops: 0,
                })),
            }
        }
    }

    /// `want` free objects of class `class`; fewer (maybe none) only if the OS refused memory.
    /// When `want > 1` and a full batch is cached, that batch is returned instead, whatever its
    /// size: its objects have been touched already, so handing them out costs no new pages
    /// (a thread cache's slow start asks for small batches, see `mcache::MCache::refill`).
    pub fn refill(&self, heap: &MHeap, class: usize, want: u32) -> Batch {
        let mut c = self.inner.lock();
        c.ops = c.ops.wrapping_add(1);
        if want > 1 && c.nbatches > 0 {
            c.nbatches -= 1;
            let n = c.nbatches;
            return c.batches[n];
        }
        let mut out = Batch::EMPTY;
        loop {
            c.take_from_spans(&mut out, want);
            if out.len >= want {
                break;
            }
            drop(c);
            let s = heap.alloc(size_class::class_pages(class), class);
            c = self.inner.lock();
            if s.is_null() {
                break;
            }
            // SAFETY: a fresh SMALL span of this class, on no list; it becomes ours.
            unsafe {
                (*s).central = self;
                // Its objects are free: the program may not touch them until handed out.
                crate::valgrind::make_noaccess((*s).start, (*s).bytes());
                c.partial.push(s);
            }
        }
        out
    }

    /// Takes back objects of class `class` from a thread cache.
    ///
    /// # Safety
    /// Every object in `batch` was handed out for class `class` and is free.
    pub unsafe fn spill(&self, class: usize, batch: Batch) {
        if batch.len == 0 {
            return;
        }
        // A full batch goes to the transfer cache of the list its first object came from: the
        // objects a consumer thread frees flow back to the producer's shard in O(1) instead of
        // piling up here (most batches are of one origin; any list may hold any object of the
        // class, since going home always looks up each object's own span).
        let target = if batch.len == CLASS_BATCH[class] {
            // SAFETY: the batch's objects are free objects of this class (precondition).
            unsafe { origin(class, batch.head) }.unwrap_or(self)
        } else {
            self
        };
        let mut c = target.inner.lock();
        c.ops = c.ops.wrapping_add(1);
        if batch.len == CLASS_BATCH[class] && c.nbatches < tc_capacity(class) {
            let n = c.nbatches;
            c.batches[n] = batch;
            c.nbatches += 1;
            drop(c);
            if n == 0 {
                // The scavenger sends idle transfer caches home (and their spans to the OS).
                #[cfg(not(loom))]
                crate::scavenger::wake();
            }
            return;
        }
        drop(c);
        // SAFETY: forwarded precondition.
        unsafe { send_home(class, batch) };
    }

    /// Sends every batch in the transfer cache home to its spans (for `release_memory`).
    pub fn drain(&self, class: usize) {
        // Take the batches out under our lock, then send them home without it: their spans
        // may belong to other central lists, whose locks are never taken while holding ours.
        let mut c = self.inner.lock();
        let mut taken = [Batch::EMPTY; TC_SLOTS];
        let n = c.nbatches;
        taken[..n].copy_from_slice(&c.batches[..n]);
        c.nbatches = 0;
        drop(c);
        for b in taken[..n].iter().copied() {
            // SAFETY: batches in the transfer cache hold free objects of this class.
            unsafe { send_home(class, b) };
        }
    }

    /// Refills and spills so far (the scavenger's sign of activity).
    pub fn ops(&self) -> u64 {
        self.inner.lock().ops
    }

    /// Objects sitting in the transfer cache.
    pub fn cached_objects(&self) -> usize {
        let c = self.inner.lock();
        c.batches[..c.nbatches].iter().map(|b| b.len as usize).sum()
    }

    /// The class lock, for `fork()` handling.
    pub(crate) fn lock_ref(&self) -> &dyn RawLock {
        &*self.inner
    }
}

impl CentralInner {
    /// Moves free objects from partial spans into `out` until it holds `want`.
    fn take_from_spans(&mut self, out: &mut Batch, want: u32) {
        while out.len < want {
            let s = self.partial.head;
            if s.is_null() {
                return;
            }
            // SAFETY: spans on `partial` are SMALL spans of this class owned by our lock; the
            // objects we take are free.
            unsafe {
                while out.len < want {
                    let obj = if !(*s).freelist.is_null() {
                        let o = (*s).freelist;
                        (*s).freelist = span::free_link(o);
                        o
                    } else if (*s).bump < (*s).nelems {
                        // Inside the span (bump < nelems), so inside its mapping.
                        let o = (*s).start.add((*s).bump as usize * (*s).elem_size as usize);
                        (*s).bump += 1;
                        #[cfg(feature = "checked")]
                        crate::check::poison(o, (*s).elem_size as usize);
                        o
                    } else {
                        break;
                    };
                    out.push(obj);
                    (*s).allocated += 1;
                }
                if (*s).freelist.is_null() && (*s).bump == (*s).nelems {
                    self.partial.remove(s);
                }
            }
        }
    }

    /// Puts each object back on its span's free list; returns the spans that became entirely
    /// free, unlinked and chained through `next`.
    ///
    /// # Safety
    /// Each pair is a free object of this list's class and the live SMALL span holding it.
    unsafe fn return_to_spans(&mut self, homes: &[(*mut u8, *mut Span)]) -> *mut Span {
        let mut empties: *mut Span = ptr::null_mut();
        for &(p, s) in homes {
            // SAFETY: precondition; the object's first word becomes its span free-list link.
            unsafe {
                span::set_free_link(p, (*s).freelist);
                (*s).freelist = p;
                if !(*s).in_list {
                    self.partial.push(s);
                }
                (*s).allocated -= 1;
                if (*s).allocated == 0 {
                    self.partial.remove(s);
                    (*s).next = empties;
                    empties = s;
                }
            }
        }
        empties
    }
}

/// Puts the objects of `batch` back on their spans, under the lock of each span's own central
/// list (a batch a thread cache spilled here may hold objects of other lists' spans: remote
/// frees, or a thread that moved between heap shards). Spans are found without a lock; each
/// owner's lock is taken once per chunk, never two at a time.
///
/// # Safety
/// Every object in `batch` was handed out for class `class` and is free.
unsafe fn send_home(class: usize, mut batch: Batch) {
    let mut homes = [(ptr::null_mut(), ptr::null_mut()); HOME_CHUNK];
    while batch.len > 0 {
        // SAFETY: forwarded precondition.
        let mut todo = unsafe { find_homes(class, &mut batch, &mut homes) };
        while todo > 0 {
            // SAFETY: `find_homes` checked each span is a live SMALL span of this class, and a
            // span with an object out cannot be freed, so its `central` is set and stable.
            let owner: &MCentral = unsafe { &*(*homes[0].1).central };
            // Move the pairs of this owner to the front.
            let mut k = 0;
            for i in 0..todo {
                // SAFETY: as above.
                if core::ptr::eq(unsafe { (*homes[i].1).central }, owner) {
                    homes.swap(i, k);
                    k += 1;
                }
            }
            let mut c = owner.inner.lock();
            c.ops = c.ops.wrapping_add(1);
            // SAFETY: the first `k` pairs are free objects of spans on `owner`'s lists.
            let empties = unsafe { c.return_to_spans(&homes[..k]) };
            drop(c);
            // SAFETY: the spans are empty and unlinked; nothing refers to their objects.
            unsafe { free_spans(empties) };
            homes.copy_within(k..todo, 0);
            todo -= k;
        }
    }
}

/// The central list whose span holds `p`, if `p` is in a live SMALL span of `class` (else
/// `None`: the caller falls back to its own list, and `find_homes` reports the bad pointer).
///
/// # Safety
/// `p` was handed out for `class` and is free (so its span cannot be freed meanwhile).
unsafe fn origin<'a>(class: usize, p: *mut u8) -> Option<&'a MCentral> {
    // SAFETY: forwarded precondition; a span `home_span` returns is live and stable.
    unsafe { home_span(class, p).as_ref()?.central.as_ref() }
}

/// The live SMALL span of `class` holding `p`, or null if `p` is not in one.
///
/// # Safety
/// As for [`origin`].
unsafe fn home_span(class: usize, p: *mut u8) -> *mut Span {
    let s = pagemap::span_of(p as usize);
    // SAFETY: a span found in the page map is a valid descriptor; while one of its objects is
    // out it cannot be freed, so its state and class are stable.
    unsafe {
        if s.is_null() || (*s).state != span::SMALL || (*s).class as usize != class {
            return ptr::null_mut();
        }
    }
    s
}

/// Objects whose spans are looked up per lock acquisition when going home.
const HOME_CHUNK: usize = 64;

/// Unlinks up to `HOME_CHUNK` objects from the front of `batch` and pairs each with its span,
/// checking that the span is a live SMALL span of `class` (a pointer that is not one of ours
/// aborts with a message). Returns how many pairs were written. Needs no lock: a span holding
/// an object that is not yet home cannot be freed or change class.
///
/// # Safety
/// The objects in `batch` are free objects handed out for `class`.
unsafe fn find_homes(
    class: usize,
    batch: &mut Batch,
    homes: &mut [(*mut u8, *mut Span); HOME_CHUNK],
) -> usize {
    let n = (batch.len as usize).min(HOME_CHUNK);
    let mut p = batch.head;
    for h in homes.iter_mut().take(n) {
        // SAFETY: `p` is a free object (precondition), so its first word is a link; the span
        // found is checked before it is used.
        unsafe {
            let next = span::free_link(p);
            let s = home_span(class, p);
            if s.is_null() {
                diag::fatal(
                    "free of a pointer not allocated by gomalloc with this size",
                    p as usize,
                    size_class::class_size(class),
                );
            }
            *h = (p, s);
            p = next;
        }
    }
    batch.head = p;
    batch.len -= n as u32;
    if batch.len == 0 {
        batch.tail = ptr::null_mut();
    }
    n
}

/// Gives each span of a chain back to the heap it came from.
///
/// # Safety
/// The spans are empty SMALL spans on no list.
unsafe fn free_spans(mut s: *mut Span) {
    while !s.is_null() {
        // SAFETY: precondition.
        unsafe {
            let next = (*s).next;
            (*s).next = ptr::null_mut();
            MHeap::free_to_owner(s);
            s = next;
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn small_refills_take_a_cached_full_batch() {
        let heap = MHeap::new();
        let central = MCentral::new();
        let class = size_class::size_to_class(4096);
        let full = CLASS_BATCH[class];
        // Nothing cached: exactly what was asked for, carved from a span.
        let small = central.refill(&heap, class, 2);
        assert_eq!(small.len, 2);
        let b = central.refill(&heap, class, full);
        assert_eq!(b.len, full);
        // SAFETY: the objects came from this class and are free.
        unsafe { central.spill(class, b) };
        assert_eq!(central.cached_objects(), full as usize);
        // A full batch is cached: a small request takes it whole (touched memory already).
        let again = central.refill(&heap, class, 2);
        assert_eq!(again.len, full);
        assert_eq!(again.head, b.head);
        assert_eq!(central.cached_objects(), 0);
        // A request for one object never gets more than one.
        // SAFETY: as above.
        unsafe { central.spill(class, again) };
        let one = central.refill(&heap, class, 1);
        assert_eq!(one.len, 1);
        // SAFETY: as above.
        unsafe {
            central.spill(class, one);
            central.spill(class, small);
        }
        central.drain(class);
        assert_eq!(heap.stats().inuse, 0, "every span went back");
    }

    #[test]
    fn refill_spill_round_trip() {
        let heap = MHeap::new();
        let central = MCentral::new();
        let class = size_class::size_to_class(48);
        let want = CLASS_BATCH[class];
        let mut batches = [Batch::EMPTY; 4];
        for b in batches.iter_mut() {
            *b = central.refill(&heap, class, want);
            assert_eq!(b.len, want);
        }
        assert!(heap.stats().inuse > 0);
        for b in batches {
            // SAFETY: the objects came from this class and are free.
            unsafe { central.spill(class, b) };
        }
        assert_eq!(central.cached_objects(), 4 * want as usize);
        central.drain(class);
        assert_eq!(central.cached_objects(), 0);
        assert_eq!(heap.stats().inuse, 0, "empty spans go back to the heap");
    }

    #[test]
    fn objects_are_distinct_and_inside_their_span() {
        let heap = MHeap::new();
        let central = MCentral::new();
        let class = size_class::size_to_class(1000);
        let size = size_class::class_size(class);
        let b = central.refill(&heap, class, 200);
        assert_eq!(b.len, 200);
        let mut seen = std::vec::Vec::new();
        let mut p = b.head;
        for _ in 0..b.len {
            seen.push(p as usize);
            let s = pagemap::span_of(p as usize);
            assert!(!s.is_null());
            // SAFETY: live span; p is one of its objects.
            unsafe {
                assert_eq!((p.addr() - (*s).base()) % size, 0);
                p = span::free_link(p);
            }
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 200);
        // SAFETY: all 200 objects are ours and free.
        unsafe { central.spill(class, b) };
        assert_eq!(heap.stats().inuse, 0);
    }
}
