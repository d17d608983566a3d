//! The C ABI (feature `c-abi`): gomalloc exported as glibc's malloc family, so that
//! `LD_PRELOAD=target/release/libgomalloc.so prog` runs an unmodified program on it.
//!
//! Owns: the exported symbols (`malloc`, `free`, `calloc`, `realloc`, `reallocarray`,
//! `posix_memalign`, `aligned_alloc`, `memalign`, `valloc`, `pvalloc`, `malloc_usable_size`,
//! `malloc_trim`, and the `__libc_*` aliases that glibc itself and some libraries call), their
//! glibc semantics (errno, `realloc(p, 0)`, `posix_memalign` return codes), and the
//! `GOMALLOC_DEBUG` switch read at load time (`stats=1`: MemStats on stderr at exit).
//!
//! C passes no size to `free`: the page map names the block's span, and the span its size
//! class (`malloc::free_unsized`): one lookup in two tables, no lock.
//!
//! Rules it keeps, from glibc's manual and code:
//! - `malloc(0)` returns a unique pointer; every block of more than 8 bytes is 16-aligned
//!   (`malloc` takes `size_class::c_class`, the others ask for `malloc::c_align` at least: both
//!   skip Go's 24-byte class);
//! - `free(NULL)` does nothing; a pointer gomalloc never returned (from another allocator, or
//!   handed out before the library was loaded) is left alone: its memory is not ours to reuse;
//! - `realloc(NULL, n)` is `malloc(n)`; `realloc(p, 0)` frees `p` and returns NULL (glibc's
//!   choice); a failed `realloc` leaves the old block valid; a foreign pointer aborts with a
//!   message (its size cannot be known);
//! - `calloc` and `reallocarray` check `n * size` for overflow (ENOMEM);
//! - `posix_memalign` returns EINVAL for an alignment that is not a power of two multiple of
//!   `sizeof(void *)`, ENOMEM when out of memory, and leaves `errno` alone; `aligned_alloc`
//!   wants a power of two (EINVAL); `memalign` rounds any other alignment up to one;
//! - every failure of the others sets `errno` to ENOMEM and returns NULL.
//!
//! The checking mode (`checked`) needs each block's requested size at free, which C does not
//! give, so the two features exclude each other.
//!
//! Locks: none of its own; each call is one of the allocator's entry points.

#[cfg(feature = "checked")]
compile_error!("features `c-abi` and `checked` cannot be combined (C's free passes no size)");

use crate::{diag, malloc};
use core::ffi::{c_int, c_void};
use core::ptr;

/// Blocks of this size and more are aligned to it (glibc's `MALLOC_ALIGNMENT` on x86-64).
const MIN_ALIGN: usize = 16;

// `malloc(n)` asks for `malloc::c_align(n)`: 16 for n > 8. Every size class from 16 B up but
// 24 is a multiple of 16 (objects sit at multiples of their class size from a page-aligned span
// start), and an alignment-16 request skips 24 (`size_class::class_for_layout`).
const _: () = {
    let mut c = 1;
    while c < crate::size_class::NUM_CLASSES {
        let size = crate::size_class::CLASS_SIZE[c] as usize;
        assert!(size < MIN_ALIGN || size == 24 || size % MIN_ALIGN == 0);
        c += 1;
    }
};

#[inline(always)]
fn set_errno(e: c_int) {
    // SAFETY: `__errno_location` returns this thread's errno slot.
    unsafe { *libc::__errno_location() = e };
}

/// Null after setting ENOMEM.
#[cold]
fn enomem() -> *mut c_void {
    set_errno(libc::ENOMEM);
    ptr::null_mut()
}

/// `p`, or null with ENOMEM set if `p` is null.
#[inline(always)]
fn or_enomem(p: *mut u8) -> *mut c_void {
    if p.is_null() {
        enomem()
    } else {
        p.cast()
    }
}

/// Largest request we try (Rust's `Layout` limit; more is out of memory anyway).
const MAX_REQUEST: usize = isize::MAX as usize - (1 << 21);

#[inline(always)]
fn alloc(size: usize, align: usize) -> *mut c_void {
    if size > MAX_REQUEST {
        return enomem();
    }
    or_enomem(malloc::alloc(size.max(1), align.max(malloc::c_align(size))))
}

fn alloc_zeroed(size: usize) -> *mut c_void {
    if size > MAX_REQUEST {
        return enomem();
    }
    or_enomem(malloc::alloc_zeroed(size.max(1), malloc::c_align(size)))
}

/// `malloc(3)`.
#[no_mangle]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    if size > MAX_REQUEST {
        return enomem();
    }
    or_enomem(malloc::alloc_c(size.max(1)))
}

/// `free(3)`.
///
/// # Safety
/// `p` is null, a live block from this allocator, or a pointer from another allocator.
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    if !p.is_null() {
        // SAFETY: forwarded precondition; foreign pointers are recognised and left alone.
        unsafe { malloc::free_unsized(p.cast()) };
    }
}

/// `calloc(3)`.
#[no_mangle]
pub extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        Some(total) => alloc_zeroed(total),
        None => enomem(),
    }
}

/// `realloc(3)`.
///
/// # Safety
/// `p` is null or a live block from this allocator.
#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    if p.is_null() {
        return malloc(size);
    }
    if size == 0 {
        // SAFETY: forwarded precondition.
        unsafe { free(p) };
        return ptr::null_mut();
    }
    if size > MAX_REQUEST {
        return enomem();
    }
    // SAFETY: forwarded precondition.
    or_enomem(unsafe { malloc::realloc_unsized(p.cast(), size) })
}

/// `reallocarray(3)`.
///
/// # Safety
/// As for [`realloc`].
#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        // SAFETY: forwarded precondition.
        Some(total) => unsafe { realloc(p, total) },
        None => enomem(),
    }
}

/// `posix_memalign(3)`.
///
/// # Safety
/// `out` is valid for a pointer write.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    if !align.is_power_of_two() || align % core::mem::size_of::<*mut c_void>() != 0 {
        return libc::EINVAL;
    }
    if size > MAX_REQUEST {
        return libc::ENOMEM;
    }
    let p = malloc::alloc(size.max(1), align.max(malloc::c_align(size)));
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: `out` is writable (precondition).
    unsafe { *out = p.cast() };
    0
}

/// `aligned_alloc(3)` (C11).
#[no_mangle]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    alloc(size, align)
}

/// `memalign(3)`: an alignment that is not a power of two is rounded up to one.
#[no_mangle]
pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    match align.max(1).checked_next_power_of_two() {
        Some(a) => alloc(size, a),
        None => enomem(),
    }
}

/// `valloc(3)`: page-aligned.
#[no_mangle]
pub extern "C" fn valloc(size: usize) -> *mut c_void {
    alloc(size, page_size())
}

/// `pvalloc(3)`: page-aligned, size rounded up to whole pages (0 becomes one page).
#[no_mangle]
pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
    let page = page_size();
    match size.max(1).checked_next_multiple_of(page) {
        Some(n) => alloc(n, page),
        None => enomem(),
    }
}

fn page_size() -> usize {
    crate::os::page_size()
}

/// `malloc_usable_size(3)`: 0 for null or a pointer gomalloc does not know.
///
/// # Safety
/// `p` is null, a live block, or a foreign pointer.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    if p.is_null() {
        0
    } else {
        malloc::usable_size(p.cast())
    }
}

/// `malloc_trim(3)`: returns this thread's cached objects and every idle page to the OS
/// (`release_memory`); 1 if the heap had idle pages to release.
#[no_mangle]
pub extern "C" fn malloc_trim(_pad: usize) -> c_int {
    let before = crate::stats::read();
    crate::release_memory();
    c_int::from(before.heap_idle > before.heap_released)
}

// The names glibc uses internally and some programs and libraries call directly.

/// `__libc_malloc`.
#[no_mangle]
pub extern "C" fn __libc_malloc(size: usize) -> *mut c_void {
    malloc(size)
}

/// `__libc_free`.
///
/// # Safety
/// As for [`free`].
#[no_mangle]
pub unsafe extern "C" fn __libc_free(p: *mut c_void) {
    // SAFETY: forwarded precondition.
    unsafe { free(p) }
}

/// `__libc_calloc`.
#[no_mangle]
pub extern "C" fn __libc_calloc(n: usize, size: usize) -> *mut c_void {
    calloc(n, size)
}

/// `__libc_realloc`.
///
/// # Safety
/// As for [`realloc`].
#[no_mangle]
pub unsafe extern "C" fn __libc_realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: forwarded precondition.
    unsafe { realloc(p, size) }
}

/// `__libc_memalign`.
#[no_mangle]
pub extern "C" fn __libc_memalign(align: usize, size: usize) -> *mut c_void {
    memalign(align, size)
}

/// `__libc_valloc`.
#[no_mangle]
pub extern "C" fn __libc_valloc(size: usize) -> *mut c_void {
    valloc(size)
}

/// `__libc_pvalloc`.
#[no_mangle]
pub extern "C" fn __libc_pvalloc(size: usize) -> *mut c_void {
    pvalloc(size)
}

// ---- GOMALLOC_DEBUG -----------------------------------------------------------------------

/// Runs when the library is loaded (before `main`): reads `GOMALLOC_DEBUG`, a comma-separated
/// list of `name=value`; `stats=1` prints MemStats to stderr at exit.
extern "C" fn on_load() {
    // Read before anything can change the environment (we are in a constructor).
    if crate::os::debug_flag(b"stats=1") {
        // SAFETY: registering an extern "C" fn that lives forever.
        unsafe { libc::atexit(print_stats) };
    }
}

#[used]
#[link_section = ".init_array"]
static ON_LOAD: extern "C" fn() = on_load;

/// Writes formatted text straight to stderr (no buffer, so no allocation).
struct Stderr;

impl core::fmt::Write for Stderr {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let mut b = s.as_bytes();
        while !b.is_empty() {
            // SAFETY: the pointer and length describe initialised bytes of `b`.
            let n = unsafe { libc::write(2, b.as_ptr().cast(), b.len()) };
            if n <= 0 {
                return Err(core::fmt::Error);
            }
            b = &b[n as usize..];
        }
        Ok(())
    }
}

extern "C" fn print_stats() {
    use core::fmt::Write;
    let s = crate::stats::read();
    let mut l = diag::Line::new();
    // SAFETY: getpid has no preconditions.
    l.str("gomalloc: MemStats at exit of pid ")
        .dec(unsafe { libc::getpid() } as u64);
    l.emit();
    let _ = write!(Stderr, "{s}");
}
