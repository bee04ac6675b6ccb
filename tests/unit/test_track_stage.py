"""stages.track.run: history rows become step metrics, the run folder records experiment.json
and tracking.json, nested supernet/predictor runs carry their files (hand-made result, no search);
under `nasq run` it logs into the parent run opened at the start (track.parent_run)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import yaml


class _Fit:
    def as_metrics(self, prefix: str = "predictor.") -> dict[str, float]:
        return {f"{prefix}kendall_tau": 0.61}


def _experiment_and_result(tmp_path: Path):
    from nasq.experiment import load_experiment
    from nasq.search.pareto import Front, FrontPoint

    exp_file = tmp_path / "e.yaml"
    exp_file.write_text(yaml.safe_dump({"name": "hist", "data": {"name": "digits"}, "hardware": ["cpu_roofline"],
                                        "workdir": str(tmp_path / "run")}))
    exp = load_experiment(exp_file)
    workdir = exp.workdir
    workdir.mkdir(parents=True)
    (workdir / "supernet.safetensors").write_bytes(b"weights")
    (workdir / "predictor.json").write_text("{}")
    specs = exp.space.sample(np.random.default_rng(0), 2)
    points = [FrontPoint(s, [int(g) for g in exp.space.encode(s)], {"top1": 70.0 - i, "latency_ms": 1.0 + i,
                                                                    "size_mb": 0.2}, {"top1": 69.0 - i})
              for i, s in enumerate(specs)]
    history = [{"iteration": i, "true_evals": 10 + 5 * i, "hypervolume": 0.2 + 0.1 * i, "predictor_tau": 0.5}
               for i in range(3)]
    result = SimpleNamespace(front=Front(exp.config.objectives, points, exp.lineage()), fit_report=_Fit(),
                             evaluated=12, timings={"train": 1.0}, train_info={"steps": 3.0}, evaluations=None,
                             history=history)
    return exp, result


def test_track_stage_logs_history_and_records(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from nasq.stages import track

    exp, result = _experiment_and_result(tmp_path)
    workdir = exp.workdir
    tracked = track.run(exp, result, workdir)

    client = MlflowClient(tracking_uri=tracked.uri)
    hv = sorted(client.get_metric_history(tracked.run_id, "search.hypervolume"), key=lambda m: m.step)
    assert [(m.step, round(m.value, 6)) for m in hv] == [(0, 0.2), (1, 0.3), (2, 0.4)]
    assert len(client.get_metric_history(tracked.run_id, "search.predictor_tau")) == 3
    record = json.loads((workdir / "experiment.json").read_text())
    assert record["space_hash"] == exp.space.hash and record["config"]["name"] == "hist"
    assert json.loads((workdir / "tracking.json").read_text())["run_id"] == tracked.run_id
    sup = tracked.lineage_run_ids["nasq.supernet_run_id"]
    assert {a.path for a in client.list_artifacts(sup)} == {"supernet.safetensors"}
    pred = client.get_run(tracked.lineage_run_ids["nasq.predictor_run_id"])
    assert pred.data.metrics == {"kendall_tau": 0.61}
    assert {"experiment.json", "pareto.html"} <= {a.path for a in client.list_artifacts(tracked.run_id)}
    assert tracked.view_url.endswith("&compareRunsMode=CHART")


def test_track_stage_logs_into_the_run_opened_at_start(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from nasq.stages import track

    exp, result = _experiment_and_result(tmp_path)
    with track.parent_run(exp) as run:
        client = MlflowClient(tracking_uri=run.uri)
        started = client.get_run(run.run_id)
        assert started.info.status == "RUNNING" and started.data.params["experiment.name"] == "hist"
        assert started.data.tags["nasq.space_hash"] == exp.space.hash and started.data.tags["nasq.kind"] == "search"
        with run.stage("track"):
            tracked = track.run(exp, result, exp.workdir, run)
        assert client.get_run(run.run_id).info.status == "RUNNING"  # the pipeline ends it, not the stage
    assert tracked.run_id == run.run_id and tracked.uri == track.uri_of(exp)
    parent = client.get_run(run.run_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics["front.size"] == 2.0
    assert len(client.get_metric_history(run.run_id, "search.hypervolume")) == 3
    assert json.loads((exp.workdir / "tracking.json").read_text())["run_id"] == run.run_id
    assert {"experiment.json", "front.json"} <= {a.path for a in client.list_artifacts(run.run_id)}
    runs = client.search_runs([run.experiment_id], f"tags.mlflow.parentRunId = '{run.run_id}'")
    assert sorted(r.info.run_name for r in runs) == ["point-0", "point-1", "predictor", "stage-track", "supernet"]


def test_track_stage_logs_per_target_metrics_under_names_mlflow_accepts(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from nasq.experiment import load_experiment
    from nasq.search.pareto import Front, FrontPoint
    from nasq.stages import track

    repo = Path(__file__).resolve().parents[2]
    second = yaml.safe_load((repo / "hardware_profiles" / "cpu_roofline" / "profile.yaml").read_text())
    second.update(name="cpu_b", native_formats=["fp32", "int8", "int4"], emulated_formats=["fp8_e4m3"])
    (tmp_path / "cpu_b").mkdir()
    (tmp_path / "cpu_b" / "profile.yaml").write_text(yaml.safe_dump(second))
    exp_file = tmp_path / "e.yaml"
    objectives = ["top1", "latency_ms@cpu_roofline", "latency_ms@cpu_b"]
    exp_file.write_text(yaml.safe_dump({"name": "two", "data": {"name": "digits"}, "allow_emulated": True,
                                        "hardware": ["cpu_roofline", "cpu_b/profile.yaml"], "objectives": objectives,
                                        "workdir": str(tmp_path / "run")}))
    exp = load_experiment(exp_file)
    exp.workdir.mkdir(parents=True)
    specs = exp.space.sample(np.random.default_rng(0), 2)
    cost = exp.cost_model().score(specs)
    points = [FrontPoint(s, [int(g) for g in exp.space.encode(s)],
                         {"top1": 70.0 - i, **{k: float(v[i]) for k, v in cost.items()}}, {"top1": 69.0 - i},
                         len(exp.emulated_layers(s)))
              for i, s in enumerate(specs)]
    result = SimpleNamespace(front=Front(tuple(objectives), points, exp.lineage()), fit_report=_Fit(), evaluated=2,
                             timings={}, train_info={}, evaluations=None, history=[])
    tracked = track.run(exp, result, exp.workdir)
    client = MlflowClient(tracking_uri=tracked.uri)
    parent = client.get_run(tracked.run_id)
    assert parent.data.tags["nasq.profiles"] == "cpu_roofline,cpu_b"
    assert parent.data.tags["nasq.allow_emulated"] == "true"
    assert parent.data.tags["nasq.emulated_formats"] == "cpu_b:fp8_e4m3"
    point = client.get_run(tracked.child_run_ids[0]).data.metrics
    assert {"latency_ms.cpu_b", "latency_ms.cpu_roofline_pred", "throughput_ips.cpu_b", "emulated_layers"} <= set(point)
    assert point["emulated_layers"] == points[0].emulated_layers
