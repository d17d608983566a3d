//! After a program frees everything and stops calling the allocator, RSS falls back to within
//! a few MiB of where it started, within a second, with no call to `release_memory`: the
//! background scavenger releases pages idle for half a second.

use std::alloc::{GlobalAlloc, Layout};
use std::io::Read;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: gomalloc::GoMalloc = gomalloc::GoMalloc;

const MIB: usize = 1 << 20;

/// Resident bytes, read into a stack buffer (no heap allocation while polling).
fn rss() -> usize {
    let mut f = std::fs::File::open("/proc/self/statm").expect("open statm");
    let mut buf = [0u8; 128];
    let n = f.read(&mut buf).expect("read statm");
    let text = std::str::from_utf8(&buf[..n]).expect("utf8");
    let pages: usize = text
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("rss field");
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

#[test]
fn rss_falls_back_within_a_second_without_release_memory() {
    // Warm up the test harness's own allocations, then take the baseline.
    std::thread::sleep(Duration::from_millis(50));
    let base = rss();
    let mut blocks: Vec<(usize, Layout)> = Vec::with_capacity(100_000);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut total = 0usize;
    while total < 256 * MIB {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // Mostly large blocks (64 KiB .. 4 MiB), some medium (4 .. 32 KiB).
        let size = if seed % 4 == 0 {
            4096 + (seed as usize >> 8) % (28 * 1024)
        } else {
            64 * 1024 + (seed as usize >> 8) % (4 * MIB)
        };
        let layout = Layout::from_size_align(size, 16).unwrap();
        // SAFETY: non-zero layout; freed below with the same layout.
        let p = unsafe { GLOBAL.alloc(layout) };
        assert!(!p.is_null());
        // SAFETY: p is valid for `size` bytes; touch every page so it is resident.
        unsafe {
            let mut off = 0;
            while off < size {
                p.add(off).write(1);
                off += 4096;
            }
        }
        blocks.push((p as usize, layout));
        total += size;
    }
    let peak = rss();
    assert!(
        peak > base + 200 * MIB,
        "test did not grow RSS: base {base}, peak {peak}"
    );
    for (p, layout) in blocks.drain(..) {
        // SAFETY: allocated above with this layout.
        unsafe { GLOBAL.dealloc(p as *mut u8, layout) };
    }
    drop(blocks);
    let freed_at = Instant::now();
    let mut now = rss();
    while now > base + 8 * MIB && freed_at.elapsed() < Duration::from_millis(1500) {
        std::thread::sleep(Duration::from_millis(20));
        now = rss();
    }
    let waited = freed_at.elapsed();
    eprintln!(
        "RSS base {} MiB, peak {} MiB, after free {} MiB after {} ms",
        base / MIB,
        peak / MIB,
        now / MIB,
        waited.as_millis()
    );
    assert!(
        now <= base + 8 * MIB,
        "RSS stayed at {} MiB (base {} MiB)",
        now / MIB,
        base / MIB
    );
    assert!(
        waited <= Duration::from_millis(1000),
        "RSS took {} ms to fall",
        waited.as_millis()
    );
}
