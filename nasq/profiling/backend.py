"""The latency-backend contract, its registry, and the timing summary every backend shares.

:meth:`LatencyBackend.measure` owns the loop (dedupe, order, interleaved rounds, progress bar,
one row per key, failures recorded instead of raised); subclasses fill two hooks,
:meth:`LatencyBackend._prepare` (build one layer) and :meth:`LatencyBackend._time_us` (time it).
Backends are registered by import path, so listing them imports neither torch nor onnxruntime.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from nasq.hardware.keys import LayerKey
from nasq.hardware.table import Row
from nasq.registry import Registry

BACKENDS: Registry[str] = Registry("latency backend")
BACKENDS.add("onnxruntime", "nasq.profiling.onnxruntime_backend:OnnxRuntimeBackend")
BACKENDS.add("torch-cuda", "nasq.profiling.torch_cuda_backend:TorchCudaBackend")


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

    def __init__(self, threads: int = 1, warmup: int = 5, repeats: int = 30, rounds: int = 3, seed: int = 0):
        if threads < 1 or warmup < 0 or repeats < 1 or rounds < 1:
            raise ValueError(f"need threads, repeats, rounds >= 1 and warmup >= 0; got {threads}, {repeats}, {rounds}, {warmup}")
        self.threads, self.warmup, self.repeats, self.rounds, self.seed = threads, warmup, repeats, rounds, seed

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
        """Device and library versions for the profile's ``measured_on``; subclasses extend it."""
        return {"device": "unknown", "versions": {}, "session_overhead_us": None}


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
