"""Settings from the environment, validated once at start.

Every bad value is collected and reported together in one ConfigError.
"""

from __future__ import annotations

import math
import os
import re
import socket
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, TypeVar

from . import faults as f

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
BACKENDS = ("simulated", "openai")
# The gateway's pino names, so one LOG_LEVEL can configure the whole stack.
PINO_LEVELS = {"trace": "debug", "warn": "warning", "fatal": "critical", "silent": "critical"}

T = TypeVar("T")


class ConfigError(ValueError):
    """Raised with every problem found in the environment at once."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__(
            "invalid ai-worker configuration:\n" + "\n".join(f"  - {p}" for p in self.problems)
        )


@dataclass(frozen=True)
class Settings:
    redis_url: str = "redis://127.0.0.1:6379"
    question_stream: str = "td:questions"
    consumer_group: str = "workers"
    worker_id: str = ""
    # None: what the backend can have going at its capacity plus half a second of starts (see concurrency_for).
    concurrency: int | None = None
    reply_batch_ms: int = 10
    block_ms: int = 1000
    heartbeat_ms: int = 1000
    heartbeat_ttl_ms: int = 3000
    shutdown_grace_ms: int = 5000
    capacity_per_sec: int = 100
    ttft_ms: int = 200
    tokens_per_sec: float = 50.0
    answer_tokens: int = 20
    host: str = "127.0.0.1"
    port: int = 8090
    log_level: str = "info"
    # Fault injection (see faults.py); None = no override / not set.
    fault_ttft_ms: int | None = None
    fault_tokens_per_sec: float | None = None
    fault_error_ratio: float = 0.0
    fault_stall: bool = False
    fault_crash_after_tokens: int | None = None
    fault_seed: int | None = None
    # Bearer token of /admin/*; None: the admin endpoints do not exist (404).
    admin_token: str | None = field(default=None, repr=False)
    # The answer backend (see backend.py and openai_backend.py).
    backend: str = "simulated"
    base_url: str = ""
    # Never logged nor shown in repr: AI_API_KEY, or the contents of AI_API_KEY_FILE.
    api_key: str | None = field(default=None, repr=False)
    model: str = ""
    max_tokens: int = 512
    max_concurrency: int = 64
    system_prompt: str | None = None
    connect_timeout_ms: int = 5000
    first_token_timeout_ms: int = 20000
    stall_timeout_ms: int = 10000
    stream_usage: bool = True
    # Not read from the environment: the protocol fixes it; tests may replace it.
    rate_key_prefix: str = "td:ai:rate:"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        return load_settings(env)


def default_worker_id() -> str:
    return f"worker-{socket.gethostname()}-{os.getpid()}"


def _api_key(env: Mapping[str, str], problems: list[str]) -> str | None:
    """AI_API_KEY, or the first line of the file AI_API_KEY_FILE names (a mounted secret); never echoed."""
    key = (env.get("AI_API_KEY") or "").strip()
    path = (env.get("AI_API_KEY_FILE") or "").strip()
    if key and path:
        problems.append("AI_API_KEY and AI_API_KEY_FILE are both set: use one")
        return None
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                key = fh.readline().strip()
        except OSError as e:
            problems.append(f"AI_API_KEY_FILE={path!r}: cannot be read ({e.strerror})")
            return None
        if not key:
            problems.append(f"AI_API_KEY_FILE={path!r}: the file is empty")
            return None
    if key and not re.fullmatch(r"[!-~]{1,4096}", key):
        problems.append("AI_API_KEY=<hidden>: must be 1-4096 visible ASCII characters without spaces")
        return None
    return key or None


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate all settings; raise ConfigError listing every bad value."""
    env = os.environ if env is None else env
    problems: list[str] = []

    def get(
        name: str,
        default: T,
        parse: Callable[[str], T],
        check: Callable[[T], str | None] | None = None,
        secret: bool = False,
    ) -> T:
        raw = env.get(name)
        if raw is None or raw.strip() == "":
            return default
        shown = "<hidden>" if secret else repr(raw)  # never echo a secret into logs
        try:
            value = parse(raw.strip())
        except (TypeError, ValueError):
            problems.append(f"{name}={shown}: not a valid {getattr(parse, '__name__', 'value')}")
            return default
        if check is not None:
            msg = check(value)
            if msg:
                problems.append(f"{name}={shown}: {msg}")
                return default
        return value

    def at_least(lo: float) -> Callable[[float], str | None]:
        return lambda v: None if v >= lo else f"must be >= {lo:g}"

    def between(lo: int, hi: int) -> Callable[[int], str | None]:
        return lambda v: None if lo <= v <= hi else f"must be between {lo} and {hi}"

    def name_like(v: str) -> str | None:
        return None if re.fullmatch(r"[^\s]{1,128}", v) else "must be 1-128 characters without whitespace"

    def redis_url(v: str) -> str | None:
        return None if re.match(r"^(redis|rediss|unix)://", v) else "must start with redis://, rediss:// or unix://"

    def log_level(v: str) -> str | None:
        return None if v in LOG_LEVELS else f"must be one of {', '.join(LOG_LEVELS)}"

    def admin_token(v: str) -> str | None:
        # What an HTTP header can carry as one Bearer token: visible ASCII, no spaces.
        return None if re.fullmatch(r"[!-~]{1,1024}", v) else "must be 1-1024 visible ASCII characters without spaces"

    def http_url(v: str) -> str | None:
        return None if re.fullmatch(r"https?://[^\s/]+(/[^\s]*)?", v) else "must be an http:// or https:// URL"

    def backend_name(v: str) -> str | None:
        return None if v in BACKENDS else f"must be one of {', '.join(BACKENDS)}"

    def lower(v: str) -> str:
        return v.lower()

    def level_name(v: str) -> str:
        return PINO_LEVELS.get(v.lower(), v.lower())

    s = Settings(
        redis_url=get("REDIS_URL", Settings.redis_url, str, redis_url),
        question_stream=get("AI_QUESTION_STREAM", Settings.question_stream, str, name_like),
        consumer_group=get("AI_CONSUMER_GROUP", Settings.consumer_group, str, name_like),
        worker_id=get("WORKER_ID", default_worker_id(), str, name_like),
        concurrency=get("WORKER_CONCURRENCY", None, int, between(1, 100_000)),
        reply_batch_ms=get("WORKER_REPLY_BATCH_MS", Settings.reply_batch_ms, int, between(0, 1_000)),
        block_ms=get("WORKER_BLOCK_MS", Settings.block_ms, int, between(10, 60_000)),
        heartbeat_ms=get("WORKER_HEARTBEAT_MS", Settings.heartbeat_ms, int, between(50, 60_000)),
        heartbeat_ttl_ms=get("WORKER_HEARTBEAT_TTL_MS", Settings.heartbeat_ttl_ms, int, between(100, 600_000)),
        shutdown_grace_ms=get("WORKER_SHUTDOWN_GRACE_MS", Settings.shutdown_grace_ms, int, between(0, 600_000)),
        capacity_per_sec=get("AI_CAPACITY_PER_SEC", Settings.capacity_per_sec, int, between(1, 1_000_000)),
        ttft_ms=get("AI_TTFT_MS", Settings.ttft_ms, int, between(0, 600_000)),
        tokens_per_sec=get("AI_TOKENS_PER_SEC", Settings.tokens_per_sec, float, at_least(0.001)),
        answer_tokens=get("AI_ANSWER_TOKENS", Settings.answer_tokens, int, between(0, 100_000)),
        host=get("WORKER_HOST", Settings.host, str, name_like),
        port=get("WORKER_PORT", Settings.port, int, between(0, 65535)),
        log_level=get("LOG_LEVEL", Settings.log_level, level_name, log_level),
        fault_ttft_ms=get("AI_FAULT_TTFT_MS", None, int, f.check_ttft_ms),
        fault_tokens_per_sec=get("AI_FAULT_TOKENS_PER_SEC", None, float, f.check_tokens_per_sec),
        fault_error_ratio=get("AI_FAULT_ERROR_RATIO", Settings.fault_error_ratio, float, f.check_error_ratio),
        fault_stall=get("AI_FAULT_STALL", Settings.fault_stall, f.parse_bool),
        fault_crash_after_tokens=get("AI_FAULT_CRASH_AFTER_TOKENS", None, int, f.check_crash_after_tokens),
        fault_seed=get("AI_FAULT_SEED", None, int),
        admin_token=get("WORKER_ADMIN_TOKEN", None, str, admin_token, secret=True),
        backend=get("AI_BACKEND", Settings.backend, lower, backend_name),
        base_url=get("AI_BASE_URL", Settings.base_url, str, http_url).rstrip("/"),
        api_key=_api_key(env, problems),
        model=get("AI_MODEL", Settings.model, str, name_like),
        max_tokens=get("AI_MAX_TOKENS", Settings.max_tokens, int, between(1, 1_000_000)),
        max_concurrency=get("AI_MAX_CONCURRENCY", Settings.max_concurrency, int, between(1, 100_000)),
        system_prompt=env.get("AI_SYSTEM_PROMPT") or None,
        connect_timeout_ms=get("AI_CONNECT_TIMEOUT_MS", Settings.connect_timeout_ms, int, between(1, 600_000)),
        first_token_timeout_ms=get("AI_FIRST_TOKEN_TIMEOUT_MS", Settings.first_token_timeout_ms, int, between(1, 600_000)),
        stall_timeout_ms=get("AI_STALL_TIMEOUT_MS", Settings.stall_timeout_ms, int, between(1, 600_000)),
        stream_usage=get("AI_STREAM_USAGE", Settings.stream_usage, f.parse_bool),
    )
    if s.backend == "openai":
        if not s.base_url:
            problems.append("AI_BASE_URL is required with AI_BACKEND=openai (for example http://127.0.0.1:8000/v1)")
        if not s.model:
            problems.append("AI_MODEL is required with AI_BACKEND=openai")
    if s.heartbeat_ttl_ms <= s.heartbeat_ms:
        problems.append(
            f"WORKER_HEARTBEAT_TTL_MS ({s.heartbeat_ttl_ms}) must be greater than WORKER_HEARTBEAT_MS ({s.heartbeat_ms})"
        )
    if problems:
        raise ConfigError(problems)
    if s.concurrency is None:
        s = replace(s, concurrency=concurrency_for(s))
    return s


# Questions a worker takes beyond those it answers: this many seconds of starts at its capacity.
LINE_S = 0.5


def concurrency_for(s: Settings) -> int:
    """WORKER_CONCURRENCY's default: the answers the backend has going at once at its capacity, plus
    a line of LINE_S of starts. The rest of the queue stays in the Redis stream, in order, where every
    worker can take it and the gateways' gate counts it; a worker that took far more than it can start
    would hold questions another worker could answer sooner."""
    line = math.ceil(s.capacity_per_sec * LINE_S)
    if s.backend == "openai":
        answering = s.max_concurrency
    else:
        answer_s = s.ttft_ms / 1000.0 + s.answer_tokens / s.tokens_per_sec
        answering = math.ceil(round(s.capacity_per_sec * answer_s, 6))
    return max(1, min(100_000, answering + line))
