# Test accuracy against epochs and against bytes on the wire, one line per
# compressor, from the CSVs of compare_compressors.sh.
# usage: gnuplot -e "dir='perf/results'; term='pngcairo'" perf/plot_compare.gp
if (!exists("dir")) dir = 'perf/results'
if (!exists("term")) term = 'pngcairo'
if (term eq 'pngcairo') {
    set terminal pngcairo size 1200,450 font ',10'
} else {
    set terminal png size 1200,450
}
set output dir.'/compare.png'
set datafile separator ','
set key bottom right
set grid
set multiplot layout 1,2 title 'efps-train on Fashion-MNIST: none vs sign vs blocksign'
set xlabel 'epoch'
set xtics 1
set ylabel 'test accuracy (%)'
plot for [c in 'none sign blocksign'] dir.'/'.c.'.csv' using 1:7 with linespoints title c
set xlabel 'bytes on the wire, all workers, push + pull (MB, log scale)'
set logscale x
set xtics autofreq
plot for [c in 'none sign blocksign'] dir.'/'.c.'.csv' using ($10/1e6):7 with linespoints title c
unset multiplot
