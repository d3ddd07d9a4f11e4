#!/usr/bin/env bash
# Policy decision cost: 1,000 tenants × 1,000 rules loaded; ns per decision for exact, prefix, argument-checked and
# default-deny calls, as ratios to a 1-rule tenant measured in the same run; plus resident memory.
#   bench/policy.sh [iterations] [tenants] [rules per tenant]
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product mcpgw-bench >/dev/null
.build/release/mcpgw-bench policy "${1:-200000}" "${2:-1000}" "${3:-1000}"
