"""NSGA-II operators over the integer genome: the mutation, and the generation's bookkeeping.

Why not pymoo's polynomial mutation alone: it picks each gene with probability ``1/n_var`` over the
whole genome, and genes with a single choice (``upper == 0``: a fixed format, a one-kernel stage, a
foreign space's constant) can never change, so they only dilute the rate - on a 6-gene cell padded
with one-choice genes, ~0.24 genes changed per child instead of ~1. And on a gene with few choices
a picked gene often rounds back to its own value. :class:`VaryingGeneMutation` picks each gene
that has more than one choice with probability ``1/n_varying`` and moves it to a different choice,
so a child differs from its parent in about one gene, whatever the padding.

Bookkeeping (issue 17: predictor-scored searches spend most of a generation in pymoo itself):
pymoo's duplicate elimination builds a pairwise distance matrix, and its survival and binary
tournament read attributes one individual at a time through ``Individual.get``. The classes below
fill the same pymoo hooks array-at-once, making the same decisions with the same random draws.
Their array functions (``mutate_varying``, ``tournament_winners``, ``canonical_rows``, ``row_keys``
with ``duplicate_flags``) are also the array engine's (:mod:`nasq.search.engine`): one rule each.
"""

from __future__ import annotations

import numpy as np
from pymoo.algorithms.moo.nsga2 import binary_tournament as pymoo_binary_tournament
from pymoo.core.duplicate import DefaultDuplicateElimination, DuplicateElimination
from pymoo.core.mutation import Mutation
from pymoo.core.population import Population
from pymoo.operators.mutation.pm import PM
from pymoo.operators.selection.tournament import TournamentSelection
from pymoo.operators.survival.rank_and_crowding import RankAndCrowding

# "varying": VaryingGeneMutation (the default); "pm": pymoo's PM over the whole genome, the operator
# used before - kept reachable so benchmarks/search_quality.py can measure both side by side.
MUTATIONS = ("varying", "pm")
mutation_kind = "varying"


class VaryingGeneMutation(Mutation):
    """Each gene with more than one choice is mutated with probability ``1/n_varying``; a mutated
    gene takes a uniformly drawn *different* choice (genes are categorical or short ordinal lists,
    so a step to any other choice is as plausible as to a neighbour). Draws come from pymoo's seeded
    ``random_state``: same seed, same children."""

    def __init__(self, upper: np.ndarray):
        super().__init__(prob=1.0)
        self.upper = np.asarray(upper, dtype=np.int64)
        self.varying = np.flatnonzero(self.upper > 0)

    def _do(self, problem, X, *args, random_state=None, **kwargs):
        return mutate_varying(X, self.upper, random_state, self.varying)


def mutate_varying(X: np.ndarray, upper: np.ndarray, rng: np.random.Generator,
                   varying: np.ndarray | None = None) -> np.ndarray:
    """:class:`VaryingGeneMutation`'s rule on a genome matrix (rounded to int64 first), drawing from
    ``rng``: the one implementation, shared by pymoo's operator and nasq's array engine."""
    X = np.rint(np.asarray(X, dtype=np.float64)).astype(np.int64)
    upper = np.asarray(upper, dtype=np.int64)
    varying = np.flatnonzero(upper > 0) if varying is None else varying
    if len(varying) == 0 or len(X) == 0:
        return X
    n = len(varying)
    pick = rng.random((len(X), n)) < 1.0 / n
    sizes = upper[varying] + 1
    # a step of 1..size-1 modulo size: a different choice, uniformly
    step = np.floor(rng.random((len(X), n)) * (sizes - 1)).astype(np.int64) + 1
    cols = X[:, varying]
    X[:, varying] = np.where(pick, (cols + step) % sizes, cols)
    return X


def make_mutation(upper: np.ndarray, kind: str | None = None) -> Mutation:
    """The mutation operator ``kind`` (default: :data:`mutation_kind`) for a genome with per-gene
    largest choice index ``upper``."""
    kind = kind or mutation_kind
    if kind == "varying":
        return VaryingGeneMutation(upper)
    if kind == "pm":
        return PM(eta=3.0, vtype=float)
    raise ValueError(f"unknown mutation {kind!r} (known: {', '.join(MUTATIONS)})")


def canonical_rows(space, X: np.ndarray) -> np.ndarray:
    """Offspring made genomes: rounded, clipped to each gene's choices, then canonical
    (``space.canonical_batch``: inactive layers' genes zeroed) so duplicates are recognised."""
    X = np.clip(np.rint(np.asarray(X, dtype=np.float64)), 0, space.upper).astype(np.int64)
    return space.canonical_batch(X)


def genes_changed(parents: np.ndarray, children: np.ndarray) -> np.ndarray:
    """How many genes each child differs from its parent in (rows paired)."""
    return np.sum(np.asarray(parents) != np.asarray(children), axis=1)


# The generation's bookkeeping operators: "nasq" (the default) fills pymoo's hooks with the
# array-at-once versions below (duplicates by hashed rows, the survival's feasibility split and the
# binary tournament read straight from the individuals); "pymoo" uses pymoo's own, the operators
# used before - kept so benchmarks/scoring_throughput.py can measure both side by side. Both give
# the same search.
OPERATOR_SETS = ("nasq", "pymoo")
operator_set = "nasq"


def genome_rows(pop) -> np.ndarray:
    """The X matrix of a pymoo population, read attribute by attribute: ``Population.get("X")``
    goes through ``Individual.get``'s generic lookup per individual and was most of the time
    pymoo spent finding duplicates."""
    rows = [ind.X for ind in pop]
    return np.array(rows, dtype=np.float64).reshape(len(rows), -1) if rows else np.zeros((0, 0))


def row_keys(X: np.ndarray) -> list[bytes]:
    # + 0.0 turns -0.0 into 0.0, so byte-equal rows are exactly the numerically equal ones
    X = np.ascontiguousarray(np.asarray(X, dtype=np.float64) + 0.0)
    if X.size == 0:  # no rows, or rows of no genes (all equal)
        return [b""] * len(X)
    # one void item per row: tolist() gives each row's bytes in one C call
    return X.view(np.dtype((np.void, X.itemsize * X.shape[1]))).ravel().tolist()


class RowDuplicateElimination(DuplicateElimination):
    """Duplicates are rows with exactly equal genes, found by hashing each row's bytes: linear in
    the population instead of pymoo's pairwise distance matrix (which with its 1e-16 epsilon also
    only matched equal rows). As in pymoo, a row repeating an earlier row of the same population
    is the duplicate (the first is kept), and with ``other`` every row found in ``other`` is."""

    def _do(self, pop, other, is_duplicate):
        seen = set() if other is None else set(row_keys(genome_rows(other)))
        return is_duplicate | duplicate_flags(row_keys(genome_rows(pop)), seen, remember=other is None)


def duplicate_flags(keys: list[bytes], seen: set[bytes], remember: bool) -> np.ndarray:
    """Which of ``keys`` (from :func:`row_keys`) are already in ``seen``; with ``remember`` each
    new key is added to ``seen`` as it goes, so a later repeat of an earlier row is flagged too
    (the first is kept)."""
    flags = np.zeros(len(keys), dtype=bool)
    for i, k in enumerate(keys):
        if k in seen:
            flags[i] = True
        elif remember:
            seen.add(k)
    return flags


def _operator_set(kind: str | None) -> str:
    kind = kind or operator_set
    if kind not in OPERATOR_SETS:
        raise ValueError(f"unknown operator set {kind!r} (known: {', '.join(OPERATOR_SETS)})")
    return kind


def make_duplicates(kind: str | None = None) -> DuplicateElimination:
    """The duplicate elimination of operator set ``kind`` (default: :data:`operator_set`)."""
    return RowDuplicateElimination() if _operator_set(kind) == "nasq" else DefaultDuplicateElimination()


class FeasibleFirstRankAndCrowding(RankAndCrowding):
    """pymoo's NSGA-II survival with the feasible/infeasible split read straight from each
    individual's cached ``CV``: ``Survival.do`` gets ``F``, ``CV`` and ``FEAS`` through
    ``Population.get``, whose generic lookup evaluates every property twice and recomputes
    ``FEAS`` each time - the largest single cost of a generation. The split is pymoo's
    (``split_by_feasibility``: feasible in order, infeasible sorted by violation with the same
    argsort), then pymoo's own ranking; anything else goes to pymoo's ``do`` unchanged."""

    def do(self, problem, pop, *args, n_survive=None, random_state=None, return_indices=False, **kwargs):
        if (random_state is None or return_indices or len(pop) == 0 or not self.filter_infeasible
                or not problem.has_constraints()):
            return super().do(problem, pop, *args, n_survive=n_survive, random_state=random_state,
                              return_indices=return_indices, **kwargs)
        n_survive = len(pop) if n_survive is None else min(n_survive, len(pop))
        CV = np.array([ind.CV for ind in pop])
        eps = np.array([ind.config.get("cv_eps", 0.0) for ind in pop]).reshape(-1, *([1] * (CV.ndim - 1)))
        feasible, infeasible = np.where(CV <= eps)[0], np.where(~(CV <= eps))[0]
        infeasible = infeasible[np.argsort(CV[infeasible, 0])]
        survivors = Population() if len(feasible) == 0 else self._do(
            problem, pop[feasible], *args, n_survive=min(len(feasible), n_survive), random_state=random_state, **kwargs)
        n_remaining = n_survive - len(survivors)
        return Population.merge(survivors, pop[infeasible[:n_remaining]]) if n_remaining > 0 else survivors


def make_survival(kind: str | None = None) -> RankAndCrowding:
    """NSGA-II's survival in operator set ``kind`` (default: :data:`operator_set`)."""
    return FeasibleFirstRankAndCrowding() if _operator_set(kind) == "nasq" else RankAndCrowding()


def binary_tournament(pop, P, algorithm, **kwargs):
    """pymoo's NSGA-II binary tournament, decided for all pairs at once: the lower constraint
    violation wins if either is infeasible, else the dominating one, else the larger crowding
    distance. Ties are drawn exactly as pymoo draws them (``algorithm.random_state.choice`` per
    tied pair, in pair order), so the random stream - and the search - is the same. pymoo's
    version reads four attributes per pair through ``Individual.get``."""
    if P.shape[1] != 2 or algorithm.tournament_type != "comp_by_dom_and_crowding":
        return pymoo_binary_tournament(pop, P, algorithm, **kwargs)
    cv = np.array([ind.CV[0] for ind in pop], dtype=np.float64)
    F = np.array([ind.F for ind in pop], dtype=np.float64)
    crowd = np.array([ind.get("crowding") for ind in pop], dtype=np.float64)
    a, b = P[:, 0], P[:, 1]
    S = tournament_winners(a, b, cv, F, crowd)
    for i in np.flatnonzero(S < 0):  # ties: one draw each, in pymoo's order
        S[i] = algorithm.random_state.choice([a[i], b[i]])
    return S[:, None].astype(int, copy=False)


def tournament_winners(a: np.ndarray, b: np.ndarray, cv: np.ndarray, F: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """NSGA-II's binary tournament of the pairs (``a[i]``, ``b[i]``) (indices into ``cv``: total
    constraint violation, ``F``: minimised objectives, ``crowd``: crowding distance): the lower
    violation wins if either is infeasible, else the dominating one, else the larger crowding
    distance; -1 where tied (the caller draws: pymoo's hook per pair, the array engine at once)."""
    infeasible = (cv[a] > 0.0) | (cv[b] > 0.0)
    a_better, b_better = (F[a] < F[b]).any(axis=1), (F[b] < F[a]).any(axis=1)
    dom = np.where(a_better & ~b_better, 1, np.where(b_better & ~a_better, -1, 0))
    return np.where(infeasible,
                    np.where(cv[a] < cv[b], a, np.where(cv[b] < cv[a], b, -1)),
                    np.where(dom == 1, a, np.where(dom == -1, b,
                             np.where(crowd[a] > crowd[b], a, np.where(crowd[a] < crowd[b], b, -1)))))


def make_selection(kind: str | None = None) -> TournamentSelection:
    """NSGA-II's binary tournament in operator set ``kind`` (default: :data:`operator_set`)."""
    nasq = _operator_set(kind) == "nasq"
    return TournamentSelection(func_comp=binary_tournament if nasq else pymoo_binary_tournament)
