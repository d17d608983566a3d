#!/usr/bin/env bash
# Times real programs under glibc's malloc, gomalloc, and Debian's jemalloc, mimalloc and
# tcmalloc, each through LD_PRELOAD, in one run (ci/preload/compare.py prints the tables):
#   bash ci/preload-compare.sh [--reps N] [--markdown] [--programs python,sqlite,...]
# SCALE=2 doubles every workload. Installs the peers through apt when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
missing=()
for f in libjemalloc.so.2:libjemalloc2 libmimalloc.so.2:libmimalloc2.0 \
  libtcmalloc_minimal.so.4:libtcmalloc-minimal4; do
  [ -e "/usr/lib/x86_64-linux-gnu/${f%%:*}" ] || missing+=("${f##*:}")
done
for c in sqlite3 git g++ gcc; do command -v $c >/dev/null 2>&1 || missing+=("$c"); done
[ -x /usr/bin/time ] || missing+=(time)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# shellcheck source=ci/preload/prepare.sh
. ci/preload/prepare.sh
/usr/bin/python3 ci/preload/compare.py --lib "$LIB" "$@"
