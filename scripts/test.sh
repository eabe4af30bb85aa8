#!/usr/bin/env bash
# Every test: installs what is missing, builds a release tree and an
# ASan+UBSan tree (and checks that Release builds warning-free with gcc and
# clang), and runs every suite even when one fails: release ctest
# (without the VM tests), the python tests (ctest label python), the
# Soft-RoCE VM tests (label vm, their output streamed as they run), the
# ASan+UBSan ctest and scripts/fuzz.sh when it exists. Prints a table of
# suite, passed, failed and seconds, ends with the line "N passed, N failed"
# and exits non-zero when anything failed (a build, a test, a suite).
#
# Environment (defaults in brackets):
#   EFPS_TEST_BUILD=0         skip setup.sh and both builds [1]
#   EFPS_TEST_RELEASE_DIR     release tree [build]
#   EFPS_TEST_ASAN_DIR        ASan+UBSan tree [build-asan]
#   EFPS_TEST_FILTER=REGEX    only ctest tests matching REGEX (ctest -R), and
#                             no VM, python or fuzz suite unless it matches
#   EFPS_TEST_INJECT_FAIL=1   add one deliberately failing test to the
#                             release suite (to test this script)
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
jobs=$(nproc)
rel=${EFPS_TEST_RELEASE_DIR:-$root/build}
asan=${EFPS_TEST_ASAN_DIR:-$root/build-asan}
filter=${EFPS_TEST_FILTER:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

rows=()
total_pass=0
total_fail=0

# Records one row of the summary table.
record() { # suite passed failed seconds [note]
    rows+=("$(printf '%-28s %7s %7s %8s  %s' "$1" "$2" "$3" "$4" "${5:-}")")
    total_pass=$((total_pass + $2))
    total_fail=$((total_fail + $3))
}

# Runs a command that is one step (a build, a script): 1 passed or 1 failed.
step() { # suite command...
    local name=$1 t0 rc=0
    shift
    echo "== $name"
    t0=$SECONDS
    "$@" || rc=$?
    if [ "$rc" = 0 ]; then
        record "$name" 1 0 $((SECONDS - t0))
    else
        record "$name" 0 1 $((SECONDS - t0)) "exit code $rc"
    fi
    return "$rc"
}

# Runs ctest in a tree and records its counts from ctest's own summary line
# ("97% tests passed, 2 tests failed out of 66"). A ctest that ends without
# that line (crash, no tree) counts as one failure.
suite() { # suite dir ctest-args...
    local name=$1 dir=$2 t0 rc=0 line failed total
    shift 2
    echo "== $name"
    t0=$SECONDS
    if [ ! -f "$dir/CTestTestfile.cmake" ]; then
        echo "test.sh: $dir is not a built tree" >&2
        record "$name" 0 1 0 "no tree at $dir"
        return
    fi
    [ -n "$filter" ] && set -- "$@" -R "$filter"
    ctest --test-dir "$dir" "$@" 2>&1 | tee "$tmp/out"
    rc=${PIPESTATUS[0]}
    line=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$tmp/out" | tail -n 1)
    if [ -n "$line" ]; then
        failed=$(sed -E 's/.* ([0-9]+) tests? failed.*/\1/' <<<"$line")
        total=$(sed -E 's/.*out of ([0-9]+).*/\1/' <<<"$line")
        record "$name" $((total - failed)) "$failed" $((SECONDS - t0))
    elif grep -q 'No tests were found' "$tmp/out"; then
        record "$name" 0 0 $((SECONDS - t0)) "no tests"
    else
        record "$name" 0 1 $((SECONDS - t0)) "ctest exited $rc without a summary"
    fi
}

# With EFPS_TEST_INJECT_FAIL=1 the release suite runs from a directory whose
# CTestTestfile.cmake includes the release tree and adds one failing test,
# so the failure is a real ctest failure of that suite.
release_dir() {
    if [ "${EFPS_TEST_INJECT_FAIL:-0}" = 1 ]; then
        mkdir -p "$tmp/inject"
        {
            printf 'subdirs("%s")\n' "$rel"
            printf 'add_test(injected_failure "false")\n'
        } >"$tmp/inject/CTestTestfile.cmake"
        echo "$tmp/inject"
    else
        echo "$rel"
    fi
}

if [ "${EFPS_TEST_BUILD:-1}" != 0 ]; then
    step "setup" "$root/scripts/setup.sh"
    step "build (release)" "$root/scripts/build.sh" "$rel" -DCMAKE_BUILD_TYPE=RelWithDebInfo
    step "build (ASan+UBSan)" "$root/scripts/build.sh" "$asan" -DCMAKE_BUILD_TYPE=Debug -DEFPS_SANITIZE=ON
    # Release with gcc and with clang, warnings as errors: what a user's
    # default -O3 build meets (gcc's maybe-uninitialized lives there); built,
    # not tested: the suites above run the same sources.
    step "build (Release, gcc)" env CC=gcc CXX=g++ "$root/scripts/build.sh" "$root/build-release-gcc" \
        -DCMAKE_BUILD_TYPE=Release
    clang=$(command -v clang-14 || command -v clang || echo clang)
    step "build (Release, clang)" env CC="$clang" CXX="${clang/clang/clang++}" \
        "$root/scripts/build.sh" "$root/build-release-clang" -DCMAKE_BUILD_TYPE=Release
fi

suite "release" "$(release_dir)" --output-on-failure -j "$jobs" -LE 'vm|python'
suite "python" "$rel" --output-on-failure -j "$jobs" -L python
# -V streams each VM test's output as it runs (minutes each; they take turns).
suite "vm (Soft-RoCE)" "$rel" -V -L vm
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    suite "ASan+UBSan" "$asan" --output-on-failure -j "$jobs" -LE 'nosan|vm|python'
if [ -x "$root/scripts/fuzz.sh" ] && { [ -z "$filter" ] || [[ fuzz =~ $filter ]]; }; then
    step "fuzz" "$root/scripts/fuzz.sh"
fi

echo
printf '%-28s %7s %7s %8s\n' suite passed failed seconds
printf '%s\n' "${rows[@]}"
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" = 0 ]
