"""What a search strategy is: the task it is given (:class:`SearchTask`), the one hook it fills
(:meth:`Strategy.propose`) and the registry of strategies. The loop that drives them is
:mod:`nasq.search.loop`; LINAS is :mod:`nasq.search.linas`, the baselines :mod:`nasq.search.baselines`.
"""

from __future__ import annotations

import abc
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from nasq.errors import NasqError
from nasq.registry import Registry
from nasq.search.nsga import constraint_matrix, describe
from nasq.search.pareto import Objective, objective, objective_bounds, objective_entry
from nasq.search.protocols import CostScorer, PredictorFitter
from nasq.search.state import SearchState
from nasq.space import GenericSpace, SearchSpace, SubnetSpec
from nasq.specs import ConstraintSpec, SearchConfig

Proposal = tuple[list[SubnetSpec], list[dict[str, float]] | None]

STRATEGIES: Registry[type[Strategy]] = Registry("search strategy")


@dataclass
class SearchTask:
    """Everything a strategy may look at. ``cost.score(specs)`` gives latency_ms / size_mb / bops_g
    (and, for several targets, ``latency_ms@<profile>`` ...): ``objectives`` may name any of them;
    ``warm``: subnets already in the ledger (e.g. the predictor's training sample) - known to every
    strategy, not counted against the budget; ``bounds``: fixed normalisation for the hypervolume."""

    space: SearchSpace | GenericSpace  # anything satisfying nasq.search.protocols.Space
    objectives: tuple[str, ...]  # names, or {name, goal} (made Objective by __post_init__)
    constraints: tuple[ConstraintSpec, ...]
    cost: CostScorer
    config: SearchConfig
    fit_predictor: PredictorFitter | None = None
    warm: list[SubnetSpec] = field(default_factory=list)
    bounds: dict[str, tuple[float, float]] | None = None
    lineage: dict[str, str] = field(default_factory=dict)
    # names of a subnet's layers whose format some target only emulates (front column emulated_layers)
    emulated_layers: Callable[[SubnetSpec], list[str]] | None = None
    # layer slot -> format -> estimated top-1 loss (points), from ``nasq sensitivity`` (strategies
    # ilp and sensitivity_seeded; without it they estimate it with the accuracy predictor)
    sensitivity: dict[str, dict[str, float]] | None = None

    def __post_init__(self) -> None:
        try:
            self.objectives = tuple(objective(o) for o in self.objectives)
        except ValueError as e:
            raise NasqError(str(e)) from None
        self.quality = self._check_scored()
        if self.bounds is None:
            self.bounds = objective_bounds(self.space, self.cost, self.objectives)

    def _check_scored(self) -> str:
        """Every objective and constraint must be a column the cost model gives (any metric names,
        e.g. ``latency_ms@<profile>`` per target), except the quality objective - what the evaluator
        returns and the accuracy predictor learns: ``top1``, or one user-named objective with
        ``goal: max`` that no cost function gives. One line now rather than a KeyError mid-search.
        Returns the quality objective's name."""
        costs = set(self.cost.score([self.space.smallest()]))
        own = [o for o in self.objectives if o not in costs and o != "top1" and isinstance(o, Objective)]
        if len(own) > 1 or (own and "top1" in self.objectives):
            raise NasqError(f"objectives {[str(o) for o in own]} are not scored by the cost functions: only one "
                            "objective can be what the evaluator returns")
        if own and own[0].goal != "max":
            raise NasqError(f"objective {str(own[0])!r} is what the evaluator returns (no cost function gives it), "
                            "so it must be maximised (goal: max); negate a loss")
        quality = own[0] if own else "top1"
        scored = {"top1", quality, *costs}
        for what, metric in [*(("objective", o) for o in self.objectives),
                             *(("constraint", c.key) for c in self.constraints)]:
            if metric not in scored:
                raise NasqError(f"{what} {metric!r} is not scored by the cost model (it gives: "
                                f"{', '.join(sorted(scored))})")
        return quality

    def with_quality(self, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``values`` (``top1`` + costs) with the quality objective's column under its own name too."""
        if self.quality != "top1" and "top1" in values:
            values[str(self.quality)] = values["top1"]
        return values

    def score(self, specs: list[SubnetSpec], top1: np.ndarray) -> dict[str, np.ndarray]:
        return self.with_quality({"top1": np.asarray(top1, dtype=np.float64), **self.cost.score(specs)})

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
        # the budget is not part of it: a finished search may be extended (run_search checks the
        # budget itself, and refuses a smaller one or a strategy whose proposals depend on it)
        what = {"search": c.model_dump(mode="json", exclude={"cache_dir", "max_true_evals"}),
                "objectives": [objective_entry(o) for o in self.objectives],
                "constraints": [x.model_dump(mode="json") for x in self.constraints], "space": self.space.hash,
                "warm": sorted(s.key() for s in self.warm)}
        if self.sensitivity is not None:  # ilp / sensitivity_seeded propose from it: a new table, a new search
            what["sensitivity"] = self.sensitivity
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


class Strategy(abc.ABC):
    """The base owns the loop (``run_search``); a strategy fills ``propose``."""

    name: ClassVar[str] = ""
    # True when what it proposes does not depend on max_true_evals, so a finished search extended
    # to a larger budget ends where a search given that budget from the start does
    extendable: ClassVar[bool] = False

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
    probe = [task.space.smallest(), task.space.largest(), *task.space.sample(rng, 256)]
    values = task.score(probe, np.zeros(len(probe)))
    parts = [f"{describe(c)} (best seen: {(values[c.key].min() if c.max is not None else values[c.key].max()):.4g})"
             for c in task.constraints]
    return "no subnet meets the constraints: " + "; ".join(parts)


def spec_of(task: SearchTask, state: SearchState, key: str) -> SubnetSpec:
    """The spec of ``key``: one the search evaluated, or one of the warm set."""
    return state.specs.get(key) or next(s for s in task.warm if s.key() == key)
