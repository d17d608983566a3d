//! The checking mode (feature `checked`): misuse of the `GlobalAlloc` contract is caught and
//! aborts with one line naming the fault, the address and the size class, instead of
//! corrupting memory silently.
//!
//! What it catches, and how:
//! - free of a pointer gomalloc never returned, or of a pointer inside a block: the page map
//!   finds no span, or the offset is not a multiple of the object size;
//! - `dealloc` with a `Layout` whose size class (or page count) differs from the allocation's;
//! - double free: each small span keeps one bit per object, set while the program holds it;
//!   large blocks must still be live large spans starting at the pointer;
//! - write past the end: every block gets 16 bytes more than asked: 8 right after the asked
//!   size hold a canary derived from the address, checked on free, and the last 8 of the block
//!   hold the asked size, so `usable_size` reports exactly the asked size (writing up to it is
//!   fine; one byte more is caught) and a `dealloc` with another size is caught too;
//! - write after free: freed small objects are filled with a poison byte (all but the first
//!   word, which links the free list), checked when the object is handed out again; a free-list
//!   link overwritten after free is caught as a pointer that is not a free object.
//!
//! With the `valgrind` feature too, the poison, canary and size word are the allocator's: it
//! touches them inside `valgrind::with_access`, and memcheck reports the program's accesses.
//!
//! Costs: a page-map lookup, an atomic bit operation and a pass over the object on each small
//! alloc and free; realloc always moves. Owns no state beyond the bits in span descriptors.

use crate::diag::fatal;
use crate::size_class::{class_size, PAGE_SHIFT};
use crate::span::{self, Span};
use crate::{huge, os, pagemap, valgrind};
use core::sync::atomic::Ordering;

/// Extra bytes every block gets: the canary and the size word.
pub const CANARY: usize = 16;
const POISON: u8 = 0xdf;

/// How a block was served, as `malloc` decided from its `(size, align)`.
#[derive(Clone, Copy)]
pub enum Kind {
    Small(usize),
    Large,
    Huge,
}

fn canary(p: *mut u8) -> u64 {
    (p as u64).rotate_left(29) ^ 0x6a09_e667_f3bc_c908
}

/// Bytes of the block at `p` as gomalloc handed it out (class size, span, or mapping), or 0.
fn block_len(p: *const u8) -> usize {
    let s = pagemap::span_of(p as usize);
    if !s.is_null() {
        // SAFETY: a live descriptor from the page map.
        unsafe {
            return match (*s).state {
                span::SMALL => (*s).elem_size as usize,
                span::LARGE => (*s).end() - p.addr(),
                _ => 0,
            };
        }
    }
    huge::len_of(p).unwrap_or(0)
}

/// The size the program asked for the live block at `p` (its usable size in this mode).
pub fn usable_size(p: *const u8) -> usize {
    let len = block_len(p);
    if len < CANARY {
        return 0;
    }
    // SAFETY: the last word of a live block of ours holds its asked size.
    unsafe { read_word(p.add(len - 8)) as usize }
}

/// Fills `len` bytes of a free object with poison (the first word will hold a link).
///
/// # Safety
/// `p` is a free object of at least `len` bytes.
pub unsafe fn poison(p: *mut u8, len: usize) {
    // SAFETY: precondition.
    valgrind::with_access(p, len, || unsafe { core::ptr::write_bytes(p, POISON, len) });
}

/// The small span of `p` with its object index, or a fatal error naming `what`.
fn small_object(p: *mut u8, class: usize, what: &str) -> (*mut Span, usize) {
    let s = pagemap::span_of(p as usize);
    if s.is_null() {
        fatal(what, p as usize, class_size(class));
    }
    // SAFETY: `span_of` returns a live descriptor.
    unsafe {
        if (*s).state != span::SMALL || (*s).class as usize != class {
            fatal(
                "dealloc with a Layout of another size class than the allocation:",
                p as usize,
                class_size(class),
            );
        }
        let off = p.addr() - (*s).base();
        if off % (*s).elem_size as usize != 0 {
            fatal(
                "free of a pointer inside a block, not at its start:",
                p as usize,
                class_size(class),
            );
        }
        (s, off / (*s).elem_size as usize)
    }
}

/// Checks a block just handed out and arms its canary.
///
/// # Safety
/// `p` is a block just allocated for `kind` with room for `size + CANARY` bytes.
pub unsafe fn after_alloc(p: *mut u8, size: usize, kind: Kind) {
    if let Kind::Small(class) = kind {
        let (s, i) = small_object(
            p,
            class,
            "the free list handed out a foreign pointer (use after free?):",
        );
        // SAFETY: `s` is the live small span of `p`; the bitmap covers all its objects.
        unsafe {
            let bit = 1u64 << (i % 64);
            if (*s).alloc_bits[i / 64].fetch_or(bit, Ordering::AcqRel) & bit != 0 {
                fatal(
                    "the free list handed out a live block (use after free?):",
                    p as usize,
                    class_size(class),
                );
            }
            let len = class_size(class);
            let body = core::slice::from_raw_parts(p.add(8), len - 8);
            // The object is still free to memcheck: the program gets it below.
            if valgrind::with_access(body.as_ptr(), body.len(), || {
                body.iter().any(|&b| b != POISON)
            }) {
                fatal(
                    "write to a block after it was freed (use after free) at",
                    p as usize,
                    len,
                );
            }
        }
    }
    let len = block_len(p);
    // SAFETY: the block has CANARY bytes of room after `size` (precondition), so its last word
    // lies at or after `size + 8`. Both words are past the asked size: never the program's.
    unsafe {
        write_word(p.add(size), canary(p));
        write_word(p.add(len - 8), size as u64);
    }
}

/// Reads a word of the checking mode's (canary, size word) past a block's asked size.
///
/// # Safety
/// `w` is 8 readable bytes of a block of ours.
unsafe fn read_word(w: *const u8) -> u64 {
    // SAFETY: precondition.
    valgrind::with_access(w, 8, || unsafe { (w as *const u64).read_unaligned() })
}

/// Writes a word of the checking mode's past a block's asked size.
///
/// # Safety
/// `w` is 8 writable bytes of a block of ours, past its asked size.
unsafe fn write_word(w: *mut u8, v: u64) {
    // SAFETY: precondition.
    valgrind::with_access(w, 8, || unsafe { (w as *mut u64).write_unaligned(v) })
}

/// Checks a block about to be freed with `(size, kind)`; poisons small objects.
///
/// # Safety
/// Only reads memory gomalloc owns (found through the page map or the huge table) before it
/// trusts the pointer.
pub unsafe fn before_free(p: *mut u8, size: usize, kind: Kind) {
    let class_bytes = match kind {
        Kind::Small(class) => {
            let (s, i) = small_object(p, class, "free of a pointer not allocated by gomalloc:");
            // SAFETY: `s` is the live small span of `p`.
            unsafe {
                let bit = 1u64 << (i % 64);
                if (*s).alloc_bits[i / 64].fetch_and(!bit, Ordering::AcqRel) & bit == 0 {
                    fatal("double free of", p as usize, class_size(class));
                }
            }
            class_size(class)
        }
        Kind::Large => {
            let s = pagemap::span_of(p as usize);
            if s.is_null() {
                fatal(
                    "free of a pointer not allocated by gomalloc:",
                    p as usize,
                    0,
                );
            }
            // SAFETY: a live descriptor from the page map.
            unsafe {
                if (*s).state != span::LARGE || (*s).base() != p.addr() {
                    fatal(
                        "double free (or free of a pointer not returned by gomalloc) of",
                        p as usize,
                        0,
                    );
                }
                let want = (size + CANARY).div_ceil(1 << PAGE_SHIFT);
                if (*s).npages != want {
                    fatal(
                        "dealloc with a Layout of another size than the allocation:",
                        p as usize,
                        0,
                    );
                }
            }
            0
        }
        Kind::Huge => {
            let Some(len) = huge::len_of(p) else {
                fatal(
                    "free of a pointer not allocated by gomalloc (huge):",
                    p as usize,
                    0,
                );
            };
            if os::round_up(size + CANARY, os::page_size()) != Some(len) {
                fatal(
                    "dealloc with a Layout of another size than the allocation:",
                    p as usize,
                    0,
                );
            }
            0
        }
    };
    // SAFETY: the pointer is a live block of ours (checked above) with CANARY bytes after
    // `size`, if `size` is the size it was allocated with, which the size word tells.
    unsafe {
        let len = block_len(p);
        if read_word(p.add(len - 8)) != size as u64 {
            fatal(
                "dealloc with a Layout of another size than the allocation:",
                p as usize,
                class_bytes,
            );
        }
        if read_word(p.add(size)) != canary(p) {
            fatal(
                "write past the end of the block at",
                p as usize,
                class_bytes,
            );
        }
        if class_bytes > 8 {
            poison(p.add(8), class_bytes - 8);
        }
    }
}
