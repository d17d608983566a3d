//! Boehm's GCBench (after John Ellis and Pete Kovac) on gomalloc's collector: a long-lived
//! tree and a long-lived array of doubles, then for depths 4, 6, .., N trees built top-down
//! (`populate`, mutating fresh nodes) and bottom-up (`make_tree`), the number of trees scaled
//! so that each depth allocates about as much as two trees of the stretch depth N+2. Same
//! algorithm and check output as `bench/gc/gcbench.c` (Boehm GC) and `bench/gc/gcbench.go`;
//! the original's per-phase timings are left out so that the outputs can be compared.
//!
//! `gc-gcbench [--depth N] [--threads N] [--live-mib L] [--no-scan-malloc] [--concurrent]`
//! (N = 16 is the original): with `--threads T` each depth's trees are shared out over T
//! threads, each building its own (`Node` mutates through `GcCell`, a `Cell` with the write
//! barrier, so it is not `Sync` and no `Gc<Node>`
//! crosses threads: the long-lived tree, array and live heap stay on the main thread, which
//! cycles stop and scan while it waits in `join`); `--live-mib L` keeps L MiB (counted as 24-byte nodes) of extra trees live
//! for the whole run, so that the churn runs against a large live heap. Ends with the
//! `RESULT` line of `gomalloc_bench::gcprog`.

#[global_allocator]
static GLOBAL: gomalloc::GoMalloc = gomalloc::GoMalloc;

use gomalloc::gc::{self, Gc, GcCell};
use gomalloc_bench::gcprog;
use std::alloc::Layout;
use std::time::Instant;

const ARRAY_SIZE: usize = 500_000;
const MIN_TREE_DEPTH: u32 = 4;
/// The node size counted by the original (two pointers, two ints), whatever the slot size.
const NODE_BYTES: usize = 24;

#[derive(Default)]
struct Node {
    left: GcCell<Option<Gc<Node>>>,
    right: GcCell<Option<Gc<Node>>>,
    #[allow(dead_code)] // the original's payload: allocated, never read
    i: i32,
    #[allow(dead_code)]
    j: i32,
}

fn new_node(l: Option<Gc<Node>>, r: Option<Gc<Node>>) -> Gc<Node> {
    Gc::new(Node {
        left: GcCell::new(l),
        right: GcCell::new(r),
        i: 0,
        j: 0,
    })
}

fn tree_size(depth: u32) -> usize {
    (1 << (depth + 1)) - 1
}

/// Builds a tree top-down: gives `node` children, then populates them.
fn populate(depth: u32, node: Gc<Node>) {
    if depth == 0 {
        return;
    }
    let (l, r) = (Gc::new(Node::default()), Gc::new(Node::default()));
    node.left.set(Some(l));
    node.right.set(Some(r));
    populate(depth - 1, l);
    populate(depth - 1, r);
}

/// Builds a tree bottom-up.
fn make_tree(depth: u32) -> Gc<Node> {
    if depth == 0 {
        return new_node(None, None);
    }
    new_node(Some(make_tree(depth - 1)), Some(make_tree(depth - 1)))
}

fn count(n: &Node) -> u64 {
    1 + n.left.get().map_or(0, |l| count(&l)) + n.right.get().map_or(0, |r| count(&r))
}

/// `L` MiB worth of 24-byte nodes as trees of depth 16 on a spine (`left` = tree, `right` =
/// the rest of the spine).
fn live_heap(mib: usize) -> Option<Gc<Node>> {
    let nodes = (mib << 20) / NODE_BYTES;
    let mut spine = None;
    for _ in 0..nodes.div_ceil(tree_size(16)) {
        spine = Some(new_node(Some(make_tree(16)), spine));
    }
    spine
}

fn count_live(mut spine: Option<Gc<Node>>) -> u64 {
    let mut n = 0;
    while let Some(s) = spine {
        n += count(&s.left.get().expect("a spine node holds a tree"));
        spine = s.right.get();
    }
    n
}

/// `iters` top-down then `iters` bottom-up trees of `depth`; the node counts of the last of each.
///
/// Each loop runs in its own frame, and a bottom-up tree is counted through a by-value
/// parameter: a Rust frame keeps a `Gc` it took a reference of in a stack slot until the slot
/// is reused (where C keeps the pointer in a register), and the conservative stack scan would
/// keep the last top-down tree alive through the whole bottom-up loop, and each bottom-up tree
/// through the building of the next (at depth 18, 16 MiB each; the live heap measured 63 MiB
/// instead of at most 36).
fn construct(iters: usize, depth: u32) -> (u64, u64) {
    (top_down(iters, depth), bottom_up(iters, depth))
}

#[inline(never)]
fn top_down(iters: usize, depth: u32) -> u64 {
    let mut top = 0;
    for _ in 0..iters {
        let t = Gc::new(Node::default());
        populate(depth, t);
        top = count(&t);
    }
    top
}

#[inline(never)]
fn bottom_up(iters: usize, depth: u32) -> u64 {
    let mut bottom = 0;
    for _ in 0..iters {
        bottom = count_tree(make_tree(depth));
    }
    bottom
}

/// `count` of a tree held only by this parameter (see `construct`).
#[inline(never)]
fn count_tree(t: Gc<Node>) -> u64 {
    count(&t)
}

/// The stretch tree, in its own frame so that nothing keeps it once it returns.
#[inline(never)]
fn stretch_memory(depth: u32) {
    println!("\tstretch tree has {} nodes", count(&make_tree(depth)));
}

fn time_construction(depth: u32, stretch: u32, threads: usize) {
    let iters = 2 * tree_size(stretch) / tree_size(depth);
    println!("Creating {iters} trees of depth {depth}");
    let (top, bottom) = if threads == 1 {
        construct(iters, depth)
    } else {
        gcprog::threaded(|| {
            std::thread::scope(|s| {
                let hs: Vec<_> = (0..threads)
                    .map(|t| s.spawn(move || construct(gcprog::share(iters, threads, t), depth)))
                    .collect();
                hs.into_iter()
                    // Parked while it waits: the collector's stops need not signal it.
                    // SAFETY: `join` touches no GC object (the results are plain numbers).
                    .map(|h| unsafe { gc::blocking(|| h.join()) }.expect("worker panicked"))
                    .fold((0, 0), |a, b| (a.0.max(b.0), a.1.max(b.1)))
            })
        })
    };
    println!("\tTop down construction: last tree has {top} nodes");
    println!("\tBottom up construction: last tree has {bottom} nodes");
}

fn main() {
    let o = gcprog::parse("gc-gcbench", 16);
    let t0 = Instant::now();
    let live = live_heap(o.live_mib);
    let (long_lived_depth, max_depth, stretch) = (o.depth, o.depth, o.depth + 2);
    println!("Garbage Collector Test");
    println!(
        " Live storage will peak at {} bytes.\n",
        2 * NODE_BYTES * tree_size(long_lived_depth) + 8 * ARRAY_SIZE
    );
    println!(" Stretching memory with a binary tree of depth {stretch}");
    stretch_memory(stretch);

    println!(" Creating a long-lived binary tree of depth {long_lived_depth}");
    let long_lived = Gc::new(Node::default());
    populate(long_lived_depth, long_lived);

    println!(" Creating a long-lived array of {ARRAY_SIZE} doubles");
    let array =
        gc::alloc_noscan(Layout::array::<f64>(ARRAY_SIZE).expect("array layout")) as *mut f64;
    assert!(!array.is_null(), "out of memory for the array");
    for i in 0..ARRAY_SIZE / 2 {
        // SAFETY: `array` holds ARRAY_SIZE doubles, kept alive by this pointer on the stack.
        unsafe { array.add(i).write(1.0 / i as f64) };
    }

    let mut d = MIN_TREE_DEPTH;
    while d <= max_depth {
        time_construction(d, stretch, o.threads);
        d += 2;
    }

    // SAFETY: as above; index 1000 < ARRAY_SIZE.
    let a1000 = unsafe { array.add(1000).read() };
    if a1000 != 1.0 / 1000.0 {
        println!("Failed: array[1000] = {a1000}");
        std::process::exit(1);
    }
    println!("long-lived tree has {} nodes", count(&long_lived));
    if o.live_mib > 0 {
        println!(
            "live heap of {} MiB\t nodes: {}",
            o.live_mib,
            count_live(live)
        );
    }
    gcprog::report("gcbench", &o, t0);
}
