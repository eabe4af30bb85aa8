#!/usr/bin/env bash
# README "Scaling"'s plot: time per step against the link rate, measured
# (dots) and predicted by model.py (circles), for none, sign, blocksign and
# DDP fp32, M = 2 and 4 workers, 1 server.
# usage: plot.sh --calib calib.json --out scaling.png RUN_DIR...
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
CALIB="" PNG=""
while [ $# -gt 0 ]; do
  case $1 in
    --calib) CALIB=$2; shift 2 ;;
    --out) PNG=$2; shift 2 ;;
    *) break ;;
  esac
done
[ -n "$CALIB" ] && [ -n "$PNG" ] && [ $# -gt 0 ] || { sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
DAT=$(mktemp /tmp/efps-plot.XXXXXX)
trap 'rm -f "$DAT"' EXIT
/usr/bin/python3 "$here/model.py" table --calib "$CALIB" --dat "$DAT" "$@" > /dev/null
gnuplot <<GP
set terminal pngcairo size 1100,480 font ",10"
set output "$PNG"
set multiplot layout 1,2 title "ResNet-20 on the emulated cluster (1 server, batch 4): measured (dots) and model.py (circles)"
set logscale xy
set xlabel "every host link, both ways (Mb/s)"
set ylabel "seconds per step"
set grid
set key top right
set xrange [0.8:130]
L = "none sign blocksign ddp-fp32"
do for [m in "2 4"] {
  set title sprintf("M = %s workers", m)
  plot for [i=1:4] "$DAT" using (\$1 == m + 0 && strcol(3) eq word(L, i) ? \$2 : 1/0):4 \
         with points pt 7 ps 1.2 lc i title word(L, i), \
       for [i=1:4] "$DAT" using (\$1 == m + 0 && strcol(3) eq word(L, i) ? \$2 : 1/0):5 \
         with points pt 6 ps 2 lc i notitle
}
unset multiplot
GP
echo "plot.sh: wrote $PNG"
