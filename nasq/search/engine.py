"""NSGA-II with the population held as arrays: the array engine of predictor-scored searches.

Why not pymoo's ``minimize`` (issue 17): pymoo keeps a population as an array of ``Individual``
objects and reads or writes every attribute one individual at a time (its evaluator, crossover,
mutation, repair, merge and ranking), which capped a predictor-scored search at a few thousand
candidates/s whatever the scoring cost. Here a population is a genome matrix ``X`` (int64,
canonical rows, unique), the scorer's values for its rows, ``F`` (minimised objectives), ``cv``
(total constraint violation), ``rank`` and ``crowding``; a generation is a handful of array
operations. What pymoo already does as array code is pymoo's: non-dominated sorting
(``NonDominatedSorting``), crowding distance (``get_crowding_function("cd")``), the randomised
last-front cut (``randomized_argsort``); SBX is pymoo's ``cross_sbx`` with the per-call overhead
taken out (:func:`sbx`, the same children, tested against it). The mutation, the
binary tournament's decisions, the canonical repair and the row hashing are the functions pymoo's
hooks use too (:mod:`nasq.search.operators`).

The algorithm is the one :func:`nasq.search.nsga.make_algorithm` configures in pymoo: a random
(or given) first population, repaired and deduplicated; then per generation a binary tournament on
(feasibility, rank, crowding), SBX (prob 0.9, eta 3), the varying-gene mutation, the canonical
repair, duplicates (of the population or earlier offspring) dropped and mating repeated until the
offspring are complete, and survival feasible-first then by rank and crowding. pymoo counts the
first population as generation 1, so does this. Every draw comes from one
``np.random.Generator(seed)``: same seed, same front (its stream is its own, not pymoo's).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pymoo.operators.survival.rank_and_crowding.metrics import get_crowding_function
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting
from pymoo.util.randomized_argsort import randomized_argsort

from nasq.search.operators import (
    canonical_rows,
    duplicate_flags,
    mutate_varying,
    row_keys,
    tournament_winners,
)

# evaluate(X) -> (values per metric, F: minimised objectives, G: constraints, <= 0 feasible)
Evaluate = Callable[[np.ndarray], tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]]

# nsga.make_algorithm's SBX(prob=0.9, eta=3.0) with pymoo's defaults prob_var 0.5, prob_bin 0.5
CROSSOVER_PROB, SBX_ETA, SBX_PROB_VAR, SBX_PROB_BIN = 0.9, 3.0, 0.5, 0.5
MAX_MATING_ROUNDS = 100  # pymoo's n_max_iterations: give up filling the offspring after this many

_SORTING = NonDominatedSorting()
_CROWDING = get_crowding_function("cd")


@dataclass
class ArrayPopulation:
    """One population, a row per member: ``rank`` is the non-domination rank among the feasible
    (inf for infeasible members), ``crowding`` the crowding distance within its front."""

    X: np.ndarray
    values: dict[str, np.ndarray]
    F: np.ndarray
    cv: np.ndarray
    rank: np.ndarray
    crowding: np.ndarray

    def __len__(self) -> int:
        return len(self.X)

    def take(self, idx: np.ndarray) -> ArrayPopulation:
        return ArrayPopulation(self.X[idx], {k: v[idx] for k, v in self.values.items()}, self.F[idx], self.cv[idx],
                               self.rank[idx], self.crowding[idx])

    @staticmethod
    def merge(a: ArrayPopulation, b: ArrayPopulation) -> ArrayPopulation:
        return ArrayPopulation(np.concatenate([a.X, b.X]), {k: np.concatenate([v, b.values[k]]) for k, v in a.values.items()},
                               np.concatenate([a.F, b.F]), np.concatenate([a.cv, b.cv]),
                               np.concatenate([a.rank, b.rank]), np.concatenate([a.crowding, b.crowding]))


def evaluated(X: np.ndarray, evaluate: Evaluate) -> ArrayPopulation:
    """``X`` scored in one call; constraint violation as pymoo's: the sum of positive ``G``."""
    values, F, G = evaluate(X)
    cv = np.clip(G, 0.0, None).sum(axis=1) if G.shape[1] else np.zeros(len(X))
    return ArrayPopulation(X, values, np.asarray(F, dtype=np.float64), cv, np.full(len(X), np.inf), np.zeros(len(X)))


def survive(pop: ArrayPopulation, n_survive: int, rng: np.random.Generator) -> ArrayPopulation:
    """NSGA-II survival, feasible first (pymoo's ``RankAndCrowding`` with its feasibility split):
    the feasible by non-domination rank, the front that does not fit cut by crowding distance
    (ties broken at random), then the infeasible by least violation. Sets rank and crowding."""
    n_survive = min(n_survive, len(pop))
    feasible, infeasible = np.flatnonzero(pop.cv <= 0), np.flatnonzero(pop.cv > 0)
    infeasible = infeasible[np.argsort(pop.cv[infeasible], kind="stable")]
    rank, crowding = np.full(len(pop), np.inf), np.zeros(len(pop))
    n_feasible = min(len(feasible), n_survive)
    chosen: list[np.ndarray] = []
    taken = 0
    if n_feasible:
        for k, front in enumerate(_SORTING.do(pop.F[feasible], n_stop_if_ranked=n_feasible)):
            idx = feasible[front]
            cd = _CROWDING.do(pop.F[idx])
            rank[idx], crowding[idx] = k, cd
            if taken + len(idx) > n_feasible:
                idx = idx[randomized_argsort(cd, order="descending", method="numpy", random_state=rng)]
                idx = idx[: n_feasible - taken]
            chosen.append(idx)
            taken += len(idx)
    chosen.append(infeasible[: n_survive - taken])
    keep = np.concatenate(chosen).astype(np.int64)
    out = pop.take(keep)
    out.rank, out.crowding = rank[keep], crowding[keep]
    return out


def select_parents(pop: ArrayPopulation, n_matings: int, rng: np.random.Generator) -> np.ndarray:
    """(n_matings, 2) parent indices, each the winner of a binary tournament; competitors come
    from shuffled copies of the population, as in pymoo's ``TournamentSelection``."""
    n_random = n_matings * 2 * 2
    n_perms = math.ceil(n_random / len(pop))
    P = np.argsort(rng.random((n_perms, len(pop))), axis=1).ravel()[:n_random].reshape(-1, 2)
    S = tournament_winners(P[:, 0], P[:, 1], pop.cv, pop.F, pop.crowding)
    ties = np.flatnonzero(S < 0)
    S[ties] = np.where(rng.random(len(ties)) < 0.5, P[ties, 0], P[ties, 1])
    return S.reshape(n_matings, 2)


def crossover(X: np.ndarray, parents: np.ndarray, upper: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """pymoo's SBX on the real-valued genes: two children per mating (all first children, then all
    second), parents copied where a mating does not cross (probability 1 - CROSSOVER_PROB)."""
    Xp = np.stack([X[parents[:, 0]], X[parents[:, 1]]]).astype(np.float64)
    cross = rng.random(len(parents)) < CROSSOVER_PROB
    if cross.any():
        Xp[:, cross] = sbx(Xp[:, cross], upper.astype(np.float64), rng)
    return Xp.reshape(-1, X.shape[1])


def sbx(X: np.ndarray, upper: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """pymoo 0.6.2's ``cross_sbx`` for this engine's settings (lower bounds 0, scalar eta,
    prob_var and prob_bin): the same draws in the same order and the same arithmetic, so the same
    children (tested against pymoo's), without its per-call tiling of bounds and parameters, its
    two bound repairs and its random-state wrapper - about half its time per generation.
    ``X``: (2, matings, genes) parents as floats."""
    n_matings, n_var = X.shape[1:]
    cross = rng.random((n_matings, n_var)) < SBX_PROB_VAR
    cross[np.abs(X[0] - X[1]) <= 1.0e-14] = False
    cross[:, upper == 0] = False  # lower and upper bound equal
    p1, p2 = X[0][cross], X[1][cross]
    sm = p1 < p2
    y1, y2 = np.where(sm, p1, p2), np.where(sm, p2, p1)
    xu = np.broadcast_to(upper, X.shape[1:])[cross]
    rand = rng.random(len(p1))

    def betaq(beta: np.ndarray) -> np.ndarray:
        alpha = 2.0 - np.power(beta, -(SBX_ETA + 1.0))
        mask, mask_not = rand <= (1.0 / alpha), rand > (1.0 / alpha)
        out = np.zeros(mask.shape)
        out[mask] = np.power(rand * alpha, 1.0 / (SBX_ETA + 1.0))[mask]
        out[mask_not] = np.power(1.0 / (2.0 - rand * alpha), 1.0 / (SBX_ETA + 1.0))[mask_not]
        return out

    delta = y2 - y1
    c1 = 0.5 * ((y1 + y2) - betaq(1.0 + (2.0 * (y1 - 0.0) / delta)) * delta)
    c2 = 0.5 * ((y1 + y2) + betaq(1.0 + (2.0 * (xu - y2) / delta)) * delta)
    child1, child2 = np.where(sm, c1, c2), np.where(sm, c2, c1)
    swap = np.bitwise_xor(rng.random(len(p1)) < SBX_PROB_BIN, X[0, cross] > X[1, cross])
    child1, child2 = np.where(swap, (child2, child1), (child1, child2))
    Q = np.copy(X)
    Q[0, cross], Q[1, cross] = child1, child2
    return np.clip(Q, 0.0, upper)  # pymoo's repair_clamp


def offspring(space, pop: ArrayPopulation, n_offspring: int, rng: np.random.Generator,
              unique_share: float = 1.0) -> tuple[np.ndarray, float]:
    """Up to ``n_offspring`` new canonical genomes, none equal to a member or to each other, and
    the share of the last round's children that were new. A round mates for ``1 / unique_share``
    times the children still needed (at most 4x; the caller passes the previous generation's
    share): once a population converges most children are duplicates, and pymoo's rounds of just
    the missing number took ~4 rounds per generation. The children are drawn alike either way;
    as in pymoo the first new ones are kept."""
    seen = set(row_keys(pop.X))
    parts, n = [], 0
    for _ in range(MAX_MATING_ROUNDS):
        need = n_offspring - n
        n_matings = math.ceil(need / 2 / max(unique_share, 0.25))
        children = crossover(pop.X, select_parents(pop, n_matings, rng), space.upper, rng)
        children = canonical_rows(space, mutate_varying(children, space.upper, rng))
        new = ~duplicate_flags(row_keys(children), seen, remember=True)
        unique_share = float(new.mean())
        children = children[new][:need]
        parts.append(children)
        n += len(children)
        if n >= n_offspring:
            break
    return np.concatenate(parts), unique_share


def first_population(space, pop_size: int, initial: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """The ``initial`` genomes when given (all of them), else ``pop_size`` random ones; repaired
    and deduplicated (pymoo's initialisation)."""
    X = rng.integers(0, space.upper + 1, size=(pop_size, space.n_genes)) if initial is None else initial
    X = canonical_rows(space, X)
    return X[~duplicate_flags(row_keys(X), set(), remember=True)]


def run(space, evaluate: Evaluate, pop_size: int, n_gen: int, seed: int,
        initial: np.ndarray | None = None) -> ArrayPopulation:
    """NSGA-II for ``n_gen`` generations (the first population is generation 1); returns the
    final population with each member's rank and crowding. ``space`` needs ``upper``,
    ``n_genes`` and ``canonical_batch``."""
    rng = np.random.default_rng(seed)
    pop = evaluated(first_population(space, pop_size, initial, rng), evaluate)
    pop = survive(pop, len(pop), rng)
    unique_share = 1.0
    for _ in range(n_gen - 1):
        children, unique_share = offspring(space, pop, pop_size, rng, unique_share)
        if len(children) == 0:  # the space is exhausted around the population: as pymoo, stop
            break
        pop = survive(ArrayPopulation.merge(pop, evaluated(children, evaluate)), pop_size, rng)
    return pop
