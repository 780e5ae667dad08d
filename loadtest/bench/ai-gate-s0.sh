#!/usr/bin/env bash
# The learning AI gate with the defaults (issue 15): `npm start` as a new user gets it (2 gateways,
# 1 worker, every setting at its default: DAM_MAX_QUEUE_WAIT_MS=2000, the simulated model declaring
# 100 answers/s with 200 ms to its first token) against the seed's S0 (1,100 users for 2 minutes)
# by the built-in runner, through nginx on 127.0.0.1. Every second it samples the worker's
# heartbeat and the gateways' AI metrics, then prints the acceptance figures:
#   - p95 wait from an accepted POST to its first token vs DAM_MAX_QUEUE_WAIT_MS + the model's TTFT;
#   - whether the AI stayed busy: in the seconds with ai_overloaded refusals, did the worker have
#     questions waiting for a start (it was never idle while questions were refused)?
# Usage: npm run bench:ai-gate [-- OUT_DIR]   (takes the whole machine for ~3 minutes)
# Extra settings pass through the environment as for npm start (e.g. STACK_GATEWAYS=1);
# S0_SCALE=0.1 shortens the run (a smoke run; the recorded figures need the full 2 minutes).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
OUT="${1:-loadtest/results/ai-gate-s0-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
RPORT=$(free_port)
URL="http://127.0.0.1:$PORT"

npm start -- --port "$PORT" --redis-port "$RPORT" --gateways "${STACK_GATEWAYS:-2}" --workers 1 --quiet >"$OUT/stack.log" 2>&1 &
STACK=$!
SAMPLER=""
cleanup() {
  [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null || true
  kill -TERM "$STACK" 2>/dev/null || true
  wait "$STACK" 2>/dev/null || true
}
trap cleanup EXIT

for _ in $(seq 1 240); do
  curl -sf "$URL/health/ready" >/dev/null 2>&1 && break
  kill -0 "$STACK" 2>/dev/null || { echo "the stack exited; see $OUT/stack.log" >&2; exit 1; }
  sleep 0.5
done
curl -sf "$URL/health/ready" >/dev/null || { echo "the stack did not get ready; see $OUT/stack.log" >&2; exit 1; }

# One JSON line a second: the worker's heartbeat and this gateway's AI gauges and refusal counts.
(
  while true; do
    hb=$(redis-cli -p "$RPORT" --raw GET td:workers:worker-0 2>/dev/null || true)
    m=$(curl -s --max-time 1 "$URL/metrics" | grep -E '^td_ai_(refused_total|throughput_per_second|queue_depth|estimated_wait_seconds)' | tr '\n' ';' | sed 's/"/\\"/g' || true)
    printf '{"t":%s,"hb":%s,"metrics":"%s"}\n' "$(date +%s.%N)" "${hb:-null}" "$m"
    sleep 1
  done
) >"$OUT/samples.jsonl" &
SAMPLER=$!

npm run --silent loadtest -- s0 --scale "${S0_SCALE:-1}" --base-url "$URL" --out "$OUT/s0.json" --no-progress | tee "$OUT/summary.txt"

python3 - "$OUT" <<'PY'
import json, re, sys
out = sys.argv[1]
run = json.load(open(f"{out}/s0.json"))
user = run["roles"]["user"]
ttft = user["latency"]["ttft"]
limit_ms, model_ttft_ms = 2000, 200
print(f"\nAI gate with the defaults, S0 ({run['peakVus']} users, {run['durationMs'] / 1000:.0f} s), one worker")
print(f"  accepted POST -> first token: p50 {ttft['p50']:.0f} ms, p95 {ttft['p95']:.0f} ms, max {ttft['max']:.0f} ms ({ttft['count']} answers)")
print(f"  limit DAM_MAX_QUEUE_WAIT_MS + the model's TTFT = {limit_ms + model_ttft_ms} ms: {'met' if ttft['p95'] <= limit_ms + model_ttft_ms else 'NOT met'}")
samples = [json.loads(l) for l in open(f"{out}/samples.jsonl") if l.strip()]
prev = None
refusing, waiting_when_refusing, starts = 0, 0, []
for s in samples:
    refused = sum(float(v) for v in re.findall(r'td_ai_refused_total\{reason="overloaded[a-z_]*"[^}]*\} ([0-9.e+]+)', s["metrics"]))
    hb = s["hb"]
    if prev is not None and refused > prev and hb:
        refusing += 1
        if hb["inFlight"] > hb["answering"]:
            waiting_when_refusing += 1
    if hb and hb.get("startsPerSec"):
        starts.append(hb["startsPerSec"])
    prev = refused
print(f"  seconds with ai_overloaded refusals (gateway 0): {refusing}; of those, the worker had questions waiting for a start: {waiting_when_refusing}")
if starts:
    starts.sort()
    print(f"  worker answer starts/s (heartbeats): median {starts[len(starts) // 2]:.1f}, max {starts[-1]:.1f}; completed answers {user['completed'] if 'completed' in user else 'n/a'}")
print(f"  files: {out}/s0.json, samples.jsonl, summary.txt, stack.log")
PY
