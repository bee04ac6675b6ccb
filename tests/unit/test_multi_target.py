"""Several hardware targets in one experiment: per-target metrics (``latency_ms@<profile>``), a
search whose front is non-dominated over all of them, and formats a target only emulates
(refused unless ``allow_emulated``, then counted per front point)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from nasq.errors import ConfigError
from nasq.experiment import load_experiment
from nasq.search.ledger import Ledger
from nasq.search.loop import SearchTask, run_search
from nasq.search.pareto import Front
from nasq.search.query import select
from nasq.specs import ConstraintSpec, SearchConfig
from nasq.tracking.names import point_metrics
from nasq.tracking.view import page_state

REPO = Path(__file__).resolve().parents[2]
TWO = ("top1", "latency_ms@cpu_roofline", "latency_ms@cpu_b", "size_mb")


def _second_profile(tmp_path: Path, name: str = "cpu_b", **over) -> str:
    """A copy of cpu_roofline with other rates (int8 no faster than fp32, a slower memory)."""
    data = yaml.safe_load((REPO / "hardware_profiles" / "cpu_roofline" / "profile.yaml").read_text())
    data.update(name=name, backend="roofline", memory_gbs=5.0,
                peak_gops={k: 40.0 for k in data["peak_gops"]}, depthwise_peak_gops={}, **over)
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    (folder / "profile.yaml").write_text(yaml.safe_dump(data))
    return f"{name}/profile.yaml"


def _exp(tmp_path: Path, **over) -> Path:
    if "hardware" not in over:
        over["hardware"] = ["cpu_roofline", _second_profile(tmp_path)]
    data = {"name": "multi", "data": {"name": "digits"}, "space": "mbconv_small", "predictor": "gbdt_onehot", **over}
    p = tmp_path / "exp.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def _refused(path: Path) -> str:
    with pytest.raises(ConfigError) as e:
        load_experiment(path)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_two_profiles_are_loaded_and_scored_per_target(tmp_path):
    exp = load_experiment(_exp(tmp_path, objectives=list(TWO)))
    assert [p.name for p in exp.profiles] == ["cpu_roofline", "cpu_b"]
    assert len(exp.cost_models()) == 2
    specs = exp.space.sample(np.random.default_rng(0), 20)
    values = exp.cost_model().score(specs)
    a, b = values["latency_ms@cpu_roofline"], values["latency_ms@cpu_b"]
    np.testing.assert_array_equal(values["latency_ms"], a)  # plain latency_ms: the first profile's
    np.testing.assert_allclose(b, exp.cost_models()[1].score(specs)["latency_ms"])
    assert not np.allclose(a, b)
    np.testing.assert_allclose(values["throughput_ips@cpu_b"], 1000.0 / b)


def test_one_profile_keeps_its_columns(tmp_path):
    exp = load_experiment(_exp(tmp_path, hardware=["cpu_roofline"]))
    assert set(exp.cost_model().score([exp.space.smallest()])) == {"latency_ms", "size_mb", "bops_g"}


def test_constraint_profile_is_metric_at_profile(tmp_path):
    exp = load_experiment(_exp(tmp_path, constraints=[{"metric": "latency_ms", "max": 1.0, "profile": "cpu_b"},
                                                     {"metric": "latency_ms@cpu_b", "max": 2.0}]))
    assert [c.key for c in exp.config.constraints] == ["latency_ms@cpu_b", "latency_ms@cpu_b"]


@pytest.mark.parametrize("over, field", [
    ({"objectives": ["top1", "latency_ms@gpu"]}, "objectives[1]: '@gpu' must name one of the experiment's "
                                                 "hardware profiles ('cpu_roofline', 'cpu_b')"),
    ({"constraints": [{"metric": "latency_ms@gpu", "max": 1.0}]}, "constraints[0].metric: '@gpu'"),
    ({"constraints": [{"metric": "latency_ms", "max": 1.0, "profile": "gpu"}]}, "constraints[0].profile: must name"),
    ({"objectives": ["top1", "size_mb@cpu_b"]}, "objectives[1]: only latency_ms, throughput_ips take '@<profile>'"),
])
def test_per_target_metric_naming_no_profile_is_refused(tmp_path, over, field):
    assert field in _refused(_exp(tmp_path, **over))


class Synthetic:
    def __init__(self, cost):
        self.cost = cost

    def __call__(self, specs):
        c = self.cost.score(specs)
        return list(90 - 1.0 / (c["bops_g"] + 0.05) + 0.5 * np.sin(c["size_mb"] * 100))


def test_multi_target_search_front_is_non_dominated_over_all_objectives(tmp_path, repo):
    from nasq.predict.fit import AccuracyPredictor, Recipe

    exp = load_experiment(_exp(tmp_path, objectives=list(TWO)))
    cost = exp.cost_model()
    recipe = Recipe.from_yaml(repo / "predictors" / "gbdt_onehot.yaml")
    cfg = SearchConfig(strategy="linas", population=16, generations=4, max_true_evals=24, batch_size=8,
                       initial_evals=8, seed=0)
    task = SearchTask(exp.space, TWO, (ConstraintSpec(metric="latency_ms", profile="cpu_b", max=5.0),), cost, cfg,
                      lambda specs, top1, seed: AccuracyPredictor(recipe, exp.space, cost, seed).fit(specs, top1),
                      emulated_layers=exp.emulated_layers)
    out = run_search(task, Ledger(Synthetic(cost)))
    front = out.front
    assert front.points and front.objectives == TWO
    rows = front.rows()
    assert {"latency_ms@cpu_roofline_pred", "latency_ms@cpu_b_pred", "emulated_layers"} <= set(rows[0])
    F = front.matrix()
    assert F.shape == (len(front.points), 4)
    for i in range(len(F)):  # no point dominates another over all four objectives
        dominated = np.all(F <= F[i], axis=1) & np.any(F < F[i], axis=1)
        assert not dominated.any()
    assert all(p.predicted["latency_ms@cpu_b"] <= 5.0 for p in front.points)
    # the front round-trips, is queried, and reaches MLflow under names it accepts
    again = Front.from_dict(front.to_dict())
    assert [p.emulated_layers for p in again.points] == [0] * len(front.points)
    assert select(front, "latency_ms@cpu_b < 1e9 and emulated_layers == 0") == list(range(len(front.points)))
    metrics = point_metrics(front.points[0])
    assert "latency_ms.cpu_b" in metrics and "latency_ms.cpu_b_pred" in metrics
    assert not any("@" in k for k in metrics)
    assert "metrics.`latency_ms.cpu_b`" in page_state("r", list(TWO))["selectedColumns"]


# ---------------------------------------------------------------- emulated formats
def _emulating(tmp_path: Path, **over) -> Path:
    second = _second_profile(tmp_path, native_formats=["fp32", "int8", "int4"], emulated_formats=["fp8_e4m3"])
    return _exp(tmp_path, hardware=["cpu_roofline", second], **over)


def test_emulated_format_in_the_menu_is_refused(tmp_path):
    p = _emulating(tmp_path)
    assert _refused(p) == (f"{p}: hardware[1]: format 'fp8_e4m3' of space 'mbconv_small's precision menu is only "
                           "emulated by profile 'cpu_b' (backend roofline; emulated: fp8_e4m3): set "
                           "allow_emulated: true or remove it from the space's precision menu")


def test_allow_emulated_accepts_and_labels_the_layers(tmp_path):
    exp = load_experiment(_emulating(tmp_path, allow_emulated=True))
    spec = exp.space.largest()
    names = [layer.name for layer in exp.space.layer_shapes(spec)]
    assert exp.emulated_layers(spec) == [
        layer.name for layer in exp.space.layer_shapes(spec) if "fp8_e4m3" in (layer.w_format, layer.a_format)]
    import dataclasses

    from nasq.space import SubnetSpec

    fp8 = SubnetSpec(tuple(tuple(dataclasses.replace(layer, w_format="fp8_e4m3") for layer in st)
                           for st in spec.stages))
    got = exp.emulated_layers(fp8)
    assert got and set(got) <= set(names)


def test_profile_without_format_lists_counts_every_format_native(tmp_path):
    exp = load_experiment(_exp(tmp_path))
    assert all(not p.emulated for p in exp.profiles)
    assert exp.emulated_layers(exp.space.largest()) == []
