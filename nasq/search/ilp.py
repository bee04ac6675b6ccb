"""Per-layer format allocation by integer programming (after Hubara et al. 2021, "Accurate post
training quantization with small calibration sets", and HAWQ-v3's ILP): for one architecture,
binary ``x[l, f]`` (layer slot ``l`` takes format ``f`` for weights and activations), exactly one
format per layer, minimise ``sum loss[l, f] x[l, f]`` subject to ``sum cost[l, f] x[l, f] <= budget``
(scipy's ``milp``, HiGHS).

``loss``: a :data:`Sensitivity` table (layer slot -> format -> estimated top-1 loss in points: the
measured one-layer drops of ``nasq sensitivity``, given to the search as data in
``SearchTask.sensitivity``), or, when the task has none, the accuracy predictor's own estimate:
predicted top-1 of the architecture at the menu's highest format minus that with one layer at ``f``.
``cost``: what one layer at ``f`` adds to the budget metric over the architecture at its cheapest
format, from the task's cost model (size, BOPs and the latency tables are per-layer sums, so the
differences add up; a latency with format-transition costs is approximated, and every allocation
is checked against the true constraints before it is proposed).

The budget metric is the first constraint's (``size_mb <= 0.25``) or else the first cost objective;
budgets sweep from the cheapest to the dearest allocation (capped by the constraint) to form a front.

Strategies: ``ilp`` proposes, per iteration, ILP allocations over a budget sweep for the known
front's architectures and a few random ones; ``sensitivity_seeded`` is LINAS whose NSGA-II starts
from such allocations instead of a uniformly random population.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from nasq.errors import NasqError
from nasq.formats import highest_bits
from nasq.search.linas import Linas
from nasq.search.nsga import describe
from nasq.search.pareto import direction, non_dominated
from nasq.search.protocols import AccuracyModel
from nasq.search.state import SearchState
from nasq.search.strategy import STRATEGIES, Proposal, SearchTask, Strategy, spec_of
from nasq.space import LayerChoice, SearchSpace, SubnetSpec

Sensitivity = dict[str, dict[str, float]]  # layer slot (stage{i}.layer{j}) -> format -> estimated loss (points)
COST_METRICS = ("size_mb", "bops_g", "latency_ms")


class InfeasibleBudget(NasqError):
    """No allocation meets a budget (one line naming it and the minimum achievable)."""


def solve(loss: np.ndarray, cost: np.ndarray, budget: float) -> np.ndarray | None:
    """The format index per layer minimising total ``loss`` (layers x formats) with total ``cost``
    at most ``budget``; None when no allocation fits. Ties go to the lower cost (a tiny penalty)."""
    n_layers, n_formats = loss.shape
    span = float(np.ptp(cost)) or 1.0
    c = (loss + 1e-6 * (cost - cost.min()) / span).ravel()
    one_each = np.kron(np.eye(n_layers), np.ones(n_formats))
    res = milp(c, integrality=np.ones(c.size), bounds=Bounds(0, 1),
               constraints=[LinearConstraint(one_each, 1, 1), LinearConstraint(cost.ravel()[None, :], -np.inf, budget)])
    if not res.success or res.x is None:
        return None
    return np.argmax(res.x.reshape(n_layers, n_formats), axis=1)


def cost_range(cost: np.ndarray) -> tuple[float, float]:
    return float(cost.min(axis=1).sum()), float(cost.max(axis=1).sum())


def slot_names(spec: SubnetSpec) -> list[str]:
    return [f"stage{i}.layer{j}" for i, stage in enumerate(spec.stages) for j in range(len(stage))]


def allocate(spec: SubnetSpec, formats: list[str]) -> SubnetSpec:
    """``spec``'s architecture with layer ``n`` at ``formats[n]`` (weights and activations)."""
    it = iter(formats)
    stages = tuple(tuple(LayerChoice(f, f, layer.arch) for layer, f in zip(stage, it, strict=False))
                   for stage in spec.stages)
    return SubnetSpec(stages, spec.widths, spec.resolution)


def menu(space: SearchSpace) -> list[str]:
    """The formats an allocation picks from: those both menus hold, each for weights and activations."""
    p = space.config.precision
    return [f for f in p.w_format if f in p.a_format] or list(p.w_format)


def budget_metric(task: SearchTask) -> tuple[str, float]:
    """(metric, cap): the first constraint's metric and its max, else the first cost objective (no cap)."""
    for c in task.constraints:
        if c.max is not None and c.metric in COST_METRICS:
            return c.key, float(c.max)
    for o in task.objectives:
        if o != "top1" and direction(o) < 0:
            return o, math.inf
    raise NasqError("strategy 'ilp' needs a size_mb, bops_g or latency_ms objective or constraint to budget")


def check_feasible(task: SearchTask) -> None:
    """One line when a cost constraint is below what the all-smallest subnet costs."""
    values = task.cost.score([task.space.smallest()])
    for c in task.constraints:
        if c.max is not None and c.key in values and float(values[c.key][0]) > c.max:
            raise InfeasibleBudget(f"constraint {describe(c)}: no allocation can meet it (the minimum achievable, "
                                   f"the smallest subnet with every layer at its lowest format, is "
                                   f"{float(values[c.key][0]):.4g})")


class Allocator:
    """ILP allocations for the architectures of ``task``'s space, losses from ``sensitivity`` or,
    without one, from ``predictor`` (see the module docstring)."""

    def __init__(self, task: SearchTask, predictor: AccuracyModel | None = None):
        self.task, self.predictor = task, predictor
        self.formats = menu(task.space)
        self.metric, self.cap = budget_metric(task)
        if task.sensitivity is None and predictor is None:
            raise NasqError("ILP allocation needs a sensitivity table or an accuracy predictor")

    def matrices(self, arch: SubnetSpec) -> tuple[np.ndarray, np.ndarray, float]:
        """(loss, cost, base): layers x formats; total cost = base + the chosen cells' sum."""
        names, F = slot_names(arch), len(self.formats)
        cheap = min(self.formats, key=lambda f: self.task.cost.score([allocate(arch, [f] * len(names))])[self.metric][0])
        probes = [allocate(arch, [cheap] * len(names))]
        probes += [allocate(arch, [f if n == m else cheap for m in range(len(names))]) for n in range(len(names))
                   for f in self.formats]
        values = self.task.cost.score(probes)[self.metric]
        cost = (values[1:] - values[0]).reshape(len(names), F)
        return self._loss(arch, names), cost, float(values[0])

    def _loss(self, arch: SubnetSpec, names: list[str]) -> np.ndarray:
        table = self.task.sensitivity
        if table is not None:
            fallback = {f: float(np.mean([row.get(f, 0.0) for row in table.values()])) for f in self.formats}
            return np.array([[max(table.get(n, fallback).get(f, fallback[f]), 0.0) for f in self.formats]
                             for n in names])
        top = highest_bits(self.formats)
        specs = [allocate(arch, [top] * len(names))]
        specs += [allocate(arch, [f if n == m else top for m in range(len(names))]) for n in range(len(names))
                  for f in self.formats]
        pred = np.asarray(self.predictor.predict(specs), dtype=np.float64)
        return np.clip(pred[0] - pred[1:], 0.0, None).reshape(len(names), len(self.formats))

    def sweep(self, arch: SubnetSpec, n_budgets: int) -> list[SubnetSpec]:
        """The distinct ILP allocations of ``arch`` at ``n_budgets`` budgets from the cheapest to
        the dearest allocation (capped); none when even the cheapest exceeds the cap."""
        loss, cost, base = self.matrices(arch)
        lo, hi = cost_range(cost)
        hi = min(hi, self.cap - base)
        if hi < lo - 1e-12:
            return []
        out: dict[str, SubnetSpec] = {}
        for budget in np.linspace(lo, hi, max(n_budgets, 1)):
            choice = solve(loss, cost, float(budget) + 1e-9)
            if choice is not None:
                spec = allocate(arch, [self.formats[i] for i in choice])
                out.setdefault(spec.key(), spec)
        return list(out.values())


def architectures(task: SearchTask, state: SearchState, known: dict[str, float], rng: np.random.Generator,
                  n_front: int, n_random: int) -> list[SubnetSpec]:
    """Distinct architectures: those of the best known points (non-dominated on top1 and the
    budget metric) and ``n_random`` random ones; the largest when nothing is known."""
    ok = [key for key, v in known.items() if math.isfinite(v)]
    archs: dict[str, SubnetSpec] = {}
    if ok:
        specs = [spec_of(task, state, key) for key in ok]
        metric, _ = budget_metric(task)
        F = np.column_stack([-np.array([known[k] for k in ok]), task.cost.score(specs)[metric]])
        for i in sorted(non_dominated(F), key=lambda i: -known[ok[i]])[:n_front]:
            arch = allocate(specs[i], [menu(task.space)[0]] * len(specs[i].layers()))
            archs.setdefault(arch.key(), arch)
    else:
        largest = task.space.largest()
        archs[largest.key()] = largest
    for spec in task.space.sample(rng, n_random):
        arch = allocate(spec, [menu(task.space)[0]] * len(spec.layers()))
        archs.setdefault(arch.key(), arch)
    return list(archs.values())


def round_robin(groups: list[list[SubnetSpec]]) -> list[SubnetSpec]:
    """Interleave the groups (one allocation per architecture in turn), spreading a short pick."""
    out = []
    for i in range(max((len(g) for g in groups), default=0)):
        out += [g[i] for g in groups if i < len(g)]
    return out


@STRATEGIES.register("ilp")
class IlpSearch(Strategy):
    """Per iteration: ILP allocations over a budget sweep for the known front's architectures and
    a few random ones (round robin, feasible, new); random subnets where they run short. Without a
    sensitivity table the losses come from the accuracy predictor, fitted once enough is known."""

    name = "ilp"
    extendable = True

    def __init__(self, task: SearchTask):
        super().__init__(task)
        check_feasible(task)
        budget_metric(task)

    def propose(self, state: SearchState, known: dict[str, float], rng: np.random.Generator, k: int) -> Proposal:
        task, cfg = self.task, self.task.config
        predictor = None
        if task.sensitivity is None:
            ok = [key for key, v in known.items() if math.isfinite(v)]
            if len(ok) < max(cfg.initial_evals, 4) or task.fit_predictor is None:
                return self.random_feasible(rng, k, set(known)), None
            predictor = task.fit_predictor([spec_of(task, state, key) for key in ok],
                                           np.array([known[key] for key in ok]), cfg.seed)
        return ilp_proposals(self, state, known, rng, k, predictor), None


def ilp_proposals(strategy: Strategy, state: SearchState, known: dict[str, float], rng: np.random.Generator, k: int,
                  predictor: AccuracyModel | None = None) -> list[SubnetSpec]:
    """Up to ``k`` new feasible ILP allocations for ``strategy``'s task (budget sweeps over the known
    front's and a few random architectures, round robin), random feasible subnets where they run short."""
    task = strategy.task
    allocator = Allocator(task, predictor)
    archs = architectures(task, state, known, rng, n_front=3, n_random=3)
    pool = round_robin([allocator.sweep(a, max(4, k)) for a in archs])
    pool = [s for s in dict((s.key(), s) for s in pool).values() if s.key() not in known]
    ok_mask = task.feasible(pool) if pool else np.zeros(0, dtype=bool)
    chosen = [s for s, good in zip(pool, ok_mask, strict=True) if good][:k]
    if len(chosen) < k:
        chosen += strategy.random_feasible(rng, k - len(chosen), set(known) | {s.key() for s in chosen})
    return chosen


def seed_genomes(task: SearchTask, state: SearchState, known: dict[str, float], predictor: AccuracyModel | None,
                 rng: np.random.Generator, population: int) -> np.ndarray:
    """An initial NSGA-II population: ILP allocations (a budget sweep over the known front's and a
    few random architectures), then uniformly random genomes up to ``population`` rows."""
    allocator = Allocator(task, predictor)
    archs = architectures(task, state, known, rng, n_front=4, n_random=4)
    per_arch = max(2, population // max(len(archs), 1))
    specs = round_robin([allocator.sweep(a, per_arch) for a in archs])[:population]
    space = task.space
    rows: dict[bytes, np.ndarray] = {}
    for g in [space.encode(s) for s in specs]:
        rows.setdefault(g.tobytes(), g)
    for _ in range(20):  # pad with random genomes; duplicates dropped, so a few rounds
        if len(rows) >= population:
            break
        for g in space.canonical_batch(rng.integers(0, space.upper + 1, size=(population, space.n_genes))):
            if len(rows) < population:
                rows.setdefault(g.tobytes(), g)
    return np.stack(list(rows.values())).astype(np.int64)


@STRATEGIES.register("sensitivity_seeded")
class SensitivitySeeded(Linas):
    """LINAS whose inner NSGA-II starts from ILP allocations (:func:`seed_genomes`) instead of a
    uniformly random population; losses from the task's sensitivity table, else the predictor. With
    a table, the batches before the predictor's first fit are ILP allocations too
    (``initial_ilp_share`` of each)."""

    name = "sensitivity_seeded"
    initial_ilp_share: ClassVar[float] = 1.0  # of each batch before the predictor's first fit

    def _before_predictor(self, state: SearchState, known: dict[str, float], rng: np.random.Generator,
                          k: int) -> list[SubnetSpec]:
        if self.task.sensitivity is None:  # nothing to allocate from yet: random, as LINAS
            return super()._before_predictor(state, known, rng, k)
        chosen = ilp_proposals(self, state, known, rng, int(math.ceil(self.initial_ilp_share * k)))
        return chosen + self.random_feasible(rng, k - len(chosen), set(known) | {s.key() for s in chosen})

    def _initial_population(self, state: SearchState, known: dict[str, float], predictor: AccuracyModel,
                            rng: np.random.Generator) -> np.ndarray | None:
        return seed_genomes(self.task, state, known, predictor, rng, self.task.config.population)
