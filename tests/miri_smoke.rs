//! A small program on GoMalloc as its global allocator, cheap enough for Miri (`bash
//! ci/miri.sh`), which then checks every access the allocator makes (to its static page map,
//! its span descriptors and thread-cache nodes, the objects it links free lists through) and
//! every access the program makes to what it handed out: bounds, alignment, provenance,
//! use-after-free of its own mappings, uninitialised reads, data races between threads.
//!
//! Every path is taken once or a few times: thread caches, central lists and their transfer
//! caches (remote frees from other threads, thread exit), page-heap spans for large and
//! over-aligned blocks, huge mappings, `alloc_zeroed`, realloc in place and moving across the
//! small / large / huge boundaries, statistics and `release_memory`. Contents are filled with
//! `write_bytes` and compared a page at a time (Miri runs those natively), so that no loop is
//! interpreted per byte. It runs in every normal `cargo test` too (in milliseconds).

use std::alloc::{GlobalAlloc, Layout};
use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;
use std::thread;

#[global_allocator]
static GLOBAL: gomalloc::GoMalloc = gomalloc::GoMalloc;

/// Whether `len` bytes at `p` all equal `v` (compared 4 KiB at a time).
///
/// # Safety
/// `p` is valid for reads of `len` initialised bytes.
unsafe fn all_eq(p: *const u8, len: usize, v: u8) -> bool {
    let chunk = [v; 4096];
    // SAFETY: precondition.
    let bytes = unsafe { std::slice::from_raw_parts(p, len) };
    bytes.chunks(4096).all(|c| c == &chunk[..c.len()])
}

#[test]
fn collections_on_gomalloc() {
    // A Vec grows through the small classes (realloc at every doubling), then into a large span.
    let mut v: Vec<u64> = Vec::new();
    for i in 0..1500u64 {
        v.push(i * 3);
    }
    v.reserve_exact(10_000);
    assert!(v.capacity() >= 11_500);
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64 * 3));

    let mut m: HashMap<String, Vec<u32>> = HashMap::new();
    for i in 0..60u32 {
        m.insert(format!("key {i}"), (0..i % 23).collect());
    }
    for i in (0..60u32).step_by(2) {
        assert_eq!(
            m.remove(&format!("key {i}")).map(|v| v.len()),
            Some((i % 23) as usize)
        );
    }
    for (k, v) in &m {
        let i: u32 = k[4..].parse().unwrap();
        assert!(i % 2 == 1 && v.len() == (i % 23) as usize);
        assert!(v.iter().enumerate().all(|(j, &x)| x == j as u32));
    }

    let mut t: BTreeMap<u32, Box<[u8; 40]>> = BTreeMap::new();
    for i in 0..100u32 {
        t.insert(i.wrapping_mul(2_654_435_761), Box::new([i as u8; 40]));
    }
    for (k, b) in &t {
        let i = k.wrapping_mul(244_002_641); // the inverse of 2654435761 mod 2^32
        assert!(b.iter().all(|&x| x == i as u8));
    }

    let mut s = String::new();
    for i in 0..150 {
        s.push_str(&i.to_string());
    }
    assert!(s.starts_with("0123456789101112") && s.ends_with("148149"));
    drop((v, m, t, s));
}

#[test]
fn layouts_zeroing_and_realloc() {
    // Small classes, a page-sized alignment, large spans (over 32 KiB), a page-heap span cut to
    // a 64 KiB alignment, a huge mapping for an alignment past 1 MiB, and one for a huge size.
    let layouts = [
        (1, 1),
        (8, 8),
        (24, 8),
        (100, 16),
        (1000, 64),
        (4096, 4096),
        (5000, 8192),
        (40_000, 8),
        (200_000, 65_536),
        (3000, 2 << 20),
        (16 << 20, 16),
    ];
    for &(size, align) in &layouts {
        let l = Layout::from_size_align(size, align).unwrap();
        // SAFETY: non-zero sizes; every block is freed with its own layout.
        unsafe {
            let p = GLOBAL.alloc(l);
            assert!(!p.is_null(), "{size} B / {align}");
            assert_eq!(p.addr() % align, 0, "{size} B / {align}");
            assert!(gomalloc::usable_size(p) >= size);
            std::ptr::write_bytes(p, 0xA5, size);
            let z = GLOBAL.alloc_zeroed(l);
            assert!(!z.is_null() && z.addr() % align == 0);
            assert!(all_eq(z, size, 0), "alloc_zeroed {size} B / {align}");
            assert!(all_eq(p, size, 0xA5), "{size} B / {align} overwritten");
            GLOBAL.dealloc(p, l);
            // Reused memory is zeroed too.
            let z2 = GLOBAL.alloc_zeroed(l);
            assert!(all_eq(z2, size, 0));
            GLOBAL.dealloc(z2, l);
            GLOBAL.dealloc(z, l);
        }
    }

    // One block through every boundary: small -> large (in place and moving) -> huge
    // (mremap) -> large -> small; each step keeps the prefix both sizes share.
    let steps = [
        8,
        100,
        5000,
        40_000,
        80_000,
        300_000,
        17 << 20,
        20 << 20,
        100_000,
        10,
    ];
    let mut size = 1;
    // SAFETY: `p` is live with `size` bytes at every step; realloc gets its current layout.
    unsafe {
        let mut p = GLOBAL.alloc(Layout::from_size_align(size, 8).unwrap());
        assert!(!p.is_null());
        std::ptr::write_bytes(p, 1, size);
        for (i, &new) in steps.iter().enumerate() {
            let v = i as u8 + 1;
            let q = GLOBAL.realloc(p, Layout::from_size_align(size, 8).unwrap(), new);
            assert!(!q.is_null(), "realloc {size} -> {new}");
            assert!(
                all_eq(q, size.min(new), v),
                "realloc {size} -> {new} lost data"
            );
            std::ptr::write_bytes(q, v + 1, new);
            p = q;
            size = new;
        }
        GLOBAL.dealloc(p, Layout::from_size_align(size, 8).unwrap());
    }
}

#[test]
fn threads_remote_frees_and_exit() {
    // Two threads allocate boxes that the main thread frees (remote frees: they join the main
    // thread's cache and go home in batches), and free vectors the main thread allocated;
    // when they exit, their caches are flushed to the central lists.
    let (to_main, from_threads) = mpsc::channel::<Box<[u64; 6]>>();
    let mut workers = Vec::new();
    for t in 0..2u64 {
        let tx = to_main.clone();
        let (to_worker, from_main) = mpsc::channel::<Vec<u64>>();
        workers.push((
            to_worker,
            thread::spawn(move || {
                // More than one batch (at most 64 objects), so frees spill to the central list.
                for i in 0..80u64 {
                    tx.send(Box::new([t * 1000 + i; 6])).unwrap();
                }
                drop(tx);
                let mut sum = 0;
                for v in from_main {
                    assert!(v.iter().all(|&x| x == v[0]));
                    sum += v[0];
                }
                sum
            }),
        ));
    }
    drop(to_main);
    let mut seen = 0;
    for b in from_threads {
        assert!(b.iter().all(|&x| x == b[0]));
        seen += 1;
    }
    assert_eq!(seen, 160);
    let mut total = 0;
    for (k, (tx, h)) in workers.into_iter().enumerate() {
        for i in 0..40u64 {
            tx.send(vec![i + k as u64; 5 + i as usize % 40]).unwrap();
        }
        drop(tx);
        total += h.join().unwrap();
    }
    assert_eq!(total, 2 * (0..40).sum::<u64>() + 40);
}

#[test]
fn stats_and_release_memory() {
    let keep: Vec<Box<[u8; 100]>> = (0..50).map(|i| Box::new([i as u8; 100])).collect();
    let big = vec![7u8; 100_000];
    gomalloc::flush_thread_cache();
    gomalloc::release_memory();
    let s = gomalloc::stats();
    assert_eq!(s.heap_inuse + s.heap_idle, s.heap_sys);
    assert!(s.heap_released <= s.heap_idle);
    assert!(s.heap_alloc >= 100_000 + 50 * 100);
    assert!(s.mallocs >= s.frees);
    assert!(keep.iter().enumerate().all(|(i, b)| b[99] == i as u8));
    // SAFETY: `big` is 100 000 initialised bytes.
    assert!(unsafe { all_eq(big.as_ptr(), big.len(), 7) });
}

#[test]
fn thread_cache_node_is_recycled() {
    // A thread's cache node goes back to the pool when the thread exits, and the next thread
    // gets it and writes a fresh cache into it. Under Miri this once failed: the node went back
    // through a pointer derived from a `&MCache`, which may not write the node's padding.
    for round in 0..3u8 {
        thread::spawn(move || {
            let b = Box::new([round; 64]);
            assert!(b.iter().all(|&x| x == round));
        })
        .join()
        .unwrap();
    }
}
