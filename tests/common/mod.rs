//! Helpers shared by the gomalloc integration tests (not a test binary itself).
//!
//! Everything here is allocation-free on the hot paths (pattern fill/check, RSS
//! reading uses a stack buffer) so it can also be used inside forked children.
#![allow(dead_code, unused_imports)]

use std::alloc::{GlobalAlloc, Layout};

pub use gomalloc::size_class::{
    class_pages, class_size, size_to_class, MAX_SMALL_SIZE, NUM_CLASSES, PAGE_SIZE,
};
pub use gomalloc::{GoMalloc, HUGE_THRESHOLD};

pub const KIB: usize = 1 << 10;
pub const MIB: usize = 1 << 20;
pub const GIB: usize = 1 << 30;

/// True in `cargo test --release`; debug builds use lighter workloads.
pub const RELEASE: bool = !cfg!(debug_assertions);

/// Seed for a test's RNG. `GOMALLOC_SEED=<u64>` reproduces a run; otherwise a fresh
/// seed is drawn. The seed is printed (the harness shows it when the test fails).
pub fn seed(test: &str) -> u64 {
    let s = match std::env::var("GOMALLOC_SEED") {
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .expect("GOMALLOC_SEED must be a u64"),
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            mix(t.as_nanos() as u64 ^ ((std::process::id() as u64) << 32))
        }
    };
    eprintln!("[{test}] seed = {s} (reproduce with GOMALLOC_SEED={s})");
    s
}

/// Parse a usize from the environment (accepts `_` separators).
pub fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be an unsigned integer, got {v:?}")),
        Err(_) => default,
    }
}

/// splitmix64 finalizer.
#[inline]
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Pattern key for a block, derived from its address and size (and a salt so the
/// slack region behind `size` gets a different pattern).
#[inline]
pub fn key_for(addr: usize, size: usize, salt: u64) -> u64 {
    mix(addr as u64 ^ (size as u64).rotate_left(40) ^ salt)
}

/// The pattern word for 8-byte word index `j` of a block with key `key`.
/// Position based: the byte at offset `p` only depends on (key, p).
#[inline(always)]
fn word_at(key: u64, j: usize) -> u64 {
    key ^ (j as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[inline(always)]
pub fn byte_at(key: u64, p: usize) -> u8 {
    word_at(key, p / 8).to_le_bytes()[p % 8]
}

/// Blocks up to this many bytes are patterned completely; beyond it only the
/// first `DENSE` bytes, a 64-byte window every `STRIDE` bytes and the last
/// `TAIL` bytes are (so huge blocks do not cost gigabytes of writes / RSS).
pub const DENSE: usize = 256 * KIB;
pub const STRIDE: usize = 64 * KIB;
pub const WINDOW: usize = 64;
pub const TAIL: usize = 16 * KIB;

/// Calls `f(start, end)` for each patterned range of a block of `len` bytes.
/// Ranges may overlap (harmless: the pattern is position based).
#[inline]
pub fn for_each_range(len: usize, mut f: impl FnMut(usize, usize)) {
    if len <= DENSE {
        f(0, len);
        return;
    }
    f(0, DENSE);
    let mut p = DENSE;
    while p + WINDOW <= len {
        f(p, p + WINDOW);
        p += STRIDE;
    }
    f(len.saturating_sub(TAIL).max(DENSE), len);
}

/// Write the pattern for bytes [start, end) of the block at `ptr`.
#[inline]
pub unsafe fn fill_range(ptr: *mut u8, start: usize, end: usize, key: u64) {
    let mut p = start;
    while p < end && p % 8 != 0 {
        *ptr.add(p) = byte_at(key, p);
        p += 1;
    }
    while p + 8 <= end {
        (ptr.add(p) as *mut u64).write_unaligned(u64::from_le(word_at(key, p / 8)));
        p += 8;
    }
    while p < end {
        *ptr.add(p) = byte_at(key, p);
        p += 1;
    }
}

/// First offset in [start, end) whose byte differs from the pattern.
#[inline]
pub unsafe fn check_range(ptr: *const u8, start: usize, end: usize, key: u64) -> Option<usize> {
    let mut p = start;
    while p < end && p % 8 != 0 {
        if *ptr.add(p) != byte_at(key, p) {
            return Some(p);
        }
        p += 1;
    }
    // Compare words in chunks, fold differences, only locate on mismatch.
    while p + 8 <= end {
        let n = ((end - p) / 8).min(512);
        let mut diff = 0u64;
        for i in 0..n {
            let q = p + i * 8;
            diff |= (ptr.add(q) as *const u64).read_unaligned() ^ u64::from_le(word_at(key, q / 8));
        }
        if diff != 0 {
            for q in p..p + n * 8 {
                if *ptr.add(q) != byte_at(key, q) {
                    return Some(q);
                }
            }
        }
        p += n * 8;
    }
    while p < end {
        if *ptr.add(p) != byte_at(key, p) {
            return Some(p);
        }
        p += 1;
    }
    None
}

/// Pattern a block of `len` bytes (sparse beyond `DENSE`).
pub unsafe fn fill(ptr: *mut u8, len: usize, key: u64) {
    for_each_range(len, |s, e| fill_range(ptr, s, e, key));
}

/// Check the pattern written by `fill(ptr, filled_len, key)`, restricted to the
/// first `upto` bytes (for realloc: the preserved prefix). Returns the first bad offset.
pub unsafe fn check_prefix(
    ptr: *const u8,
    filled_len: usize,
    upto: usize,
    key: u64,
) -> Option<usize> {
    let mut bad = None;
    for_each_range(filled_len, |s, e| {
        if bad.is_none() && s < upto {
            bad = check_range(ptr, s, e.min(upto), key);
        }
    });
    bad
}

pub unsafe fn check(ptr: *const u8, len: usize, key: u64) -> Option<usize> {
    check_prefix(ptr, len, len, key)
}

/// Pretty description of a corruption (expected vs found bytes around `off`).
pub unsafe fn describe_corruption(ptr: *const u8, off: usize, key: u64, len: usize) -> String {
    let lo = off.saturating_sub(off % 8);
    let hi = (lo + 16).min(len);
    let exp: Vec<u8> = (lo..hi).map(|p| byte_at(key, p)).collect();
    let got: Vec<u8> = (lo..hi).map(|p| *ptr.add(p)).collect();
    format!(
        "first bad byte at offset {off} (block {ptr:p}, len {len}): expected {exp:02x?} at [{lo}..{hi}), found {got:02x?}"
    )
}

/// A block obtained straight from `GoMalloc` via `GlobalAlloc`.
#[derive(Debug)]
pub struct Blk {
    pub ptr: *mut u8,
    pub layout: Layout,
    /// bytes behind `ptr` that carry the block's pattern
    pub len: usize,
    pub key: u64,
}
// Blocks are plain memory: they may be freed by any thread.
unsafe impl Send for Blk {}

impl Blk {
    pub fn size(&self) -> usize {
        self.layout.size()
    }
}

pub fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align)
        .unwrap_or_else(|e| panic!("bad layout size={size} align={align}: {e}"))
}

/// Allocate through `GoMalloc`, assert non-null, aligned and
/// `usable_size >= size`, and pattern the `size` bytes.
pub fn alloc_blk(size: usize, align: usize, salt: u64) -> Blk {
    let l = layout(size, align);
    let ptr = unsafe { GoMalloc.alloc(l) };
    assert!(
        !ptr.is_null(),
        "GoMalloc.alloc returned null for size={size} align={align}"
    );
    assert_eq!(
        ptr as usize % align,
        0,
        "misaligned: {ptr:p} for size={size} align={align}"
    );
    let us = unsafe { gomalloc::usable_size(ptr) };
    assert!(
        us >= size,
        "usable_size({ptr:p}) = {us} < size {size} (align {align})"
    );
    let key = key_for(ptr as usize, size, salt);
    unsafe { fill(ptr, size, key) };
    Blk {
        ptr,
        layout: l,
        len: size,
        key,
    }
}

/// Verify a block's pattern; panics with a description on corruption.
pub fn verify_blk(b: &Blk, ctx: &str) {
    unsafe {
        if let Some(off) = check(b.ptr, b.len, b.key) {
            panic!(
                "{ctx}: corrupted block size={} align={}: {}",
                b.layout.size(),
                b.layout.align(),
                describe_corruption(b.ptr, off, b.key, b.len)
            );
        }
    }
}

/// Verify then free.
pub fn free_blk(b: Blk, ctx: &str) {
    verify_blk(&b, ctx);
    unsafe { GoMalloc.dealloc(b.ptr, b.layout) };
}

/// Resident set size in bytes, from /proc/self/statm (no allocation).
pub fn rss_bytes() -> usize {
    statm_field(1) * os_page()
}

/// Total virtual size in bytes, from /proc/self/statm (no allocation).
pub fn vm_bytes() -> usize {
    statm_field(0) * os_page()
}

pub fn os_page() -> usize {
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

fn statm_field(idx: usize) -> usize {
    unsafe {
        let fd = libc::open(
            c"/proc/self/statm".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        assert!(fd >= 0, "cannot open /proc/self/statm");
        let mut buf = [0u8; 256];
        let n = libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len());
        libc::close(fd);
        assert!(n > 0, "cannot read /proc/self/statm");
        let s = &buf[..n as usize];
        let mut field = 0;
        let mut val = 0usize;
        let mut in_num = false;
        for &c in s {
            if c.is_ascii_digit() {
                val = val * 10 + (c - b'0') as usize;
                in_num = true;
            } else if in_num {
                if field == idx {
                    return val;
                }
                field += 1;
                val = 0;
                in_num = false;
            }
        }
        if in_num && field == idx {
            return val;
        }
        panic!("statm has no field {idx}");
    }
}

/// Serialises tests inside one test binary that measure process-global state
/// (stats, RSS). Poisoning is ignored so one failure does not cascade.
pub fn global_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every class boundary +-1 and page multiples +-1 up to `max`, plus 0..=16.
pub fn boundary_sizes(max: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..=16).collect();
    for c in 1..NUM_CLASSES {
        let s = class_size(c);
        v.extend([s - 1, s, s + 1]);
    }
    let mut p = PAGE_SIZE;
    while p <= max + PAGE_SIZE {
        v.extend([p - 1, p, p + 1]);
        p += PAGE_SIZE;
    }
    v.extend([MAX_SMALL_SIZE - 1, MAX_SMALL_SIZE, MAX_SMALL_SIZE + 1]);
    v.retain(|&s| s <= max);
    v.sort_unstable();
    v.dedup();
    v
}

/// Raw write to stderr (usable in a forked child without taking std locks).
pub fn raw_eprint(msg: &str) {
    unsafe {
        libc::write(2, msg.as_ptr() as *const libc::c_void, msg.len());
    }
}

/// Wait for `pid` for at most `timeout`; on timeout SIGKILL it and return None.
/// Returns the raw wait status otherwise.
pub fn wait_child(pid: libc::pid_t, timeout: std::time::Duration) -> Option<libc::c_int> {
    let start = std::time::Instant::now();
    loop {
        let mut status: libc::c_int = 0;
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Some(status);
        }
        assert!(
            r == 0,
            "waitpid({pid}) failed: {}",
            std::io::Error::last_os_error()
        );
        if start.elapsed() > timeout {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Human readable wait status.
pub fn describe_status(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        format!("exited with code {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        let name = match sig {
            libc::SIGSEGV => "SIGSEGV",
            libc::SIGABRT => "SIGABRT",
            libc::SIGALRM => "SIGALRM (deadlock watchdog fired)",
            libc::SIGKILL => "SIGKILL",
            libc::SIGBUS => "SIGBUS",
            libc::SIGILL => "SIGILL",
            _ => "?",
        };
        format!("killed by signal {sig} {name}")
    } else {
        format!("raw wait status {status:#x}")
    }
}
