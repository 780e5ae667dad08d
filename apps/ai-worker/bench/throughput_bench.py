"""Can one worker process deliver its capacity? Answers/s and CPU of a real `python -m ai_worker`.

It starts its own redis-server on a free 127.0.0.1 port and one worker process (the simulated
model, the product's defaults unless --env says otherwise), then offers questions faster than the
capacity for a while and counts, as gateways would see them, what comes back on the reply
channels (single replies and batches, order checked per answer). Figures are over a measured
window after a warm-up: answers done per second against the capacity, tokens per second, the
worker's and Redis's CPU (utime + stime from /proc), and the worker's CPU per answer and per token.

    apps/ai-worker/.venv/bin/python apps/ai-worker/bench/throughput_bench.py [--capacity 100]
        [--gateways 2] [--seconds 20] [--warmup 5] [--env WORKER_REPLY_BATCH_MS=0] [--profile FILE]

--profile records the worker with py-spy (if on PATH: `pip install py-spy` in any venv) over the
window and prints the functions with the most samples (self and inclusive); FILE gets the
collapsed stacks. The load generator shares the machine: run it on a quiet one for figures.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis.asyncio as aioredis

APP_DIR = Path(__file__).resolve().parents[1]
CLK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


class Gateways:
    """The reply side of N gateways: each reads its reply channel and its batch channel."""

    def __init__(self, r: aioredis.Redis, n: int):
        self.names = [f"bench-gw{i}-{uuid.uuid4().hex[:6]}" for i in range(n)]
        self.pubsub = r.pubsub()
        self.done = 0
        self.tokens = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.messages = 0
        self.out_of_order = 0
        self.next_seq: dict[str, int] = {}

    async def start(self) -> None:
        channels = [c for n in self.names for c in (f"td:replies:{n}", f"td:reply-batches:{n}")]
        await self.pubsub.subscribe(*channels)
        for _ in channels:
            await self.pubsub.get_message(timeout=5.0)

    def reply_to(self, i: int) -> str:
        return f"td:replies:{self.names[i % len(self.names)]}"

    async def run(self) -> None:
        while True:
            m = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if m is None:
                continue
            self.messages += 1
            body = json.loads(m["data"])
            for r in body["replies"] if body.get("type") == "batch" else [body]:
                mid = r["messageId"]
                if r["type"] == "token":
                    if r["seq"] != self.next_seq.get(mid, 0):
                        self.out_of_order += 1
                    self.next_seq[mid] = r["seq"] + 1
                    self.tokens += 1
                elif r["type"] == "done":
                    self.done += 1
                    self.next_seq.pop(mid, None)
                else:
                    self.errors[r.get("code", "?")] += 1
                    self.next_seq.pop(mid, None)


async def offer(r: aioredis.Redis, gws: Gateways, rate: float, until: float, stream: str) -> int:
    """XADDs questions at `rate` per second until `until` (monotonic), in 10 ms steps."""
    sent = 0
    t0 = time.monotonic()
    while (now := time.monotonic()) < until:
        due = int((now - t0) * rate) - sent
        if due > 0:
            pipe = r.pipeline(transaction=False)
            deadline = str(int(time.time() * 1000) + 120_000)
            for _ in range(due):
                mid = uuid.uuid4().hex
                pipe.xadd(stream, {"id": mid, "sessionId": "s-" + mid[:8], "replyTo": gws.reply_to(sent), "question": f"question {sent}?",
                                   "deadline": deadline, "attempt": "1", "traceId": "t-" + mid[:8]})
                sent += 1
            await pipe.execute()
        await asyncio.sleep(0.01)
    return sent


def profile_summary(path: Path, top: int) -> list[str]:
    """py-spy's raw (collapsed) output: one line per stack 'f1;f2;...;fn count'."""
    self_c: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        c = int(n)
        total += c
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")" if " (" in f else f for f in stack.split(";")]
        self_c[frames[-1]] += c
        for f in set(frames):
            incl[f] += c
    out = [f"py-spy: {total} samples"]
    out += [f"  self {100 * c / total:5.1f}%  {f}" for f, c in self_c.most_common(top)]
    out += [f"  incl {100 * c / total:5.1f}%  {f}" for f, c in incl.most_common(top)]
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--capacity", type=int, default=100, help="AI_CAPACITY_PER_SEC (default 100)")
    ap.add_argument("--offer", type=float, default=None, help="questions offered per second (default 1.5 x capacity)")
    ap.add_argument("--gateways", type=int, default=2, help="reply channels, as gateway instances (default 2)")
    ap.add_argument("--seconds", type=float, default=20.0, help="measured window (default 20)")
    ap.add_argument("--warmup", type=float, default=5.0, help="warm-up before the window (default 5)")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for the worker (repeatable)")
    ap.add_argument("--profile", default=None, help="py-spy the worker over the window; collapsed stacks to this file")
    ap.add_argument("--worker-dir", default=str(APP_DIR), help="the worker's app folder, e.g. another checkout's apps/ai-worker to compare (default this one)")
    args = ap.parse_args()
    rate = args.offer or 1.5 * args.capacity
    tag = uuid.uuid4().hex[:8]
    rport, wport = free_port(), free_port()
    workdir = tempfile.mkdtemp(prefix="aiw-tput-")
    redis_proc = subprocess.Popen(
        [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(rport), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{rport}"
    stream = f"td:questions:tput-{tag}"
    env = {**os.environ, "REDIS_URL": url, "WORKER_PORT": str(wport), "AI_QUESTION_STREAM": stream, "WORKER_ID": f"tput-{tag}",
           "AI_CAPACITY_PER_SEC": str(args.capacity), "LOG_LEVEL": "warning"}
    for kv in args.env:
        k, _, v = kv.partition("=")
        env[k] = v
    worker = None
    r = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        async with asyncio.timeout(10):
            while True:
                try:
                    if await r.ping():
                        break
                except Exception:  # noqa: BLE001 - not up yet
                    await asyncio.sleep(0.05)
        worker = subprocess.Popen([sys.executable, "-m", "ai_worker"], cwd=args.worker_dir, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        async with asyncio.timeout(30):
            while not await r.exists(f"td:workers:tput-{tag}"):
                await asyncio.sleep(0.1)
        gws = Gateways(r, args.gateways)
        await gws.start()
        reader = asyncio.create_task(gws.run())
        t0 = time.monotonic()
        offering = asyncio.create_task(offer(r, gws, rate, t0 + args.warmup + args.seconds, stream))
        await asyncio.sleep(args.warmup)
        spy = None
        if args.profile and shutil.which("py-spy"):
            spy = subprocess.Popen(["py-spy", "record", "-p", str(worker.pid), "-d", str(int(args.seconds)), "-r", "200",
                                    "-f", "raw", "-o", args.profile, "--nonblocking"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rpid = redis_proc.pid
        c0 = (cpu_s(worker.pid), cpu_s(rpid), gws.done, gws.tokens, gws.messages, time.monotonic())
        await asyncio.sleep(args.seconds)
        c1 = (cpu_s(worker.pid), cpu_s(rpid), gws.done, gws.tokens, gws.messages, time.monotonic())
        sent = await offering
        reader.cancel()
        secs = c1[5] - c0[5]
        done, tokens, messages = c1[2] - c0[2], c1[3] - c0[3], c1[4] - c0[4]
        wcpu, rcpu = c1[0] - c0[0], c1[1] - c0[1]
        result = {
            "what": f"one worker process, capacity {args.capacity}/s, {rate:g} questions/s offered, {args.gateways} reply channels",
            "env": args.env,
            "answersPerSec": round(done / secs, 1),
            "shareOfCapacity": round(done / secs / args.capacity, 3),
            "tokensPerSec": round(tokens / secs),
            "repliesPerMessage": round((tokens + done) / max(1, messages), 1),
            "workerCores": round(wcpu / secs, 3),
            "redisCores": round(rcpu / secs, 3),
            "workerCpuMsPerAnswer": round(1000 * wcpu / max(1, done), 2),
            "workerCpuUsPerToken": round(1e6 * wcpu / max(1, tokens), 1),
            "outOfOrder": gws.out_of_order,
            "errors": dict(gws.errors),
            "offered": sent,
            "loadavg": os.getloadavg(),
        }
        print(json.dumps(result))
        if spy is not None:
            spy.wait(timeout=args.seconds + 30)
            if Path(args.profile).exists():
                print("\n".join(profile_summary(Path(args.profile), 25)))
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(10)
            except subprocess.TimeoutExpired:
                worker.kill()
        await r.aclose()
        redis_proc.terminate()
        redis_proc.wait(5)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
