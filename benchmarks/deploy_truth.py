"""Deployment truth: does what the front promises hold for the exported model on its runtime?

    .venv/bin/python benchmarks/deploy_truth.py [--run runs/demo] [--random 50] [--no-write]

Needs a finished demo run (``make demo`` writes ``runs/demo``; without one this script runs
``nasq run examples/demo.yaml`` first). For every point of its front and ``--random`` random
subnets of the same space (seeded), each subnet is extracted from the trained supernet, calibrated
as the search evaluated it, exported with nasq's lowering (``nasq.export.export_onnx``) and:

* timed on every measured profile's backend (``hardware_profiles/cpu_ort_epyc``: onnxruntime,
  ``cpu_ov_epyc``: openvino), batch 1, the profile's thread count, all models interleaved in
  rounds so a slow spell of the shared machine shifts every model alike; the machine's load is
  recorded before and after. Measured vs the profile's prediction, raw and after the speed factor
  ``nasq profile check`` would apply (median measured/predicted over the random subnets);
* weighed: ``model.onnx`` bytes vs the cost model's ``size_mb``;
* checked: top-1 of the export in each runtime with its default options vs the supernet's own
  evaluation of the same subnet on the same validation images (front points).

Then the deployment figures the issue asks for: the int8 vs fp32 twin of the largest subnet of the
fused space (``search_spaces/fused_fmnist.yaml``) at batch 1 and 64, and the best
front point within 0.5 pt top-1 of the largest fp32 subnet against that fp32 export.
Prints the tables; writes docs/benchmarks.md (section ``deploy_truth``) unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PROFILES = ("cpu_ort_epyc", "cpu_ov_epyc")
TOP1_IMAGES = 2000
TWIN_BATCHES = (1, 64)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=str(REPO / "runs" / "demo"), help="a finished nasq run folder")
    ap.add_argument("--profiles", default=",".join(PROFILES), help="comma-separated measured profiles")
    ap.add_argument("--random", type=int, default=50, help="random subnets beside the front points")
    ap.add_argument("--repeats", type=int, default=60, help="timed runs per model and backend")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved passes the repeats are split over")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--fused-space", default=str(REPO / "search_spaces" / "fused_fmnist.yaml"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    return ap.parse_args()


# ---------------------------------------------------------------- models
def with_formats(spec, fmt: str):
    """``spec`` with every layer's weight and activation format set to ``fmt`` (its twin)."""
    import dataclasses

    stages = tuple(tuple(dataclasses.replace(c, w_format=fmt, a_format=fmt) for c in st) for st in spec.stages)
    return dataclasses.replace(spec, stages=stages)


@dataclass
class Model:
    label: str  # "front 3", "random 12", ...
    spec: object
    static: object  # the calibrated static subnet
    onnx: dict[str, Path]  # profile -> the model lowered for its backend
    size_mb: float
    onnx_bytes: int
    predicted_ms: dict[str, float] = field(default_factory=dict)  # profile -> ms
    measured_ms: dict[str, float] = field(default_factory=dict)
    top1_supernet: float | None = None
    top1_runtime: dict[str, float] = field(default_factory=dict)


def ensure_run(run: Path) -> None:
    if (run / "front.json").is_file():
        return
    print(f"{run} has no finished run; running the demo first (a few minutes)")
    subprocess.run([sys.executable, "-m", "nasq.cli", "run", str(REPO / "examples" / "demo.yaml"), "--quiet"],
                   cwd=REPO, check=True)


def load_profile(name: str, space):
    from nasq.experiment import resolve
    from nasq.hardware import HardwareProfile
    from nasq.predict.latency import load_profile_predictor

    path = resolve("hardware", name, REPO, "deploy_truth", "profiles")
    return HardwareProfile.from_yaml(path), load_profile_predictor(path, space)


def export(model, x, folder: Path, label: str, backend=None) -> Path:
    """``model`` lowered as ``backend`` runs it (nasq's default lowering, what model.onnx holds,
    without one)."""
    from nasq.export.bundle import export_onnx

    path = folder / f"{label.replace(' ', '_')}.{backend.name if backend else 'bundle'}.onnx"
    if backend is None:
        export_onnx(model, x, path)
    else:
        backend.lower(model, x, path)
    return path


def backend_for(profile):
    from nasq.profiling.backend import get_backend

    return get_backend(profile.config.backend, threads=profile.config.threads)


def time_all(backend, paths: list[Path], x: np.ndarray, args) -> np.ndarray:
    """Median ms per model; ``rounds`` passes over all models, each with its warm-up."""
    from nasq.profiling.backend import round_sizes

    handles = [backend.load_model(p) for p in paths]
    samples: list[list[np.ndarray]] = [[] for _ in paths]
    for n in round_sizes(args.repeats, args.rounds):
        for i, h in enumerate(handles):
            samples[i].append(np.asarray(backend.time_model_ms(h, x, args.warmup, n)))
    return np.array([np.median(np.concatenate(s)) for s in samples])


def runtime_top1(backend, path: Path, x: np.ndarray, y: np.ndarray) -> float:
    handle = backend.load_model(path)
    correct = 0
    for lo in range(0, len(y), 500):
        logits = backend.run_model(handle, np.ascontiguousarray(x[lo:lo + 500], np.float32))
        correct += int((np.asarray(logits).argmax(1) == y[lo:lo + 500]).sum())
    return 100.0 * correct / len(y)


def within(measured: np.ndarray, predicted: np.ndarray, tol: float = 0.10) -> float:
    return float(np.mean(np.abs(measured / predicted - 1.0) <= tol)) if len(measured) else float("nan")


# ---------------------------------------------------------------- report helpers
def pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:  # noqa: C901 - a linear script: build, time, weigh, check, report
    args = parse_args()
    import torch

    from nasq import data as data_mod
    from nasq.export.checks import calibrated_subnet
    from nasq.hardware import CostModel
    from nasq.stages.runs import open_run
    from nasq.supernet import checkpoint
    from nasq.supernet.evaluate import accuracy

    run_dir = Path(args.run)
    ensure_run(run_dir)
    load_before = os.getloadavg()
    t_start = time.time()
    with open_run(str(run_dir)) as run:
        cfg, space = run.experiment_config(), run.space()
        front = run.front
        net, _ = checkpoint.load(run.folder, space, require_record=False)
    splits = data_mod.load(cfg.data, "deploy_truth")
    ecfg = cfg.evaluate
    val_x, val_y = splits.val_x[:TOP1_IMAGES], splits.val_y[:TOP1_IMAGES]
    names = [n for n in args.profiles.split(",") if n]
    profiles = {n: load_profile(n, space) for n in names}
    rng = np.random.default_rng(args.seed)
    specs = [(f"front {i}", p.spec) for i, p in enumerate(front.points)]
    seen = {s.key() for _, s in specs}
    specs += [(f"random {i}", s) for i, s in enumerate(space.sample_unique(rng, args.random, exclude=seen))]
    one = torch.from_numpy(np.ascontiguousarray(splits.test_x[:1], np.float32))
    first_profile = next(iter(profiles.values()))[0]
    cost = CostModel(space, first_profile)

    with tempfile.TemporaryDirectory(prefix="nasq-deploy-truth-") as tmp:
        folder = Path(tmp)
        models: list[Model] = []
        for label, spec in specs:
            static = calibrated_subnet(net, spec, splits.train_x, ecfg)
            bundle = export(static, one, folder, label)
            size = float(cost.score([spec])["size_mb"][0])
            m = Model(label, spec, static, {}, size, bundle.stat().st_size)
            if label.startswith("front"):
                m.top1_supernet = accuracy(static, val_x, val_y)
            models.append(m)
        x1 = splits.test_x[:1].astype(np.float32)
        for name, (profile, predictor) in profiles.items():
            backend = backend_for(profile)
            for m in models:
                m.onnx[name] = export(m.static, one, folder, m.label, backend)
            measured = time_all(backend, [m.onnx[name] for m in models], x1, args)
            predicted = predictor.predict([m.spec for m in models])
            for m, ms, pr in zip(models, measured, predicted, strict=True):
                m.measured_ms[name], m.predicted_ms[name] = float(ms), float(pr)
            for m in models:
                if m.top1_supernet is not None:
                    m.top1_runtime[name] = runtime_top1(backend, m.onnx[name], val_x, val_y)

        twins = fused_twins(args, profiles, folder)
        speedup = best_speedup(net, space, models, profiles, folder, splits, ecfg, val_x, val_y, args, one)
    load_after = os.getloadavg()
    report(models, profiles, twins, speedup, load_before, load_after, time.time() - t_start, args)


def fused_twins(args, profiles, folder: Path) -> list[list[str]]:
    """int8 vs fp32 twin of the largest subnet of the fused space, per backend, at batch 1 and
    at the profile's largest batch (weights untrained: run time does not depend on them)."""
    import torch

    from nasq.profiling.layer_models import static_subnet
    from nasq.space import SearchSpace
    from nasq.supernet.network import Supernet

    space = SearchSpace.from_yaml(args.fused_space)
    largest = space.largest()
    rows = []
    gen = torch.Generator().manual_seed(args.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        net = Supernet(space)
    shape = space.config.input_shape
    statics = {fmt: static_subnet(net, with_formats(largest, fmt), gen) for fmt in ("fp32", "int8")}
    example = torch.randn(1, *shape, generator=gen)
    for name, (profile, _) in profiles.items():
        backend = backend_for(profile)
        paths = {fmt: export(m, example, folder, f"fused {fmt}", backend) for fmt, m in statics.items()}
        for batch in TWIN_BATCHES:
            x = np.random.default_rng(args.seed).standard_normal((batch, *shape)).astype(np.float32)
            fp32_ms, int8_ms = time_all(backend, [paths["fp32"], paths["int8"]], x, args)
            rows.append([name, profile.config.backend, str(batch), f"{fp32_ms:.3f}", f"{int8_ms:.3f}",
                         f"{fp32_ms / int8_ms:.2f}x"])
    return rows


def best_speedup(net, space, models, profiles, folder, splits, ecfg, val_x, val_y, args, one) -> list[list[str]]:
    """The fastest front point within 0.5 pt top-1 of the largest fp32 subnet vs that fp32 export."""
    from nasq.export.checks import calibrated_subnet
    from nasq.supernet.evaluate import accuracy

    ref_spec = with_formats(space.largest(), "fp32")
    ref = calibrated_subnet(net, ref_spec, splits.train_x, ecfg)
    ref_top1 = accuracy(ref, val_x, val_y)
    rows = []
    for name, (profile, _) in profiles.items():
        close = [m for m in models if m.top1_supernet is not None and m.top1_supernet >= ref_top1 - 0.5]
        if not close:
            rows.append([name, f"{ref_top1:.2f}", "no front point within 0.5 pt", "", "", ""])
            continue
        best = min(close, key=lambda m: m.measured_ms[name])
        backend = backend_for(profile)
        x = splits.test_x[:1].astype(np.float32)
        ref_path = export(ref, one, folder, "largest fp32", backend)
        ref_ms, best_ms = time_all(backend, [ref_path, best.onnx[name]], x, args)
        rows.append([name, f"{ref_top1:.2f}", best.label, f"{best.top1_supernet:.2f}", f"{ref_ms:.3f} / {best_ms:.3f}",
                     f"{ref_ms / best_ms:.2f}x"])
    return rows


def report(models, profiles, twins, speedup, load_before, load_after, wall_s, args) -> None:
    front = [m for m in models if m.label.startswith("front")]
    rand = [m for m in models if m.label.startswith("random")]
    lat_rows = []
    no_fp8 = [m for m in rand if not any(c.a_format.startswith("fp8") for st in m.spec.stages for c in st)]
    for name in profiles:
        for group, ms in (("front", front), ("random", rand), ("random without fp8 activations", no_fp8)):
            meas = np.array([m.measured_ms[name] for m in ms])
            pred = np.array([m.predicted_ms[name] for m in ms])
            factor = float(np.median([m.measured_ms[name] / m.predicted_ms[name] for m in rand]))
            err = np.abs(meas / pred - 1)
            lat_rows.append([name, group, str(len(ms)), pct(within(meas, pred)), pct(within(meas, pred * factor)),
                             f"{factor:.3f}", f"{100 * np.median(err):.1f} %", f"{100 * err.max():.1f} %"])
    ratio = np.array([m.onnx_bytes / (m.size_mb * 1e6) for m in models])
    size_rows = [[group, str(len(ms)), f"{np.median(r):.3f}", f"{r.min():.3f}", f"{r.max():.3f}",
                  pct(float(np.mean(np.abs(r - 1) <= 0.10)))]
                 for group, ms, r in (("front", front, ratio[:len(front)]), ("random", rand, ratio[len(front):]))]
    top_rows = []
    for name in profiles:
        d = np.array([m.top1_runtime[name] - m.top1_supernet for m in front])
        top_rows.append([name, str(len(front)), f"{np.abs(d).max():.2f}", f"{np.mean(d):+.2f}",
                         pct(float(np.mean(np.abs(d) <= 0.2)))])
    body = "\n\n".join([
        f"`benchmarks/deploy_truth.py --run {args.run} --random {args.random}` in {wall_s:.0f} s; load average "
        f"(1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, after "
        f"{load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}. Batch 1, each profile's thread count, "
        f"{args.repeats} timed runs per model in {args.rounds} interleaved rounds.",
        "**Latency, measured vs predicted** (share within ±10 %, raw and after the speed factor, the median "
        "measured/predicted over the random subnets, as `nasq profile check` computes it):\n\n"
        + table(["profile", "subnets", "n", "within ±10 %", "after factor", "factor", "median |err|", "max |err|"],
                lat_rows),
        "**`model.onnx` bytes / `size_mb`**:\n\n"
        + table(["subnets", "n", "median", "min", "max", "within ±10 %"], size_rows),
        f"**Export top-1 with the runtime's default options vs the supernet's evaluation** ({TOP1_IMAGES} "
        "validation images, front points):\n\n"
        + table(["profile", "points", "max |diff| pt", "mean diff pt", "within 0.2 pt"], top_rows),
        "**int8 vs fp32 twin, largest subnet of fused_fmnist**:\n\n"
        + table(["profile", "backend", "batch", "fp32 ms", "int8 ms", "int8 speed-up"], twins),
        "**Best front point within 0.5 pt of the largest fp32 subnet vs that fp32 export** (batch 1):\n\n"
        + table(["profile", "largest fp32 top-1", "point", "its top-1", "fp32 / point ms", "speed-up"], speedup),
    ])
    print(body)
    if not args.no_write:
        print(f"wrote {write_section('deploy_truth', body)}")


if __name__ == "__main__":
    main()
