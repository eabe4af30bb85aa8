#!/usr/bin/env bash
# Faults and bad input against real server and worker processes. Each case:
# a clear error naming the peer, a non-zero exit where the run cannot go on,
# and no hang (every process gone within EFPS_TIMEOUT_MS plus slack).
source "$(dirname "$0")/lib.sh"
export EFPS_TIMEOUT_MS=4000
export EFPS_COMPRESSOR=blocksign
LIMIT=$((EFPS_TIMEOUT_MS / 1000 + 10)) # seconds any process may take to notice
SLOW=(--steps 400 --sleep-ms 50 --dim 1024 --keys 2 --lr 1e-4)
fails=0

echo "== a worker killed with SIGKILL mid-run"
start_servers 1 2
start_worker 0 2 "${SLOW[@]}"; W0=$LAST_PID
start_worker 1 2 "${SLOW[@]}"; W1=$LAST_PID
sleep 2; kill -9 "$W1"
expect_exit "server after worker 1 died" "${SERVER_PIDS[0]}" nonzero "$TMP/server.0.log" "worker 1"
expect_exit "worker 0 after worker 1 died" "$W0" nonzero "$TMP/worker.0.log" "server 0"
reset

echo "== a server killed with SIGKILL mid-run"
start_servers 2 2
start_worker 0 2 "${SLOW[@]}"; W0=$LAST_PID
start_worker 1 2 "${SLOW[@]}"; W1=$LAST_PID
sleep 2; kill -9 "${SERVER_PIDS[1]}"
expect_exit "worker 0 after server 1 died" "$W0" nonzero "$TMP/worker.0.log" "server 1"
expect_exit "worker 1 after server 1 died" "$W1" nonzero "$TMP/worker.1.log" "server 1"
expect_exit "server 0 after server 1 died" "${SERVER_PIDS[0]}" nonzero "$TMP/server.0.log" "worker"
reset

echo "== a worker with the wrong secret"
start_servers 1 2
start_worker 0 2 "${SLOW[@]}"; W0=$LAST_PID
EFPS_SECRET=not-the-secret start_worker 1 2 "${SLOW[@]}"; W1=$LAST_PID
expect_exit "worker with wrong secret" "$W1" nonzero "$TMP/worker.1.log" "wrong secret"
expect_exit "server without its second worker" "${SERVER_PIDS[0]}" nonzero "$TMP/server.0.log" "refused peer .*wrong secret|joined"
expect_exit "worker 0 without a partner" "$W0" nonzero "$TMP/worker.0.log" "server 0"
reset

echo "== a worker with a different model layout"
start_servers 1 2
start_worker 0 2 "${SLOW[@]}"; W0=$LAST_PID
start_worker 1 2 --steps 400 --sleep-ms 50 --dim 1000 --keys 2; W1=$LAST_PID
# Whichever layout reaches the server first is the reference; the other is refused.
expect_exit "worker 1 of the mismatched run" "$W1" nonzero "$TMP/worker.1.log" "server 0"
expect_exit "worker 0 of the mismatched run" "$W0" nonzero "$TMP/worker.0.log" "server 0"
expect_exit "server with mismatched workers" "${SERVER_PIDS[0]}" nonzero "$TMP/server.0.log" "layout differs"
if grep -q "refused us: model layout differs" "$TMP"/worker.*.log; then echo "ok   the refused worker was told why"
else echo "FAIL no worker was told why it was refused"; cat "$TMP"/worker.*.log; fails=$((fails + 1)); fi
reset

echo "== a server given EFPS_BLOCK=0, workers declaring block 2048"
EFPS_BLOCK=0 start_servers 1 2
start_worker 0 2 "${SLOW[@]}" --block 2048; W0=$LAST_PID
start_worker 1 2 "${SLOW[@]}" --block 2048; W1=$LAST_PID
expect_exit "server given EFPS_BLOCK=0" "${SERVER_PIDS[0]}" nonzero "$TMP/server.0.log" "EFPS_BLOCK=0 \(by the environment\)"
expect_exit "worker 0 declaring block 2048" "$W0" nonzero "$TMP/worker.0.log" "server 0"
expect_exit "worker 1 declaring block 2048" "$W1" nonzero "$TMP/worker.1.log" "server 0"
if grep -q "was given EFPS_BLOCK=0 (by the environment) but this worker declares block 2048" "$TMP"/worker.*.log
then echo "ok   the refused worker was told EFPS_BLOCK"
else echo "FAIL no worker was told about EFPS_BLOCK"; cat "$TMP"/worker.*.log; fails=$((fails + 1)); fi
reset

echo "== random bytes and a truncated header at a server's port, then a normal run"
start_servers 1 1
port=${EFPS_SERVERS##*:}
head -c 4096 /dev/urandom > "$TMP/junk"
(exec 3<>"/dev/tcp/127.0.0.1/$port" && cat "$TMP/junk" >&3 && sleep 0.5) 2>/dev/null || true
(exec 3<>"/dev/tcp/127.0.0.1/$port" && printf 'EFP' >&3 && sleep 0.5) 2>/dev/null || true
start_worker 0 1 --steps 20 --dim 1024 --keys 2 --lr 1e-4; W0=$LAST_PID
expect_exit "worker after junk connections" "$W0" 0 "$TMP/worker.0.log" ""
expect_exit "server after junk connections" "${SERVER_PIDS[0]}" 0 "$TMP/server.0.log" ""
reset

if [ "$fails" -ne 0 ]; then echo "$fails fault case(s) failed"; exit 1; fi
echo "OK: every fault case"
