//! Telling valgrind's memcheck about gomalloc's blocks (feature `valgrind`).
//!
//! Memcheck knows `malloc`'s blocks because it replaces `malloc`; gomalloc's heap is memory it
//! mapped itself, which memcheck sees as one big defined region, so on its own it cannot see a
//! read of a freed block, a leak, or a read of memory nobody wrote. With the feature on, gomalloc
//! describes its blocks with valgrind's client requests (`valgrind.h`, `memcheck.h`):
//!
//! - every block handed out through `GlobalAlloc` is a `MALLOCLIKE` block of the asked size
//!   (undefined, or defined for `alloc_zeroed` and memory known to be zero); every free is
//!   `FREELIKE`; a realloc in place (same size class, a large span growing into free pages or
//!   shrinking, a huge mapping resized by `mremap`) is `RESIZEINPLACE`, told while the pages
//!   concerned are gomalloc's (before a shrink gives them back, after a growth took them).
//!   Under valgrind a huge block is not moved by `mremap` but by copying, since memcheck could
//!   only hear of the move after the old range is free for another thread's mapping;
//! - memory of the heap that is not inside a live block is `NOACCESS`: free and never-used
//!   objects (a small span is made `NOACCESS` when its central list carves it), the slack after
//!   the asked size in a slot, a span or a mapping;
//! - the allocator's own accesses to such memory (the link word of a free object; the checking
//!   mode's poison, canary and size word) go through [`with_access`], which makes the bytes
//!   `DEFINED` for the access and `NOACCESS` again after it.
//!
//! So memcheck reports a read or write of a freed block ("Invalid read ... inside a block of
//! size N free'd"), past the asked size, a read of never-written heap memory used in a branch
//! ("Conditional jump or move depends on uninitialised value(s)"), a double or foreign free
//! ("Invalid free()"), and small blocks nothing points to any more ("definitely lost").
//!
//! Owns nothing: each function issues one request (or a few) and keeps no state. A request is
//! the "special instruction" sequence valgrind recognises (`rol rdi` by 3, 13, 61 and 51 bits,
//! a no-op on the real CPU, then `xchg rbx, rbx`) with `rax` pointing at `[request, a1..a5]`
//! and `rdx` holding the result, which the real CPU leaves at the default. Outside valgrind a
//! request is therefore a handful of instructions that do nothing; without the feature, or on
//! a target other than x86_64 Linux, every function here is an empty inline function.
//!
//! Invariants (feature on, under memcheck): the bytes of a small span's object slots, of a large
//! span and of a huge mapping are addressable exactly where a live block covers them (its asked
//! size); everything else the heap hands out is `NOACCESS` to memcheck except inside
//! [`with_access`]. No locks; never allocates.

// Request codes, from valgrind.h (core requests) and memcheck.h (`VG_USERREQ_TOOL_BASE('M','C')`
// onwards), checked against valgrind 3.19's headers.
const RUNNING_ON_VALGRIND: usize = 0x1001;
const MALLOCLIKE_BLOCK: usize = 0x1301;
const FREELIKE_BLOCK: usize = 0x1302;
const RESIZEINPLACE_BLOCK: usize = 0x130b;
const MAKE_MEM_NOACCESS: usize = 0x4d43_0000;
const MAKE_MEM_DEFINED: usize = 0x4d43_0002;

/// Issues one client request; returns valgrind's answer, or `default` when not under valgrind.
#[cfg(all(
    feature = "valgrind",
    target_arch = "x86_64",
    target_os = "linux",
    not(miri)
))]
#[inline(always)]
fn request(default: usize, req: usize, a1: usize, a2: usize, a3: usize, a4: usize) -> usize {
    let args: [usize; 6] = [req, a1, a2, a3, a4, 0];
    let mut result = default;
    // SAFETY: on a real CPU the four rotations of rdi add up to 128 bits (rdi unchanged) and
    // `xchg rbx, rbx` does nothing, so the sequence only clobbers flags. Under valgrind it reads
    // the six words at rax (a live local array) and writes the answer to rdx; a request may
    // change memcheck's view of memory, never the memory itself.
    unsafe {
        core::arch::asm!(
            "rol rdi, 3",
            "rol rdi, 13",
            "rol rdi, 61",
            "rol rdi, 51",
            "xchg rbx, rbx",
            in("rax") args.as_ptr(),
            inout("rdx") result,
            options(nostack),
        );
    }
    result
}

/// Without the feature (or off x86_64 Linux) a request is nothing.
#[cfg(not(all(
    feature = "valgrind",
    target_arch = "x86_64",
    target_os = "linux",
    not(miri)
)))]
#[inline(always)]
fn request(default: usize, _: usize, _: usize, _: usize, _: usize, _: usize) -> usize {
    default
}

/// Whether the program runs under valgrind (always false without the feature).
#[inline(always)]
pub fn running_on_valgrind() -> bool {
    request(0, RUNNING_ON_VALGRIND, 0, 0, 0, 0) != 0
}

/// `p` is a block of `size` bytes handed to the program: memcheck makes it addressable, defined
/// if `zeroed`, else undefined, and tracks it for leaks.
#[inline(always)]
pub fn malloclike(p: *const u8, size: usize, zeroed: bool) {
    request(0, MALLOCLIKE_BLOCK, p as usize, size, 0, zeroed as usize);
}

/// The block at `p` was freed: memcheck makes it `NOACCESS` and remembers it as freed (and
/// reports "Invalid free()" if it is not a live block).
#[inline(always)]
pub fn freelike(p: *const u8) {
    request(0, FREELIKE_BLOCK, p as usize, 0, 0, 0);
}

/// The live block at `p` went from `old` to `new` bytes without moving: the bytes it gained
/// are undefined, the bytes it lost `NOACCESS`.
#[inline(always)]
pub fn resize_in_place(p: *const u8, old: usize, new: usize) {
    if old != new {
        request(0, RESIZEINPLACE_BLOCK, p as usize, old, new, 0);
    }
}

/// `len` bytes at `p` may not be touched by the program.
#[inline(always)]
pub fn make_noaccess(p: *const u8, len: usize) {
    if len != 0 {
        request(0, MAKE_MEM_NOACCESS, p as usize, len, 0, 0);
    }
}

/// `len` bytes at `p` are addressable and hold defined values.
#[inline(always)]
pub fn make_defined(p: *const u8, len: usize) {
    if len != 0 {
        request(0, MAKE_MEM_DEFINED, p as usize, len, 0, 0);
    }
}

/// Runs `f`, an access of the allocator's own to `len` bytes at `p` that the program may not
/// touch (a free object's link word, the checking mode's canary): the bytes are `DEFINED`
/// during `f` and `NOACCESS` after it.
#[inline(always)]
pub fn with_access<R>(p: *const u8, len: usize, f: impl FnOnce() -> R) -> R {
    make_defined(p, len);
    let r = f();
    make_noaccess(p, len);
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn requests_are_no_ops_outside_valgrind() {
        // The unit tests never run under valgrind: every request must answer its default.
        assert!(!super::running_on_valgrind());
        let mut x = [7u8; 16];
        super::with_access(x.as_ptr(), 8, || x[0] = 1);
        super::malloclike(x.as_ptr(), 16, false);
        super::freelike(x.as_ptr());
        assert_eq!(x[0], 1);
    }
}
