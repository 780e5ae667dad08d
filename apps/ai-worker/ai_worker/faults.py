"""Fault injection for tests and demos: slow answers, failed answers, a stall, a crash.

One `Faults` object per process, shared by the worker, the simulated backend and the
admin endpoints. Its initial values come from the AI_FAULT_* settings; `PUT /admin/faults`
and `DELETE /admin/faults` change it at run time. Where each fault acts:

- `ttft_ms`, `tokens_per_sec`: overrides of AI_TTFT_MS / AI_TOKENS_PER_SEC, read by the
  simulated backend (TTFT when an answer starts producing, the speed before every token).
- `error_ratio`: decided once per answer when it is admitted (one draw of the seeded
  random generator per answer); a failing answer publishes its first token, then ends with
  `error` `worker_error` and is ACKed (an answer with no tokens ends with the error instead
  of `done`).
- `stall`: while true no token (and no `done`) is published; answers keep honouring their
  deadline and the cancel key; they continue where they were when it turns false.
- `crash_after_tokens`: `os._exit(137)` once that many tokens were published, counted
  from when the value was set (0: at the next token, before it is published). No
  cleanup: no ACK, no error reply, no heartbeat delete. Exactly that many go out even
  with answers publishing concurrently (see `before_token`).

The values accepted here and from the environment share the checks below.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import sys
from typing import Any, Callable, Mapping

from .jsonlog import event

log = logging.getLogger("ai_worker.faults")

CRASH_EXIT_CODE = 137
CRASH_POLL_S = 0.005

# Bounds shared by the environment (config.py) and PUT /admin/faults.
TTFT_MS_MAX = 600_000
TOKENS_PER_SEC_MIN = 0.001
TOKENS_PER_SEC_MAX = 1_000_000.0
CRASH_AFTER_TOKENS_MAX = 1_000_000_000

# JSON field name -> attribute name, in the order they are shown.
FIELDS = {
    "ttftMs": "ttft_ms",
    "tokensPerSec": "tokens_per_sec",
    "errorRatio": "error_ratio",
    "stall": "stall",
    "crashAfterTokens": "crash_after_tokens",
}


# ---- checks (return a problem text, or None when the value is fine) ----------------


def check_ttft_ms(v: int) -> str | None:
    return None if 0 <= v <= TTFT_MS_MAX else f"must be between 0 and {TTFT_MS_MAX}"


def check_tokens_per_sec(v: float) -> str | None:
    if not math.isfinite(v) or not TOKENS_PER_SEC_MIN <= v <= TOKENS_PER_SEC_MAX:
        return f"must be between {TOKENS_PER_SEC_MIN:g} and {TOKENS_PER_SEC_MAX:.0f}"
    return None


def check_error_ratio(v: float) -> str | None:
    return None if math.isfinite(v) and 0.0 <= v <= 1.0 else "must be between 0 and 1"


def check_crash_after_tokens(v: int) -> str | None:
    return None if 0 <= v <= CRASH_AFTER_TOKENS_MAX else f"must be between 0 and {CRASH_AFTER_TOKENS_MAX}"


def parse_bool(raw: str) -> bool:
    """true/false (also 1/0, yes/no, on/off), any case."""
    v = raw.strip().lower()
    if v in ("true", "1", "yes", "on"):
        return True
    if v in ("false", "0", "no", "off"):
        return False
    raise ValueError(raw)


parse_bool.__name__ = "boolean (true/false)"


class FaultsError(ValueError):
    """A PUT body that cannot be applied; `problems` lists every reason."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _float(v: int | float) -> float:
    try:
        return float(v)
    except OverflowError:  # a huge JSON integer
        return math.inf


def parse_patch(body: Any) -> dict[str, Any]:
    """Check a PUT /admin/faults body; return {attribute: new value} or raise FaultsError.

    Any subset of the FIELDS keys; null clears an override (ttftMs, tokensPerSec,
    crashAfterTokens -> none, errorRatio -> 0, stall -> false).
    """
    if not isinstance(body, dict):
        raise FaultsError([f"the body must be a JSON object with any of: {', '.join(FIELDS)}"])
    problems: list[str] = []
    unknown = [k for k in body if k not in FIELDS]
    if unknown:
        problems.append(f"unknown fields: {', '.join(map(str, unknown))} (allowed: {', '.join(FIELDS)})")
    out: dict[str, Any] = {}
    for key, attr in FIELDS.items():
        if key not in body:
            continue
        v = body[key]
        if v is None:
            out[attr] = {"error_ratio": 0.0, "stall": False}.get(attr)
            continue
        msg: str | None
        if attr == "ttft_ms":
            msg = check_ttft_ms(v) if _is_int(v) else "must be an integer (milliseconds) or null"
        elif attr == "tokens_per_sec":
            msg = check_tokens_per_sec(_float(v)) if _is_number(v) else "must be a number or null"
            v = _float(v) if msg is None else v
        elif attr == "error_ratio":
            msg = check_error_ratio(_float(v)) if _is_number(v) else "must be a number between 0 and 1, or null"
            v = _float(v) if msg is None else v
        elif attr == "stall":
            msg = None if isinstance(v, bool) else "must be true or false (or null)"
        else:  # crash_after_tokens
            msg = check_crash_after_tokens(v) if _is_int(v) else "must be an integer or null"
        if msg:
            problems.append(f"{key}={_show(v)}: {msg}")
        else:
            out[attr] = v
    if problems:
        raise FaultsError(problems)
    return out


def _show(v: Any) -> str:
    text = repr(v) if not isinstance(v, str) else f'"{v}"'
    return text if len(text) <= 40 else text[:37] + "..."


class Faults:
    """The current faults of this process (see the module docstring)."""

    def __init__(
        self,
        *,
        ttft_ms: int | None = None,
        tokens_per_sec: float | None = None,
        error_ratio: float = 0.0,
        stall: bool = False,
        crash_after_tokens: int | None = None,
        seed: int | None = None,
        exit: Callable[[int], Any] = os._exit,
    ):
        self.ttft_ms = ttft_ms
        self.tokens_per_sec = tokens_per_sec
        self.error_ratio = error_ratio
        self._stall = False
        self._unstalled = asyncio.Event()
        self._unstalled.set()
        self.stall = stall
        self.crash_after_tokens = crash_after_tokens
        self.tokens_since_crash_set = 0  # published since crash_after_tokens was set
        self._turns = 0  # tokens allowed to start publishing since then
        self.seed = seed
        self.rng = random.Random(seed)
        self._exit = exit

    @classmethod
    def from_settings(cls, settings: Any) -> "Faults":
        return cls(
            ttft_ms=settings.fault_ttft_ms,
            tokens_per_sec=settings.fault_tokens_per_sec,
            error_ratio=settings.fault_error_ratio,
            stall=settings.fault_stall,
            crash_after_tokens=settings.fault_crash_after_tokens,
            seed=settings.fault_seed,
        )

    # ---- state -------------------------------------------------------------------

    @property
    def stall(self) -> bool:
        return self._stall

    @stall.setter
    def stall(self, value: bool) -> None:
        self._stall = bool(value)
        if self._stall:
            self._unstalled.clear()
        else:
            self._unstalled.set()

    @property
    def active(self) -> bool:
        return self.snapshot() != Faults().snapshot()

    def snapshot(self) -> dict[str, Any]:
        """The JSON shape of GET /admin/faults (and /health's "faults")."""
        return {key: getattr(self, attr) for key, attr in FIELDS.items()}

    def apply(self, changes: Mapping[str, Any]) -> None:
        """Set attributes from parse_patch(); setting crash_after_tokens restarts its count."""
        for attr, value in changes.items():
            if attr not in FIELDS.values():
                raise KeyError(attr)
            setattr(self, attr, value)
        if "crash_after_tokens" in changes:
            self.tokens_since_crash_set = 0
            self._turns = 0

    def reset(self) -> None:
        self.apply({attr: None for attr in FIELDS.values()} | {"error_ratio": 0.0, "stall": False})

    # ---- used by the answer path -------------------------------------------------

    def roll_error(self) -> bool:
        """One draw per answer: should this answer fail with worker_error?"""
        draw = self.rng.random()
        return draw < self.error_ratio

    async def wait_unstalled(self, timeout: float) -> None:
        """Return when the stall ends or after `timeout` seconds, whichever comes first."""
        if not self._stall:
            return
        try:
            async with asyncio.timeout(timeout):
                await self._unstalled.wait()
        except TimeoutError:
            pass

    async def before_token(self) -> None:
        """Called before a token is published; with crash_after_tokens, takes a turn.

        Concurrent answers publish at the same time, so a token may only start out while
        fewer than crash_after_tokens turns were handed out; once all are, it waits for
        them to be published (the last one crashes the process), so exactly that many go
        out. With 0, the next token crashes before it is published.
        """
        while (limit := self.crash_after_tokens) is not None:
            if self.tokens_since_crash_set >= limit:
                self._crash()
                return  # only with a test exit function
            if self._turns < limit:
                self._turns += 1
                return
            await asyncio.sleep(CRASH_POLL_S)

    def token_published(self) -> None:
        """Called after a token is published: counts it, crashes when the count is reached."""
        self.tokens_since_crash_set += 1
        if self.crash_after_tokens is not None and self.tokens_since_crash_set >= self.crash_after_tokens:
            self._crash()

    def token_not_published(self) -> None:
        """Called when a publish failed or was cancelled: its turn goes back."""
        self._turns = max(0, self._turns - 1)

    def _crash(self) -> None:
        event(
            log, logging.CRITICAL, "fault injection: crashing",
            exitCode=CRASH_EXIT_CODE, crashAfterTokens=self.crash_after_tokens,
            tokensPublished=self.tokens_since_crash_set,
        )
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        self._exit(CRASH_EXIT_CODE)
