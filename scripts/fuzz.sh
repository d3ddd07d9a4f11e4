#!/usr/bin/env bash
# Fuzzes mcpgw's parsers of hostile bytes with libFuzzer (and AddressSanitizer).
#
#   scripts/fuzz.sh --list              the targets, one a line
#   scripts/fuzz.sh TARGET SECONDS      build (once) and fuzz TARGET for SECONDS
#   scripts/fuzz.sh --all SECONDS       every target in turn (what CI runs, with 30 s each)
#
# The binary is built into .build-fuzz with `--sanitize=fuzzer --sanitize=address -DFUZZING`. Seeds come from
# Fuzz/corpus/TARGET; what the fuzzer finds to be new coverage is kept in .build-fuzz/corpus/TARGET between runs.
# A crash (or a violated invariant: the targets check round trips and determinism) stops the run: the input is saved
# in .build-fuzz/crashes/TARGET/, and the script prints how to reproduce it. Every crash that is fixed gets its
# input copied to Fuzz/regressions/TARGET/, which the ordinary test run replays (tests/interop/test_fuzz_corpus.py).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGETS=(arguments http1 json jsonrpc jws policy sse tls)

usage() { echo "usage: scripts/fuzz.sh --list | TARGET SECONDS | --all SECONDS" >&2; exit 2; }

if [ "${1:-}" = "--list" ]; then printf '%s\n' "${TARGETS[@]}"; exit 0; fi
[ $# -eq 2 ] || usage
[[ "$2" =~ ^[0-9]+$ ]] || usage

BIN=.build-fuzz/debug/mcpgw-fuzz
build() {
  # `--sanitize` links libFuzzer and ASan; `-Xswiftc -sanitize=…` makes sure every Swift module (not only some) is
  # compiled with coverage instrumentation, without which the fuzzer is blind (checked after each run below).
  swift build --sanitize=fuzzer --sanitize=address -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING \
    --product mcpgw-fuzz --scratch-path .build-fuzz \
    2>&1 | grep -v "Cannot export local symbol" >&2
  [ -x "$BIN" ] || { echo "fuzz build failed" >&2; exit 1; }
}

fuzz() {
  local target=$1 seconds=$2
  local work=.build-fuzz/corpus/$target crashes=.build-fuzz/crashes/$target
  mkdir -p "$work" "$crashes"
  echo "== fuzzing $target for ${seconds}s"
  local log=.build-fuzz/fuzz-$target.log
  if ! MCPGW_FUZZ_TARGET=$target ASAN_OPTIONS=detect_leaks=0 "$BIN" -max_total_time="$seconds" -rss_limit_mb=3072 \
      -max_len=65536 -timeout=10 -print_final_stats=1 -artifact_prefix="$crashes/" "$work" "Fuzz/corpus/$target" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "fuzz target $target failed; the input is in $crashes/ — reproduce with:" >&2
    echo "  swift build && .build/debug/mcpgw-fuzz $target $crashes/<file>" >&2
    return 1
  fi
  local counters
  counters=$(sed -n 's/.*Loaded 1 modules *(\([0-9]*\) inline 8-bit counters.*/\1/p' "$log" | head -n 1)
  if [ "${counters:-0}" -lt 50000 ]; then
    echo "fuzz target $target ran without coverage instrumentation of the gateway's modules (${counters:-no} counters)" >&2
    return 1
  fi
  # What this target reached: the last status line's edges (cov) and features (ft), and the corpus it ended with.
  local reached
  reached=$(grep -E '^#[0-9]+.*cov: [0-9]+' "$log" | tail -n 1 | grep -oE '(cov|ft|corp): [0-9]+(/[0-9]+[a-zA-Z]*)?' | tr '\n' ' ')
  echo "instrumented counters $counters; reached ${reached:-?}; $(grep -E "^stat::number_of_executed_units|^stat::new_units_added" "$log" | tr -s ' ' | tr '\n' ' ')"
}

case "$1" in
  --all)
    build
    status=0
    for target in "${TARGETS[@]}"; do fuzz "$target" "$2" || status=1; done
    exit $status ;;
  *)
    printf '%s\n' "${TARGETS[@]}" | grep -qx "$1" || { echo "unknown target '$1' (scripts/fuzz.sh --list)" >&2; exit 2; }
    build
    fuzz "$1" "$2" ;;
esac
