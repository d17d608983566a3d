//! Model: the parallel markers' termination protocol (`gc::mark::drain_parallel`), with a
//! marker that pauses (Go's fractional or idle worker: `mark::Duty`).
//!
//! The protocol, as in `mark.rs`: each marker drains its own grey stack, keeps the shared pool
//! stocked (half of its stack when the pool is empty), takes from the pool when its stack is
//! empty, and otherwise leaves `ACTIVE`; an idle marker re-enters `ACTIVE` *before* it takes
//! from the pool, and returns once it reads `ACTIVE == 0` and then an empty pool. A pausing
//! marker first gives its whole stack to the pool, then leaves `ACTIVE`, pauses, and comes back
//! through the idle loop. The first marker to see the end sets `DRAIN_END`, and the others
//! return from their idle loops once they see it, even if a mutator's flush has put an
//! object in the pool since (the collector's next drain takes it).
//!
//! What it proves, for every interleaving loom explores (two markers, a five-object graph, and
//! a mutator that flushes one more grey object into the pool at any point): every marker
//! returns with an empty stack, and once both have (the collector waits for its workers'
//! `DONE` before it goes on) and the collector has drained the pool once more (its next drain,
//! as `concurrent_cycle`'s loop does), every reachable object was scanned exactly once and
//! nothing is left. (A marker may return while another still holds grey objects: the one
//! holding them scans them before it returns.) The broken variant, a pausing marker
//! that gives its stack to the pool but does not leave `ACTIVE` (and so counts itself twice
//! when it re-enters from the idle loop), keeps `ACTIVE` from reaching 0: loom reports the
//! markers spinning forever ("Model exceeded maximum number of branches"), or, on a path where
//! the pausing marker re-enters first, the check that no marker is counted twice.
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;

/// Objects 0..5: 0 -> {1, 2}, 1 -> {3}, 2 -> {4}; object 5 reached only through a mutator's
/// flush.
const NOBJ: usize = 6;
fn children(o: usize) -> &'static [usize] {
    match o {
        0 => &[1, 2],
        1 => &[3],
        2 => &[4],
        _ => &[],
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Correct,
    /// The pausing marker does not leave `ACTIVE`.
    PauseStaysActive,
}

struct Markers {
    v: Variant,
    marked: [AtomicBool; NOBJ],
    scanned: [AtomicUsize; NOBJ],
    pool: Mutex<Vec<usize>>,
    pool_len: AtomicUsize,
    active: AtomicUsize,
    drain_end: AtomicBool,
}

impl Markers {
    fn new(v: Variant) -> Markers {
        Markers {
            v,
            marked: core::array::from_fn(|_| AtomicBool::new(false)),
            scanned: core::array::from_fn(|_| AtomicUsize::new(0)),
            pool: Mutex::new(Vec::new()),
            pool_len: AtomicUsize::new(0),
            active: AtomicUsize::new(2),
            drain_end: AtomicBool::new(false),
        }
    }

    /// Scans a grey object: marks its children and queues them.
    fn scan(&self, o: usize, grey: &mut Vec<usize>) {
        self.scanned[o].fetch_add(1, Ordering::Relaxed);
        for &c in children(o) {
            if !self.marked[c].swap(true, Ordering::AcqRel) {
                grey.push(c);
            }
        }
    }

    fn give(&self, grey: &mut Vec<usize>, n: usize) {
        let mut pool = self.pool.lock().unwrap();
        for _ in 0..n {
            match grey.pop() {
                Some(o) => pool.push(o),
                None => break,
            }
        }
        self.pool_len.store(pool.len(), Ordering::Release);
    }

    fn take(&self, grey: &mut Vec<usize>) -> bool {
        let mut pool = self.pool.lock().unwrap();
        let got = !pool.is_empty();
        grey.append(&mut pool);
        self.pool_len.store(0, Ordering::Release);
        got
    }

    /// One marker: `pauses` once, after its first scan.
    fn run(&self, mut grey: Vec<usize>, pauses: bool) {
        let mut paused = !pauses;
        loop {
            // Drain, keeping the pool stocked; maybe pause.
            let mut preempted = false;
            while let Some(o) = grey.pop() {
                self.scan(o, &mut grey);
                if grey.len() > 1 && self.pool_len.load(Ordering::Relaxed) == 0 {
                    let half = grey.len() / 2;
                    self.give(&mut grey, half);
                }
                if !paused {
                    paused = true;
                    preempted = true;
                    break;
                }
            }
            if preempted {
                let n = grey.len();
                self.give(&mut grey, n);
                if self.v != Variant::PauseStaysActive {
                    self.active.fetch_sub(1, Ordering::AcqRel);
                }
                thread::yield_now(); // the pause
            } else {
                if self.take(&mut grey) {
                    continue;
                }
                self.active.fetch_sub(1, Ordering::AcqRel);
            }
            // The idle loop.
            loop {
                let ended = self.drain_end.load(Ordering::Acquire);
                if !ended && self.pool_len.load(Ordering::Acquire) > 0 {
                    let before = self.active.fetch_add(1, Ordering::AcqRel);
                    assert!(before < 2, "a marker counted twice in ACTIVE");
                    if self.take(&mut grey) {
                        break;
                    }
                    self.active.fetch_sub(1, Ordering::AcqRel);
                }
                if ended
                    || (self.active.load(Ordering::Acquire) == 0
                        && self.pool_len.load(Ordering::Acquire) == 0)
                {
                    self.drain_end.store(true, Ordering::Release);
                    assert!(grey.is_empty());
                    return;
                }
                thread::yield_now();
            }
        }
    }
}

/// Interleavings explored (a plain counter, outside the model).
static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn model(v: Variant) {
    loom::model(move || {
        RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let m = Arc::new(Markers::new(v));
        m.marked[0].store(true, Ordering::Relaxed);
        // The collector starts with the root and gives nothing yet; the worker starts empty.
        let w = {
            let m = m.clone();
            thread::spawn(move || m.run(Vec::new(), true))
        };
        // A mutator's barrier buffer flushed into the pool (`mark_into_pool`).
        let f = {
            let m = m.clone();
            thread::spawn(move || {
                if !m.marked[5].swap(true, Ordering::AcqRel) {
                    let mut one = vec![5];
                    m.give(&mut one, 1);
                }
            })
        };
        m.run(vec![0], false);
        w.join().unwrap();
        f.join().unwrap();
        // The collector's next drain (alone: the workers are done).
        let mut rest = Vec::new();
        m.take(&mut rest);
        while let Some(o) = rest.pop() {
            m.scan(o, &mut rest);
        }
        for o in 0..NOBJ {
            assert_eq!(m.scanned[o].load(Ordering::Relaxed), 1, "object {o}");
        }
        assert!(m.pool.lock().unwrap().is_empty());
    });
}

#[test]
fn markers_end_together_with_a_pausing_marker() {
    model(Variant::Correct);
    let runs = RUNS.load(std::sync::atomic::Ordering::Relaxed);
    println!("markers: {runs} interleavings");
    assert!(runs > 100, "only {runs} interleavings explored");
}

#[test]
#[should_panic]
fn broken_pausing_marker_stays_active() {
    model(Variant::PauseStaysActive);
}
