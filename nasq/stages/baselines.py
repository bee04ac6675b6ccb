"""Uniform-precision baselines beside every front: the largest subnet and each front
architecture at uniform INT8 and INT4 (and fp8_e4m3 where a target runs it natively), truly
evaluated through the same ledger as the front and costed by the same cost models, so a reader
sees what mixed precision bought. Only formats the space's menu offers for both weights and
activations are used (a menu without int4 gets no int4 baseline). Written as ``baselines.csv``.

The summary compares the front with uniform INT8 of the largest subnet at equal top-1: among
front points within :data:`EQUAL_TOP1_PT` points of its top-1 (or above), the fastest on the first
target, and its latency (per target) and size ratios."""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from pathlib import Path
from typing import Any

from nasq.experiment import Experiment
from nasq.files import atomic_write_text
from nasq.search.ledger import Ledger
from nasq.search.pareto import Front
from nasq.space import SubnetSpec
from nasq.tracking.plots import BASELINES_CSV  # noqa: F401 - the file's one name

UNIFORM_FORMATS = ("int8", "int4")
FP8 = "fp8_e4m3"
EQUAL_TOP1_PT = 0.5
ORIGIN = "baseline"


def uniform_formats(exp: Experiment) -> list[str]:
    menu = exp.space.config.precision
    wanted = [*UNIFORM_FORMATS, *([FP8] if any(FP8 in p.native for p in exp.profiles) else [])]
    return [f for f in wanted if f in menu.w_format and f in menu.a_format]


def uniform(exp: Experiment, spec: SubnetSpec, fmt: str) -> SubnetSpec | None:
    """``spec`` with every searched layer at ``fmt`` (weights and activations), canonical; None
    where the space cannot express it."""
    stages = tuple(tuple(dataclasses.replace(c, w_format=fmt, a_format=fmt) for c in st) for st in spec.stages)
    try:
        return exp.space.decode(exp.space.encode(dataclasses.replace(spec, stages=stages)))
    except (ValueError, KeyError, IndexError):
        return None


def run(exp: Experiment, ledger: Ledger, front: Front, workdir: Path) -> list[dict[str, Any]]:
    """Evaluate the baselines through ``ledger`` (cached ones are reused), write baselines.csv."""
    named: list[tuple[str, SubnetSpec, str]] = []
    sources = [("largest", exp.space.largest())] + [(f"point {i}", p.spec) for i, p in enumerate(front.points)]
    for fmt in uniform_formats(exp):
        for name, spec in sources:
            twin = uniform(exp, spec, fmt)
            if twin is not None:
                named.append((name, twin, fmt))
    if not named:
        return []
    top1 = ledger([s for _, s, _ in named], ORIGIN)
    models = exp.cost_models()
    costs = [m.score([s for _, s, _ in named]) for m in models]
    rows = []
    for i, (name, spec, fmt) in enumerate(named):
        row: dict[str, Any] = {"of": name, "format": fmt, "key": spec.key(), "top1": float(top1[i]),
                               "size_mb": float(costs[0]["size_mb"][i])}
        for prof, c in zip(exp.profiles, costs, strict=True):
            row[f"latency_ms@{prof.name}"] = float(c["latency_ms"][i])
        rows.append(row)
    atomic_write_text(workdir / BASELINES_CSV, to_csv(rows))
    return rows


def to_csv(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def point_costs(exp: Experiment, front: Front) -> list[dict[str, float]]:
    """Per front point: measured top-1 (predicted where none), size and per-target latency."""
    specs = [p.spec for p in front.points]
    costs = [m.score(specs) for m in exp.cost_models()] if specs else []
    out = []
    for i, p in enumerate(front.points):
        row = {"top1": float(p.measured.get("top1", p.predicted.get("top1", math.nan))),
               "size_mb": float(costs[0]["size_mb"][i])}
        for prof, c in zip(exp.profiles, costs, strict=True):
            row[f"latency_ms@{prof.name}"] = float(c["latency_ms"][i])
        out.append(row)
    return out


def summary(exp: Experiment, front: Front, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Best front point vs uniform INT8 of the largest subnet at equal top-1 (see the module
    docstring); None without that baseline; ``point`` None when no point is within reach."""
    base = next((r for r in rows if r["of"] == "largest" and r["format"] == "int8"), None)
    if base is None or not math.isfinite(base["top1"]):
        return None
    first = f"latency_ms@{exp.profiles[0].name}"
    costs = point_costs(exp, front)
    dominated = sum(any(_dominates(b, p, first) for b in rows) for p in costs)
    points = [(i, r) for i, r in enumerate(costs) if r["top1"] >= base["top1"] - EQUAL_TOP1_PT]
    if not points:
        return {"baseline_top1": base["top1"], "point": None, "dominated": dominated, "points": len(costs)}
    i, best = min(points, key=lambda ir: ir[1][first])
    out: dict[str, Any] = {"baseline_top1": base["top1"], "point": i, "point_top1": best["top1"],
                           "size_ratio": base["size_mb"] / best["size_mb"], "dominated": dominated,
                           "points": len(costs)}
    for prof in exp.profiles:
        key = f"latency_ms@{prof.name}"
        out[f"latency_ratio@{prof.name}"] = base[key] / best[key]
    return out


def _dominates(b: dict[str, Any], p: dict[str, float], latency: str) -> bool:
    """Baseline row ``b`` at least as good as point ``p`` on top-1, first-target latency and size,
    and better on one."""
    ge = b["top1"] >= p["top1"] and b[latency] <= p[latency] and b["size_mb"] <= p["size_mb"]
    return ge and (b["top1"] > p["top1"] or b[latency] < p[latency] or b["size_mb"] < p["size_mb"])


def summary_line(s: dict[str, Any] | None) -> str:
    if s is None:
        return "mixed precision vs uniform INT8 of the largest subnet: no INT8 baseline (int8 not in the menu)"
    head = f"mixed precision vs uniform INT8 of the largest subnet ({s['baseline_top1']:.2f} %): "
    tail = f"; {s['dominated']} of {s['points']} front points dominated by a uniform baseline"
    if s["point"] is None:
        return head + f"no front point within {EQUAL_TOP1_PT} pt" + tail
    lat = ", ".join(f"{v:.2f}x faster on {k.split('@', 1)[1]}" for k, v in s.items() if k.startswith("latency_ratio@"))
    return head + f"point {s['point']} ({s['point_top1']:.2f} %) is {lat}, {s['size_ratio']:.2f}x smaller" + tail
