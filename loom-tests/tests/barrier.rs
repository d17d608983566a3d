//! Model: the concurrent mark's write barrier and its handshake with the collector (`gc`'s
//! `concurrent_cycle`, `GcCell::set` / `write_barrier`, `Gc::with` / `shade_contents`;
//! `gc::heap`'s `alloc_batch` (black allocation); `gc::cache`'s `shade`,
//! `push`, `flush`, `drain_barrier_buffers`; `gc::mark`'s `MARKING`, `mark_into_pool`, `POOL`).
//!
//! **An abstract model, written here, not the crate's code**: the real barrier and mark need
//! the page map, GC spans, a thread-local cache and real signals, so extracting them for loom
//! would be invasive. A change to the protocol in `src/gc` must be mirrored here by hand. The
//! model keeps the protocol's shared state and the orderings the code uses, step for step:
//! - objects are numbered, each with one pointer field (a loom atomic, `Relaxed`: in the crate
//!   the mutator's plain store races with the marker's volatile read, which Rust cannot say)
//!   and a mark bit (`try_mark`: a `Relaxed` load then `fetch_or`, as `GcSpan::try_mark`);
//! - `MARKING` is a `Relaxed` atomic, set and cleared while the world is stopped (the resume
//!   publishes it), cleared under the pool's lock;
//! - the pool is a lock (a spin lock on a loom atomic, its data in a loom cell) holding marked
//!   objects; `mark_into_pool` marks under it, or drops the words once `MARKING` is false;
//! - each mutator's stack slots (registers included) and its barrier buffer (`wb`, `wb_len`)
//!   are loom `UnsafeCell`s written by the mutator and read (`wb_len` reset) by the collector
//!   only while the mutator is stopped: loom reports any such access the stop does not order;
//! - stopping the world: the real collector stops a thread with a signal at any instruction
//!   (that handshake has its own model, `stw.rs`); here the mutator polls a stop word (under a
//!   loom `Mutex` with a `Condvar`) between every two steps of its work, while it waits for
//!   the pool's lock (a signal interrupts the futex wait) and while it holds it, and there
//!   waits for the resume. A mutator done with its work parks for good, its stack scanned;
//! - the markers (collector and mark workers) are the collector thread alone: it greys the
//!   roots, drains, and takes what mutators flushed to the pool, as `drain_parallel` does;
//! - an allocation is one step (the object comes back in a register; before, it was a cached
//!   slot, which termination marks): during a mark it is black, its mark bit set in that step
//!   (Go's rule: `alloc_batch` sets it under `GC_HEAP`, where `MARKING` cannot change, and the
//!   first pause marks the slots cached then); the sweep frees what was allocated and unmarked
//!   at termination, and clears the mark bits after the resume.
//!
//! The collector's cycle: phase 1, world stopped: `MARKING = true`, grey the mutators' stack
//! words, resume; phase 2, concurrent: drain (scan fields, `try_mark`, push) and the pool;
//! phase 3: lock the pool, stop, unlock, rescan the stacks forcing (`scan_range_force`: an
//! object a stack points to is scanned even if marked; not forced in the hiding and hand-off
//! models, which then prove more: see `unforced`), mark each buffer's entries
//! `[0..wb_len)` and reset `wb_len`, drain (pool included), `MARKING = false` under the pool's
//! lock, resume, sweep.
//!
//! The mutator's barrier, right after a pointer store (`GcCell::set`): if `MARKING` and the
//! stored object is unmarked, append it to the buffer (entry, then `wb_len + 1`); a full
//! buffer is flushed to the pool (`mark_into_pool`) and emptied. A new object (`Gc::new`) is
//! black during a mark, so no marker scans it: its contents are written (no barrier), then, if
//! `MARKING` (read after the write: the compiler fence), each word of them is shaded as the
//! barrier shades a stored word (`shade_contents`).
//!
//! What it proves, for every interleaving loom explores: once every thread is done, no object
//! reachable from a mutator's stack slots (through fields) was swept, and no mark bit was set
//! after the mark ended (it would outlive the sweep):
//! - `hide_behind_black` (buffer of one word: every push flushes to the pool) and
//!   `hide_behind_black_buffered` (two words: the entry waits for termination): the classic
//!   hiding move `x = A.f; A.f = null; B.f = x; barrier(x); drop x`, with `x.f = y` behind it;
//! - `new_object_holds_hidden_pointer`: `x = A.f; A.f = null; N = Gc::new(x); A.f = N`: an
//!   object allocated (black) during the mark is initialised without the barrier with a
//!   pointer cut from its old place, then linked where the old one was (the barrier skips it:
//!   it is marked) and dropped from the stack; what it points to survives only through the
//!   shading of its contents, or, for a thread stopped by termination between the write and
//!   the shading, through the forced scan of its stack;
//! - `handoff_between_mutators`: two mutators pass an object through a shared one, each move
//!   with the barrier (collector plus two mutators).
//!
//! Each property is shown able to fail: the `broken_*` models put one bug back and expect the
//! failure (`#[should_panic]`): no barrier (one mutator and two); `MARKING` read once before
//! the work (as a compiler hoisting the load out of a loop would: why the barrier's compiler
//! fence matters); termination not rescanning the stacks; termination not draining the
//! buffers; a new object's contents not shaded; `MARKING` read for that shading before the
//! contents are read and written (why `shade_contents`'s compiler fence matters); termination
//! rescanning the stacks without forcing; a flush that marks without checking `MARKING` under
//! the pool's lock; the markers never taking the pool (what the crate does with no mark
//! workers: see `broken_pool_never_taken`).
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::{Arc, Condvar, Mutex, MutexGuard};
use loom::thread;

/// A null pointer field or stack slot.
const NIL: usize = usize::MAX;
/// Objects in a model.
const NOBJ: usize = 4;
/// Stack slots of a mutator.
const NSLOT: usize = 3;
/// The largest barrier buffer of a model.
const WB_MAX: usize = 2;

/// A mutator's stop word.
const RUNNING: u8 = 0;
const REQUESTED: u8 = 1;
const STOPPED: u8 = 2;
/// Done with its work, parked for good (its stack stays, and is scanned).
const PARKED: u8 = 3;

/// What the model runs: the protocol, or it with one bug put back.
#[derive(Clone, Copy)]
struct Variant {
    /// Barrier buffer size: 1 flushes at every push, 2 leaves an entry for termination.
    cap: usize,
    /// The write barrier runs after each pointer store.
    barrier: bool,
    /// The barrier reads `MARKING` once, before the mutator's work, instead of at each store.
    stale_marking: bool,
    /// Mark termination marks the barrier buffers' entries.
    drain_buffers: bool,
    /// `Gc::new` shades the new object's contents if `MARKING` (`shade_contents`).
    shade_contents: bool,
    /// `shade_contents` reads `MARKING` before the contents are read and written.
    marking_checked_early: bool,
    /// Mark termination scans the objects the stopped stacks point to even if marked.
    force_rescan: bool,
    /// The markers take what mutators flushed to the pool.
    take_pool: bool,
    /// Mark termination rescans the stacks.
    rescan: bool,
    /// A flush marks only while `MARKING` (read under the pool's lock).
    flush_checks_marking: bool,
}

const OK: Variant = Variant {
    cap: 1,
    barrier: true,
    stale_marking: false,
    drain_buffers: true,
    shade_contents: true,
    marking_checked_early: false,
    force_rescan: true,
    take_pool: true,
    rescan: true,
    flush_checks_marking: true,
};

struct Mutator {
    /// The stop word, under a lock with a condition variable: the stop handshake's own
    /// orderings are `stw.rs`'s subject; here it only has to order the mutator's steps before
    /// the collector's reads of a stopped thread, and those after the resume.
    state: Mutex<u8>,
    cv: Condvar,
    /// Stack slots and registers: written by the mutator, read by the collector while stopped.
    stack: [UnsafeCell<usize>; NSLOT],
    /// The barrier buffer (`GcCache::wb`, `wb_len`).
    wb: [UnsafeCell<usize>; WB_MAX],
    wb_len: UnsafeCell<usize>,
}

struct World {
    v: Variant,
    field: [AtomicUsize; NOBJ],
    mark: [AtomicBool; NOBJ],
    /// Whether the object exists: written by the mutator that allocates it, read by the
    /// collector's sweep at termination (while that mutator is stopped).
    allocated: [UnsafeCell<bool>; NOBJ],
    marking: AtomicBool,
    pool: SpinLock<Vec<usize>>,
    mutators: Vec<Mutator>,
}

impl World {
    /// Objects `0..live` exist with the given fields; each mutator starts with its slots.
    fn new(v: Variant, live: usize, fields: [usize; NOBJ], stacks: &[[usize; NSLOT]]) -> World {
        World {
            v,
            field: fields.map(AtomicUsize::new),
            mark: std::array::from_fn(|_| AtomicBool::new(false)),
            allocated: std::array::from_fn(|i| UnsafeCell::new(i < live)),
            marking: AtomicBool::new(false),
            pool: SpinLock::new(Vec::new()),
            mutators: stacks
                .iter()
                .map(|s| Mutator {
                    state: Mutex::new(RUNNING),
                    cv: Condvar::new(),
                    stack: s.map(UnsafeCell::new),
                    wb: std::array::from_fn(|_| UnsafeCell::new(NIL)),
                    wb_len: UnsafeCell::new(0),
                })
                .collect(),
        }
    }

    fn try_mark(&self, o: usize) -> bool {
        !self.mark[o].load(Ordering::Relaxed) && !self.mark[o].fetch_or(true, Ordering::Relaxed)
    }

    /// `mark::mark_word`: marks `w` and queues it for scanning.
    fn mark_word(&self, w: usize, grey: &mut Vec<usize>) {
        if w != NIL && self.try_mark(w) {
            grey.push(w);
        }
    }

    // ---- the mutator's side ----------------------------------------------------------------

    /// A step boundary of mutator `me`: a stop requested now stops it here until the resume.
    fn poll(&self, me: usize) {
        let m = &self.mutators[me];
        drop(stop_here(m, m.state.lock().unwrap()));
    }

    /// Mutator `me` is done: it parks for good (a stop finds it parked), stack kept.
    fn finish(&self, me: usize) {
        let m = &self.mutators[me];
        *stop_here(m, m.state.lock().unwrap()) = PARKED;
    }

    fn slot(&self, me: usize, i: usize) -> usize {
        // SAFETY: the mutator's own slot; the collector only reads it while it is stopped.
        self.mutators[me].stack[i].with(|p| unsafe { *p })
    }

    fn set_slot(&self, me: usize, i: usize, v: usize) {
        // SAFETY: as above; loom checks the collector's reads.
        self.mutators[me].stack[i].with_mut(|p| unsafe { *p = v });
        self.poll(me);
    }

    fn load(&self, me: usize, o: usize) -> usize {
        let v = self.field[o].load(Ordering::Relaxed);
        self.poll(me);
        v
    }

    fn store(&self, me: usize, o: usize, v: usize) {
        self.field[o].store(v, Ordering::Relaxed);
        self.poll(me);
    }

    /// Allocates object `o` (fields null) into stack slot `i`, black if a mark runs. One
    /// step: the allocator hands the object out in a register, and until then it is a cached
    /// slot, which termination marks (`Caches::mark_all`); `MARKING` cannot change within it
    /// (`alloc_batch` reads it under `GC_HEAP`; a slot cached at the first pause was marked
    /// there).
    fn alloc(&self, me: usize, o: usize, i: usize) {
        if self.marking.load(Ordering::Relaxed) {
            self.mark[o].fetch_or(true, Ordering::Relaxed);
        }
        // SAFETY: only this mutator allocates `o`; the sweep reads it while we are stopped.
        self.allocated[o].with_mut(|p| unsafe { *p = true });
        self.set_slot(me, i, o);
    }

    /// The write barrier after storing `x` (`write_barrier` + `cache::shade`); `cached` is
    /// `MARKING` as read before the work (the `stale_marking` bug).
    fn barrier(&self, me: usize, x: usize, cached: bool) {
        if !self.v.barrier || x == NIL {
            return;
        }
        let marking = if self.v.stale_marking {
            cached
        } else {
            let m = self.marking.load(Ordering::Relaxed);
            self.poll(me);
            m
        };
        if marking {
            self.shade(me, x);
        }
    }

    /// `cache::shade`: pushes `x` if it is unmarked.
    fn shade(&self, me: usize, x: usize) {
        if x == NIL {
            return;
        }
        let marked = self.mark[x].load(Ordering::Relaxed);
        self.poll(me);
        if !marked {
            self.push(me, x);
        }
    }

    /// `shade_contents`, after the contents of the new object `o` are written: if a mark
    /// runs, shades the word `o` holds (read back from the object, as `shade_words` does).
    /// `early` is `MARKING` as read before the contents (the `marking_checked_early` bug).
    fn shade_contents(&self, me: usize, o: usize, early: bool) {
        if !self.v.shade_contents {
            return;
        }
        let marking = if self.v.marking_checked_early {
            early
        } else {
            let m = self.marking.load(Ordering::Relaxed);
            self.poll(me);
            m
        };
        if marking {
            let w = self.field[o].load(Ordering::Relaxed);
            self.poll(me);
            self.shade(me, w);
        }
    }

    /// `cache::push`: the entry, then the count; a full buffer is flushed.
    fn push(&self, me: usize, w: usize) {
        let m = &self.mutators[me];
        // SAFETY: our own buffer (the collector touches it only while we are stopped).
        let n = m.wb_len.with(|p| unsafe { *p });
        self.poll(me);
        // A termination that emptied the buffer while we were stopped leaves `n` stale, as in
        // the crate (harmless: the stale entries were marked by that termination).
        m.wb[n].with_mut(|p| unsafe { *p = w });
        self.poll(me);
        m.wb_len.with_mut(|p| unsafe { *p = n + 1 });
        self.poll(me);
        if n + 1 == self.v.cap {
            self.flush(me);
        }
    }

    /// `cache::flush` + `mark::mark_into_pool`.
    fn flush(&self, me: usize) {
        let m = &self.mutators[me];
        // SAFETY: our own buffer, as in `push`.
        let n = m.wb_len.with(|p| unsafe { *p }).min(self.v.cap);
        let words: Vec<usize> = (0..n).map(|i| m.wb[i].with(|p| unsafe { *p })).collect();
        self.poll(me);
        // A signal interrupts the wait for the lock: the thread stops while it waits.
        let mut pool = self.pool.lock(|| self.poll(me));
        // A stop may come here too (the phase-1 stop does not take the pool's lock).
        self.poll(me);
        if !self.v.flush_checks_marking || self.marking.load(Ordering::Relaxed) {
            for w in words {
                self.mark_word(w, &mut pool);
            }
        }
        drop(pool);
        self.poll(me);
        m.wb_len.with_mut(|p| unsafe { *p = 0 });
        self.poll(me);
    }

    // ---- the collector's side --------------------------------------------------------------

    /// Stops every mutator (a parked one stays parked).
    fn stop(&self) {
        for m in &self.mutators {
            let mut s = m.state.lock().unwrap();
            if *s == RUNNING {
                *s = REQUESTED;
                while *s != STOPPED {
                    s = m.cv.wait(s).unwrap();
                }
            }
        }
    }

    fn resume(&self) {
        for m in &self.mutators {
            let mut s = m.state.lock().unwrap();
            if *s == STOPPED {
                *s = RUNNING;
                m.cv.notify_all();
            }
        }
    }

    /// Greys every stopped mutator's stack words; with `force` (mark termination,
    /// `mark::scan_range_force`), an object they point to is queued even if marked.
    fn scan_stacks(&self, grey: &mut Vec<usize>, force: bool) {
        for m in &self.mutators {
            for s in &m.stack {
                // SAFETY: the mutator is stopped or parked; loom checks the ordering.
                let w = s.with(|p| unsafe { *p });
                if force && w != NIL {
                    self.try_mark(w);
                    grey.push(w);
                } else {
                    self.mark_word(w, grey);
                }
            }
        }
    }

    /// Scans grey objects until none is left (taking the pool too, if `take_pool`).
    fn drain(&self, grey: &mut Vec<usize>) {
        loop {
            while let Some(o) = grey.pop() {
                let w = self.field[o].load(Ordering::Relaxed);
                self.mark_word(w, grey);
            }
            if !self.v.take_pool {
                return;
            }
            let mut pool = self.pool.lock(|| ());
            if pool.is_empty() {
                return;
            }
            grey.append(&mut *pool);
        }
    }

    /// One concurrent cycle; returns what the sweep frees.
    fn cycle(&self) -> [bool; NOBJ] {
        let mut grey = Vec::new();
        // Phase 1.
        self.stop();
        self.marking.store(true, Ordering::Relaxed);
        self.scan_stacks(&mut grey, false);
        self.resume();
        // Phase 2.
        self.drain(&mut grey);
        // Phase 3.
        let pool = self.pool.lock(|| ());
        self.stop();
        drop(pool);
        if self.v.rescan {
            self.scan_stacks(&mut grey, self.v.force_rescan);
        }
        if self.v.drain_buffers {
            for m in &self.mutators {
                // SAFETY: the mutator is stopped or parked; loom checks the ordering.
                let n = m.wb_len.with(|p| unsafe { *p }).min(self.v.cap);
                for e in &m.wb[..n] {
                    let w = e.with(|p| unsafe { *p });
                    self.mark_word(w, &mut grey);
                }
                m.wb_len.with_mut(|p| unsafe { *p = 0 });
            }
        }
        self.drain(&mut grey);
        {
            let _pool = self.pool.lock(|| ());
            self.marking.store(false, Ordering::Relaxed);
        }
        // What the sweep frees: allocated and unmarked at termination.
        let freed = std::array::from_fn(|o| {
            // SAFETY: every mutator is stopped or parked.
            let a = self.allocated[o].with(|p| unsafe { *p });
            a && !self.mark[o].load(Ordering::Relaxed)
        });
        self.resume();
        // The sweep, after the resume, clears the mark bits for the next cycle.
        for m in &self.mark {
            m.store(false, Ordering::Relaxed);
        }
        freed
    }

    /// After every thread is done: nothing reachable from a mutator's stack was freed, and no
    /// mark was set after the mark ended (it would outlive the sweep, and the next cycle
    /// would take the object for scanned, leaving what it points to unmarked).
    fn check(&self, freed: &[bool; NOBJ]) {
        for o in 0..NOBJ {
            assert!(
                !self.mark[o].load(Ordering::Relaxed),
                "object {o} marked after the mark ended"
            );
        }
        for me in 0..self.mutators.len() {
            for i in 0..NSLOT {
                let mut o = self.slot(me, i);
                let mut hops = 0;
                while o != NIL && hops <= NOBJ {
                    assert!(!freed[o], "object {o} freed while reachable (mutator {me})");
                    o = self.field[o].load(Ordering::Relaxed);
                    hops += 1;
                }
            }
        }
    }
}

/// The pool's lock (`sync::Mutex`, a futex lock): a spin lock whose data is a loom cell, so
/// loom reports an access without it. (Not loom's `Mutex`: its `try_lock` blocks the thread
/// while another holds the lock, which would hide the stop of a thread waiting for it.)
struct SpinLock<T> {
    held: AtomicBool,
    data: UnsafeCell<T>,
}

struct SpinGuard<'a, T>(&'a SpinLock<T>);

impl<T> SpinLock<T> {
    fn new(v: T) -> Self {
        SpinLock {
            held: AtomicBool::new(false),
            data: UnsafeCell::new(v),
        }
    }

    /// Takes the lock, running `waiting` between tries.
    fn lock(&self, waiting: impl Fn()) -> SpinGuard<'_, T> {
        while self
            .held
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            waiting();
            thread::yield_now();
        }
        SpinGuard(self)
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        self.0.held.store(false, Ordering::Release);
    }
}

impl<T> std::ops::Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the lock is held; loom checks it.
        self.0.data.with(|p| unsafe { &*p })
    }
}

impl<T> std::ops::DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as above.
        self.0.data.with_mut(|p| unsafe { &mut *p })
    }
}

/// Takes a requested stop: acknowledges it and waits for the resume.
fn stop_here<'a>(m: &'a Mutator, mut s: MutexGuard<'a, u8>) -> MutexGuard<'a, u8> {
    loop {
        match *s {
            REQUESTED => {
                *s = STOPPED;
                m.cv.notify_all();
            }
            // The next stop may be requested before this thread wakes from the resume.
            STOPPED => s = m.cv.wait(s).unwrap(),
            _ => return s,
        }
    }
}

/// Runs `mutators` beside one collector cycle, then checks the heap.
fn run(w: World, mutators: &[fn(&World, usize)]) {
    let w = Arc::new(w);
    let hs: Vec<_> = mutators
        .iter()
        .enumerate()
        .map(|(me, &f)| {
            let w = w.clone();
            thread::spawn(move || {
                f(&w, me);
                w.finish(me);
            })
        })
        .collect();
    let freed = w.cycle();
    for h in hs {
        h.join().unwrap();
    }
    w.check(&freed);
}

/// `loom::model` with a preemption bound of at least 3 (CI's `LOOM_MAX_PREEMPTIONS=2` explores
/// these small models in milliseconds; at 3 the largest takes a few seconds).
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = b.preemption_bound.map(|p| p.max(3));
    b.check(f);
}

/// `v` with termination's stack rescan not forced: for the hiding and hand-off models, whose
/// objects written without the barrier (B, C) stay on the stack, where the crate's forced
/// rescan would scan them again and hide the bugs those models put back (in the crate such a
/// bug needs the object written to be reached from the stacks only through another one, which
/// the forced rescan does not scan again). The forced rescan only adds marks while the world
/// is stopped, so a protocol that keeps every reachable object without it keeps them with it.
fn unforced(v: Variant) -> Variant {
    Variant {
        force_rescan: false,
        ..v
    }
}

// Objects of `hide_behind_black`.
const A: usize = 0;
const B: usize = 1;
const X: usize = 2;
const Y: usize = 3;

/// `x = A.f; A.f = null; B.f = x; barrier(x); drop x` with `x.f = y`: stack `[A, B, reg]`.
fn hide(w: &World, me: usize) {
    let cached = w.v.stale_marking && {
        let m = w.marking.load(Ordering::Relaxed);
        w.poll(me);
        m
    };
    let x = w.load(me, A);
    w.set_slot(me, 2, x);
    w.store(me, A, NIL);
    w.store(me, B, x);
    w.barrier(me, x, cached);
    w.set_slot(me, 2, NIL);
}

fn hide_world(v: Variant) -> World {
    World::new(unforced(v), 4, [X, NIL, Y, NIL], &[[A, B, NIL]])
}

#[test]
fn hide_behind_black() {
    model(|| run(hide_world(OK), &[hide]));
}

#[test]
fn hide_behind_black_buffered() {
    model(|| run(hide_world(Variant { cap: 2, ..OK }), &[hide]));
}

#[test]
#[should_panic(expected = "freed while reachable")]
fn broken_no_barrier() {
    model(|| {
        let v = Variant {
            barrier: false,
            ..OK
        };
        run(hide_world(v), &[hide])
    });
}

#[test]
#[should_panic(expected = "freed while reachable")]
fn broken_stale_marking() {
    model(|| {
        let v = Variant {
            stale_marking: true,
            ..OK
        };
        run(hide_world(v), &[hide])
    });
}

#[test]
#[should_panic(expected = "freed while reachable")]
fn broken_termination_skips_buffers() {
    model(|| {
        let v = Variant {
            cap: 2,
            drain_buffers: false,
            ..OK
        };
        run(hide_world(v), &[hide])
    });
}

/// The markers never take the pool: what `concurrent_cycle` does with no mark workers
/// (`GOMALLOC_GC_WORKERS=0`, or one CPU), since `mark::drain_with_workers` then only drains
/// the collector's own stack. An object flushed to the pool is marked but never scanned, so
/// what only it points to is swept.
#[test]
#[should_panic(expected = "freed while reachable")]
fn broken_pool_never_taken() {
    model(|| {
        let v = Variant {
            take_pool: false,
            ..OK
        };
        run(hide_world(v), &[hide])
    });
}

#[test]
#[should_panic(expected = "freed while reachable")]
fn broken_no_stack_rescan() {
    model(|| {
        let v = Variant {
            rescan: false,
            ..OK
        };
        run(hide_world(v), &[hide])
    });
}

#[test]
#[should_panic(expected = "marked after the mark ended")]
fn broken_flush_after_termination_marks() {
    model(|| {
        let v = Variant {
            flush_checks_marking: false,
            ..OK
        };
        run(hide_world(v), &[hide])
    });
}

// Objects of `new_object_holds_hidden_pointer`: A (old), X (behind A), N (new).
const N: usize = 3;

/// `x = A.f; A.f = null; N = Gc::new(x); A.f = N; barrier(N); drop N`: stack `[A, N, reg]`.
/// `Gc::new` allocates `N` (black during a mark), writes `x` into it without the barrier (the
/// register holding `x` is dead once the object holds it), then `shade_contents`.
fn init_new(w: &World, me: usize) {
    // `MARKING` as a `shade_contents` without its compiler fence could read it: before the
    // contents are read and written (the `marking_checked_early` bug).
    let early = w.v.marking_checked_early && {
        let m = w.marking.load(Ordering::Relaxed);
        w.poll(me);
        m
    };
    let x = w.load(me, A);
    w.set_slot(me, 2, x);
    w.store(me, A, NIL);
    w.alloc(me, N, 1);
    // The initialisation: no barrier.
    w.store(me, N, x);
    w.set_slot(me, 2, NIL);
    w.shade_contents(me, N, early);
    w.store(me, A, N);
    w.barrier(me, N, true);
    w.set_slot(me, 1, NIL);
}

fn new_world(v: Variant) -> World {
    World::new(v, 3, [X, NIL, NIL, NIL], &[[A, NIL, NIL]])
}

#[test]
fn new_object_holds_hidden_pointer() {
    model(|| run(new_world(OK), &[init_new]));
}

/// `Gc::new` does not shade the contents: `N`, allocated black after the first pause, is
/// never scanned (the barrier storing it into `A` skips it, being marked, and termination
/// finds it no more on the stack), so `X`, reachable only through it, is swept.
#[test]
#[should_panic(expected = "object 2 freed while reachable")]
fn broken_new_contents_not_shaded() {
    model(|| {
        let v = Variant {
            shade_contents: false,
            ..OK
        };
        run(new_world(v), &[init_new])
    });
}

/// `MARKING` read before the contents are read and written, as a compiler could move the load
/// without the compiler fence in `shade_contents`: it finds no mark, the first pause comes
/// after it, and the contents loaded and written after the pause are never shaded (`N` is
/// black, or white and scanned by the markers before the write). (Read after the contents are
/// loaded but before the write, `MARKING` is harmless: the first pause then greys the register
/// that holds them.)
#[test]
#[should_panic(expected = "object 2 freed while reachable")]
fn broken_marking_checked_before_init() {
    model(|| {
        let v = Variant {
            marking_checked_early: true,
            ..OK
        };
        run(new_world(v), &[init_new])
    });
}

/// Mark termination rescans the stacks without forcing: a thread stopped between the write of
/// the contents and their shading holds `N` (marked at allocation, never scanned) only on its
/// stack, the register that held `X` already reused; the plain rescan skips `N` as marked, `X`
/// is swept, and the shading after the resume finds the mark over.
#[test]
#[should_panic(expected = "object 2 freed while reachable")]
fn broken_termination_not_forced() {
    model(|| {
        let v = Variant {
            force_rescan: false,
            ..OK
        };
        run(new_world(v), &[init_new])
    });
}

// Objects of `handoff_between_mutators`: P (mutator 0's), S (shared), C (mutator 1's), X.
const P: usize = 0;
const S: usize = 1;
const C: usize = 2;
const XH: usize = 3;

/// Mutator 0: `x = P.f; P.f = null; S.f = x; barrier(x); drop x`: stack `[P, S, reg]`.
fn give(w: &World, me: usize) {
    let x = w.load(me, P);
    w.set_slot(me, 2, x);
    w.store(me, P, NIL);
    w.store(me, S, x);
    w.barrier(me, x, true);
    w.set_slot(me, 2, NIL);
}

/// Mutator 1: `y = S.f; if y { S.f = null; C.f = y; barrier(y) }; drop y`: stack `[S, C, reg]`.
fn take(w: &World, me: usize) {
    let y = w.load(me, S);
    if y == NIL {
        return;
    }
    w.set_slot(me, 2, y);
    w.store(me, S, NIL);
    w.store(me, C, y);
    w.barrier(me, y, true);
    w.set_slot(me, 2, NIL);
}

fn handoff_world(v: Variant) -> World {
    World::new(
        unforced(v),
        4,
        [XH, NIL, NIL, NIL],
        &[[P, S, NIL], [S, C, NIL]],
    )
}

#[test]
fn handoff_between_mutators() {
    model(|| run(handoff_world(OK), &[give, take]));
}

#[test]
#[should_panic(expected = "freed while reachable")]
fn broken_handoff_no_barrier() {
    model(|| {
        let v = Variant {
            barrier: false,
            ..OK
        };
        run(handoff_world(v), &[give, take])
    });
}
