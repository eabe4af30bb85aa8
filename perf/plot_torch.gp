# Test accuracy against epochs, wall time and bytes on the wire, one line per
# run, from the CSVs of perf/torch_compare.sh (columns: 1 epoch, 7 test_acc,
# 8 wall_s, 10 wire_bytes).
# usage: gnuplot -e "dir='perf/results'; term='pngcairo'; runs='efps-none ...'" perf/plot_torch.gp
if (!exists("dir")) dir = 'perf/results'
if (!exists("term")) term = 'pngcairo'
if (!exists("runs")) runs = 'efps-none efps-blocksign efps-sign ddp-fp32 ddp-fp16 ddp-powersgd1 ddp-powersgd4'
if (term eq 'pngcairo') {
    set terminal pngcairo size 1500,450 font ',10'
} else {
    set terminal png size 1500,450
}
set output dir.'/torch_compare.png'
set datafile separator ','
# room above the curves for the legend
set key top left maxrows 4
set yrange [0:110]
set ytics 0,10,100
set grid
set multiplot layout 1,3 title 'train\_resnet.py, 4 workers on 2 cores: efps vs torch DDP (gloo)'
set ylabel 'test accuracy (%)'
set xlabel 'epoch'
set xtics 1
plot for [r in runs] dir.'/torch_'.r.'.csv' skip 1 using 1:7 with linespoints title r
set xlabel 'wall time since the start of training (s)'
set xtics autofreq
plot for [r in runs] dir.'/torch_'.r.'.csv' skip 1 using 8:7 with linespoints title r
set xlabel 'bytes on the wire, all workers (MB, log scale)'
set logscale x
plot for [r in runs] dir.'/torch_'.r.'.csv' skip 1 using ($10/1e6):7 with linespoints title r
unset multiplot
