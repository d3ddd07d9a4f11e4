#!/usr/bin/env bash
# Runs every mcpgw test: installs what is missing, builds, runs the Swift test suites (unit, in-memory TLS,
# loopback tests against curl and openssl s_client), the TLS, StrictJSON and Identity suites again under
# AddressSanitizer, then the interoperability tests against independent implementations (PyJWT, the MCP Python SDK,
# openssl s_client) in a Python venv this script creates — once against the debug build, once against the release
# build that ships and that bench/ measures — and finally a short libFuzzer pass over every parser of hostile bytes
# (scripts/fuzz.sh --all; 30 s a target, or FUZZ_SECONDS).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build --build-tests
swift test --skip-build
scripts/asan.sh
python=$(scripts/python-env.sh)
(cd tests/interop && MCPGW_BIN="$PWD/../../.build/debug/mcpgw" "$python" -m pytest -q -p no:cacheprovider)
swift build -c release  # every product: the interop tests use mcpgw and mcpgw-fuzz from one build
(cd tests/interop && MCPGW_BIN="$PWD/../../.build/release/mcpgw" "$python" -m pytest -q -p no:cacheprovider)
scripts/fuzz.sh --all "${FUZZ_SECONDS:-30}"
