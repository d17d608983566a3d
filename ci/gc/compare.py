#!/usr/bin/env python3
"""Runs binary-trees and GCBench on gomalloc's collector (both root modes: malloc blocks
scanned, and not; each stop-the-world and with concurrent marking), on Boehm GC and on Go, in one run: wall time, GC cycles, max / median / p99
stop-the-world pause and peak RSS (medians over --reps, implementations in rotating order per
repetition), ratios to Boehm and Go, and the collector issue's targets. Every run's check output
must be identical across implementations (exits 1 otherwise). Run through ci/gc-compare.sh,
which builds the programs into --dir."""
import argparse, os, re, statistics, subprocess, sys

p = argparse.ArgumentParser()
p.add_argument("--dir", required=True, help="folder with the built programs")
p.add_argument("--reps", type=int, default=3)
p.add_argument("--bt-depth", type=int, default=18, help="binary-trees depth")
p.add_argument("--gcb-depth", type=int, default=18, help="GCBench depth")
p.add_argument("--live-mib", type=int, default=0, help="extra live heap held during the run")
p.add_argument("--threads", default="1", help="comma-separated thread counts")
p.add_argument("--programs", default="binarytrees,gcbench")
p.add_argument("--markdown", action="store_true")
p.add_argument("--expect-threaded-gc", action="store_true",
               help="fail unless every gomalloc run with threads > 1 completed a cycle while "
               "its workers ran (--quick sets it; its sizes give several such cycles)")
a = p.parse_args()

d = os.path.abspath(a.dir)
# (name, binary prefix, extra arguments)
impls = [("gomalloc", "gomalloc", []), ("gomalloc-noscan", "gomalloc", ["--no-scan-malloc"]),
         ("gomalloc-conc", "gomalloc", ["--concurrent"]),
         ("gomalloc-conc-noscan", "gomalloc", ["--concurrent", "--no-scan-malloc"]),
         ("boehm", "boehm", []), ("go", "go", [])]
OURS = [i[0] for i in impls if i[1] == "gomalloc"]
programs = a.programs.split(",")
threads = [int(t) for t in a.threads.split(",")]
depth = {"binarytrees": a.bt_depth, "gcbench": a.gcb_depth}
env = dict(os.environ, GOGC="100", GOMALLOC_GOGC="100")
FIELDS = ["wall_ms", "num_gc", "pause_max_us", "pause_median_us", "pause_p99_us",
          "pause_total_ms", "peak_rss_kib"]
EXTRA = ["gc_cpu_pct", "threaded_gc"]

def run(prog, impl, t):
    name, prefix, extra = impl
    cmd = [f"{d}/{prog}-{prefix}", "--depth", str(depth[prog]), "--threads", str(t),
           "--live-mib", str(a.live_mib)] + extra
    # gomalloc's gctrace (a line per cycle on stderr) says where its collection time goes.
    e = dict(env, GOMALLOC_DEBUG="gctrace=1") if prefix == "gomalloc" else env
    r = subprocess.run(cmd, env=e, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"FAIL: {' '.join(cmd)} exited {r.returncode}: {r.stderr[-800:]}")
    lines = r.stdout.splitlines()
    res = [l for l in lines if l.startswith("RESULT ")]
    if len(res) != 1:
        sys.exit(f"FAIL: {' '.join(cmd)} printed {len(res)} RESULT lines")
    kv = dict(f.split("=", 1) for f in res[0].split()[1:])
    out = {k: float(kv[k]) for k in FIELDS}
    # gomalloc only: GcStats::gc_cpu_fraction (%) and the cycles that ran while the workers did.
    out.update({k: float(kv.get(k, 0)) for k in EXTRA})
    # gctrace: `gc N @Ts P%: S+C+M ms clock, ...`. Stop-the-world cycles: S the time to stop
    # the threads, C 0, M the stopped-world mark. Concurrent cycles (--concurrent): S the first
    # pause (stop, roots), C the concurrent mark, M mark termination. The pause is S+M. The
    # sweep runs after the world resumes and is not in the line, so it is not reported on its
    # own (gc_cpu_pct includes it).
    cyc = re.findall(r"^gc \d+ @[\d.]+s \d+%: ([\d.]+)\+([\d.]+)\+([\d.]+) ms clock", r.stderr,
                     re.M)
    # A cycle the pacer started may end (and print its line) after the program read num_gc for
    # its RESULT line, before it exits: one line more is that, not a cycle left uncounted.
    if prefix == "gomalloc" and not out["num_gc"] <= len(cyc) <= out["num_gc"] + 1:
        sys.exit(f"FAIL: {' '.join(cmd)}: {len(cyc)} gctrace lines for {out['num_gc']:.0f} cycles")
    if a.expect_threaded_gc and prefix == "gomalloc" and t > 1 and out["threaded_gc"] < 1:
        sys.exit(f"FAIL: {' '.join(cmd)}: no cycle completed while the {t} worker threads ran "
                 f"({out['num_gc']:.0f} cycles in all)")
    out["stop_ms"] = sum(float(st) for st, _, _ in cyc)
    out["conc_ms"] = sum(float(c) for _, c, _ in cyc)
    out["mark_ms"] = sum(float(m) for _, _, m in cyc)
    return [l for l in lines if not l.startswith("RESULT ")], out

cases = [(pr, t) for pr in programs for t in threads]
res = {(c, i[0]): [] for c in cases for i in impls}
reference = {}
for rep in range(a.reps):
    for ci, case in enumerate(cases):
        k = (rep + ci) % len(impls)
        for impl in impls[k:] + impls[:k]:
            check, r = run(case[0], impl, case[1])
            ref = reference.setdefault(case, (impl[0], check))
            if check != ref[1]:
                diff = [f"  {x!r} vs {y!r}" for x, y in zip(ref[1], check) if x != y][:5]
                sys.exit(f"FAIL: {case[0]} threads={case[1]}: {impl[0]}'s check output differs "
                         f"from {ref[0]}'s ({len(check)} vs {len(ref[1])} lines):\n" + "\n".join(diff))
            res[(case, impl[0])].append(r)
    print(f"# repetition {rep + 1}/{a.reps} done", file=sys.stderr)
print(f"check output identical across {len(impls)} implementations in every run "
      f"({a.reps} repetitions x {len(cases)} cases)")

FIELDS += EXTRA + ["stop_ms", "conc_ms", "mark_ms"]
med = {key: {f: statistics.median(r[f] for r in v) for f in FIELDS} for key, v in res.items()}
names = [i[0] for i in impls]

sep = " | " if a.markdown else "  "
def row(cells, w=15):
    print(("| " + sep.join(cells) + " |") if a.markdown else
          sep.join(f"{c:<{w}}" if j == 0 else f"{c:>12}" for j, c in enumerate(cells)))
def rule(n):
    if a.markdown:
        print("|---|" + "---:|" * (n - 1))

head = ["impl", "wall ms", "/boehm", "/go", "cycles", "max us", "median us", "p99 us",
        "total ms", "peak MiB"]
if a.live_mib:
    head.append("peak/live")
for case in cases:
    pr, t = case
    print(f"\n{pr} depth {depth[pr]}, threads {t}, live {a.live_mib} MiB, GOGC=100 "
          f"(median of {a.reps}; /boehm and /go: wall time ratio, < 1 is faster)")
    row(head); rule(len(head))
    for n in names:
        m = med[(case, n)]
        cells = [n, f"{m['wall_ms']:.0f}",
                 f"{m['wall_ms'] / med[(case, 'boehm')]['wall_ms']:.2f}",
                 f"{m['wall_ms'] / med[(case, 'go')]['wall_ms']:.2f}",
                 f"{m['num_gc']:.0f}", f"{m['pause_max_us']:.0f}", f"{m['pause_median_us']:.0f}",
                 f"{m['pause_p99_us']:.0f}", f"{m['pause_total_ms']:.0f}",
                 f"{m['peak_rss_kib'] / 1024:.1f}"]
        if a.live_mib:
            cells.append(f"{m['peak_rss_kib'] / 1024 / a.live_mib:.2f}")
        row(cells)

# Where gomalloc's collection time goes, from gctrace (S+C+M, see `run`).
print(f"\ngomalloc's cycles (median of {a.reps}); from gctrace, summed over cycles (ms): S = "
      f"time to stop the threads (stop-the-world) or the first pause (concurrent), C = "
      f"concurrent mark, M = stopped-world mark or mark termination; pause % = (S + M) / wall;\n"
      f"GC CPU % = GcStats::gc_cpu_fraction (pauses x CPUs, the concurrent marks' background "
      f"markers and assists, and the sweep, which runs after the world resumes and is not in "
      f"gctrace, over elapsed x CPUs); threaded = cycles completed "
      f"while the --threads workers ran")
row(["case", "wall ms", "cycles", "threaded", "S ms", "C ms", "M ms", "pause %", "GC CPU %"], 36)
rule(9)
for case in cases:
    for n in OURS:
        m = med[(case, n)]
        row([f"{case[0]} t={case[1]} {n}", f"{m['wall_ms']:.0f}", f"{m['num_gc']:.0f}",
             f"{m['threaded_gc']:.0f}", f"{m['stop_ms']:.1f}", f"{m['conc_ms']:.0f}",
             f"{m['mark_ms']:.0f}",
             f"{100 * (m['stop_ms'] + m['mark_ms']) / m['wall_ms']:.0f}",
             f"{m['gc_cpu_pct']:.0f}"], 36)

# The targets of the collector issue, for gomalloc's two root modes.
print()
ok = lambda b: "PASS" if b else "MISS"
for case in cases:
    pr, t = case
    b, g = med[(case, "boehm")]["wall_ms"], med[(case, "go")]["wall_ms"]
    for n in OURS:
        m = med[(case, n)]
        thr_g = g / m["wall_ms"]
        line = (f"{pr} t={t} {n}: throughput vs boehm {b / m['wall_ms']:.2f}x (> 1: "
                f"{ok(m['wall_ms'] < b)}), vs go {thr_g:.2f}x (>= 0.8: {ok(thr_g >= 0.8)}); "
                f"max STW {m['pause_max_us']:.0f} us (<= 500: {ok(m['pause_max_us'] <= 500)}), "
                f"median {m['pause_median_us']:.0f} us (<= 100: {ok(m['pause_median_us'] <= 100)})")
        if a.live_mib >= 64:  # below that, the program's own data and the runtime dominate RSS
            bound = 2 * a.live_mib * 1.1
            line += (f"; peak RSS {m['peak_rss_kib'] / 1024:.0f} MiB vs (1 + 100/100) x "
                     f"{a.live_mib} MiB x 1.1 = {bound:.0f} MiB: {ok(m['peak_rss_kib'] / 1024 <= bound)}")
        print(("- " if a.markdown else "") + line)
