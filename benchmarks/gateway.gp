# SPDX-License-Identifier: BSL-1.0
# Plots an nxsys-gateway --timeline file (scripts/gateway-load.sh): requests/s and p50/p99
# latency per slice over time, with a vertical mark at each finished refresh (a refresh-ahead,
# which no request waits for, grey; one that callers waited for, red). Only the time the gateway
# was answering is shown: the seconds before the load started and after it ended are idle.
# gnuplot -e "datafile='gateway-timeline.tsv'; outfile='gateway.png'; subtitle='...'; wrk_rps=30056" gateway.gp
#   wrk_rps (optional): wrk's whole-run requests/s, drawn as a dashed line for comparison
if (!exists("datafile")) datafile = 'gateway-timeline.tsv'
if (!exists("outfile")) outfile = 'gateway.png'
if (!exists("subtitle")) subtitle = ''
if (!exists("wrk_rps")) wrk_rps = NaN

# The file holds two kinds of lines (see the header comments it starts with): pick one each.
slices = '< grep "^slice" "'.datafile.'"'
refreshes = '< grep "^refresh" "'.datafile.'"'

# The busy span, and each panel's height, from the data.
stats slices using ($3 > 0 ? $2 : NaN) nooutput
t0 = STATS_min
t1 = STATS_max
stats slices using 2 every ::1::1 nooutput
slice_s = STATS_min
stats slices using (($2 >= t0 && $2 <= t1) ? $4 : NaN) nooutput
rps_top = STATS_max * 1.15
stats slices using (($2 >= t0 && $2 <= t1) ? $7 : NaN) nooutput
ms_top = STATS_max * 1.25

set terminal pngcairo size 2000,800 font 'DejaVu Sans,11'
set output outfile
set multiplot layout 2,1 title "nxsys-gateway under wrk: requests/s and latency per ".sprintf('%.0f', slice_s * 1000)." ms slice, each refresh marked".(subtitle eq '' ? '' : "\n".subtitle)
set grid
set key outside right top
set lmargin at screen 0.06
set rmargin at screen 0.82
set xrange [t0 - slice_s : t1 + 2 * slice_s]
set xlabel 'seconds since the gateway started'
set style line 1 lc rgb '#1f77b4' lw 2
set style line 2 lc rgb '#d62728' lw 2
set style line 3 lc rgb '#7f7f7f' lw 1 dt 2
set style line 4 lc rgb '#2ca02c' lw 1
set style line 6 lc rgb '#ff7f0e' lw 2
set style line 5 lc rgb '#000000' lw 1 dt 3

set title 'requests/s (answers written per slice / slice length)'
set ylabel 'requests/s'
set yrange [0:rps_top]
plot refreshes using ($4 > 0 ? $2 : NaN):(0):(0):(rps_top) with vectors nohead ls 3 title 'refresh-ahead finished', \
     refreshes using ($4 > 0 ? NaN : $2):(0):(0):(rps_top) with vectors nohead ls 2 title 'refresh callers waited for', \
     wrk_rps with lines ls 5 title (wrk_rps == wrk_rps ? sprintf("wrk's whole-run average (%.0f/s)", wrk_rps) : ''), \
     slices using 2:4 with lines ls 1 title 'requests/s'

set title 'latency, request read to answer written (ms)'
set ylabel 'ms'
set yrange [0:ms_top]
plot refreshes using ($4 > 0 ? $2 : NaN):(0):(0):(ms_top) with vectors nohead ls 3 title 'refresh-ahead finished', \
     refreshes using ($4 > 0 ? NaN : $2):(0):(0):(ms_top) with vectors nohead ls 2 title 'refresh callers waited for', \
     slices using 2:7 with lines ls 6 title 'p99', \
     slices using 2:5 with lines ls 4 title 'p50'
unset multiplot
