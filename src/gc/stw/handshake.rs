//! The stop-the-world handshake: the shared-memory protocol between the collector and the
//! suspend handler of each thread it stops, apart from the system calls around it (`tgkill`,
//! `/proc/self/task`, `sigaction`, which stay in [`super`]) so that the model in
//! `loom-tests/tests/stw.rs` checks this very code. The crate built with `--cfg loom` compiles
//! only this file of the collector (see `lib.rs`); its atomics and futex come from
//! `crate::sync`, so under loom they are loom's and a futex wait is a yielding spin.
//!
//! Owns: the stop generation, the number of slots in use, the resumed generation (the futex
//! word the stopped threads sleep on), and the protocol on a slot table that the caller maps
//! (one [`Slot`] per thread being stopped). The operating system is behind [`World`]: list the
//! threads, send the signal, decide when to give up on a thread.
//!
//! One stop, step by step:
//! ```text
//! collector (stop)                               stopped thread (on_signal, in its handler
//!                                                or at a safepoint, the signal blocked)
//! gen = STOP_GEN + 1 (never 0), Release
//! per park record not RUNNING: CAS -> HELD(gen)   (a thread in `gc::blocking`: PARKED
//!   (AcqRel); won: fill its slot from the record,  after it stored sp/top, Release; leaving:
//!   acked = gen, no signal                         CAS PARKED -> RUNNING, or, held, wait
//!                                                  until RESUMED reaches gen, then CAS
//!                                                  HELD(gen) -> RUNNING, or wait again)
//! POLL = gen (safepoints may stop threads from here)
//! (first the hinted threads, waited for before any listing: those that stopped at a
//!  safepoint last time get their signal only if they have not stopped at one again by the
//!  end of `keep_polling`; then)
//! per listed thread: slot.acked = 0, slot.tid,
//!   NSLOTS = n + 1 (Release), signal it    ~~~>  gen = STOP_GEN (Acquire); n = NSLOTS (Acquire)
//!                                                find the slot whose tid is its own
//!                                                slot.sp, slot.top; slot.acked = gen (Release)
//! wait until slot.acked == gen (Acquire),  <~~~  poll (`spin`), then sleep, until RESUMED has
//!                                                reached gen (Acquire)
//!   or leave the thread running: tid = -tid
//! count the threads: only the stopped ones (and the collector, exempt helpers)? done;
//! else list again until no new thread appears
//! ... read every acked slot's sp/top, scan ...
//! resume: POLL = 0, RESUMED = gen (Release),
//!   wake all                               ~~~>  return from the handler (or the safepoint,
//!                                                which unblocks the signal: one sent
//!                                                meanwhile finds no slot, or a new stop's)
//! ```
//!
//! Invariants:
//! - Generations only grow (wrapping, skipping 0); a slot is acknowledged for `gen` only by its
//!   own thread, from a handler that read `STOP_GEN == gen`, after it stored its `sp`/`top`;
//!   the Release/Acquire pair on `acked` makes them (and everything the thread wrote before,
//!   its stack included) visible to the collector.
//! - A thread that acknowledged `gen` does not leave the handler before `RESUMED` has reached
//!   `gen`, and the Release/Acquire pair on `RESUMED` orders the collector's reads of its stack
//!   before anything the thread does after it resumes. "Reached", not "equals": a handler
//!   still running for an earlier stop whose thread was left running by a later one (its
//!   handler blocks the signal, so it looks blocked) must still leave once that later stop
//!   resumes, instead of waiting for a generation that is already gone.
//! - A slot's tid is negated when its thread is left running (it exited, or keeps the signal
//!   blocked): its handler, should it run late, finds no slot and returns at once, a relisting
//!   does not take it for a new thread, and its stack is not scanned.
//! - A handler for an old stop that runs during a new one may find its slot and acknowledge
//!   the old generation: the collector waits for the new one, and the signal of the new stop,
//!   held pending while the old handler runs, is delivered right after it.
//!
//! - A handler delayed between finding its slot and storing `sp`/`top`, whose thread was left
//!   running (its handler blocks the signal, so it looked blocked, or it was taken for exited),
//!   may store them long after its stop ended. So a stop that left a thread running moves the
//!   next stops' window of slots past its own (`next_base`), and handlers read the window
//!   (base and count) in one load: a late store lands in a slot no later stop uses, until the
//!   window wraps after half the table (found by the loom model
//!   `late_handler_of_thread_left_running`, which reuses slot 0 without it).
//!
//! - A safepoint runs `on_signal` itself with the signal blocked, so no handler can run in
//!   the middle of it (a handler nested there would acknowledge the same slot from a deeper
//!   stack pointer while the safepoint stores its own). To the stop it is a handler that ran
//!   early: it finds its slot only once the stop has published it (before that it returns at
//!   once, and polls again at its next safepoint), and a signal sent to it afterwards is taken
//!   once the safepoint unblocks it, after the resume. A deferred
//!   signal that finds its thread gone leaves the thread out of the stop (tid negated), as a
//!   thread that exits unanswered.
//!
//! - A parked thread is held by a stop only through the compare-exchange on its record, which
//!   its own leave races: exactly one wins. Held, it waits for that stop's resume (Acquire on
//!   `RESUMED`) before it leaves, so it writes its stack only after the collector's reads; a
//!   later stop may hold it again before it leaves (any non-`RUNNING` state is taken), and it
//!   then waits for that one. Left first, the stop signals it as any running thread. The
//!   record's Release store of `PARKED`, which a previous stop's hold continues (a
//!   read-modify-write), makes its stack range and stack visible to the stop that holds it
//!   (loom models `parked_thread_is_held`, `parked_across_cycles`).
//!
//! Ordering of the slot fill: `acked = 0` and `tid` are stored before `NSLOTS` (Release), and
//! the handler reads `NSLOTS` (Acquire) before the slots; the signal itself orders the fill
//! before the handler too (the kernel's `tgkill` / delivery), but the protocol does not count
//! on it.

use crate::sync::{
    futex_wait, futex_wake_all, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};

fn window(base: usize, n: usize) -> u64 {
    ((base as u64) << 32) | n as u64
}

/// One thread being stopped: its id (negated once it is left running), the generation it
/// acknowledged, and its stack range (`sp..top`), recorded by its handler.
#[repr(C)]
pub struct Slot {
    tid: AtomicI32,
    acked: AtomicU32,
    sp: AtomicUsize,
    top: AtomicUsize,
    /// The thread's `pthread_self()` (for its static TLS blocks).
    tp: AtomicUsize,
    /// 1 if the thread acknowledged at a safepoint (`on_signal` called with `coop`), not in
    /// its handler: stored before `acked`.
    coop: AtomicU32,
    /// 1 while the collector has not sent the thread its signal: it waits for the thread to
    /// reach a safepoint first (collector only).
    deferred: AtomicU32,
}

impl Slot {
    /// An empty slot, for the loom model (the real table is a zeroed mapping: all empty).
    #[cfg(loom)]
    pub fn new() -> Slot {
        Slot {
            tid: AtomicI32::new(0),
            acked: AtomicU32::new(0),
            sp: AtomicUsize::new(0),
            top: AtomicUsize::new(0),
            tp: AtomicUsize::new(0),
            coop: AtomicU32::new(0),
            deferred: AtomicU32::new(0),
        }
    }
}

/// A thread's record for parking (`gc::blocking`): while parked, its stack from `sp` up is
/// frozen and the collector's stops hold it without a signal.
///
/// `state`: `RUNNING` (0), `PARKED` (1), or held by the stop of generation `g`
/// (`g << 2 | HELD`). The thread moves `RUNNING -> PARKED` (after it stored `sp`/`top`/`tp`)
/// and back with a compare-exchange; a stop moves any non-`RUNNING` state to held by itself.
/// So exactly one of "the thread left" and "the stop holds it" wins: a thread held by a stop
/// waits for that stop's resume before it leaves, and a stop that lost signals the thread.
#[repr(C)]
pub struct Park {
    /// The owner's tid (0: a free record; managed by the caller's table, not the protocol).
    pub tid: AtomicI32,
    state: AtomicU64,
    sp: AtomicUsize,
    top: AtomicUsize,
    tp: AtomicUsize,
}

const RUNNING: u64 = 0;
const PARKED: u64 = 1;
const HELD: u64 = 2;

impl Park {
    /// A free record, for the loom model (the real table is a zeroed mapping: all free).
    #[cfg(loom)]
    pub fn new(tid: i32) -> Park {
        Park {
            tid: AtomicI32::new(tid),
            state: AtomicU64::new(RUNNING),
            sp: AtomicUsize::new(0),
            top: AtomicUsize::new(0),
            tp: AtomicUsize::new(0),
        }
    }

    /// In a `fork` child (one thread, no stop running): the forking thread's record (`mine`)
    /// takes the child's tid `tid` and, if held, is parked again; any other is freed (its
    /// thread does not exist in the child).
    pub fn reset_after_fork(&self, mine: bool, tid: i32) {
        if mine {
            self.tid.store(tid, Ordering::Relaxed);
            if self.state.load(Ordering::Relaxed) != RUNNING {
                self.state.store(PARKED, Ordering::Relaxed);
            }
        } else {
            self.state.store(RUNNING, Ordering::Relaxed);
            self.tid.store(0, Ordering::Relaxed);
        }
    }

    /// Whether the owner is in a blocking scope now (parked, or held by a stop). Read by its
    /// owner only.
    pub fn parked(&self) -> bool {
        self.state.load(Ordering::Relaxed) != RUNNING
    }
}

/// What the handshake needs from the operating system.
pub trait World {
    /// Calls `f(tid)` for every thread to stop (not the collector's own, not exempt helpers);
    /// false if the list cannot be read.
    fn threads(&self, f: &mut dyn FnMut(i32)) -> bool;
    /// Calls `f(tid, coop)` for threads likely to be in the list (those the last stop
    /// stopped), so that they are stopped before the first listing, which then finds no new
    /// thread in the usual case: a stop lists once instead of twice. Only a hint: a listing
    /// that finds no new thread still ends every stop, and a tid that is gone fails its
    /// signal. `coop`: the thread stopped at a safepoint last time, so the stop gives it
    /// until `keep_polling` says no to stop at one again before it sends the signal.
    fn hint(&self, _f: &mut dyn FnMut(i32, bool)) {}
    /// Called on each turn (from 1) of waiting for hinted threads to stop at a safepoint;
    /// pauses briefly and says whether to keep waiting (false: signal those not stopped).
    fn keep_polling(&self, _turn: u64) -> bool {
        false
    }
    /// Whether the process has no thread to stop but the `stopped` ones that acknowledged
    /// this stop (a count of its threads, cheaper than a listing): the stop then ends without
    /// a listing. True only if no other thread can exist (false is always safe: the stop
    /// lists the threads instead).
    fn same_threads(&self, _stopped: usize) -> bool {
        false
    }
    /// Sends `tid` the suspend signal; false if the thread is gone.
    fn signal(&self, tid: i32) -> bool;
    /// Called on each turn (from 1) of waiting for `tid` to acknowledge; pauses briefly and
    /// says whether to keep waiting (false: leave the thread running).
    fn keep_waiting(&self, tid: i32, turn: u64) -> bool;
    /// After `keep_waiting` gave up on `tid`: whether the whole stop must be given up (the
    /// thread lives but does not answer, so its stack cannot be scanned) rather than the
    /// thread left running (it exited).
    fn abort_on_give_up(&self, _tid: i32) -> bool {
        false
    }
}

/// How a wait for one thread ended.
enum Wait {
    Acked,
    /// The thread exited before it answered: left out of the stop.
    LeftRunning,
    /// The thread lives but does not answer: the stop is given up.
    Abort,
}

/// Why [`Handshake::stop`] stopped nothing (the threads it had stopped are resumed).
#[derive(Debug, PartialEq, Eq)]
pub enum StopError {
    /// The thread list could not be read.
    Unlisted,
    /// More threads than slots.
    Full,
    /// A thread did not answer (see [`World::abort_on_give_up`]).
    Blocked,
}

/// The threads stopped by [`Handshake::stop`], until [`Handshake::resume`].
#[derive(Debug)]
pub struct Stopped {
    gen: u32,
    /// The window of slots this stop used: `base..base + n`.
    base: usize,
    n: usize,
    /// A thread was left running (its handler may still write its slot later).
    gave_up: bool,
    /// Threads held parked (`gc::blocking`), without a signal.
    held: usize,
}

/// The handshake's shared words (one per process; see the module docs).
pub struct Handshake {
    /// The generation being stopped (never 0).
    stop_gen: AtomicU32,
    /// The current stop's window of slots, `base << 32 | n` (n = 0 once resumed), read by
    /// handlers in one load so that base and count always belong to the same stop.
    window: AtomicU64,
    /// Where the next stop's window starts (written by the collector only). It moves past a
    /// window in which a thread was left running: that thread's handler may run late and
    /// write into its slot, which must then belong to no later stop.
    next_base: AtomicUsize,
    /// The last generation resumed: the futex word stopped threads sleep on.
    resumed: AtomicU32,
    /// The generation of the stop in progress while threads may stop at a safepoint (call
    /// `on_signal` themselves, the signal blocked), else 0. Cleared at the resume.
    poll: AtomicU32,
}

/// Whether resumed generation `resumed` is `gen` or a later one (generations wrap).
fn reached(resumed: u32, gen: u32) -> bool {
    resumed.wrapping_sub(gen) as i32 >= 0
}

impl Handshake {
    crate::sync::const_fn! {
        /// No stop yet.
        pub fn new() -> Handshake {
            Handshake {
                stop_gen: AtomicU32::new(0),
                window: AtomicU64::new(0),
                next_base: AtomicUsize::new(0),
                resumed: AtomicU32::new(0),
                poll: AtomicU32::new(0),
            }
        }
    }

    /// The collector: stops every thread `world` lists, using `slots` (see the module docs).
    /// The caller is the only collector (it holds the collector's lock).
    pub fn stop(
        &self,
        slots: &[Slot],
        parks: &[Park],
        world: &impl World,
    ) -> Result<Stopped, StopError> {
        let mut gen = self.stop_gen.load(Ordering::Relaxed).wrapping_add(1);
        if gen == 0 {
            gen = 1;
        }
        self.stop_gen.store(gen, Ordering::Release);
        let mut base = self.next_base.load(Ordering::Relaxed);
        if base >= slots.len() / 2 {
            base = 0;
        }
        let table = &slots[base..];
        let mut n = 0usize;
        let mut full = false;
        let mut gave_up = false;
        let mut held = 0;
        // Signals `tid` unless it has a slot already (a negated tid is a thread left running:
        // not a new thread either); counts it in `n` if the signal went, or at once if the
        // signal is deferred (`defer`: sent below unless the thread stops at a safepoint).
        let add = |tid: i32, n: &mut usize, full: &mut bool, defer: bool| {
            if table[..*n]
                .iter()
                .any(|s| s.tid.load(Ordering::Relaxed).unsigned_abs() == tid.unsigned_abs())
            {
                return;
            }
            let Some(s) = table.get(*n) else {
                *full = true;
                return;
            };
            s.acked.store(0, Ordering::Relaxed);
            s.tid.store(tid, Ordering::Relaxed);
            s.deferred.store(u32::from(defer), Ordering::Relaxed);
            self.window.store(window(base, *n + 1), Ordering::Release);
            if defer || world.signal(tid) {
                *n += 1;
            } else {
                s.tid.store(0, Ordering::Relaxed);
                self.window.store(window(base, *n), Ordering::Release);
            }
        };
        // Parked threads first: held by this stop, no signal (a listing then skips them).
        for p in parks {
            let st = p.state.load(Ordering::Acquire);
            if st == RUNNING {
                continue;
            }
            let hold = u64::from(gen) << 2 | HELD;
            // Acquire: the record's stack range, and the stack itself, as the thread left them
            // before it parked (the Release store of `PARKED`, which a previous stop's hold
            // continues).
            if p.state
                .compare_exchange(st, hold, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                // It left the scope: a running thread, signalled below if listed.
                continue;
            }
            let Some(s) = table.get(n) else {
                // No slot: let it go again (it may leave now) and give up the stop below.
                p.state.store(st, Ordering::Release);
                full = true;
                break;
            };
            s.tid
                .store(p.tid.load(Ordering::Relaxed), Ordering::Relaxed);
            s.sp.store(p.sp.load(Ordering::Relaxed), Ordering::Relaxed);
            s.top
                .store(p.top.load(Ordering::Relaxed), Ordering::Relaxed);
            s.tp.store(p.tp.load(Ordering::Relaxed), Ordering::Relaxed);
            s.coop.store(0, Ordering::Relaxed);
            s.deferred.store(0, Ordering::Relaxed);
            s.acked.store(gen, Ordering::Relaxed);
            n += 1;
            held += 1;
            self.window.store(window(base, n), Ordering::Release);
        }
        // The threads hinted are stopped before the first listing, so a listing that finds
        // nothing new ends the stop as it would after the first round of signals.
        // From here a thread with a slot may stop at a safepoint: one that does while its
        // signal travels is hinted as such (deferred) by the next stop.
        self.poll.store(gen, Ordering::Release);
        let mut deferred = false;
        world.hint(&mut |tid, coop| {
            deferred |= coop;
            add(tid, &mut n, &mut full, coop)
        });
        if deferred {
            // Threads that stopped at a safepoint last time: they may again, sparing the
            // signal's delivery; those that have not by the end of the wait get the signal.
            let mut turn = 0;
            while table[..n].iter().any(|s| {
                s.deferred.load(Ordering::Relaxed) != 0 && s.acked.load(Ordering::Acquire) != gen
            }) {
                turn += 1;
                if !world.keep_polling(turn) {
                    break;
                }
            }
            for s in &table[..n] {
                if s.deferred.swap(0, Ordering::Relaxed) != 0
                    && s.acked.load(Ordering::Acquire) != gen
                {
                    let tid = s.tid.load(Ordering::Relaxed);
                    if !world.signal(tid) {
                        // Gone: left out of the stop, as a thread that exits unanswered.
                        s.tid.store(-tid, Ordering::Relaxed);
                        gave_up = true;
                    }
                }
            }
        }
        // Slots below `before` are stopped (or left running); `acked` of them are stopped.
        let mut before = 0;
        let mut acked = 0;
        loop {
            // Every thread signalled is stopped: count the threads, else list them (the first
            // time round, unless hinted threads are still to be waited for below).
            if before == n && !full {
                if world.same_threads(acked) {
                    return Ok(Stopped {
                        gen,
                        base,
                        n,
                        gave_up,
                        held,
                    });
                }
                let listed = world.threads(&mut |tid| add(tid, &mut n, &mut full, false));
                if !listed {
                    self.resume(Stopped {
                        gen,
                        base,
                        n,
                        gave_up: true,
                        held,
                    });
                    return Err(StopError::Unlisted);
                }
                if n == before && !full {
                    return Ok(Stopped {
                        gen,
                        base,
                        n,
                        gave_up,
                        held,
                    });
                }
            }
            if full {
                self.resume(Stopped {
                    gen,
                    base,
                    n,
                    gave_up: true,
                    held,
                });
                return Err(StopError::Full);
            }
            for s in &table[before..n] {
                match Self::wait_for(s, gen, world) {
                    Wait::Acked => acked += 1,
                    Wait::LeftRunning => gave_up = true,
                    Wait::Abort => {
                        self.resume(Stopped {
                            gen,
                            base,
                            n,
                            gave_up: true,
                            held,
                        });
                        return Err(StopError::Blocked);
                    }
                }
            }
            before = n;
        }
    }

    /// Waits until the thread of slot `s` acknowledges `gen`, or `world` gives up on it.
    fn wait_for(s: &Slot, gen: u32, world: &impl World) -> Wait {
        if s.tid.load(Ordering::Relaxed) < 0 {
            // Its deferred signal found it gone.
            return Wait::LeftRunning;
        }
        let mut turn = 0u64;
        while s.acked.load(Ordering::Acquire) != gen {
            turn += 1;
            let tid = s.tid.load(Ordering::Relaxed);
            if !world.keep_waiting(tid, turn) {
                s.tid.store(-tid, Ordering::Relaxed);
                return if world.abort_on_give_up(tid) {
                    Wait::Abort
                } else {
                    Wait::LeftRunning
                };
            }
        }
        Wait::Acked
    }

    /// The handler of thread `tid`, its stack being `sp..top`: if the current stop has a slot
    /// for it not yet acknowledged, records the stack, acknowledges and waits until the stop
    /// is resumed. Returns the generation it was stopped for, if any. Async-signal-safe.
    /// `coop`: called at a safepoint (`poll` seen set) with the signal blocked, not from the
    /// handler; the same steps, which the stop cannot tell apart from a handler that ran
    /// before its signal was sent. `spin(turn)` (turns from 1), called while the stop is not
    /// resumed yet, pauses briefly and says whether to check again (true) or to sleep on the
    /// futex (false: from then on until the resume): a thread that polls is resumed without
    /// a wake-up call.
    #[allow(clippy::too_many_arguments)]
    pub fn on_signal(
        &self,
        slots: &[Slot],
        tid: i32,
        sp: usize,
        top: usize,
        tp: usize,
        coop: bool,
        spin: &mut dyn FnMut(u32) -> bool,
    ) -> Option<u32> {
        let gen = self.stop_gen.load(Ordering::Acquire);
        let w = self.window.load(Ordering::Acquire);
        let (base, n) = ((w >> 32) as usize, w as u32 as usize);
        let s = slots
            .get(base..)?
            .iter()
            .take(n)
            .find(|s| s.tid.load(Ordering::Acquire) == tid)?;
        if s.acked.load(Ordering::Relaxed) == gen {
            return None;
        }
        s.sp.store(sp, Ordering::Relaxed);
        s.top.store(top, Ordering::Relaxed);
        s.tp.store(tp, Ordering::Relaxed);
        s.coop.store(u32::from(coop), Ordering::Relaxed);
        s.acked.store(gen, Ordering::Release);
        self.wait_resumed(gen, spin);
        Some(gen)
    }

    /// A stopped thread: waits until the stop of generation `gen` is resumed (Acquire),
    /// polling with `spin` first (see `on_signal`), then asleep on the futex.
    fn wait_resumed(&self, gen: u32, spin: &mut dyn FnMut(u32) -> bool) {
        let mut turn = 0;
        let mut spinning = true;
        loop {
            let r = self.resumed.load(Ordering::Acquire);
            if reached(r, gen) {
                return;
            }
            if spinning {
                turn += 1;
                spinning = spin(turn);
            }
            if !spinning {
                futex_wait(&self.resumed, r);
            }
        }
    }

    /// The thread owning `p`: parks, its stack being `sp..top` (frozen until `unpark`).
    pub fn park(&self, p: &Park, sp: usize, top: usize, tp: usize) {
        p.sp.store(sp, Ordering::Relaxed);
        p.top.store(top, Ordering::Relaxed);
        p.tp.store(tp, Ordering::Relaxed);
        p.state.store(PARKED, Ordering::Release);
    }

    /// The thread owning `p`: leaves its parked state, first waiting for the resume of a stop
    /// that holds it (`spin` as in `on_signal`).
    pub fn unpark(&self, p: &Park, spin: &mut dyn FnMut(u32) -> bool) {
        loop {
            let st = match p.state.compare_exchange(
                PARKED,
                RUNNING,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(st) => st,
            };
            // Held by the stop of generation `gen`: its resume (Acquire) orders the
            // collector's reads of this stack before anything this thread does next.
            self.wait_resumed((st >> 2) as u32, spin);
            // A later stop may have held it again meanwhile: then wait for that one.
            if p.state
                .compare_exchange(st, RUNNING, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }

    /// The generation of a stop that waits for threads to reach a safepoint, else 0: a
    /// thread that reads it non-zero calls `on_signal` (with `coop`) at its next safepoint.
    #[inline(always)]
    pub fn poll(&self) -> u32 {
        self.poll.load(Ordering::Relaxed)
    }

    /// The collector: lets the threads of `stopped` run again.
    pub fn resume(&self, stopped: Stopped) {
        self.poll.store(0, Ordering::Relaxed);
        self.resumed.store(stopped.gen, Ordering::Release);
        futex_wake_all(&self.resumed);
        self.window
            .store(window(stopped.base, 0), Ordering::Release);
        if stopped.gave_up {
            self.next_base
                .store(stopped.base + stopped.n, Ordering::Relaxed);
        }
    }
}

impl Stopped {
    /// Threads held parked by this stop (`gc::blocking`), without a signal.
    pub fn held(&self) -> usize {
        self.held
    }

    /// The generation stopped (for the loom model).
    #[cfg(loom)]
    pub fn gen(&self) -> u32 {
        self.gen
    }

    /// Calls `f(sp, top, tp)` for every stopped thread: its stack range (empty, `top <= sp`,
    /// if it recorded none) and its `pthread_self()` (0 if it recorded none).
    pub fn for_each_thread(&self, slots: &[Slot], mut f: impl FnMut(usize, usize, usize)) {
        for s in &slots[self.base..][..self.n] {
            if s.tid.load(Ordering::Relaxed) > 0 && s.acked.load(Ordering::Acquire) == self.gen {
                let (sp, top) = (s.sp.load(Ordering::Relaxed), s.top.load(Ordering::Relaxed));
                f(sp, top, s.tp.load(Ordering::Relaxed));
            }
        }
    }

    /// Calls `f(tid, coop)` for every stopped thread (`coop`: it stopped at a safepoint).
    pub fn for_each_tid(&self, slots: &[Slot], mut f: impl FnMut(i32, bool)) {
        for s in &slots[self.base..][..self.n] {
            let tid = s.tid.load(Ordering::Relaxed);
            if tid > 0 && s.acked.load(Ordering::Acquire) == self.gen {
                f(tid, s.coop.load(Ordering::Relaxed) != 0);
            }
        }
    }

    /// Whether a stopped thread could not say where its stack is (its handler recorded an
    /// empty range: it runs on an alternate signal stack, or its stack top is unknown).
    pub fn any_unscannable(&self, slots: &[Slot]) -> bool {
        slots[self.base..][..self.n].iter().any(|s| {
            s.tid.load(Ordering::Relaxed) > 0
                && s.acked.load(Ordering::Acquire) == self.gen
                && s.top.load(Ordering::Relaxed) <= s.sp.load(Ordering::Relaxed)
        })
    }

    /// Calls `f(sp, top)` with the stack range of every stopped thread (`slots` as given to
    /// `stop`): the threads that acknowledged, not those left running.
    pub fn for_each_stack(&self, slots: &[Slot], mut f: impl FnMut(usize, usize)) {
        for s in &slots[self.base..][..self.n] {
            if s.tid.load(Ordering::Relaxed) > 0 && s.acked.load(Ordering::Acquire) == self.gen {
                let (sp, top) = (s.sp.load(Ordering::Relaxed), s.top.load(Ordering::Relaxed));
                if top > sp {
                    f(sp, top);
                }
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::reached;

    #[test]
    fn generations_wrap() {
        assert!(reached(5, 5));
        assert!(reached(6, 5));
        assert!(!reached(4, 5));
        assert!(!reached(0, 1));
        assert!(reached(1, u32::MAX));
        assert!(!reached(u32::MAX, 1));
    }
}
