"""The runtime-backend contract, its registry, and the timing summary every backend shares.

A backend is one runtime on one device (onnxruntime or OpenVINO on this CPU, torch on a GPU). It
declares which formats it computes natively (``native_formats``: kernels working in that format)
and which only through float emulation (``emulated_formats``: dequantized or rounded in float
before a float kernel, however compactly the weights are stored), and fills two groups of hooks:

* single layers: :meth:`LatencyBackend.measure` owns the loop (dedupe, order, interleaved rounds,
  progress bar, one row per key, failures recorded instead of raised); subclasses fill
  :meth:`LatencyBackend._prepare` (build one layer) and :meth:`LatencyBackend._time_us` (time it);
* whole exported models: :meth:`LatencyBackend.load_model`, :meth:`LatencyBackend.run_model` and
  :meth:`LatencyBackend.time_model_ms`, on which the base class builds :meth:`LatencyBackend.check`
  (fidelity against reference logits) and nasq.profiling.measure times whole subnets.

Backends are registered by import path, so listing them imports no runtime.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from nasq.errors import NasqError
from nasq.formats import FORMATS
from nasq.hardware.keys import LayerKey
from nasq.hardware.table import Row
from nasq.registry import Registry

BACKENDS: Registry[str] = Registry("latency backend")
BACKENDS.add("onnxruntime", "nasq.profiling.onnxruntime_backend:OnnxRuntimeBackend")
BACKENDS.add("openvino", "nasq.profiling.openvino_backend:OpenVinoBackend")
BACKENDS.add("torch-cuda", "nasq.profiling.torch_cuda_backend:TorchCudaBackend")


def emulated_rest(native: frozenset[str]) -> frozenset[str]:
    """Every registered format a backend does not run natively: it runs them as float emulation.
    Derived, not listed, so that a newly registered format is declared emulated everywhere until
    a backend claims it (the contract suite checks native | emulated == all formats)."""
    return frozenset(FORMATS.names()) - native


def write_identity_model(path: Path) -> Path:
    """A one-node (Identity, 1x1 float) ONNX model at ``path``: timing it gives a runtime's fixed
    cost per call, which every isolated layer measurement includes once."""
    import onnx

    h = onnx.helper
    graph = h.make_graph([h.make_node("Identity", ["x"], ["y"])], "overhead",
                         [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 1])])
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), str(path))
    return path


def first_line(err: BaseException) -> str:
    """An exception as one short line (type and first line of its message), for table rows."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def summarize_us(samples_us: np.ndarray | list[float], runtime_ops: str = "") -> Row:
    """Median and 10th/90th percentiles of per-run times in microseconds."""
    us = np.asarray(samples_us, dtype=np.float64)
    p10, median, p90 = np.percentile(us, [10, 50, 90])
    return Row("supported", float(median), float(p10), float(p90), int(us.size), "", runtime_ops)


@dataclass
class Prepared:
    """A layer ready to run: ``handle`` is whatever the backend times (a session, a closure);
    ``runtime_ops`` and ``note`` go into the table row."""

    handle: Any
    runtime_ops: str = ""
    note: str = ""


def round_sizes(repeats: int, rounds: int) -> list[int]:
    """``repeats`` timed runs split over ``rounds`` passes (never an empty pass)."""
    rounds = max(1, min(rounds, repeats))
    return [repeats // rounds + (i < repeats % rounds) for i in range(rounds)]


class LatencyBackend(abc.ABC):
    """Times single layers on one runtime.

    :meth:`measure` first prepares every layer (build, export, load), then times them in
    ``rounds`` interleaved passes, each layer getting ``warmup`` untimed and its share of the
    ``repeats`` timed runs per pass. Interleaving spreads every row's samples over the whole
    measuring period, so a slow spell of a shared machine shifts all rows alike instead of a few.
    """

    name: str = ""
    #: Formats the runtime executes with real storage types and kernels (after nasq's lowering).
    native_formats: frozenset[str] = frozenset()
    #: The other registered formats: they run, but as float arithmetic that mimics their rounding.
    emulated_formats: frozenset[str] = frozenset()
    #: False for a backend that times single layers only and cannot load an exported model
    #: (its :meth:`load_model` raises NasqError); whole-subnet fits then need --fit-subnets 0.
    whole_models: bool = True
    #: Keyword arguments of nasq.export.bundle.export_onnx that this runtime's lowering needs
    #: (OpenVINO's CPU plugin, for one, refuses FLOAT8 activation tensors).
    export_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, threads: int = 1, warmup: int = 5, repeats: int = 30, rounds: int = 3, seed: int = 0):
        if threads < 1 or warmup < 0 or repeats < 1 or rounds < 1:
            raise ValueError(f"need threads, repeats, rounds >= 1 and warmup >= 0; got {threads}, {repeats}, {rounds}, {warmup}")
        self.threads, self.warmup, self.repeats, self.rounds, self.seed = threads, warmup, repeats, rounds, seed

    def int8_weight_storage(self) -> str | None:
        """How the integer kernels this backend times store their int8 weights (``int8`` or
        ``uint8``, :func:`nasq.export.lower.int8_weight_type` on this host), or None for a backend
        that does not lower to ONNX. Recorded in measurement.json: the two storages run different
        kernels, so a table timed with one does not describe an export with the other."""
        from nasq.export.lower import int8_weight_type

        return int8_weight_type(self.export_options.get("int8_weights", "auto"))

    def lower(self, module: Any, example: Any, path: str | os.PathLike) -> None:
        """Write ``module`` (a static subnet or one measured layer) to ``path`` as the ONNX model
        this runtime runs: nasq's lowering with :attr:`export_options`. Layers timed, subnets
        fitted and models checked all go through here, so they are lowered alike."""
        from nasq.export.bundle import export_onnx

        export_onnx(module, example, path, **self.export_options)

    def _lower_layer(self, key: LayerKey, path: str | os.PathLike) -> Any:
        """Build ``key``'s layer (:mod:`nasq.profiling.layer_models`, weights from ``seed``) and
        :meth:`lower` it to ``path``. Returns its example input (a torch tensor), or an
        unsupported Row with the reason when nasq never exports such a layer or the export fails."""
        import torch

        from nasq.profiling.layer_models import UnsupportedLayer, example_input, layer_module

        try:
            module, x = layer_module(key, self.seed), example_input(key, torch.Generator().manual_seed(self.seed))
            self.lower(module, x, path)
        except UnsupportedLayer as e:
            return Row.unsupported(str(e))
        except Exception as e:  # noqa: BLE001 - any exporter failure is recorded as the row's reason
            return Row.unsupported(f"export failed: {first_line(e)}")
        return x

    @abc.abstractmethod
    def check_available(self) -> None:
        """Called once by :meth:`measure` before any layer; raises NasqError if the runtime
        (or its device) is missing."""

    def measure(self, keys: Iterable[LayerKey], progress: Any = None) -> dict[LayerKey, Row]:
        """One row per distinct key, in sorted order. ``progress`` is an optional
        ``rich.progress.Progress``; it gets a task for preparing and one for timing."""
        todo = sorted(set(keys))
        self.check_available()
        rows: dict[LayerKey, Row] = {}
        ready: dict[LayerKey, Prepared] = {}
        for key in _track(progress, todo, f"{self.name}: build {len(todo)} layers"):
            got = self._prepare(key)
            if isinstance(got, Row):
                rows[key] = got
            else:
                ready[key] = got
        samples: dict[LayerKey, list[np.ndarray]] = {k: [] for k in ready}
        passes = [(n, k) for n in round_sizes(self.repeats, self.rounds) for k in ready]
        for n, key in _track(progress, passes, f"{self.name}: time {len(ready)} layers x {self.rounds} rounds"):
            samples[key].append(self._time_us(ready[key].handle, self.warmup, n))
        for key, prep in ready.items():
            row = summarize_us(np.concatenate(samples[key]), prep.runtime_ops)
            rows[key] = dataclasses.replace(row, reason=prep.note)
        return dict(sorted(rows.items()))

    @abc.abstractmethod
    def _prepare(self, key: LayerKey) -> Prepared | Row:
        """Called once per distinct key, after :meth:`check_available`: build the layer and
        load it into the runtime. Returns ``Row.unsupported(reason)`` when the runtime cannot
        build or run it; raises only for errors that make every further measurement pointless."""

    @abc.abstractmethod
    def _time_us(self, handle: Any, warmup: int, repeats: int) -> np.ndarray:
        """Called once per key and round with a handle from :meth:`_prepare`: ``warmup``
        untimed runs, then the time of each of ``repeats`` runs in microseconds."""

    def describe(self) -> dict[str, Any]:
        """Device and library versions for the profile's ``measured_on``; subclasses extend it.
        An optional ``settings`` dict (runtime options that change results) goes into the
        profile's description."""
        return {"device": "unknown", "versions": {}, "session_overhead_us": None}

    # ------------------------------------------------------------ whole exported models
    @abc.abstractmethod
    def load_model(self, onnx_path: str | os.PathLike) -> Any:
        """Load an ONNX export (nasq.export.bundle.export_onnx) into the runtime with its default
        options and ``self.threads`` threads; returns a handle for :meth:`run_model` and
        :meth:`time_model_ms`. Raises NasqError if the runtime cannot load it."""

    @abc.abstractmethod
    def run_model(self, handle: Any, x: np.ndarray) -> np.ndarray:
        """The model's output (logits) for the float32 batch ``x``."""

    @abc.abstractmethod
    def time_model_ms(self, handle: Any, x: np.ndarray, warmup: int, repeats: int) -> np.ndarray:
        """``warmup`` untimed runs on ``x``, then the time of each of ``repeats`` runs in ms."""

    def check(self, onnx_path: str | os.PathLike, sample: np.ndarray, reference_logits: np.ndarray) -> dict[str, Any]:
        """Run the export on ``sample`` (N, ...) and compare with ``reference_logits`` (N, classes),
        e.g. the torch module's: ``max_abs_diff`` and ``top1_agreement`` (fraction of argmaxes
        that agree), with the runtime's options as :meth:`load_model` sets them."""
        x = np.ascontiguousarray(sample, dtype=np.float32)
        want = np.asarray(reference_logits, dtype=np.float32)
        if want.ndim != 2 or len(x) != len(want) or len(x) == 0:
            raise NasqError(f"check: need a non-empty sample and (N, classes) reference logits for the same N, "
                            f"got sample {x.shape} and logits {want.shape}")
        got = np.asarray(self.run_model(self.load_model(onnx_path), x))
        if got.shape != want.shape:
            raise NasqError(f"{onnx_path}: {self.name} returned logits of shape {got.shape}, "
                            f"the reference has {want.shape}")
        return {"backend": self.name, "max_abs_diff": float(np.max(np.abs(got - want))),
                "top1_agreement": float(np.mean(got.argmax(1) == want.argmax(1))), "samples": len(x)}


def _track(progress: Any, items: list, label: str) -> Iterable:
    if progress is None:
        yield from items
        return
    task = progress.add_task(label, total=len(items))
    for item in items:
        yield item
        progress.advance(task)


def get_backend(name: str, **kwargs: Any) -> LatencyBackend:
    module, _, cls = BACKENDS.get(name).partition(":")
    return getattr(importlib.import_module(module), cls)(**kwargs)
