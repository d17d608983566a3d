#!/usr/bin/env bash
# The collector beside Boehm GC and Go, in one run (ci/gc/compare.py prints the tables):
# binary-trees and GCBench on gomalloc's `Gc` (both root modes: malloc blocks scanned, and
# `--no-scan-malloc`), on Boehm GC (Debian's libgc-dev, bench/gc/*.c) and on Go (Debian's
# golang-go, bench/gc/*.go); wall time, cycles, max / median / p99 stop-the-world pause, peak
# RSS, ratios, the issue's targets. Every run's check output must match across the four
# (exit 1 otherwise). GOGC=100 for Go and gomalloc; Boehm keeps its own pacing.
#   bash ci/gc-compare.sh [--reps N] [--markdown] [--quick] [--bt-depth N] [--gcb-depth N]
#                         [--live-mib L] [--threads 1,2] [--programs binarytrees,gcbench]
# --quick: small sizes, one repetition, threads 1 and 2: a correctness check for CI (outputs
# identical, every program exits 0, gomalloc collected while 2 threads allocated), about 10 s
# after the builds. Installs gcc, libgc-dev, golang-go and python3 through apt when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
args=()
quick=0
for x in "$@"; do
  if [ "$x" = --quick ]; then quick=1; else args+=("$x"); fi
done
if [ $quick = 1 ]; then
  args=(--reps 1 --bt-depth 14 --gcb-depth 14 --live-mib 8 --threads 1,2 --expect-threaded-gc
        "${args[@]}")
fi

missing=()
[ -e /usr/include/gc.h ] || missing+=(libgc-dev)
command -v go >/dev/null 2>&1 || missing+=(golang-go)
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The gc feature's target directory, shared with ci/test.sh's collector step.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/gc}
cargo build --release -p gomalloc-bench --features gc --bin gc-binarytrees --bin gc-gcbench
out=$CARGO_TARGET_DIR/gc-compare
mkdir -p "$out"
for p in binarytrees gcbench; do
  cp "$CARGO_TARGET_DIR/release/gc-$p" "$out/$p-gomalloc"
  gcc -O2 -Wall -Wextra -Werror -o "$out/$p-boehm" "bench/gc/$p.c" -lgc -lpthread
  (cd bench/gc && GO111MODULE=off go build -o "../../$out/$p-go" "$p.go" common.go)
done
echo "# gcc $(gcc -dumpfullversion), libgc $(dpkg-query -W -f '${Version}' libgc-dev 2>/dev/null || echo '?'), $(go version | cut -d' ' -f3), $(nproc) cores"
exec python3 ci/gc/compare.py --dir "$out" "${args[@]}"
