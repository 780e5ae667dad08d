#!/usr/bin/env bash
# Usage: perf-phase.sh ai_overloaded|dam_full
# One bench:gateway phase; 4 s into each server's measured window, perf stat and perf record
# (-F 999 -g, 4 s) of that process. The gateway runs with --perf-basic-prof, so its JavaScript
# frames have names in `perf script`. Output: /tmp/perf-{gateway,bare}.data, /tmp/perf-stat-*.txt.
# --perf-basic-prof leaves /tmp/perf-<pid>.map for each gateway; remove them when done.
set -u
phase=${1:-ai_overloaded}
cd "$(git rev-parse --show-toplevel)"
log=/tmp/perf-bench.log
npm run bench:gateway -- --only "$phase" --seconds 12 --env "NODE_OPTIONS=--perf-basic-prof" > $log 2>&1 &
bench=$!
for who in gateway bare; do
  pat="^   gateway$"; [ $who = bare ] && pat="^   bare server$"
  for _ in $(seq 1 400); do grep -q "$pat" $log && break; sleep 0.3; done
  sleep 4
  if [ $who = gateway ]; then pid=$(pgrep -f "dist/apps/gateway/main.js" | head -1); else pid=$(pgrep -f "bare-server.ts" | head -1); fi
  perf stat -e task-clock,context-switches -p "$pid" -- sleep 4 2> /tmp/perf-stat-$who.txt
  perf record -F 999 -g -p "$pid" -o /tmp/perf-$who.data -- sleep 4 2> /dev/null
done
wait $bench
grep -E '^\| (429|503)' $log
