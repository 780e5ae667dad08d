"""Fault injection: settings, /admin/faults, and the faults' effect on real answers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from typing import Any, AsyncIterator

import httpx
import pytest

from conftest import REPLY, ask, free_port, pending_count, question_fields, spawn_worker, wait_for, wait_healthy

from ai_worker.app import create_app
from ai_worker.config import ConfigError, load_settings
from ai_worker.faults import Faults, FaultsError, parse_patch
from ai_worker.protocol import cancel_key, worker_key

TOKEN = "admin-" + uuid.uuid4().hex
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NO_FAULTS = {"ttftMs": None, "tokensPerSec": None, "errorRatio": 0.0, "stall": False, "crashAfterTokens": None}


@contextlib.asynccontextmanager
async def running_app(settings) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """The real app with its worker running (lifespan), called in-process over ASGI."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
            yield app, client


async def put(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    res = await client.put("/admin/faults", json=body, headers=AUTH)
    assert res.status_code == 200, res.text
    return res.json()


# ---- settings and the Faults object ------------------------------------------------


def test_fault_settings_from_env():
    s = load_settings({})
    assert (s.fault_ttft_ms, s.fault_tokens_per_sec, s.fault_crash_after_tokens, s.fault_seed) == (None,) * 4
    assert (s.fault_error_ratio, s.fault_stall, s.admin_token) == (0.0, False, None)
    assert Faults.from_settings(s).snapshot() == NO_FAULTS

    s = load_settings({
        "AI_FAULT_TTFT_MS": "750", "AI_FAULT_TOKENS_PER_SEC": "2.5", "AI_FAULT_ERROR_RATIO": "0.25",
        "AI_FAULT_STALL": "TRUE", "AI_FAULT_CRASH_AFTER_TOKENS": "0", "AI_FAULT_SEED": "42",
        "WORKER_ADMIN_TOKEN": "s3cret-token",
    })
    f = Faults.from_settings(s)
    assert f.snapshot() == {"ttftMs": 750, "tokensPerSec": 2.5, "errorRatio": 0.25, "stall": True, "crashAfterTokens": 0}
    assert f.seed == 42 and s.admin_token == "s3cret-token"
    assert "s3cret-token" not in repr(s)
    assert load_settings({"AI_FAULT_STALL": "false"}).fault_stall is False


def test_every_bad_fault_setting_reported_together_without_the_token():
    env = {
        "AI_FAULT_TTFT_MS": "-5", "AI_FAULT_TOKENS_PER_SEC": "0", "AI_FAULT_ERROR_RATIO": "1.5",
        "AI_FAULT_STALL": "sometimes", "AI_FAULT_CRASH_AFTER_TOKENS": "three", "AI_FAULT_SEED": "x",
        "WORKER_ADMIN_TOKEN": "has a space", "WORKER_PORT": "http",
    }
    with pytest.raises(ConfigError) as ei:
        load_settings(env)
    assert len(ei.value.problems) == len(env), ei.value.problems
    for name in env:
        assert name in str(ei.value)
    assert "has a space" not in str(ei.value)


def test_parse_patch_checks_everything_and_null_clears():
    assert parse_patch({}) == {}
    assert parse_patch({"ttftMs": 0, "tokensPerSec": 5, "errorRatio": 1, "stall": True, "crashAfterTokens": 3}) == {
        "ttft_ms": 0, "tokens_per_sec": 5.0, "error_ratio": 1.0, "stall": True, "crash_after_tokens": 3,
    }
    assert parse_patch(dict.fromkeys(NO_FAULTS)) == {
        "ttft_ms": None, "tokens_per_sec": None, "error_ratio": 0.0, "stall": False, "crash_after_tokens": None,
    }
    with pytest.raises(FaultsError) as ei:
        parse_patch({"ttftMs": 1.5, "tokensPerSec": 0, "errorRatio": 2, "stall": "yes", "crashAfterTokens": -1, "speed": 1})
    assert len(ei.value.problems) == 6, ei.value.problems
    for word in ("ttftMs", "tokensPerSec", "errorRatio", "stall", "crashAfterTokens", "unknown fields: speed"):
        assert word in str(ei.value)
    for bad in ([], "stall", None, 3):
        with pytest.raises(FaultsError):
            parse_patch(bad)
    with pytest.raises(FaultsError):
        parse_patch({"ttftMs": True})  # a bool is not a number here
    with pytest.raises(FaultsError):
        parse_patch({"tokensPerSec": 10**400})


def test_seeded_error_draws_are_deterministic():
    a, b = Faults(error_ratio=0.3, seed=7), Faults(error_ratio=0.3, seed=7)
    draws = [a.roll_error() for _ in range(200)]
    assert draws == [b.roll_error() for _ in range(200)]
    assert 30 < sum(draws) < 90
    assert not any(Faults(error_ratio=0.0, seed=1).roll_error() for _ in range(100))
    assert all(Faults(error_ratio=1.0, seed=1).roll_error() for _ in range(100))


async def test_crash_counts_tokens_from_when_it_is_set_and_never_lets_more_out():
    exits: list[int] = []
    f = Faults(crash_after_tokens=2, exit=exits.append)
    await f.before_token(); f.token_published()
    await f.before_token()
    # Both allowed tokens are handed out: a third waits until the last one is published
    # (publishes of concurrent answers overlap), then the process crashes.
    third = asyncio.create_task(f.before_token())
    await asyncio.sleep(0.02)
    assert not third.done() and exits == []
    f.token_published()
    assert exits == [137]
    await asyncio.wait_for(third, 1)
    assert exits == [137, 137]

    f.apply({"stall": False})  # another field: the count goes on
    assert f.tokens_since_crash_set == 2
    f.apply({"crash_after_tokens": 1})  # set again: counted from now
    assert f.tokens_since_crash_set == 0
    await f.before_token(); f.token_not_published()  # a failed publish gives its turn back
    await f.before_token(); f.token_published()
    assert exits == [137, 137, 137]
    f.apply({"crash_after_tokens": 0})  # 0: before the next token
    await f.before_token()
    assert exits == [137, 137, 137, 137]
    f.reset()
    await f.before_token(); f.token_published()
    assert len(exits) == 4 and f.snapshot() == NO_FAULTS


# ---- /admin/faults -----------------------------------------------------------------------


async def test_admin_endpoints_absent_without_a_token(make_settings):
    async with running_app(make_settings()) as (_, client):
        for method in ("GET", "PUT", "DELETE"):
            res = await client.request(method, "/admin/faults", headers=AUTH, json={"stall": True})
            assert res.status_code == 404, (method, res.text)
        health = (await client.get("/health")).json()
    assert health["faults"] == NO_FAULTS


async def test_admin_auth_401_403_200_and_logs_without_the_token(make_settings, caplog):
    caplog.set_level(logging.INFO)
    async with running_app(make_settings(WORKER_ADMIN_TOKEN=TOKEN)) as (_, client):
        for method in ("GET", "PUT", "DELETE"):
            for headers in ({}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer "}, {"Authorization": TOKEN}):
                res = await client.request(method, "/admin/faults", headers=headers, json={"stall": True})
                assert res.status_code == 401, (method, headers, res.text)
                assert res.headers["www-authenticate"].startswith("Bearer")
            for wrong in (TOKEN[:-1], TOKEN + "x", "nope", "é"):
                res = await client.request(
                    method, "/admin/faults", headers={"Authorization": f"Bearer {wrong}".encode()}, json={"stall": True}
                )
                assert res.status_code == 403, (method, wrong, res.text)
        assert (await client.get("/health")).json()["faults"]["stall"] is False  # nothing was changed

        res = await client.get("/admin/faults", headers={"Authorization": f"bearer  {TOKEN}"})
        assert res.status_code == 200 and res.json() == NO_FAULTS
        assert await put(client, stall=True, errorRatio=0.5) == {**NO_FAULTS, "stall": True, "errorRatio": 0.5}
        res = await client.delete("/admin/faults", headers=AUTH)
        assert res.status_code == 200 and res.json() == NO_FAULTS

    changes = [r for r in caplog.records if r.getMessage() == "faults changed"]
    assert [(r.action, r.fields) for r in changes] == [("put", ["stall", "errorRatio"]), ("delete", [])]
    assert changes[0].faults == {**NO_FAULTS, "stall": True, "errorRatio": 0.5}
    assert sum(r.getMessage() == "admin request refused" for r in caplog.records) == 3 * 8
    assert all(TOKEN not in json.dumps(r.__dict__, default=str) for r in caplog.records)


async def test_admin_put_rejects_bad_bodies_with_400_and_changes_nothing(make_settings):
    async with running_app(make_settings(WORKER_ADMIN_TOKEN=TOKEN)) as (_, client):
        await put(client, ttftMs=300)
        cases = [
            (b"", "not valid JSON"),
            (b"{stall: true}", "not valid JSON"),
            (b"[1]", "JSON object"),
            (b'{"stall": true, "speed": 3}', "unknown fields: speed"),
            (b'{"errorRatio": 1.01}', "errorRatio=1.01: must be between 0 and 1"),
            (b'{"errorRatio": NaN}', "errorRatio"),
            (b'{"ttftMs": "fast"}', "ttftMs"),
            (b'{"tokensPerSec": -1}', "tokensPerSec"),
            (b'{"stall": 1}', "stall"),
            (b'{"crashAfterTokens": 2.5, "stall": true}', "crashAfterTokens"),
        ]
        for raw, text in cases:
            res = await client.put("/admin/faults", content=raw, headers={**AUTH, "Content-Type": "application/json"})
            assert res.status_code == 400, (raw, res.text)
            body = res.json()
            assert body["error"] == "bad_request" and text in body["message"], (raw, body)
        # Nothing applied, not even the valid part of a bad body.
        res = await client.get("/admin/faults", headers=AUTH)
        assert res.json() == {**NO_FAULTS, "ttftMs": 300}

        # Any subset replaces just those fields; null clears one.
        assert await put(client, tokensPerSec=12.5, crashAfterTokens=1000) == {
            **NO_FAULTS, "ttftMs": 300, "tokensPerSec": 12.5, "crashAfterTokens": 1000,
        }
        assert await put(client, ttftMs=None, crashAfterTokens=None) == {**NO_FAULTS, "tokensPerSec": 12.5}
        assert (await client.get("/health")).json()["faults"] == {**NO_FAULTS, "tokensPerSec": 12.5}


# ---- the faults on real answers --------------------------------------------------------


async def test_error_ratio_fails_answers_after_one_token_acked_then_switched_off(r, make_settings, subscribe):
    s = make_settings(WORKER_ADMIN_TOKEN=TOKEN)
    async with running_app(s) as (app, client):
        w = app.state.worker
        await put(client, errorRatio=1.0)
        qs = [question_fields(s) for _ in range(3)]
        subs = [await subscribe(q["replyTo"]) for q in qs]
        for q in qs:
            await ask(r, s, q)
        for q, sub in zip(qs, subs):
            msgs = await sub.until_end()
            assert [m["type"] for m in msgs] == ["token", "error"], msgs
            assert msgs[0]["seq"] == 0
            assert msgs[1]["code"] == "worker_error" and msgs[1]["messageId"] == q["id"]
        await wait_for(lambda: w.finished == 3)
        assert await pending_count(r, s) == 0
        assert w.completed == 0

        await put(client, errorRatio=0.0)
        q = question_fields(s)
        sub = await subscribe(q["replyTo"])
        await ask(r, s, q)
        assert {**(await sub.until_end())[-1], "usage": None} == {"type": "done", "messageId": q["id"], "sessionId": q["sessionId"], "tokens": 5, "usage": None}
        await wait_for(lambda: w.finished == 4)
        assert await pending_count(r, s) == 0


async def test_seeded_error_ratio_from_env_fails_the_predicted_share(r, make_settings, start_worker, subscribe):
    s = make_settings(AI_FAULT_ERROR_RATIO="0.5", AI_FAULT_SEED="1234", AI_ANSWER_TOKENS="3")
    w = await start_worker(s)
    rng = random.Random(1234)  # one draw per answer, whichever order they start in
    expected_failures = sum(rng.random() < 0.5 for _ in range(20))
    qs = [question_fields(s) for _ in range(20)]
    subs = [await subscribe(q["replyTo"]) for q in qs]
    for q in qs:
        await ask(r, s, q)
    results = await asyncio.gather(*(sub.until_end() for sub in subs))
    failed = [res for res in results if res[-1]["type"] == "error"]
    assert len(failed) == expected_failures and 0 < expected_failures < 20
    assert all([m["type"] for m in res] == ["token", "error"] and res[-1]["code"] == "worker_error" for res in failed)
    assert all(res[-1]["type"] == "done" and res[-1]["tokens"] == 3 for res in results if res not in failed)
    await wait_for(lambda: w.finished == 20)
    assert await pending_count(r, s) == 0


async def test_stall_holds_answers_in_progress_and_new_ones_then_they_complete(r, make_settings, subscribe):
    # 10 tokens/s: the stall request has a token's gap (100 ms, ten reply windows) to land in
    # before a second token is produced.
    s = make_settings(WORKER_ADMIN_TOKEN=TOKEN, AI_TOKENS_PER_SEC="10", AI_ANSWER_TOKENS="10")
    async with running_app(s) as (app, client):
        q1, q2 = question_fields(s), question_fields(s)
        sub1, sub2 = await subscribe(q1["replyTo"]), await subscribe(q2["replyTo"])
        await ask(r, s, q1)
        assert [(await sub1.next())["seq"] for _ in range(2)] == [0, 1]

        assert (await put(client, stall=True))["stall"] is True
        await ask(r, s, q2)  # read and started during the stall: produces nothing either
        slipped = await sub1.quiet(0.05)  # at most a token already past the gate
        assert len(slipped) <= 1 and all(m["type"] == "token" and REPLY.is_valid(m) for m in slipped)
        assert await sub1.quiet(0.6) == []
        assert await sub2.quiet(0.0) == []
        health = (await client.get("/health")).json()
        assert health["inFlight"] == 2 and health["faults"]["stall"] is True

        t0 = time.monotonic()
        await put(client, stall=False)
        all1, all2 = await asyncio.gather(sub1.until_end(), sub2.until_end())
        elapsed = time.monotonic() - t0
        all1 = all1[:2] + slipped + all1[2:]  # quiet() does not keep what it saw
        for q, msgs in ((q1, all1), (q2, all2)):
            tokens = [m for m in msgs if m["type"] == "token"]
            assert [m["seq"] for m in tokens] == list(range(10)), msgs
            assert {**msgs[-1], "usage": None} == {"type": "done", "messageId": q["id"], "sessionId": q["sessionId"], "tokens": 10, "usage": None}
        # Paced again after the stall, not a burst: q2's 10 tokens at 10/s take ~0.9 s.
        assert elapsed > 0.6
        await wait_for(lambda: app.state.worker.finished == 2)
        assert await pending_count(r, s) == 0


async def test_stall_still_honours_deadline_and_cancel(r, make_settings, subscribe):
    s = make_settings(WORKER_ADMIN_TOKEN=TOKEN, AI_TOKENS_PER_SEC="20", AI_ANSWER_TOKENS="40")
    async with running_app(s) as (app, client):
        now = int(time.time() * 1000)
        in_progress = question_fields(s, deadline=now + 900)
        new = question_fields(s, deadline=now + 600)
        cancelled = question_fields(s)
        subs = {q["id"]: await subscribe(q["replyTo"]) for q in (in_progress, new, cancelled)}
        await ask(r, s, in_progress)
        assert (await subs[in_progress["id"]].next())["type"] == "token"
        await put(client, stall=True)
        await ask(r, s, new)
        entry = await ask(r, s, cancelled)

        async def taken() -> bool:  # read by the worker during the stall (delivered, not acked)
            return len(await r.xpending_range(s.question_stream, s.consumer_group, min=entry, max=entry, count=1)) == 1

        await wait_for(taken, label="the question to cancel taken by the worker")
        await r.set(cancel_key(cancelled["id"]), "1", px=30_000)

        msgs = await subs[cancelled["id"]].until_end()
        # Seen by the stall's cancel polling: unseen, it would have run into its deadline (10 s).
        assert [m["type"] for m in msgs] == ["error"] and msgs[0]["code"] == "cancelled"

        msgs = await subs[new["id"]].until_end()
        assert [m["type"] for m in msgs] == ["error"] and msgs[0]["code"] == "deadline_exceeded"
        msgs = await subs[in_progress["id"]].until_end()
        assert msgs[-1]["type"] == "error" and msgs[-1]["code"] == "deadline_exceeded"
        assert all(m["type"] == "token" for m in msgs[:-1]) and len(msgs) <= 4

        await wait_for(lambda: app.state.worker.finished == 3)
        assert await pending_count(r, s) == 0
        assert (await client.get("/health")).json()["faults"]["stall"] is True


async def test_speed_overrides_change_ttft_and_tokens_per_sec_even_mid_answer(r, make_settings, subscribe):
    s = make_settings(WORKER_ADMIN_TOKEN=TOKEN, AI_ANSWER_TOKENS="10")  # TTFT 10 ms, 1000 tokens/s

    async def timed(**body: Any) -> tuple[float, float]:
        """(TTFT, first-to-last token) of one answer, with the given faults."""
        await client.delete("/admin/faults", headers=AUTH)
        if body:
            await put(client, **body)
        q = question_fields(s)
        sub = await subscribe(q["replyTo"])
        t0 = time.monotonic()
        await ask(r, s, q)
        msgs = await sub.until_end()
        assert msgs[-1]["type"] == "done" and msgs[-1]["tokens"] == 10
        times = [t for t, m in sub.items if m["type"] == "token"]
        return times[0] - t0, times[-1] - times[0]

    async with running_app(s) as (_, client):
        ttft, rest = await timed()
        assert ttft < 0.3 and rest < 0.3
        ttft, rest = await timed(ttftMs=500)
        assert 0.45 <= ttft < 1.5 and rest < 0.3
        ttft, rest = await timed(tokensPerSec=40)  # 9 gaps of 25 ms
        assert ttft < 0.3 and 0.2 <= rest < 1.0

        # Read before every token: an answer in progress speeds up.
        await put(client, tokensPerSec=5)  # 200 ms a token: 1.8 s for the answer
        q = question_fields(s)
        sub = await subscribe(q["replyTo"])
        await ask(r, s, q)
        assert [(await sub.next())["seq"] for _ in range(2)] == [0, 1]
        await put(client, tokensPerSec=1000)
        t0 = time.monotonic()
        msgs = await sub.until_end()
        assert msgs[-1]["type"] == "done" and msgs[-1]["tokens"] == 10
        assert time.monotonic() - t0 < 0.5  # at most the one gap already being waited


async def test_crash_after_tokens_exits_137_leaving_entries_pending_and_heartbeat_to_expire(r, redis_url, subscribe):
    port = free_port()
    tag = uuid.uuid4().hex[:8]
    wid, stream = f"worker-crash-{tag}", f"td:questions:crash-{tag}"
    proc = spawn_worker(
        redis_url, port, WORKER_ID=wid, AI_QUESTION_STREAM=stream, WORKER_HEARTBEAT_MS="200",
        WORKER_HEARTBEAT_TTL_MS="1500", WORKER_ADMIN_TOKEN=TOKEN, AI_FAULT_CRASH_AFTER_TOKENS="1000",
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await wait_healthy(client)
            res = await client.get("/admin/faults", headers=AUTH)
            assert res.status_code == 200 and res.json()["crashAfterTokens"] == 1000  # from the environment

            # 20 tokens published and counted; far from 1000.
            q = question_fields(None)
            sub = await subscribe(q["replyTo"])
            await r.xadd(stream, q)
            assert (await sub.until_end())[-1]["type"] == "done"

            # Set again at run time: counted from now. Slow tokens, so the 3 answers overlap.
            res = await client.put("/admin/faults", headers=AUTH, json={"crashAfterTokens": 5, "tokensPerSec": 20})
            assert res.status_code == 200 and res.json()["crashAfterTokens"] == 5
        qs = [question_fields(None) for _ in range(3)]
        subs = [await subscribe(q["replyTo"]) for q in qs]
        for q in qs:
            await r.xadd(stream, q)
        out, err = await asyncio.to_thread(proc.communicate, timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 137, err

    # Exactly 5 tokens went out after the setting, and no done or error: it just died.
    after = [m for sub in subs for m in await sub.quiet(0.1)]
    assert len(after) == 5 and all(m["type"] == "token" for m in after), after
    for m in after:  # quiet() does not validate; the rest went through Replies.next()
        REPLY.validate(m)
    # The 3 un-ACKed entries stay pending for a sweeper (the first answer was ACKed).
    info = await r.xpending(stream, "workers")
    assert info["pending"] == 3 and {c["name"]: c["pending"] for c in info["consumers"]} == {wid: 3}
    # No clean stop: the heartbeat key was not deleted; it goes by its TTL.
    assert await r.exists(worker_key(wid)) == 1 and 0 < await r.pttl(worker_key(wid)) <= 1500
    async def heartbeat_gone() -> bool:
        return await r.exists(worker_key(wid)) == 0

    await wait_for(heartbeat_gone)

    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    logged = [line["msg"] for line in lines]
    assert "fault injection: crashing" in logged and "worker stopped" not in logged
    assert any(line["msg"] == "faults changed" and line["faults"]["crashAfterTokens"] == 5 for line in lines)
    assert TOKEN not in out + err
