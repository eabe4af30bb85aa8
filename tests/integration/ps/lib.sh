# Shared by the parameter-server test scripts: start servers on free ports,
# start workers, wait with a deadline. Sourced, not run.
set -euo pipefail
: "${BUILD:?BUILD must point at the build directory}"
SERVER_BIN=$BUILD/apps/efps-server/efps-server
WORKER_BIN=$BUILD/tests/integration/ps/ps_lsq
TMP=$(mktemp -d /tmp/efps-ps.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
echo "efps-test-secret-$$" > "$TMP/secret"
export EFPS_SECRET=$(cat "$TMP/secret")
export EFPS_TIMEOUT_MS=${EFPS_TIMEOUT_MS:-8000}
export EFPS_PARTITION_BYTES=${EFPS_PARTITION_BYTES:-2048}
export EFPS_BLOCK=${EFPS_BLOCK:-256}
export EFPS_TRANSPORT=${EFPS_TRANSPORT:-tcp}
# The address servers listen on: loopback, or an RDMA device's address for
# verbs (rdma_cm has no route over 127.0.0.1). Not passed on: the library
# warns about EFPS_* names it does not know.
HOST=${EFPS_TEST_HOST:-127.0.0.1}
unset EFPS_TEST_HOST

# start_servers S M: servers on $HOST, port 0; sets EFPS_SERVERS and SERVER_PIDS.
# SERVER_UNSET (env -u options) keeps variables from the servers.
start_servers() {
  local s n=$1 m=$2 list=""
  SERVER_PIDS=()
  for ((s = 0; s < n; s++)); do list+="${list:+,}$HOST:0"; done
  for ((s = 0; s < n; s++)); do
    env ${SERVER_UNSET:-} EFPS_SERVERS=$list EFPS_NUM_WORKERS=$m "$SERVER_BIN" --rank "$s" --bind "$HOST:0" \
      --port-file "$TMP/port.$s" > "$TMP/server.$s.log" 2>&1 &
    SERVER_PIDS+=($!); PIDS+=($!)
  done
  list=""
  for ((s = 0; s < n; s++)); do
    for _ in $(seq 100); do [ -s "$TMP/port.$s" ] && break; sleep 0.1; done
    [ -s "$TMP/port.$s" ] || { echo "server $s did not start"; cat "$TMP/server.$s.log"; exit 1; }
    list+="${list:+,}$HOST:$(cat "$TMP/port.$s")"
  done
  export EFPS_SERVERS=$list
}

# start_worker RANK M [ps_lsq args...]: sets LAST_PID.
start_worker() {
  local r=$1 m=$2; shift 2
  EFPS_ROLE=worker EFPS_RANK=$r EFPS_NUM_WORKERS=$m "$WORKER_BIN" --out "$TMP/x.$r" "$@" \
    > "$TMP/worker.$r.log" 2>&1 &
  LAST_PID=$!; PIDS+=($!)
}

# wait_pid PID SECONDS: the exit code, or 124 after the deadline (the process is killed).
wait_pid() {
  local pid=$1 deadline=$((SECONDS + $2))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; return 124; fi
    sleep 0.1
  done
  local rc=0; wait "$pid" || rc=$?; return $rc
}

show_logs() { for f in "$TMP"/*.log; do echo "--- $(basename "$f")"; cat "$f"; done; }

# The fault scripts: each case starts processes, checks how each one ends,
# then reset kills what is left. They set LIMIT (seconds a process may take to
# notice) and fails=0 first.
reset() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; PIDS=(); rm -f "$TMP"/*.log "$TMP"/port.*; }

# expect_exit NAME PID WANT(0|nonzero) LOG PATTERN: PID ends within LIMIT
# seconds with that kind of exit and LOG matches PATTERN. A failure prints
# every log of the case, so a rare one can be read afterwards.
expect_exit() {
  local name=$1 pid=$2 want=$3 log=$4 pattern=$5 rc=0 t0=$SECONDS why=""
  wait_pid "$pid" "$LIMIT" || rc=$?
  if [ "$rc" -eq 124 ]; then why="still running after ${LIMIT}s"
  elif [ "$want" = 0 ] && [ "$rc" -ne 0 ]; then why="exit $rc, want 0"
  elif [ "$want" != 0 ] && [ "$rc" -eq 0 ]; then why="exit 0, want an error"
  elif [ -n "$pattern" ] && ! grep -qE "$pattern" "$log"; then why="$(basename "$log") lacks /$pattern/"
  fi
  if [ -n "$why" ]; then
    echo "FAIL $name: $why"; show_logs; fails=$((fails + 1)); return
  fi
  echo "ok   $name (exit $rc after $((SECONDS - t0)) s more)"
}
