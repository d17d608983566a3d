//! Side-by-side allocator micro-benchmarks: gomalloc vs System (glibc) vs mimalloc vs jemalloc.
//!
//! Every allocator is driven through its `GlobalAlloc` methods directly (generic functions over
//! `A: GlobalAlloc`), all in one process. The bench binary's own `#[global_allocator]` stays
//! `System`, so criterion's bookkeeping allocations never touch the allocator being measured.
//!
//! Groups (benchmark ids are `<group>/<allocator>/<parameter>`):
//! * `small_pair`        – one alloc + dealloc of 16 / 64 / 256 bytes (hot thread-cache path).
//! * `batch_64B`         – allocate 10 000 blocks of 64 B (writing one byte each), then free them all.
//! * `realloc_growth`    – a Vec<u64>-like buffer pushed from 1 to 100 000, doubling capacity with
//!   `GlobalAlloc::realloc` (starts at 4 elements = 32 B).
//! * `block_touch`       – alloc 64 KiB / 1 MiB, write one byte per 4 KiB, free.
//! * `producer_consumer` – thread P allocates 64 B blocks with A and sends the raw pointers (as
//!   `usize`) through a bounded std `sync_channel`; thread C frees them with A.
//!   One iteration = 10 000 blocks. `per_ptr` sends one pointer per message
//!   (channel cost dominates); `batch50` sends arrays of 50 pointers, so the
//!   allocator's cross-thread free path is more visible.
//!
//! Run: `cargo bench --bench alloc` (all groups, ~3-4 min on 2 cores) or filter, e.g.
//! `cargo bench --bench alloc -- small_pair`. Medians are in
//! `target/criterion/<group>/<allocator>/<param>/new/estimates.json`.

use std::alloc::{handle_alloc_error, GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::mpsc::sync_channel;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gomalloc::GoMalloc;
use mimalloc::MiMalloc;
use tikv_jemallocator::Jemalloc;

// The harness itself runs on the system allocator (explicitly, so nobody "helpfully" switches it).
#[global_allocator]
static HARNESS_ALLOC: System = System;

static GO: GoMalloc = GoMalloc;
static SYS: System = System;
static MI: MiMalloc = MiMalloc;
static JE: Jemalloc = Jemalloc;

/// Run `$body` once per allocator with `$a` bound to a `&'static` allocator and `$name` to its name.
macro_rules! for_each_alloc {
    (|$name:ident, $a:ident| $body:block) => {{
        {
            let $name = "gomalloc";
            let $a = &GO;
            $body
        }
        {
            let $name = "system";
            let $a = &SYS;
            $body
        }
        {
            let $name = "mimalloc";
            let $a = &MI;
            $body
        }
        {
            let $name = "jemalloc";
            let $a = &JE;
            $body
        }
    }};
}

#[inline(always)]
unsafe fn checked_alloc<A: GlobalAlloc>(a: &A, layout: Layout) -> *mut u8 {
    let p = a.alloc(layout);
    if p.is_null() {
        handle_alloc_error(layout);
    }
    p
}

// ---------------------------------------------------------------------------------------------
// Workloads (generic over the allocator)
// ---------------------------------------------------------------------------------------------

#[inline(always)]
unsafe fn small_pair<A: GlobalAlloc>(a: &A, layout: Layout) {
    let p = checked_alloc(a, layout);
    a.dealloc(black_box(p), layout);
}

/// Allocate `ptrs.capacity()` blocks (writing one byte into each), then free them in order.
#[inline(never)]
unsafe fn batch<A: GlobalAlloc>(a: &A, ptrs: &mut Vec<*mut u8>, n: usize, layout: Layout) {
    ptrs.clear();
    for i in 0..n {
        let p = checked_alloc(a, layout);
        p.write(i as u8);
        ptrs.push(p); // capacity reserved up front: never reallocates (and it is System anyway)
    }
    for &p in ptrs.iter() {
        a.dealloc(p, layout);
    }
    black_box(ptrs);
}

/// Push 1..=n (u64) into a raw buffer that doubles via `realloc`. Returns a checksum; with
/// `full_check` it verifies every element survived every realloc.
#[inline(never)]
unsafe fn realloc_growth<A: GlobalAlloc>(a: &A, n: u64, full_check: bool) -> u64 {
    let mut cap = 4usize;
    let mut layout = Layout::array::<u64>(cap).unwrap();
    let mut p = checked_alloc(a, layout) as *mut u64;
    let mut len = 0usize;
    for v in 1..=n {
        if len == cap {
            let new_cap = cap * 2;
            let np = a.realloc(p as *mut u8, layout, new_cap * 8);
            if np.is_null() {
                handle_alloc_error(Layout::array::<u64>(new_cap).unwrap());
            }
            p = np as *mut u64;
            cap = new_cap;
            layout = Layout::from_size_align_unchecked(new_cap * 8, 8);
        }
        p.add(len).write(v);
        len += 1;
    }
    let sum = if full_check {
        let mut s = 0u64;
        for i in 0..len {
            assert_eq!(*p.add(i), i as u64 + 1, "realloc lost data at index {i}");
            s += *p.add(i);
        }
        s
    } else {
        *p + *p.add(len / 2) + *p.add(len - 1)
    };
    a.dealloc(p as *mut u8, layout);
    sum
}

/// Allocate `size` bytes, write one byte per 4 KiB (fault every OS page in), free.
#[inline(never)]
unsafe fn block_touch<A: GlobalAlloc>(a: &A, layout: Layout) {
    let p = checked_alloc(a, layout);
    let mut off = 0;
    while off < layout.size() {
        p.add(off).write_volatile(off as u8 | 1);
        off += 4096;
    }
    a.dealloc(black_box(p), layout);
}

const PC_BLOCKS: u64 = 10_000;
const PC_BATCH: usize = 50;
const L64: Layout = match Layout::from_size_align(64, 8) {
    Ok(l) => l,
    Err(_) => panic!(),
};

/// Producer (this thread) allocates `iters * 10_000` 64-byte blocks; consumer (scoped thread)
/// frees them. Time = from both passing the start barrier to the consumer freeing the last block.
fn producer_consumer<A: GlobalAlloc + Sync>(a: &A, iters: u64, batch: bool) -> Duration {
    let total = iters * PC_BLOCKS;
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        if !batch {
            let (tx, rx) = sync_channel::<usize>(1024);
            let consumer = s.spawn(|| {
                barrier.wait();
                let mut n = 0u64;
                for p in rx {
                    unsafe {
                        debug_assert_eq!(*(p as *const u8), 0xA5);
                        a.dealloc(p as *mut u8, L64);
                    }
                    n += 1;
                }
                (Instant::now(), n)
            });
            barrier.wait();
            let start = Instant::now();
            for _ in 0..total {
                unsafe {
                    let p = checked_alloc(a, L64);
                    p.write(0xA5);
                    tx.send(p as usize).unwrap();
                }
            }
            drop(tx);
            let (end, n) = consumer.join().unwrap();
            assert_eq!(n, total);
            end - start
        } else {
            let (tx, rx) = sync_channel::<[usize; PC_BATCH]>(1024 / PC_BATCH);
            let consumer = s.spawn(|| {
                barrier.wait();
                let mut n = 0u64;
                for msg in rx {
                    for p in msg {
                        unsafe {
                            debug_assert_eq!(*(p as *const u8), 0xA5);
                            a.dealloc(p as *mut u8, L64);
                        }
                    }
                    n += PC_BATCH as u64;
                }
                (Instant::now(), n)
            });
            barrier.wait();
            let start = Instant::now();
            let mut msg = [0usize; PC_BATCH];
            for _ in 0..total / PC_BATCH as u64 {
                for slot in msg.iter_mut() {
                    unsafe {
                        let p = checked_alloc(a, L64);
                        p.write(0xA5);
                        *slot = p as usize;
                    }
                }
                tx.send(msg).unwrap();
            }
            drop(tx);
            let (end, n) = consumer.join().unwrap();
            assert_eq!(n, total);
            end - start
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Sanity pass: every allocator must produce correct results before anything is timed.
// ---------------------------------------------------------------------------------------------

fn sanity<A: GlobalAlloc + Sync>(name: &str, a: &A) {
    unsafe {
        for size in [0usize, 1, 16, 64, 256, 4096, 40_000, 64 << 10, 1 << 20] {
            for align in [1usize, 8, 16, 64, 4096] {
                let l = Layout::from_size_align(size, align).unwrap();
                let p = checked_alloc(a, l);
                assert_eq!(p as usize % align, 0, "{name}: misaligned {size}/{align}");
                std::ptr::write_bytes(p, 0x5A, size);
                a.dealloc(p, l);
            }
        }
        let n = 100_000u64;
        assert_eq!(
            realloc_growth(a, n, true),
            n * (n + 1) / 2,
            "{name}: realloc_growth"
        );
        let mut v = Vec::with_capacity(10_000);
        batch(a, &mut v, 10_000, L64);
        block_touch(a, Layout::from_size_align(1 << 20, 8).unwrap());
    }
    producer_consumer(a, 1, false);
    producer_consumer(a, 1, true);
}

// ---------------------------------------------------------------------------------------------
// Criterion groups
// ---------------------------------------------------------------------------------------------

fn bench_sanity(_c: &mut Criterion) {
    for_each_alloc!(|name, a| {
        sanity(name, a);
    });
}

fn bench_small_pair(c: &mut Criterion) {
    let mut g = c.benchmark_group("small_pair");
    g.throughput(Throughput::Elements(1));
    for size in [16usize, 64, 256] {
        let layout = Layout::from_size_align(size, 8).unwrap();
        for_each_alloc!(|name, a| {
            g.bench_with_input(
                BenchmarkId::new(name, format!("{size}B")),
                &layout,
                |b, &l| b.iter(|| unsafe { small_pair(a, l) }),
            );
        });
    }
    g.finish();
}

fn bench_batch(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch_64B");
    const N: usize = 10_000;
    g.throughput(Throughput::Elements(N as u64));
    let mut ptrs: Vec<*mut u8> = Vec::with_capacity(N);
    for_each_alloc!(|name, a| {
        g.bench_function(BenchmarkId::new(name, "10k"), |b| {
            b.iter(|| unsafe { batch(a, &mut ptrs, N, L64) })
        });
    });
    g.finish();
}

fn bench_realloc_growth(c: &mut Criterion) {
    let mut g = c.benchmark_group("realloc_growth");
    const N: u64 = 100_000;
    g.throughput(Throughput::Elements(N));
    for_each_alloc!(|name, a| {
        g.bench_function(BenchmarkId::new(name, "100k_u64"), |b| {
            b.iter(|| unsafe { black_box(realloc_growth(a, black_box(N), false)) })
        });
    });
    g.finish();
}

fn bench_block_touch(c: &mut Criterion) {
    let mut g = c.benchmark_group("block_touch");
    for (label, size) in [("64KiB", 64usize << 10), ("1MiB", 1usize << 20)] {
        let layout = Layout::from_size_align(size, 8).unwrap();
        g.throughput(Throughput::Bytes(size as u64));
        for_each_alloc!(|name, a| {
            g.bench_with_input(BenchmarkId::new(name, label), &layout, |b, &l| {
                b.iter(|| unsafe { block_touch(a, l) })
            });
        });
    }
    g.finish();
}

fn bench_producer_consumer(c: &mut Criterion) {
    let mut g = c.benchmark_group("producer_consumer");
    g.throughput(Throughput::Elements(PC_BLOCKS));
    for (label, batched) in [("per_ptr", false), ("batch50", true)] {
        for_each_alloc!(|name, a| {
            g.bench_function(BenchmarkId::new(name, label), |b| {
                b.iter_custom(|iters| producer_consumer(a, iters, batched))
            });
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_sanity, bench_small_pair, bench_batch, bench_realloc_growth,
              bench_block_touch, bench_producer_consumer
}
criterion_main!(benches);
