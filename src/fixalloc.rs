//! Fixed-size allocation of the allocator's own metadata (Go's `fixalloc`): span descriptors
//! and thread-cache nodes cannot come from the allocator they describe, so they are cut from
//! 64 KiB chunks mapped from the OS and recycled through a free list.
//!
//! Owns: its chunks, which are never unmapped, so a pointer to a freed object always points at
//! readable memory (stale page-map entries and registry walks rely on it). Not thread-safe by
//! itself: each user keeps its `FixAlloc` under its own lock.
//!
//! Invariant: a freed object is linked through its first word; everything after that word keeps
//! whatever its user left there (span descriptors leave `npages == 0` so stale readers see an
//! empty span).

use crate::os;
use core::ptr;

const CHUNK: usize = 64 * 1024;

#[derive(Debug)]
pub struct FixAlloc {
    size: usize,
    free: *mut u8,
    /// The unused rest of the newest chunk: `left` bytes at `cur` (a pointer into the chunk,
    /// so objects carry its provenance).
    cur: *mut u8,
    left: usize,
    /// Bytes mapped from the OS.
    pub sys: usize,
    /// Objects handed out and not freed.
    pub inuse: usize,
}

// SAFETY: a FixAlloc owns its chunks; its users keep it under a lock.
unsafe impl Send for FixAlloc {}

impl FixAlloc {
    /// An allocator of `size`-byte objects (a multiple of their alignment, at most 64 KiB).
    pub const fn new(size: usize) -> Self {
        FixAlloc {
            size,
            free: ptr::null_mut(),
            cur: ptr::null_mut(),
            left: 0,
            sys: 0,
            inuse: 0,
        }
    }

    /// Memory for one object (zeroed if fresh, else as its last user left it), or null if the
    /// OS refuses memory. Chunks are page-aligned, so objects keep alignments up to their size's.
    pub fn alloc(&mut self) -> *mut u8 {
        let p = if !self.free.is_null() {
            let p = self.free;
            // SAFETY: free objects link through their first word.
            self.free = unsafe { (p as *mut *mut u8).read() };
            p
        } else {
            if self.left < self.size {
                // SAFETY: non-zero length.
                let chunk = unsafe { os::map(CHUNK) };
                if chunk.is_null() {
                    return ptr::null_mut();
                }
                self.cur = chunk;
                self.left = CHUNK;
                self.sys += CHUNK;
            }
            let p = self.cur;
            // SAFETY: `size <= left`, so the result stays inside the chunk (or one past its end).
            self.cur = unsafe { p.add(self.size) };
            self.left -= self.size;
            p
        };
        self.inuse += 1;
        p
    }

    /// Takes an object back.
    ///
    /// # Safety
    /// `p` came from this allocator and its user is done with it.
    pub unsafe fn free(&mut self, p: *mut u8) {
        // SAFETY: the object is ours and at least a word long.
        unsafe { (p as *mut *mut u8).write(self.free) };
        self.free = p;
        self.inuse -= 1;
    }
}
