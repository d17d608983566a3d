//! The workloads on mimalloc (see `gomalloc_bench::workloads`); run by `compare`, or by hand:
//! `target/release/wl-mimalloc <workload> [--threads N] [--scale F]`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    gomalloc_bench::child_main("mimalloc");
}
