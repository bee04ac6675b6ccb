"""NSGA-II (pymoo) over the integer genome, with objectives scored in one vectorised call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from nasq.errors import NasqError
from nasq.search.pareto import to_minimisation
from nasq.space import SearchSpace, SubnetSpec
from nasq.specs import ConstraintSpec, SearchConfig

ScoreFn = Callable[[list[SubnetSpec]], dict[str, np.ndarray]]


@dataclass
class Candidate:
    genome: np.ndarray
    spec: SubnetSpec
    predicted: dict[str, float]


def constraint_matrix(values: dict[str, np.ndarray], constraints: tuple[ConstraintSpec, ...], n: int) -> np.ndarray:
    """pymoo's convention: G <= 0 is feasible."""
    cols = []
    for c in constraints:
        v = values[c.metric]
        cols.append(v - c.max if c.max is not None else c.min - v)
    return np.column_stack(cols) if cols else np.zeros((n, 0))


def describe(c: ConstraintSpec) -> str:
    return f"{c.metric} <= {c.max}" if c.max is not None else f"{c.metric} >= {c.min}"


def _problem_class():
    from pymoo.core.problem import Problem
    from pymoo.core.repair import Repair

    class CanonicalRepair(Repair):
        """Round, clip, then zero the genes of inactive layers so duplicates are recognised."""

        def __init__(self, space: SearchSpace):
            super().__init__()
            self.space = space

        def _do(self, problem, X, **kwargs):
            X = np.clip(np.rint(np.asarray(X, dtype=np.float64)), 0, self.space.upper).astype(np.int64)
            return self.space.canonical_batch(X)

    class SubnetProblem(Problem):
        def __init__(self, space: SearchSpace, score: ScoreFn, objectives, constraints):
            super().__init__(n_var=space.n_genes, n_obj=len(objectives), n_ieq_constr=len(constraints),
                             xl=np.zeros(space.n_genes), xu=space.upper.astype(np.float64), vtype=int)
            self.space, self.score, self.objectives, self.constraints = space, score, objectives, constraints

        def _evaluate(self, X, out, *args, **kwargs):
            specs = [self.space.decode(x) for x in np.asarray(X, dtype=np.int64)]
            values = self.score(specs)
            F = np.column_stack([values[o] for o in self.objectives])
            out["F"] = to_minimisation(F, self.objectives)
            if self.constraints:
                out["G"] = constraint_matrix(values, self.constraints, len(specs))

    return CanonicalRepair, SubnetProblem


def run_nsga2(space: SearchSpace, score: ScoreFn, objectives: tuple[str, ...],
              constraints: tuple[ConstraintSpec, ...], cfg: SearchConfig) -> list[Candidate]:
    """Run NSGA-II on the predicted objectives; return the feasible non-dominated candidates of
    the final population (canonical, unique). Raises a clear error if nothing is feasible."""
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.sampling.rnd import IntegerRandomSampling
    from pymoo.optimize import minimize

    CanonicalRepair, SubnetProblem = _problem_class()
    problem = SubnetProblem(space, score, objectives, constraints)
    algorithm = NSGA2(pop_size=cfg.population, sampling=IntegerRandomSampling(),
                      crossover=SBX(prob=0.9, eta=3.0, vtype=float), mutation=PM(eta=3.0, vtype=float),
                      repair=CanonicalRepair(space), eliminate_duplicates=True)
    res = minimize(problem, algorithm, ("n_gen", cfg.generations), seed=cfg.seed, verbose=False)
    pop_X = np.asarray(res.pop.get("X"), dtype=np.int64)
    specs = [space.decode(x) for x in pop_X]
    values = score(specs)
    if constraints:
        G = constraint_matrix(values, constraints, len(specs))
        feasible = np.all(G <= 0, axis=1)
        if not feasible.any():
            raise NasqError(_infeasible_message(values, constraints))
    if res.X is None:
        raise NasqError("the search found no feasible subnet")
    X = np.atleast_2d(np.asarray(res.X, dtype=np.int64))
    out, seen = [], set()
    for x in X:
        spec = space.decode(x)
        if spec.key() in seen:
            continue
        seen.add(spec.key())
        v = score([spec])
        out.append(Candidate(space.encode(spec), spec, {k: float(a[0]) for k, a in v.items()}))
    return out


def _infeasible_message(values: dict[str, np.ndarray], constraints: tuple[ConstraintSpec, ...]) -> str:
    parts = []
    for c in constraints:
        v = values[c.metric]
        best = v.min() if c.max is not None else v.max()
        parts.append(f"{describe(c)} (best seen: {best:.4g})")
    return "no subnet meets the constraints: " + "; ".join(parts)
