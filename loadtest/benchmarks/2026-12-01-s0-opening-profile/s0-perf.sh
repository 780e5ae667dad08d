#!/usr/bin/env bash
# The experiment's S0 with 2 gateways (defaults); system-wide perf of its first 12 s, and top each second.
# --perf-basic-prof leaves /tmp/perf-<pid>.map for each gateway; remove them when done.
cd "$(git rev-parse --show-toplevel)"
log=/tmp/exp-s0perf.log
npm run experiment -- --no-progress --keep-logs --configs ${1:-after-2gw} --scenarios s0 --env NODE_OPTIONS=--perf-basic-prof > $log 2>&1 &
exp=$!
for _ in $(seq 1 1200); do grep -q -- "-- after-.* s0:" $log && break; sleep 0.2; done
date -u +%T.%N > /tmp/s0-perf-start.txt
(top -b -d 1 -n 14 -w 200 > /tmp/s0-top.txt) &
perf record -a -g -F 499 -o /tmp/perf-s0.data -- sleep 12 2> /dev/null
wait $exp
tail -5 $log
