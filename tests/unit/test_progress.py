"""Progress off a terminal: periodic one-line status instead of a bar that prints nothing."""

from __future__ import annotations

import io

from rich.console import Console

from nasq.stages.progress import Reporter, StatusLines, status_interval_s


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_status_lines_print_every_interval_with_rate_info_and_eta():
    clock, lines = Clock(), []
    status = StatusLines("evaluating", 10, lines.append, every_s=5, clock=clock)
    clock.t = 1.0
    status.update(1)
    assert lines == []  # not yet 5 s
    clock.t = 5.0
    status.update(4, info="loss 0.500")
    assert len(lines) == 1
    line = lines[0]
    assert "evaluating: 40 % (4/10)" in line and "0.8/s" in line and "loss 0.500" in line
    assert "ETA 8s" in line  # 5 s for 40 %: 7.5 s left, rounded
    clock.t = 6.0
    status.update(10)
    status.finish()
    assert len(lines) == 2 and "100 % (10/10)" in lines[1] and "elapsed 6s" in lines[1]


def test_fractional_progress_has_no_count_and_finish_does_not_repeat():
    clock, lines = Clock(), []
    status = StatusLines("training", 1, lines.append, every_s=10, clock=clock)
    clock.t = 30.0
    status.update(0.25, info="step 25/100 loss 1.234")
    assert lines == ["      training: 25 % | step 25/100 loss 1.234 | ETA 1m30s"]
    status.finish()
    assert len(lines) == 1


def test_reporter_off_a_terminal_prints_status_lines(monkeypatch):
    monkeypatch.setenv("NASQ_PROGRESS_EVERY_S", "0.000001")
    out = io.StringIO()
    rep = Reporter(Console(file=out, force_terminal=False, width=200))
    with rep.bar("evaluating", 3) as bar:
        for i in range(3):
            bar(i + 1, info="[not markup]")
    text = out.getvalue()
    assert "evaluating: 100 % (3/3)" in text and "[not markup]" in text


def test_quiet_reporter_prints_nothing():
    rep = Reporter(None)
    with rep.bar("training", 1) as bar:
        bar(0.5, info="x")  # no console: a no-op


def test_interval_env(monkeypatch):
    monkeypatch.setenv("NASQ_PROGRESS_EVERY_S", "oops")
    assert status_interval_s() == 15.0
    monkeypatch.setenv("NASQ_PROGRESS_EVERY_S", "2.5")
    assert status_interval_s() == 2.5


def test_timed_step_is_recorded_without_a_stage_header():
    out = io.StringIO()
    rep = Reporter(Console(file=out, force_terminal=False, width=100))
    with rep.stage("search", "search: x"), rep.timed("baselines"):
        pass
    assert set(rep.timings) == {"search", "baselines"} and rep.timings["baselines"] >= 0
    assert out.getvalue().count("[1/7]") == 1 and "baselines" not in out.getvalue() and rep.n == 1
