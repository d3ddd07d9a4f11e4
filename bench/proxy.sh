#!/usr/bin/env bash
# Throughput and latency through mcpgw (TLS + JWT + policy + audit to a file) versus straight to the same demo
# upstream, in the same run, with wrk: an allowed tools/call per request, keep-alive connections.
#   bench/proxy.sh [seconds] [connections] [threads]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}; connections=${2:-32}; threads=${3:-2}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
swift build -c release --product mcpgw >/dev/null
work=$(mktemp -d)
trap 'kill $gateway 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
.build/release/mcpgw demo --listen 127.0.0.1:18543 --policies bench/policies --audit-log "$work/audit.log" --log-level warning 2> "$work/demo.err" &
gateway=$!
for _ in $(seq 1 100); do
  grep -q "demo MCP server http" "$work/demo.err" 2>/dev/null && break
  sleep 0.1
done
upstream=$(grep -o "demo MCP server http://[0-9.:]*/mcp" "$work/demo.err" | awk '{print $4}')
[ -n "$upstream" ] || { cat "$work/demo.err"; exit 1; }
TOKEN=$(.build/release/mcpgw issue-token --tenant acme --agent bot1 --scope tools:read --ttl 1h)
# bench/policies has no rate limits, so every request is forwarded (the benchmark measures forwarding, not 429s).
run() { TOKEN="$2" wrk -t"$threads" -c"$connections" -d"${seconds}s" --latency -s bench/proxy.lua "$1" | grep RESULT; }
echo "direct  $upstream"
direct=$(run "$upstream" "")
echo "  $direct"
echo "gateway https://127.0.0.1:18543/mcp (TLS + JWT + policy + audit)"
through=$(run "https://127.0.0.1:18543/mcp" "$TOKEN")
echo "  $through"
records=$(wc -l < "$work/audit.log")
echo "audit records written: $records"
python3 - "$direct" "$through" <<'PY'
import re, sys
def parse(line): return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", line)}
d, g = parse(sys.argv[1]), parse(sys.argv[2])
print(f"ratio gateway/direct: throughput {g['requests_per_second'] / d['requests_per_second']:.2f}x, "
      f"p50 {g['p50_ms'] / d['p50_ms']:.2f}x, p99 {g['p99_ms'] / d['p99_ms']:.2f}x")
PY
