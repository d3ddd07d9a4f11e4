#!/usr/bin/env bash
# Runs every mcpgw test: installs what is missing, builds, then runs the Swift test suites
# (unit, in-memory TLS, loopback tests against curl and openssl s_client).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build --build-tests
swift test --skip-build
