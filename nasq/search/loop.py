"""The search driver and LINAS (predictors in the loop).

``run_search`` repeats: the strategy proposes up to ``batch_size`` new subnets -> they are
evaluated for real through the ledger -> a history row is recorded -> the state is checkpointed,
until ``max_true_evals`` true evaluations are spent. The final front holds truly evaluated points
only. Every strategy (LINAS here, the baselines in ``baselines.py``) fills one hook, ``propose``.
"""

from __future__ import annotations

import abc
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from nasq.errors import NasqError
from nasq.registry import Registry
from nasq.search.ledger import Ledger
from nasq.search.nsga import Candidate, constraint_matrix, nsga2_population
from nasq.search.pareto import Front, FrontPoint, hypervolume, non_dominated, objective_bounds
from nasq.search.state import SearchState, derived_seed, iteration_rng
from nasq.space import SearchSpace, SubnetSpec
from nasq.specs import ConstraintSpec, SearchConfig

# fit_predictor(specs, top1, seed) -> a fitted model with predict(specs), predict_with_std(specs)
# and has_uncertainty (nasq.predict.fit.AccuracyPredictor fits this).
FitPredictor = Callable[[list[SubnetSpec], np.ndarray, int], Any]
Proposal = tuple[list[SubnetSpec], list[dict[str, float]] | None]

STRATEGIES: Registry[type[Strategy]] = Registry("search strategy")


@dataclass
class SearchTask:
    """Everything a strategy may look at. ``cost.score(specs)`` gives latency_ms / size_mb / bops_g;
    ``warm``: subnets already in the ledger (e.g. the predictor's training sample) - known to every
    strategy, not counted against the budget; ``bounds``: fixed normalisation for the hypervolume."""

    space: SearchSpace
    objectives: tuple[str, ...]
    constraints: tuple[ConstraintSpec, ...]
    cost: Any
    config: SearchConfig
    fit_predictor: FitPredictor | None = None
    warm: list[SubnetSpec] = field(default_factory=list)
    bounds: dict[str, tuple[float, float]] | None = None
    lineage: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.bounds is None:
            self.bounds = objective_bounds(self.space, self.cost, self.objectives)

    def score(self, specs: list[SubnetSpec], top1: np.ndarray) -> dict[str, np.ndarray]:
        return {"top1": np.asarray(top1, dtype=np.float64), **self.cost.score(specs)}

    def feasible(self, specs: list[SubnetSpec]) -> np.ndarray:
        if not self.constraints or not specs:
            return np.ones(len(specs), dtype=bool)
        values = self.score(specs, np.full(len(specs), 100.0))
        if any(c.metric == "top1" for c in self.constraints):
            raise NasqError("constraints on top1 are not supported (top1 is an objective)")
        return np.all(constraint_matrix(values, self.constraints, len(specs)) <= 0, axis=1)

    def fingerprint(self) -> str:
        """What a checkpoint must match to be resumed."""
        c = self.config
        what = {"search": c.model_dump(mode="json", exclude={"cache_dir"}), "objectives": list(self.objectives),
                "constraints": [x.model_dump(mode="json") for x in self.constraints], "space": self.space.hash,
                "warm": sorted(s.key() for s in self.warm)}
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


class Strategy(abc.ABC):
    """The base owns the loop (``run_search``); a strategy fills ``propose``."""

    name: ClassVar[str] = ""

    def __init__(self, task: SearchTask):
        self.task = task

    @abc.abstractmethod
    def propose(self, state: SearchState, known: dict[str, float], rng: np.random.Generator, k: int) -> Proposal:
        """Called once per iteration, before that iteration's true evaluations. ``known``: every
        subnet key with a true top1 (NaN: failed) this search may use - the warm set and its own
        evaluations; ``rng``: the iteration's own generator (``default_rng([seed, iteration])``);
        ``k >= 1``: how many new subnets are wanted. Return at most ``k`` distinct feasible subnets
        not in ``known`` (fewer, or none, when the strategy has run dry), and per subnet what was
        predicted for it, or None when the strategy predicts nothing."""

    def random_feasible(self, rng: np.random.Generator, k: int, taken: set[str]) -> list[SubnetSpec]:
        """Up to ``k`` distinct feasible random subnets not in ``taken``; a clear error if the
        constraints reject every one of many tries."""
        out: list[SubnetSpec] = []
        taken = set(taken)
        tries = 0
        while len(out) < k and tries < 50:
            tries += 1
            batch = self.task.space.sample_unique(rng, 4 * k, taken)
            if not batch:
                break
            ok = self.task.feasible(batch)
            for spec, good in zip(batch, ok, strict=True):
                taken.add(spec.key())
                if good and len(out) < k:
                    out.append(spec)
        if not out and k > 0 and self.task.constraints:
            raise NasqError(no_feasible_message(self.task, rng))
        return out


def no_feasible_message(task: SearchTask, rng: np.random.Generator) -> str:
    from nasq.search.nsga import describe

    probe = [task.space.smallest(), task.space.largest(), *task.space.sample(rng, 256)]
    values = task.score(probe, np.zeros(len(probe)))
    parts = [f"{describe(c)} (best seen: {(values[c.metric].min() if c.max is not None else values[c.metric].max()):.4g})"
             for c in task.constraints]
    return "no subnet meets the constraints: " + "; ".join(parts)


def make_strategy(name: str, task: SearchTask) -> Strategy:
    import nasq.search.baselines  # noqa: F401 - registers the baselines

    return STRATEGIES.get(name)(task)


@STRATEGIES.register("linas")
class Linas(Strategy):
    """Predictors in the loop: refit the accuracy predictor on every true evaluation so far, run
    NSGA-II on predicted top1 + cost model, evaluate the most promising new candidates (spread along
    the predicted front) and, where the predictor has an uncertainty, the most uncertain ones."""

    name = "linas"

    def propose(self, state: SearchState, known: dict[str, float], rng: np.random.Generator, k: int) -> Proposal:
        task, cfg = self.task, self.task.config
        ok = [key for key, v in known.items() if math.isfinite(v)]
        if len(ok) < max(cfg.initial_evals, 4):  # whole batches of random subnets until the predictor can fit
            return self.random_feasible(rng, k, set(known)), None
        if task.fit_predictor is None:
            raise NasqError("strategy 'linas' needs an accuracy predictor (fit_predictor)")
        specs = [_spec(task, state, key) for key in ok]
        predictor = task.fit_predictor(specs, np.array([known[key] for key in ok]), cfg.seed)

        def score(batch: list[SubnetSpec]) -> dict[str, np.ndarray]:
            return {"top1": predictor.predict(batch), **task.cost.score(batch)}

        nsga_cfg = cfg.model_copy(update={"seed": derived_seed(cfg.seed, state.iteration)})
        pool = [c for c in nsga2_population(task.space, score, task.objectives, task.constraints, nsga_cfg)
                if c.spec.key() not in known]
        chosen = self._choose(predictor, pool, k)
        if len(chosen) < k:  # the predicted population is exhausted: explore at random
            extra = self.random_feasible(rng, k - len(chosen), set(known) | {c.spec.key() for c in chosen})
            if extra:
                values = score(extra)
                chosen += [Candidate(task.space.encode(s), s, {m: float(v[i]) for m, v in values.items()})
                           for i, s in enumerate(extra)]
        return [c.spec for c in chosen], [c.predicted for c in chosen]

    def _choose(self, predictor: Any, pool: list[Candidate], k: int) -> list[Candidate]:
        n_uncertain = int(round(k * self.task.config.uncertain_fraction)) if predictor.has_uncertainty else 0
        chosen = pick_spread([c for c in pool if c.rank == 0], k - n_uncertain)
        taken = {c.spec.key() for c in chosen}
        rest = [c for c in pool if c.spec.key() not in taken]
        chosen += rest[: max(0, k - n_uncertain - len(chosen))]  # next ranks, when the front is short
        taken = {c.spec.key() for c in chosen}
        rest = [c for c in pool if c.spec.key() not in taken]
        if n_uncertain and rest:
            _, std = predictor.predict_with_std([c.spec for c in rest])
            for i in np.argsort(-std, kind="stable")[:n_uncertain]:
                rest[i].predicted["top1_std"] = float(std[i])
                chosen.append(rest[i])
        return chosen[:k]


def _spec(task: SearchTask, state: SearchState, key: str) -> SubnetSpec:
    return state.specs.get(key) or next(s for s in task.warm if s.key() == key)


def pick_spread(candidates: list[Candidate], k: int) -> list[Candidate]:
    """At most ``k`` candidates spread evenly along predicted top1."""
    ordered = sorted(candidates, key=lambda c: -c.predicted["top1"])
    if len(ordered) <= k or k <= 0:
        return ordered[: max(k, 0)]
    idx = np.unique(np.round(np.linspace(0, len(ordered) - 1, k)).astype(int))
    return [ordered[i] for i in idx]


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
        for key in state.keys:  # its measurements are in the checkpoint: never evaluated again
            ledger.record(state.specs[key], state.top1[key], "resumed")
    else:
        state = SearchState(cfg.strategy, cfg.seed, fingerprint=task.fingerprint())
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
    from nasq.predict.models import kendall_tau

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
    specs = [_spec(task, state, k) for k in keys]
    keep = task.feasible(specs)
    specs, keys = [s for s, g in zip(specs, keep, strict=True) if g], [k for k, g in zip(keys, keep, strict=True) if g]
    if not specs:
        raise NasqError(f"no truly evaluated subnet meets the constraints after {state.true_evals} evaluations")
    costs = task.cost.score(specs)
    points = []
    for i, (spec, key) in enumerate(zip(specs, keys, strict=True)):
        predicted = {"top1": math.nan, **state.predicted.get(key, {}), **{m: float(v[i]) for m, v in costs.items()}}
        points.append(FrontPoint(spec, [int(g) for g in task.space.encode(spec)], predicted, {"top1": known[key]}))
    front = Front(task.objectives, points, task.lineage)
    nd = non_dominated(front.matrix())
    front.points = sorted((points[i] for i in nd), key=lambda p: (-p.value("top1"), p.spec.key()))
    return front
