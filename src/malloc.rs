//! The allocation entry points (Go's `malloc.go`): pick the path for a request and follow it.
//!
//! - small (class != 0): this thread's cache (`mcache`), falling back to `mcentral` and `mheap`;
//! - large (over 32 KiB, or aligned beyond a page): a span of its own from `mheap`;
//! - huge (`HUGE_THRESHOLD` and up, or aligned beyond `HUGE_ALIGN`): its own mapping (`huge`).
//!
//! The path is a pure function of `(size, align)`, so `dealloc` and `realloc`, which get the
//! same `Layout`, find the same path without looking anything up for small objects.
//!
//! Invariants: never panics, never allocates through the global allocator, never returns a
//! misaligned pointer; a refusal by the OS becomes a null return. This is where blocks become
//! the program's and stop being it, so it is also where memcheck hears of them (`valgrind`).

use crate::mheap::MHeap;
use crate::size_class::{self, class_for_layout, PAGE_SHIFT, PAGE_SIZE};
use crate::span::{self, Span};
use crate::{diag, huge, mcache, os, pagemap, valgrind};
use core::ptr;

/// Requests of this many bytes or more get a mapping of their own.
pub const HUGE_THRESHOLD: usize = 16 << 20;
/// Alignments above this also take the huge path (the page heap would waste too much).
const HUGE_ALIGN: usize = 1 << 20;

#[inline(always)]
fn is_huge(size: usize, align: usize) -> bool {
    size >= HUGE_THRESHOLD || align > HUGE_ALIGN
}

/// Room a block gets beyond its size: the canary of the checking mode, else nothing.
#[cfg(feature = "checked")]
use crate::check::{self, Kind, CANARY};
#[cfg(not(feature = "checked"))]
const CANARY: usize = 0;

/// The bytes a request of `size` takes (`Layout` sizes are at most `isize::MAX`, so no overflow).
#[inline(always)]
const fn req(size: usize) -> usize {
    size + CANARY
}

/// How the checking mode names the path of a request.
#[cfg(feature = "checked")]
fn kind(class: usize, size: usize, align: usize) -> Kind {
    if class != 0 {
        Kind::Small(class)
    } else if is_huge(req(size), align) {
        Kind::Huge
    } else {
        Kind::Large
    }
}

/// Allocates `size` bytes aligned to `align` (a power of two).
#[inline(always)]
pub fn alloc(size: usize, align: usize) -> *mut u8 {
    let class = class_for_layout(req(size), align);
    let p = if class != 0 {
        mcache::alloc(class)
    } else {
        alloc_large(req(size), align).0
    };
    // SAFETY: `p` is null or was just allocated for this request, with room for the canary.
    unsafe { hand_out(p, size, class, align, false) };
    p
}

/// As [`alloc`], with the memory zeroed.
#[inline]
pub fn alloc_zeroed(size: usize, align: usize) -> *mut u8 {
    let class = class_for_layout(req(size), align);
    let (p, zeroed) = if class != 0 {
        (mcache::alloc(class), false)
    } else {
        alloc_large(req(size), align)
    };
    // SAFETY: `p` is null or was just allocated for this request, with room for the canary.
    unsafe { hand_out(p, size, class, align, zeroed) };
    if !p.is_null() && !zeroed {
        // SAFETY: `p` is a fresh block of at least `size` bytes.
        unsafe { ptr::write_bytes(p, 0, size) };
    }
    p
}

/// The last steps before a block of `size` bytes goes to the program: the checking mode's
/// checks and canary, then memcheck learns of the block (`zeroed`: its bytes are known zero).
///
/// # Safety
/// `p` is null, or a block just allocated for `(size, align)` of `class`, with room for the
/// canary, that nobody else uses.
#[inline(always)]
#[cfg_attr(not(feature = "checked"), allow(unused_variables))]
unsafe fn hand_out(p: *mut u8, size: usize, class: usize, align: usize, zeroed: bool) {
    if p.is_null() {
        return;
    }
    #[cfg(feature = "checked")]
    // SAFETY: forwarded precondition.
    unsafe {
        check::after_alloc(p, size, kind(class, size, align))
    };
    valgrind::malloclike(p, size, zeroed);
}

/// Memcheck: the room of a block past its `size` bytes, up to `len`, is not the program's.
#[inline(always)]
fn vg_slack(p: *mut u8, size: usize, len: usize) {
    valgrind::make_noaccess(p.wrapping_add(size), len.saturating_sub(size));
}

/// Frees a block allocated with the same `(size, align)`.
///
/// # Safety
/// `p` came from [`alloc`] (or a sibling) with this size and alignment and is dead.
#[inline(always)]
pub unsafe fn dealloc(p: *mut u8, size: usize, align: usize) {
    valgrind::freelike(p);
    let class = class_for_layout(req(size), align);
    #[cfg(feature = "checked")]
    // SAFETY: the check trusts `p` only after finding it in gomalloc's own tables.
    unsafe {
        check::before_free(p, size, kind(class, size, align))
    };
    if class != 0 {
        // SAFETY: forwarded precondition.
        unsafe { mcache::free(class, p) }
    } else {
        // SAFETY: forwarded precondition.
        unsafe { dealloc_large(p, req(size), align) }
    }
}

/// A large or huge block of `size` bytes, and whether its bytes are known to be zero; null if
/// the OS refuses memory.
#[cold]
#[inline(never)]
fn alloc_large(size: usize, align: usize) -> (*mut u8, bool) {
    if is_huge(size, align) {
        let (p, len) = huge::alloc(size, align);
        if !p.is_null() {
            mcache::count_large(true, len);
            vg_slack(p, size, len);
        }
        // Fresh mappings are zero.
        return (p, true);
    }
    let Some(bytes) = os::round_up(size.max(1), PAGE_SIZE) else {
        return (ptr::null_mut(), false);
    };
    let npages = bytes >> PAGE_SHIFT;
    let s = if align > PAGE_SIZE {
        mcache::heap().alloc_aligned(npages, align)
    } else {
        match mcache::take_large(npages) {
            s if s.is_null() => mcache::heap().alloc(npages, 0),
            s => s,
        }
    };
    if s.is_null() {
        return (ptr::null_mut(), false);
    }
    // SAFETY: `s` is a live large span we own.
    unsafe {
        mcache::count_large(true, (*s).bytes());
        let p = (*s).start;
        vg_slack(p, size, (*s).bytes());
        (p, (*s).zeroed)
    }
}

/// The live large span starting at `p`, or a fatal error naming the bad free.
fn large_span(p: *mut u8, what: &str) -> *mut Span {
    let s = pagemap::span_of(p as usize);
    // SAFETY: `span_of` returns a live descriptor or null.
    if s.is_null() || unsafe { (*s).state != span::LARGE || (*s).base() != p.addr() } {
        diag::fatal(what, p as usize, 0);
    }
    s
}

#[cold]
#[inline(never)]
unsafe fn dealloc_large(p: *mut u8, size: usize, align: usize) {
    if is_huge(size, align) {
        // SAFETY: forwarded precondition.
        match unsafe { huge::free(p) } {
            Some(len) => mcache::count_large(false, len),
            None => diag::fatal(
                "free of a pointer not allocated by gomalloc (huge)",
                p as usize,
                0,
            ),
        }
        return;
    }
    let s = large_span(p, "free of a pointer not allocated by gomalloc (large)");
    // SAFETY: `s` is the live large span of `p`, which is dead (precondition).
    unsafe { free_large_span(s) }
}

/// Frees the live large span of a dead block: into this thread's large-span cache, or to the
/// heap.
///
/// # Safety
/// `s` is a live large span whose block is dead.
unsafe fn free_large_span(s: *mut Span) {
    // SAFETY: forwarded precondition.
    unsafe {
        mcache::count_large(false, (*s).bytes());
        if !mcache::put_large(s) {
            MHeap::free_to_owner(s);
        }
    }
}

/// Resizes a block, in place when it can (same class; a large span whose neighbour pages are
/// free; a huge mapping through `mremap`), else by moving it. Null leaves the old block valid.
///
/// # Safety
/// `p` came from this allocator with `(size, align)` and `new_size` does not overflow a Layout.
pub unsafe fn realloc(p: *mut u8, size: usize, align: usize, new_size: usize) -> *mut u8 {
    // The checking mode always moves, so both blocks go through the checks.
    #[cfg(feature = "checked")]
    // SAFETY: forwarded precondition.
    return unsafe { realloc_move(p, size, align, new_size) };
    #[cfg(not(feature = "checked"))]
    // SAFETY: forwarded precondition.
    unsafe {
        realloc_fast(p, size, align, new_size)
    }
}

/// Realloc by allocating, copying and freeing.
///
/// # Safety
/// As for [`realloc`].
unsafe fn realloc_move(p: *mut u8, size: usize, align: usize, new_size: usize) -> *mut u8 {
    let q = alloc(new_size, align);
    if !q.is_null() {
        // SAFETY: both blocks are live and distinct; we copy what both can hold.
        unsafe {
            ptr::copy_nonoverlapping(p, q, size.min(new_size));
            dealloc(p, size, align);
        }
    }
    q
}

/// # Safety
/// As for [`realloc`].
#[cfg_attr(feature = "checked", allow(dead_code))]
unsafe fn realloc_fast(p: *mut u8, size: usize, align: usize, new_size: usize) -> *mut u8 {
    let old_class = class_for_layout(size, align);
    let new_class = class_for_layout(new_size, align);
    if old_class != 0 {
        if new_class == old_class {
            valgrind::resize_in_place(p, size, new_size);
            return p;
        }
    } else if !is_huge(size, align) {
        if new_class == 0 && !is_huge(new_size, align) {
            // SAFETY: forwarded precondition.
            if let Some(q) = unsafe { realloc_large_in_place(p, size, new_size) } {
                return q;
            }
            if new_size > size && align <= PAGE_SIZE {
                // SAFETY: forwarded precondition.
                let q = unsafe { realloc_large_move(p, size, new_size) };
                if !q.is_null() {
                    return q;
                }
            }
        }
    } else if is_huge(new_size, align) {
        // mremap may move the block only if the alignment survives any page-aligned address;
        // and not under valgrind, where memcheck would learn of the move only after the old
        // range is free for another thread's mapping (it moves by copying there instead).
        let may_move = align <= os::page_size() && !valgrind::running_on_valgrind();
        // Memcheck hears of a shrink while the pages are still ours, of a growth once they are.
        if new_size < size {
            valgrind::resize_in_place(p, size, new_size);
        }
        // SAFETY: `p` is a live huge block (precondition).
        let (q, old_len, new_len) = unsafe { huge::resize(p, new_size, may_move) };
        if !q.is_null() {
            mcache::count_large_resize(old_len, new_len);
            if new_size > size {
                valgrind::resize_in_place(q, size, new_size);
            }
            vg_slack(q, new_size, new_len);
            return q;
        }
        if new_size < size {
            // The block keeps its size (memcheck now sees its old tail as uninitialised).
            valgrind::resize_in_place(p, new_size, size);
        }
        if may_move {
            return q;
        }
    }
    // SAFETY: forwarded precondition.
    unsafe { realloc_move(p, size, align, new_size) }
}

/// Moves a growing large block to a span with room after it (so its next growth can stay in
/// place), and gives the old span straight back to the heap, where it merges with its
/// neighbours instead of waiting in the thread's large-span cache. Null if no memory.
///
/// # Safety
/// `p` is a live large (not huge) block of `size` bytes; `new_size > size` is large too.
unsafe fn realloc_large_move(p: *mut u8, size: usize, new_size: usize) -> *mut u8 {
    let Some(bytes) = os::round_up(new_size, PAGE_SIZE) else {
        return ptr::null_mut();
    };
    let s = mcache::heap().alloc_for_growth(bytes >> PAGE_SHIFT);
    if s.is_null() {
        return ptr::null_mut();
    }
    let old = large_span(p, "realloc of a pointer not allocated by gomalloc (large)");
    // SAFETY: `s` is a fresh large span of ours, `old` the live span of `p`; they are distinct.
    unsafe {
        let q = (*s).start;
        valgrind::malloclike(q, new_size, false);
        vg_slack(q, new_size, (*s).bytes());
        ptr::copy_nonoverlapping(p, q, size);
        valgrind::freelike(p);
        mcache::count_large(true, (*s).bytes());
        mcache::count_large(false, (*old).bytes());
        MHeap::free_to_owner(old);
        q
    }
}

/// # Safety
/// `p` is a live large (not huge) block of `size` bytes.
unsafe fn realloc_large_in_place(p: *mut u8, size: usize, new_size: usize) -> Option<*mut u8> {
    let s = large_span(p, "realloc of a pointer not allocated by gomalloc (large)");
    let new_pages = os::round_up(new_size, PAGE_SIZE)? >> PAGE_SHIFT;
    // SAFETY: `s` is the live large span of `p`.
    unsafe {
        let old = (*s).bytes();
        if new_pages < (*s).npages {
            // Memcheck first: the pages given back may be another thread's block at once.
            valgrind::resize_in_place(p, size, new_size);
            MHeap::owner(s).shrink_in_place(s, new_pages);
        } else if new_pages > (*s).npages && !MHeap::owner(s).grow_in_place(s, new_pages) {
            return None;
        } else {
            valgrind::resize_in_place(p, size, new_size);
        }
        mcache::count_large_resize(old, (*s).bytes());
        vg_slack(p, new_size, (*s).bytes());
    }
    Some(p)
}

/// Frees a block given only its address (C's `free`): the page map names its span, and the
/// span its size class. Returns false, doing nothing, for a pointer gomalloc does not know
/// (memory from another allocator); aborts with a message for a pointer into gomalloc's heap
/// that is not a live block's start.
///
/// # Safety
/// `p` is a live block of gomalloc's, now dead, or a pointer into no mapping of gomalloc's.
#[cfg(feature = "c-abi")]
#[inline]
pub unsafe fn free_unsized(p: *mut u8) -> bool {
    let s = pagemap::span_of(p as usize);
    if !s.is_null() {
        // SAFETY: a live descriptor from the page map.
        let (state, class, start) = unsafe { ((*s).state, (*s).class as usize, (*s).base()) };
        if state == span::SMALL {
            valgrind::freelike(p);
            // SAFETY: `p` is an object of this span's class (precondition).
            unsafe { mcache::free(class, p) };
            return true;
        }
        if state == span::LARGE && start == p.addr() {
            valgrind::freelike(p);
            // SAFETY: `s` is the live large span of `p`, which is dead (precondition).
            unsafe { free_large_span(s) };
            return true;
        }
        diag::fatal(
            "free of a pointer that is not a live block (double free or interior pointer)",
            p as usize,
            0,
        );
    }
    if huge::len_of(p).is_none() {
        return false;
    }
    valgrind::freelike(p);
    // SAFETY: `p` is a live huge block (just looked up), dead (precondition).
    match unsafe { huge::free(p) } {
        Some(len) => {
            mcache::count_large(false, len);
            true
        }
        None => false,
    }
}

/// The alignment C's allocation functions give a block of `size` bytes, at least: 16 from 9
/// bytes up (glibc's `MALLOC_ALIGNMENT`, for `max_align_t`), else 8. A Rust `Layout` states
/// its own alignment, so a 17-24 byte object aligned to 8 takes Go's 24-byte class; C's
/// `malloc(24)` takes 32.
#[cfg(feature = "c-abi")]
#[inline(always)]
pub fn c_align(size: usize) -> usize {
    if size > 8 {
        16
    } else {
        8
    }
}

/// C's `malloc(size)` (`size >= 1`): as [`alloc`] with [`c_align`], one table lookup.
#[cfg(feature = "c-abi")]
#[inline(always)]
pub fn alloc_c(size: usize) -> *mut u8 {
    let class = size_class::c_class(size);
    let p = if class != 0 {
        mcache::alloc(class)
    } else {
        alloc_large(size, c_align(size)).0
    };
    // SAFETY: `p` is null or was just allocated for this request.
    unsafe { hand_out(p, size, class, c_align(size), false) };
    p
}

/// Resizes a block given only its address (C's `realloc`, `p` not null, `new_size` not 0).
/// Null if memory ran out (the old block stays valid); aborts with a message for a pointer
/// gomalloc does not know (its size cannot be found).
///
/// # Safety
/// `p` is a live block of gomalloc's.
#[cfg(feature = "c-abi")]
pub unsafe fn realloc_unsized(p: *mut u8, new_size: usize) -> *mut u8 {
    let s = pagemap::span_of(p as usize);
    // SAFETY: a live descriptor from the page map, if any.
    if !s.is_null() && unsafe { (*s).state } == span::SMALL {
        // SAFETY: as above.
        let (class, old) = unsafe { ((*s).class as usize, (*s).elem_size as usize) };
        // (Under memcheck the block moves: its recorded size is the old request's.)
        if size_class::c_class(new_size) == class && !valgrind::running_on_valgrind() {
            return p;
        }
        let q = alloc_c(new_size);
        if !q.is_null() {
            // SAFETY: both blocks are live and distinct; `p` is an object of `class`.
            unsafe {
                ptr::copy_nonoverlapping(p, q, old.min(new_size));
                valgrind::freelike(p);
                mcache::free(class, p);
            }
        }
        return q;
    }
    let old = usable_size(p);
    // SAFETY: a live descriptor from the page map, if any.
    if old == 0 || (!s.is_null() && unsafe { (*s).base() } != p.addr()) {
        diag::fatal(
            "realloc of a pointer not allocated by gomalloc",
            p as usize,
            0,
        );
    }
    // SAFETY: `p` is a live large or huge block of `old` bytes: `realloc` with that size takes
    // the same path it was allocated on.
    unsafe { realloc(p, old, 1, new_size) }
}

/// Usable bytes of the live block at `p` (0 if gomalloc does not know it).
pub fn usable_size(p: *const u8) -> usize {
    #[cfg(feature = "checked")]
    return check::usable_size(p);
    #[cfg(not(feature = "checked"))]
    usable_size_fast(p)
}

#[cfg_attr(feature = "checked", allow(dead_code))]
fn usable_size_fast(p: *const u8) -> usize {
    let s = pagemap::span_of(p as usize);
    if !s.is_null() {
        // SAFETY: a live descriptor from the page map.
        unsafe {
            match (*s).state {
                span::SMALL => return (*s).elem_size as usize,
                span::LARGE => return (*s).end() - p.addr(),
                _ => return 0,
            }
        }
    }
    huge::len_of(p).unwrap_or(0)
}

const _: () = assert!(size_class::MAX_SMALL_SIZE < HUGE_THRESHOLD);
