//! Model: one page heap used by two threads at once: span allocation, free and coalescing.
//!
//! What it proves, for every interleaving loom explores: spans handed out at the same time never
//! overlap; frees racing allocations lose no page (`inuse` returns to exactly 0) and leave the
//! free runs fully coalesced (one free span per arena chunk, no two free neighbours); and the
//! page map points every page of a live span at that span when another thread looks it up.
#![cfg(loom)]

use gomalloc::mheap::MHeap;
use gomalloc::pagemap;
use loom::sync::Arc;
use loom::thread;

#[test]
fn concurrent_alloc_free_coalesce() {
    loom::model(|| {
        let heap = Arc::new(MHeap::new());
        // A span allocated up front, freed by one thread while the other allocates.
        let first = heap.alloc(3, 0) as usize;
        assert_ne!(first, 0);
        let h1 = heap.clone();
        let freer = thread::spawn(move || {
            // SAFETY: `first` is a live span of this heap, freed once.
            unsafe { h1.free(first as *mut gomalloc::span::Span) };
        });
        let h2 = heap.clone();
        let alloc = thread::spawn(move || {
            let s = h2.alloc(2, 0);
            assert!(!s.is_null());
            // SAFETY: a live span of ours.
            let (start, npages) = unsafe { ((*s).base(), (*s).npages) };
            // Every page of the new span maps back to it (page-map publication).
            for i in 0..npages {
                assert_eq!(pagemap::lookup(start + i * 8192), s);
            }
            (s as usize, start, npages)
        });
        freer.join().unwrap();
        let (s, start, npages) = alloc.join().unwrap();
        assert_eq!(heap.stats().inuse, npages * 8192);
        // The other thread's view: the span found from an interior address is the live one.
        assert_eq!(pagemap::span_of(start + 8192 + 17) as usize, s);
        // SAFETY: a live span of this heap, freed once.
        unsafe { heap.free(s as *mut gomalloc::span::Span) };
        let st = heap.stats();
        assert_eq!(st.inuse, 0, "pages lost");
        assert_eq!(st.free_spans, 1, "free runs not coalesced");
    });
}

#[test]
fn two_threads_allocate_disjoint_spans() {
    loom::model(|| {
        let heap = Arc::new(MHeap::new());
        let hs: Vec<_> = (0..2)
            .map(|i| {
                let h = heap.clone();
                thread::spawn(move || {
                    let s = h.alloc(1 + i, 0);
                    assert!(!s.is_null());
                    // SAFETY: a live span of ours.
                    unsafe { ((*s).base(), (*s).npages, s as usize) }
                })
            })
            .collect();
        let spans: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        let (a, b) = (spans[0], spans[1]);
        assert!(
            a.0 + a.1 * 8192 <= b.0 || b.0 + b.1 * 8192 <= a.0,
            "spans overlap"
        );
        for (_, _, s) in spans {
            // SAFETY: live spans of this heap, each freed once.
            unsafe { heap.free(s as *mut gomalloc::span::Span) };
        }
        let st = heap.stats();
        assert_eq!(st.inuse, 0);
        assert_eq!(st.free_spans, 1);
    });
}
