//! Marking: the grey stack and the conservative scan.
//!
//! Owns: the grey stack (objects reached but not yet scanned), a growable array of
//! `(start, len)` in memory mapped from the OS (never the global allocator).
//!
//! Provenance: a scanned word is only an address, looked up in the page map; the object it
//! marks is reached through its span's first page (`GcSpan::object`), and every range is
//! scanned through a pointer to it, never through an integer cast to a pointer.
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

/// A range to scan: its start and length in bytes.
type Range = (*const u8, usize);

/// Objects waiting to be scanned.
pub struct GreyStack {
    buf: *mut Range,
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

    fn push(&mut self, start: *const u8, len: usize) {
        if self.len == self.cap && !self.grow() {
            self.overflowed = true;
            return;
        }
        // SAFETY: `len < cap`, inside our mapping.
        unsafe { self.buf.add(self.len).write((start, len)) };
        self.len += 1;
    }

    fn pop(&mut self) -> Option<Range> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        // SAFETY: `len < cap`, an entry we wrote.
        Some(unsafe { self.buf.add(self.len).read() })
    }

    /// Doubles the capacity (first: 64 KiB of entries); false if the OS refuses.
    fn grow(&mut self) -> bool {
        let entry = core::mem::size_of::<Range>();
        let new_cap = if self.cap == 0 {
            (64 << 10) / entry
        } else {
            self.cap * 2
        };
        // SAFETY: a fresh anonymous mapping.
        let nb = unsafe { os::map(new_cap * entry) } as *mut Range;
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
            let entry = core::mem::size_of::<Range>();
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

/// Scans the `len` bytes at `start` word by word (aligned words only).
///
/// # Safety
/// The range is readable memory, and `start` a pointer that may read all of it.
pub unsafe fn scan_range(start: *const u8, len: usize, grey: &mut GreyStack) {
    let end = start.addr().saturating_add(len);
    let mut p = start.map_addr(|a| (a + WORD - 1) & !(WORD - 1));
    while p.addr() + WORD <= end {
        // SAFETY: an aligned word inside the readable range (precondition). Volatile: the
        // words are read as they are, whatever the compiler knows about them.
        let w = unsafe { ptr::read_volatile(p.cast::<usize>()) };
        mark_word(w, grey);
        p = p.wrapping_add(WORD);
    }
}

/// Scans grey objects until none is left.
///
/// Objects go through a small FIFO between the grey stack and the scan (Boehm's mark-stack
/// prefetching): an object is prefetched when it enters the FIFO and scanned `PREFETCH`
/// objects later, so its cache miss overlaps with the scans in between instead of stalling
/// the first load. The order of scanning does not matter for the result.
pub fn drain(grey: &mut GreyStack) {
    const PREFETCH: usize = 8;
    let mut fifo: [Range; PREFETCH] = [(ptr::null(), 0); PREFETCH];
    let (mut head, mut len) = (0usize, 0usize);
    loop {
        if len < PREFETCH {
            if let Some(r) = grey.pop() {
                prefetch(r.0);
                fifo[(head + len) % PREFETCH] = r;
                len += 1;
                continue;
            }
            if len == 0 {
                break;
            }
        }
        let (start, n) = fifo[head];
        head = (head + 1) % PREFETCH;
        len -= 1;
        // SAFETY: a grey object is an allocated GC object: its memory is ours and readable.
        unsafe { scan_range(start, n, grey) };
    }
}

/// Hints the CPU to load the line at `p` (no effect on other architectures).
#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and has no architectural effect.
    unsafe {
        core::arch::x86_64::_mm_prefetch(p.cast::<i8>(), core::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
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
                        scan_range(o, (*g).size, grey);
                        drain(grey);
                    }
                }
            }
        }
    }
}
