#!/usr/bin/env bash
# Cost of verifying a bearer token: fresh RS256 and HS256 verification vs. a verified-token cache hit, same run.
#   bench/jwt.sh [iterations]
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product mcpgw-bench >/dev/null
.build/release/mcpgw-bench jwt "${1:-2000}"
