#!/usr/bin/env bash
# expect.sh CODE PATTERN -- command...: runs the command (60 s at most) and
# checks its exit code and that its output (stdout + stderr) matches PATTERN.
set -uo pipefail
want=$1 pattern=$2; shift 3
out=$(timeout 60 "$@" 2>&1); rc=$?
if [ "$rc" -ne "$want" ]; then echo "exit $rc, want $want:"; echo "$out"; exit 1; fi
if ! grep -qE -- "$pattern" <<<"$out"; then echo "output lacks /$pattern/:"; echo "$out"; exit 1; fi
echo "ok: exit $rc, output matches /$pattern/"
