"""Stage 7, export: the configured pick of the front as a checked deployment bundle in
``<workdir>/export`` (see :mod:`nasq.export.checks`); and ``nasq export RUN`` on a finished run."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nasq import data as data_mod
from nasq.errors import ConfigError
from nasq.experiment import Experiment, remove_own_folder, resolve
from nasq.export.bundle import (
    HASHED_FILES,
    MANIFEST_JSON,
    NORMALISATION_ATTR,
    REFINE_ATTR,
    ExportResult,
    layer_formats,
)
from nasq.export.checks import calibrated_subnet, export_checked
from nasq.export.refine import NoQuantizedLayerError, refine_subnet
from nasq.hardware import HardwareProfile
from nasq.profiling.backend import get_backend
from nasq.search.pareto import Front
from nasq.stages.runs import FinishedRun
from nasq.supernet import checkpoint
from nasq.supernet.evaluate import accuracy, calibration_batches
from nasq.supernet.network import Supernet
from nasq.tracking import client as tracking

EXPORT_DIR = "export"
TOP1_BATCH = 500  # images per runtime call when measuring a target's top-1


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
    setattr(model, NORMALISATION_ATTR, upstream.splits.normalisation())
    refine(model, exp.config.export.refine, upstream.splits, exp.config.evaluate, exp.source, "export.refine")
    out = workdir / EXPORT_DIR
    remove_own_folder(out, (*HASHED_FILES, MANIFEST_JSON))  # a previous run's bundle, nothing else
    targets = measure_targets(model, exp.profiles, upstream.splits, exp.config.evaluate)
    result, _ = export_checked(model, spec=point.spec, space=exp.space, out=out, splits=upstream.splits,
                               ecfg=exp.config.evaluate, predicted=point.predicted,
                               measured={**point.measured, **targets, "point": float(i)}, lineage=exp.lineage(),
                               opset=exp.config.export.opset, int8_weights=exp.config.export.int8_weights)
    return result


def run_profiles(names: tuple[str, ...], folder: Path) -> list[Any]:
    """The run's hardware profiles that can still be found from here (catalog names resolve as the
    experiment did; a profile that has gone is skipped: the export still checks onnxruntime)."""
    found = []
    for i, name in enumerate(names):
        try:
            found.append(HardwareProfile.from_yaml(resolve("hardware", name, folder, str(folder), f"hardware[{i}]")))
        except ConfigError:
            continue
    return found


def measure_targets(model: Any, profiles: list[Any], splits: data_mod.Splits, ecfg: Any,
                    warmup: int = 10, repeats: int = 50) -> dict[str, float]:
    """The exported ``model`` on every measured target's own runtime (its backend, its threads,
    default options): ``latency_ms@<profile>`` (median, batch 1) and ``top1_val@<profile>`` on
    the validation images the search measured (modelled profiles have no runtime to run it);
    and for every target ``emulated_layers@<profile>``, its layers in formats that target
    only emulates."""
    layers = layer_formats(model)
    # how many of the exported layers each target only emulates (a format it has no kernel for)
    measured: dict[str, float] = {f"emulated_layers@{p.name}": float(sum(
        row["w_format"] in p.emulated or row["a_format"] in p.emulated for row in layers)) for p in profiles}
    n_val = min(ecfg.val_images or len(splits.val_y), len(splits.val_y))
    x_val, y_val = np.ascontiguousarray(splits.val_x[:n_val], np.float32), splits.val_y[:n_val]
    with tempfile.TemporaryDirectory(prefix="nasq-targets-") as tmp:
        for profile in profiles:
            cfg = profile.config
            if cfg.backend == "roofline":
                continue
            backend = get_backend(cfg.backend, threads=cfg.threads)
            if not backend.whole_models:
                continue
            path = Path(tmp) / f"{profile.name}.onnx"
            backend.lower(model, torch.from_numpy(x_val[:1]), path)  # as its latency table was measured
            handle = backend.load_model(path)
            times = backend.time_model_ms(handle, x_val[:1], warmup, repeats)
            measured[f"latency_ms@{profile.name}"] = float(np.median(times))
            correct = sum(int((backend.run_model(handle, x_val[lo:lo + TOP1_BATCH]).argmax(1)
                               == y_val[lo:lo + TOP1_BATCH]).sum()) for lo in range(0, n_val, TOP1_BATCH))
            measured[f"top1_val@{profile.name}"] = 100.0 * correct / max(1, n_val)
    return measured


def refine(model: Any, kind: str, splits: data_mod.Splits, ecfg: Any, source: str, field: str) -> dict | None:
    """Refine ``model`` in place with ``kind`` (``nasq.export.refine``; "none": nothing) on the
    images its calibration used, measuring top-1 before and after on the validation images the
    search measured; the report travels with the model into manifest.json ("refine"). A subnet
    without a quantized layer is ``source``'s error at ``field``."""
    if kind == "none":
        return None
    n_val = min(ecfg.val_images or len(splits.val_y), len(splits.val_y))
    x_val, y_val = np.ascontiguousarray(splits.val_x[:n_val], np.float32), splits.val_y[:n_val]
    before = accuracy(model, x_val, y_val, ecfg.batch_size)
    calib = calibration_batches(splits.train_x, ecfg.calib_images, ecfg.batch_size, ecfg.seed)
    try:
        report = refine_subnet(model, calib, kind, seed=ecfg.seed)
    except NoQuantizedLayerError as e:
        raise ConfigError(source, field, f"'{kind}': {e}") from None
    after = accuracy(model, x_val, y_val, ecfg.batch_size)
    summary = {**report.to_dict(), "top1_before": before, "top1_after": after, "val_images": n_val,
               "calib_images": sum(len(b) for b in calib)}
    setattr(model, REFINE_ATTR, summary)
    return summary


def from_run(run: FinishedRun, index: int, out: Path, register: str | None = None,
             refine_kind: str | None = None, int8_weights: str | None = None) -> tuple[ExportResult, dict]:
    """``nasq export``: rebuild the run's supernet, export point ``index``, check it, and with
    ``register`` log and register it in the MLflow Model Registry of the run's tracking URI.
    ``refine_kind`` (``--refine``) overrides the run's ``export.refine``, ``int8_weights``
    (``--int8-weights``) its ``export.int8_weights``."""
    cfg, space = run.experiment_config(), run.space()
    point = run.front.points[index]
    splits = data_mod.load(cfg.data, run.name, space.config)
    # a folder downloaded from MLflow holds the weights without supernet.json
    net, _ = checkpoint.load(run.folder, space, require_record=False)
    model = calibrated_subnet(net, point.spec, splits.train_x, cfg.evaluate)
    setattr(model, NORMALISATION_ATTR, splits.normalisation())
    if refine_kind is None:
        refine(model, cfg.export.refine, splits, cfg.evaluate, f"{run.name}: experiment", "export.refine")
    else:
        refine(model, refine_kind, splits, cfg.evaluate, "command line", "--refine")

    def register_bundle(bundle: Path) -> dict[str, Any]:
        version = tracking.register_onnx(run.uri, run.run_id, bundle, register, index)
        return {"name": register, "version": version, "tracking_uri": run.uri, "search_run_id": run.run_id}

    targets = measure_targets(model, run_profiles(cfg.hardware, run.folder), splits, cfg.evaluate)
    return export_checked(model, spec=point.spec, space=space, out=out, splits=splits, ecfg=cfg.evaluate,
                          predicted=point.predicted, measured={**point.measured, **targets, "point": float(index)},
                          lineage=run.record.get("lineage", run.front.lineage), opset=cfg.export.opset,
                          int8_weights=int8_weights or cfg.export.int8_weights, before_publish=register_bundle if register else None)
