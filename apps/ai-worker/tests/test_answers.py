"""Answers over a real Redis: tokens, done, deadline, cancel, malformed entries."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from redis.exceptions import ResponseError

from conftest import QUESTION, ask, pending_count, question_fields, validator_for, wait_for

from ai_worker.backend import simulated_answer
from ai_worker.protocol import cancel_key


async def test_full_answer_tokens_then_done_and_acked(r, make_settings, start_worker, subscribe):
    s = make_settings(AI_ANSWER_TOKENS="7")
    w = await start_worker(s)
    q = question_fields(s, question="what does the dam hold?")
    replies = await subscribe(q["replyTo"])
    await ask(r, s, q)

    msgs = await replies.until_end()
    tokens, last = msgs[:-1], msgs[-1]
    assert [m["type"] for m in tokens] == ["token"] * 7
    assert [m["seq"] for m in tokens] == list(range(7))
    assert all(m["messageId"] == q["id"] and m["sessionId"] == q["sessionId"] for m in msgs)
    # Usage is counted by the simulated backend: the question's 5 words and "?", one per token.
    usage = {"model": "simulated", "promptTokens": 6, "completionTokens": 7, "counted": True}
    assert last == {"type": "done", "messageId": q["id"], "sessionId": q["sessionId"], "tokens": 7, "usage": usage}
    # Deterministic text: the simulated LLM's words for this question, each with a trailing space.
    assert [m["text"] for m in tokens] == simulated_answer(q["question"], 7)
    assert all(m["text"].endswith(" ") and m["text"].strip() for m in tokens)

    await wait_for(lambda: w.finished == 1)
    assert await pending_count(r, s) == 0
    assert w.completed == 1
    assert await replies.before_marker(r) == []


async def test_same_question_same_words_other_question_other_words():
    a1 = simulated_answer("why is the sky blue?", 20)
    assert a1 == simulated_answer("why is the sky blue?", 20)
    assert a1 != simulated_answer("why is the sea blue?", 20)


async def test_expired_deadline_is_not_started(r, make_settings, start_worker, subscribe):
    s = make_settings()
    w = await start_worker(s)
    q = question_fields(s, deadline=int(time.time() * 1000) - 1000)
    replies = await subscribe(q["replyTo"])
    await ask(r, s, q)

    msgs = await replies.until_end()
    assert len(msgs) == 1, msgs
    assert msgs[0]["type"] == "error" and msgs[0]["code"] == "deadline_exceeded"
    assert msgs[0]["messageId"] == q["id"]
    await wait_for(lambda: w.finished == 1)
    assert await pending_count(r, s) == 0
    assert w.completed == 0


async def test_deadline_passing_during_the_answer_stops_it(r, make_settings, start_worker, subscribe):
    # 40 tokens at 20/s take 2 s; the deadline allows about 0.4 s.
    s = make_settings(AI_TOKENS_PER_SEC="20", AI_ANSWER_TOKENS="40")
    w = await start_worker(s)
    q = question_fields(s, deadline=int(time.time() * 1000) + 400)
    replies = await subscribe(q["replyTo"])
    await ask(r, s, q)

    msgs = await replies.until_end()
    tokens = [m for m in msgs if m["type"] == "token"]
    # Cut short: the whole answer would be 40 tokens.
    assert msgs[-1]["type"] == "error" and msgs[-1]["code"] == "deadline_exceeded"
    assert 1 <= len(tokens) < 40
    assert [m["seq"] for m in tokens] == list(range(len(tokens)))
    await wait_for(lambda: w.finished == 1)
    assert await pending_count(r, s) == 0


async def test_cancel_key_stops_the_answer(r, make_settings, start_worker, subscribe):
    s = make_settings(AI_TOKENS_PER_SEC="20", AI_ANSWER_TOKENS="40")
    w = await start_worker(s)
    q = question_fields(s)
    replies = await subscribe(q["replyTo"])
    await ask(r, s, q)

    for expected_seq in range(3):
        m = await replies.next()
        assert m["type"] == "token" and m["seq"] == expected_seq
    await r.set(cancel_key(q["id"]), "1", px=30_000)

    msgs = (await replies.until_end())[3:]
    assert msgs[-1]["type"] == "error" and msgs[-1]["code"] == "cancelled", msgs
    assert len(msgs) <= 2, f"at most one more token after the cancel: {msgs}"
    await wait_for(lambda: w.finished == 1)
    assert await replies.before_marker(r) == []
    assert await pending_count(r, s) == 0
    assert w.completed == 0


async def test_cancelled_before_start_gets_no_tokens(r, make_settings, start_worker, subscribe):
    s = make_settings()
    await start_worker(s)
    q = question_fields(s)
    await r.set(cancel_key(q["id"]), "1", px=30_000)
    replies = await subscribe(q["replyTo"])
    await ask(r, s, q)
    msgs = await replies.until_end()
    assert [m["type"] for m in msgs] == ["error"] and msgs[0]["code"] == "cancelled"


async def test_malformed_entries_answered_bad_question_and_acked(r, make_settings, start_worker, subscribe):
    s = make_settings()
    w = await start_worker(s)

    no_text = question_fields(s, question=None)  # missing field
    bad_deadline = question_fields(s, deadline="soon")
    anonymous = {"question": "who am I?"}  # nobody to answer: logged and dropped
    subs = [await subscribe(no_text["replyTo"]), await subscribe(bad_deadline["replyTo"])]
    for f in (no_text, bad_deadline, anonymous):
        assert not QUESTION.is_valid(f)
        await ask(r, s, f, validate=False)

    for sub, f in zip(subs, (no_text, bad_deadline)):
        msgs = await sub.until_end()
        assert len(msgs) == 1
        assert msgs[0]["type"] == "error" and msgs[0]["code"] == "bad_question"
        assert msgs[0]["messageId"] == f["id"] and msgs[0]["sessionId"] == f["sessionId"]

    await wait_for(lambda: w.finished == 3)
    assert await pending_count(r, s) == 0

    # The worker is still serving after the bad entries.
    good = question_fields(s)
    sub = await subscribe(good["replyTo"])
    await ask(r, s, good)
    assert (await sub.until_end())[-1]["type"] == "done"


async def test_many_concurrent_answers(r, make_settings, start_worker, subscribe):
    # 30 answers of 0.5 s each, asked at once, run at the same time: all 30 are in flight together
    # (one after another, there would never be more than one).
    s = make_settings(AI_TOKENS_PER_SEC="20", AI_ANSWER_TOKENS="10")
    w = await start_worker(s)
    qs = [question_fields(s) for _ in range(30)]
    subs = [await subscribe(q["replyTo"]) for q in qs]
    pipe = r.pipeline(transaction=True)
    for q in qs:
        QUESTION.validate(q)
        pipe.xadd(s.question_stream, q)
    await pipe.execute()
    await wait_for(lambda: w.in_flight == 30, interval=0.005, label="all 30 answers in flight at once")
    results = await asyncio.gather(*(sub.until_end() for sub in subs))
    assert all({**res[-1], "usage": None} == {"type": "done", "messageId": q["id"], "sessionId": q["sessionId"], "tokens": 10, "usage": None}
               for res, q in zip(results, qs))
    await wait_for(lambda: w.finished == 30)
    assert await pending_count(r, s) == 0


async def test_a_burst_beyond_the_connection_pool_is_answered_not_failed(r, make_settings, start_worker, subscribe):
    """Regression: 200 answers at once exhausted redis-py's default pool (MaxConnectionsError)
    and were lost without a reply. Now they wait for a connection and all finish."""
    # 250 answers at once against 100 answers/s: most wait for a capacity slot, all at the same time.
    s = make_settings(AI_TTFT_MS="50", AI_TOKENS_PER_SEC="100", AI_ANSWER_TOKENS="5", AI_CAPACITY_PER_SEC="100")
    w = await start_worker(s)
    channel = "td:replies:burst"
    sub = await subscribe(channel)
    qs = [question_fields(s, replyTo=channel) for _ in range(250)]
    for q in qs:  # sequential: the burst is on the worker side (it reads up to 256 at once)
        await ask(r, s, q)
    ends: dict[str, str] = {}

    async def all_ended() -> bool:
        m = await sub.next()
        if m["type"] in ("done", "error"):
            ends[m["messageId"]] = m["type"]
        return len(ends) == 250

    await wait_for(all_ended, interval=0, label="250 answers ended")
    assert set(ends.values()) == {"done"}
    await wait_for(lambda: w.finished == 250)
    assert await pending_count(r, s) == 0


async def test_a_restarted_worker_answers_the_questions_it_held_when_it_crashed(r, make_settings, start_worker, subscribe):
    """A question survives a worker restart: the new process reads its consumer's pending entries first."""
    s = make_settings(WORKER_ID="w-crashed", AI_TOKENS_PER_SEC="200", AI_ANSWER_TOKENS="4")
    with contextlib.suppress(Exception):
        await r.xgroup_create(s.question_stream, s.consumer_group, id="0", mkstream=True)
    q = question_fields(s)
    sub = await subscribe(q["replyTo"])
    await ask(r, s, q)
    # The "previous process" took it and died before acknowledging it.
    taken = await r.xreadgroup(s.consumer_group, "w-crashed", {s.question_stream: ">"}, count=10)
    assert len(taken[0][1]) == 1
    assert await pending_count(r, s) == 1
    await start_worker(s)
    msgs = await sub.until_end()
    assert {**msgs[-1], "usage": None} == {"type": "done", "messageId": q["id"], "sessionId": q["sessionId"], "tokens": 4, "usage": None}
    assert [m["seq"] for m in msgs if m["type"] == "token"] == [0, 1, 2, 3]

    async def acked() -> bool:
        return await pending_count(r, s) == 0

    await wait_for(acked, label="the re-answered question acknowledged")


async def _dead_letters_for(r, message_ids: set[str]) -> list[dict[str, str]]:
    entries = await r.xrange("td:dlq", "-", "+")
    return [f for _id, f in entries if f.get("id") in message_ids]


async def test_unanswered_questions_land_in_the_dlq_with_their_reason(r, make_settings, start_worker, subscribe):
    """Expired and failed answers are dead-lettered with the whole question; cancelled ones are not."""
    s = make_settings(AI_FAULT_ERROR_RATIO="1", AI_TOKENS_PER_SEC="200", AI_ANSWER_TOKENS="3")
    w = await start_worker(s)
    expired = question_fields(s, deadline=int(time.time() * 1000) - 1000)
    failing = question_fields(s)
    subs = [await subscribe(expired["replyTo"]), await subscribe(failing["replyTo"])]
    await ask(r, s, expired)
    await ask(r, s, failing)
    for sub in subs:
        await sub.until_end()
    await wait_for(lambda: w.finished == 2)
    letters = {f["id"]: f for f in await _dead_letters_for(r, {expired["id"], failing["id"]})}
    assert letters[expired["id"]]["reason"] == "deadline_exceeded"
    assert letters[failing["id"]]["reason"] == "worker_error"
    assert letters[failing["id"]]["tokensSent"] == "1"
    assert letters[failing["id"]]["question"] == failing["question"]
    for f in letters.values():
        assert not list(validator_for("DeadLetter").iter_errors(f)), f
        assert f["by"] == w.worker_id


async def test_a_cancelled_question_is_not_dead_lettered(r, make_settings, start_worker, subscribe):
    s2 = make_settings(AI_TOKENS_PER_SEC="20", AI_ANSWER_TOKENS="50")
    await start_worker(s2)
    q = question_fields(s2)
    sub = await subscribe(q["replyTo"])
    await ask(r, s2, q)
    await sub.next()
    await r.set(cancel_key(q["id"]), "1", px=10_000)
    msgs = await sub.until_end()
    assert msgs[-1]["type"] == "error" and msgs[-1]["code"] == "cancelled"
    assert await _dead_letters_for(r, {q["id"]}) == []


ENQUEUE_ALLOW_OOM = """#!lua flags=allow-oom
return redis.call('XADD', KEYS[1], '*', unpack(ARGV))
"""


async def test_a_question_is_dead_lettered_while_redis_is_at_its_memory_limit(r, make_settings, start_worker, subscribe):
    """maxmemory with noeviction refuses every write but the dead letter's (allow-oom): none is lost."""
    s = make_settings()
    w = await start_worker(s)
    expired = question_fields(s, deadline=int(time.time() * 1000) - 1000)
    sub = await subscribe(expired["replyTo"])
    limit = (await r.config_get("maxmemory"))["maxmemory"]
    policy = (await r.config_get("maxmemory-policy"))["maxmemory-policy"]
    await r.config_set("maxmemory-policy", "noeviction")
    await r.config_set("maxmemory", "1")
    try:
        with pytest.raises(ResponseError, match="maxmemory"):
            await r.set("td:test:oom-probe", "x")
        # Queued as the gateway's last enqueue before Redis refused writes (here through allow-oom,
        # so the limit is already on when the worker reads it).
        QUESTION.validate(expired)
        await r.eval(ENQUEUE_ALLOW_OOM, 1, s.question_stream, *[x for kv in expired.items() for x in kv])
        assert (await sub.until_end())[-1]["code"] == "deadline_exceeded"
        await wait_for(lambda: w.finished == 1)
        letters = await _dead_letters_for(r, {expired["id"]})
        assert [f["reason"] for f in letters] == ["deadline_exceeded"]
    finally:
        await r.config_set("maxmemory", limit)
        await r.config_set("maxmemory-policy", policy)
