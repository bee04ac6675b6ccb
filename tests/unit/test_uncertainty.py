"""nasq.search.uncertainty: Wilson intervals on a measured top-1, and the front's interval columns."""

from __future__ import annotations

import csv
import io
from types import SimpleNamespace

import numpy as np
import pytest

from nasq.search.pareto import Front, FrontPoint
from nasq.search.uncertainty import (
    CI_HIGH,
    CI_LOW,
    annotate_front,
    calibration_std,
    top1_interval,
    wilson_interval,
)
from nasq.specs import DataConfig, EvaluateConfig


@pytest.mark.parametrize(("k", "n"), [(850, 1000), (0, 50), (50, 50), (1, 7), (4321, 5000)])
def test_wilson_matches_scipy(k: int, n: int) -> None:
    from scipy.stats import binomtest

    want = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(k, n) == pytest.approx((want.low, want.high), abs=1e-9)


def test_wilson_known_value_and_bad_input() -> None:
    lo, hi = wilson_interval(850, 1000)
    assert (round(lo, 4), round(hi, 4)) == (0.8265, 0.8708)
    with pytest.raises(ValueError, match="n > 0"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)
    with pytest.raises(ValueError, match="percentage"):
        top1_interval(101.0, 100)


def test_top1_interval_widens_in_quadrature_and_stays_in_range() -> None:
    lo, hi = top1_interval(85.0, 1000)
    assert (lo, hi) == pytest.approx((82.653, 87.079), abs=1e-3)  # Wilson alone, in percent
    wlo, whi = top1_interval(85.0, 1000, calib_std=0.5)
    z = 1.959963984540054
    assert 85.0 - wlo == pytest.approx(np.hypot(85.0 - lo, z * 0.5))
    assert whi - 85.0 == pytest.approx(np.hypot(hi - 85.0, z * 0.5))
    assert top1_interval(100.0, 200, calib_std=1.0)[1] == 100.0  # clipped
    assert top1_interval(0.0, 200, calib_std=1.0)[0] == 0.0
    # more images, narrower
    assert np.diff(top1_interval(85.0, 5000)) < np.diff(top1_interval(85.0, 2000))


def test_calibration_std_takes_the_nearest_measured_size_at_or_below() -> None:
    assert calibration_std(512) == calibration_std(1000) >= calibration_std(2048) == calibration_std(10_000)
    assert calibration_std(64) == calibration_std(256)


def _front(space) -> Front:
    specs = space.sample(np.random.default_rng(0), 3)
    pts = [FrontPoint(s, list(space.encode(s)), {"top1": 80.0 + i, "latency_ms": 0.1 * (i + 1), "size_mb": 0.1},
                      {"top1": 79.0 + i}) for i, s in enumerate(specs)]
    pts.append(FrontPoint(specs[0], list(space.encode(specs[0])), {"top1": 70.0, "latency_ms": 0.05, "size_mb": 0.1}))
    return Front(("top1", "latency_ms", "size_mb"), pts)


def test_front_csv_and_json_carry_the_interval(space) -> None:
    front = annotate_front(_front(space), n_images=2000, calib_std=0.3)
    rows = list(csv.DictReader(io.StringIO(front.to_csv())))
    assert {CI_LOW, CI_HIGH} <= set(rows[0])
    for row in rows[:3]:
        low, top1, high = float(row[CI_LOW]), float(row["top1"]), float(row[CI_HIGH])
        assert low < top1 < high and high - low == pytest.approx(2 * 1.96 * np.hypot(0.9, 0.3), rel=0.1)
    assert CI_LOW not in front.points[3].measured  # predicted-only point: no interval made up
    back = Front.from_dict(front.to_dict())
    assert back.points[0].measured[CI_LOW] == front.points[0].measured[CI_LOW]


def test_stage_uses_the_images_counted_else_the_configured_ones(space) -> None:
    from nasq.stages.search import with_intervals

    exp = SimpleNamespace(config=SimpleNamespace(evaluate=EvaluateConfig(val_images=None, calib_images=2048),
                                                 data=DataConfig(val_size=5000)))
    configured = with_intervals(exp, _front(space)).points[0].measured
    counted = with_intervals(exp, _front(space), val_images=300).points[0].measured
    assert (configured[CI_LOW], configured[CI_HIGH]) == pytest.approx(top1_interval(79.0, 5000, calibration_std(2048)))
    assert counted[CI_HIGH] - counted[CI_LOW] > configured[CI_HIGH] - configured[CI_LOW]


def test_report_prints_the_interval_beside_top1(space) -> None:
    from nasq.cli.report import top1_interval_text

    front = annotate_front(_front(space), n_images=1000)
    lo, hi = top1_interval(79.0, 1000)
    assert top1_interval_text(front.points[0]) == f"[{lo:.1f}, {hi:.1f}]"
    assert top1_interval_text(front.points[3]) == "-"


def test_correct_mask_is_what_accuracy_averages() -> None:
    import torch

    from nasq.supernet.evaluate import accuracy, correct_mask

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((37, 5)).astype(np.float32), rng.integers(0, 3, 37)
    model = torch.nn.Linear(5, 3)
    mask = correct_mask(model, x, y, batch_size=8)
    assert mask.dtype == bool and mask.shape == (37,)
    assert 100.0 * mask.mean() == pytest.approx(accuracy(model, x, y, batch_size=8))
