"""The worker's Prometheus metrics (GET /metrics), on a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.tokens = Counter(
            "td_worker_tokens", "Tokens of finished answers, by model and kind (prompt, completion)",
            ["model", "kind"], registry=r,
        )
        self.answers = Counter(
            "td_worker_answers", "Answers ended, by model and outcome (done, worker_error, deadline_exceeded, cancelled)",
            ["model", "outcome"], registry=r,
        )
        self.upstream_faults = Counter(
            "td_worker_upstream_faults",
            "Faults of the model server, by model and kind (connect, connect_timeout, first_token_timeout, stall, "
            "status_5xx, status_4xx, broken_stream, malformed, upstream_error, throttled)",
            ["model", "kind"], registry=r,
        )
        self.ttft = Histogram(
            "td_worker_ttft_seconds", "Time from an answer's start (past the capacity limit) to its first token, by model",
            ["model"], buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 30), registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
