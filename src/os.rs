//! The OS layer: every system call that maps, unmaps, releases or remaps memory is here.
//!
//! Owns: the OS page size (read at run time: 4, 16 or 64 KiB), and anonymous private mappings.
//! Every function reports failure by returning null (or `false`): the layers above turn that
//! into a null allocation, never an abort.
//!
//! Invariants: mappings are readable and writable, zero-filled when new, and aligned at least
//! to the OS page; `release` only touches whole OS pages inside the range it is given, and the
//! released pages read back as zero (MADV_DONTNEED on private anonymous memory).
//!
//! Under Miri (no madvise, no partial munmap) mappings come from `std::alloc::System`, all
//! aligned to 64 MiB (an arena; a bigger alignment is refused), `release` zeroes instead of
//! advising, and nothing is ever trimmed.

// A process-wide static, so always the std atomic (loom cannot model statics).
use core::sync::atomic::{AtomicUsize, Ordering};

static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);

/// The OS page size in bytes, read once from `sysconf(_SC_PAGESIZE)`.
#[inline]
pub fn page_size() -> usize {
    let p = PAGE_SIZE.load(Ordering::Relaxed);
    if p != 0 {
        return p;
    }
    page_size_slow()
}

#[cold]
fn page_size_slow() -> usize {
    // SAFETY: sysconf has no preconditions.
    let raw = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let p = if raw > 0 && (raw as usize).is_power_of_two() {
        raw as usize
    } else {
        4096
    };
    PAGE_SIZE.store(p, Ordering::Relaxed);
    p
}

/// The clock `id` in nanoseconds.
fn clock_ns(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A coarse monotonic clock in milliseconds (vDSO, no system call on Linux).
pub fn now_ms() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC_COARSE) / 1_000_000
}

/// A monotonic clock in nanoseconds (vDSO, no system call on Linux).
#[cfg(feature = "gc")]
pub fn now_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// CPU time of the calling thread in nanoseconds (a system call: for per-phase accounting,
/// not per object).
#[cfg(feature = "gc")]
pub fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPUs this process may run on (its affinity mask; the online CPUs if that cannot be read),
/// at least 1, read once.
#[cfg(feature = "gc")]
pub fn cpus() -> usize {
    use core::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.load(Ordering::Relaxed);
    if n != 0 {
        return n;
    }
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity writes at most its
    // size; sysconf has no preconditions.
    let n = unsafe {
        let mut set: libc::cpu_set_t = core::mem::zeroed();
        if libc::sched_getaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            libc::CPU_COUNT(&set) as usize
        } else {
            libc::sysconf(libc::_SC_NPROCESSORS_ONLN).max(1) as usize
        }
    }
    .max(1);
    N.store(n, Ordering::Relaxed);
    n
}

/// Tasks runnable on the whole machine now, the caller included (the fourth field of
/// `/proc/loadavg`, `R/T`), or None if it cannot be read.
#[cfg(feature = "gc")]
pub fn runnable_tasks() -> Option<usize> {
    let mut buf = [0u8; 128];
    // SAFETY: a NUL-terminated path; `buf` is ours and `read` writes at most its length.
    let n = unsafe {
        let fd = libc::open(c"/proc/loadavg".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return None;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    if n <= 0 {
        return None;
    }
    // "0.52 0.58 0.59 3/456 12345": the number before the '/'.
    let text = &buf[..n as usize];
    let field = text.split(|&b| b == b' ').nth(3)?;
    let mut r = 0usize;
    for &b in field.iter().take_while(|&&b| b != b'/') {
        if !b.is_ascii_digit() {
            return None;
        }
        r = r * 10 + (b - b'0') as usize;
    }
    Some(r)
}

/// Sleeps for `ns` nanoseconds (less if a signal interrupts it).
#[cfg(feature = "gc")]
pub fn sleep_ns(ns: u64) {
    let ts = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: `ts` is a valid timespec; the remainder pointer may be null.
    unsafe { libc::nanosleep(&ts, core::ptr::null_mut()) };
}

/// The value of the environment variable `name`, if set. The program must not change the
/// environment while the slice is in use (we read it in constructors and at GC calls).
#[cfg(any(feature = "gc", feature = "c-abi"))]
pub fn env(name: &core::ffi::CStr) -> Option<&'static [u8]> {
    // SAFETY: getenv with a NUL-terminated name returns null or a NUL-terminated string.
    let v = unsafe { libc::getenv(name.as_ptr()) };
    if v.is_null() {
        return None;
    }
    // SAFETY: as above; the string lives in the environment block.
    Some(unsafe { core::ffi::CStr::from_ptr(v) }.to_bytes())
}

/// Whether `GOMALLOC_DEBUG` (a comma-separated list of `name=value`) holds `flag`.
#[cfg(any(feature = "gc", feature = "c-abi"))]
pub fn debug_flag(flag: &[u8]) -> bool {
    env(c"GOMALLOC_DEBUG").is_some_and(|v| v.split(|&b| b == b',').any(|kv| kv == flag))
}

/// Starts a detached thread running `entry(arg)` with a stack of `stack` bytes, without the
/// global allocator (gomalloc's helper threads: the scavenger, the collector's timer and mark
/// workers); false if it cannot be started.
#[cfg(not(miri))]
pub fn spawn_detached(
    entry: extern "C" fn(*mut libc::c_void) -> *mut libc::c_void,
    arg: *mut libc::c_void,
    stack: usize,
) -> bool {
    // SAFETY: plain pthread calls on a zero-initialised attribute object we own; the entry
    // point is an extern "C" fn that lives forever.
    unsafe {
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        if libc::pthread_attr_init(&mut attr) != 0 {
            return false;
        }
        libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        libc::pthread_attr_setstacksize(&mut attr, stack);
        let mut tid: libc::pthread_t = 0;
        let rc = libc::pthread_create(&mut tid, &attr, entry, arg);
        libc::pthread_attr_destroy(&mut attr);
        rc == 0
    }
}

/// For a helper thread, on itself: blocks every signal (the program's signals go to its own
/// threads) and names the thread (for `top -H` readers).
#[cfg(not(miri))]
pub fn become_helper(name: &core::ffi::CStr) {
    // SAFETY: the signal mask and name of the calling thread only.
    unsafe {
        let mut all: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, core::ptr::null_mut());
        libc::prctl(libc::PR_SET_NAME, name.as_ptr());
    }
}

/// The calling thread's kernel id.
#[cfg(feature = "gc")]
pub fn gettid() -> i32 {
    // SAFETY: a system call without arguments or memory effects.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// Rounds `n` up to a multiple of the power of two `align`; `None` on overflow.
#[inline]
pub fn round_up(n: usize, align: usize) -> Option<usize> {
    Some(n.checked_add(align - 1)? & !(align - 1))
}

/// Maps `len` bytes (a multiple of the OS page) of fresh zeroed memory. Null on failure.
///
/// # Safety
/// `len` is non-zero.
#[cfg(not(miri))]
pub unsafe fn map(len: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches no
    // existing memory.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        core::ptr::null_mut()
    } else {
        p as *mut u8
    }
}

/// Maps `len` bytes aligned to `align` (a power of two >= the OS page) by over-mapping and
/// trimming the ends. Null on failure.
///
/// # Safety
/// `len` is a non-zero multiple of the OS page.
#[cfg(not(miri))]
pub unsafe fn map_aligned(len: usize, align: usize) -> *mut u8 {
    let page = page_size();
    if align <= page {
        // SAFETY: forwarded precondition.
        return unsafe { map(len) };
    }
    let Some(total) = len.checked_add(align - page) else {
        return core::ptr::null_mut();
    };
    // SAFETY: forwarded precondition (total is a non-zero multiple of the page).
    let raw = unsafe { map(total) };
    if raw.is_null() {
        return raw;
    }
    let aligned = raw.map_addr(|a| (a + align - 1) & !(align - 1));
    let head = aligned.addr() - raw.addr();
    let tail = total - head - len;
    // SAFETY: head and tail are page-aligned pieces of the mapping we just made and own.
    unsafe {
        if head > 0 {
            unmap(raw, head);
        }
        if tail > 0 {
            unmap(aligned.add(len), tail);
        }
    }
    aligned
}

/// Unmaps a range previously returned by [`map`] / [`map_aligned`] (or a page-aligned part).
///
/// # Safety
/// The range is mapped by us and nothing refers to it any more.
#[cfg(not(miri))]
pub unsafe fn unmap(ptr: *mut u8, len: usize) {
    // SAFETY: forwarded precondition.
    unsafe {
        libc::munmap(ptr as *mut libc::c_void, len);
    }
}

/// Asks the kernel to back `[ptr, ptr + len)` with transparent huge pages where it can
/// (`MADV_HUGEPAGE`; matters when THP is in `madvise` mode). Advisory: failure changes nothing.
///
/// # Safety
/// The range is mapped by us.
#[cfg(not(miri))]
pub unsafe fn hugepage(ptr: *mut u8, len: usize) {
    // SAFETY: advice on a range of ours; it never changes contents.
    unsafe { libc::madvise(ptr.cast(), len, libc::MADV_HUGEPAGE) };
}

/// Under Miri there is no madvise: nothing to do.
///
/// # Safety
/// As for the non-Miri version.
#[cfg(miri)]
pub unsafe fn hugepage(_ptr: *mut u8, _len: usize) {}

/// Returns the whole OS pages inside `[ptr, ptr+len)` to the OS; they read back as zero.
/// Returns how many bytes were released (0 if the range holds no whole OS page).
///
/// # Safety
/// The range is mapped by us and holds no live data.
#[cfg(not(miri))]
pub unsafe fn release(ptr: *mut u8, len: usize) -> usize {
    let page = page_size();
    let start = ptr.map_addr(|a| (a + page - 1) & !(page - 1));
    let end = (ptr.addr() + len) & !(page - 1);
    if end <= start.addr() {
        return 0;
    }
    let bytes = end - start.addr();
    // SAFETY: [start, start + bytes) is a page-aligned sub-range of memory we own and hold no
    // data in.
    let rc = unsafe { libc::madvise(start.cast(), bytes, libc::MADV_DONTNEED) };
    if rc == 0 {
        bytes
    } else {
        0
    }
}

/// Resizes the mapping at `ptr` from `old` to `new` bytes (multiples of the OS page), moving it
/// if needed. Null on failure (the old mapping is then untouched).
///
/// # Safety
/// `ptr`/`old` describe a whole mapping of ours.
#[cfg(not(miri))]
pub unsafe fn remap(ptr: *mut u8, old: usize, new: usize) -> *mut u8 {
    // SAFETY: forwarded precondition; MREMAP_MAYMOVE keeps the contents.
    let p = unsafe { libc::mremap(ptr as *mut libc::c_void, old, new, libc::MREMAP_MAYMOVE) };
    if p == libc::MAP_FAILED {
        core::ptr::null_mut()
    } else {
        p as *mut u8
    }
}

/// Resizes the mapping at `ptr` from `old` to `new` bytes without moving it. Null on failure.
///
/// # Safety
/// `ptr`/`old` describe a whole mapping of ours.
#[cfg(not(miri))]
pub unsafe fn remap_in_place(ptr: *mut u8, old: usize, new: usize) -> *mut u8 {
    // SAFETY: forwarded precondition; without MREMAP_MAYMOVE the address is kept or the call
    // fails.
    let p = unsafe { libc::mremap(ptr as *mut libc::c_void, old, new, 0) };
    if p == libc::MAP_FAILED {
        core::ptr::null_mut()
    } else {
        p as *mut u8
    }
}

#[cfg(miri)]
mod miri_impl {
    use std::alloc::{GlobalAlloc, Layout, System};

    const MIRI_ALIGN: usize = 1 << 26;

    fn layout(len: usize) -> Option<Layout> {
        Layout::from_size_align(len, MIRI_ALIGN).ok()
    }
    /// # Safety
    /// `len` is non-zero.
    pub unsafe fn map(len: usize) -> *mut u8 {
        match layout(len) {
            // SAFETY: non-zero size.
            Some(l) => unsafe { System.alloc_zeroed(l) },
            None => core::ptr::null_mut(),
        }
    }
    /// # Safety
    /// `len` is non-zero.
    pub unsafe fn map_aligned(len: usize, align: usize) -> *mut u8 {
        if align > MIRI_ALIGN {
            // Every mapping has the one alignment `unmap` can name again: refuse a bigger one.
            return core::ptr::null_mut();
        }
        // SAFETY: forwarded precondition; MIRI_ALIGN covers the alignment asked for.
        unsafe { map(len) }
    }
    /// # Safety
    /// A whole mapping returned by `map`.
    pub unsafe fn unmap(ptr: *mut u8, len: usize) {
        if let Some(l) = layout(len) {
            // SAFETY: same layout as at allocation.
            unsafe { System.dealloc(ptr, l) }
        }
    }
    /// # Safety
    /// The range is ours and dead.
    pub unsafe fn release(ptr: *mut u8, len: usize) -> usize {
        // SAFETY: the range is ours and holds no live data.
        unsafe { core::ptr::write_bytes(ptr, 0, len) };
        len
    }
    /// # Safety
    /// `ptr`/`old` is a whole mapping.
    pub unsafe fn remap(ptr: *mut u8, old: usize, new: usize) -> *mut u8 {
        // SAFETY: forwarded preconditions; the new block is fresh.
        unsafe {
            let n = map(new);
            if !n.is_null() {
                core::ptr::copy_nonoverlapping(ptr, n, old.min(new));
                unmap(ptr, old);
            }
            n
        }
    }
    /// # Safety
    /// `ptr`/`old` is a whole mapping.
    pub unsafe fn remap_in_place(_ptr: *mut u8, _old: usize, _new: usize) -> *mut u8 {
        core::ptr::null_mut()
    }
}
#[cfg(miri)]
pub use miri_impl::{map, map_aligned, release, remap, remap_in_place, unmap};
