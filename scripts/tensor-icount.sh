#!/usr/bin/env bash
# Instructions per message of psyne/benches/tensor.rs's contenders under
# `valgrind --tool=callgrind` (issue 14's instruction target), as scripts/icount.sh does for the
# typed path: each (contender, payload) runs twice, with N1 and N2 messages, and
#
#     instructions per message = (Ir(N2) - Ir(N1)) / (N2 - N1)
#
# Contenders (see the bench's module doc): typed, typed-opaque (the typed path with the
# payload's length hidden from the optimiser), raw (allocate_bytes / recv, no description),
# tx-only (the tensor producer with a raw receive), tensor (chunked loops), tensor-flat (loops
# over the slices), tensor-rows (rows of a compile-time width) and tensor-array (one array of
# the compile-time element count: the typed loops, so against typed it is the description's
# cost alone; issue 14's 1.2x target). Payloads: emb256 (1032 bytes) and 64k (65536 bytes).
#
# Usage: scripts/tensor-icount.sh [contender...]   (default: all eight; ~2 minutes once built)
# Env:   TENSOR_N1, TENSOR_N2  messages of the two runs (2000, 12000)
#        TENSOR_OUT            where the callgrind.out files are kept (target/tensor-icount)
#        CARGO_TARGET_DIR      honoured
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v valgrind >/dev/null 2>&1; then
    echo "tensor-icount: 'valgrind' not found; install valgrind (e.g. apt-get install valgrind)" >&2
    exit 1
fi

n1=${TENSOR_N1:-2000}
n2=${TENSOR_N2:-12000}
target=${CARGO_TARGET_DIR:-target}
out=${TENSOR_OUT:-$target/tensor-icount}
if ! [ "$n2" -gt "$n1" ] 2>/dev/null; then
    echo "tensor-icount: TENSOR_N2 ($n2) must be a number above TENSOR_N1 ($n1)" >&2
    exit 1
fi
contenders=("$@")
[ ${#contenders[@]} -gt 0 ] || contenders=(typed typed-opaque raw tx-only tensor tensor-flat tensor-rows tensor-array)

echo "tensor-icount: building the tensor bench (bench profile: optimised, with symbols)" >&2
bin=$(cargo bench -p psyne --bench tensor --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
if [ -z "$bin" ] || ! [ -x "$bin" ]; then
    echo "tensor-icount: could not build the tensor bench" >&2
    exit 1
fi
mkdir -p "$out"

# Runs one loop under callgrind; prints the run's total Ir.
measure() {
    local contender=$1 payload=$2 n=$3 file log
    file="$out/callgrind.$contender.$payload.$n.out"
    log=$file.log
    if ! PSYNE_TENSOR_ICOUNT="$contender:$payload:$n" valgrind --tool=callgrind \
        --callgrind-out-file="$file" "$bin" >"$log" 2>&1; then
        echo "tensor-icount: run failed: $contender $payload $n messages (log: $log)" >&2
        tail -5 "$log" >&2
        exit 1
    fi
    awk '$1 == "totals:" { print $2; found = 1 } END { exit !found }' "$file"
}

commit=$(git rev-parse --short HEAD 2>/dev/null || echo "unknown (not a git checkout)")
dirty=$(git status --porcelain --untracked-files=no -- \
    psyne psyne-derive schemas Cargo.toml Cargo.lock 2>/dev/null | head -1 || true)
echo "tensor-icount: commit $commit${dirty:+ plus uncommitted changes to the sources built}," \
    "$(valgrind --version), N1=$n1, N2=$n2"
echo
printf '%-14s %-8s %12s\n' contender payload instr/msg
for payload in emb256 64k; do
    for contender in "${contenders[@]}"; do
        ir1=$(measure "$contender" "$payload" "$n1")
        ir2=$(measure "$contender" "$payload" "$n2")
        awk -v l="$contender" -v p="$payload" -v a="$ir1" -v b="$ir2" -v n1="$n1" -v n2="$n2" \
            'BEGIN { printf "%-14s %-8s %12.2f\n", l, p, (b - a) / (n2 - n1) }'
    done
done
