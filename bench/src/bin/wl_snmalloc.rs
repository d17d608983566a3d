//! The workloads on snmalloc (see `gomalloc_bench::workloads`); run by `compare`, or by hand:
//! `target/release/wl-snmalloc <workload> [--threads N] [--scale F]`.

#[global_allocator]
static GLOBAL: snmalloc_rs::SnMalloc = snmalloc_rs::SnMalloc;

fn main() {
    gomalloc_bench::child_main("snmalloc");
}
