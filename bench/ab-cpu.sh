#!/usr/bin/env bash
# A/B of two mcpgw binaries by the gateway's own CPU time per call, in paired slices.
#
#   bench/ab-cpu.sh BINARY_A BINARY_B [PAIRS] [SECONDS]   (default 20 pairs of 2 s; dependencies: bench/install-bench-deps.sh)
#
# Both binaries run at once, each pinned to CPU 1 with bench/compare.sh's configuration (TLS + RS256 JWT + policy
# with an argument constraint + rate limit + audit to a file) on its own port; the upstream (nginx) and wrk share
# CPU 0. wrk (32 keep-alive connections) loads one binary for SECONDS, then the other, PAIRS times (the order
# alternates), and each slice's CPU time (user + system, from /proc/PID/stat) is divided by the calls it served.
#
# Why slices and not whole runs: on a shared machine the cost of the same call moves by 20 % or more within a minute.
# Runs one after the other each land in a different minute, and a difference between them may be the machine's.
# Two slices of a pair are seconds apart, so each pair compares the binaries under nearly the same conditions. The
# summary gives each binary's lowest, first-quartile and median cost per call, and the median over pairs of B/A:
# below 1, B costs less.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
C="$ROOT/bench/compare"
W=${BENCH_DIR:-/tmp/mcpgw-bench-ab}
die() { echo "$*" >&2; exit 1; }
[ $# -ge 2 ] || die "usage: bench/ab-cpu.sh BINARY_A BINARY_B [PAIRS] [SECONDS]"
A=$(realpath "$1") B=$(realpath "$2") PAIRS=${3:-20} SECONDS_PER_SLICE=${4:-2}
for binary in "$A" "$B"; do [ -x "$binary" ] || die "not an executable: $binary"; done
for tool in nginx wrk taskset python3; do command -v "$tool" >/dev/null || die "missing $tool: run bench/install-bench-deps.sh"; done
mkdir -p "$W/run" "$W/certs"
source "$ROOT/bench/lib.sh"
trap cleanup EXIT
for port in 9000 9447 9448; do ! port_busy "$port" || die "port $port is in use"; done
bench_credentials
render() { sed -e "s#@BENCH_DIR@#$W#g" "$@"; }
render "$C/upstream.conf" >"$W/upstream.conf"
rm -rf "$W/mcpgw-policies" && mkdir -p "$W/mcpgw-policies/acme" && cp "$C/mcpgw-policy.json" "$W/mcpgw-policies/acme/bench.json"
for port in 9447 9448; do
  rm -f "$W/run/audit-$port.jsonl"
  render -e "s#@PORT@#$port#g" -e "s#@AUDIT_LOG@#$W/run/audit-$port.jsonl#g" "$C/mcpgw-config.json.in" >"$W/mcpgw-$port.json"
done

start upstream taskset -c 0 nginx -p "$W/run/" -c "$W/upstream.conf" -e "$W/run/upstream.err" -g 'daemon off;'
wait_port upstream 9000 || die "the upstream did not start"
start mcpgw_a taskset -c 1 "$A" serve --config "$W/mcpgw-9447.json" --log-level warning
start mcpgw_b taskset -c 1 "$B" serve --config "$W/mcpgw-9448.json" --log-level warning
wait_port mcpgw_a 9447 || die "A did not start (see $W/run/mcpgw_a.log)"
wait_port mcpgw_b 9448 || die "B did not start (see $W/run/mcpgw_b.log)"
for port in 9447 9448; do
  TOKEN=$TOKEN taskset -c 0 wrk -t1 -c32 -d1s -s "$C/post.lua" "https://127.0.0.1:$port/mcp" >/dev/null 2>&1
done
tick=$(getconf CLK_TCK)

# slice PID PORT: loads one binary for SECONDS_PER_SLICE; prints "requests/s cpu_us_per_call".
slice() {
  local pid=$1 port=$2 u0 s0 u1 s1 out n
  read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  out=$(TOKEN=$TOKEN taskset -c 0 wrk -t1 -c32 -d"${SECONDS_PER_SLICE}s" -s "$C/post.lua" "https://127.0.0.1:$port/mcp" 2>&1 | grep RESULT)
  read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  n=$(sed -E 's/.*requests=([0-9]+).*/\1/' <<<"$out")
  [ "${n:-0}" -gt 0 ] || die "no requests completed on port $port: $out"
  awk -v n="$n" -v c=$((u1 - u0 + s1 - s0)) -v t="$tick" -v d="$SECONDS_PER_SLICE" \
    'BEGIN { printf "%d %.1f\n", n / d, c * 1e6 / t / n }'
}

results="$W/run/pairs.txt"
: >"$results"
echo "| pair | A requests/s | A µs/call | B requests/s | B µs/call |"
echo "|---:|---:|---:|---:|---:|"
for pair in $(seq 1 "$PAIRS"); do
  if ((pair % 2)); then
    a=$(slice "${PID[mcpgw_a]}" 9447); b=$(slice "${PID[mcpgw_b]}" 9448)
  else
    b=$(slice "${PID[mcpgw_b]}" 9448); a=$(slice "${PID[mcpgw_a]}" 9447)
  fi
  echo "$a $b" >>"$results"
  read -r ra ca rb cb <<<"$a $b"
  echo "| $pair | $ra | $ca | $rb | $cb |"
done
echo
echo "A = $A"
echo "B = $B"
python3 - "$results" <<'EOF'
import statistics, sys
rows = [list(map(float, line.split())) for line in open(sys.argv[1]) if line.strip()]
a = sorted(row[1] for row in rows)
b = sorted(row[3] for row in rows)
ratios = [row[3] / row[1] for row in rows]
quartile = lambda values: values[(len(values) - 1) // 4]
for name, costs in (("A", a), ("B", b)):
    print(f"- {name}: CPU µs per call (user + system): lowest {costs[0]:.1f}, first quartile {quartile(costs):.1f}, "
          f"median {statistics.median(costs):.1f}")
print(f"- B/A over {len(rows)} pairs: median {statistics.median(ratios):.3f}, "
      f"middle half {sorted(ratios)[len(ratios) // 4]:.3f}–{sorted(ratios)[(3 * len(ratios)) // 4]:.3f}")
EOF
