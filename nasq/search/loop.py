"""The search driver.

``run_search`` repeats: the strategy proposes up to ``batch_size`` new subnets -> they are
evaluated for real through the ledger -> a history row is recorded -> the state is checkpointed,
until ``max_true_evals`` true evaluations are spent. The final front holds truly evaluated points
only. Every strategy (LINAS in ``linas.py``, the baselines in ``baselines.py``) fills one hook, ``propose``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nasq.errors import NasqError
from nasq.predict.models import kendall_tau
from nasq.search import baselines, ilp, linas  # noqa: F401 - importing them registers the strategies
from nasq.search.ledger import Ledger
from nasq.search.nsga import hypervolume
from nasq.search.pareto import Front, FrontPoint, non_dominated
from nasq.search.state import STATE_FILE, SearchState, iteration_rng
from nasq.search.strategy import STRATEGIES, Proposal, SearchTask, Strategy, spec_of
from nasq.space import SubnetSpec


def make_strategy(name: str, task: SearchTask) -> Strategy:
    return STRATEGIES.get(name)(task)


@dataclass
class SearchOutcome:
    front: Front
    history: list[dict[str, Any]]
    state: SearchState


def run_search(task: SearchTask, ledger: Ledger, checkpoint_dir: Path | None = None, resume: bool = False,
               progress: Callable[[dict[str, Any]], None] | None = None) -> SearchOutcome:
    """Run (or, with ``resume``, continue from ``checkpoint_dir``) the configured strategy until
    ``max_true_evals`` true evaluations are spent; checkpoint after every iteration."""
    cfg = task.config
    strategy = make_strategy(cfg.strategy, task)
    if resume:
        if checkpoint_dir is None:
            raise NasqError("resume needs the folder of the interrupted search")
        state = SearchState.load(checkpoint_dir, task.fingerprint())
        check_budget(state.budget, cfg.strategy, cfg.max_true_evals, Path(checkpoint_dir) / STATE_FILE)
        state.budget = cfg.max_true_evals
        for key in state.keys:  # its measurements are in the checkpoint: never evaluated again
            ledger.record(state.specs[key], state.top1[key], "resumed")
    else:
        state = SearchState(cfg.strategy, cfg.seed, fingerprint=task.fingerprint(), budget=cfg.max_true_evals)
    warm_top1 = ledger(task.warm, "warm") if task.warm else np.zeros(0)
    known = {s.key(): float(v) for s, v in zip(task.warm, warm_top1, strict=True)}
    known.update(state.top1)
    while state.true_evals < cfg.max_true_evals:
        k = min(cfg.batch_size, cfg.max_true_evals - state.true_evals)
        specs, predicted = strategy.propose(state, known, iteration_rng(cfg.seed, state.iteration), k)
        specs, predicted = _fresh(specs, predicted, known, k)
        if not specs:
            break
        top1 = ledger(specs, strategy.name)
        state.add(specs, top1, predicted)
        known.update({s.key(): float(v) for s, v in zip(specs, top1, strict=True)})
        state.iteration += 1
        state.history.append({"iteration": state.iteration, "true_evals": state.true_evals,
                              "hypervolume": front_hypervolume(task, state, known),
                              "predictor_tau": _batch_tau(predicted, top1)})
        if checkpoint_dir is not None:
            state.save(checkpoint_dir)
        if progress is not None:
            progress(state.history[-1])
    return SearchOutcome(build_front(task, state, known), state.history, state)


def check_budget(budget: int | None, strategy: str, wanted: int, source: Path) -> None:
    """A resumed search keeps its ``budget`` or extends it to ``wanted``: a smaller one is refused,
    and so is a larger one for a strategy whose proposals depend on the budget (its extension would
    not be the search it claims to be). One line naming the checkpoint."""
    if budget is None or wanted == budget:
        return
    if wanted < budget:
        raise NasqError(f"{source}: this search was given {budget} true evaluations; --max-true-evals {wanted} "
                        f"is smaller - a search can be continued or extended, not shortened")
    if not STRATEGIES.get(strategy).extendable:
        raise NasqError(f"{source}: strategy {strategy!r} sizes its search by the budget, so it cannot "
                        f"be extended from {budget} to {wanted} true evaluations; start a new search "
                        f"(linas and random can be extended)")


def _fresh(specs: list[SubnetSpec], predicted: list[dict[str, float]] | None, known: dict[str, float],
           k: int) -> Proposal:
    """Drop subnets already known or proposed twice, keep at most k: the budget counts distinct subnets."""
    keep, seen = [], set()
    for i, s in enumerate(specs):
        if s.key() not in known and s.key() not in seen and len(keep) < k:
            seen.add(s.key())
            keep.append(i)
    return [specs[i] for i in keep], None if predicted is None else [predicted[i] for i in keep]


def _batch_tau(predicted: list[dict[str, float]] | None, top1: np.ndarray) -> float | None:
    """Kendall tau of the predictions (made before the refit) against the batch's measurements."""
    if predicted is None:
        return None
    ok = np.isfinite(top1)
    if ok.sum() < 2:
        return None
    pred = np.array([p["top1"] for p in predicted], dtype=np.float64)
    return round(kendall_tau(top1[ok], pred[ok]), 4)


def front_hypervolume(task: SearchTask, state: SearchState, warm: dict[str, float] | None = None) -> float:
    """HV of the feasible, truly evaluated points: the search's own and, given ``warm`` (key -> top1
    of the warm set), those too - what the final front is made of."""
    specs, top1 = state.ok()
    if warm:
        extra = [(s, warm[s.key()]) for s in task.warm if math.isfinite(warm.get(s.key(), math.nan))]
        specs, top1 = specs + [s for s, _ in extra], np.concatenate([top1, [v for _, v in extra]])
    keep = task.feasible(specs)
    if not keep.any():
        return 0.0
    specs = [s for s, good in zip(specs, keep, strict=True) if good]
    values = task.score(specs, top1[keep])
    F = np.column_stack([values[o] for o in task.objectives])
    return round(hypervolume(F, task.objectives, task.bounds), 6)


def build_front(task: SearchTask, state: SearchState, known: dict[str, float]) -> Front:
    """Non-dominated (measured top1 + cost model) among the feasible, truly evaluated subnets the
    search knows: its own evaluations and the warm set. Predicted values are kept where made."""
    keys = [k for k, v in known.items() if math.isfinite(v)]
    specs = [spec_of(task, state, k) for k in keys]
    keep = task.feasible(specs)
    specs, keys = [s for s, g in zip(specs, keep, strict=True) if g], [k for k, g in zip(keys, keep, strict=True) if g]
    if not specs:
        raise NasqError(f"no truly evaluated subnet meets the constraints after {state.true_evals} evaluations")
    costs = task.cost.score(specs)
    points = []
    for i, (spec, key) in enumerate(zip(specs, keys, strict=True)):
        predicted = task.with_quality({"top1": math.nan, **state.predicted.get(key, {}),
                                       **{m: float(v[i]) for m, v in costs.items()}})
        emulated = None if task.emulated_layers is None else len(task.emulated_layers(spec))
        points.append(FrontPoint(spec, [int(g) for g in task.space.encode(spec)], predicted,
                                 task.with_quality({"top1": known[key]}), emulated))
    front = Front(task.objectives, points, task.lineage)
    nd = non_dominated(front.matrix())
    front.points = sorted((points[i] for i in nd), key=lambda p: (-p.value("top1"), p.spec.key()))
    return front
