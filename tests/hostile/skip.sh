#!/usr/bin/env bash
# Issue 10, item 5: the skip contract and a worker that leaves early.
# - efps_ps_skip is bit-identical to pushing a payload of zero bytes: with
#   compressor none and no momentum (a zero gradient then pushes all-zero
#   bytes and leaves the same state) at step 3, and with blocksign at step 0
#   (momentum and error are still zero), every worker ends bit-identical in
#   the run that skips and in the run that pushes zeros, and differs from a
#   run that does neither.
# - A worker that finalizes while the others go on is named to all of them;
#   nothing hangs.
source "$(dirname "$0")/../integration/ps/lib.sh"
export EFPS_TIMEOUT_MS=6000
LIMIT=$((EFPS_TIMEOUT_MS / 1000 + 10))
fails=0

# run NAME C ARGS...: a 1 x 2 job; final parameters in $TMP/NAME.{0,1}
run() {
  local name=$1 c=$2; shift 2
  export EFPS_COMPRESSOR=$c
  start_servers 1 2
  local w=()
  for r in 0 1; do start_worker "$r" 2 --compressor "$c" --block "$EFPS_BLOCK" "$@"; w+=("$LAST_PID"); done
  for r in 0 1; do
    rc=0; wait_pid "${w[$r]}" 60 || rc=$?
    [ "$rc" -eq 0 ] || { echo "FAIL $name: worker $r exited $rc"; show_logs; fails=$((fails + 1)); }
    cp "$TMP/x.$r" "$TMP/$name.$r" 2>/dev/null || true
  done
  rc=0; wait_pid "${SERVER_PIDS[0]}" 30 || rc=$?
  [ "$rc" -eq 0 ] || { echo "FAIL $name: server exited $rc"; show_logs; fails=$((fails + 1)); }
  reset
}

same() { # A B WHAT
  if cmp -s "$TMP/$1.0" "$TMP/$2.0" && cmp -s "$TMP/$1.1" "$TMP/$2.1"; then echo "ok   $3"
  else echo "FAIL $3"; fails=$((fails + 1)); fi
}
differ() {
  if ! cmp -s "$TMP/$1.0" "$TMP/$2.0"; then echo "ok   $3"; else echo "FAIL $3"; fails=$((fails + 1)); fi
}

BASE=(--steps 8 --dim 2048 --keys 3 --lr 1e-4)
echo "== none, no momentum: skip at step 3 vs a zero gradient at step 3"
run none_skip none "${BASE[@]}" --momentum 0 --skip 1:3
run none_zero none "${BASE[@]}" --momentum 0 --zero 1:3
run none_plain none "${BASE[@]}" --momentum 0
same none_skip none_zero "none: skipping is bit-identical to pushing zeros"
differ none_skip none_plain "none: and differs from not skipping"

echo "== blocksign: skip at step 0 vs a zero gradient at step 0"
run bs_skip blocksign "${BASE[@]}" --skip 1:0
run bs_zero blocksign "${BASE[@]}" --zero 1:0
run bs_plain blocksign "${BASE[@]}"
same bs_skip bs_zero "blocksign: skipping is bit-identical to pushing zeros"
differ bs_skip bs_plain "blocksign: and differs from not skipping"

echo "== worker 1 finalizes after 3 of 40 steps"
export EFPS_COMPRESSOR=blocksign
start_servers 1 2
start_worker 0 2 --steps 40 --dim 1024 --keys 2 --sleep-ms 20; W0=$LAST_PID
start_worker 1 2 --steps 40 --dim 1024 --keys 2 --sleep-ms 20 --leave 1:3; W1=$LAST_PID
expect_exit "the worker that left" "$W1" 0 "$TMP/worker.1.log" ""
expect_exit "worker 0 is told who left" "$W0" nonzero "$TMP/worker.0.log" "worker 1 .*left early"
expect_exit "the server names it" "${SERVER_PIDS[0]}" nonzero "$TMP/server.0.log" "worker 1 .*left early"
reset

if [ "$fails" -ne 0 ]; then echo "$fails check(s) failed"; exit 1; fi
echo "OK: skip and leaving early"
