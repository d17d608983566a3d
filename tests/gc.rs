//! The collector (feature `gc`) at this stage: stop-the-world mark-sweep on one thread with
//! conservative roots. One #[test] runs the parts in order, because cycles run only while a
//! single thread uses the GC heap (libtest would run several tests' threads at once).
#![cfg(feature = "gc")]

use gomalloc::gc::{self, Gc};
use std::cell::Cell;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

#[global_allocator]
static A: gomalloc::GoMalloc = gomalloc::GoMalloc;

struct Node {
    id: u64,
    check: u64,
    edges: [Cell<Option<Gc<Node>>>; 3],
}

fn check_of(id: u64) -> u64 {
    id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xA5A5
}

#[inline(never)]
fn node(id: u64) -> Gc<Node> {
    Gc::new(Node {
        id,
        check: check_of(id),
        edges: [Cell::new(None), Cell::new(None), Cell::new(None)],
    })
}

fn live_objects() -> u64 {
    let s = gc::stats();
    s.mallocs - s.frees
}

/// Makes garbage in a frame of its own, then scrubs the stack below it, so that no stale
/// stack slot keeps the garbage alive.
#[inline(never)]
fn make_garbage(n: u64) {
    for i in 0..n {
        black_box(node(1_000_000 + i));
    }
}

#[inline(never)]
fn scrub_stack() {
    let buf = [0u8; 64 << 10];
    black_box(&buf);
}

fn list_keeps_objects_and_garbage_goes() {
    let head = node(0);
    let mut tail = head;
    for i in 1..1000 {
        let n = node(i);
        tail.edges[0].set(Some(n));
        tail = n;
    }
    let base = live_objects();
    make_garbage(10_000);
    scrub_stack();
    gc::collect();
    let after = live_objects();
    // The 1000 list nodes survive; of the 10 000 garbage nodes at most a few stray ones.
    assert!(
        after + 9_950 <= base + 10_000,
        "garbage kept: {} of 10000",
        after + 10_000 - base
    );
    let mut at = Some(head);
    let mut count = 0;
    while let Some(n) = at {
        assert_eq!(n.id, count);
        assert_eq!(n.check, check_of(count), "a reachable node was overwritten");
        count += 1;
        at = n.edges[0].get();
    }
    assert_eq!(count, 1000);
    black_box(head);
}

/// Randomised graph mutation against a shadow model of reachability. Roots live in a Vec
/// (malloc'd memory, scanned by default).
fn random_graph_against_shadow_model() {
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    const ROOTS: usize = 64;
    let mut roots: Vec<Option<Gc<Node>>> = vec![None; ROOTS];
    // Shadow: every object ever made, by id, with its edges (ids).
    let mut shadow_edges: Vec<[Option<usize>; 3]> = Vec::new();
    // id -> address, for the shadow only; hidden (xor), so that the scan of malloc'd memory
    // does not take the shadow's own records for pointers.
    const HIDE: usize = 0x5555_0000_0000_5555;
    let mut objs: Vec<usize> = Vec::new();
    let mut root_ids: Vec<Option<usize>> = vec![None; ROOTS];
    let mut id_of_addr = std::collections::HashMap::new();
    for round in 0..30 {
        for _ in 0..3000 {
            let r = next() % 100;
            let slot = (next() % ROOTS as u64) as usize;
            if r < 40 || root_ids[slot].is_none() {
                let id = shadow_edges.len();
                let n = node(id as u64);
                shadow_edges.push([None; 3]);
                objs.push(Gc::as_ptr(n) as usize ^ HIDE);
                id_of_addr.insert(Gc::as_ptr(n) as usize ^ HIDE, id);
                // Link from an existing root's object sometimes, so graphs grow deep.
                if let (Some(from), Some(fid)) = (roots[slot], root_ids[slot]) {
                    let e = (next() % 3) as usize;
                    from.edges[e].set(Some(n));
                    shadow_edges[fid][e] = Some(id);
                } else {
                    roots[slot] = Some(n);
                    root_ids[slot] = Some(id);
                }
            } else if r < 70 {
                // Replace a root by a child of another root (or clear it).
                let other = (next() % ROOTS as u64) as usize;
                let e = (next() % 3) as usize;
                let (child, cid) = match (roots[other], root_ids[other]) {
                    (Some(o), Some(oid)) => (o.edges[e].get(), shadow_edges[oid][e]),
                    _ => (None, None),
                };
                roots[slot] = child;
                root_ids[slot] = cid;
            } else if r < 90 {
                // Cut an edge.
                if let (Some(o), Some(oid)) = (roots[slot], root_ids[slot]) {
                    let e = (next() % 3) as usize;
                    o.edges[e].set(None);
                    shadow_edges[oid][e] = None;
                }
            } else {
                roots[slot] = None;
                root_ids[slot] = None;
            }
        }
        scrub_stack();
        gc::collect();
        if round % 2 == 1 {
            gc::collect();
        }
        // Reachable set in the shadow model.
        let mut seen = vec![false; shadow_edges.len()];
        let mut stack: Vec<usize> = root_ids.iter().flatten().copied().collect();
        let mut reachable = 0u64;
        while let Some(i) = stack.pop() {
            if seen[i] {
                continue;
            }
            seen[i] = true;
            reachable += 1;
            for e in shadow_edges[i].iter().flatten() {
                stack.push(*e);
            }
        }
        // Every reachable object is intact: its id and check word, and its edges agree with
        // the shadow model.
        for (i, _) in seen.iter().enumerate().filter(|(_, s)| **s) {
            // SAFETY: reachable, so still allocated (this is what the test checks).
            let n = unsafe { &*((objs[i] ^ HIDE) as *const Node) };
            assert_eq!(
                n.id, i as u64,
                "round {round}: reachable object {i} was reused"
            );
            assert_eq!(
                n.check,
                check_of(i as u64),
                "round {round}: object {i} overwritten"
            );
            for (edge, want) in n.edges.iter().zip(shadow_edges[i]) {
                let got = edge
                    .get()
                    .map(|g| id_of_addr[&(Gc::as_ptr(g) as usize ^ HIDE)]);
                assert_eq!(got, want, "round {round}: edge of {i} changed");
            }
        }
        // Unreachable ones are gone, but for a bounded false retention (stale words).
        let live = live_objects();
        let other = 1_100; // the list of the first part plus stray garbage it may keep
        assert!(
            live >= reachable,
            "round {round}: {live} live < {reachable} reachable"
        );
        assert!(
            live <= reachable + reachable / 50 + other,
            "round {round}: {live} live objects for {reachable} reachable"
        );
    }
    black_box(&roots);
}

/// A noscan object's words are not pointers to the collector.
fn noscan_does_not_keep_objects() {
    scrub_stack();
    gc::collect();
    let before = live_objects();
    #[inline(never)]
    fn make() -> Vec<Gc<[usize; 4]>> {
        (0..1000)
            .map(|_| {
                let target = node(7);
                Gc::new_noscan([Gc::as_ptr(target) as usize; 4])
            })
            .collect()
    }
    let holders = make();
    scrub_stack();
    gc::collect();
    let after = live_objects();
    // The 1000 holders stay (in the Vec); the 1000 nodes they "point" to go.
    assert!(
        after <= before + 1000 + 10,
        "noscan words kept objects: {}",
        after - before
    );
    assert!(after >= before + 1000);
    assert_eq!(holders[999][0], holders[999][3]);
}

/// Root regions, interior pointers and the switch off malloc scanning.
fn regions_and_interior_pointers() {
    let region: Box<[AtomicUsize; 16]> = Box::default();
    // SAFETY: the box outlives the registration (removed below).
    unsafe {
        gc::add_roots(
            region.as_ptr() as *const u8,
            std::mem::size_of_val(&*region),
        )
    };
    // SAFETY: the test keeps Gc pointers only on the stack and in the registered region
    // while malloc scanning is off.
    unsafe { gc::set_scan_malloc(false) };
    #[inline(never)]
    fn fill(region: &[AtomicUsize; 16]) {
        for (i, r) in region.iter().enumerate() {
            let n = node(500 + i as u64);
            // An interior pointer: the address of the check word, not the object start.
            r.store(&n.check as *const u64 as usize, Ordering::Relaxed);
        }
    }
    fill(&region);
    scrub_stack();
    gc::collect();
    for (i, r) in region.iter().enumerate() {
        let check = r.load(Ordering::Relaxed) as *const u64;
        // SAFETY: the region kept the object alive through its interior pointer.
        assert_eq!(
            unsafe { *check },
            check_of(500 + i as u64),
            "interior root lost its object"
        );
    }
    let before = live_objects();
    // SAFETY: registered above.
    unsafe { gc::remove_roots(region.as_ptr() as *const u8) };
    gc::collect();
    let after = live_objects();
    assert!(
        before - after >= 14,
        "unregistered region still kept {} objects",
        16 - (before - after)
    );
    // SAFETY: back to the default.
    unsafe { gc::set_scan_malloc(true) };
}

static STATIC_ROOT: AtomicUsize = AtomicUsize::new(0);

/// Static data is scanned.
fn statics_are_roots() {
    // SAFETY: only stack and static roots hold Gc pointers during this part.
    unsafe { gc::set_scan_malloc(false) };
    #[inline(never)]
    fn put() {
        STATIC_ROOT.store(Gc::as_ptr(node(4242)) as usize, Ordering::Relaxed);
    }
    put();
    scrub_stack();
    gc::collect();
    make_garbage(1000);
    let p = STATIC_ROOT.load(Ordering::Relaxed) as *const Node;
    // SAFETY: kept alive by the static.
    unsafe {
        assert_eq!(
            (*p).id,
            4242,
            "an object held by a static was freed and reused"
        );
        assert_eq!((*p).check, check_of(4242));
    }
    // SAFETY: back to the default.
    unsafe { gc::set_scan_malloc(true) };
}

/// GOGC pacing: automatic cycles keep the GC heap near its goal; off means none.
fn pacing() {
    let old = gc::set_gc_percent(-1);
    assert_eq!(old, 100);
    let n0 = gc::stats().num_gc;
    make_garbage(200_000); // 200k x 48 B = 9.6 MB
    assert_eq!(gc::stats().num_gc, n0, "a cycle ran with GOGC off");
    gc::set_gc_percent(100);
    scrub_stack();
    gc::collect();
    let mut max_live = 0;
    for _ in 0..20 {
        make_garbage(20_000);
        max_live = max_live.max(gc::stats().heap_live);
    }
    let s = gc::stats();
    assert!(s.num_gc > n0, "no automatic cycle");
    // Little survives, so the goal is the 4 MiB minimum; a cycle starts on the allocation
    // that reaches it.
    assert_eq!(s.next_gc, 4 << 20);
    assert!(
        max_live <= s.next_gc + 64,
        "heap {max_live} over goal {}",
        s.next_gc
    );
}

/// With a second thread using the GC heap, cycles are skipped (this stage) and counted.
fn second_thread_skips_cycles() {
    let (tx, rx) = std::sync::mpsc::channel();
    let (tx2, rx2) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let n = node(9);
        tx.send(()).unwrap();
        rx2.recv().unwrap();
        assert_eq!(n.id, 9);
    });
    rx.recv().unwrap();
    let s0 = gc::stats();
    gc::collect();
    let s1 = gc::stats();
    assert_eq!(s1.num_skipped, s0.num_skipped + 1);
    assert_eq!(s1.num_gc, s0.num_gc);
    tx2.send(()).unwrap();
    t.join().unwrap();
    gc::collect();
    assert_eq!(
        gc::stats().num_gc,
        s1.num_gc + 1,
        "the cycle still skipped after the thread exited"
    );
}

#[test]
fn collector() {
    list_keeps_objects_and_garbage_goes();
    random_graph_against_shadow_model();
    noscan_does_not_keep_objects();
    regions_and_interior_pointers();
    statics_are_roots();
    pacing();
    second_thread_skips_cycles();
}
