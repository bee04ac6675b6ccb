"""Export one point of a front and check the bundle against what the search said about it.

Used by the pipeline's export stage and by ``nasq export RUN``: the point's subnet is extracted
from the supernet and calibrated exactly as the search evaluated it (same calibration images),
written with :func:`nasq.export.export_bundle`, then the ONNX model is run in onnxruntime on the
validation images the search measured top-1 on and on the test split. Those top-1 values and the
measured latency go into ``manifest.json`` beside the search's predictions. The bundle is built
in a hidden sibling folder and renamed onto ``--out`` only when everything (registration
included) succeeded.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from nasq.errors import NasqError
from nasq.files import sha256_file

ONNX_BATCH = 1000


def calibrated_subnet(net: Any, spec: Any, train_x: np.ndarray, ecfg: Any) -> Any:
    """The static subnet of ``spec``, calibrated on the images the search's evaluation used."""
    from nasq.supernet.evaluate import calibration_batches

    net.set_active(spec)
    net.calibrate(calibration_batches(train_x, ecfg.calib_images, ecfg.batch_size, ecfg.seed))
    return net.extract()


def onnx_top1(onnx_path: Path, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 (percent) of an exported model in onnxruntime, with the bundle's session settings."""
    import onnxruntime as ort

    from nasq.export.bundle import INPUT_NAME, ORT_DISABLED_OPTIMIZERS, OUTPUT_NAME

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"],
                                   disabled_optimizers=list(ORT_DISABLED_OPTIMIZERS))
    correct = 0
    for lo in range(0, len(y), ONNX_BATCH):
        logits = session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x[lo:lo + ONNX_BATCH], np.float32)})[0]
        correct += int((logits.argmax(1) == y[lo:lo + ONNX_BATCH]).sum())
    return 100.0 * correct / max(1, len(y))


def export_checked(model: Any, *, spec: Any, space: Any, out: Path, splits: Any, ecfg: Any,
                   predicted: dict[str, float], measured: dict[str, float], lineage: dict[str, str],
                   opset: int, before_publish: Callable[[Path], dict[str, Any]] | None = None) -> Any:
    """Write, check and publish the bundle of ``model`` at ``out`` (see the module docstring).
    ``before_publish(bundle)`` runs on the finished bundle before the rename (e.g. to register it);
    what it returns is added to the manifest's ``registry`` section."""
    from nasq.export.bundle import MANIFEST_JSON, MODEL_ONNX, export_bundle

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise NasqError(f"{out}: exists and is not an empty folder; remove it or pick another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.check-"))
    try:
        bundle = tmp / "bundle"
        res = export_bundle(model, spec=spec, space=space, out_dir=bundle, sample_input=splits.test_x[:256],
                            predicted=predicted, measured=measured, lineage=lineage, opset=opset)
        n_val = ecfg.val_images or len(splits.val_y)
        checks = {"onnx_top1_val": onnx_top1(bundle / MODEL_ONNX, splits.val_x[:n_val], splits.val_y[:n_val]),
                  "onnx_val_images": float(min(n_val, len(splits.val_y))),
                  "onnx_top1_test": onnx_top1(bundle / MODEL_ONNX, splits.test_x, splits.test_y),
                  "onnx_test_images": float(len(splits.test_y))}
        manifest = json.loads((bundle / MANIFEST_JSON).read_text())
        manifest["measured"].update(checks)
        if before_publish is not None:
            manifest["registry"] = before_publish(bundle)
        # the folder is published by one rename below, so a plain write is enough here
        (bundle / MANIFEST_JSON).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        files = {**res.files, MANIFEST_JSON: sha256_file(bundle / MANIFEST_JSON)}
        os.replace(bundle, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return replace(res, out_dir=out, files=files), manifest


def load_supernet(space: Any, weights: Path) -> Any:
    """The supernet of ``space`` with the trained weights of a run (safetensors, no pickle)."""
    import torch
    from safetensors.torch import load_file

    from nasq.supernet.network import Supernet

    with torch.random.fork_rng(devices=[]):  # initial weights are overwritten; keep the caller's RNG
        net = Supernet(space)
    try:
        net.load_state_dict(load_file(str(weights)))
    except (RuntimeError, OSError) as e:
        raise NasqError(f"{weights}: does not fit space {space.name} ({' '.join(str(e).split())[:200]})") from e
    return net.eval()


def export_from_run(run: Any, index: int, out: Path, register: str | None = None) -> tuple[Any, dict]:
    """``nasq export``: rebuild the run's supernet, export point ``index``, check it, and with
    ``register`` log and register it in the MLflow Model Registry of the run's tracking URI."""
    from nasq import data as data_mod

    cfg, space = run.experiment_config(), run.space()
    point = run.front.points[index]
    splits = data_mod.load(cfg.data, run.name)
    net = load_supernet(space, run.folder / "supernet.safetensors")
    model = calibrated_subnet(net, point.spec, splits.train_x, cfg.evaluate)

    def register_bundle(bundle: Path) -> dict[str, Any]:
        from nasq.tracking import client as tracking

        version = tracking.register_onnx(run.uri, run.run_id, bundle, register, index)
        return {"name": register, "version": version, "tracking_uri": run.uri, "search_run_id": run.run_id}

    return export_checked(model, spec=point.spec, space=space, out=out, splits=splits, ecfg=cfg.evaluate,
                          predicted=point.predicted, measured={**point.measured, "point": float(index)},
                          lineage=run.record.get("lineage", run.front.lineage), opset=cfg.export.opset,
                          before_publish=register_bundle if register else None)
