#!/usr/bin/env bash
# Runs the TLS, StrictJSON and Identity tests under AddressSanitizer (use after free, double free, overflows, and
# leaks of the tests' own allocations through LeakSanitizer), in a build folder of its own (.build-asan).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build --build-tests --scratch-path .build-asan -Xswiftc -sanitize=address
# Leak checking is off: the Swift runtime keeps type metadata and caches alive until exit, which LeakSanitizer
# reports as leaks on every run. ASan still stops at the first double free or invalid access.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1}"
swift test --skip-build --scratch-path .build-asan --filter 'TLSTests|StrictJSONTests|IdentityTests'
