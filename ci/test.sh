#!/usr/bin/env bash
# The test command: everything CI checks, runnable on a fresh machine with Rust installed.
#   bash ci/test.sh
# Steps: format and lint, the unit + integration + doc tests in release mode (the integration
# test binaries run on GoMalloc as their global allocator), the same again with the checking
# mode (feature `checked`), the collector (feature `gc`: its tests, and binary-trees and GCBench
# beside Boehm GC and Go, ci/gc-compare.sh --quick), the loom models, the C ABI (feature
# `c-abi`: its tests, and real programs from Debian's packages under LD_PRELOAD, installed
# through apt), and the callgrind count of the fast path when valgrind is present; with CI=true
# also the sanitizers (ASan, TSan, memcheck), Miri and 60 s of fuzzing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

step() { printf '\n== %s\n' "$*"; }
# Every cargo test's output also goes to this log, so the totals can be printed at the end.
log=$(mktemp)
trap 'rm -f "$log"' EXIT

step "toolchain"
cargo --version
rustc --version
# The jemalloc dev-dependency builds C code: make sure a C toolchain and make are present.
if ! command -v cc >/dev/null 2>&1 || ! command -v make >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq build-essential >/dev/null
  fi
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test --release (unit, integration, doc)"
cargo test --release --workspace 2>&1 | tee -a "$log"

step "checking mode: cargo test --release --features checked (every test, plus tests/checked.rs)"
cargo clippy -p gomalloc --all-targets --features checked -- -D warnings
cargo test --release -p gomalloc --features checked 2>&1 | tee -a "$log"

step "collector: feature gc (tests/gc.rs, doc tests, benchmarks beside Boehm GC and Go)"
cargo clippy -p gomalloc --all-targets --features gc -- -D warnings
cargo clippy -p gomalloc-bench --all-targets --features gc -- -D warnings
# tests/gc_concurrent.rs: concurrent marking under stress, with gccheckmark (it sets it).
# `timeout`: a collector bug can hang a stopped world; CI then fails instead of stalling.
CARGO_TARGET_DIR=target/gc timeout 900 cargo test --release -p gomalloc --features gc --test gc \
  --test gc_main_thread --test gc_concurrent --lib 2>&1 |
  tee -a "$log"
CARGO_TARGET_DIR=target/gc cargo test --release -p gomalloc --features gc --doc gc 2>&1 | tee -a "$log"
# tests/gc.rs again with concurrent marking (every store there has the barrier) and gccheckmark:
# every mark termination re-marks from the roots and aborts if the concurrent mark missed one.
GOMALLOC_TEST_CONCURRENT=1 GOMALLOC_DEBUG=gccheckmark=1 CARGO_TARGET_DIR=target/gc \
  timeout 900 cargo test --release -p gomalloc --features gc --test gc 2>&1 | tee -a "$log"
# The mark without workers (serial) and with three (more than this machine's CPUs may give).
for workers in 0 3; do
  GOMALLOC_GC_WORKERS=$workers CARGO_TARGET_DIR=target/gc timeout 900 \
    cargo test --release -p gomalloc --features gc --test gc --test gc_concurrent 2>&1 |
    tee -a "$log"
done
# binary-trees and GCBench at small sizes, threads 1 and 2, on gomalloc, Boehm GC and Go: check
# outputs identical, a cycle ran while 2 threads allocated (installs gcc, libgc-dev, golang-go,
# python3 through apt when missing; about 10 s after its build into target/gc).
CARGO_TARGET_DIR=target/gc cargo test --release -p gomalloc-bench --features gc --lib 2>&1 |
  tee -a "$log"
bash ci/gc-compare.sh --quick

step "loom models (LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:=2})"
RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=$LOOM_MAX_PREEMPTIONS CARGO_TARGET_DIR=target/loom \
  cargo test -p gomalloc-loom-tests --release 2>&1 | tee -a "$log"

step "C ABI: feature c-abi (tests/cabi.rs), real programs under LD_PRELOAD (ci/preload.sh)"
cargo clippy -p gomalloc --all-targets --features c-abi -- -D warnings
CARGO_TARGET_DIR=target/cabi cargo test --release -p gomalloc --features c-abi --test cabi 2>&1 |
  tee -a "$log"
bash ci/preload.sh 2>&1 | tee -a "$log"

if command -v valgrind >/dev/null 2>&1; then
  step "fast path instruction count (callgrind)"
  bash ci/fastpath.sh
fi

# CI (CI=true) also runs the sanitizers, Miri and a minute of fuzzing; they install their
# nightly toolchain and tools themselves. About 25 more minutes on 2 cores from a fresh clone.
# By hand: `CI=true bash ci/test.sh`, or the three scripts alone.
if [ "${CI:-}" = true ] || [ -n "${GOMALLOC_FULL_TESTS:-}" ]; then
  step "sanitizers: ASan, TSan, valgrind memcheck (ci/sanitizers.sh)"
  bash ci/sanitizers.sh 2>&1 | tee -a "$log"
  step "Miri: unit tests and tests/miri_smoke (ci/miri.sh)"
  bash ci/miri.sh 2>&1 | tee -a "$log"
  step "fuzzing: 60 s of the ops target (ci/fuzz.sh)"
  bash ci/fuzz.sh
fi
echo
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
