"""Uniform-precision baselines (nasq.stages.baselines): twins, menu filtering, the summary."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace as NS

import pytest

from nasq.space import SearchSpace
from nasq.stages import baselines

SPACE = SearchSpace.from_yaml(Path(__file__).resolve().parents[2] / "search_spaces" / "mbconv_small.yaml")


def _exp(native: set[str], menu: tuple[str, ...] = ("fp32", "int8", "int4", "fp8_e4m3")) -> NS:
    data = SPACE.config.model_dump(mode="json")
    data["precision"] = {**data["precision"], "w_format": list(menu), "a_format": list(menu)}
    return NS(space=SearchSpace.from_dict(data), profiles=[NS(name="x", native=native)])


def test_formats_follow_the_menu_and_the_targets():
    assert baselines.uniform_formats(_exp({"int8"})) == ["int8", "int4"]
    assert baselines.uniform_formats(_exp({"int8", "fp8_e4m3"})) == ["int8", "int4", "fp8_e4m3"]
    assert baselines.uniform_formats(_exp({"int8"}, ("fp32", "int8"))) == ["int8"]  # no int4 in the menu


def test_uniform_twin_sets_every_layer():
    exp = _exp({"int8"})
    twin = baselines.uniform(exp, exp.space.largest(), "int4")
    assert twin is not None and {(c.w_format, c.a_format) for c in twin.layers()} == {("int4", "int4")}
    assert twin.depths == exp.space.largest().depths


def test_summary_at_equal_top1(monkeypatch):
    exp = NS(profiles=[NS(name="x")])
    rows = [{"of": "largest", "format": "int8", "key": "k", "top1": 85.0, "size_mb": 0.1, "latency_ms@x": 0.12}]
    points = [{"top1": 84.7, "size_mb": 0.05, "latency_ms@x": 0.06}, {"top1": 84.0, "size_mb": 0.2, "latency_ms@x": 0.2}]
    monkeypatch.setattr(baselines, "point_costs", lambda exp, front: points)
    s = baselines.summary(exp, None, rows)
    assert s["point"] == 0 and s["latency_ratio@x"] == pytest.approx(2.0) and s["size_ratio"] == pytest.approx(2.0)
    assert s["dominated"] == 1  # point 1: the INT8 baseline is better on all three
    assert "2.00x faster on x, 2.00x smaller" in baselines.summary_line(s)
    points[0]["top1"] = 80.0
    assert "no front point within 0.5 pt" in baselines.summary_line(baselines.summary(exp, None, rows))
    assert "no INT8 baseline" in baselines.summary_line(baselines.summary(exp, None, rows[:0]))
