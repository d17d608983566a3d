# Real programs for the LD_PRELOAD tests (ci/preload.sh) and the comparison (ci/preload-compare.sh).
# Sourced. Uses: W (work directory holding the inputs), PRELOAD (a library, or empty for the
# program's own malloc). Each prog_NAME prints deterministic output on stdout.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROGRAMS=(python sqlite sort git cxx forkexec)
: "${SCALE:=1}"
: "${W:?W must name the work directory}"

pre() {
  if [ -n "${PRELOAD:-}" ]; then LD_PRELOAD="$PRELOAD" "$@"; else "$@"; fi
}

# Generated inputs and compiled test programs, made once per work directory.
setup_inputs() {
  mkdir -p "$W"
  [ -f "$W/.ready-$SCALE" ] && return 0
  /usr/bin/python3 "$HERE/gen.py" "$W" "$SCALE"
  g++ -O2 -pthread -o "$W/churn" "$HERE/churn.cpp"
  gcc -O2 -pthread -o "$W/forkexec" "$HERE/forkexec.c"
  touch "$W/.ready-$SCALE"
}

# python3: many objects on 4 threads (dicts, lists, tuples, strings, JSON, sort).
prog_python() { pre /usr/bin/python3 "$HERE/objects.py" "$(awk "BEGIN{print int(200000*$SCALE)}")"; }

# sqlite3: a large SQL script (inserts in a transaction, indexes, group-by, update, vacuum, join).
prog_sqlite() {
  rm -f "$W/db.sqlite"
  pre sqlite3 "$W/db.sqlite" < "$W/script.sql"
}

# sort: a large generated file, byte order (multi-threaded sort on a multi-core machine).
prog_sort() { LC_ALL=C pre sort "$W/lines.txt" | md5sum; }

# git: init, add and commit a generated tree, change part of it, log, diff, gc, fsck.
prog_git() {
  local r="$W/repo"
  rm -rf "$r"
  cp -r "$W/gitsrc" "$r"
  (
    cd "$r" || exit 1
    export GIT_AUTHOR_NAME=gomalloc GIT_AUTHOR_EMAIL=ci@gomalloc GIT_COMMITTER_NAME=gomalloc \
      GIT_COMMITTER_EMAIL=ci@gomalloc GIT_AUTHOR_DATE="2026-01-01T00:00:00Z" \
      GIT_COMMITTER_DATE="2026-01-01T00:00:00Z" HOME="$r" GIT_CONFIG_NOSYSTEM=1
    pre git init -q -b main .
    pre git add -A
    pre git commit -q -m one
    for f in dir1/*.txt dir2/*.txt; do echo "changed $f" >> "$f"; done
    pre git rm -q dir3/*.txt
    pre git commit -q -a -m two
    pre git log --stat --format='%H %s' | md5sum
    pre git diff --stat HEAD~1 | tail -n 1
    pre git gc -q
    pre git fsck --strict --no-progress
    pre git count-objects -v | grep -E '^(count|in-pack|packs):'
    pre git grep -c -e "ab" HEAD | md5sum
  )
}

# C++: std::map / std::string / std::unordered_map churn on 4 threads.
prog_cxx() { pre "$W/churn" "$(awk "BEGIN{print int(1000000*$SCALE)}")"; }

# Threads hammering malloc while the main thread forks children that allocate and exec.
prog_forkexec() { pre "$W/forkexec" "$(awk "BEGIN{print int(200*$SCALE)}")"; }
