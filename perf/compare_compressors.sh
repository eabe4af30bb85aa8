#!/usr/bin/env bash
# Trains the same model with the none, sign and blocksign compressors (same
# seed, epochs and hyperparameters, local launch on this machine), then plots
# test accuracy against epochs and against bytes on the wire (perf/plot_compare.gp).
#
# usage: perf/compare_compressors.sh [--build DIR] [--out DIR] [efps-train options...]
#   --build DIR  build directory holding apps/efps-train/efps-train (default: build)
#   --out DIR    where the CSVs, logs and compare.png go (default: perf/results)
# Options after those go to efps-train and override the defaults below:
#   --model resnet8 --epochs 2 --workers 4 --servers 1 --block 2048 --lr 0.1
#   --momentum 0.9 --nesterov --seed 1
# which take about 6 minutes on 2 cores (353 s measured, shared machine). The
# bar (resnet20, past 88% for none), about 22 minutes (perf/results holds a run):
#   perf/compare_compressors.sh --model resnet20 --epochs 3
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build
out=$root/perf/results
while [ $# -gt 0 ]; do
  case $1 in
    --build) build=$(cd "$2" && pwd); shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) break ;;
  esac
done
train=$build/apps/efps-train/efps-train
[ -x "$train" ] || { echo "compare_compressors: no $train (build first)" >&2; exit 1; }
mkdir -p "$out"
defaults=(--model resnet8 --epochs 2 --workers 4 --servers 1 --block 2048 --lr 0.1
          --momentum 0.9 --nesterov --seed 1)
for c in none blocksign sign; do
  echo "== $c: efps-train ${defaults[*]} $* --compressor $c"
  start=$SECONDS
  # getopt_long: a later option wins, so "$@" overrides the defaults
  "$train" "${defaults[@]}" "$@" --compressor "$c" --csv "$out/$c.csv" 2>&1 | tee "$out/$c.log" |
    grep -E '^(epoch .* done|final|bytes|an fp32|wall)'
  echo "== $c: $((SECONDS - start)) s"
done
if command -v gnuplot >/dev/null; then
  term=png
  echo 'set terminal' | gnuplot 2>&1 | grep -q pngcairo && term=pngcairo
  gnuplot -e "dir='$out'; term='$term'" "$root/perf/plot_compare.gp"
  echo "plot: $out/compare.png"
else
  echo "compare_compressors: gnuplot not found, no plot" >&2
fi
