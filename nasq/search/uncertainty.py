"""95 % confidence intervals on a measured top-1, and the front's ``top1_ci_low``/``top1_ci_high``.

A true evaluation counts the correct images among ``n`` validation images, so its top-1 is a
binomial proportion: the interval is Wilson's score interval on ``n`` (it stays inside [0, 100] and
is right near 0 and 100 %, where the normal approximation is not). The calibration set adds a
second, independent error - another seeded draw of calibration images moves each subnet's top-1 by
``calib_std`` points (``benchmarks/eval_noise.py`` measures it) - so each side of the Wilson
interval is widened in quadrature::

    low  = p - sqrt((p - wilson_low)^2  + (z * calib_std)^2)
    high = p + sqrt((wilson_high - p)^2 + (z * calib_std)^2)      (clipped to [0, 100])

Both components are per subnet. Two subnets of one search are measured on the same images with
the same calibration set, so the interval of their *difference* is narrower than these suggest
(paired evaluation: see the benchmark's table).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from nasq.search.pareto import Front

Z95 = 1.959963984540054  # two-sided 95 % normal quantile
CI_LOW, CI_HIGH = "top1_ci_low", "top1_ci_high"

# Per-subnet top-1 std (points) between calibration sets of this many images drawn with seeds 1-3,
# on the demo supernet, scored on the same 1,000 validation images (benchmarks/eval_noise.py,
# docs/benchmarks.md "Evaluation noise": 0.44, 0.46, 0.39), made non-increasing in the size. Scored
# on 1,000 images it includes image-level flips, so it errs wide (0.27-0.29 on 5,000 in a smaller run).
CALIB_STD_PT = {256: 0.46, 512: 0.46, 2048: 0.39}


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of the proportion ``successes / n`` (both ends in [0, 1])."""
    if n <= 0:
        raise ValueError(f"wilson_interval needs n > 0 images, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n={n}], got {successes}")
    p, z2 = successes / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def calibration_std(calib_images: int) -> float:
    """The measured per-subnet calibration std for the nearest measured size at or below
    ``calib_images`` (the smallest measured one below all): fewer images never get less noise."""
    known = sorted(CALIB_STD_PT)
    at_or_below = [c for c in known if c <= calib_images]
    return CALIB_STD_PT[at_or_below[-1] if at_or_below else known[0]]


def top1_interval(top1: float, n_images: int, calib_std: float = 0.0, z: float = Z95) -> tuple[float, float]:
    """The 95 % interval (percent) of a top-1 (percent) measured on ``n_images`` images, widened
    by the calibration component ``calib_std`` (points); see the module docstring."""
    if not 0.0 <= top1 <= 100.0:
        raise ValueError(f"top1 must be a percentage in [0, 100], got {top1}")
    lo, hi = wilson_interval(top1 / 100.0 * n_images, n_images, z)
    lo, hi = 100.0 * lo, 100.0 * hi
    extra = (z * calib_std) ** 2
    return max(0.0, top1 - math.sqrt((top1 - lo) ** 2 + extra)), min(100.0, top1 + math.sqrt((hi - top1) ** 2 + extra))


def annotate_front(front: Front, n_images: int, calib_std: float = 0.0) -> Front:
    """Add ``top1_ci_low``/``top1_ci_high`` to the measured values of every point with a measured
    top-1 (in place; returns the front). They then reach front.csv/front.json, MLflow and the export
    manifest with the rest of the measured values."""
    for p in front.points:
        if "top1" in p.measured:
            p.measured[CI_LOW], p.measured[CI_HIGH] = top1_interval(p.measured["top1"], n_images, calib_std)
    return front


def point_interval(measured: Mapping[str, float]) -> tuple[float, float] | None:
    """A point's measured ``(top1_ci_low, top1_ci_high)``, or None where it has none (an older
    front, or no measured top-1)."""
    low, high = measured.get(CI_LOW), measured.get(CI_HIGH)
    return None if low is None or high is None else (low, high)


def has_intervals(front: Front) -> bool:
    """Whether every point of ``front`` carries its interval (:func:`point_interval`)."""
    return bool(front.points) and all(point_interval(p.measured) is not None for p in front.points)
