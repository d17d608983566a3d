//! The ten workloads of the comparison runner.
//!
//! Each is a function `fn(&Opts) -> u64` that allocates through the global allocator (raw
//! `std::alloc` calls or ordinary std types), checks every block's contents before freeing it,
//! exits the process with a message on any mismatch, and returns a checksum that depends only on
//! the seed and the options (so the driver can see that every allocator computed the same thing).
//! Multi-threaded workloads give every thread the same amount of work (weak scaling): with more
//! threads there is more total work, and an allocator that scales keeps the wall time flat.

use crate::Opts;
use std::alloc::{alloc, dealloc, realloc, Layout};
use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::sync_channel;
use std::sync::{Barrier, Mutex};

pub type Workload = fn(&Opts) -> u64;

/// Workload names, in the order the driver runs them.
pub const NAMES: [&str; 10] = [
    "small_churn",
    "larson",
    "prodcons",
    "false_sharing",
    "mixed",
    "realloc",
    "collections",
    "binary_trees",
    "large",
    "aligned",
];

/// One-line descriptions, indexed like [`NAMES`].
pub const ABOUT: [&str; 10] = [
    "1 thread: alloc/free 8..256 B in random order over 4096 slots",
    "threads replace random slots (16..1024 B); slot arrays rotate between threads each round, so most frees are remote",
    "producer/consumer pairs: batches of 16..1024 B blocks through a bounded channel, freed by the consumer",
    "Hoard's cache-scratch: each thread frees a 16 B object allocated by the main thread, then allocates and writes 16 B objects",
    "threads replace random slots of 16 B..4 MiB (mostly small), touching every page; bounded working set",
    "Vec<u64> and String grown by push, many small Vecs grown to random lengths",
    "BTreeMap<u64, String> insert/remove and HashMap<String, Vec<u32>> build/drop",
    "binary trees of Box nodes built, checked and dropped (benchmarks-game shape, max depth 15)",
    "blocks of 32 KiB..8 MiB (log-uniform), every page touched, 4 live per thread",
    "alignments 8..4096 B with sizes 8..4096 B over 1024 slots per thread",
];

/// Multi-threaded workloads (the ones a thread-scaling table is about).
pub const MULTI: [&str; 5] = [
    "larson",
    "prodcons",
    "false_sharing",
    "mixed",
    "binary_trees",
];

pub fn find(name: &str) -> Option<Workload> {
    Some(match name {
        "small_churn" => small_churn,
        "larson" => larson,
        "prodcons" => prodcons,
        "false_sharing" => false_sharing,
        "mixed" => mixed,
        "realloc" => realloc_growth,
        "collections" => collections,
        "binary_trees" => binary_trees,
        "large" => large,
        "aligned" => aligned,
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// xorshift64*: cheap enough not to hide the allocator's cost.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64, stream: u64) -> Rng {
        // splitmix64 of (seed, stream) so that streams are unrelated and never zero.
        let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `lo..=hi`.
    #[inline]
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
    /// Log-uniform in `lo..=hi`.
    pub fn log_range(&mut self, lo: usize, hi: usize) -> usize {
        let (a, b) = ((lo as f64).ln(), (hi as f64).ln());
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((a + (b - a) * u).exp() as usize).clamp(lo, hi)
    }
}

fn fail(what: &str) -> ! {
    eprintln!("workload check failed: {what}");
    std::process::exit(1);
}

/// A raw block and the pattern written into it. `Send` because blocks travel between threads
/// (which is the point of several workloads); whoever holds one owns it.
pub struct Blk {
    ptr: *mut u8,
    size: usize,
    align: usize,
    tag: u8,
}

// SAFETY: a Blk is an owned heap block; moving it to another thread moves the ownership.
unsafe impl Send for Blk {}

/// Stride at which big blocks are written and checked: one byte per OS page.
const STRIDE: usize = 4096;

impl Blk {
    /// Allocate `size` bytes aligned to `align` and write the pattern `tag` into them: the whole
    /// block up to 256 bytes, beyond that the first 64 bytes, one byte per page and the last byte.
    #[inline]
    pub fn new(size: usize, align: usize, tag: u8) -> Blk {
        let layout = Layout::from_size_align(size, align).unwrap_or_else(|_| fail("layout"));
        // SAFETY: size > 0 in every workload.
        let ptr = unsafe { alloc(layout) };
        if ptr.is_null() {
            fail("allocation returned null");
        }
        if !(ptr as usize).is_multiple_of(align) {
            fail("misaligned block");
        }
        let b = Blk {
            ptr,
            size,
            align,
            tag,
        };
        b.fill();
        b
    }

    #[inline]
    fn fill(&self) {
        // SAFETY: every write is inside the block we own.
        unsafe {
            if self.size <= 256 {
                std::ptr::write_bytes(self.ptr, self.tag, self.size);
            } else {
                std::ptr::write_bytes(self.ptr, self.tag, 64);
                let mut off = STRIDE;
                while off < self.size {
                    *self.ptr.add(off) = self.tag;
                    off += STRIDE;
                }
                *self.ptr.add(self.size - 1) = self.tag;
            }
        }
    }

    /// Verify the pattern; exit on a mismatch.
    #[inline]
    pub fn check(&self) {
        // SAFETY: every read is inside the block we own and wrote.
        let ok = unsafe {
            let mut ok = *self.ptr == self.tag
                && *self.ptr.add(self.size - 1) == self.tag
                && *self.ptr.add((self.size / 2).min(63)) == self.tag;
            if self.size > 256 {
                let mut off = STRIDE;
                while off < self.size {
                    ok &= *self.ptr.add(off) == self.tag;
                    off += STRIDE;
                }
            }
            ok
        };
        if !ok {
            fail("block contents changed while it was live");
        }
    }

    /// Check and free.
    #[inline]
    pub fn free(self) {
        self.check();
        // SAFETY: allocated by `alloc` with exactly this layout, freed once (self is consumed).
        unsafe {
            dealloc(
                self.ptr,
                Layout::from_size_align_unchecked(self.size, self.align),
            )
        }
    }
}

fn per_thread<F>(threads: usize, f: F) -> u64
where
    F: Fn(usize) -> u64 + Sync,
{
    std::thread::scope(|s| {
        let f = &f;
        let hs: Vec<_> = (0..threads).map(|t| s.spawn(move || f(t))).collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| fail("worker panicked")))
            .fold(0u64, |a, b| a.wrapping_add(b))
    })
}

// ---------------------------------------------------------------------------------------------
// The workloads
// ---------------------------------------------------------------------------------------------

/// 1 thread: toggle random slots between empty and a fresh 8..256 B block.
pub fn small_churn(o: &Opts) -> u64 {
    const SLOTS: usize = 4096;
    let mut rng = Rng::new(o.seed, 1);
    let mut slots: Vec<Option<Blk>> = (0..SLOTS).map(|_| None).collect();
    let mut sum = 0u64;
    for i in 0..o.ops(6_000_000) {
        let s = rng.range(0, SLOTS - 1);
        match slots[s].take() {
            Some(b) => b.free(),
            None => {
                let size = rng.range(8, 256);
                sum = sum.wrapping_add(size as u64);
                slots[s] = Some(Blk::new(size, 8, i as u8));
            }
        }
    }
    slots.into_iter().flatten().for_each(Blk::free);
    sum
}

/// Larson-style server: slot arrays rotate between threads after every round.
pub fn larson(o: &Opts) -> u64 {
    const SLOTS: usize = 2048;
    let t = o.threads;
    let arrays: Vec<Mutex<Vec<Option<Blk>>>> = (0..t)
        .map(|_| Mutex::new((0..SLOTS).map(|_| None).collect()))
        .collect();
    let barrier = Barrier::new(t);
    let rounds = o.ops(800);
    let sum = per_thread(t, |me| {
        let mut rng = Rng::new(o.seed, 100 + me as u64);
        let mut sum = 0u64;
        for r in 0..rounds {
            {
                let mut a = arrays[(me + r) % t].lock().unwrap();
                for _ in 0..SLOTS / 2 {
                    let s = rng.range(0, SLOTS - 1);
                    if let Some(b) = a[s].take() {
                        b.free();
                    }
                    let size = rng.range(16, 1024);
                    sum = sum.wrapping_add(size as u64);
                    a[s] = Some(Blk::new(size, 8, (s ^ r) as u8));
                }
            }
            barrier.wait();
        }
        sum
    });
    for a in arrays {
        a.into_inner()
            .unwrap()
            .into_iter()
            .flatten()
            .for_each(Blk::free);
    }
    sum
}

/// Producer/consumer pairs through bounded channels; batches of blocks and the batch Vec itself
/// are freed by the consumer thread.
pub fn prodcons(o: &Opts) -> u64 {
    const BATCH: usize = 32;
    let pairs = (o.threads / 2).max(1);
    let items = o.ops(1_500_000);
    std::thread::scope(|s| {
        let mut hs = Vec::new();
        for p in 0..pairs {
            let (tx, rx) = sync_channel::<Vec<Blk>>(64);
            s.spawn(move || {
                let mut rng = Rng::new(o.seed, 200 + p as u64);
                let mut left = items;
                while left > 0 {
                    let n = left.min(BATCH);
                    let batch: Vec<Blk> = (0..n)
                        .map(|i| Blk::new(rng.range(16, 1024), 8, (left - i) as u8))
                        .collect();
                    left -= n;
                    tx.send(batch).unwrap_or_else(|_| fail("consumer gone"));
                }
            });
            hs.push(s.spawn(move || {
                let mut sum = 0u64;
                for batch in rx {
                    for b in batch {
                        sum = sum.wrapping_add(b.size as u64);
                        b.free();
                    }
                }
                sum
            }));
        }
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| fail("consumer panicked")))
            .fold(0u64, |a, b| a.wrapping_add(b))
    })
}

/// Hoard's cache-scratch (passive false sharing): the main thread allocates one 16 B object per
/// thread (neighbours in memory); each thread frees its object, then repeatedly allocates a
/// 16 B object, writes it many times and frees it. An allocator that hands a thread the object
/// it just freed (a neighbour of other threads' objects) makes the threads fight over a cache line.
pub fn false_sharing(o: &Opts) -> u64 {
    const WRITES: usize = 200;
    let t = o.threads;
    let objs: Vec<Blk> = (0..t).map(|i| Blk::new(16, 8, i as u8)).collect();
    let objs: Vec<Mutex<Option<Blk>>> = objs.into_iter().map(|b| Mutex::new(Some(b))).collect();
    let iters = o.ops(200_000);
    per_thread(t, |me| {
        if let Some(b) = objs[me].lock().unwrap().take() {
            b.free();
        }
        let layout = Layout::from_size_align(16, 8).unwrap();
        let mut sum = 0u64;
        for i in 0..iters {
            // SAFETY: 16-byte block, written and read inside its bounds, freed with its layout.
            unsafe {
                let p = alloc(layout) as *mut u64;
                if p.is_null() {
                    fail("allocation returned null");
                }
                for w in 0..WRITES {
                    std::ptr::write_volatile(p.add(w & 1), (i + w) as u64);
                }
                sum = sum
                    .wrapping_add(std::ptr::read_volatile(p) + std::ptr::read_volatile(p.add(1)));
                if std::ptr::read_volatile(p.add(1)) != (i + WRITES - 1) as u64 {
                    fail("false_sharing object changed under its owner");
                }
                dealloc(p.cast(), layout);
            }
        }
        sum
    })
}

/// Per thread: `ops` times, replace a random one of `slots` slots with a fresh block whose size
/// and alignment `pick` draws (after the slot); returns the sum of `pick`'s weights.
fn slot_churn<F>(o: &Opts, stream: u64, slots: usize, ops: usize, pick: F) -> u64
where
    F: Fn(&mut Rng) -> (usize, usize, u64) + Sync,
{
    per_thread(o.threads, |me| {
        let mut rng = Rng::new(o.seed, stream + me as u64);
        let mut live: Vec<Option<Blk>> = (0..slots).map(|_| None).collect();
        let mut sum = 0u64;
        for i in 0..ops {
            let s = rng.range(0, slots - 1);
            if let Some(b) = live[s].take() {
                b.free();
            }
            let (size, align, weight) = pick(&mut rng);
            sum = sum.wrapping_add(weight);
            live[s] = Some(Blk::new(size, align, i as u8));
        }
        live.into_iter().flatten().for_each(Blk::free);
        sum
    })
}

/// Mixed sizes up to 4 MiB with a bounded working set per thread.
pub fn mixed(o: &Opts) -> u64 {
    slot_churn(o, 300, 256, o.ops(40_000), |rng| {
        let r = rng.range(0, 99);
        let size = if r < 80 {
            rng.range(16, 1024)
        } else if r < 95 {
            rng.log_range(1024, 64 << 10)
        } else {
            rng.log_range(64 << 10, 4 << 20)
        };
        (size, 8, size as u64)
    })
}

/// Growth by realloc: Vec and String push, and many small Vecs grown to random lengths.
pub fn realloc_growth(o: &Opts) -> u64 {
    let rounds = o.ops(40);
    per_thread(o.threads, |me| {
        let mut rng = Rng::new(o.seed, 400 + me as u64);
        let mut sum = 0u64;
        for _ in 0..rounds {
            let mut v: Vec<u64> = Vec::new();
            for i in 0..50_000u64 {
                v.push(i);
            }
            let mut s = String::new();
            for i in 0..20_000u32 {
                s.push(char::from(b'a' + (i % 26) as u8));
            }
            let mut small: Vec<Vec<u32>> = Vec::new();
            for k in 0..500u32 {
                let n = rng.range(0, 200);
                let mut w = Vec::new();
                for j in 0..n as u32 {
                    w.push(j ^ k);
                }
                small.push(w);
            }
            // A raw realloc chain too, growing and shrinking.
            // SAFETY: the block is always used within its current size and freed with it.
            unsafe {
                let mut size = 16usize;
                let mut p = alloc(Layout::from_size_align_unchecked(size, 8));
                *p = 7;
                while size < 256 << 10 {
                    let new = size + size / 2 + rng.range(1, 64);
                    p = realloc(p, Layout::from_size_align_unchecked(size, 8), new);
                    if p.is_null() || *p != 7 {
                        fail("realloc lost the prefix");
                    }
                    size = new;
                }
                dealloc(p, Layout::from_size_align_unchecked(size, 8));
            }
            if v.iter().sum::<u64>() != 49_999 * 50_000 / 2 || s.len() != 20_000 {
                fail("grown containers lost elements");
            }
            sum = sum.wrapping_add(v.len() as u64 + s.len() as u64);
            for (k, w) in small.iter().enumerate() {
                if w.first().is_some_and(|&x| x != k as u32) {
                    fail("small Vec lost its contents");
                }
                sum = sum.wrapping_add(w.len() as u64);
            }
        }
        sum
    })
}

/// std collections churn.
pub fn collections(o: &Opts) -> u64 {
    let n = o.ops(60_000);
    per_thread(o.threads, |me| {
        let mut rng = Rng::new(o.seed, 500 + me as u64);
        let mut sum = 0u64;
        let mut tree: BTreeMap<u64, String> = BTreeMap::new();
        for _ in 0..n {
            let k = rng.next_u64() % (n as u64 * 4);
            tree.insert(k, format!("value-{k}"));
        }
        let keys: Vec<u64> = tree.keys().copied().step_by(2).collect();
        for k in keys {
            tree.remove(&k);
        }
        for (k, v) in &tree {
            if *v != format!("value-{k}") {
                fail("BTreeMap value changed");
            }
            sum = sum.wrapping_add(*k).wrapping_add(v.len() as u64);
        }
        drop(tree);
        let mut map: HashMap<String, Vec<u32>> = HashMap::new();
        for i in 0..n as u32 {
            let k = rng.range(0, n / 8);
            map.entry(format!("key{k}")).or_default().push(i);
        }
        let mut count = 0usize;
        for (k, v) in &map {
            if !k.starts_with("key") {
                fail("HashMap key changed");
            }
            count += v.len();
        }
        if count != n {
            fail("HashMap lost elements");
        }
        sum.wrapping_add(map.len() as u64)
    })
}

struct Node {
    left: Option<Box<Node>>,
    right: Option<Box<Node>>,
}

fn bottom_up(depth: u32) -> Box<Node> {
    if depth == 0 {
        Box::new(Node {
            left: None,
            right: None,
        })
    } else {
        Box::new(Node {
            left: Some(bottom_up(depth - 1)),
            right: Some(bottom_up(depth - 1)),
        })
    }
}

fn count(n: &Node) -> u64 {
    1 + n.left.as_deref().map_or(0, count) + n.right.as_deref().map_or(0, count)
}

/// Binary trees (benchmarks-game shape): a long-lived tree plus many short-lived ones.
pub fn binary_trees(o: &Opts) -> u64 {
    const MIN: u32 = 4;
    const MAX: u32 = 15;
    per_thread(o.threads, |_| {
        let long = bottom_up(MAX);
        let mut sum = 0u64;
        let mut d = MIN;
        while d <= MAX {
            let iters = o.ops(1 << (MAX - d + MIN));
            for _ in 0..iters {
                let t = bottom_up(d);
                let c = count(&t);
                if c != (1u64 << (d + 1)) - 1 {
                    fail("tree lost nodes");
                }
                sum = sum.wrapping_add(c);
            }
            d += 2;
        }
        if count(&long) != (1u64 << (MAX + 1)) - 1 {
            fail("long-lived tree lost nodes");
        }
        sum
    })
}

/// Large blocks, every page touched.
pub fn large(o: &Opts) -> u64 {
    slot_churn(o, 600, 4, o.ops(500), |rng| {
        let size = rng.log_range(32 << 10, 8 << 20);
        (size, 8, size as u64)
    })
}

/// Aligned requests.
pub fn aligned(o: &Opts) -> u64 {
    slot_churn(o, 700, 1024, o.ops(300_000), |rng| {
        let align = 8usize << rng.range(0, 9);
        let size = rng.range(8, 4096);
        (size, align, (size + align) as u64)
    })
}
