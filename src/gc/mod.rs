//! The garbage collector (feature `gc`): Go's mark-sweep over objects allocated through this
//! API, in the same heap as the global allocator, with conservative roots.
//!
//! ```
//! use gomalloc::gc::{self, Gc};
//! struct Node { next: Option<Gc<Node>>, value: u64 }
//! let a = Gc::new(Node { next: None, value: 1 });
//! let b = Gc::new(Node { next: Some(a), value: 2 });
//! gc::collect();
//! assert_eq!(b.next.unwrap().value, 1); // reachable from `b`, which is on the stack
//! ```
//!
//! Owns: the cycle (roots -> mark -> sweep), the pacer state (GOGC, goal), the registry of
//! threads that use the GC heap, and the statistics of cycles. `heap` owns the GC spans and
//! bitmaps, `mark` the grey stack and the scan, `roots` the root regions.
//!
//! What a cycle does, in order, holding `GC_HEAP`'s lock throughout (allocation waits):
//! 1. roots: the calling thread's registers and stack, the registered regions, the program's
//!    static data, and (unless turned off with [`set_scan_malloc`]) every block of the
//!    ordinary heap — in-use spans of the allocator and huge blocks — since a `Gc` kept in a
//!    `Vec` or a `Box` lives in memory the collector does not own;
//! 2. mark: each word that points into an allocated GC object (interior pointers too) marks it
//!    grey; grey objects are scanned until none is left (noscan objects are never scanned);
//! 3. sweep: every unmarked object is freed; empty spans go back to the page heap.
//!
//! Rules for users:
//! - A `Gc<T>` is found only where the collector looks: the stack, registers, statics,
//!   registered regions, GC objects, and (by default) malloc'd memory. Hiding a pointer (xor,
//!   tagging beyond the object, writing it to a file) lets its object be freed.
//! - `T` must not need `Drop`: the collector frees objects without running destructors (Go
//!   has none either), so a type with one is refused at compile time; wrap it in
//!   `ManuallyDrop` to say that leaking its resources is intended. No destructor can ever
//!   observe a freed object.
//! - Stage of this module: collection is stop-the-world on the calling thread, and runs only
//!   while one thread has used the GC heap (`Gc` is neither `Send` nor `Sync` yet, so no
//!   other thread can hold one); with more, cycles are skipped and counted. Concurrent mark,
//!   the write barrier, signal-based stopping of other threads and the 2-minute forced cycle
//!   are the next stages (issue 6).
//!
//! Locks: `GC_HEAP` (gc::heap), then the page heap's lock for new or freed spans, `huge`'s
//! table lock while huge blocks are scanned, `roots::REGIONS` while regions are scanned.

pub mod heap;
mod mark;
mod roots;

use crate::sync::Mutex;
use core::alloc::Layout;
use core::cell::Cell;
use core::marker::PhantomData;
use core::ops::Deref;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use heap::GC_HEAP;
use mark::GreyStack;

/// A pointer to a garbage-collected `T`: `Copy`, dereferences to `T`, freed by the collector
/// once nothing it scans points to it.
pub struct Gc<T> {
    ptr: NonNull<T>,
    /// Not `Send`/`Sync` at this stage (see the module docs).
    _not_send: PhantomData<*const T>,
}

impl<T> Clone for Gc<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Gc<T> {}

impl<T> Deref for Gc<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: a live `Gc` (on the stack, in registers, or reachable) keeps its object
        // allocated and initialised; the collector never moves objects.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: core::fmt::Debug> core::fmt::Debug for Gc<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        (**self).fmt(f)
    }
}

impl<T> Gc<T> {
    /// Moves `value` into a new GC object whose words are scanned for pointers. Aborts with a
    /// message if the OS refuses memory.
    pub fn new(value: T) -> Gc<T> {
        Self::with(value, false)
    }

    /// A GC object that is never scanned (Go's noscan, Boehm's ATOMIC): for data without
    /// `Gc` pointers, such as buffers; cheaper to collect around.
    pub fn new_noscan(value: T) -> Gc<T> {
        Self::with(value, true)
    }

    fn with(value: T, noscan: bool) -> Gc<T> {
        const {
            assert!(
                !core::mem::needs_drop::<T>(),
                "Gc<T> never runs destructors: T must not need Drop (wrap it in ManuallyDrop)"
            )
        };
        let layout = Layout::new::<T>();
        let p = alloc_object(layout, noscan) as *mut T;
        let Some(ptr) = NonNull::new(p) else {
            crate::diag::fatal(
                "gc: out of memory for a Gc object of bytes",
                layout.size(),
                0,
            );
        };
        // SAFETY: fresh memory of T's size and alignment.
        unsafe { ptr.as_ptr().write(value) };
        // Keep `value`'s pointers reachable from the stack until the object holds them.
        core::hint::black_box(ptr);
        Gc {
            ptr,
            _not_send: PhantomData,
        }
    }

    /// The object's address.
    pub fn as_ptr(this: Gc<T>) -> *const T {
        this.ptr.as_ptr()
    }

    /// Whether two `Gc`s point at the same object.
    pub fn ptr_eq(a: Gc<T>, b: Gc<T>) -> bool {
        a.ptr == b.ptr
    }
}

/// Zeroed GC memory for `layout`, scanned conservatively; null if the OS refuses memory or
/// the alignment is above 8 KiB. For language runtimes that manage object layout themselves.
///
/// The memory is collected once no scanned word points into it; it must only be used on the
/// thread that allocated it at this stage (see the module docs).
pub fn alloc(layout: Layout) -> *mut u8 {
    alloc_object(layout, false)
}

/// As [`alloc`], for memory that is never scanned.
pub fn alloc_noscan(layout: Layout) -> *mut u8 {
    alloc_object(layout, true)
}

fn alloc_object(layout: Layout, noscan: bool) -> *mut u8 {
    if layout.align() > crate::size_class::PAGE_SIZE {
        return core::ptr::null_mut();
    }
    // Above 16-byte alignment a small object is not aligned by its class: give it a span.
    let size = if layout.align() > 16 {
        layout.size().max(crate::size_class::MAX_SMALL_SIZE + 1)
    } else {
        layout.size()
    };
    register_thread();
    maybe_collect();
    GC_HEAP.lock().alloc(size, noscan)
}

/// Registers `[start, start + len)` as a root region: scanned at every collection.
///
/// # Safety
/// The region stays readable until [`remove_roots`] is called with the same `start`.
pub unsafe fn add_roots(start: *const u8, len: usize) {
    if !roots::add(start, len) {
        crate::diag::fatal("gc: add_roots: the root table is full", start as usize, 0);
    }
}

/// Unregisters the root region that starts at `start` (nothing if there is none).
///
/// # Safety
/// None beyond [`add_roots`]'; `unsafe` for symmetry with it.
pub unsafe fn remove_roots(start: *const u8) {
    roots::remove(start);
}

// ---- pacing ------------------------------------------------------------------------------

/// GOGC: -1 = off. Read from `GOMALLOC_GOGC` (a number, or "off") at the first GC call.
static GOGC: AtomicI64 = AtomicI64::new(i64::MIN);
/// The heap size (bytes of live GC objects) that starts the next cycle.
static NEXT_GC: AtomicUsize = AtomicUsize::new(HEAP_MINIMUM);
/// Whether malloc'd memory is scanned as roots.
static SCAN_MALLOC: AtomicBool = AtomicBool::new(true);
/// Go's minimum goal: no cycle before the GC heap holds 4 MiB.
const HEAP_MINIMUM: usize = 4 << 20;

fn gogc() -> i64 {
    let g = GOGC.load(Ordering::Relaxed);
    if g != i64::MIN {
        return g;
    }
    let parsed = match crate::os::env(c"GOMALLOC_GOGC") {
        None => 100,
        Some(b"off") => -1,
        Some(s) => parse_i64(s).unwrap_or(100),
    };
    let _ = GOGC.compare_exchange(i64::MIN, parsed, Ordering::Relaxed, Ordering::Relaxed);
    GOGC.load(Ordering::Relaxed)
}

fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 12 {
        return None;
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + i64::from(d - b'0');
    }
    Some(if neg { -n } else { n })
}

/// Sets GOGC (debug.SetGCPercent) and returns the previous value; negative turns automatic
/// collection off.
pub fn set_gc_percent(percent: i32) -> i32 {
    let old = gogc();
    GOGC.store(i64::from(percent.max(-1)), Ordering::Relaxed);
    let live = GC_HEAP.lock().stats.live;
    NEXT_GC.store(goal(live), Ordering::Relaxed);
    old as i32
}

/// Whether cycles scan malloc'd memory (the default) for `Gc` pointers. Turn it off only if no
/// `Gc` is ever kept in memory from the global allocator (a `Vec<Gc<T>>`, a `Box` holding
/// one): cycles are then faster, and such a `Gc`'s object would be freed while in use.
///
/// # Safety
/// With `false`, the caller promises the above.
pub unsafe fn set_scan_malloc(on: bool) {
    SCAN_MALLOC.store(on, Ordering::Relaxed);
}

/// The next goal: live * (1 + GOGC/100), at least 4 MiB; `usize::MAX` when GOGC is off.
fn goal(live: usize) -> usize {
    let g = gogc();
    if g < 0 {
        return usize::MAX;
    }
    let grow = (live as u128 * g as u128 / 100).min(usize::MAX as u128) as usize;
    live.saturating_add(grow).max(HEAP_MINIMUM)
}

fn maybe_collect() {
    if GC_HEAP.lock().stats.live >= NEXT_GC.load(Ordering::Relaxed) && gogc() >= 0 {
        cycle(false);
    }
}

// ---- threads -----------------------------------------------------------------------------

/// Threads that have used the GC heap and not exited.
static THREADS: AtomicUsize = AtomicUsize::new(0);

struct Registration;

impl Drop for Registration {
    fn drop(&mut self) {
        THREADS.fetch_sub(1, Ordering::AcqRel);
    }
}

std::thread_local! {
    static REGISTERED: Cell<bool> = const { Cell::new(false) };
    static REGISTRATION: Registration = const { Registration };
}

fn register_thread() {
    if !REGISTERED.with(|r| r.replace(true)) {
        let _ = START_NS.compare_exchange(
            0,
            crate::os::now_ns() as usize,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        THREADS.fetch_add(1, Ordering::AcqRel);
        // Touching the key arms its destructor, which unregisters at thread exit.
        REGISTRATION.with(|_| ());
    }
}

// ---- the cycle ---------------------------------------------------------------------------

/// What the collector has done (a part of Go's `runtime.MemStats`).
#[derive(Clone, Copy, Debug, Default)]
pub struct GcStats {
    /// Completed cycles, and those of them started by `collect()`.
    pub num_gc: u64,
    pub num_forced_gc: u64,
    /// Cycles not run because more than one thread uses the GC heap (this stage).
    pub num_skipped: u64,
    /// Total and last stop-the-world time (the whole cycle, at this stage).
    pub pause_total_ns: u64,
    pub last_pause_ns: u64,
    /// Bytes of live GC objects (slot sizes) and of GC spans, now.
    pub heap_live: usize,
    pub heap_spans: usize,
    /// Bytes at which the next cycle starts.
    pub next_gc: usize,
    /// GC objects allocated and freed since the start.
    pub mallocs: u64,
    pub frees: u64,
}

static STATS: Mutex<GcStats> = Mutex::new(GcStats {
    num_gc: 0,
    num_forced_gc: 0,
    num_skipped: 0,
    pause_total_ns: 0,
    last_pause_ns: 0,
    heap_live: 0,
    heap_spans: 0,
    next_gc: 0,
    mallocs: 0,
    frees: 0,
});

/// A snapshot of the collector's statistics.
pub fn stats() -> GcStats {
    let h = GC_HEAP.lock().stats;
    let mut s = *STATS.lock();
    s.heap_live = h.live;
    s.heap_spans = h.spans;
    s.next_gc = NEXT_GC.load(Ordering::Relaxed);
    s.mallocs = h.nmalloc;
    s.frees = h.nfree;
    s
}

/// Runs a full collection (runtime.GC) and returns when it is done.
pub fn collect() {
    register_thread();
    cycle(true);
}

/// One cycle; `forced` for `collect()`.
#[inline(never)]
fn cycle(forced: bool) {
    if THREADS.load(Ordering::Acquire) > 1 {
        STATS.lock().num_skipped += 1;
        return;
    }
    let t0 = crate::os::now_ns();
    let mut grey = GreyStack::new();
    let mut h = GC_HEAP.lock();
    let before = h.stats.live;
    // Roots: this thread's registers and stack first (the frames below us hold nothing of
    // the program's), then regions, statics and, by default, the ordinary heap.
    roots::scan_own_stack(&mut grey);
    roots::scan_regions(&mut grey);
    roots::scan_statics(&mut grey);
    if SCAN_MALLOC.load(Ordering::Relaxed) {
        scan_malloc_heap(&mut grey);
    }
    mark::drain(&mut grey);
    mark::rescan_marked(&h, &mut grey);
    let t_mark = crate::os::now_ns();
    h.sweep();
    let after = h.stats.live;
    let next = goal(after);
    NEXT_GC.store(next, Ordering::Relaxed);
    drop(h);
    grey.free();
    let t1 = crate::os::now_ns();
    let pause = t1 - t0;
    let n = {
        let mut s = STATS.lock();
        s.num_gc += 1;
        s.num_forced_gc += forced as u64;
        s.pause_total_ns += pause;
        s.last_pause_ns = pause;
        s.num_gc
    };
    if trace_on() {
        print_trace(n, t0, t_mark - t0, t1 - t_mark, before, after, next, forced);
    }
}

/// Scans every block of the ordinary heap: the used part of each in-use small span (objects
/// never handed out are left alone, unread and unfaulted) and each large span and huge block.
fn scan_malloc_heap(grey: &mut GreyStack) {
    crate::pagemap::for_each_inuse_span(|s| {
        // SAFETY: descriptors are never unmapped; heap memory is never unmapped, so reading
        // a span's memory is safe even if it changes meanwhile (conservative reads).
        unsafe {
            let (state, start) = ((*s).state, (*s).start);
            let len = match state {
                crate::span::SMALL => (*s).bump as usize * (*s).elem_size as usize,
                crate::span::LARGE => (*s).bytes(),
                _ => 0,
            };
            if len > 0 && len <= (*s).bytes() {
                mark::scan_range(start, len, grey);
            }
        }
    });
    // SAFETY: live huge blocks, which stay mapped while their table lock is held.
    crate::huge::for_each_block(|p, len| unsafe { mark::scan_range(p, len, grey) });
}

// ---- gctrace -----------------------------------------------------------------------------

static START_NS: AtomicUsize = AtomicUsize::new(0);

fn trace_on() -> bool {
    crate::os::debug_flag(b"gctrace=1")
}

fn ms(l: &mut crate::diag::Line, ns: u64) {
    l.dec(ns / 1_000_000)
        .str(".")
        .dec(ns / 100_000 % 10)
        .dec(ns / 10_000 % 10);
}

/// One line in the form of Go's gctrace (all phases stop the world at this stage, so the
/// concurrent-mark and CPU fields are the mark's wall time and the assist/idle fields 0):
/// P is the share of the time since the first GC call spent in cycles.
/// `gc N @Ts P%: 0+M+S ms clock, 0+M/0/0+S ms cpu, A->B->C MB, G MB goal, 1 P (forced)`.
#[allow(clippy::too_many_arguments)]
fn print_trace(
    n: u64,
    t0: u64,
    mark: u64,
    sweep: u64,
    before: usize,
    after: usize,
    goal: usize,
    forced: bool,
) {
    let total = STATS.lock().pause_total_ns;
    let alive = (t0 + mark + sweep).saturating_sub(START_NS.load(Ordering::Relaxed) as u64);
    let since = t0.saturating_sub(START_NS.load(Ordering::Relaxed) as u64);
    let mut l = crate::diag::Line::new();
    l.str("gc ")
        .dec(n)
        .str(" @")
        .dec(since / 1_000_000_000)
        .str(".");
    l.dec(since / 100_000_000 % 10)
        .dec(since / 10_000_000 % 10)
        .dec(since / 1_000_000 % 10);
    l.str("s ").dec(total * 100 / alive.max(1)).str("%: 0+");
    ms(&mut l, mark);
    l.str("+");
    ms(&mut l, sweep);
    l.str(" ms clock, 0+");
    ms(&mut l, mark);
    l.str("/0/0+");
    ms(&mut l, sweep);
    l.str(" ms cpu, ");
    l.dec((before >> 20) as u64)
        .str("->")
        .dec((before >> 20) as u64)
        .str("->");
    l.dec((after >> 20) as u64).str(" MB, ");
    l.dec((goal.min(usize::MAX >> 1) >> 20) as u64)
        .str(" MB goal, 1 P");
    if forced {
        l.str(" (forced)");
    }
    l.emit();
}
