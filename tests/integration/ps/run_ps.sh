#!/usr/bin/env bash
# S servers x M workers train least squares for 50 steps over loopback; every
# worker must end with the same parameters, bit-identical to efps_sim.
# usage: run_ps.sh --servers S --workers M --compressor C [--block B]
#                  [--partition-bytes P | --auto-partition] [--dim D --keys K] [--bare-servers] [--mpirun]
# (efps_sim blocks the whole vector: a block must divide each key's D/K elements)
# --bare-servers: the servers get no EFPS_COMPRESSOR/EFPS_BLOCK/
# EFPS_PARTITION_BYTES and run the layout the workers declare.
source "$(dirname "$0")/lib.sh"
S=1 M=2 C=blocksign MPI=0 DIM=4096 KEYS=4
while [ $# -gt 0 ]; do
  case $1 in
    --servers) S=$2; shift 2 ;;
    --workers) M=$2; shift 2 ;;
    --compressor) C=$2; shift 2 ;;
    --block) export EFPS_BLOCK=$2; shift 2 ;;
    --partition-bytes) export EFPS_PARTITION_BYTES=$2; shift 2 ;;
    --auto-partition) unset EFPS_PARTITION_BYTES; shift ;; # the workers choose (lib/ps/worker.c)
    --bare-servers) SERVER_UNSET="-u EFPS_COMPRESSOR -u EFPS_BLOCK -u EFPS_PARTITION_BYTES"; shift ;;
    --dim) DIM=$2; shift 2 ;;
    --keys) KEYS=$2; shift 2 ;;
    --mpirun) MPI=1; shift ;;
    *) echo "unknown argument $1"; exit 2 ;;
  esac
done
export EFPS_COMPRESSOR=$C
# Seconds a worker may take from start to exit (the VM, emulating its CPU, needs more).
WAIT_S=${EFPS_TEST_WAIT_S:-120}
ARGS=(--steps 50 --dim "$DIM" --keys "$KEYS" --lr 2e-5 --compressor "$C" --block "$EFPS_BLOCK" --nesterov --wd 1e-4)
start_servers "$S" "$M"
if ((MPI)); then
  # Ranks and the number of workers come from mpirun (OMPI_COMM_WORLD_*).
  mpirun --allow-run-as-root --oversubscribe -np "$M" -x EFPS_SERVERS -x EFPS_SECRET \
    -x EFPS_TIMEOUT_MS -x EFPS_PARTITION_BYTES -x EFPS_BLOCK -x EFPS_TRANSPORT -x EFPS_COMPRESSOR \
    -x EFPS_ROLE=worker sh -c "exec '$WORKER_BIN' --out '$TMP/x.'\$OMPI_COMM_WORLD_RANK $(printf "'%s' " "${ARGS[@]}")" \
    > "$TMP/mpirun.log" 2>&1 &
  MPI_PID=$!; PIDS+=($!)
  rc=0; wait_pid "$MPI_PID" "$WAIT_S" || rc=$?
  [ "$rc" -eq 0 ] || { echo "mpirun exited $rc"; show_logs; exit 1; }
else
  WPIDS=()
  for ((r = 0; r < M; r++)); do start_worker "$r" "$M" "${ARGS[@]}"; WPIDS+=("$LAST_PID"); done
  for ((r = 0; r < M; r++)); do
    rc=0; wait_pid "${WPIDS[$r]}" "$WAIT_S" || rc=$?
    [ "$rc" -eq 0 ] || { echo "worker $r exited $rc"; show_logs; exit 1; }
  done
fi
for ((s = 0; s < S; s++)); do
  rc=0; wait_pid "${SERVER_PIDS[$s]}" 30 || rc=$?
  [ "$rc" -eq 0 ] || { echo "server $s exited $rc"; show_logs; exit 1; }
done
"$WORKER_BIN" --sim --workers "$M" --out "$TMP/x.sim" "${ARGS[@]}" > "$TMP/sim.log" 2>&1 ||
  { echo "simulation failed"; show_logs; exit 1; }
for ((r = 0; r < M; r++)); do
  cmp "$TMP/x.$r" "$TMP/x.sim" || { echo "worker $r differs from efps_sim"; show_logs; exit 1; }
done
grep -h loss "$TMP"/*.log || true
echo "OK: $S server(s) x $M workers, $C: every worker bit-identical to efps_sim"
