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
