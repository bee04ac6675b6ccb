"""The whole pipeline end to end on tiny settings: real embedded Ray, real MLflow (sqlite),
real onnxruntime. Same seed -> same front, whether evaluations run on Ray or in-process."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from nasq.experiment import load_experiment
from nasq.stages.pipeline import run_pipeline

pytestmark = [pytest.mark.slow]

TINY = {
    "name": "tiny",
    "data": {"name": "digits", "val_size": 300},
    "space": "mbconv_small",
    "train": {"epochs": 2, "batch_size": 64, "seed": 0, "threads": 1},
    "evaluate": {"num_subnets": 16, "calib_images": 128, "val_images": 300, "batch_size": 128},
    "search": {"population": 16, "generations": 6, "max_true_evals": 8, "seed": 0},
    "constraints": [{"metric": "size_mb", "max": 0.3}],
    "ray": {"address": "local", "num_cpus": 2},
}


def _experiment(tmp_path: Path, **overrides) -> Path:
    cfg = {**TINY, **overrides, "workdir": str(tmp_path / "run-{name}")}
    p = tmp_path / f"{cfg['name']}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.fixture(scope="module")
def ray_result(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ray")
    return run_pipeline(load_experiment(_experiment(tmp)))


@pytest.mark.ray
def test_front_artifacts(ray_result):
    r = ray_result
    assert r.front.points, "empty front"
    assert all(p.value("size_mb") <= 0.3 for p in r.front.points)
    saved = json.loads((r.workdir / "front.json").read_text())
    assert [p["key"] for p in saved["points"]] == [p.spec.key() for p in r.front.points]
    assert saved["lineage"]["nasq.space"] == "mbconv_small"
    assert (r.workdir / "supernet.safetensors").stat().st_size > 10_000
    with (r.workdir / "front.csv").open() as fh:  # each point's top-1 with its 95 % interval
        rows = list(csv.DictReader(fh))
    assert rows and all(float(x["top1_ci_low"]) <= float(x["top1"]) <= float(x["top1_ci_high"]) for x in rows)
    lines = (r.workdir / "evaluations.csv").read_text().splitlines()
    assert len(lines) - 1 == r.evaluated == len({line.split(",")[0] for line in lines[1:]})  # each subnet once


@pytest.mark.ray
def test_mlflow_runs(ray_result):
    from mlflow.tracking import MlflowClient

    t = ray_result.tracking
    client = MlflowClient(tracking_uri=t.uri)
    parent = client.get_run(t.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["nasq.space_hash"] == ray_result.experiment.space.hash
    assert "predictor.kendall_tau" in parent.data.metrics
    children = client.search_runs([t.experiment_id], f"tags.mlflow.parentRunId = '{t.run_id}' and "
                                  "tags.`nasq.kind` = 'pareto_point'")
    assert len(children) == len(ray_result.front.points)
    assert {"top1", "top1_pred", "latency_ms_pred", "top1_ci_low", "top1_ci_high"} <= set(children[0].data.metrics)
    assert all(c.data.metrics["top1_ci_low"] <= c.data.metrics["top1"] <= c.data.metrics["top1_ci_high"]
               for c in children)
    assert children[0].data.tags["nasq.supernet_run_id"] == parent.data.tags["nasq.supernet_run_id"]
    names = {a.path for a in client.list_artifacts(t.run_id)}
    assert {"front.csv", "front.json", "pareto.png", "pareto.html", "experiment.json"} <= names
    # one parent run for the whole pipeline: a nested run per stage, each FINISHED, export included
    stages = client.search_runs([t.experiment_id], f"tags.mlflow.parentRunId = '{t.run_id}' and "
                                "tags.`nasq.kind` = 'stage'")
    assert sorted(r.data.tags["nasq.stage"] for r in stages) == sorted(
        ["data", "train", "evaluate", "predict", "search", "track", "export"])
    assert all(r.info.status == "FINISHED" and r.data.metrics["seconds"] >= 0 for r in stages)
    assert parent.data.params["experiment.name"] == "tiny" and "nasq.error" not in parent.data.tags


@pytest.mark.ray
def test_export_runs_in_onnxruntime(ray_result):
    import onnxruntime as ort

    e = ray_result.export
    for name in ("model.onnx", "model.safetensors", "arch.json", "manifest.json"):
        assert (e.out_dir / name).is_file()
    # Quantized activations: a value on a rounding boundary can land one step apart in torch and
    # onnxruntime (summation order), so logits may differ locally; predictions must agree.
    assert e.top1_agreement >= 0.98, (e.top1_agreement, e.max_abs_diff)
    measured = json.loads((e.out_dir / "manifest.json").read_text())["measured"]
    assert abs(measured["onnx_top1_val"] - measured["top1"]) <= 1.0  # same images, same calibration
    assert e.max_abs_diff < 0.5
    sess = ort.InferenceSession(str(e.out_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.zeros((2, 1, 28, 28), dtype=np.float32)
    assert sess.run(None, {sess.get_inputs()[0].name: x})[0].shape == (2, 10)


@pytest.mark.ray
def test_same_seed_same_front_in_process(ray_result, tmp_path):
    """The same experiment evaluated in-process (no Ray) ends on the identical front."""
    local = run_pipeline(load_experiment(_experiment(tmp_path, ray={"address": "none"},
                                                     export={"enabled": False})))
    a = [(p.spec.key(), p.measured["top1"]) for p in ray_result.front.points]
    b = [(p.spec.key(), p.measured["top1"]) for p in local.front.points]
    assert a == b
