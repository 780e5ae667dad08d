"""AI_BACKEND=openai against OpenAI-compatible servers nobody here wrote (llmock, mockllm; see
upstreams.py), through the real worker and a real Redis: answers, usage, and every upstream fault."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, AsyncIterator, Callable

import pytest

from ai_worker.protocol import DLQ_STREAM, cancel_key, worker_key

from conftest import HEARTBEAT, ask, question_fields, wait_for
from upstreams import FakeUnacceptingServer, Llmock, Mockllm

QUESTION = "how high is the dam?"
DAM_ANSWER = "The dam is forty metres high."
# llmock's echo style answers "Hello! You said: <question>", one chunk per word.
LONG_QUESTION = " ".join(f"word{i}" for i in range(60))


@pytest.fixture(scope="module")
def llmock() -> Any:
    server = Llmock(chunk_delay_ms=20)
    yield server
    server.stop()


@pytest.fixture
def upstream(llmock: Llmock) -> Llmock:
    llmock.reset()
    return llmock


@pytest.fixture(scope="module")
def mockllm() -> Any:
    server = Mockllm(DAM_ANSWER)
    yield server
    server.stop()


@pytest.fixture
def openai_settings(make_settings: Callable[..., Any]) -> Callable[..., Any]:
    def make(base_url: str, **env: str) -> Any:
        return make_settings(**{"AI_BACKEND": "openai", "AI_BASE_URL": base_url, "AI_MODEL": "m-test", **env})

    return make


async def answer_of(r: Any, s: Any, subscribe: Any, **over: Any) -> tuple[dict[str, str], list[dict[str, Any]]]:
    q = question_fields(s, **over)
    replies = await subscribe(q["replyTo"])
    await ask(r, s, q)
    return q, await replies.until_end(timeout=20)


def text_of(msgs: list[dict[str, Any]]) -> str:
    return "".join(m["text"] for m in msgs if m["type"] == "token")


async def dead_letters(r: Any, message_id: str) -> list[dict[str, str]]:
    return [f for _, f in await r.xrange(DLQ_STREAM) if f["id"] == message_id]


# ---- answers and usage ---------------------------------------------------------------


async def test_mockllm_streams_the_answer_and_the_worker_counts_its_usage(r, openai_settings, start_worker, subscribe, mockllm):
    # mockllm streams one character per chunk and sends no usage chunk: the worker counts.
    s = openai_settings(mockllm.base_url, AI_MODEL="mock-llm")
    await start_worker(s)
    q, msgs = await answer_of(r, s, subscribe, question=QUESTION)
    assert text_of(msgs) == DAM_ANSWER
    assert [m["seq"] for m in msgs[:-1]] == list(range(len(DAM_ANSWER)))
    assert msgs[-1] == {
        "type": "done", "messageId": q["id"], "sessionId": q["sessionId"], "tokens": len(DAM_ANSWER),
        # Counted: the 5 words of the question and its "?"; one token per chunk.
        "usage": {"model": "mock-llm", "promptTokens": 6, "completionTokens": len(DAM_ANSWER), "counted": True},
    }


async def test_llmock_usage_chunk_is_reported_in_done_and_metrics_per_model(r, openai_settings, start_worker, subscribe, upstream, tmp_path, caplog):
    key_file = tmp_path / "key"
    key_file.write_text("sk-test-secret-0123456789\n")
    s = openai_settings(upstream.base_url, AI_API_KEY_FILE=str(key_file), AI_SYSTEM_PROMPT="Answer briefly.", AI_MAX_TOKENS="77")
    assert "sk-test-secret" not in repr(s)
    caplog.set_level(logging.DEBUG)
    w = await start_worker(s)
    q, msgs = await answer_of(r, s, subscribe, question=QUESTION)
    assert text_of(msgs) == f"Hello! You said: Answer briefly. {QUESTION}"
    done = msgs[-1]
    assert done["type"] == "done" and done["tokens"] == len(msgs) - 1
    usage = done["usage"]
    assert usage["model"] == "m-test" and usage["counted"] is False
    assert usage["promptTokens"] > 0 and usage["completionTokens"] > 0

    [req] = upstream.requests()
    body = req["body"]
    assert body["model"] == "m-test" and body["stream"] is True and body["max_tokens"] == 77
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": QUESTION}]

    # The metrics are counted once the answer ended, after its done went out.
    await wait_for(lambda: w.finished == 1)
    text = w.metrics.render().decode()
    assert f'td_worker_tokens_total{{kind="completion",model="m-test"}} {float(usage["completionTokens"])}' in text
    assert f'td_worker_tokens_total{{kind="prompt",model="m-test"}} {float(usage["promptTokens"])}' in text
    assert 'td_worker_answers_total{model="m-test",outcome="done"} 1.0' in text
    assert "sk-test-secret" not in caplog.text


async def test_heartbeat_reports_the_model_and_measured_fields(r, openai_settings, start_worker, subscribe, upstream):
    s = openai_settings(upstream.base_url)
    w = await start_worker(s)
    await answer_of(r, s, subscribe)

    async def beat() -> dict[str, Any] | None:
        raw = await r.get(worker_key(w.worker_id))
        hb = json.loads(raw) if raw else None
        return hb if hb and hb["startsPerSec"] > 0 else None

    hb = await wait_for(beat)
    HEARTBEAT.validate(hb)
    assert hb["model"] == "m-test" and hb["throttledUntil"] == 0
    # One answer in the window: no service rate (never held back), too few for a TTFT.
    assert hb["serviceRatePerSec"] is None and hb["ttftMs"] is None


# ---- 429 ---------------------------------------------------------------------------------


async def test_upstream_429_retry_after_is_honoured_reported_and_lowers_concurrency(r, openai_settings, start_worker, subscribe, upstream):
    upstream.script({"type": "fail", "status": 429, "retry_after": 2})
    s = openai_settings(upstream.base_url, AI_MAX_CONCURRENCY="8")
    w = await start_worker(s)
    q = question_fields(s)
    replies = await subscribe(q["replyTo"])
    await ask(r, s, q)

    # While the Retry-After runs, the heartbeat says until when nothing starts.
    async def throttled() -> dict[str, Any] | None:
        raw = await r.get(worker_key(w.worker_id))
        hb = json.loads(raw) if raw else None
        return hb if hb and hb["throttledUntil"] > 0 else None

    hb = await wait_for(throttled)
    HEARTBEAT.validate(hb)
    assert hb["throttledUntil"] > int(time.time() * 1000)

    msgs = await replies.until_end(timeout=20)
    assert msgs[-1]["type"] == "done" and text_of(msgs).startswith("Hello!")
    first, second = upstream.requests()
    assert first["status"] == 429 and second["status"] == 200
    # Honoured: the second request started no sooner than 2 s after the 429 (one machine, one monotonic clock).
    assert second["started_at"] - first["ended_at"] >= 2.0 - 0.05
    # Halved on the 429 (8 -> 4), one back for the answer that completed.
    assert w.backend.limit == 5
    assert w.backend.throttled_until_ms() == 0
    assert 'td_worker_upstream_faults_total{kind="throttled",model="m-test"} 1.0' in w.metrics.render().decode()


async def test_upstream_429_past_the_deadline_ends_in_deadline_exceeded_and_the_dlq(r, openai_settings, start_worker, subscribe, upstream):
    upstream.script({"type": "fail", "status": 429, "retry_after": 30})
    s = openai_settings(upstream.base_url)
    await start_worker(s)
    q, msgs = await answer_of(r, s, subscribe, deadline=int(time.time() * 1000) + 1500)
    assert [m["type"] for m in msgs] == ["error"] and msgs[0]["code"] == "deadline_exceeded"
    assert [d["reason"] for d in await wait_for(lambda: dead_letters(r, q["id"]))] == ["deadline_exceeded"]
    assert len(upstream.requests()) == 1  # never asked again inside the Retry-After


# ---- faults that fail the answer (worker_error: counted by the gateways' breaker, dead-lettered) ----


@pytest.mark.parametrize(
    "behavior, kind, tokens_before",
    [
        ({"type": "fail", "status": 503}, "status_5xx", 0),
        ({"type": "fail", "status": 500}, "status_5xx", 0),
        ({"type": "stream_fault", "kind": "disconnect", "after_chunks": 4}, "broken_stream", 3),
        ({"type": "stream_fault", "kind": "truncate", "after_chunks": 4}, "broken_stream", 3),
        ({"type": "stream_fault", "kind": "malformed", "after_chunks": 3}, "malformed", 2),
    ],
    ids=["503", "500", "disconnect", "truncate", "malformed"],
)
async def test_upstream_fault_is_a_worker_error_dead_lettered_and_the_worker_goes_on(
    r, openai_settings, start_worker, subscribe, upstream, behavior, kind, tokens_before
):
    upstream.script(behavior)
    s = openai_settings(upstream.base_url)
    w = await start_worker(s)
    q, msgs = await answer_of(r, s, subscribe)
    assert [m["type"] for m in msgs] == ["token"] * tokens_before + ["error"]
    assert msgs[-1]["code"] == "worker_error" and "model server" in msgs[-1]["message"]
    assert [d["reason"] for d in await wait_for(lambda: dead_letters(r, q["id"]))] == ["worker_error"]
    assert f'td_worker_upstream_faults_total{{kind="{kind}",model="m-test"}} 1.0' in w.metrics.render().decode()
    # Never a crash: the next question is answered.
    _, again = await answer_of(r, s, subscribe)
    assert again[-1]["type"] == "done"


async def test_connect_timeout_is_a_worker_error(r, openai_settings, start_worker, subscribe):
    fake = FakeUnacceptingServer()
    try:
        s = openai_settings(fake.base_url, AI_CONNECT_TIMEOUT_MS="200")
        await start_worker(s)
        _, msgs = await answer_of(r, s, subscribe)
        assert [m["type"] for m in msgs] == ["error"] and msgs[0]["code"] == "worker_error"
        assert "could not connect to the model server within 200 ms" in msgs[0]["message"]
    finally:
        fake.close()


async def test_first_token_timeout_closes_the_request(r, openai_settings, start_worker, subscribe, upstream):
    # The model accepted the request and says nothing (LiteLLM #19909).
    upstream.script({"type": "slow_first_token", "seconds": 20})
    s = openai_settings(upstream.base_url, AI_FIRST_TOKEN_TIMEOUT_MS="300")
    await start_worker(s)
    _, msgs = await answer_of(r, s, subscribe)
    assert [m["type"] for m in msgs] == ["error"] and msgs[0]["code"] == "worker_error"
    assert "no first token within 300 ms" in msgs[0]["message"]
    [req] = await wait_for(lambda: [x for x in upstream.requests() if x["ended_at"] > x["started_at"]])
    assert req["completed"] is False and req["duration"] < 20


async def test_stall_mid_answer_times_out_and_closes_the_stream(r, openai_settings, start_worker, subscribe, upstream):
    upstream.script({"type": "stream_fault", "kind": "stall", "after_chunks": 4, "stall_seconds": 20})
    s = openai_settings(upstream.base_url, AI_STALL_TIMEOUT_MS="300")
    await start_worker(s)
    q, msgs = await answer_of(r, s, subscribe)
    assert [m["type"] for m in msgs] == ["token"] * 3 + ["error"]
    assert msgs[-1]["code"] == "worker_error" and "sent nothing for 300 ms" in msgs[-1]["message"]
    assert [d["reason"] for d in await wait_for(lambda: dead_letters(r, q["id"]))] == ["worker_error"]
    [req] = upstream.requests()
    # The worker hung up during the stall, long before it would have ended.
    assert req["completed"] is False and req["stall_waited"] is not None and req["stall_waited"] < 20


# ---- cancel reaches the model server ---------------------------------------------------


async def test_cancel_closes_the_upstream_stream_within_one_token(r, openai_settings, start_worker, subscribe, upstream):
    s = openai_settings(upstream.base_url)
    await start_worker(s)
    q = question_fields(s, question=LONG_QUESTION)
    replies = await subscribe(q["replyTo"])
    await ask(r, s, q)
    for _ in range(5):
        assert (await replies.next(timeout=10))["type"] == "token"
    await r.set(cancel_key(q["id"]), "1", px=60_000)
    msgs = await replies.until_end(timeout=10)
    published = sum(1 for m in msgs if m["type"] == "token")
    assert msgs[-1]["code"] == "cancelled"
    # Tokens that were on their way when the cancel was set: at most one.
    assert published - 5 <= 1
    [req] = await wait_for(lambda: [x for x in upstream.requests() if x["completed"] is False])
    # The role chunk, the tokens published, the one the worker held when it saw the cancel, and at
    # most one the server had already written: never the rest of the 62-word answer.
    assert req["chunks_sent"] <= 1 + published + 2
    assert req["chunks_sent"] < 20


async def test_deadline_mid_answer_closes_the_upstream_stream(r, openai_settings, start_worker, subscribe, upstream):
    upstream.script({"type": "slow_first_token", "seconds": 20})
    s = openai_settings(upstream.base_url)
    await start_worker(s)
    _, msgs = await answer_of(r, s, subscribe, deadline=int(time.time() * 1000) + 800)
    assert [m["type"] for m in msgs] == ["error"] and msgs[0]["code"] == "deadline_exceeded"
    [req] = await wait_for(lambda: [x for x in upstream.requests() if x["ended_at"] > x["started_at"]])
    assert req["completed"] is False and req["duration"] < 20
