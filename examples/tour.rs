//! A guided tour of gomalloc: run a realistic, self-checking mixed workload on gomalloc, print
//! gomalloc's `MemStats`, then re-run the same workload in child processes under gomalloc, the
//! system allocator (glibc), mimalloc and jemalloc and compare wall time, CPU time and peak RSS.
//!
//! ```text
//! cargo run --release --example tour                      # full tour (~30-60 s on 2 cores)
//! cargo run --release --example tour -- --rounds 1 --scale 0.3   # quick look
//! cargo run --release --example tour -- --no-compare      # only the gomalloc run + MemStats
//! TOUR_ALLOCATOR=jemalloc cargo run --release --example tour      # one measured run, one result line
//! ```
//!
//! How the side-by-side works: this binary's `#[global_allocator]` is `Select`, which forwards to
//! GoMalloc, System, MiMalloc or Jemalloc. The choice is made once, on the very first allocation,
//! from the environment variable `TOUR_ALLOCATOR` read with `libc::getenv` (which does not
//! allocate); without it the choice is gomalloc. The parent process (no `TOUR_ALLOCATOR`) runs the
//! workload itself on gomalloc, prints `gomalloc::stats()`, then re-executes itself
//! (`std::env::current_exe`) with `TOUR_ALLOCATOR=<name>` for every allocator, for several rounds
//! in rotating order; each child prints one `TOUR_RESULT ...` line and the parent prints medians.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::CStr;
use std::fmt::Write as _;
use std::io::{Read, Write as _};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use gomalloc::GoMalloc;
use mimalloc::MiMalloc;
use tikv_jemallocator::Jemalloc;

// =============================================================================================
// The selectable global allocator
// =============================================================================================

const UNSET: u8 = 0;
const GO: u8 = 1;
const SYS: u8 = 2;
const MI: u8 = 3;
const JE: u8 = 4;
/// Allocator names, indexed by `choice - 1`.
const NAMES: [&str; 4] = ["gomalloc", "system", "mimalloc", "jemalloc"];

struct Select;

static CHOICE: AtomicU8 = AtomicU8::new(UNSET);

#[cold]
#[inline(never)]
fn choose() -> u8 {
    // SAFETY: getenv reads `environ` and allocates nothing; nobody calls setenv in this program.
    let v = unsafe { libc::getenv(c"TOUR_ALLOCATOR".as_ptr()) };
    let c = if v.is_null() {
        GO
    } else {
        match unsafe { CStr::from_ptr(v) }.to_bytes() {
            b"gomalloc" | b"go" => GO,
            b"system" | b"sys" | b"glibc" => SYS,
            b"mimalloc" | b"mi" => MI,
            b"jemalloc" | b"je" => JE,
            _ => {
                let msg = b"tour: unknown TOUR_ALLOCATOR (use gomalloc|system|mimalloc|jemalloc)\n";
                unsafe {
                    libc::write(2, msg.as_ptr().cast(), msg.len());
                    libc::abort();
                }
            }
        }
    };
    // Racing first callers all compute the same value; the first store wins either way.
    match CHOICE.compare_exchange(UNSET, c, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => c,
        Err(prev) => prev,
    }
}

#[inline(always)]
fn which() -> u8 {
    let c = CHOICE.load(Ordering::Relaxed);
    if c != UNSET {
        c
    } else {
        choose()
    }
}

macro_rules! forward {
    ($method:ident($($arg:expr),*)) => {
        match which() {
            GO => GoMalloc.$method($($arg),*),
            SYS => System.$method($($arg),*),
            MI => MiMalloc.$method($($arg),*),
            _ => Jemalloc.$method($($arg),*),
        }
    };
}

unsafe impl GlobalAlloc for Select {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        forward!(alloc(layout))
    }
    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        forward!(dealloc(ptr, layout))
    }
    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        forward!(alloc_zeroed(layout))
    }
    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        forward!(realloc(ptr, layout, new_size))
    }
}

#[global_allocator]
static GLOBAL: Select = Select;

// =============================================================================================
// The workload: six phases, each building real data structures and checking them.
// =============================================================================================

/// splitmix64: tiny, deterministic, allocation-free.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn mix(x: u64) -> u64 {
    Rng(x).next()
}

fn scaled(n: usize, scale: f64) -> usize {
    ((n as f64 * scale) as usize).max(1)
}

const PHASES: [&str; 6] = ["index", "btree", "trees", "vecs", "threads", "big"];

/// Phase 1: generate a text, tokenize it into `Vec<String>`, build a `HashMap<String, Vec<u32>>`
/// inverted index, verify every posting, then prune rare words and shrink the postings.
fn phase_index(scale: f64) -> u64 {
    const SYL: [&str; 16] = [
        "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "po", "qua", "bel", "dor", "fin",
        "gar", "hu",
    ];
    // Syllables start with 16 distinct letters, so distinct numbers give distinct words.
    fn word(mut i: usize) -> String {
        let mut s = String::new();
        loop {
            s.push_str(SYL[i % 16]);
            i /= 16;
            if i == 0 {
                return s;
            }
        }
    }
    let vocab: Vec<String> = (0..30_000).map(word).collect();
    let n_words = scaled(400_000, scale);
    let mut rng = Rng(1);
    let mut text = String::new();
    for _ in 0..n_words {
        let r = rng.unit();
        let w = (vocab.len() as f64 * r * r * r) as usize; // Zipf-ish: few frequent words, long tail
        text.push_str(&vocab[w]);
        text.push(' ');
    }
    text.pop();
    let doc: Vec<String> = text.split(' ').map(str::to_owned).collect();
    drop(text);
    assert_eq!(doc.len(), n_words, "tokenizer lost words");

    let mut index: HashMap<String, Vec<u32>> = HashMap::new();
    for (pos, w) in doc.iter().enumerate() {
        match index.get_mut(w.as_str()) {
            Some(postings) => postings.push(pos as u32),
            None => {
                index.insert(w.clone(), vec![pos as u32]);
            }
        }
    }
    let mut total = 0usize;
    let mut sum = 0u64;
    for (w, postings) in &index {
        total += postings.len();
        for (k, &p) in postings.iter().enumerate() {
            assert_eq!(&doc[p as usize], w, "posting points at the wrong word");
            if k > 0 {
                assert!(postings[k - 1] < p, "postings out of order");
            }
        }
        sum = sum.wrapping_add((w.len() as u64) * postings.len() as u64);
    }
    assert_eq!(total, doc.len(), "index lost postings");
    let distinct = index.len() as u64;

    // Churn: drop rare words, shrink the survivors' postings (realloc down).
    index.retain(|_, p| p.len() > 2);
    for p in index.values_mut() {
        p.shrink_to_fit();
    }
    let kept = index.len() as u64;
    let kept_postings: u64 = index.values().map(|p| p.len() as u64).sum();
    sum ^ (distinct << 40) ^ (kept << 20) ^ kept_postings
}

/// Phase 2: a `BTreeMap<u64, String>` under random insert/remove churn around ~50k live keys;
/// every removed value is checked against its key.
fn phase_btree(scale: f64) -> u64 {
    fn value(key: u64) -> String {
        let mut s = String::new();
        for _ in 0..(key % 13 + 1) {
            write!(s, "{key:x}-").unwrap();
        }
        s
    }
    let ops = scaled(600_000, scale);
    let key_space = 100_000;
    let mut rng = Rng(2);
    let mut map: BTreeMap<u64, String> = BTreeMap::new();
    let (mut inserts, mut removes, mut bytes) = (0u64, 0u64, 0u64);
    for _ in 0..ops {
        let key = rng.below(key_space);
        match map.remove(&key) {
            Some(v) => {
                assert_eq!(v, value(key), "btree value corrupted");
                removes += 1;
            }
            None => {
                let v = value(key);
                bytes += v.len() as u64;
                map.insert(key, v);
                inserts += 1;
            }
        }
    }
    let mut prev = None;
    for (k, v) in &map {
        assert!(prev < Some(*k), "btree out of order");
        assert_eq!(*v, value(*k), "btree value corrupted");
        prev = Some(*k);
    }
    assert_eq!(inserts - removes, map.len() as u64);
    inserts ^ (removes << 21) ^ (bytes << 42) ^ map.len() as u64
}

/// Phase 3: the classic binary-trees benchmark (16-byte `Box` nodes built and dropped), two
/// threads, plus one long-lived tree kept across the whole phase.
fn phase_trees(scale: f64) -> u64 {
    struct Node {
        l: Option<Box<Node>>,
        r: Option<Box<Node>>,
    }
    fn make(d: u32) -> Box<Node> {
        if d == 0 {
            Box::new(Node { l: None, r: None })
        } else {
            Box::new(Node {
                l: Some(make(d - 1)),
                r: Some(make(d - 1)),
            })
        }
    }
    fn count(n: &Node) -> u64 {
        1 + n.l.as_deref().map_or(0, count) + n.r.as_deref().map_or(0, count)
    }
    let max_depth: u32 = (16.0 + scale.log2()).round().clamp(6.0, 20.0) as u32;
    let long_lived = make(max_depth);
    let depths: Vec<u32> = (4..=max_depth).step_by(2).collect();
    let total: u64 = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2usize)
            .map(|t| {
                let depths = &depths;
                s.spawn(move || {
                    let mut sum = 0u64;
                    for &d in depths.iter().skip(t).step_by(2) {
                        let iters = 1u64 << (max_depth - d + 4);
                        let mut nodes = 0;
                        for _ in 0..iters {
                            nodes += count(&make(d));
                        }
                        assert_eq!(nodes, iters * ((1u64 << (d + 1)) - 1), "tree lost nodes");
                        sum += nodes;
                    }
                    sum
                })
            })
            .collect();
        workers.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(count(&long_lived), (1u64 << (max_depth + 1)) - 1);
    total ^ ((max_depth as u64) << 56)
}

/// Phase 4: thousands of `Vec<u32>` grown by interleaved pushes (reallocs that cannot all grow in
/// place), one big `Vec<u64>` grown past many MiB, and a `Vec<String>` joined into one `String`.
fn phase_vecs(scale: f64) -> u64 {
    fn val(j: usize, i: usize) -> u32 {
        (j as u32).wrapping_mul(2_654_435_761) ^ i as u32
    }
    let mut rng = Rng(4);
    let nv = scaled(2_000, scale);
    let targets: Vec<usize> = (0..nv).map(|_| rng.below(2_000) as usize).collect();
    let mut vecs: Vec<Vec<u32>> = (0..nv).map(|_| Vec::new()).collect();
    loop {
        let mut active = false;
        for (j, v) in vecs.iter_mut().enumerate() {
            let left = targets[j] - v.len();
            if left > 0 {
                active = true;
                for _ in 0..(1 + rng.below(48) as usize).min(left) {
                    v.push(val(j, v.len()));
                }
            }
        }
        if !active {
            break;
        }
    }
    let mut sum = 0u64;
    for (j, v) in vecs.iter_mut().enumerate() {
        assert_eq!(v.len(), targets[j]);
        for (i, &x) in v.iter().enumerate() {
            assert_eq!(x, val(j, i), "vec element corrupted");
        }
        sum = sum.wrapping_add(v.iter().map(|&x| x as u64).sum::<u64>());
        if j % 2 == 0 {
            v.truncate(v.len() / 3);
            v.shrink_to_fit();
        }
    }
    drop(vecs);

    let n = scaled(3_000_000, scale) as u64;
    let mut big: Vec<u64> = Vec::new();
    for i in 0..n {
        big.push(i * 3);
    }
    assert_eq!(
        big.iter().sum::<u64>(),
        3 * n * (n - 1) / 2,
        "big vec corrupted"
    );
    drop(big);

    let ns = scaled(200_000, scale);
    let strings: Vec<String> = (0..ns).map(|i| format!("item-{i}")).collect();
    let joined = strings.join(",");
    assert_eq!(joined.split(',').count(), ns);
    assert!(
        joined.split(',').zip(&strings).all(|(a, b)| a == b),
        "joined string corrupted"
    );
    sum ^ ((joined.len() as u64) << 32)
}

/// Phase 5: two producer threads send boxed messages (with heap payloads), in batches of 32, to a
/// worker thread, which checks them, frees them (a cross-thread free) and sends boxed replies to
/// the main thread, which checks and frees those.
fn phase_threads(scale: f64) -> u64 {
    struct Msg {
        id: u64,
        payload: Vec<u8>,
        tag: String,
    }
    struct Reply {
        id: u64,
        sum: u64,
        text: String,
    }
    fn payload_len(id: u64) -> usize {
        16 + (mix(id) % 1009) as usize
    }
    fn expected_sum(id: u64) -> u64 {
        payload_len(id) as u64 * (id as u8) as u64
    }
    const BATCH: usize = 32;
    let per_producer = scaled(100_000, scale) as u64;
    let (tx, rx) = sync_channel::<Vec<Box<Msg>>>(16);
    let (rtx, rrx) = sync_channel::<Vec<Box<Reply>>>(16);
    std::thread::scope(|s| {
        for p in 0..2u64 {
            let tx = tx.clone();
            s.spawn(move || {
                let mut batch = Vec::with_capacity(BATCH);
                for k in 0..per_producer {
                    let id = p * per_producer + k;
                    batch.push(Box::new(Msg {
                        id,
                        payload: vec![id as u8; payload_len(id)],
                        tag: format!("p{p}-{k}"),
                    }));
                    if batch.len() == BATCH || k + 1 == per_producer {
                        tx.send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))
                            .unwrap();
                    }
                }
            });
        }
        drop(tx);
        s.spawn(move || {
            for batch in rx {
                let mut replies = Vec::with_capacity(batch.len());
                for msg in batch {
                    assert!(
                        msg.payload.iter().all(|&b| b == msg.id as u8),
                        "payload corrupted"
                    );
                    assert!(msg.tag.starts_with('p'), "tag corrupted");
                    let sum: u64 = msg.payload.iter().map(|&b| b as u64).sum();
                    replies.push(Box::new(Reply {
                        id: msg.id,
                        sum,
                        text: format!("{}:{}", msg.id, sum),
                    }));
                    drop(msg); // frees memory allocated by a producer thread
                }
                rtx.send(replies).unwrap();
            }
        });
        let (mut count, mut acc) = (0u64, 0u64);
        for batch in rrx {
            for r in batch {
                assert_eq!(r.sum, expected_sum(r.id), "reply sum wrong");
                assert_eq!(
                    r.text,
                    format!("{}:{}", r.id, r.sum),
                    "reply text corrupted"
                );
                count += 1;
                acc = acc.wrapping_add(r.sum ^ (r.id << 20));
            }
        }
        assert_eq!(count, 2 * per_producer, "messages lost");
        acc ^ count
    })
}

/// Phase 6: 1-8 MiB buffers (zeroed and filled), four kept alive at a time and re-checked when
/// retired, plus one `Vec<u8>` grown to 8 MiB in 64 KiB steps.
fn phase_big(scale: f64) -> u64 {
    fn check(v: &[u8], seed: u8, zeroed: bool) -> u64 {
        let mut s = 0u64;
        for off in (0..v.len()).step_by(4096) {
            let want = if zeroed {
                seed.wrapping_add((off / 4096) as u8)
            } else {
                seed
            };
            assert_eq!(v[off], want, "big buffer corrupted");
            s += v[off] as u64;
        }
        s
    }
    let mut rng = Rng(6);
    let n = scaled(40, scale);
    let mut window: VecDeque<(Vec<u8>, u8, bool)> = VecDeque::new();
    let mut sum = 0u64;
    for i in 0..n {
        let size = (1 << 20) + rng.below(7 << 20) as usize;
        let seed = i as u8;
        let buf = if i % 2 == 0 {
            let mut v = vec![0u8; size]; // alloc_zeroed
            for off in (0..size).step_by(4096) {
                assert_eq!(v[off], 0, "alloc_zeroed returned dirty memory");
                v[off] = seed.wrapping_add((off / 4096) as u8);
            }
            (v, seed, true)
        } else {
            let mut v = Vec::with_capacity(size);
            while v.len() < size {
                let chunk = (size - v.len()).min(64 << 10);
                v.resize(v.len() + chunk, seed);
            }
            (v, seed, false)
        };
        window.push_back(buf);
        if window.len() > 4 {
            let (v, seed, zeroed) = window.pop_front().unwrap();
            sum += check(&v, seed, zeroed);
        }
    }
    for (v, seed, zeroed) in window.drain(..) {
        sum += check(&v, seed, zeroed);
    }
    let chunk = [7u8; 64 << 10];
    let mut grow: Vec<u8> = Vec::new();
    while grow.len() < (8 << 20) {
        grow.extend_from_slice(&chunk);
    }
    assert!(grow.iter().all(|&b| b == 7), "grown buffer corrupted");
    sum ^ ((grow.len() as u64) << 32)
}

struct RunResult {
    wall_ms: f64,
    cpu_ms: f64,
    user_ms: f64,
    sys_ms: f64,
    phases_ms: [f64; 6],
    checksum: u64,
}

fn cpu_times_ms() -> (f64, f64) {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    (ms(ru.ru_utime), ms(ru.ru_stime))
}

fn run_workload(scale: f64) -> RunResult {
    let phases: [fn(f64) -> u64; 6] = [
        phase_index,
        phase_btree,
        phase_trees,
        phase_vecs,
        phase_threads,
        phase_big,
    ];
    let (u0, s0) = cpu_times_ms();
    let t0 = Instant::now();
    let mut phases_ms = [0.0; 6];
    let mut checksum = 0u64;
    for (i, phase) in phases.iter().enumerate() {
        let t = Instant::now();
        let c = phase(scale);
        phases_ms[i] = t.elapsed().as_secs_f64() * 1e3;
        checksum = mix(checksum ^ c);
    }
    let wall_ms = t0.elapsed().as_secs_f64() * 1e3;
    let (u1, s1) = cpu_times_ms();
    RunResult {
        wall_ms,
        cpu_ms: (u1 - u0) + (s1 - s0),
        user_ms: u1 - u0,
        sys_ms: s1 - s0,
        phases_ms,
        checksum,
    }
}

/// A `VmXXX:` field of /proc/self/status, in KiB.
fn proc_status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

// =============================================================================================
// Child: one measured run, one machine-readable line
// =============================================================================================

fn child_main(opts: &Opts) {
    let r = run_workload(opts.scale);
    let hwm = proc_status_kb("VmHWM:");
    let rss = proc_status_kb("VmRSS:");
    let phases: Vec<String> = PHASES
        .iter()
        .zip(r.phases_ms)
        .map(|(n, ms)| format!("{n}:{ms:.1}"))
        .collect();
    println!(
        "TOUR_RESULT alloc={} wall_ms={:.1} cpu_ms={:.1} user_ms={:.1} sys_ms={:.1} hwm_kb={} rss_end_kb={} checksum={:016x} phases={}",
        NAMES[which() as usize - 1],
        r.wall_ms,
        r.cpu_ms,
        r.user_ms,
        r.sys_ms,
        hwm,
        rss,
        r.checksum,
        phases.join(",")
    );
}

#[derive(Clone, Debug, Default)]
struct ChildResult {
    wall_ms: f64,
    cpu_ms: f64,
    user_ms: f64,
    sys_ms: f64,
    hwm_kb: f64,
    rss_end_kb: f64,
    checksum: String,
    phases_ms: [f64; 6],
}

fn parse_result(line: &str) -> Option<ChildResult> {
    let rest = line.strip_prefix("TOUR_RESULT ")?;
    let mut r = ChildResult::default();
    for kv in rest.split_whitespace() {
        let (k, v) = kv.split_once('=')?;
        match k {
            "wall_ms" => r.wall_ms = v.parse().ok()?,
            "cpu_ms" => r.cpu_ms = v.parse().ok()?,
            "user_ms" => r.user_ms = v.parse().ok()?,
            "sys_ms" => r.sys_ms = v.parse().ok()?,
            "hwm_kb" => r.hwm_kb = v.parse().ok()?,
            "rss_end_kb" => r.rss_end_kb = v.parse().ok()?,
            "checksum" => r.checksum = v.to_string(),
            "phases" => {
                for (i, p) in v.split(',').enumerate().take(6) {
                    r.phases_ms[i] = p.split_once(':')?.1.parse().ok()?;
                }
            }
            _ => {}
        }
    }
    Some(r)
}

/// Run one child with `TOUR_ALLOCATOR=name`; kill it after `timeout`.
fn run_child(
    exe: &std::path::Path,
    name: &str,
    opts: &Opts,
    timeout: Duration,
) -> Result<ChildResult, String> {
    let mut child = Command::new(exe)
        .args(["--scale", &opts.scale.to_string()])
        .env("TOUR_ALLOCATOR", name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn failed: {e}"))?;
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("wait failed: {e}")),
        }
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    let tail = |s: &str| {
        s.lines()
            .rev()
            .take(6)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n      ")
    };
    match status {
        None => Err(format!(
            "timed out after {:?}; stderr: {}",
            timeout,
            tail(&stderr)
        )),
        Some(st) if !st.success() => Err(format!("{st}; stderr:\n      {}", tail(&stderr))),
        Some(_) => stdout
            .lines()
            .find_map(parse_result)
            .ok_or_else(|| format!("no TOUR_RESULT line; stdout: {}", tail(&stdout))),
    }
}

// =============================================================================================
// Parent: header, gomalloc run + MemStats, side-by-side table
// =============================================================================================

struct Opts {
    rounds: usize,
    scale: f64,
    allocators: Vec<String>,
    compare: bool,
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        rounds: 3,
        scale: 1.0,
        allocators: NAMES.iter().map(|s| s.to_string()).collect(),
        compare: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |what: &str| {
            args.next()
                .unwrap_or_else(|| panic!("{what} needs a value"))
        };
        match a.as_str() {
            "--rounds" => o.rounds = val("--rounds").parse().expect("--rounds N"),
            "--scale" => o.scale = val("--scale").parse().expect("--scale X"),
            "--allocators" => {
                o.allocators = val("--allocators").split(',').map(str::to_owned).collect()
            }
            "--no-compare" => o.compare = false,
            "-h" | "--help" => {
                println!("usage: tour [--rounds N (3)] [--scale X (1.0)] [--allocators gomalloc,system,mimalloc,jemalloc] [--no-compare]\n       TOUR_ALLOCATOR=<name> tour  -> one measured run, one TOUR_RESULT line");
                std::process::exit(0);
            }
            other => panic!("unknown argument {other:?} (try --help)"),
        }
    }
    assert!(o.scale > 0.0 && o.rounds > 0);
    o
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn machine_line() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown cpu".into());
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / (1 << 20) as f64);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "nproc {nproc} (online {online}), cpu \"{model}\", {mem_gib:.1} GiB RAM, Linux {}",
        kernel.trim()
    )
}

fn print_phases(ms: &[f64; 6]) -> String {
    PHASES
        .iter()
        .zip(ms)
        .map(|(n, t)| format!("{n} {t:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_invariants(s: &gomalloc::MemStats) -> Vec<String> {
    let mut bad = Vec::new();
    if s.heap_inuse + s.heap_idle != s.heap_sys {
        bad.push(format!(
            "heap_inuse + heap_idle ({}) != heap_sys ({})",
            s.heap_inuse + s.heap_idle,
            s.heap_sys
        ));
    }
    if s.heap_released > s.heap_idle {
        bad.push(format!(
            "heap_released ({}) > heap_idle ({})",
            s.heap_released, s.heap_idle
        ));
    }
    if s.alloc != s.heap_alloc {
        bad.push(format!(
            "alloc ({}) != heap_alloc ({})",
            s.alloc, s.heap_alloc
        ));
    }
    if s.heap_objects != s.mallocs.wrapping_sub(s.frees) {
        bad.push(format!(
            "heap_objects ({}) != mallocs - frees ({})",
            s.heap_objects,
            s.mallocs.wrapping_sub(s.frees)
        ));
    }
    if s.sys < s.heap_sys {
        bad.push(format!("sys ({}) < heap_sys ({})", s.sys, s.heap_sys));
    }
    bad
}

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

fn parent_main(opts: &Opts) {
    let cmd: Vec<String> = std::env::args().collect();
    println!("== gomalloc tour ==");
    println!("command : {}", cmd.join(" "));
    println!("machine : {}", machine_line());
    println!(
        "build   : {}; workload scale {}, {} round(s)",
        if cfg!(debug_assertions) {
            "DEBUG (numbers are meaningless; use --release)"
        } else {
            "release"
        },
        opts.scale,
        opts.rounds
    );
    println!(
        "workload: {} -- each phase builds real data structures and checks every value it reads back",
        PHASES.join(" / ")
    );
    println!();

    // ---- 1. The workload on gomalloc, in this process -------------------------------------
    println!("-- 1. workload on gomalloc (this process's global allocator) --");
    let _ = std::io::stdout().flush();
    let r = run_workload(opts.scale);
    println!(
        "done: wall {:.0} ms, cpu {:.0} ms (user {:.0} + sys {:.0}), peak RSS {:.1} MiB, checksum {:016x}",
        r.wall_ms,
        r.cpu_ms,
        r.user_ms,
        r.sys_ms,
        proc_status_kb("VmHWM:") as f64 / 1024.0,
        r.checksum
    );
    println!("phases (ms): {}", print_phases(&r.phases_ms));
    println!();
    let st = gomalloc::stats();
    println!("gomalloc::stats() after the workload (all workload data has been dropped):");
    println!("{st}");
    let bad = check_invariants(&st);
    if bad.is_empty() {
        println!("MemStats invariants: ok (heap_inuse+heap_idle==heap_sys, released<=idle, alloc==heap_alloc, objects==mallocs-frees, sys>=heap_sys)");
    } else {
        println!("MemStats invariants VIOLATED:");
        for b in &bad {
            println!("  - {b}");
        }
    }
    let rss_before = proc_status_kb("VmRSS:");
    gomalloc::release_memory();
    let st2 = gomalloc::stats();
    println!(
        "after gomalloc::release_memory(): heap_idle {:.1} MiB, heap_released {:.1} -> {:.1} MiB, VmRSS {:.1} -> {:.1} MiB",
        mib(st2.heap_idle),
        mib(st.heap_released),
        mib(st2.heap_released),
        rss_before as f64 / 1024.0,
        proc_status_kb("VmRSS:") as f64 / 1024.0
    );
    println!();
    let parent_checksum = format!("{:016x}", r.checksum);

    if !opts.compare {
        return;
    }

    // ---- 2. Side by side, in fresh child processes ----------------------------------------
    let exe = std::env::current_exe().expect("current_exe");
    let names = &opts.allocators;
    for n in names {
        assert!(NAMES.contains(&n.as_str()), "unknown allocator {n:?}");
    }
    println!(
        "-- 2. side by side: the same workload in fresh processes, TOUR_ALLOCATOR={} x {} round(s), rotating order --",
        names.join("|"),
        opts.rounds
    );
    let mut results: Vec<Vec<ChildResult>> = vec![Vec::new(); names.len()];
    let mut failures: Vec<String> = Vec::new();
    let mut checksums_ok = true;
    let t_all = Instant::now();
    for round in 0..opts.rounds {
        let mut line = format!("round {}/{}:", round + 1, opts.rounds);
        for k in 0..names.len() {
            let i = (k + round) % names.len();
            match run_child(&exe, &names[i], opts, Duration::from_secs(120)) {
                Ok(c) => {
                    if c.checksum != parent_checksum {
                        checksums_ok = false;
                        failures.push(format!(
                            "{}: checksum {} != {}",
                            names[i], c.checksum, parent_checksum
                        ));
                    }
                    write!(line, "  {} {:.0} ms", names[i], c.wall_ms).unwrap();
                    results[i].push(c);
                }
                Err(e) => {
                    write!(line, "  {} FAILED", names[i]).unwrap();
                    failures.push(format!("{} (round {}): {e}", names[i], round + 1));
                }
            }
            print!("{line}");
            line.clear();
            let _ = std::io::stdout().flush();
        }
        println!();
    }
    println!(
        "(children took {:.1} s in all)",
        t_all.elapsed().as_secs_f64()
    );
    println!();

    let med = |i: usize, f: fn(&ChildResult) -> f64| -> Option<f64> {
        (!results[i].is_empty()).then(|| median(results[i].iter().map(f).collect()))
    };
    let go = names.iter().position(|n| n == "gomalloc");
    let ratio = |i: usize, f: fn(&ChildResult) -> f64| -> String {
        match (go.and_then(|g| med(g, f)), med(i, f)) {
            (Some(g), Some(v)) if g > 0.0 => format!("{:.2}x", v / g),
            _ => "-".into(),
        }
    };
    let fmt = |v: Option<f64>, div: f64, prec: usize| {
        v.map_or("n/a".to_string(), |x| format!("{:.*}", prec, x / div))
    };
    println!("median of {} run(s) per allocator; \"x go\" = allocator / gomalloc (below 1.00x: better than gomalloc)", opts.rounds);
    println!(
        "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8}",
        "allocator",
        "wall ms",
        "cpu ms",
        "user ms",
        "sys ms",
        "peakRSS",
        "endRSS",
        "wall",
        "cpu",
        "peakRSS"
    );
    println!(
        "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8}",
        "", "", "", "", "", "MiB", "MiB", "x go", "x go", "x go"
    );
    for (i, n) in names.iter().enumerate() {
        println!(
            "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8}",
            n,
            fmt(med(i, |c| c.wall_ms), 1.0, 0),
            fmt(med(i, |c| c.cpu_ms), 1.0, 0),
            fmt(med(i, |c| c.user_ms), 1.0, 0),
            fmt(med(i, |c| c.sys_ms), 1.0, 0),
            fmt(med(i, |c| c.hwm_kb), 1024.0, 1),
            fmt(med(i, |c| c.rss_end_kb), 1024.0, 1),
            ratio(i, |c| c.wall_ms),
            ratio(i, |c| c.cpu_ms),
            ratio(i, |c| c.hwm_kb),
        );
    }
    println!();
    println!("per-phase wall time, median ms (\"x go\" as above):");
    print!("{:<10}", "allocator");
    for p in PHASES {
        print!(" {:>14}", p);
    }
    println!();
    const PH: [fn(&ChildResult) -> f64; 6] = [
        |c| c.phases_ms[0],
        |c| c.phases_ms[1],
        |c| c.phases_ms[2],
        |c| c.phases_ms[3],
        |c| c.phases_ms[4],
        |c| c.phases_ms[5],
    ];
    for (i, n) in names.iter().enumerate() {
        print!("{:<10}", n);
        for f in PH {
            let cell = match med(i, f) {
                Some(v) => format!("{:.0} ({})", v, ratio(i, f)),
                None => "n/a".into(),
            };
            print!(" {:>14}", cell);
        }
        println!();
    }
    println!();
    if checksums_ok && failures.is_empty() {
        println!("self-check: every run under every allocator verified its data and produced checksum {parent_checksum}");
    } else {
        println!("PROBLEMS:");
        for f in &failures {
            println!("  - {f}");
        }
        std::process::exit(1);
    }
}

fn main() {
    let opts = parse_opts();
    // SAFETY: getenv allocates nothing; `which()` has long been decided by now anyway.
    let is_child = !unsafe { libc::getenv(c"TOUR_ALLOCATOR".as_ptr()) }.is_null();
    if is_child {
        child_main(&opts);
    } else {
        parent_main(&opts);
    }
}
