//! Huge objects: requests of `HUGE_THRESHOLD` bytes or more (or aligned beyond what the page
//! heap serves cheaply) get a mapping of their own, returned with `munmap` on free and resized
//! with `mremap` on realloc, so the page heap never holds a huge idle hole.
//!
//! Owns: the table of live huge mappings (address -> mapped length), an open-addressing hash
//! table in memory mapped from the OS, so `usable_size`, sizeless frees and the statistics can
//! find a huge block without its `Layout`.
//!
//! Invariants: every live huge block has exactly one entry; its length is a multiple of the OS
//! page. Locks: one `Mutex` around the table, taken last in the lock order; `alloc` and `free`
//! map and unmap outside it, `resize` holds it across `mremap` (so the entry moves atomically).

use crate::os;
use crate::sync::{AtomicU64, Mutex, Ordering, RawLock};
use core::ptr;

const EMPTY: usize = 0;
const TOMB: usize = 1;

/// A slot: the block's pointer as the mapping returned it (so that walking the blocks, as
/// the collector does, reads them with their mapping's provenance), or a sentinel address
/// (`EMPTY`: null, as fresh zeroed memory reads; `TOMB`), and its mapped length.
#[derive(Clone, Copy)]
struct Entry {
    ptr: *mut u8,
    len: usize,
}

impl Entry {
    #[inline]
    fn addr(&self) -> usize {
        self.ptr.addr()
    }
}

struct Table {
    slots: *mut Entry,
    cap: usize,
    live: usize,
    used: usize, // live + tombstones
}

// SAFETY: the table memory is owned by the table and only touched under its lock.
unsafe impl Send for Table {}

static TABLE: Mutex<Table> = Mutex::new(Table {
    slots: ptr::null_mut(),
    cap: 0,
    live: 0,
    used: 0,
});

/// Bytes mapped for live huge blocks, and for the table itself.
pub static MAPPED: AtomicU64 = AtomicU64::new(0);
pub static TABLE_SYS: AtomicU64 = AtomicU64::new(0);

#[inline]
fn hash(addr: usize, cap: usize) -> usize {
    ((addr >> 12).wrapping_mul(0x9E37_79B9_7F4A_7C15)) >> (usize::BITS - cap.trailing_zeros())
}

impl Table {
    fn find(&self, addr: usize) -> Option<usize> {
        if self.cap == 0 {
            return None;
        }
        let mut i = hash(addr, self.cap);
        loop {
            // SAFETY: i < cap, and the slots are initialised.
            let e = unsafe { *self.slots.add(i) };
            if e.addr() == addr {
                return Some(i);
            }
            if e.addr() == EMPTY {
                return None;
            }
            i = (i + 1) & (self.cap - 1);
        }
    }

    /// Inserts; false if the table cannot grow.
    fn insert(&mut self, ptr: *mut u8, len: usize) -> bool {
        if (self.used + 1) * 2 > self.cap && !self.rehash() {
            return false;
        }
        let mut i = hash(ptr.addr(), self.cap);
        loop {
            // SAFETY: i < cap.
            let slot = unsafe { &mut *self.slots.add(i) };
            if slot.addr() == EMPTY || slot.addr() == TOMB {
                if slot.addr() == EMPTY {
                    self.used += 1;
                }
                *slot = Entry { ptr, len };
                self.live += 1;
                return true;
            }
            i = (i + 1) & (self.cap - 1);
        }
    }

    fn remove_at(&mut self, i: usize) {
        // SAFETY: i < cap (from `find`).
        unsafe { (*self.slots.add(i)).ptr = ptr::without_provenance_mut(TOMB) };
        self.live -= 1;
    }

    fn rehash(&mut self) -> bool {
        let new_cap = if self.cap == 0 {
            256
        } else if (self.live + 1) * 4 > self.cap {
            self.cap * 2
        } else {
            self.cap
        };
        let bytes = new_cap * core::mem::size_of::<Entry>();
        // SAFETY: non-zero length; fresh zeroed memory reads as all-EMPTY entries.
        let slots = unsafe { os::map(bytes) } as *mut Entry;
        if slots.is_null() {
            return false;
        }
        let old = (self.slots, self.cap);
        *self = Table {
            slots,
            cap: new_cap,
            live: 0,
            used: 0,
        };
        for i in 0..old.1 {
            // SAFETY: i < old cap.
            let e = unsafe { *old.0.add(i) };
            if e.addr() > TOMB {
                self.insert(e.ptr, e.len);
            }
        }
        TABLE_SYS.fetch_add(bytes as u64, Ordering::Relaxed);
        if !old.0.is_null() {
            let old_bytes = old.1 * core::mem::size_of::<Entry>();
            TABLE_SYS.fetch_sub(old_bytes as u64, Ordering::Relaxed);
            // SAFETY: the old table is ours and no longer referenced.
            unsafe { os::unmap(old.0 as *mut u8, old_bytes) };
        }
        true
    }
}

/// Maps a huge block of at least `size` bytes aligned to `align`; `(ptr, mapped length)`, or
/// null if the OS refuses.
pub fn alloc(size: usize, align: usize) -> (*mut u8, usize) {
    let page = os::page_size();
    let Some(len) = os::round_up(size.max(1), page) else {
        return (ptr::null_mut(), 0);
    };
    // SAFETY: len is a non-zero multiple of the page.
    let p = unsafe { os::map_aligned(len, align.max(page)) };
    if p.is_null() {
        return (p, 0);
    }
    if !TABLE.lock().insert(p, len) {
        // SAFETY: we just mapped it.
        unsafe { os::unmap(p, len) };
        return (ptr::null_mut(), 0);
    }
    MAPPED.fetch_add(len as u64, Ordering::Relaxed);
    (p, len)
}

/// The mapped length of the huge block at `p`, if it is one.
pub fn len_of(p: *const u8) -> Option<usize> {
    let t = TABLE.lock();
    // SAFETY: index from `find` is in bounds.
    t.find(p as usize).map(|i| unsafe { (*t.slots.add(i)).len })
}

/// Unmaps the huge block at `p`; returns its length, or None if `p` is not a huge block.
///
/// # Safety
/// Nothing uses the block any more.
pub unsafe fn free(p: *mut u8) -> Option<usize> {
    let len = {
        let mut t = TABLE.lock();
        let i = t.find(p as usize)?;
        // SAFETY: index from `find` is in bounds.
        let len = unsafe { (*t.slots.add(i)).len };
        t.remove_at(i);
        len
    };
    MAPPED.fetch_sub(len as u64, Ordering::Relaxed);
    // SAFETY: the block was a whole mapping of ours and is dead (precondition).
    unsafe { os::unmap(p, len) };
    Some(len)
}

/// Resizes the huge block at `p` to hold `new_size` bytes, moving it only if `may_move`.
/// Returns `(ptr, old length, new length)`, or null (the old block untouched).
///
/// # Safety
/// `p` is a live huge block.
pub unsafe fn resize(p: *mut u8, new_size: usize, may_move: bool) -> (*mut u8, usize, usize) {
    let page = os::page_size();
    let Some(new_len) = os::round_up(new_size.max(1), page) else {
        return (ptr::null_mut(), 0, 0);
    };
    let mut t = TABLE.lock();
    // Make room first, so recording the moved block below cannot fail.
    if (t.used + 1) * 2 > t.cap && !t.rehash() {
        return (ptr::null_mut(), 0, 0);
    }
    let Some(i) = t.find(p as usize) else {
        return (ptr::null_mut(), 0, 0);
    };
    // SAFETY: index from `find` is in bounds.
    let old_len = unsafe { (*t.slots.add(i)).len };
    if new_len == old_len {
        return (p, old_len, old_len);
    }
    // SAFETY: `p`/`old_len` is a whole mapping of ours (precondition).
    let q = unsafe {
        if may_move {
            os::remap(p, old_len, new_len)
        } else {
            os::remap_in_place(p, old_len, new_len)
        }
    };
    if q.is_null() {
        return (q, old_len, 0);
    }
    if q == p {
        // SAFETY: index from `find` is in bounds.
        unsafe { (*t.slots.add(i)).len = new_len };
    } else {
        t.remove_at(i);
        let recorded = t.insert(q, new_len);
        debug_assert!(recorded, "room was made before the move");
    }
    drop(t);
    if new_len > old_len {
        MAPPED.fetch_add((new_len - old_len) as u64, Ordering::Relaxed);
    } else {
        MAPPED.fetch_sub((old_len - new_len) as u64, Ordering::Relaxed);
    }
    (q, old_len, new_len)
}

/// The table lock, for `fork()` handling.
pub fn lock_ref() -> &'static dyn RawLock {
    &TABLE
}

/// Runs `f` with the table lock held and a view of every live huge block: no huge block is
/// mapped or unmapped until `f` returns (the collector stops the world inside `f`, so the lock
/// is taken before any thread is stopped). `f` must not allocate or free huge blocks.
#[cfg(feature = "gc")]
pub fn with_blocks<R>(f: impl FnOnce(&Blocks<'_>) -> R) -> R {
    let t = TABLE.lock();
    f(&Blocks(&t))
}

/// Calls `f(start, len)` on every huge block live from the start of the call to its end (and
/// on some mapped meanwhile), in address order, a piece of at most `piece` bytes at a time,
/// each with the table lock held (so the piece stays mapped during `f`), the lock released
/// between pieces: for the collector's scan of the malloc heap while the program runs, which
/// must not keep huge allocations waiting for the whole scan. A block freed, moved or shrunk
/// meanwhile is cut short (that scan is redone with the world stopped). `f` must not allocate
/// or free huge blocks.
#[cfg(feature = "gc")]
pub fn each_piece(piece: usize, mut f: impl FnMut(*mut u8, usize)) {
    const BATCH: usize = 64;
    let piece = piece.max(4096);
    // Blocks at or above `from` are still to be scanned.
    let mut from = 0usize;
    loop {
        // The next (up to) BATCH blocks from `from`, by address.
        let mut next = [0usize; BATCH];
        let mut n = 0;
        {
            let t = TABLE.lock();
            for i in 0..t.cap {
                // SAFETY: i < cap, and the slots are initialised.
                let a = unsafe { (*t.slots.add(i)).addr() };
                if a <= TOMB || a < from || (n == BATCH && a >= next[BATCH - 1]) {
                    continue;
                }
                // Insertion into the sorted batch, dropping its largest when full.
                let mut k = n.min(BATCH - 1);
                while k > 0 && next[k - 1] > a {
                    next[k] = next[k - 1];
                    k -= 1;
                }
                next[k] = a;
                n = (n + 1).min(BATCH);
            }
        }
        if n == 0 {
            return;
        }
        for &a in &next[..n] {
            let mut off = 0usize;
            loop {
                let t = TABLE.lock();
                let Some(i) = t.find(a) else { break };
                // SAFETY: `i` from `find`, under the lock.
                let e = unsafe { *t.slots.add(i) };
                if off >= e.len {
                    break;
                }
                let len = (e.len - off).min(piece);
                // The block stays mapped while the lock is held; `f` reads through its
                // mapping's pointer.
                f(e.ptr.wrapping_add(off), len);
                off += len;
            }
        }
        from = next[n - 1] + 1;
    }
}

/// The live huge blocks, while the table lock is held (see [`with_blocks`]).
#[cfg(feature = "gc")]
pub struct Blocks<'a>(&'a Table);

#[cfg(feature = "gc")]
impl Blocks<'_> {
    /// Calls `f(start, len)` for every live huge block.
    pub fn each(&self, mut f: impl FnMut(*mut u8, usize)) {
        let t = self.0;
        for i in 0..t.cap {
            // SAFETY: i < cap, and the slots are initialised.
            let e = unsafe { *t.slots.add(i) };
            if e.addr() > TOMB {
                f(e.ptr, e.len);
            }
        }
    }
}

#[cfg(all(test, feature = "gc"))]
mod tests {
    use super::*;

    /// `each_piece` visits every live block whole, in address order, in pieces of at most the
    /// size asked, and nothing of a block freed before it got there.
    #[test]
    fn each_piece_covers_blocks_in_order() {
        const MIB: usize = 1 << 20;
        let sizes = [3 * MIB + 4096, 5 * MIB, MIB / 2 * 5, 70 * 4096];
        let mut blocks = [(ptr::null_mut::<u8>(), 0usize); 4];
        for (b, &size) in blocks.iter_mut().zip(&sizes) {
            *b = alloc(size, 4096);
            assert!(!b.0.is_null());
        }
        // The third block goes before the walk.
        // SAFETY: ours, from `alloc`, freed once.
        unsafe { free(blocks[2].0) };
        let mut pieces = Vec::with_capacity(4096);
        each_piece(MIB, |a, len| {
            if pieces.len() < pieces.capacity() {
                pieces.push((a.addr(), len));
            }
        });
        // Other tests may map huge blocks meanwhile: look at ours only.
        for (k, &(p, len)) in blocks.iter().enumerate() {
            let mine: Vec<_> = pieces
                .iter()
                .filter(|&&(a, _)| a >= p.addr() && a < p.addr() + len)
                .copied()
                .collect();
            if k == 2 {
                // Freed: only a block mapped at the same place since may show.
                continue;
            }
            let mut at = p.addr();
            for &(a, n) in &mine {
                assert_eq!(a, at, "block {k}: a gap or an overlap");
                assert!(n <= MIB && n > 0);
                at += n;
            }
            assert_eq!(at, p.addr() + len, "block {k} not covered whole");
        }
        assert!(
            pieces.windows(2).all(|w| w[0].0 < w[1].0),
            "not in address order"
        );
        for &(p, _) in [blocks[0], blocks[1], blocks[3]].iter() {
            // SAFETY: ours, from `alloc`, freed once.
            unsafe { free(p) };
        }
    }
}
