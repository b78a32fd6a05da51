# SPDX-License-Identifier: BSL-1.0
# Plots nxsys-contention-bench --plot-data output: p99 waiter latency and token-endpoint
# requests and the wake-up cost per waiter against N, for single-flight, herd, serialized, the real
# golang.org/x/oauth2 ReuseTokenSource (Go peer; a design that did not run has a NaN line) and the
# timer floor.
# gnuplot -e "datafile='contention.dat'; outfile='contention.png'; subtitle='...'" contention.gp
if (!exists("datafile")) datafile = 'contention.dat'
if (!exists("outfile")) outfile = 'contention.png'
if (!exists("subtitle")) subtitle = ''

set terminal pngcairo size 2000,600 font 'DejaVu Sans,11'
set output outfile
set multiplot layout 1,3 title "nxsys-auth: N concurrent token() calls on an expired token".(subtitle eq '' ? '' : "\n".subtitle)
set logscale xy
set grid
set key top left
set xlabel 'N (concurrent callers)'
set format x '10^{%T}'
set style line 1 lc rgb '#1f77b4' lw 2 pt 7
set style line 2 lc rgb '#d62728' lw 2 pt 5
set style line 3 lc rgb '#2ca02c' lw 2 pt 9
set style line 4 lc rgb '#7f7f7f' lw 1 dt 2 pt 6
set style line 5 lc rgb '#ff7f0e' lw 2 pt 11

set title 'waiter latency, p99 (ms, from the burst)'
set ylabel 'ms'
plot datafile index 0 using 1:2 with linespoints ls 1 title 'single-flight (nxsys-auth)', \
     datafile index 1 using 1:2 with linespoints ls 2 title 'herd (every caller refreshes)', \
     datafile index 2 using 1:2 with linespoints ls 3 title 'serialized (mutex across refresh)', \
     datafile index 4 using 1:2 with linespoints ls 5 title 'x/oauth2 ReuseTokenSource (Go)', \
     datafile index 3 using 1:2 with linespoints ls 4 title 'timer floor (cancel one steady\_timer)'

set title 'requests to the token endpoint'
set ylabel 'requests'
set yrange [0.5:*]
# single-flight last, on top of serialized and x/oauth2 (all send 1 request).
plot datafile index 1 using 1:3 with linespoints ls 2 title 'herd (every caller refreshes)', \
     datafile index 2 using 1:3 with linespoints ls 3 lw 7 title 'serialized (mutex across refresh)', \
     datafile index 4 using 1:3 with linespoints ls 5 lw 4 title 'x/oauth2 ReuseTokenSource (Go)', \
     datafile index 0 using 1:3 with linespoints ls 1 title 'single-flight (nxsys-auth)'

set title 'wake-up per waiter, (wall - L) / N (ns)'
set ylabel 'ns'
set yrange [*:*]
plot datafile index 0 using 1:4 with linespoints ls 1 title 'single-flight (nxsys-auth)', \
     datafile index 2 using 1:4 with linespoints ls 3 title 'serialized (mutex across refresh)', \
     datafile index 4 using 1:4 with linespoints ls 5 title 'x/oauth2 ReuseTokenSource (Go)', \
     datafile index 3 using 1:4 with linespoints ls 4 title 'timer floor (cancel one steady\_timer)'
unset multiplot
