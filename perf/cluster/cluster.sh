#!/usr/bin/env bash
# An emulated cluster on one machine: S server hosts and M worker hosts, each
# a network namespace with one link (a veth pair) into a bridge that lives in
# a namespace of its own, like hosts on one switch. Every link is shaped in
# both directions with tc (tbf at --rate; netem for --delay and --loss on the
# host's egress), addresses come from 198.18.0.0/15 (the benchmarking range,
# never a real network). efps-server and efps-train run in the namespaces in
# cluster mode (EFPS_RANK / EFPS_NUM_WORKERS / EFPS_SERVERS / EFPS_SECRET),
# and the harness collects every worker's per-step CSV, the bytes of every
# link, and a summary (see --help). Everything it made is torn down on exit,
# also on Ctrl-C; namespaces left by a harness that was killed (-9) are
# removed by the next run. Needs root: without it, says so and exits 77.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: perf/cluster/cluster.sh [options]
Runs efps-server and efps-train on an emulated cluster of shaped links.

  --servers S        server hosts                                   (1)
  --colocate         server s on worker s's host instead of a host of its own
  --ddp              no servers: examples/torch/train_resnet.py --dist ddp
                     (gloo, fp32) on the workers' hosts (summary.csv only;
                     its step is the epoch's mean, the first step included)
  --workers M        worker hosts, one efps-train worker each       (2)
  --rate R           every host link, both directions, tc units: 1mbit,
                     10mbit, 1gbit; "none" = not shaped             (none)
  --delay D          one-way latency between two hosts (netem), e.g. 1ms
  --loss P           packet loss on each host's egress (netem), e.g. 0.1%
  --compressor C     none, sign or blocksign                        (blocksign)
  --block N          blocksign block                                (2048)
  --model NAME       efps-train model                               (resnet8)
  --images N         training images (--train-subset)               (1024)
  --test-images N    test images worker 0 evaluates on              (100)
  --batch N          images per worker and step                     (64)
  --epochs N                                                        (1)
  --partition-bytes N  largest tensor part (EFPS_PARTITION_BYTES)   (library's)
  --queue MS         tbf queue of the switch's port to each host, in ms at
                     --rate: a shallow switch buffer drops on incast   (100)
  --host-queue MS    tbf queue of each host's own egress (1000): a host's
                     NIC holds its own senders back instead of dropping
                     (a 100 ms queue here dropped a third of a server's
                     packets under the machine's BBR)
  --sample MS        every MS, the byte counters of every link
                     (samples.csv; perf/cluster/timeline.py plots them)
  --bulk SECONDS     before training, time a bulk TCP transfer of about
                     SECONDS at --rate each way between worker 0 and server 0
                     (bulk.csv): checks that the links are really shaped
  --no-train         only build the cluster (and run --bulk), no training
  --timeout SECONDS  give up on the training after this long        (1800)
  --build DIR        build tree with the programs                   (build)
  --out DIR          results (created; required)
  -h, --help         this text

Results in DIR: steps.<rank> (every worker's per-step CSV: epoch, step,
start_s, step_s, compute_s, push_s, pull_s, push_bytes, cpu_s), links.csv (tx/rx
bytes of every host link during training), tc.txt (qdisc statistics:
drops, overlimits), worker.<rank>.log, server.<rank>.log, epochs.csv
(worker 0), summary.csv (one row: the setting, wall time, mean step and
its parts without each epoch's first and last steps, and the busiest
link's wire time per step at --rate against the measured step).
USAGE
}

die() { echo "cluster.sh: $*" >&2; exit 1; }

root=$(cd "$(dirname "$0")/../.." && pwd)
SERVERS=1 WORKERS=2 RATE=none DELAY="" LOSS="" COMPRESSOR=blocksign BLOCK=2048
MODEL=resnet8 IMAGES=1024 TEST_IMAGES=100 BATCH=64 EPOCHS=1 BULK="" TRAIN=1
TIMEOUT=1800 BUILD=$root/build OUT="" NICE=${NICE:-10} QUEUE_MS=100 PARTITION=""
SAMPLE_MS="" HOST_QUEUE_MS=1000 COLOCATE=0 DDP=0
PORT=7000 BULK_PORT=9000

need() { [ $# -ge 2 ] && [ -n "$2" ] || die "missing value for '$1' (see --help)"; }
int_arg() { [[ $2 =~ ^[0-9]+$ ]] && [ "$2" -ge "${3:-1}" ] || die "$1 needs an integer >= ${3:-1}, not '$2'"; }
while [ $# -gt 0 ]; do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --no-train) TRAIN=0; shift; continue ;;
    --colocate) COLOCATE=1; shift; continue ;;
    --ddp) DDP=1; SERVERS=0; shift; continue ;;
    --servers|--workers|--rate|--delay|--loss|--compressor|--block|--model|--images|\
    --test-images|--batch|--epochs|--bulk|--timeout|--build|--out|--queue|--partition-bytes|--sample|--host-queue) need "$@" ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  case $1 in
    --servers) int_arg "$1" "$2"; SERVERS=$2 ;;
    --workers) int_arg "$1" "$2"; WORKERS=$2 ;;
    --rate) RATE=$2 ;;
    --delay) DELAY=$2 ;;
    --loss) LOSS=$2 ;;
    --compressor) COMPRESSOR=$2 ;;
    --block) int_arg "$1" "$2" 0; BLOCK=$2 ;;
    --model) MODEL=$2 ;;
    --images) int_arg "$1" "$2"; IMAGES=$2 ;;
    --test-images) int_arg "$1" "$2"; TEST_IMAGES=$2 ;;
    --batch) int_arg "$1" "$2"; BATCH=$2 ;;
    --epochs) int_arg "$1" "$2"; EPOCHS=$2 ;;
    --bulk) int_arg "$1" "$2"; BULK=$2 ;;
    --queue) int_arg "$1" "$2"; QUEUE_MS=$2 ;;
    --sample) int_arg "$1" "$2"; SAMPLE_MS=$2 ;;
    --host-queue) int_arg "$1" "$2"; HOST_QUEUE_MS=$2 ;;
    --partition-bytes) int_arg "$1" "$2" 64; PARTITION=$2 ;;
    --timeout) int_arg "$1" "$2"; TIMEOUT=$2 ;;
    --build) BUILD=$2 ;;
    --out) OUT=$2 ;;
  esac
  shift 2
done
[ -n "$OUT" ] || die "--out DIR is required (see --help)"
[ "$DDP" -eq 0 ] || SERVERS=0
[ "$SERVERS" -le 254 ] && [ "$WORKERS" -le 254 ] || die "at most 254 servers and 254 workers"
[ "$COLOCATE" -eq 0 ] || [ "$SERVERS" -le "$WORKERS" ] || die "--colocate needs --servers <= --workers"
case $COMPRESSOR in none|sign|blocksign) ;; *) die "--compressor needs none, sign or blocksign, not '$COMPRESSOR'" ;; esac

# "10mbit" -> 10000000 (tc's decimal units); "none" -> 0.
rate_bps() {
  local r=${1,,} n u
  [ "$r" = none ] && { echo 0; return; }
  [[ $r =~ ^([0-9]+(\.[0-9]+)?)(bit|kbit|mbit|gbit)$ ]] || die "--rate needs a number and bit, kbit, mbit or gbit, not '$1'"
  n=${BASH_REMATCH[1]} u=${BASH_REMATCH[3]}
  awk -v n="$n" -v u="$u" 'BEGIN { m = u == "kbit" ? 1e3 : u == "mbit" ? 1e6 : u == "gbit" ? 1e9 : 1; printf "%.0f\n", n * m }'
}
RATE_BPS=$(rate_bps "$RATE")
[ -z "$BULK" ] || [ "$RATE_BPS" -gt 0 ] || die "--bulk needs --rate (it checks the rate)"
TRAIN_BIN=$BUILD/apps/efps-train/efps-train SERVER_BIN=$BUILD/apps/efps-server/efps-server
if [ "$TRAIN" -eq 1 ] && { [ ! -x "$TRAIN_BIN" ] || [ ! -x "$SERVER_BIN" ]; }; then
  die "no efps-train / efps-server in $BUILD (build first, or --build DIR)"
fi

# ---- root and namespaces: say why not, and skip (77) ------------------------
if [ "$(id -u)" -ne 0 ]; then
  echo "cluster.sh: needs root to create network namespaces and shape links with tc; skipped" >&2
  exit 77
fi
for t in ip tc ss; do
  command -v "$t" > /dev/null || { echo "cluster.sh: '$t' not found (Debian: iproute2); skipped" >&2; exit 77; }
done
PFX=efpsc-$$-
PORT_PFX=ec$$ # bridge-side ends, in the bridge's namespace (15-character names)
SW=${PFX}sw
NSS=() PIDS=()

# A harness killed with -9 cannot clean up: remove namespaces of our prefix
# whose harness is gone, and every process still in them (ours, started there).
stale_cleanup() {
  local ns pid p
  for ns in $(ip netns list | awk '{ print $1 }' | grep '^efpsc-[0-9]*-' || true); do
    pid=${ns#efpsc-}; pid=${pid%%-*}
    kill -0 "$pid" 2> /dev/null && continue
    for p in $(ip netns pids "$ns" 2> /dev/null); do kill -KILL "$p" 2> /dev/null || true; done
    ip netns del "$ns" 2> /dev/null || true
  done
}

teardown() {
  local rc=$? p ns i
  set +e
  trap - EXIT INT TERM
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2> /dev/null; done
  for p in "${PIDS[@]}"; do
    for i in $(seq 20); do kill -0 "$p" 2> /dev/null || break; sleep 0.05; done
    kill -KILL "$p" 2> /dev/null
  done
  for ((i = ${#NSS[@]} - 1; i >= 0; i--)); do
    ns=${NSS[$i]}
    for p in $(ip netns pids "$ns" 2> /dev/null); do kill -KILL "$p" 2> /dev/null; done
    ip netns del "$ns" 2> /dev/null || echo "cluster.sh: could not delete namespace $ns" >&2
  done
  wait 2> /dev/null
  exit "$rc"
}
trap teardown EXIT
trap 'echo "cluster.sh: line $LINENO: $BASH_COMMAND failed" >&2' ERR
trap 'echo "cluster.sh: interrupted, tearing down" >&2; exit 130' INT
trap 'echo "cluster.sh: terminated, tearing down" >&2; exit 143' TERM

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
stale_cleanup
if ! ip netns add "$SW" 2> "$OUT/netns.err"; then
  echo "cluster.sh: cannot create a network namespace ($(cat "$OUT/netns.err")); skipped" >&2
  exit 77
fi
rm -f "$OUT/netns.err"
NSS+=("$SW")
ip -n "$SW" link set lo up
# netem is a module some kernels lack (sch_netem): say so before building anything
if [ -n "$DELAY$LOSS" ] && ! tc -n "$SW" qdisc add dev lo root netem delay 1ms 2> /dev/null; then
  die "--delay and --loss need tc's netem, which this kernel does not have (modprobe sch_netem: $(modprobe sch_netem 2>&1 | tail -1))"
fi
tc -n "$SW" qdisc del dev lo root 2> /dev/null || true
ip -n "$SW" link add br0 type bridge
ip -n "$SW" link set br0 up

# tbf at --rate: a bucket of 10 ms of the rate (at least 4 KiB: a few frames)
# and a queue of up to --queue ms on the switch's ports (--host-queue on a
# host's own egress); GSO packets larger than the bucket are segmented by tbf
# itself. A short queue drops packets when M workers push to one server at
# once (incast), as a shallow switch buffer does.
shape() { # shape NS DEV WITH_NETEM QUEUE_MS
  local ns=$1 dev=$2 netem=$3 q=$4 burst parent=root
  if [ "$netem" -eq 1 ] && [ -n "$DELAY$LOSS" ]; then
    tc -n "$ns" qdisc add dev "$dev" root handle 1: netem limit 100000 \
      ${DELAY:+delay "$DELAY"} ${LOSS:+loss "$LOSS"}
    parent="parent 1:1"
  fi
  [ "$RATE_BPS" -gt 0 ] || return 0
  burst=$(( RATE_BPS / 800 > 4096 ? RATE_BPS / 800 : 4096 ))
  # shellcheck disable=SC2086
  tc -n "$ns" qdisc add dev "$dev" $parent handle 10: tbf rate "$RATE_BPS"bit burst "$burst" latency "${q}ms"
}

add_host() { # add_host NS ADDR PORT
  local ns=$1 addr=$2 port=$3
  ip netns add "$ns"
  NSS+=("$ns")
  ip -n "$ns" link set lo up
  ip -n "$SW" link add "$port" type veth peer name eth0 netns "$ns"
  ip -n "$SW" link set "$port" master br0 up
  ip -n "$ns" addr add "$addr/15" dev eth0
  ip -n "$ns" link set eth0 up
  shape "$ns" eth0 1 "$HOST_QUEUE_MS" # host -> switch
  shape "$SW" "$port" 0 "$QUEUE_MS"   # switch -> host
}

# --colocate: server s runs on worker s's host (BytePS' advice: S = M, every
# host a worker and a server), its traffic with that worker stays on the host.
server_addr() { if [ "$COLOCATE" -eq 1 ]; then worker_addr "$1"; else echo "198.18.0.$(( $1 + 1 ))"; fi; }
server_ns() { if [ "$COLOCATE" -eq 1 ]; then echo "${PFX}w$1"; else echo "${PFX}s$1"; fi; }
worker_addr() { echo "198.18.1.$(( $1 + 1 ))"; }
LIST=""
for ((s = 0; s < SERVERS; s++)); do
  [ "$COLOCATE" -eq 1 ] || add_host "${PFX}s$s" "$(server_addr $s)" "${PORT_PFX}s$s"
  LIST+="${LIST:+,}$(server_addr $s):$PORT"
done
for ((w = 0; w < WORKERS; w++)); do
  add_host "${PFX}w$w" "$(worker_addr $w)" "${PORT_PFX}w$w"
done
echo "cluster.sh: $SERVERS server$([ "$COLOCATE" -eq 0 ] || echo "s on the first worker hosts") and $WORKERS worker hosts (${PFX}*), links $RATE${DELAY:+, delay $DELAY}${LOSS:+, loss $LOSS}"

# wait_listen NS ADDR PORT PID: until something listens there (10 s), or PID dies.
wait_listen() {
  local i
  for i in $(seq 200); do
    ip netns exec "$1" ss -ltnH "src $2:$3" 2> /dev/null | grep -q . && return 0
    kill -0 "$4" 2> /dev/null || return 1
    sleep 0.05
  done
  return 1
}

# ---- bulk transfer: is the link what we asked for? --------------------------
# bulk FROM_NS TO_NS TO_ADDR LABEL: SECONDS of the rate from one host to the
# other through bash's /dev/tcp; the receiver times the middle 80% of the
# bytes (slow start and a late final read left out). Both ends run at nice 0:
# on a loaded machine a starved receiver would measure the scheduler.
bulk() {
  local from=$1 to=$2 addr=$3 label=$4 bytes pid
  bytes=$(( RATE_BPS / 8 * BULK ))
  BULK_NICE=$(( -$(nice) ))
  ip netns exec "$to" nice -n "$BULK_NICE" /usr/bin/python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)
total = int(sys.argv[3]); c, _ = s.accept(); n = 0; t10 = t90 = None
while True:
    b = c.recv(1 << 16)
    if not b: break
    n += len(b)
    if t10 is None and n >= total // 10: t10, n10 = time.monotonic(), n
    if t90 is None and n >= total * 9 // 10: t90, n90 = time.monotonic(), n
dt = t90 - t10 if t90 is not None and t10 is not None else 0
print("%d,%.6f,%.0f" % (n, dt, 8 * (n90 - n10) / dt if dt > 0 else 0))
' "$addr" "$BULK_PORT" "$bytes" > "$OUT/bulk.$label" &
  pid=$!; PIDS+=("$pid")
  wait_listen "$to" "$addr" "$BULK_PORT" "$pid" || die "bulk receiver did not start"
  ip netns exec "$from" nice -n "$BULK_NICE" timeout $(( 4 * BULK + 30 )) bash -c \
    'head -c "$1" /dev/zero > "/dev/tcp/$2/$3"' _ "$bytes" "$addr" "$BULK_PORT" ||
    die "bulk transfer $label failed"
  wait "$pid" || die "bulk receiver $label failed"
  echo "$label,$RATE_BPS,$(cat "$OUT/bulk.$label")" >> "$OUT/bulk.csv"
  rm -f "$OUT/bulk.$label"
}
if [ -n "$BULK" ]; then
  echo "direction,rate_bps,bytes,seconds,goodput_bps" > "$OUT/bulk.csv"
  bulk "${PFX}w0" "$(server_ns 0)" "$(server_addr 0)" worker0-to-server0
  bulk "$(server_ns 0)" "${PFX}w0" "$(worker_addr 0)" server0-to-worker0
  awk -F, 'NR > 1 { printf "cluster.sh: bulk %s: %.3f Mb/s at %.3f Mb/s (%.3f)\n", $1, $5 / 1e6, $2 / 1e6, $5 / $2 }' "$OUT/bulk.csv"
fi
[ "$TRAIN" -eq 1 ] || exit 0

# ---- training -----------------------------------------------------------------
SECRET=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
# Peers wait for each other across slow links and worker 0's evaluation:
# a generous timeout, the harness' own --timeout bounds the run.
COMMON=(EFPS_SERVERS="$LIST" EFPS_NUM_WORKERS="$WORKERS" EFPS_SECRET="$SECRET"
        EFPS_TRANSPORT=tcp EFPS_COMPRESSOR="$COMPRESSOR" EFPS_BLOCK="$BLOCK"
        EFPS_TIMEOUT_MS=$(( TIMEOUT * 1000 )))
[ -z "$PARTITION" ] || COMMON+=(EFPS_PARTITION_BYTES="$PARTITION")

# counters FILE: tx and rx bytes of every host's link, as the host sees them.
counters() {
  local ns
  for ns in "${NSS[@]:1}"; do
    echo "${ns#"$PFX"},$(ip netns exec "$ns" cat /sys/class/net/eth0/statistics/tx_bytes),$(ip netns exec "$ns" cat /sys/class/net/eth0/statistics/rx_bytes)"
  done > "$1"
}

# --sample MS: every host link's byte counters over time, read from the
# bridge's side of each veth (its tx is the host's ingress): samples.csv,
# time on CLOCK_MONOTONIC as the step CSVs' start_s.
sampler() {
  ip netns exec "$SW" /usr/bin/python3 -c '
import os, sys, time
pfx, every = sys.argv[1], float(sys.argv[2]) / 1000
ports = sorted(p for p in os.listdir("/sys/class/net") if p.startswith(pfx))
def rd(p, w):
    with open("/sys/class/net/%s/statistics/%s_bytes" % (p, w)) as f:
        return f.read().strip()
print("t," + ",".join("%s_in,%s_out" % (p[len(pfx):], p[len(pfx):]) for p in ports), flush=True)
while True:
    print("%.4f,%s" % (time.monotonic(), ",".join(rd(p, "tx") + "," + rd(p, "rx") for p in ports)), flush=True)
    time.sleep(every)
' "$PORT_PFX" "$SAMPLE_MS" > "$OUT/samples.csv" &
  PIDS+=($!) SAMPLER=$!
}
SAMPLER=""
[ -z "$SAMPLE_MS" ] || sampler

SPIDS=() WPIDS=()
for ((s = 0; s < SERVERS; s++)); do
  ip netns exec "$(server_ns $s)" env "${COMMON[@]}" nice -n "$NICE" "$SERVER_BIN" --rank "$s" \
    --bind "$(server_addr $s):$PORT" > "$OUT/server.$s.log" 2>&1 &
  PIDS+=($!) SPIDS+=($!)
done
for ((s = 0; s < SERVERS; s++)); do
  wait_listen "$(server_ns $s)" "$(server_addr $s)" "$PORT" "${SPIDS[$s]}" ||
    die "server $s did not start: $(cat "$OUT/server.$s.log")"
done
counters "$OUT/links.before"
rm -f "$OUT"/steps.* "$OUT/epochs.csv"
t0=$(date +%s.%N)
for ((w = 0; w < WORKERS; w++)); do
  csv=()
  [ "$w" -ne 0 ] || csv=(--csv "$OUT/epochs.csv")
  if [ "$DDP" -eq 1 ]; then # torch's DDP over gloo, the same model and data
    ip netns exec "${PFX}w$w" env RANK="$w" WORLD_SIZE="$WORKERS" LOCAL_RANK=0 \
      MASTER_ADDR="$(worker_addr 0)" MASTER_PORT="$PORT" GLOO_SOCKET_IFNAME=eth0 \
      nice -n "$NICE" /usr/bin/python3 "$root/examples/torch/train_resnet.py" --dist ddp \
      --model "$MODEL" --dataset fashion-mnist --train-subset "$IMAGES" --test-subset "$TEST_IMAGES" \
      --batch-size "$BATCH" --epochs "$EPOCHS" --threads 1 --progress none "${csv[@]}" \
      > "$OUT/worker.$w.log" 2>&1 &
    PIDS+=($!) WPIDS+=($!)
    continue
  fi
  ip netns exec "${PFX}w$w" env "${COMMON[@]}" EFPS_RANK="$w" nice -n "$NICE" "$TRAIN_BIN" \
    --model "$MODEL" --compressor "$COMPRESSOR" --block "$BLOCK" --transport tcp \
    --train-subset "$IMAGES" --test-subset "$TEST_IMAGES" --batch "$BATCH" --epochs "$EPOCHS" \
    --step-csv "$OUT/steps" "${csv[@]}" > "$OUT/worker.$w.log" 2>&1 &
  PIDS+=($!) WPIDS+=($!)
done

# Until every worker is done; the first failure (or a server's) ends the run.
deadline=$(( SECONDS + TIMEOUT ))
done_w=() done_s=()
while [ ${#done_w[@]} -lt "$WORKERS" ]; do
  for ((w = 0; w < WORKERS; w++)); do
    [ -z "${done_w[$w]:-}" ] && ! kill -0 "${WPIDS[$w]}" 2> /dev/null || continue
    rc=0; wait "${WPIDS[$w]}" || rc=$?
    [ "$rc" -eq 0 ] || die "worker $w exited $rc: $(tail -5 "$OUT/worker.$w.log")"
    done_w[$w]=1
  done
  for ((s = 0; s < SERVERS; s++)); do
    [ -z "${done_s[$s]:-}" ] && ! kill -0 "${SPIDS[$s]}" 2> /dev/null || continue
    rc=0; wait "${SPIDS[$s]}" || rc=$?
    [ "$rc" -eq 0 ] || die "server $s exited $rc: $(tail -5 "$OUT/server.$s.log")"
    done_s[$s]=1 # it exits 0 once every worker said goodbye
  done
  [ "$SECONDS" -lt "$deadline" ] || die "training not done after $TIMEOUT s (see $OUT/worker.*.log)"
  sleep 0.1
done
t1=$(date +%s.%N)
[ -z "$SAMPLER" ] || kill -TERM "$SAMPLER" 2> /dev/null || true
for ((s = 0; s < SERVERS; s++)); do
  [ -z "${done_s[$s]:-}" ] || continue
  timeout 30 tail --pid="${SPIDS[$s]}" -f /dev/null || die "server $s did not exit after the workers"
  wait "${SPIDS[$s]}" || die "server $s exited non-zero: $(tail -5 "$OUT/server.$s.log")"
done
counters "$OUT/links.after"
for ns in "${NSS[@]}"; do
  for dev in $(ip -n "$ns" -o link show type veth | awk -F'[:@]' '{ print $2 }'); do
    echo "== $ns $dev"; tc -n "$ns" -s qdisc show dev "$dev"
  done
done > "$OUT/tc.txt"
{
  echo "host,tx_bytes,rx_bytes"
  join -t, <(sort "$OUT/links.before") <(sort "$OUT/links.after") |
    awk -F, '{ print $1 "," $4 - $2 "," $5 - $3 }'
} > "$OUT/links.csv"
rm -f "$OUT/links.before" "$OUT/links.after"

# DDP: train_resnet.py's epoch CSV has the mean step (all steps, the first too)
if [ "$DDP" -eq 1 ]; then
  awk -F, -v M="$WORKERS" -v R="$RATE_BPS" -v MO="$MODEL" -v I="$IMAGES" -v B="$BATCH" -v E="$EPOCHS" '
    FILENAME ~ /links.csv$/ { if (FNR > 1) for (k = 2; k <= 3; k++) if ($k > big) { big = $k; host = $1 (k == 2 ? "-tx" : "-rx") }; next }
    FNR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
    { steps += $col["steps"]; secs += $col["epoch_s"]; wall = $col["wall_s"] }
    END {
      bps = big / steps; wire = R > 0 ? 8 * bps / R : 0; st = secs / steps
      print "servers,workers,rate_bps,delay,loss,compressor,model,images,batch,epochs,steps,wall_s,step_s,compute_s,push_s,pull_s,push_bytes,busiest_link,busiest_bytes_per_step,wire_step_s,step_over_wire,compute_max_s,drops,partition_bytes,cpu_s,colocated"
      printf "0,%d,%d,0,0,ddp-fp32,%s,%d,%d,%d,%d,%s,%.6f,0,0,0,0,%s,%.0f,%.6f,%.3f,0,0,0,0,0\n", M, R, MO, I, B, E, steps, wall, st, host, bps, wire, (wire > 0 ? st / wire : 0)
    }' "$OUT/links.csv" "$OUT/epochs.csv" > "$OUT/summary.csv"
  awk -F, 'NR == 2 { printf "cluster.sh: DDP fp32 (gloo), %d workers, %s: %d steps, %.3f s per step; busiest link %s %.0f B/step = %.3f s on the wire (step / wire %.2f)\n", $2, ($3 > 0 ? $3 / 1e6 " Mb/s" : "unshaped"), $11, $13, $18, $19, $20, $21 }' "$OUT/summary.csv"
  exit 0
fi

# ---- summary ------------------------------------------------------------------
# Means over every worker's steps but each epoch's first (connection set-up,
# no pulls yet, or waiting for worker 0's evaluation) and last (it also
# pulls its own updates: two steps' pulls); compute_max_s is the
# mean over steps of the slowest worker's compute (all wait for it); the
# busiest link is the host link direction that carried the most bytes over
# the run, per step.
steps=$(( $(wc -l < "$OUT/steps.0") - 1 ))
drops=$(awk '/dropped/ { gsub(/,/, ""); for (i = 1; i < NF; i++) if ($i == "(dropped") d += $(i + 1) } END { print d + 0 }' "$OUT/tc.txt")
awk -F, -v S="$SERVERS" -v M="$WORKERS" -v R="$RATE_BPS" -v D="${DELAY:-0}" -v L="${LOSS:-0}" \
    -v C="$COMPRESSOR" -v MO="$MODEL" -v I="$IMAGES" -v B="$BATCH" -v E="$EPOCHS" \
    -v T="$steps" -v DROPS="$drops" -v PB="${PARTITION:-0}" -v CO="$COLOCATE" -v W="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')" '
  FILENAME ~ /links.csv$/ { if (FNR > 1) for (k = 2; k <= 3; k++) if ($k > big) { big = $k; host = $1 (k == 2 ? "-tx" : "-rx") }; next }
  FNR > 1 { rows++; for (i = 1; i <= 9; i++) v[rows, i] = $i; if ($2 > last[$1]) last[$1] = $2 }
  END {
    for (r = 1; r <= rows; r++) {
      if (v[r, 2] == 1 || v[r, 2] == last[v[r, 1]]) continue
      n++; st += v[r, 4]; co += v[r, 5]; pu += v[r, 6]; pl += v[r, 7]; by += v[r, 8]; cpu += v[r, 9]
      k = v[r, 1] "," v[r, 2]; if (!(k in cm) || v[r, 5] > cm[k]) cm[k] = v[r, 5]
    }
    if (n == 0) { print "cluster.sh: too few steps for a summary (need 3 per epoch)" > "/dev/stderr"; exit 1 }
    bps = big / T; wire = R > 0 ? 8 * bps / R : 0
    for (k in cm) { nk++; cmax += cm[k] }
    print "servers,workers,rate_bps,delay,loss,compressor,model,images,batch,epochs,steps,wall_s,step_s,compute_s,push_s,pull_s,push_bytes,busiest_link,busiest_bytes_per_step,wire_step_s,step_over_wire,compute_max_s,drops,partition_bytes,cpu_s,colocated"
    printf "%d,%d,%d,%s,%s,%s,%s,%d,%d,%d,%d,%s,%.6f,%.6f,%.6f,%.6f,%.0f,%s,%.0f,%.6f,%.3f,%.6f,%d,%d,%.6f,%d\n", S, M, R, D, L, C, MO, I, B, E, T, W,
           st / n, co / n, pu / n, pl / n, by / n, host, bps, wire, (wire > 0 ? st / n / wire : 0), cmax / nk, DROPS, PB, cpu / n, CO
  }' "$OUT/links.csv" "$OUT"/steps.* > "$OUT/summary.csv"
awk -F, 'NR == 2 { printf "cluster.sh: %s, %d workers, %d servers, %s: %d steps in %.1f s; per step %.3f s = compute %.3f + push %.3f + pull %.3f; busiest link %s %.0f B/step = %.3f s on the wire (step / wire %.2f); %d packets dropped by the links\n", $6, $2, $1, ($3 > 0 ? $3 / 1e6 " Mb/s" : "unshaped"), $11, $12, $13, $14, $15, $16, $18, $19, $20, $21, $23 }' "$OUT/summary.csv"
