//! Loom models of gomalloc's shared structures. The models live in `tests/`; they run the real
//! crate compiled with `--cfg loom`, whose `sync` shim swaps every lock and atomic for loom's:
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom \
//!     cargo test -p gomalloc-loom-tests --release
//! ```
//!
//! Without `--cfg loom` the models compile to nothing.
