"""Fixtures: a real redis-server (or REDIS_URL), schema validators, workers, reply capture."""

from __future__ import annotations

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
from dataclasses import replace
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pytest
import redis
import redis.asyncio as aioredis
from jsonschema import Draft202012Validator

from ai_worker import protocol as p
from ai_worker.config import Settings, load_settings
from ai_worker.worker import Worker

APP_DIR = Path(__file__).resolve().parents[1]
SCHEMA_PATH = APP_DIR.parents[1] / "libs" / "ai-bridge" / "schema" / "protocol.schema.json"
# Default deadline of a wait, in seconds: generous, because CI machines are shared and slow at
# random; a wait that succeeds returns as soon as its condition holds, so only a failure spends it.
WAIT_DEFAULT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url() -> Any:
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="aiw-redis-")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}"
    client = redis.Redis.from_url(url)
    try:
        for _ in range(100):
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                time.sleep(0.05)
        else:
            raise RuntimeError("redis-server did not start")
        yield url
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


# ---- JSON Schema -----------------------------------------------------------------

SCHEMA = json.loads(SCHEMA_PATH.read_text())
Draft202012Validator.check_schema(SCHEMA)


def validator_for(defname: str) -> Draft202012Validator:
    # The schema itself with a root $ref, so "#/$defs/..." resolves against the file.
    return Draft202012Validator({**SCHEMA, "$ref": f"#/$defs/{defname}"})


REPLY = validator_for("Reply")
REPLY_MESSAGE = validator_for("ReplyMessage")
REPLY_BATCH = validator_for("ReplyBatch")
QUESTION = validator_for("Question")
HEARTBEAT = validator_for("WorkerHeartbeat")


# ---- helpers -----------------------------------------------------------------------


@pytest.fixture
async def r(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def make_settings(redis_url: str) -> Callable[..., Settings]:
    """Fast test settings on a stream, group, worker id and rate key of this test only."""
    tag = uuid.uuid4().hex[:8]

    def make(**env_overrides: str) -> Settings:
        env = {
            "REDIS_URL": redis_url,
            "AI_QUESTION_STREAM": f"td:questions:test-{tag}",
            "AI_CONSUMER_GROUP": "workers",
            "WORKER_ID": f"worker-test-{tag}-{uuid.uuid4().hex[:4]}",
            "WORKER_BLOCK_MS": "100",
            "WORKER_HEARTBEAT_MS": "100",
            "WORKER_HEARTBEAT_TTL_MS": "3000",
            "WORKER_SHUTDOWN_GRACE_MS": "2000",
            "AI_CAPACITY_PER_SEC": "1000",
            "AI_TTFT_MS": "10",
            "AI_TOKENS_PER_SEC": "1000",
            "AI_ANSWER_TOKENS": "5",
        }
        env.update(env_overrides)
        return replace(load_settings(env), rate_key_prefix=f"td:ai:rate:test-{tag}:")

    return make


@pytest.fixture
async def start_worker() -> AsyncIterator[Callable[[Settings], Any]]:
    """Start real workers; every one still running is stopped at the end of the test."""
    workers: list[Worker] = []

    async def start(settings: Settings) -> Worker:
        w = Worker(settings)
        await w.start()
        workers.append(w)
        return w

    yield start
    for w in workers:
        await w.stop(grace_ms=0)


def question_fields(settings: Settings, **over: Any) -> dict[str, str]:
    mid = uuid.uuid4().hex
    fields = {
        "id": mid,
        "sessionId": "s-" + mid[:8],
        "replyTo": f"td:replies:test-{mid[:8]}",
        "question": "how high is the dam?",
        "deadline": str(int(time.time() * 1000) + 10_000),
        "attempt": "1",
        "traceId": "t-" + mid[:8],
    }
    fields.update({k: str(v) for k, v in over.items() if v is not None})
    for k, v in over.items():
        if v is None:
            fields.pop(k, None)
    return fields


class Replies:
    """Subscribed to one reply channel and, as a gateway of this protocol is, to its batch channel:
    hands out schema-validated replies one by one, batches unpacked in order. `messages` keeps every
    message as it came, (channel, body), for the tests about the wire."""

    def __init__(self, pubsub: aioredis.client.PubSub, channel: str = ""):
        self.pubsub = pubsub
        self.channel = channel
        self.items: list[tuple[float, dict[str, Any]]] = []
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self._queue: collections.deque[dict[str, Any]] = collections.deque()

    async def _poll(self, timeout: float | None) -> bool:
        """Reads one message into the queue; False if none came within `timeout` (None: 1 s)."""
        m = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0 if timeout is None else timeout)
        if m is None:
            return False
        body = json.loads(m["data"])
        self.messages.append((m["channel"], body))
        if m["channel"].startswith("td:reply-batches:"):
            REPLY_BATCH.validate(body)
            self._queue.extend(body["replies"])
        else:
            self._queue.append(body)
        return True

    async def raw(self, timeout: float = WAIT_DEFAULT_S) -> dict[str, Any]:
        """The next reply, or marker, whatever it is (not validated, not kept)."""
        async with asyncio.timeout(timeout):
            while not self._queue:
                await self._poll(None)
            return self._queue.popleft()

    async def next(self, timeout: float = WAIT_DEFAULT_S) -> dict[str, Any]:
        body = await self.raw(timeout)
        REPLY.validate(body)
        self.items.append((time.monotonic(), body))
        return body

    async def until_end(self, timeout: float = WAIT_DEFAULT_S) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while True:
                body = await self.next(timeout)
                if body["type"] in ("done", "error"):
                    return [b for _, b in self.items]

    async def before_marker(self, r: aioredis.Redis) -> list[dict[str, Any]]:
        """Publishes a marker on the channel now and returns what arrived before it: the positive
        end of a "nothing more came" check (Redis delivers a connection's messages in order)."""
        await r.publish(self.channel, json.dumps({"type": "marker"}))
        seen = []
        while (m := await self.raw()) != {"type": "marker"}:
            seen.append(m)
        return seen

    async def quiet(self, seconds: float) -> list[dict[str, Any]]:
        """Whatever else arrives within `seconds` (expected: nothing)."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            await self._poll(left)
        extra = list(self._queue)
        self._queue.clear()
        return extra


@pytest.fixture
async def subscribe(redis_url: str) -> AsyncIterator[Callable[..., Any]]:
    clients: list[aioredis.Redis] = []
    pubsubs: list[aioredis.client.PubSub] = []

    async def sub(channel: str, batches: bool = True) -> Replies:
        """batches=False: only the reply channel, as a gateway of the previous protocol reads."""
        c = aioredis.Redis.from_url(redis_url, decode_responses=True)
        clients.append(c)
        ps = c.pubsub()
        pubsubs.append(ps)
        channels = [channel, p.batch_channel(channel)] if batches and channel.startswith("td:replies:") else [channel]
        await ps.subscribe(*channels)
        # Wait for the confirmations so nothing published after this is missed.
        confirmed = 0
        async with asyncio.timeout(5):
            while confirmed < len(channels):
                m = await ps.get_message(timeout=1.0)
                if m and m["type"] == "subscribe":
                    confirmed += 1
        return Replies(ps, channel)

    yield sub
    for ps in pubsubs:
        await ps.aclose()
    for c in clients:
        await c.aclose()


async def ask(r: aioredis.Redis, settings: Settings, fields: dict[str, str], validate: bool = True) -> str:
    if validate:
        QUESTION.validate(fields)
    return await r.xadd(settings.question_stream, fields)


async def pending_count(r: aioredis.Redis, settings: Settings) -> int:
    info = await r.xpending(settings.question_stream, settings.consumer_group)
    return int(info["pending"])


async def wait_for(pred: Callable[[], Any], timeout: float = WAIT_DEFAULT_S, interval: float = 0.02,
                   label: str | None = None) -> Any:
    """Waits until pred() (sync or async) returns a truthy value and returns it: the one wait of the
    worker's tests (a condition, never a fixed sleep). A pred that raises counts as not yet. Fails
    after `timeout` with the label, how often it checked, and the last value or exception.

    For "nothing happened" checks, wait for a later event that must come after the one that must
    not happen, then assert it did not."""
    name = label or getattr(pred, "__qualname__", "condition")
    end = time.monotonic() + timeout
    checks = 0
    last: str = "no check finished"
    while True:
        checks += 1
        try:
            v = pred()
            if asyncio.iscoroutine(v):
                v = await v
            if v:
                return v
            last = f"last value: {v!r}"
        except Exception as err:  # noqa: BLE001 - a failing check is "not yet"
            last = f"last check raised: {type(err).__name__}: {err}"
        if time.monotonic() >= end:
            raise AssertionError(f"{name}: not true within {timeout:g} s ({checks} checks; {last})")
        await asyncio.sleep(interval)


def spawn_worker(redis_url: str, port: int, **env: str) -> subprocess.Popen[str]:
    """A real `python -m ai_worker` process on 127.0.0.1:port, fast answers unless env says otherwise."""
    full = {**os.environ, "REDIS_URL": redis_url, "WORKER_PORT": str(port), "AI_TTFT_MS": "10",
            "AI_TOKENS_PER_SEC": "500", "LOG_LEVEL": "info", **env}
    return subprocess.Popen(
        [sys.executable, "-m", "ai_worker"], cwd=APP_DIR, env=full,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


async def wait_healthy(client: Any, timeout: float = WAIT_DEFAULT_S) -> None:
    """Waits until the worker behind the httpx client answers /health with 200."""
    import httpx

    async def healthy() -> bool:
        try:
            return (await client.get("/health")).status_code == 200
        except httpx.TransportError:
            return False

    await wait_for(healthy, timeout=timeout, interval=0.1)
