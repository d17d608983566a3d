#!/usr/bin/env bash
# Unmodified programs from Debian's packages run on gomalloc through LD_PRELOAD; each one's
# output must match its run on glibc's malloc (any crash, hang or difference fails):
#   bash ci/preload.sh
# Programs (ci/preload/programs.sh): python3 (objects and threads), sqlite3 (a large SQL
# script), sort (a large file), git (a generated repository), a C++ std::map/std::string churn
# on 4 threads, a multi-threaded program that forks and execs; then part of CPython's own test
# suite (Debian's libpython3.X-testsuite) under gomalloc. Installs what it needs through apt.
# Prints "test result: ok. N passed; M failed" (counted by ci/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

pyver=$(/usr/bin/python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")' 2>/dev/null || echo 3)
need=()
for c in sqlite3 git g++ gcc; do command -v $c >/dev/null 2>&1 || need+=("$c"); done
[ -x /usr/bin/python3 ] || need+=(python3)
# The test modules come with libpython3.X-testsuite; `test/libregrtest` alone comes with the
# standard library package, so look for a module the run below uses.
[ -f "/usr/lib/python$pyver/test/test_struct.py" ] || need+=("libpython$pyver-testsuite")
if [ ${#need[@]} -gt 0 ]; then
  pkgs=()
  for n in "${need[@]}"; do case $n in g++) pkgs+=(g++) ;; gcc) pkgs+=(gcc) ;; *) pkgs+=("$n") ;; esac; done
  echo "installing: ${pkgs[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
  pyver=$(/usr/bin/python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  [ -f "/usr/lib/python$pyver/test/test_struct.py" ] ||
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "libpython$pyver-testsuite" >/dev/null
fi

# shellcheck source=ci/preload/prepare.sh
. ci/preload/prepare.sh
lib=$LIB

pass=0
fail=0
result() { # NAME OK DETAIL
  if [ "$2" = 1 ]; then pass=$((pass + 1)); echo "ok    $1 $3"; else fail=$((fail + 1)); echo "FAIL  $1 $3"; fi
}

for p in "${PROGRAMS[@]}"; do
  PRELOAD='' timeout 600 bash -euo pipefail -c ". ci/preload/programs.sh; prog_$p" > "$W/$p.ref" 2> "$W/$p.ref.err" || {
    result "$p" 0 "(fails without gomalloc too: $(tail -n 1 "$W/$p.ref.err"))"
    continue
  }
  t0=$(date +%s.%N)
  if PRELOAD=$lib timeout 600 bash -euo pipefail -c ". ci/preload/programs.sh; prog_$p" > "$W/$p.out" 2> "$W/$p.err"; then
    t=$(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $t0}")
    if cmp -s "$W/$p.ref" "$W/$p.out"; then
      result "$p" 1 "(${t} s, output identical: $(wc -l < "$W/$p.out") lines)"
    else
      result "$p" 0 "(output differs)"
      diff "$W/$p.ref" "$W/$p.out" | head -n 20
    fi
  else
    rc=$?
    result "$p" 0 "(exit $rc$([ $rc = 124 ] && echo ', timed out'))"
    tail -n 20 "$W/$p.err"
  fi
done

# Part of CPython's own test suite, on gomalloc (tests that pass on glibc's malloc must pass).
pytests=(test_dict test_list test_set test_tuple test_json test_re test_string test_unicode
  test_bytes test_threading test_queue test_collections test_heapq test_bisect test_pickle
  test_gc test_weakref test_array test_struct test_functools)
if [ -f "/usr/lib/python$pyver/test/test_struct.py" ]; then
  if PRELOAD=$lib timeout 900 bash -c '. ci/preload/programs.sh; pre /usr/bin/python3 -m test -q "$@"' _ "${pytests[@]}" > "$W/pytest.out" 2>&1; then
    result "cpython-tests" 1 "(${#pytests[@]} modules: $(grep -E "Tests result" "$W/pytest.out" | tail -n 1))"
  else
    result "cpython-tests" 0 "(see below)"
    tail -n 30 "$W/pytest.out"
  fi
else
  result "cpython-tests" 0 "(libpython$pyver-testsuite missing)"
fi

echo "test result: $([ $fail = 0 ] && echo ok || echo FAILED). $pass passed; $fail failed"
[ $fail = 0 ]
