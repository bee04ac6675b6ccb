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
from nasq.export.bundle import (
    INPUT_NAME,
    MANIFEST_JSON,
    MODEL_ONNX,
    OUTPUT_NAME,
    export_bundle,
    ort_session,
)
from nasq.files import sha256_file
from nasq.supernet.evaluate import calibration_batches

ONNX_BATCH = 1000


def calibrated_subnet(net: Any, spec: Any, train_x: np.ndarray, ecfg: Any) -> Any:
    """The static subnet of ``spec``, calibrated on the images the search's evaluation used."""
    net.set_active(spec)
    net.calibrate(calibration_batches(train_x, ecfg.calib_images, ecfg.batch_size, ecfg.seed))
    return net.extract()


def onnx_top1(onnx_path: Path, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 (percent) of an exported model in onnxruntime, with the bundle's session settings."""
    session = ort_session(onnx_path)
    correct = 0
    for lo in range(0, len(y), ONNX_BATCH):
        logits = session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x[lo:lo + ONNX_BATCH], np.float32)})[0]
        correct += int((logits.argmax(1) == y[lo:lo + ONNX_BATCH]).sum())
    return 100.0 * correct / max(1, len(y))


def export_checked(model: Any, *, spec: Any, space: Any, out: Path, splits: Any, ecfg: Any,
                   predicted: dict[str, float], measured: dict[str, float], lineage: dict[str, str],
                   opset: int, before_publish: Callable[[Path], dict[str, Any]] | None = None,
                   int8_weights: str = "auto") -> Any:
    """Write, check and publish the bundle of ``model`` at ``out`` (see the module docstring).
    ``before_publish(bundle)`` runs on the finished bundle before the rename (e.g. to register it);
    what it returns is added to the manifest's ``registry`` section."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise NasqError(f"{out}: exists and is not an empty folder; remove it or pick another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.check-"))
    try:
        bundle = tmp / "bundle"
        res = export_bundle(model, spec=spec, space=space, out_dir=bundle, sample_input=splits.test_x[:256],
                            predicted=predicted, measured=measured, lineage=lineage, opset=opset,
                            int8_weights=int8_weights)
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
