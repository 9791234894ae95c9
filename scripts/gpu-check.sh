#!/usr/bin/env bash
# GPU checks for psyne's `cuda` feature, as one prepared script:
#
#  1. the CUDA slab tests (registration as pinned host memory, device copies through the mapped
#     pointers, unregistration on drop) and the CUDA-registered channel tests
#     (psyne/tests/cuda.rs: the GPU writes loaned messages and reads received ones in place);
#  2. device channels (psyne/src/device): the CPU tests again with the real driver present
#     (psyne/tests/device.rs), then `device_bench --check` (kernel-free: cuMemsetD32Async +
#     cuMemcpyDtoDAsync write a known pattern into device slots in one process, the other
#     process verifies every word after wait_on, over CUDA IPC handles and events) and
#     `device_bench --bench` (device-to-device GB/s and one-way latency of 64 KiB, 1 MiB and
#     64 MiB messages across processes beside a cuMemcpyDtoD floor and an event floor).
#
# The tests run only when PSYNE_CUDA_TESTS=1, which this script sets. Needs an NVIDIA driver new
# enough for CUDA 12.8 (libcuda.so; no toolkit: cudarc loads the driver at run time) and one
# visible device (device 0), with CUDA IPC allowed (not under MIG or WSL).
#
# Usage: scripts/gpu-check.sh --build   build every binary (no GPU needed; do this first)
#        scripts/gpu-check.sh           run the checks from the built binaries (a few minutes;
#                                       builds only what is missing)
# Env:   CARGO_TARGET_DIR is honoured. PSYNE_GPU_CHECK_SKIP_BENCH=1 skips the figures.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

build() {
    cargo build -p psyne --features cuda --tests
    cargo test -p psyne --features cuda --no-run --lib --test cuda --test device
    cargo build --release -p psyne-examples --features cuda --example device_bench
}

if [[ "${1:-}" == "--build" ]]; then
    build
    echo "gpu-check: built"
    exit 0
fi

if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,uuid,driver_version,memory.total --format=csv,noheader || true
else
    echo "gpu-check: nvidia-smi not found; the checks will fail if libcuda.so cannot be loaded" >&2
fi

echo "gpu-check: building what is missing (nothing, after --build)"
build >/dev/null

export PSYNE_CUDA_TESTS=1
step() { echo; echo "gpu-check: $*"; }

step "CUDA slab tests"
cargo test -q -p psyne --features cuda --lib -- slab::tests::cuda_tests --nocapture --test-threads=1

step "CUDA-registered channel tests (messages written and read in place by the GPU)"
cargo test -q -p psyne --features cuda --test cuda -- --nocapture --test-threads=1

step "device channel tests (CPU logic with the real driver loaded)"
cargo test -q -p psyne --features cuda --test device -- --test-threads=1

target="${CARGO_TARGET_DIR:-target}"
step "device channels across processes: kernel-free pattern check"
timeout 120 "$target/release/examples/device_bench" --check

if [[ "${PSYNE_GPU_CHECK_SKIP_BENCH:-0}" != "1" ]]; then
    step "device channels: GB/s and one-way latency (64 KiB, 1 MiB, 64 MiB)"
    timeout 300 "$target/release/examples/device_bench" --bench
fi

echo
echo "gpu-check: OK"
