//! The main thread's own state as roots (feature `gc`; no test harness, so `main` runs on the
//! process's initial thread): objects held only in a main-thread `thread_local!` survive
//! collections run by another thread (the main thread is stopped, and its static TLS block,
//! which lies outside its stack, is scanned) and by the main thread itself.
#![cfg_attr(not(feature = "gc"), allow(unused))]

#[cfg(feature = "gc")]
mod run {
    use gomalloc::gc::{self, Gc};
    use std::cell::Cell;
    use std::hint::black_box;

    #[global_allocator]
    static A: gomalloc::GoMalloc = gomalloc::GoMalloc;

    struct Node {
        id: u64,
        check: u64,
    }

    std::thread_local! {
        /// Addresses of objects, hidden from nothing: this TLS block is a root.
        static KEPT: [Cell<usize>; 64] = const { [const { Cell::new(0) }; 64] };
    }

    #[inline(never)]
    fn fill() {
        KEPT.with(|k| {
            for (i, c) in k.iter().enumerate() {
                let n = Gc::new(Node {
                    id: i as u64,
                    check: !(i as u64),
                });
                c.set(Gc::as_ptr(n) as usize);
            }
        });
    }

    #[inline(never)]
    fn garbage() {
        for i in 0..20_000u64 {
            black_box(Gc::new(Node {
                id: u64::MAX,
                check: i,
            }));
        }
    }

    #[inline(never)]
    fn scrub() {
        black_box([0u8; 64 << 10]);
    }

    fn check(when: &str) {
        KEPT.with(|k| {
            for (i, c) in k.iter().enumerate() {
                // SAFETY: kept alive by this thread-local (what the test checks).
                let n = unsafe { &*(c.get() as *const Node) };
                assert_eq!(n.id, i as u64, "{when}: object {i} freed and reused");
                assert_eq!(n.check, !(i as u64), "{when}: object {i} overwritten");
            }
        });
    }

    pub fn main() {
        // SAFETY: no Gc is kept in malloc'd memory here, so the malloc heap cannot be what
        // keeps the objects alive.
        unsafe { gc::set_scan_malloc(false) };
        fill();
        scrub();
        for _ in 0..3 {
            std::thread::spawn(|| {
                garbage();
                gc::collect();
                garbage();
            })
            .join()
            .unwrap();
        }
        check("collected by another thread");
        garbage();
        scrub();
        gc::collect();
        garbage();
        check("collected by the main thread");
        println!("gc_main_thread: ok ({} cycles)", gc::stats().num_gc);
    }
}

fn main() {
    #[cfg(feature = "gc")]
    run::main();
}
