#!/usr/bin/env bash
# Runs the TLS, StrictJSON and Identity tests under AddressSanitizer and LeakSanitizer (use after free, double free,
# overflows, leaks), in a build folder of its own (.build-asan).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build --build-tests --scratch-path .build-asan -Xswiftc -sanitize=address
# Leaks are checked too; what the Swift runtime and system libraries keep until exit is suppressed (scripts/lsan.supp).
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$PWD/scripts/lsan.supp}"
swift test --skip-build --scratch-path .build-asan --filter 'TLSTests|StrictJSONTests|IdentityTests'
