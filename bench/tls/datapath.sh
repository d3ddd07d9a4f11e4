#!/usr/bin/env bash
# The TLS data path of two mcpgw binaries side by side, in one run on one machine: small request/response pairs
# (GET /healthz over keep-alive TLS) and bulk transfer (a 4 MiB stream relayed from an nginx upstream through the
# gateway's TLS). Each gateway is pinned to CPU 1; wrk and the upstream to CPU 0.
#   bench/tls/datapath.sh BINARY_A BINARY_B [seconds]
# Needs nginx and wrk (bench/install-bench-deps.sh) and the project's venv with PyJWT (scripts/python-env.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
A=$1; B=$2; SECS=${3:-8}
W=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"' EXIT
head -c $((4 * 1024 * 1024)) /dev/zero | tr '\0' 'x' > "$W/big.txt"
chmod 755 "$W"; chmod 644 "$W/big.txt"  # nginx workers run as nobody
cat > "$W/upstream.conf" <<CONF
worker_processes 1;
pid $W/upstream.pid;
error_log $W/upstream.err;
events { worker_connections 1024; }
http {
  access_log off;
  server {
    listen 127.0.0.1:19100;
    location /mcp { default_type text/event-stream; alias $W/big.txt; }
  }
}
CONF
taskset -c 0 nginx -c "$W/upstream.conf" -g 'daemon off;' &
python=$(scripts/python-env.sh)
TOKEN=$("$python" -c 'import jwt, time
print(jwt.encode({"iss": "https://issuer.mcpgw.dev/acme", "aud": "mcpgw", "tenant": "acme", "sub": "bot1", "exp": int(time.time()) + 3600},
open("certs-dev/jwt/acme-rs256.key").read(), algorithm="RS256", headers={"kid": "acme-rs256"}))')
cat > "$W/get.lua" <<LUA
wrk.method = "GET"
wrk.headers["Accept"] = "text/event-stream"
wrk.headers["Authorization"] = "Bearer $TOKEN"
LUA
run() {  # run LABEL BINARY
  taskset -c 1 "$2" serve --config mcpgw.dev.json --listen 127.0.0.1:19443 --upstream http://127.0.0.1:19100/mcp \
    --audit-log /dev/null --log-level error &
  local gw=$!
  for _ in $(seq 1 100); do curl -sk -o /dev/null https://127.0.0.1:19443/healthz && break; sleep 0.1; done
  local small bulk check
  check=$(curl -sk -o /dev/null -w '%{http_code} %{size_download}' -H 'Accept: text/event-stream' -H "Authorization: Bearer $TOKEN" \
    https://127.0.0.1:19443/mcp)
  [ "$check" = "200 4194304" ] || { echo "bulk check failed for $1: $check" >&2; kill $gw; return 1; }
  small=$(taskset -c 0 wrk -t1 -c32 -d"${SECS}s" https://127.0.0.1:19443/healthz | awk '/Requests\/sec/ {print $2}')
  bulk=$(taskset -c 0 wrk -t1 -c4 -d"${SECS}s" -s "$W/get.lua" https://127.0.0.1:19443/mcp | awk '/Transfer\/sec/ {print $2}')
  kill $gw; wait $gw 2>/dev/null || true
  printf '| %s | %s | %s |\n' "$1" "$small" "$bulk"
}
echo "| binary | small pairs (GET /healthz, 32 connections), requests/s | bulk (4 MiB streams, 4 connections), transfer/s |"
echo "|---|---:|---:|"
run "A: $A" "$A"
run "B: $B" "$B"
run "A again" "$A"
run "B again" "$B"
