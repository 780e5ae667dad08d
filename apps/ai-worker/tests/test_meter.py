"""The load meter behind the heartbeat's measured fields (a fake clock: no waiting)."""

from __future__ import annotations

from ai_worker.meter import LoadMeter


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_quiet_worker_reports_its_starts_but_no_service_rate():
    c = Clock()
    m = LoadMeter(clock=c)
    for _ in range(3):
        # Six at once after a quiet spell: a few ms of line each time, never a second of it.
        for _ in range(6):
            m.held_back()
            c.t += 0.002
            m.started()
        m.line_empty()
        c.t += 1.0
    snap = m.snapshot()
    assert snap["serviceRatePerSec"] is None
    assert snap["startsPerSec"] == 18 / 5


def test_saturated_worker_reports_the_pace_of_its_starts_while_held_back():
    c = Clock()
    m = LoadMeter(clock=c)
    m.held_back()
    for _ in range(80):  # 40 starts a second for 2 s, the line never empty
        c.t += 0.025
        m.started()
    snap = m.snapshot()
    assert snap["serviceRatePerSec"] == 40.0
    assert snap["startsPerSec"] == 80 / 5
    # The window slides: 6 s later, nothing of it is left.
    m.line_empty()
    c.t += 6
    assert m.snapshot() == {"startsPerSec": 0.0, "serviceRatePerSec": None, "ttftMs": None}


def test_ttft_is_a_mean_over_at_least_five_answers():
    c = Clock()
    m = LoadMeter(clock=c)
    for t in (0.1, 0.2, 0.3, 0.4):
        m.first_token(t)
    assert m.snapshot()["ttftMs"] is None
    m.first_token(0.5)
    assert m.snapshot()["ttftMs"] == 300.0
