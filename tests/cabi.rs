//! The C ABI (feature `c-abi`): glibc's semantics of each exported function, called through
//! the C symbols (which this test binary exports, so they replace glibc's for the whole
//! process). Run with `cargo test --release --features c-abi --test cabi`.
#![cfg(feature = "c-abi")]

use libc::{c_int, c_void};
use std::hint::black_box;
use std::ptr;

extern "C" {
    fn malloc(size: usize) -> *mut c_void;
    fn free(p: *mut c_void);
    fn calloc(n: usize, size: usize) -> *mut c_void;
    fn realloc(p: *mut c_void, size: usize) -> *mut c_void;
    fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void;
    fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int;
    fn aligned_alloc(align: usize, size: usize) -> *mut c_void;
    fn memalign(align: usize, size: usize) -> *mut c_void;
    fn valloc(size: usize) -> *mut c_void;
    fn pvalloc(size: usize) -> *mut c_void;
    fn malloc_usable_size(p: *mut c_void) -> usize;
    fn __libc_malloc(size: usize) -> *mut c_void;
    fn __libc_free(p: *mut c_void);
}

fn errno() -> c_int {
    // SAFETY: this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

fn set_errno(e: c_int) {
    // SAFETY: this thread's errno slot.
    unsafe { *libc::__errno_location() = e };
}

/// gomalloc knows the block (so the symbol really is ours, not glibc's).
fn ours(p: *mut c_void) -> bool {
    // SAFETY: any pointer may be asked about.
    unsafe { gomalloc::usable_size(p.cast()) > 0 }
}

#[test]
fn malloc_free_and_alignment() {
    unsafe {
        let z = malloc(0);
        assert!(
            !z.is_null() && ours(z),
            "malloc(0) returns a unique pointer"
        );
        let z2 = malloc(0);
        assert_ne!(z, z2);
        free(z);
        free(z2);
        free(ptr::null_mut());
        for size in [
            1usize,
            7,
            8,
            9,
            15,
            16,
            17,
            24,
            100,
            1000,
            40_000,
            1 << 20,
            20 << 20,
        ] {
            let p = malloc(size);
            assert!(ours(p), "size {size}");
            if size > 8 {
                assert_eq!(p as usize % 16, 0, "size {size} not 16-aligned");
            }
            assert!(malloc_usable_size(p) >= size);
            ptr::write_bytes(p.cast::<u8>(), 0xab, size);
            free(p);
        }
        assert_eq!(malloc_usable_size(ptr::null_mut()), 0);
        let p = __libc_malloc(40);
        assert!(ours(p));
        __libc_free(p);
    }
}

/// Go's 24-byte class holds Rust objects aligned to 8; C's blocks of 9 bytes or more are
/// 16-aligned whatever path made them, so a run of them never lands on an odd multiple of 24.
#[test]
fn blocks_over_8_bytes_are_16_aligned_on_every_path() {
    unsafe {
        let mut blocks = Vec::new();
        for size in [17usize, 20, 24] {
            for _ in 0..8 {
                blocks.push(malloc(size));
                blocks.push(calloc(1, size));
                blocks.push(realloc(malloc(1), size));
                let mut p = ptr::null_mut();
                assert_eq!(posix_memalign(&mut p, 8, size), 0);
                blocks.push(p);
                blocks.push(aligned_alloc(8, size));
                blocks.push(memalign(8, size));
            }
        }
        for &p in &blocks {
            assert!(ours(p));
            assert_eq!(p as usize % 16, 0, "{p:p} not 16-aligned");
        }
        for p in blocks {
            free(p);
        }
    }
}

#[test]
fn calloc_zeroes_and_checks_overflow() {
    unsafe {
        let p = calloc(1000, 8).cast::<u64>();
        assert!(ours(p.cast()));
        assert!((0..1000).all(|i| *p.add(i) == 0));
        free(p.cast());
        set_errno(0);
        // black_box: LLVM knows calloc and may assume an unused result is not null.
        assert!(black_box(calloc(black_box(usize::MAX / 2), 4)).is_null());
        assert_eq!(errno(), libc::ENOMEM);
        let z = calloc(0, 16);
        assert!(!z.is_null());
        free(z);
    }
}

#[test]
fn realloc_like_glibc() {
    unsafe {
        let p = realloc(ptr::null_mut(), 10).cast::<u8>();
        assert!(ours(p.cast()));
        for i in 0..10 {
            *p.add(i) = i as u8;
        }
        // Growth through every path: small, large, huge; contents kept.
        let mut q = p;
        for size in [100usize, 5000, 100_000, 3 << 20, 40 << 20, 64] {
            q = realloc(q.cast(), size).cast();
            assert!(ours(q.cast()), "size {size}");
            assert!(
                (0..10).all(|i| *q.add(i) == i as u8),
                "contents lost at {size}"
            );
        }
        // realloc(p, 0) frees and returns NULL (glibc).
        assert!(black_box(realloc(q.cast(), black_box(0))).is_null());
        // Too big: NULL, ENOMEM, the old block intact.
        let r = malloc(32).cast::<u8>();
        *r = 7;
        set_errno(0);
        assert!(black_box(realloc(r.cast(), black_box(usize::MAX - 4096))).is_null());
        assert_eq!(errno(), libc::ENOMEM);
        assert_eq!(*r, 7);
        set_errno(0);
        assert!(black_box(reallocarray(r.cast(), black_box(usize::MAX / 2), 3)).is_null());
        assert_eq!(errno(), libc::ENOMEM);
        let r2 = reallocarray(r.cast(), 100, 8);
        assert!(ours(r2));
        assert_eq!(*r2.cast::<u8>(), 7);
        free(r2);
    }
}

#[test]
fn aligned_allocation_functions() {
    unsafe {
        let mut out: *mut c_void = ptr::null_mut();
        assert_eq!(posix_memalign(&mut out, 3, 10), libc::EINVAL);
        assert_eq!(
            posix_memalign(&mut out, 4, 10),
            libc::EINVAL,
            "not a multiple of void*"
        );
        assert_eq!(posix_memalign(&mut out, 64, usize::MAX - 100), libc::ENOMEM);
        for align in [8usize, 16, 64, 4096, 65536, 2 << 20] {
            assert_eq!(posix_memalign(&mut out, align, 100), 0);
            assert!(
                ours(out) && out as usize % align == 0,
                "posix_memalign {align}"
            );
            free(out);
            let p = aligned_alloc(align, 3 * align);
            assert!(ours(p) && p as usize % align == 0, "aligned_alloc {align}");
            free(p);
        }
        set_errno(0);
        assert!(black_box(aligned_alloc(black_box(24), 48)).is_null());
        assert_eq!(errno(), libc::EINVAL);
        // memalign rounds an odd alignment up to a power of two.
        let m = memalign(24, 100);
        assert!(ours(m) && m as usize % 32 == 0);
        free(m);
        let v = valloc(10);
        assert!(ours(v) && v as usize % 4096 == 0);
        free(v);
        let pv = pvalloc(10);
        assert!(ours(pv) && pv as usize % 4096 == 0 && malloc_usable_size(pv) >= 4096);
        free(pv);
    }
}

#[test]
fn foreign_pointers_are_left_alone() {
    unsafe {
        // Memory gomalloc never handed out: a static and an mmap of our own.
        static mut STATIC: [u64; 4] = [1, 2, 3, 4];
        let s = ptr::addr_of_mut!(STATIC).cast::<c_void>();
        assert_eq!(malloc_usable_size(s), 0);
        free(s);
        assert_eq!(*s.cast::<u64>(), 1, "a foreign block was written");
        let m = libc::mmap(
            ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(m, libc::MAP_FAILED);
        free(m);
        // Still mapped and ours to use.
        *m.cast::<u8>() = 1;
        libc::munmap(m, 4096);
    }
}

#[test]
fn threads_share_blocks_through_the_c_entry_points() {
    let blocks: Vec<usize> = (0..10_000)
        .map(|i| unsafe {
            let p = malloc(16 + i % 5000).cast::<u8>();
            *p = i as u8;
            p as usize
        })
        .collect();
    let h = std::thread::spawn(move || {
        for (i, p) in blocks.into_iter().enumerate() {
            unsafe {
                assert_eq!(*(p as *mut u8), i as u8);
                free(p as *mut c_void);
            }
        }
    });
    h.join().unwrap();
}
