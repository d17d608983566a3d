//! Marking: the grey stack and the conservative scan.
//!
//! Owns: the grey stack (objects reached but not yet scanned), a growable array of
//! `(start, len)` in memory mapped from the OS (never the global allocator).
//!
//! Tri-colour terms: an object is white while its mark bit is clear, grey once marked and on
//! the grey stack, black once popped and scanned (noscan objects go straight to black).
//! Scanning is conservative: every aligned word of a root or a grey object that points into an
//! allocated GC object, interior pointers included, marks that object.
//!
//! Locks: none of its own; callers hold `GC_HEAP`'s lock for the whole mark.

use super::heap::find_object;
use crate::os;
use core::ptr;

const WORD: usize = core::mem::size_of::<usize>();

/// Objects waiting to be scanned.
pub struct GreyStack {
    buf: *mut (usize, usize),
    len: usize,
    cap: usize,
    /// The stack could not grow: some objects were marked but not scanned, so the mark must
    /// be finished by rescanning marked objects (`overflowed` tells the caller).
    pub overflowed: bool,
}

impl GreyStack {
    pub const fn new() -> Self {
        GreyStack {
            buf: ptr::null_mut(),
            len: 0,
            cap: 0,
            overflowed: false,
        }
    }

    fn push(&mut self, start: usize, len: usize) {
        if self.len == self.cap && !self.grow() {
            self.overflowed = true;
            return;
        }
        // SAFETY: `len < cap`, inside our mapping.
        unsafe { self.buf.add(self.len).write((start, len)) };
        self.len += 1;
    }

    fn pop(&mut self) -> Option<(usize, usize)> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        // SAFETY: `len < cap`, an entry we wrote.
        Some(unsafe { self.buf.add(self.len).read() })
    }

    /// Doubles the capacity (first: 64 KiB of entries); false if the OS refuses.
    fn grow(&mut self) -> bool {
        let entry = core::mem::size_of::<(usize, usize)>();
        let new_cap = if self.cap == 0 {
            (64 << 10) / entry
        } else {
            self.cap * 2
        };
        // SAFETY: a fresh anonymous mapping.
        let nb = unsafe { os::map(new_cap * entry) } as *mut (usize, usize);
        if nb.is_null() {
            return false;
        }
        if !self.buf.is_null() {
            // SAFETY: both mappings are ours; the old one holds `len` entries.
            unsafe {
                ptr::copy_nonoverlapping(self.buf, nb, self.len);
                os::unmap(self.buf as *mut u8, self.cap * entry);
            }
        }
        self.buf = nb;
        self.cap = new_cap;
        true
    }

    /// Gives the memory back (after a collection).
    pub fn free(&mut self) {
        if !self.buf.is_null() {
            let entry = core::mem::size_of::<(usize, usize)>();
            // SAFETY: our mapping, no longer used.
            unsafe { os::unmap(self.buf as *mut u8, self.cap * entry) };
        }
        *self = GreyStack::new();
    }
}

/// Marks the object `w` points into, if any, and queues it for scanning unless noscan.
#[inline]
pub fn mark_word(w: usize, grey: &mut GreyStack) {
    if let Some((g, i)) = find_object(w) {
        // SAFETY: `find_object` returned a live record under the lock our caller holds.
        unsafe {
            if (*g).is_marked(i) {
                return;
            }
            (*g).set_mark(i);
            if !(*g).noscan {
                grey.push((*g).object(i), (*g).size);
            }
        }
    }
}

/// Scans `[start, end)` word by word (aligned words only).
///
/// # Safety
/// The range is readable memory.
pub unsafe fn scan_range(start: usize, end: usize, grey: &mut GreyStack) {
    let mut p = (start + WORD - 1) & !(WORD - 1);
    while p + WORD <= end {
        // SAFETY: inside the readable range (precondition). Volatile: the words are read as
        // they are, whatever the compiler knows about them.
        let w = unsafe { ptr::read_volatile(p as *const usize) };
        mark_word(w, grey);
        p += WORD;
    }
}

/// Scans grey objects until none is left.
pub fn drain(grey: &mut GreyStack) {
    while let Some((start, len)) = grey.pop() {
        // SAFETY: a grey object is an allocated GC object: its memory is ours and readable.
        unsafe { scan_range(start, start + len, grey) };
    }
}

/// After an overflow: scans every marked scan object again until no new object is marked.
pub fn rescan_marked(heap: &super::heap::GcHeap, grey: &mut GreyStack) {
    while grey.overflowed {
        grey.overflowed = false;
        for g in heap.spans() {
            // SAFETY: live records under the lock our caller holds.
            unsafe {
                if (*g).noscan {
                    continue;
                }
                for i in 0..(*g).nelems {
                    if (*g).is_marked(i) {
                        let o = (*g).object(i);
                        scan_range(o, o + (*g).size, grey);
                        drain(grey);
                    }
                }
            }
        }
    }
}
