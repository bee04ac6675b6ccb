"""Measuring a hardware profile (``nasq profile measure``) and whole exported subnets.

:func:`measure_profile` times every distinct layer of a space on one backend and writes, into
``hardware_profiles/<name>/``: ``latency.csv`` (the table), ``measurement.json`` (how, where, for
which spaces) and ``profile.yaml`` (``status: measured``, the backend, its threads and its native
and emulated formats), whose roofline parameters are derived from the same table so that
:class:`nasq.hardware.CostModel` can use the profile too (see :func:`derive_roofline`). Whole
subnets (the predictor's correction) are exported to ONNX and timed on the same backend through
its whole-model hooks (``load_model`` / ``time_model_ms``). Runtimes are imported by the backends.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from nasq.errors import ConfigError, NasqError
from nasq.experiment import resolve
from nasq.export.bundle import INPUT_NAME
from nasq.files import atomic_write_json, atomic_write_text
from nasq.formats import FORMATS, size_bits
from nasq.hardware import HardwareProfile, compute_format
from nasq.hardware.keys import LayerKey, space_keys
from nasq.hardware.table import LATENCY_CSV, MEASUREMENT_JSON, LatencyTable, MeasurementInfo, Row
from nasq.predict.latency import LATENCY_MODEL_JSON, LatencyPredictor
from nasq.profiling.backend import LatencyBackend, get_backend, round_sizes
from nasq.profiling.layer_models import static_subnet
from nasq.space import SearchSpace, SubnetSpec
from nasq.specs import ProfileConfig
from nasq.supernet.network import Supernet

PROFILE_YAML = "profile.yaml"
# Subnets for the shipped correction are drawn with this seed offset, so a benchmark that samples
# with the user's seed scores the correction on subnets it was not fitted on.
FIT_SEED_OFFSET = 1_000_003


# ---------------------------------------------------------------- whole subnets
def runner_for(backend: str | LatencyBackend, threads: int = 1, seed: int = 0) -> LatencyBackend:
    """``backend`` itself if it is a backend instance (its own threads), else the registered one
    of that name with ``threads`` threads."""
    return backend if isinstance(backend, LatencyBackend) else get_backend(backend, threads=threads, seed=seed)


def subnet_session(model: Any, input_shape: tuple[int, ...], threads: int = 1, seed: int = 0,
                   backend: str | LatencyBackend = "onnxruntime") -> tuple[Any, dict]:
    """Export ``model`` (a StaticSubnet) with :func:`nasq.export.export_onnx` and load it with
    ``backend``'s ``load_model`` (``threads`` threads). Returns the backend's model handle and a
    seeded input feed ``{INPUT_NAME: x}``, for :func:`time_interleaved_ms` on the same backend."""
    runner = runner_for(backend, threads, seed)
    x = torch.randn(input_shape, generator=torch.Generator().manual_seed(seed))
    with tempfile.TemporaryDirectory(prefix="nasq-subnet-") as tmp:
        path = Path(tmp) / "model.onnx"
        runner.lower(model, x, path)
        return runner.load_model(path), {INPUT_NAME: x.numpy()}


def time_interleaved_ms(sessions: list[tuple[Any, dict]], *, warmup: int = 10, repeats: int = 100,
                        rounds: int = 5, progress: Any = None, label: str = "time subnets",
                        backend: str | LatencyBackend = "onnxruntime") -> np.ndarray:
    """Median milliseconds per (handle, feed) from :func:`subnet_session` on the same
    ``backend``, its ``repeats`` runs split over ``rounds`` passes over all of them (each pass
    with ``warmup`` untimed runs first): a slow spell of a shared machine then shifts every
    subnet alike."""
    runner = runner_for(backend)
    samples: list[list[np.ndarray]] = [[] for _ in sessions]
    task = progress.add_task(label, total=rounds * len(sessions)) if progress else None
    for n in round_sizes(repeats, rounds):
        for i, (handle, feed) in enumerate(sessions):
            samples[i].append(runner.time_model_ms(handle, feed[INPUT_NAME], warmup, n))
            if progress is not None:
                progress.advance(task)
    return np.array([np.median(np.concatenate(s)) for s in samples])


def measure_subnet_ms(model: Any, input_shape: tuple[int, ...], threads: int = 1, repeats: int = 100,
                      warmup: int = 10, seed: int = 0, backend: str | LatencyBackend = "onnxruntime") -> dict[str, float]:
    """One exported subnet's latency on ``backend``: ``median_ms``, ``p10_ms``, ``p90_ms``."""
    runner = runner_for(backend, threads, seed)
    handle, feed = subnet_session(model, input_shape, threads, seed, runner)
    p10, median, p90 = np.percentile(runner.time_model_ms(handle, feed[INPUT_NAME], warmup, repeats), [10, 50, 90])
    return {"median_ms": float(median), "p10_ms": float(p10), "p90_ms": float(p90)}


def correction_specs(space: SearchSpace, n: int, seed: int = 0) -> list[SubnetSpec]:
    """The subnets the shipped correction is fitted on: random ones, plus one in five with every
    layer in a single format (cycling through the formats both menus offer). Random sampling
    almost never draws those uniform corners, a search does, and without them the correction
    extrapolates poorly to e.g. all-fp32 subnets."""
    rng = np.random.default_rng(seed + FIT_SEED_OFFSET)
    n_uniform = n // 5
    specs = space.sample_unique(rng, n - n_uniform)
    menu = space.config.precision
    formats = sorted(set(menu.w_format) & set(menu.a_format))
    for i, spec in enumerate(space.sample(rng, n_uniform) if formats else []):
        fmt = formats[i % len(formats)]
        specs.append(uniform_formats(spec, fmt, fmt))
    return specs


def uniform_formats(spec: SubnetSpec, w_format: str, a_format: str) -> SubnetSpec:
    """``spec`` with every layer's weights in ``w_format`` and activations in ``a_format``."""
    return SubnetSpec(tuple(tuple(dataclasses.replace(c, w_format=w_format, a_format=a_format) for c in stage)
                            for stage in spec.stages))


def fit_correction(space: SearchSpace, table: LatencyTable, n_subnets: int, *, threads: int = 1,
                   repeats: int = 100, warmup: int = 10, seed: int = 0, progress: Any = None,
                   backend: str | LatencyBackend = "onnxruntime") -> LatencyPredictor:
    """Fit the LatencyPredictor's correction on ``n_subnets`` subnets of ``space``
    (:func:`correction_specs`), timed with :func:`time_subnets_ms` on ``backend``."""
    specs = correction_specs(space, n_subnets, seed)
    measured = time_subnets_ms(space, specs, backend=backend, threads=threads, warmup=warmup, repeats=repeats,
                               seed=seed, progress=progress, what="whole subnets")
    return LatencyPredictor(space, table).fit(specs, measured)


def time_subnets_ms(space: SearchSpace, specs: list[SubnetSpec], *, backend: str | LatencyBackend,
                    threads: int = 1, warmup: int = 10, repeats: int = 100, rounds: int = 5, seed: int = 0,
                    progress: Any = None, what: str = "subnets") -> np.ndarray:
    """Median milliseconds of each whole subnet, built as the pipeline builds it (one seeded
    Supernet, recalibrated, extracted), lowered and loaded by ``backend``
    (:func:`subnet_session`) and timed in interleaved rounds (:func:`time_interleaved_ms`)."""
    runner = runner_for(backend, threads, seed)  # an unknown name: NasqError with the known ones
    shape = (1, *space.config.input_shape)
    task = progress.add_task(f"build {len(specs)} {what}", total=len(specs)) if progress else None
    sessions, torch_threads = [], torch.get_num_threads()
    # One torch thread: on a busy machine torch's OpenMP spinning slows calibration tenfold, and
    # the runtime is timed next. The caller's global RNG and thread count are restored.
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net, gen = Supernet(space), torch.Generator().manual_seed(seed)
            for spec in specs:
                sessions.append(subnet_session(static_subnet(net, spec, gen), shape, threads, seed, runner))
                if progress is not None:
                    progress.advance(task)
    finally:
        torch.set_num_threads(torch_threads)
    return time_interleaved_ms(sessions, warmup=warmup, repeats=repeats, rounds=rounds, progress=progress,
                               label=f"time {len(specs)} {what}", backend=runner)


# ---------------------------------------------------------------- roofline parameters from a table
def _gops(key: LayerKey, row: Row) -> float:
    return 2.0 * key.shape().macs / (row.median_us * 1e3)


def _bytes(key: LayerKey) -> float:
    s = key.shape()
    w_bytes = size_bits(s.w_format, s.params, s.cout) / 8
    return w_bytes + s.in_elements * FORMATS.get(s.a_format).bits / 8 + s.cout * s.hout**2 * 4


def derive_roofline(rows: dict[LayerKey, Row], formats: set[str], session_overhead_us: float) -> dict[str, Any]:
    """Roofline parameters that summarise measured rows (for CostModel; the table is the truth):

    * ``peak_gops[f]`` / ``depthwise_peak_gops[f]``: the best rate observed among dense /
      depthwise layers whose compute format (nasq.hardware.compute_format) is ``f``;
    * ``memory_gbs``: the best bytes-per-second observed (a lower bound on the bandwidth);
    * ``layer_overhead_us``: the fastest layer's time beyond one empty session run;
    * ``transition_ns_per_element``: median extra cost per input element of an fp32-weight
      conv whose input is int8 instead of fp32 (its QuantizeLinear/DequantizeLinear pair)."""
    ok = {k: r for k, r in rows.items() if r.supported and k.op != "linear"}
    peak, dw_peak = {}, {}
    for fmt in sorted(formats):
        dense = [_gops(k, r) for k, r in ok.items() if k.op == "conv" and compute_format(k.w_format, k.a_format) == fmt]
        dw = [_gops(k, r) for k, r in ok.items() if k.op == "dwconv" and compute_format(k.w_format, k.a_format) == fmt]
        if not dense:
            raise NasqError(f"no supported dense layer measured for format {fmt}: cannot derive its peak rate")
        peak[fmt] = round(max(dense), 3)
        if dw:
            dw_peak[fmt] = round(max(dw), 3)
    per_element = [(ok[q].median_us - ok[k].median_us) * 1e3 / k.shape().in_elements
                   for k in ok if k.op == "conv" and (k.w_format, k.a_format) == ("fp32", "fp32")
                   and (q := _replace_a(k, "int8")) in ok]
    return {"peak_gops": peak, "depthwise_peak_gops": dw_peak,
            "memory_gbs": round(max(_bytes(k) / (r.median_us * 1e3) for k, r in ok.items()), 3),
            "layer_overhead_us": round(max(0.0, min(r.median_us for r in ok.values()) - session_overhead_us), 3),
            "transition_ns_per_element": round(max(0.0, float(np.median(per_element))) if per_element else 0.0, 4)}


def _replace_a(key: LayerKey, a_format: str) -> LayerKey:
    return LayerKey(key.op, key.cin, key.cout, key.kernel, key.stride, key.hin, key.act, key.w_format, a_format)


# ---------------------------------------------------------------- the profile folder
def measure_profile(space: SearchSpace, backend: str, out_dir: str | Path, *, threads: int = 1,
                    warmup: int = 5, repeats: int = 30, rounds: int = 3, fit_subnets: int = 100,
                    seed: int = 0, progress: Any = None) -> Path:
    """Measure every layer key of ``space`` on ``backend`` and write the profile folder
    ``out_dir`` (its name is the profile's name). With ``fit_subnets`` > 0 also time that many
    whole exported subnets on the same backend, fit the predictor's correction and write it as
    latency_model.json (backends that cannot run a whole model need ``fit_subnets=0``).
    Returns the path of profile.yaml."""
    out_dir = Path(out_dir)
    runner = get_backend(backend, threads=threads, warmup=warmup, repeats=repeats, rounds=rounds, seed=seed)
    if fit_subnets and not runner.whole_models:
        raise NasqError(f"fitting the correction times whole exported subnets, which the {backend} backend "
                        f"cannot run; with --backend {backend} pass --fit-subnets 0")
    started, load_before = time.perf_counter(), _load_average()
    rows = runner.measure(space_keys(space), progress)
    about = runner.describe()
    table = LatencyTable(rows, str(out_dir / LATENCY_CSV))
    predictor = fit_correction(space, table, fit_subnets, threads=threads, seed=seed,
                               progress=progress, backend=runner) if fit_subnets else None
    roofline = derive_roofline(rows, space.all_formats(), about.get("session_overhead_us") or 0.0)
    measured_on = (f"{datetime.now(UTC):%Y-%m-%d} on {about['device']}; "
                   + ", ".join(f"{k} {v}" for k, v in about["versions"].items()))
    info = MeasurementInfo(backend=backend, spaces=(space.name,), device=about["device"], measured_on=measured_on,
                           versions=about["versions"], threads=threads, warmup=warmup, repeats=repeats,
                           rounds=rounds, rows=len(rows), unsupported_rows=sum(not r.supported for r in rows.values()),
                           session_overhead_us=about.get("session_overhead_us"), fit_subnets=fit_subnets,
                           wall_s=round(time.perf_counter() - started, 1),
                           load_average=load_before + _load_average(),
                           int8_weights=runner.int8_weight_storage())
    note = _execution_note(backend, rows) + _settings_note(about.get("settings") or {})
    text = _profile_yaml(out_dir.name, info, roofline, note, runtime_fields(runner, set(roofline["peak_gops"])))
    HardwareProfile.from_dict(yaml.safe_load(text), str(out_dir / PROFILE_YAML)).check_space(space)
    table.save(out_dir / LATENCY_CSV)
    if predictor is not None:
        predictor.save(out_dir / LATENCY_MODEL_JSON)
    else:
        (out_dir / LATENCY_MODEL_JSON).unlink(missing_ok=True)  # a stale correction would not match the new table
    atomic_write_json(out_dir / MEASUREMENT_JSON, info.model_dump(mode="json"))
    atomic_write_text(out_dir / PROFILE_YAML, text)
    return out_dir / PROFILE_YAML


def _load_average() -> tuple[float, ...]:
    try:
        return tuple(round(x, 2) for x in os.getloadavg())
    except OSError:
        return ()


_INTEGER_OPS = ("QLinearConv", "ConvInteger", "MatMulInteger", "QLinearMatMul")
# OpenVINO's runtime_ops name each executed node with the precision it ran in: Convolution(u8).
_INTEGER_KERNEL = re.compile(r"(Convolution|GroupConvolution|MatMul|FullyConnected)\((u8|i8)\)")


def _execution_note(backend: str, rows: dict[LayerKey, Row]) -> str:
    """What the measured rows say about how the formats ran (from their ``runtime_ops``)."""
    ran = {op for r in rows.values() for op in r.runtime_ops.split(">")}
    integer = sorted(op for op in ran if op in _INTEGER_OPS or _INTEGER_KERNEL.fullmatch(op))
    if integer:
        return f"Integer kernels seen in runtime_ops: {', '.join(integer)}."
    if backend != "onnxruntime":
        return "The kernel each layer ran is in latency.csv's runtime_ops column."
    return ("In nasq's ONNX export no layer ran an integer or fp8 kernel (runtime_ops shows no "
            "QLinearConv/ConvInteger/MatMulInteger): every conv computes in fp32; int8 adds "
            "QuantizeLinear/DequantizeLinear pairs and dequantizes its weights on every run, int4 and "
            "fp8 (which onnxruntime cannot run natively) add elementwise rounding ops to fp32 convs.")


def _settings_note(settings: dict[str, str]) -> str:
    """The runtime options a backend reports as changing results (describe()["settings"])."""
    if not settings:
        return ""
    return " Runtime settings: " + ", ".join(f"{k} {v}" for k, v in settings.items()) + "."


def runtime_fields(runner: LatencyBackend, formats: set[str]) -> dict[str, Any]:
    """profile.yaml's record of the runtime that was measured: backend, threads, the batch size
    the table and the correction were timed at, and which of the profile's ``formats`` (those of
    its peak_gops) the backend runs natively or emulates. Only fields nasq.specs.ProfileConfig
    declares are written (it refuses unknown keys)."""
    fields = {"backend": runner.name, "threads": runner.threads, "batch_sizes": [1],
              "native_formats": sorted(formats & runner.native_formats),
              "emulated_formats": sorted(formats & runner.emulated_formats)}
    return {k: v for k, v in fields.items() if k in ProfileConfig.model_fields}


def _profile_yaml(name: str, info: MeasurementInfo, roofline: dict[str, Any], note: str,
                  runtime: dict[str, Any]) -> str:
    description = (f"Measured with `nasq profile measure --backend {info.backend}` on {info.device}: "
                   f"per-layer medians in latency.csv ({info.repeats} runs in {info.rounds} interleaved rounds, "
                   f"{info.warmup} warm-ups each). The rates below only summarise that table for the roofline "
                   f"CostModel; the LatencyPredictor uses the table itself. {note}")
    doc = {"name": name, "version": 1, "kind": "roofline", "status": "measured", "description": description,
           **runtime, **roofline, "measured_on": info.measured_on}
    header = (f"# Measured by `nasq profile measure --space {','.join(info.spaces)} --backend {info.backend}`"
              f" in {info.wall_s:.0f} s; do not edit by hand, measure again.\n"
              "# latency.csv holds the per-layer table, latency_model.json the whole-subnet correction,\n"
              "# measurement.json how and for which spaces it was taken.\n")
    return header + yaml.safe_dump(doc, sort_keys=False, width=100)


# ---------------------------------------------------------------- CLI entry point
def profile_measure(space: str, backend: str, out: Path, threads: int = 1, repeats: int = 30,
                    warmup: int = 5, rounds: int = 3, fit_subnets: int = 100) -> Path:
    """``nasq profile measure``: ``space`` is a catalog name or a YAML path; ``out`` the profile
    folder to write (``hardware_profiles/<name>``). Shows a progress bar; returns profile.yaml."""
    space_path = resolve("space", space, Path.cwd(), "--space", "")
    loaded = SearchSpace.from_yaml(space_path)
    if out.exists() and not out.is_dir():
        raise ConfigError(str(out), "", "--out must be a folder")
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    started = time.perf_counter()
    with Progress(*columns, console=console) as progress:
        path = measure_profile(loaded, backend, out, threads=threads, warmup=warmup, repeats=repeats,
                               rounds=rounds, fit_subnets=fit_subnets, progress=progress)
    console.print(f"wrote {path} and {out / LATENCY_CSV} in {time.perf_counter() - started:.0f} s")
    return path
