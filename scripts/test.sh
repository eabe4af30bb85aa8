#!/usr/bin/env bash
# Every test: installs what is missing, builds a release tree and an
# ASan+UBSan tree, and runs the whole ctest suite in both.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
jobs=$(nproc)

"$root/scripts/build.sh" build -DCMAKE_BUILD_TYPE=RelWithDebInfo
"$root/scripts/build.sh" build-asan -DCMAKE_BUILD_TYPE=Debug -DEFPS_SANITIZE=ON

echo "== tests (release)"
ctest --test-dir "$root/build" --output-on-failure -j "$jobs"
echo "== tests (AddressSanitizer + UndefinedBehaviorSanitizer)"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir "$root/build-asan" --output-on-failure -j "$jobs" -LE nosan
echo "== all tests passed"
