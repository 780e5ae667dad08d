#!/usr/bin/env bash
# Usage: [DELAY=4] profile-phase.sh ai_overloaded|dam_full|stream_open|streaming
# One bench:gateway phase with the V8 CPU profiler preloaded in the gateway (cpu-profile.cjs). DELAY s
# (default 4) after the phase's gateway line, it dumps and restarts the profile, 5 s later it dumps again:
# the second file (/tmp/prof/<pid>-1.cpuprofile) is 5 s of the measured load. Summaries:
#   python3 by-file.py /tmp/prof/<pid>-1.cpuprofile    # self time by file (main.js: the gateway's own code)
#   python3 self-time.py /tmp/prof/<pid>-1.cpuprofile  # self time by function
set -u
phase=${1:-ai_overloaded}
here=$(cd "$(dirname "$0")" && pwd)
cd "$(git rev-parse --show-toplevel)"
mkdir -p /tmp/prof
log=/tmp/profile-bench.log
npm run bench:gateway -- --only "$phase" --seconds 12 --env "NODE_OPTIONS=--require $here/cpu-profile.cjs" > $log 2>&1 &
bench=$!
for _ in $(seq 1 400); do grep -q "^   gateway" $log && break; sleep 0.3; done
sleep "${DELAY:-4}"
pid=$(pgrep -f "dist/apps/gateway/main.js" | head -1)
kill -USR2 "$pid"; sleep 5; kill -USR2 "$pid"
wait $bench
ls /tmp/prof/"$pid"-*.cpuprofile
grep -E '^\| (429|503|stream|question|tokens)' $log
