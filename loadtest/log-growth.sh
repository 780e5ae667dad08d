#!/usr/bin/env bash
# How much the stack's log directory (.stack/) grows under the seed's S0 (1,100 users) with the
# defaults: starts `npm start` on a free port, runs `npm run loadtest -- s0` against it, stops the
# stack (so every log is flushed), and prints the growth in total and by file. Exits 1 when it is
# 10 MB or more (the acceptance of issue 20). Before stopping the stack it also watches Redis for
# what the load left: every session record and in-flight claim (td:session:*) must be gone within
# one heartbeat (DAM_HEARTBEAT_MS, 1 s) of the load's last close; exits 1 when they are not.
#
#   bash loadtest/log-growth.sh            # the whole S0: 1,100 users for 2 min
#   bash loadtest/log-growth.sh 0.25       # S0's time scaled: 1,100 users for 30 s
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE="${1:-1}"
LIMIT_BYTES=$((10 * 1024 * 1024))
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT="$(free_port)"
RPORT="$(free_port)"
OUT="$(mktemp -d)"

sizes() { find .stack -type f -printf '%s %P\n' 2>/dev/null | sort -k2; }

mkdir -p .stack
sizes > "$OUT/before"
npm start -- --port "$PORT" --redis-port "$RPORT" --quiet > "$OUT/npm-start.log" 2>&1 &
NPM=$!
stop_stack() {
  if kill -0 "$NPM" 2>/dev/null; then
    kill -TERM "$NPM"
    wait "$NPM" || true
  fi
}
trap stop_stack EXIT
for _ in $(seq 1 360); do
  grep -q 'Traffic Dam is up' "$OUT/npm-start.log" && break
  kill -0 "$NPM" 2>/dev/null || { cat "$OUT/npm-start.log"; exit 2; }
  sleep 0.5
done
grep -q 'Traffic Dam is up' "$OUT/npm-start.log" || { echo "npm start did not come up"; cat "$OUT/npm-start.log"; exit 2; }
# Measured from here: the boot's own lines are not the load's.
sizes > "$OUT/before"

npm run -s loadtest -- s0 --base-url "http://127.0.0.1:$PORT" --scale "$SCALE" --no-progress --out "$OUT/s0.json"
# The runner closes (DELETE) every session it still holds before it exits: from here, one heartbeat.
left() { redis-cli -p "$RPORT" --scan --pattern 'td:session:*' | wc -l; }
closed_at=$(date +%s%N)
remaining=$(left)
while [ "$remaining" -gt 0 ] && [ $(( ($(date +%s%N) - closed_at) / 1000000 )) -lt 10000 ]; do
  sleep 0.1
  remaining=$(left)
done
gone_ms=$(( ($(date +%s%N) - closed_at) / 1000000 ))
echo "session records and in-flight claims left in Redis after the load: $remaining (looked for ${gone_ms} ms after the last close)"
stop_stack
trap - EXIT
sizes > "$OUT/after"

# Growth by file (a file that is new counts whole), largest first.
join -1 2 -2 2 -a 2 -e 0 -o '0,1.1,2.1' "$OUT/before" "$OUT/after" | awk '{ d = $3 - $2; if (d != 0) printf "%12d  %s\n", d, $1 }' | sort -rn > "$OUT/growth"
TOTAL="$(awk '{ s += $1 } END { print s + 0 }' "$OUT/growth")"
echo
echo "log growth of .stack/ under S0 (scale $SCALE): $TOTAL bytes ($(awk -v b="$TOTAL" 'BEGIN { printf "%.2f", b / 1048576 }') MB), limit $LIMIT_BYTES"
head -20 "$OUT/growth"
echo "(details in $OUT)"
[ "$TOTAL" -lt "$LIMIT_BYTES" ] || exit 1
# Gone within one heartbeat (1 s) of the last close.
[ "$remaining" -eq 0 ] && [ "$gone_ms" -le 1000 ]
