from __future__ import annotations

import numpy as np
import pytest

from nasq.errors import LineageError
from nasq.hardware import CostModel
from nasq.predict.features import encode
from nasq.predict.fit import AccuracyPredictor, Recipe, fit_with_holdout, rank_quality
from nasq.space import SearchSpace


@pytest.fixture()
def setup(repo, space, profile):
    recipe = Recipe.from_yaml(repo / "predictors" / "gbdt_onehot.yaml")
    cm = CostModel(space, profile)
    specs = space.sample_unique(np.random.default_rng(0), 60)
    # a synthetic "accuracy" driven by size and bits, which a good predictor must rank
    feats = encode(("costs",), space, specs, cm)
    top1 = 70 + 3 * feats[:, 0] + 2 * feats[:, -1] / 8
    return recipe, cm, specs, top1


def test_features_shape_and_inactive_genes(space, setup):
    _, cm, specs, _ = setup
    X = encode(("onehot",), space, specs[:5], cm)
    assert X.shape == (5, int((space.upper + 1).sum()))
    active = [sum(1 for g in space.genes if g.slot is None or g.slot < s.depths[g.stage]) for s in specs[:5]]
    assert list(X.sum(axis=1).astype(int)) == active


def test_fit_reports_holdout_quality(space, setup):
    recipe, cm, specs, top1 = setup
    pred, report = fit_with_holdout(recipe, space, cm, specs, top1, seed=0)
    assert report.n_holdout == len(specs) and 0 < report.n_train < len(specs)
    assert report.kendall_tau > 0.5
    assert np.isfinite(pred.predict(specs)).all()


def test_save_load_round_trip_without_pickle(tmp_path, space, setup):
    recipe, cm, specs, top1 = setup
    pred = AccuracyPredictor(recipe, space, cm, seed=1).fit(specs, top1)
    pred.save(tmp_path, "datahash")
    back = AccuracyPredictor.load(tmp_path, space, cm)
    assert np.array_equal(pred.predict(specs), back.predict(specs))
    np.load(tmp_path / "predictor.npz", allow_pickle=False).close()


def test_refuses_foreign_space(tmp_path, space, setup):
    recipe, cm, specs, top1 = setup
    AccuracyPredictor(recipe, space, cm).fit(specs, top1).save(tmp_path, "d")
    other_cfg = space.config.model_copy(update={"name": "other", "description": "changed"})
    other = SearchSpace(other_cfg)
    with pytest.raises(LineageError, match="fitted on space 'mbconv_small'"):
        AccuracyPredictor.load(tmp_path, other, cm)


def test_rank_quality_perfect():
    tau, rho, rmse = rank_quality(np.arange(10.0), np.arange(10.0) * 2)
    assert tau == pytest.approx(1.0) and rho == pytest.approx(1.0) and rmse > 0
