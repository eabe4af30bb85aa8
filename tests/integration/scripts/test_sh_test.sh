#!/usr/bin/env bash
# Runs scripts/test.sh on one small unit test with one injected failing
# release test (EFPS_TEST_INJECT_FAIL=1), both suites on this build tree, and
# checks that it exits non-zero, that the ASan+UBSan suite still ran, and
# that the table and the last line report both suites.
# Usage: test_sh_test.sh SOURCE_DIR BUILD_DIR
set -uo pipefail
src=$1
build=$2
out=$(mktemp)
trap 'rm -f "$out"' EXIT
rc=0
EFPS_TEST_BUILD=0 EFPS_TEST_INJECT_FAIL=1 EFPS_TEST_FILTER='^(test_core|injected_failure)$' \
    EFPS_TEST_RELEASE_DIR=$build EFPS_TEST_ASAN_DIR=$build \
    "$src/scripts/test.sh" >"$out" 2>&1 || rc=$?
fail() {
    echo "test_sh_test: FAIL: $*" >&2
    echo "---- test.sh output" >&2
    cat "$out" >&2
    exit 1
}
[ "$rc" != 0 ] || fail "test.sh exited 0 with a failing test"
grep -Eq '^release +1 +1 ' "$out" || fail "no release row with 1 passed, 1 failed"
grep -Eq '^ASan\+UBSan +1 +0 ' "$out" || fail "the ASan+UBSan suite did not run after the release failure"
[ "$(tail -n 1 "$out")" = "2 passed, 1 failed" ] || fail "last line is '$(tail -n 1 "$out")', not '2 passed, 1 failed'"
echo "test_sh_test: test.sh ran both suites, reported both and exited $rc"
