"""Answer backends.

A backend has two calls:
  - try_admit(): may this answer start now? -> (admitted, retry_after_ms)
  - stream(question): async generator of token strings
so a real OpenAI-compatible backend can be added later beside the simulated one.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from typing import AsyncIterator, Protocol

from redis.asyncio import Redis

from .faults import Faults
from .protocol import Question

WORDS = (
    "the dam holds water while the river runs on and every gate opens only when the "
    "basin below can take the flow so the valley stays dry and the turbines keep "
    "spinning at their rated speed through spring floods summer droughts autumn rain "
    "winter ice steady calm measured patient honest quick bright clear answer token "
    "stream channel queue worker gateway budget limit wait retry deadline capacity"
).split()


class Backend(Protocol):
    async def try_admit(self) -> tuple[bool, int]:
        """(True, 0) if an answer may start now, else (False, ms until it is worth retrying)."""
        ...

    def stream(self, question: Question) -> AsyncIterator[str]:
        """Yield the answer's tokens in order."""
        ...


# GCRA (the generic cell rate algorithm): one key holds the theoretical arrival time (TAT) of
# the next start, in Redis-clock microseconds, so worker clocks do not matter. Starts are spaced
# 1/capacity apart with a burst of ARGV[3]: a fixed one-second window let a whole second's worth
# start at once at every boundary and kept the rest retrying at the next one, in no order.
# KEYS[1] = TAT key. ARGV[1] = capacity per second, ARGV[2] = key TTL ms, ARGV[3] = burst.
# Returns {admitted 0|1, ms until a start is allowed (0 if admitted)}.
RATE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = 1000000 / tonumber(ARGV[1])
local burst = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local allowed_at = tat - (burst - 1) * interval
if now < allowed_at then
  return {0, math.ceil((allowed_at - now) / 1000)}
end
redis.call('SET', KEYS[1], string.format('%.0f', tat + interval), 'PX', tonumber(ARGV[2]))
return {1, 0}
"""


# A start that asks up to this late (a Redis round trip, a busy event loop) keeps its place in the
# schedule instead of pushing every later start back: with no tolerance each late poll lost a
# slot, and the backend ran at 80-85% of its capacity under load.
LATE_START_TOLERANCE_S = 0.1


class RedisRateLimiter:
    """At most `capacity_per_sec` starts per second across all workers, spaced evenly (GCRA).

    `burst`: starts allowed at once after a quiet spell; default 1 + capacity x 100 ms, which is
    also how late a start may come without losing its slot.
    """

    def __init__(self, redis: Redis, capacity_per_sec: int, key_prefix: str, burst: int | None = None):
        self._redis = redis
        self.capacity_per_sec = capacity_per_sec
        self._key = f"{key_prefix}gcra"
        default_burst = 1 + math.ceil(capacity_per_sec * LATE_START_TOLERANCE_S)
        self._burst = max(1, burst if burst is not None else default_burst)
        # The key only matters while starts are spaced; it may vanish after a quiet spell.
        self._ttl_ms = int(1000 * self._burst / capacity_per_sec) + 2000
        self._script = redis.register_script(RATE_LUA)

    async def acquire(self) -> tuple[bool, int]:
        """One attempt: (admitted, ms until a start is allowed; 0 when admitted)."""
        admitted, wait = await self._script(keys=[self._key], args=[self.capacity_per_sec, self._ttl_ms, self._burst])
        return bool(int(admitted)), 0 if int(admitted) else max(1, int(wait))


def answer_word(question: str, i: int) -> str:
    digest = hashlib.sha256(f"{question}\x00{i}".encode("utf-8")).digest()
    return WORDS[int.from_bytes(digest[:4], "big") % len(WORDS)]


def simulated_answer(question: str, n_tokens: int) -> list[str]:
    """The exact tokens the simulated LLM produces for a question (deterministic)."""
    return [answer_word(question, i) + " " for i in range(n_tokens)]


class SimulatedBackend:
    """A fake LLM: global capacity through Redis, a time to first token, then tokens/s.

    With `faults`, its `ttft_ms` override is read when an answer starts and its
    `tokens_per_sec` override before every token, so a change reaches answers in progress.
    """

    def __init__(
        self,
        limiter: RedisRateLimiter,
        ttft_ms: int,
        tokens_per_sec: float,
        answer_tokens: int,
        faults: Faults | None = None,
    ):
        self._limiter = limiter
        self._ttft_ms = ttft_ms
        self._tokens_per_sec = tokens_per_sec
        self._n = answer_tokens
        self._faults = faults

    def _ttft(self) -> float:
        f = self._faults
        return (f.ttft_ms if f is not None and f.ttft_ms is not None else self._ttft_ms) / 1000.0

    def _gap(self) -> float:
        f = self._faults
        return 1.0 / (f.tokens_per_sec if f is not None and f.tokens_per_sec is not None else self._tokens_per_sec)

    async def try_admit(self) -> tuple[bool, int]:
        return await self._limiter.acquire()

    async def stream(self, question: Question) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        ttft = self._ttft()
        due = loop.time() + ttft
        await asyncio.sleep(ttft)
        for i in range(self._n):
            if i:
                # Pace against the previous token's due time so per-token overhead does
                # not add up; but if the consumer held the last token for longer than a
                # gap (a stall), start pacing again from now rather than burst to catch up.
                gap = self._gap()
                now = loop.time()
                due = now + gap if now - due > 2 * gap else due + gap
                await asyncio.sleep(max(0.0, due - now))
            yield answer_word(question.question, i) + " "
