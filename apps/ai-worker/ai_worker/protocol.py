"""The gateway <-> worker protocol over Redis.

The shapes are fixed by libs/ai-bridge/schema/protocol.schema.json; this module only
names the keys, parses a stream entry into a Question and builds the reply dicts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

QUESTION_STREAM = "td:questions"
CONSUMER_GROUP = "workers"
REPLY_PREFIX = "td:replies:"
BATCH_PREFIX = "td:reply-batches:"
CANCEL_PREFIX = "td:cancel:"
WORKER_PREFIX = "td:workers:"
RATE_PREFIX = "td:ai:rate:"
DLQ_STREAM = "td:dlq"
DLQ_MAXLEN = 100_000
# One dead letter, also when Redis is at its memory limit (maxmemory with noeviction refuses every
# other write): it is small and rare, and the only record of an accepted question that got no
# answer, so `allow-oom` lets it through. The gateway runs the same script
# (libs/ai-bridge/src/lib/dead-letter.script.ts; test_config_protocol.py checks they match).
# KEYS: dead-letter stream. ARGV: maxLen (approximate), then the entry's field/value pairs.
DEAD_LETTER_LUA = """#!lua flags=allow-oom
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 2))
"""
DEAD_LETTER_REASONS = ("deadline_exceeded", "worker_error")

ERROR_CODES = ("deadline_exceeded", "worker_error", "cancelled", "bad_question")
QUESTION_FIELDS = ("id", "sessionId", "replyTo", "question", "deadline", "attempt", "traceId")

_DEADLINE_RE = re.compile(r"^[0-9]{10,16}$")
_ATTEMPT_RE = re.compile(r"^[0-9]+$")
_REPLY_TO_RE = re.compile(r"^td:replies:.+$", re.S)


def cancel_key(message_id: str) -> str:
    return f"{CANCEL_PREFIX}{message_id}"


def batch_channel(reply_to: str) -> str:
    """The batch channel of the instance whose reply channel is `reply_to` (td:replies:<id> -> td:reply-batches:<id>)."""
    return BATCH_PREFIX + reply_to[len(REPLY_PREFIX):]


def worker_key(worker_id: str) -> str:
    return f"{WORKER_PREFIX}{worker_id}"


@dataclass(frozen=True)
class Question:
    id: str
    session_id: str
    reply_to: str
    question: str
    deadline_ms: int
    attempt: int
    trace_id: str


class BadQuestion(ValueError):
    """A malformed stream entry. Carries what is needed to answer it, if anything."""

    def __init__(self, reason: str, message_id: str | None, session_id: str | None, reply_to: str | None):
        super().__init__(reason)
        self.reason = reason
        self.message_id = message_id
        self.session_id = session_id
        self.reply_to = reply_to

    @property
    def answerable(self) -> bool:
        return bool(self.message_id and self.session_id and self.reply_to and _REPLY_TO_RE.match(self.reply_to))


def _text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return str(v)


def parse_entry(fields: Mapping[Any, Any] | None) -> Question:
    """Turn a stream entry's fields into a Question, or raise BadQuestion."""
    f = {(_text(k) or ""): _text(v) for k, v in (fields or {}).items()}
    mid, sid, reply_to = f.get("id"), f.get("sessionId"), f.get("replyTo")

    def bad(reason: str) -> BadQuestion:
        return BadQuestion(reason, mid or None, sid or None, reply_to or None)

    missing = [k for k in QUESTION_FIELDS if not f.get(k)]
    if missing:
        raise bad(f"missing or empty fields: {', '.join(missing)}")
    assert mid is not None and sid is not None and reply_to is not None
    if len(mid) > 64 or len(sid) > 64:
        raise bad("id and sessionId must be at most 64 characters")
    if not _REPLY_TO_RE.match(reply_to):
        raise bad("replyTo must match td:replies:<instanceId>")
    deadline = f["deadline"] or ""
    if not _DEADLINE_RE.match(deadline):
        raise bad("deadline must be epoch milliseconds (10-16 digits)")
    attempt = f["attempt"] or ""
    if not _ATTEMPT_RE.match(attempt):
        raise bad("attempt must be a non-negative integer")
    trace_id = f["traceId"] or ""
    if len(trace_id) > 128:
        raise bad("traceId must be at most 128 characters")
    return Question(
        id=mid,
        session_id=sid,
        reply_to=reply_to,
        question=f["question"] or "",
        deadline_ms=int(deadline),
        attempt=int(attempt),
        trace_id=trace_id,
    )


def token_reply(message_id: str, session_id: str, seq: int, text: str) -> dict[str, Any]:
    return {"type": "token", "messageId": message_id, "sessionId": session_id, "seq": seq, "text": text}


def done_reply(message_id: str, session_id: str, tokens: int, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "done", "messageId": message_id, "sessionId": session_id, "tokens": tokens}
    if usage is not None:
        body["usage"] = usage
    return body


def error_reply(message_id: str, session_id: str, code: str, message: str) -> dict[str, Any]:
    if code not in ERROR_CODES:
        raise ValueError(f"unknown error code {code!r}")
    return {"type": "error", "messageId": message_id, "sessionId": session_id, "code": code, "message": message}


def reply_batch(replies: list[dict[str, Any]]) -> dict[str, Any]:
    """Several replies bound for one instance, in the order produced (schema ReplyBatch)."""
    return {"type": "batch", "replies": replies}


def heartbeat(
    worker_id: str, capacity_per_sec: float, throughput_per_sec: float, in_flight: int, answering: int, ts_ms: int,
    **measured: Any,
) -> dict[str, Any]:
    """`measured`: startsPerSec, serviceRatePerSec, ttftMs (meter.py), throttledUntil, model."""
    return {
        "workerId": worker_id,
        "capacityPerSec": capacity_per_sec,
        "throughputPerSec": throughput_per_sec,
        "inFlight": in_flight,
        "answering": answering,
        "ts": ts_ms,
        **measured,
    }


def dead_letter(q: "Question", reason: str, message: str, tokens_sent: int, failed_at_ms: int, by: str) -> dict[str, str]:
    """A question that did not get its answer, as the fields of a `td:dlq` entry (schema DeadLetter)."""
    return {
        "reason": reason,
        "message": message,
        "id": q.id,
        "sessionId": q.session_id,
        "replyTo": q.reply_to,
        "question": q.question,
        "deadline": str(q.deadline_ms),
        "attempt": str(q.attempt),
        "traceId": q.trace_id,
        "tokensSent": str(tokens_sent),
        "failedAt": str(failed_at_ms),
        "by": by,
    }
