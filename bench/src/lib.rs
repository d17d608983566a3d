//! The comparison runner's workloads and the child-process side of a measurement.
//!
//! Every allocator gets its own tiny binary (`wl-gomalloc`, `wl-system`, `wl-mimalloc`,
//! `wl-jemalloc`, `wl-snmalloc`) whose `#[global_allocator]` is that allocator and whose `main`
//! is [`child_main`]: the workload code is the same for all of them, compiled once per binary,
//! with no dispatch between allocators on the hot path. The `compare` binary (the driver) runs
//! those binaries one after the other, in rotating order, and reads one result line from each.
//!
//! Each workload checks its own data (patterns written on allocation and verified before free,
//! checksums of what the collections hold) and exits non-zero on a mismatch, so a run that is
//! fast because it is wrong cannot pass.
//!
//! A child reports: the workload's wall time (thread start to last free, measured inside the
//! child so process start-up and exit are not counted), its resident set size before the
//! workload, right after everything was freed, and after up to `--settle-ms` milliseconds of
//! idling (sampled every 20 ms, stopping early once back within 2 MiB of the start). The driver
//! adds CPU time and peak RSS from `wait4`'s rusage.

#[cfg(feature = "gc")]
pub mod gcprog;
pub mod workloads;

use std::time::{Duration, Instant};

/// Options a child receives on its command line.
#[derive(Clone, Copy, Debug)]
pub struct Opts {
    pub threads: usize,
    /// Multiplier on every workload's operation count (1.0 = the default size).
    pub scale: f64,
    pub seed: u64,
}

impl Opts {
    /// `n` scaled, at least 1.
    pub fn ops(&self, n: usize) -> usize {
        ((n as f64 * self.scale) as usize).max(1)
    }
}

/// Resident set size of this process in KiB, from `/proc/self/statm` (read with a stack buffer
/// and raw syscalls so that measuring allocates nothing).
pub fn rss_kib() -> u64 {
    let mut buf = [0u8; 128];
    // SAFETY: plain open/read/close on a NUL-terminated path into a stack buffer we own.
    let n = unsafe {
        let fd = libc::open(
            c"/proc/self/statm".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return 0;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    if n <= 0 {
        return 0;
    }
    let text = &buf[..n as usize];
    // Second field: resident pages.
    let mut fields = text.split(|&b| b == b' ');
    let _size = fields.next();
    let resident = fields
        .next()
        .and_then(|f| std::str::from_utf8(f).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    resident * page / 1024
}

fn usage() -> ! {
    eprintln!(
        "usage: wl-<allocator> <workload> [--threads N] [--scale F] [--seed S] [--settle-ms MS]\n\
         workloads: {}",
        workloads::NAMES.join(", ")
    );
    std::process::exit(2);
}

/// The `main` of every `wl-<allocator>` binary: parse the options, run one workload, print one
/// `RESULT` line on stdout.
pub fn child_main(allocator: &str) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args[0] == "--help" || args[0] == "-h" {
        usage();
    }
    let name = args[0].clone();
    let mut opts = Opts {
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        scale: 1.0,
        seed: 0x9E37_79B9_7F4A_7C15,
    };
    let mut settle_ms = 0u64;
    let mut i = 1;
    while i < args.len() {
        let v = args.get(i + 1).unwrap_or_else(|| usage());
        match args[i].as_str() {
            "--threads" => opts.threads = v.parse().unwrap_or_else(|_| usage()),
            "--scale" => opts.scale = v.parse().unwrap_or_else(|_| usage()),
            "--seed" => opts.seed = v.parse().unwrap_or_else(|_| usage()),
            "--settle-ms" => settle_ms = v.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
        i += 2;
    }
    opts.threads = opts.threads.max(1);
    let Some(wl) = workloads::find(&name) else {
        usage()
    };
    let rss_start = rss_kib();
    let t0 = Instant::now();
    let check = wl(&opts);
    let wall = t0.elapsed();
    let rss_end = rss_kib();
    // Idle until the allocator has given memory back (within 2 MiB of the start) or time is up.
    let t1 = Instant::now();
    let mut rss_settled = rss_end;
    while rss_settled > rss_start + 2048 && t1.elapsed() < Duration::from_millis(settle_ms) {
        std::thread::sleep(Duration::from_millis(20));
        rss_settled = rss_kib();
    }
    let settle = t1.elapsed();
    println!(
        "RESULT allocator={allocator} workload={name} threads={} wall_us={} rss_start_kib={rss_start} \
         rss_end_kib={rss_end} rss_settled_kib={rss_settled} settle_ms={} check={check:#x}",
        opts.threads,
        wall.as_micros(),
        settle.as_millis(),
    );
}
