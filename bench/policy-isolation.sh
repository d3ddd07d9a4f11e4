#!/usr/bin/env bash
# Tenant isolation under adversarial policy load: does a tenant sending heavy calls delay another tenant's calls?
#
# Two bench tenants on one gateway (policies in the work folder, no _global documents; mTLS with certs-dev/):
#   acme   ("heavy")  rule H: allow tool t with detectors path_traversal, sql_injection, shell_metacharacters
#                     on every argument value and key ("*"), so every leaf is canonicalised
#   globex ("light")  rule L: a plain allow of tool t
# The upstream is bench/compare's nginx answering every POST with a canned result at once (bench/compare/
# upstream.conf, rendered on another port and with no body-size limit, since the heavy bodies are 4 MiB).
#
# For each setup (see BENCH_SETUPS) the gateway is started afresh and bench/policy_isolation.py run measures:
#   phase 1 (baseline)    globex sends N small tools/call, sequentially, on one keep-alive HTTPS connection
#   phase 2 (under load)  the same, while BENCH_HEAVY worker processes of acme send ~4 MiB adversarial tools/call
#                         bodies back to back (U+FDFA, 13-deep percent-encoding, 9,999 leaves, strings holding
#                         nested JSON, a long path with combining marks; rotating), each recording its answer
#   alongside both phases, one more globex client (no certificate) sends a call every 0.2 s with a bearer token the
#   gateway has not seen (its RS256 check is offloaded to the same thread pool as the large decisions)
# and the report gives p50/p90/p99/max per phase, the ratios, the gateway-side view (audit latency_ms of the light
# calls), the fresh-token calls, the heavy calls' latencies and answers (or how long they were still in flight at
# the end), and per gateway thread its CPU time and run-queue wait (/proc schedstat). About 60-70 s in all.
# The "machine CPU busy" column reads /proc/stat, which also sees work in other containers on the same VM: a baseline
# well above ~50 % busy was disturbed by such work and its ratios are not worth much; run again.
#
# Setups (BENCH_SETUPS, space-separated, default "shared pinned shared-idlepool pinned-idlepool"):
#   shared    nothing pinned: the gateway (one event loop per CPU), nginx and the clients share all CPUs
#   pinned    the gateway on CPU 0 (taskset -c 0: 1 event loop + NIO's blocking pool), nginx and all clients on CPU 1
#   *-idlepool  diagnostic variant of either: once the heavy load runs, the gateway's blocking-pool threads
#             (SGLTN-TP-*, where decisions on bodies >= 64 KiB run) are put under SCHED_IDLE, so they only get CPU
#             time no event loop wants; if the light tenant's tail then returns to its baseline, the delay was CPU
#             contention from the offloaded decisions, not work on the event loop
#
# Usage: bench/policy-isolation.sh [--perf]
#   --perf   also record the gateway with `perf record -e cpu-clock -g` for BENCH_PERF_SECS during phase 2 of each
#            setup and print the top symbols (per thread name and overall)
# Environment:
#   MCPGW_BIN        gateway binary (default .build/release/mcpgw, else .build/debug/mcpgw)
#   BENCH_REQUESTS   light calls per phase (default 6000); BENCH_HEAVY heavy workers (default 3)
#   BENCH_MAX_SECS   deadline of each light phase (default 25); BENCH_PERF_SECS (default 5)
#   BENCH_DIR        work folder (default /tmp/mcpgw-bench-isolation): config, policies, logs, results
#   BENCH_PYTHON     Python (default the project's .venv)
# Ports 127.0.0.1:9010 (upstream) and 9450 (gateway). Loopback only; everything started is stopped on exit.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PERF=0
for arg in "$@"; do
  case "$arg" in
    --perf) PERF=1 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg (see --help)" >&2; exit 2 ;;
  esac
done

W=${BENCH_DIR:-/tmp/mcpgw-bench-isolation}
N=${BENCH_REQUESTS:-6000}
HEAVY=${BENCH_HEAVY:-3}
MAXS=${BENCH_MAX_SECS:-25}
PERF_SECS=${BENCH_PERF_SECS:-5}
SETUPS=${BENCH_SETUPS:-shared pinned shared-idlepool pinned-idlepool}
PY=${BENCH_PYTHON:-$ROOT/.venv/bin/python}
UPORT=9010
GPORT=9450
if [ -z "${MCPGW_BIN:-}" ]; then
  MCPGW_BIN=$ROOT/.build/release/mcpgw
  [ -x "$MCPGW_BIN" ] || MCPGW_BIN=$ROOT/.build/debug/mcpgw
fi
DRIVER=$ROOT/bench/policy_isolation.py

die() { echo "policy-isolation.sh: $*" >&2; exit 1; }
[ -x "$MCPGW_BIN" ] || die "no gateway binary at $MCPGW_BIN (set MCPGW_BIN)"
"$PY" -c 'import ssl, http.client' 2>/dev/null || die "no usable Python at $PY (set BENCH_PYTHON)"
for cmd in nginx taskset timeout; do command -v "$cmd" >/dev/null 2>&1 || die "missing: $cmd (bench/install-bench-deps.sh)"; done
[ "$PERF" = 0 ] || command -v perf >/dev/null 2>&1 || die "--perf needs perf"
[[ $SETUPS == *pinned* ]] && { taskset -c 1 true 2>/dev/null || die "the pinned setup needs 2 CPUs (set BENCH_SETUPS=shared)"; }
# Process handling (start, stop, wait_port, cleanup on exit) and port_busy, shared with the other benchmarks.
source "$ROOT/bench/lib.sh"
for p in $UPORT $GPORT; do port_busy "$p" && die "127.0.0.1:$p is already in use"; done

mkdir -p "$W/run" || die "cannot create $W"
rm -rf "$W"/run/* "$W/policies"

# ---------------------------------------------------------------------------------------------- upstream
# bench/compare's upstream, on UPORT, with its pid/log in our work folder and no request-body limit (nginx's
# default 1 MiB would answer 413 to the heavy calls the policy lets through).
sed -e "s#@BENCH_DIR@#$W#g" -e "s#127\.0\.0\.1:9000#127.0.0.1:$UPORT#" \
    -e "s#access_log off;#access_log off; client_max_body_size 0;#" "$ROOT/bench/compare/upstream.conf" > "$W/upstream.conf"
grep -q "127.0.0.1:$UPORT" "$W/upstream.conf" && grep -q client_max_body_size "$W/upstream.conf" ||
  die "bench/compare/upstream.conf changed shape; cannot render it"

"$PY" "$DRIVER" config --work "$W" --port "$GPORT" --upstream "http://127.0.0.1:$UPORT/mcp" \
  --audit-log "$W/run/audit.jsonl" >/dev/null || die "writing the configuration failed"
"$MCPGW_BIN" policy check "$W/policies" >"$W/run/policy-check.txt" 2>&1 || { cat "$W/run/policy-check.txt" >&2; die "bench policies do not load"; }

# How busy the machine is before we start (all CPUs, /proc/stat: also sees work in other PID namespaces on this VM).
busy_now() { awk '/^cpu /{b=$2+$3+$4+$7+$8+$9; t=b+$5+$6; print b, t}' /proc/stat; }
read -r B0 T0 < <(busy_now); sleep 2; read -r B1 T1 < <(busy_now)
IDLE_BUSY=$(awk -v b=$((B1 - B0)) -v t=$((T1 - T0)) 'BEGIN{printf "%.0f", t ? 100 * b / t : 0}')
[ "$IDLE_BUSY" -gt 10 ] && echo "warning: the CPUs are ${IDLE_BUSY}% busy before the run (other work, maybe outside this container): numbers will be noisy" >&2
LOAD=$(cut -d' ' -f1 /proc/loadavg)
echo "gateway $MCPGW_BIN; work folder $W; $N light calls per phase, $HEAVY heavy workers; setups: $SETUPS" >&2
awk -v l="$LOAD" 'BEGIN{exit !(l > 0.5)}' && echo "warning: load average $LOAD before the run: numbers will be noisy" >&2

RESULTS=()
AUDITS=()
PERFS=()
for setup in $SETUPS; do
  EXTRA=()
  [[ $setup == *-idlepool ]] && EXTRA=(--idle-pool)
  case ${setup%-idlepool} in
    shared) GW_PIN=(); CL_PIN=(); UP_PIN=(); GW_CPUS=""; CL_CPUS="" ;;
    pinned) GW_PIN=(taskset -c 0); CL_PIN=(taskset -c 1); UP_PIN=(taskset -c 1); GW_CPUS="0"; CL_CPUS="1" ;;
    *) die "unknown setup $setup (shared, pinned, shared-idlepool, pinned-idlepool)" ;;
  esac
  rm -f "$W/run/audit.jsonl"
  start "upstream-$setup" "${UP_PIN[@]}" nginx -p "$W/run/" -c "$W/upstream.conf" -e "$W/run/upstream.err" -g 'daemon off;'
  wait_port "upstream-$setup" $UPORT || die "the upstream did not start"
  start "mcpgw-$setup" "${GW_PIN[@]}" "$MCPGW_BIN" serve --config "$W/mcpgw.json" --log-level info
  wait_port "mcpgw-$setup" $GPORT || die "the gateway did not start (log $W/run/mcpgw-$setup.log)"
  GW=${PID[mcpgw-$setup]}
  echo "$setup: gateway pid $GW ($(grep -o 'event_loops=[0-9]*' "$W/run/mcpgw-$setup.log" | head -n 1 || echo 'event loops ?'))" >&2
  PERF_ARGS=()
  [ "$PERF" = 1 ] && PERF_ARGS=(--perf-pid "$GW" --perf-out "$W/run/perf-$setup.data" --perf-seconds "$PERF_SECS")
  timeout 200 "${CL_PIN[@]}" "$PY" "$DRIVER" run --port "$GPORT" --label "$setup" --out "$W/run/result-$setup.json" \
    --requests "$N" --heavy-workers "$HEAVY" --max-seconds "$MAXS" --client-cpus "$CL_CPUS" --gateway-cpus "$GW_CPUS" \
    --gateway-pid "$GW" "${EXTRA[@]}" "${PERF_ARGS[@]}" || echo "$setup: the driver failed (exit $?)" >&2
  stop "mcpgw-$setup"     # SIGTERM: the audit log is written out
  stop "upstream-$setup"
  if [ -s "$W/run/result-$setup.json" ]; then
    RESULTS+=("$W/run/result-$setup.json")
    cp "$W/run/audit.jsonl" "$W/run/audit-$setup.jsonl" 2>/dev/null
    AUDITS+=("$W/run/audit-$setup.jsonl")
    [ "$PERF" = 1 ] && [ -s "$W/run/perf-$setup.data" ] && PERFS+=("$setup")
  fi
done
[ ${#RESULTS[@]} -gt 0 ] || die "no setup produced results (logs in $W/run)"

# ---------------------------------------------------------------------------------------------- report
{
  echo "### Tenant isolation under adversarial policy load (bench/policy-isolation.sh)"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs ($(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -n 1)), load average $LOAD and CPUs ${IDLE_BUSY}% busy (2 s sample) before the run;" \
       "mcpgw $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null) ($MCPGW_BIN, built $(date -u -r "$MCPGW_BIN" +%Y-%m-%dT%H:%MZ))."
  echo
  echo "Setups: \`shared\` nothing pinned (gateway: one event loop per CPU + NIO's blocking pool, where decisions on bodies" \
       ">= 64 KiB run); \`pinned\` gateway on CPU 0 (1 event loop), nginx and all clients on CPU 1; \`-idlepool\`" \
       "(diagnostic) the gateway's blocking-pool threads under SCHED_IDLE once the heavy load runs."
  echo
  "$PY" "$DRIVER" report "${RESULTS[@]}" --audit "${AUDITS[@]}"
  for setup in "${PERFS[@]}"; do
    data=$W/run/perf-$setup.data
    echo
    echo "perf, $setup, phase 2 ($PERF_SECS s, cpu-clock, self time): CPU by thread, top symbols overall, top symbols of the event loops"
    echo
    echo '```'
    perf report -i "$data" --stdio --no-children --sort comm -g none -q 2>/dev/null | sed 's/[[:space:]]*$//' | grep -v '^$' | head -n 8
    echo
    perf report -i "$data" --stdio --no-children --sort comm,symbol -g none -q 2>/dev/null |
      sed -e 's/[[:space:]]*-[[:space:]]*-[[:space:]]*$//' -e 's/[[:space:]]*$//' | grep -v '^$' | cut -c1-160 | head -n 20
    loops=$(perf report -i "$data" --stdio --no-children --sort comm -g none -q 2>/dev/null | awk '$2 ~ /^NIO-ELT/ {print $2}' | paste -sd, -)
    if [ -n "$loops" ]; then
      echo
      perf report -i "$data" --stdio --no-children --comms "$loops" --sort comm,symbol -g none -q 2>/dev/null |
        sed -e 's/[[:space:]]*-[[:space:]]*-[[:space:]]*$//' -e 's/[[:space:]]*$//' | grep -v '^$' | cut -c1-160 | head -n 12
    fi
    echo '```'
  done
} | tee "$W/results.md"
