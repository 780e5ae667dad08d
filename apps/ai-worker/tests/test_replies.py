"""Replies in batches (replies.py): one message per channel per window, in order, a cancel seen
before a buffered token goes out, a done never held back, and the previous protocol's gateways
still served. The flushes here are driven by a done (it never waits for the window) or by a window
long enough that only the done can end it, so no assertion depends on how fast the machine is."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from conftest import REPLY_BATCH, question_fields, wait_for

from ai_worker import protocol as p
from ai_worker import replies as rp
from ai_worker.config import load_settings
from ai_worker.replies import Cancelled, ReplyPublisher

LONG_WINDOW_S = 60.0  # nothing but a done (or the test's end) flushes within it


def channel() -> str:
    return f"td:replies:test-{uuid.uuid4().hex[:8]}"


def mid(name: str) -> str:
    """A message id of this test only: cancel keys live in the Redis the tests share."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


class Turns:
    def __init__(self) -> None:
        self.published = 0
        self.not_published = 0

    def token_published(self) -> None:
        self.published += 1

    def token_not_published(self) -> None:
        self.not_published += 1


async def test_the_replies_of_many_answers_for_one_instance_go_out_as_one_message_in_order(r, subscribe):
    ch = channel()
    sub = await subscribe(ch)
    turns = Turns()
    pub = ReplyPublisher(r, LONG_WINDOW_S, turns=turns)
    answers = [pub.answer(ch, mid(f"m{i}"), f"s{i}") for i in range(3)]
    for seq in range(5):
        for a in answers:
            await a.token(seq, f"w{seq} ")
    # The dones come in the same turn: one flush takes everything.
    await asyncio.gather(*(a.end(p.done_reply(a.message_id, a.session_id, 5)) for a in answers))

    got = [await sub.next() for _ in range(3 * 6)]
    assert len(sub.messages) == 1, [c for c, _ in sub.messages]
    wire_channel, body = sub.messages[0]
    assert wire_channel == p.batch_channel(ch)
    REPLY_BATCH.validate(body)
    for a in answers:
        mine = [m for m in got if m["messageId"] == a.message_id]
        assert [m.get("seq") for m in mine] == [0, 1, 2, 3, 4, None]
        assert mine[-1] == p.done_reply(a.message_id, a.session_id, 5)
        assert a.delivered == 5
    assert (turns.published, turns.not_published) == (15, 0)
    assert (pub.messages, pub.replies) == (1, 18)


async def test_tokens_go_out_after_the_window_without_a_done(r, subscribe):
    ch = channel()
    sub = await subscribe(ch)
    pub = ReplyPublisher(r, 0.01)
    a = pub.answer(ch, mid("m"), "s")
    await a.token(0, "one ")
    await a.token(1, "two ")
    assert [(m["seq"], m["text"]) for m in (await sub.next(), await sub.next())] == [(0, "one "), (1, "two ")]
    await wait_for(lambda: a.delivered == 2)


async def test_a_lone_reply_goes_singly_on_reply_to(r, subscribe):
    ch = channel()
    sub = await subscribe(ch)
    pub = ReplyPublisher(r, LONG_WINDOW_S)
    m = mid("m")
    a = pub.answer(ch, m, "s")
    await a.end(p.error_reply(m, "s", "deadline_exceeded", "late"))
    assert await sub.next() == p.error_reply(m, "s", "deadline_exceeded", "late")
    assert [c for c, _ in sub.messages] == [ch]


async def test_a_cancel_seen_at_the_flush_drops_the_answers_buffered_tokens_and_stops_it(r, subscribe):
    ch = channel()
    sub = await subscribe(ch)
    turns = Turns()
    pub = ReplyPublisher(r, LONG_WINDOW_S, turns=turns)
    keep, gone = mid("keep"), mid("gone")
    kept, cancelled = pub.answer(ch, keep, "s1"), pub.answer(ch, gone, "s2")
    for seq in range(3):
        await kept.token(seq, "k ")
        await cancelled.token(seq, "c ")
    await r.set(p.cancel_key(gone), "1", px=30_000)
    await kept.end(p.done_reply(keep, "s1", 3))

    assert cancelled.cancelled and cancelled.delivered == 0
    with pytest.raises(Cancelled):
        await cancelled.token(3, "c ")
    # Not one token of the cancelled answer went out after its cancel was set.
    await cancelled.end(p.error_reply(gone, "s2", "cancelled", "the question was cancelled"))
    got = [await sub.next() for _ in range(5)]
    assert [m["messageId"] for m in got] == [keep] * 4 + [gone]
    assert got[-1]["type"] == "error" and got[-1]["code"] == "cancelled"
    assert await sub.before_marker(r) == []
    assert (turns.published, turns.not_published) == (3, 3)


async def test_the_done_of_an_answer_cancelled_as_it_ends_goes_out_as_its_cancelled_error(r, subscribe):
    ch = channel()
    sub = await subscribe(ch)
    pub = ReplyPublisher(r, LONG_WINDOW_S)
    m = mid("m")
    a = pub.answer(ch, m, "s")
    await a.token(0, "x ")
    await r.set(p.cancel_key(m), "1", px=30_000)
    await a.end(p.done_reply(m, "s", 1))
    assert a.cancelled
    msg = await sub.next()
    assert msg["type"] == "error" and msg["code"] == "cancelled"
    assert await sub.before_marker(r) == []


async def test_a_gateway_of_the_previous_protocol_gets_the_same_replies_singly(r, subscribe):
    ch = channel()
    old = await subscribe(ch, batches=False)  # reads replyTo only
    pub = ReplyPublisher(r, LONG_WINDOW_S)
    ia, ib, ic = mid("a"), mid("b"), mid("c")
    a, b = pub.answer(ch, ia, "s1"), pub.answer(ch, ib, "s2")
    for seq in range(2):
        await a.token(seq, "x ")
        await b.token(seq, "y ")
    await asyncio.gather(a.end(p.done_reply(ia, "s1", 2)), b.end(p.done_reply(ib, "s2", 2)))
    got = [await old.next() for _ in range(6)]
    assert [(m["messageId"], m.get("seq")) for m in got] == [(ia, 0), (ib, 0), (ia, 1), (ib, 1), (ia, None), (ib, None)]
    assert {c for c, _ in old.messages} == {ch}
    # That channel gets single messages for a while, without trying a batch first.
    c = pub.answer(ch, ic, "s3")
    await c.token(0, "z ")
    await c.end(p.done_reply(ic, "s3", 1))
    assert [m["messageId"] for m in (await old.next(), await old.next())] == [ic, ic]
    assert await r.pubsub_numsub(p.batch_channel(ch)) == [(p.batch_channel(ch), 0)]


async def test_a_failed_publish_fails_the_answers_in_it_at_their_next_reply(redis_url):
    dead = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1.0)
    turns = Turns()
    pub = ReplyPublisher(dead, LONG_WINDOW_S, bound_s=5.0, turns=turns)
    a = pub.answer(channel(), "m", "s")
    await a.token(0, "x ")
    with pytest.raises(Exception) as ei:
        await a.end(p.done_reply("m", "s", 1))
    assert not isinstance(ei.value, Cancelled)
    with pytest.raises(type(ei.value)):
        await a.token(1, "y ")
    assert a.delivered == 0 and turns.not_published == 1
    await dead.aclose()


async def test_a_backed_up_channel_makes_the_token_producer_wait_for_the_flush(r, subscribe, monkeypatch):
    monkeypatch.setattr(rp, "PENDING_MAX", 4)
    ch = channel()
    sub = await subscribe(ch)
    pub = ReplyPublisher(r, LONG_WINDOW_S)
    a = pub.answer(ch, mid("m"), "s")
    for seq in range(4):
        await a.token(seq, "x ")
    assert a.delivered == 0
    # The fifth waits for its own flush: when it returns, all five are out.
    await a.token(4, "x ")
    assert a.delivered == 5
    assert [m["seq"] for m in [await sub.next() for _ in range(5)]] == [0, 1, 2, 3, 4]


async def test_the_worker_batches_the_answers_bound_for_one_gateway(r, make_settings, start_worker, subscribe):
    # 20 answers for the same gateway at once, 8 tokens each: their tokens share messages.
    s = make_settings(AI_TOKENS_PER_SEC="100", AI_ANSWER_TOKENS="8", WORKER_REPLY_BATCH_MS="20")
    w = await start_worker(s)
    reply_to = channel()
    sub = await subscribe(reply_to)
    qs = [question_fields(s, replyTo=reply_to) for _ in range(20)]
    pipe = r.pipeline(transaction=True)
    for q in qs:
        pipe.xadd(s.question_stream, q)
    await pipe.execute()
    got = [await sub.next() for _ in range(20 * 9)]
    for q in qs:
        mine = [m for m in got if m["messageId"] == q["id"]]
        assert [m.get("seq") for m in mine] == list(range(8)) + [None]
        assert mine[-1]["type"] == "done" and mine[-1]["tokens"] == 8
    batches = [b for c, b in sub.messages if c == p.batch_channel(reply_to)]
    assert batches, "no batch message"
    assert len(sub.messages) < len(got)
    await wait_for(lambda: w.finished == 20)


def test_the_batch_window_is_a_setting():
    assert load_settings({}).reply_batch_ms == 10
