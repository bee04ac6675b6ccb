"""Per-layer and whole-model latency in OpenVINO on this CPU (the CPU plugin).

Each key is built and exported exactly as for onnxruntime (:mod:`nasq.profiling.layer_models`,
:func:`nasq.export.bundle.export_onnx`), read by ``openvino.Core().read_model`` and compiled for
the CPU with ``threads`` inference threads, the latency performance hint and f32 inference
precision (see :data:`INFERENCE_PRECISION`); then timed with one ``InferRequest`` whose input
tensor is set once, in interleaved rounds (see :class:`~nasq.profiling.backend.LatencyBackend`).
``runtime_ops`` is the executed graph (``compiled.get_runtime_model()``): each node's layer type
and the precision it ran in, e.g. ``FakeQuantize(f32)>Reorder(u8)>Convolution(u8)``, so a row
shows whether an integer kernel ran. Models are compiled for a static input shape (the export's
batch axis is dynamic): the CPU plugin runs static shapes faster, as a deployment would.

openvino is imported inside the functions that need it, never at ``import nasq``. Telemetry:
OpenVINO's runtime sends none; only its model-conversion tool (``openvino.convert_model``/``ovc``)
calls openvino_telemetry, opt-in, and this backend never calls it (it reads ONNX with
``Core.read_model``).
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx
import torch

from nasq.errors import MissingDependencyError, NasqError
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
from nasq.profiling.onnxruntime_backend import CPU_ONNX_NATIVE

DEVICE = "CPU"
# The CPU plugin's default inference precision is bf16 wherever the CPU has bf16 instructions
# (AVX512_BF16 or AMX, as this EPYC has): it would time and check nasq's fp32 layers as bf16
# (|diff| ~5e-3 on a whole subnet instead of ~1e-7). Integer layers run their int8 kernels either way.
INFERENCE_PRECISION = "f32"
# Graph plumbing in the runtime model, not executed work: left out of runtime_ops.
_PLUMBING = frozenset({"Input", "Output", "Parameter", "Result", "Const", "Constant"})


def _openvino() -> Any:
    try:
        import openvino
    except ImportError as e:
        raise MissingDependencyError(f"the openvino backend needs OpenVINO ({e.name} is missing): "
                                     "pip install openvino") from None
    return openvino


@dataclass
class OvModel:
    """A model read by OpenVINO and its compiled forms, one (compiled model, infer request) per
    input shape, compiled on first use of that shape."""

    model: Any
    compiled: dict[tuple[int, ...], tuple[Any, Any]] = field(default_factory=dict)


def time_request_us(request: Any, warmup: int, repeats: int) -> np.ndarray:
    """Wall time of each of ``repeats`` ``infer()`` calls on the request's already-set input
    (after ``warmup`` untimed ones), microseconds. Setting the input once keeps the copy of the
    input array out of the timed call, as onnxruntime's timing keeps the feed dict out."""
    for _ in range(warmup):
        request.infer()
    times = np.empty(repeats, dtype=np.float64)
    for i in range(repeats):
        t0 = time.perf_counter_ns()
        request.infer()
        times[i] = time.perf_counter_ns() - t0
    return times / 1e3


def runtime_ops(compiled: Any) -> str:
    """The executed nodes in order with the precision each ran in, e.g. ``Convolution(u8)``."""
    ops = []
    for node in compiled.get_runtime_model().get_ordered_ops():
        info = node.get_rt_info()
        layer = info["layerType"].astype(str) if "layerType" in info else node.get_type_name()
        if layer in _PLUMBING:
            continue
        precision = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else "?"
        ops.append(f"{layer}({precision})")
    return ">".join(ops)


class OpenVinoBackend(LatencyBackend):
    name = "openvino"
    # The same ONNX exports as onnxruntime reads: the same storage types are native.
    # no FLOAT8 activation tensors; int8 weights as INT8 codes: OpenVINO's low-precision pass runs
    # int8 convolutions on symmetric weights only (UINT8 codes with zero point 128 ran in f32)
    export_options: ClassVar[dict[str, Any]] = {"fp8_activation_qdq": False, "int8_weights": "int8"}
    native_formats = CPU_ONNX_NATIVE
    emulated_formats = emulated_rest(CPU_ONNX_NATIVE)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._core: Any = None

    def check_available(self) -> None:
        """Raises MissingDependencyError (pip install openvino) if OpenVINO is not installed, and
        NasqError if its CPU plugin is missing."""
        core = self.core()
        if DEVICE not in core.available_devices:
            raise NasqError(f"OpenVINO sees no {DEVICE} device (available: {', '.join(core.available_devices) or 'none'})")

    def core(self) -> Any:
        """One ``openvino.Core`` per backend (it caches plugins)."""
        if self._core is None:
            self._core = _openvino().Core()
        return self._core

    def config(self) -> dict[str, Any]:
        """compile_model options: threads, latency hint, f32 (see INFERENCE_PRECISION)."""
        import openvino.properties as props
        import openvino.properties.hint as hints

        return {props.inference_num_threads(): self.threads,
                hints.performance_mode(): hints.PerformanceMode.LATENCY,
                hints.inference_precision(): INFERENCE_PRECISION}

    # ------------------------------------------------------------ single layers
    def _prepare(self, key: LayerKey) -> Prepared | Row:
        with tempfile.TemporaryDirectory(prefix="nasq-profile-") as tmp:
            path = Path(tmp) / "layer.onnx"
            x = self._lower_layer(key, path)
            if isinstance(x, Row):
                return x
            try:
                compiled, request = self._compiled(OvModel(self.core().read_model(str(path))), x.numpy())
                time_request_us(request, 1, 1)  # fails here, not mid-measurement, if it cannot run
            except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError and its own types
                return Row.unsupported(f"openvino failed: {first_line(e)}")
            return Prepared(request, runtime_ops(compiled))

    def _time_us(self, handle: Any, warmup: int, repeats: int) -> np.ndarray:
        return time_request_us(handle, warmup, repeats)

    # ------------------------------------------------------------ whole models
    def load_model(self, onnx_path: str | os.PathLike) -> OvModel:
        """The model as read (in memory: the file may be deleted afterwards); compiled per input
        shape by :meth:`run_model` / :meth:`time_model_ms`."""
        self.check_available()
        if not Path(onnx_path).is_file():
            raise NasqError(f"{onnx_path}: file not found")
        try:
            return OvModel(self.core().read_model(str(onnx_path)))
        except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError and its own types
            raise NasqError(f"{onnx_path}: OpenVINO could not read it: {first_line(e)}") from e

    def run_model(self, handle: OvModel, x: np.ndarray) -> np.ndarray:
        _, request = self._compiled(handle, x)
        request.infer()
        return np.array(request.get_output_tensor(0).data, copy=True)

    def time_model_ms(self, handle: OvModel, x: np.ndarray, warmup: int, repeats: int) -> np.ndarray:
        _, request = self._compiled(handle, x)
        return time_request_us(request, warmup, repeats) / 1e3

    def _compiled(self, handle: OvModel, x: np.ndarray) -> tuple[Any, Any]:
        """The model compiled for ``x``'s shape, with ``x`` set as its request's input."""
        ov = _openvino()
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.shape not in handle.compiled:
            model = handle.model.clone()
            model.reshape(list(x.shape))
            compiled = self.core().compile_model(model, DEVICE, self.config())
            handle.compiled[x.shape] = (compiled, compiled.create_infer_request())
        compiled, request = handle.compiled[x.shape]
        request.set_input_tensor(ov.Tensor(x))  # copied: the caller's array may change
        return compiled, request

    # ------------------------------------------------------------ description
    def session_overhead_us(self) -> float:
        """Median time of one ``infer()`` of a one-node (Identity) model: the fixed cost every
        isolated layer measurement includes once and a whole subnet pays once in total."""
        with tempfile.TemporaryDirectory(prefix="nasq-profile-") as tmp:
            handle = self.load_model(write_identity_model(Path(tmp) / "identity.onnx"))
        _, request = self._compiled(handle, np.zeros((1, 1), dtype=np.float32))
        return float(np.median(time_request_us(request, self.warmup, max(self.repeats, 100))))

    def settings(self) -> dict[str, str]:
        """The compile options used, and the plugin's own precision default on this CPU."""
        default = self.core().get_property(DEVICE, "INFERENCE_PRECISION_HINT")  # an openvino.Type
        default = default.to_string() if hasattr(default, "to_string") else str(default)
        return {"INFERENCE_PRECISION_HINT": f"{INFERENCE_PRECISION} (CPU plugin default here: {default})",
                "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": str(self.threads)}

    def describe(self) -> dict[str, Any]:
        self.check_available()
        ov = _openvino()
        versions = {"openvino": ov.get_version().split("-")[0], "onnx": onnx.__version__,
                    "torch": torch.__version__, "python": platform.python_version()}
        return {"device": f"{cpu_model()} (CPU, {self.threads} thread{'s' if self.threads > 1 else ''})",
                "versions": versions, "session_overhead_us": round(self.session_overhead_us(), 3),
                "settings": self.settings()}
