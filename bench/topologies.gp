# Plots bench/cluster.sh topologies: publish-to-play latency p50 and p99 of
# each node's players, by topology and mode, and each node's CPU. Called
# from bench/cluster.sh (topologies) as
#   gnuplot -e "dir='bench/results/cluster'; outfile='topologies.png'" bench/topologies.gp
# with dir holding topologies.dat (topology-mode node tier p50 p99, one
# block per topology and mode) and cpu.dat (the same blocks: node cpu_pct).
set terminal pngcairo size 1500,560 font "sans,10"
set output outfile
set multiplot layout 1,2 title "meshcast cluster on one machine: five nodes, 100 HTTP-FLV players on each, a 2 Mbit/s 720p stream"
set grid ytics
set key below horizontal
set xtics nomirror
set yrange [0:*]
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set title "publish-to-play latency p99 (ms) by node (N1 owns the stream)"
plot for [i=0:5] dir.'/topologies.dat' index i using 4:xtic(1) title columnheader(1)
set title "CPU of each node (% of one core)"
plot for [i=0:5] dir.'/cpu.dat' index i using 2:xtic(1) title columnheader(1)
unset multiplot
