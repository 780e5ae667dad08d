"""How long Worker.stop() takes to cancel answers still running when its grace runs out.

The test (tests/test_lifecycle.py) checks that every answer takes its cancel; how long stop() then
takes is a figure for BENCHMARKS.md, measured here on a quiet machine. It starts its own
redis-server on a free 127.0.0.1 port.

    apps/ai-worker/.venv/bin/python apps/ai-worker/bench/stop_bench.py [--answers 30] [--reps 5]

Target: stop(grace_ms=200) returns within 1.9 s (a task that ignored its cancel would cost 2 s more).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis.asyncio as aioredis  # noqa: E402

from ai_worker.config import load_settings  # noqa: E402
from ai_worker.worker import Worker  # noqa: E402

TARGET_S = 1.9


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def one_stop(url: str, answers: int) -> float:
    tag = uuid.uuid4().hex[:8]
    settings = replace(
        load_settings({
            "REDIS_URL": url, "AI_QUESTION_STREAM": f"td:questions:bench-{tag}", "WORKER_ID": f"bench-{tag}",
            "WORKER_BLOCK_MS": "100", "WORKER_HEARTBEAT_MS": "50", "AI_CAPACITY_PER_SEC": "1000",
            "AI_TTFT_MS": "10", "AI_TOKENS_PER_SEC": "200", "AI_ANSWER_TOKENS": "1000",
        }),
        rate_key_prefix=f"td:ai:rate:bench-{tag}:",
    )
    r = aioredis.Redis.from_url(url, decode_responses=True)
    w = Worker(settings)
    await w.start()
    try:
        for i in range(answers):
            await r.xadd(settings.question_stream, {
                "id": f"{tag}-{i}", "sessionId": f"s-{tag}", "replyTo": f"td:replies:bench-{tag}", "question": "a long one",
                "deadline": str(int(time.time() * 1000) + 60_000), "attempt": "1", "traceId": f"t-{tag}",
            })
        async with asyncio.timeout(30):
            while w.answering < answers:
                await asyncio.sleep(0.01)
        t0 = time.monotonic()
        await w.stop(grace_ms=200)
        return time.monotonic() - t0
    finally:
        await w.stop(grace_ms=0)
        await r.aclose()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--answers", type=int, default=30)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="aiw-bench-")
    proc = subprocess.Popen(
        [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}"
    try:
        probe = aioredis.Redis.from_url(url)
        async with asyncio.timeout(10):
            while True:
                try:
                    if await probe.ping():
                        break
                except Exception:  # noqa: BLE001 - not up yet
                    await asyncio.sleep(0.05)
        await probe.aclose()
        runs = [await one_stop(url, args.answers) for _ in range(args.reps)]
        result = {
            "what": f"Worker.stop(grace_ms=200) with {args.answers} answers running",
            "median_s": round(statistics.median(runs), 3), "max_s": round(max(runs), 3),
            "runs_s": [round(x, 3) for x in runs], "target_s": TARGET_S, "met": max(runs) <= TARGET_S,
        }
        print(json.dumps(result))
    finally:
        proc.terminate()
        proc.wait(5)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
