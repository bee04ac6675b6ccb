from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from nasq.errors import ConfigError
from nasq.space import SearchSpace
from nasq.specs import ExperimentConfig, SpaceConfig, load_model


def _space_dict(repo: Path) -> dict:
    return yaml.safe_load((repo / "search_spaces" / "mbconv_small.yaml").read_text())


def _write(tmp_path: Path, name: str, data) -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return p


def test_unknown_key_names_file_field(tmp_path, repo):
    d = _space_dict(repo)
    d["stages"][1]["kernal"] = [3]
    p = _write(tmp_path, "s.yaml", d)
    with pytest.raises(ConfigError) as e:
        SearchSpace.from_yaml(p)
    assert str(e.value) == f"{p}: stages[1].kernal: unknown key"


def test_even_kernel_rejected_with_value(tmp_path, repo):
    d = _space_dict(repo)
    d["stages"][1]["kernel"] = [3, 4]
    p = _write(tmp_path, "s.yaml", d)
    with pytest.raises(ConfigError, match=r"stages\[1\]\.kernel: choices must be odd and positive, got 4"):
        SearchSpace.from_yaml(p)


def test_wrong_type(tmp_path, repo):
    d = _space_dict(repo)
    d["input"]["resolution"] = "big"
    p = _write(tmp_path, "s.yaml", d)
    with pytest.raises(ConfigError, match=r"input\.resolution: .*got 'big'"):
        SearchSpace.from_yaml(p)


def test_unknown_format_suggests(tmp_path, repo):
    d = _space_dict(repo)
    d["precision"]["w_format"] = ["fp32", "int9"]
    p = _write(tmp_path, "s.yaml", d)
    with pytest.raises(ConfigError) as e:
        SearchSpace.from_yaml(p)
    msg = str(e.value)
    assert "precision.w_format[1]" in msg and "unknown format 'int9'" in msg and "did you mean" in msg


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_model(SpaceConfig, tmp_path / "nope.yaml")
    p = _write(tmp_path, "bad.yaml", "stages: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_model(SpaceConfig, p)


def test_experiment_defaults_are_valid_and_frozen():
    cfg = ExperimentConfig()
    assert cfg.objectives[0] == "top1"
    with pytest.raises(ValidationError):
        cfg.name = "other"  # frozen


def test_constraint_needs_one_bound(tmp_path):
    p = _write(tmp_path, "e.yaml", {"constraints": [{"metric": "size_mb"}]})
    with pytest.raises(ConfigError, match=r"constraints\[0\]"):
        load_model(ExperimentConfig, p)


# ---------------------------------------------------------------- hostile input (see test_hostile_input.py)
def test_every_schema_refuses_nan_and_inf():
    from nasq.specs import Frozen

    assert Frozen.model_config["allow_inf_nan"] is False
    with pytest.raises(ValidationError):
        ExperimentConfig.model_validate({"train": {"epochs": float("nan")}})


def test_error_locations_and_values_are_cut_short(tmp_path):
    p = _write(tmp_path, "e.yaml", {"train": {"k" * 500 + "\n": 1}, "name": "demo"})
    with pytest.raises(ConfigError) as e:
        load_model(ExperimentConfig, p)
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 200 and msg.endswith("unknown key")


def test_our_validators_name_the_value_once(tmp_path):
    d = yaml.safe_load((Path(__file__).resolve().parents[2] / "search_spaces" / "mbconv_small.yaml").read_text())
    d["stages"][1]["kernel"] = [3, 4]
    p = _write(tmp_path, "s.yaml", d)
    with pytest.raises(ConfigError) as e:
        SearchSpace.from_yaml(p)
    assert str(e.value).endswith("stages[1].kernel: choices must be odd and positive, got 4")


# ---------------------------------------------------------------- metrics, targets, allow_emulated
@pytest.mark.parametrize("metric", ["top1", "latency_ms", "throughput_ips", "size_mb", "bops_g",
                                    "latency_ms@cpu_ort_epyc", "throughput_ips@gpu.h200-1"])
def test_metric_names_accepted(metric):
    assert ExperimentConfig(objectives=("top1", metric) if metric != "top1" else ("top1", "size_mb"))


@pytest.mark.parametrize("metric, detail", [
    ("latency", "unknown metric (known: top1, latency_ms"),
    ("size_mb@cpu", "only latency_ms, throughput_ips take '@<profile>'"),
    ("latency_ms@", "must be a name"),
    ("latency_ms@../x", "must be a name"),
])
def test_bad_metric_names_are_one_line(tmp_path, metric, detail):
    p = tmp_path / "e.yaml"
    p.write_text(yaml.safe_dump({"objectives": ["top1", metric]}))
    with pytest.raises(ConfigError) as e:
        load_model(ExperimentConfig, p)
    assert f"{p}: objectives[1]: " in str(e.value) and detail in str(e.value), str(e.value)


def test_objectives_with_their_own_goals_are_accepted(tmp_path):
    p = _write(tmp_path, "e.yaml", {"objectives": [{"name": "top1", "goal": "max"}, "size_mb",
                                                   {"name": "latency_ms@cpu_ort_epyc", "goal": "min"}]})
    assert load_model(ExperimentConfig, p)[0].objectives == ("top1", "size_mb", "latency_ms@cpu_ort_epyc")


@pytest.mark.parametrize("entry, detail", [
    ({"name": "top1", "goal": "min"}, "objectives[0].goal: top1 is a metric to maximise, got 'min'"),
    ({"name": "top1"}, "objectives[0]: a metric name or {name, goal}"),
    ({"name": "auc", "goal": "max"}, "unknown metric"),
])
def test_objectives_with_a_wrong_goal_are_one_line(tmp_path, entry, detail):
    p = _write(tmp_path, "e.yaml", {"objectives": [entry, "size_mb"]})
    with pytest.raises(ConfigError) as e:
        load_model(ExperimentConfig, p)
    assert str(e.value).startswith(f"{p}: objectives") and detail in str(e.value), str(e.value)


def test_constraint_profile_means_metric_at_profile():
    from nasq.specs import ConstraintSpec

    assert ConstraintSpec(metric="latency_ms", max=1, profile="b").key == "latency_ms@b"
    assert ConstraintSpec(metric="latency_ms@b", max=1).key == "latency_ms@b"
    assert ConstraintSpec(metric="size_mb", max=1, profile="b").key == "size_mb"  # size does not depend on it
    with pytest.raises(ValidationError, match="names profile 'a' but profile is 'b'"):
        ConstraintSpec(metric="latency_ms@a", max=1, profile="b")


def test_several_profiles_accepted_once_each():
    assert ExperimentConfig(hardware=("cpu_roofline", "cpu_ort_epyc")).hardware == ("cpu_roofline", "cpu_ort_epyc")
    assert ExperimentConfig().allow_emulated is False
    with pytest.raises(ValidationError, match="hardware choices must be unique"):
        ExperimentConfig(hardware=("cpu_roofline", "cpu_roofline"))
