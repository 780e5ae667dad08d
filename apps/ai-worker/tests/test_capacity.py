"""Global AI capacity, shared by all workers through Redis."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from conftest import ask, pending_count, question_fields, wait_for

from ai_worker.backend import RedisRateLimiter


async def test_rate_limit_spaces_starts_evenly_on_the_redis_clock(r, make_settings):
    s = make_settings()
    limiter = RedisRateLimiter(r, 5, s.rate_key_prefix, burst=1)  # one start every 200 ms
    assert await limiter.acquire() == (True, 0)
    admitted, wait = await limiter.acquire()
    assert not admitted and 150 <= wait <= 200, wait
    assert 0 < await r.pttl(f"{s.rate_key_prefix}gcra") <= 2200
    # Not before the advertised wait (asking again does not move it), and once it has passed.
    admitted, wait_again = await limiter.acquire()
    assert not admitted and 0 < wait_again <= wait, (wait, wait_again)
    await asyncio.sleep(wait_again / 1000 + 0.01)  # time passing is the point here, not a synchronisation
    assert (await limiter.acquire())[0] is True


async def test_rate_limit_burst_allows_that_many_at_once(r, make_settings):
    s = make_settings()
    limiter = RedisRateLimiter(r, 10, s.rate_key_prefix, burst=3)
    results = [await limiter.acquire() for _ in range(4)]
    assert [a for a, _ in results] == [True, True, True, False]
    assert 1 <= results[3][1] <= 100


async def test_a_late_start_keeps_its_place_in_the_schedule(r, make_settings):
    # 20/s (a start every 50 ms) with the default burst (1 + 2 = 3, a tolerance of 100 ms): a poll
    # that comes L ms late (L under the tolerance) takes its start, and the next start stays where
    # the schedule had it, 50 - L ms on; with no tolerance it would move a whole 50 ms on. L is
    # read on the Redis clock, so a slow machine changes L, not the verdict.
    s = make_settings()
    limiter = RedisRateLimiter(r, 20, s.rate_key_prefix)

    async def redis_ms() -> float:
        sec, usec = await r.time()
        return sec * 1000 + usec / 1000

    for _ in range(10):  # a machine too slow for a late poll under the tolerance tries again
        await r.delete(f"{s.rate_key_prefix}gcra")
        for _ in range(3):
            assert (await limiter.acquire())[0]  # the burst after a quiet spell
        admitted, wait = await limiter.acquire()
        assert not admitted
        slot = await redis_ms() + wait  # when the schedule has the next start (at most ~1 ms early)
        await asyncio.sleep((wait + 30) / 1000)  # late on purpose: the scenario, not a synchronisation
        late = await redis_ms() - slot
        assert (await limiter.acquire())[0] is True
        admitted, next_wait = await limiter.acquire()
        if late <= 80:
            assert not admitted and next_wait <= 50 - late + 5, (late, next_wait)
            return
    raise AssertionError("no poll came back within the tolerance in 10 tries")


async def test_questions_start_in_the_order_they_were_asked(r, make_settings, start_worker, subscribe):
    # 5 starts/s and room for all 8 in the worker: they wait in the worker's own line.
    s = make_settings(
        AI_CAPACITY_PER_SEC="5", WORKER_CONCURRENCY="10", AI_TTFT_MS="10", AI_ANSWER_TOKENS="2", WORKER_HEARTBEAT_MS="100"
    )
    w = await start_worker(s)
    # One reply channel for all 8, as a gateway instance has: Redis delivers one connection's
    # messages in the order they were published, so the order read is the order the worker sent
    # (the burst's two starts come within a millisecond, closer than arrival times on separate
    # connections can tell apart).
    channel = f"td:replies:test-{uuid.uuid4().hex[:8]}"
    qs = [question_fields(s, replyTo=channel) for _ in range(8)]
    sub = await subscribe(channel)
    order = [q["id"] for q in qs]

    async def read_all() -> dict[str, float]:
        """When each answer's first token arrived (read as it comes), until every answer is done."""
        firsts: dict[str, float] = {}
        done: set[str] = set()
        while len(done) < len(qs):
            m = await sub.next()
            if m["type"] == "token" and m["seq"] == 0:
                firsts.setdefault(m["messageId"], sub.items[-1][0])
            elif m["type"] in ("done", "error"):
                assert m["type"] == "done", m
                done.add(m["messageId"])
        return firsts

    reading = asyncio.create_task(read_all())
    for q in qs:
        await ask(r, s, q)

    # While most wait for a start, the heartbeat tells waiting apart from answering.
    async def some_waiting() -> bool:
        raw = await r.get(f"td:workers:{s.worker_id}")
        hb = raw and json.loads(raw)
        return bool(hb) and hb["inFlight"] >= 4 and hb["answering"] < hb["inFlight"]

    await wait_for(some_waiting)
    firsts = await reading
    assert list(firsts) == order
    starts = [firsts[i] for i in order]
    # The burst (2 at 5/s) at once, then 200 ms apart: 1.2 s from the first to the eighth.
    at = [round(t - starts[0], 3) for t in starts]
    assert starts[-1] - starts[0] >= 1.1, at
    assert min(b - a for a, b in zip(starts[2:], starts[3:])) >= 0.1, at
    await wait_for(lambda: w.finished == 8)
    assert w.answering == 0


async def test_two_workers_share_the_global_capacity(r, make_settings, start_worker, subscribe):
    # 5 starts/s across both workers; each worker holds at most 8, so both take part.
    env = dict(AI_CAPACITY_PER_SEC="5", WORKER_CONCURRENCY="8", AI_TTFT_MS="10", AI_ANSWER_TOKENS="2")
    s1 = make_settings(**env)
    s2 = make_settings(**env)
    assert s1.question_stream == s2.question_stream and s1.worker_id != s2.worker_id
    w1, w2 = await start_worker(s1), await start_worker(s2)

    qs = [question_fields(s1) for _ in range(15)]
    subs = [await subscribe(q["replyTo"]) for q in qs]
    for q in qs:
        await ask(r, s1, q)
    firsts = await asyncio.gather(*(sub.next() for sub in subs))
    starts = sorted(t for sub in subs for t, m in sub.items if m["type"] == "token" and m["seq"] == 0)
    assert all(m["type"] == "token" for m in firsts) and len(starts) == 15
    for sub in subs:
        assert (await sub.until_end())[-1]["type"] == "done"

    # 5 starts/s, spaced 200 ms: the 11th start is 2 s after the 1st.
    assert starts[10] - starts[0] >= 0.95, [round(t - starts[0], 3) for t in starts]
    assert starts[14] - starts[0] >= 0.95
    await wait_for(lambda: w1.finished + w2.finished == 15)
    assert w1.completed > 0 and w2.completed > 0 and w1.completed + w2.completed == 15
    assert await pending_count(r, s1) == 0


async def test_no_capacity_before_the_deadline_is_deadline_exceeded(r, make_settings, start_worker, subscribe):
    s = make_settings(AI_CAPACITY_PER_SEC="1")
    await start_worker(s)
    # Use up the starts allowed now (the burst), then ask with a deadline before the next one.
    limiter = RedisRateLimiter(r, 1, s.rate_key_prefix)
    while (await limiter.acquire())[0]:
        pass
    q = question_fields(s, deadline=int(time.time() * 1000) + 300)
    sub = await subscribe(q["replyTo"])
    await ask(r, s, q)
    msgs = await sub.until_end()
    assert [m["type"] for m in msgs] == ["error"] and msgs[0]["code"] == "deadline_exceeded"
