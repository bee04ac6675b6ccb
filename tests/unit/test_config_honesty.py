"""Config honesty: no experiment key is accepted and then ignored. ``search.algorithm`` (never read)
is refused with one line naming file, field and value; every hardware profile is validated and used
(a second one is scored, never dropped); a constraint's ``profile`` may name the experiment's one
profile and then applies exactly like a constraint without it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from nasq.errors import ConfigError
from nasq.experiment import load_experiment
from nasq.search.loop import SearchTask
from nasq.specs import ExperimentConfig, SearchConfig

STRATEGIES = "linas, nsga2_true, random, optuna_nsga2, optuna_tpe, ilp, sensitivity_seeded"
ALGORITHM_MSG = ("search.algorithm: not accepted (it was never used), got 'nsga2'; "
                 f"set search.strategy instead, one of {STRATEGIES}")
HARDWARE_MSG = "hardware[1]: no hardware named 'no_such_profile' in hardware_profiles/"


def _exp(tmp_path: Path, name: str = "exp.yaml", **over) -> Path:
    data = {"name": "honest", "data": {"name": "digits"}, "space": "mbconv_small", "hardware": ["cpu_roofline"],
            "predictor": "gbdt_onehot", **over}
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def _refused(path: Path) -> str:
    with pytest.raises(ConfigError) as e:
        load_experiment(path)
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


# ---------------------------------------------------------------- search.algorithm
def test_search_algorithm_refused_with_file_field_value_and_alternative(tmp_path):
    p = _exp(tmp_path, search={"algorithm": "nsga2", "population": 8})
    before = sorted(tmp_path.iterdir())
    assert _refused(p) == f"{p}: {ALGORITHM_MSG}"
    assert sorted(tmp_path.iterdir()) == before


def test_search_algorithm_refused_whatever_its_value(tmp_path):
    p = _exp(tmp_path, search={"algorithm": "random"})
    msg = _refused(p)
    assert msg.startswith(f"{p}: search.algorithm: not accepted") and "got 'random'" in msg
    assert "search.strategy" in msg


def test_search_algorithm_is_gone_from_the_schema():
    assert "algorithm" not in SearchConfig.model_fields
    assert "algorithm" not in ExperimentConfig().model_dump()["search"]


def test_search_strategy_is_the_setting_that_works(tmp_path):
    exp = load_experiment(_exp(tmp_path, search={"strategy": "random"}))
    assert exp.config.search.strategy == "random"


def test_other_unknown_search_keys_still_say_unknown_key(tmp_path):
    p = _exp(tmp_path, search={"algorithmm": "nsga2"})
    assert _refused(p) == f"{p}: search.algorithmm: unknown key"


def test_no_repo_experiment_yaml_sets_search_algorithm(repo):
    offenders = []
    for folder in ("examples", "tests", "benchmarks", "notebooks"):
        for path in sorted((repo / folder).rglob("*.y*ml")) if (repo / folder).is_dir() else []:
            data = yaml.safe_load(path.read_text())
            if isinstance(data, dict) and isinstance(data.get("search"), dict) and "algorithm" in data["search"]:
                offenders.append(str(path.relative_to(repo)))
    assert offenders == []


def test_demo_experiment_still_loads(repo):
    exp = load_experiment(repo / "examples" / "demo.yaml")
    assert len(exp.profiles) == 1


def test_cpu_target_refuses_its_emulated_formats_unless_allowed(tmp_path):
    """cpu_ort_epyc computes int4 and fp8 in float: the demo space's menu needs allow_emulated."""
    msg = _refused(_exp(tmp_path, hardware=["cpu_ort_epyc"]))
    assert "only emulated by profile 'cpu_ort_epyc'" in msg and "allow_emulated: true" in msg
    exp = load_experiment(_exp(tmp_path, "ok.yaml", hardware=["cpu_ort_epyc"], allow_emulated=True))
    assert exp.emulated_layers(exp.space.largest()) == []  # fp32 everywhere: nothing emulated


# ---------------------------------------------------------------- hardware profiles
def test_second_hardware_profile_is_loaded_and_scored(tmp_path):
    exp = load_experiment(_exp(tmp_path, hardware=["cpu_roofline", "cpu_ort_epyc"], allow_emulated=True))
    assert [p.name for p in exp.profiles] == ["cpu_roofline", "cpu_ort_epyc"]
    values = exp.cost_model().score([exp.space.smallest()])
    assert {"latency_ms@cpu_roofline", "latency_ms@cpu_ort_epyc"} <= set(values)


def test_second_hardware_profile_that_resolves_to_nothing_is_refused(tmp_path):
    p = _exp(tmp_path, hardware=["cpu_roofline", "no_such_profile"])
    before = sorted(tmp_path.iterdir())
    assert _refused(p).startswith(f"{p}: {HARDWARE_MSG}")
    assert sorted(tmp_path.iterdir()) == before


def test_one_hardware_profile_is_loaded_and_used(tmp_path):
    exp = load_experiment(_exp(tmp_path, hardware=["cpu_roofline"]))
    assert [p.name for p in exp.profiles] == ["cpu_roofline"]
    assert exp.cost_model().profile is exp.profiles[0]


def test_experiment_config_refuses_a_profile_twice_in_code():
    with pytest.raises(ValueError, match="hardware choices must be unique"):
        ExperimentConfig(hardware=("cpu_roofline", "cpu_roofline"))


# ---------------------------------------------------------------- constraints[].profile
def _latency_cut(tmp_path: Path) -> float:
    """A latency bound some sampled subnets meet and some do not."""
    exp = load_experiment(_exp(tmp_path, "probe.yaml"))
    specs = exp.space.sample(np.random.default_rng(0), 200)
    return float(np.median(exp.cost_model().score(specs)["latency_ms"]))


def _feasible(path: Path) -> tuple[np.ndarray, SearchTask]:
    exp = load_experiment(path)
    cfg = exp.config
    task = SearchTask(exp.space, cfg.objectives, cfg.constraints, exp.cost_model(), cfg.search, bounds={})
    specs = exp.space.sample(np.random.default_rng(7), 300)
    return task.feasible(specs), task


def test_constraint_naming_the_experiment_profile_applies_like_one_without(tmp_path):
    cut = _latency_cut(tmp_path)
    named = _exp(tmp_path, "named.yaml", constraints=[{"metric": "latency_ms", "max": cut, "profile": "cpu_roofline"}])
    plain = _exp(tmp_path, "plain.yaml", constraints=[{"metric": "latency_ms", "max": cut}])
    ok_named, task_named = _feasible(named)
    ok_plain, _ = _feasible(plain)
    assert task_named.constraints[0].profile == "cpu_roofline"
    assert 0 < ok_named.sum() < len(ok_named)  # the bound bites: the comparison below means something
    np.testing.assert_array_equal(ok_named, ok_plain)


def test_constraint_profile_null_is_accepted(tmp_path):
    exp = load_experiment(_exp(tmp_path, constraints=[{"metric": "size_mb", "max": 1.0, "profile": None}]))
    assert exp.config.constraints[0].profile is None


def test_constraint_naming_another_profile_refused(tmp_path):
    p = _exp(tmp_path, constraints=[{"metric": "latency_ms", "max": 1.0},
                                    {"metric": "latency_ms", "max": 1.0, "profile": "cpu_ort_epyc"}])
    assert _refused(p) == (f"{p}: constraints[1].profile: must name the experiment's hardware profile "
                           "('cpu_roofline') or be left out, got 'cpu_ort_epyc'")


# ---------------------------------------------------------------- through the CLI
@pytest.mark.parametrize("over, expected", [
    ({"search": {"algorithm": "nsga2"}}, ALGORITHM_MSG),
    ({"hardware": ["cpu_roofline", "no_such_profile"]}, HARDWARE_MSG),
    ({"constraints": [{"metric": "size_mb", "max": 1.0, "profile": "gpu"}]}, "constraints[0].profile: "),
], ids=["search.algorithm", "unknown-second-profile", "constraint-profile"])
def test_cli_validate_refuses_with_one_line_exit_2(tmp_path, over, expected):
    from typer.testing import CliRunner

    from nasq.cli import app

    p = _exp(tmp_path, **over)
    before = sorted(tmp_path.iterdir())
    result = CliRunner().invoke(app, ["validate", str(p)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"nasq: error: {p}: ") and expected in lines[0], lines[0]
    assert sorted(tmp_path.iterdir()) == before
