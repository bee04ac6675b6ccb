"""nasq front / export / submit / jobs on a hand-made finished run folder (untrained supernet,
digits data): the bundle, its checks in the manifest, load_export, and one-line bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TINY = {"name": "unit", "data": {"name": "digits", "val_size": 200}, "space": "mbconv_small",
        "hardware": ["cpu_roofline"], "evaluate": {"num_subnets": 8, "calib_images": 64, "val_images": 100,
                                                   "batch_size": 64},
        "search": {"max_true_evals": 5}}


def cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "NASQ_CATALOG": str(REPO), **(env or {})}
    full_env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "nasq.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env=full_env, timeout=300)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """A finished run as the pipeline leaves it, with an untrained supernet."""
    import torch
    from safetensors.torch import save_file

    from nasq.experiment import load_experiment
    from nasq.files import atomic_write_json
    from nasq.search.pareto import Front, FrontPoint
    from nasq.stages.track import run_record
    from nasq.supernet.network import Supernet

    tmp = tmp_path_factory.mktemp("run")
    exp_file = tmp / "unit.yaml"
    exp_file.write_text(yaml.safe_dump(TINY))
    exp = load_experiment(exp_file)
    folder = tmp / "runs" / "unit"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    net = Supernet(exp.space)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "supernet.safetensors"))
    specs = [exp.space.smallest(), *exp.space.sample(np.random.default_rng(0), 2)]
    points = [FrontPoint(s, [int(g) for g in exp.space.encode(s)],
                         {"top1": 50.0 - i, "latency_ms": 1.0 + i, "size_mb": 0.1 * (i + 1)}, {"top1": 49.0 - i})
              for i, s in enumerate(specs)]
    Front(("top1", "latency_ms", "size_mb"), points, exp.lineage()).save(folder)
    atomic_write_json(folder / "experiment.json", run_record(exp))
    return folder


def test_front_table_where_and_pick(run_folder: Path, tmp_path: Path) -> None:
    out = cli("front", str(run_folder), "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert [r["point"] for r in json.loads(out.stdout)] == [0, 1, 2]
    out = cli("front", str(run_folder), "--where", "latency_ms >= 2", "--json", cwd=tmp_path)
    assert [r["point"] for r in json.loads(out.stdout)] == [1, 2]
    out = cli("front", str(run_folder), "--where", "latency_ms >= 2", "--pick", "min-latency", "--json", cwd=tmp_path)
    assert [r["point"] for r in json.loads(out.stdout)] == [1]
    out = cli("front", str(run_folder), cwd=tmp_path)
    assert out.returncode == 0 and "3 of 3 front points" in out.stdout


@pytest.mark.parametrize("args, message", [
    (["--point", "7"], "--point 7: out of range"),
    (["--where", "latency_ms <"], "--where 'latency_ms <': expected a number"),
    (["--where", "speed < 1"], "unknown metric 'speed'"),
    (["--where", "latency_ms < 0"], "matched none"),
    (["--pick", "fastest"], "--pick 'fastest': unknown"),
    ([], "which point?"),
    (["--point", "0", "--register", "m"], "has no MLflow run recorded"),
])
def test_export_bad_input_writes_nothing(run_folder: Path, tmp_path: Path, args: list, message: str) -> None:
    out_dir = tmp_path / "bundle"
    res = cli("export", str(run_folder), "--out", str(out_dir), *args, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not out_dir.exists()
    assert [p.name for p in run_folder.parent.iterdir()] == ["unit"]  # no temp folder left beside it


@pytest.mark.parametrize("run, env, message", [
    ("runs/nope", {}, "no such run folder"),
    ("0123456789abcdef0123456789abcdef", {}, "needs --tracking-uri"),
    ("0123456789abcdef0123456789abcdef", {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}, "unreachable"),
])
def test_export_unknown_run_is_one_line(tmp_path: Path, run: str, env: dict, message: str) -> None:
    full = {**env}
    args = ["export", run, "--out", str(tmp_path / "b"), "--point", "0"]
    if env:
        args += ["--tracking-uri", env["MLFLOW_TRACKING_URI"]]
    res = cli(*args, cwd=tmp_path, env=full)
    assert res.returncode == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "b").exists()


def test_export_writes_a_checked_bundle_that_loads_back(run_folder: Path, tmp_path: Path) -> None:
    import torch

    import nasq
    from nasq.files import sha256_file
    from nasq.search.pareto import Front

    out_dir = tmp_path / "exported"
    # --int8-weights overrides the run's export.int8_weights (auto); the manifest records it
    res = cli("export", str(run_folder), "--pick", "max-top1", "--out", str(out_dir), "--int8-weights", "uint8",
              cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "point 0 of" in res.stdout and "int8 weights stored as uint8 codes" in res.stdout
    assert sorted(p.name for p in out_dir.iterdir()) == ["arch.json", "manifest.json", "model.onnx",
                                                         "model.safetensors"]
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["runtime"]["int8_weights"] == "uint8"
    m = manifest["measured"]
    assert m["point"] == 0 and m["top1"] == 49.0 and manifest["predicted"]["latency_ms"] == 1.0
    assert 0 <= m["onnx_top1_val"] <= 100 and m["onnx_val_images"] == 100
    assert 0 <= m["onnx_top1_test"] <= 100 and m["onnx_test_images"] > 100
    assert m["onnx_latency_ms_batch1"] > 0
    norm = manifest["input_normalisation"]  # measured on the training split: serving reproduces it
    assert norm["axis"] == 1 and norm["scale"] > 0 and len(norm["mean"]) == len(norm["std"]) >= 1
    assert all(s > 0 for s in norm["std"])
    for name, digest in manifest["files"].items():
        assert sha256_file(out_dir / name) == digest
    front = Front.load(run_folder / "front.json")
    arch = json.loads((out_dir / "arch.json").read_text())
    assert arch["key"] == front.points[0].spec.key()

    model = nasq.load_export(out_dir)  # a plain torch module, no pickle
    assert isinstance(model, torch.nn.Module)
    x = torch.zeros(2, 1, 28, 28)
    assert model(x).shape == (2, 10)


def test_submit_and_jobs_unreachable_address(tmp_path: Path) -> None:
    exp = tmp_path / "e.yaml"
    exp.write_text(yaml.safe_dump(TINY))
    for args in (["submit", str(exp), "--address", "http://127.0.0.1:9"],
                 ["jobs", "list", "--address", "http://127.0.0.1:9"],
                 ["jobs", "status", "x", "--address", "127.0.0.1:9"]):
        res = cli(*args, cwd=tmp_path, env={"RAY_AUTH_MODE": "disabled"})
        assert res.returncode == 2, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert "Ray" in res.stderr or "--address" in res.stderr


def test_submit_assembles_data_only(tmp_path: Path) -> None:
    from nasq.cluster.jobs import assemble

    exp = tmp_path / "e.yaml"
    exp.write_text(yaml.safe_dump(TINY))
    dest = tmp_path / "job"
    name = assemble(exp, dest)
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert name == "experiment.yaml" and "experiment.yaml" in files
    assert "search_spaces/mbconv_small.yaml" in files and "predictors/gbdt_onehot.yaml" in files
    assert "hardware_profiles/cpu_roofline/profile.yaml" in files
    assert all(not f.endswith(".py") for f in files)


def test_submit_entrypoint_never_carries_the_file_name(tmp_path: Path) -> None:
    """A file name with shell syntax (or a space) is shipped as experiment.yaml: the entrypoint Ray
    hands to a shell is the same fixed string whatever the user's file is called."""
    import shlex

    from nasq.cluster.jobs import ENTRYPOINT, assemble

    for fname in ("x.yaml;touch INJECTED;.yaml", "with space.yaml", "$(touch INJECTED).yaml"):
        exp = tmp_path / fname
        exp.write_text(yaml.safe_dump(TINY))
        dest = tmp_path / f"job{len(fname)}"
        shipped = assemble(exp, dest)
        assert shipped == "experiment.yaml" and (dest / shipped).read_text() == exp.read_text()
    assert shlex.split(ENTRYPOINT) == ["nasq", "run", "experiment.yaml"]
    # the entrypoint runs in a real shell in the job's working_dir: nothing but nasq is invoked
    assert ";" not in ENTRYPOINT and "$" not in ENTRYPOINT and "`" not in ENTRYPOINT
    assert not list(tmp_path.rglob("INJECTED"))


def test_submit_ships_only_profile_files(tmp_path: Path) -> None:
    """`hardware: [".."]` (or any name that escapes hardware_profiles/) is refused in one line; a
    .env beside a profile is never shipped."""
    import shutil

    from nasq.cluster.jobs import assemble
    from nasq.errors import NasqError

    repo = Path(__file__).resolve().parents[2]
    shutil.copytree(repo / "hardware_profiles" / "cpu_roofline", tmp_path / "hardware_profiles" / "cpu_roofline")
    (tmp_path / "hardware_profiles" / "cpu_roofline" / ".env").write_text("SECRET=1\n")
    (tmp_path / ".env").write_text("SECRET=1\n")
    (tmp_path / "profile.yaml").write_text((repo / "hardware_profiles" / "cpu_roofline" / "profile.yaml").read_text())
    exp = tmp_path / "e.yaml"
    exp.write_text(yaml.safe_dump(TINY))
    dest = tmp_path / "job"
    assemble(exp, dest)
    shipped = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert not any(".env" in f for f in shipped), shipped
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**TINY, "hardware": [".."]}))
    with pytest.raises(NasqError) as err:
        assemble(bad, tmp_path / "job2")
    assert "\n" not in str(err.value) and "'..'" in str(err.value)
    assert not (tmp_path / "job2" / ".env").exists()


def test_run_id_resolves_through_the_tracking_uri(run_folder: Path, tmp_path: Path) -> None:
    """The same run logged to a (sqlite) MLflow store is found by its run id, and by a point run id."""
    from nasq.search.pareto import Front
    from nasq.stages.runs import open_run
    from nasq.tracking.client import Component, default_uri, log_search

    uri = default_uri(tmp_path)
    front = Front.load(run_folder / "front.json")
    res = log_search(front, uri=uri, experiment="unit", run_name="unit", params={}, metrics={}, tags={},
                     artifact_root=tmp_path / "art", extra_files=[run_folder / "experiment.json"],
                     components=[Component("supernet", files=[run_folder / "supernet.safetensors"])])
    with open_run(res.run_id, uri) as found:
        assert found.run_id == res.run_id and found.point is None
        assert [p.spec.key() for p in found.front.points] == [p.spec.key() for p in front.points]
        assert (found.folder / "supernet.safetensors").read_bytes() == (run_folder / "supernet.safetensors").read_bytes()
        assert found.space().hash == found.record["space_hash"]
    with open_run(res.child_run_ids[2], uri) as found:
        assert found.run_id == res.run_id and found.point == 2
    out = cli("front", res.run_id, "--tracking-uri", uri, "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert [r["point"] for r in json.loads(out.stdout)] == [0, 1, 2]
    bad = cli("front", "f" * 32, "--tracking-uri", uri, cwd=tmp_path)
    assert bad.returncode == 2 and "not found" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_experiment_naming_another_space_is_refused(run_folder: Path, tmp_path: Path) -> None:
    """--experiment whose space is not the one the run's supernet was trained on: one line, exit 2."""
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(run_folder, folder)
    (folder / "supernet.json").write_text(json.dumps({"space": "other", "space_hash": "abc"}))
    exp_file = run_folder.parents[1] / "unit.yaml"
    out = cli("front", str(folder), "--experiment", str(exp_file), cwd=tmp_path)
    assert out.returncode == 2
    line = out.stderr.strip()
    assert "\n" not in line and "supernet.json: trained on space 'other' (abc)" in line and "unit.yaml" in line
