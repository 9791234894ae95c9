#!/usr/bin/env bash
# Fuzzes psyne (psyne/fuzz) for a bounded time per target, under AddressSanitizer, with
# libFuzzer: `shared_ring` (a hostile peer writing a shared ring's memory), `shared_topologies`
# (the same against shared many-producers and broadcast channels) and `net_decoder`
# (a hostile TCP peer's bytes into the handshake and frame decoders).
#
#   .ci/fuzz.sh [SECONDS]      (default 60, for each target)
#
# For each target, first replays every input in its regressions (each a crash or hang the fuzzer
# found: they must all pass; shared_ring's are the files directly in psyne/fuzz/regressions/,
# the others' those in psyne/fuzz/regressions/TARGET/), then fuzzes for SECONDS from the
# committed seeds (psyne/fuzz/seeds/TARGET/) plus the local working corpus
# (psyne/fuzz/corpus/TARGET/, ignored by git). Fails on any crash, sanitizer report, leak or
# timeout (an input running 5 s: a honest call that hangs); the failing input is left in
# psyne/fuzz/artifacts/TARGET/ and its path printed. Installs cargo-fuzz if missing; nightly
# flags come from RUSTC_BOOTSTRAP=1 on stable.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
case $secs in
  '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac
# The newest cargo-fuzz, which builds on Rust 1.95 with its own lock file (~2.5 min on two cores).
cargo_fuzz_version=0.13.2

step() { printf '\n=== %s\n' "$*"; }

if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $cargo_fuzz_version"; then
  step "cargo install cargo-fuzz --version $cargo_fuzz_version --locked"
  cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked
fi

export RUSTC_BOOTSTRAP=1
# As `cargo fuzz run` sets it (the sanitizer runtime and Rust's duplicate globals).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_odr_violation=0}
cd psyne/fuzz

log=$(mktemp)
trap 'rm -f "$log"' EXIT

# Runs fuzz binary $1 with the rest of the arguments in the background (so that its pid is
# known), then removes any shared-memory names it left behind (`psyne-fuzz-<pid>-<n>`: a crashed
# input skips its own clean-up). Returns its exit status.
run_bin() {
  local bin=$1 pid rc=0
  shift
  "$bin" "$@" >"$log" 2>&1 &
  pid=$!
  wait "$pid" || rc=$?
  rm -f /dev/shm/psyne-fuzz-"$pid"-*
  return "$rc"
}

# What a failed run said: its report without the per-input progress lines.
report() {
  grep -v -E '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse|INITED)' "$log" | tail -n 80
}

# Builds, replays the regressions in folder $2 (files directly in it), and fuzzes target $1 with
# inputs of at most $3 bytes for $secs seconds.
fuzz_target() {
  local target=$1 regressions=$2 max_len=$3
  local bin=target/x86_64-unknown-linux-gnu/release/$target
  step "cargo fuzz build $target   (release, debug assertions, AddressSanitizer)"
  cargo fuzz build "$target"
  mkdir -p "corpus/$target" "artifacts/$target"

  step "replay $regressions"
  local failed=() input
  for input in "$regressions"/*; do
    [ -f "$input" ] || continue
    if run_bin "$bin" -timeout=5 -rss_limit_mb=2048 "$input"; then
      echo "ok      $input"
    else
      echo "FAILED  $input"
      report
      failed+=("$input")
    fi
  done
  if ((${#failed[@]})); then
    echo "regressions failing (${#failed[@]}): ${failed[*]}" >&2
    exit 1
  fi

  step "fuzz $target for ${secs}s"
  local rc=0
  run_bin "$bin" -timeout=5 -rss_limit_mb=2048 -max_len="$max_len" -max_total_time="$secs" \
    -print_final_stats=1 -artifact_prefix="artifacts/$target/" \
    "corpus/$target" "seeds/$target" || rc=$?
  if ((rc != 0)); then
    report
    echo "the fuzzer failed (exit $rc); the input is under psyne/fuzz/artifacts/$target/:" >&2
    ls -t "artifacts/$target/" | head -n 3 >&2
    echo "replay it with PSYNE_FUZZ_TRACE=1 $bin <input>" >&2
    exit 1
  fi
  grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1
  local runs n s
  runs=$(sed -n -E 's/^Done ([0-9]+) runs in ([0-9]+) second.*/\1 \2/p' "$log" | tail -n 1)
  read -r n s <<<"${runs:-0 0}"
  echo "fuzz $target: $n executions in ${s}s ($((s > 0 ? n / s : 0))/s), no crash, no timeout"
}

shopt -s nullglob
fuzz_target shared_ring regressions 512
fuzz_target shared_topologies regressions/shared_topologies 512
fuzz_target net_decoder regressions/net_decoder 4096
