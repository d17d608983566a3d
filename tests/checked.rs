//! The checking mode (`--features checked`): each kind of misuse aborts with one line naming the
//! fault, the address and the size class. Every scenario runs in a forked child whose stderr
//! goes to a pipe; the parent checks that the child died of SIGABRT and what the line says.
#![cfg(feature = "checked")]

use std::alloc::{GlobalAlloc, Layout};
use std::io::Read;
use std::os::fd::FromRawFd;

#[global_allocator]
static GLOBAL: gomalloc::GoMalloc = gomalloc::GoMalloc;

/// Runs `scenario` in a forked child; returns (terminating signal or 0, stderr text).
fn in_child(scenario: fn()) -> (i32, String) {
    let mut fds = [0i32; 2];
    // SAFETY: plain pipe/fork/dup2/waitpid; the child only runs `scenario` and exits.
    unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        let pid = libc::fork();
        assert!(pid >= 0);
        if pid == 0 {
            libc::dup2(fds[1], 2);
            libc::close(fds[0]);
            libc::alarm(20);
            scenario();
            libc::_exit(0);
        }
        libc::close(fds[1]);
        let mut out = String::new();
        let mut f = std::fs::File::from_raw_fd(fds[0]);
        f.read_to_string(&mut out).unwrap();
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        let sig = if libc::WIFSIGNALED(status) {
            libc::WTERMSIG(status)
        } else {
            0
        };
        (sig, out)
    }
}

fn expect_abort(scenario: fn(), words: &[&str]) {
    let (sig, err) = in_child(scenario);
    assert_eq!(sig, libc::SIGABRT, "child was not aborted; stderr: {err:?}");
    let line = err
        .lines()
        .find(|l| l.starts_with("gomalloc: "))
        .unwrap_or("");
    for w in words {
        assert!(
            line.contains(w),
            "expected {w:?} in {line:?} (stderr {err:?})"
        );
    }
    assert!(line.contains("0x"), "the line names no address: {line:?}");
}

fn l(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

#[test]
fn double_free_is_caught() {
    expect_abort(
        || unsafe {
            let p = GLOBAL.alloc(l(40));
            GLOBAL.dealloc(p, l(40));
            GLOBAL.dealloc(p, l(40));
        },
        &["double free of", "(class 64 B)"],
    );
}

#[test]
fn double_free_of_a_large_block_is_caught() {
    expect_abort(
        || unsafe {
            let p = GLOBAL.alloc(l(100_000));
            GLOBAL.dealloc(p, l(100_000));
            GLOBAL.dealloc(p, l(100_000));
        },
        &["double free"],
    );
}

#[test]
fn free_of_a_foreign_pointer_is_caught() {
    expect_abort(
        || unsafe {
            let p = std::alloc::System.alloc(l(40));
            GLOBAL.dealloc(p, l(40));
        },
        &["not allocated by gomalloc"],
    );
}

#[test]
fn free_of_an_interior_pointer_is_caught() {
    expect_abort(
        || unsafe {
            let p = GLOBAL.alloc(l(100));
            GLOBAL.dealloc(p.add(16), l(100));
        },
        &["inside a block"],
    );
}

#[test]
fn dealloc_with_another_size_class_is_caught() {
    expect_abort(
        || unsafe {
            let p = GLOBAL.alloc(l(40));
            GLOBAL.dealloc(p, l(500));
        },
        &["another size class", "(class 576 B)"],
    );
}

#[test]
fn dealloc_with_another_size_in_the_same_class_is_caught() {
    expect_abort(
        || unsafe {
            let p = GLOBAL.alloc(l(40));
            GLOBAL.dealloc(p, l(44));
        },
        &["another size"],
    );
}

#[test]
fn write_past_the_end_is_caught() {
    expect_abort(
        || unsafe {
            let p = GLOBAL.alloc(l(40));
            p.add(40).write(1); // one byte too far
            GLOBAL.dealloc(p, l(40));
        },
        &["write past the end", "(class 64 B)"],
    );
}

#[test]
fn write_past_the_end_of_a_large_block_is_caught() {
    expect_abort(
        || unsafe {
            let p = GLOBAL.alloc(l(100_000));
            p.add(100_000).write(1);
            GLOBAL.dealloc(p, l(100_000));
        },
        &["write past the end"],
    );
}

#[test]
fn write_after_free_is_caught_on_reuse() {
    expect_abort(
        || unsafe {
            let p = GLOBAL.alloc(l(100));
            GLOBAL.dealloc(p, l(100));
            p.add(50).write(7); // use after free
            let q = GLOBAL.alloc(l(100)); // the same object comes back from the thread cache
            std::hint::black_box(q);
        },
        &["after it was freed", "(class 128 B)"],
    );
}

#[test]
fn correct_use_does_not_abort_and_usable_size_is_the_asked_size() {
    let (sig, err) = in_child(|| unsafe {
        for size in [1usize, 8, 40, 100, 4000, 40_000, 1 << 20, 20 << 20] {
            let p = GLOBAL.alloc(l(size));
            assert_eq!(gomalloc::usable_size(p), size);
            p.write_bytes(0xab, size);
            let q = GLOBAL.realloc(p, l(size), size * 2);
            assert!((0..size).all(|i| *q.add(i) == 0xab));
            GLOBAL.dealloc(q, l(size * 2));
        }
    });
    assert_eq!((sig, err.as_str()), (0, ""));
}
