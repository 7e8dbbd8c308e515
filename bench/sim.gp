# Plots bench/sim.sh results: origin egress, registry operations per node
# and recovery times, by selector, for each cluster size. Called as
#   gnuplot -e "dir='bench/results/sim'; outfile='sim.png'" bench/sim.gp
set terminal pngcairo size 1500,520 font "sans,10"
set output outfile
set multiplot layout 1,3 title "meshcast sim: 10,000 Zipf streams, a million viewers, 3 tiers; 10 % of the nodes killed, then a region lost"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set grid ytics
set key top left
set xtics nomirror
set yrange [0:*]

set title "origin egress (streams' worth), all viewers placed"
plot for [i=0:*] dir.'/egress.dat' index i using 2:xtic(1) title columnheader(1)

set title "registry operations a second per node (1000 nodes)"
set style histogram rowstacked
set key top right
plot for [k=2:5] dir.'/ops.dat' index 0 using k:xtic(1) title columnheader(k)

set title "seconds until every orphaned viewer is placed again (1000 nodes)"
set style histogram clustered gap 1
set key top right
plot dir.'/recovery.dat' index 0 using 2:xtic(1) title "10 % killed", \
     '' index 0 using 4 title "region lost"
unset multiplot
