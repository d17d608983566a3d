#!/usr/bin/env python3
"""Times the preload workloads (programs.sh) under glibc's malloc, gomalloc, and Debian's
jemalloc, mimalloc and tcmalloc, each through LD_PRELOAD, in one run: wall time and peak RSS
(medians over --reps, allocators in rotating order per repetition), ratios gomalloc/peer and
their geometric means, and the targets of the C ABI issue. Run through ci/preload-compare.sh."""
import argparse, math, os, statistics, subprocess, sys, tempfile

p = argparse.ArgumentParser()
p.add_argument("--lib", required=True, help="libgomalloc.so")
p.add_argument("--reps", type=int, default=3)
p.add_argument("--programs", default="python,sqlite,sort,git,cxx,forkexec")
p.add_argument("--markdown", action="store_true")
a = p.parse_args()

libdir = "/usr/lib/x86_64-linux-gnu"
allocs = [("glibc", ""), ("gomalloc", a.lib)]
for name, f in [("jemalloc", "libjemalloc.so.2"), ("mimalloc", "libmimalloc.so.2"),
                ("tcmalloc", "libtcmalloc_minimal.so.4")]:
    path = os.path.join(libdir, f)
    if os.path.exists(path):
        allocs.append((name, path))
    else:
        print(f"# {name}: {path} missing, left out", file=sys.stderr)
programs = a.programs.split(",")
here = os.path.dirname(os.path.abspath(__file__))

def run(prog, lib):
    """One run: (wall seconds, peak RSS KiB of the largest process)."""
    with tempfile.NamedTemporaryFile("r") as t:
        env = dict(os.environ, PRELOAD=lib)
        cmd = ["/usr/bin/time", "-f", "%e %M", "-o", t.name, "bash", "-euo", "pipefail", "-c",
               f". {here}/programs.sh; prog_{prog}"]
        r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if r.returncode != 0:
            sys.exit(f"{prog} under {lib or 'glibc'} failed: {r.stderr.decode()[-500:]}")
        wall, rss = t.read().split()[-2:]
        return float(wall), int(rss)

res = {(pr, n): [] for pr in programs for n, _ in allocs}
for rep in range(a.reps):
    for pr in programs:
        k = (rep + programs.index(pr)) % len(allocs)
        for n, lib in allocs[k:] + allocs[:k]:
            res[(pr, n)].append(run(pr, lib))
    print(f"# repetition {rep + 1}/{a.reps} done", file=sys.stderr)

med = {key: (statistics.median(w for w, _ in v), statistics.median(r for _, r in v)) for key, v in res.items()}
names = [n for n, _ in allocs]
peers = [n for n in names if n != "gomalloc"]
geo = lambda xs: math.exp(sum(math.log(x) for x in xs) / len(xs))

sep = " | " if a.markdown else "  "
def row(cells):
    print(("| " + sep.join(cells) + " |") if a.markdown else sep.join(f"{c:>12}" for c in cells))
def rule(n):
    if a.markdown:
        print("|" + "---|" + "---:|" * (n - 1))

def table(title, i, cell):
    """Prints one table (measure `i` of each median, shown with `cell`); returns the geomean of
    gomalloc / peer for each peer."""
    print(f"\n{title} (median of {a.reps})")
    row(["program"] + names + [f"go/{p}" for p in peers]); rule(1 + len(names) + len(peers))
    for pr in programs:
        row([pr] + [cell(med[(pr, n)][i]) for n in names] +
            [f"{med[(pr, 'gomalloc')][i] / med[(pr, p)][i]:.2f}" for p in peers])
    g = {p: geo([med[(pr, "gomalloc")][i] / med[(pr, p)][i] for pr in programs]) for p in peers}
    row(["geomean"] + [""] * len(names) + [f"{g[p]:.2f}" for p in peers])
    return g

tg = table("Wall time, seconds", 0, lambda v: f"{v:.2f}")
table("Peak RSS, MiB", 1, lambda v: f"{v / 1024:.1f}")

# Targets of the C ABI issue: at least as fast as the best peer on the geomean of times, and
# peak RSS no more than 1.1x the smallest (geomean of per-program ratios to the smallest).
best = min(peers, key=lambda p: geo([med[(pr, p)][0] for pr in programs]))
smallest = geo([med[(pr, "gomalloc")][1] / min(med[(pr, n)][1] for n in peers) for pr in programs])
print()
print(f"target time: gomalloc / best peer ({best}) geomean {tg[best]:.2f} <= 1.00: "
      + ("PASS" if tg[best] <= 1.0 else "MISS"))
print(f"target RSS: gomalloc / smallest peer per program, geomean {smallest:.2f} <= 1.10: "
      + ("PASS" if smallest <= 1.1 else "MISS"))
