//! Spans: runs of 8 KiB pages, the unit the page heap hands out (Go's `mspan`).
//!
//! Owns: the [`Span`] descriptor, the intrusive doubly linked [`SpanList`], and [`SpanPool`], the
//! fixed-size allocator that makes span descriptors out of OS memory (Go's `fixalloc`), since
//! the allocator cannot allocate its own metadata through itself.
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

use crate::os;
use core::ptr;

pub const FREE: u8 = 0;
pub const SMALL: u8 = 1;
pub const LARGE: u8 = 2;

/// A run of pages (see the module docs for who owns which field when).
#[repr(C)]
pub struct Span {
    /// Address of the first page.
    pub start: usize,
    /// Length in 8 KiB pages.
    pub npages: usize,
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

    /// Whether `addr` lies inside this span.
    #[inline]
    pub fn contains(&self, addr: usize) -> bool {
        addr.wrapping_sub(self.start) < self.bytes()
    }

    /// Resets every field for a span of `npages` pages at `start`.
    pub fn init(&mut self, start: usize, npages: usize) {
        *self = Span {
            start,
            npages,
            next: ptr::null_mut(),
            prev: ptr::null_mut(),
            state: FREE,
            class: 0,
            in_list: false,
            zeroed: false,
            elem_size: 0,
            nelems: 0,
            allocated: 0,
            bump: 0,
            freelist: ptr::null_mut(),
            released: 0,
            idle_since: 0,
            #[cfg(feature = "checked")]
            alloc_bits: [const { core::sync::atomic::AtomicU64::new(0) }; 16],
        };
    }
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

/// A fixed-size allocator of [`Span`] descriptors backed by OS chunks (Go's `fixalloc`).
/// Descriptors are recycled through a free list and never given back to the OS.
pub struct SpanPool {
    free: *mut Span,
    chunk_cur: usize,
    chunk_end: usize,
    /// Bytes mapped for descriptors (MemStats.mspan_sys).
    pub sys: usize,
    /// Descriptors handed out and not yet returned.
    pub inuse: usize,
}

// SAFETY: the pool is only used under the page heap lock.
unsafe impl Send for SpanPool {}

const SPAN_CHUNK: usize = 64 * 1024;

impl SpanPool {
    pub const fn new() -> Self {
        SpanPool {
            free: ptr::null_mut(),
            chunk_cur: 0,
            chunk_end: 0,
            sys: 0,
            inuse: 0,
        }
    }

    /// A descriptor initialised for `[start, start + npages pages)`; null if the OS refuses.
    pub fn alloc(&mut self, start: usize, npages: usize) -> *mut Span {
        let s = if !self.free.is_null() {
            let s = self.free;
            // SAFETY: free descriptors link through `next`.
            self.free = unsafe { (*s).next };
            s
        } else {
            let size = core::mem::size_of::<Span>();
            if self.chunk_cur + size > self.chunk_end {
                // SAFETY: non-zero length.
                let chunk = unsafe { os::map(SPAN_CHUNK) };
                if chunk.is_null() {
                    return ptr::null_mut();
                }
                self.chunk_cur = chunk as usize;
                self.chunk_end = chunk as usize + SPAN_CHUNK;
                self.sys += SPAN_CHUNK;
            }
            let s = self.chunk_cur as *mut Span;
            self.chunk_cur += size;
            s
        };
        // SAFETY: `s` points at memory reserved for one Span and owned by the pool's user.
        unsafe { (*s).init(start, npages) };
        self.inuse += 1;
        s
    }

    /// Returns a descriptor to the pool.
    ///
    /// # Safety
    /// `s` came from this pool, and nothing links to it any more (stale page-map entries may
    /// still read it, which is why it is never unmapped).
    pub unsafe fn free(&mut self, s: *mut Span) {
        // SAFETY: `s` is a descriptor of ours that nobody else uses.
        unsafe {
            (*s).state = FREE;
            (*s).npages = 0;
            (*s).next = self.free;
        }
        self.free = s;
        self.inuse -= 1;
    }
}
