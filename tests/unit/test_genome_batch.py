"""The per-call genome tables (nasq.space.batch) and the gbdt lookup walk (nasq.predict.trees)."""

from pathlib import Path

import numpy as np
import pytest

from nasq.space import SearchSpace

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def space():
    return SearchSpace.from_yaml(REPO / "search_spaces" / "mbconv_small.yaml")


def test_one_batch_per_matrix_with_the_tables_of_the_space(space):
    rng = np.random.default_rng(0)
    raw = rng.integers(0, space.upper + 1, size=(30, space.n_genes))
    b = space.batch(raw)
    canonical = space.canonical_batch(raw)
    assert np.array_equal(b.G, canonical)
    assert space.batch(raw.copy()) is b and space.batch(canonical) is b and space.batch(b) is b
    assert np.array_equal(b.ids, space.layer_table().ids(canonical))
    assert np.array_equal(b.active, space.active_genes(canonical))
    assert np.array_equal(b.format_changes, space.layer_table().format_changes(b.ids))
    with pytest.raises(ValueError):  # shared tables are read-only
        b.ids[0, 0] = 0
    other = canonical.copy()
    other[0] = space.canonical_batch(rng.integers(0, space.upper + 1, size=(1, space.n_genes)))[0]
    assert space.batch(other) is not b  # a changed row is another matrix
    with pytest.raises(ValueError, match="out of range"):
        space.batch(raw + 100)


def test_a_matrix_changed_in_place_is_not_served_stale(space):
    G = space.canonical_batch(np.random.default_rng(1).integers(0, space.upper + 1, size=(8, space.n_genes)))
    first = space.batch(G, canonical=True)
    G[:] = space.canonical_batch(np.zeros_like(G))
    assert not np.array_equal(first.G, G)
    assert np.array_equal(space.batch(G).G, G)


@pytest.mark.parametrize("params", [
    {"n_estimators": 60, "max_depth": 3, "learning_rate": 0.05, "subsample": 0.8},
    {"n_estimators": 40, "max_depth": 3, "min_samples_leaf": 20},  # leaves above depth 3
    {"n_estimators": 30, "max_depth": 2}, {"n_estimators": 30, "max_depth": 1},
])
@pytest.mark.parametrize("n", [1, 7, 100, 600])
def test_lookup_gives_sklearns_very_values(params, n):
    from nasq.predict.models import GBDTPredictor
    from nasq.predict.trees import LOOKUP_DEPTH

    rng = np.random.default_rng(n)
    X = rng.integers(0, 2, size=(200, 20)).astype(np.float64)
    X[:, -3:] = rng.normal(size=(200, 3)) * np.array([1e-3, 1.0, 1e6])  # thresholds between float32s
    p = GBDTPredictor(params, seed=2).fit(X, X[:, :6].sum(axis=1) + X[:, -1] * 1e-6 + rng.normal(0, 0.1, 200))
    Xt = rng.integers(0, 2, size=(n, 20)).astype(np.float64)
    Xt[:, -3:] = rng.normal(size=(n, 3)) * np.array([1e-3, 1.0, 1e6])
    Xt[: min(n, 5)] = X[: min(n, 5)]  # rows on the training thresholds' sides
    ours = p.predict(Xt)
    assert p._arrays.depth <= LOOKUP_DEPTH
    assert np.array_equal(ours, p._model.predict(Xt))
    assert np.array_equal(p._arrays._walk(Xt), ours)  # the deep trees' walk agrees too
    assert p.predict(Xt[:0]).shape == (0,)
