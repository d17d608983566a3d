//! Stopping the world: every other thread of the process is suspended in a signal handler
//! while the collector marks, the way conservative collectors do it on Linux (Boehm's
//! `pthread_stop_world.c`), so a thread blocked in a system call or spinning in a loop that
//! never calls into the collector is stopped all the same.
//!
//! How: the collector lists the process's threads (`/proc/self/task`), sends each one
//! [`SUSPEND_SIGNAL`] (`SIGPWR`, as Boehm) with `tgkill`, and waits until each has
//! acknowledged. The handler spills the callee-saved registers into its own frame, records
//! its stack pointer and the top of its stack in the thread's slot, acknowledges, and waits on
//! a futex until the collector resumes the world. Everything between the recorded stack
//! pointer and the top of the stack is then readable and frozen: the handler's frame (with the
//! registers), the kernel's signal frame (with every register of the interrupted code), the
//! interrupted code's red zone and all its callers' frames. The list is read again after the
//! first threads have stopped, until no new thread appears: a thread created meanwhile by a
//! thread not yet stopped is found and stopped too. The threads the last stop stopped are
//! signalled (and waited for) before the first listing (`World::hint`): a listing taken once
//! they are stopped that finds no new thread ends the stop, so a program whose threads stay
//! the same is listed once per stop, not twice. Before that listing the threads are counted
//! (`same_threads`: the link count of `/proc/self/task`, which procfs sets to the number of
//! threads plus 2, one `fstat`): a count of just the collector, the exempt helpers and the
//! stopped threads ends the stop without a listing (on the 2-CPU VM a listing took about 25
//! us of each stop).
//!
//! Safepoints: a thread that allocates GC objects can stop without the signal. While a stop
//! is in progress (`Handshake::poll`), a GC allocation ([`poll`], one relaxed load otherwise),
//! and an allocating thread that finds `GC_HEAP` taken for a pause ([`lock_at_safepoint`],
//! which then waits polling rather than asleep on the lock), blocks the signal and runs the
//! handler's steps itself: spill, record, acknowledge, wait for the resume. The stop cannot
//! tell it from a handler that ran before its signal was sent. A thread that stopped this way
//! is hinted as such to the next stop, which sends it no signal for [`POLL_GRACE_NS`] while it
//! waits for the thread to stop at a safepoint again, and signals it if it has not: the
//! delivery of a signal to a running thread on the 2-CPU VM took about 20 us from `tgkill` to
//! the acknowledgement, besides the `tgkill` itself (about 15 us). A thread blocked elsewhere
//! (in a system call, in a loop without GC allocations) is stopped by its signal as before.
//!
//! Parked threads: a thread inside `gc::blocking` (about to block in the kernel: `join`, a
//! channel, a sleep) has recorded its stack and registers as at a safepoint and marked its
//! park record; a stop holds such a thread with a compare-exchange on the record, before any
//! signal, and scans the recorded stack. The thread does not notice unless it leaves the
//! scope while held: it then waits for the resume. On the 2-CPU VM the signal to a thread
//! asleep in the kernel woke it on the collector's CPU and back, 20-30 us of each stop, and
//! late wake-ups were the 2-5 ms outliers of the maximum pause (GCBench and binary-trees with
//! two threads and `main` in `join`). Records live in a table mapped once (`MAX_THREADS`),
//! taken on a thread's first `blocking` and freed at its exit.
//!
//! Threads not stopped: the collector itself, and gomalloc's own helper threads (the scavenger,
//! the collector's timer thread and the mark workers), which block every signal and never hold
//! a `Gc`. A thread that exits before it handles the signal (gone, or a zombie such as a main
//! thread ended by `pthread_exit`) is dropped from the stop. A thread that keeps the signal
//! blocked for more than [`BLOCKED_GRACE_MS`] (`SigBlk` in its status file), or that answers
//! from an alternate signal stack or from a stack whose top it cannot tell, makes the whole
//! stop give up: its stack cannot be scanned, so the cycle frees nothing (`num_skipped`), and
//! stderr is told once.
//!
//! Top of a stack: the main thread's is glibc's `__libc_stack_end`; any other thread's is its
//! thread pointer (`pthread_self()`): glibc places the thread descriptor, and the static TLS
//! below it on x86_64, at the top of the thread's stack block, so the range also covers the
//! thread's `thread_local!` values there.
//!
//! Waiting for the resume: a stopped thread (in its handler or at a safepoint) first polls for
//! it, yielding its CPU between looks, for up to [`SPIN_NS`] and with at most two polling
//! threads per CPU, then sleeps on the futex. The collector's resume is a store, then a
//! wake-up call for the sleepers: a thread woken on the collector's CPU preempted it there
//! (about 27 us of each pause on the 2-CPU VM with three threads), a polling one does not.
//!
//! What the handler may do: only async-signal-safe work (atomics, `gettid`, `futex`,
//! `sched_yield`, `clock_gettime`). It blocks
//! every other asynchronous signal while it runs, so no other handler can move pointers
//! around on a stopped thread's stack below the recorded stack pointer.
//!
//! The protocol on shared memory (generations, slots, acknowledgement, resume) is
//! [`handshake`], which this module drives through its [`World`] (the system calls): it is
//! kept apart so that loom checks it (`loom-tests/tests/stw.rs`).
//!
//! Owns: the slot table and the park table (each mapped from the OS once, `MAX_THREADS`
//! entries) and the process's [`Handshake`].
//!
//! Locks: none. The caller holds `GC_HEAP` and every lock that the stopped-world work needs
//! (region table, huge-block table) *before* stopping: a stopped thread may hold any lock, so
//! the collector takes no lock while the world is stopped, and allocates nothing (a stopped
//! thread may hold libc's malloc lock too).

pub mod handshake;

use crate::diag;
use core::cell::Cell;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use handshake::{Handshake, Park, Slot, StopError, World};

/// The signal that suspends a thread (Boehm's choice on Linux).
pub const SUSPEND_SIGNAL: libc::c_int = libc::SIGPWR;
/// Threads that can be stopped at once (the slot table's size).
const MAX_THREADS: usize = 16384;
/// How long a stop waits for a thread before it checks whether the thread exited or blocks
/// the signal.
const SLOW_NS: u64 = 1_000_000;
/// Tids recently found to be zombies, checked at once by later stops (written by the
/// collector only; a tid reused by a live thread is only checked earlier, and answers).
static ZOMBIES: [AtomicI32; 8] = [const { AtomicI32::new(0) }; 8];
static NEXT_ZOMBIE: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);
/// How long a thread may keep the signal blocked before it is left running.
pub const BLOCKED_GRACE_MS: u64 = 50;

/// The slot table (an anonymous mapping, zeroed: every slot empty).
static SLOTS: AtomicPtr<Slot> = AtomicPtr::new(ptr::null_mut());
/// The park records of threads that used [`blocking`] (an anonymous mapping, zeroed: every
/// record free), `MAX_THREADS` of them; records below `PARKS_USED` may be in use.
static PARKS: AtomicPtr<Park> = AtomicPtr::new(ptr::null_mut());
static PARKS_USED: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);
/// The stop generation, slots in use and resumed generation.
static HANDSHAKE: Handshake = Handshake::new();
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// The last stop's parts in ns: signalling the hinted threads, waiting for them, listing
/// the threads (written by the collector only; see [`last_stop_parts`]).
static STOP_PARTS: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];

/// Threads the last stop held parked (`gc::blocking`), without a signal.
static LAST_HELD: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// Threads the last stop held parked (`gc::blocking`), without a signal.
pub fn last_held() -> usize {
    LAST_HELD.load(Ordering::Relaxed)
}

/// Where the last stop's time went, in ns: signalling the threads the stop before stopped,
/// waiting for them to acknowledge, and listing the process's threads (`/proc/self/task`).
pub fn last_stop_parts() -> [u64; 3] {
    [0, 1, 2].map(|i| STOP_PARTS[i].load(Ordering::Relaxed))
}

/// The threads the last stop stopped (0-terminated, at most `HINTS`): signalled first by the
/// next stop (`World::hint`), so that it lists the process's threads once, not twice, when
/// they are the same. Written by the collector only.
static LAST_STOPPED: [AtomicI32; HINTS] = [const { AtomicI32::new(0) }; HINTS];
const HINTS: usize = 256;
/// In a `LAST_STOPPED` entry: the thread stopped at a safepoint (tids stay below 2^22).
const COOP: i32 = 1 << 30;
/// How long a stop waits for the threads that stopped at a safepoint last time to stop at
/// one again before it signals them.
const POLL_GRACE_NS: u64 = 10_000;
static WARNED_BLOCKED: AtomicBool = AtomicBool::new(false);
/// Tids of gomalloc's own helper threads that are never stopped (0: none): the timer thread,
/// then the mark workers.
pub static EXEMPT: [AtomicI32; 1 + super::mark::MAX_WORKERS] =
    [const { AtomicI32::new(0) }; 1 + super::mark::MAX_WORKERS];

use crate::os::gettid;

fn tgkill(pid: i32, tid: i32, sig: libc::c_int) -> bool {
    // SAFETY: sends a signal (or, with 0, only checks the thread exists); no memory effects.
    unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, sig) == 0 }
}

extern "C" {
    /// glibc: the stack pointer at process entry, the top of the used part of the main
    /// thread's stack (what `pthread_getattr_np` itself starts from).
    static __libc_stack_end: *mut libc::c_void;
}

/// The slot table; only once [`install`] has mapped it.
fn slots() -> &'static [Slot] {
    let table = SLOTS.load(Ordering::Acquire);
    debug_assert!(!table.is_null());
    // SAFETY: the table holds `MAX_THREADS` slots, is mapped once (before the handler is
    // installed and before any stop) and never unmapped, and zeroed memory is a valid `Slot`
    // of atomics, shared only through shared references.
    unsafe { core::slice::from_raw_parts(table, MAX_THREADS) }
}

/// The park records in use so far (empty before the first [`blocking`]).
fn parks() -> &'static [Park] {
    let table = PARKS.load(Ordering::Acquire);
    if table.is_null() {
        return &[];
    }
    // SAFETY: the table holds `MAX_THREADS` records, is mapped once and never unmapped, and
    // zeroed memory is a valid `Park` of atomics, shared only through shared references.
    unsafe { core::slice::from_raw_parts(table, PARKS_USED.load(Ordering::Acquire)) }
}

/// Maps the slot and park tables and installs the handler, once; false if the OS refused.
fn install() -> bool {
    if INSTALLED.load(Ordering::Acquire) {
        return true;
    }
    // SAFETY: fresh anonymous mappings, owned by this module for the life of the process.
    let (table, parks) = unsafe {
        (
            crate::os::map(MAX_THREADS * core::mem::size_of::<Slot>()),
            crate::os::map(MAX_THREADS * core::mem::size_of::<Park>()),
        )
    };
    if table.is_null() || parks.is_null() {
        return false;
    }
    SLOTS.store(table.cast::<Slot>(), Ordering::Release);
    PARKS.store(parks.cast::<Park>(), Ordering::Release);
    // Read once here: the handler's polling (`Spinner`) reads the cached count.
    crate::os::cpus();
    // SAFETY: installs an async-signal-safe handler for our signal; `sa` is fully set up.
    let ok = unsafe {
        let mut sa: libc::sigaction = core::mem::zeroed();
        let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            on_suspend;
        sa.sa_sigaction = handler as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigfillset(&mut sa.sa_mask);
        // Synchronous faults must still be delivered (blocking them would kill the process).
        for s in [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE] {
            libc::sigdelset(&mut sa.sa_mask, s);
        }
        libc::sigaction(SUSPEND_SIGNAL, &sa, ptr::null_mut()) == 0
    };
    INSTALLED.store(ok, Ordering::Release);
    ok
}

/// The suspend handler: record where this thread's stack is, acknowledge, wait for resume.
extern "C" fn on_suspend(_sig: libc::c_int, _info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: errno is this thread's; restored before returning to the interrupted code.
    let errno = unsafe { *libc::__errno_location() };
    stop_here(false);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// The steps of a stop on the thread stopped (from its handler, or at a safepoint: `coop`):
/// spill the callee-saved registers into this frame, record the stack from here up and the
/// thread pointer, acknowledge, wait for the resume. Async-signal-safe.
#[inline(never)]
fn stop_here(coop: bool) {
    let tid = gettid();
    let mut regs = [0usize; 12];
    super::roots::spill_registers(&mut regs);
    let sp = regs.as_ptr().addr();
    // SAFETY: pthread_self only reads the thread pointer.
    let tp = unsafe { libc::pthread_self() } as usize;
    let top = stack_top(sp, tp);
    let mut spinner = Spinner::new();
    HANDSHAKE.on_signal(slots(), tid, sp, top, tp, coop, &mut |turn| {
        spinner.again(turn)
    });
    spinner.stop();
    // The registers stay in this frame, above `sp`, until the world has resumed.
    core::hint::black_box(&regs);
}

/// How long a stopped thread polls for the resume (yielding its CPU between looks) before it
/// sleeps on the futex. Most pauses are shorter, and a thread that polls is resumed by the
/// collector's store alone: a sleeping one needs the wake-up call, which on the 2-CPU VM cost
/// 27 us a pause with three threads (GCBench, 2 workers and `main` in `join`), as the woken
/// thread preempted the collector. Polling cut the median pause per cycle there from 308-322
/// to 267-298 us.
const SPIN_NS: u64 = 500_000;

/// Stopped threads polling now: at most two per CPU (enough for a program with as many
/// threads as CPUs and a main thread), the others sleep at once (polling threads yield, but
/// each still takes a slice of a CPU the collector or its mark workers could use).
static SPINNERS: AtomicU32 = AtomicU32::new(0);

/// One stopped thread's polling (see `SPIN_NS`). Async-signal-safe: atomics,
/// `clock_gettime`, `sched_yield`.
struct Spinner {
    since: u64,
    on: bool,
}

impl Spinner {
    fn new() -> Spinner {
        Spinner {
            since: 0,
            on: false,
        }
    }

    /// `Handshake::on_signal`'s `spin`: whether to look at the resume again.
    fn again(&mut self, turn: u32) -> bool {
        if turn == 1 {
            if SPINNERS.fetch_add(1, Ordering::Relaxed) >= 2 * crate::os::cpus() as u32 {
                SPINNERS.fetch_sub(1, Ordering::Relaxed);
                return false;
            }
            self.on = true;
            self.since = crate::os::now_ns();
        } else if crate::os::now_ns().saturating_sub(self.since) > SPIN_NS {
            self.stop();
            return false;
        }
        // SAFETY: sched_yield has no memory effects.
        unsafe { libc::sched_yield() };
        true
    }

    /// Leaves the polling threads' count.
    fn stop(&mut self) {
        if core::mem::take(&mut self.on) {
            SPINNERS.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// This thread's park record: its index in `PARKS` (`usize::MAX`: none yet), given back at
/// thread exit.
struct ParkLocal(Cell<usize>);

impl Drop for ParkLocal {
    fn drop(&mut self) {
        let i = self.0.get();
        if i != usize::MAX {
            let table = PARKS.load(Ordering::Acquire);
            // SAFETY: our record of the mapped table (`i < MAX_THREADS`); we are not parked.
            unsafe { (*table.add(i)).tid.store(0, Ordering::Release) };
        }
    }
}

std::thread_local! {
    static MY_PARK: ParkLocal = const { ParkLocal(Cell::new(usize::MAX)) };
}

/// This thread's index in `PARKS`, `usize::MAX` if it has no record (or during thread exit).
fn park_index() -> usize {
    MY_PARK.try_with(|l| l.0.get()).unwrap_or(usize::MAX)
}

/// This thread's park record, taken on first use; None if the tables cannot be mapped, all
/// records are taken, or thread-local storage is gone (thread exit).
fn my_park() -> Option<&'static Park> {
    if !install() {
        return None;
    }
    let table = PARKS.load(Ordering::Acquire);
    let i = MY_PARK
        .try_with(|l| {
            if l.0.get() == usize::MAX {
                let me = gettid();
                for i in 0..MAX_THREADS {
                    // SAFETY: a record of the mapped table.
                    let p = unsafe { &*table.add(i) };
                    if p.tid.load(Ordering::Relaxed) == 0
                        && p.tid
                            .compare_exchange(0, me, Ordering::AcqRel, Ordering::Relaxed)
                            .is_ok()
                    {
                        PARKS_USED.fetch_max(i + 1, Ordering::AcqRel);
                        l.0.set(i);
                        break;
                    }
                }
            }
            l.0.get()
        })
        .ok()
        .filter(|&i| i != usize::MAX)?;
    // SAFETY: our record of the mapped table.
    Some(unsafe { &*table.add(i) })
}

/// `gc::blocking`: runs `f` with this thread parked. Spills the callee-saved registers into
/// this frame and parks with the stack from here up: stops hold the thread without a signal
/// until `f` returns, and leaving waits for the resume of a stop that holds it.
#[inline(never)]
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    let Some(p) = my_park() else {
        return f();
    };
    let mut regs = [0usize; 12];
    super::roots::spill_registers(&mut regs);
    let sp = regs.as_ptr().addr();
    // SAFETY: pthread_self only reads the thread pointer.
    let tp = unsafe { libc::pthread_self() } as usize;
    let top = stack_top(sp, tp);
    if top == 0 {
        // An alternate signal stack, or a stack whose top is unknown: stopped by signal.
        return f();
    }
    let r = parked(p, sp, top, tp, f);
    // The registers stay in this frame, above `sp`, until the thread has left its park.
    core::hint::black_box(&regs);
    r
}

/// The parked part of [`blocking`], in frames below the recorded stack pointer: `f` runs,
/// and its result is written into the caller's frame, only outside the recorded range or
/// after the thread has left its park.
#[inline(never)]
fn parked<R>(p: &Park, sp: usize, top: usize, tp: usize, f: impl FnOnce() -> R) -> R {
    HANDSHAKE.park(p, sp, top, tp);
    let r = f();
    let mut spinner = Spinner::new();
    HANDSHAKE.unpark(p, &mut |turn| spinner.again(turn));
    spinner.stop();
    r
}

/// In a `fork` child: frees the park records of the threads that do not exist there (a stop
/// would hold them and scan their stacks' copies) and gives the forking thread's record the
/// child's tid.
pub fn reset_parks_after_fork_child() {
    let mine = park_index();
    let me = gettid();
    for (i, p) in parks().iter().enumerate() {
        p.reset_after_fork(i == mine, me);
    }
}

/// Aborts if this thread allocates GC objects inside `gc::blocking` (found at a safepoint,
/// and at every allocation that takes `GC_HEAP`: a stop may hold the thread, which must then
/// not run).
fn check_not_parked() {
    if parks().get(park_index()).is_some_and(Park::parked) {
        let mut l = crate::diag::Line::new();
        l.str("gomalloc: gc::blocking: a GC allocation inside a blocking scope (thread ")
            .dec(gettid() as u64)
            .str(")");
        l.emit();
        // SAFETY: abort has no preconditions.
        unsafe { libc::abort() }
    }
}

/// A safepoint: if a stop waits for threads to stop at one (`Handshake::poll`), this thread
/// stops here, as its handler would, without the signal's delivery (on the 2-CPU VM about 20
/// us from `tgkill` to the handler's acknowledgement, plus the `tgkill`). Called where a
/// thread holds no gomalloc lock (the top of a GC allocation). One relaxed load when no stop
/// waits.
#[inline(always)]
pub fn poll() {
    if HANDSHAKE.poll() != 0 {
        safepoint();
    }
}

/// Set by the collector from just before it takes `GC_HEAP` for a pause until the resume:
/// an allocating thread that finds the lock taken then waits at a safepoint
/// ([`lock_at_safepoint`]) instead of sleeping on the lock, where only a signal could stop it.
static STOP_SOON: AtomicBool = AtomicBool::new(false);
/// How long a thread waits at a safepoint for a lock before it sleeps on it.
const SAFEPOINT_WAIT_NS: u64 = 1_000_000;

/// Marks the stretch from the collector taking its locks for a pause to the resume
/// ([`STOP_SOON`]); cleared when dropped, and by [`resume`].
pub struct StopSoon(());

impl StopSoon {
    pub fn new() -> StopSoon {
        STOP_SOON.store(true, Ordering::Relaxed);
        StopSoon(())
    }
}

impl Drop for StopSoon {
    fn drop(&mut self) {
        STOP_SOON.store(false, Ordering::Relaxed);
    }
}

/// Takes `m` (`GC_HEAP`) for an allocating thread that holds no gomalloc lock: while the
/// collector holds it for a pause, the thread spins at a safepoint ([`poll`]), so the stop
/// finds it there without a signal, rather than asleep on the lock; past
/// [`SAFEPOINT_WAIT_NS`], or when no pause comes, it sleeps on the lock as usual.
pub fn lock_at_safepoint<T>(m: &crate::sync::Mutex<T>) -> crate::sync::MutexGuard<'_, T> {
    // Every GC allocation that is not served from the cache comes here: a thread parked in
    // `gc::blocking` is caught within a cache's worth of allocations even when no stop asks
    // for safepoints (a stop holds a parked thread without one).
    check_not_parked();
    if let Some(g) = m.try_lock() {
        return g;
    }
    let mut until = 0;
    while STOP_SOON.load(Ordering::Relaxed) {
        poll();
        if let Some(g) = m.try_lock() {
            return g;
        }
        let now = crate::os::now_ns();
        if until == 0 {
            until = now + SAFEPOINT_WAIT_NS;
        } else if now > until {
            break;
        }
        // The collector may need this CPU (there may be more threads than CPUs).
        // SAFETY: sched_yield has no memory effects.
        unsafe { libc::sched_yield() };
    }
    m.lock()
}

#[cold]
#[inline(never)]
fn safepoint() {
    check_not_parked();
    // The signal stays blocked while this thread records its stack and waits, so that its
    // handler cannot run in the middle (a signal sent meanwhile is taken after the resume,
    // and finds its stop over, or a new one that has a slot for it).
    // SAFETY: sigset and mask calls on our own sets; the old mask is restored below.
    let old = unsafe {
        let mut set: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, SUSPEND_SIGNAL);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        old
    };
    stop_here(true);
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, ptr::null_mut()) };
}

/// The top of the stack the handler runs on at `sp`, or 0 if it cannot be known (the caller's
/// stack is then unscannable and the cycle is given up). Any thread but the initial one has
/// its descriptor (`tp`) just above its stack; the initial thread's descriptor lies elsewhere
/// (below its stack), and its stack ends at `__libc_stack_end`. A handler running on an
/// alternate signal stack (`sigaltstack`) has left the thread's stack for a range that may
/// lie anywhere: unscannable. Async-signal-safe.
fn stack_top(sp: usize, tp: usize) -> usize {
    const MAX_STACK: usize = 64 << 30;
    // SAFETY: `sigaltstack` with a null new stack only reports the current one.
    let on_alt = unsafe {
        let mut ss: libc::stack_t = core::mem::zeroed();
        libc::sigaltstack(ptr::null(), &mut ss) == 0 && ss.ss_flags & libc::SS_ONSTACK != 0
    };
    if on_alt {
        return 0;
    }
    if tp > sp && tp - sp < MAX_STACK {
        return tp;
    }
    // SAFETY: reads a glibc variable set once at start-up.
    let end = unsafe { __libc_stack_end }.addr();
    if end > sp && end - sp < MAX_STACK {
        end
    } else {
        0
    }
}

/// `/proc/self/task`, kept open between stops, with the process that opened it and the
/// directory's identity (device, inode): procfs drops a process's directory entries when
/// nothing holds them, so every open builds them again (on a 2-CPU VM, listing 17 threads
/// every 5 ms took 89 us with an open each time and 54 us through the held descriptor).
/// Written and read by the collector only (one cycle at a time).
static TASK_FD: AtomicI32 = AtomicI32::new(-1);
static TASK_PID: AtomicI32 = AtomicI32::new(0);
static TASK_DEV: AtomicU64 = AtomicU64::new(0);
static TASK_INO: AtomicU64 = AtomicU64::new(0);

/// The held `/proc/self/task`, rewound, if it is still ours: opened by this process (a child
/// of `fork` inherits its parent's, which lists the parent's threads), and still that
/// directory (a program may close any descriptor, and the number may then name another
/// file, which is left alone). -1 if not.
fn held_task_dir(pid: i32) -> i32 {
    let fd = TASK_FD.load(Ordering::Relaxed);
    if fd < 0 {
        return -1;
    }
    if TASK_PID.load(Ordering::Relaxed) != pid {
        // Inherited through fork: the parent's directory, closed if still open.
        forget_task_dir(fd);
        return -1;
    }
    if !is_task_dir(fd) {
        TASK_FD.store(-1, Ordering::Relaxed);
        return -1;
    }
    // SAFETY: lseek on a descriptor that is still the directory we opened.
    if unsafe { libc::lseek(fd, 0, libc::SEEK_SET) } != 0 {
        forget_task_dir(fd);
        return -1;
    }
    fd
}

/// Stops keeping `fd` and closes it if it still is the directory we opened (the program may
/// have closed the number and opened something else there since it was checked).
fn forget_task_dir(fd: i32) {
    TASK_FD.store(-1, Ordering::Relaxed);
    if is_task_dir(fd) {
        // SAFETY: the descriptor is still the directory we opened.
        unsafe { libc::close(fd) };
    }
}

/// Whether descriptor `fd` is open on the directory we opened (its device and inode).
fn is_task_dir(fd: i32) -> bool {
    // SAFETY: fstat of a descriptor number into our own buffer.
    unsafe {
        let mut st: libc::stat = core::mem::zeroed();
        libc::fstat(fd, &mut st) == 0
            && st.st_dev as u64 == TASK_DEV.load(Ordering::Relaxed)
            && st.st_ino as u64 == TASK_INO.load(Ordering::Relaxed)
    }
}

/// Opens `/proc/self/task` and keeps it (see [`TASK_FD`]); -1 if it cannot be opened.
fn open_task_dir(pid: i32) -> i32 {
    // SAFETY: open/fstat/close on our own descriptor; `st` is ours.
    unsafe {
        let fd = libc::open(
            c"/proc/self/task".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return -1;
        }
        let mut st: libc::stat = core::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 {
            libc::close(fd);
            return -1;
        }
        TASK_PID.store(pid, Ordering::Relaxed);
        TASK_DEV.store(st.st_dev as u64, Ordering::Relaxed);
        TASK_INO.store(st.st_ino as u64, Ordering::Relaxed);
        TASK_FD.store(fd, Ordering::Relaxed);
        fd
    }
}

/// Calls `f(tid)` for every thread of process `pid` (ours), `me` (the calling thread)
/// included; false if the list cannot be read. A list without `me` is not the process's (the
/// kept descriptor's number was closed and reused between its check and the read, while
/// threads not yet stopped ran): it is read again from a fresh descriptor, and `f` may then
/// see a tid twice (or a number that is no thread of ours, which the signal does not reach).
fn for_each_thread(pid: i32, me: i32, mut f: impl FnMut(i32)) -> bool {
    let mut fd = held_task_dir(pid);
    let held = fd >= 0;
    if !held {
        fd = open_task_dir(pid);
        if fd < 0 {
            return false;
        }
    }
    let seen_me = Cell::new(false);
    let mut each = |tid: i32| {
        if tid == me {
            seen_me.set(true);
        }
        f(tid);
    };
    if read_tids(fd, &mut each) && seen_me.get() {
        return true;
    }
    forget_task_dir(fd);
    if !held {
        return false;
    }
    let fd = open_task_dir(pid);
    seen_me.set(false);
    fd >= 0 && read_tids(fd, &mut each) && seen_me.get()
}

/// Whether process `pid` has exactly the threads `me`, the exempt helpers and `stopped` more
/// (see `Linux::same_threads`); false whenever that cannot be told (no kept descriptor, or
/// not ours).
fn same_threads(pid: i32, me: i32, stopped: usize) -> bool {
    let fd = TASK_FD.load(Ordering::Relaxed);
    if fd < 0 || TASK_PID.load(Ordering::Relaxed) != pid {
        return false;
    }
    // SAFETY: fstat of a descriptor number into our own buffer.
    let st = unsafe {
        let mut st: libc::stat = core::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 {
            return false;
        }
        st
    };
    // The identity in the same call as the count: the number may have been closed and reused.
    if st.st_dev as u64 != TASK_DEV.load(Ordering::Relaxed)
        || st.st_ino as u64 != TASK_INO.load(Ordering::Relaxed)
        || st.st_nlink < 2
    {
        return false;
    }
    let count = st.st_nlink as usize - 2;
    // The helpers' tids are read after the count: the scavenger clears its tid before it
    // exits, so a tid still set here was a live thread, counted above (a fence orders the
    // loads after the count; the kernel's exit path orders its store before the exit).
    core::sync::atomic::fence(Ordering::SeqCst);
    // The collector and the distinct helpers (the timer thread and the mark workers never
    // exit; the scavenger counts only while its tid is set).
    let mut known = [0i32; 2 + super::mark::MAX_WORKERS + 1];
    known[0] = me;
    let mut k = 1;
    for tid in helper_tids() {
        if tid == 0 || known[..k].contains(&tid) {
            continue;
        }
        if k == known.len() {
            return false;
        }
        known[k] = tid;
        k += 1;
    }
    count == k + stopped
}

/// Reads the directory `fd` (rewound) and calls `f(tid)` for each numeric entry; false if a
/// read fails.
fn read_tids(fd: i32, f: &mut impl FnMut(i32)) -> bool {
    // SAFETY: getdents64 on the caller's descriptor into a stack buffer; no allocation.
    unsafe {
        let mut buf = [0u64; 512];
        loop {
            let n = libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), 4096);
            if n < 0 {
                // A partial list would leave threads unstopped.
                return false;
            }
            if n == 0 {
                break;
            }
            let bytes = buf.as_ptr().cast::<u8>();
            let mut off = 0usize;
            while off < n as usize {
                // linux_dirent64: d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name[].
                let reclen = ptr::read_unaligned(bytes.add(off + 16).cast::<u16>()) as usize;
                let name = bytes.add(off + 19);
                let mut tid: i64 = 0;
                let mut k = 0;
                while k < 12 {
                    let c = *name.add(k);
                    if !c.is_ascii_digit() {
                        break;
                    }
                    tid = tid * 10 + i64::from(c - b'0');
                    k += 1;
                }
                if k > 0 && *name.add(k) == 0 && tid > 0 && tid <= i64::from(i32::MAX) {
                    f(tid as i32);
                }
                off += reclen.max(1);
            }
        }
    }
    true
}

/// Whether thread `tid` has `SUSPEND_SIGNAL` blocked (`SigBlk` of its status file).
fn signal_blocked(tid: i32) -> bool {
    status(tid).1
}

/// Whether thread `tid` is gone (no status file) or a zombie (`State: Z` or `X`: a main
/// thread that ended with `pthread_exit` stays listed as one and never handles a signal).
fn exited(tid: i32) -> bool {
    status(tid).0
}

/// (exited, `SUSPEND_SIGNAL` blocked) from `/proc/self/task/<tid>/status`.
fn status(tid: i32) -> (bool, bool) {
    let mut path = diag::Line::new();
    path.str("/proc/self/task/").dec(tid as u64).str("/status");
    let mut name = [0u8; 64];
    let p = path.as_bytes();
    if p.len() >= name.len() {
        return (false, false);
    }
    name[..p.len()].copy_from_slice(p);
    let mut buf = [0u8; 2048];
    // SAFETY: open/read/close on our own fd with stack buffers.
    let n = unsafe {
        let fd = libc::open(name.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            // Gone only if the file is; any other failure (no fds left) says nothing.
            return (*libc::__errno_location() == libc::ENOENT, false);
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    if n <= 0 {
        return (true, false);
    }
    let text = &buf[..n as usize];
    let state = b"State:\t";
    let gone = text
        .windows(state.len())
        .position(|w| w == state)
        .is_some_and(|at| matches!(text.get(at + state.len()), Some(b'Z' | b'X')));
    let key = b"SigBlk:\t";
    let Some(at) = text.windows(key.len()).position(|w| w == key) else {
        return (gone, false);
    };
    let mut mask: u64 = 0;
    for &c in &text[at + key.len()..] {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => break,
        };
        mask = (mask << 4) | u64::from(d);
    }
    (gone, mask & (1 << (SUSPEND_SIGNAL - 1)) != 0)
}

/// The threads stopped by [`stop`], until [`resume`].
pub struct Stopped(handshake::Stopped);

impl Stopped {
    /// Calls `f(sp, top, tp)` for every stopped thread: its stack range (empty if unknown)
    /// and its `pthread_self()` (0 if unknown).
    pub fn for_each_thread(&self, f: impl FnMut(usize, usize, usize)) {
        self.0.for_each_thread(slots(), f);
    }

    /// How many stopped threads recorded a stack.
    pub fn count(&self) -> usize {
        let mut c = 0;
        self.0.for_each_stack(slots(), |_, _| c += 1);
        c
    }
}

/// Stops every other thread of the process (see the module docs); `None` if the handler
/// cannot be installed or the thread list cannot be read (the caller must not collect then).
pub fn stop() -> Option<Stopped> {
    if !install() {
        return None;
    }
    let linux = Linux {
        me: gettid(),
        // SAFETY: getpid has no memory effects.
        pid: unsafe { libc::getpid() },
        wait_start: Cell::new(0),
        warned_slow: Cell::new(false),
        gave_up_alive: Cell::new(false),
        start: crate::os::now_ns(),
        hinted: Cell::new(0),
        listing: Cell::new(0),
        listed: Cell::new(0),
    };
    let r = HANDSHAKE.stop(slots(), parks(), &linux);
    // Where the stop's time went (`gcpausetrace`): signalling the hinted threads, waiting for
    // them, listing the threads (the last listing; a stop that found new threads listed more
    // than once, and its wait includes the earlier listings).
    let hinted = linux.hinted.get().max(linux.start);
    let listing = linux.listing.get().max(hinted);
    STOP_PARTS[0].store(hinted - linux.start, Ordering::Relaxed);
    STOP_PARTS[1].store(listing - hinted, Ordering::Relaxed);
    STOP_PARTS[2].store(
        linux.listed.get().saturating_sub(listing),
        Ordering::Relaxed,
    );
    match r {
        Ok(stopped) if stopped.any_unscannable(slots()) => {
            HANDSHAKE.resume(stopped);
            static WARNED: AtomicBool = AtomicBool::new(false);
            if !WARNED.swap(true, Ordering::Relaxed) {
                diag::warn(
                    "gc: a stopped thread runs on its alternate signal stack or an unknown stack; cycle skipped; slots",
                    MAX_THREADS,
                );
            }
            None
        }
        Ok(stopped) => {
            LAST_HELD.store(stopped.held(), Ordering::Relaxed);
            let mut k = 0;
            stopped.for_each_tid(slots(), |tid, coop| {
                if k < HINTS {
                    LAST_STOPPED[k].store(tid | if coop { COOP } else { 0 }, Ordering::Relaxed);
                    k += 1;
                }
            });
            if k < HINTS {
                LAST_STOPPED[k].store(0, Ordering::Relaxed);
            }
            Some(Stopped(stopped))
        }
        Err(StopError::Blocked) => None,
        Err(StopError::Full) => {
            diag::warn(
                "gc: more threads than the collector can stop; cycle skipped; limit",
                MAX_THREADS,
            );
            None
        }
        Err(StopError::Unlisted) => None,
    }
}

/// Lets the stopped threads run again.
pub fn resume(stopped: Stopped) {
    STOP_SOON.store(false, Ordering::Relaxed);
    HANDSHAKE.resume(stopped.0);
}

/// Whether `tid` is one of gomalloc's helper threads. Each stores its tid before it blocks
/// signals, so a helper not yet listed here still takes the signal; one that blocked it in
/// between is recognised by `keep_waiting`.
fn is_exempt(tid: i32) -> bool {
    helper_tids().any(|h| h == tid)
}

/// The tids of gomalloc's helper threads (0 for a slot not in use): the timer thread, the
/// mark workers, then the scavenger.
fn helper_tids() -> impl Iterator<Item = i32> {
    EXEMPT
        .iter()
        .map(|e| e.load(Ordering::Acquire))
        .chain(core::iter::once(
            crate::scavenger::TID.load(Ordering::Acquire),
        ))
}

/// The process as the handshake sees it: its threads, `tgkill`, and the patience of the wait
/// for a thread (spin, then yield, then check whether it exited or blocks the signal).
struct Linux {
    /// The collector's own thread.
    me: i32,
    pid: i32,
    /// When the current wait for a thread began (ns), and whether it was reported as slow.
    wait_start: Cell<u64>,
    warned_slow: Cell<bool>,
    /// The last thread given up on lives (it blocks the signal): the stop must be given up.
    gave_up_alive: Cell<bool>,
    /// When the stop began, when the hinted threads were signalled, and when the last
    /// listing of the threads began and ended (ns).
    start: u64,
    hinted: Cell<u64>,
    listing: Cell<u64>,
    listed: Cell<u64>,
}

impl World for Linux {
    fn threads(&self, f: &mut dyn FnMut(i32)) -> bool {
        self.listing.set(crate::os::now_ns());
        let ok = for_each_thread(self.pid, self.me, |tid| {
            if tid != self.me && !is_exempt(tid) {
                f(tid);
            }
        });
        self.listed.set(crate::os::now_ns());
        ok
    }

    /// The link count of the kept `/proc/self/task` (procfs makes it the number of threads
    /// plus 2), from one `fstat` that also checks the descriptor's identity, against the
    /// collector, the exempt helpers and the `stopped` threads. None of these can have exited
    /// and be counted in the place of a thread unknown to this stop: stopped threads wait in
    /// their handler, the timer thread and the mark workers never exit, and the scavenger,
    /// which does, clears its tid before it exits, and its tid is read after the count (no
    /// `tgkill` with signal 0 to check it alive: on the 2-CPU VM that system call, cold at a
    /// stop, took 2-4 us of each stop). A thread that exited before it answered (left
    /// running) may still be counted: the threads are then listed.
    fn same_threads(&self, stopped: usize) -> bool {
        self.listing.set(crate::os::now_ns());
        let same = same_threads(self.pid, self.me, stopped);
        self.listed.set(crate::os::now_ns());
        same
    }

    fn hint(&self, f: &mut dyn FnMut(i32, bool)) {
        for t in &LAST_STOPPED {
            let v = t.load(Ordering::Relaxed);
            if v == 0 {
                break;
            }
            let tid = v & !COOP;
            if tid != self.me && !is_exempt(tid) {
                f(tid, v & COOP != 0);
            }
        }
        self.hinted.set(crate::os::now_ns());
    }

    fn keep_polling(&self, _turn: u64) -> bool {
        core::hint::spin_loop();
        crate::os::now_ns() - self.hinted.get() < POLL_GRACE_NS
    }

    fn signal(&self, tid: i32) -> bool {
        tgkill(self.pid, tid, SUSPEND_SIGNAL)
    }

    /// Gives up on `tid` if it exited before it handled the signal (gone, or a zombie), or if
    /// it keeps the signal blocked for more than [`BLOCKED_GRACE_MS`] (then the whole stop is
    /// given up: its stack cannot be scanned, so nothing may be freed).
    fn keep_waiting(&self, tid: i32, turn: u64) -> bool {
        if turn == 1 {
            self.wait_start.set(crate::os::now_ns());
            self.warned_slow.set(false);
            self.gave_up_alive.set(false);
        }
        if turn < 64 {
            core::hint::spin_loop();
            return true;
        }
        // SAFETY: sched_yield has no memory effects.
        unsafe { libc::sched_yield() };
        if turn % 64 != 0 {
            return true;
        }
        if is_exempt(tid) {
            // A helper thread that blocked every signal after it was listed.
            return false;
        }
        // The checks below read /proc (tens of microseconds): only once the thread is late (a
        // thread woken from sleep on an idle CPU may take that long to run its handler), or
        // at once for a tid found a zombie before (a main thread ended by `pthread_exit` is
        // listed by every stop and never answers).
        let zombie = ZOMBIES.iter().any(|z| z.load(Ordering::Relaxed) == tid);
        if !zombie && crate::os::now_ns() - self.wait_start.get() < SLOW_NS {
            return true;
        }
        // Sending the signal again (not signal 0) also reaches a new thread that took over the
        // tid of one that exited; the handler ignores a repeat for a generation it acknowledged.
        if !tgkill(self.pid, tid, SUSPEND_SIGNAL) {
            return false;
        }
        if exited(tid) {
            if !zombie {
                let k = NEXT_ZOMBIE.fetch_add(1, Ordering::Relaxed) % ZOMBIES.len();
                ZOMBIES[k].store(tid, Ordering::Relaxed);
            }
            return false;
        }
        let waited_ms = (crate::os::now_ns() - self.wait_start.get()) / 1_000_000;
        if waited_ms >= BLOCKED_GRACE_MS && signal_blocked(tid) {
            if !WARNED_BLOCKED.swap(true, Ordering::Relaxed) {
                diag::warn(
                    "gc: a thread keeps SIGPWR blocked, so the world cannot be stopped; cycles are skipped while it does; thread id",
                    tid as usize,
                );
            }
            self.gave_up_alive.set(true);
            return false;
        }
        if waited_ms >= 1000 && !self.warned_slow.get() {
            self.warned_slow.set(true);
            diag::warn(
                "gc: still waiting for a thread to stop; thread id",
                tid as usize,
            );
        }
        true
    }

    fn abort_on_give_up(&self, _tid: i32) -> bool {
        self.gave_up_alive.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// `signal_blocked` reads a thread's mask: true for a thread that blocks the signal.
    #[test]
    fn reads_blocked_masks() {
        let (tx, rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            // SAFETY: changes this thread's own signal mask.
            unsafe {
                let mut set: libc::sigset_t = core::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, SUSPEND_SIGNAL);
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, ptr::null_mut());
            }
            tx.send(gettid()).unwrap();
            done_rx.recv().unwrap();
        });
        let tid = rx.recv().unwrap();
        assert!(signal_blocked(tid));
        assert!(!signal_blocked(gettid()));
        done_tx.send(()).unwrap();
        t.join().unwrap();
    }
}
