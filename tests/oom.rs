//! Theme 7: out-of-memory yields null, not a crash.
//!
//! * A forked child limits its address space with RLIMIT_AS, then allocates
//!   64 GiB, many 64 MiB blocks, 1 MiB blocks and small objects until the
//!   allocator returns null; frees everything; allocates again successfully.
//!   Its exit code says which step failed.
//! * In-process: sizes near isize::MAX return null (alloc, alloc_zeroed, realloc).

#[global_allocator]
static GLOBAL: gomalloc::GoMalloc = gomalloc::GoMalloc;

mod common;
use common::*;

use std::alloc::{GlobalAlloc, Layout};
use std::time::Duration;

const HEADROOM: usize = 512 * MIB;

fn meaning(code: i32) -> &'static str {
    match code {
        0 => "ok",
        20 => "setrlimit failed",
        21 => "alloc(64 GiB) did not return null",
        22 => "alloc_zeroed(64 GiB) did not return null",
        23 => "not a single 64 MiB block could be allocated under the limit",
        24 => "64 MiB allocations never returned null under the limit",
        25 => "1 MiB allocations never returned null under the limit",
        26 => "small allocations never returned null under the limit",
        27 => "a block allocated under the limit was corrupted",
        28 => "realloc to 64 GiB did not return null",
        29 => "realloc to 64 GiB returning null damaged the original block",
        30 => "after freeing everything, a small allocation returned null",
        31 => "after freeing everything, std collections failed",
        32 => "after freeing everything, a 64 MiB allocation returned null",
        33 => "the child panicked",
        34 => "a returned pointer was misaligned",
        _ => "unknown",
    }
}

/// Runs in the forked child, after the address space limit is set.
/// Allocation-free except through GoMalloc's GlobalAlloc (the OOM phase keeps
/// its bookkeeping on the stack / inside the blocks themselves).
fn oom_child() -> i32 {
    let vm = vm_bytes();
    let lim = libc::rlimit {
        rlim_cur: (vm + HEADROOM) as libc::rlim_t,
        rlim_max: (vm + HEADROOM) as libc::rlim_t,
    };
    if unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) } != 0 {
        return 20;
    }
    let g = GoMalloc;
    unsafe {
        // Impossible single requests.
        for align in [8usize, 4096, 65536] {
            let l = Layout::from_size_align(64 * GIB, align).unwrap();
            if !g.alloc(l).is_null() {
                return 21;
            }
            if !g.alloc_zeroed(l).is_null() {
                return 22;
            }
        }
        // A live small block that must survive the whole ordeal.
        let keep_l = Layout::from_size_align(1000, 8).unwrap();
        let keep = g.alloc(keep_l);
        if keep.is_null() {
            return 30;
        }
        fill(keep, 1000, 0x4B45_4550);

        // 64 MiB blocks until null.
        let big_l = Layout::from_size_align(64 * MIB, 8).unwrap();
        let mut bigs = [std::ptr::null_mut::<u8>(); 256];
        let mut nbig = 0;
        let mut hit_null = false;
        while nbig < bigs.len() {
            let p = g.alloc(big_l);
            if p.is_null() {
                hit_null = true;
                break;
            }
            if p as usize % 8 != 0 {
                return 34;
            }
            fill(p, 64 * MIB, key_for(p as usize, 64 * MIB, 0));
            bigs[nbig] = p;
            nbig += 1;
        }
        if nbig == 0 {
            return 23;
        }
        if !hit_null {
            return 24;
        }
        // realloc to an impossible size must fail and leave the block intact.
        let p0 = bigs[0];
        if !g.realloc(p0, big_l, 64 * GIB).is_null() {
            return 28;
        }
        if check(p0, 64 * MIB, key_for(p0 as usize, 64 * MIB, 0)).is_some() {
            return 29;
        }
        // 1 MiB blocks until null (bounded: the headroom is < 1 GiB).
        let mid_l = Layout::from_size_align(MIB, 4096).unwrap();
        let mut mids = [std::ptr::null_mut::<u8>(); 1024];
        let mut nmid = 0;
        hit_null = false;
        while nmid < mids.len() {
            let p = g.alloc(mid_l);
            if p.is_null() {
                hit_null = true;
                break;
            }
            if p as usize % 4096 != 0 {
                return 34;
            }
            fill(p, MIB, key_for(p as usize, MIB, 0));
            mids[nmid] = p;
            nmid += 1;
        }
        if !hit_null {
            return 25;
        }
        // Small objects until null; each block links to the previous one.
        let small_l = Layout::from_size_align(256, 16).unwrap();
        let mut head: *mut u8 = std::ptr::null_mut();
        let mut nsmall = 0usize;
        hit_null = false;
        while nsmall < (2 * HEADROOM) / 256 {
            let p = g.alloc(small_l);
            if p.is_null() {
                hit_null = true;
                break;
            }
            if p as usize % 16 != 0 {
                return 34;
            }
            (p as *mut *mut u8).write(head);
            fill_range(p, 8, 256, key_for(p as usize, 256, 0));
            head = p;
            nsmall += 1;
        }
        if !hit_null {
            return 26;
        }
        // Verify and free everything.
        while !head.is_null() {
            let next = (head as *mut *mut u8).read();
            if check_range(head, 8, 256, key_for(head as usize, 256, 0)).is_some() {
                return 27;
            }
            g.dealloc(head, small_l);
            head = next;
        }
        for &p in &mids[..nmid] {
            if check(p, MIB, key_for(p as usize, MIB, 0)).is_some() {
                return 27;
            }
            g.dealloc(p, mid_l);
        }
        for &p in &bigs[..nbig] {
            if check(p, 64 * MIB, key_for(p as usize, 64 * MIB, 0)).is_some() {
                return 27;
            }
            g.dealloc(p, big_l);
        }
        if check(keep, 1000, 0x4B45_4550).is_some() {
            return 27;
        }
        g.dealloc(keep, keep_l);

        // Everything is free again: allocation must work.
        for size in [1usize, 8, 100, 1000, 4096, 20_000, MAX_SMALL_SIZE + 1] {
            let l = Layout::from_size_align(size, 8).unwrap();
            let p = g.alloc(l);
            if p.is_null() {
                return 30;
            }
            g.dealloc(p, l);
        }
    }
    let ok = std::panic::catch_unwind(|| {
        let v: Vec<u64> = (0..10_000).collect();
        let s: String = (0..1000)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let m: std::collections::BTreeMap<u64, Box<u64>> =
            (0..1000).map(|i| (i, Box::new(i * 3))).collect();
        v.iter().sum::<u64>() == 49_995_000
            && s.len() == 1000
            && m.iter().all(|(k, b)| **b == k * 3)
    });
    if !matches!(ok, Ok(true)) {
        return 31;
    }
    unsafe {
        let big_l = Layout::from_size_align(64 * MIB, 8).unwrap();
        let p = g.alloc(big_l);
        if p.is_null() {
            return 32;
        }
        g.dealloc(p, big_l);
    }
    0
}

#[test]
fn rlimit_as_child_gets_null_not_crash() {
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    if pid == 0 {
        unsafe { libc::alarm(60) };
        let code = std::panic::catch_unwind(oom_child).unwrap_or(33);
        unsafe { libc::_exit(code) };
    }
    match wait_child(pid, Duration::from_secs(90)) {
        None => panic!("RLIMIT_AS child hung and was killed"),
        Some(st) => {
            let ok = libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0;
            assert!(
                ok,
                "RLIMIT_AS child {}: {}",
                describe_status(st),
                if libc::WIFEXITED(st) {
                    meaning(libc::WEXITSTATUS(st))
                } else {
                    "crashed instead of returning null"
                }
            );
        }
    }
}

#[test]
fn sizes_near_isize_max_return_null() {
    let max = isize::MAX as usize;
    let cases: Vec<(usize, usize)> = vec![
        (max - 4096, 8),
        (max, 1),
        (max - 1, 1),
        (max - 7, 8),
        (max - 8191, 1),
        (max - 8192, 8),
        (max - 4095, 4096),
        (max - 65535, 65536),
        (max - 2 * 65536, 65536),
        (max / 2, 8),
        (max / 2 + 1, 16),
        (1usize << 62, 4096),
        ((1usize << 62) + 1, 8),
    ];
    for (size, align) in cases {
        let l = match Layout::from_size_align(size, align) {
            Ok(l) => l,
            Err(_) => continue,
        };
        let p = unsafe { GoMalloc.alloc(l) };
        assert!(
            p.is_null(),
            "alloc(size {size:#x}, align {align}) returned {p:p}, expected null"
        );
        let p = unsafe { GoMalloc.alloc_zeroed(l) };
        assert!(
            p.is_null(),
            "alloc_zeroed(size {size:#x}, align {align}) returned {p:p}, expected null"
        );
    }
    // realloc of live small/large/huge blocks to absurd sizes fails and keeps the block.
    for size in [24usize, 5000, MAX_SMALL_SIZE + 1, HUGE_THRESHOLD + 1] {
        for align in [8usize, 4096] {
            let b = alloc_blk(size, align, 1);
            for new in [max - 4096, max - 65536, 1usize << 62, max & !(align - 1)] {
                if Layout::from_size_align(new, align).is_err() {
                    continue;
                }
                let p = unsafe { GoMalloc.realloc(b.ptr, b.layout, new) };
                assert!(
                    p.is_null(),
                    "realloc({size} -> {new:#x}, align {align}) returned {p:p}, expected null"
                );
                verify_blk(
                    &b,
                    &format!("block after failed realloc {size} -> {new:#x}"),
                );
            }
            free_blk(b, "after failed reallocs");
        }
    }
    // The allocator is still healthy.
    let v: Vec<Blk> = (1..2000).map(|s| alloc_blk(s * 7, 8, 2)).collect();
    for b in v {
        free_blk(b, "healthy after null returns");
    }
}
