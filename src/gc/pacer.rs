//! The trigger of concurrent cycles, the background mark's CPU share and mark assists (Go's
//! GC pacer, `gcControllerState`, in the form of Go 1.18+).
//!
//! Owns: the cons/mark ratio, the estimate of how fast the program allocates against how fast
//! the mark scans, from which the trigger is set so that a mark by the background markers
//! alone (25% of the CPUs, [`background_plan`]) ends as the heap reaches its goal. A
//! stop-the-world cycle starts at the goal itself (nothing is allocated during its mark).
//!
//! After each concurrent cycle but those of `collect()` (which mark with every worker),
//! [`record`] measures the cons/mark ratio: bytes
//! allocated during the mark per byte scanned, scaled by the CPU the mark took (background
//! markers and assists) against what the program had (Go's currentConsMark), and averages it
//! with the last. The next trigger leaves the room the program will allocate while the
//! expected scan work (the last mark's) is done at 25% of the CPUs, within
//! [`MIN_RATIO`, `MAX_RATIO`] of the runway (goal - marked heap). When the estimate is off,
//! mark assists ([`assist_work`]) make allocating threads scan in proportion to what they
//! allocate, so that the mark still ends near the goal.
//!
//! Invariant: the ratio is finite and non-negative. No locks: atomics written by the cycle
//! (cycles are serialised) and read by allocating threads.

use core::sync::atomic::{AtomicU64, Ordering};

/// The trigger never comes earlier than this share of the runway (Go's minTriggerRatio: a
/// program that allocates faster than the mark then pays with assists rather than with a
/// mark that runs all the time).
pub const MIN_RATIO: f64 = 0.7;
/// Nor later than this share (Go's maxTriggerRatio).
pub const MAX_RATIO: f64 = 0.95;
/// Go's first trigger: 7/8 of the runway, before any mark was measured.
const FIRST_RATIO: f64 = 0.875;

/// The averaged cons/mark ratio (f64 bits; 0.0 before the first measured mark).
static CONS_MARK: AtomicU64 = AtomicU64::new(0);
/// The scan work expected of the next mark (the last mark's), in bytes.
static EXPECTED_WORK: AtomicU64 = AtomicU64::new(0);

/// The trigger for a marked heap `live`, a goal `goal`, a cons/mark ratio `cons_mark` (0: not
/// measured yet) and `expected` bytes of scan work.
pub fn trigger_for(live: usize, goal: usize, cons_mark: f64, expected: usize) -> usize {
    if goal <= live {
        return goal;
    }
    let runway = (goal - live) as f64;
    let ratio = if cons_mark > 0.0 && expected > 0 {
        // Bytes the program allocates while the background markers scan `expected` bytes.
        let room =
            cons_mark * (1.0 - BACKGROUND_UTILIZATION) / BACKGROUND_UTILIZATION * expected as f64;
        (1.0 - room / runway).clamp(MIN_RATIO, MAX_RATIO)
    } else {
        FIRST_RATIO
    };
    live + (runway * ratio) as usize
}

/// The heap size at which the next concurrent cycle starts (see [`trigger_for`]).
pub fn trigger(live: usize, goal: usize) -> usize {
    trigger_for(
        live,
        goal,
        f64::from_bits(CONS_MARK.load(Ordering::Relaxed)),
        EXPECTED_WORK.load(Ordering::Relaxed) as usize,
    )
}

/// A mark's cons/mark ratio: `grown` bytes allocated between its start and its termination,
/// `work` bytes scanned, `utilization`, the share of all CPUs that the background markers and
/// assists used meanwhile, and `idle`, the share idle markers used (CPUs the program did not
/// want): Go's currentConsMark.
pub fn cons_mark(grown: usize, work: usize, utilization: f64, idle: f64) -> f64 {
    let u = utilization.clamp(0.01, 0.99);
    grown as f64 * (u + idle.max(0.0)) / (work.max(1) as f64 * (1.0 - u))
}

/// The averaged ratio from the last one (0: none) and a measured one.
pub fn next_cons_mark(avg: f64, measured: f64) -> f64 {
    if avg > 0.0 {
        0.5 * avg + 0.5 * measured
    } else {
        measured
    }
}

/// Records a pacer-started concurrent mark (see [`cons_mark`]).
pub fn record(grown: usize, work: usize, utilization: f64, idle: f64) {
    if work == 0 {
        return;
    }
    let avg = f64::from_bits(CONS_MARK.load(Ordering::Relaxed));
    let m = next_cons_mark(avg, cons_mark(grown, work, utilization, idle));
    if m.is_finite() {
        CONS_MARK.store(m.to_bits(), Ordering::Relaxed);
    }
}

/// Sets the scan work expected of the next mark (a completed mark's).
pub fn set_expected_work(work: usize) {
    EXPECTED_WORK.store(work as u64, Ordering::Relaxed);
}

/// The scan work expected of the next mark (0 before the first).
pub fn expected_work() -> usize {
    EXPECTED_WORK.load(Ordering::Relaxed) as usize
}

// ---- mark utilisation and assists (Go's gcControllerState) ---------------------------------

/// The share of the CPUs the background mark uses (Go's gcBackgroundUtilization).
pub const BACKGROUND_UTILIZATION: f64 = 0.25;

/// How the background mark of `cpus` CPUs runs: `dedicated` markers that mark the whole time
/// (the collector's thread one of them) and, if `fraction > 0`, one more marker that runs
/// `fraction` of the time (a share of one CPU), so that together they use 25% of the CPUs.
/// Go's rule: `floor(cpus / 4 + 1/2)` dedicated markers, unless that misses 25% by more than
/// 30% (1, 2, 3 and 6 CPUs, ...), in which case one fewer when it overshoots, and a fractional
/// marker for the rest.
pub fn background_plan(cpus: usize) -> (usize, f64) {
    let goal = cpus as f64 * BACKGROUND_UTILIZATION;
    let mut dedicated = (goal + 0.5) as usize;
    let err = dedicated as f64 / goal - 1.0;
    if !(-0.3..=0.3).contains(&err) {
        if dedicated as f64 > goal {
            dedicated -= 1;
        }
        (dedicated, goal - dedicated as f64)
    } else {
        (dedicated, 0.0)
    }
}

/// A fractional marker's duty cycle: it has marked for `run` ns of the `elapsed` ns since the
/// mark started. Returns 0 while it may go on, else how long it should pause: until its share
/// is back at `fraction`, and at least `min_pause` (a pause is a sleep: shorter ones would
/// cost more than they give back). The accounting is cumulative, so a long pause is made up
/// by a longer run after it. The marker starts with the share of one least pause in hand
/// (`min_pause * fraction`), so that a small mark ends without a pause.
pub fn fractional_pause(run: u64, elapsed: u64, fraction: f64, min_pause: u64) -> u64 {
    if fraction <= 0.0 || fraction >= 1.0 {
        return 0;
    }
    if (run as f64) <= (elapsed + min_pause) as f64 * fraction {
        return 0;
    }
    // Pause until run / (elapsed + pause) = fraction.
    ((run as f64 / fraction) as u64)
        .saturating_sub(elapsed)
        .max(min_pause)
}

/// Bytes of scan work a mark assist owes for `alloc` bytes allocated during a mark (Go's
/// assistWorkPerByte): the scan work still expected (`expected` bytes, the last mark's, less
/// the `done` bytes scanned so far; at least an eighth of `expected` once the estimate is
/// used up) spread over the heap left before the goal (`goal - live`; past the goal, before
/// the hard limit `hard`).
pub fn assist_work(
    alloc: usize,
    expected: usize,
    done: usize,
    live: usize,
    goal: usize,
    hard: usize,
) -> usize {
    let remaining = expected.saturating_sub(done).max(expected / 8) as f64;
    let room = if live < goal {
        goal - live
    } else {
        hard.saturating_sub(live)
    };
    let room = room.max(64 << 10) as f64;
    (alloc as f64 * remaining / room) as usize
}

#[cfg(test)]
mod tests {
    //! A simulation of the pacer in the style of Go's TestGcPacer: a program with a steady
    //! live heap allocates at some rate on some CPUs; each mark has a fixed amount of scan
    //! work, done by the background markers at their CPU share (`background_plan`) and by
    //! assists in proportion to allocation (`assist_work`, paid from the background credit
    //! first); the trigger comes from `trigger_for` and the cons/mark ratio `record` would
    //! keep. Cycle by cycle it measures the heap at mark termination over the goal and the
    //! mark's CPU utilisation (background and assists, of all CPUs).
    use super::*;

    const MIB: f64 = (1 << 20) as f64;

    /// The program: `cpus` CPUs, `threads` allocating threads (each wants a CPU), `alloc`
    /// bytes allocated per second of a thread's CPU, `scan` bytes scanned per second of a
    /// marker's CPU, `idle`: idle markers take the CPUs neither the program nor the
    /// background markers use.
    #[derive(Clone, Copy)]
    struct Program {
        cpus: usize,
        threads: usize,
        alloc: f64,
        scan: f64,
        idle: bool,
    }

    struct Sim {
        cons_mark: f64,
        expected: usize,
    }

    #[derive(Debug)]
    struct Cycle {
        heap_over_goal: f64,
        utilization: f64,
        assist_utilization: f64,
    }

    impl Sim {
        fn new() -> Sim {
            Sim {
                cons_mark: 0.0,
                expected: 0,
            }
        }

        /// One cycle of a program with `live` bytes live (all of it scanned), GOGC `gogc`.
        fn cycle(&mut self, p: Program, live: f64, gogc: f64) -> Cycle {
            let goal = live * (1.0 + gogc / 100.0);
            let hard = goal * 1.1;
            let trigger =
                trigger_for(live as usize, goal as usize, self.cons_mark, self.expected) as f64;
            let (dedicated, fraction) = background_plan(p.cpus);
            let bg = dedicated as f64 + fraction;
            let cpus = p.cpus as f64;
            let mutator = (p.threads as f64).min(cpus - bg);
            let idle = if p.idle {
                (cpus - bg - mutator).max(0.0)
            } else {
                0.0
            };
            let expected = if self.expected == 0 {
                live
            } else {
                self.expected as f64
            };
            let (mut heap, mut done, mut credit) = (trigger, 0.0f64, 0.0f64);
            let (mut t, mut assist_cpu) = (0.0f64, 0.0f64);
            let dt = 10e-6;
            while done < live {
                let work = p.scan * (bg + idle) * dt;
                done += work;
                credit += work;
                let m = mutator * dt;
                if heap < hard {
                    // Scan work owed per byte allocated now.
                    let r = assist_work(
                        1 << 20,
                        expected as usize,
                        done as usize,
                        heap as usize,
                        goal as usize,
                        hard as usize,
                    ) as f64
                        / MIB;
                    let owed = r * p.alloc * m;
                    if owed <= credit {
                        credit -= owed;
                        heap += p.alloc * m;
                    } else {
                        // A share x of the mutators' CPU assists: scan * x * m covers what
                        // alloc * (1 - x) * m owes, less the credit.
                        let x = (owed - credit) / (p.scan * m + r * p.alloc * m);
                        credit = 0.0;
                        heap += p.alloc * (1.0 - x) * m;
                        done += p.scan * x * m;
                        assist_cpu += x * m;
                    }
                }
                t += dt;
            }
            let all = cpus * t;
            let u = (bg * t + assist_cpu) / all;
            let measured = cons_mark((heap - trigger) as usize, live as usize, u, idle * t / all);
            self.cons_mark = next_cons_mark(self.cons_mark, measured);
            self.expected = live as usize;
            Cycle {
                heap_over_goal: heap / goal,
                utilization: u,
                assist_utilization: assist_cpu / all,
            }
        }
    }

    /// A program whose allocation the background markers alone keep up with at 25% of the
    /// CPUs with room to spare (cons/mark about 1/16).
    fn steady(cpus: usize) -> Program {
        Program {
            cpus,
            threads: cpus,
            alloc: 64.0 * MIB,
            scan: 1024.0 * MIB,
            idle: false,
        }
    }

    fn check(cs: &[Cycle], from: usize, what: &str) {
        for (i, c) in cs.iter().enumerate().skip(from) {
            assert!(
                (0.95..=1.05).contains(&c.heap_over_goal),
                "{what}: cycle {i}: heap/goal {:.3}",
                c.heap_over_goal
            );
            assert!(
                (c.utilization - BACKGROUND_UTILIZATION).abs() <= 0.02,
                "{what}: cycle {i}: utilisation {:.3}, not near 25%: {c:?}",
                c.utilization
            );
        }
    }

    #[test]
    fn background_plan_is_gos() {
        // Go's values: 1, 2, 3 and 6 CPUs need a fractional worker.
        assert_eq!(background_plan(1), (0, 0.25));
        assert_eq!(background_plan(2), (0, 0.5));
        assert_eq!(background_plan(3), (0, 0.75));
        assert_eq!(background_plan(4), (1, 0.0));
        assert_eq!(background_plan(6), (1, 0.5));
        assert_eq!(background_plan(8), (2, 0.0));
        assert_eq!(background_plan(16), (4, 0.0));
        // Within 30% of 25% everywhere; exactly 25% where a fractional marker runs.
        for cpus in 1..=128 {
            let (d, f) = background_plan(cpus);
            let u = (d as f64 + f) / cpus as f64;
            assert!(
                (u / 0.25 - 1.0).abs() <= 0.3,
                "{cpus} CPUs: {d} + {f} is {u:.3} of the CPUs"
            );
            assert!(
                f == 0.0 || (u - 0.25).abs() < 1e-9,
                "{cpus} CPUs: {d} + {f}"
            );
            assert!((0.0..1.0).contains(&f), "{cpus} CPUs: fraction {f}");
        }
    }

    #[test]
    fn a_fractional_marker_keeps_its_share() {
        // The marker looks every 10 us while it marks (as `Duty` does every 64 objects);
        // a pause is a sleep of at least 1 ms. Over a 200 ms mark it runs its share.
        for &f in &[0.25, 0.5, 0.75] {
            let (mut now, mut run) = (0u64, 0u64);
            while now < 200_000_000 {
                let p = fractional_pause(run, now, f, 1_000_000);
                if p == 0 {
                    run += 10_000;
                    now += 10_000;
                } else {
                    now += p;
                }
            }
            let share = run as f64 / now as f64;
            assert!(
                (share - f).abs() < 0.01,
                "fraction {f}: ran {share:.3} of the time"
            );
        }
        assert_eq!(
            fractional_pause(505, 10, 0.5, 1000),
            0,
            "a small mark runs through"
        );
        assert_eq!(
            fractional_pause(506, 10, 0.5, 1000),
            1002,
            "past it: until back at its share"
        );
        assert_eq!(
            fractional_pause(30, 10, 0.5, 1),
            50,
            "until back at its share"
        );
        assert_eq!(
            fractional_pause(3000, 1000, 0.5, 10),
            5000,
            "until back at its share"
        );
    }

    #[test]
    fn steady_allocation_converges_on_the_goal_at_25_percent() {
        // Go's steady cases: the heap ends its marks at the goal, and the marks take 25% of
        // the CPUs (background markers only: no assists once the trigger has settled).
        for &cpus in &[1, 2, 3, 4, 6, 8, 16] {
            let mut s = Sim::new();
            let cs: Vec<Cycle> = (0..20)
                .map(|_| s.cycle(steady(cpus), 100.0 * MIB, 100.0))
                .collect();
            check(&cs, 4, &format!("{cpus} CPUs"));
            assert!(
                cs[19].assist_utilization < 0.01,
                "{cpus} CPUs: {:?}",
                cs[19]
            );
        }
    }

    #[test]
    fn a_step_in_allocation_is_followed() {
        let mut s = Sim::new();
        let mut p = steady(8);
        let mut cs = Vec::new();
        for i in 0..40 {
            if i == 20 {
                p.alloc *= 1.4;
            }
            cs.push(s.cycle(p, 100.0 * MIB, 100.0));
        }
        // The step is paid with assists (the heap still ends near its goal), then the
        // trigger moves and the marks are back at 25%.
        assert!(
            cs[20].assist_utilization > 0.01,
            "the step is seen: {:?}",
            cs[20]
        );
        assert!(
            (0.95..=1.05).contains(&cs[20].heap_over_goal),
            "{:?}",
            cs[20]
        );
        check(&cs, 26, "after the step");
        // And back down.
        p.alloc /= 1.4;
        let cs: Vec<Cycle> = (0..20).map(|_| s.cycle(p, 100.0 * MIB, 100.0)).collect();
        check(&cs, 6, "after the step down");
    }

    #[test]
    fn jittery_allocation_stays_near_the_goal_and_25_percent_on_average() {
        let mut s = Sim::new();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut cs = Vec::new();
        for _ in 0..100 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let jitter = (x % 1000) as f64 / 1000.0 * 0.6 - 0.3; // +-30%
            let mut p = steady(4);
            p.alloc *= 1.0 + jitter;
            cs.push(s.cycle(p, 100.0 * MIB, 100.0));
        }
        let tail = &cs[10..];
        let n = tail.len() as f64;
        let mean = tail.iter().map(|c| c.heap_over_goal).sum::<f64>() / n;
        let util = tail.iter().map(|c| c.utilization).sum::<f64>() / n;
        assert!((0.95..=1.05).contains(&mean), "mean heap/goal {mean:.3}");
        assert!((util - 0.25).abs() <= 0.03, "mean utilisation {util:.3}");
        let max = tail.iter().map(|c| c.heap_over_goal).fold(0.0, f64::max);
        assert!(max <= 1.1, "max heap/goal {max:.3} past the hard limit");
    }

    #[test]
    fn high_gogc() {
        let mut s = Sim::new();
        let cs: Vec<Cycle> = (0..20)
            .map(|_| s.cycle(steady(8), 100.0 * MIB, 500.0))
            .collect();
        check(&cs, 4, "GOGC 500");
    }

    #[test]
    fn fast_allocation_is_paid_by_assists() {
        // Allocation faster than 25% of the CPUs can mark (cons/mark 1): the trigger stays at
        // its floor, and assists keep the heap at the goal, at a higher utilisation. So with
        // a runway shrunk to 10% of the live heap (a memory limit or GOGC 10).
        for &gogc in &[100.0, 10.0] {
            let mut s = Sim::new();
            let mut p = steady(4);
            p.alloc = p.scan;
            let cs: Vec<Cycle> = (0..20).map(|_| s.cycle(p, 100.0 * MIB, gogc)).collect();
            for c in &cs[4..] {
                assert!(
                    (0.95..=1.05).contains(&c.heap_over_goal),
                    "GOGC {gogc}: {c:?}"
                );
                assert!(
                    c.utilization > 0.3,
                    "GOGC {gogc}: assists did the rest: {c:?}"
                );
            }
            let t = trigger_for(
                100 << 20,
                (100.0 * MIB * (1.0 + gogc / 100.0)) as usize,
                s.cons_mark,
                s.expected,
            );
            let floor = (100 << 20) + ((100.0 * MIB * gogc / 100.0) * MIN_RATIO) as usize;
            assert!(
                t.abs_diff(floor) <= 1,
                "GOGC {gogc}: the trigger is at its floor"
            );
        }
    }

    #[test]
    fn idle_markers_count_toward_the_ratio() {
        // One allocating thread on 8 CPUs: idle markers do most of the marking; the ratio
        // counts their CPU, so the heap still ends at the goal.
        let mut s = Sim::new();
        let mut p = steady(8);
        p.threads = 1;
        p.idle = true;
        let cs: Vec<Cycle> = (0..20).map(|_| s.cycle(p, 100.0 * MIB, 100.0)).collect();
        for c in &cs[4..] {
            assert!((0.95..=1.05).contains(&c.heap_over_goal), "{c:?}");
        }
    }
}
