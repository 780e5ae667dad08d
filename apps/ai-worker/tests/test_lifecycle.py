"""Heartbeat, shutdown, /health and the real `python -m ai_worker` process."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid

import httpx

from conftest import APP_DIR, HEARTBEAT, ask, free_port, pending_count, question_fields, spawn_worker, wait_for, wait_healthy

from ai_worker.app import create_app
from ai_worker.protocol import worker_key
from ai_worker.worker import Worker


async def test_heartbeat_present_valid_and_deleted_on_stop(r, make_settings, subscribe):
    s = make_settings(AI_CAPACITY_PER_SEC="123")
    w = Worker(s)
    await w.start()
    try:
        key = worker_key(s.worker_id)
        raw = await wait_for(lambda: r.get(key))
        hb = json.loads(raw)
        HEARTBEAT.validate(hb)
        assert hb["workerId"] == s.worker_id
        assert hb["capacityPerSec"] == 123
        assert hb["inFlight"] == 0 and hb["answering"] == 0 and hb["throughputPerSec"] == 0
        assert abs(hb["ts"] - time.time() * 1000) < 2000
        assert 0 < await r.pttl(key) <= 3000

        q = question_fields(s)
        sub = await subscribe(q["replyTo"])
        await ask(r, s, q)
        assert (await sub.until_end())[-1]["type"] == "done"

        async def throughput() -> float:
            body = json.loads(await r.get(key))
            HEARTBEAT.validate(body)
            return body["throughputPerSec"]

        assert await wait_for(throughput) == 0.2  # one answer over a 5 s window
        assert w.throughput_per_sec() == 0.2
    finally:
        await w.stop()
    assert await r.exists(worker_key(s.worker_id)) == 0


async def test_heartbeat_shows_in_flight(r, make_settings, start_worker, subscribe):
    s = make_settings(AI_TOKENS_PER_SEC="10", AI_ANSWER_TOKENS="20")
    w = await start_worker(s)
    qs = [question_fields(s) for _ in range(3)]
    for q in qs:
        await ask(r, s, q)

    async def in_flight() -> int:
        raw = await r.get(worker_key(s.worker_id))
        return raw and json.loads(raw)["inFlight"] == 3

    await wait_for(in_flight)
    assert w.in_flight == 3


async def test_stop_lets_short_answers_finish(r, make_settings, subscribe):
    s = make_settings(AI_TOKENS_PER_SEC="20", AI_ANSWER_TOKENS="8")  # ~0.4 s
    w = Worker(s)
    await w.start()
    q = question_fields(s)
    sub = await subscribe(q["replyTo"])
    await ask(r, s, q)
    assert (await sub.next())["type"] == "token"
    await w.stop(grace_ms=3000)
    msgs = await sub.until_end()
    assert {**msgs[-1], "usage": None} == {"type": "done", "messageId": q["id"], "sessionId": q["sessionId"], "tokens": 8, "usage": None}
    assert await pending_count(r, s) == 0


async def test_stop_cancels_long_answers_and_leaves_them_pending(r, make_settings, subscribe, caplog):
    # 30 answers of ~5 s, busy with Redis calls (token every 5 ms, heartbeat every 50 ms)
    # when the grace runs out: every one must really stop (none may swallow the cancel).
    # (How long stop() takes is a benchmark: bench/stop_bench.py.)
    caplog.set_level(logging.INFO)
    s = make_settings(AI_TOKENS_PER_SEC="200", AI_ANSWER_TOKENS="1000", WORKER_HEARTBEAT_MS="50")
    w = Worker(s)
    await w.start()
    qs = [question_fields(s) for _ in range(30)]
    subs = [await subscribe(q["replyTo"]) for q in qs]
    for q in qs:
        await ask(r, s, q)
    for sub in subs:
        assert (await sub.next())["type"] == "token"

    await w.stop(grace_ms=200)
    # Every task took its cancel: none was left for stop() to give up on ("tasks ignored cancellation").
    messages = [rec.getMessage() for rec in caplog.records]
    assert "tasks ignored cancellation" not in messages
    stopped = [rec for rec in caplog.records if rec.getMessage() == "worker stopped"]
    assert [getattr(rec, "abandoned", None) for rec in stopped] == [30]
    assert w.in_flight == 0 and w.finished == 0
    # Not ACKed: a sweeper can hand them to another worker. No done or error was sent.
    assert await pending_count(r, s) == 30
    # Up to a marker published after stop() returned, only tokens arrived on each channel.
    for sub in subs:
        assert all(m["type"] == "token" for m in await sub.before_marker(r))
    assert await r.exists(worker_key(s.worker_id)) == 0

    # Nothing new is read after stop: another consumer of the group gets the new question
    # (it was never delivered), and nothing published a token after the first markers.
    new_id = await ask(r, s, question_fields(s))
    taken = await r.xreadgroup(s.consumer_group, "probe-after-stop", {s.question_stream: ">"}, count=10)
    assert [entry_id for entry_id, _ in taken[0][1]] == [new_id]
    assert await pending_count(r, s) == 31
    for sub in subs:
        assert await sub.before_marker(r) == [], "published after stop"


async def test_health_via_asgi(make_settings):
    s = make_settings()
    app = create_app(s)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
            res = await client.get("/health")
    assert res.status_code == 200
    no_faults = {"ttftMs": None, "tokensPerSec": None, "errorRatio": 0.0, "stall": False, "crashAfterTokens": None}
    assert res.json() == {"status": "ok", "workerId": s.worker_id, "inFlight": 0, "redis": True,
                          "backend": "simulated", "model": "simulated", "faults": no_faults}


async def test_health_without_redis_is_503_and_stops_quickly(make_settings):
    s = make_settings(REDIS_URL=f"redis://127.0.0.1:{free_port()}")
    app = create_app(s)
    # Starts and stops without Redis rather than hanging on it: a generous deadline, not a speed.
    async with asyncio.timeout(30):
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
                res = await client.get("/health")
    assert res.status_code == 503
    body = res.json()
    assert body["redis"] is False and body["status"] == "degraded" and body["workerId"] == s.worker_id


async def test_python_m_ai_worker_serves_answers_logs_json_and_stops_on_sigterm(r, redis_url, subscribe):
    port = free_port()
    tag = uuid.uuid4().hex[:8]
    proc = spawn_worker(redis_url, port, WORKER_ID=f"worker-proc-{tag}", AI_QUESTION_STREAM=f"td:questions:proc-{tag}")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await wait_healthy(client)
            body = (await client.get("/health")).json()
        assert body["workerId"] == f"worker-proc-{tag}" and body["redis"] is True

        secret = "my secret question text"
        q = question_fields(None, question=secret)
        sub = await subscribe(q["replyTo"])
        await r.xadd(f"td:questions:proc-{tag}", q)
        msgs = await sub.until_end()
        assert msgs[-1] == {"type": "done", "messageId": q["id"], "sessionId": q["sessionId"], "tokens": 20,
                            "usage": {"model": "simulated", "promptTokens": 4, "completionTokens": 20, "counted": True}}
        # One that fails (its deadline passed): at info, an answer is logged when it went wrong.
        late = question_fields(None, question=secret, deadline=int(time.time() * 1000) - 1000)
        late_sub = await subscribe(late["replyTo"])
        await r.xadd(f"td:questions:proc-{tag}", late)
        assert (await late_sub.until_end())[-1]["code"] == "deadline_exceeded"

        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.to_thread(proc.communicate, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # uvicorn re-raises SIGTERM after its graceful shutdown, so the exit is -SIGTERM (or 0).
    assert proc.returncode in (0, -signal.SIGTERM), err
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    msgs_logged = [line["msg"] for line in lines]
    assert "worker started" in msgs_logged and "worker stopped" in msgs_logged
    finished = [line for line in lines if line["msg"] == "question finished"]
    assert [(f["messageId"], f["sessionId"], f["outcome"]) for f in finished] == [(late["id"], late["sessionId"], "deadline_exceeded")]
    assert finished[0]["workerId"] == f"worker-proc-{tag}"
    assert secret not in out + err
    assert await r.exists(worker_key(f"worker-proc-{tag}")) == 0


def test_python_m_ai_worker_reports_every_bad_setting_at_once():
    env = {**os.environ, "WORKER_PORT": "http", "AI_CAPACITY_PER_SEC": "0", "LOG_LEVEL": "loud"}
    res = subprocess.run(
        [sys.executable, "-m", "ai_worker"], cwd=APP_DIR, env=env, capture_output=True, text=True, timeout=20
    )
    assert res.returncode == 2
    for name in ("WORKER_PORT", "AI_CAPACITY_PER_SEC", "LOG_LEVEL"):
        assert name in res.stderr
