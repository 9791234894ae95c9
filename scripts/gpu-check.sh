#!/usr/bin/env bash
# GPU checks for psyne's `cuda` feature: builds with `--features cuda` and runs the CUDA tests of
# the slab module (registration as pinned host memory, a device copy out of a registered slab and
# back, a device-to-device copy through the mapped device pointers, unregistration on drop) and
# of CUDA-registered channels (psyne/tests/cuda.rs: the GPU writes loaned messages and reads
# received ones in place through their device addresses). Those tests run only when PSYNE_CUDA_TESTS=1, which this script
# sets; without it (plain `cargo test`) they print that they were skipped.
#
# Needs: an NVIDIA driver new enough for CUDA 12.8 (libcuda.so; no toolkit needed: cudarc loads
# the driver at run time) and one visible device (device 0 is used).
#
# Usage: scripts/gpu-check.sh            (from anywhere inside the repository)
# Env:   CARGO_TARGET_DIR is honoured; extra args are passed to the test binary.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
else
    echo "gpu-check: nvidia-smi not found; the tests will fail if libcuda.so cannot be loaded" >&2
fi

echo "gpu-check: building psyne with --features cuda"
cargo build -p psyne --features cuda --all-targets

echo "gpu-check: running the CUDA slab tests (PSYNE_CUDA_TESTS=1)"
PSYNE_CUDA_TESTS=1 cargo test -p psyne --features cuda --lib -- \
    slab::tests::cuda_tests --nocapture --test-threads=1 "$@"

echo "gpu-check: running the CUDA channel tests (messages written and read in place by the GPU)"
PSYNE_CUDA_TESTS=1 cargo test -p psyne --features cuda --test cuda -- \
    --nocapture --test-threads=1 "$@"

echo "gpu-check: OK"
