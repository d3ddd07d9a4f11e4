#!/usr/bin/env bash
# Installs the system packages mcpgw's build and tests need, if any is missing (Debian/Ubuntu).
#   libssl-dev + pkg-config   the OpenSSL headers and libraries the COpenSSL target links
#   libmimalloc-dev           mimalloc, the allocator the release binary links (Package.swift)
#   openssl + curl            real TLS peers used by the loopback tests
#   python3 + venv            the interoperability tests (PyJWT) run in a venv
#   redis-server (7)          shared rate limits: the tests start their own servers on loopback ports
#   haproxy                   a real load balancer writing PROXY protocol headers in front of the gateway
set -euo pipefail
packages=(libssl-dev pkg-config libmimalloc-dev openssl curl redis-server haproxy)
command -v python3 >/dev/null 2>&1 || packages+=(python3)
python3 -c "import venv, ensurepip" >/dev/null 2>&1 || packages+=(python3-venv)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
