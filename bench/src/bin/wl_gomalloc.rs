//! The workloads on gomalloc (see `gomalloc_bench::workloads`); run by `compare`, or by hand:
//! `target/release/wl-gomalloc <workload> [--threads N] [--scale F]`.
//! With `GOMALLOC_BENCH_STATS=1` it also prints gomalloc's `MemStats` after the run.

#[global_allocator]
static GLOBAL: gomalloc::GoMalloc = gomalloc::GoMalloc;

fn main() {
    gomalloc_bench::child_main("gomalloc");
    if std::env::var_os("GOMALLOC_BENCH_STATS").is_some() {
        eprintln!("{}", gomalloc::stats());
    }
}
