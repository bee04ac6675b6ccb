"""The genome-matrix scoring path gives what the per-spec path gives, to the last bit, on random
subnets of every catalog space: canonical genomes, layer shapes, the cost model, the latency
predictor, every feature encoder, the accuracy predictor, and a fixed-seed search's front."""

from __future__ import annotations

import numpy as np
import pytest

from nasq.hardware import CostModel, HardwareProfile, TargetsCostModel
from nasq.hardware.keys import space_keys
from nasq.hardware.table import LatencyTable, Row
from nasq.predict.features import FEATURES, GENOME_FEATURES, encode
from nasq.predict.fit import AccuracyPredictor, Recipe
from nasq.predict.latency import LatencyPredictor, load_profile_predictor
from nasq.space import SearchSpace
from nasq.space.layer_table import LayerTable
from nasq.specs import ConstraintSpec, SearchConfig

SPACES = ("fused_fmnist", "mbconv_fmnist", "mbconv_small", "resnet_fmnist", "seq_fmnist", "vit_fmnist")
N = 300


def _space(repo, name: str) -> SearchSpace:
    return SearchSpace.from_yaml(repo / "search_spaces" / f"{name}.yaml")


def _raw(space: SearchSpace, seed: int = 0) -> np.ndarray:
    """Random genomes, not canonical (inactive genes left random), plus the two extremes."""
    raw = np.random.default_rng(seed).integers(0, space.upper + 1, size=(N, space.n_genes))
    return np.vstack([raw, space.encode(space.largest()), space.encode(space.smallest())])


def _profile(repo, name: str = "cpu_roofline") -> HardwareProfile:
    return HardwareProfile.from_yaml(repo / "hardware_profiles" / name / "profile.yaml")


def _synthetic_table(space: SearchSpace) -> LatencyTable:
    """A deterministic table with irregular times (so sums in another order would differ)."""
    rows = {}
    for n, key in enumerate(space_keys(space)):
        us = (2.0 + key.shape().macs / 1e4) * (1.0 if key.a_format == "fp32" else 2.0) + 0.1 * ((n * 7919) % 13) / 3
        rows[key] = Row("supported", us, us * 0.9, us * 1.2, 30, "", "Conv")
    return LatencyTable(rows, "synthetic/latency.csv")


@pytest.fixture(scope="module", params=SPACES)
def case(request, repo):
    space = _space(repo, request.param)
    raw = _raw(space)
    return space, raw, [space.decode(g) for g in raw]


def test_canonical_batch_matches_canonical(case):
    space, raw, _ = case
    np.testing.assert_array_equal(space.canonical_batch(raw), np.stack([space.canonical(g) for g in raw]))


def test_canonical_batch_refuses_bad_genomes(space):
    bad = np.zeros((2, space.n_genes), dtype=np.int64)
    bad[1, 3] = space.upper[3] + 1
    with pytest.raises(ValueError, match=f"gene {space.genes[3].name} = {space.upper[3] + 1} is out of range"):
        space.canonical_batch(bad)
    with pytest.raises(ValueError, match="genes per row"):
        space.canonical_batch(np.zeros((2, space.n_genes + 1), dtype=np.int64))


def test_layer_table_gives_layer_shapes(case):
    space, raw, specs = case
    table = space.layer_table()
    ids = table.ids(space.canonical_batch(raw))
    for row, spec in zip(ids, specs, strict=True):
        assert [table.shapes[k] for k in row if k != table.pad] == space.layer_shapes(spec)


def test_table_of_a_huge_space_is_refused(case, repo, monkeypatch):
    """Beyond MAX_TABLE_VARIANTS there is no table; the genome path decodes and scores per spec."""
    space = case[0]
    fresh = SearchSpace(space.config, space.source, space.hash)
    monkeypatch.setattr("nasq.space.search_space.MAX_TABLE_VARIANTS", LayerTable.variants(fresh) - 1)
    assert fresh.layer_table() is None
    model = CostModel(fresh, _profile(repo))
    raw = _raw(fresh)[:20]
    got, want = model.score_genomes(raw), model.score([fresh.decode(g) for g in raw])
    for metric in want:
        np.testing.assert_array_equal(got[metric], want[metric])


def test_cost_model_roofline(case, repo):
    space, raw, specs = case
    want = CostModel(space, _profile(repo)).score(specs)
    got = CostModel(space, _profile(repo)).score_genomes(raw)
    assert set(got) == set(want)
    for metric in want:
        np.testing.assert_array_equal(got[metric], want[metric], err_msg=metric)


def test_latency_predictor_features_and_predict(case, repo):
    space, raw, specs = case
    model = LatencyPredictor(space, _synthetic_table(space))
    np.testing.assert_array_equal(model.features_genomes(raw), model.features(specs))
    fit = specs[:60]
    measured = model.table_sum_ms(fit) * (1.1 + 0.01 * np.arange(len(fit)) % 0.3)
    model.fit(fit, measured)
    np.testing.assert_array_equal(model.predict_genomes(raw), model.predict(specs))
    # the cost model picks the genome path up from the bound predict
    cost = CostModel(space, _profile(repo), model.predict)
    np.testing.assert_array_equal(cost.score_genomes(raw)["latency_ms"], cost.score(specs)["latency_ms"])


def test_latency_predictor_without_transitions_and_unsupported(space):
    table = _synthetic_table(space)
    first = next(iter(table.rows))
    table = LatencyTable({**table.rows, first: Row.unsupported("no kernel")}, "synthetic/latency.csv")
    model = LatencyPredictor(space, table, transitions=False)
    raw = _raw(space, 1)
    specs = [space.decode(g) for g in raw]
    np.testing.assert_array_equal(model.features_genomes(raw), model.features(specs))


def test_measured_profile_predictor(space, repo):
    latency = load_profile_predictor(repo / "hardware_profiles" / "cpu_ort_epyc" / "profile.yaml", space)
    raw = _raw(space, 2)
    specs = [space.decode(g) for g in raw]
    np.testing.assert_array_equal(latency.predict_genomes(raw), latency.predict(specs))


@pytest.mark.parametrize("cost", [False, True], ids=["no_cost_model", "cost_model"])
def test_every_feature_encoder(case, repo, cost):
    space, raw, specs = case
    model = CostModel(space, _profile(repo)) if cost else None
    canonical = space.canonical_batch(raw)
    assert set(GENOME_FEATURES.names()) == set(FEATURES.names())
    for name in FEATURES.names():
        want = FEATURES.get(name)(space, specs, model)
        got = GENOME_FEATURES.get(name)(space, canonical, model)
        assert got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_accuracy_predictor_on_genomes(repo, space):
    profile = _profile(repo)
    raw = _raw(space, 3)
    specs = [space.decode(g) for g in raw]
    top1 = np.random.default_rng(0).normal(80, 3, len(specs))
    for name in ("gbdt_onehot", "gp_bops", "ridge_onehot", "mlp_layerwise"):
        recipe = Recipe.from_yaml(repo / "predictors" / f"{name}.yaml")
        cost = CostModel(space, profile)
        pred = AccuracyPredictor(recipe, space, cost, 0)
        np.testing.assert_array_equal(pred.features(specs), encode(recipe.config.features, space, specs, cost))
        pred.fit(specs[:150], top1[:150])
        np.testing.assert_array_equal(pred.predict_genomes(raw), pred.predict(specs))


def test_targets_cost_model(repo, space):
    latency = load_profile_predictor(repo / "hardware_profiles" / "cpu_ort_epyc" / "profile.yaml", space)
    models = [CostModel(space, _profile(repo, "cpu_ort_epyc"), latency.predict), CostModel(space, _profile(repo))]
    targets = TargetsCostModel(models)
    raw = _raw(space, 4)
    want, got = targets.score([space.decode(g) for g in raw]), targets.score_genomes(raw)
    assert set(got) == set(want)
    for metric in want:
        np.testing.assert_array_equal(got[metric], want[metric], err_msg=metric)


def test_search_gives_the_same_front_on_both_paths(repo, space):
    from nasq.search.nsga import run_nsga2

    latency = load_profile_predictor(repo / "hardware_profiles" / "cpu_ort_epyc" / "profile.yaml", space)
    cost = CostModel(space, _profile(repo, "cpu_ort_epyc"), latency.predict)
    specs = space.sample_unique(np.random.default_rng(0), 80)
    top1 = 80 + 5 * np.log(cost.score(specs)["bops_g"] + 1e-3)
    pred = AccuracyPredictor(Recipe.from_yaml(repo / "predictors" / "gbdt_onehot.yaml"), space, cost, 0).fit(specs, top1)
    objectives, constraints = ("top1", "latency_ms", "size_mb"), (ConstraintSpec(metric="size_mb", max=0.25),)

    def score(batch):
        return {"top1": pred.predict(batch), **cost.score(batch)}

    def score_genomes(G):
        return {"top1": pred.predict_genomes(G), **cost.score_genomes(G)}

    for engine in ("pymoo", "array"):  # either NSGA-II loop, scored either way
        cfg = SearchConfig(population=24, generations=6, seed=3, engine=engine)
        by_spec = run_nsga2(space, score, objectives, constraints, cfg)
        by_genome = run_nsga2(space, score, objectives, constraints, cfg, score_genomes=score_genomes)
        assert [c.spec.key() for c in by_genome] == [c.spec.key() for c in by_spec]
        assert [c.predicted for c in by_genome] == [c.predicted for c in by_spec]


def test_linas_search_is_the_same_on_both_paths(repo, space, monkeypatch):
    """A fixed-seed LINAS search proposes, evaluates and keeps the same subnets whether its inner
    NSGA-II scores genome matrices (the default) or decoded specs (as before)."""
    import nasq.search.linas as linas
    from nasq.search.ledger import Ledger
    from nasq.search.loop import SearchTask, run_search

    cost = CostModel(space, _profile(repo))
    recipe = Recipe.from_yaml(repo / "predictors" / "gbdt_onehot.yaml")

    def fit(specs, top1, seed):
        return AccuracyPredictor(recipe, space, cost, seed).fit(specs, top1)

    def evaluate(specs):
        c = cost.score(specs)
        return [float(v) for v in 90 - 1.0 / (c["bops_g"] + 0.05) + 0.5 * np.sin(c["size_mb"] * 100)]

    def search(engine):
        cfg = SearchConfig(strategy="linas", population=24, generations=6, max_true_evals=32, batch_size=8,
                           initial_evals=12, seed=0, engine=engine)
        task = SearchTask(space, ("top1", "latency_ms", "size_mb"), (ConstraintSpec(metric="size_mb", max=0.25),),
                          cost, cfg, fit)
        out = run_search(task, Ledger(evaluate))
        return out.state.keys, [(p.spec.key(), p.predicted) for p in out.front.points], out.history

    assert linas.genome_scorer(fit([space.smallest(), space.largest()], np.array([1.0, 2.0]), 0), cost) is not None
    by_genome = {engine: search(engine) for engine in ("pymoo", "array")}
    monkeypatch.setattr(linas, "genome_scorer", lambda predictor, cost: None)
    assert {engine: search(engine) for engine in ("pymoo", "array")} == by_genome
