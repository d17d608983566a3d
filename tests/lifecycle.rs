//! Allocation across a program's whole life: before `main` (a static constructor), inside
//! thread-local destructors (std's `thread_local!` destructors run before our cache's exit hook,
//! and one destructor here allocates after another has run), and after a thread's cache has
//! been retired. Every block must be usable and every block freed must be counted as freed.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

#[global_allocator]
static GLOBAL: gomalloc::GoMalloc = gomalloc::GoMalloc;

/// The tests here spawn threads and one counts live thread caches: run them one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Written by a static constructor that runs before `main` (and before the test harness).
static PRE_MAIN_BLOCK: AtomicUsize = AtomicUsize::new(0);

extern "C" fn before_main() {
    let v: Vec<u64> = (0..1000).collect();
    let b = Box::new(v);
    PRE_MAIN_BLOCK.store(Box::into_raw(b) as usize, Ordering::SeqCst);
}

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = before_main;

#[test]
fn allocation_before_main_is_valid_and_freeable() {
    let _serial = serial();
    let p = PRE_MAIN_BLOCK.swap(0, Ordering::SeqCst);
    assert_ne!(p, 0, "the static constructor did not run");
    // SAFETY: the constructor leaked exactly this Box.
    let b = unsafe { Box::from_raw(p as *mut Vec<u64>) };
    assert_eq!(b.iter().sum::<u64>(), 999 * 1000 / 2);
    drop(b);
}

struct AllocOnDrop(u64);

impl Drop for AllocOnDrop {
    fn drop(&mut self) {
        // Allocate, use and free during TLS teardown, also touching a second TLS that may
        // already be destroyed (try_with) or be initialised now.
        let v: Vec<u64> = (0..self.0).collect();
        assert_eq!(v.iter().sum::<u64>(), self.0 * (self.0 - 1) / 2);
        let s = format!("{:?}", &v[..4]);
        assert_eq!(s, "[0, 1, 2, 3]");
        let _ = SECOND.try_with(|c| c.borrow_mut().push(String::from("late")));
        LEAKED_IN_DTOR.store(
            Box::into_raw(Box::new([7u8; 200])) as usize,
            Ordering::SeqCst,
        );
    }
}

thread_local! {
    static FIRST: RefCell<Option<AllocOnDrop>> = const { RefCell::new(None) };
    static SECOND: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

static LEAKED_IN_DTOR: AtomicUsize = AtomicUsize::new(0);

#[test]
fn allocation_inside_thread_local_destructors() {
    let _serial = serial();
    for round in 0..20 {
        std::thread::spawn(move || {
            FIRST.with(|f| *f.borrow_mut() = Some(AllocOnDrop(5_000 + round)));
            SECOND.with(|s| s.borrow_mut().push("early".repeat(100)));
        })
        .join()
        .expect("thread with allocating TLS destructors");
        // The block allocated during teardown is valid and can be freed from here.
        let p = LEAKED_IN_DTOR.swap(0, Ordering::SeqCst);
        assert_ne!(p, 0, "destructor did not run");
        // SAFETY: the destructor leaked exactly this Box.
        let b = unsafe { Box::from_raw(p as *mut [u8; 200]) };
        assert!(b.iter().all(|&x| x == 7));
    }
}

#[test]
fn a_thread_that_allocates_only_after_its_cache_retired_still_works() {
    let _serial = serial();
    // A pthread key destructor registered after ours runs after our cache was retired; it
    // allocates and frees through the direct path.
    extern "C" fn late(_: *mut libc::c_void) {
        let layout = Layout::from_size_align(100, 8).unwrap();
        for _ in 0..1000 {
            // SAFETY: non-zero layout, freed with the same layout.
            unsafe {
                let p = GLOBAL.alloc(layout);
                assert!(!p.is_null());
                p.write_bytes(0x5a, 100);
                GLOBAL.dealloc(p, layout);
            }
        }
        LATE_RAN.fetch_add(1, Ordering::SeqCst);
    }
    static LATE_RAN: AtomicUsize = AtomicUsize::new(0);
    let caches_before = gomalloc::live_thread_caches();
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: valid out-pointer and destructor.
    assert_eq!(unsafe { libc::pthread_key_create(&mut key, Some(late)) }, 0);
    let key_usize = key as usize;
    std::thread::spawn(move || {
        let v: Vec<u32> = (0..10_000).collect(); // activates this thread's cache
        assert_eq!(v.len(), 10_000);
        // SAFETY: key is valid; a non-null value arms the destructor.
        unsafe {
            libc::pthread_setspecific(
                key_usize as libc::pthread_key_t,
                std::ptr::dangling::<libc::c_void>(),
            )
        };
    })
    .join()
    .unwrap();
    assert_eq!(LATE_RAN.load(Ordering::SeqCst), 1);
    // The thread's cache left the registry when it exited.
    assert!(gomalloc::live_thread_caches() <= caches_before + 1);
}
