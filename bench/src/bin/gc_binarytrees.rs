//! The Benchmarks Game's binary-trees on gomalloc's collector: nodes are `Gc<Node>`, never
//! freed by hand. Same algorithm and output as `bench/gc/binarytrees.c` (Boehm GC) and
//! `bench/gc/binarytrees.go`; run side by side by `ci/gc-compare.sh`.
//!
//! `gc-binarytrees [--depth N] [--threads N] [--live-mib L] [--no-scan-malloc]`: a stretch tree
//! of depth N+1, a long-lived tree of depth N, then for each depth d = 4, 6, .., N
//! 2^(N - d + 4) short-lived trees, each built bottom-up and its nodes counted. With
//! `--threads T` the short-lived trees of each depth are shared out over T threads, each
//! building its own; cycles then stop and scan every thread (the workers and the main thread,
//! blocked in `join` and holding the long-lived tree and the live heap). `--live-mib L` keeps
//! L MiB (counted as 16-byte nodes) of extra trees live for the whole run. Ends with the
//! `RESULT` line of `gomalloc_bench::gcprog`.

#[global_allocator]
static GLOBAL: gomalloc::GoMalloc = gomalloc::GoMalloc;

use gomalloc::gc::{self, Gc};
use gomalloc_bench::gcprog;
use std::time::Instant;

struct Node {
    left: Option<Gc<Node>>,
    right: Option<Gc<Node>>,
}

fn bottom_up(depth: u32) -> Gc<Node> {
    if depth == 0 {
        return Gc::new(Node {
            left: None,
            right: None,
        });
    }
    Gc::new(Node {
        left: Some(bottom_up(depth - 1)),
        right: Some(bottom_up(depth - 1)),
    })
}

fn check(n: &Node) -> u64 {
    match (n.left, n.right) {
        (Some(l), Some(r)) => 1 + check(&l) + check(&r),
        _ => 1,
    }
}

/// `L` MiB worth of 16-byte nodes as trees of depth 16 on a spine (`left` = tree, `right` =
/// the rest of the spine); `None` for 0.
fn live_heap(mib: usize) -> Option<Gc<Node>> {
    let nodes = mib << 20 >> 4;
    let per_tree = (1usize << 17) - 1;
    let mut spine = None;
    for _ in 0..nodes.div_ceil(per_tree) {
        spine = Some(Gc::new(Node {
            left: Some(bottom_up(16)),
            right: spine,
        }));
    }
    spine
}

fn count_live(mut spine: Option<Gc<Node>>) -> u64 {
    let mut n = 0;
    while let Some(s) = spine {
        n += check(&s.left.expect("a spine node holds a tree"));
        spine = s.right;
    }
    n
}

/// Builds `iterations` trees of depth `d` on `threads` threads; the sum of their checks.
fn short_lived(iterations: usize, d: u32, threads: usize) -> u64 {
    let work = |n: usize| (0..n).map(|_| check(&bottom_up(d))).sum::<u64>();
    if threads == 1 {
        return work(iterations);
    }
    gcprog::threaded(|| {
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|t| s.spawn(move || work(gcprog::share(iterations, threads, t))))
                .collect();
            hs.into_iter()
                // Parked while it waits: the collector's stops need not signal it.
                // SAFETY: `join` touches no GC object (the results are plain numbers).
                .map(|h| unsafe { gc::blocking(|| h.join()) }.expect("worker panicked"))
                .sum()
        })
    })
}

fn main() {
    let o = gcprog::parse("gc-binarytrees", 16);
    let t0 = Instant::now();
    let live = live_heap(o.live_mib);
    let min_depth = 4;
    let max_depth = o.depth.max(min_depth + 2);
    let stretch = max_depth + 1;
    println!(
        "stretch tree of depth {stretch}\t check: {}",
        check(&bottom_up(stretch))
    );
    let long_lived = bottom_up(max_depth);
    let mut d = min_depth;
    while d <= max_depth {
        let iterations = 1usize << (max_depth - d + min_depth);
        let sum = short_lived(iterations, d, o.threads);
        println!("{iterations}\t trees of depth {d}\t check: {sum}");
        d += 2;
    }
    println!(
        "long lived tree of depth {max_depth}\t check: {}",
        check(&long_lived)
    );
    if o.live_mib > 0 {
        println!(
            "live heap of {} MiB\t nodes: {}",
            o.live_mib,
            count_live(live)
        );
    }
    gcprog::report("binarytrees", &o, t0);
}
