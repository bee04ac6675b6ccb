"""nasq.search.query: the --where parser (no eval) and --pick over a filtered front."""

from __future__ import annotations

import pytest

from nasq.errors import NasqError
from nasq.search import query
from tests.unit.test_tracking import make_front

KNOWN = {"latency_ms", "size_mb", "top1"}


@pytest.mark.parametrize("text, values, expected", [
    ("latency_ms<2 and size_mb<0.5", {"latency_ms": 1.0, "size_mb": 0.4}, True),
    ("latency_ms<2 and size_mb<0.5", {"latency_ms": 1.0, "size_mb": 0.6}, False),
    ("latency_ms < 2 or size_mb < 0.5", {"latency_ms": 3.0, "size_mb": 0.4}, True),
    ("top1 >= 80 and (latency_ms <= 1 or size_mb == 0.25)", {"top1": 80, "latency_ms": 5, "size_mb": 0.25}, True),
    ("top1 >= 80 and (latency_ms <= 1 or size_mb == 0.25)", {"top1": 79.9, "latency_ms": 0, "size_mb": 0.25}, False),
    ("2 > latency_ms", {"latency_ms": 1.5}, True),
    ("2 > latency_ms", {"latency_ms": 2.5}, False),
    ("size_mb != 1e-1", {"size_mb": 0.1}, False),
    ("a or b < 1 and c > 1".replace("a or ", "top1 > 0 or "), {"top1": 0, "b": 0, "c": 2}, True),
])
def test_where_evaluates(text, values, expected):
    assert query.parse_where(text)(values) is expected


@pytest.mark.parametrize("text, message", [
    ("", "empty expression"),
    ("latency_ms<", "expected a number"),
    ("latency_ms<2 and", "expected a metric name"),
    ("latency_ms 2", "expected a comparison"),
    ("latency_ms<2)", "unexpected ')'"),
    ("(latency_ms<2", "missing ')'"),
    ("__import__('os').system('x')", "unexpected"),
    ("latency_ms<2; rm", "unexpected"),
    ("speed<2", "unknown metric 'speed'"),
])
def test_bad_where_is_one_line_naming_the_expression(text, message):
    with pytest.raises(NasqError) as info:
        query.parse_where(text, KNOWN)
    text_out = str(info.value)
    assert message in text_out and "\n" not in text_out
    assert text_out.startswith(f"--where {text!r}")


def test_select_and_pick_on_a_front():
    front = make_front(6)  # top1 falls and latency falls with the index
    assert query.select(front) == list(range(6))
    fast = query.select(front, "latency_ms < 2.5")
    assert fast == [i for i, p in enumerate(front.points) if p.value("latency_ms") < 2.5] and 0 < len(fast) < 6
    assert query.select(front, "top1_pred > 0.77") == [0, 1]  # predictions as <name>_pred
    assert query.pick(front, "max-top1") == 0
    assert query.pick(front, "min-latency") == 5
    assert query.pick(front, "max-top1", fast) == fast[0]
    assert query.pick(front, "knee", fast) in fast
    with pytest.raises(NasqError, match="matched none"):
        query.pick(front, "knee", query.select(front, "latency_ms < 0"))
    with pytest.raises(NasqError, match="unknown"):
        query.pick(front, "fastest")
    with pytest.raises(NasqError, match="unknown metric 'bops_g'"):
        query.select(front, "bops_g < 1")


def test_query_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, nasq.search.query; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_where_takes_per_target_metric_names():
    where = query.parse_where("latency_ms@cpu_b < 1 and latency_ms@cpu_b_pred >= 0.5 or emulated_layers == 0")
    assert where.names == {"latency_ms@cpu_b", "latency_ms@cpu_b_pred", "emulated_layers"}
    assert where({"latency_ms@cpu_b": 0.7, "latency_ms@cpu_b_pred": 0.6, "emulated_layers": 3.0})
    assert not where({"latency_ms@cpu_b": 1.5, "latency_ms@cpu_b_pred": 0.6, "emulated_layers": 3.0})
    with pytest.raises(NasqError, match="unknown metric 'latency_ms@gpu'"):
        query.parse_where("latency_ms@gpu < 1", {"latency_ms", "top1"})
