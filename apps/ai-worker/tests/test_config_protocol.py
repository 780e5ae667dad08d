"""Settings validation and stream-entry parsing."""

from __future__ import annotations

import os
import socket

import pytest

from conftest import QUESTION, REPLY, REPLY_MESSAGE, question_fields, validator_for

from ai_worker import protocol as p
from ai_worker.config import ConfigError, load_settings


def test_defaults():
    s = load_settings({})
    assert s.redis_url == "redis://127.0.0.1:6379"
    assert (s.question_stream, s.consumer_group) == ("td:questions", "workers")
    assert s.worker_id == f"worker-{socket.gethostname()}-{os.getpid()}"
    # 100 answers/s x (0.2 s to the first token + 20 tokens at 50/s) going at once, and 0.5 s of starts.
    assert (s.concurrency, s.heartbeat_ms, s.heartbeat_ttl_ms, s.reply_batch_ms) == (60 + 50, 1000, 3000, 10)
    assert (s.capacity_per_sec, s.ttft_ms, s.tokens_per_sec, s.answer_tokens) == (100, 200, 50.0, 20)
    assert (s.host, s.port, s.log_level) == ("127.0.0.1", 8090, "info")
    assert s.shutdown_grace_ms == 5000


def test_every_bad_value_reported_together():
    env = {
        "REDIS_URL": "http://x",
        "WORKER_CONCURRENCY": "many",
        "AI_TOKENS_PER_SEC": "0",
        "WORKER_PORT": "70000",
        "LOG_LEVEL": "chatty",
        "WORKER_HEARTBEAT_MS": "5000",
    }
    with pytest.raises(ConfigError) as ei:
        load_settings(env)
    problems = ei.value.problems
    assert len(problems) == 6, problems
    for name in env:
        assert name in str(ei.value)


def test_values_parsed():
    s = load_settings({"WORKER_CONCURRENCY": "8", "AI_TOKENS_PER_SEC": "12.5", "LOG_LEVEL": "DEBUG", "WORKER_ID": "w1"})
    assert (s.concurrency, s.tokens_per_sec, s.log_level, s.worker_id) == (8, 12.5, "debug", "w1")


def test_concurrency_follows_the_capacity():
    # The answers going at once at the capacity (simulated: capacity x answer time) plus 0.5 s of starts.
    assert load_settings({"AI_CAPACITY_PER_SEC": "40"}).concurrency == 24 + 20
    assert load_settings({"AI_CAPACITY_PER_SEC": "10", "AI_TTFT_MS": "0", "AI_ANSWER_TOKENS": "100", "AI_TOKENS_PER_SEC": "10"}).concurrency == 100 + 5
    # A model server: the streams it may have open at once (AI_MAX_CONCURRENCY), plus the line.
    s = load_settings({"AI_BACKEND": "openai", "AI_BASE_URL": "http://127.0.0.1:1/v1", "AI_MODEL": "m", "AI_MAX_CONCURRENCY": "16", "AI_CAPACITY_PER_SEC": "8"})
    assert s.concurrency == 16 + 4
    # Set: as set.
    assert load_settings({"WORKER_CONCURRENCY": "3", "AI_CAPACITY_PER_SEC": "1000"}).concurrency == 3


def test_reply_batch_window():
    assert load_settings({"WORKER_REPLY_BATCH_MS": "0"}).reply_batch_ms == 0
    assert load_settings({"WORKER_REPLY_BATCH_MS": "25"}).reply_batch_ms == 25
    with pytest.raises(ConfigError) as ei:
        load_settings({"WORKER_REPLY_BATCH_MS": "5000"})
    assert "WORKER_REPLY_BATCH_MS" in str(ei.value)


def test_openai_backend_settings(tmp_path):
    assert load_settings({}).backend == "simulated"
    key = tmp_path / "key"
    key.write_text("sk-live-abc\n")
    s = load_settings({
        "AI_BACKEND": "OpenAI", "AI_BASE_URL": "http://127.0.0.1:8000/v1/", "AI_MODEL": "llama3.1:8b",
        "AI_API_KEY_FILE": str(key), "AI_MAX_TOKENS": "256", "AI_MAX_CONCURRENCY": "16", "AI_SYSTEM_PROMPT": "Be brief.",
    })
    assert (s.backend, s.base_url, s.model, s.api_key) == ("openai", "http://127.0.0.1:8000/v1", "llama3.1:8b", "sk-live-abc")
    assert (s.max_tokens, s.max_concurrency, s.system_prompt) == (256, 16, "Be brief.")
    assert (s.connect_timeout_ms, s.first_token_timeout_ms, s.stall_timeout_ms, s.stream_usage) == (5000, 20000, 10000, True)
    assert "sk-live" not in repr(s)


def test_openai_backend_bad_settings_reported_together_without_the_key(tmp_path):
    with pytest.raises(ConfigError) as ei:
        load_settings({"AI_BACKEND": "openai", "AI_API_KEY": "sk bad key", "AI_MAX_CONCURRENCY": "0", "AI_STALL_TIMEOUT_MS": "x"})
    text = str(ei.value)
    for part in ("AI_BASE_URL is required", "AI_MODEL is required", "AI_API_KEY=<hidden>", "AI_MAX_CONCURRENCY", "AI_STALL_TIMEOUT_MS"):
        assert part in text
    assert "sk bad" not in text
    with pytest.raises(ConfigError) as ei:
        load_settings({"AI_BACKEND": "gpt", "AI_BASE_URL": "ftp://x", "AI_API_KEY_FILE": str(tmp_path / "missing")})
    assert "AI_BACKEND" in str(ei.value) and "AI_BASE_URL" in str(ei.value) and "cannot be read" in str(ei.value)


def test_parse_entry_ok_with_bytes():
    f = question_fields(None)
    QUESTION.validate(f)
    q = p.parse_entry({k.encode(): v.encode() for k, v in f.items()})
    assert q.id == f["id"] and q.session_id == f["sessionId"] and q.reply_to == f["replyTo"]
    assert q.deadline_ms == int(f["deadline"]) and q.attempt == 1 and q.trace_id == f["traceId"]


@pytest.mark.parametrize(
    "over, answerable",
    [
        ({"question": None}, True),
        ({"deadline": "12"}, True),
        ({"attempt": "first"}, True),
        ({"replyTo": "elsewhere"}, False),
        ({"id": None}, False),
        ({"sessionId": ""}, False),
    ],
)
def test_parse_entry_rejects(over, answerable):
    f = question_fields(None, **over)
    assert not QUESTION.is_valid(f)
    with pytest.raises(p.BadQuestion) as ei:
        p.parse_entry(f)
    assert ei.value.answerable is answerable


def test_parse_entry_none_fields():
    with pytest.raises(p.BadQuestion) as ei:
        p.parse_entry(None)
    assert not ei.value.answerable


def test_reply_batch_matches_schema_and_names_the_batch_channel():
    batch = p.reply_batch([p.token_reply("m", "s", 0, "a "), p.token_reply("n", "t", 3, "b "), p.done_reply("m", "s", 1)])
    REPLY_MESSAGE.validate(batch)
    validator_for("ReplyBatch").validate(batch)
    assert not REPLY.is_valid(batch)
    assert not validator_for("ReplyBatch").is_valid(p.reply_batch([]))
    REPLY_MESSAGE.validate(p.token_reply("m", "s", 0, "a "))  # a single reply, as before
    assert p.batch_channel("td:replies:gw0-1-abc") == "td:reply-batches:gw0-1-abc"


def test_reply_builders_match_schema():
    REPLY.validate(p.token_reply("m", "s", 0, "word "))
    REPLY.validate(p.done_reply("m", "s", 3))
    for code in p.ERROR_CODES:
        REPLY.validate(p.error_reply("m", "s", code, "x"))
    with pytest.raises(ValueError):
        p.error_reply("m", "s", "oops", "x")
    assert not REPLY.is_valid({**p.done_reply("m", "s", 3), "extra": 1})


def test_accepts_the_gateways_pino_level_names():
    assert load_settings({"LOG_LEVEL": "warn"}).log_level == "warning"
    assert load_settings({"LOG_LEVEL": "fatal"}).log_level == "critical"
    assert load_settings({"LOG_LEVEL": "trace"}).log_level == "debug"


def test_the_dead_letter_script_is_the_gateways():
    """Both sides write dead letters with one script (allow-oom): the worker's is the gateway's text."""
    from conftest import APP_DIR

    ts = (APP_DIR.parents[1] / "libs" / "ai-bridge" / "src" / "lib" / "dead-letter.script.ts").read_text()
    assert f"DEAD_LETTER_LUA = `{p.DEAD_LETTER_LUA}`" in ts
