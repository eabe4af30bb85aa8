#!/usr/bin/env bash
# Runs every efps program with bad arguments (flags and EFPS_* values) and
# checks the one-line message: exit 2, nothing on stdout, exactly one line on
# stderr of the form "PROG: ARG: what is allowed; see --help" that names the
# argument and its value.
# Usage: cli_test.sh BUILD_DIR
set -uo pipefail
build=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0

# expect PROG-PATH WANT [VAR=VALUE ...] -- ARGS...: WANT is a fixed string
# the line must contain (the argument and its value).
expect() {
    local prog=$1 want=$2 envs=() rc=0 name line
    shift 2
    while [ "$1" != -- ]; do envs+=("$1"); shift; done
    shift
    name=$(basename "$prog")
    env "${envs[@]}" timeout 20 "$prog" "$@" >"$tmp/out" 2>"$tmp/err" </dev/null || rc=$?
    line=$(head -n 1 "$tmp/err")
    local what="${envs[*]} $name $*"
    if [ "$rc" != 2 ]; then
        echo "FAIL: $what: exit $rc, not 2"
    elif [ -s "$tmp/out" ]; then
        echo "FAIL: $what: printed on stdout: $(head -c 200 "$tmp/out")"
    elif [ "$(wc -l <"$tmp/err")" != 1 ]; then
        echo "FAIL: $what: $(wc -l <"$tmp/err") lines on stderr, not 1:"; cat "$tmp/err"
    elif [[ $line != "$name: "*"; see --help" ]]; then
        echo "FAIL: $what: '$line' is not '$name: ...; see --help'"
    elif [[ $line != *"$want"* ]]; then
        echo "FAIL: $what: '$line' does not contain '$want'"
    else
        echo "ok: $what -> $line"
        return
    fi
    failures=$((failures + 1))
}

server=$build/apps/efps-server/efps-server
perf=$build/apps/efps-perf/efps-perf
train=$build/apps/efps-train/efps-train
sim=$build/apps/efps-sim/efps-sim
smoke=$build/apps/efps-train/nn-smoke

for p in "$server" "$perf" "$train" "$sim" "$smoke"; do
    expect "$p" "--no-such-flag: unknown option" -- --no-such-flag
    expect "$p" "extra: unexpected argument" -- extra
done
expect "$server" "--workers 0: an integer from 1" -- --workers 0
expect "$server" "--workers two: an integer" -- --workers two
expect "$server" "--rank: needs a value" -- --rank
expect "$server" "--transport udp: one of auto, tcp, verbs" -- --transport udp
expect "$server" "--compressor foo: one of none, sign, blocksign" -- --compressor foo
expect "$server" "--block -1: an integer" -- --block -1
expect "$perf" "-c foo: one of none, sign, blocksign" -- -c foo
expect "$perf" "-s 1001: a multiple of 4" -- -s 1001
expect "$perf" "-r 17: an integer from 1 to 16" -- -r 17
expect "$perf" "--workers 300: an integer from 1 to 256" -- --workers 300
expect "$train" "--model resnet9: mlp, resnet8, resnet20" -- --model resnet9
expect "$train" "--epochs 1x: an integer" -- --epochs 1x
expect "$train" "EFPS_COMPRESSOR=foo: one of none, sign, blocksign" EFPS_COMPRESSOR=foo -- --workers 2
expect "$train" "EFPS_BLOCK=-1: an integer" EFPS_BLOCK=-1 -- --workers 2
expect "$train" "EFPS_TRANSPORT=foo: one of auto, tcp, verbs" EFPS_TRANSPORT=foo -- --workers 2
expect "$sim" "--workers 0: an integer from 1" -- --workers 0
expect "$sim" "--lr nan: a number" -- --lr nan
expect "$smoke" "--seed x: an integer" -- --seed x
expect "$smoke" "--model resnet9: mlp, resnet8" -- --model resnet9
if [ -x "$build/apps/efps-info/efps-info" ]; then
    expect "$build/apps/efps-info/efps-info" "--no-such-flag: unknown option" -- --no-such-flag
fi

if [ "$failures" != 0 ]; then
    echo "cli_test: $failures case(s) FAILED"
    exit 1
fi
echo "cli_test: every bad argument gave one line and exit 2"
