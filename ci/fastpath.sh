#!/usr/bin/env bash
# Counts the instructions of one malloc+free pair on the thread-cache hit path with callgrind.
# Usage: ci/fastpath.sh   (needs valgrind). Prints the count for a 64 B Layout known at compile
# time (Box<[u8; 64]>) and for 64 B given at run time (size-class lookup included).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --example fastpath >/dev/null 2>&1
bin=target/release/examples/fastpath
count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$@" 2>&1 |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
for mode in const runtime; do
  extra=(); [ "$mode" = runtime ] && extra=(64)
  a=$(count 100000 "${extra[@]}")
  b=$(count 1100000 "${extra[@]}")
  echo "callgrind: malloc+free of 64 B ($mode layout) on the thread-cache hit = $(( (b - a) / 1000000 )) instructions per pair (loop included; Ir ${a} @ 1e5, ${b} @ 1.1e6)"
done

# The C entry points (feature c-abi, LD_PRELOAD): malloc(64) + free from a C loop, where free
# finds the size class through the page map; glibc's malloc for scale.
if command -v gcc >/dev/null 2>&1; then
  CARGO_TARGET_DIR=target/cabi cargo build --release --features c-abi >/dev/null 2>&1
  gcc -O2 -o target/cabi/cpair ci/preload/cpair.c
  ccount() {
    env ${1:+LD_PRELOAD=$1} valgrind --tool=callgrind --callgrind-out-file=/dev/null \
      target/cabi/cpair "$2" 2>&1 | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
  }
  for lib in "$PWD/target/cabi/release/libgomalloc.so" ""; do
    a=$(ccount "$lib" 100000)
    b=$(ccount "$lib" 1100000)
    echo "callgrind: C malloc(64)+free through $([ -n "$lib" ] && echo 'gomalloc (LD_PRELOAD)' || echo "glibc's malloc") = $(( (b - a) / 1000000 )) instructions per pair (loop included)"
  done
fi
