//! Model: the central list of one size class, refilled and spilled by two threads at once.
//!
//! What it proves, for every interleaving loom explores: two concurrent refills never hand
//! out the same object; a spill racing a refill loses no object and duplicates none; and once
//! every object is back, the transfer cache drains and every span returns to the page heap
//! (no span is leaked or freed twice: `heap inuse` ends at exactly 0).
#![cfg(loom)]

use gomalloc::mcentral::{Batch, MCentral};
use gomalloc::mheap::MHeap;
use gomalloc::size_class::{self, CLASS_BATCH};
use loom::sync::Arc;
use loom::thread;

/// A class with 2-object batches and one object per span: the most span traffic per object.
fn class() -> usize {
    size_class::size_to_class(32768)
}

fn addrs(b: &Batch) -> Vec<usize> {
    let mut v = Vec::new();
    let mut p = b.head;
    for _ in 0..b.len {
        v.push(p as usize);
        // SAFETY: batch objects are linked through their first word.
        p = unsafe { (p as *mut *mut u8).read() };
    }
    v
}

#[test]
fn concurrent_refills_are_disjoint_and_spans_come_home() {
    loom::model(|| {
        let heap = Arc::new(MHeap::new());
        let central = Arc::new(MCentral::new());
        let c = class();
        let want = CLASS_BATCH[c];
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (heap, central) = (heap.clone(), central.clone());
                thread::spawn(move || {
                    let b = central.refill(&heap, c, want);
                    (addrs(&b), b.head as usize, b.tail as usize, b.len)
                })
            })
            .collect();
        let mut all = Vec::new();
        let mut batches = Vec::new();
        for h in handles {
            let (a, head, tail, len) = h.join().unwrap();
            assert_eq!(len, want);
            all.extend(a);
            batches.push(Batch {
                head: head as *mut u8,
                tail: tail as *mut u8,
                len,
            });
        }
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "an object was handed out twice");
        for b in batches {
            // SAFETY: the objects came from this class and are free.
            unsafe { central.spill(c, b) };
        }
        central.drain(c);
        assert_eq!(central.cached_objects(), 0);
        assert_eq!(heap.stats().inuse, 0, "a span did not come home");
    });
}

#[test]
fn spill_racing_refill_loses_nothing() {
    loom::model(|| {
        let heap = Arc::new(MHeap::new());
        let central = Arc::new(MCentral::new());
        let c = class();
        let want = CLASS_BATCH[c];
        let first = central.refill(&heap, c, want);
        let first_addrs = addrs(&first);
        let c2 = central.clone();
        let (fh, ft, fl) = (first.head as usize, first.tail as usize, first.len);
        let spiller = thread::spawn(move || {
            let b = Batch {
                head: fh as *mut u8,
                tail: ft as *mut u8,
                len: fl,
            };
            // SAFETY: the objects came from this class and are free.
            unsafe { c2.spill(c, b) };
        });
        let second = central.refill(&heap, c, want);
        spiller.join().unwrap();
        let got = addrs(&second);
        assert_eq!(got.len(), want as usize);
        // The refill saw the spilled batch or fresh objects, never a mix that duplicates one.
        let mut dedup = got.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), got.len());
        let reused = got.iter().filter(|a| first_addrs.contains(a)).count();
        // Objects of `first` not handed out again must still be in the central list.
        assert_eq!(central.cached_objects() + reused, want as usize);
        // SAFETY: free objects of this class.
        unsafe { central.spill(c, second) };
        central.drain(c);
        assert_eq!(heap.stats().inuse, 0);
    });
}

/// Model: objects of list X freed through list Y (a remote free across heap shards) while
/// another thread refills from X. A partial batch goes home to its spans under X's lock (not
/// Y's); a full batch goes to X's transfer cache. Proves: no object is handed out twice, none
/// is lost, and every span comes home to the heap once both lists are drained.
#[test]
fn remote_frees_go_home_to_their_own_list() {
    loom::model(|| {
        let heap = Arc::new(MHeap::new());
        let x = Arc::new(MCentral::new());
        let y = Arc::new(MCentral::new());
        let c = class();
        let want = CLASS_BATCH[c];
        // A full batch and a single object of X's; both are freed through Y.
        let full = x.refill(&heap, c, want);
        let single = x.refill(&heap, c, 1);
        assert_eq!(single.len, 1);
        let full_addrs = addrs(&full);
        let (fh, ft, fl) = (full.head as usize, full.tail as usize, full.len);
        let sh = single.head as usize;
        let y2 = y.clone();
        let remote = thread::spawn(move || {
            // SAFETY: the objects came from this class and are free.
            unsafe {
                y2.spill(
                    c,
                    Batch {
                        head: sh as *mut u8,
                        tail: sh as *mut u8,
                        len: 1,
                    },
                );
                y2.spill(
                    c,
                    Batch {
                        head: fh as *mut u8,
                        tail: ft as *mut u8,
                        len: fl,
                    },
                );
            }
        });
        let again = x.refill(&heap, c, want);
        remote.join().unwrap();
        let got = addrs(&again);
        let mut dedup = got.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), got.len(), "an object was handed out twice");
        // The full batch went to X (its origin), never to Y's transfer cache.
        assert_eq!(y.cached_objects(), 0);
        // Each object of the full batch is either in X's transfer cache or handed out again.
        let reused = got.iter().filter(|a| full_addrs.contains(a)).count();
        assert_eq!(
            x.cached_objects() + reused,
            want as usize,
            "a full batch was lost on its way home"
        );
        // SAFETY: free objects of this class.
        unsafe { x.spill(c, again) };
        x.drain(c);
        y.drain(c);
        assert_eq!(heap.stats().inuse, 0, "a span did not come home");
    });
}
