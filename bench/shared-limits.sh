#!/usr/bin/env bash
# What rate limits shared through Redis cost: one gateway, the same load and policy, its limits local or global.
#
# mcpgw is pinned to CPU 1 (taskset -c 1); wrk, the upstream and redis-server share CPU 0. Every row sends the same
# request as bench/compare.sh: 32 keep-alive connections POSTing an allowed tools/call (bench/compare/post.lua) with
# an RS256 bearer token, to a gateway started afresh for the row with its own configuration and audit log:
#
#   A   local-only limits          no `redis` section; a limit per agent of 1,000,000/s (burst 1,000,000) that
#                                  never triggers, so the row measures what an admitted decision costs
#   B   global limits (Redis)      the same policy, with a `redis` section: the limit is shared (leases of 64 tokens,
#                                  fetched in the background when half spent)
#   B1  global, lease 1            (--with-lease1) the same with `"max_lease": 1`: a Redis round trip for every call
#                                  (what leases buy)
#   C0  local limit, refusing      a limit of 1/s (burst 1): nearly every call is refused with 429
#   C   global limit, refusing     the same through Redis (a refused replica remembers until when the bucket is empty
#                                  and asks Redis nothing meanwhile)
#
# (policies: shared-limits/policy-*.json; configuration: shared-limits/mcpgw-config.json.in). The upstream is nginx
# with a canned JSON-RPC result (compare/upstream.conf, moved to port 9010). Reported per row: requests/s, p50, p99,
# non-2xx answers, Redis scripts run (EVALSHA + EVAL, from INFO commandstats) and calls per script; then B/A
# (goal: requests/s ≥ 0.8×, p99 within 1 ms) and C/C0; and audit records == requests wrk completed, every record the
# expected decision (allow; allow or rate_limited for C0/C). Before a row is loaded, one call is checked: served with
# the canned result (A, B, B1; and a call without a token and a denied call are refused), or the second of two calls
# refused with 429 (C0, C).
#
# Usage: bench/shared-limits.sh [--build] [--with-lease1] [--no-refusing]
#   --build          swift build -c release --product mcpgw first (otherwise the binary must exist)
#   --with-lease1    add row B1
#   --no-refusing    skip rows C0 and C
# Environment:
#   MCPGW_BIN          gateway binary (default .build/release/mcpgw, relative to the repository root)
#   BENCH_SECS         seconds per row (default 10); BENCH_WARMUP_SECS before each row (default 1, 0 = none)
#   BENCH_CONNS        keep-alive connections (default 32)
#   BENCH_DIR          work folder: certificates, rendered configs, logs, results.md (default /tmp/mcpgw-bench-shared-limits)
#   BENCH_PYTHON       Python with PyJWT to mint the token (default: the project's .venv, then python3, else openssl)
# Needs nginx, wrk, openssl, curl, taskset and 2+ CPUs (bench/install-bench-deps.sh), and redis-server + redis-cli
# (scripts/install-deps.sh). Ports 127.0.0.1:9010 (upstream), 9011 (redis-server), 9457 (mcpgw).
# The machines are shared and noisy: compare rows of the same run, as ratios, never absolute numbers across runs.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
C=$ROOT/bench/compare
S=$ROOT/bench/shared-limits
BUILD=0
LEASE1=0
REFUSING=1
for arg in "$@"; do
  case "$arg" in
    --build) BUILD=1 ;;
    --with-lease1) LEASE1=1 ;;
    --no-refusing) REFUSING=0 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg (see --help)" >&2; exit 2 ;;
  esac
done

W=${BENCH_DIR:-/tmp/mcpgw-bench-shared-limits}
D=${BENCH_SECS:-10}
WARM=${BENCH_WARMUP_SECS:-1}
CONNS=${BENCH_CONNS:-32}
MCPGW_BIN=${MCPGW_BIN:-.build/release/mcpgw}
case "$MCPGW_BIN" in /*) ;; *) MCPGW_BIN=$ROOT/$MCPGW_BIN ;; esac
for v in D WARM CONNS; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { echo "$v must be a whole number (got '${!v}')" >&2; exit 2; }
done
[ "$D" -ge 1 ] && [ "$CONNS" -ge 1 ] || { echo "BENCH_SECS and BENCH_CONNS must be >= 1" >&2; exit 2; }
UPSTREAM_PORT=9010
REDIS_PORT=9011
PORT=9457
URL=https://127.0.0.1:$PORT/mcp

die() { echo "shared-limits.sh: $*" >&2; exit 1; }
missing=()
for cmd in nginx wrk openssl curl python3 taskset timeout redis-server redis-cli; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
done
[ ${#missing[@]} -eq 0 ] || die "missing: ${missing[*]} (bench/install-bench-deps.sh; redis-server: scripts/install-deps.sh)"
taskset -c 1 true 2>/dev/null || die "needs at least 2 CPUs (mcpgw on CPU 1, wrk + upstream + redis-server on CPU 0)"

if [ "$BUILD" = 1 ]; then
  (cd "$ROOT" && swift build -c release --product mcpgw) || die "swift build failed"
fi
[ -x "$MCPGW_BIN" ] || die "no mcpgw binary at $MCPGW_BIN: pass --build or set MCPGW_BIN"
for f in "$S/mcpgw-config.json.in" "$S/policy-admitting.json" "$S/policy-refusing.json" "$C/upstream.conf" "$C/post.lua"; do
  [ -f "$f" ] || die "missing $f"
done

source "$ROOT/bench/lib.sh"
for p in $UPSTREAM_PORT $REDIS_PORT $PORT; do
  port_busy "$p" && die "127.0.0.1:$p is already in use (another benchmark still running?)"
done

mkdir -p "$W/run" "$W/certs" || die "cannot create $W"
rm -f "$W"/run/*

rcli() { timeout 10 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }
# redis_scripts: EVALSHA + EVAL calls since the last CONFIG RESETSTAT.
redis_scripts() {
  rcli INFO commandstats | tr -d '\r' | awk -F'[:=,]' '/^cmdstat_(evalsha|eval):/ { n += $3 } END { print n + 0 }'
}

bench_credentials

sed -e "s#@BENCH_DIR@#$W#g" -e "s#127\.0\.0\.1:9000#127.0.0.1:$UPSTREAM_PORT#g" "$C/upstream.conf" > upstream.conf
grep -q "127.0.0.1:$UPSTREAM_PORT" upstream.conf || die "could not move the upstream to port $UPSTREAM_PORT"
for kind in admitting refusing; do
  rm -rf "policies-$kind" && mkdir -p "policies-$kind/acme" && cp "$S/policy-$kind.json" "policies-$kind/acme/bench.json"
done
REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
# config KEY POLICIES REDIS_JSON: renders mcpgw-KEY.json (REDIS_JSON empty: no redis section).
config() {
  local redis=""
  [ -n "$3" ] && redis="\"redis\": $3,"
  sed -e "s#@BENCH_DIR@#$W#g" -e "s#@PORT@#$PORT#g" -e "s#@UPSTREAM_PORT@#$UPSTREAM_PORT#g" \
      -e "s#@POLICIES@#$W/policies-$2#g" -e "s#@AUDIT_LOG@#$W/run/audit-$1.jsonl#g" -e "s#@REDIS@#$redis#" \
      "$S/mcpgw-config.json.in" > "mcpgw-$1.json"
}

# ---------------------------------------------------------------------------------------------- checks
BODY_OK='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"docs/a.txt"}}}'
BODY_DENIED_TOOL='{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_file","arguments":{"path":"docs/a.txt"}}}'
# check_admitting KEY: the allowed call is served; a call without a token and a denied tool are refused.
check_admitting() {
  local r ok=1
  r=$(probe "$URL" "$TOKEN" "$BODY_OK"); served "$r" || { echo "check $1: the allowed call was not served: $r" >&2; ok=0; }
  r=$(probe "$URL" "" "$BODY_OK"); served "$r" && { echo "check $1: a call without a token was served" >&2; ok=0; }
  r=$(probe "$URL" "$TOKEN" "$BODY_DENIED_TOOL"); served "$r" && { echo "check $1: a denied tool was served" >&2; ok=0; }
  [ "$ok" = 1 ]
}
# check_refusing KEY: of two calls in a row, the second is refused by the limit (429, JSON-RPC -31002).
check_refusing() {
  local r
  probe "$URL" "$TOKEN" "$BODY_OK" >/dev/null
  r=$(probe "$URL" "$TOKEN" "$BODY_OK")
  [[ $r == 429\ * && $r == *'-31002'* ]] || { echo "check $1: the second call was not rate limited: $r" >&2; return 1; }
}

# ---------------------------------------------------------------------------------------------- load
STATUS=0
declare -A RPS=() P50=() P99=() REQS=() ERRS=() NON2XX=() NOTE=() SCRIPTS=() AUDIT=() AUDIT_BASE=()
ROWS=()
audit_lines() { if [ -f "$1" ]; then wc -l < "$1" | tr -d ' '; else echo 0; fi; }
# settle_audit FILE: until the line count stops moving (the writer flushes every 20 ms), 5 s at most; prints it.
settle_audit() {
  local last=-1 now
  for _ in $(seq 1 25); do
    now=$(audit_lines "$1"); [ "$now" = "$last" ] && break; last=$now; sleep 0.2
  done
  echo "$now"
}
# measure KEY: warm-up, then BENCH_SECS of wrk on CPU 0 against mcpgw; fills RPS/P50/P99/REQS/ERRS/NON2XX, and
# SCRIPTS (Redis scripts run during the measured seconds) when Redis runs.
measure() {
  local key=$1 out line kv requests duration p50 p99 errors non2xx
  if [ "$WARM" -gt 0 ]; then
    timeout $((WARM + 30)) taskset -c 0 wrk -t1 -c"$CONNS" -d"${WARM}s" -s "$C/post.lua" "$URL" >"$W/run/wrk-$key-warmup.txt" 2>&1
  fi
  AUDIT_BASE[$key]=$(settle_audit "$W/run/audit-$key.jsonl")
  [ -n "${PID[redis]:-}" ] && rcli CONFIG RESETSTAT >/dev/null
  out=$(timeout $((D + 30)) taskset -c 0 wrk -t1 -c"$CONNS" -d"${D}s" --latency -s "$C/post.lua" "$URL" 2>&1)
  printf '%s\n' "$out" > "$W/run/wrk-$key.txt"
  [ -n "${PID[redis]:-}" ] && SCRIPTS[$key]=$(redis_scripts)
  line=$(grep '^RESULT ' <<<"$out")
  if [ -z "$line" ]; then echo "wrk failed for $key:" >&2; tail -n 5 <<<"$out" >&2; STATUS=1; return 1; fi
  for kv in ${line#RESULT }; do
    case $kv in
      requests=*) requests=${kv#*=} ;; duration_us=*) duration=${kv#*=} ;; p50_us=*) p50=${kv#*=} ;;
      p99_us=*) p99=${kv#*=} ;; errors=*) errors=${kv#*=} ;; non2xx=*) non2xx=${kv#*=} ;;
    esac
  done
  REQS[$key]=$requests; ERRS[$key]=$errors; NON2XX[$key]=$non2xx
  RPS[$key]=$(awk -v n="$requests" -v d="$duration" 'BEGIN{printf "%.0f", n / (d / 1e6)}')
  P50[$key]=$(awk -v u="$p50" 'BEGIN{printf "%.2f", u / 1000}')
  P99[$key]=$(awk -v u="$p99" 'BEGIN{printf "%.2f", u / 1000}')
  [ "$errors" -eq 0 ] || { echo "warning: $key: $errors socket errors" >&2; STATUS=1; }
}
# audit_check KEY REFUSING: after the gateway stopped (everything written): records since the warm-up == requests
# wrk completed (plus at most the connections' requests in flight when wrk stopped, which it does not count: those
# are decided as usual, or recorded as `abandoned` when wrk closed the connection first), and every record the
# expected decision (allow; or rate_limited when REFUSING). Unexpected records are summed up by decision and rule.
audit_check() {
  local key=$1 refusing=$2 file=$W/run/audit-$1.jsonl base=${AUDIT_BASE[$1]:-0} total records allowed limited
  local abandoned unexpected others diff verdict expected='allow'
  [ "$refusing" = 1 ] && expected='allow|rate_limited'
  total=$(audit_lines "$file"); records=$((total - base))
  tail -n +"$((base + 1))" "$file" 2>/dev/null > "$W/run/audit-$key-measured.jsonl"
  count() { grep -Ec "$1" "$W/run/audit-$key-measured.jsonl"; }
  allowed=$(count '"decision":"allow"')
  limited=$(count '"decision":"rate_limited"')
  abandoned=$(count '"decision":"unavailable","rule":"abandoned"')
  unexpected=$(grep -Ev "\"decision\":\"($expected)\"|\"rule\":\"abandoned\"" "$W/run/audit-$key-measured.jsonl" |
    sed -n 's/.*"decision":"\([^"]*\)","rule":"\([^"]*\)".*/\1 \2/p' | sort | uniq -c | sort -rn |
    awk '{printf "%s%s %s (%s)", (NR > 1 ? ", " : ""), $1, $2, $3}')
  others=$(grep -Evc "\"decision\":\"($expected)\"|\"rule\":\"abandoned\"" "$W/run/audit-$key-measured.jsonl")
  diff=$((records - ${REQS[$key]:-0}))
  if [ -z "${REQS[$key]:-}" ]; then verdict="MISMATCH (no wrk result)"
  elif [ "$others" -ne 0 ]; then verdict="MISMATCH ($others records are not ${expected/|/ or } decisions: $unexpected)"
  elif [ "$abandoned" -gt "$diff" ]; then verdict="MISMATCH ($abandoned abandoned records, more than the $diff requests wrk did not count)"
  elif [ "$diff" -eq 0 ]; then verdict="OK"
  elif [ "$diff" -gt 0 ] && [ "$diff" -le "$CONNS" ]; then
    verdict="OK (+$diff: requests in flight when wrk stopped, which it does not count; at most $CONNS)"
  else verdict="MISMATCH"; fi
  if [ "$refusing" = 1 ] && [[ $verdict == OK* ]] && [ "${NON2XX[$key]:-0}" -gt "$limited" ]; then
    verdict="MISMATCH (wrk saw ${NON2XX[$key]} non-2xx answers, the records say $limited refusals)"
  fi
  [[ $verdict == OK* ]] || STATUS=1
  AUDIT[$key]="audit records $records ($allowed allow, $limited rate_limited, $abandoned abandoned), requests completed by wrk ${REQS[$key]:-?}: $verdict"
}

# row KEY LABEL POLICIES REFUSING REDIS_JSON: renders the configuration, starts mcpgw on CPU 1, checks, measures,
# stops it (it must exit 0) and checks the audit log.
row() {
  local key=$1 label=$2 policies=$3 refusing=$4 redis_json=$5 ok=1
  ROWS+=("$key"); NOTE[$key]=$label; RPS[$key]=""
  config "$key" "$policies" "$redis_json"
  rm -f "$W/run/audit-$key.jsonl"
  [ -n "${PID[redis]:-}" ] && rcli FLUSHALL >/dev/null
  start "mcpgw_$key" taskset -c 1 "$MCPGW_BIN" serve --config "$W/mcpgw-$key.json" --log-level warning
  if ! wait_port "mcpgw_$key" "$PORT"; then
    echo "row $key: mcpgw did not start (config $W/mcpgw-$key.json)" >&2; STATUS=1; stop "mcpgw_$key"; return 1
  fi
  if [ "$refusing" = 1 ]; then check_refusing "$key" || ok=0; else check_admitting "$key" || ok=0; fi
  if [ "$ok" = 1 ]; then
    measure "$key"
  else
    STATUS=1; NOTE[$key]="$label: check failed"
  fi
  if ! stop "mcpgw_$key"; then echo "row $key: mcpgw did not exit cleanly (log $W/run/mcpgw_$key.log)" >&2; STATUS=1; fi
  [ "$ok" = 1 ] && audit_check "$key" "$refusing"
  if [ "$refusing" = 0 ] && [ -n "${NON2XX[$key]:-}" ] && [ "${NON2XX[$key]}" -ne 0 ]; then
    echo "warning: $key: ${NON2XX[$key]} non-2xx answers in a row that should admit every call" >&2; STATUS=1
  fi
  if [ -n "$redis_json" ] && [ "${SCRIPTS[$key]:-0}" -eq 0 ] && [ -n "${RPS[$key]}" ]; then
    echo "row $key: Redis ran no script while loaded: the limit was not shared" >&2; STATUS=1
  fi
}

# ---------------------------------------------------------------------------------------------- run
LOAD=$(cut -d' ' -f1 /proc/loadavg)
echo "starting: upstream, redis-server (CPU 0), mcpgw (CPU 1) for each row; ${D}s per row, $CONNS connections; work folder $W" >&2
awk -v l="$LOAD" 'BEGIN{exit !(l > 0.5)}' && echo "warning: load average $LOAD before the run: other work is running, the numbers will be noisy" >&2

start upstream taskset -c 0 nginx -p "$W/run/" -c "$W/upstream.conf" -e "$W/run/upstream.err" -g 'daemon off;'
start redis taskset -c 0 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$W/run" --daemonize no
wait_port upstream "$UPSTREAM_PORT" && wait_port redis "$REDIS_PORT" || die "a server did not start (logs in $W/run)"
[ "$(rcli PING)" = PONG ] || die "redis-server does not answer PING"

SHARED="{\"url\": \"$REDIS_URL\"}"
row local "A: local-only limits (no redis section)" admitting 0 ""
row global "B: global limits through Redis (lease 64)" admitting 0 "$SHARED"
[ "$LEASE1" = 1 ] && row global_lease1 "B1: global limits through Redis, lease 1 (a round trip per call)" admitting 0 \
  "{\"url\": \"$REDIS_URL\", \"max_lease\": 1}"
if [ "$REFUSING" = 1 ]; then
  row refuse_local "C0: local limit, refusing (1/s, burst 1)" refusing 1 ""
  row refuse_global "C: global limit through Redis, refusing (1/s, burst 1)" refusing 1 "$SHARED"
fi
stop redis; stop upstream

# ---------------------------------------------------------------------------------------------- report
group() { sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' <<<"$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a == "" || b == "" || b + 0 == 0) print "n/a"; else printf "%.2f×", a / b }'; }
mcpgw_label() {
  if [ "$MCPGW_BIN" = "$ROOT/.build/release/mcpgw" ]; then
    echo "mcpgw $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$ROOT" && git diff --quiet HEAD -- Sources Package.swift 2>/dev/null || echo ' + uncommitted changes') (release build of $(date -u -r "$MCPGW_BIN" +%Y-%m-%dT%H:%MZ))"
  else
    echo "mcpgw $MCPGW_BIN"
  fi
}
{
  echo "### Shared rate limits: local against global through Redis (bench/shared-limits.sh)"
  echo
  echo "$(date -u +%Y-%m-%d), $(nproc) CPUs ($(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -n 1)), load average $LOAD before the run;" \
       "mcpgw pinned to CPU 1, wrk (1 thread), the upstream and redis-server on CPU 0; $CONNS keep-alive connections, ${D} s per row" \
       "after ${WARM} s of warm-up; the same allowed \`tools/call\` with an RS256 bearer token (minted with $MINTED) for every row," \
       "one agent, so every call draws from one bucket." \
       "$(redis-server --version | awk '{print $1, $3}' | sed 's/v=//'), $(nginx -v 2>&1 | sed 's#.*/#nginx #'), $(wrk -v 2>&1 | awk 'NR==1{print $1, $2}'), $(mcpgw_label)."
  echo
  echo "| row | requests/s | p50 | p99 | non-2xx | Redis scripts run | calls per script |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  for key in "${ROWS[@]}"; do
    if [ -n "${RPS[$key]}" ]; then
      scripts=${SCRIPTS[$key]:-}
      per="–"
      [ -n "$scripts" ] && [ "$scripts" -gt 0 ] && per=$(awk -v n="${REQS[$key]}" -v s="$scripts" 'BEGIN{printf "%.1f", n / s}')
      echo "| ${NOTE[$key]} | $(group "${RPS[$key]}") | ${P50[$key]} ms | ${P99[$key]} ms | $(group "${NON2XX[$key]}") | $([ -n "$scripts" ] && group "$scripts" || echo –) | $per |"
    else
      echo "| ${NOTE[$key]} | – | – | – | – | – | – |"
    fi
  done
  echo
  echo "| comparison | requests/s | p99 | goal |"
  echo "|---|---:|---:|---|"
  if [ -n "${RPS[global]:-}" ] && [ -n "${RPS[local]:-}" ]; then
    r=$(awk -v a="${RPS[global]}" -v b="${RPS[local]}" 'BEGIN{printf "%.2f", a / b}')
    dp=$(awk -v a="${P99[global]}" -v b="${P99[local]}" 'BEGIN{printf "%+.2f", a - b}')
    goal=$(awk -v r="$r" -v d="$dp" 'BEGIN{ if (r >= 0.8 && d <= 1.0) print "met (≥ 0.8×, p99 within 1 ms)"; else print "NOT met (≥ 0.8×, p99 within 1 ms)" }')
    echo "| B / A (global / local) | ${r}× | ${P99[global]} vs ${P99[local]} ms ($dp ms) | $goal |"
  else
    echo "| B / A (global / local) | n/a | n/a | |"
  fi
  [ -n "${RPS[global_lease1]:-}" ] && echo "| B1 / A (lease 1 / local) | $(ratio "${RPS[global_lease1]}" "${RPS[local]:-}") | ${P99[global_lease1]} vs ${P99[local]:-?} ms | |"
  [ -n "${RPS[refuse_global]:-}" ] && echo "| C / C0 (refusing: global / local) | $(ratio "${RPS[refuse_global]}" "${RPS[refuse_local]:-}") | ${P99[refuse_global]} vs ${P99[refuse_local]:-?} ms | |"
  echo
  for key in "${ROWS[@]}"; do
    [ -n "${AUDIT[$key]:-}" ] && echo "- ${NOTE[$key]}: ${AUDIT[$key]}"
  done
} | tee "$W/results.md"
[ "$STATUS" = 0 ] || echo "some checks failed (see above; logs in $W/run)" >&2
exit "$STATUS"
