"""benchmarks/train_throughput.py: each side is warmed up untimed, then the two sides alternate and
the best run of each is kept (so one slow run, or the process's first, does not decide a ratio)."""
from __future__ import annotations

import argparse

import pytest


@pytest.fixture
def tt(benchmark_module):
    return benchmark_module("train_throughput")


def test_interleaved_warms_up_alternates_and_keeps_the_best(tt, space, monkeypatch):
    calls: list[tuple[str, int]] = []
    speeds = {"q": iter([100.0, 140.0, 120.0]), "f": iter([200.0, 150.0, 180.0])}

    def fake(s, device, steps, warmup, batch):  # a stand-in for the timed training, our logic only
        side = "f" if s.name.endswith("_fp32") else "q"
        calls.append((side, steps))
        return 1.0 if steps == 1 else next(speeds[side])

    monkeypatch.setattr(tt, "images_per_s", fake)
    args = argparse.Namespace(repeats=3, steps=10, warmup=2, batch_size=8)
    q, f = tt.interleaved(space, "cpu", args)
    assert calls[:2] == [("q", 1), ("f", 1)]  # untimed warm-up of each side first
    assert [c[0] for c in calls[2:]] == ["q", "f"] * 3
    assert all(c[1] == 10 for c in calls[2:])
    assert (q, f) == (140.0, 200.0)
