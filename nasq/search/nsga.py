"""NSGA-II over the integer genome, with objectives scored in one vectorised call: pymoo's
``minimize``, or nasq's array engine (:mod:`nasq.search.engine`) as ``SearchConfig.engine`` says."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.problem import Problem
from pymoo.core.repair import Repair
from pymoo.indicators.hv import HV
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.sampling.rnd import IntegerRandomSampling
from pymoo.optimize import minimize

from nasq.errors import NasqError
from nasq.search import engine, operators
from nasq.search.operators import make_duplicates, make_mutation, make_selection, make_survival
from nasq.search.pareto import normalise, to_minimisation
from nasq.space import SearchSpace, SubnetSpec
from nasq.specs import ConstraintSpec, SearchConfig

REFERENCE = 1.1  # hypervolume reference point, per normalised objective

ScoreFn = Callable[[list[SubnetSpec]], dict[str, np.ndarray]]
# The same objectives scored on a genome matrix (rows: canonical genomes), with no SubnetSpec per
# candidate: what predictor-only searches pass so a generation is a handful of array operations.
GenomeScoreFn = Callable[[np.ndarray], dict[str, np.ndarray]]


def hypervolume(F: np.ndarray, objectives: tuple[str, ...], bounds: dict[str, tuple[float, float]]) -> float:
    """pymoo's HV of raw objective values, normalised by ``bounds``, reference point 1.1 per
    objective (points worse than it add nothing)."""
    if len(F) == 0:
        return 0.0
    return float(HV(ref_point=np.full(len(objectives), REFERENCE))(normalise(F, objectives, bounds)))


@dataclass
class Candidate:
    genome: np.ndarray
    spec: SubnetSpec
    predicted: dict[str, float]
    rank: int = 0  # non-domination rank in the final population (0: the front)


def constraint_matrix(values: dict[str, np.ndarray], constraints: tuple[ConstraintSpec, ...], n: int) -> np.ndarray:
    """pymoo's convention: G <= 0 is feasible."""
    cols = []
    for c in constraints:
        v = values[c.key]
        cols.append(v - c.max if c.max is not None else c.min - v)
    return np.column_stack(cols) if cols else np.zeros((n, 0))


def describe(c: ConstraintSpec) -> str:
    return f"{c.key} <= {c.max}" if c.max is not None else f"{c.key} >= {c.min}"


def _problem_class():

    class CanonicalRepair(Repair):
        """Round, clip, then zero the genes of inactive layers so duplicates are recognised."""

        def __init__(self, space: SearchSpace):
            super().__init__()
            self.space = space

        def _do(self, problem, X, **kwargs):
            return operators.canonical_rows(self.space, X)

    class SubnetProblem(Problem):
        def __init__(self, space: SearchSpace, score: ScoreFn, objectives, constraints,
                     score_genomes: GenomeScoreFn | None = None):
            super().__init__(n_var=space.n_genes, n_obj=len(objectives), n_ieq_constr=len(constraints),
                             xl=np.zeros(space.n_genes), xu=space.upper.astype(np.float64), vtype=int)
            self.space, self.score, self.objectives, self.constraints = space, score, objectives, constraints
            self.score_genomes = score_genomes

        def _evaluate(self, X, out, *args, **kwargs):
            X = np.asarray(X, dtype=np.int64)
            if self.score_genomes is not None:
                values = self.score_genomes(X)
            else:
                values = self.score([self.space.decode(x) for x in X])
            F = np.column_stack([values[o] for o in self.objectives])
            out["F"] = to_minimisation(F, self.objectives)
            if self.constraints:
                out["G"] = constraint_matrix(values, self.constraints, len(X))

    return CanonicalRepair, SubnetProblem


def make_algorithm(space: SearchSpace, pop_size: int, initial: np.ndarray | None = None):
    """pymoo NSGA-II over the integer genome (the recipe in STACK_NOTES: SBX, rounded and made
    canonical by the repair, duplicates eliminated), mutating only genes with more than one choice
    (:mod:`nasq.search.operators`: one-choice genes would dilute pymoo's 1/n_var rate)."""
    CanonicalRepair, _ = _problem_class()
    # initial: genomes of the first population (pymoo takes an array as sampling), else random
    return NSGA2(pop_size=pop_size, sampling=IntegerRandomSampling() if initial is None else initial,
                 crossover=SBX(prob=0.9, eta=3.0, vtype=float), mutation=make_mutation(space.upper),
                 repair=CanonicalRepair(space), eliminate_duplicates=make_duplicates(), survival=make_survival(),
                 selection=make_selection())


def _minimize(space: SearchSpace, score: ScoreFn, objectives: tuple[str, ...],
              constraints: tuple[ConstraintSpec, ...], cfg: SearchConfig, score_genomes: GenomeScoreFn | None = None,
              initial: np.ndarray | None = None):
    _, SubnetProblem = _problem_class()
    problem = SubnetProblem(space, score, objectives, constraints, score_genomes)
    # the algorithm is built here for this run alone: pymoo's default deep copy of it (with the
    # search space its repair holds) only cost time and left the copy's caches cold (kept for the
    # "pymoo" operator set, the benchmark's before-path)
    return minimize(problem, make_algorithm(space, cfg.population, initial), ("n_gen", cfg.generations), seed=cfg.seed,
                    verbose=False, copy_algorithm=operators.operator_set == "pymoo")


def run_nsga2(space: SearchSpace, score: ScoreFn, objectives: tuple[str, ...],
              constraints: tuple[ConstraintSpec, ...], cfg: SearchConfig,
              score_genomes: GenomeScoreFn | None = None) -> list[Candidate]:
    """Run NSGA-II on the predicted objectives; return the feasible non-dominated candidates of
    the final population (canonical, unique). Raises a clear error if nothing is feasible."""
    return [c for c in nsga2_population(space, score, objectives, constraints, cfg, score_genomes) if c.rank == 0]


def nsga2_population(space: SearchSpace, score: ScoreFn, objectives: tuple[str, ...],
                     constraints: tuple[ConstraintSpec, ...], cfg: SearchConfig,
                     score_genomes: GenomeScoreFn | None = None, initial: np.ndarray | None = None) -> list[Candidate]:
    """Run NSGA-II (from the ``initial`` genomes when given, else a random population); return
    the feasible members of the final population (canonical, unique),
    best non-domination rank first, then most crowded-apart first. The whole population is scored
    in one call: by ``score_genomes`` on the genome matrix when given (it must give what ``score``
    gives for the decoded specs), else by ``score`` on specs. Raises a clear error (naming the
    best value seen per constraint) if none is feasible. ``cfg.engine`` picks the loop
    (:func:`use_array_engine`); the result has the same form either way."""
    if use_array_engine(cfg, score_genomes):
        return _array_population(space, score, objectives, constraints, cfg, score_genomes, initial)
    res = _minimize(space, score, objectives, constraints, cfg, score_genomes, initial)
    pop_X = np.asarray(res.pop.get("X"), dtype=np.int64)
    values = score_genomes(pop_X) if score_genomes is not None else score([space.decode(x) for x in pop_X])
    rank = np.asarray(res.pop.get("rank"), dtype=np.float64).reshape(-1)
    crowd = np.asarray(res.pop.get("crowding"), dtype=np.float64).reshape(-1)
    return _candidates(space, pop_X, values, rank, crowd, constraints)


def use_array_engine(cfg: SearchConfig, score_genomes: GenomeScoreFn | None) -> bool:
    """``cfg.engine``: "auto" runs the array engine when the search is scored on genomes (pymoo's
    per-individual population would dominate its time), pymoo's ``minimize`` otherwise."""
    return cfg.engine == "array" or (cfg.engine == "auto" and score_genomes is not None)


def _array_population(space: SearchSpace, score: ScoreFn, objectives: tuple[str, ...],
                      constraints: tuple[ConstraintSpec, ...], cfg: SearchConfig,
                      score_genomes: GenomeScoreFn | None, initial: np.ndarray | None) -> list[Candidate]:
    """nsga2_population on :mod:`nasq.search.engine`; without ``score_genomes`` rows are decoded
    and scored by ``score``. The final population's values are the ones it was scored with."""
    by_genome = score_genomes or (lambda X: score([space.decode(x) for x in X]))

    def evaluate(X: np.ndarray):
        if hasattr(space, "batch"):  # the engine's rows are canonical (its repair made them so): say so
            space.batch(X, canonical=True)  # once, and the scorers' features and cost models share its tables
        values = by_genome(X)
        F = to_minimisation(np.column_stack([values[o] for o in objectives]), objectives)
        return values, F, constraint_matrix(values, constraints, len(X))

    pop = engine.run(space, evaluate, cfg.population, cfg.generations, cfg.seed, initial)
    return _candidates(space, pop.X, pop.values, pop.rank, pop.crowding, constraints)


def _candidates(space: SearchSpace, X: np.ndarray, values: dict[str, np.ndarray], rank: np.ndarray,
                crowd: np.ndarray, constraints: tuple[ConstraintSpec, ...]) -> list[Candidate]:
    """The feasible rows of a final population as candidates (unique canonical specs), best rank
    first, then most crowded-apart first; a clear error if none is feasible."""
    if constraints:
        feasible = np.all(constraint_matrix(values, constraints, len(X)) <= 0, axis=1)
        if not feasible.any():
            raise NasqError(_infeasible_message(values, constraints))
    else:
        feasible = np.ones(len(X), dtype=bool)
    crowd = np.nan_to_num(crowd, posinf=1e9)
    order = np.lexsort((-crowd, rank))
    out, seen = [], set()
    for i in order:
        if not feasible[i]:
            continue
        spec = space.decode(X[i])
        key = spec.key()
        if key in seen:
            continue
        seen.add(key)
        # rows are canonical (the repair made them so): the genome is the row, no re-encoding
        out.append(Candidate(X[i].copy(), spec, {k: float(a[i]) for k, a in values.items()}, int(rank[i])))
    return out


def _infeasible_message(values: dict[str, np.ndarray], constraints: tuple[ConstraintSpec, ...]) -> str:
    parts = []
    for c in constraints:
        v = values[c.key]
        best = v.min() if c.max is not None else v.max()
        parts.append(f"{describe(c)} (best seen: {best:.4g})")
    return "no subnet meets the constraints: " + "; ".join(parts)
