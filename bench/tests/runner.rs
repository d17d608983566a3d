//! The comparison runner checks itself: every workload runs (small) on gomalloc in this test
//! binary and gives the same checksum twice, and `compare` runs end to end on two allocators,
//! prints its tables and writes its CSV and SVG.

#[global_allocator]
static GLOBAL: gomalloc::GoMalloc = gomalloc::GoMalloc;

use gomalloc_bench::{workloads, Opts};
use std::process::Command;

#[test]
fn every_workload_is_deterministic_on_gomalloc() {
    let o = Opts {
        threads: 3,
        scale: 0.02,
        seed: 42,
    };
    for name in workloads::NAMES {
        let w = workloads::find(name).expect("listed workload exists");
        let (a, b) = (w(&o), w(&o));
        assert_eq!(a, b, "{name}: checksum differs between two identical runs");
        assert_ne!(
            a, 0,
            "{name}: a checksum of 0 suggests the workload did nothing"
        );
    }
    let other = Opts { seed: 43, ..o };
    assert_ne!(
        workloads::small_churn(&o),
        workloads::small_churn(&other),
        "the seed must change the work"
    );
}

#[test]
fn compare_runs_end_to_end() {
    let dir = std::env::temp_dir().join(format!("gomalloc-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (csv, svg) = (dir.join("out.csv"), dir.join("out.svg"));
    let out = Command::new(env!("CARGO_BIN_EXE_compare"))
        .args([
            "--reps",
            "1",
            "--scale",
            "0.02",
            "--settle-ms",
            "0",
            "--threads",
            "2",
        ])
        .args(["--allocators", "gomalloc,system"])
        .args(["--workloads", "small_churn,larson,large"])
        .arg("--csv")
        .arg(&csv)
        .arg("--svg")
        .arg(&svg)
        .output()
        .expect("compare starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "compare failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "wall time, ms",
        "peak RSS, MiB",
        "geomean",
        "go/sys",
        "targets:",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
    let csv = std::fs::read_to_string(&csv).unwrap();
    // Header plus 3 workloads x 2 allocators x 1 rep.
    assert_eq!(csv.lines().count(), 1 + 6, "{csv}");
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn unknown_workloads_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_wl-gomalloc"))
        .arg("no_such_workload")
        .output()
        .expect("wl-gomalloc starts");
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(env!("CARGO_BIN_EXE_compare"))
        .args(["--workloads", "no_such_workload"])
        .output()
        .expect("compare starts");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no table for a refused run");
}
