# Plots bench/compare*.sh results: viewers against server CPU and against
# server-added latency, one line per server. Called as
#   gnuplot -e "datafile='plot.dat'; outfile='compare.png'" bench/plot.gp
# with, optionally, title='…' (the default describes bench/compare.sh).
set terminal pngcairo size 1400,560 font "sans,11"
set output outfile
if (!exists("title")) title = "meshcast vs nginx-rtmp: RTMP (meshcast-flv: HTTP-FLV) players of a 2 Mbps stream, server on one core"
set multiplot layout 1,2 title title
set key top left
set grid
set xlabel "viewers"
set ylabel "server CPU (% of one core)"
set yrange [0:*]
plot for [i=0:*] datafile index i using 1:2 with linespoints lw 2 pt 7 title columnheader(1)
set ylabel "added latency p99 (ms)"
set logscale y
set yrange [1:*]
plot for [i=0:*] datafile index i using 1:4 with linespoints lw 2 pt 7 title columnheader(1)
unset multiplot
