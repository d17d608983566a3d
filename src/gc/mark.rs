//! Marking: the grey stack and the conservative scan.
//!
//! Owns: the grey stack (objects reached but not yet scanned), a growable array of
//! `(start, len)` in memory mapped from the OS (never the global allocator).
//!
//! Provenance: a scanned word is only an address, looked up in the page map; the object it
//! marks is reached through its span's first page (`GcSpan::object`), and every range is
//! scanned through a pointer to it, never through an integer cast to a pointer.
//!
//! Tri-colour terms: an object is white while its mark bit is clear, grey once marked and on
//! the grey stack, black once popped and scanned (noscan objects go straight to black).
//! Scanning is conservative: every aligned word of a root or a grey object that points into an
//! allocated GC object, interior pointers included, marks that object.
//!
//! Concurrent mark (see `gc`'s module docs): while [`marking`] is true, mutators queue the
//! objects their stores and allocations make reachable (`cache::shade`), and hand full
//! buffers to [`mark_into_pool`], which marks them grey into the shared pool that the
//! collector and the mark workers drain while the mutators run.
//!
//! Locks: `POOL` (the shared grey pool), taken alone by markers and by mutators flushing a
//! barrier buffer, and last by the collector before it stops the world for mark termination
//! (so no stopped thread holds it). The stop-the-world mark holds `GC_HEAP` throughout.

use super::heap::find_object;
use crate::os;
use crate::sync::Mutex;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

const WORD: usize = core::mem::size_of::<usize>();

/// A range to scan: its start and length in bytes.
type Range = (*const u8, usize);

/// Objects waiting to be scanned.
pub struct GreyStack {
    buf: *mut Range,
    len: usize,
    cap: usize,
    /// The stack could not grow: some objects were marked but not scanned, so the mark must
    /// be finished by rescanning marked objects (`overflowed` tells the caller).
    pub overflowed: bool,
    /// Bytes scanned into this stack not yet added to the cycle's scan work (`flush_work`).
    scanned: usize,
}

// SAFETY: the stack owns its mapping; the ranges it holds are addresses of GC objects, read
// only by markers while the collector's locks keep the objects allocated.
unsafe impl Send for GreyStack {}

impl GreyStack {
    pub const fn new() -> Self {
        GreyStack {
            buf: ptr::null_mut(),
            len: 0,
            cap: 0,
            overflowed: false,
            scanned: 0,
        }
    }

    /// Entries waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, start: *const u8, len: usize) {
        if self.len == self.cap && !self.grow() {
            self.overflowed = true;
            return;
        }
        // SAFETY: `len < cap`, inside our mapping.
        unsafe { self.buf.add(self.len).write((start, len)) };
        self.len += 1;
    }

    fn pop(&mut self) -> Option<Range> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        // SAFETY: `len < cap`, an entry we wrote.
        Some(unsafe { self.buf.add(self.len).read() })
    }

    /// Doubles the capacity (first: 64 KiB of entries); false if the OS refuses.
    fn grow(&mut self) -> bool {
        let entry = core::mem::size_of::<Range>();
        let new_cap = if self.cap == 0 {
            (64 << 10) / entry
        } else {
            self.cap * 2
        };
        // SAFETY: a fresh anonymous mapping.
        let nb = unsafe { os::map(new_cap * entry) } as *mut Range;
        if nb.is_null() {
            return false;
        }
        if !self.buf.is_null() {
            // SAFETY: both mappings are ours; the old one holds `len` entries.
            unsafe {
                ptr::copy_nonoverlapping(self.buf, nb, self.len);
                os::unmap(self.buf as *mut u8, self.cap * entry);
            }
        }
        self.buf = nb;
        self.cap = new_cap;
        true
    }

    /// Empties the stack for the next cycle, keeping its mapping unless it grew past 1 MiB.
    pub fn reset(&mut self) {
        if self.cap * core::mem::size_of::<Range>() > 1 << 20 {
            self.free();
        } else {
            self.len = 0;
            self.overflowed = false;
            self.scanned = 0;
        }
    }

    /// Gives the memory back (after a collection).
    pub fn free(&mut self) {
        if !self.buf.is_null() {
            let entry = core::mem::size_of::<Range>();
            // SAFETY: our mapping, no longer used.
            unsafe { os::unmap(self.buf as *mut u8, self.cap * entry) };
        }
        *self = GreyStack::new();
    }
}

/// Marks the object `w` points into, if any, and queues it for scanning unless noscan.
#[inline]
pub fn mark_word(w: usize, grey: &mut GreyStack) {
    if let Some((g, i)) = find_object(w) {
        // SAFETY: `find_object` returned a live record under the lock our caller holds.
        unsafe {
            if !(*g).try_mark(i) {
                return;
            }
            if !(*g).noscan {
                grey.push((*g).object(i), (*g).size);
            }
        }
    }
}

/// As [`mark_word`], but queues a scannable object even if it is marked already: for words
/// that may point at an object marked before it got its contents (an object handed out
/// from a slot that conservative words had marked, while its allocating thread was stopped
/// or before it shaded the object), whose scan is then owed.
#[inline]
pub fn mark_word_force(w: usize, grey: &mut GreyStack) {
    if let Some((g, i)) = find_object(w) {
        // SAFETY: as in `mark_word`.
        unsafe {
            (*g).try_mark(i);
            if !(*g).noscan {
                grey.push((*g).object(i), (*g).size);
            }
        }
    }
}

/// Scans the `len` bytes at `start` word by word (aligned words only).
///
/// # Safety
/// The range is readable memory, and `start` a pointer that may read all of it.
pub unsafe fn scan_range(start: *const u8, len: usize, grey: &mut GreyStack) {
    // SAFETY: precondition.
    unsafe { scan_range_with::<false>(start, len, grey) }
}

/// As [`scan_range`], with [`mark_word_force`]: for the stacks of threads stopped at mark
/// termination, where a new object may be in flight (see `gc::shade_contents`).
///
/// # Safety
/// As [`scan_range`].
pub unsafe fn scan_range_force(start: *const u8, len: usize, grey: &mut GreyStack) {
    // SAFETY: precondition.
    unsafe { scan_range_with::<true>(start, len, grey) }
}

#[inline(always)]
unsafe fn scan_range_with<const FORCE: bool>(start: *const u8, len: usize, grey: &mut GreyStack) {
    let end = start.addr().saturating_add(len);
    grey.scanned += len;
    let mut p = start.map_addr(|a| (a + WORD - 1) & !(WORD - 1));
    // Most words are no pointer into the GC heap: filter them here, with the range read once.
    let (lo, size) = super::heap::range();
    while p.addr() + WORD <= end {
        // SAFETY: an aligned word inside the readable range (precondition). Volatile: the
        // words are read as they are, whatever the compiler knows about them.
        let w = unsafe { ptr::read_volatile(p.cast::<usize>()) };
        if w.wrapping_sub(lo) >= size {
            p = p.wrapping_add(WORD);
            continue;
        }
        if FORCE {
            mark_word_force(w, grey);
        } else {
            mark_word(w, grey);
        }
        p = p.wrapping_add(WORD);
    }
}

/// Scans grey objects until none is left.
///
/// Objects go through a small FIFO between the grey stack and the scan (Boehm's mark-stack
/// prefetching): an object is prefetched when it enters the FIFO and scanned `PREFETCH`
/// objects later, so its cache miss overlaps with the scans in between instead of stalling
/// the first load. The order of scanning does not matter for the result.
pub fn drain(grey: &mut GreyStack) {
    drain_sharing(grey, false, None);
}

/// As [`drain`]; with `share`, every 64 scans half of a long local stack goes to the shared
/// pool while the pool runs low, for idle mark workers to take, and the scan work done is
/// added to the cycle's (`flush_work`). With a `duty` (a fractional marker), stops when the
/// marker is past its share of the time and returns true, leaving the rest on `grey`.
fn drain_sharing(grey: &mut GreyStack, share: bool, mut duty: Option<&mut Duty>) -> bool {
    const PREFETCH: usize = 8;
    let mut fifo: [Range; PREFETCH] = [(ptr::null(), 0); PREFETCH];
    let (mut head, mut len) = (0usize, 0usize);
    let mut scans = 0u32;
    loop {
        if len < PREFETCH {
            if let Some(r) = grey.pop() {
                prefetch(r.0);
                fifo[(head + len) % PREFETCH] = r;
                len += 1;
                continue;
            }
            if len == 0 {
                break;
            }
        }
        let (start, n) = fifo[head];
        head = (head + 1) % PREFETCH;
        len -= 1;
        // SAFETY: a grey object is an allocated GC object: its memory is ours and readable.
        unsafe { scan_range(start, n, grey) };
        scans = scans.wrapping_add(1);
        if share && scans % 64 == 0 {
            // Keep the pool stocked for idle markers and for assists (a marker that loses its
            // CPU holds no more than half of what is grey).
            let pool = POOL_LEN.load(Ordering::Relaxed);
            if (grey.len() > 64 && pool < 256) || (grey.len() > 1 && pool == 0) {
                give(grey);
            }
            flush_work(grey);
            if let Some(d) = duty.as_deref_mut() {
                if d.pause_owed() != 0 {
                    // Back to the grey stack, with the FIFO's entries, for whoever marks next.
                    while len > 0 {
                        let (s, n) = fifo[head];
                        grey.push(s, n);
                        head = (head + 1) % PREFETCH;
                        len -= 1;
                    }
                    clear_fifo(&mut fifo);
                    return true;
                }
            }
        }
    }
    if share {
        flush_work(grey);
    }
    clear_fifo(&mut fifo);
    false
}

/// The FIFO's old entries would stay on this thread's stack, where the next cycle's scan of
/// the collector's own frames could find them and keep their objects one cycle longer.
fn clear_fifo(fifo: &mut [Range]) {
    for e in fifo.iter_mut() {
        // SAFETY: a write to our own array; volatile so that it is not dropped as dead.
        unsafe { ptr::write_volatile(e, (ptr::null(), 0)) };
    }
}

// ---- parallel marking ----------------------------------------------------------------------
//
// While the world is stopped, the collector and up to `MAX_WORKERS` helper threads ("mark
// workers", started on the first cycle, one fewer than the CPUs) drain the grey objects
// together, as Boehm's parallel marker does. Each has its own grey stack; a long stack gives
// half of its entries to a shared pool, from which a marker whose stack ran empty takes a
// batch. Mark bits are set with an atomic or (`GcSpan::try_mark`), so two markers never both
// queue an object. The workers block every signal and are never stopped (`stw::EXEMPT`); they
// take no lock but the pool's, which no stopped thread can hold.
//
// Termination: `ACTIVE` counts markers that may still push to the pool. A marker whose stack
// and the pool are empty leaves `ACTIVE`; it comes back (re-entering `ACTIVE` before it takes)
// when the pool has work; it ends when it sees `ACTIVE == 0` and then the pool empty: nobody
// outside `ACTIVE` pushes, so nothing can be added after that.

/// Mark workers at most (besides the collector); fits `PARTICIPANT_BITS`.
pub const MAX_WORKERS: usize = 7;
const _: () = assert!(MAX_WORKERS < 1 << PARTICIPANT_BITS);
/// Entries a marker takes from the pool at once.
const TAKE: usize = 128;

static POOL: Mutex<GreyStack> = Mutex::new(GreyStack::new());
static POOL_LEN: AtomicUsize = AtomicUsize::new(0);
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
/// Set when a marker's grey stack could not grow (the collector then rescans marked objects).
static OVERFLOWED: AtomicBool = AtomicBool::new(false);
/// Changed to start the workers on a mark (their futex word): a generation above
/// `PARTICIPANT_BITS`, and below them how many workers take part in this drain (one value,
/// so a worker that wakes late never joins a drain with the wrong count). Then the count of
/// participants that finished.
static WORK_GEN: AtomicU32 = AtomicU32::new(0);
const PARTICIPANT_BITS: u32 = 4;
static DONE: AtomicUsize = AtomicUsize::new(0);
/// Workers started.
static WORKERS: AtomicUsize = AtomicUsize::new(0);

/// True from the start of a concurrent mark (set while the world is stopped) to mark
/// termination (cleared while the world is stopped, with `POOL` held).
static MARKING: AtomicBool = AtomicBool::new(false);
/// Set when the pool could not grow during a concurrent mark (mark termination then rescans
/// marked objects).
static CONC_OVERFLOW: AtomicBool = AtomicBool::new(false);

// ---- pacing the concurrent mark (Go's gcControllerState) -----------------------------------
//
// The background mark uses about 25% of the CPUs (`pacer::background_plan`): dedicated
// markers, and on machines where whole markers miss 25% by far, one fractional marker that
// pauses (`Duty`) so that it marks only its share of the time. Allocating threads make up the
// rest as mark assists, in proportion to what they allocate (`assist_for`): Go's rule that the
// program pays for the marking its allocation makes necessary, so that the mark ends near the
// goal however fast the program allocates. Work done by the background markers is banked
// (`BG_CREDIT`) and taken by assists first, so that a mark that keeps up costs them nothing.

/// Bytes scanned by this cycle's mark: roots, markers and assists.
static SCAN_WORK: AtomicUsize = AtomicUsize::new(0);
/// The scan work expected of this cycle's mark: the last mark's.
static EXPECTED: AtomicUsize = AtomicUsize::new(0);
/// Scan work of the background markers that assists have not taken (Go's bgScanCredit).
static BG_CREDIT: AtomicUsize = AtomicUsize::new(0);
/// The mark the threads' assist debts belong to (bumped by `begin_mark`).
static MARK_GEN: AtomicU32 = AtomicU32::new(0);
/// CPU time of background marking (markers in concurrent drains, the collector's concurrent
/// root scans) and of assists, over all cycles, in ns.
static BG_CPU_NS: AtomicU64 = AtomicU64::new(0);
static ASSIST_CPU_NS: AtomicU64 = AtomicU64::new(0);
static IDLE_CPU_NS: AtomicU64 = AtomicU64::new(0);
/// Whether the drain in progress is a concurrent (background) one, the share of a CPU of its
/// fractional marker (millionths, 0 = none) and how many of its last participants are idle
/// markers (see [`Plan`]).
static BG_DRAIN: AtomicBool = AtomicBool::new(false);
static FRACTION_PPM: AtomicU32 = AtomicU32::new(0);
static PLAN_WORKERS: AtomicUsize = AtomicUsize::new(0);
/// Set by the first marker that sees a drain's end (`ACTIVE == 0`, then an empty pool): the
/// others return from their idle loops and pauses then, even if mutators' flushes have put
/// objects in the pool since (the collector's later drains and mark termination take those).
static DRAIN_END: AtomicBool = AtomicBool::new(false);

/// How a background drain's markers run (Go's worker modes): the collector and the first
/// `workers` workers are dedicated, except that, if `fraction > 0`, the last of them (the
/// collector if `workers == 0`) is the fractional marker (Go's fractional worker: `fraction`
/// of one CPU); the workers after them are idle markers (Go's idle workers: they mark only
/// while the machine has an idle CPU).
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub fraction: f64,
    pub workers: usize,
}

impl Plan {
    /// Every one of `workers` workers dedicated: no fractional or idle marker.
    pub fn dedicated(workers: usize) -> Plan {
        Plan {
            fraction: 0.0,
            workers,
        }
    }
}
/// Set while a thread waits for the cycle (at the hard limit): the fractional marker then
/// marks without pauses.
static HURRY: AtomicBool = AtomicBool::new(false);

/// A fractional marker's shortest pause.
const MIN_PAUSE_NS: u64 = 1_000_000;

/// Starts a cycle's accounting (the collector, before the first pause): `live` is the heap
/// when the mark starts, the expected scan work before a first mark.
pub fn begin_mark(live: usize) {
    let last = super::pacer::expected_work();
    EXPECTED.store(if last == 0 { live } else { last }, Ordering::Relaxed);
    SCAN_WORK.store(0, Ordering::Relaxed);
    BG_CREDIT.store(0, Ordering::Relaxed);
    MARK_GEN.fetch_add(1, Ordering::Relaxed);
}

/// Ends a completed mark's accounting: its scan work is the next one's estimate.
pub fn end_mark() {
    HURRY.store(false, Ordering::Relaxed);
    let work = SCAN_WORK.load(Ordering::Relaxed).max(1);
    super::pacer::set_expected_work(work);
}

/// Bytes scanned so far by this cycle's mark.
pub fn scan_work() -> usize {
    SCAN_WORK.load(Ordering::Relaxed)
}

/// Sets or clears the hurry flag (see `HURRY`): set by a thread that waits for the cycle,
/// cleared when a mark ends or is given up.
pub fn hurry(on: bool) {
    HURRY.store(on, Ordering::Relaxed);
}

/// Whether a thread waits for the cycle.
pub fn hurried() -> bool {
    HURRY.load(Ordering::Relaxed)
}

/// CPU time of background marking (dedicated and fractional markers), of assists and of
/// idle markers so far (ns).
pub fn cpu_totals() -> (u64, u64, u64) {
    (
        BG_CPU_NS.load(Ordering::Relaxed),
        ASSIST_CPU_NS.load(Ordering::Relaxed),
        IDLE_CPU_NS.load(Ordering::Relaxed),
    )
}

/// Adds background marking time done outside a drain (the collector's concurrent root scans).
pub fn add_background_cpu(ns: u64) {
    BG_CPU_NS.fetch_add(ns, Ordering::Relaxed);
}

/// Adds the bytes scanned into `grey` to the cycle's scan work, and during a background
/// drain to the credit assists may take.
fn flush_work(grey: &mut GreyStack) {
    let n = core::mem::take(&mut grey.scanned);
    if n == 0 {
        return;
    }
    SCAN_WORK.fetch_add(n, Ordering::Relaxed);
    if BG_DRAIN.load(Ordering::Relaxed) {
        BG_CREDIT.fetch_add(n, Ordering::Relaxed);
    }
}

/// When a fractional or idle marker marks.
///
/// Fractional (Go's fractional worker): while its thread's CPU time since it joined the drain
/// is at most `fraction` of the wall time since then; otherwise it pauses until it is back at
/// its share (`pacer::fractional_pause`). CPU time rather than wall time: on a loaded machine
/// a marker that waits for a CPU has not marked.
///
/// Idle (Go's idle worker, `fraction == 0`): while fewer tasks than CPUs besides itself are
/// runnable on the machine (`os::runnable_tasks`, read at most every millisecond); otherwise
/// it pauses for a millisecond and looks again.
struct Duty {
    fraction: f64,
    start: u64,
    cpu0: u64,
    /// When to look again (a system call, or three: at most every 100 us, or 1 ms for idle).
    next_check: u64,
}

impl Duty {
    fn new(fraction: f64) -> Duty {
        Duty {
            fraction,
            start: os::now_ns(),
            cpu0: os::thread_cpu_ns(),
            next_check: 0,
        }
    }

    fn idle(&self) -> bool {
        self.fraction == 0.0
    }

    /// How long the marker should pause now (0: go on).
    fn pause_owed(&mut self) -> u64 {
        if HURRY.load(Ordering::Relaxed) {
            return 0;
        }
        let now = os::now_ns();
        if now < self.next_check {
            return 0;
        }
        if self.idle() {
            let busy = os::runnable_tasks().is_none_or(|r| r > os::cpus());
            self.next_check = now + IDLE_CHECK_NS;
            return if busy { IDLE_CHECK_NS } else { 0 };
        }
        let run = os::thread_cpu_ns().saturating_sub(self.cpu0);
        let p = super::pacer::fractional_pause(run, now - self.start, self.fraction, MIN_PAUSE_NS);
        if p == 0 {
            self.next_check = now + 100_000;
        }
        p
    }

    /// Pauses (the marker holds no grey object and is outside `ACTIVE`), in slices of at most
    /// 250 us, ending early when a thread hurries the mark or the drain has ended.
    fn pause(&mut self) {
        let owed = if self.idle() {
            IDLE_CHECK_NS
        } else {
            self.pause_owed()
        };
        let until = os::now_ns() + owed;
        loop {
            let t = os::now_ns();
            if t >= until
                || HURRY.load(Ordering::Relaxed)
                || DRAIN_END.load(Ordering::Acquire)
                || (ACTIVE.load(Ordering::Acquire) == 0 && POOL_LEN.load(Ordering::Acquire) == 0)
            {
                break;
            }
            os::sleep_ns((until - t).min(250_000));
        }
        if self.idle() {
            // Look again at the next check.
            self.next_check = 0;
        }
    }
}

/// How often an idle marker looks whether the machine is busy.
const IDLE_CHECK_NS: u64 = 1_000_000;

/// Whether a concurrent mark runs: stores into GC objects and new objects must be shaded.
#[inline(always)]
pub fn marking() -> bool {
    MARKING.load(Ordering::Relaxed)
}

/// Starts or ends a concurrent mark: with the world stopped (the resume publishes it), or,
/// for a mark given up, under `GC_HEAP` and the pool's lock with the world running.
pub fn set_marking(on: bool) {
    MARKING.store(on, Ordering::Relaxed);
}

/// Marks the objects the words `ws` point into and queues the scannable ones in the pool,
/// for the markers: a mutator's full barrier buffer. Once the mark has ended (checked under
/// `POOL`, where mark termination clears `MARKING`) the words are dropped: a mark bit set after
/// that would survive the sweep and hide an unscanned object from the next cycle.
pub fn mark_into_pool(ws: &[usize]) {
    let mut pool = POOL.lock();
    if !marking() {
        return;
    }
    for &e in ws {
        mark_word(e, &mut pool);
    }
    publish_pool(&mut pool);
}

/// After pushes to the pool outside a drain (a flush, an assist), under its lock: passes an
/// overflow on to mark termination and publishes the pool's length to the markers.
fn publish_pool(pool: &mut GreyStack) {
    if pool.overflowed {
        CONC_OVERFLOW.store(true, Ordering::Relaxed);
        pool.overflowed = false;
    }
    POOL_LEN.store(pool.len(), Ordering::Release);
}

/// Empties the pool (a mark given up), under its lock: its grey ranges and an overflow belong
/// to that mark.
pub fn empty_pool(pool: &mut GreyStack) {
    pool.reset();
    POOL_LEN.store(0, Ordering::Release);
    CONC_OVERFLOW.store(false, Ordering::Relaxed);
}

/// The most of one object an assist scans before it puts the rest back in the pool.
const ASSIST_PIECE: usize = 128 << 10;

/// Bytes scanned by mark assists, over all cycles.
static ASSISTED: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// A mark assist (Go's): a thread that owes scan work for what it allocated during a
/// concurrent mark (`assist_for`) scans up to `budget` bytes of grey objects from the
/// markers' pool. All of it happens under
/// the pool's lock, with `MARKING` checked under it (as in [`mark_into_pool`]): no mark bit is
/// set once the mark has ended, and mark termination, which takes the lock before it stops
/// the world, never finds a thread stopped halfway through an assist. Returns the bytes
/// scanned (0 if the pool was empty).
pub fn assist(budget: usize) -> usize {
    if POOL_LEN.load(Ordering::Acquire) == 0 {
        return 0;
    }
    let mut pool = POOL.lock();
    if !marking() {
        return 0;
    }
    let mut done = 0;
    while done < budget {
        let Some((start, mut len)) = pool.pop() else {
            break;
        };
        if len > ASSIST_PIECE {
            // A large object goes a piece at a time (Go's oblets): the rest back to the pool,
            // so that no assist holds the lock for a whole multi-MiB scan.
            pool.push(start.wrapping_add(ASSIST_PIECE), len - ASSIST_PIECE);
            len = ASSIST_PIECE;
        }
        // SAFETY: a grey object (or a piece of one) is part of an allocated GC object (no GC
        // span is released while a mark runs): readable, and read through its own pointer.
        unsafe { scan_range(start, len, &mut pool) };
        done += len;
    }
    publish_pool(&mut pool);
    // Scan work, but no background credit.
    SCAN_WORK.fetch_add(core::mem::take(&mut pool.scanned), Ordering::Relaxed);
    ASSISTED.fetch_add(done as u64, Ordering::Relaxed);
    done
}

std::thread_local! {
    /// This thread's assist balance: the mark it belongs to (`MARK_GEN`) and the bytes of scan
    /// work it owes (positive) or did ahead (negative).
    static DEBT: core::cell::Cell<(u32, isize)> = const { core::cell::Cell::new((0, 0)) };
}

/// The least scan work an assist does (smaller debts wait for the next refill), and the most
/// one call does (the rest is owed at the next refill): an assist holds the pool's lock.
const ASSIST_MIN: usize = 16 << 10;
const ASSIST_MAX: usize = 256 << 10;

/// Go's mark assist, for `alloc` bytes a thread allocated during a concurrent mark, with the
/// GC heap at `live`, its goal `goal` and hard limit `hard`: the thread owes the scan work
/// `pacer::assist_work` gives, pays what it can from the background markers' credit and
/// scans the rest itself (`assist`). Its balance carries over to its next refill in the same
/// mark. Without a grey object in the pool the debt waits (at most `ASSIST_MAX`).
pub fn assist_for(alloc: usize, live: usize, goal: usize, hard: usize) {
    let gen = MARK_GEN.load(Ordering::Relaxed);
    let owed = super::pacer::assist_work(
        alloc,
        EXPECTED.load(Ordering::Relaxed),
        SCAN_WORK.load(Ordering::Relaxed),
        live,
        goal,
        hard,
    );
    let (g, mut debt) = DEBT.try_with(|d| d.get()).unwrap_or((gen, 0));
    if g != gen {
        debt = 0;
    }
    debt = debt.saturating_add(owed.min(isize::MAX as usize) as isize);
    if debt > 0 {
        debt -= steal_credit(debt as usize) as isize;
    }
    if debt >= ASSIST_MIN as isize {
        let t0 = os::thread_cpu_ns();
        let done = assist((debt as usize).min(ASSIST_MAX));
        ASSIST_CPU_NS.fetch_add(os::thread_cpu_ns().saturating_sub(t0), Ordering::Relaxed);
        debt = (debt - done as isize).min(ASSIST_MAX as isize);
    }
    let _ = DEBT.try_with(|d| d.set((gen, debt)));
}

/// Takes up to `want` bytes of the background markers' credit; returns what it took.
fn steal_credit(want: usize) -> usize {
    let mut have = BG_CREDIT.load(Ordering::Relaxed);
    loop {
        let take = have.min(want);
        if take == 0 {
            return 0;
        }
        match BG_CREDIT.compare_exchange_weak(
            have,
            have - take,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => return take,
            Err(h) => have = h,
        }
    }
}

/// Bytes scanned by mark assists so far.
pub fn assist_bytes() -> u64 {
    ASSISTED.load(Ordering::Relaxed)
}

/// Entries waiting in the pool (mutators' flushes that came after the markers went idle).
pub fn pool_len() -> usize {
    POOL_LEN.load(Ordering::Acquire)
}

/// The pool's lock, taken by the collector before it stops the world for mark termination.
pub fn lock_pool() -> crate::sync::MutexGuard<'static, GreyStack> {
    POOL.lock()
}

/// The pool's lock, for the fork handlers.
pub fn pool_lock_ref() -> &'static dyn crate::sync::RawLock {
    &POOL
}

/// Whether the pool overflowed since the last call (during the concurrent mark).
pub fn take_conc_overflow() -> bool {
    CONC_OVERFLOW.swap(false, Ordering::Relaxed)
}

/// Moves half of `grey` to the pool.
fn give(grey: &mut GreyStack) {
    give_n(grey, grey.len() / 2);
}

/// Moves `n` entries of `grey` to the pool.
fn give_n(grey: &mut GreyStack, n: usize) {
    let mut pool = POOL.lock();
    for _ in 0..n {
        match grey.pop() {
            Some((s, n)) => pool.push(s, n),
            None => break,
        }
    }
    if pool.overflowed {
        OVERFLOWED.store(true, Ordering::Relaxed);
        pool.overflowed = false;
    }
    POOL_LEN.store(pool.len(), Ordering::Release);
}

/// Moves up to `TAKE` entries of the pool to `grey`; false if the pool was empty.
fn take(grey: &mut GreyStack) -> bool {
    let mut pool = POOL.lock();
    let mut got = false;
    for _ in 0..TAKE {
        match pool.pop() {
            Some((s, n)) => {
                grey.push(s, n);
                got = true;
            }
            None => break,
        }
    }
    POOL_LEN.store(pool.len(), Ordering::Release);
    got
}

/// One marker's part of a parallel mark: drains its own stack, helps from the pool, and
/// returns once no marker has anything left. In a background drain, participant `me` (0: the
/// collector, `k`: worker `k - 1`) of `0..=n` runs as the [`Plan`] says: a fractional or idle
/// marker pauses whenever its `Duty` says so, its grey objects left in the pool for the
/// others and for assists, and sleeps rather than spins while it waits for the drain's end.
fn drain_parallel(grey: &mut GreyStack, me: usize, n: usize) {
    let background = BG_DRAIN.load(Ordering::Relaxed);
    let cpu0 = if background { os::thread_cpu_ns() } else { 0 };
    let frac = FRACTION_PPM.load(Ordering::Relaxed);
    let planned = PLAN_WORKERS.load(Ordering::Relaxed).min(n);
    let is_idle = background && me > planned;
    let mut duty = if is_idle {
        Some(Duty::new(0.0))
    } else if background && me == planned && frac != 0 {
        Some(Duty::new(f64::from(frac) / 1e6))
    } else {
        None
    };
    loop {
        if drain_sharing(grey, true, duty.as_mut()) {
            give_n(grey, grey.len());
            ACTIVE.fetch_sub(1, Ordering::AcqRel);
            if let Some(d) = duty.as_mut() {
                d.pause();
            }
        } else {
            if take(grey) {
                continue;
            }
            ACTIVE.fetch_sub(1, Ordering::AcqRel);
        }
        loop {
            let ended = DRAIN_END.load(Ordering::Acquire);
            if !ended && POOL_LEN.load(Ordering::Acquire) > 0 {
                ACTIVE.fetch_add(1, Ordering::AcqRel);
                if take(grey) {
                    break;
                }
                ACTIVE.fetch_sub(1, Ordering::AcqRel);
            }
            if ended
                || (ACTIVE.load(Ordering::Acquire) == 0 && POOL_LEN.load(Ordering::Acquire) == 0)
            {
                DRAIN_END.store(true, Ordering::Release);
                if grey.overflowed {
                    OVERFLOWED.store(true, Ordering::Relaxed);
                    grey.overflowed = false;
                }
                if background {
                    let cpu = os::thread_cpu_ns().saturating_sub(cpu0);
                    if is_idle {
                        IDLE_CPU_NS.fetch_add(cpu, Ordering::Relaxed);
                    } else {
                        add_background_cpu(cpu);
                    }
                }
                return;
            }
            if duty.is_some() {
                // A fractional or idle marker waits without taking a CPU.
                os::sleep_ns(50_000);
                continue;
            }
            core::hint::spin_loop();
            // SAFETY: sched_yield has no memory effects.
            unsafe { libc::sched_yield() };
        }
    }
}

/// Starts mark workers up to `want` (called before the world stops: it creates threads).
pub fn ensure_workers(want: usize) {
    let want = want.min(MAX_WORKERS);
    while WORKERS.load(Ordering::Acquire) < want {
        let idx = WORKERS.load(Ordering::Relaxed);
        // The worker starts from the current generation: the next mark is its first.
        let arg = (WORK_GEN.load(Ordering::Acquire) as usize) << 8 | idx;
        let ok = crate::os::spawn_detached(worker, arg as *mut libc::c_void, 128 * 1024);
        if !ok {
            break;
        }
        // Wait until it is exempt from stops: a worker stopped by the next cycle would never
        // finish that cycle's mark.
        while super::stw::EXEMPT[1 + idx].load(Ordering::Acquire) == 0 {
            // SAFETY: sched_yield has no memory effects.
            unsafe { libc::sched_yield() };
        }
        WORKERS.store(idx + 1, Ordering::Release);
    }
}

/// In a `fork` child: no worker exists there; the next cycle starts new ones.
pub fn reset_workers_after_fork_child() {
    WORKERS.store(0, Ordering::Relaxed);
    for e in &super::stw::EXEMPT[1..] {
        e.store(0, Ordering::Relaxed);
    }
}

extern "C" fn worker(arg: *mut libc::c_void) -> *mut libc::c_void {
    let (idx, first_gen) = (arg as usize & 0xff, (arg as usize >> 8) as u32);
    // The tid is published before signals are blocked (see `stw::is_exempt`).
    super::stw::EXEMPT[1 + idx].store(crate::os::gettid(), Ordering::Release);
    crate::os::become_helper(c"gomalloc-mark");
    let mut grey = GreyStack::new();
    let mut seen = first_gen;
    loop {
        let now = WORK_GEN.load(Ordering::Acquire);
        if now == seen {
            crate::sync::futex_wait(&WORK_GEN, seen);
            continue;
        }
        seen = now;
        let n = (now & ((1 << PARTICIPANT_BITS) - 1)) as usize;
        if idx < n {
            drain_parallel(&mut grey, idx + 1, n);
            DONE.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Drains `grey` (the roots) with up to `max` of the mark workers; returns whether some object
/// could not be queued (the caller must then `rescan_marked`). `background`: a concurrent
/// drain, whose CPU time counts as background marking and whose scan work is credit for
/// assists, its markers run as the plan says.
pub fn drain_with_workers(grey: &mut GreyStack, max: usize, background: Option<Plan>) -> bool {
    let n = WORKERS.load(Ordering::Acquire).min(max);
    BG_DRAIN.store(background.is_some(), Ordering::Relaxed);
    let plan = background.unwrap_or(Plan::dedicated(n));
    let frac = plan.fraction.clamp(0.0, 1.0);
    FRACTION_PPM.store(
        if frac < 1.0 { (frac * 1e6) as u32 } else { 0 },
        Ordering::Relaxed,
    );
    PLAN_WORKERS.store(plan.workers, Ordering::Relaxed);
    if n == 0 && background.is_none() {
        // Alone in a stopped world: the pool may still hold what mutators flushed during a
        // concurrent mark. (A background drain without workers goes through `drain_with`:
        // the collector as a participant, so that it pauses if it is fractional.)
        loop {
            drain(grey);
            if !take(grey) {
                break;
            }
        }
        flush_work(grey);
        return core::mem::take(&mut grey.overflowed) | OVERFLOWED.swap(false, Ordering::Relaxed);
    }
    let r = drain_with(grey, n);
    BG_DRAIN.store(false, Ordering::Relaxed);
    r
}

/// `drain_with_workers` with `n` workers (0: the collector alone, through the pool).
fn drain_with(grey: &mut GreyStack, n: usize) -> bool {
    OVERFLOWED.store(false, Ordering::Relaxed);
    DONE.store(0, Ordering::Relaxed);
    DRAIN_END.store(false, Ordering::Relaxed);
    ACTIVE.store(n + 1, Ordering::Release);
    // Start with half the roots in the pool, so the workers have work from the first moment.
    if grey.len() > 1 {
        give(grey);
    }
    if n > 0 {
        // Only the collector writes it (under `CYCLE`); `n <= MAX_WORKERS` fits its bits.
        let gen = (WORK_GEN.load(Ordering::Relaxed) >> PARTICIPANT_BITS).wrapping_add(1);
        WORK_GEN.store(gen << PARTICIPANT_BITS | n as u32, Ordering::Release);
        crate::sync::futex_wake_all(&WORK_GEN);
    }
    drain_parallel(grey, 0, n);
    // The workers see the end within a pause's slice: yield for a while, then sleep.
    let mut turns = 0u32;
    while DONE.load(Ordering::Acquire) < n {
        turns += 1;
        if turns < 64 {
            core::hint::spin_loop();
            // SAFETY: sched_yield has no memory effects.
            unsafe { libc::sched_yield() };
        } else {
            os::sleep_ns(20_000);
        }
    }
    OVERFLOWED.load(Ordering::Relaxed) | core::mem::take(&mut grey.overflowed)
}

/// Hints the CPU to load the line at `p` (no effect on other architectures).
#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and has no architectural effect.
    unsafe {
        core::arch::x86_64::_mm_prefetch(p.cast::<i8>(), core::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// After an overflow: scans every marked scan object again until no new object is marked.
pub fn rescan_marked(heap: &super::heap::GcHeap, grey: &mut GreyStack) {
    while grey.overflowed {
        grey.overflowed = false;
        for g in heap.spans() {
            // SAFETY: live records under the lock our caller holds.
            unsafe {
                if (*g).noscan {
                    continue;
                }
                for i in 0..(*g).nelems {
                    if (*g).is_marked(i) {
                        let o = (*g).object(i);
                        scan_range(o, (*g).size, grey);
                        drain(grey);
                    }
                }
            }
        }
    }
}
