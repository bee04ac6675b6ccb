"""Stage 7, export: the configured pick of the front as a checked deployment bundle in
``<workdir>/export`` (see :mod:`nasq.export.checks`); and ``nasq export RUN`` on a finished run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nasq import data as data_mod
from nasq.experiment import Experiment, remove_own_folder
from nasq.export.bundle import HASHED_FILES, MANIFEST_JSON, ExportResult
from nasq.export.checks import calibrated_subnet, export_checked
from nasq.search.pareto import Front
from nasq.stages.runs import FinishedRun
from nasq.supernet import checkpoint
from nasq.supernet.network import Supernet
from nasq.tracking import client as tracking

EXPORT_DIR = "export"


@dataclass
class ExportUpstream:
    net: Supernet
    front: Front
    splits: data_mod.Splits


def run(exp: Experiment, upstream: ExportUpstream, workdir: Path) -> ExportResult:
    """Export the configured pick to ``<workdir>/export`` and check it in onnxruntime on the
    validation images the search used and on the test split."""
    front = upstream.front
    i = front.pick(exp.config.export.pick)
    point = front.points[i]
    model = calibrated_subnet(upstream.net, point.spec, upstream.splits.train_x, exp.config.evaluate)
    out = workdir / EXPORT_DIR
    remove_own_folder(out, (*HASHED_FILES, MANIFEST_JSON))  # a previous run's bundle, nothing else
    result, _ = export_checked(model, spec=point.spec, space=exp.space, out=out, splits=upstream.splits,
                               ecfg=exp.config.evaluate, predicted=point.predicted,
                               measured={**point.measured, "point": float(i)}, lineage=exp.lineage(),
                               opset=exp.config.export.opset)
    return result


def from_run(run: FinishedRun, index: int, out: Path, register: str | None = None) -> tuple[ExportResult, dict]:
    """``nasq export``: rebuild the run's supernet, export point ``index``, check it, and with
    ``register`` log and register it in the MLflow Model Registry of the run's tracking URI."""
    cfg, space = run.experiment_config(), run.space()
    point = run.front.points[index]
    splits = data_mod.load(cfg.data, run.name)
    # a folder downloaded from MLflow holds the weights without supernet.json
    net, _ = checkpoint.load(run.folder, space, require_record=False)
    model = calibrated_subnet(net, point.spec, splits.train_x, cfg.evaluate)

    def register_bundle(bundle: Path) -> dict[str, Any]:
        version = tracking.register_onnx(run.uri, run.run_id, bundle, register, index)
        return {"name": register, "version": version, "tracking_uri": run.uri, "search_run_id": run.run_id}

    return export_checked(model, spec=point.spec, space=space, out=out, splits=splits, ecfg=cfg.evaluate,
                          predicted=point.predicted, measured={**point.measured, "point": float(index)},
                          lineage=run.record.get("lineage", run.front.lineage), opset=cfg.export.opset,
                          before_publish=register_bundle if register else None)
