#!/usr/bin/env bash
# Fuzzes psyne's shared ring against a hostile peer (psyne/fuzz, target `shared_ring`) for a
# bounded time, under AddressSanitizer, with libFuzzer.
#
#   .ci/fuzz.sh [SECONDS]      (default 60)
#
# First replays every input in psyne/fuzz/regressions/ (each a crash or hang the fuzzer found:
# they must all pass), then fuzzes for SECONDS from the committed seeds
# (psyne/fuzz/seeds/shared_ring/) plus the local working corpus (psyne/fuzz/corpus/, ignored by
# git). Fails on any crash, sanitizer report, leak or timeout (an input running 5 s: a honest
# call that hangs); the failing input is left in psyne/fuzz/artifacts/shared_ring/ and its path
# printed. Installs cargo-fuzz if missing; nightly flags come from RUSTC_BOOTSTRAP=1 on stable.
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

step "cargo fuzz build shared_ring   (release, debug assertions, AddressSanitizer)"
cargo fuzz build shared_ring
bin=target/x86_64-unknown-linux-gnu/release/shared_ring
mkdir -p corpus/shared_ring artifacts/shared_ring
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# Runs the fuzz binary with "$@" in the background (so that its pid is known), then removes any
# shared-memory names it left behind (`psyne-fuzz-<pid>-<n>`: a crashed input skips its own
# clean-up). Returns its exit status.
run_bin() {
  local pid rc=0
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

step "replay psyne/fuzz/regressions/"
shopt -s nullglob
failed=()
for input in regressions/*; do
  [ -f "$input" ] || continue
  if run_bin -timeout=5 -rss_limit_mb=2048 "$input"; then
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

step "fuzz shared_ring for ${secs}s"
rc=0
run_bin -timeout=5 -rss_limit_mb=2048 -max_len=512 -max_total_time="$secs" \
  -print_final_stats=1 -artifact_prefix=artifacts/shared_ring/ \
  corpus/shared_ring seeds/shared_ring || rc=$?
if ((rc != 0)); then
  report
  echo "the fuzzer failed (exit $rc); the input is under psyne/fuzz/artifacts/shared_ring/:" >&2
  ls -t artifacts/shared_ring/ | head -n 3 >&2
  echo "replay it with PSYNE_FUZZ_TRACE=1 $bin <input>" >&2
  exit 1
fi
grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1
runs=$(sed -n -E 's/^Done ([0-9]+) runs in ([0-9]+) second.*/\1 \2/p' "$log" | tail -n 1)
read -r n s <<<"${runs:-0 0}"
echo "fuzz: $n executions in ${s}s ($((s > 0 ? n / s : 0))/s), no crash, no timeout"
