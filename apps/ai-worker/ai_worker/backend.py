"""Answer backends: the interface, the Redis rate limiter and the simulated LLM.

A backend answers through four calls (the worker makes them in this order):
  - try_admit(): may this answer start now? -> (admitted, retry_after_ms)
  - stream(question, stats): async generator of token strings; fills stats (usage, first token)
  - ended(ok): once for every admitted answer, whatever its outcome
  - throttled_until_ms(): epoch ms before which the backend starts nothing (0: not throttled)
The OpenAI-compatible backend is in openai_backend.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from dataclasses import dataclass
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


@dataclass
class AnswerStats:
    """What one answer cost, filled in by the backend while it streams."""

    model: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    # True when the backend counted the tokens itself (no usage from the model server).
    counted: bool = False
    # time.monotonic() of the first token, None until it came.
    first_token_at: float | None = None
    # Tokens the worker published to the client so far.
    published: int = 0

    def usage(self) -> dict[str, object]:
        return {
            "model": self.model,
            "promptTokens": self.prompt_tokens or 0,
            "completionTokens": self.completion_tokens or 0,
            "counted": self.counted,
        }


class UpstreamError(Exception):
    """The model server failed this answer (5xx, broken or malformed stream, a timeout).

    `kind` is a short label for logs and metrics: connect, connect_timeout, first_token_timeout,
    stall, status_5xx, status_4xx, broken_stream, malformed, upstream_error.
    """

    def __init__(self, kind: str, message: str, detail: str = ""):
        super().__init__(message)
        self.kind = kind
        self.message = message  # for the client: says what failed, never echoes the server's body
        self.detail = detail  # for the log: what the server said


class UpstreamThrottled(Exception):
    """The model server answered 429 before any token: retry no sooner than `retry_after_ms`."""

    def __init__(self, retry_after_ms: int):
        super().__init__(f"the model server is rate limiting (retry after {retry_after_ms} ms)")
        self.retry_after_ms = retry_after_ms


class Backend(Protocol):
    # The model's name, as reported in `done` usage and in metrics.
    model: str

    async def try_admit(self) -> tuple[bool, int]:
        """(True, 0) if an answer may start now, else (False, ms until it is worth retrying)."""
        ...

    def stream(self, question: Question, stats: AnswerStats) -> AsyncIterator[str]:
        """Yield the answer's tokens in order. May raise UpstreamError or UpstreamThrottled."""
        ...

    def ended(self, ok: bool) -> None:
        """An admitted answer ended (ok: it completed); called once per successful try_admit."""
        ...

    def throttled_until_ms(self) -> int:
        """Epoch ms before which nothing will be admitted because the model server asked so; 0 if none."""
        ...


_WORD_RE = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """A rough token count (words and punctuation), for servers that send no usage."""
    return len(_WORD_RE.findall(text))


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

    Its usage is counted: the question's words as prompt tokens, one per token produced.

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
        self.model = "simulated"
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

    def ended(self, ok: bool) -> None:
        pass

    def throttled_until_ms(self) -> int:
        return 0

    async def stream(self, question: Question, stats: AnswerStats | None = None) -> AsyncIterator[str]:
        if stats is not None:
            stats.counted = True
            stats.prompt_tokens = count_tokens(question.question)
            stats.completion_tokens = 0
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
            if stats is not None:
                stats.completion_tokens = i + 1
            yield answer_word(question.question, i) + " "
