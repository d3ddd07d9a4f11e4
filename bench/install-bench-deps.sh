#!/usr/bin/env bash
# Installs what bench/compare.sh needs, if missing (Debian/Ubuntu, root or sudo):
#   nginx-light (or nginx)   the canned upstream and the "nginx TLS proxy" row
#   haproxy (>= 2.5)         the "haproxy TLS + RS256 JWT + allowlist" row (jwt_verify, http_auth_bearer)
#   wrk                      the load generator
#   openssl, curl            certificates and keys; the per-row checks
#   util-linux, coreutils    taskset, timeout
#   python3                  the idle-TLS-connection memory probe (standard library only)
# and the project's Python venv (scripts/python-env.sh: PyJWT + cryptography), which mints the benchmark token.
#   bench/install-bench-deps.sh [--no-venv]
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=()
command -v nginx >/dev/null 2>&1 || missing+=(nginx)   # resolved to nginx-light below when the archive has it
for p in haproxy wrk openssl curl util-linux; do installed "$p" || missing+=("$p"); done
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -c "import venv, ensurepip" >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  for i in "${!missing[@]}"; do
    if [ "${missing[$i]}" = nginx ] && apt-cache show nginx-light >/dev/null 2>&1; then missing[$i]=nginx-light; fi
  done
  echo "installing: ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian packages start system-wide services on the default ports; the benchmark runs its own instances on
# 127.0.0.1:9000-9448 and needs none of them.
for s in nginx haproxy; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$s" 2>/dev/null; then $SUDO systemctl stop "$s" || true; fi
done
grep -q USE_OPENSSL=1 <<<"$(haproxy -vv 2>/dev/null)" || echo "warning: this haproxy is built without OpenSSL; the haproxy row needs TLS" >&2
if [ "${1:-}" != "--no-venv" ]; then
  scripts/python-env.sh >/dev/null
fi
echo "bench deps: nginx $(nginx -v 2>&1 | sed 's#.*/##'), haproxy $(haproxy -v 2>/dev/null | awk 'NR==1{print $3}'), $(wrk -v 2>&1 | awk 'NR==1{print $1, $2}'), $(openssl version | awk '{print $1, $2}')" >&2
