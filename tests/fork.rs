//! Theme 6: fork() while other threads are busy allocating; the child must be
//! able to allocate and free (no lock inherited in a held state), spawn a
//! thread, read stats and release memory. A watchdog alarm in the child and a
//! timeout in the parent turn a deadlock into a test failure.

#[global_allocator]
static GLOBAL: gomalloc::GoMalloc = gomalloc::GoMalloc;

mod common;
use common::*;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::alloc::GlobalAlloc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CHILD_ALARM_S: u32 = 20;
const PARENT_TIMEOUT: Duration = Duration::from_secs(40);

// Child exit codes.
const OK: i32 = 0;
const E_NULL: i32 = 10;
const E_CORRUPT: i32 = 11;
const E_PANIC: i32 = 12;
const E_THREAD: i32 = 13;
const E_STATS: i32 = 14;
const E_COLLECTIONS: i32 = 15;
const E_GRANDCHILD: i32 = 16;

fn code_meaning(code: i32) -> &'static str {
    match code {
        OK => "ok",
        E_NULL => "an allocation returned null in the child",
        E_CORRUPT => "block contents corrupted in the child",
        E_PANIC => "the child panicked",
        E_THREAD => "a thread spawned in the child failed",
        E_STATS => "stats() invariants broken in the child",
        E_COLLECTIONS => "std collections misbehaved in the child",
        E_GRANDCHILD => "a grandchild (fork from the child) failed",
        _ => "unknown",
    }
}

/// Busy background allocators: small, large and occasionally huge blocks,
/// plus cross-thread frees through a shared slot table.
struct Busy {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

fn start_busy(threads: usize, seed: u64) -> Busy {
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let slots: Arc<Vec<Mutex<Option<Blk>>>> = Arc::new((0..64).map(|_| Mutex::new(None)).collect());
    let handles = (0..threads)
        .map(|t| {
            let stop = stop.clone();
            let ops = ops.clone();
            let slots = slots.clone();
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed ^ mix(t as u64));
                let mut live: Vec<Blk> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let r = rng.gen_range(0..1000);
                    let size = if r < 900 {
                        rng.gen_range(1..=2048)
                    } else if r < 998 {
                        rng.gen_range(MAX_SMALL_SIZE..=300_000)
                    } else {
                        HUGE_THRESHOLD + rng.gen_range(0..PAGE_SIZE)
                    };
                    let b = alloc_blk(size, 8, 0);
                    if rng.gen_ratio(1, 10) {
                        let old = slots[rng.gen_range(0..slots.len())]
                            .lock()
                            .unwrap()
                            .replace(b);
                        if let Some(o) = old {
                            free_blk(o, "busy slot");
                        }
                    } else {
                        live.push(b);
                    }
                    if !live.is_empty() && (live.len() > 256 || rng.gen_bool(0.5)) {
                        let k = rng.gen_range(0..live.len());
                        free_blk(live.swap_remove(k), "busy");
                    }
                    if rng.gen_ratio(1, 5000) {
                        gomalloc::flush_thread_cache();
                    }
                    if rng.gen_ratio(1, 20000) {
                        let _ = gomalloc::stats();
                    }
                    ops.fetch_add(1, Ordering::Relaxed);
                }
                for b in live {
                    free_blk(b, "busy end");
                }
                for s in slots.iter() {
                    if let Some(b) = s.lock().unwrap().take() {
                        free_blk(b, "busy end slot");
                    }
                }
            })
        })
        .collect();
    Busy { stop, ops, handles }
}

impl Busy {
    fn wait_for_progress(&self) {
        let start = self.ops.load(Ordering::Relaxed);
        let t = std::time::Instant::now();
        while self.ops.load(Ordering::Relaxed) < start + 1000
            && t.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            h.join().expect("a busy allocator thread panicked");
        }
    }
}

/// Allocation work done in the child. Returns an exit code; never panics out.
fn child_work(seed: u64, depth: u32) -> i32 {
    let mut rng = StdRng::seed_from_u64(seed);
    // 1. raw GlobalAlloc: small, large, huge, aligned; coexisting; checked.
    let mut ptrs: Vec<(usize, std::alloc::Layout, u64)> = Vec::with_capacity(2048);
    let n = if RELEASE { 2000 } else { 400 };
    for i in 0..n {
        let size = match i % 100 {
            0 => HUGE_THRESHOLD + rng.gen_range(0..PAGE_SIZE),
            1..=4 => rng.gen_range(MAX_SMALL_SIZE + 1..=200_000),
            _ => rng.gen_range(1..=4096),
        };
        let align = 1usize << rng.gen_range(0..=12u32);
        let l = std::alloc::Layout::from_size_align(size, align).unwrap();
        let p = unsafe { GoMalloc.alloc(l) };
        if p.is_null() || p as usize % align != 0 {
            return E_NULL;
        }
        let key = key_for(p as usize, size, 7);
        unsafe { fill(p, size, key) };
        ptrs.push((p as usize, l, key));
        if i % 3 == 0 {
            let (p, l, key) = ptrs.swap_remove(rng.gen_range(0..ptrs.len()));
            if unsafe { check(p as *const u8, l.size(), key) }.is_some() {
                return E_CORRUPT;
            }
            unsafe { GoMalloc.dealloc(p as *mut u8, l) };
        }
    }
    for (p, l, key) in ptrs.drain(..) {
        if unsafe { check(p as *const u8, l.size(), key) }.is_some() {
            return E_CORRUPT;
        }
        unsafe { GoMalloc.dealloc(p as *mut u8, l) };
    }
    // 2. std collections.
    let mut m = std::collections::HashMap::new();
    for i in 0..5000u64 {
        m.insert(format!("key-{i}"), vec![i; (i % 17) as usize]);
    }
    for i in (0..5000u64).step_by(2) {
        m.remove(&format!("key-{i}"));
    }
    if m.len() != 2500
        || m.iter()
            .any(|(k, v)| v.iter().any(|x| format!("key-{x}") != *k))
    {
        return E_COLLECTIONS;
    }
    drop(m);
    // 3. a thread in the child (thread cache creation and teardown after fork).
    let h = std::thread::Builder::new().spawn(move || {
        let mut v: Vec<Box<[u64]>> = Vec::new();
        for i in 0..3000u64 {
            v.push(vec![i; (i % 50) as usize + 1].into_boxed_slice());
        }
        v.iter()
            .enumerate()
            .all(|(i, b)| b.iter().all(|&x| x == i as u64))
    });
    match h.map(|h| h.join()) {
        Ok(Ok(true)) => {}
        _ => return E_THREAD,
    }
    // 4. stats and release_memory take global locks.
    gomalloc::flush_thread_cache();
    let s = gomalloc::stats();
    if s.heap_inuse + s.heap_idle != s.heap_sys
        || s.heap_released > s.heap_idle
        || s.sys < s.heap_sys
    {
        return E_STATS;
    }
    gomalloc::release_memory();
    let b = vec![7u8; 3 * MAX_SMALL_SIZE];
    if b.iter().any(|&x| x != 7) {
        return E_COLLECTIONS;
    }
    drop(b);
    // 5. optionally fork again from the child.
    if depth > 0 {
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            unsafe { libc::alarm(CHILD_ALARM_S) };
            let code = std::panic::catch_unwind(|| child_work(seed ^ 0xC0FFEE, depth - 1))
                .unwrap_or(E_PANIC);
            unsafe { libc::_exit(code) };
        }
        if pid < 0 {
            return E_GRANDCHILD;
        }
        match wait_child(pid, PARENT_TIMEOUT) {
            Some(st) if libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0 => {}
            _ => return E_GRANDCHILD,
        }
    }
    OK
}

/// fork from the calling thread; run child_work in the child; assert the
/// child exited with 0.
fn fork_and_check(seed: u64, depth: u32, what: &str) {
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // Child: watchdog first, never return into the test harness.
        unsafe { libc::alarm(CHILD_ALARM_S) };
        let code = std::panic::catch_unwind(|| child_work(seed, depth)).unwrap_or(E_PANIC);
        if code != OK {
            raw_eprint("fork test child: failure\n");
        }
        unsafe { libc::_exit(code) };
    }
    match wait_child(pid, PARENT_TIMEOUT) {
        None => panic!(
            "{what}: child {pid} hung for {PARENT_TIMEOUT:?} (deadlock after fork?) and was killed"
        ),
        Some(st) => {
            let ok = libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0;
            assert!(
                ok,
                "{what}: child {pid} {} ({})",
                describe_status(st),
                if libc::WIFEXITED(st) {
                    code_meaning(libc::WEXITSTATUS(st))
                } else {
                    "crash/deadlock"
                }
            );
        }
    }
}

#[test]
fn fork_while_threads_allocate() {
    let seed = seed("fork_while_threads_allocate");
    let busy = start_busy(4, seed);
    let forks = if RELEASE { 40 } else { 10 };
    for i in 0..forks {
        busy.wait_for_progress();
        // The parent keeps allocating too, between forks.
        let v: Vec<String> = (0..1000).map(|k| format!("{i}-{k}")).collect();
        fork_and_check(seed ^ i as u64, 0, &format!("seed {seed} fork #{i}"));
        assert!(v.iter().enumerate().all(|(k, s)| *s == format!("{i}-{k}")));
    }
    busy.stop();
}

#[test]
fn fork_from_secondary_thread_and_nested_fork() {
    let seed = seed("fork_from_secondary_thread_and_nested_fork");
    let busy = start_busy(3, seed ^ 99);
    let forks = if RELEASE { 15 } else { 5 };
    std::thread::spawn(move || {
        for i in 0..forks {
            busy.wait_for_progress();
            fork_and_check(
                seed ^ (1000 + i as u64),
                1,
                &format!("seed {seed} nested fork #{i}"),
            );
        }
        busy.stop();
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e));
}

/// After fork the parent and its busy threads continue to work normally, and
/// fork with a large live heap shows no corruption on either side.
#[test]
fn parent_heap_intact_across_forks() {
    let seed = seed("parent_heap_intact_across_forks");
    let mut rng = StdRng::seed_from_u64(seed);
    let busy = start_busy(2, seed ^ 7);
    let blocks: Vec<Blk> = (0..3000)
        .map(|_| alloc_blk(rng.gen_range(1..=100_000), 1 << rng.gen_range(0..=6u32), 0))
        .collect();
    for i in 0..5 {
        fork_and_check(
            seed ^ (77 + i),
            0,
            &format!("seed {seed} big-heap fork #{i}"),
        );
        for b in &blocks {
            verify_blk(b, "parent block after fork");
        }
    }
    for b in blocks {
        free_blk(b, "parent");
    }
    busy.stop();
}
