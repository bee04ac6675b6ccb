"""A fitted GradientBoostingRegressor's trees as arrays: a whole population predicted at once, to
the very values of scikit-learn's ``predict`` (issue 17: a search scores populations of 100-1,000
rows, where scikit-learn's input checks and per-tree calls cost more than the trees).

Same arithmetic as scikit-learn's ``predict_stages``: X as float32 compared ``<=`` with each
split's float64 threshold, the init constant plus ``learning_rate * leaf value`` added tree by
tree in order. Two ways to find each row's leaf in every tree:

* shallow trees (depth <= :data:`LOOKUP_DEPTH`, the recipes' depth 3): a tree's 7 split tests,
  taken in heap order, are 7 bits, and the leaf is a function of them - a 256-entry table per
  tree built at fit time. Predicting is then a handful of whole-array operations: every distinct
  (feature, threshold) test of the ensemble evaluated once for all rows (features in rows, so
  gathering a test is copying a row), the tests gathered into each tree's 8 heap slots, the bits
  packed into one byte per (tree, row) 8 rows at a time through 64-bit words, one table lookup.
* deeper trees: every row walked through every tree at once, one step of depth at a time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.dummy import DummyRegressor

LOOKUP_DEPTH = 3  # 2**3 - 1 = 7 split tests per tree, one byte: 256 table entries per tree
BLOCK_ROWS = 256  # rows predicted per block (see TreeArrays.predict)
_SLOTS = 8  # heap positions 0..6 hold a tree's splits; slot 7 is padding (any test, never read)


def in_order(stages: np.ndarray) -> np.ndarray:
    """Column sums of ``stages`` (the init constant, then one row per tree, C order) added top to
    bottom, as scikit-learn adds the trees. ``add.reduce`` down axis 0 adds row after row while
    a row has several columns (its inner loop runs along the row); a single column is one
    contiguous run, which numpy sums pairwise - off in the last bits - so that one accumulates
    (several times slower on many columns)."""
    return np.add.reduce(stages, axis=0) if stages.shape[1] > 1 else np.add.accumulate(stages, axis=0)[-1]


def float32_floor(threshold: np.ndarray) -> np.ndarray:
    """The largest float32 at or below each float64 threshold: for a float32 ``x``,
    ``x <= t`` exactly when ``x <= float32_floor(t)``, so the tests run on float32 as they are."""
    t32 = threshold.astype(np.float32)
    above = t32.astype(np.float64) > threshold
    t32[above] = np.nextafter(t32[above], np.float32(-np.inf))
    return t32


class TreeArrays:
    """``exact`` is False (callers use scikit-learn) where the arithmetic above is not the whole
    story: a loss with a non-identity link or an init estimator other than the default mean."""

    def __init__(self, model: Any):
        self.model = model
        init = model.init_
        self.exact = (model.estimators_.shape[1] == 1 and model.loss in ("squared_error", "absolute_error", "huber",
                                                                         "quantile")
                      and (isinstance(init, str) and init == "zero" or isinstance(init, DummyRegressor)))
        if not self.exact:
            return
        trees = [e.tree_ for e in model.estimators_[:, 0]]
        self.base = 0.0 if isinstance(init, str) else float(np.asarray(init.constant_, dtype=np.float64).ravel()[0])
        self.roots = np.cumsum([0] + [t.node_count for t in trees[:-1]]).astype(np.intp)
        offset = np.repeat(self.roots, [t.node_count for t in trees])
        self.left = np.concatenate([t.children_left for t in trees]).astype(np.intp)
        right = np.concatenate([t.children_right for t in trees]).astype(np.intp)
        leaf, node = self.left < 0, np.arange(len(self.left), dtype=np.intp)
        # a leaf points to itself, so every row can take max_depth steps in every tree; node n's
        # children sit at 2n (left, X <= threshold) and 2n + 1 (right)
        self.children = np.column_stack([np.where(leaf, node, self.left + offset),
                                         np.where(leaf, node, right + offset)]).ravel()
        self.feature = np.where(leaf, 0, np.concatenate([t.feature for t in trees])).astype(np.intp)
        self.threshold = np.where(leaf, np.inf, np.concatenate([t.threshold for t in trees]))
        self.value = model.learning_rate * np.concatenate([t.value[:, 0, 0] for t in trees])
        self.depth = max(t.max_depth for t in trees)
        self.n_features = model.n_features_in_
        if self.depth <= LOOKUP_DEPTH:
            self._build_lookup()

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Raw predictions of finite rows ``X`` (float64, 2-d)."""
        if X.shape[1] != self.n_features:
            raise ValueError(f"X has {X.shape[1]} features, the model was fitted on {self.n_features}")
        if self.depth > LOOKUP_DEPTH or len(X) == 0:
            return self._walk(X)
        # a few hundred rows at a time: the working arrays stay in cache (and out of fresh pages),
        # which made 1,000 rows in 4 blocks ~5x faster than in one
        return np.concatenate([self._lookup(X[i:i + BLOCK_ROWS]) for i in range(0, len(X), BLOCK_ROWS)])

    # ------------------------------------------------------------ shallow trees: one lookup
    def _build_lookup(self) -> None:
        n_trees = len(self.roots)
        # the node at each heap position of each tree (-1 below a leaf): children of p at 2p+1, 2p+2
        at = np.full((n_trees, _SLOTS), -1, dtype=np.intp)
        at[:, 0] = self.roots
        for p in range(_SLOTS // 2 - 1):
            inner = (at[:, p] >= 0) & (self.left[at[:, p]] >= 0)
            at[:, 2 * p + 1] = np.where(inner, self.children[2 * at[:, p]], -1)
            at[:, 2 * p + 2] = np.where(inner, self.children[2 * at[:, p] + 1], -1)
        split = (at >= 0) & (self.left[at] >= 0)
        feature = np.where(split, self.feature[at], 0)
        threshold = float32_floor(np.where(split, self.threshold[at], np.inf))
        tests, self._slot_test = np.unique(np.column_stack([feature.ravel(), threshold.ravel().astype(np.float64)]),
                                           axis=0, return_inverse=True)
        self._slot_test = self._slot_test.ravel().astype(np.intp)
        self._test_feature = tests[:, 0].astype(np.intp)
        self._test_threshold = tests[:, 1].astype(np.float32)[:, None]
        # each tree walked for all 256 bit patterns at once: bit p is the test at heap position p
        code = np.arange(256, dtype=np.intp)[None, :]
        node, p = np.broadcast_to(self.roots[:, None], (n_trees, 256)).copy(), np.zeros((n_trees, 256), dtype=np.intp)
        for _ in range(LOOKUP_DEPTH):
            left = (code >> p) & 1
            inner = self.left[node] >= 0
            node = np.where(inner, self.children[2 * node + 1 - left], node)
            p = np.where(inner, 2 * p + 2 - left, p)
        self._table = self.value[node].ravel()
        self._table_offset = (np.arange(n_trees, dtype=np.intp) * 256)[:, None]

    def _lookup(self, X: np.ndarray) -> np.ndarray:
        n, n_trees = len(X), len(self.roots)
        width = -(-n // 8) * 8  # rows padded to whole 64-bit words (the padding rows are dropped)
        XT = np.zeros((self.n_features, width), dtype=np.float32)
        XT[:, :n] = X.T  # float64 -> float32 rounding, as scikit-learn's own cast
        passed = XT.take(self._test_feature, axis=0) <= self._test_threshold  # (tests, rows)
        # (tree, slot, rows) bytes of 0/1; a word holds 8 rows' bytes, so shifting a word by the slot
        # moves each row's bit within its own byte and OR-ing the 8 slots packs one byte per row
        words = passed.take(self._slot_test, axis=0).view(np.uint64).reshape(n_trees, _SLOTS, width // 8)
        code = words[:, 0].copy()
        for slot in range(1, _SLOTS):
            code |= words[:, slot] << np.uint64(slot)
        stages = np.empty((n_trees + 1, width))
        stages[0] = self.base
        self._table.take(code.view(np.uint8) + self._table_offset, out=stages[1:])
        return in_order(stages)[:n]

    # ------------------------------------------------------------ deeper trees: a walk
    def _walk(self, X: np.ndarray) -> np.ndarray:
        X32 = np.ascontiguousarray(X, dtype=np.float32).ravel()
        n = len(X)
        node = np.broadcast_to(self.roots, (n, len(self.roots))).copy()
        row_start = (np.arange(n, dtype=np.intp) * self.n_features)[:, None]
        for _ in range(self.depth):  # flat take() indexing: several times faster than 2-d fancy indexing
            go_left = X32.take(row_start + self.feature.take(node)) <= self.threshold.take(node)
            node = self.children.take(2 * node + 1 - go_left)
        stages = np.empty((len(self.roots) + 1, n))
        stages[0], stages[1:] = self.base, self.value.take(node).T
        return in_order(stages)
