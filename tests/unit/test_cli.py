"""Bad input at the command line: one line naming file, field and value; exit 2; nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _nasq(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NASQ_CATALOG": str(REPO)}
    return subprocess.run([sys.executable, "-m", "nasq.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=120)


def _bad_space(tmp_path: Path) -> Path:
    d = yaml.safe_load((REPO / "search_spaces" / "mbconv_small.yaml").read_text())
    d["stages"][2]["kernel"] = [3, 4]
    p = tmp_path / "bad_space.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


CASES = {
    "unknown key": ({"name": "x", "trian": {"epochs": 1}}, "exp.yaml: trian: unknown key"),
    "wrong type": ({"train": {"epochs": "lots"}}, "exp.yaml: train.epochs: "),
    "bad choice": ({"objectives": ["top1", "speed"]}, "exp.yaml: objectives[1]: "),
    "missing space": ({"space": "no_such_space"}, "exp.yaml: space: no space named 'no_such_space'"),
    "bad space file": ({"space": "bad_space.yaml"}, "bad_space.yaml: stages[2].kernel: choices must be odd and positive, got 4"),
    "missing data folder": ({"data": {"path": "nowhere"}}, "exp.yaml: data.path: no Fashion-MNIST IDX files found in 'nowhere'"),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("command", ["run", "validate"])
def test_bad_experiment_one_line_exit_2_nothing_written(tmp_path, case, command):
    data, expected = CASES[case]
    _bad_space(tmp_path)
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(data))
    before = sorted(p.name for p in tmp_path.iterdir())
    out = _nasq([command, "exp.yaml"], tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert lines[0].startswith("nasq: error: ") and expected in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_missing_experiment_file(tmp_path):
    out = _nasq(["run", "absent.yaml"], tmp_path)
    assert out.returncode == 2 and out.stderr.strip() == "nasq: error: absent.yaml: file not found"
    assert list(tmp_path.iterdir()) == []


def test_validate_ok_and_help(tmp_path):
    out = _nasq(["validate", str(REPO / "examples" / "demo.yaml")], tmp_path)
    assert out.returncode == 0 and "space mbconv_small" in out.stdout
    helptext = _nasq(["run", "--help"], tmp_path).stdout
    assert "Experiment YAML" in helptext


@pytest.mark.parametrize("args", [
    ["search", "x.yaml", "--seed", "abc"],       # not an integer
    ["frobnicate"],                              # no such command
    ["front"],                                   # missing argument
    ["search", "x.yaml", "--bogus"],             # no such option (run/search go through the supervisor)
    ["run", "x.yaml", "--tracking-wait", "nan"],
    ["export", "r", "--point", "1" * 5000],     # an integer past Python's str->int limit
])
def test_usage_errors_are_one_line(tmp_path, args):
    """Click's own usage errors, which print a multi-line box by default, are one nasq line, exit 2."""
    out = _nasq(args, tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nasq: error: ") and "Traceback" not in out.stderr, out.stderr
    assert len(lines[0]) < 600


@pytest.mark.parametrize(("args", "expected"), [
    (["profile", "check", "no_such_profile"], "PROFILE: no hardware named 'no_such_profile' in hardware_profiles/"),
    (["profile", "check", "cpu_roofline"], "status: profile 'cpu_roofline' is modelled, not measured"),
    (["profile", "check", "cpu_ort_epyc", "--subnets", "0"], "command line: --subnets: must be >= 3"),
    (["profile", "check", "cpu_ort_epyc", "--space", "no_such_space"], "--space: no space named 'no_such_space'"),
    (["profile", "calibrate", "cpu_ort_epyc", "--subnets", "0"], "command line: --subnets: must be >= 8"),
    (["profile", "calibrate", "no_such_profile"], "PROFILE: no hardware named 'no_such_profile'"),
])
def test_profile_check_and_calibrate_bad_input_one_line_exit_2(tmp_path, args, expected):
    """Bad input fails before any timing: one line, exit 2, nothing written (cache included)."""
    env_cache = tmp_path / "cache"
    env = {**os.environ, "NASQ_CATALOG": str(REPO), "NASQ_CACHE_DIR": str(env_cache)}
    out = subprocess.run([sys.executable, "-m", "nasq.cli", *args], cwd=tmp_path, capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nasq: error: ") and expected in lines[0], out.stderr
    assert list(tmp_path.iterdir()) == []


def test_catalog_says_each_profiles_runtime_and_what_it_emulates(tmp_path):
    out = _nasq(["catalog"], tmp_path)
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line for line in out.stdout.splitlines() if line.startswith("  ")}
    assert lines["cpu_ov_epyc"].endswith("[openvino, measured; emulates fp8_e4m3, int4]")
    assert lines["cpu_roofline"].endswith("[roofline, modelled]")
