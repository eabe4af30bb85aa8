#!/usr/bin/env bash
# efps against torch's DistributedDataParallel, from the same script with the
# same model, data, seed and schedule (examples/torch/train_resnet.py), on this
# machine: efps none / blocksign / sign, DDP fp32 / fp16 hook / PowerSGD rank
# 1 and 4. Writes per run a CSV (one row per epoch) and a log, then
# torch_compare.md + torch_compare.csv (the table) and torch_compare.png
# (test accuracy against epochs, wall time and bytes on the wire).
#
# usage: perf/torch_compare.sh [--quick] [--out DIR] [--runs "NAME ..."] [--seeds "S ..."]
#                              [train_resnet options...]
#   --quick   smoke check of every run: resnet20, 512 training images, 2 steps
#             per worker (about 5 minutes on 2 shared cores)
#   --out DIR where everything goes (default perf/results)
#   --runs    a subset of: efps-none ddp-fp32 efps-blocksign ddp-fp16
#             ddp-powersgd1 efps-sign ddp-powersgd4 (default: all, in that order),
#             and efps-blocksign-warmK (blocksign, the first K steps uncompressed)
#   --seeds   run everything once per seed, seed S into DIR/seedS/, then the
#             table of means and spreads over the seeds (DIR/torch_seeds.md)
# Options after those go to train_resnet.py and override the defaults:
#   --model resnet18 --dataset fashion-mnist --epochs 2 --train-subset 2048
#   --test-subset 1500 --batch-size 16 --lr 0.05 --schedule cosine
#   --warmup-epochs 0.25 --weight-decay 1e-4 --seed 1 --block 2048, 4 workers,
#   1 efps server: 64 steps of 4 x 16 images per run. On this 2-core machine
#   shared with ~5 engineers' builds (load 25-35) a run took 9 to 15 minutes
#   (the first five: 65 minutes; README). A quiet machine affords more, e.g.
#   --train-subset 16384 --test-subset 10000.
#
# Bytes on the wire are given twice: as the script counts them (efps: the
# binding's count of the pushes, x2 for the pulls; DDP: computed from the ring
# all-reduce, see examples/torch/comm.py), and measured: when this runs as
# root with unshare(1), each run gets its own network namespace, and the
# loopback's transmitted bytes there are everything any process of the run
# sent (TCP/IP headers, start-up broadcast, metrics and evaluation traffic
# included).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/perf/results
runs="efps-none ddp-fp32 efps-blocksign ddp-fp16 ddp-powersgd1 efps-sign ddp-powersgd4"
quick=0
seeds=
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1; shift ;;
    --out) out=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    *) break ;;
  esac
done
py=/usr/bin/python3 # Debian's python3-torch is installed for this one
if ! "$py" -c 'import torch, torchvision' 2>/dev/null; then
  echo "torch_compare: $py cannot import torch and torchvision (scripts/setup.sh)" >&2
  exit 1
fi
mkdir -p "$out"
defaults=(--model resnet18 --dataset fashion-mnist --epochs 2 --train-subset 2048
          --test-subset 1500 --batch-size 16 --lr 0.05 --schedule cosine --warmup-epochs 0.25
          --weight-decay 1e-4 --seed 1 --block 2048)
if [ "$quick" = 1 ]; then
  defaults=(--model resnet20 --dataset fashion-mnist --epochs 1 --train-subset 512
            --test-subset 256 --batch-size 32 --lr 0.1 --seed 1 --block 2048 --max-steps 2)
fi
netns=0 count_lo=
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && unshare -n true 2>/dev/null; then
  netns=1 count_lo=--count-loopback
else
  echo "torch_compare: not root or no unshare: loopback bytes are not measured" >&2
fi

run_args() { # the train_resnet options of one run
  case $1 in
    efps-none) echo "--dist efps --compressor none" ;;
    efps-blocksign) echo "--dist efps --compressor blocksign" ;;
    efps-sign) echo "--dist efps --compressor sign" ;;
    efps-blocksign-warm[0-9]*) echo "--dist efps --compressor blocksign --compress-warmup ${1#efps-blocksign-warm}" ;;
    ddp-fp32) echo "--dist ddp --ddp-hook none" ;;
    ddp-fp16) echo "--dist ddp --ddp-hook fp16" ;;
    ddp-powersgd1) echo "--dist ddp --ddp-hook powersgd --powersgd-rank 1" ;;
    ddp-powersgd4) echo "--dist ddp --ddp-hook powersgd --powersgd-rank 4" ;;
    *) echo "torch_compare: unknown run $1" >&2; return 1 ;;
  esac
}

# One run in its own network namespace (when possible); its loopback bytes
# go to $out/torch_$name.lo.
in_netns() {
  local lo=$1; shift
  if [ "$netns" = 1 ]; then
    unshare -n bash -c 'ip link set lo up && "${@:2}"; rc=$?
      sed -n "s/^ *lo: *//p" /proc/net/dev | awk "{print \$9}" > "$1"; exit $rc' _ "$lo" "$@"
  else
    "$@"
  fi
}

# Every run of $runs into directory $1 (train_resnet options after it), then
# that directory's table and plot.
run_all() {
  local dir=$1; shift
  mkdir -p "$dir"
  for name in $runs; do
    read -r -a extra <<<"$(run_args "$name")"
    echo "== $name: train_resnet.py --workers 4 ${defaults[*]} ${extra[*]} $*"
    start=$SECONDS
    rm -f "$dir/torch_$name.lo"
    load_before=$(cut -d' ' -f1-3 /proc/loadavg)
    # argparse: a later option wins, so "$@" overrides the defaults
    in_netns "$dir/torch_$name.lo" nice "$py" "$root/examples/torch/train_resnet.py" --workers 4 \
      "${defaults[@]}" "${extra[@]}" "$@" --progress line $count_lo --csv "$dir/torch_$name.csv" \
      >"$dir/torch_$name.log" 2>&1 || { echo "== $name failed:"; tail -20 "$dir/torch_$name.log"; exit 1; }

    echo "run_wall_s $((SECONDS - start))" >>"$dir/torch_$name.log"
    echo "load_average before $load_before after $(cut -d' ' -f1-3 /proc/loadavg)" >>"$dir/torch_$name.log"
    grep -E '^(epoch .* done|final|train_resnet: job|load_average)' "$dir/torch_$name.log" || true
  done

  "$py" "$root/perf/torch_summary.py" "$dir" $runs
  if command -v gnuplot >/dev/null; then
    term=png
    echo 'set terminal' | gnuplot 2>&1 | grep -q pngcairo && term=pngcairo
    gnuplot -e "dir='$dir'; term='$term'; runs='$runs'" "$root/perf/plot_torch.gp"
    echo "plot: $dir/torch_compare.png"
  else
    echo "torch_compare: gnuplot not found, no plot" >&2
  fi
}

if [ -z "$seeds" ]; then
  run_all "$out" "$@"
  exit 0
fi
for s in $seeds; do
  echo "==== seed $s"
  run_all "$out/seed$s" "$@" --seed "$s"
done
"$py" "$root/perf/torch_summary.py" --seeds "$out" "$seeds" $runs
