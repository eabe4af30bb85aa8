#!/usr/bin/env bash
# Issue 10, item 7: workers started 0-3 s before their servers, in shuffled
# order, 20 trials on tcp: every process of every trial finishes with exit 0
# (the workers retry their connects until EFPS_TIMEOUT_MS). Trials run ten
# at a time to stay short.
source "$(dirname "$0")/../integration/ps/lib.sh"
export EFPS_TIMEOUT_MS=15000
TRIALS=${TRIALS:-20} BATCH=${BATCH:-10}
S=2 M=2
ARGS=(--steps 5 --dim 512 --keys 2 --lr 1e-4)

# A port that is free now, below the kernel's ephemeral range: a port bind(0)
# hands out can meanwhile become some connect's source port (other trials,
# other tests' connection storms) before the late server binds it.
free_port() {
  python3 - <<'PY'
import random, socket
lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
for _ in range(1000):
    port = random.randrange(10000, lo)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    break
PY
}

# trial N: runs one job, returns 0 when every process exits 0.
trial() {
  local n=$1 list="" p pids=() names=() s r rc=0
  for ((s = 0; s < S; s++)); do list+="${list:+,}127.0.0.1:$(free_port)"; done
  # workers first, in shuffled order, then each server after its own 0-3 s
  for r in $(shuf -e $(seq 0 $((M - 1)))); do
    EFPS_SERVERS=$list EFPS_ROLE=worker EFPS_RANK=$r EFPS_NUM_WORKERS=$M \
      "$WORKER_BIN" --out "$TMP/x.$n.$r" "${ARGS[@]}" > "$TMP/t$n.worker.$r.log" 2>&1 &
    pids+=($!); names+=("worker $r")
  done
  for s in $(shuf -e $(seq 0 $((S - 1)))); do
    (sleep "$(awk -v r=$RANDOM 'BEGIN{printf "%.2f", r % 300 / 100}')"
     exec env EFPS_SERVERS=$list EFPS_NUM_WORKERS=$M "$SERVER_BIN" --rank "$s") \
      > "$TMP/t$n.server.$s.log" 2>&1 &
    pids+=($!); names+=("server $s")
  done
  for i in "${!pids[@]}"; do
    p=0; wait_pid "${pids[$i]}" 40 || p=$?
    if [ "$p" -ne 0 ]; then echo "trial $n: ${names[$i]} exited $p"; rc=1; fi
  done
  if [ "$rc" -ne 0 ]; then for f in "$TMP"/t$n.*.log; do echo "--- $f"; cat "$f"; done; fi
  return $rc
}

fails=0 t0=$SECONDS
for ((b = 0; b < TRIALS; b += BATCH)); do
  bp=()
  for ((n = b; n < b + BATCH && n < TRIALS; n++)); do trial "$n" & bp+=($!); done
  for p in "${bp[@]}"; do wait "$p" || fails=$((fails + 1)); done
done
echo "$((TRIALS - fails)) of $TRIALS trials finished (workers up to 3 s before their servers), $((SECONDS - t0)) s"
[ "$fails" -eq 0 ]
