//! The comparison runner: the same ten workloads on gomalloc and its peers, side by side.
//!
//! ```text
//! cargo build --release -p gomalloc-bench [--features snmalloc]
//! target/release/compare                      # all workloads, all allocators built, 5 reps
//! target/release/compare --reps 3 --threads 4 --workloads larson,mixed --csv out.csv --svg out.svg
//! target/release/compare scaling --threads-list 1,2,4,8,16 --reps 3   # multi-thread workloads
//! ```
//!
//! Every (workload, allocator) run is a fresh child process (`wl-<allocator>` next to this
//! binary), so each allocator starts from an empty heap and peak RSS is per run. Repetitions
//! interleave the allocators in rotating order, so slow drifts of a shared machine fall on all
//! of them alike. Reported per cell: the median over repetitions of wall time (measured inside
//! the child around the workload), CPU time (user + system, from `wait4`), peak RSS (`ru_maxrss`)
//! and RSS growth after everything was freed (at once, and after up to `--settle-ms` of idling).
//! Ratios are gomalloc / peer (below 1: gomalloc is faster or smaller); the summary gives their
//! geometric means over the workloads and checks the project's targets.
//!
//! This driver itself runs on the system allocator; it allocates nothing while a child runs.

use gomalloc_bench::workloads;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const ALL_ALLOCATORS: [&str; 5] = ["gomalloc", "system", "mimalloc", "jemalloc", "snmalloc"];

struct Args {
    scaling: bool,
    threads: usize,
    threads_list: Vec<usize>,
    reps: usize,
    scale: f64,
    settle_ms: u64,
    workloads: Vec<String>,
    allocators: Vec<String>,
    csv: Option<PathBuf>,
    svg: Option<PathBuf>,
    markdown: bool,
}

#[derive(Clone, Debug)]
struct Sample {
    alloc: String,
    workload: String,
    threads: usize,
    rep: usize,
    wall_us: f64,
    cpu_us: f64,
    peak_kib: f64,
    start_kib: f64,
    end_kib: f64,
    settled_kib: f64,
    check: String,
}

fn usage() -> ! {
    eprintln!(
        "usage: compare [scaling] [--threads N] [--threads-list 1,2,4] [--reps R] [--scale F]\n\
         \x20              [--settle-ms MS] [--workloads a,b] [--allocators a,b] [--csv FILE]\n\
         \x20              [--svg FILE] [--markdown]\n\
         workloads: {}\nallocators: {} (those whose wl-<name> binary was built)",
        workloads::NAMES.join(", "),
        ALL_ALLOCATORS.join(", ")
    );
    std::process::exit(2);
}

fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn parse() -> Args {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut a = Args {
        scaling: false,
        threads: cores,
        threads_list: vec![1, 2, 4, 8, 16],
        reps: 5,
        scale: 1.0,
        settle_ms: 1000,
        workloads: Vec::new(),
        allocators: Vec::new(),
        csv: None,
        svg: None,
        markdown: false,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].as_str();
        match flag {
            "scaling" => {
                a.scaling = true;
                i += 1;
                continue;
            }
            "--markdown" => {
                a.markdown = true;
                i += 1;
                continue;
            }
            "-h" | "--help" => usage(),
            _ => {}
        }
        let v = args.get(i + 1).cloned().unwrap_or_else(|| usage());
        match flag {
            "--threads" => a.threads = v.parse().unwrap_or_else(|_| usage()),
            "--threads-list" => {
                a.threads_list = list(&v)
                    .iter()
                    .map(|s| s.parse().unwrap_or_else(|_| usage()))
                    .collect()
            }
            "--reps" => a.reps = v.parse().unwrap_or_else(|_| usage()),
            "--scale" => a.scale = v.parse().unwrap_or_else(|_| usage()),
            "--settle-ms" => a.settle_ms = v.parse().unwrap_or_else(|_| usage()),
            "--workloads" => a.workloads = list(&v),
            "--allocators" => a.allocators = list(&v),
            "--csv" => a.csv = Some(v.into()),
            "--svg" => a.svg = Some(v.into()),
            _ => usage(),
        }
        i += 2;
    }
    a.reps = a.reps.max(1);
    a
}

fn bin_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Run one child and collect its sample; exit the driver if the child failed. The child is
/// reaped with `wait4` (for its rusage), not `Child::wait`.
#[allow(clippy::zombie_processes)]
fn run_one(
    dir: &Path,
    alloc: &str,
    workload: &str,
    threads: usize,
    rep: usize,
    a: &Args,
) -> Sample {
    let exe = dir.join(format!("wl-{alloc}"));
    let mut child = Command::new(&exe)
        .arg(workload)
        .args(["--threads", &threads.to_string()])
        .args(["--scale", &a.scale.to_string()])
        .args(["--settle-ms", &a.settle_ms.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            eprintln!("compare: cannot start {}: {e}", exe.display());
            std::process::exit(1)
        });
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("piped stdout")
        .read_to_string(&mut out)
        .ok();
    let mut status = 0i32;
    // SAFETY: zeroed rusage is a valid out-parameter; the pid is our own unreaped child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    if r < 0 || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        eprintln!(
            "compare: {alloc} {workload} (threads {threads}) failed: wait status {status:#x}; output:\n{out}"
        );
        std::process::exit(1);
    }
    let line = out
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .unwrap_or_else(|| {
            eprintln!("compare: {alloc} {workload}: no RESULT line in:\n{out}");
            std::process::exit(1)
        });
    let field = |k: &str| -> String {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
            .unwrap_or("0")
            .to_string()
    };
    let num = |k: &str| field(k).parse::<f64>().unwrap_or(0.0);
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    Sample {
        alloc: alloc.to_string(),
        workload: workload.to_string(),
        threads,
        rep,
        wall_us: num("wall_us"),
        cpu_us: tv(ru.ru_utime) + tv(ru.ru_stime),
        peak_kib: ru.ru_maxrss as f64,
        start_kib: num("rss_start_kib"),
        end_kib: num("rss_end_kib"),
        settled_kib: num("rss_settled_kib"),
        check: field("check"),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn geomean(v: &[f64]) -> f64 {
    let v: Vec<f64> = v
        .iter()
        .copied()
        .filter(|x| x.is_finite() && *x > 0.0)
        .collect();
    if v.is_empty() {
        return f64::NAN;
    }
    (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp()
}

/// Medians of one (workload, allocator, threads) cell.
#[derive(Clone, Copy, Default)]
struct Cell {
    wall_ms: f64,
    cpu_ms: f64,
    peak_mib: f64,
    end_delta_mib: f64,
    settled_delta_mib: f64,
}

fn cells(samples: &[Sample]) -> BTreeMap<(String, String, usize), Cell> {
    let mut groups: BTreeMap<(String, String, usize), Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        groups
            .entry((s.workload.clone(), s.alloc.clone(), s.threads))
            .or_default()
            .push(s);
    }
    groups
        .into_iter()
        .map(|(k, v)| {
            let m = |f: &dyn Fn(&Sample) -> f64| median(v.iter().map(|s| f(s)).collect());
            let c = Cell {
                wall_ms: m(&|s| s.wall_us / 1e3),
                cpu_ms: m(&|s| s.cpu_us / 1e3),
                peak_mib: m(&|s| s.peak_kib / 1024.0),
                end_delta_mib: m(&|s| (s.end_kib - s.start_kib) / 1024.0),
                settled_delta_mib: m(&|s| (s.settled_kib - s.start_kib) / 1024.0),
            };
            (k, c)
        })
        .collect()
}

fn machine() -> String {
    let mut model = String::new();
    if let Ok(s) = std::fs::read_to_string("/proc/cpuinfo") {
        if let Some(l) = s.lines().find(|l| l.starts_with("model name")) {
            model = l.split(':').nth(1).unwrap_or("").trim().to_string();
        }
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {model}")
}

fn main() {
    let mut a = parse();
    let dir = bin_dir();
    let built: Vec<String> = ALL_ALLOCATORS
        .iter()
        .filter(|n| dir.join(format!("wl-{n}")).exists())
        .map(|s| s.to_string())
        .collect();
    if a.allocators.is_empty() {
        a.allocators = built.clone();
    }
    for al in &a.allocators {
        if !built.contains(al) {
            eprintln!("compare: no wl-{al} binary next to this one (build it first)");
            std::process::exit(2);
        }
    }
    if built.is_empty() {
        eprintln!(
            "compare: no wl-<allocator> binaries next to {} (build them: cargo build --release -p gomalloc-bench)",
            dir.display()
        );
        std::process::exit(2);
    }
    if !a.allocators.iter().any(|x| x == "gomalloc") {
        eprintln!("compare: gomalloc must be among the allocators (ratios are gomalloc/peer)");
        std::process::exit(2);
    }
    if a.workloads.is_empty() {
        a.workloads = if a.scaling {
            workloads::MULTI.iter().map(|s| s.to_string()).collect()
        } else {
            workloads::NAMES.iter().map(|s| s.to_string()).collect()
        };
    }
    for w in &a.workloads {
        if workloads::find(w).is_none() {
            eprintln!("compare: unknown workload {w}");
            usage();
        }
    }
    let thread_counts = if a.scaling {
        a.threads_list.clone()
    } else {
        vec![a.threads]
    };
    eprintln!(
        "machine: {}; allocators: {}; threads: {:?}; reps: {}; scale: {}",
        machine(),
        a.allocators.join(", "),
        thread_counts,
        a.reps,
        a.scale
    );

    let mut samples = Vec::new();
    let n_alloc = a.allocators.len();
    for rep in 0..a.reps {
        for &t in &thread_counts {
            for (wi, w) in a.workloads.iter().enumerate() {
                for k in 0..n_alloc {
                    let al = &a.allocators[(k + rep + wi) % n_alloc];
                    let wl_threads = if w == "small_churn" { 1 } else { t };
                    let s = run_one(&dir, al, w, wl_threads, rep, &a);
                    eprintln!(
                        "rep {} {:>13} t={:<2} {:>9}: {:>9.1} ms  cpu {:>9.1} ms  peak {:>7.1} MiB",
                        rep + 1,
                        w,
                        wl_threads,
                        al,
                        s.wall_us / 1e3,
                        s.cpu_us / 1e3,
                        s.peak_kib / 1024.0
                    );
                    samples.push(s);
                }
            }
        }
    }

    // Every allocator must have computed the same checksums.
    let mut bad = false;
    let mut checks: BTreeMap<(String, usize), String> = BTreeMap::new();
    for s in &samples {
        let k = (s.workload.clone(), s.threads);
        match checks.get(&k) {
            Some(c) if *c != s.check => {
                eprintln!(
                    "compare: checksum mismatch in {} ({}): {} vs {}",
                    s.workload, s.alloc, s.check, c
                );
                bad = true;
            }
            Some(_) => {}
            None => {
                checks.insert(k, s.check.clone());
            }
        }
    }

    if let Some(p) = &a.csv {
        let mut out = String::from(
            "allocator,workload,threads,rep,wall_us,cpu_us,peak_rss_kib,rss_start_kib,rss_end_kib,rss_settled_kib,check\n",
        );
        for s in &samples {
            let _ = writeln!(
                out,
                "{},{},{},{},{:.0},{:.0},{:.0},{:.0},{:.0},{:.0},{}",
                s.alloc,
                s.workload,
                s.threads,
                s.rep,
                s.wall_us,
                s.cpu_us,
                s.peak_kib,
                s.start_kib,
                s.end_kib,
                s.settled_kib,
                s.check
            );
        }
        std::fs::write(p, out).unwrap_or_else(|e| eprintln!("compare: {}: {e}", p.display()));
    }

    let c = cells(&samples);
    let report = if a.scaling {
        scaling_report(&a, &c, &thread_counts)
    } else {
        compare_report(&a, &c)
    };
    println!("{report}");
    if let Some(p) = &a.svg {
        let svg = if a.scaling {
            scaling_svg(&a, &c, &thread_counts)
        } else {
            compare_svg(&a, &c)
        };
        std::fs::write(p, svg).unwrap_or_else(|e| eprintln!("compare: {}: {e}", p.display()));
    }
    if bad {
        std::process::exit(1);
    }
}

/// Table helpers: plain text or markdown with the same cells.
struct Table {
    md: bool,
    out: String,
}

impl Table {
    fn row(&mut self, cols: &[String]) {
        if self.md {
            let _ = writeln!(self.out, "| {} |", cols.join(" | "));
        } else {
            let mut line = String::new();
            for (i, c) in cols.iter().enumerate() {
                if i == 0 {
                    let _ = write!(line, "{c:<14}");
                } else {
                    let _ = write!(line, " {c:>10}");
                }
            }
            let _ = writeln!(self.out, "{}", line.trim_end());
        }
    }
    fn header(&mut self, cols: &[&str]) {
        self.row(&cols.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        if self.md {
            let sep: Vec<String> = cols
                .iter()
                .enumerate()
                .map(|(i, _)| if i == 0 { "---".into() } else { "---:".into() })
                .collect();
            self.row(&sep);
        }
    }
}

fn compare_report(a: &Args, c: &BTreeMap<(String, String, usize), Cell>) -> String {
    let mut t = Table {
        md: a.markdown,
        out: String::new(),
    };
    let get = |w: &str, al: &str| -> Cell {
        let th = if w == "small_churn" { 1 } else { a.threads };
        c.get(&(w.to_string(), al.to_string(), th))
            .copied()
            .unwrap_or_default()
    };
    let peers: Vec<&String> = a.allocators.iter().filter(|x| *x != "gomalloc").collect();

    let _ = writeln!(
        t.out,
        "\nMedian of {} runs; {} threads (small_churn: 1); machine: {}\n",
        a.reps,
        a.threads,
        machine()
    );
    for (title, f) in [
        ("wall time, ms", (|c: &Cell| c.wall_ms) as fn(&Cell) -> f64),
        ("CPU time (user+sys), ms", |c: &Cell| c.cpu_ms),
        ("peak RSS, MiB", |c: &Cell| c.peak_mib),
    ] {
        let _ = writeln!(t.out, "{title}");
        let mut head: Vec<&str> = vec!["workload"];
        head.extend(a.allocators.iter().map(String::as_str));
        let ratio_names: Vec<String> = peers.iter().map(|p| format!("go/{}", short(p))).collect();
        head.extend(ratio_names.iter().map(String::as_str));
        t.header(&head);
        for w in &a.workloads {
            let mut row = vec![w.clone()];
            for al in &a.allocators {
                row.push(format!("{:.1}", f(&get(w, al))));
            }
            let g = f(&get(w, "gomalloc"));
            for p in &peers {
                row.push(format!("{:.2}", g / f(&get(w, p))));
            }
            t.row(&row);
        }
        let mut row = vec!["geomean".to_string()];
        row.extend(a.allocators.iter().map(|_| String::new()));
        for p in &peers {
            let r: Vec<f64> = a
                .workloads
                .iter()
                .map(|w| f(&get(w, "gomalloc")) / f(&get(w, p)))
                .collect();
            row.push(format!("{:.2}", geomean(&r)));
        }
        t.row(&row);
        let _ = writeln!(t.out);
    }

    let _ = writeln!(
        t.out,
        "RSS growth after everything was freed, MiB: at once / after idling up to {} ms",
        a.settle_ms
    );
    let mut head: Vec<&str> = vec!["workload"];
    head.extend(a.allocators.iter().map(String::as_str));
    t.header(&head);
    for w in &a.workloads {
        let mut row = vec![w.clone()];
        for al in &a.allocators {
            let x = get(w, al);
            row.push(format!(
                "{:.1} / {:.1}",
                x.end_delta_mib, x.settled_delta_mib
            ));
        }
        t.row(&row);
    }

    // Targets (issue 3), where the peer was measured.
    let ratio = |p: &str, f: fn(&Cell) -> f64| -> Vec<f64> {
        a.workloads
            .iter()
            .map(|w| f(&get(w, "gomalloc")) / f(&get(w, p)))
            .collect()
    };
    let _ = writeln!(t.out, "\ntargets:");
    let mut line = |name: String, val: f64, ok: bool| {
        let _ = writeln!(
            t.out,
            "  {:<52} {:>6.2}  {}",
            name,
            val,
            if ok { "met" } else { "MISSED" }
        );
    };
    let has = |p: &str| a.allocators.iter().any(|x| x == p);
    for (p, bound) in [("mimalloc", 0.9), ("jemalloc", 0.8), ("system", 0.5)] {
        if has(p) {
            let g = geomean(&ratio(p, |c| c.wall_ms));
            line(format!("geomean wall go/{p} <= {bound}"), g, g <= bound);
        }
    }
    if has("mimalloc") {
        let r = ratio("mimalloc", |c| c.wall_ms);
        let (wi, worst) =
            r.iter().enumerate().fold(
                (0, 0.0f64),
                |acc, (i, &x)| if x > acc.1 { (i, x) } else { acc },
            );
        line(
            format!("worst workload go/mimalloc <= 1.25 ({})", a.workloads[wi]),
            worst,
            worst <= 1.25,
        );
        let g = geomean(&ratio("mimalloc", |c| c.peak_mib));
        line("geomean peak RSS go/mimalloc <= 1.0".into(), g, g <= 1.0);
    }
    let worst = a
        .workloads
        .iter()
        .map(|w| get(w, "gomalloc").settled_delta_mib)
        .fold(f64::MIN, f64::max);
    line(
        format!(
            "gomalloc RSS after free, worst growth MiB <= 2 (idle <= {} ms)",
            a.settle_ms
        ),
        worst,
        worst <= 2.0,
    );
    t.out
}

fn short(p: &str) -> &str {
    match p {
        "mimalloc" => "mi",
        "jemalloc" => "je",
        "system" => "sys",
        "snmalloc" => "sn",
        x => x,
    }
}

fn scaling_report(a: &Args, c: &BTreeMap<(String, String, usize), Cell>, ts: &[usize]) -> String {
    let mut t = Table {
        md: a.markdown,
        out: String::new(),
    };
    let _ = writeln!(
        t.out,
        "\nThread scaling (weak: every thread does the same work; flat is perfect). Median wall ms of {} runs; machine: {}\n",
        a.reps,
        machine()
    );
    let tnames: Vec<String> = ts.iter().map(|n| format!("{n} thr")).collect();
    let mut head: Vec<&str> = vec!["workload", "allocator"];
    head.extend(tnames.iter().map(String::as_str));
    head.push("go/peer @max");
    t.header(&head);
    let maxt = *ts.iter().max().unwrap_or(&1);
    for w in &a.workloads {
        for al in &a.allocators {
            let mut row = vec![w.clone(), al.clone()];
            for &n in ts {
                let x = c
                    .get(&(w.clone(), al.clone(), n))
                    .map_or(f64::NAN, |c| c.wall_ms);
                row.push(format!("{x:.1}"));
            }
            let g = c
                .get(&(w.clone(), "gomalloc".into(), maxt))
                .map_or(f64::NAN, |c| c.wall_ms);
            let p = c
                .get(&(w.clone(), al.clone(), maxt))
                .map_or(f64::NAN, |c| c.wall_ms);
            row.push(if al == "gomalloc" {
                String::new()
            } else {
                format!("{:.2}", g / p)
            });
            t.row(&row);
        }
    }
    t.out
}

const COLORS: [&str; 5] = ["#1f77b4", "#7f7f7f", "#2ca02c", "#d62728", "#9467bd"];

/// The chart colour of an allocator.
fn color(al: &str) -> &'static str {
    COLORS[ALL_ALLOCATORS.iter().position(|n| *n == al).unwrap_or(0)]
}

/// One colour key per allocator along a line at `y`, then the end of the SVG.
fn legend(s: &mut String, allocators: &[String], left: f64, y: f64) {
    for (ai, al) in allocators.iter().enumerate() {
        let x = left + ai as f64 * 110.0;
        let _ = writeln!(
            s,
            r##"<rect x="{x}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{y}">{al}</text>"##,
            y - 9.0,
            color(al),
            x + 14.0
        );
    }
    s.push_str("</svg>\n");
}

/// Grouped bars: per workload, each allocator's median wall time and peak RSS relative to
/// gomalloc's (gomalloc = 1).
fn compare_svg(a: &Args, c: &BTreeMap<(String, String, usize), Cell>) -> String {
    let get = |w: &str, al: &str| -> Cell {
        let th = if w == "small_churn" { 1 } else { a.threads };
        c.get(&(w.to_string(), al.to_string(), th))
            .copied()
            .unwrap_or_default()
    };
    type Metric = fn(&Cell) -> f64;
    let panels: [(&str, Metric); 2] = [
        (
            "wall time relative to gomalloc (higher = peer slower)",
            |c| c.wall_ms,
        ),
        (
            "peak RSS relative to gomalloc (higher = peer bigger)",
            |c| c.peak_mib,
        ),
    ];
    let (w_px, panel_h, left, top) = (980.0, 260.0, 50.0, 40.0);
    let nw = a.workloads.len() as f64;
    let na = a.allocators.len() as f64;
    let group = (w_px - left - 10.0) / nw;
    let bar = group * 0.8 / na;
    let ymax = 3.0f64;
    let mut s = String::new();
    let height = top + 2.0 * (panel_h + 70.0) + 30.0;
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w_px}" height="{height}" font-family="sans-serif" font-size="11">"##
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="white"/>"##);
    let _ = writeln!(
        s,
        r##"<text x="{left}" y="18" font-size="13">gomalloc comparison runner: {} threads, median of {} runs ({})</text>"##,
        a.threads,
        a.reps,
        machine()
    );
    for (pi, (title, f)) in panels.iter().enumerate() {
        let y0 = top + pi as f64 * (panel_h + 70.0);
        let base = y0 + panel_h;
        let _ = writeln!(s, r##"<text x="{left}" y="{}">{title}</text>"##, y0 - 4.0);
        for k in 0..=6 {
            let v = k as f64 * 0.5;
            let y = base - v / ymax * panel_h;
            let stroke = if k == 2 { "#000" } else { "#ddd" };
            let _ = writeln!(
                s,
                r##"<line x1="{left}" x2="{}" y1="{y}" y2="{y}" stroke="{stroke}"/><text x="{}" y="{}" text-anchor="end">{v:.1}</text>"##,
                w_px - 10.0,
                left - 4.0,
                y + 4.0
            );
        }
        for (wi, w) in a.workloads.iter().enumerate() {
            let g = f(&get(w, "gomalloc"));
            for (ai, al) in a.allocators.iter().enumerate() {
                let r = f(&get(w, al)) / g;
                let h = (r.min(ymax) / ymax * panel_h).max(0.5);
                let x = left + wi as f64 * group + group * 0.1 + ai as f64 * bar;
                let _ = writeln!(
                    s,
                    r##"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{}"><title>{w} {al}: {r:.2}</title></rect>"##,
                    base - h,
                    bar * 0.95,
                    color(al)
                );
                if r > ymax {
                    let _ = writeln!(
                        s,
                        r##"<text x="{:.1}" y="{:.1}" font-size="9" text-anchor="middle">{r:.1}</text>"##,
                        x + bar / 2.0,
                        base - h - 2.0
                    );
                }
            }
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">{w}</text>"##,
                left + wi as f64 * group + group / 2.0,
                base + 14.0
            );
        }
    }
    legend(&mut s, &a.allocators, left, height - 14.0);
    s
}

/// One small line chart per workload: wall ms against threads, one line per allocator.
fn scaling_svg(a: &Args, c: &BTreeMap<(String, String, usize), Cell>, ts: &[usize]) -> String {
    let (pw, ph, pad) = (300.0, 200.0, 40.0);
    let cols = 3usize;
    let rows = a.workloads.len().div_ceil(cols);
    let width = cols as f64 * (pw + pad) + pad;
    let height = rows as f64 * (ph + pad * 1.5) + 60.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="white"/>"##
    );
    let _ = writeln!(
        s,
        r##"<text x="{pad}" y="18" font-size="13">thread scaling (weak; wall ms, lower is better; flat is perfect): {}</text>"##,
        machine()
    );
    for (wi, w) in a.workloads.iter().enumerate() {
        let x0 = pad + (wi % cols) as f64 * (pw + pad);
        let y0 = 40.0 + (wi / cols) as f64 * (ph + pad * 1.5);
        let maxv = a
            .allocators
            .iter()
            .flat_map(|al| ts.iter().map(move |&n| (al, n)))
            .filter_map(|(al, n)| c.get(&(w.clone(), al.clone(), n)).map(|c| c.wall_ms))
            .fold(0.0f64, f64::max)
            .max(1e-9);
        let _ = writeln!(
            s,
            r##"<text x="{x0}" y="{}">{w} (max {maxv:.0} ms)</text><rect x="{x0}" y="{}" width="{pw}" height="{ph}" fill="none" stroke="#ccc"/>"##,
            y0 + 10.0,
            y0 + 16.0
        );
        let px = |i: usize| x0 + (i as f64 + 0.5) / ts.len() as f64 * pw;
        for (i, n) in ts.iter().enumerate() {
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">{n}</text>"##,
                px(i),
                y0 + 16.0 + ph + 12.0
            );
        }
        for al in &a.allocators {
            let pts: Vec<String> = ts
                .iter()
                .enumerate()
                .filter_map(|(i, &n)| {
                    c.get(&(w.clone(), al.clone(), n)).map(|c| {
                        format!("{:.1},{:.1}", px(i), y0 + 16.0 + ph - c.wall_ms / maxv * ph)
                    })
                })
                .collect();
            let _ = writeln!(
                s,
                r##"<polyline fill="none" stroke-width="2" stroke="{}" points="{}"><title>{al}</title></polyline>"##,
                color(al),
                pts.join(" ")
            );
        }
    }
    legend(&mut s, &a.allocators, pad, height - 10.0);
    s
}
