#!/usr/bin/env bash
# The cost model's inputs measured on this machine (perf/cluster/model.py):
# - compute seconds per step of efps-train with communication out of the way:
#   M workers and a server on loopback (no shaping), blocksign, and only the
#   time outside efps_ps_push / efps_ps_pull counted (--step-csv compute_s),
#   without each epoch's first step; one figure per worker count, since the
#   M workers share this machine's cores as they do in cluster.sh;
# - kernel throughputs from perf/bench_compress at 64 Ki elements (the best
#   SIMD variant of each kernel, bytes/s as the benchmark counts them).
# usage: calibrate.sh [--build DIR] [--model resnet8] [--workers "2 4"]
#                     [--steps 8] --out calib.json
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$root/build MODEL=resnet8 WORKERS="2 4" STEPS=8 OUT="" NICE=${NICE:-10}
while [ $# -gt 0 ]; do
  case $1 in
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --build) BUILD=$2 ;;
    --model) MODEL=$2 ;;
    --workers) WORKERS=$2 ;;
    --steps) STEPS=$2 ;;
    --out) OUT=$2 ;;
    *) echo "calibrate.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift 2 || { echo "calibrate.sh: missing value for '$1'" >&2; exit 2; }
done
[ -n "$OUT" ] || { echo "calibrate.sh: --out FILE is required" >&2; exit 2; }
TMP=$(mktemp -d /tmp/efps-calibrate.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

echo "calibrate.sh: kernels (bench_compress, 64 Ki elements)" >&2
nice -n "$NICE" "$BUILD/perf/bench_compress" --benchmark_filter='/65536$' \
  --benchmark_min_time=0.05 --benchmark_color=false > "$TMP/bench.txt" 2> "$TMP/bench.err" ||
  { cat "$TMP/bench.err" >&2; exit 1; }

for m in $WORKERS; do
  echo "calibrate.sh: compute per step, $MODEL, $m workers on loopback" >&2
  EFPS_SECRET=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n') nice -n "$NICE" \
    "$BUILD/apps/efps-train/efps-train" --model "$MODEL" --workers "$m" --servers 1 \
    --transport tcp --compressor blocksign --block 2048 --train-subset $(( m * 64 * STEPS )) \
    --test-subset 100 --step-csv "$TMP/steps-$m" > "$TMP/train-$m.log" 2>&1 ||
    { tail "$TMP/train-$m.log" >&2; exit 1; }
done

/usr/bin/python3 - "$TMP" "$MODEL" "$OUT" "$(nproc)" $WORKERS <<'PY'
import csv, glob, json, re, sys
tmp, model, out, cores, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:]
kernels = {}
# the benchmark's own summary: kernel/variant/elements GB/s ref-GB/s ratio
for line in open(tmp + "/bench.txt"):
    m = re.match(r"(\w+)/(\w+)/65536\s+([\d.]+)\s+([\d.]+)\s+[\d.]+\s*$", line)
    if not m:
        continue
    kernels[m.group(1)] = max(kernels.get(m.group(1), 0.0), float(m.group(3)) * 1e9)
    kernels["reference"] = max(kernels.get("reference", 0.0), float(m.group(4)) * 1e9)
compute = {}
for w in workers:
    vals = []
    for f in glob.glob("%s/steps-%s.*" % (tmp, w)):
        vals += [float(r["compute_s"]) for r in csv.DictReader(open(f)) if int(r["step"]) > 1]
    compute[w] = sum(vals) / len(vals)
calib = {"cores": cores, "latency_s": 100e-6, "duplex": "full",
         "compute_s": {model: compute}, "kernels_Bps": kernels}
json.dump(calib, open(out, "w"), indent=1, sort_keys=True)
print(json.dumps(calib, sort_keys=True))
PY
