"""What a worker measurably does, over a sliding window: what its heartbeat reports.

The gateways' AI gate learns the real rate from these numbers instead of trusting a declared
capacity. A start rate alone says only what was asked: on a quiet stack it is tiny, and dividing
a queue by it refused questions on an idle stack. So the meter also keeps the time during which
the backend held questions back (its limiter or concurrency said "not yet"): the starts made
then are paced by the backend, and their rate is its service rate.
"""

from __future__ import annotations

import collections
import time
from typing import Callable

WINDOW_S = 5.0
# Less saturated time than this in the window says too little about the service rate.
MIN_SATURATED_S = 1.0
# A mean time to first token over fewer answers is one long prompt, not a trend.
MIN_TTFT_SAMPLES = 5


class LoadMeter:
    def __init__(self, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic):
        self._w = window_s
        self._clock = clock
        self._starts: collections.deque[float] = collections.deque()
        self._saturated_starts: collections.deque[float] = collections.deque()
        self._intervals: collections.deque[tuple[float, float]] = collections.deque()
        self._saturated_since: float | None = None
        self._ttfts: collections.deque[tuple[float, float]] = collections.deque()

    def held_back(self) -> None:
        """The backend refused a start for lack of capacity (not a Retry-After pause)."""
        if self._saturated_since is None:
            self._saturated_since = self._clock()

    def started(self) -> None:
        now = self._clock()
        self._starts.append(now)
        if self._saturated_since is not None:
            self._saturated_starts.append(now)

    def line_empty(self) -> None:
        """No question waits for a start any more: a saturated spell ends."""
        if self._saturated_since is not None:
            self._intervals.append((self._saturated_since, self._clock()))
            self._saturated_since = None

    def first_token(self, ttft_s: float) -> None:
        self._ttfts.append((self._clock(), ttft_s))

    def snapshot(self) -> dict[str, float | None]:
        """startsPerSec, serviceRatePerSec (None unless saturated long enough), ttftMs (None if too few)."""
        now = self._clock()
        cutoff = now - self._w
        for dq in (self._starts, self._saturated_starts):
            while dq and dq[0] < cutoff:
                dq.popleft()
        while self._intervals and self._intervals[0][1] < cutoff:
            self._intervals.popleft()
        while self._ttfts and self._ttfts[0][0] < cutoff:
            self._ttfts.popleft()
        saturated = sum(end - max(start, cutoff) for start, end in self._intervals)
        if self._saturated_since is not None:
            saturated += now - max(self._saturated_since, cutoff)
        service = len(self._saturated_starts) / saturated if saturated >= MIN_SATURATED_S else None
        ttft = (
            1000.0 * sum(t for _, t in self._ttfts) / len(self._ttfts)
            if len(self._ttfts) >= MIN_TTFT_SAMPLES
            else None
        )
        return {
            "startsPerSec": round(len(self._starts) / self._w, 3),
            "serviceRatePerSec": None if service is None else round(service, 3),
            "ttftMs": None if ttft is None else round(ttft, 1),
        }
