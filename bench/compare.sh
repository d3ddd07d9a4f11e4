#!/usr/bin/env bash
# Side-by-side proxy benchmark: mcpgw against nginx and haproxy, in one run on one machine.
#
# Each proxy is pinned to CPU 1 (taskset -c 1); wrk and the upstream share CPU 0. Every row sends the same
# request: 32 keep-alive connections POSTing an allowed tools/call (bench/compare/post.lua) with a bearer token.
#
#   upstream direct            plain HTTP straight to the upstream (the client-bound limit)
#   nginx TLS proxy            TLS termination + plain proxying, no auth              (compare/nginxproxy.conf)
#   haproxy                    TLS + RS256 JWT verified on every request + exp check + tool allowlist from the
#                              JSON body                                             (compare/haproxy.cfg)
#   mcpgw (1 core)             TLS + RS256 JWT + a policy with an argument constraint + a rate limit that never
#                              triggers + an audit record per request to a file    (compare/mcpgw-*.json*)
#   mcpgw (all cores)          the same, not pinned (wrk and the upstream still on CPU 0)
#
# The upstream is nginx returning a canned JSON-RPC result (compare/upstream.conf). Then: ratios mcpgw/haproxy
# and mcpgw/nginx (requests/s and p99), audit records written == requests wrk completed, and the memory of an idle
# TLS connection (handshake done, no request) in nginx and in mcpgw (compare/idle_tls.py, /proc VmRSS deltas).
# Every TLS row must negotiate the same protocol version and cipher suite (checked with openssl s_client before
# the row is loaded; the table shows them): nginx 1.22 offers only TLS 1.2 unless told otherwise, and TLS 1.3
# records cost OpenSSL 3.0 more (about 3-4 µs per request here), so nginxproxy.conf enables TLS 1.3 explicitly.
# Before loading a row, one request is checked to get the canned result through it, and for haproxy and mcpgw
# that a call without a token and a denied call are refused (so no row measures refusals).
#
# Usage: bench/compare.sh [--build] [--no-mcpgw]
#   --build        scripts/install-deps.sh, then swift build -c release --product mcpgw (otherwise the binary must exist)
#   --no-mcpgw     only the direct, nginx and haproxy rows and nginx's idle-connection memory
# Environment:
#   MCPGW_BIN          gateway binary (default .build/release/mcpgw, relative to the repository root)
#   BENCH_SECS         seconds per row (default 10); BENCH_WARMUP_SECS before each row (default 1, 0 = none)
#   BENCH_CONNS        keep-alive connections (default 32); BENCH_IDLE_CONNS idle TLS connections (default 500)
#   BENCH_DIR          work folder: certificates, rendered configs, logs, results.md (default /tmp/mcpgw-bench-compare)
#   BENCH_PYTHON       Python with PyJWT to mint the token (default: the project's .venv, then python3, else openssl)
#   MCPGW_CONFIG_TEMPLATE  mcpgw config template (default bench/compare/mcpgw-config.json.in)
# Needs nginx, haproxy >= 2.5, wrk, openssl, curl, python3, taskset and 2+ CPUs: bench/install-bench-deps.sh.
# Ports 127.0.0.1:9000 (upstream), 9444 (nginx), 9445 (haproxy), 9447 (mcpgw 1 core), 9448 (mcpgw all cores).
# The machines are shared and noisy: compare rows of the same run, as ratios, never absolute numbers across runs.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
C=$ROOT/bench/compare
BUILD=0
WITH_MCPGW=1
for arg in "$@"; do
  case "$arg" in
    --build) BUILD=1 ;;
    --no-mcpgw) WITH_MCPGW=0 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg (see --help)" >&2; exit 2 ;;
  esac
done

W=${BENCH_DIR:-/tmp/mcpgw-bench-compare}
D=${BENCH_SECS:-10}
WARM=${BENCH_WARMUP_SECS:-1}
CONNS=${BENCH_CONNS:-32}
IDLE=${BENCH_IDLE_CONNS:-500}
TEMPLATE=${MCPGW_CONFIG_TEMPLATE:-$C/mcpgw-config.json.in}
MCPGW_BIN=${MCPGW_BIN:-.build/release/mcpgw}
case "$MCPGW_BIN" in /*) ;; *) MCPGW_BIN=$ROOT/$MCPGW_BIN ;; esac
for v in D WARM CONNS IDLE; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { echo "$v must be a whole number (got '${!v}')" >&2; exit 2; }
done
[ "$D" -ge 1 ] && [ "$CONNS" -ge 1 ] && [ "$IDLE" -ge 1 ] || { echo "BENCH_SECS, BENCH_CONNS and BENCH_IDLE_CONNS must be >= 1" >&2; exit 2; }

die() { echo "compare.sh: $*" >&2; exit 1; }
missing=()
for cmd in nginx haproxy wrk openssl curl python3 taskset timeout; do command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd"); done
[ ${#missing[@]} -eq 0 ] || die "missing: ${missing[*]} (run bench/install-bench-deps.sh)"
taskset -c 1 true 2>/dev/null || die "needs at least 2 CPUs (proxies on CPU 1, wrk + upstream on CPU 0)"
grep -q USE_OPENSSL=1 <<<"$(haproxy -vv 2>/dev/null)" || die "this haproxy has no TLS support"

if [ "$BUILD" = 1 ]; then
  # The build's own packages first (the release binary links mimalloc: libmimalloc-dev).
  (cd "$ROOT" && scripts/install-deps.sh && swift build -c release --product mcpgw) || die "swift build failed"
fi
if [ "$WITH_MCPGW" = 1 ] && [ ! -x "$MCPGW_BIN" ]; then
  die "no mcpgw binary at $MCPGW_BIN: pass --build, set MCPGW_BIN, or --no-mcpgw for the other rows only"
fi
[ "$WITH_MCPGW" = 0 ] || [ -f "$TEMPLATE" ] || die "no mcpgw config template $TEMPLATE"

source "$ROOT/bench/lib.sh"
PORTS=(9000 9444 9445)
[ "$WITH_MCPGW" = 1 ] && PORTS+=(9447 9448)
for p in "${PORTS[@]}"; do port_busy "$p" && die "127.0.0.1:$p is already in use (another benchmark still running?)"; done

mkdir -p "$W/run" "$W/certs" || die "cannot create $W"
rm -f "$W"/run/*

bench_credentials

render() { sed -e "s#@BENCH_DIR@#$W#g" "$@"; }
render "$C/upstream.conf" > upstream.conf
render "$C/nginxproxy.conf" > nginxproxy.conf
render "$C/haproxy.cfg" > haproxy.cfg
if [ "$WITH_MCPGW" = 1 ]; then
  rm -rf mcpgw-policies && mkdir -p mcpgw-policies/acme && cp "$C/mcpgw-policy.json" mcpgw-policies/acme/bench.json
  render -e "s#@PORT@#9447#g" -e "s#@AUDIT_LOG@#$W/run/mcpgw-audit.jsonl#g" "$TEMPLATE" > mcpgw.json
  render -e "s#@PORT@#9448#g" -e "s#@AUDIT_LOG@#$W/run/mcpgw-all-audit.jsonl#g" "$TEMPLATE" > mcpgw-all.json
fi

# ---------------------------------------------------------------------------------------------- checks
BODY_OK='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"docs/a.txt"}}}'
BODY_DENIED_TOOL='{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_file","arguments":{"path":"docs/a.txt"}}}'
BODY_DENIED_ARG='{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"../../etc/passwd"}}}'
# check NAME URL LEVEL: the allowed call gets the canned result; LEVEL 1: a call without a token and a call of a
# tool outside the allowlist are refused; LEVEL 2: also a call whose path argument has '..' (mcpgw's constraint).
check() {
  local r ok=1
  r=$(probe "$2" "$TOKEN" "$BODY_OK"); served "$r" || { echo "check $1: the allowed call was not served: $r" >&2; ok=0; }
  if [ "$3" -ge 1 ]; then
    r=$(probe "$2" "" "$BODY_OK"); served "$r" && { echo "check $1: a call without a token was served" >&2; ok=0; }
    r=$(probe "$2" "$TOKEN" "$BODY_DENIED_TOOL"); served "$r" && { echo "check $1: a denied tool was served" >&2; ok=0; }
  fi
  if [ "$3" -ge 2 ]; then
    r=$(probe "$2" "$TOKEN" "$BODY_DENIED_ARG"); served "$r" && { echo "check $1: a '..' path argument was served" >&2; ok=0; }
  fi
  [ "$ok" = 1 ]
}

# ---------------------------------------------------------------------------------------------- load
STATUS=0
declare -A RPS=() P50=() P99=() REQS=() BAD=() NOTE=()
ROWS=()
# measure KEY LABEL URL [AUDIT_FILE]: warm-up, then BENCH_SECS of wrk on CPU 0; fills RPS/P50/P99/REQS/BAD for
# KEY, and AUDIT_BASE[KEY] (the audit file's lines once the warm-up's records are written) when AUDIT_FILE is given.
declare -A AUDIT_BASE=() TLS=()
# negotiated HOST:PORT/PATH: the protocol version and cipher suite a TLS handshake with HOST:PORT settles on.
negotiated() {
  local out version suite
  out=$(timeout 10 openssl s_client -brief -connect "${1%%/*}" </dev/null 2>&1)
  version=$(sed -n 's/^Protocol version: *//p' <<<"$out" | head -n 1)
  suite=$(sed -n 's/^Ciphersuite: *//p' <<<"$out" | head -n 1)
  if [ -n "$version" ] && [ -n "$suite" ]; then echo "$version $suite"; else echo "handshake failed"; fi
}
measure() {
  local key=$1 url=$3 out line
  ROWS+=("$key"); NOTE[$key]=$2
  case $url in https://*) TLS[$key]=$(negotiated "${url#https://}") ;; *) TLS[$key]="plain HTTP" ;; esac
  if [ "$WARM" -gt 0 ]; then
    timeout $((WARM + 30)) taskset -c 0 wrk -t1 -c"$CONNS" -d"${WARM}s" -s "$C/post.lua" "$url" >"$W/run/wrk-$key-warmup.txt" 2>&1
  fi
  [ -n "${4:-}" ] && AUDIT_BASE[$key]=$(settle_audit "$4")
  out=$(timeout $((D + 30)) taskset -c 0 wrk -t1 -c"$CONNS" -d"${D}s" --latency -s "$C/post.lua" "$url" 2>&1)
  printf '%s\n' "$out" > "$W/run/wrk-$key.txt"
  line=$(grep '^RESULT ' <<<"$out")
  if [ -z "$line" ]; then echo "wrk failed for $key:" >&2; tail -n 5 <<<"$out" >&2; STATUS=1; return 1; fi
  local kv requests duration p50 p99 errors non2xx
  for kv in ${line#RESULT }; do
    case $kv in
      requests=*) requests=${kv#*=} ;; duration_us=*) duration=${kv#*=} ;; p50_us=*) p50=${kv#*=} ;;
      p99_us=*) p99=${kv#*=} ;; errors=*) errors=${kv#*=} ;; non2xx=*) non2xx=${kv#*=} ;;
    esac
  done
  REQS[$key]=$requests
  RPS[$key]=$(awk -v n="$requests" -v d="$duration" 'BEGIN{printf "%.0f", n / (d / 1e6)}')
  P50[$key]=$(awk -v u="$p50" 'BEGIN{printf "%.2f", u / 1000}')
  P99[$key]=$(awk -v u="$p99" 'BEGIN{printf "%.2f", u / 1000}')
  BAD[$key]=$((errors + non2xx))
  [ "${BAD[$key]}" -eq 0 ] || { echo "warning: $key: $non2xx non-2xx responses, $errors socket errors" >&2; STATUS=1; }
}
skip_row() { ROWS+=("$1"); NOTE[$1]="$2"; RPS[$1]=""; }

# audit_lines FILE: lines in FILE (0 if missing).
audit_lines() { if [ -f "$1" ]; then wc -l < "$1" | tr -d ' '; else echo 0; fi; }
# settle_audit FILE: until the line count stops moving (the writer flushes every 20 ms), 5 s at most; prints it.
settle_audit() {
  local last=-1 now
  for _ in $(seq 1 25); do
    now=$(audit_lines "$1"); [ "$now" = "$last" ] && break; last=$now; sleep 0.2
  done
  echo "$now"
}
declare -A AUDIT=()
# audit_check KEY FILE BASELINE: after the gateway stopped (everything written), compares with wrk's count.
audit_check() {
  local key=$1 file=$2 base=$3 total records others diff verdict
  total=$(audit_lines "$file"); records=$((total - base))
  others=$(tail -n +"$((base + 1))" "$file" 2>/dev/null | grep -Evc '"decision"[[:space:]]*:[[:space:]]*"allow"')
  diff=$((records - ${REQS[$key]:-0}))
  if [ -z "${REQS[$key]:-}" ]; then verdict="MISMATCH (no wrk result)"
  elif [ "$others" -ne 0 ]; then verdict="MISMATCH ($others records are not allow decisions)"
  elif [ "$diff" -eq 0 ]; then verdict="OK"
  elif [ "$diff" -gt 0 ] && [ "$diff" -le "$CONNS" ]; then
    verdict="OK (+$diff: requests in flight when wrk stopped, which it does not count; at most $CONNS)"
  else verdict="MISMATCH"; fi
  [[ $verdict == OK* ]] || STATUS=1
  AUDIT[$key]="audit records $records, requests completed by wrk ${REQS[$key]:-?}: $verdict"
}

# mem LABEL PORT PIDARGS...: idle TLS connections' memory; fills MEM_* for LABEL.
declare -A MEM=()
mem() {
  local label=$1 port=$2; shift 2
  local line
  line=$(timeout 150 python3 "$C/idle_tls.py" --port "$port" --count "$IDLE" --cafile "$W/certs/ca.crt" "$@" 2>&1 | tail -n 1)
  echo "$line" > "$W/run/idle-$label.txt"
  if [[ $line != IDLE\ opened=* ]] || [[ $line == *error=* ]]; then
    echo "idle-connection probe for $label failed: $line" >&2; STATUS=1; MEM[$label]=""; return 1
  fi
  MEM[$label]=$line
}
field() { sed -n "s/.*[ ]$2=\([^ ]*\).*/\1/p" <<<"$1"; }

# ---------------------------------------------------------------------------------------------- run
LOAD=$(cut -d' ' -f1 /proc/loadavg)
echo "starting: upstream (CPU 0), nginx, haproxy$([ "$WITH_MCPGW" = 1 ] && echo ", mcpgw") (CPU 1); ${D}s per row, $CONNS connections; work folder $W" >&2
awk -v l="$LOAD" 'BEGIN{exit !(l > 0.5)}' && echo "warning: load average $LOAD before the run: other work is running, the numbers will be noisy" >&2

start upstream taskset -c 0 nginx -p "$W/run/" -c "$W/upstream.conf" -e "$W/run/upstream.err" -g 'daemon off;'
start nginx taskset -c 1 nginx -p "$W/run/" -c "$W/nginxproxy.conf" -e "$W/run/nginxproxy.err" -g 'daemon off;'
start haproxy taskset -c 1 haproxy -db -f "$W/haproxy.cfg"
wait_port upstream 9000 && wait_port nginx 9444 && wait_port haproxy 9445 || die "a server did not start (logs in $W/run)"
if [ "$WITH_MCPGW" = 1 ]; then
  rm -f "$W/run/mcpgw-audit.jsonl"
  start mcpgw taskset -c 1 "$MCPGW_BIN" serve --config "$W/mcpgw.json" --log-level warning
  wait_port mcpgw 9447 || die "mcpgw did not start (config $W/mcpgw.json, log $W/run/mcpgw.log)"
fi

# Idle memory first, on fresh processes (a few warm-up connections are excluded by idle_tls.py).
NGINX_WORKER_OF=${PID[nginx]}
mem nginx 9444 --children-of "$NGINX_WORKER_OF"
[ "$WITH_MCPGW" = 1 ] && mem mcpgw 9447 --pid "${PID[mcpgw]}"

if check upstream http://127.0.0.1:9000/mcp 0; then measure direct "upstream direct (plain HTTP, client-bound limit)" http://127.0.0.1:9000/mcp
else STATUS=1; skip_row direct "upstream direct: check failed"; fi
if check nginx https://127.0.0.1:9444/mcp 0; then measure nginx "nginx TLS proxy (no auth)" https://127.0.0.1:9444/mcp
else STATUS=1; skip_row nginx "nginx TLS proxy: check failed"; fi
if check haproxy https://127.0.0.1:9445/mcp 1; then measure haproxy "haproxy TLS + RS256 JWT + allowlist" https://127.0.0.1:9445/mcp
else STATUS=1; skip_row haproxy "haproxy: check failed"; fi
stop haproxy; stop nginx

if [ "$WITH_MCPGW" = 1 ]; then
  if check mcpgw https://127.0.0.1:9447/mcp 2; then
    measure mcpgw "mcpgw TLS + RS256 JWT + policy + rate limit + audit (1 core)" https://127.0.0.1:9447/mcp "$W/run/mcpgw-audit.jsonl"
    stop mcpgw
    audit_check mcpgw "$W/run/mcpgw-audit.jsonl" "${AUDIT_BASE[mcpgw]:-0}"
  else STATUS=1; skip_row mcpgw "mcpgw (1 core): check failed"; stop mcpgw; fi

  rm -f "$W/run/mcpgw-all-audit.jsonl"
  start mcpgw_all "$MCPGW_BIN" serve --config "$W/mcpgw-all.json" --log-level warning
  if wait_port mcpgw_all 9448 && check mcpgw_all https://127.0.0.1:9448/mcp 2; then
    measure mcpgw_all "mcpgw, same, all $(nproc) cores (not pinned)" https://127.0.0.1:9448/mcp "$W/run/mcpgw-all-audit.jsonl"
    stop mcpgw_all
    audit_check mcpgw_all "$W/run/mcpgw-all-audit.jsonl" "${AUDIT_BASE[mcpgw_all]:-0}"
  else STATUS=1; skip_row mcpgw_all "mcpgw (all cores): did not start or check failed"; stop mcpgw_all; fi
fi
stop upstream

# ---------------------------------------------------------------------------------------------- report
TLS_MISMATCH=""
declare -A SEEN_TLS=()
for key in "${ROWS[@]}"; do
  [ "${TLS[$key]:-plain HTTP}" = "plain HTTP" ] || SEEN_TLS[${TLS[$key]}]=1
done
if [ "${#SEEN_TLS[@]}" -gt 1 ]; then
  TLS_MISMATCH=$(printf '%s; ' "${!SEEN_TLS[@]}"); TLS_MISMATCH=${TLS_MISMATCH%; }
  echo "the TLS rows negotiated different protocols or cipher suites: $TLS_MISMATCH" >&2; STATUS=1
fi
group() { sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' <<<"$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a == "" || b == "" || b + 0 == 0) print "n/a"; else printf "%.2f×", a / b }'; }
version() { "$@" 2>&1 | head -n 1; }
# mcpgw_label: the commit (and whether Sources differ from it) for the default binary, else the binary's path.
mcpgw_label() {
  if [ "$MCPGW_BIN" = "$ROOT/.build/release/mcpgw" ]; then
    echo ", mcpgw $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$ROOT" && git diff --quiet HEAD -- Sources Package.swift 2>/dev/null || echo ' + uncommitted changes') (release build of $(date -u -r "$MCPGW_BIN" +%Y-%m-%dT%H:%MZ))"
  else
    echo ", mcpgw $MCPGW_BIN"
  fi
}
{
  echo "### Side-by-side: mcpgw, nginx, haproxy (bench/compare.sh)"
  echo
  echo "$(date -u +%Y-%m-%d), $(nproc) CPUs ($(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -n 1)), load average $LOAD before the run;" \
       "proxies pinned to CPU 1, wrk (1 thread) and the upstream on CPU 0; $CONNS keep-alive connections, ${D} s per row" \
       "after ${WARM} s of warm-up; the same allowed \`tools/call\` with an RS256 bearer token (minted with $MINTED) for every row." \
       "$(version nginx -v | sed 's#.*/#nginx #'), $(haproxy -v | awk 'NR==1{print "haproxy", $3}'), $(version wrk -v | awk '{print $1, $2}'), $(openssl version | awk '{print $1, $2}')$(
         [ "$WITH_MCPGW" = 1 ] && mcpgw_label)."
  echo
  echo "| row | requests/s | p50 | p99 | errors + non-2xx | TLS |"
  echo "|---|---:|---:|---:|---:|---|"
  for key in "${ROWS[@]}"; do
    if [ -n "${RPS[$key]}" ]; then
      echo "| ${NOTE[$key]} | $(group "${RPS[$key]}") | ${P50[$key]} ms | ${P99[$key]} ms | ${BAD[$key]} | ${TLS[$key]:-} |"
    else
      echo "| ${NOTE[$key]} | – | – | – | – | ${TLS[$key]:-} |"
    fi
  done
  if [ -n "$TLS_MISMATCH" ]; then
    echo
    echo "**The TLS rows did not negotiate the same protocol and cipher suite ($TLS_MISMATCH): their ratios compare different work.**"
  fi
  if [ "$WITH_MCPGW" = 1 ]; then
    echo
    echo "| mcpgw (1 core) relative to | requests/s | p99 |"
    echo "|---|---:|---:|"
    echo "| haproxy (TLS + RS256 JWT + allowlist) | $(ratio "${RPS[mcpgw]:-}" "${RPS[haproxy]:-}") | $(ratio "${P99[mcpgw]:-}" "${P99[haproxy]:-}") |"
    echo "| nginx (TLS proxy, no auth) | $(ratio "${RPS[mcpgw]:-}" "${RPS[nginx]:-}") | $(ratio "${P99[mcpgw]:-}" "${P99[nginx]:-}") |"
    echo
    for key in mcpgw mcpgw_all; do
      [ -n "${AUDIT[$key]:-}" ] && echo "- ${NOTE[$key]}: ${AUDIT[$key]}"
    done
  fi
  echo
  echo "Memory per idle TLS connection ($IDLE connections, handshake completed, no request; VmRSS after − before, ÷ $IDLE):"
  echo
  echo "| server | RSS before | RSS after | per connection |"
  echo "|---|---:|---:|---:|"
  for label in nginx mcpgw; do
    [ "$label" = mcpgw ] && [ "$WITH_MCPGW" = 0 ] && continue
    m=${MEM[$label]:-}
    name=$([ "$label" = nginx ] && echo "nginx (1 worker)" || echo "mcpgw (1 core)")
    if [ -n "$m" ]; then
      echo "| $name | $(group "$(field "$m" before_kib)") KiB | $(group "$(field "$m" after_kib)") KiB | $(field "$m" per_conn_kib) KiB |"
    else
      echo "| $name | – | – | failed |"
    fi
  done
  if [ "$WITH_MCPGW" = 1 ] && [ -n "${MEM[nginx]:-}" ] && [ -n "${MEM[mcpgw]:-}" ]; then
    echo "| ratio mcpgw / nginx | | | $(ratio "$(field "${MEM[mcpgw]}" per_conn_kib)" "$(field "${MEM[nginx]}" per_conn_kib)") |"
  fi
} | tee "$W/results.md"
[ "$STATUS" = 0 ] || echo "some checks failed (see above; logs in $W/run)" >&2
exit "$STATUS"
