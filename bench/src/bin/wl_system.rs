//! The workloads on system (see `gomalloc_bench::workloads`); run by `compare`, or by hand:
//! `target/release/wl-system <workload> [--threads N] [--scale F]`.

#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

fn main() {
    gomalloc_bench::child_main("system");
}
