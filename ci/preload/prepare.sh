# Sourced from the repository root by ci/preload.sh and ci/preload-compare.sh: builds
# libgomalloc.so (feature c-abi, in its own target dir so the feature switch does not rebuild
# the main build), sets LIB, W (work directory, PRELOAD_WORKDIR or target/preload-work) and
# SCALE, loads the programs (programs.sh) and makes their inputs once.
CARGO_TARGET_DIR=target/cabi cargo build --release --features c-abi
LIB=$PWD/target/cabi/release/libgomalloc.so
W=${PRELOAD_WORKDIR:-target/preload-work}
mkdir -p "$W"
W=$(cd "$W" && pwd)
export W SCALE=${SCALE:-1}
# shellcheck source=ci/preload/programs.sh
. ci/preload/programs.sh
setup_inputs
