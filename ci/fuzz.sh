#!/usr/bin/env bash
# Fuzz gomalloc briefly (the `ops` target in fuzz/, see fuzz/fuzz_targets/ops.rs).
#   bash ci/fuzz.sh            # 60 s
#   FUZZ_SECS=1200 bash ci/fuzz.sh
# Installs what it needs: a nightly toolchain (cargo-fuzz builds with -Zsanitizer=address and
# SanitizerCoverage) and cargo-fuzz. The corpus is kept in fuzz/corpus/ops (not committed);
# a crash leaves its input in fuzz/artifacts/ops/ and makes this script fail.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
secs=${FUZZ_SECS:-60}

if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
# libFuzzer is C++: make sure a C/C++ toolchain is present.
if ! command -v c++ >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq build-essential >/dev/null
fi

cargo fuzz --version
mkdir -p fuzz/corpus/ops
# -rss_limit_mb: the target maps up to ~160 MiB of live blocks plus huge mappings.
cargo +nightly fuzz run ops -- -max_total_time="$secs" -rss_limit_mb=4096 -print_final_stats=1
