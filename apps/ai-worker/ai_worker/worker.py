"""The consumer loop: read questions from the stream, answer each in its own task.

Entries are XACKed when their answer task ends (done, error, cancelled by the cancel
key); a task cancelled by shutdown leaves its entry pending for a later sweeper.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import logging
import time
from typing import Any, Awaitable, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ResponseError

from . import protocol as p
from .backend import AnswerStats, Backend, RedisRateLimiter, SimulatedBackend, UpstreamError, UpstreamThrottled
from .config import Settings, concurrency_for
from .faults import Faults
from .jsonlog import event
from .meter import LoadMeter
from .metrics import WorkerMetrics
from .replies import AnswerReplies, Cancelled, ReplyPublisher

log = logging.getLogger("ai_worker.worker")

THROUGHPUT_WINDOW_S = 5.0
STALL_POLL_S = 0.1  # while stalled, how often an answer checks its cancel key
CANCEL_RECHECK_S = 0.05  # while at the head of the line, how often a question checks its cancel key
INJECTED_ERROR = "injected fault: the answer failed (error ratio)"

T = TypeVar("T")


def now_ms() -> int:
    return int(time.time() * 1000)


class RedisTimeout(Exception):
    """A Redis call took longer than its bound."""


async def _bounded(aw: Awaitable[T], seconds: float) -> T:
    """Await with a time limit; asyncio.timeout keeps outside cancellation intact."""
    try:
        async with asyncio.timeout(seconds):
            return await aw
    except TimeoutError:
        raise RedisTimeout(f"redis call took over {seconds:g} s") from None


class _Stop(Exception):
    """Ends an answer early with an error reply (deadline, cancel)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def make_backend(settings: Settings, redis: Redis, faults: Faults) -> Backend:
    """AI_BACKEND: the simulated LLM, or an OpenAI-compatible server; both behind the global limiter."""
    limiter = RedisRateLimiter(redis, settings.capacity_per_sec, settings.rate_key_prefix)
    if settings.backend == "openai":
        from .openai_backend import OpenAIBackend

        return OpenAIBackend(settings, limiter)
    return SimulatedBackend(limiter, settings.ttft_ms, settings.tokens_per_sec, settings.answer_tokens, faults)


class Worker:
    def __init__(
        self,
        settings: Settings,
        backend: Backend | None = None,
        faults: Faults | None = None,
        metrics: WorkerMetrics | None = None,
    ):
        self.settings = settings
        self.worker_id = settings.worker_id
        self.concurrency = settings.concurrency or concurrency_for(settings)
        self.faults = faults if faults is not None else Faults.from_settings(settings)
        # socket_timeout=None on purpose: with a socket timeout redis-py sends through
        # asyncio.wait_for, which on Python 3.11 can swallow a task's cancellation (the
        # task then runs on after shutdown cancelled it). Time limits are applied here
        # with asyncio.timeout instead (see _bounded and the read loop).
        common: dict[str, Any] = dict(decode_responses=True, socket_connect_timeout=2.0, socket_timeout=None)
        # Commands (publish, exists, ack, heartbeat).
        # Hundreds of answers share a bounded pool and wait for a connection when all are busy,
        # instead of failing with MaxConnectionsError under a burst.
        self._pool = BlockingConnectionPool.from_url(settings.redis_url, max_connections=64, timeout=10, **common)
        self.redis: Redis = Redis(connection_pool=self._pool)
        self._dead_letter_script = self.redis.register_script(p.DEAD_LETTER_LUA)
        # Blocking XREADGROUP on its own connection, so it never holds up the others.
        self._reader_redis: Redis = Redis.from_url(settings.redis_url, **common)
        self.backend: Backend = backend or make_backend(settings, self.redis, self.faults)
        # Replies per gateway instance in windows of WORKER_REPLY_BATCH_MS (see replies.py).
        self.replies = ReplyPublisher(self.redis, settings.reply_batch_ms / 1000.0, bound_s=5.0, turns=self.faults)
        self.metrics = metrics or WorkerMetrics()
        self.meter = LoadMeter()
        self._waiting = 0  # questions in _admit: the line for a start
        self._tasks: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()
        self._start_line = asyncio.Lock()
        self._answering = 0  # answers past the capacity gate and not yet ended
        self._completions: collections.deque[float] = collections.deque()
        self._reader: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._stopping = False
        self._started = False
        self.completed = 0  # answers finished with "done"
        self.finished = 0  # answer tasks ended (any outcome except shutdown)

    # ---- state -------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    @property
    def answering(self) -> int:
        """Answers started (past the capacity gate) and not ended: in flight but no longer waiting."""
        return self._answering

    @property
    def running(self) -> bool:
        return self._started and not self._stopping

    def throughput_per_sec(self) -> float:
        cutoff = time.monotonic() - THROUGHPUT_WINDOW_S
        while self._completions and self._completions[0] < cutoff:
            self._completions.popleft()
        return round(len(self._completions) / THROUGHPUT_WINDOW_S, 3)

    async def redis_ok(self, timeout: float = 1.0) -> bool:
        try:
            return bool(await _bounded(self.redis.ping(), timeout))
        except Exception:
            return False

    # ---- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Start reading and heartbeating. Does not fail if Redis is down: it retries."""
        if self._started:
            return
        self._started = True
        await self._ensure_group(log_errors=True)
        self._heartbeat = asyncio.create_task(self._heartbeat_loop(), name="heartbeat")
        self._reader = asyncio.create_task(self._read_loop(), name="reader")
        event(
            log, logging.INFO, "worker started",
            workerId=self.worker_id, stream=self.settings.question_stream,
            group=self.settings.consumer_group, concurrency=self.concurrency, replyBatchMs=self.settings.reply_batch_ms,
            capacityPerSec=self.settings.capacity_per_sec,
        )
        if self.faults.active:
            event(log, logging.WARNING, "fault injection active", workerId=self.worker_id, faults=self.faults.snapshot())

    async def stop(self, grace_ms: int | None = None) -> None:
        """Stop reading, let answers finish up to the grace, cancel the rest, clean up."""
        if not self._started or self._stopping:
            return
        self._stopping = True
        grace = (self.settings.shutdown_grace_ms if grace_ms is None else grace_ms) / 1000.0
        event(log, logging.INFO, "worker stopping", workerId=self.worker_id, inFlight=self.in_flight)
        if self._reader:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        pending = set(self._tasks)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=grace)
        abandoned = len(pending)
        if self._heartbeat:
            pending.add(self._heartbeat)
        for t in pending:
            t.cancel()
        if pending:
            _, stuck = await asyncio.wait(pending, timeout=2.0)
            if stuck:
                event(log, logging.ERROR, "tasks ignored cancellation", workerId=self.worker_id, count=len(stuck))
        # What the answers handed over before they ended still goes out (bounded).
        await self.replies.drain(timeout_s=1.0)
        try:
            await _bounded(self.redis.delete(p.worker_key(self.worker_id)), 2.0)
        except Exception as e:  # Redis gone: the key expires by its TTL anyway
            event(log, logging.WARNING, "heartbeat key not deleted", workerId=self.worker_id, error=repr(e))
        backend_close = getattr(self.backend, "aclose", None)
        if backend_close is not None:
            with contextlib.suppress(Exception):
                await backend_close()
        for r in (self._reader_redis, self.redis):
            with contextlib.suppress(Exception):
                await r.aclose()
        with contextlib.suppress(Exception):
            await self._pool.disconnect()
        event(log, logging.INFO, "worker stopped", workerId=self.worker_id, abandoned=abandoned)

    # ---- loops -------------------------------------------------------------------

    async def _ensure_group(self, log_errors: bool = False) -> bool:
        try:
            await self.redis.xgroup_create(
                self.settings.question_stream, self.settings.consumer_group, id="0", mkstream=True
            )
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                if log_errors:
                    event(log, logging.ERROR, "consumer group not created", workerId=self.worker_id, error=str(e))
                return False
        except Exception as e:
            if log_errors:
                event(log, logging.ERROR, "consumer group not created", workerId=self.worker_id, error=repr(e))
            return False
        return True

    async def _read_loop(self) -> None:
        s = self.settings
        failures = 0
        # First this consumer's own pending entries: questions a previous process with this
        # worker id took and never acknowledged (it crashed). They are answered again; then new ones.
        history_from: str | None = "0"
        while not self._stopping:
            free = self.concurrency - len(self._tasks)
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                resp = await _bounded(
                    self._reader_redis.xreadgroup(
                        s.consumer_group,
                        self.worker_id,
                        {s.question_stream: history_from or ">"},
                        count=free,
                        block=None if history_from else s.block_ms,
                    ),
                    s.block_ms / 1000.0 + 5.0,
                )
                failures = 0
                if history_from is not None:
                    entries = [e for _s, es in (resp or []) for e in es]
                    if not entries:
                        history_from = None
                        continue
                    history_from = entries[-1][0]
                    event(log, logging.WARNING, "recovering unacknowledged questions", workerId=self.worker_id, count=len(entries))
            except asyncio.CancelledError:
                raise
            except Exception as e:
                failures += 1
                if failures == 1 or failures % 30 == 0:
                    event(log, logging.ERROR, "read failed", workerId=self.worker_id, error=repr(e), failures=failures)
                if isinstance(e, ResponseError) and "NOGROUP" in str(e):
                    await self._ensure_group()
                await asyncio.sleep(min(2.0, 0.1 * failures))
                continue
            for _stream, entries in resp or []:
                for entry_id, fields in entries:
                    task = asyncio.create_task(self._handle(entry_id, fields), name=f"answer:{entry_id}")
                    self._tasks.add(task)
                    task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slot_freed.set()

    async def _heartbeat_loop(self) -> None:
        s = self.settings
        key = p.worker_key(self.worker_id)
        failed = False
        while True:
            body = p.heartbeat(
                self.worker_id, s.capacity_per_sec, self.throughput_per_sec(), self.in_flight, self.answering, now_ms(),
                **self.meter.snapshot(), throttledUntil=self.backend.throttled_until_ms(), model=self.backend.model,
            )
            try:
                await _bounded(self.redis.set(key, json.dumps(body), px=s.heartbeat_ttl_ms), 5.0)
                if failed:
                    event(log, logging.INFO, "heartbeat restored", workerId=self.worker_id)
                failed = False
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if not failed:
                    event(log, logging.ERROR, "heartbeat failed", workerId=self.worker_id, error=repr(e))
                failed = True
            await asyncio.sleep(s.heartbeat_ms / 1000.0)

    # ---- one answer --------------------------------------------------------------

    async def _handle(self, entry_id: str, fields: dict[str, str] | None) -> None:
        shutdown = False
        try:
            try:
                q = p.parse_entry(fields)
            except p.BadQuestion as bq:
                await self._bad_question(entry_id, bq)
                return
            await self._answer(q)
        except asyncio.CancelledError:
            shutdown = True  # leave the entry pending: a sweeper hands it to another worker
            raise
        except Exception as e:  # never let one answer take the worker down
            event(log, logging.ERROR, "answer task failed", workerId=self.worker_id, entryId=entry_id, error=repr(e))
        finally:
            if not shutdown:
                try:
                    await _bounded(
                        self.redis.xack(self.settings.question_stream, self.settings.consumer_group, entry_id), 5.0
                    )
                except Exception as e:
                    event(log, logging.ERROR, "ack failed", workerId=self.worker_id, entryId=entry_id, error=repr(e))
                # Counted once the entry is settled (acked or the ack failed), so whoever waits on it
                # sees the stream as it will stay.
                self.finished += 1

    async def _bad_question(self, entry_id: str, bq: p.BadQuestion) -> None:
        event(
            log, logging.WARNING, "bad question",
            workerId=self.worker_id, entryId=entry_id, messageId=bq.message_id,
            sessionId=bq.session_id, reason=bq.reason, answered=bq.answerable,
        )
        if bq.answerable:
            assert bq.reply_to and bq.message_id and bq.session_id
            await self._publish(
                bq.reply_to, p.error_reply(bq.message_id, bq.session_id, "bad_question", bq.reason)
            )

    async def _dead_letter(self, q: p.Question, reason: str, message: str, tokens_sent: int) -> None:
        """Every accepted question that did not get its answer lands in the DLQ, and in one log line."""
        fields = p.dead_letter(q, reason, message, tokens_sent, now_ms(), self.worker_id)
        try:
            entry = await _bounded(
                self._dead_letter_script(keys=[p.DLQ_STREAM], args=[p.DLQ_MAXLEN, *itertools.chain.from_iterable(fields.items())]), 5.0
            )
            event(log, logging.WARNING, "dead-lettered", dlq=True, reason=reason, entryId=entry,
                  workerId=self.worker_id, messageId=q.id, sessionId=q.session_id, traceId=q.trace_id)
        except Exception as e:
            event(log, logging.ERROR, "dead-letter write failed", dlq=True, reason=reason, error=repr(e),
                  workerId=self.worker_id, messageId=q.id, sessionId=q.session_id)

    async def _publish(self, channel: str, body: dict[str, Any]) -> None:
        """One reply at once, on replyTo (a bad question's error: it belongs to no answer)."""
        await _bounded(self.redis.publish(channel, json.dumps(body, ensure_ascii=False)), 5.0)

    async def _is_cancelled(self, q: p.Question) -> bool:
        return bool(await _bounded(self.redis.exists(p.cancel_key(q.id)), 5.0))

    async def _hold_while_stalled(self, q: p.Question) -> None:
        """While the stall fault is on, publish nothing; a cancel still ends the answer.

        The deadline is enforced by the caller's asyncio.timeout around the answer.
        """
        while self.faults.stall:
            if await self._is_cancelled(q):
                raise _Stop("cancelled", "the question was cancelled")
            await self.faults.wait_unstalled(STALL_POLL_S)

    def _check_deadline(self, q: p.Question) -> None:
        if now_ms() >= q.deadline_ms:
            raise _Stop("deadline_exceeded", "the question's deadline passed")

    async def _admit(self, q: p.Question) -> None:
        """Wait for a start slot of the global capacity while the deadline allows.

        First in, first started: only the task at the head of this worker's line asks the limiter,
        the others wait their turn (asyncio.Lock wakes its waiters in order), so no question
        overtakes an older one and none spins on Redis.
        """
        self._waiting += 1
        # Another question is ahead of this one: the line is held back, by the limiter, the
        # concurrency limit or this process's own pace (a worker short of CPU starts fewer than its
        # backend allows, and only its line shows it).
        if self._waiting > 1 and self.backend.throttled_until_ms() == 0:
            self.meter.held_back()
        try:
            await self._admit_in_line(q)
        finally:
            self._waiting -= 1
            if self._waiting == 0:
                self.meter.line_empty()

    async def _admit_in_line(self, q: p.Question) -> None:
        remaining = (q.deadline_ms - now_ms()) / 1000.0
        try:
            async with asyncio.timeout(max(0.0, remaining)):
                await self._start_line.acquire()
        except TimeoutError:
            raise _Stop("deadline_exceeded", "no AI capacity before the question's deadline") from None
        try:
            checked_at: float | None = None
            while True:
                self._check_deadline(q)
                # At the head of the line the limiter is asked about every 1/capacity s: the cancel
                # key is read when the question gets there and then every CANCEL_RECHECK_S, not at
                # every ask (that was a Redis round trip per ask, a tenth of the worker's CPU).
                now = time.monotonic()
                if checked_at is None or now - checked_at >= CANCEL_RECHECK_S:
                    if await self._is_cancelled(q):
                        raise _Stop("cancelled", "cancelled before the answer started")
                    checked_at = now
                admitted, retry_ms = await _bounded(self.backend.try_admit(), 5.0)
                if admitted:
                    self.meter.started()
                    return
                # Held back by capacity, the starts that follow are paced by the backend (meter.py);
                # a pause the model server asked for (429) says nothing about that pace.
                if self.backend.throttled_until_ms() == 0:
                    self.meter.held_back()
                if now_ms() + retry_ms >= q.deadline_ms:
                    raise _Stop("deadline_exceeded", "no AI capacity before the question's deadline")
                await asyncio.sleep(retry_ms / 1000.0)
        finally:
            self._start_line.release()

    async def _answer(self, q: p.Question) -> None:
        ids = dict(workerId=self.worker_id, messageId=q.id, sessionId=q.session_id, traceId=q.trace_id)
        started = time.monotonic()
        # Per answer a line at debug only: the edge logs each request, metrics count each answer;
        # at info the worker logs what went wrong (an answer that failed, a dead letter).
        event(log, logging.DEBUG, "question started", attempt=q.attempt, **ids)
        if log.isEnabledFor(logging.DEBUG):
            event(log, logging.DEBUG, "question text", question=q.question, **ids)
        stats = AnswerStats(model=self.backend.model)
        out = self.replies.answer(q.reply_to, q.id, q.session_id)
        outcome = "done"
        failure = ""
        inject_error: bool | None = None
        extra: dict[str, Any] = {}
        try:
            try:
                self._check_deadline(q)
                while True:
                    await self._admit(q)
                    if inject_error is None:
                        # Decided once per answer: fail it after its first token (see faults.py).
                        inject_error = self.faults.roll_error()
                    try:
                        await self._produce(q, stats, inject_error, out)
                        break
                    except UpstreamThrottled as t:
                        # A 429 comes before any token: the question waits its turn again, and the
                        # backend starts nothing before the Retry-After (the admission sees it).
                        self.metrics.upstream_faults.labels(stats.model, "throttled").inc()
                        extra["throttled"] = extra.get("throttled", 0) + 1
                        extra["retryAfterMs"] = t.retry_after_ms
                await out.end(p.done_reply(q.id, q.session_id, stats.published, stats.usage()))
                if out.cancelled:
                    # Cancelled as its last tokens went out: it ended on the wire as `cancelled`.
                    outcome = "cancelled"
                else:
                    self.completed += 1
                    self._completions.append(time.monotonic())
            except UpstreamError as e:
                outcome = "worker_error"
                failure = e.message
                extra.update(upstream=e.kind, **({"upstreamDetail": e.detail} if e.detail else {}))
                self.metrics.upstream_faults.labels(stats.model, e.kind).inc()
                await out.end(p.error_reply(q.id, q.session_id, "worker_error", e.message))
            except _Stop as stop:
                outcome = stop.code
                failure = stop.message
                if inject_error and stop.message == INJECTED_ERROR:
                    extra["fault"] = "error_ratio"
                await out.end(p.error_reply(q.id, q.session_id, stop.code, stop.message))
        except asyncio.CancelledError:
            outcome = "abandoned"
            raise
        except Exception as e:
            outcome = "worker_error"
            failure = "the worker failed to answer"
            event(log, logging.ERROR, "answer failed", error=repr(e), **ids)
            with contextlib.suppress(Exception):
                await out.end(p.error_reply(q.id, q.session_id, "worker_error", "the worker failed to answer"))
        finally:
            self.metrics.answers.labels(stats.model, outcome).inc()
            if outcome == "done":
                self.metrics.tokens.labels(stats.model, "prompt").inc(stats.prompt_tokens or 0)
                self.metrics.tokens.labels(stats.model, "completion").inc(stats.completion_tokens or 0)
            event(
                log, logging.DEBUG if outcome in ("done", "cancelled") else logging.INFO, "question finished", outcome=outcome, tokens=stats.published,
                ms=int((time.monotonic() - started) * 1000), **extra, **ids,
            )
            if outcome in p.DEAD_LETTER_REASONS:
                await self._dead_letter(q, outcome, failure, out.delivered)

    async def _produce(self, q: p.Question, stats: AnswerStats, inject_error: bool, out: AnswerReplies) -> None:
        """One admitted attempt at the answer: stream its tokens to the client, up to `done`.

        Leaving the `aclosing` block early (a cancel, the deadline, a fault) closes the backend's
        stream, and with it the model server's HTTP response.
        """
        self._answering += 1
        ok = False
        began = time.monotonic()
        try:
            remaining = max(0.0, (q.deadline_ms - now_ms()) / 1000.0)
            timeout = asyncio.timeout(remaining)
            try:
                async with timeout:
                    async with contextlib.aclosing(self.backend.stream(q, stats)) as tokens:
                        async for text in tokens:
                            if stats.published == 0:
                                if stats.first_token_at is None:
                                    stats.first_token_at = time.monotonic()
                                ttft = max(0.0, stats.first_token_at - began)
                                self.meter.first_token(ttft)
                                self.metrics.ttft.labels(stats.model).observe(ttft)
                            self._check_deadline(q)
                            # The cancel key is read as the tokens go out (replies.py): a cancel
                            # seen there drops the answer's buffered tokens and stops it here.
                            while self.faults.stall:
                                await self._hold_while_stalled(q)
                            try:
                                out.check()
                            except Cancelled:
                                raise _Stop("cancelled", "the question was cancelled") from None
                            await self.faults.before_token()
                            try:
                                await out.token(stats.published, text)
                            except Cancelled:
                                self.faults.token_not_published()
                                raise _Stop("cancelled", "the question was cancelled") from None
                            except BaseException:
                                self.faults.token_not_published()
                                raise
                            # Counted as published once it reached Redis (replies.py calls
                            # faults.token_published then).
                            stats.published += 1
                            if inject_error:
                                raise _Stop("worker_error", INJECTED_ERROR)
                    if inject_error:  # an answer without tokens fails instead of done
                        raise _Stop("worker_error", INJECTED_ERROR)
                    await self._hold_while_stalled(q)
            except TimeoutError:
                if timeout.expired():
                    raise _Stop("deadline_exceeded", "the question's deadline passed during the answer")
                raise
            ok = True
        finally:
            self._answering -= 1
            self.backend.ended(ok)
