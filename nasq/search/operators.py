"""NSGA-II variation operators over the integer genome.

Why not pymoo's polynomial mutation alone: it picks each gene with probability ``1/n_var`` over the
whole genome, and genes with a single choice (``upper == 0``: a fixed format, a one-kernel stage, a
foreign space's constant) can never change, so they only dilute the rate - on a 6-gene cell padded
with one-choice genes, ~0.24 genes changed per child instead of ~1. And on a gene with few choices
a picked gene often rounds back to its own value. :class:`VaryingGeneMutation` picks each gene
that has more than one choice with probability ``1/n_varying`` and moves it to a different choice,
so a child differs from its parent in about one gene, whatever the padding.
"""

from __future__ import annotations

import numpy as np
from pymoo.core.mutation import Mutation
from pymoo.operators.mutation.pm import PM

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
        X = np.rint(np.asarray(X, dtype=np.float64)).astype(np.int64)
        if len(self.varying) == 0 or len(X) == 0:
            return X
        n = len(self.varying)
        pick = random_state.random((len(X), n)) < 1.0 / n
        sizes = self.upper[self.varying] + 1
        # a step of 1..size-1 modulo size: a different choice, uniformly
        step = np.floor(random_state.random((len(X), n)) * (sizes - 1)).astype(np.int64) + 1
        cols = X[:, self.varying]
        cols = np.where(pick, (cols + step) % sizes, cols)
        X[:, self.varying] = cols
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


def genes_changed(parents: np.ndarray, children: np.ndarray) -> np.ndarray:
    """How many genes each child differs from its parent in (rows paired)."""
    return np.sum(np.asarray(parents) != np.asarray(children), axis=1)
