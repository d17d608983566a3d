//! A process whose own threads have all exited ends: the scavenger thread, gomalloc's only
//! background thread, must not keep it alive (it ends after a second without work).

use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: gomalloc::GoMalloc = gomalloc::GoMalloc;

const MIB: usize = 1 << 20;

/// Set in the child of `process_ends_after_its_last_thread_exits`.
const PTHREAD_EXIT_CHILD: &std::ffi::CStr = c"GOMALLOC_TEST_PTHREAD_EXIT_CHILD";

/// The child's whole life, run before `main` (the test harness would wait for its test thread
/// forever): free enough that the scavenger thread starts, check it did (exit 3 if not, so the
/// test cannot pass without it), then end the main thread. The process must
/// end by itself once the scavenger, its last thread, goes idle.
extern "C" fn pthread_exit_child() {
    // SAFETY: getenv with a NUL-terminated name.
    if unsafe { libc::getenv(PTHREAD_EXIT_CHILD.as_ptr()) }.is_null() {
        return;
    }
    let blocks: Vec<Vec<u8>> = (0..64).map(|_| vec![1u8; MIB]).collect();
    drop(blocks);
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count()) < 2 {
        if Instant::now() > deadline {
            // SAFETY: _exit has no preconditions.
            unsafe { libc::_exit(3) };
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // The main thread ends here (a raw thread exit: `pthread_exit` cannot unwind out of a
    // constructor); the process lives on in its other threads, and ends with the last.
    // SAFETY: ends only this thread; nothing runs after it on this thread.
    unsafe { libc::syscall(libc::SYS_exit, 0) };
}

#[used]
#[link_section = ".init_array"]
static PTHREAD_EXIT_CHILD_INIT: extern "C" fn() = pthread_exit_child;

/// A process whose own threads have all exited ends: the scavenger thread must not keep it
/// alive (it ends after a second without work). Before that rule, the child below never ended
/// (a C program whose main calls `pthread_exit`, or a Python child forked from a non-main
/// thread, hung the same way).
#[test]
fn process_ends_after_its_last_thread_exits() {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .env(PTHREAD_EXIT_CHILD.to_str().unwrap(), "1")
        .spawn()
        .expect("spawn child");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert_eq!(
                status.code(),
                Some(0),
                "child failed (3: the scavenger never started)"
            );
            break;
        }
        if start.elapsed() > Duration::from_secs(30) {
            child.kill().ok();
            panic!("the child process is still alive 30 s after its last thread exited");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("child ended {:?} after start", start.elapsed());
}
