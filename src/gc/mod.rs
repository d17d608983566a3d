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
//! Owns: the cycle (stop the world -> roots -> mark -> resume -> sweep, or with concurrent
//! marking: a short pause -> mark while the program runs -> a short pause -> sweep), the
//! pacer state (GOGC, the memory limit, the goal, the concurrent trigger), the write barrier's
//! API (`GcCell`, `write_barrier`), the timer thread that forces a cycle when none ran for two
//! minutes and runs the pacer's concurrent cycles, the fork handlers of the collector's locks,
//! and the statistics of cycles. `heap` owns the GC spans and bitmaps, `mark` the grey stack,
//! the scan and the markers' pool, `cache` the threads' slot caches and barrier buffers,
//! `pacer` the trigger, the background mark's plan and the assist ratio, `roots` the root
//! regions, `stw` the stopping of threads.
//!
//! Two kinds of cycle. By default every cycle stops the world for its whole mark (below). With
//! [`set_concurrent`] (an `unsafe` promise that every pointer store into a GC object goes
//! through the write barrier), the mark runs while the program runs: see
//! `concurrent_cycle`; its two pauses scan roots only (threads first; all roots again at mark
//! termination, since stores into stacks, statics, regions and malloc memory have no
//! barrier).
//!
//! What a stop-the-world cycle does, in order, holding `GC_HEAP`'s lock up to the sweep (GC
//! allocation that needs the lock waits):
//! 1. take, before stopping anything, every lock the stopped-world part needs: the region
//!    table, the huge-block table, and the list of loaded segments (`dl_iterate_phdr`);
//! 2. stop the world (`stw`): every other thread waits in a signal handler, wherever it was,
//!    system calls and busy loops included;
//! 3. roots: the registers and stacks of every thread (the collector's own and the stopped
//!    ones'), the registered regions, the program's static data, and (unless turned off with
//!    [`set_scan_malloc`]) every block of the ordinary heap — in-use spans of the allocator
//!    and huge blocks — since a `Gc` kept in a `Vec` or a `Box` lives in memory the collector
//!    does not own;
//! 4. mark: each word that points into an allocated GC object (interior pointers too) marks
//!    it grey; grey objects are scanned until none is left (noscan objects are never scanned);
//! 5. resume the world: the pause is steps 2 to 5;
//! 6. sweep, while the other threads run (Go's lazy sweep, `heap`): every unmarked object is
//!    freed; empty spans go back to the page heap. The collector sweeps a chunk of spans per
//!    hold of the lock; an allocation sweeps a span before it allocates from it (so the sweep
//!    frees exactly what the mark left unreached), sweeps a few spans per refill (Go's
//!    proportional sweep, so the sweep ends within a bounded allocation) and helps the sweep
//!    when its class has no free slot. The next goal is set when the sweep ends; until then
//!    allocation starts no cycle, and the next cycle starts from a swept heap.
//!
//! Rules for users:
//! - A `Gc<T>` is found only where the collector looks: thread stacks and registers, statics,
//!   registered regions, GC objects, and (by default) malloc'd memory. Hiding a pointer (xor,
//!   tagging beyond the object, writing it to a file) lets its object be freed.
//! - `T` must not need `Drop`: the collector frees objects without running destructors (Go
//!   has none either), so a type with one is refused at compile time; wrap it in
//!   `ManuallyDrop` to say that leaking its resources is intended. No destructor can ever
//!   observe a freed object.
//! - `Gc<T>` is `Send` and `Sync` when `T: Sync`: any thread may hold one, and every thread
//!   is stopped and scanned, whether or not it ever called into the collector.
//! - The collector uses `SIGPWR` to stop threads: a program must not take that signal over,
//!   and a thread that blocks it must hold no `Gc` (see `stw`). System calls interrupted by it
//!   restart (`SA_RESTART`), apart from those Linux never restarts (`nanosleep` returns the
//!   time left, `epoll_wait` returns `EINTR`, ...), which Rust's standard library retries.
//! - With concurrent marking on: every store of a `Gc` pointer into a GC object goes through
//!   [`GcCell::set`] or is followed by [`write_barrier`]; objects allocated during a mark
//!   are black and survive it (floating garbage, as in Go). Off, no barrier is needed.
//!
//! Soundness notes (concurrent mark): markers read GC objects while mutators write them, and
//! a barrier caught across mark termination may read a span record the sweep is recycling;
//! these are word-sized reads of always-mapped memory whose values are only ever used as
//! addresses to look up (as in Boehm's collector), not data races on values Rust code trusts.
//!
//! Locks, in order: `CYCLE` (one cycle at a time; holds the collector's grey stack), then
//! `GC_HEAP` (gc::heap), then the slot-cache registry, `roots`' region and segment tables,
//! the markers' pool, `huge`'s table (all taken before the world stops; the pool is released
//! once it has stopped, and taken again under the huge table only by the collector while the
//! world is stopped), then the page heap's lock for freed spans during the sweep. (The first
//! pause of a concurrent mark does not take the pool; its concurrent phase takes the huge
//! table alone, a piece of a block at a time.) `STATS` is taken alone. A mutator takes the
//! pool's lock alone (a barrier flush, a mark assist).

mod cache;
pub mod heap;
mod mark;
mod pacer;
mod roots;
mod stw;

use crate::sync::Mutex;
use core::alloc::Layout;
use core::marker::PhantomData;
use core::ops::Deref;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use heap::GC_HEAP;
use mark::GreyStack;

/// A pointer to a garbage-collected `T`: `Copy`, dereferences to `T`, freed by the collector
/// once nothing it scans points to it.
pub struct Gc<T> {
    ptr: NonNull<T>,
    /// Behaves as a shared reference to `T` for auto traits (`Send`/`Sync` below).
    _marker: PhantomData<*const T>,
}

// SAFETY: a `Gc<T>` hands out `&T` on whichever thread holds it, exactly like `&T`, which is
// `Send` and `Sync` when `T: Sync`. The collector stops and scans every thread, so a `Gc` held
// by any thread keeps its object alive.
unsafe impl<T: Sync> Send for Gc<T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Sync for Gc<T> {}

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
        if !noscan {
            // Keep `value`'s pointers reachable from the stack until the object holds them.
            core::hint::black_box(ptr);
            shade_contents(ptr.as_ptr().cast(), layout.size());
        }
        Gc {
            ptr,
            _marker: PhantomData,
        }
    }

    /// The object's address.
    pub fn as_ptr(this: Gc<T>) -> *const T {
        this.ptr.as_ptr()
    }

    /// The `Gc` for an object's address, as [`Gc::as_ptr`] gave it (for runtimes that keep
    /// addresses in their own words, such as tagged values).
    ///
    /// # Safety
    /// `ptr` came from `Gc::<T>::as_ptr` of an object that is still reachable (so still
    /// allocated) at this call.
    pub unsafe fn from_raw(ptr: *const T) -> Gc<T> {
        Gc {
            // SAFETY: a live object's address is never null (precondition).
            ptr: unsafe { NonNull::new_unchecked(ptr.cast_mut()) },
            _marker: PhantomData,
        }
    }

    /// Whether two `Gc`s point at the same object.
    pub fn ptr_eq(a: Gc<T>, b: Gc<T>) -> bool {
        a.ptr == b.ptr
    }
}

/// Zeroed GC memory for `layout`, scanned conservatively; null if the OS refuses memory or
/// the alignment is above 8 KiB. For language runtimes that manage object layout themselves.
///
/// The memory is collected once no scanned word points into it.
///
/// With [`set_concurrent`] on, pointers stored into it need [`write_barrier`].
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
    started();
    // A safepoint: a stop in progress may stop this thread here rather than by its signal.
    stw::poll();
    let goal = if CONCURRENT.load(Ordering::Relaxed) {
        TRIGGER.load(Ordering::Relaxed)
    } else {
        NEXT_GC.load(Ordering::Relaxed)
    };
    // Aligned by its class (24 only for alignments up to 8), or 0 for a large object.
    let class = crate::size_class::class_for_layout(size.max(1), layout.align().min(16));
    let (p, over) = if class != 0 {
        cache::alloc(class, noscan, goal)
    } else {
        let mut h = stw::lock_at_safepoint(&GC_HEAP);
        let p = h.alloc(size, noscan);
        (p, h.over(goal))
    };
    if over {
        // `p` is used after the call, so it stays in a register or on the stack, both scanned.
        // A refill reserved a batch of slots; a large object is its own size.
        let bytes = if class != 0 {
            cache::refill_bytes(class)
        } else {
            size
        };
        over_trigger(bytes);
    }
    p
}

/// Registers `[start, start + len)` as a root region: scanned at every collection. A region
/// inside a GC object keeps that object alive while it is registered.
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
/// The soft memory limit in bytes (`i64::MAX`: none). Read from `GOMALLOC_MEMLIMIT` (bytes,
/// with an optional `KiB`/`MiB`/`GiB`/`TiB` suffix, or "off") at the first GC call.
static MEMORY_LIMIT: AtomicI64 = AtomicI64::new(i64::MIN);
/// The heap size (bytes of live GC objects) that starts the next cycle.
static NEXT_GC: AtomicUsize = AtomicUsize::new(HEAP_MINIMUM);
/// Bytes at which the next concurrent cycle starts (`pacer`), below the goal.
static TRIGGER: AtomicUsize = AtomicUsize::new(HEAP_MINIMUM);

/// Sets the goal (and the concurrent trigger) for a live heap of `live` bytes.
fn set_goal(live: usize) -> usize {
    let (g, by_limit) = goal(live);
    LIMIT_SETS_GOAL.store(by_limit, Ordering::Relaxed);
    NEXT_GC.store(g, Ordering::Relaxed);
    TRIGGER.store(pacer::trigger(live, g), Ordering::Relaxed);
    // The page heap keeps idle pages up to 10% over the goal or over the most span bytes the
    // last cycle reached (spans hold more than their objects: slots not yet reused, a lazy
    // sweep's garbage): the heap grows back there before the next cycle. Not with GOGC off (no
    // goal) nor under a memory limit, whose room counts idle pages (the limit's own margin
    // decides there).
    let floor = if gogc() < 0 || memory_limit() != i64::MAX {
        0
    } else {
        let base = g.max(GC_PEAK_SPANS.load(Ordering::Relaxed));
        base.saturating_add(base / 10)
    };
    crate::HEAPS[0].set_retain_floor(floor);
    g
}
/// Whether the memory limit (not GOGC) set the current goal: then an allocating thread waits
/// for a concurrent cycle at the goal itself, not 10% past it.
static LIMIT_SETS_GOAL: AtomicBool = AtomicBool::new(false);
/// Whether malloc'd memory is scanned as roots.
static SCAN_MALLOC: AtomicBool = AtomicBool::new(true);
/// Go's minimum goal: no cycle before the GC heap holds 4 MiB (GOGC permitting).
const HEAP_MINIMUM: usize = 4 << 20;

fn gogc() -> i64 {
    let g = GOGC.load(Ordering::Relaxed);
    if g != i64::MIN {
        return g;
    }
    let parsed = match crate::os::env(c"GOMALLOC_GOGC") {
        None => 100,
        Some(b"off") => -1,
        Some(s) => parse_i64(s).unwrap_or(100).max(-1),
    };
    let _ = GOGC.compare_exchange(i64::MIN, parsed, Ordering::Relaxed, Ordering::Relaxed);
    GOGC.load(Ordering::Relaxed)
}

fn memory_limit() -> i64 {
    let m = MEMORY_LIMIT.load(Ordering::Relaxed);
    if m != i64::MIN {
        return m;
    }
    let parsed = match crate::os::env(c"GOMALLOC_MEMLIMIT") {
        None | Some(b"off") => i64::MAX,
        Some(s) => parse_bytes(s).unwrap_or(i64::MAX),
    };
    let _ = MEMORY_LIMIT.compare_exchange(i64::MIN, parsed, Ordering::Relaxed, Ordering::Relaxed);
    MEMORY_LIMIT.load(Ordering::Relaxed)
}

fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 18 {
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

/// A byte count as Go's GOMEMLIMIT writes it: digits and an optional unit (`B`, `KiB`, `MiB`,
/// `GiB`, `TiB`).
fn parse_bytes(s: &[u8]) -> Option<i64> {
    let digits = s.iter().take_while(|c| c.is_ascii_digit()).count();
    let n = parse_i64(&s[..digits])?;
    let shift = match &s[digits..] {
        b"" | b"B" => 0,
        b"KiB" => 10,
        b"MiB" => 20,
        b"GiB" => 30,
        b"TiB" => 40,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

/// Sets the goal again after GOGC or the memory limit changed. Not during a sweep: `live`
/// still counts what it frees, and its end sets the goal from the new settings.
fn goal_from_settings() {
    let h = GC_HEAP.lock();
    if h.sweeping() {
        return;
    }
    let live = h.stats.live;
    drop(h);
    set_goal(live);
}

/// Sets GOGC (debug.SetGCPercent) and returns the previous value; negative turns automatic
/// collection off (the memory limit, if set, still starts cycles).
pub fn set_gc_percent(percent: i32) -> i32 {
    let old = gogc();
    GOGC.store(i64::from(percent.max(-1)), Ordering::Relaxed);
    goal_from_settings();
    old as i32
}

/// Sets the soft memory limit (debug.SetMemoryLimit) and returns the previous one; a negative
/// value only reads it. `i64::MAX` (the default) means no limit.
///
/// The limit counts all memory gomalloc holds from the OS and has not released (the ordinary
/// heap, the GC heap and metadata). While the GC heap's goal would take that over the limit,
/// the goal is lowered to fit, but never below the live GC heap plus 1/16 (and 1 MiB), so a
/// limit the live data alone exceeds makes cycles frequent, not endless.
pub fn set_memory_limit(limit: i64) -> i64 {
    let old = memory_limit();
    if limit >= 0 {
        MEMORY_LIMIT.store(limit, Ordering::Relaxed);
        goal_from_settings();
    }
    old
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

/// The next goal for a live GC heap of `live` bytes: live * (1 + GOGC/100), at least 4 MiB
/// (`usize::MAX` when GOGC is off), lowered to fit the memory limit.
fn goal(live: usize) -> (usize, bool) {
    let g = gogc();
    let by_gogc = if g < 0 {
        usize::MAX
    } else {
        let grow = (live as u128 * g as u128 / 100).min(usize::MAX as u128) as usize;
        live.saturating_add(grow).max(HEAP_MINIMUM)
    };
    let limit = memory_limit();
    if limit == i64::MAX {
        return (by_gogc, false);
    }
    let gc_spans = GC_HEAP_SPANS.load(Ordering::Relaxed);
    let others = crate::stats::footprint().saturating_sub(gc_spans as u64) as usize;
    let room = (limit.max(0) as usize).saturating_sub(others);
    let floor = live + live / 16 + (1 << 20);
    let by_limit = room.max(floor);
    (by_gogc.min(by_limit), by_limit < by_gogc)
}

/// Bytes of GC spans at the end of the last cycle (for the memory limit).
static GC_HEAP_SPANS: AtomicUsize = AtomicUsize::new(0);
/// The most bytes of GC spans between the last two cycles' ends (for the retain floor).
static GC_PEAK_SPANS: AtomicUsize = AtomicUsize::new(0);

// ---- start-up, the timer thread, fork ------------------------------------------------------

static STARTED: AtomicBool = AtomicBool::new(false);
/// When the first GC call was made (monotonic ns).
static START_NS: AtomicU64 = AtomicU64::new(0);
/// When the last cycle ended (monotonic ns), for the two-minute forced cycle.
static LAST_GC_NS: AtomicU64 = AtomicU64::new(0);
/// A cycle is forced when none ran for this long (Go's `forcegcperiod`, 2 minutes).
static FORCE_PERIOD_NS: AtomicU64 = AtomicU64::new(120_000_000_000);
/// The timer thread's futex word (bumped to wake it) and whether it runs.
static TIMER_WAKE: AtomicU32 = AtomicU32::new(0);
static TIMER_RUNNING: AtomicBool = AtomicBool::new(false);

/// Called by every GC entry point: the first call records the start time, installs the fork
/// handlers and starts the timer thread.
#[inline]
fn started() {
    if !STARTED.load(Ordering::Acquire) {
        start();
    }
}

#[cold]
fn start() {
    if STARTED.swap(true, Ordering::AcqRel) {
        return;
    }
    let now = crate::os::now_ns();
    START_NS.store(now, Ordering::Relaxed);
    LAST_GC_NS.store(now, Ordering::Relaxed);
    // The allocator's handlers first, so that ours (registered later) take the collector's
    // locks before the allocator's: the lock order (gc -> heap).
    crate::fork::install();
    // Once per process: a fork child comes through here again (to restart the timer), and
    // registering the handlers twice would take each lock twice in the next fork.
    static ATFORK: AtomicBool = AtomicBool::new(false);
    if !ATFORK.swap(true, Ordering::AcqRel) {
        // SAFETY: the handlers are extern "C" functions that live forever.
        unsafe { libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child)) };
    }
    start_timer();
}

fn start_timer() {
    if TIMER_RUNNING.swap(true, Ordering::AcqRel) {
        return;
    }
    let ok = crate::os::spawn_detached(timer, core::ptr::null_mut(), 256 * 1024);
    if !ok {
        TIMER_RUNNING.store(false, Ordering::Release);
    }
}

/// The timer thread (Go's forcegc helper): runs a cycle when none ran for the force period
/// and the GC heap has objects. It blocks every signal (the program's signals go to its own
/// threads) and is never stopped by a collection (it holds no `Gc`).
extern "C" fn timer(_: *mut libc::c_void) -> *mut libc::c_void {
    // The tid is published before signals are blocked (see `stw::is_exempt`).
    stw::EXEMPT[0].store(crate::os::gettid(), Ordering::Release);
    crate::os::become_helper(c"gomalloc-gc");
    BACKGROUND.with(|b| b.set(true));
    loop {
        // Read before the request flag: a request made after this load changes the word, so
        // the wait below returns at once instead of missing it.
        let seen = TIMER_WAKE.load(Ordering::Acquire);
        // Cleared before the cycle: a request made while it runs is kept for the next turn.
        if BG_REQUEST.swap(false, Ordering::AcqRel) {
            // Not during a sweep: refills saw the goal before it began (it is set again when
            // the sweep ends).
            let sweeping = GC_HEAP.lock().sweeping();
            if !sweeping {
                cycle(Trigger::Heap);
            }
            continue;
        }
        let period = FORCE_PERIOD_NS.load(Ordering::Relaxed);
        let since = crate::os::now_ns().saturating_sub(LAST_GC_NS.load(Ordering::Relaxed));
        if since >= period {
            if GC_HEAP.lock().stats.nmalloc > 0 {
                cycle(Trigger::Periodic);
            }
            // Whether or not a cycle ran, wait a whole period from now.
            LAST_GC_NS.fetch_max(crate::os::now_ns(), Ordering::Relaxed);
            continue;
        }
        crate::sync::futex_wait_for(&TIMER_WAKE, seen, period - since);
    }
}

/// Sets the period after which the timer thread forces a cycle (2 minutes by default, as
/// Go's); for tests and for programs that want a shorter one. 0 is taken as 1 ms.
pub fn set_force_period(period: core::time::Duration) {
    let ns = (period.as_nanos().min(u64::MAX as u128) as u64).max(1_000_000);
    FORCE_PERIOD_NS.store(ns, Ordering::Relaxed);
    started();
    TIMER_WAKE.fetch_add(1, Ordering::Release);
    crate::sync::futex_wake(&TIMER_WAKE);
}

/// The collector's locks in their order, for the fork handlers.
fn each_fork_lock(mut f: impl FnMut(&dyn crate::sync::RawLock)) {
    f(&CYCLE);
    f(&GC_HEAP);
    f(cache::lock_ref());
    for l in roots::locks() {
        f(l);
    }
    f(&STATS);
    f(mark::pool_lock_ref());
}

extern "C" fn fork_prepare() {
    each_fork_lock(|l| l.raw_lock());
}

extern "C" fn fork_parent() {
    // SAFETY: `fork_prepare` took each of these locks on this thread.
    each_fork_lock(|l| unsafe { l.raw_unlock() });
}

extern "C" fn fork_child() {
    // SAFETY: the child's only thread; every lock was taken by `fork_prepare` on it.
    each_fork_lock(|l| unsafe { l.force_unlock() });
    cache::reset_after_fork_child();
    mark::reset_workers_after_fork_child();
    stw::reset_parks_after_fork_child();
    // The timer thread does not exist in the child; the next GC call starts another.
    stw::EXEMPT[0].store(0, Ordering::Relaxed);
    TIMER_RUNNING.store(false, Ordering::Relaxed);
    STARTED.store(false, Ordering::Relaxed);
}

// ---- the cycle ---------------------------------------------------------------------------

/// What the collector has done (Go's `runtime.MemStats` GC fields, and a few more).
#[derive(Clone, Copy, Debug)]
pub struct GcStats {
    /// Completed cycles, and those of them started by `collect()` (Go's NumForcedGC).
    pub num_gc: u64,
    pub num_forced_gc: u64,
    /// Total stop-the-world time, and the last 256 pauses: the pause of cycle `n` (1-based)
    /// is at `pause_ns[(n - 1) % 256]`, so the latest is at `(num_gc + 255) % 256` (Go's
    /// PauseNs), and `pause_end` holds when each ended (Unix ns, Go's PauseEnd).
    pub pause_total_ns: u64,
    pub pause_ns: [u64; 256],
    pub pause_end: [u64; 256],
    /// When the last cycle ended (Unix ns; 0 before the first), Go's LastGC.
    pub last_gc: u64,
    /// The share of the CPU time available since the first GC call that collection used (Go's
    /// GCCPUFraction): pauses count for every CPU (all threads wait), sweeping for one, and the
    /// concurrent marks' background markers and assists for their thread CPU time (idle
    /// markers not: they used CPUs the program did not want, as in Go).
    pub gc_cpu_fraction: f64,
    /// Threads stopped by the last cycle (the collector's own not counted).
    pub last_stopped_threads: u64,
    /// Of those, threads held parked in `gc::blocking`, without a signal.
    pub last_parked_threads: u64,
    /// Cycles given up before marking: a thread did not stop (it kept `SIGPWR` blocked, or
    /// ran a handler on its alternate signal stack), a stack could not be found, or the
    /// thread list could not be read. Nothing is freed by such a cycle.
    pub num_skipped: u64,
    /// Total time spent sweeping, after the world resumed (not in the pauses or in gctrace).
    pub sweep_total_ns: u64,
    /// Bytes of grey objects that allocating threads scanned as mark assists (concurrent
    /// marking: in proportion to what they allocated during a mark), over all cycles.
    pub assist_bytes: u64,
    /// CPU time of the concurrent marks' background markers (the collector's thread and the
    /// mark workers, Go's dedicated and fractional workers) and of mark assists, and the wall
    /// time of the concurrent marks (first pause's end to termination's start), over all
    /// cycles. Background utilisation = `mark_background_cpu_ns / (mark_concurrent_ns * CPUs)`,
    /// about 25% for cycles the pacer starts.
    pub mark_background_cpu_ns: u64,
    pub mark_assist_cpu_ns: u64,
    /// CPU time of idle markers (mark workers that mark while a CPU is idle, Go's idle
    /// workers), not counted in the background utilisation.
    pub mark_idle_cpu_ns: u64,
    pub mark_concurrent_ns: u64,
    /// Bytes of allocated GC slots (slot sizes), including the slots that threads' caches
    /// hold reserved (at most 32 KiB per size class and thread, as Go counts whole cached
    /// spans) and, during a sweep, the unreached objects of spans not yet swept; and bytes
    /// of GC spans, now.
    pub heap_live: usize,
    pub heap_spans: usize,
    /// Bytes at which the next cycle starts (Go's NextGC).
    pub next_gc: usize,
    /// GC objects handed out and freed since the start (reserved slots not counted).
    pub mallocs: u64,
    pub frees: u64,
}

impl GcStats {
    /// Nothing done yet.
    const ZERO: GcStats = GcStats {
        num_gc: 0,
        num_forced_gc: 0,
        pause_total_ns: 0,
        pause_ns: [0; 256],
        pause_end: [0; 256],
        last_gc: 0,
        gc_cpu_fraction: 0.0,
        last_stopped_threads: 0,
        last_parked_threads: 0,
        num_skipped: 0,
        sweep_total_ns: 0,
        assist_bytes: 0,
        mark_background_cpu_ns: 0,
        mark_assist_cpu_ns: 0,
        mark_idle_cpu_ns: 0,
        mark_concurrent_ns: 0,
        heap_live: 0,
        heap_spans: 0,
        next_gc: 0,
        mallocs: 0,
        frees: 0,
    };
}

impl Default for GcStats {
    fn default() -> Self {
        Self::ZERO
    }
}

/// The collector's running totals: the cycle fields of a `GcStats` (those read from the heap
/// and the pacer stay 0 here) and the CPU time behind `gc_cpu_fraction`.
struct Totals {
    s: GcStats,
    gc_cpu_ns: u64,
}

static STATS: Mutex<Totals> = Mutex::new(Totals {
    s: GcStats::ZERO,
    gc_cpu_ns: 0,
});

/// Mark workers besides the collector while the world is stopped: `GOMALLOC_GC_WORKERS` if
/// set, else one fewer than the CPUs (at most `mark::MAX_WORKERS`).
fn mark_workers() -> usize {
    static N: AtomicUsize = AtomicUsize::new(usize::MAX);
    static SET: AtomicBool = AtomicBool::new(false);
    let mut n = N.load(Ordering::Relaxed);
    if n == usize::MAX {
        let env = crate::os::env(c"GOMALLOC_GC_WORKERS").and_then(parse_i64);
        SET.store(env.is_some(), Ordering::Relaxed);
        n = env
            .map_or(ncpu() as usize - 1, |v| v.max(0) as usize)
            .min(mark::MAX_WORKERS);
        N.store(n, Ordering::Relaxed);
    }
    if SET.load(Ordering::Relaxed) {
        // Marks the program asked for: no fractional marker either.
        n | WORKERS_SET
    } else {
        n
    }
}

/// Marked in `mark_workers`'s value when `GOMALLOC_GC_WORKERS` set it.
const WORKERS_SET: usize = 1 << 16;

/// The markers of a pacer- or timer-started concurrent mark: mark workers besides the
/// collector, and how they run (`mark::Plan`). Go's 25% of the CPUs (`pacer::background_plan`:
/// dedicated markers, the collector first, and maybe a fractional one), and every other
/// worker as an idle marker, which marks only while a CPU is idle. `GOMALLOC_GC_WORKERS`, if
/// set, gives the workers, all of them dedicated.
fn background_markers() -> (usize, mark::Plan) {
    let n = mark_workers();
    if n & WORKERS_SET != 0 {
        let n = n & !WORKERS_SET;
        return (n, mark::Plan::dedicated(n));
    }
    let (dedicated, fraction) = pacer::background_plan(ncpu() as usize);
    let markers = dedicated + (fraction > 0.0) as usize;
    let plan = mark::Plan {
        fraction,
        workers: markers.saturating_sub(1).min(n),
    };
    (n, plan)
}

/// Online CPUs (at least 1), read once.
fn ncpu() -> u64 {
    crate::os::cpus() as u64
}

fn unix_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A snapshot of the collector's statistics.
pub fn stats() -> GcStats {
    let (h, cached) = {
        let g = GC_HEAP.lock();
        let cached = cache::lock().totals().0;
        (g.stats, cached)
    };
    let t = STATS.lock();
    let mark_cpu = mark::cpu_totals();
    let elapsed = crate::os::now_ns().saturating_sub(START_NS.load(Ordering::Relaxed));
    GcStats {
        gc_cpu_fraction: if STARTED.load(Ordering::Relaxed) && elapsed > 0 {
            t.gc_cpu_ns as f64 / (elapsed as f64 * ncpu() as f64)
        } else {
            0.0
        },
        heap_live: h.live,
        heap_spans: h.spans,
        next_gc: NEXT_GC.load(Ordering::Relaxed),
        assist_bytes: mark::assist_bytes(),
        mark_background_cpu_ns: mark_cpu.0,
        mark_assist_cpu_ns: mark_cpu.1,
        mark_idle_cpu_ns: mark_cpu.2,
        mallocs: h.nmalloc - cached,
        frees: h.nfree,
        ..t.s
    }
}

/// Runs `f` with the calling thread *parked*: the collector's stops count it as stopped without
/// signalling it, the way Go counts a goroutine in a system call as stopped. For a thread about
/// to block in the kernel for a while: `join`, a channel `recv`, a socket read, a sleep. Its
/// stack from this call up and its registers are scanned as they were when `f` started; if a
/// stop holds the thread when `f` returns, `blocking` waits for the resume before it returns.
/// Without it, each stop signals such a thread, which wakes it in the kernel and back (on the
/// 2-CPU VM, a few tens of microseconds of every pause).
///
/// # Safety
/// `f` must not touch the GC heap: no `Gc` or GC object read, written, created, copied or
/// held in its frames (they are not scanned while it runs), and no GC allocation (caught at
/// the first that refills the thread's cache, or is large, or at a safepoint: the process
/// aborts with `gc::blocking: a GC allocation inside a blocking scope`). Ordinary memory and
/// `malloc` are fine.
pub unsafe fn blocking<R>(f: impl FnOnce() -> R) -> R {
    stw::blocking(f)
}

/// Runs a full collection (runtime.GC) and returns when it is done.
pub fn collect() {
    started();
    cycle(Trigger::User);
}

/// Why a cycle runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// The GC heap reached its goal.
    Heap,
    /// `collect()`.
    User,
    /// None ran for the force period (the timer thread).
    Periodic,
}

/// Times of one cycle's phases (monotonic ns). A stop-the-world cycle has one pause
/// (`stopping`..`resumed`) and a second of length 0 at its end; a concurrent one has the
/// first pause (roots), the concurrent mark (`resumed`..`stopping2`) and mark termination.
struct Times {
    start: u64,
    stopping: u64,
    stopped: u64,
    resumed: u64,
    stopping2: u64,
    resumed2: u64,
    end: u64,
    threads: usize,
    concurrent: bool,
    /// The GC heap at mark termination (Go's gctrace B), and the CPU time of the concurrent
    /// mark's background markers and assists.
    marked_heap: usize,
    /// This cycle's goal (Go's gctrace goal).
    goal: usize,
    background_ns: u64,
    assist_ns: u64,
    idle_ns: u64,
    /// Lap times inside the first pause (or the only one) and inside mark termination.
    laps1: Laps,
    laps2: Laps,
}

/// Instants inside one pause (monotonic ns), for `GOMALLOC_DEBUG=gcpausetrace=1`: the stop
/// request, then the end of each step up to the end of the resume.
#[derive(Clone, Copy)]
struct Laps {
    at: [u64; Laps::MAX],
    n: usize,
    /// The stop's parts (`stw::last_stop_parts`).
    stop: [u64; 3],
}

impl Laps {
    const MAX: usize = 10;
    const NONE: Laps = Laps {
        at: [0; Laps::MAX],
        n: 0,
        stop: [0; 3],
    };

    /// Records now as the end of the next step (steps past `MAX` are dropped).
    fn lap(&mut self) {
        if self.n < Laps::MAX {
            self.at[self.n] = crate::os::now_ns();
            self.n += 1;
        }
    }

    /// Appends each step's length in microseconds, `+`-separated, and the steps' names.
    fn print(&self, l: &mut crate::diag::Line, names: &[&str]) {
        for i in 1..self.n {
            if i > 1 {
                l.str("+");
            }
            l.dec(self.at[i].saturating_sub(self.at[i - 1]) / 1_000);
            if i == 1 {
                // The stop: signal/wait/list.
                l.str("(")
                    .dec(self.stop[0] / 1_000)
                    .str("/")
                    .dec(self.stop[1] / 1_000)
                    .str("/")
                    .dec(self.stop[2] / 1_000)
                    .str(")");
            }
        }
        l.str(" us (");
        for (i, name) in names.iter().take(self.n.saturating_sub(1)).enumerate() {
            if i > 0 {
                l.str("+");
            }
            l.str(name);
        }
        l.str(")");
    }
}

impl Times {
    fn pause(&self) -> u64 {
        (self.resumed - self.stopping) + (self.resumed2 - self.stopping2)
    }
}

/// Serialises cycles (taken before `GC_HEAP`: a concurrent mark runs without `GC_HEAP`), and
/// holds the collector's grey stack, kept from one cycle to the next so that a pause neither
/// maps it nor faults its pages in.
static CYCLE: Mutex<GreyStack> = Mutex::new(GreyStack::new());
/// Whether cycles mark concurrently (`set_concurrent`).
static CONCURRENT: AtomicBool = AtomicBool::new(false);
/// A cycle asked of the background thread (the timer thread) by an allocation over the goal.
static BG_REQUEST: AtomicBool = AtomicBool::new(false);

/// Turns concurrent marking on or off; returns the previous setting. Off by default: every
/// cycle then stops the world for its whole mark.
///
/// With it on, a cycle stops the world twice, briefly: to scan the roots and turn the write
/// barrier on, and for mark termination (the roots again, the barrier buffers, what is left
/// to mark). In between, the mark workers and the thread that runs the cycle mark while the
/// program runs; a cycle started by the pacer runs on the background thread `gomalloc-gc`
/// from a trigger below the goal (`pacer`), and an allocating thread goes on unless the heap
/// passes its goal by 10%, where it waits for the cycle.
///
/// # Safety
/// The program promises that while it is on, every store of a pointer to a GC object *into*
/// a GC object goes through [`GcCell::set`] or is followed by [`write_barrier`] on the stored
/// value (Dijkstra's insertion barrier), and that it never hides such a pointer from the
/// collector in between. A store through a plain `Cell`, an atomic or a raw pointer without
/// the barrier can let a reachable object be freed. Stores into stacks, statics, registered
/// regions and malloc memory need no barrier (mark termination rescans them).
pub unsafe fn set_concurrent(on: bool) -> bool {
    let _c = CYCLE.lock();
    CONCURRENT.swap(on, Ordering::Relaxed)
}

/// A `Cell` for values that hold `Gc` pointers inside GC objects, whose `set` runs the write
/// barrier (needed when [`set_concurrent`] is on; a plain store otherwise).
#[repr(transparent)]
pub struct GcCell<T: Copy>(core::cell::Cell<T>);

impl<T: Copy> GcCell<T> {
    pub const fn new(v: T) -> Self {
        GcCell(core::cell::Cell::new(v))
    }

    #[inline]
    pub fn get(&self) -> T {
        self.0.get()
    }

    /// Stores `v`, then shades the objects its words point to if a concurrent mark runs.
    #[inline]
    pub fn set(&self, v: T) {
        self.0.set(v);
        write_barrier(&v);
    }
}

impl<T: Copy + Default> Default for GcCell<T> {
    fn default() -> Self {
        GcCell::new(T::default())
    }
}

impl<T: Copy + core::fmt::Debug> core::fmt::Debug for GcCell<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.get().fmt(f)
    }
}

/// The write barrier: call it right *after* storing `val` into a GC object by any means other
/// than [`GcCell::set`] (an atomic, a raw write), while [`set_concurrent`] is on. Every
/// aligned word of `val` that points into an unmarked GC object queues that object for the
/// mark. Costs a load and a branch while no mark runs.
#[inline]
pub fn write_barrier<T: ?Sized>(val: &T) {
    // The store must come first: a barrier that found no mark running and a store after the
    // mark started would hide the stored pointer from a black object.
    core::sync::atomic::compiler_fence(Ordering::SeqCst);
    if mark::marking() {
        shade_words(val as *const T as *const u8, core::mem::size_of_val(val));
    }
}

/// Shades the words just written into a new object, if a mark runs: objects allocated during
/// a mark are black (Go's rule: see `heap::GcHeap::alloc_batch`, and the first pause marks the
/// slots threads already hold in their caches), so no marker scans them, and what their
/// contents point to must be shaded as a barrier store would. Written without the barrier,
/// the contents were read from this thread's stack and registers; a thread stopped by mark
/// termination between the write and this call still has the object in a register or on
/// its stack, and termination scans the objects stopped stacks point to whatever their mark
/// bits (`mark::scan_range_force`).
#[inline]
fn shade_contents(p: *const u8, len: usize) {
    // The contents are written before the check: a check that found no mark running came
    // before the first pause, whose stack scan then sees the object white and scans it.
    core::sync::atomic::compiler_fence(Ordering::SeqCst);
    if mark::marking() {
        shade_words(p, len);
    }
}

#[cold]
fn shade_words(p: *const u8, len: usize) {
    let words = len / core::mem::size_of::<usize>();
    for k in 0..words {
        // SAFETY: inside `val`, which is readable; read unaligned, as a plain word (padding
        // bytes are read as the conservative scan reads them).
        let w = unsafe { p.cast::<usize>().add(k).read_unaligned() };
        cache::shade(w);
    }
}

/// An allocation of `alloc` bytes (a refill's batch, or a large object) took the heap past
/// the trigger: a cycle, asked of the background thread with concurrent marking on (the
/// thread then assists the mark in progress, or waits for it past the hard limit), else run
/// here.
#[inline(never)]
fn over_trigger(alloc: usize) {
    let (sweeping, live) = {
        let h = stw::lock_at_safepoint(&GC_HEAP);
        (h.sweeping(), h.stats.live)
    };
    if sweeping {
        // Refills saw the goal before the sweep began; it is set again when the sweep ends.
        return;
    }
    if CONCURRENT.load(Ordering::Relaxed) && !on_background_thread() {
        let goal = NEXT_GC.load(Ordering::Relaxed);
        // The hard limit: 10% past the goal, or the goal itself when the memory limit set it.
        let slack = if LIMIT_SETS_GOAL.load(Ordering::Relaxed) {
            0
        } else {
            goal / 10
        };
        let hard = goal.saturating_add(slack);
        if live < hard {
            if mark::marking() {
                // A mark runs: this thread pays for its allocation with scan work (Go's
                // assists), so that the mark ends by the goal.
                mark::assist_for(alloc, live, goal, hard);
            }
            if !BG_REQUEST.swap(true, Ordering::AcqRel) {
                TIMER_WAKE.fetch_add(1, Ordering::Release);
                crate::sync::futex_wake(&TIMER_WAKE);
            }
            return;
        }
        // Past the hard limit: the mark is not keeping up, so this thread waits for the
        // cycle in progress (or runs one), which marks without pauses from now on.
        mark::hurry(true);
    }
    cycle(Trigger::Heap);
}

/// One cycle (see the module docs for the steps).
#[inline(never)]
fn cycle(why: Trigger) {
    let mut grey = CYCLE.lock();
    if CONCURRENT.load(Ordering::Relaxed) {
        concurrent_cycle(why, &mut grey);
    } else {
        stw_cycle(why, &mut grey);
    }
    grey.reset();
}

std::thread_local! {
    static BACKGROUND: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
}

fn on_background_thread() -> bool {
    BACKGROUND.try_with(|b| b.get()).unwrap_or(false)
}

/// What a stopped world's root scan reads: the stopped threads and the tables locked before
/// the stop.
struct RootSet<'a, 'b> {
    stopped: &'a stw::Stopped,
    regions: &'a roots::Regions,
    segments: &'a roots::Segments,
    caches: &'a cache::Caches,
    blocks: &'a crate::huge::Blocks<'b>,
    scan_malloc: bool,
}

/// Which full root scan of a stopped world.
#[derive(Clone, Copy)]
enum Pass {
    /// A stop-the-world cycle's mark.
    StopTheWorld,
    /// Mark termination of a concurrent mark: the objects the stopped threads' stacks point
    /// to are scanned even if marked (a new object may be in flight: `shade_contents`).
    Termination,
    /// `gccheckmark`'s second mark: the collector's own stack only from this frame up, no
    /// registers (see `roots::scan_own_stack`).
    Check(usize),
}

impl RootSet<'_, '_> {
    /// Scans every root: the stacks and registers of every thread, their static TLS, the
    /// registered regions, static data, the malloc heap (unless turned off), and the threads'
    /// cached slots, marked without a scan (at mark termination they are marked already).
    /// Returns where the collector's own stack scan started. (The first pause of a concurrent
    /// mark scans only the threads and marks the cached slots: allocation during the mark is
    /// black.) The threads' GC caches (thread-locals) are not scanned: see
    /// `roots::Segments::cache`.
    /// The cached slots are marked first: a root word that reaches one then finds it marked
    /// and does not scan it (a slot is zeroed by its refill after `GC_HEAP` is released, so a
    /// thread stopped in between leaves old words in it). `laps` gets the end of each part:
    /// the caches, the threads, the regions and statics, the malloc heap.
    fn scan(&self, pass: Pass, grey: &mut GreyStack, laps: &mut Laps) -> usize {
        let (floor, force) = match pass {
            Pass::StopTheWorld => (0, false),
            Pass::Termination => (0, true),
            Pass::Check(floor) => (floor, false),
        };
        // The laps' order here is the order `print_pauses` names them in.
        if !matches!(pass, Pass::Termination) {
            // At termination every cached slot is marked already: by the first pause, or by
            // the refill that reserved it during the mark (`GcHeap::alloc_batch`), and
            // `gccheckmark`'s mark, which marks them all again, would catch one left white.
            self.caches.mark_all();
        }
        laps.lap();
        let here = scan_thread_roots(self.stopped, self.segments, floor, force, grey);
        laps.lap();
        self.regions.scan(grey);
        self.segments.scan(grey);
        laps.lap();
        if self.scan_malloc {
            scan_malloc_heap(self.blocks, grey);
        }
        laps.lap();
        here
    }
}

/// The roots that only a stopped world can read: the stacks and registers of every thread
/// (the collector's own and the stopped ones') and their static TLS blocks (a thread that
/// exits frees both).
///
/// `force` (mark termination): objects the stopped threads' stacks point to are scanned
/// even if marked (see `shade_contents`).
fn scan_thread_roots(
    stopped: &stw::Stopped,
    segments: &roots::Segments,
    own_floor: usize,
    force: bool,
    grey: &mut GreyStack,
) -> usize {
    let here = roots::scan_own_stack(grey, own_floor, segments);
    roots::scan_stopped(stopped, segments, force, grey);
    here
}

/// After a skipped cycle: nothing may be swept; the next automatic try waits until the heap
/// has grown by GOGC again.
fn skipped(h: crate::sync::MutexGuard<'static, heap::GcHeap>) {
    mark::hurry(false);
    let live = h.stats.live;
    drop(h);
    set_goal(live);
    STATS.lock().s.num_skipped += 1;
}

/// A cycle whose whole mark stops the world.
fn stw_cycle(why: Trigger, grey: &mut GreyStack) {
    let mut h = GC_HEAP.lock();
    // Go's sweep termination. The collector ends each sweep before it releases `CYCLE`, so
    // this finds nothing left, but a mark must start from swept spans (clear mark bits).
    h.finish_sweep();
    // Another thread may have collected while we waited for the lock.
    if why == Trigger::Heap && h.stats.live < NEXT_GC.load(Ordering::Relaxed) {
        return;
    }
    let start = crate::os::now_ns();
    let before = h.stats.live;
    let goal = NEXT_GC.load(Ordering::Relaxed);
    // Everything that may take a lock or allocate happens before the world stops.
    let _ = roots::stack_top();
    let caches = cache::lock();
    let regions = roots::lock_regions();
    let segments = roots::list_statics();
    let scan_malloc = SCAN_MALLOC.load(Ordering::Relaxed);
    mark::ensure_workers(mark_workers() & !WORKERS_SET);
    // The markers' pool: a thread may take its lock at any time (a thread-exit flush), so it
    // is held across the stop (no stopped thread holds it) and released for the mark.
    let pool = mark::lock_pool();
    let mut laps = Laps::NONE;
    let marked = crate::huge::with_blocks(|blocks| {
        if !roots::own_stack_known() {
            return None;
        }
        laps.lap();
        let stopping = laps.at[0];
        let stopped = stw::stop()?;
        laps.stop = stw::last_stop_parts();
        drop(pool);
        laps.lap();
        let at_stop = laps.at[1];
        caches.clear_barrier_buffers();
        let roots = RootSet {
            stopped: &stopped,
            regions: &regions,
            segments: &segments,
            caches: &caches,
            blocks,
            scan_malloc,
        };
        roots.scan(Pass::StopTheWorld, grey, &mut laps);
        if mark::drain_with_workers(grey, usize::MAX, None) {
            grey.overflowed = true;
            mark::rescan_marked(&h, grey);
        }
        laps.lap();
        let threads = stopped.count();
        stw::resume(stopped);
        laps.lap();
        Some((stopping, at_stop, laps.at[7], threads))
    });
    drop(segments);
    drop(regions);
    drop(caches);
    let Some((stopping, stopped, resumed, threads)) = marked else {
        return skipped(h);
    };
    let t = Times {
        start,
        stopping,
        stopped,
        resumed,
        stopping2: resumed,
        resumed2: resumed,
        end: 0,
        threads,
        concurrent: false,
        marked_heap: before,
        goal,
        background_ns: 0,
        assist_ns: 0,
        idle_ns: 0,
        laps1: laps,
        laps2: Laps::NONE,
    };
    finish(h, t, before, why);
}

/// Sweeps, sets the next goal and records the cycle.
fn finish(
    mut h: crate::sync::MutexGuard<'static, heap::GcHeap>,
    mut t: Times,
    before: usize,
    why: Trigger,
) {
    // The sweep (Go's background sweeper), a chunk of spans at a time: between chunks,
    // allocating threads get the lock (a refill sweeps the span it allocates from itself).
    h.begin_sweep();
    while !h.sweep_some(SWEEP_CHUNK) {
        h = yield_heap(h);
    }
    // What the mark kept: what threads allocated during the sweep counts toward the next
    // trigger, not into the goal's base.
    let after = h.end_sweep();
    GC_HEAP_SPANS.store(h.stats.spans, Ordering::Relaxed);
    GC_PEAK_SPANS.store(h.take_peak_spans(), Ordering::Relaxed);
    drop(h);
    // The goal may read the allocator's statistics (memory limit): outside `GC_HEAP`.
    set_goal(after);
    t.end = crate::os::now_ns();
    LAST_GC_NS.store(t.end, Ordering::Relaxed);
    let n = record(&t, why);
    if trace_on() {
        print_trace(n, &t, before, after, why);
    }
    if crate::os::debug_flag(b"gcpausetrace=1") {
        print_pauses(n, &t);
    }
}

/// Grey entries (the collector's and the pool's) up to which mark termination drains without
/// the mark workers.
const TERMINATION_ALONE: usize = 4096;

/// Spans the collector sweeps per hold of `GC_HEAP`.
const SWEEP_CHUNK: usize = 128;

/// Releases `GC_HEAP` and takes it again, after a thread waiting for it got it (or about
/// 20 us passed): the lock is not fair, and the collector would otherwise win it back before
/// a woken waiter runs.
fn yield_heap(
    h: crate::sync::MutexGuard<'static, heap::GcHeap>,
) -> crate::sync::MutexGuard<'static, heap::GcHeap> {
    let waiters = GC_HEAP.has_sleepers();
    drop(h);
    if waiters {
        let until = crate::os::now_ns() + 20_000;
        while !GC_HEAP.is_locked() && crate::os::now_ns() < until {
            core::hint::spin_loop();
        }
    }
    GC_HEAP.lock()
}

/// A cycle with a concurrent mark (`set_concurrent`):
/// 1. with `GC_HEAP` and the root tables locked, stop the world, turn the barrier on
///    (`mark::set_marking`), mark the threads' cached slots (allocation is black from here
///    on), scan the threads' stacks, registers and static TLS onto the grey stack, resume;
/// 2. while the program runs: scan the registered regions and the static data (under the
///    loader's lock, `roots::scan_statics_now`), release `GC_HEAP` (threads
///    allocate black objects; what a barrier store or a new object's contents point to is
///    shaded through the thread's buffer), scan malloc memory, and drain with the mark
///    workers, taking up the buffers that mutators flushed meanwhile;
/// 3. take `GC_HEAP`, the tables and the pool's lock, stop the world: scan the roots again
///    (stacks, statics, regions and malloc memory have no barrier), mark what every thread's
///    barrier buffer holds, drain to the end, check it (`gccheckmark`), turn the barrier off,
///    resume;
/// 4. sweep, as a stop-the-world cycle does.
fn concurrent_cycle(why: Trigger, grey: &mut GreyStack) {
    let soon = stw::StopSoon::new();
    let mut h = GC_HEAP.lock();
    // Sweep termination (see `stw_cycle`).
    h.finish_sweep();
    if why == Trigger::Heap && h.stats.live < TRIGGER.load(Ordering::Relaxed) {
        // A thread that waited for the last cycle finds nothing to do: its hurry is over.
        mark::hurry(false);
        return;
    }
    let start = crate::os::now_ns();
    let before = h.stats.live;
    let goal = NEXT_GC.load(Ordering::Relaxed);
    let _ = roots::stack_top();
    let scan_malloc = SCAN_MALLOC.load(Ordering::Relaxed);
    mark::ensure_workers(mark_workers() & !WORKERS_SET);
    // A cycle the pacer or the timer started marks with 25% of the CPUs. One a thread waits
    // for (`collect()`, or an allocation at the hard limit) marks with every worker (Go would
    // give it the idle CPUs), and so does one whose goal the memory limit set: the heap must
    // not pass it, and a slow mark keeps more floating garbage.
    let full = why == Trigger::User || mark::hurried() || LIMIT_SETS_GOAL.load(Ordering::Relaxed);
    let (workers, plan) = if full {
        let n = mark_workers() & !WORKERS_SET;
        (n, mark::Plan::dedicated(n))
    } else {
        background_markers()
    };
    mark::begin_mark(before);
    let cpu0 = mark::cpu_totals();
    // Phase 1.
    let mut laps1 = Laps::NONE;
    let first = {
        let caches = cache::lock();
        let regions = roots::lock_regions();
        let segments = roots::list_statics();
        let r = crate::huge::with_blocks(|_| {
            if !roots::own_stack_known() {
                return None;
            }
            laps1.lap();
            let stopped = stw::stop()?;
            laps1.stop = stw::last_stop_parts();
            laps1.lap();
            mark::set_marking(true);
            // Allocate black: the slots threads hold in their caches, which they hand out
            // during the mark without `GC_HEAP`, are black from now on (refills during the
            // mark are, by `alloc_batch`).
            caches.mark_all();
            caches.clear_barrier_buffers();
            laps1.lap();
            scan_thread_roots(&stopped, &segments, 0, false, grey);
            laps1.lap();
            stw::resume(stopped);
            laps1.lap();
            Some((laps1.at[0], laps1.at[1], laps1.at[4]))
        });
        if r.is_some() {
            // Registered regions stay mapped while their table's lock is held (`remove_roots`
            // waits), so they are scanned once the program runs again (a store into them
            // after that needs no barrier: mark termination rescans them), and so is the
            // static data, under the loader's lock (termination rescans it too).
            regions.scan(grey);
            roots::scan_statics_now(grey);
        }
        r
    };
    drop(soon);
    let Some((stopping, stopped, resumed)) = first else {
        return skipped(h);
    };
    drop(h);
    if scan_malloc {
        let t0 = crate::os::thread_cpu_ns();
        // Huge blocks a piece at a time, so that huge allocations and frees do not wait for
        // the whole scan (termination scans them again with the table locked).
        scan_malloc_spans(grey);
        crate::huge::each_piece(1 << 20, |a, len| {
            // SAFETY: a piece of a live huge block, mapped while `each_piece` holds the lock.
            unsafe { mark::scan_range(a, len, grey) }
        });
        mark::add_background_cpu(crate::os::thread_cpu_ns().saturating_sub(t0));
    }
    // Phase 2.
    let mut overflow = false;
    for _ in 0..8 {
        overflow |= mark::drain_with_workers(grey, workers, Some(plan));
        if mark::pool_len() == 0 {
            break;
        }
    }
    // Phase 3.
    let soon = stw::StopSoon::new();
    let mut h = GC_HEAP.lock();
    let marked_heap = h.stats.live;
    if !full {
        // The pacer's cons/mark ratio, from what the program allocated during the mark, the
        // work the mark did and the CPU it took (not for a mark with every worker, where the
        // markers and the program share the CPUs in no known proportion).
        let cpu = mark::cpu_totals();
        let wall = crate::os::now_ns().saturating_sub(resumed).max(1);
        let all = wall as f64 * ncpu() as f64;
        let u = ((cpu.0 - cpu0.0) + (cpu.1 - cpu0.1)) as f64 / all;
        let idle = (cpu.2 - cpu0.2) as f64 / all;
        pacer::record(
            marked_heap.saturating_sub(before),
            mark::scan_work(),
            u,
            idle,
        );
    }
    let caches = cache::lock();
    let regions = roots::lock_regions();
    let segments = roots::list_statics();
    let pool = mark::lock_pool();
    let mut laps2 = Laps::NONE;
    let second = crate::huge::with_blocks(|blocks| {
        laps2.lap();
        let stopping2 = laps2.at[0];
        let stopped = stw::stop()?;
        laps2.stop = stw::last_stop_parts();
        laps2.lap();
        // No stopped thread holds the pool's lock (we held it across the stop), and the
        // markers are idle: the drain below may take it.
        drop(pool);
        // The frame `gccheckmark` scans this thread's stack from (see `roots::scan_own_stack`).
        let anchor = 0usize;
        let own_floor = core::hint::black_box(core::ptr::addr_of!(anchor)) as usize;
        let roots = RootSet {
            stopped: &stopped,
            regions: &regions,
            segments: &segments,
            caches: &caches,
            blocks,
            scan_malloc,
        };
        roots.scan(Pass::Termination, grey, &mut laps2);
        caches.drain_barrier_buffers(grey);
        // What is left to mark at termination is usually little: waking the workers would
        // cost more than it saves.
        let helpers = if grey.len() + mark::pool_len() > TERMINATION_ALONE {
            usize::MAX
        } else {
            0
        };
        if mark::drain_with_workers(grey, helpers, None) | overflow | mark::take_conc_overflow() {
            grey.overflowed = true;
            mark::rescan_marked(&h, grey);
        }
        laps2.lap();
        if checkmark_on() {
            checkmark(&mut h, &roots, own_floor);
        }
        laps2.lap();
        {
            let _pool = mark::lock_pool();
            mark::set_marking(false);
        }
        let threads = stopped.count();
        stw::resume(stopped);
        laps2.lap();
        Some((stopping2, laps2.at[8], threads))
    });
    drop(soon);
    drop(segments);
    drop(regions);
    drop(caches);
    let Some((stopping2, resumed2, threads)) = second else {
        // The world could not be stopped for termination: give the mark up (its bits are
        // partial, so nothing may be swept).
        {
            let mut pool = mark::lock_pool();
            mark::set_marking(false);
            mark::empty_pool(&mut pool);
        }
        h.clear_marks();
        return skipped(h);
    };
    mark::end_mark();
    let cpu1 = mark::cpu_totals();
    let t = Times {
        start,
        stopping,
        stopped,
        resumed,
        stopping2,
        resumed2,
        end: 0,
        threads,
        concurrent: true,
        marked_heap,
        goal,
        background_ns: cpu1.0 - cpu0.0,
        assist_ns: cpu1.1 - cpu0.1,
        idle_ns: cpu1.2 - cpu0.2,
        laps1,
        laps2,
    };
    finish(h, t, before, why);
}

fn checkmark_on() -> bool {
    crate::os::debug_flag(b"gccheckmark=1")
}

/// Go's `gccheckmark`: at mark termination, with the world stopped, marks everything again
/// from the roots with a stop-the-world mark and aborts with one line if that reaches an
/// object the concurrent mark left unmarked (it would have been freed while reachable). The
/// marks kept are the union.
fn checkmark(h: &mut heap::GcHeap, roots: &RootSet<'_, '_>, own_floor: usize) {
    h.save_marks();
    let mut grey = GreyStack::new();
    let mut no_laps = Laps::NONE;
    roots.scan(Pass::Check(own_floor), &mut grey, &mut no_laps);
    mark::drain(&mut grey);
    if grey.overflowed {
        mark::rescan_marked(h, &mut grey);
    }
    grey.free();
    if let Some(p) = h.merge_checked_marks() {
        crate::diag::fatal(
            "gc: gccheckmark: the concurrent mark missed a reachable object at",
            p,
            0,
        );
    }
}

/// Adds a finished cycle to the totals; returns its number.
fn record(t: &Times, why: Trigger) -> u64 {
    let pause = t.pause();
    let sweep = t.end - t.resumed2;
    let mut totals = STATS.lock();
    // Idle marking is not counted (as in Go): it used CPUs the program did not want.
    totals.gc_cpu_ns += pause * ncpu() + sweep + t.background_ns + t.assist_ns;
    let s = &mut totals.s;
    if t.concurrent {
        s.mark_concurrent_ns += t.stopping2 - t.resumed;
    }
    let i = (s.num_gc % 256) as usize;
    s.num_gc += 1;
    s.num_forced_gc += (why == Trigger::User) as u64;
    s.pause_total_ns += pause;
    s.pause_ns[i] = pause;
    let now = unix_ns();
    s.pause_end[i] = now.saturating_sub(t.end - t.resumed2);
    s.last_gc = now;
    s.last_stopped_threads = t.threads as u64;
    s.last_parked_threads = stw::last_held() as u64;
    s.sweep_total_ns += sweep;
    s.num_gc
}

/// Scans every block of the ordinary heap: the used part of each in-use small span (objects
/// never handed out are left alone, unread and unfaulted) and each large span and huge block.
fn scan_malloc_heap(blocks: &crate::huge::Blocks<'_>, grey: &mut GreyStack) {
    scan_malloc_spans(grey);
    // SAFETY: live huge blocks, which stay mapped while their table lock is held.
    blocks.each(|a, len| unsafe { mark::scan_range(a, len, grey) });
}

/// Scans the in-use spans of the allocator's heap (huge blocks apart).
fn scan_malloc_spans(grey: &mut GreyStack) {
    crate::pagemap::for_each_inuse_span(|s| {
        // SAFETY: descriptors are never unmapped; heap memory is never unmapped, so reading
        // a span's memory is safe even if it changes meanwhile (conservative reads). The span
        // is read through its own first-page pointer.
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
}

// ---- gctrace -----------------------------------------------------------------------------

/// `GOMALLOC_DEBUG=gcpausetrace=1`: one line per cycle with where its pauses' time went, in
/// microseconds: `gcpause N: first S(s/w/l)+C+R+W us (stop+caches+stacks+resume),
/// termination S(s/w/l)+C+T+A+M+D+K+W us
/// (stop+caches+stacks+statics+malloc+drain+checkmark+resume), T threads` for a concurrent
/// cycle, `gcpause N: S(s/w/l)+C+T+A+M+D+W us (stop+caches+stacks+statics+malloc+drain+
/// resume), T threads` for a stop-the-world one (`statics` counts the registered regions
/// too). `stop` runs from the stop request until every thread has
/// acknowledged: `s` signalling the threads the last stop stopped, `w` waiting for them, `l`
/// listing the process's threads; `resume` is the wake-up call (threads run again on their
/// own after it).
fn print_pauses(n: u64, t: &Times) {
    let mut l = crate::diag::Line::new();
    l.str("gcpause ").dec(n).str(": ");
    if t.concurrent {
        l.str("first ");
        t.laps1
            .print(&mut l, &["stop", "caches", "stacks", "resume"]);
        l.str(", termination ");
        t.laps2.print(
            &mut l,
            &[
                "stop",
                "caches",
                "stacks",
                "statics",
                "malloc",
                "drain",
                "checkmark",
                "resume",
            ],
        );
    } else {
        t.laps1.print(
            &mut l,
            &[
                "stop", "caches", "stacks", "statics", "malloc", "drain", "resume",
            ],
        );
    }
    l.str(", ").dec(t.threads as u64).str(" threads");
    l.emit();
}

fn trace_on() -> bool {
    crate::os::debug_flag(b"gctrace=1")
}

fn ms(l: &mut crate::diag::Line, ns: u64) {
    l.dec(ns / 1_000_000)
        .str(".")
        .dec(ns / 100_000 % 10)
        .dec(ns / 10_000 % 10)
        .dec(ns / 1_000 % 10);
}

/// One line in the form of Go's gctrace:
/// `gc N @Ts P%: S+C+M ms clock, S*P+a/b/i+M*P ms cpu, A->B->C MB, G MB goal, 0 MB stacks,
/// 0 MB globals, N P (forced)`. A stop-the-world cycle reports its mark as mark termination
/// (M, from the stop request to the resume) after the time to stop the threads (S), with 0
/// for the concurrent mark; a concurrent cycle its first pause (S), its concurrent mark (C)
/// and its termination (M). CPU: the pauses count for every CPU (times P), then the CPU time
/// of mark assists (a), of the background markers (b) and of the idle markers (i) during the
/// concurrent mark. A, B, C: the GC heap when the cycle started, at mark termination, and what
/// the mark kept; G this cycle's goal. The sweep is not in the line (as in Go). P% is the GC
/// CPU fraction since the first GC call; N P the CPUs.
fn print_trace(n: u64, t: &Times, before: usize, after: usize, why: Trigger) {
    let frac = (stats().gc_cpu_fraction * 100.0) as u64;
    let since = t.start.saturating_sub(START_NS.load(Ordering::Relaxed));
    // Stop-the-world: time to stop, 0, the mark. Concurrent: the first pause, the concurrent
    // mark, mark termination.
    let (stop, conc, mark) = if t.concurrent {
        (
            t.resumed - t.stopping,
            t.stopping2 - t.resumed,
            t.resumed2 - t.stopping2,
        )
    } else {
        (t.stopped - t.stopping, 0, t.resumed - t.stopped)
    };
    let mut l = crate::diag::Line::new();
    l.str("gc ")
        .dec(n)
        .str(" @")
        .dec(since / 1_000_000_000)
        .str(".");
    l.dec(since / 100_000_000 % 10)
        .dec(since / 10_000_000 % 10)
        .dec(since / 1_000_000 % 10);
    l.str("s ").dec(frac).str("%: ");
    ms(&mut l, stop);
    l.str("+");
    ms(&mut l, conc);
    l.str("+");
    ms(&mut l, mark);
    // CPU: the pauses hold every CPU; in between, the thread CPU time of the assists, the
    // background markers and the idle markers.
    l.str(" ms clock, ");
    ms(&mut l, stop * ncpu());
    l.str("+");
    ms(&mut l, t.assist_ns);
    l.str("/");
    ms(&mut l, t.background_ns);
    l.str("/");
    ms(&mut l, t.idle_ns);
    l.str("+");
    ms(&mut l, mark * ncpu());
    l.str(" ms cpu, ");
    l.dec((before >> 20) as u64)
        .str("->")
        .dec((t.marked_heap >> 20) as u64)
        .str("->");
    l.dec((after >> 20) as u64).str(" MB, ");
    l.dec((t.goal.min(usize::MAX >> 1) >> 20) as u64)
        .str(" MB goal, 0 MB stacks, 0 MB globals, ")
        .dec(ncpu())
        .str(" P");
    if why != Trigger::Heap {
        l.str(" (forced)");
    }
    l.emit();
}
