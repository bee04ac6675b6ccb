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


# ---------------------------------------------------------------- encoders
def test_layerwise_shape_and_inactive_slots_are_zero(space, setup):
    from nasq.predict.features import layerwise_columns

    _, cm, specs, _ = setup
    X = encode(("layerwise",), space, specs[:8], cm)
    slots = [(i, j) for i, st in enumerate(space.config.stages) for j in range(max(st.depth))]
    width = len(layerwise_columns(space, 0))
    assert X.shape == (8, len(slots) * width)
    for row, spec in zip(X, specs[:8], strict=True):
        blocks = row.reshape(len(slots), width)
        for (i, j), block in zip(slots, blocks, strict=True):
            if j < spec.depths[i]:
                layer = spec.stages[i][j]
                assert block[0] == 1 and block[1] == layer.kernel and block[2] == layer.expand
                assert 0 < block[-1] < 1
            else:
                assert not block.any()
        assert blocks[:, -1].sum() < 1  # stem and classifier take the rest of the MACs


def test_layerwise_tells_fp8_from_int8(space):
    from nasq.space import LayerChoice, SubnetSpec

    def spec(fmt):
        return SubnetSpec(tuple((LayerChoice.of(fmt, fmt, kernel=3, expand=3),) for _ in space.config.stages))

    a, b = encode(("layerwise",), space, [spec("int8"), spec("fp8_e4m3")], None)
    assert not np.array_equal(a, b)


def test_bops_columns_and_size_accounting(space, setup):
    _, cm, specs, _ = setup
    with_cm = encode(("bops",), space, specs[:6], cm)
    without = encode(("bops",), space, specs[:6], None)
    assert with_cm.shape == (6, 4)
    np.testing.assert_allclose(with_cm, without)
    np.testing.assert_allclose(with_cm[:, 3], cm.score(specs[:6])["size_mb"])
    assert (with_cm[:, 2] > with_cm[:, 1]).all()  # BOPs = MACs x bits x bits


def test_every_encoder_gives_one_row_per_spec(space, setup):
    from nasq.predict.features import FEATURES

    _, cm, specs, _ = setup
    for name in FEATURES.names():
        X = encode((name,), space, specs[:3], cm)
        assert X.shape[0] == 3 and np.isfinite(X).all(), name
        assert encode((name,), space, [], cm).shape == (0, X.shape[1]), name


# ---------------------------------------------------------------- reports
def test_top10_precision_perfect_and_reversed():
    from nasq.predict.fit import top_fraction_precision

    y = np.arange(50.0)
    assert top_fraction_precision(y, 2 * y + 1) == 1.0
    assert top_fraction_precision(y, -y) == 0.0
    assert top_fraction_precision(np.arange(10.0), np.arange(10.0)[::-1]) == 0.0  # k = 1


def test_top10_precision_counts_the_overlap():
    from nasq.predict.fit import top_fraction_precision

    y = np.arange(20.0)  # true top 2: 19, 18
    guess = y.copy()
    guess[18] = -1.0  # the predictor misses one of them
    assert top_fraction_precision(y, guess) == 0.5


def test_fit_report_metrics_include_top10(repo, space, setup):
    _, cm, specs, top1 = setup
    recipe = Recipe.from_yaml(repo / "predictors" / "ridge_onehot.yaml")
    _, report = fit_with_holdout(recipe, space, cm, specs, top1, seed=0)
    metrics = report.as_metrics()
    assert set(metrics) == {"predictor.n_train", "predictor.n_holdout", "predictor.kendall_tau",
                            "predictor.spearman", "predictor.rmse", "predictor.top10_precision"}
    assert 0.0 <= report.top10_precision <= 1.0 and report.recipe == "ridge_onehot"


def test_fit_with_holdout_needs_enough_subnets(space, setup):
    recipe, cm, specs, top1 = setup
    with pytest.raises(ValueError, match="at least 4"):
        fit_with_holdout(recipe, space, cm, specs[:3], top1[:3], seed=0)


# ---------------------------------------------------------------- recipes and files
def test_recipe_refuses_bad_params_with_a_hint():
    from nasq.errors import ConfigError
    from nasq.specs import RecipeConfig

    cfg = RecipeConfig(name="x", kind="auto", features=("onehot",), params={"candidates": "ridge,gpp"})
    with pytest.raises(ConfigError, match=r"params: candidates\[1\]: unknown predictor kind 'gpp'.*did you mean 'gp'"):
        Recipe(cfg, "predictors/x.yaml")
    cfg = RecipeConfig(name="x", kind="gp", features=("bops",), params={"kernel": "cosine"})
    with pytest.raises(ConfigError, match="kernel: must be 'matern' or 'rbf'"):
        Recipe(cfg)


def test_load_refuses_a_changed_training_set(tmp_path, space, setup):
    recipe, cm, specs, top1 = setup
    AccuracyPredictor(recipe, space, cm).fit(specs, top1).save(tmp_path, "d")
    np.savez(tmp_path / "predictor.npz", X=np.zeros((3, 2)), y=np.zeros(3))
    with pytest.raises(LineageError, match="training set does not match"):
        AccuracyPredictor.load(tmp_path, space, cm)


def test_saved_metadata_names_its_lineage(tmp_path, space, setup):
    from nasq.files import read_json

    recipe, cm, specs, top1 = setup
    AccuracyPredictor(recipe, space, cm, seed=3).fit(specs, top1).save(tmp_path, "evals-hash")
    meta = read_json(tmp_path / "predictor.json")
    assert meta["space_hash"] == space.hash and meta["data_hash"] == "evals-hash" and meta["seed"] == 3
    assert meta["recipe"]["kind"] == "gbdt" and len(meta["training_set_sha256"]) == 64
