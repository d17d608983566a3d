//! Roots: the regions the collector scans conservatively before it follows pointers.
//!
//! Owns: the table of regions registered with `add_roots`. Also finds, at each collection, the
//! calling thread's registers and stack (from the current stack pointer to the stack's top)
//! and the program's static data: every writable `PT_LOAD` segment of every loaded object
//! (`dl_iterate_phdr`), less its RELRO part and gomalloc's own big tables (the page map's
//! first level, the central lists, the region table...), which hold no pointers to GC objects
//! and would cost megabytes of RSS; and each thread's static TLS blocks, less its GC cache.
//! Each pause's part here is per byte: about 134 KB of static data and 4 KB of TLS a thread in
//! the GC benchmarks before the RELRO parts, the region table and the caches were skipped,
//! about 82 KB and 0.2 KB after.
//!
//! Provenance: regions are kept as the pointers `add_roots` was given, the stack is read
//! through the pointer `pthread_attr_getstack` returns; only the loaded objects' segments,
//! which no pointer of ours covers (the loader gives integers), are reached through
//! `ptr::with_exposed_provenance`, never an `as` cast.
//!
//! Locks: `REGIONS`, taken alone or inside a collection (gc -> regions).

use super::mark::{scan_range, GreyStack};
use crate::sync::{Mutex, MutexGuard};
use core::cell::Cell;
use core::ptr;

const MAX_REGIONS: usize = 1024;

/// The registered regions: `(start, len)`, `start` as the program gave it.
pub struct Regions {
    r: [(*const u8, usize); MAX_REGIONS],
    n: usize,
}

// SAFETY: the pointers are only read through while scanning, under the table's lock; the
// program keeps the regions readable while they are registered (`add_roots`' contract).
unsafe impl Send for Regions {}

static REGIONS: Mutex<Regions> = Mutex::new(Regions {
    r: [(ptr::null(), 0); MAX_REGIONS],
    n: 0,
});

/// Registers `[start, start + len)`; false if the table is full.
pub fn add(start: *const u8, len: usize) -> bool {
    let mut g = REGIONS.lock();
    if g.n == MAX_REGIONS {
        return false;
    }
    let n = g.n;
    g.r[n] = (start, len);
    g.n += 1;
    true
}

/// Unregisters the region starting at `start`; false if there is none.
pub fn remove(start: *const u8) -> bool {
    let mut g = REGIONS.lock();
    let n = g.n;
    for i in 0..n {
        if g.r[i].0.addr() == start.addr() {
            g.r[i] = g.r[n - 1];
            g.n -= 1;
            return true;
        }
    }
    false
}

/// Takes the region table's lock (before the world stops: a stopped thread may be inside
/// `add_roots`); the guard scans the regions.
pub fn lock_regions() -> MutexGuard<'static, Regions> {
    REGIONS.lock()
}

impl Regions {
    /// Scans the registered regions. The table itself lies in static data that is not
    /// scanned (`excluded`), so each region's start is marked here as a root word, as
    /// scanning the table would: a region inside a GC object keeps that object.
    pub fn scan(&self, grey: &mut GreyStack) {
        for &(s, len) in &self.r[..self.n] {
            super::mark::mark_word(s.addr(), grey);
            // SAFETY: `add_roots`' contract: the region stays readable while registered.
            unsafe { scan_range(s, len, grey) };
        }
    }
}

/// The tables' locks, for the fork handlers.
pub fn locks() -> [&'static dyn crate::sync::RawLock; 2] {
    [&REGIONS, &SEGMENTS]
}

/// Scans what the threads stopped by `stw::stop` hold: each one's stack from its recorded
/// stack pointer (inside its suspend handler's frame, below the kernel's signal frame that
/// holds all its registers) to the top of its stack, and its static TLS blocks
/// (`Segments::scan_tls`), less its GC cache (`Segments::cache`).
///
/// With `force`, every object a stack word points to is scanned even if marked (mark
/// termination of a concurrent mark: a new object may be in flight, see `gc::shade_contents`).
pub fn scan_stopped(
    stopped: &super::stw::Stopped,
    segments: &Segments,
    force: bool,
    grey: &mut GreyStack,
) {
    stopped.for_each_thread(|sp, top, tp| {
        let hole = segments.cache_of(tp);
        if top > sp {
            // The handler records addresses only (no pointer of ours covers another thread's
            // stack), so take the provenance exposed there, explicitly.
            let s = ptr::with_exposed_provenance::<u8>(sp);
            // SAFETY: the thread is stopped in its handler until the world resumes; its stack
            // from the handler's frame to its top is mapped and not changing.
            unsafe { scan_except(s, top - sp, [hole], force, grey) };
        }
        if tp != 0 {
            // SAFETY: the thread is stopped, so its static TLS blocks stay mapped.
            unsafe { segments.scan_tls(tp, (sp, top), grey) };
        }
    });
}

std::thread_local! {
    /// The top (just past the highest address) of this thread's stack, derived from the
    /// stack's lowest address as `pthread_attr_getstack` gives it; null until looked up.
    static STACK_TOP: Cell<*const u8> = const { Cell::new(ptr::null()) };
    /// The stack's lowest address, with it.
    static STACK_LO: Cell<usize> = const { Cell::new(0) };
}

/// Whether the calling thread runs on the stack `pthread_attr_getstack` describes (not a
/// stack of its own making, as `stacker` or a coroutine library switch to): only then can the
/// collector scan from here to the top. Called before the world stops (it may look up the
/// bounds, which allocates for the main thread).
#[inline(never)]
pub fn own_stack_known() -> bool {
    let top = stack_top();
    let here = core::hint::black_box(&top) as *const _ as usize;
    let lo = STACK_LO.with(|c| c.get());
    let ok = !top.is_null() && lo <= here && here < top.addr();
    if !ok {
        static WARNED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
        if !WARNED.swap(true, core::sync::atomic::Ordering::Relaxed) {
            crate::diag::warn(
                "gc: collecting on a stack that is not the thread's own; cycle skipped; sp",
                here,
            );
        }
    }
    ok
}

/// The top of the calling thread's stack (cached), or null if unknown.
pub fn stack_top() -> *const u8 {
    let cached = STACK_TOP.with(|c| c.get());
    if !cached.is_null() {
        return cached;
    }
    // SAFETY: plain pthread queries on the calling thread with a zeroed attr that
    // `pthread_getattr_np` initialises and we destroy.
    let top = unsafe {
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return ptr::null();
        }
        let mut addr: *mut libc::c_void = ptr::null_mut();
        let mut size: libc::size_t = 0;
        let rc = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        if rc != 0 || addr.is_null() {
            return ptr::null();
        }
        STACK_LO.with(|c| c.set(addr.addr()));
        addr.cast::<u8>().cast_const().wrapping_add(size)
    };
    STACK_TOP.with(|c| c.set(top));
    top
}

/// Scans the calling thread's callee-saved registers and its stack from this frame, or from
/// `floor` if that is higher, to the top; returns where this frame's scan would start. Not
/// inlined, so that its frame (holding the spilled registers) lies below every frame of its
/// callers.
///
/// A nonzero `floor` is for `gccheckmark`'s second mark, which must not see what the first
/// mark's own work left in the collector's registers and dead frames (one-past-the-end
/// addresses of scanned objects point at the next object, which may be garbage): it scans
/// only from `floor`, a frame that was live across both marks, and not the registers.
///
/// Also scans this thread's static TLS blocks, and skips its GC cache, as `scan_stopped` does
/// for the stopped threads.
#[inline(never)]
pub fn scan_own_stack(grey: &mut GreyStack, floor: usize, segments: &Segments) -> usize {
    let mut regs = [0usize; 12];
    spill_registers(&mut regs);
    let here = regs.as_ptr().cast::<u8>();
    let top = stack_top();
    if floor == 0 {
        // SAFETY: our own registers, just stored.
        unsafe { scan_range(here, core::mem::size_of_val(&regs), grey) };
    }
    let from = here.addr().max(floor);
    // SAFETY: pthread_self has no preconditions.
    let tp = unsafe { libc::pthread_self() } as usize;
    if top.addr() > from {
        // SAFETY: from this frame (or above) up to the top of this thread's stack: live,
        // readable stack, read through the stack's own pointer.
        unsafe {
            scan_except(
                top.with_addr(from),
                top.addr() - from,
                [segments.cache_of(tp)],
                false,
                grey,
            )
        };
    }
    // SAFETY: our own thread's static TLS blocks, mapped while we run.
    unsafe { segments.scan_tls(tp, (from, top.addr()), grey) };
    core::hint::black_box(&regs);
    here.addr()
}

/// Stores the callee-saved registers, where a caller's pointer may live only in a register.
#[inline(always)]
pub(super) fn spill_registers(regs: &mut [usize; 12]) {
    let p = regs.as_mut_ptr();
    // SAFETY: stores into our own 12-word array; no other state is touched.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        core::arch::asm!(
            "mov [{p}], rbx",
            "mov [{p} + 8], rbp",
            "mov [{p} + 16], r12",
            "mov [{p} + 24], r13",
            "mov [{p} + 32], r14",
            "mov [{p} + 40], r15",
            p = in(reg) p,
            options(nostack, preserves_flags),
        );
    }
    // SAFETY: as above.
    #[cfg(target_arch = "aarch64")]
    unsafe {
        core::arch::asm!(
            "stp x19, x20, [{p}]",
            "stp x21, x22, [{p}, #16]",
            "stp x23, x24, [{p}, #32]",
            "stp x25, x26, [{p}, #48]",
            "stp x27, x28, [{p}, #64]",
            "stp x29, x30, [{p}, #80]",
            p = in(reg) p,
            options(nostack, preserves_flags),
        );
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("feature `gc` spills registers for x86_64 and aarch64 only");

/// Ranges of static data that are never scanned: gomalloc's own big tables (the page map,
/// the central lists, the page heaps, the arena list and this module's segment table), which
/// hold metadata and never a `Gc`. Scanning them cost about 40 us a pause, and the arena list
/// holds arena base addresses, each of which would keep an arena's first GC object alive.
fn excluded() -> [(usize, usize); 6] {
    let central: &'static [[crate::mcentral::MCentral; crate::NUM_CLASSES]; crate::NHEAPS] =
        &crate::CENTRAL;
    let range = |p: usize, len: usize| (p, p + len);
    [
        crate::pagemap::static_range(),
        range(
            central as *const _ as usize,
            core::mem::size_of_val(central),
        ),
        range(
            &crate::HEAPS as *const _ as usize,
            core::mem::size_of_val(&crate::HEAPS),
        ),
        crate::pagemap::arenas_range(),
        range(
            &SEGMENTS as *const _ as usize,
            core::mem::size_of_val(&SEGMENTS),
        ),
        // The region table: `Regions::scan` marks what its words could keep (the starts).
        range(
            &REGIONS as *const _ as usize,
            core::mem::size_of_val(&REGIONS),
        ),
    ]
}

/// Scans the `len` bytes at `s` less the ranges `ex` (`(start, end)` pairs, any order, any
/// of them empty); with `force`, as `scan_range_force`.
///
/// # Safety
/// The range is readable through `s`.
unsafe fn scan_except<const N: usize>(
    s: *const u8,
    len: usize,
    mut ex: [(usize, usize); N],
    force: bool,
    grey: &mut GreyStack,
) {
    let mut scan = |at: usize, end: usize| {
        // SAFETY: a sub-range of the readable range (precondition), through `s`.
        unsafe {
            if force {
                super::mark::scan_range_force(s.with_addr(at), end - at, grey)
            } else {
                scan_range(s.with_addr(at), end - at, grey)
            }
        }
    };
    ex.sort_unstable();
    let e = s.addr() + len;
    let mut at = s.addr();
    for (xs, xe) in ex {
        if xe <= at || xs >= e {
            continue;
        }
        if xs > at {
            scan(at, xs);
        }
        at = xe;
    }
    if at < e {
        scan(at, e);
    }
}

/// Segments of static data at most (two or three per loaded object).
const MAX_SEGMENTS: usize = 4096;

/// The writable segments of the loaded objects, listed before the world stops (the loader's
/// lock, which `dl_iterate_phdr` takes, may be held by a thread that gets stopped).
pub struct Segments {
    r: [(*const u8, usize); MAX_SEGMENTS],
    n: usize,
    /// The static TLS blocks (`PT_TLS` of the objects loaded at start-up): each one's offset
    /// from the thread's `pthread_self()` value, the same in every thread, and its size.
    tls: [(isize, usize); MAX_TLS],
    ntls: usize,
    /// Where a thread's GC cache (`cache::GcCache`, a thread-local) lies: its offset from the
    /// thread's `pthread_self()` and its size, or `(0, 0)` if it is not in a static TLS block.
    /// It is never scanned: its lists lead to cached slots, all marked before any root is
    /// scanned, and its barrier buffer's words are marked by termination (or dropped by the
    /// first pause) through the cache registry; nearly all its 3.7 KB are these.
    cache: (isize, usize),
}

/// Static TLS blocks recorded at most.
const MAX_TLS: usize = 256;
/// A TLS block further than this from the thread descriptor is dynamic TLS (a `dlopen`ed
/// object's, allocated by glibc's malloc), not static.
const STATIC_TLS_SPAN: usize = 16 << 20;

// SAFETY: the pointers are only read through by the collector, under the table's lock.
unsafe impl Send for Segments {}

static SEGMENTS: Mutex<Segments> = Mutex::new(Segments {
    r: [(ptr::null(), 0); MAX_SEGMENTS],
    n: 0,
    tls: [(0, 0); MAX_TLS],
    ntls: 0,
    cache: (0, 0),
});

/// Calls `f` with the record of every loaded object, inside `dl_iterate_phdr`: the loader's
/// list lock is held, so no object is unloaded meanwhile. That lock is held only briefly by a
/// thread that loads or unloads an object, never across its constructors, so waiting for it
/// cannot wait for the collector.
fn each_loaded_object(mut f: impl FnMut(&libc::dl_phdr_info)) {
    extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: the loader hands us a valid record for the duration of the call; `data` is
        // the callback passed below, alive for the whole iteration.
        unsafe { (*(data as *mut &mut dyn FnMut(&libc::dl_phdr_info)))(&*info) };
        0
    }
    let mut f: &mut dyn FnMut(&libc::dl_phdr_info) = &mut f;
    // SAFETY: `each` only reads the records it is given and calls `f`, which outlives the
    // call.
    unsafe {
        libc::dl_iterate_phdr(
            Some(each),
            &mut f as *mut &mut dyn FnMut(&libc::dl_phdr_info) as *mut libc::c_void,
        )
    };
}

/// The writable loadable segments (.data and .bss) of a loaded object: start and length,
/// less the object's RELRO part (`PT_GNU_RELRO`: the GOT and `.data.rel.ro`, which only the
/// loader writes, before it makes them read-only, so they never hold a `Gc`) where that part
/// is the segment's start or end, as the linkers lay it out.
fn writable_segments(info: &libc::dl_phdr_info) -> impl Iterator<Item = (*const u8, usize)> + '_ {
    let base = info.dlpi_addr as usize;
    // SAFETY: the loader's record lists `dlpi_phnum` program headers at `dlpi_phdr`.
    let phdrs = unsafe { core::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
    let relro = phdrs
        .iter()
        .find(|ph| ph.p_type == libc::PT_GNU_RELRO)
        .map_or((0, 0), |ph| {
            (
                base + ph.p_vaddr as usize,
                base + (ph.p_vaddr + ph.p_memsz) as usize,
            )
        });
    phdrs
        .iter()
        .filter(|ph| ph.p_type == libc::PT_LOAD && ph.p_flags & libc::PF_W != 0)
        .map(move |ph| {
            let (mut s, mut e) = (
                base + ph.p_vaddr as usize,
                base + (ph.p_vaddr + ph.p_memsz) as usize,
            );
            if relro.0 <= s && s < relro.1 {
                s = relro.1.min(e);
            } else if relro.0 < e && e <= relro.1 {
                e = relro.0.max(s);
            }
            // The loader gives the segment as an address only: no pointer of ours covers
            // another object's data, so take the provenance the loader exposed (explicitly,
            // not through an `as` cast).
            (ptr::with_exposed_provenance::<u8>(s), e - s)
        })
}

/// Lists every writable loaded segment (the .data and .bss of the program and its libraries).
/// An object unloaded (`dlclose`) before the scan would leave a stale entry: programs must not
/// unload a library during a collection.
pub fn list_statics() -> MutexGuard<'static, Segments> {
    let mut g = SEGMENTS.lock();
    g.n = 0;
    g.ntls = 0;
    g.cache = (0, 0);
    let segs: &mut Segments = &mut g;
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() } as usize;
    each_loaded_object(|info| {
        let block = info.dlpi_tls_data as usize;
        // SAFETY: as in `writable_segments`.
        let phdrs =
            unsafe { core::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
        for ph in phdrs {
            if ph.p_type == libc::PT_TLS && block != 0 && segs.ntls < MAX_TLS {
                let off = block.wrapping_sub(me) as isize;
                if off.unsigned_abs() < STATIC_TLS_SPAN {
                    segs.tls[segs.ntls] = (off, ph.p_memsz as usize);
                    segs.ntls += 1;
                }
            }
        }
        for seg in writable_segments(info) {
            if segs.n == MAX_SEGMENTS {
                crate::diag::fatal("gc: too many loaded segments to scan", MAX_SEGMENTS, 0);
            }
            segs.r[segs.n] = seg;
            segs.n += 1;
        }
    });
    // The cache's offset is the same in every thread only inside a static TLS block: check
    // that this thread's lies wholly in one of the blocks listed.
    if let Some((at, len)) = super::cache::own_range() {
        let off = at.wrapping_sub(me) as isize;
        let inside = segs.tls[..segs.ntls]
            .iter()
            .any(|&(b, blen)| b <= off && off + len as isize <= b + blen as isize);
        if inside {
            segs.cache = (off, len);
        }
    }
    g
}

/// Scans every writable loaded segment as the loader lists it now, less gomalloc's own big
/// tables, while the program runs: the first pause of a concurrent mark leaves the static data
/// to this (mark termination rescans it with the world stopped, as no barrier covers it). The
/// scan runs inside `dl_iterate_phdr` (`each_loaded_object`), so no segment is unloaded under
/// it.
pub fn scan_statics_now(grey: &mut GreyStack) {
    each_loaded_object(|info| {
        for (s, len) in writable_segments(info) {
            // SAFETY: a loaded object's writable segment, loaded while the loader's lock is
            // held (this call).
            unsafe { scan_except(s, len, excluded(), false, grey) };
        }
    });
}

impl Segments {
    /// Scans the static TLS blocks of the thread whose `pthread_self()` is `tp`, less its GC
    /// cache, except those wholly inside `covered` (the part of its stack scanned): the main
    /// thread's lie outside its stack; other threads' lie in their stack block on x86_64,
    /// already scanned with it, but not on aarch64, where they sit above the descriptor.
    ///
    /// # Safety
    /// `tp` is the `pthread_self()` of a live thread that cannot exit meanwhile (stopped, or
    /// the caller), so its static TLS blocks are mapped.
    pub unsafe fn scan_tls(&self, tp: usize, covered: (usize, usize), grey: &mut GreyStack) {
        let hole = self.cache_of(tp);
        for &(off, len) in &self.tls[..self.ntls] {
            let at = tp.wrapping_add_signed(off);
            if covered.0 <= at && at + len <= covered.1 {
                continue;
            }
            // Another thread's TLS is known by address only: take the exposed provenance.
            let s = ptr::with_exposed_provenance::<u8>(at);
            // SAFETY: the thread's static TLS block for this object (precondition).
            unsafe { scan_except(s, len, [hole], false, grey) };
        }
    }

    /// The address range of the GC cache of the thread whose `pthread_self()` is `tp`, or an
    /// empty range if unknown (see `cache`).
    pub fn cache_of(&self, tp: usize) -> (usize, usize) {
        let (off, len) = self.cache;
        if tp == 0 || len == 0 {
            return (0, 0);
        }
        let at = tp.wrapping_add_signed(off);
        (at, at + len)
    }

    /// Scans the listed segments, less gomalloc's own big tables.
    pub fn scan(&self, grey: &mut GreyStack) {
        for &(s, len) in &self.r[..self.n] {
            // SAFETY: a loaded object's writable segment (see `list_statics`).
            unsafe { scan_except(s, len, excluded(), false, grey) };
        }
    }
}
