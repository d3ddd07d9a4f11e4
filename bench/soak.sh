#!/usr/bin/env bash
# Soak: mixed traffic through a real `mcpgw serve` for SOAK_SECONDS, sampled every 5 s, to see leaks and drift.
#
# Starts the official MCP Python SDK as upstream (tests/interop/sdk_upstream.py stateful-sse: sessions, SSE
# answers, GET streams) and the gateway (mcpgw.dev.json with absolute paths, --audit-log to a file, --admin-listen on
# a free port), then bench/soak.py runs these loops at once (rates at SOAK_SCALE 1; details in soak.py):
#   allowed tools/call in MCP sessions: acme bot1 by client certificate (8/s), bot2 by RS256 token (6/s), bot3 by
#     HS256 token (3/s); sessions ended (DELETE) and re-initialized every 200 calls; tokens re-minted every 120 s
#   denied tools/call (R3, A1/R4, globex X3; 5/s); rate-limited bursts (8 write_report every 7 s against L1, burst 5)
#   unauthenticated requests (none, malformed, unknown kid; half on new connections; 4/s); tools/list (2/s)
#   globex tools/call on a keep-alive connection (8/s) and on a new TLS connection each (3/s)
#   GET streams: 2 loops of initialize + GET held 2-8 s + close + DELETE, one globex stream held 90 s at a time
#   SIGHUP every 30 s (t = 30, 60, ...) and POST /reload every 30 s (t = 15, 45, ...)
# Every 5 s: gateway RSS and threads (/proc/PID/status), open fds (/proc/PID/fd), CPU, p50/p99/max of the window's
# tools/call, req/s, errors (unexpected answers), audit records vs requests answered (and /metrics gauges).
# At the end, with the gateway stopped (SIGTERM, so its audit log is complete): bench/soak-results.csv, docs/soak.png
# (RSS, fds/threads, p50/p99, req/s and errors over time) and a summary (also in $SOAK_DIR/summary.json); audit
# records are matched to the requests sent by JSON-RPC id.
#
# Usage: bench/soak.sh
# Environment:
#   SOAK_SECONDS   duration (default 600)          SOAK_INTERVAL  sampling period (default 5)
#   SOAK_SCALE     multiplies every loop's rate (default 2: about 85 requests/s; acme's allowed calls, ~17/s per
#                  unit, stay under its L2 limit of 50/s up to about 2.5)
#   MCPGW_BIN      gateway binary (default .build/release/mcpgw if built in the last 30 minutes, else
#                  .build/debug/mcpgw; this script never builds)
#   SOAK_DIR       work folder (default /tmp/mcpgw-soak): config, logs, audit log, samples
#   SOAK_CSV, SOAK_PNG  outputs (default bench/soak-results.csv, docs/soak.png)
#   SOAK_PYTHON    Python with the mcp SDK (default the project's .venv); matplotlib is installed into it from
#                  bench/requirements-soak.txt if missing
# Loopback only; everything started is stopped on exit (SIGTERM, bounded waits, then SIGKILL).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
case "${1:-}" in
  -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
esac

SECONDS_TOTAL=${SOAK_SECONDS:-600}
INTERVAL=${SOAK_INTERVAL:-5}
SCALE=${SOAK_SCALE:-2}
W=${SOAK_DIR:-/tmp/mcpgw-soak}
CSV=${SOAK_CSV:-$ROOT/bench/soak-results.csv}
PNG=${SOAK_PNG:-$ROOT/docs/soak.png}
PY=${SOAK_PYTHON:-$ROOT/.venv/bin/python}
DRIVER=$ROOT/bench/soak.py

die() { echo "soak.sh: $*" >&2; exit 1; }

if [ -z "${MCPGW_BIN:-}" ]; then
  MCPGW_BIN=$ROOT/.build/debug/mcpgw
  release=$ROOT/.build/release/mcpgw
  if [ -x "$release" ] && [ $(( $(date +%s) - $(stat -c %Y "$release") )) -lt 1800 ]; then MCPGW_BIN=$release; fi
fi
[ -x "$MCPGW_BIN" ] || die "no gateway binary at $MCPGW_BIN (build it, or set MCPGW_BIN)"
[ -x "$PY" ] || die "no Python at $PY (set SOAK_PYTHON)"
"$PY" -c 'import mcp' 2>/dev/null || die "$PY lacks the mcp SDK (pip install -r tests/interop/requirements.txt)"
if ! "$PY" -c 'import matplotlib' 2>/dev/null; then
  echo "soak.sh: installing matplotlib into $PY's environment (bench/requirements-soak.txt)" >&2
  "$PY" -m pip install --quiet -r "$ROOT/bench/requirements-soak.txt" || die "pip install of matplotlib failed"
fi

mkdir -p "$W" || die "cannot create $W"
rm -f "$W"/*.log "$W"/audit.jsonl "$W"/samples.json "$W"/requests.jsonl "$W"/summary.json

# ---------------------------------------------------------------------------------------------- processes
declare -A PID=()
stop() {  # SIGTERM, wait up to $2 s (default 20), then SIGKILL
  local name=$1 limit=${2:-20} p=${PID[$1]:-}
  [ -n "$p" ] || return 0
  kill -TERM "$p" 2>/dev/null
  for _ in $(seq 1 $((limit * 10))); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$p" 2>/dev/null; then
    echo "soak.sh: $name did not stop within ${limit} s; SIGKILL" >&2
    kill -KILL "$p" 2>/dev/null
  fi
  wait "$p" 2>/dev/null
  local rc=$?
  unset "PID[$name]"
  return $rc
}
cleanup() {
  local name
  for name in driver gateway upstream; do stop "$name" 10 2>/dev/null; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {  # name port
  for _ in $(seq 1 300); do
    port_busy "$2" && return 0
    kill -0 "${PID[$1]}" 2>/dev/null || { echo "$1 exited:" >&2; tail -n 20 "$W/$1.log" >&2; return 1; }
    sleep 0.1
  done
  echo "$1 is not listening on 127.0.0.1:$2 after 30 s" >&2; return 1
}

UPORT=$("$PY" "$DRIVER" free-port)
GPORT=$("$PY" "$DRIVER" free-port)
APORT=$("$PY" "$DRIVER" free-port)
[ "$UPORT" != "$GPORT" ] && [ "$GPORT" != "$APORT" ] && [ "$UPORT" != "$APORT" ] || die "port clash, run again"

"$PY" "$ROOT/tests/interop/sdk_upstream.py" stateful-sse "$UPORT" >"$W/upstream.log" 2>&1 &
PID[upstream]=$!
wait_port upstream "$UPORT" || die "the SDK upstream did not start"

"$PY" "$DRIVER" config --work "$W" --port "$GPORT" --upstream "http://127.0.0.1:$UPORT/mcp" \
  --audit-log "$W/audit.jsonl" >/dev/null || die "writing the configuration failed"
(cd "$ROOT" && exec "$MCPGW_BIN" serve --config "$W/mcpgw.json" --audit-log "$W/audit.jsonl" \
  --admin-listen "127.0.0.1:$APORT" --log-level info) >"$W/gateway.log" 2>&1 &
PID[gateway]=$!
wait_port gateway "$GPORT" || die "the gateway did not start (log $W/gateway.log)"
wait_port gateway "$APORT" || die "the admin listener did not start (log $W/gateway.log)"
GW=${PID[gateway]}

echo "soak.sh: gateway $MCPGW_BIN (pid $GW, built $(date -u -r "$MCPGW_BIN" +%Y-%m-%dT%H:%MZ)) on 127.0.0.1:$GPORT," \
     "admin $APORT; upstream SDK stateful-sse on $UPORT; ${SECONDS_TOTAL} s; work folder $W" >&2

"$PY" "$DRIVER" run --port "$GPORT" --admin-port "$APORT" --pid "$GW" --audit "$W/audit.jsonl" --mcpgw "$MCPGW_BIN" \
  --seconds "$SECONDS_TOTAL" --interval "$INTERVAL" --scale "$SCALE" \
  --out "$W/samples.json" --requests-out "$W/requests.jsonl" &
PID[driver]=$!
wait "${PID[driver]}"
DRIVER_RC=$?
unset "PID[driver]"
[ "$DRIVER_RC" = 0 ] || echo "soak.sh: the driver exited with $DRIVER_RC" >&2

# SIGTERM the gateway: it finishes in-flight work (grace 3 s) and writes out its audit log.
stop gateway 30
GW_RC=$?
stop upstream 10
[ "$GW_RC" = 0 ] || echo "soak.sh: the gateway exited with status $GW_RC (log $W/gateway.log)" >&2
grep -ciE ' (error|critical) ' "$W/gateway.log" | xargs -I{} echo "soak.sh: gateway log: {} error/critical lines" >&2

[ -s "$W/samples.json" ] || die "no samples (driver failed)"
"$PY" "$DRIVER" report --samples "$W/samples.json" --requests "$W/requests.jsonl" --audit "$W/audit.jsonl" \
  --csv "$CSV" --png "$PNG" --summary "$W/summary.json" || die "the report failed"
echo "  gateway exit status $GW_RC"
