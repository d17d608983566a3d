//! The page map: from any address to the span that holds it, in O(1) (Go's `mheap.arenas` /
//! `heapArena.spans`).
//!
//! Owns: a two-level table. Level 1 is a static array with one slot per 64 MiB arena of a
//! 48-bit address space (4 Mi slots, 32 MiB of zero-filled .bss that the kernel only backs
//! where touched); each slot points at an [`ArenaMeta`] made when the page heap maps that arena,
//! holding one span pointer per 8 KiB page. Addresses at or above 2^48, and arenas the heap never
//! mapped, map to null: that is how a pointer gomalloc never returned is recognised.
//!
//! Invariants: an `ArenaMeta` is published (Release) before any span inside its arena is
//! handed out, and never freed. Span pointers are stored with Release after the span is fully
//! initialised, so a reader on another thread (Acquire) sees a complete descriptor. Entries may
//! go stale (a page whose span was freed or merged); [`span_of`] checks that the span found
//! still contains the address. Writers hold the page heap lock; readers take no lock.

use crate::size_class::PAGE_SHIFT;
use crate::span::Span;
// The map is a process-wide static, so it always uses the std atomics (loom cannot model
// statics that outlive one model run).
use core::sync::atomic::{AtomicPtr, Ordering};

/// log2 of the arena size: 64 MiB.
pub const ARENA_SHIFT: usize = 26;
pub const ARENA_SIZE: usize = 1 << ARENA_SHIFT;
#[cfg(not(miri))]
const ADDR_BITS: usize = 48;
/// Under Miri a 40-bit space (16 Ki slots): Miri's addresses are small, and setting up the
/// 32 MiB table of 48 bits takes it minutes. A mapping beyond it is refused (`covers`), which
/// is an allocation failure, never a wrong lookup.
#[cfg(miri)]
const ADDR_BITS: usize = 40;
const L1_ENTRIES: usize = 1 << (ADDR_BITS - ARENA_SHIFT);
/// Pages per arena.
pub const ARENA_PAGES: usize = ARENA_SIZE >> PAGE_SHIFT;

/// Per-arena metadata: the span of every page.
#[repr(C)]
pub struct ArenaMeta {
    spans: [AtomicPtr<Span>; ARENA_PAGES],
    /// Bit `i`: page `i` belongs to a span of the collector's heap (set and cleared by
    /// `gc::heap` under its lock), which the walk over malloc memory skips 64 pages at a
    /// time without reading their descriptors.
    #[cfg(feature = "gc")]
    gc_pages: [core::sync::atomic::AtomicU64; ARENA_PAGES / 64],
    /// Pages from the arena's start that the page heap has carved into spans (`note_carved`):
    /// the pages above were never handed out and have no span, so the walk over malloc memory
    /// stops there (each heap shard grows its own arena a piece at a time).
    #[cfg(feature = "gc")]
    carved: core::sync::atomic::AtomicUsize,
}

static L1: [AtomicPtr<ArenaMeta>; L1_ENTRIES] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; L1_ENTRIES];

/// Bytes of one arena's metadata.
pub const META_BYTES: usize = core::mem::size_of::<ArenaMeta>();

#[inline]
fn meta(addr: usize) -> *mut ArenaMeta {
    let idx = addr >> ARENA_SHIFT;
    if idx >= L1_ENTRIES {
        return core::ptr::null_mut();
    }
    L1[idx].load(Ordering::Acquire)
}

/// Whether `[base, base + size)` lies inside the address space the map covers (memory beyond it
/// cannot be handed out: its pages would have no span).
pub fn covers(base: usize, size: usize) -> bool {
    base.checked_add(size)
        .is_some_and(|end| end <= 1 << ADDR_BITS)
}

/// Whether the arena holding `addr` has metadata.
pub fn has_arena(addr: usize) -> bool {
    !meta(addr).is_null()
}

/// Publishes the metadata of the arena starting at `base`.
///
/// # Safety
/// `meta` points at zeroed memory of `META_BYTES` that lives forever; `base` is arena-aligned
/// and below 2^48; the caller holds the page heap lock.
pub unsafe fn install_arena(base: usize, meta: *mut ArenaMeta) {
    L1[base >> ARENA_SHIFT].store(meta, Ordering::Release);
    #[cfg(feature = "gc")]
    {
        // Two shards may install at once (each under its own lock): claim a slot first.
        let i = NARENAS.fetch_add(1, Ordering::AcqRel);
        if i < MAX_LISTED_ARENAS {
            ARENAS[i].store(base, Ordering::Release);
        }
    }
}

/// Marks the `npages` pages from `start` as belonging (`on`) or no longer belonging to a span
/// of the collector's heap. The caller holds the collector's heap lock, which serialises every
/// change of these bits.
///
/// # Safety
/// The pages lie in installed arenas.
#[cfg(feature = "gc")]
pub unsafe fn set_gc_pages(start: usize, npages: usize, on: bool) {
    for k in 0..npages {
        let addr = start + (k << PAGE_SHIFT);
        let m = meta(addr);
        debug_assert!(!m.is_null());
        let p = (addr >> PAGE_SHIFT) & (ARENA_PAGES - 1);
        let bit = 1u64 << (p % 64);
        // SAFETY: the arena's metadata is installed (precondition) and never freed.
        let w = unsafe { &(*m).gc_pages[p / 64] };
        if on {
            w.fetch_or(bit, Ordering::Relaxed);
        } else {
            w.fetch_and(!bit, Ordering::Relaxed);
        }
    }
}

/// Records that `[start, start + len)`, in installed arenas, has become span memory (the page
/// heap's fresh memory), for the walk's bound in each arena it covers.
#[cfg(feature = "gc")]
pub fn note_carved(start: usize, len: usize) {
    let end = start + len;
    let mut a = start & !(ARENA_SIZE - 1);
    while a < end {
        let m = meta(a);
        if !m.is_null() {
            let top = end.min(a + ARENA_SIZE);
            // SAFETY: installed metadata is never freed.
            unsafe { &(*m).carved }.fetch_max((top - a) >> PAGE_SHIFT, Ordering::Release);
        }
        a += ARENA_SIZE;
    }
}

/// Whether the page holding `addr` is marked as the collector's (`set_gc_pages`).
#[cfg(all(test, feature = "gc"))]
pub fn is_gc_page(addr: usize) -> bool {
    let m = meta(addr);
    let p = (addr >> PAGE_SHIFT) & (ARENA_PAGES - 1);
    // SAFETY: installed metadata is never freed.
    !m.is_null() && unsafe { (*m).gc_pages[p / 64].load(Ordering::Relaxed) } >> (p % 64) & 1 != 0
}

/// Arenas listed for the collector's walk over the heap (256 GiB of them).
#[cfg(feature = "gc")]
const MAX_LISTED_ARENAS: usize = 4096;
#[cfg(feature = "gc")]
static ARENAS: [core::sync::atomic::AtomicUsize; MAX_LISTED_ARENAS] =
    [const { core::sync::atomic::AtomicUsize::new(0) }; MAX_LISTED_ARENAS];
#[cfg(feature = "gc")]
static NARENAS: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// Calls `f` with every span that is in use (state not `FREE`) in the arenas mapped so far,
/// found by walking each arena's pages in the page map, but for the pages of the collector's
/// own spans (`set_gc_pages`), which it may skip. Spans may change while this runs (other
/// threads allocate): `f` must only read, and only what stays readable (heap memory is never
/// unmapped, descriptors never freed).
#[cfg(feature = "gc")]
pub fn for_each_inuse_span(mut f: impl FnMut(*mut Span)) {
    let n = NARENAS.load(Ordering::Acquire).min(MAX_LISTED_ARENAS);
    for slot in &ARENAS[..n] {
        let base = slot.load(Ordering::Acquire);
        if base == 0 {
            continue;
        }
        let m = meta(base);
        // SAFETY: a listed arena's metadata is installed and never freed.
        let carved = unsafe { (*m).carved.load(Ordering::Acquire) }.min(ARENA_PAGES);
        let mut page = 0;
        while page < carved {
            // SAFETY: a listed arena's metadata is installed and never freed.
            let gc = unsafe { (*m).gc_pages[page / 64].load(Ordering::Relaxed) } >> (page % 64);
            if gc & 1 != 0 {
                // Skip the run of GC pages from here (within this bitmap word).
                page += (!gc).trailing_zeros() as usize;
                continue;
            }
            let addr = base + (page << PAGE_SHIFT);
            let s = span_of(addr);
            // SAFETY: descriptors are never unmapped; a racy read gives a stale but readable
            // descriptor, which `span_of` already checked contains `addr`.
            let (start, npages, state) = if s.is_null() {
                (0, 0, crate::span::FREE)
            } else {
                unsafe { ((*s).base(), (*s).npages, (*s).state) }
            };
            if s.is_null() || start != addr || npages == 0 {
                page += 1;
                continue;
            }
            if state != crate::span::FREE {
                f(s);
            }
            page += npages;
        }
    }
}

/// The span recorded for the page holding `addr` (possibly stale), or null.
#[inline]
pub fn lookup(addr: usize) -> *mut Span {
    let m = meta(addr);
    if m.is_null() {
        return core::ptr::null_mut();
    }
    // SAFETY: published metadata is never freed.
    unsafe { (*m).spans[(addr >> PAGE_SHIFT) & (ARENA_PAGES - 1)].load(Ordering::Acquire) }
}

/// The live span containing `addr`, or null if none does.
#[inline]
pub fn span_of(addr: usize) -> *mut Span {
    let s = lookup(addr);
    // SAFETY: span descriptors are never unmapped, so reading a stale one is harmless.
    if !s.is_null() && unsafe { (*s).contains(addr) } {
        s
    } else {
        core::ptr::null_mut()
    }
}

/// Records `s` for the page holding `addr`.
///
/// # Safety
/// The arena of `addr` is installed; the caller holds the page heap lock.
#[inline]
pub unsafe fn set(addr: usize, s: *mut Span) {
    let m = meta(addr);
    debug_assert!(!m.is_null());
    // SAFETY: the arena's metadata is installed (precondition) and never freed.
    unsafe { (*m).spans[(addr >> PAGE_SHIFT) & (ARENA_PAGES - 1)].store(s, Ordering::Release) }
}

/// Records `s` for every page of `[start, start + npages pages)`.
///
/// # Safety
/// As for [`set`].
pub unsafe fn set_range(start: usize, npages: usize, s: *mut Span) {
    for i in 0..npages {
        // SAFETY: forwarded precondition.
        unsafe { set(start + (i << PAGE_SHIFT), s) };
    }
}

/// The address range of the page map's first level (a 32 MiB static): the collector leaves it
/// out when it scans the program's static data (it holds no pointers to objects, and reading
/// it would make all of it resident).
#[cfg(feature = "gc")]
pub fn static_range() -> (usize, usize) {
    let start = L1.as_ptr() as usize;
    (start, start + core::mem::size_of_val(&L1))
}

/// The address range of the list of arenas (for the collector: never scanned as a root).
#[cfg(feature = "gc")]
pub fn arenas_range() -> (usize, usize) {
    let start = ARENAS.as_ptr() as usize;
    (start, start + core::mem::size_of_val(&ARENAS))
}
