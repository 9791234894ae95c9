#!/usr/bin/env bash
# Instructions per message under `valgrind --tool=callgrind`: a measure that does not swing with
# the load of a shared VM, for comparing Psyne's hot path before and after a change.
#
# examples/icount.rs runs, in one thread, N iterations of: allocate, write the whole payload,
# send, receive, read the whole payload, release. Each (contender, payload) runs twice, with N1
# and N2 messages; start-up costs the same in both, so
#
#     instructions per message = (Ir(N2) - Ir(N1)) / (N2 - N1)
#
# where Ir is callgrind's total of instructions executed. Contenders: psyne (default builder:
# Wait::default(), no timestamps), psyne/busy-spin (Wait::BusySpin, as psyne_bench), rtrb (by
# value), floor (the payload work alone, no channel). Payloads: 64 (16 u32 words) and emb256
# (psyne_schemas::Embedding256, 1032 bytes). Then the same difference per function for psyne
# (callgrind_annotate of both runs): exclusive (the function's own instructions, split by the
# source file they were inlined from) and inclusive (with its callees).
#
# Usage: scripts/icount.sh            (from anywhere inside the repository; ~1 minute once built)
# Env:   ICOUNT_N1, ICOUNT_N2  messages of the two runs (10000, 110000)
#        ICOUNT_TOP            rows of each breakdown (12)
#        ICOUNT_OUT            where the callgrind.out files are kept (target/icount)
#        CARGO_TARGET_DIR      honoured
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

for tool in valgrind callgrind_annotate; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "icount: '$tool' not found; install valgrind (e.g. apt-get install valgrind)" >&2
        exit 1
    fi
done

n1=${ICOUNT_N1:-10000}
n2=${ICOUNT_N2:-110000}
top=${ICOUNT_TOP:-12}
target=${CARGO_TARGET_DIR:-target}
out=${ICOUNT_OUT:-$target/icount}
bin=$target/release/examples/icount
if ! [ "$n2" -gt "$n1" ] 2>/dev/null; then
    echo "icount: ICOUNT_N2 ($n2) must be a number above ICOUNT_N1 ($n1)" >&2
    exit 1
fi

echo "icount: building the icount example (release profile: optimised, with symbols)" >&2
cargo build --release --quiet -p psyne-examples --example icount
mkdir -p "$out"

# callgrind file of one run: contender, wait, payload, messages.
cg_file() { echo "$out/callgrind.$1.$2.$3.$4.out"; }

# Runs the loop under callgrind; prints the run's total Ir.
measure() {
    local contender=$1 wait=$2 payload=$3 n=$4 file log
    file=$(cg_file "$@")
    log=$file.log
    if ! valgrind --tool=callgrind --callgrind-out-file="$file" "$bin" \
        --contender "$contender" --wait "$wait" --payload "$payload" --messages "$n" \
        >"$log" 2>&1; then
        echo "icount: run failed: $contender $payload $n messages (log: $log)" >&2
        tail -5 "$log" >&2
        exit 1
    fi
    awk '$1 == "totals:" { print $2; found = 1 } END { exit !found }' "$file"
}

# What was measured: the commit, and whether the sources built differ from it.
commit=$(git rev-parse --short HEAD 2>/dev/null || echo "unknown (not a git checkout)")
dirty=$(git status --porcelain --untracked-files=no -- \
    psyne psyne-derive schemas examples Cargo.toml Cargo.lock 2>/dev/null | head -1 || true)
echo "icount: commit $commit${dirty:+ plus uncommitted changes to the sources built}," \
    "$(valgrind --version), N1=$n1, N2=$n2"
echo
printf '%-16s %-8s %12s\n' contender payload instr/msg
for payload in 64 emb256; do
    for spec in psyne:default psyne:busy-spin rtrb:default floor:default; do
        contender=${spec%%:*}
        wait=${spec#*:}
        label=$contender
        [ "$wait" = default ] || label=$contender/$wait
        ir1=$(measure "$contender" "$wait" "$payload" "$n1")
        ir2=$(measure "$contender" "$wait" "$payload" "$n2")
        awk -v l="$label" -v p="$payload" -v a="$ir1" -v b="$ir2" -v n1="$n1" -v n2="$n2" \
            'BEGIN { printf "%-16s %-8s %12.2f\n", l, p, (b - a) / (n2 - n1) }'
    done
done

# Per-message instructions by callgrind_annotate entry: the difference of the two runs.
# $1: extra callgrind_annotate option; $2: "sum" (exclusive: a function's entries, one per
# source file inlined into it, add up) or "max" (inclusive: they nest, the largest is the whole).
breakdown() {
    local opt=$1 mode=$2 payload=$3
    local f1 f2
    f1=$(cg_file psyne default "$payload" "$n1")
    f2=$(cg_file psyne default "$payload" "$n2")
    {
        callgrind_annotate --auto=no --threshold=100 $opt "$f1" | sed 's/^/1 /'
        callgrind_annotate --auto=no --threshold=100 $opt "$f2" | sed 's/^/2 /'
    } | awk -v mode="$mode" -v dn="$((n2 - n1))" '
        $3 ~ /^\(/ && $0 !~ /PROGRAM TOTALS/ {
            run = $1; ir = $2; gsub(",", "", ir); ir += 0
            entry = $0; sub(/^[12] +[0-9,]+ +\( *[0-9.]+%\) +/, "", entry)
            sub(/ \[[^]]*\]$/, "", entry)        # the object file
            if (mode == "max") {                 # key: the function
                sub(/^[^:]*:/, "", entry)
                if (entry ~ /^(\(below main\)|main|__libc_start_main|0x[0-9a-f]+$|std::rt::|std::sys::backtrace::)/)
                    next                         # the frames above icount::main
                if (ir > v[run, entry]) v[run, entry] = ir
            } else {                             # key: source file and function
                sub(/^\/rustc\/[0-9a-f]+\/library\//, "std:", entry)
                sub(/^.*\/index\.crates\.io-[0-9a-f]+\//, "", entry)
                sub("^" ENVIRON["PWD"] "/", "", entry)
                v[run, entry] += ir
            }
            keys[entry] = 1
        }
        END {
            for (k in keys) {
                d = (v[2, k] - v[1, k]) / dn
                if (d >= 0.5 || d <= -0.5) printf "%10.2f  %s\n", d, k
            }
        }' | sort -k1,1 -g -r | head -n "$top"
}

for payload in 64 emb256; do
    echo
    echo "psyne $payload, exclusive instructions per message (source file inlined from: function):"
    breakdown "" sum "$payload"
    echo
    echo "psyne $payload, inclusive instructions per message (function with its callees):"
    breakdown --inclusive=yes max "$payload"
done
