//! The workloads on gomalloc (see `gomalloc_bench::workloads`); run by `compare`, or by hand:
//! `target/release/wl-gomalloc <workload> [--threads N] [--scale F]`.

#[global_allocator]
static GLOBAL: gomalloc::GoMalloc = gomalloc::GoMalloc;

fn main() {
    gomalloc_bench::child_main("gomalloc");
}
