#!/usr/bin/env bash
# The test suite under AddressSanitizer, ThreadSanitizer and valgrind memcheck.
#   bash ci/sanitizers.sh              # all three
#   bash ci/sanitizers.sh asan tsan    # a subset (asan, tsan, valgrind)
# Installs what it needs: the nightly toolchain with rust-src (-Zsanitizer, -Zbuild-std), and
# valgrind through apt-get when it is missing. Separate target dirs: target/asan, target/tsan.
#
# What each one can see, given that the integration test binaries run on GoMalloc as their
# global allocator (their Rust heap is gomalloc's mmap'd memory, not malloc's):
# - ASan: out-of-bounds on gomalloc's statics (page map, size-class tables, the central lists),
#   on stacks, and on whatever still comes from libc malloc; use-after-free in the unit tests,
#   whose test binary keeps the system allocator. It does not see inside gomalloc's own
#   mappings (ASan does not poison mmap'd memory).
# - TSan: data races on any memory, gomalloc's included (TSan shadows all application memory),
#   with std rebuilt instrumented (-Zbuild-std); gomalloc's futex lock is built on atomics,
#   which TSan models.
# - memcheck, on a normal build: reads of uninitialised values, bad system call arguments, and
#   accesses to memory gomalloc has unmapped; gomalloc's mappings are defined memory to it, so
#   it sees nothing of blocks. With --features valgrind (src/valgrind.rs) gomalloc describes
#   every block with client requests (MALLOCLIKE / FREELIKE / RESIZEINPLACE; free memory
#   NOACCESS), and memcheck reports use after free, reads past the asked size, branches on
#   never-written heap bytes, invalid frees and definitely lost small blocks. The step runs the
#   normal build (as before) and the feature build of several test binaries, multi-threaded ones
#   included, with --leak-check=full and definite leaks counted as errors; tests/valgrind.rs
#   checks that memcheck reports a planted use after free and uninitialised read with the
#   feature, and nothing without it.
#
# Skipped tests, and why:
# - ASan and TSan, oom: the child sets RLIMIT_AS just above its current size; under ASan it
#   passes or fails from run to run, failing when the sanitizer runtime's own allocator hits the
#   limit ("AddressSanitizer: out of memory: failed to allocate 57344 bytes of Create") and
#   aborts. Under TSan, see fork.
# - TSan, fork (and oom): their children start threads after a multi-threaded fork(), which TSan
#   does not support (it kills the child: "starting new threads after multi-threaded fork is
#   not supported").
# - TSan, last_thread: its child must end once its own threads have exited, and TSan's runtime
#   keeps a background thread of its own that outlives them (the child never ends).
# - TSan, exit_hook: the test runs code in the last round of pthread key destructors, after
#   TSan has finished the thread; TSan's own function-entry hook then crashes (SEGV in
#   TraceSkipGap called from the test's own destructor, before gomalloc is reached).
# - TSan, scavenger, stats' release_memory_returns_heap_alloc_and_rss and thread_exit's
#   two_thousand_short_lived_threads_do_not_leak_caches: they assert on RSS, which TSan's
#   shadow memory and per-thread state dominate (scavenger: 305 MiB left after freeing 256 MiB
#   where the test wants 8 MiB; thread_exit: RSS +33 MiB over 1 900 threads, heap_inuse fine;
#   the stats one passes or fails from run to run).
# - checked: built only with --features checked (not run here).
# - ASan and TSan, valgrind: it runs valgrind on its own binary (valgrind cannot run sanitizer
#   binaries); it runs in the valgrind step.
# - valgrind, thread_exit's RSS assertion: valgrind's own per-thread memory dominates RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
target=x86_64-unknown-linux-gnu
what=("$@")
[ ${#what[@]} -eq 0 ] && what=(asan tsan valgrind)

step() { printf '\n== %s\n' "$*"; }
declare -a summary=()
timed() { # timed NAME CMD...
  local name=$1 t0=$SECONDS
  shift
  "$@"
  summary+=("$(printf '%-34s %5d s' "$name" $((SECONDS - t0)))")
}

# --test NAME for each integration test but those given.
tests_except() {
  local f n s skip
  for f in tests/*.rs; do
    n=$(basename "$f" .rs)
    skip=0
    for s in checked valgrind "$@"; do [ "$n" = "$s" ] && skip=1; done
    [ $skip -eq 0 ] && printf -- '--test %s ' "$n"
  done
}

needs_nightly() {
  if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal --component rust-src
  fi
  rustup component add --toolchain nightly rust-src >/dev/null 2>&1
  cargo +nightly --version
}

for w in "${what[@]}"; do
  case $w in
  asan)
    needs_nightly
    step "ASan: cargo +nightly test --release --target $target -p gomalloc (skips oom)"
    # detect_leaks=0: gomalloc's heap is invisible to LeakSanitizer, and the fork tests' children
    # exit with _exit; leaks would only be reported for libc malloc, which the tests don't use.
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1}
    # shellcheck disable=SC2046
    timed "asan: lib + integration tests" env RUSTFLAGS="-Zsanitizer=address" \
      RUSTDOCFLAGS="-Zsanitizer=address" CARGO_TARGET_DIR=target/asan \
      cargo +nightly test --release --target $target -p gomalloc --lib $(tests_except oom)
    timed "asan: doc tests" env RUSTFLAGS="-Zsanitizer=address" \
      RUSTDOCFLAGS="-Zsanitizer=address" CARGO_TARGET_DIR=target/asan \
      cargo +nightly test --release --target $target -p gomalloc --doc
    unset ASAN_OPTIONS
    ;;
  tsan)
    needs_nightly
    step "TSan: cargo +nightly test -Zbuild-std --release --target $target -p gomalloc (skips exit_hook, fork, oom, scavenger, last_thread, two RSS tests)"
    export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:abort_on_error=1}
    tsan_env=(env RUSTFLAGS="-Zsanitizer=thread" RUSTDOCFLAGS="-Zsanitizer=thread"
      CARGO_TARGET_DIR=target/tsan)
    # shellcheck disable=SC2046
    timed "tsan: lib + integration tests" "${tsan_env[@]}" \
      cargo +nightly test -Zbuild-std --release --target $target -p gomalloc --lib \
      $(tests_except exit_hook fork oom scavenger last_thread) -- \
      --skip release_memory_returns_heap_alloc_and_rss \
      --skip two_thousand_short_lived_threads_do_not_leak_caches
    timed "tsan: doc tests" "${tsan_env[@]}" \
      cargo +nightly test -Zbuild-std --release --target $target -p gomalloc --doc
    unset TSAN_OPTIONS
    ;;
  valgrind)
    if ! command -v valgrind >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
      apt-get update -qq && apt-get install -y -qq valgrind >/dev/null
    fi
    valgrind --version
    # The test binary of tests/NAME built with cargo's extra arguments ARGS.
    test_bin() { # test_bin NAME ARGS...
      local t=$1
      shift
      cargo test --release -p gomalloc "$@" --test "$t" --no-run --message-format=json 2>/dev/null |
        sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1
    }
    vg=(valgrind --tool=memcheck --error-exitcode=99 --quiet --track-origins=yes)
    step "valgrind memcheck: tests/realloc and tests/stress_random (normal release build)"
    timed "valgrind: realloc" "${vg[@]}" "$(test_bin realloc)" --test-threads=1
    timed "valgrind: stress_random (2 s)" env GOMALLOC_STRESS_SECS=2 GOMALLOC_STRESS_HUGE=1 \
      "${vg[@]}" "$(test_bin stress_random)"
    # With the feature memcheck tracks every block: use after free, uninitialised reads, invalid
    # frees and leaks are errors. Leaks: definite ones only (a small block nothing points to);
    # what the test harness and std keep until exit is "still reachable" and not reported.
    # Large and huge blocks are never "definitely lost": their span descriptor or the huge
    # table holds their address.
    step "valgrind memcheck with --features valgrind: blocks described to memcheck, leaks checked"
    vgf=("${vg[@]}" --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite)
    timed "valgrind: demo, no feature: 0 errors" cargo test --release -p gomalloc --test valgrind
    timed "valgrind+feature: demo: both errors" \
      cargo test --release -p gomalloc --features valgrind --test valgrind
    # realloc's random walk (hundreds of 16-48 MiB blocks) runs in the step above: with the
    # feature and --track-origins every huge MALLOCLIKE tags each byte, over 8 minutes of CPU.
    timed "valgrind+feature: realloc (skips random walk)" "${vgf[@]}" \
      "$(test_bin realloc --features valgrind)" --test-threads=1 --skip random_walk_many_chains
    timed "valgrind+feature: collections" "${vgf[@]}" \
      "$(test_bin collections --features valgrind)"
    timed "valgrind+feature: stress_threads (8 x 100k ops)" env GOMALLOC_STRESS_OPS=100000 \
      "${vgf[@]}" "$(test_bin stress_threads --features valgrind)"
    timed "valgrind+feature: thread_exit (skips RSS)" "${vgf[@]}" \
      "$(test_bin thread_exit --features valgrind)" \
      --skip two_thousand_short_lived_threads_do_not_leak_caches
    timed "valgrind+feature: stress_random (2 s)" env GOMALLOC_STRESS_SECS=2 GOMALLOC_STRESS_HUGE=1 \
      "${vgf[@]}" "$(test_bin stress_random --features valgrind)"
    ;;
  *)
    echo "unknown: $w (asan, tsan, valgrind)" >&2
    exit 2
    ;;
  esac
done

step "timings"
printf '%s\n' "${summary[@]}"
