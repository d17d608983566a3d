//! Valgrind's memcheck sees gomalloc's blocks with the `valgrind` feature, and not without it.
//!
//! The test runs this binary again under memcheck with only `child` selected
//! (`GOMALLOC_VG_CHILD=1`). The child frees a `Box` and reads it again, then branches on a byte
//! of a block it never wrote, and leaks a 48-byte block. Built with `--features valgrind`,
//! memcheck must report all three: an "Invalid read" inside a 64-byte block "free'd", a
//! "Conditional jump or move depends on uninitialised value(s)", and 48 bytes "definitely lost"
//! (the test harness leaks no block of its own). Built without it, memcheck sees gomalloc's heap as mapped, defined
//! memory and must report no error at all: that blindness is why the feature exists.
//!
//! Skips (passing, with a message) when valgrind is not installed; `ci/sanitizers.sh` installs
//! it. Not run under ASan or TSan (valgrind cannot run sanitizer binaries).

#[global_allocator]
static GLOBAL: gomalloc::GoMalloc = gomalloc::GoMalloc;

use std::alloc::Layout;
use std::process::Command;

const CHILD_ENV: &str = "GOMALLOC_VG_CHILD";
const CHILD_RAN: &str = "valgrind-child: done";

/// The misuse memcheck should see (does nothing unless run by the test below).
#[test]
fn child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    // Use after free: read a word in the middle of a freed 64-byte Box.
    let p = Box::into_raw(Box::new([0x5au64; 8]));
    // SAFETY: `p` came from Box::into_raw; it is dropped once.
    drop(unsafe { Box::from_raw(p) });
    // SAFETY: none: this is the bug memcheck must catch (the memory stays mapped in gomalloc,
    // so the process itself does not fault; a volatile read keeps the compiler from dropping
    // it).
    let stale = unsafe { std::ptr::read_volatile((p as *const u64).add(4)) };
    std::hint::black_box(stale);

    // Uninitialised read: branch on a byte of a fresh block nobody wrote.
    let layout = Layout::from_size_align(100, 8).unwrap();
    // SAFETY: non-zero size.
    let q = unsafe { std::alloc::alloc(layout) };
    assert!(!q.is_null());
    // SAFETY: inside the block; reading it uninitialised is the bug memcheck must catch.
    let byte = unsafe { std::ptr::read_volatile(q.add(37)) };
    if byte == 0x42 {
        println!("valgrind-child: byte is 0x42");
    } else {
        println!("valgrind-child: byte is not 0x42");
    }
    // SAFETY: allocated above with this layout.
    unsafe { std::alloc::dealloc(q, layout) };
    leak();
    println!("{CHILD_RAN}");
}

/// Leaks a 48-byte block: once this frame is gone nothing points to it.
#[inline(never)]
fn leak() {
    std::mem::forget(std::hint::black_box(Box::new([7u64; 6])));
}

/// "ERROR SUMMARY: N errors" of a memcheck run.
fn error_count(stderr: &str) -> usize {
    let line = stderr
        .lines()
        .find(|l| l.contains("ERROR SUMMARY:"))
        .unwrap_or_else(|| panic!("no ERROR SUMMARY in valgrind's output:\n{stderr}"));
    let n = line
        .split("ERROR SUMMARY:")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    n.parse().unwrap()
}

#[test]
fn memcheck_sees_blocks_only_with_the_feature() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    if Command::new("valgrind").arg("--version").output().is_err() {
        eprintln!("skipped: valgrind is not installed (apt-get install valgrind)");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("valgrind")
        .args([
            "--tool=memcheck",
            "--track-origins=yes",
            "--leak-check=full",
            "--show-leak-kinds=definite",
            "--errors-for-leak-kinds=definite",
        ])
        .arg(&exe)
        .args(["--exact", "child", "--test-threads=1", "--nocapture"])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(CHILD_RAN),
        "the child did not run to the end under valgrind ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let errors = error_count(&stderr);
    if cfg!(feature = "valgrind") {
        for want in [
            "Invalid read of size 8",
            "is 32 bytes inside a block of size 64 free'd",
            "Conditional jump or move depends on uninitialised value(s)",
            "48 bytes in 1 blocks are definitely lost",
        ] {
            assert!(
                stderr.contains(want),
                "memcheck did not report {want:?}:\n{stderr}"
            );
        }
        assert_eq!(errors, 3, "exactly the three planted errors:\n{stderr}");
    } else {
        assert_eq!(
            errors, 0,
            "without the feature memcheck should not see inside gomalloc's heap:\n{stderr}"
        );
    }
    eprintln!(
        "memcheck reported {errors} error(s) (feature valgrind {})",
        if cfg!(feature = "valgrind") {
            "on"
        } else {
            "off"
        }
    );
}
