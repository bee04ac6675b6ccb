"""Pareto fronts: non-dominated sorting, knee points, and the front artifact (CSV + JSON)."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from nasq.errors import ConfigError
from nasq.files import atomic_write_json, atomic_write_text, read_json_object
from nasq.search.state import decode_saved_spec
from nasq.space import GenericSpec, SubnetSpec
from nasq.specs import check_metric, metric_base, validate

# +1: larger is better; -1: smaller is better
FRONT_JSON = "front.json"
FRONT_CSV = "front.csv"
DIRECTION = {"top1": 1, "latency_ms": -1, "throughput_ips": 1, "size_mb": -1, "bops_g": -1}


GOALS = {"max": 1, "min": -1}


class Objective(str):
    """A user-named objective with a declared goal (``{name: auc, goal: max}``). A ``str`` (its
    name), so every table keyed by metric name works unchanged; :func:`direction` reads the goal."""

    goal: str

    def __new__(cls, name: str, goal: str) -> Objective:
        if goal not in GOALS:
            raise ValueError(f"objective {name!r}: goal must be 'max' or 'min', got {goal!r}")
        obj = super().__new__(cls, name)
        obj.goal = goal
        return obj

    def to_dict(self) -> dict[str, str]:
        return {"name": str(self), "goal": self.goal}


def objective(value: Any) -> str:
    """An objective from a metric name (nasq's own: its built-in direction) or ``{name, goal}``
    (any name); a declared goal on a built-in metric must agree with it. ValueError otherwise."""
    if isinstance(value, Objective):
        return value
    if isinstance(value, str):
        if not is_metric(value):
            raise ValueError(f"objective {value[:40]!r} is not a metric nasq knows: declare its goal, "
                             f"{{'name': {value[:40]!r}, 'goal': 'max'}} (or 'min')")
        return value
    if not isinstance(value, dict) or set(value) != {"name", "goal"} or not isinstance(value["name"], str):
        raise ValueError(f"an objective is a metric name or {{'name': ..., 'goal': 'max'|'min'}}, got {value!r:.80}")
    name, goal = value["name"], value["goal"]
    if is_metric(name):
        if GOALS.get(goal) != direction(name):
            raise ValueError(f"objective {name!r} is nasq's own metric and goes {'max' if direction(name) > 0 else 'min'}, "
                             f"got goal {goal!r}")
        return name
    return Objective(name, goal)


def objective_entry(o: str) -> str | dict[str, str]:
    """How an objective is written to a file: its name, or ``{name, goal}`` for a declared one."""
    return o.to_dict() if isinstance(o, Objective) else str(o)


def direction(metric: str) -> int:
    """+1 when larger is better, -1 when smaller is: a declared goal (:class:`Objective`), else
    nasq's own; a per-target metric (``latency_ms@cpu_x``) goes the way of its base. KeyError for a
    metric nasq does not know and no goal declared."""
    declared = GOALS.get(getattr(metric, "goal", ""))
    return declared if declared is not None else DIRECTION[metric_base(metric)]


def is_metric(metric: str) -> bool:
    try:
        check_metric(metric)
    except ValueError:
        return False
    return True


def to_minimisation(values: np.ndarray, objectives: tuple[str, ...] | list[str]) -> np.ndarray:
    """Raw objective columns -> minimisation (larger-is-better columns negated), for any metrics."""
    signs = np.array([-direction(o) for o in objectives], dtype=np.float64)
    return np.asarray(values, dtype=np.float64) * signs


def non_dominated(F: np.ndarray) -> np.ndarray:
    """Indices of the rows of ``F`` (minimisation) that no other row dominates."""
    F = np.asarray(F, dtype=np.float64)
    if not np.isfinite(F).all():
        raise ValueError("non_dominated needs finite objective values")
    keep = []
    for i in range(len(F)):
        dominated = np.all(F <= F[i], axis=1) & np.any(F < F[i], axis=1)
        if not dominated.any():
            keep.append(i)
    return np.array(keep, dtype=np.int64)


def knee_index(F: np.ndarray) -> int:
    """The point closest to the ideal point after normalising each objective to [0, 1]."""
    F = np.asarray(F, dtype=np.float64)
    if not np.isfinite(F).all():
        raise ValueError("knee_index needs finite objective values")
    lo, hi = F.min(axis=0), F.max(axis=0)
    norm = (F - lo) / np.where(hi > lo, hi - lo, 1.0)
    return int(np.argmin(np.linalg.norm(norm, axis=1)))


def objective_bounds(space: Any, cost: Any, objectives: tuple[str, ...], n_probe: int = 1000) -> dict[str, tuple[float, float]]:
    """Fixed normalisation for hypervolumes: top1 over 0-100 %, each cost over its range on the
    smallest and largest subnet plus ``n_probe`` random ones drawn with seed 0 - the same for every
    method and iteration, so values compare. (Not just the two extremes: on a measured profile a
    mixed-format subnet can be much slower than the largest fp32 one.)"""
    probe = [space.smallest(), space.largest(), *space.sample(np.random.default_rng(0), n_probe)]
    if hasattr(cost, "score_genomes"):  # the vectorised path: same values, no per-subnet Python
        values = cost.score_genomes(np.stack([space.encode(s) for s in probe]))
    else:
        values = cost.score(probe)
    bounds = {"top1": (0.0, 100.0)}
    for o in objectives:
        if o not in values:  # the quality objective (top1 or a user-named one): stored in 0-100
            bounds[o] = (0.0, 100.0)
        elif o != "top1":
            lo, hi = float(values[o].min()), float(values[o].max())
            bounds[o] = (lo, hi if hi > lo else lo + 1.0)
    return bounds


def normalise(F: np.ndarray, objectives: tuple[str, ...], bounds: dict[str, tuple[float, float]]) -> np.ndarray:
    """Raw objective values -> minimisation, 0 at the best bound and 1 at the worst."""
    F = np.atleast_2d(np.asarray(F, dtype=np.float64))
    out = np.empty_like(F)
    for j, o in enumerate(objectives):
        lo, hi = bounds[o]
        out[:, j] = (hi - F[:, j]) / (hi - lo) if direction(o) > 0 else (F[:, j] - lo) / (hi - lo)
    return out


@dataclass
class FrontPoint:
    spec: SubnetSpec
    genome: list[int]
    predicted: dict[str, float]
    measured: dict[str, float] = field(default_factory=dict)
    # layers whose format some target only emulates (allow_emulated); None where not counted
    emulated_layers: int | None = None

    def value(self, metric: str) -> float:
        return self.measured[metric] if metric in self.measured else self.predicted[metric]

    def formats_summary(self) -> str:
        layers = self.spec.layers()
        return " ".join(f"{layer.w_format}/{layer.a_format}" for layer in layers)


@dataclass
class Front:
    """The truly evaluated non-dominated points of a search, sorted by top1 descending."""

    objectives: tuple[str, ...]
    points: list[FrontPoint]
    lineage: dict[str, str] = field(default_factory=dict)

    def matrix(self) -> np.ndarray:
        vals = np.array([[p.value(o) for o in self.objectives] for p in self.points], dtype=np.float64)
        return to_minimisation(vals.reshape(len(self.points), len(self.objectives)), self.objectives)

    def pick(self, how: str) -> int:
        if not self.points:
            raise ValueError("the front is empty")
        if how == "knee":
            return knee_index(self.matrix())
        if how == "max-top1":
            return int(np.argmax([p.value("top1") for p in self.points]))
        if how == "min-latency":
            return int(np.argmin([p.value("latency_ms") for p in self.points]))
        raise ValueError(f"unknown pick '{how}' (known: knee, max-top1, min-latency)")

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for i, p in enumerate(self.points):
            row: dict[str, Any] = {"point": i, "key": p.spec.key(), "short_key": p.spec.short_key()}
            if isinstance(p.spec, GenericSpec):  # no network: the chosen value of every gene
                row.update(p.spec.as_dict())
            else:
                row.update({"depths": "-".join(map(str, p.spec.depths)), "formats": p.formats_summary()})
            row.update({f"{k}_pred": v for k, v in sorted(p.predicted.items())})
            row.update({f"{k}": v for k, v in sorted(p.measured.items())})
            if p.emulated_layers is not None:
                row["emulated_layers"] = p.emulated_layers
            out.append(row)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"objectives": [objective_entry(o) for o in self.objectives], "lineage": self.lineage,
                "points": [{"spec": p.spec.to_dict(), "key": p.spec.key(), "genome": [int(g) for g in p.genome],
                            "predicted": p.predicted, "measured": p.measured,
                            **({} if p.emulated_layers is None else {"emulated_layers": p.emulated_layers})}
                           for p in self.points]}

    @classmethod
    def from_dict(cls, data: Any, source: str = "front") -> Front:
        """A front as :meth:`to_dict` writes it; anything else is one ConfigError naming ``source``:
        the shape, an unknown objective, a value that is not finite (a predicted one may be NaN: not
        predicted), a measured top1 outside [0, 100], a spec that does not decode."""
        saved = validate(_FrontFile, data, source)
        unknown = [o for o in saved.objectives if isinstance(o, str) and not is_metric(o)]
        if unknown:
            raise ConfigError(source, "objectives", f"unknown objective {unknown[0][:40]!r} (known: "
                              f"{', '.join(DIRECTION)}, or latency_ms/throughput_ips@<profile>, or "
                              "{name, goal} of a declared one)")
        objectives = tuple(objective(o if isinstance(o, str) else o.model_dump()) for o in saved.objectives)
        points = []
        for i, p in enumerate(saved.points):
            where = f"points[{i}]"
            try:
                spec = decode_saved_spec(p.spec)
            except ValueError as e:
                raise ConfigError(source, f"{where}.spec", str(e)) from None
            if p.key is not None and spec.key() != p.key:
                raise ConfigError(source, f"{where}.key", f"{p.key[:40]!r} is not the key of its spec ({spec.key()[:40]!r})")
            _check_values(p, list(objectives), source, where)
            points.append(FrontPoint(spec, list(p.genome), dict(p.predicted), dict(p.measured), p.emulated_layers))
        return cls(objectives, points, dict(saved.lineage))

    def to_csv(self) -> str:
        rows = self.rows()
        buf = io.StringIO()
        if rows:
            writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return buf.getvalue()

    def save(self, folder: Any) -> None:
        folder = Path(folder)
        atomic_write_json(folder / FRONT_JSON, self.to_dict())
        atomic_write_text(folder / FRONT_CSV, self.to_csv())

    @classmethod
    def load(cls, path: Any) -> Front:
        """The front in ``path`` (``front.json``); a file that is not one is a one-line ConfigError."""
        return cls.from_dict(read_json_object(path), str(path))


class _PointFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    spec: dict[str, Any]
    key: str | None = None  # written since the key was added; checked when present
    genome: list[int]
    predicted: dict[str, float]
    measured: dict[str, float] = {}
    emulated_layers: int | None = Field(default=None, ge=0)  # written since allow_emulated was added


class _ObjectiveFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    goal: Literal["max", "min"]


class _FrontFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    objectives: list[str | _ObjectiveFile] = Field(min_length=1)
    lineage: dict[str, Any] = {}
    points: list[_PointFile]


def _check_values(p: _PointFile, objectives: list[str], source: str, where: str) -> None:
    for part, values in (("predicted", p.predicted), ("measured", p.measured)):
        for name, v in values.items():
            if not (math.isfinite(v) or (math.isnan(v) and part == "predicted")):  # NaN: not predicted
                raise ConfigError(source, f"{where}.{part}.{name}", f"must be a finite number, got {v!r}")
    top1 = p.measured.get("top1")
    if top1 is not None and not 0.0 <= top1 <= 100.0:
        raise ConfigError(source, f"{where}.measured.top1", f"must be a top-1 in [0, 100], got {top1!r}")
    for o in objectives:
        if not math.isfinite(p.measured.get(o, p.predicted.get(o, math.nan))):
            raise ConfigError(source, where, f"no measured or predicted value for objective {o!r}")
