#!/usr/bin/env bash
# efps-train integration tests.
# usage: train_test.sh help|bad-flags|env-settings|local|wire|bad-data|bad-train-set|killed
set -euo pipefail
: "${BUILD:?BUILD must point at the build directory}"
TRAIN=$BUILD/apps/efps-train/efps-train
SERVER=$BUILD/apps/efps-server/efps-server
TMP=$(mktemp -d /tmp/efps-train-test.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$TMP"/*.log; do [ -f "$f" ] && { echo "--- $f"; cat "$f"; }; done; exit 1; }
# A small run: mlp, 2 workers, 2000 training and 500 test images, 1 epoch.
SMALL=(--model mlp --train-subset 2000 --test-subset 500 --epochs 1 --batch 32 --lr 0.05
       --momentum 0.9 --nesterov --compressor blocksign --block 256 --seed 3 --transport tcp)

test_help() {
  "$TRAIN" --help > "$TMP/help.log" || fail "--help exited $?"
  for opt in --model --data --compressor --block --epochs --batch --lr --momentum --nesterov \
             --wd --schedule --warmup-epochs --seed --workers --servers --train-subset \
             --test-subset --csv --transport --dump-params --group-below --step-csv; do
    grep -q -- "$opt" "$TMP/help.log" || fail "--help does not mention $opt"
  done
}

# expect_bad "message" args...: exit status 2 and the message on stderr.
expect_bad() {
  local want=$1 rc=0; shift
  timeout 20 "$TRAIN" "$@" > "$TMP/out" 2> "$TMP/err" || rc=$?
  [ "$rc" -eq 2 ] || fail "efps-train $* exited $rc, not 2"
  grep -q -- "$want" "$TMP/err" || fail "efps-train $*: no '$want' in: $(cat "$TMP/err")"
}

test_bad_flags() {
  expect_bad "efps-train: --bogus: unknown option; see --help" --bogus
  expect_bad "efps-train: --lr: needs a value; see --help" --lr
  expect_bad "efps-train: --epochs x: an integer from 1 to" --epochs x
  expect_bad "efps-train: --epochs 0: an integer from 1 to" --epochs 0
  expect_bad "efps-train: --batch -3: an integer from 1 to" --batch -3
  expect_bad "efps-train: --lr 1e-3x: a number from" --lr 1e-3x
  expect_bad "efps-train: --momentum 1.5: a number from 0 to" --momentum 1.5
  expect_bad "efps-train: --model resnet7: mlp, resnet8" --model resnet7
  expect_bad "efps-train: --compressor topk: one of none, sign, blocksign; see --help" --compressor topk
  expect_bad "efps-train: --schedule linear: one of constant, step, cosine" --schedule linear
  expect_bad "efps-train: --transport udp: one of auto, tcp, verbs" --transport udp
  expect_bad "efps-train: --workers 0: an integer from 1 to" --workers 0
  expect_bad "efps-train: --group-below -1: an integer of at least 0" --group-below -1
  expect_bad "efps-train: --warmup-epochs 2: fewer than --epochs 2" --epochs 2 --warmup-epochs 2
  expect_bad "efps-train: extra: unexpected argument" extra
  # A bad EFPS_* value is refused as a bad flag is, naming the variable.
  EFPS_COMPRESSOR=foo expect_bad "efps-train: EFPS_COMPRESSOR=foo: one of none, sign, blocksign" --workers 1
  EFPS_BLOCK=2k expect_bad "efps-train: EFPS_BLOCK=2k: an integer from 0 to" --workers 1
  EFPS_TRANSPORT=foo expect_bad "efps-train: EFPS_TRANSPORT=foo: one of auto, tcp, verbs" --workers 1
  # The flag wins over the variable: a bad variable under a flag is never read.
  EFPS_COMPRESSOR=foo expect_bad "efps-train: --epochs 0:" --compressor none --epochs 0
}

# The run's settings come from the flag, else EFPS_*, else the default, and
# reach the servers: EFPS_COMPRESSOR and EFPS_BLOCK alone set a local run's
# compressor and block; a flag overrides them. An unknown EFPS_* variable is
# warned about once (by the launcher), not by every process.
test_env_settings() {
  local run=(--model mlp --train-subset 256 --test-subset 64 --epochs 1 --batch 32 --seed 3
             --transport tcp --workers 2 --servers 1)
  EFPS_COMPRESSOR=blocksign EFPS_BLOCK=256 EFPS_TRANSPRT=tcp timeout 100 "$TRAIN" "${run[@]}" \
    > "$TMP/env1.log" 2>&1 || fail "run with EFPS_COMPRESSOR/EFPS_BLOCK exited $?"
  grep -q "compressor blocksign (block 256)" "$TMP/env1.log" || fail "EFPS_BLOCK=256 not used"
  [ "$(grep -c 'EFPS_TRANSPRT' "$TMP/env1.log")" -eq 1 ] ||
    fail "EFPS_TRANSPRT warned $(grep -c 'EFPS_TRANSPRT' "$TMP/env1.log") times, not once"
  grep -q "2 workers x batch" "$TMP/env1.log" || fail "no '2 workers' in the header"
  EFPS_COMPRESSOR=none EFPS_BLOCK=256 timeout 100 "$TRAIN" "${run[@]}" --compressor sign \
    > "$TMP/env2.log" 2>&1 || fail "run with --compressor sign exited $?"
  grep -q "compressor sign " "$TMP/env2.log" || fail "--compressor did not win over EFPS_COMPRESSOR"
  EFPS_COMPRESSOR=none timeout 100 "$TRAIN" "${run[@]}" --workers 1 \
    > "$TMP/env3.log" 2>&1 || fail "run with EFPS_COMPRESSOR=none exited $?"
  grep -q "compressor none " "$TMP/env3.log" || fail "EFPS_COMPRESSOR=none not used"
  grep -q "1 worker x batch" "$TMP/env3.log" || fail "no '1 worker' (singular) in the header"
  grep -q "for 1 worker," "$TMP/env3.log" || fail "no 'for 1 worker,' in the summary"
}

check_csv() {
  local csv=$1
  [ "$(head -1 "$csv")" = "epoch,steps,lr,train_loss,train_acc,test_loss,test_acc,wall_s,images_per_s,wire_bytes,fp32_bytes" ] ||
    fail "CSV header: $(head -1 "$csv")"
  [ "$(wc -l < "$csv")" -eq 2 ] || fail "CSV should have 1 epoch row: $(cat "$csv")"
  # 2 workers x batch 32: 31 steps; better than chance (10%) after them;
  # blocksign moves far fewer bytes than fp32
  awk -F, 'NR == 2 { exit !($1 == 1 && $2 == 31 && $7 > 30 && $10 > 0 && $11 > 8 * $10) }' "$csv" ||
    fail "CSV row out of range: $(tail -1 "$csv")"
}

# The local launch, then the same run started as a cluster launcher would:
# one efps-server and two single workers from the environment. The workers of
# both runs must end with the same bits.
test_local() {
  timeout 100 "$TRAIN" "${SMALL[@]}" --workers 2 --servers 1 --csv "$TMP/run.csv" \
    --dump-params "$TMP/local" > "$TMP/local.log" 2>&1 || fail "local run exited $?"
  grep -q "final test accuracy" "$TMP/local.log" || fail "no summary"
  check_csv "$TMP/run.csv"
  cmp "$TMP/local.0" "$TMP/local.1" || fail "local workers differ"
  EFPS_SERVERS=127.0.0.1:0 EFPS_NUM_WORKERS=2 EFPS_TRANSPORT=tcp EFPS_SECRET=t-$$ \
    EFPS_COMPRESSOR=blocksign EFPS_BLOCK=256 \
    "$SERVER" --rank 0 --bind 127.0.0.1:0 --port-file "$TMP/port" > "$TMP/server.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do [ -s "$TMP/port" ] && break; sleep 0.1; done
  [ -s "$TMP/port" ] || fail "efps-server did not start"
  local w=()
  for r in 0 1; do
    EFPS_SERVERS=127.0.0.1:$(cat "$TMP/port") EFPS_RANK=$r EFPS_NUM_WORKERS=2 EFPS_SECRET=t-$$ \
      timeout 100 "$TRAIN" "${SMALL[@]}" --dump-params "$TMP/env" > "$TMP/env.$r.log" 2>&1 &
    w+=($!); PIDS+=($!)
  done
  for r in 0 1; do wait "${w[$r]}" || fail "worker $r from the environment exited $?"; done
  cmp "$TMP/env.0" "$TMP/env.1" || fail "workers started from the environment differ"
  cmp "$TMP/local.0" "$TMP/env.0" || fail "local launch and environment launch differ"
  command -v mpirun > /dev/null || { echo "no mpirun: mpirun launch not checked"; return 0; }
  # mpirun gives the ranks (OMPI_COMM_WORLD_*); a second server run for it
  rm -f "$TMP/port"
  EFPS_SERVERS=127.0.0.1:0 EFPS_NUM_WORKERS=2 EFPS_TRANSPORT=tcp EFPS_SECRET=t-$$ \
    EFPS_COMPRESSOR=blocksign EFPS_BLOCK=256 \
    "$SERVER" --rank 0 --bind 127.0.0.1:0 --port-file "$TMP/port" > "$TMP/server2.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do [ -s "$TMP/port" ] && break; sleep 0.1; done
  [ -s "$TMP/port" ] || fail "efps-server did not start"
  EFPS_SERVERS=127.0.0.1:$(cat "$TMP/port") EFPS_SECRET=t-$$ timeout 100 \
    mpirun --allow-run-as-root --oversubscribe -np 2 -x EFPS_SERVERS -x EFPS_SECRET \
    "$TRAIN" "${SMALL[@]}" --dump-params "$TMP/mpi" > "$TMP/mpirun.log" 2>&1 || fail "mpirun exited $?"
  cmp "$TMP/local.0" "$TMP/mpi.0" || fail "local launch and mpirun launch differ"
  cmp "$TMP/local.0" "$TMP/mpi.1" || fail "local launch and mpirun launch differ"
}

# wire_per_push GROUP_BELOW: sets W, the bytes one worker pushes per step
# (pulls are as many) in 2 steps of resnet8 with blocksign, block 2048, and
# P, the parameter count efps-train prints.
wire_per_push() {
  timeout 100 "$TRAIN" --model resnet8 --train-subset 256 --test-subset 100 --epochs 1 \
    --compressor blocksign --block 2048 --seed 1 --transport tcp --workers 2 --servers 1 \
    --group-below "$1" --csv "$TMP/wire.csv" > "$TMP/wire.log" 2>&1 || fail "resnet8 run exited $?"
  P=$(sed -n 's/.*(\([0-9]*\) parameters in.*/\1/p' "$TMP/wire.log")
  [ -n "$P" ] || fail "no parameter count in the header"
  W=$(awk -F, 'NR == 2 { print $10 / (2 * 2 * $2) }' "$TMP/wire.csv")
}

# The small tensors travel as one key: one step moves at most 1 bit per
# parameter, one 4-byte scale per block, and a header + padding (at most
# 64 + 63 + 63 bytes) for each of resnet8's 8 keys (7 tensors of at least 512
# elements and the group). One key per tensor (23 keys) does not fit the bound.
test_wire() {
  local grouped single bound
  wire_per_push 512
  grouped=$W
  bound=$(( P / 8 + 1 + 4 * ((P + 2047) / 2048) + 8 * 190 ))
  awk -v w="$grouped" -v b="$bound" 'BEGIN { exit !(w <= b) }' ||
    fail "grouped: $grouped bytes per push, more than $bound for $P parameters"
  wire_per_push 0
  single=$W
  awk -v w="$single" -v b="$bound" 'BEGIN { exit !(w > b) }' ||
    fail "one key per tensor: $single bytes per push, within the bound $bound: it tests nothing"
  echo "bytes per push: $grouped grouped, $single one key per tensor, bound $bound ($P parameters)"
  # With none every step is element-wise, so the group must change nothing
  # but the messages: grouped and ungrouped runs end with the same bits.
  for g in 0 512; do
    timeout 100 "$TRAIN" "${SMALL[@]}" --compressor none --workers 2 --servers 1 --group-below "$g" \
      --dump-params "$TMP/none-$g" > "$TMP/none-$g.log" 2>&1 || fail "none, --group-below $g exited $?"
  done
  cmp "$TMP/none-0.0" "$TMP/none-512.0" || fail "with none, grouping changed the parameters"
}

# A missing data directory: a clear error naming the file, a non-zero exit,
# and no server or worker left behind.
test_bad_data() {
  local rc=0 marker=$TMP/no-such-dir
  timeout 60 "$TRAIN" --model mlp --workers 2 --servers 2 --data "$marker" > "$TMP/out" 2> "$TMP/err" || rc=$?
  [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || fail "bad --data exited $rc (124: it hung)"
  grep -q "$marker/train-images-idx3-ubyte.gz" "$TMP/err" || fail "error does not name the file: $(cat "$TMP/err")"
  sleep 0.5
  ! pgrep -f -- "$marker" > /dev/null || fail "processes left behind: $(pgrep -af -- "$marker")"
}

# byte V...: the bytes of value V; idx FILE NDIMS DIM... < data: a gzipped IDX ubyte file.
byte() { for v in "$@"; do printf "\\x$(printf %02x "$v")"; done; }
idx() {
  local file=$1 n=$2; shift 2
  { byte 0 0 8 "$n"
    for d in "$@"; do byte $((d >> 24 & 255)) $((d >> 16 & 255)) $((d >> 8 & 255)) $((d & 255)); done
    cat; } | gzip -c > "$file"
}

# A training set the model cannot take (DIR holds the real test set): a
# nonzero exit, and the message on stderr (which names the file).
expect_bad_set() {
  local dir=$1 want=$2 rc=0
  EFPS_SECRET=bad-data-test timeout 60 "$TRAIN" --model mlp --workers 1 --servers 1 --data "$dir" \
    --train-subset 256 --test-subset 100 --epochs 1 --batch 32 > "$TMP/out" 2> "$TMP/err" || rc=$?
  [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || fail "training set in $dir: exited $rc (124: it hung)"
  grep -qF -- "$want" "$TMP/err" || fail "training set in $dir: no '$want' in: $(cat "$TMP/err")"
}

# Item 6 of issue 10: the training set is checked as the test set is.
test_bad_train_set() {
  local real=/usr/share/datasets/fashion-mnist n=256
  for case in label10 small large count; do
    mkdir -p "$TMP/$case"
    ln -s "$real/t10k-images-idx3-ubyte.gz" "$real/t10k-labels-idx1-ubyte.gz" "$TMP/$case/"
  done
  # 256 labels, all below 10 but the one at index 77
  { head -c 77 /dev/zero; byte 10; head -c $((n - 78)) /dev/zero; } |
    idx "$TMP/label10/train-labels-idx1-ubyte.gz" 1 $n
  head -c $((n * 784)) /dev/urandom | idx "$TMP/label10/train-images-idx3-ubyte.gz" 3 $n 28 28
  expect_bad_set "$TMP/label10" "$TMP/label10/train-labels-idx1-ubyte.gz: label 77 is 10, the model has 10 classes"
  # 2x2 and 40x40 images for a 28x28 model
  for case in small:2 large:40; do
    local d=$TMP/${case%:*} px=${case#*:}
    head -c $n /dev/zero | idx "$d/train-labels-idx1-ubyte.gz" 1 $n
    head -c $((n * px * px)) /dev/urandom | idx "$d/train-images-idx3-ubyte.gz" 3 $n "$px" "$px"
    expect_bad_set "$d" "$d/train-images-idx3-ubyte.gz: images are $px x $px pixels, the model takes 28 x 28"
  done
  # one label fewer than images
  head -c $((n - 1)) /dev/zero | idx "$TMP/count/train-labels-idx1-ubyte.gz" 1 $((n - 1))
  head -c $((n * 784)) /dev/urandom | idx "$TMP/count/train-images-idx3-ubyte.gz" 3 $n 28 28
  expect_bad_set "$TMP/count" "holds $n images but $TMP/count/train-labels-idx1-ubyte.gz holds $((n - 1)) labels"
}

# A worker killed mid-run: the launcher names it, stops the rest, exits 1.
test_killed() {
  local rc=0 marker=$TMP/killed.csv
  timeout 60 "$TRAIN" --model mlp --workers 2 --servers 1 --train-subset 20000 --test-subset 500 \
    --epochs 100 --csv "$marker" > "$TMP/out" 2> "$TMP/err" &
  local pid=$!; PIDS+=($pid)
  local victim=""
  for _ in $(seq 100); do
    victim=$(pgrep -f -- "$marker --as-worker" | tail -1 || true)
    [ -n "$victim" ] && [ -s "$marker" ] && break   # the header: worker 0 is training
    sleep 0.1
  done
  [ -n "$victim" ] || fail "no worker started"
  sleep 1
  kill -9 "$victim"
  wait "$pid" || rc=$?
  [ "$rc" -eq 1 ] || fail "launcher exited $rc after a worker was killed, not 1"
  grep -q "killed by" "$TMP/err" || fail "the launcher did not name the killed worker: $(cat "$TMP/err")"
  sleep 0.5
  ! pgrep -f -- "$marker" > /dev/null || fail "processes left behind: $(pgrep -af -- "$marker")"
}

case ${1:-} in
  help) test_help ;;
  bad-flags) test_bad_flags ;;
  env-settings) test_env_settings ;;
  local) test_local ;;
  wire) test_wire ;;
  bad-data) test_bad_data ;;
  bad-train-set) test_bad_train_set ;;
  killed) test_killed ;;
  *) echo "usage: $0 help|bad-flags|env-settings|local|wire|bad-data|bad-train-set|killed"; exit 2 ;;
esac
echo "OK: ${1}"
