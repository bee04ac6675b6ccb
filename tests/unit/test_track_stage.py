"""stages.track.run: history rows become step metrics, the run folder records experiment.json
and tracking.json, nested supernet/predictor runs carry their files (hand-made result, no search)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import yaml


class _Fit:
    def as_metrics(self, prefix: str = "predictor.") -> dict[str, float]:
        return {f"{prefix}kendall_tau": 0.61}


def test_track_stage_logs_history_and_records(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from nasq.experiment import load_experiment
    from nasq.search.pareto import Front, FrontPoint
    from nasq.stages import track

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
