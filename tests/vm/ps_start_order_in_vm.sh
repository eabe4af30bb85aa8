#!/usr/bin/env bash
# Issue 10, item 7 over verbs, in the VM: workers started 0-3 s before their
# servers, in shuffled order, TRIALS trials (default 5) of 2 servers x 2
# workers on the VM's Soft-RoCE device; every process of every trial must
# exit 0 (a worker retries its refused rdma_cm connects until EFPS_TIMEOUT_MS).
# The tcp version is tests/hostile/start_order.sh. Under emulation a worker
# needs several seconds before its first connect (the data set, the device),
# so the servers' 0-3 s count from the moment every worker has opened its
# transport (its debug log says so; the connect follows at once), else the
# servers would always be up first and nothing would be tested. The trials
# together must see at least one retried connect. Trials run one after the
# other: the emulated CPU has 2 cores.
#   vm-run.sh -- bash tests/vm/ps_start_order_in_vm.sh BUILD_DIR
set -uo pipefail
if [ -z "${EFPSVM_DEV:-}" ] || [ -z "${EFPSVM_IP:-}" ]; then
    echo "ps_start_order_in_vm: EFPSVM_DEV/IP unset: run me inside the VM (tests/vm/vm-run.sh)" >&2
    exit 2
fi
export BUILD=$(cd "$1" && pwd)
export EFPS_TRANSPORT=verbs EFPS_TEST_HOST=$EFPSVM_IP EFPS_IB_DEV=$EFPSVM_DEV
# Long enough for a worker that waits 3 s plus an emulated start-up under load.
export EFPS_TIMEOUT_MS=${EFPS_TIMEOUT_MS:-60000}
source "$(dirname "$0")/../integration/ps/lib.sh"
set +e
TRIALS=${TRIALS:-5}
WAIT_S=${EFPS_TEST_WAIT_S:-180}
S=2 M=2
ARGS=(--steps 5 --dim 512 --keys 2 --lr 1e-4)
# rdma_cm's own port space (RoCE does not reserve kernel TCP ports); a random
# base keeps a rerun in the same boot off the previous trial's ports.
BASE=$((20000 + RANDOM % 20000))

# trial N: one job; 0 when every process exits 0.
trial() {
    local n=$1 list="" s r i p rc=0 pids=() names=() delays=""
    for ((s = 0; s < S; s++)); do list+="${list:+,}$HOST:$((BASE + n * S + s))"; done
    for r in $(shuf -e $(seq 0 $((M - 1)))); do
        EFPS_LOG=debug EFPS_SERVERS=$list EFPS_ROLE=worker EFPS_RANK=$r EFPS_NUM_WORKERS=$M \
            "$WORKER_BIN" --out "$TMP/x.$n.$r" "${ARGS[@]}" >"$TMP/t$n.worker.$r.log" 2>&1 &
        pids+=($!) names+=("worker $r") PIDS+=($!)
    done
    for ((i = 0; i < WAIT_S * 10; i++)); do
        [ "$(cat "$TMP"/t$n.worker.*.log | grep -c 'transport verbs open')" -ge $M ] && break
        sleep 0.1
    done
    for s in $(shuf -e $(seq 0 $((S - 1)))); do
        local d
        d=$(awk -v r=$RANDOM 'BEGIN { printf "%.2f", r % 300 / 100 }')
        delays+=" server $s +${d}s"
        (sleep "$d"; exec env EFPS_SERVERS=$list EFPS_NUM_WORKERS=$M "$SERVER_BIN" --rank "$s") \
            >"$TMP/t$n.server.$s.log" 2>&1 &
        pids+=($!) names+=("server $s") PIDS+=($!)
    done
    for i in "${!pids[@]}"; do
        p=0
        wait_pid "${pids[$i]}" "$WAIT_S" || p=$?
        [ "$p" -eq 0 ] || { echo "trial $n: ${names[$i]} exited $p"; rc=1; }
    done
    # Both workers end with the same parameters (the servers are the same).
    cmp -s "$TMP/x.$n.0" "$TMP/x.$n.1" || { echo "trial $n: the workers' parameters differ"; rc=1; }
    if [ "$rc" -ne 0 ]; then
        for f in "$TMP"/t$n.*.log; do echo "--- $f"; cat "$f"; done
    fi
    retried=$(cat "$TMP"/t$n.worker.*.log | grep -c 'not reachable yet')
    echo "trial $n:$delays: $([ $rc = 0 ] && echo ok || echo FAIL), $retried worker connect(s) retried"
    return $rc
}

fails=0 retries=0 t0=$SECONDS
for ((n = 0; n < TRIALS; n++)); do
    trial "$n" || fails=$((fails + 1))
    retries=$((retries + retried))
done
echo "$((TRIALS - fails)) of $TRIALS trials finished over verbs (workers up to 3 s before their servers," \
    "$retries connects retried), $((SECONDS - t0)) s"
[ "$retries" -gt 0 ] || { echo "FAIL: no worker ever connected before its server listened: nothing was tested"; exit 1; }
[ "$fails" -eq 0 ]
