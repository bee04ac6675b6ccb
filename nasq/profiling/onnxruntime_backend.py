"""Per-layer latency in onnxruntime on this CPU.

Each key is built as the exporter builds that part of a static subnet (StaticQConv + BatchNorm2d
(+ ReLU6), see :mod:`nasq.profiling.layer_models`), exported with :func:`nasq.export.bundle.export_onnx`
(batch 1), loaded by :func:`nasq.export.bundle.ort_session` (the settings nasq's exports require,
full graph optimisation, ``threads`` intra-op threads) and timed with ``time.perf_counter_ns`` in
interleaved rounds (see :class:`~nasq.profiling.backend.LatencyBackend`).
The ops onnxruntime actually runs after optimisation are recorded per row. A layer that fails to
export or load is an ``unsupported`` row with the reason; nothing is estimated for it.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch

from nasq.errors import NasqError
from nasq.export.bundle import INPUT_NAME, ort_session
from nasq.hardware.host import cpu_model
from nasq.hardware.keys import LayerKey
from nasq.hardware.table import Row
from nasq.profiling.backend import (
    LatencyBackend,
    Prepared,
    emulated_rest,
    first_line,
    write_identity_model,
)


def time_session_us(session: Any, feed: dict[str, np.ndarray], warmup: int, repeats: int) -> np.ndarray:
    """Wall time of each of ``repeats`` runs (after ``warmup`` untimed ones), microseconds."""
    out = [o.name for o in session.get_outputs()]
    for _ in range(warmup):
        session.run(out, feed)
    times = np.empty(repeats, dtype=np.float64)
    for i in range(repeats):
        t0 = time.perf_counter_ns()
        session.run(out, feed)
        times[i] = time.perf_counter_ns() - t0
    return times / 1e3


def optimized_ops(path: str | Path) -> str:
    """The op types of an optimised graph in node order, e.g. ``Conv>Clip``."""
    return ">".join(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)


def _feed(session: Any, x: np.ndarray) -> dict[str, np.ndarray]:
    return {session.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)}


# Formats the CPU runtimes (onnxruntime's CPU provider, OpenVINO's CPU plugin) compute with
# kernels of their own: fp32, and int8 x int8 integer convolutions. int4 and fp8 weights are
# stored packed (INT4/FLOAT8 behind DequantizeLinear, nasq.export.lower.native_onnx_formats) but
# dequantized to float before a float kernel, and every other format is float arithmetic
# mimicking it: emulated, whatever the file stores.
CPU_ONNX_NATIVE = frozenset({"fp32", "int8"})


class OnnxRuntimeBackend(LatencyBackend):
    name = "onnxruntime"
    native_formats = CPU_ONNX_NATIVE
    emulated_formats = emulated_rest(CPU_ONNX_NATIVE)

    def check_available(self) -> None:
        """Nothing to check: onnx and onnxruntime are dependencies of nasq (imported above)."""

    def _prepare(self, key: LayerKey) -> Prepared | Row:
        with tempfile.TemporaryDirectory(prefix="nasq-profile-") as tmp:
            model_path, opt_path = Path(tmp) / "layer.onnx", Path(tmp) / "layer.opt.onnx"
            x = self._lower_layer(key, model_path)
            if isinstance(x, Row):
                return x
            try:
                session = ort_session(model_path, self.threads, optimized_to=opt_path)
                feed = {INPUT_NAME: x.numpy()}
                time_session_us(session, feed, 1, 1)  # fails here, not mid-measurement, if it cannot run
            except Exception as e:  # noqa: BLE001 - onnxruntime raises its own C++ exception types
                return Row.unsupported(f"onnxruntime failed: {first_line(e)}")
            return Prepared((session, feed), optimized_ops(opt_path))

    def _time_us(self, handle: Any, warmup: int, repeats: int) -> np.ndarray:
        session, feed = handle
        return time_session_us(session, feed, warmup, repeats)

    def load_model(self, onnx_path: str | os.PathLike) -> Any:
        """An onnxruntime session as nasq opens every one (:func:`nasq.export.bundle.ort_session`)."""
        try:
            return ort_session(onnx_path, self.threads)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own C++ exception types
            raise NasqError(f"{onnx_path}: onnxruntime could not load it: {first_line(e)}") from e

    def run_model(self, handle: Any, x: np.ndarray) -> np.ndarray:
        return handle.run(None, _feed(handle, x))[0]

    def time_model_ms(self, handle: Any, x: np.ndarray, warmup: int, repeats: int) -> np.ndarray:
        return time_session_us(handle, _feed(handle, x), warmup, repeats) / 1e3

    def session_overhead_us(self) -> float:
        """Median time of one ``session.run`` of a one-node (Identity) model: the fixed cost
        every isolated layer measurement includes once and a whole subnet pays once in total."""
        with tempfile.TemporaryDirectory(prefix="nasq-profile-") as tmp:
            session = ort_session(write_identity_model(Path(tmp) / "identity.onnx"), self.threads)
            feed = {"x": np.zeros((1, 1), dtype=np.float32)}
            return float(np.median(time_session_us(session, feed, self.warmup, max(self.repeats, 100))))

    def describe(self) -> dict[str, Any]:
        versions = {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__,
                    "torch": torch.__version__, "python": platform.python_version()}
        return {"device": f"{cpu_model()} (CPU, {self.threads} thread{'s' if self.threads > 1 else ''})",
                "versions": versions, "session_overhead_us": round(self.session_overhead_us(), 3)}
