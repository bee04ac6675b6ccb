"""The predictor kinds beyond the contract: uncertainty that means something, selection by CV."""

from __future__ import annotations

import numpy as np
import pytest

from nasq.errors import NotFittedError
from nasq.hardware import CostModel
from nasq.predict.features import encode
from nasq.predict.fit import AccuracyPredictor, Recipe, select_by_cv
from nasq.predict.models import PREDICTORS, cv_predictions, fold_indices, make_predictor
from nasq.specs import RecipeConfig


def _recipe(name: str, kind: str, features: tuple[str, ...], **params) -> Recipe:
    return Recipe(RecipeConfig(name=name, kind=kind, features=features, params=params))


def test_every_kind_declares_uncertainty():
    declared = {k: PREDICTORS.get(k).has_uncertainty for k in PREDICTORS.names()}
    assert {"ridge", "gbdt", "mlp", "gp", "ensemble", "random_forest", "auto"} <= set(declared)
    assert declared["gp"] and declared["ensemble"] and declared["random_forest"] and not declared["ridge"]


def test_gp_is_less_sure_far_from_its_data():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(40, 2))
    p = make_predictor("gp", {"restarts": 0}, seed=0).fit(X, np.sin(3 * X[:, 0]) + X[:, 1])
    _, near = p.predict_with_std(X[:5])
    _, far = p.predict_with_std(np.full((1, 2), 6.0))
    assert far[0] > 3 * near.max()


def test_ensemble_mean_is_the_member_mean_and_std_their_spread():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 3))
    p = make_predictor("ensemble", {"members": 4, "n_estimators": 20}, seed=2).fit(X, X[:, 0] ** 2)
    members = p._model.predict_members(X)
    mean, std = p.predict_with_std(X)
    np.testing.assert_allclose(mean, members.mean(axis=0))
    np.testing.assert_allclose(std, members.std(axis=0))
    assert len(p._model.models_) == 4


def test_predict_wants_two_dimensional_rows():
    p = make_predictor("ridge").fit(np.eye(4), np.arange(4.0))
    with pytest.raises(ValueError, match="2-d"):
        p.predict(np.arange(4.0))


def test_folds_hold_out_every_row_once():
    folds = fold_indices(23, 4, seed=5)
    assert sorted(np.concatenate(folds).tolist()) == list(range(23))
    assert [f.tolist() for f in folds] == [f.tolist() for f in fold_indices(23, 4, seed=5)]


def _kink_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A step in one feature: trees get it exactly, a linear model cannot rank within the plateaus."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(60, 3))
    return X, np.where(X[:, 0] > 0, 1.0, 0.0) + 0.3 * np.where(X[:, 1] > 0.5, 1.0, 0.0)


def test_auto_picks_the_kind_with_the_best_cv_tau():
    X, y = _kink_data()
    p = make_predictor("auto", {"candidates": "ridge,gbdt", "folds": 3, "gbdt.n_estimators": 40}, seed=0).fit(X, y)
    assert p.chosen == "gbdt"
    assert p.cv_scores["gbdt"] > p.cv_scores["ridge"]
    np.testing.assert_array_equal(p.predict(X), make_predictor("gbdt", {"n_estimators": 40}, 0).fit(X, y).predict(X))


def test_auto_scores_match_plain_cross_validation():
    from nasq.predict.models import kendall_tau

    X, y = _kink_data(1)
    p = make_predictor("auto", {"candidates": "ridge", "folds": 3}, seed=4).fit(X, y)
    assert p.cv_scores["ridge"] == pytest.approx(kendall_tau(y, cv_predictions("ridge", {}, X, y, 3, 4)))


def test_auto_before_fit_and_bad_params():
    with pytest.raises(NotFittedError):
        _ = make_predictor("auto", {"candidates": "ridge"}).chosen
    with pytest.raises(ValueError, match="not 'auto' itself"):
        make_predictor("auto", {"candidates": "ridge,auto"})
    with pytest.raises(ValueError, match="KIND.PARAM"):
        make_predictor("auto", {"candidates": "ridge", "mlp.alpha": 1.0})


def test_select_by_cv_picks_the_clear_winner(space, profile):
    cm = CostModel(space, profile)
    specs = space.sample_unique(np.random.default_rng(0), 48)
    onehot = encode(("onehot",), space, specs, cm)
    # top1 linear in the one-hot genes: ridge gets it, a one-split tree stump cannot
    top1 = 70 + onehot @ np.random.default_rng(1).normal(size=onehot.shape[1])
    stump = _recipe("stump", "gbdt", ("onehot",), n_estimators=2, max_depth=1)
    ridge = _recipe("linear", "ridge", ("onehot",), alpha=0.1)
    best, reports = select_by_cv([stump, ridge], space, cm, specs, top1, seed=0)
    assert [r.recipe for r in reports] == ["stump", "linear"]
    assert best.recipe.config.name == "linear" and reports[1].kendall_tau > reports[0].kendall_tau + 0.2
    assert isinstance(best, AccuracyPredictor) and best.model.X_ is not None


def test_select_by_cv_needs_a_recipe(space, profile):
    with pytest.raises(ValueError, match="at least one recipe"):
        select_by_cv([], space, CostModel(space, profile), [], np.zeros(0), seed=0)


def test_accuracy_predictor_passes_the_uncertainty_through(space, profile):
    cm = CostModel(space, profile)
    specs = space.sample_unique(np.random.default_rng(2), 30)
    top1 = 70 + encode(("bops",), space, specs, cm)[:, 0]
    pred = AccuracyPredictor(_recipe("g", "gp", ("bops",), restarts=0), space, cm).fit(specs, top1)
    mean, std = pred.predict_with_std(specs)
    assert pred.has_uncertainty and mean.shape == std.shape == (30,) and (std > 0).all()
