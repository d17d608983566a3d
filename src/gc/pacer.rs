//! The trigger of concurrent cycles (Go's GC pacer, in its simplest form).
//!
//! Owns: the trigger ratio, the share of the runway (goal - live heap after the last cycle)
//! that the heap may use before the next concurrent cycle starts, so that the heap reaches
//! the goal just as the mark ends rather than passing it while the program allocates during
//! the mark. A stop-the-world cycle starts at the goal itself (nothing is allocated during
//! its mark).
//!
//! After each concurrent cycle the controller measures how much of the runway the program
//! allocated between the trigger and mark termination, averages that with the previous
//! estimate, and sets the next trigger to leave that much room below the goal.
//!
//! Invariant: the ratio stays within [`MIN_RATIO`, `MAX_RATIO`]. No locks: one atomic,
//! written by the cycle (cycles are serialised) and read by allocating threads.

use core::sync::atomic::{AtomicU32, Ordering};

/// The trigger never comes earlier than this share of the runway (a mark slower than the
/// program's allocation then ends past the goal, and allocation waits at the hard limit).
pub const MIN_RATIO: f64 = 0.3;
/// Nor later than this share.
pub const MAX_RATIO: f64 = 0.95;
/// Go's first trigger: 7/8 of the runway.
const FIRST_RATIO: f64 = 0.875;

/// The share of the runway the last marks took (in millionths), averaged.
static GROWTH_PPM: AtomicU32 = AtomicU32::new(((1.0 - FIRST_RATIO) * 1e6) as u32);

/// The trigger ratio for an averaged growth share.
pub fn ratio_for(growth: f64) -> f64 {
    (1.0 - growth).clamp(MIN_RATIO, MAX_RATIO)
}

/// The next averaged growth share from the last one and a cycle's measured share.
pub fn next_growth(avg: f64, measured: f64) -> f64 {
    let m = measured.clamp(0.0, 1.0);
    0.5 * avg + 0.5 * m
}

/// The heap size at which the next concurrent cycle starts, for a live heap `live` after the
/// last cycle and a goal `goal`.
pub fn trigger(live: usize, goal: usize) -> usize {
    if goal <= live {
        return goal;
    }
    let g = f64::from(GROWTH_PPM.load(Ordering::Relaxed)) / 1e6;
    let runway = (goal - live) as f64;
    live + (runway * ratio_for(g)) as usize
}

/// Records a concurrent cycle: the heap grew by `grown` bytes from its start to mark
/// termination, against a runway of `runway` bytes.
pub fn record(grown: usize, runway: usize) {
    if runway == 0 {
        return;
    }
    let avg = f64::from(GROWTH_PPM.load(Ordering::Relaxed)) / 1e6;
    let g = next_growth(avg, grown as f64 / runway as f64);
    GROWTH_PPM.store((g * 1e6) as u32, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    //! A simulation of the controller in the style of Go's TestGcPacer: a program with a
    //! steady live heap allocates at some rate; each mark takes time proportional to the live
    //! heap; the heap at mark termination over the goal is measured cycle by cycle.
    use super::*;

    struct Sim {
        growth_avg: f64,
    }

    impl Sim {
        fn new() -> Sim {
            Sim {
                growth_avg: 1.0 - FIRST_RATIO,
            }
        }

        /// One cycle: live heap `live` MiB, GOGC `gogc`, the program allocates `alloc` MiB
        /// during a mark; the hard limit (goal + 10%) clips the heap. Returns heap / goal at
        /// mark termination.
        fn cycle(&mut self, live: f64, gogc: f64, alloc: f64) -> f64 {
            let goal = live * (1.0 + gogc / 100.0);
            let runway = goal - live;
            let trigger = live + runway * ratio_for(self.growth_avg);
            let peak = (trigger + alloc).min(goal * 1.1);
            self.growth_avg = next_growth(self.growth_avg, (peak - trigger) / runway);
            peak / goal
        }
    }

    fn within(r: f64) -> bool {
        (0.95..=1.05).contains(&r)
    }

    #[test]
    fn steady_allocation_converges_on_the_goal() {
        let mut s = Sim::new();
        let rs: Vec<f64> = (0..30).map(|_| s.cycle(100.0, 100.0, 30.0)).collect();
        for (i, r) in rs.iter().enumerate().skip(8) {
            assert!(within(*r), "cycle {i}: heap/goal {r:.3}");
        }
    }

    #[test]
    fn a_step_in_allocation_is_followed() {
        let mut s = Sim::new();
        let mut rs = Vec::new();
        for i in 0..60 {
            let alloc = if i < 30 { 20.0 } else { 45.0 };
            rs.push(s.cycle(100.0, 100.0, alloc));
        }
        assert!(rs[30] > 1.05, "the step is seen: {:.3}", rs[30]);
        for (i, r) in rs.iter().enumerate().skip(40) {
            assert!(within(*r), "cycle {i} after the step: heap/goal {r:.3}");
        }
        // And back down.
        for _ in 0..20 {
            s.cycle(100.0, 100.0, 10.0);
        }
        let r = s.cycle(100.0, 100.0, 10.0);
        assert!(within(r), "after the step down: heap/goal {r:.3}");
    }

    #[test]
    fn jittery_allocation_stays_near_the_goal_on_average() {
        let mut s = Sim::new();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut rs = Vec::new();
        for _ in 0..200 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let jitter = (x % 1000) as f64 / 1000.0 * 0.6 - 0.3; // +-30%
            rs.push(s.cycle(100.0, 100.0, 30.0 * (1.0 + jitter)));
        }
        let mean = rs[20..].iter().sum::<f64>() / rs[20..].len() as f64;
        assert!(within(mean), "mean heap/goal {mean:.3}");
        let max = rs[20..].iter().cloned().fold(0.0, f64::max);
        assert!(max <= 1.1, "max heap/goal {max:.3} past the hard limit");
    }

    #[test]
    fn high_gogc_and_a_tight_runway() {
        // GOGC 400: a long runway, little of it used by the mark.
        let mut s = Sim::new();
        let rs: Vec<f64> = (0..30).map(|_| s.cycle(100.0, 400.0, 30.0)).collect();
        assert!(rs[29] <= 1.05, "GOGC 400: heap/goal {:.3}", rs[29]);
        assert!(
            rs[29] >= 0.95 - (1.0 - MAX_RATIO),
            "GOGC 400: {:.3}",
            rs[29]
        );
        // A memory limit that shrinks the runway to 10% of the live heap (as `goal` does):
        // the mark allocates more than the runway, the trigger goes to its floor and the
        // hard limit holds the heap.
        let mut s = Sim::new();
        let rs: Vec<f64> = (0..30).map(|_| s.cycle(100.0, 10.0, 30.0)).collect();
        assert!(rs[29] <= 1.1 + 1e-9, "limit: heap/goal {:.3}", rs[29]);
        assert!(
            (ratio_for(s.growth_avg) - MIN_RATIO).abs() < 1e-9,
            "the trigger is at its floor"
        );
    }
}
