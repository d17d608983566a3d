//! Spans: runs of 8 KiB pages, the unit the page heap hands out (Go's `mspan`).
//!
//! Owns: the [`Span`] descriptor, the intrusive doubly linked [`SpanList`], and [`SpanPool`],
//! which makes descriptors with a `FixAlloc` (Go's `fixalloc`), since the allocator cannot
//! allocate its own metadata through itself.
//!
//! A span is in exactly one state:
//! - `FREE`: idle pages owned by the page heap, on one of its free lists; the page map points
//!   at it from its first and last page only (enough to coalesce with neighbours).
//! - `SMALL`: carved into objects of one size class, owned by that class's central list; the
//!   page map points at it from every page, so any interior pointer finds it.
//! - `LARGE`: one large object; the page map points at it from every page.
//!
//! Locks: a span's list links and free-span fields belong to the page heap lock while `FREE`;
//! its object fields (`freelist`, `allocated`, `bump`, links) belong to its class's central lock
//! while `SMALL`. Descriptors are never returned to the OS, so a stale page-map entry always
//! points at readable memory; [`Span::contains`] tells whether it is still the right span.

use crate::fixalloc::FixAlloc;
use crate::valgrind;
use core::ptr;

pub const FREE: u8 = 0;
pub const SMALL: u8 = 1;
pub const LARGE: u8 = 2;
/// A span of garbage-collected objects (feature `gc`): owned by `gc::heap`, which the
/// allocator's free paths refuse.
#[cfg(feature = "gc")]
pub const GC: u8 = 3;

/// A run of pages (see the module docs for who owns which field when).
#[repr(C)]
pub struct Span {
    /// The first page: a pointer derived from the mapping that holds the span, so objects and
    /// blocks cut from it carry that mapping's provenance (no integer-to-pointer casts).
    pub start: *mut u8,
    /// Length in 8 KiB pages.
    pub npages: usize,
    /// `GC` spans: the collector's record of the span (bitmaps, scan or not). Beside `start`,
    /// `npages` and `state`, which a conservative lookup reads with it (one cache line).
    #[cfg(feature = "gc")]
    pub gc: *mut crate::gc::heap::GcSpan,
    pub next: *mut Span,
    pub prev: *mut Span,
    /// `FREE`, `SMALL` or `LARGE`.
    pub state: u8,
    /// Size class for `SMALL`, 0 otherwise.
    pub class: u8,
    /// Whether the span is linked into a list right now.
    pub in_list: bool,
    /// Every byte is known to be zero (fresh from the OS, or released back to it).
    pub zeroed: bool,
    /// `FREE` (and a span just taken from the free lists): some of its pages held GC objects
    /// since they were last zeroed or released (feature `gc`: only the collector's frees set
    /// it). The page heap zeroes such pages before it hands them to the allocator: the
    /// collector scans malloc memory conservatively, and dead objects' pointers left in a
    /// block would keep other dead objects alive.
    pub dirty: bool,
    /// `SMALL`: object size, objects in the span, objects handed out, next never-used object.
    pub elem_size: u32,
    pub nelems: u32,
    pub allocated: u32,
    pub bump: u32,
    /// `SMALL`: objects given back, linked through their first word.
    pub freelist: *mut u8,
    /// `FREE`: bytes of this span returned to the OS (all of it when on a released list).
    pub released: usize,
    /// `FREE`: when the newest part of the span became idle (`os::now_ms`).
    pub idle_since: u64,
    /// In use: the heap (shard) that handed the span out and takes it back.
    pub owner: *const crate::mheap::MHeap,
    /// `SMALL`: the central list whose partial spans this span belongs to (its objects'
    /// home); set once, under that list's lock, before any object is handed out.
    pub central: *const crate::mcentral::MCentral,
    /// `checked` builds, `SMALL` spans: one bit per object, set while the object is handed to
    /// the program (so a second free of it is seen).
    #[cfg(feature = "checked")]
    pub alloc_bits: [core::sync::atomic::AtomicU64; 16],
}

impl Span {
    /// Bytes covered by the span.
    #[inline]
    pub fn bytes(&self) -> usize {
        self.npages << crate::size_class::PAGE_SHIFT
    }

    /// Address of the first page.
    #[inline]
    pub fn base(&self) -> usize {
        self.start.addr()
    }

    /// Address just past the last page.
    #[inline]
    pub fn end(&self) -> usize {
        self.base() + self.bytes()
    }

    /// Whether `addr` lies inside this span.
    #[inline]
    pub fn contains(&self, addr: usize) -> bool {
        addr.wrapping_sub(self.base()) < self.bytes()
    }

    /// Resets every field for a span of `npages` pages at `start`.
    pub fn init(&mut self, start: *mut u8, npages: usize) {
        *self = Span {
            start,
            npages,
            next: ptr::null_mut(),
            prev: ptr::null_mut(),
            state: FREE,
            class: 0,
            in_list: false,
            zeroed: false,
            dirty: false,
            elem_size: 0,
            nelems: 0,
            allocated: 0,
            bump: 0,
            freelist: ptr::null_mut(),
            released: 0,
            idle_since: 0,
            owner: core::ptr::null(),
            central: core::ptr::null(),
            #[cfg(feature = "checked")]
            alloc_bits: [const { core::sync::atomic::AtomicU64::new(0) }; 16],
            #[cfg(feature = "gc")]
            gc: ptr::null_mut(),
        };
    }
}

/// Bytes of a free object's link word.
const LINK: usize = core::mem::size_of::<*mut u8>();

/// The link word of the free object `obj`: the next free object in its list (span free list,
/// batch or thread cache), or null. Every read of a link word goes through here, every write
/// through [`set_free_link`], so with the `valgrind` feature memcheck lets the allocator touch
/// the word while it keeps reporting any access of the program's to the freed block.
///
/// # Safety
/// `obj` is a free object (at least a pointer in size and aligned to one) whose link word holds
/// a link.
#[inline(always)]
pub unsafe fn free_link(obj: *mut u8) -> *mut u8 {
    // SAFETY: precondition.
    valgrind::with_access(obj, LINK, || unsafe { (obj as *mut *mut u8).read() })
}

/// Sets the link word of the free object `obj` to `next` (see [`free_link`]).
///
/// # Safety
/// `obj` is a free object, at least a pointer in size and aligned to one, that the caller owns.
#[inline(always)]
pub unsafe fn set_free_link(obj: *mut u8, next: *mut u8) {
    // SAFETY: precondition.
    valgrind::with_access(obj, LINK, || unsafe { (obj as *mut *mut u8).write(next) })
}

/// An intrusive doubly linked list of spans (Go's `mSpanList`).
pub struct SpanList {
    pub head: *mut Span,
    pub len: usize,
}

// SAFETY: a list is only touched under the lock of the structure that owns it.
unsafe impl Send for SpanList {}

impl SpanList {
    pub const fn new() -> Self {
        SpanList {
            head: ptr::null_mut(),
            len: 0,
        }
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.head.is_null()
    }

    /// Links `s` at the front.
    ///
    /// # Safety
    /// `s` is a valid span in no list, owned by the caller's lock.
    pub unsafe fn push(&mut self, s: *mut Span) {
        // SAFETY: `s` and the current head are valid spans guarded by the caller's lock.
        unsafe {
            debug_assert!(!(*s).in_list);
            (*s).prev = ptr::null_mut();
            (*s).next = self.head;
            if !self.head.is_null() {
                (*self.head).prev = s;
            }
            (*s).in_list = true;
        }
        self.head = s;
        self.len += 1;
    }

    /// Unlinks `s`, which must be in this list.
    ///
    /// # Safety
    /// `s` is a valid span in this list.
    pub unsafe fn remove(&mut self, s: *mut Span) {
        // SAFETY: `s` and its neighbours are valid spans of this list.
        unsafe {
            debug_assert!((*s).in_list);
            let (prev, next) = ((*s).prev, (*s).next);
            if prev.is_null() {
                self.head = next;
            } else {
                (*prev).next = next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
            (*s).next = ptr::null_mut();
            (*s).prev = ptr::null_mut();
            (*s).in_list = false;
        }
        self.len -= 1;
    }
}

/// Span descriptors, from a `FixAlloc` (never unmapped, so stale page-map entries stay
/// readable; a freed descriptor has `npages == 0`, so it contains no address).
pub struct SpanPool {
    fix: FixAlloc,
}

impl SpanPool {
    pub const fn new() -> Self {
        SpanPool {
            fix: FixAlloc::new(core::mem::size_of::<Span>()),
        }
    }

    /// A descriptor initialised for `[start, start + npages pages)`; null if the OS refuses.
    pub fn alloc(&mut self, start: *mut u8, npages: usize) -> *mut Span {
        let s = self.fix.alloc() as *mut Span;
        if !s.is_null() {
            // SAFETY: `s` is memory for one Span, ours alone.
            unsafe { (*s).init(start, npages) };
        }
        s
    }

    /// Returns a descriptor to the pool.
    ///
    /// # Safety
    /// `s` came from this pool, and nothing links to it any more (stale page-map entries may
    /// still read it).
    pub unsafe fn free(&mut self, s: *mut Span) {
        // SAFETY: `s` is a descriptor of ours that nobody else uses.
        unsafe {
            (*s).state = FREE;
            (*s).npages = 0;
            self.fix.free(s as *mut u8);
        }
    }

    /// Bytes mapped for descriptors (MemStats.mspan_sys).
    pub fn sys(&self) -> usize {
        self.fix.sys
    }

    /// Descriptors in use.
    pub fn inuse(&self) -> usize {
        self.fix.inuse
    }
}
