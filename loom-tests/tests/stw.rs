//! Model: the collector's stop-the-world handshake (`gc::stw::handshake`, the code the real
//! `gc::stw` runs), with signals simulated: "sending" the signal sets the thread's pending bit
//! (Release, as `tgkill` orders the sender's writes before the handler), and each simulated
//! mutator runs the real handler code at the points of its own work where it polls the bit and
//! does not block the signal (Acquire), again right after a handler if a signal came meanwhile,
//! the way the kernel delivers a signal held pending while its handler ran. A mutator's stack
//! is a loom cell that it writes at every step of its work and whose value it gives its handler
//! as its stack pointer: the collector reads it for every stopped thread, so loom reports any
//! read not ordered after the handler's acknowledgement, or any write of a thread that left its
//! handler before the collector resumed it. A stopped mutator polls for the resume once (the
//! crate's `Spinner`, cut to one turn), then sleeps on the futex: both ways of waiting are
//! explored.
//!
//! What it proves, for every interleaving loom explores:
//! - `stop_sees_frozen_stacks` (one collector, two mutators, one stop; the stop ends on a count
//!   of the live threads, or lists them when the count shows more): after `stop` returns,
//!   every live mutator is stopped, its recorded stack (`sp`/`top`) and its stack's contents
//!   are visible to the collector, and no mutator leaves its handler before the resume.
//! - `pending_signal_across_cycles` (two stops in a row, threads that stay in their handler
//!   past the grace period are left running): a mutator still in the handler of the first stop
//!   when the second begins takes the second signal afterwards, nothing deadlocks, and no
//!   handler leaves before the stop it acknowledged is resumed.
//! - `late_handler_of_thread_left_running` (a mutator blocks the signal at first, or is slow in
//!   its handler, so the first stop leaves it running with its tid negated; its handler then
//!   runs late, maybe during the next stop, which waits for every thread): it never blocks
//!   forever and the next stop stops and scans every live mutator. It found a real race (a
//!   delayed handler wrote into its slot after the next stop gave that slot to another
//!   thread), fixed since; see the test's comment.
//!
//! - `parked_thread_is_held`, `parked_across_cycles`: threads parked in `gc::blocking`, held
//!   by a stop without their signal (see the tests).
//! - `safepoint_stops`, `safepoint_across_cycles`: threads that stop at a safepoint (the
//!   crate's `stw::poll`: the handler's steps run by the thread itself, the signal blocked),
//!   the hinted one with its signal deferred, mixed with handler stops (see the tests).
//!
//! Breaking the protocol makes the models fail: the acknowledgement stored Relaxed (loom: a
//! causality violation on the stack cell in all three), the resume stored Relaxed (the same,
//! on the write after the handler), or a handler waiting for `RESUMED == gen` rather than
//! "reached gen" (`pending_signal_across_cycles`: a thread left running while in the handler
//! of the earlier stop spins forever once a later stop has resumed).
#![cfg(loom)]

use gomalloc::gc::stw::handshake::{Handshake, Park, Slot, World};
use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use loom::sync::Arc;
use loom::thread;

/// A simulated thread's signal state: running, a signal pending, or exited.
const RUNNING: u8 = 0;
const PENDING: u8 = 1;
const EXITED: u8 = 2;
/// Simulated stack tops: `TOP + index` (above any stack pointer, which is a step number).
const TOP: usize = 1000;

/// One simulated mutator thread.
struct Mutator {
    tid: i32,
    /// The kernel's view: pending signal, exited.
    signal: AtomicU8,
    /// The signal is blocked (by the thread's mask, or because its handler is running).
    blocked: AtomicBool,
    /// Its stack: written by its own work, frozen while it is stopped.
    stack: UnsafeCell<usize>,
}

/// A simulated process: the handshake, its slot table, its mutators.
struct Proc {
    hs: Handshake,
    slots: Vec<Slot>,
    /// Each mutator's park record (`gc::blocking`).
    parks: Vec<Park>,
    mutators: Vec<Mutator>,
    /// Whether the collector's current stop leaves running a thread found with the signal
    /// blocked (the real collector does after `BLOCKED_GRACE_MS`; loom picks when it looks).
    /// Only the collector touches it: not part of the model.
    give_up_blocked: std::sync::atomic::AtomicBool,
    /// The generation stopped while the world is stopped (0 otherwise), for the mutators'
    /// check that they leave their handler only after the resume.
    stopped: AtomicU32,
    /// Whether the hint says the hinted mutator stops at safepoints (its signal deferred).
    hint_coop: bool,
}

impl Proc {
    fn new(n: usize) -> Proc {
        Proc {
            hs: Handshake::new(),
            // Room for the windows of a few stops: a stop that leaves a thread running moves
            // the next one past its slots (until the window wraps after half the table).
            slots: (0..8).map(|_| Slot::new()).collect(),
            parks: (0..n).map(|i| Park::new(100 + i as i32)).collect(),
            mutators: (0..n)
                .map(|i| Mutator {
                    tid: 100 + i as i32,
                    signal: AtomicU8::new(RUNNING),
                    blocked: AtomicBool::new(false),
                    stack: UnsafeCell::new(0),
                })
                .collect(),
            give_up_blocked: std::sync::atomic::AtomicBool::new(false),
            stopped: AtomicU32::new(0),
            hint_coop: false,
        }
    }

    fn mutator(&self, tid: i32) -> &Mutator {
        &self.mutators[(tid - 100) as usize]
    }

    /// Mutator `me`'s step `k` of its own work: writes its stack, then takes any pending
    /// signal (unless it blocks the signal).
    fn step(&self, me: usize, k: usize) {
        self.mutators[me].stack.with_mut(|v| {
            // SAFETY: only this thread writes its stack; loom checks the collector's reads.
            unsafe { *v = k }
        });
        self.deliver(me);
    }

    /// The kernel delivering the pending signal to mutator `me`, again after each handler if
    /// one came meanwhile: runs the real handler code.
    fn deliver(&self, me: usize) {
        let m = &self.mutators[me];
        if m.blocked.load(Ordering::Relaxed) {
            return;
        }
        while m
            .signal
            .compare_exchange(PENDING, RUNNING, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            self.stop_here(me, false);
        }
    }

    /// Mutator `me` runs the real handler code with the signal blocked: from its handler, or
    /// at a safepoint (`coop`).
    fn stop_here(&self, me: usize, coop: bool) {
        let m = &self.mutators[me];
        m.blocked.store(true, Ordering::Relaxed);
        // SAFETY: reads this thread's own stack.
        let sp = m.stack.with(|v| unsafe { *v });
        if let Some(gen) =
            self.hs
                .on_signal(&self.slots, m.tid, sp, TOP + me, 0, coop, &mut poll_once)
        {
            assert_ne!(
                self.stopped.load(Ordering::Relaxed),
                gen,
                "a thread left its handler or safepoint before the world was resumed"
            );
        }
        m.blocked.store(false, Ordering::Relaxed);
    }

    /// Mutator `me`'s step `k` at a safepoint (the crate's `stw::poll` at a GC allocation):
    /// writes its stack, then, if a stop waits for safepoints, blocks the signal, runs the
    /// handler code itself (`coop`), and unblocks, taking a signal that came meanwhile.
    fn safepoint_step(&self, me: usize, k: usize) {
        self.mutators[me].stack.with_mut(|v| {
            // SAFETY: only this thread writes its stack; loom checks the collector's reads.
            unsafe { *v = k }
        });
        if self.hs.poll() != 0 && !self.mutators[me].blocked.load(Ordering::Relaxed) {
            self.stop_here(me, true);
        }
        self.deliver(me);
    }

    /// Mutator `me` blocks (`true`) or unblocks the signal, taking a pending one on unblocking.
    fn block(&self, me: usize, on: bool) {
        self.mutators[me].blocked.store(on, Ordering::Relaxed);
        if !on {
            self.deliver(me);
        }
    }

    /// Mutator `me` in a blocking scope (`gc::blocking`): parks with its stack as it is, may
    /// take a signal while "in the kernel", then leaves the park (waiting for the resume of a
    /// stop that holds it). Its next step writes its stack.
    fn blocking(&self, me: usize) {
        // SAFETY: reads this thread's own stack.
        let sp = self.mutators[me].stack.with(|v| unsafe { *v });
        self.hs.park(&self.parks[me], sp, TOP + me, 0);
        self.deliver(me);
        self.hs.unpark(&self.parks[me], &mut poll_once);
    }

    /// Mutator `me` exits; a signal still pending is lost with it.
    fn exit(&self, me: usize) {
        self.mutators[me].signal.swap(EXITED, Ordering::AcqRel);
    }

    /// The collector's cycle: stop (leaving running threads that block the signal if
    /// `give_up_blocked`), check every stack, resume. Returns how many were stopped.
    fn cycle(&self, give_up_blocked: bool) -> usize {
        self.give_up_blocked
            .store(give_up_blocked, std::sync::atomic::Ordering::Relaxed);
        let stopped = self
            .hs
            .stop(&self.slots, &self.parks, self)
            .expect("stop failed");
        self.stopped.store(stopped.gen(), Ordering::Relaxed);
        let mut seen = [false; 2];
        stopped.for_each_stack(&self.slots, |sp, top| {
            let me = top - TOP;
            assert!(!seen[me], "a thread stopped twice");
            seen[me] = true;
            // SAFETY: the thread is stopped; loom checks the ordering.
            let v = self.mutators[me].stack.with(|v| unsafe { *v });
            assert_eq!(v, sp, "the recorded stack pointer is not the stack's");
        });
        if !give_up_blocked {
            // Every mutator is stopped unless it exited (it cannot exit while stopped).
            for (me, m) in self.mutators.iter().enumerate() {
                assert!(
                    seen[me] || m.signal.load(Ordering::Acquire) == EXITED,
                    "a live thread was not stopped: {me} {seen:?} gen {} sig {} blocked {}",
                    stopped.gen(),
                    m.signal.load(Ordering::SeqCst),
                    m.blocked.load(Ordering::SeqCst)
                );
            }
        }
        self.stopped.store(0, Ordering::Relaxed);
        self.hs.resume(stopped);
        seen.iter().filter(|&&s| s).count()
    }
}

/// A stopped mutator's `spin`: polls once for the resume (the crate's `Spinner`, cut short),
/// then sleeps on the futex, so that both ways of waiting are explored.
fn poll_once(turn: u32) -> bool {
    if turn == 1 {
        thread::yield_now();
    }
    turn == 1
}

/// One execution of a model: mutator `me` of `proc` runs `work(&p, me)` and exits, beside the
/// collector's cycles (`give_up_blocked` for each, in order).
fn run(proc: Proc, cycles: &[bool], work: fn(&Proc, usize)) {
    let p = Arc::new(proc);
    let hs: Vec<_> = (0..p.mutators.len())
        .map(|me| {
            let p = p.clone();
            thread::spawn(move || {
                work(&p, me);
                p.exit(me);
            })
        })
        .collect();
    for &give_up_blocked in cycles {
        p.cycle(give_up_blocked);
    }
    for h in hs {
        h.join().unwrap();
    }
}

impl World for Proc {
    fn threads(&self, f: &mut dyn FnMut(i32)) -> bool {
        for m in &self.mutators {
            if m.signal.load(Ordering::Acquire) != EXITED {
                f(m.tid);
            }
        }
        true
    }

    /// As the crate's `Linux` world, a count of the threads alive (here the mutators not
    /// exited) that equals the threads stopped ends the stop without a listing.
    fn same_threads(&self, stopped: usize) -> bool {
        self.mutators
            .iter()
            .filter(|m| m.signal.load(Ordering::Acquire) != EXITED)
            .count()
            == stopped
    }

    /// As the crate's `Linux` world, the threads the last stop stopped are hinted: here the
    /// first mutator always (exited or not), so a stop signals it before its first listing,
    /// which then ends the stop or finds the others.
    fn hint(&self, f: &mut dyn FnMut(i32, bool)) {
        f(self.mutators[0].tid, self.hint_coop);
    }

    /// The wait for safepoints: loom decides how long it lasts (one turn, or until it ends).
    fn keep_polling(&self, turn: u64) -> bool {
        thread::yield_now();
        turn < 2
    }

    fn signal(&self, tid: i32) -> bool {
        self.mutator(tid)
            .signal
            .fetch_update(Ordering::Release, Ordering::Relaxed, |s| {
                (s != EXITED).then_some(PENDING)
            })
            .is_ok()
    }

    fn keep_waiting(&self, tid: i32, _turn: u64) -> bool {
        let m = self.mutator(tid);
        if m.signal.load(Ordering::Relaxed) == EXITED {
            return false;
        }
        if self
            .give_up_blocked
            .load(std::sync::atomic::Ordering::Relaxed)
            && m.blocked.load(Ordering::Relaxed)
        {
            return false;
        }
        thread::yield_now();
        true
    }
}

#[test]
fn stop_sees_frozen_stacks() {
    loom::model(|| {
        run(Proc::new(2), &[false], |p, me| {
            p.step(me, 1);
            p.step(me, 2);
        })
    });
}

#[test]
fn pending_signal_across_cycles() {
    loom::model(|| {
        run(Proc::new(1), &[true, true], |p, me| {
            p.step(me, 1);
            p.step(me, 2);
        })
    });
}

/// Found a real bug of the protocol (also in the code before the extraction): mutator 0 takes
/// the first stop's signal and its handler finds its slot (0), then is delayed; the collector,
/// finding the signal blocked (the handler blocks it), leaves it running (tid negated) and
/// resumes. The second stop reused slot 0 for mutator 1, which recorded its stack and
/// acknowledged generation 2; only then did mutator 0's delayed stores land, overwriting
/// mutator 1's `sp`/`top` ("a live thread was not stopped": mutator 1's stack unscanned; with
/// mutator 0 exited, a freed stack scanned). Fixed by moving the next stop's window of slots
/// past a stop that left a thread running (`next_base`), the window read in one load.
#[test]
fn late_handler_of_thread_left_running() {
    // The first stop may leave the late thread (0) running; the second waits for every
    // thread and checks that each live one is stopped and scanned.
    loom::model(|| {
        run(Proc::new(2), &[true, false], |p, me| {
            if me == 0 {
                p.block(me, true);
                p.step(me, 1);
                p.block(me, false);
            } else {
                p.step(me, 1);
            }
        })
    });
}

/// Safepoints (`stw::poll`): the hinted mutator's signal is deferred while the stop waits for
/// it to reach a safepoint, and every mutator polls at each step, so a thread may stop at a
/// safepoint or in its handler (its signal sent after the wait, or before it polled), with
/// the signal arriving while it waits at the safepoint. Every live mutator is stopped and
/// scanned, nobody leaves before the resume, and nothing deadlocks. A wait that takes the
/// slot of a thread its deferred signal found gone for a live one fails both safepoint
/// models. (A deferred signal never sent is not caught here: these mutators poll again or
/// exit; the crate's `keep_waiting` sends the signal again to a thread late by 1 ms.)
#[test]
fn safepoint_stops() {
    loom::model(|| {
        let mut proc = Proc::new(2);
        proc.hint_coop = true;
        run(proc, &[false], |p, me| {
            p.safepoint_step(me, 1);
            if me == 0 {
                p.safepoint_step(me, 2);
            }
        })
    });
}

/// Two stops in a row of a thread that stops at safepoints: a signal left pending from the
/// first (sent when the wait ended, taken after the resume) finds the second stop or none.
#[test]
fn safepoint_across_cycles() {
    loom::model(|| {
        let mut proc = Proc::new(1);
        proc.hint_coop = true;
        run(proc, &[false, false], |p, me| {
            p.safepoint_step(me, 1);
            p.safepoint_step(me, 2);
        })
    });
}

/// A thread parked in `gc::blocking` is held by the stop without its signal (or, if it left
/// the park first, stopped by its signal), its stack as it parked is what the collector reads,
/// and it writes its stack again only after the resume of a stop that held it. A leave that
/// does not wait for the resume fails it (a causality violation on the stack).
#[test]
fn parked_thread_is_held() {
    loom::model(|| {
        run(Proc::new(2), &[false], |p, me| {
            p.step(me, 1);
            if me == 0 {
                p.blocking(me);
                p.step(me, 2);
            }
        })
    });
}

/// Two stops and a thread that parks twice: a park held by the first stop and not yet left
/// is held again by the second (which the thread then waits for), or the thread left and
/// parked again in between.
#[test]
fn parked_across_cycles() {
    loom::model(|| {
        run(Proc::new(1), &[false, false], |p, me| {
            p.step(me, 1);
            p.blocking(me);
            p.step(me, 2);
            p.blocking(me);
        })
    });
}
