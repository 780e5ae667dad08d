"""Global AI capacity, shared by all workers through Redis."""

from __future__ import annotations

import asyncio
import time

from conftest import ask, pending_count, question_fields, wait_for

from ai_worker.backend import RedisRateLimiter


async def _at_start_of_a_redis_second(r) -> None:
    while True:
        _, usec = await r.time()
        if usec < 200_000:
            return
        await asyncio.sleep((1_000_000 - usec) / 1e6 + 0.001)


async def test_rate_limit_script_counts_per_redis_second(r, make_settings):
    s = make_settings()
    limiter = RedisRateLimiter(r, 5, s.rate_key_prefix)
    await _at_start_of_a_redis_second(r)
    sec, _ = await r.time()
    results = [await limiter.acquire() for _ in range(7)]

    assert [a for a, _, _ in results] == [True] * 5 + [False] * 2
    assert [n for _, n, _ in results] == list(range(1, 8))
    assert all(1 <= wait <= 1000 for _, _, wait in results)
    key = f"{s.rate_key_prefix}{sec}"
    assert await r.get(key) == "7"
    assert 0 < await r.pttl(key) <= 2000

    # After the advertised wait, a new second (and a new window) has begun.
    await asyncio.sleep(results[-1][2] / 1000 + 0.01)
    admitted, n, _ = await limiter.acquire()
    assert admitted and n == 1


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
    firsts = await asyncio.gather(*(sub.next(timeout=10) for sub in subs))
    starts = sorted(t for sub in subs for t, m in sub.items if m["type"] == "token" and m["seq"] == 0)
    assert all(m["type"] == "token" for m in firsts) and len(starts) == 15
    for sub in subs:
        assert (await sub.until_end(timeout=5))[-1]["type"] == "done"

    # At most 5 starts in any Redis second: the 11th start is 2 windows after the 1st.
    assert starts[10] - starts[0] >= 0.95, [round(t - starts[0], 3) for t in starts]
    assert starts[14] - starts[0] >= 0.95
    assert starts[14] - starts[0] < 4.0
    await wait_for(lambda: w1.finished + w2.finished == 15)
    assert w1.completed > 0 and w2.completed > 0 and w1.completed + w2.completed == 15
    assert await pending_count(r, s1) == 0


async def test_no_capacity_before_the_deadline_is_deadline_exceeded(r, make_settings, start_worker, subscribe):
    s = make_settings(AI_CAPACITY_PER_SEC="1")
    await start_worker(s)
    # Use up this second's single start, then ask with a deadline before the next second.
    await _at_start_of_a_redis_second(r)
    assert (await RedisRateLimiter(r, 1, s.rate_key_prefix).acquire())[0]
    q = question_fields(s, deadline=int(time.time() * 1000) + 300)
    sub = await subscribe(q["replyTo"])
    await ask(r, s, q)
    msgs = await sub.until_end()
    assert [m["type"] for m in msgs] == ["error"] and msgs[0]["code"] == "deadline_exceeded"
