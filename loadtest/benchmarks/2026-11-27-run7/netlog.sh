#!/bin/bash
# every second: nstat deltas (listen overflows, syn retrans, active/passive opens) and socket summary
nstat -n >/dev/null
end=$((SECONDS+$1))
while [ $SECONDS -lt $end ]; do
  sleep 1
  d=$(nstat 2>/dev/null | awk '/ListenOverflows|TCPSynRetrans|ActiveOpens|PassiveOpens|TCPTimeouts|EstabResets/ {printf "%s=%s ",$1,$2}')
  tw=$(ss -s | awk '/^TCP:/ {print $0}')
  echo "$(date -u +%H:%M:%S) $d | $tw"
done
