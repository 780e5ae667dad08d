"""An OpenAI-compatible streaming backend (vLLM, Ollama, LiteLLM, llama.cpp's server, OpenAI).

POST {AI_BASE_URL}/chat/completions with "stream": true, read with httpx and httpx-sse. Every
upstream fault ends the answer with an UpstreamError (the worker turns it into `worker_error`,
which the gateways' breaker counts); a 429 before the first token raises UpstreamThrottled, the
worker waits out its Retry-After and starts the question again, and this backend starts fewer
answers: it halves its concurrency limit (at most once per Retry-After) and adds one back per
completed answer, up to AI_MAX_CONCURRENCY.

Closing the generator (a cancel, the deadline, shutdown) closes the HTTP response before it was
read to its end, which closes the connection: the model server sees its client go and stops
generating.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from email.utils import parsedate_to_datetime
from typing import Any, AsyncIterator

import httpx
from httpx_sse import EventSource

from .backend import AnswerStats, RedisRateLimiter, UpstreamError, UpstreamThrottled, count_tokens
from .config import Settings
from .protocol import Question

# Retry-After when a 429 does not say; and the longest one believed (a broken header must not
# stop the worker for a day).
DEFAULT_RETRY_AFTER_MS = 1_000
MAX_RETRY_AFTER_MS = 600_000
# While the concurrency limit is full, how often the head of the line asks again.
FULL_POLL_MS = 10
ERROR_BODY_MAX = 2_048


def retry_after_ms(headers: httpx.Headers, now: float | None = None) -> int:
    """The wait a 429 asks for: retry-after-ms, else Retry-After (seconds or an HTTP date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        with contextlib.suppress(ValueError):
            return _clamp_ms(float(raw_ms))
    raw = (headers.get("retry-after") or "").strip()
    if raw:
        try:
            return _clamp_ms(float(raw) * 1000)
        except ValueError:
            pass
        with contextlib.suppress(TypeError, ValueError, IndexError):
            at = parsedate_to_datetime(raw).timestamp()
            return _clamp_ms((at - (time.time() if now is None else now)) * 1000)
    return DEFAULT_RETRY_AFTER_MS


def _clamp_ms(v: float) -> int:
    if not math.isfinite(v):
        return DEFAULT_RETRY_AFTER_MS
    return int(min(MAX_RETRY_AFTER_MS, max(0.0, math.ceil(v))))


class OpenAIBackend:
    def __init__(self, settings: Settings, limiter: RedisRateLimiter, client: httpx.AsyncClient | None = None):
        self.model = settings.model
        self._settings = settings
        self._limiter = limiter
        self._max = settings.max_concurrency
        self._limit = float(settings.max_concurrency)
        self._in_use = 0
        self._not_before = 0.0  # monotonic
        self._not_before_epoch_ms = 0
        self._last_cut = -math.inf
        self.throttles = 0  # 429s seen
        headers = {"Accept": "text/event-stream"}
        if settings.api_key:
            headers["Authorization"] = f"Bearer {settings.api_key}"
        # read=None: the first-token and stall timeouts below bound every read instead.
        timeout = httpx.Timeout(connect=settings.connect_timeout_ms / 1000.0, read=None, write=10.0, pool=None)
        limits = httpx.Limits(max_connections=settings.max_concurrency, max_keepalive_connections=settings.max_concurrency)
        self._client = client or httpx.AsyncClient(base_url=settings.base_url + "/", headers=headers, timeout=timeout, limits=limits)

    # ---- admission (per worker: concurrency and the upstream's Retry-After; global: the limiter) ----

    @property
    def limit(self) -> int:
        """Answers this worker streams at once now (lowered after a 429)."""
        return max(1, int(self._limit))

    async def try_admit(self) -> tuple[bool, int]:
        now = time.monotonic()
        if now < self._not_before:
            return False, max(1, math.ceil((self._not_before - now) * 1000))
        if self._in_use >= self.limit:
            return False, FULL_POLL_MS
        admitted, wait = await self._limiter.acquire()
        if not admitted:
            return False, wait
        self._in_use += 1
        return True, 0

    def ended(self, ok: bool) -> None:
        self._in_use = max(0, self._in_use - 1)
        if ok:
            self._limit = min(float(self._max), self._limit + 1.0)

    def throttled_until_ms(self) -> int:
        return self._not_before_epoch_ms if time.monotonic() < self._not_before else 0

    def _throttle(self, wait_ms: int) -> None:
        now = time.monotonic()
        self.throttles += 1
        until = now + wait_ms / 1000.0
        if until > self._not_before:
            self._not_before = until
            self._not_before_epoch_ms = int(time.time() * 1000) + wait_ms
        # Answers in flight often get their 429s together: that is one signal, one cut.
        if now - self._last_cut >= max(wait_ms / 1000.0, 1.0):
            self._limit = max(1.0, self._limit / 2)
            self._last_cut = now

    async def aclose(self) -> None:
        await self._client.aclose()

    # ---- one answer ------------------------------------------------------------------

    def _body(self, question: Question) -> dict[str, Any]:
        messages = []
        if self._settings.system_prompt:
            messages.append({"role": "system", "content": self._settings.system_prompt})
        messages.append({"role": "user", "content": question.question})
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "max_tokens": self._settings.max_tokens,
        }
        if self._settings.stream_usage:
            body["stream_options"] = {"include_usage": True}
        return body

    async def stream(self, question: Question, stats: AnswerStats) -> AsyncIterator[str]:
        s = self._settings
        loop = asyncio.get_running_loop()
        first_by = loop.time() + s.first_token_timeout_ms / 1000.0
        stall_s = s.stall_timeout_ms / 1000.0
        request = self._client.build_request("POST", "chat/completions", json=self._body(question))
        response: httpx.Response | None = None
        produced: list[str] = []
        try:
            try:
                async with asyncio.timeout_at(first_by):
                    response = await self._client.send(request, stream=True)
            except httpx.ConnectTimeout:
                raise UpstreamError("connect_timeout", f"could not connect to the model server within {s.connect_timeout_ms} ms") from None
            except httpx.ConnectError as e:
                raise UpstreamError("connect", f"could not connect to the model server: {_short(e)}") from None
            except TimeoutError:
                raise UpstreamError("first_token_timeout", f"the model server sent no first token within {s.first_token_timeout_ms} ms") from None
            except httpx.HTTPError as e:
                raise UpstreamError("broken_stream", f"the request to the model server failed: {_short(e)}") from None
            await self._check_status(response, first_by)
            events = EventSource(response).aiter_sse()
            finished = False  # a finish_reason or [DONE] was seen
            while True:
                got_first = stats.first_token_at is not None
                try:
                    async with asyncio.timeout_at(first_by if not got_first else loop.time() + stall_s):
                        sse = await anext(events)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    if not got_first:
                        raise UpstreamError("first_token_timeout", f"the model server sent no first token within {s.first_token_timeout_ms} ms") from None
                    raise UpstreamError("stall", f"the model server sent nothing for {s.stall_timeout_ms} ms mid-answer") from None
                except httpx.HTTPError as e:
                    raise UpstreamError("broken_stream", f"the model server's stream broke: {_short(e)}") from None
                data = sse.data.strip()
                if data == "[DONE]":
                    finished = True
                    break
                if not data:
                    continue
                text, done, usage = _parse_chunk(data)
                finished = finished or done
                if usage is not None:
                    stats.prompt_tokens, stats.completion_tokens = usage
                if text:
                    if stats.first_token_at is None:
                        stats.first_token_at = time.monotonic()
                    produced.append(text)
                    yield text
            if not finished:
                raise UpstreamError("broken_stream", "the model server's stream ended before the answer did (no finish_reason, no [DONE])")
            if stats.completion_tokens is None:
                stats.counted = True
                stats.completion_tokens = len(produced)
                stats.prompt_tokens = count_tokens((s.system_prompt or "") + " " + question.question)
        finally:
            if response is not None:
                # Before it was read to its end, this closes the connection: the server stops.
                with contextlib.suppress(Exception):
                    await response.aclose()

    async def _check_status(self, response: httpx.Response, first_by: float) -> None:
        status = response.status_code
        if status == 429:
            wait = retry_after_ms(response.headers)
            await response.aclose()
            self._throttle(wait)
            raise UpstreamThrottled(wait)
        if status >= 400:
            detail = ""
            # The body goes to the log only: it may echo request details back.
            with contextlib.suppress(Exception):
                async with asyncio.timeout_at(first_by):
                    raw = b""
                    async for part in response.aiter_bytes():
                        raw += part
                        if len(raw) >= ERROR_BODY_MAX:
                            break
                detail = _error_message(raw[:ERROR_BODY_MAX])
            await response.aclose()
            kind = "status_5xx" if status >= 500 else "status_4xx"
            raise UpstreamError(kind, f"the model server answered HTTP {status}", detail)
        ctype = response.headers.get("content-type", "")
        if "text/event-stream" not in ctype:
            await response.aclose()
            raise UpstreamError("malformed", f"the model server did not stream (content-type {ctype or 'missing'})")


def _parse_chunk(data: str) -> tuple[str, bool, tuple[int, int] | None]:
    """(content text, whether a finish_reason came, (prompt, completion) usage or None)."""
    try:
        chunk = json.loads(data)
    except ValueError:
        raise UpstreamError("malformed", "the model server sent a chunk that is not JSON") from None
    if not isinstance(chunk, dict):
        raise UpstreamError("malformed", "the model server sent a chunk that is not a JSON object")
    if "error" in chunk:
        raise UpstreamError("upstream_error", "the model server failed mid-answer", _error_message(json.dumps(chunk).encode()))
    choices = chunk.get("choices")
    if choices is None:
        choices = []
    if not isinstance(choices, list):
        raise UpstreamError("malformed", "the model server sent a chunk whose choices are not a list")
    text = ""
    finished = False
    for c in choices:
        if not isinstance(c, dict):
            raise UpstreamError("malformed", "the model server sent a choice that is not an object")
        if c.get("index", 0) != 0:
            continue
        delta = c.get("delta") or {}
        if not isinstance(delta, dict):
            raise UpstreamError("malformed", "the model server sent a delta that is not an object")
        content = delta.get("content")
        if content is not None and not isinstance(content, str):
            raise UpstreamError("malformed", "the model server sent content that is not a string")
        text += content or ""
        finished = finished or bool(c.get("finish_reason"))
    usage = chunk.get("usage")
    parsed: tuple[int, int] | None = None
    if isinstance(usage, dict):
        p, c = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(p, int) and isinstance(c, int) and p >= 0 and c >= 0:
            parsed = (p, c)
    return text, finished, parsed


def _error_message(raw: bytes) -> str:
    """The `error.message` of an OpenAI-style error body, else its first 200 characters."""
    text = raw.decode("utf-8", "replace")
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        body = json.loads(text)
        err = body.get("error", body)
        msg = err.get("message") if isinstance(err, dict) else err
        if isinstance(msg, str):
            return msg[:200]
    return " ".join(text.split())[:200]


def _short(e: Exception) -> str:
    return f"{type(e).__name__}: {e}"[:200]
