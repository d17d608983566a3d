//! A thread whose first allocation happens in the last round of pthread key destructors
//! (glibc runs at most PTHREAD_DESTRUCTOR_ITERATIONS = 4 rounds) registers a cache whose exit
//! hook never runs. Its TLS block is then freed and usually reused by the next thread; the
//! registry must not point into it: `stats()` must stay sound and terminate.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

#[global_allocator]
static GLOBAL: gomalloc::GoMalloc = gomalloc::GoMalloc;

static KEY: AtomicU32 = AtomicU32::new(0);
static ROUNDS: AtomicU32 = AtomicU32::new(0);

extern "C" fn rearming_destructor(_: *mut libc::c_void) {
    let r = ROUNDS.fetch_add(1, Ordering::SeqCst) + 1;
    if r < 4 {
        // SAFETY: KEY is a valid key; re-arming asks glibc for another round.
        unsafe {
            libc::pthread_setspecific(
                KEY.load(Ordering::SeqCst),
                std::ptr::dangling::<libc::c_void>(),
            )
        };
    } else {
        // Round 4: this thread's first allocation through gomalloc.
        let b = Box::new([7u8; 24]);
        std::hint::black_box(&b);
    }
}

extern "C" fn arm_and_exit(_: *mut libc::c_void) -> *mut libc::c_void {
    // SAFETY: KEY is a valid key.
    unsafe {
        libc::pthread_setspecific(
            KEY.load(Ordering::SeqCst),
            std::ptr::dangling::<libc::c_void>(),
        )
    };
    std::ptr::null_mut()
}

extern "C" fn allocate_and_exit(_: *mut libc::c_void) -> *mut libc::c_void {
    let v: Vec<u64> = (0..100).collect();
    std::hint::black_box(&v);
    std::ptr::null_mut()
}

fn run_raw_thread(f: extern "C" fn(*mut libc::c_void) -> *mut libc::c_void) {
    // SAFETY: plain pthread create/join with a valid entry point.
    unsafe {
        let mut t: libc::pthread_t = 0;
        assert_eq!(
            libc::pthread_create(&mut t, std::ptr::null(), f, std::ptr::null_mut()),
            0
        );
        assert_eq!(libc::pthread_join(t, std::ptr::null_mut()), 0);
    }
}

#[test]
fn cache_registered_in_the_last_destructor_round_does_not_dangle() {
    // The main thread's cache is active first, so gomalloc's key has the lower index.
    std::hint::black_box(vec![1u8; 10]);
    let mut k: libc::pthread_key_t = 0;
    // SAFETY: valid out-pointer and destructor.
    assert_eq!(
        unsafe { libc::pthread_key_create(&mut k, Some(rearming_destructor)) },
        0
    );
    KEY.store(k, Ordering::SeqCst);
    run_raw_thread(arm_and_exit);
    assert_eq!(
        ROUNDS.load(Ordering::SeqCst),
        4,
        "the destructor rounds did not run as expected"
    );
    // New threads reuse the dead thread's stack and TLS block (glibc's stack cache).
    for _ in 0..8 {
        run_raw_thread(allocate_and_exit);
    }
    // Every registry walk runs on a helper thread, so a corrupt registry fails the test
    // instead of hanging it.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let a = gomalloc::stats();
        std::hint::black_box(vec![0u8; 100]);
        let b = gomalloc::stats();
        let _ = tx.send((
            a.mallocs,
            b.mallocs,
            b.frees,
            gomalloc::live_thread_caches(),
        ));
    });
    let (before, mallocs, frees, _live) = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(v) => v,
        Err(_) => {
            // A walker stuck in the registry holds its lock, so this thread could not even
            // exit cleanly: end the whole test binary with a failure instead.
            eprintln!("stats() did not return within 20 s: the cache registry is corrupt");
            std::process::exit(101);
        }
    };
    assert!(mallocs > before);
    assert!(mallocs >= frees);
}
