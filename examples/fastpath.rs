//! Instruction count of the thread-cache fast path, for callgrind:
//! `ci/fastpath.sh` runs this with two iteration counts and divides the difference in
//! instructions by the difference in iterations, which cancels start-up and refills.
//!
//! `cargo run --release --example fastpath -- N [SIZE]` does N malloc+free pairs through
//! `GoMalloc`'s `GlobalAlloc` methods: of a 64-byte `Layout` known at compile time (what
//! `Box<[u8; 64]>` does) when SIZE is absent, else of SIZE bytes known only at run time (the size
//! class lookup is then part of the count).

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;

#[global_allocator]
static GLOBAL: gomalloc::GoMalloc = gomalloc::GoMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    match args.next().and_then(|a| a.parse::<usize>().ok()) {
        None => pairs(n, Layout::new::<[u64; 8]>()),
        Some(size) => {
            let _ = Layout::from_size_align(size, 8).expect("size must make a valid Layout");
            for _ in 0..n {
                // SAFETY: checked above: size and alignment make a valid Layout.
                pairs(1, unsafe {
                    Layout::from_size_align_unchecked(black_box(size), 8)
                });
            }
        }
    }
}

#[inline(always)]
fn pairs(n: u64, layout: Layout) {
    for _ in 0..n {
        // SAFETY: non-zero layout; the block is freed with the same layout.
        unsafe {
            let p = GLOBAL.alloc(layout);
            GLOBAL.dealloc(black_box(p), layout);
        }
    }
}
