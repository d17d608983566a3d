#!/usr/bin/env bash
# gomalloc's unsafe code under Miri, the Rust interpreter that checks every memory access
# against the language's rules (bounds, alignment, provenance, aliasing, uninitialised reads,
# use after free, data races).
#   bash ci/miri.sh
# Installs what it needs (nightly with the miri and rust-src components). Two runs, both with
# -Zmiri-strict-provenance (no integer-to-pointer casts anywhere: every pointer gomalloc hands
# out is derived from the mapping it lives in):
# 1. the unit tests (`--lib`: size classes, span carving, page heap alloc / free / coalescing /
#    scavenging, central lists, page map), whose test binary keeps the system allocator, under
#    Stacked Borrows (Miri's default);
# 2. tests/miri_smoke.rs, a program with GoMalloc as its global allocator (collections, every
#    size path, realloc across small / large / huge, alloc_zeroed, threads with remote frees
#    and thread exit, stats), under Tree Borrows (-Zmiri-tree-borrows). Not Stacked Borrows:
#    a global allocator that hands out again the pointer a `Box` gave back keeps that Box's
#    retag, whose range Stacked Borrows limits to the old object's size, so the next, bigger
#    object in the same slot is "UB" there (rust-lang/miri#2104, unsafe-code-guidelines#316);
#    Tree Borrows does not have that limitation and checks everything else.
# Under Miri, os.rs maps from the system allocator (no madvise / partial munmap), the page map
# covers a 40-bit address space (Miri's addresses are small; 48 bits makes its 32 MiB table cost
# minutes to set up), and the background scavenger thread is not started (no pthread_attr_*
# shims; freeing threads release idle pages themselves, as when the thread cannot start).
# About 4 minutes on 2 cores (18 unit tests ~1 min, miri_smoke ~3 min), plus about 2 for the
# first build.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
t_start=$SECONDS

step() { printf '\n== %s\n' "$*"; }

if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
rustup component add --toolchain nightly miri rust-src >/dev/null 2>&1
cargo +nightly miri setup >/dev/null 2>&1 || cargo +nightly miri setup
cargo +nightly miri --version

declare -a summary=()
failed=0
run() { # run NAME MIRIFLAGS CARGO-ARGS...
  local name=$1 flags=$2 t0=$SECONDS status=ok
  shift 2
  step "$name: MIRIFLAGS=\"$flags\" cargo +nightly miri test $*"
  if ! MIRIFLAGS="$flags" cargo +nightly miri test "$@"; then
    status=FAILED
    failed=1
  fi
  summary+=("$(printf '%-44s %-6s %4d s' "$name" "$status" $((SECONDS - t0)))")
}

run "unit tests (Stacked Borrows)" "-Zmiri-strict-provenance" -p gomalloc --lib
run "tests/miri_smoke (Tree Borrows)" "-Zmiri-strict-provenance -Zmiri-tree-borrows" \
  -p gomalloc --test miri_smoke

step "miri summary"
printf '%s\n' "${summary[@]}"
printf 'miri: %s in %d s\n' "$([ $failed -eq 0 ] && echo passed || echo FAILED)" \
  $((SECONDS - t_start))
exit $failed
