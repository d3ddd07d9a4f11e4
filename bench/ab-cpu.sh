#!/usr/bin/env bash
# A/B of two mcpgw binaries by the gateway's own CPU time per call, in alternating runs.
#
#   bench/ab-cpu.sh BINARY_A BINARY_B [ROUNDS]      (default 3 rounds; dependencies: bench/install-bench-deps.sh)
#
# Each run starts the upstream (nginx, CPU 0) and the binary (CPU 1) with bench/compare.sh's configuration (TLS +
# RS256 JWT + policy with an argument constraint + rate limit + audit to a file), warms up for 1 s, loads it for 6 s
# with wrk (32 keep-alive connections, CPU 0), and prints requests/s and the gateway's user and system CPU
# microseconds per call (from /proc/PID/stat). On a shared machine requests/s moves by ±10 % between runs; CPU time
# per call moves much less, so a change of a few percent shows here first. Runs alternate A, B, A, B… so that drift
# in the machine's load falls on both.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
C="$ROOT/bench/compare"
W=${BENCH_DIR:-/tmp/mcpgw-bench-ab}
die() { echo "$*" >&2; exit 1; }
[ $# -ge 2 ] || die "usage: bench/ab-cpu.sh BINARY_A BINARY_B [ROUNDS]"
A=$(realpath "$1") B=$(realpath "$2") ROUNDS=${3:-3}
for binary in "$A" "$B"; do [ -x "$binary" ] || die "not an executable: $binary"; done
for tool in nginx wrk taskset; do command -v "$tool" >/dev/null || die "missing $tool: run bench/install-bench-deps.sh"; done
mkdir -p "$W/run" "$W/certs"
source "$ROOT/bench/lib.sh"
trap cleanup EXIT
for port in 9000 9447; do ! port_busy "$port" || die "port $port is in use"; done
bench_credentials
render() { sed -e "s#@BENCH_DIR@#$W#g" "$@"; }
render "$C/upstream.conf" >"$W/upstream.conf"
rm -rf "$W/mcpgw-policies" && mkdir -p "$W/mcpgw-policies/acme" && cp "$C/mcpgw-policy.json" "$W/mcpgw-policies/acme/bench.json"
render -e "s#@PORT@#9447#g" -e "s#@AUDIT_LOG@#$W/run/mcpgw-audit.jsonl#g" "$C/mcpgw-config.json.in" >"$W/mcpgw.json"

start upstream taskset -c 0 nginx -p "$W/run/" -c "$W/upstream.conf" -e "$W/run/upstream.err" -g 'daemon off;'
wait_port upstream 9000 || die "the upstream did not start"

# run BINARY: one measured run; prints "requests/s user_us sys_us".
run() {
  rm -f "$W/run/mcpgw-audit.jsonl"
  start mcpgw taskset -c 1 "$1" serve --config "$W/mcpgw.json" --log-level warning
  wait_port mcpgw 9447 || die "mcpgw did not start (see $W/run/mcpgw.log)"
  TOKEN=$TOKEN taskset -c 0 wrk -t1 -c32 -d1s -s "$C/post.lua" https://127.0.0.1:9447/mcp >/dev/null 2>&1
  local pid=${PID[mcpgw]} u0 s0 u1 s1 out n
  read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  out=$(TOKEN=$TOKEN taskset -c 0 wrk -t1 -c32 -d6s -s "$C/post.lua" https://127.0.0.1:9447/mcp 2>&1 | grep RESULT)
  read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  stop mcpgw || true
  n=$(sed -E 's/.*requests=([0-9]+).*/\1/' <<<"$out")
  [ "${n:-0}" -gt 0 ] || die "no requests completed: $out"
  local tick; tick=$(getconf CLK_TCK)
  awk -v n="$n" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v t="$tick" \
    'BEGIN { printf "%d %.1f %.1f\n", n / 6, u * 1e6 / t / n, s * 1e6 / t / n }'
}

echo "| round | binary | requests/s | user µs/call | system µs/call |"
echo "|---:|---|---:|---:|---:|"
declare -A SUM_U SUM_S SUM_R
for round in $(seq 1 "$ROUNDS"); do
  for label in A B; do
    binary=$([ "$label" = A ] && echo "$A" || echo "$B")
    read -r rps user sys < <(run "$binary")
    echo "| $round | $label | $rps | $user | $sys |"
    SUM_R[$label]=$(awk -v a="${SUM_R[$label]:-0}" -v b="$rps" 'BEGIN { print a + b }')
    SUM_U[$label]=$(awk -v a="${SUM_U[$label]:-0}" -v b="$user" 'BEGIN { print a + b }')
    SUM_S[$label]=$(awk -v a="${SUM_S[$label]:-0}" -v b="$sys" 'BEGIN { print a + b }')
  done
done
echo
echo "A = $A, B = $B; means over $ROUNDS rounds:"
for label in A B; do
  awk -v l="$label" -v r="${SUM_R[$label]}" -v u="${SUM_U[$label]}" -v s="${SUM_S[$label]}" -v n="$ROUNDS" \
    'BEGIN { printf "- %s: %.0f requests/s, %.1f µs user + %.1f µs system per call\n", l, r / n, u / n, s / n }'
done
