#!/usr/bin/env bash
# Every measured point of README "Scaling" in one run (root): ResNet-20 on the
# emulated cluster of cluster.sh, 1 server, M = 2 and 4 workers, none, sign
# and blocksign at 100, 10 and 3 Mb/s (sign and blocksign also at 1 Mb/s),
# then the server's link as the bottleneck (none, 10 Mb/s, M = 4: S = 1, 2, 4
# hosts of their own and S = 4 colocated with the workers), and DDP fp32
# (gloo, examples/torch/train_resnet.py) on the same links. Each run is sized
# to take about a minute (images = steps x M x batch); batch 4 keeps compute
# small, so the links set the pace. With --baseline-build DIR, the issue's
# two bar points also run with the programs of that build (e.g. main before
# the pipelining). Then model.py validates every run against calib.json.
# usage: sweep.sh --out DIR [--build DIR] [--baseline-build DIR] [--only REGEX]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
OUT="" BUILD=$root/build BASE="" ONLY=. BATCH=4 MODEL=resnet20
while [ $# -gt 0 ]; do
  case $1 in
    --out) OUT=$2 ;;
    --build) BUILD=$2 ;;
    --baseline-build) BASE=$2 ;;
    --only) ONLY=$2 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "sweep.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
  shift 2 || { echo "sweep.sh: missing value for '$1'" >&2; exit 2; }
done
[ -n "$OUT" ] || { echo "sweep.sh: --out DIR is required" >&2; exit 2; }
mkdir -p "$OUT"
echo "sweep.sh: $(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/sweep.log"

# steps M RATE_MBIT COMPRESSOR: about 50 s of the busiest link's bytes, 5 to 40 steps
steps() {
  awk -v m="$1" -v r="$2" -v c="$3" 'BEGIN {
    b = c == "none" ? 1.08e6 : 3.9e4; wire = r > 0 ? m * b * 8 / (r * 1e6 * 0.956) : 0
    s = wire > 0.25 ? wire : 0.25; n = int(50 / s); print (n < 5 ? 5 : (n > 40 ? 40 : n)) }'
}

run() { # run NAME BUILD M RATE_MBIT COMPRESSOR [cluster.sh options]
  local name=$1 build=$2 m=$3 r=$4 c=$5 n
  shift 5
  [[ $name =~ $ONLY ]] || return 0
  [ ! -f "$OUT/$name/summary.csv" ] || { echo "sweep.sh: $name done already" >&2; return 0; }
  n=$(steps "$m" "$r" "$c")
  echo "sweep.sh: $name: $n steps, load average $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/sweep.log"
  "$here/cluster.sh" --build "$build" --workers "$m" --rate "$([ "$r" = 0 ] && echo none || echo "${r}mbit")" --compressor "$c" \
    --model "$MODEL" --batch "$BATCH" --images $(( n * m * BATCH )) --test-images 16 \
    --out "$OUT/$name" "$@" 2>&1 | tail -1 | tee -a "$OUT/sweep.log"
  echo "$name,$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' ,)" >> "$OUT/load.csv"
}

run bar-none-m4-10 "$BUILD" 4 10 none --sample 50
run bar-blocksign-m4-1 "$BUILD" 4 1 blocksign --sample 50
if [ -n "$BASE" ]; then
  run base-none-m4-10 "$BASE" 4 10 none --sample 50
  run base-blocksign-m4-1 "$BASE" 4 1 blocksign --sample 50
fi
for m in 2 4; do
  for c in none sign blocksign; do
    for r in 100 10 3 1; do
      [ "$r" -ne 1 ] || [ "$c" != none ] || continue # 1 Mb/s fp32: minutes per step
      run "$c-m$m-$r" "$BUILD" "$m" "$r" "$c"
    done
  done
done
run servers2-none-m4-10 "$BUILD" 4 10 none --servers 2
run servers4-none-m4-10 "$BUILD" 4 10 none --servers 4
run colocated4-none-m4-10 "$BUILD" 4 10 none --servers 4 --colocate
run colocated4-blocksign-m4-1 "$BUILD" 4 1 blocksign --servers 4 --colocate
# DDP: the unshaped run is its compute (train_resnet.py has no per-step split)
run ddp-m4-unshaped "$BUILD" 4 0 none --ddp
for r in 10 3; do
  run "ddp-m4-$r" "$BUILD" 4 "$r" none --ddp
done
echo "sweep.sh: done $(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/sweep.log"
