//! The workloads on jemalloc (see `gomalloc_bench::workloads`); run by `compare`, or by hand:
//! `target/release/wl-jemalloc <workload> [--threads N] [--scale F]`.

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    gomalloc_bench::child_main("jemalloc");
}
