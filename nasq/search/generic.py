"""Search a foreign problem from Python: a :class:`nasq.space.GenericSpace`, the user's evaluator
and cost functions, user-named objectives with a goal. No network, no torch.

    space = GenericSpace.of("cell", {f"op_{i}": OPS for i in range(6)})
    front = search_generic(space, evaluate=my_auc, costs={"params_m": my_params},
                           objectives=[{"name": "auc", "goal": "max"}, "params_m"], max_true_evals=60)

The first ``goal: max`` objective that no cost function gives is what ``evaluate`` returns (one
value per candidate, in [0, 100], None where it failed) and what the accuracy predictor learns;
every other objective and constraint is a cost function's column.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nasq.errors import NasqError
from nasq.predict.fit import AccuracyPredictor, Recipe
from nasq.search.ledger import Ledger
from nasq.search.loop import run_search
from nasq.search.pareto import Front
from nasq.search.strategy import SearchTask
from nasq.specs import RecipeConfig, SearchConfig, validate

CostFunction = Callable[[list[Any]], Any]


class FunctionCosts:
    """A cost model (:class:`nasq.search.protocols.CostScorer`) made of plain callables, one per
    metric: ``fn(specs) -> array`` of one finite value per spec."""

    def __init__(self, functions: Mapping[str, CostFunction]):
        if not functions:
            raise NasqError("costs_from_functions needs at least one cost function")
        for name, fn in functions.items():
            if not isinstance(name, str) or not name or not callable(fn):
                raise NasqError(f"cost {name!r}: give a name and a callable fn(specs) -> array")
        self.functions = dict(functions)

    def score(self, specs: list[Any]) -> dict[str, np.ndarray]:
        out = {}
        for name, fn in self.functions.items():
            values = np.asarray(fn(specs), dtype=np.float64).reshape(-1)
            if values.shape != (len(specs),) or not np.isfinite(values).all():
                raise NasqError(f"cost function {name!r} must return {len(specs)} finite numbers, got "
                                f"shape {values.shape}")
            out[name] = values
        return out


def costs_from_functions(functions: Mapping[str, CostFunction]) -> FunctionCosts:
    """``{"params_m": fn, ...}`` -> a cost model the search takes."""
    return FunctionCosts(functions)


@dataclass(frozen=True)
class Bound:
    """A constraint on a cost column of any name (the network searches' ConstraintSpec only takes
    nasq's own metrics): ``metric <= max`` or ``metric >= min``."""

    metric: str
    max: float | None = None
    min: float | None = None

    @property
    def key(self) -> str:
        return self.metric

    def model_dump(self, mode: str = "json") -> dict[str, Any]:
        return {"metric": self.metric, "max": self.max, "min": self.min}


def bounds_of(constraints: Mapping[str, Mapping[str, float]] | None) -> tuple[Bound, ...]:
    """``{"params_m": {"max": 2.0}}`` -> constraints; one line for a malformed one."""
    out = []
    for name, bound in (constraints or {}).items():
        if not isinstance(bound, Mapping) or len(bound) != 1 or next(iter(bound)) not in ("max", "min"):
            raise NasqError(f"constraint {name!r}: give exactly one of {{'max': x}} or {{'min': x}}, got {bound!r:.60}")
        kind, value = next(iter(bound.items()))
        out.append(Bound(name, **{kind: float(value)}))
    return tuple(out)


def default_fitter(space: Any, cost: Any, kind: str = "gbdt") -> Callable[..., Any]:
    """Fits nasq's accuracy predictor on the one-hot genes plus the injected costs."""
    params = {"n_estimators": 200, "max_depth": 3, "learning_rate": 0.05, "subsample": 0.8} if kind == "gbdt" else {}
    recipe = Recipe(RecipeConfig(name=f"generic_{kind}", kind=kind, features=("onehot", "costs"), params=params))

    def fit(specs: list[Any], top1: np.ndarray, seed: int) -> Any:
        return AccuracyPredictor(recipe, space, cost, seed).fit(specs, top1)

    return fit


def search_generic(space: Any, evaluate: Callable[[list[Any]], Sequence[float | None]],
                   costs: Mapping[str, CostFunction] | FunctionCosts, objectives: Sequence[Any],
                   constraints: Mapping[str, Mapping[str, float]] | None = None, *, strategy: str = "linas",
                   max_true_evals: int = 60, batch_size: int = 10, seed: int = 0, population: int = 48,
                   generations: int = 20, initial_evals: int | None = None, ledger: str | Path | None = None,
                   fit_predictor: Callable[..., Any] | None = None) -> Front:
    """Search ``space`` (a :class:`nasq.space.GenericSpace`, or any space) with ``strategy`` until
    ``max_true_evals`` candidates are evaluated; return the front of truly evaluated points.
    ``ledger``: a CSV file keeping every evaluation (reused by a later search); in memory if None."""
    cost = costs if isinstance(costs, FunctionCosts) else costs_from_functions(costs)
    config = validate(SearchConfig, {
        "strategy": strategy, "max_true_evals": max_true_evals, "batch_size": batch_size, "seed": seed,
        "population": population, "generations": generations,
        "initial_evals": initial_evals if initial_evals is not None else max(8, max_true_evals // 4)}, "search_generic")
    task = SearchTask(space=space, objectives=tuple(objectives), constraints=bounds_of(constraints), cost=cost,
                      config=config, fit_predictor=fit_predictor or default_fitter(space, cost))
    return run_search(task, Ledger(evaluate, ledger)).front
