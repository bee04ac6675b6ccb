"""Bring your own data: per data source, the supernet's best front point beside a plain baseline
trained alone at the same budget.

    .venv/bin/python benchmarks/byo_data.py [--only digits,wine] [--quick]

Sources: scikit-learn digits (images, mbconv_small), a Fashion-MNIST subset (IDX, mbconv_small),
the wine table (table, mlp_table), GunPoint (series, seq_series). The table and series files are
made by ``python examples/make_example_data.py``. Per source the normal pipeline API runs with a
short budget (data -> supernet training -> sampled evaluations -> predictor -> LINAS search,
in-process, no tracking, no export); every front point is then evaluated on the test split, and
its extracted static subnet is exported to ONNX. The baselines (a small CNN for images, logistic
regression and a small MLP for tables, a small 1D-CNN and an MLP for series) train alone on the
same training split for as many seconds as the supernet's training took (the same budget; AdamW,
cosine schedule), and are scored on the same test split. Latency: every model lowered to ONNX and
timed side by side in onnxruntime (1 thread, batch 1, interleaved rounds), the ratio being the
figure that survives a loaded machine; the front point's cost-model latency is shown too.

Targets: the image sources search mbconv_small on ``cpu_ort_epyc`` (onnxruntime's measured table,
which knows int4/fp8 are emulated there); the table and series spaces have no measured table (the
profile's correction was fitted on mbconv_small only), so they search on ``cpu_roofline`` with the
precision menu cut to what onnxruntime runs natively on a CPU (fp32, int8). Prints the figures and
writes docs/benchmarks.md's section.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_DATA = REPO / "examples" / "data"
SEED = 0


@dataclass
class Source:
    name: str
    data: dict[str, Any]
    space: str
    baselines: tuple[str, ...]
    train: dict[str, Any]
    needs: Path | None = None  # a file examples/make_example_data.py writes
    hardware: str = "cpu_roofline"
    native_menu: bool = True  # search fp32/int8 only (no measured table tells emulated formats apart)
    search: dict[str, Any] = field(default_factory=dict)


SEARCH = {"population": 24, "generations": 15, "max_true_evals": 8, "batch_size": 4, "initial_evals": 8}
SOURCES = [
    Source("digits", {"source": "digits", "val_size": 300}, "mbconv_small", ("cnn",),
           {"epochs": 4.0, "batch_size": 64, "lr": 0.05}, hardware="cpu_ort_epyc", native_menu=False),
    Source("fashion_mnist", {"source": "idx", "path": "/usr/share/datasets/fashion-mnist", "train_limit": 3000,
                             "val_size": 1000, "test_limit": 2000}, "mbconv_small", ("cnn",),
           {"epochs": 1.5, "batch_size": 64, "lr": 0.05}, Path("/usr/share/datasets/fashion-mnist"),
           hardware="cpu_ort_epyc", native_menu=False),
    Source("wine", {"source": "table", "path": str(EXAMPLE_DATA / "wine.csv"), "label": "label", "val_size": 50},
           "mlp_table", ("logreg", "mlp"), {"epochs": 60.0, "batch_size": 16, "lr": 0.003, "optimizer": "adamw"},
           EXAMPLE_DATA / "wine.csv"),
    Source("gunpoint", {"source": "series", "path": str(EXAMPLE_DATA / "GunPoint"), "length": 150, "val_size": 50},
           "seq_series", ("cnn1d", "mlp"), {"epochs": 150.0, "batch_size": 8, "lr": 0.003, "optimizer": "adamw", "weight_decay": 1e-4},
           EXAMPLE_DATA / "GunPoint"),
]


# ---------------------------------------------------------------- baselines
def baseline(kind: str, shape: tuple[int, ...], classes: int) -> nn.Module:
    """Plain fp32 models, the size a practitioner would try first for the data."""
    flat = int(np.prod(shape))
    if kind == "cnn":  # two strided 3x3 convs, global average pooling, a linear
        return nn.Sequential(nn.Conv2d(shape[0], 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, classes))
    if kind == "cnn1d":
        return nn.Sequential(nn.Conv1d(shape[0], 16, 7, 2, 3), nn.ReLU(), nn.Conv1d(16, 32, 5, 2, 2), nn.ReLU(),
                             nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(32, classes))
    if kind == "logreg":
        return nn.Sequential(nn.Flatten(), nn.Linear(flat, classes))
    if kind == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(flat, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                             nn.Linear(64, classes))
    raise ValueError(kind)


def train_baseline(model: nn.Module, x: np.ndarray, y: np.ndarray, seconds: float, batch: int,
                   max_epochs: float = 500.0) -> tuple[float, float]:
    """AdamW (lr 3e-3, cosine) for about ``seconds`` (the step count is set from the time of the
    first steps, at most ``max_epochs`` passes); returns (seconds taken, epochs done)."""
    gen = torch.Generator().manual_seed(SEED)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    batch = min(batch, len(x))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    model.train()

    def step(sched: Any = None) -> None:
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()

    t0 = time.perf_counter()
    probe = 5
    for _ in range(probe):
        step()
    per_step = (time.perf_counter() - t0) / probe
    steps = int(min(max(1.0, seconds / per_step), max_epochs * len(x) / batch))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        step(sched)
    return time.perf_counter() - t0, (steps + probe) * batch / len(x)


# ---------------------------------------------------------------- latency, side by side
def onnx_session(model: nn.Module, example: torch.Tensor, path: Path) -> Any:
    import onnxruntime as ort

    from nasq.export.bundle import export_onnx

    export_onnx(model, example, path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def time_side_by_side(sessions: dict[str, Any], example: np.ndarray, rounds: int = 5, calls: int = 200) -> dict[str, float]:
    """Median ms per batch-1 call of each session, measured in interleaved rounds."""
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for s in sessions.values():
        for _ in range(20):
            s.run(None, {s.get_inputs()[0].name: example})
    for _ in range(rounds):
        for k, s in sessions.items():
            name = s.get_inputs()[0].name
            t0 = time.perf_counter()
            for _ in range(calls):
                s.run(None, {name: example})
            times[k].append((time.perf_counter() - t0) * 1e3 / calls)
    return {k: float(np.median(v)) for k, v in times.items()}


# ---------------------------------------------------------------- one source
def run_source(src: Source, tmp: Path, quick: bool) -> dict[str, Any]:
    from nasq.experiment import load_experiment
    from nasq.stages import data, train
    from nasq.stages.pipeline import evaluate_and_search
    from nasq.stages.progress import Reporter
    from nasq.supernet.evaluate import accuracy, calibration_batches, evaluate_spec

    train_cfg = {**src.train, "seed": SEED}
    if quick:
        train_cfg["epochs"] = max(1.0, train_cfg["epochs"] / 4)
    space = src.space
    if src.native_menu:  # the catalog space with the formats onnxruntime runs natively on a CPU
        cfg = yaml.safe_load((REPO / "search_spaces" / f"{src.space}.yaml").read_text())
        cfg["precision"] = {"w_format": ["fp32", "int8"], "a_format": ["fp32", "int8"]}
        space = str(tmp / f"{src.space}.yaml")
        Path(space).write_text(yaml.safe_dump(cfg))
    doc = {"schema_version": 1, "name": f"byo_{src.name}", "workdir": str(tmp / "run"), "data": src.data,
           "space": space, "hardware": [src.hardware], "allow_emulated": True, "train": train_cfg,
           "evaluate": {"num_subnets": 16, "calib_images": 256, "batch_size": 256, "seed": 1},
           "search": {**SEARCH, **src.search, "seed": 0}, "ray": {"address": "none"}, "export": {"enabled": False}}
    path = tmp / "experiment.yaml"
    path.write_text(yaml.safe_dump(doc))
    exp = load_experiment(path)
    rep = Reporter()
    splits = data.run(exp, None, exp.workdir, rep)
    t0 = time.perf_counter()
    trained = train.run(exp, splits, exp.workdir, rep)
    train_s = time.perf_counter() - t0
    result = evaluate_and_search(exp, trained.net, splits, rep, trained.info)
    search_s = time.perf_counter() - t0 - train_s
    net, cfg = trained.net, exp.config.evaluate
    calib = calibration_batches(splits.train_x, cfg.calib_images, cfg.batch_size, cfg.seed)
    points = []
    for k, p in enumerate(result.front.points):
        top1 = evaluate_spec(net, p.spec, calib, splits.test_x, splits.test_y)
        net.eval()
        points.append({"k": k, "top1": top1, "val_top1": p.measured.get("top1", p.predicted.get("top1")),
                       "model_ms": p.predicted.get("latency_ms"), "static": net.extract(),
                       "formats": sorted({f"{lay.w_format}/{lay.a_format}" for lay in p.spec.layers()})})
    example = torch.from_numpy(splits.test_x[:1])
    sessions, rows = {}, []
    for p in points:
        sessions[f"front{p['k']}"] = onnx_session(p["static"], example, tmp / f"front{p['k']}.onnx")
    base = {}
    for kind in src.baselines:
        torch.manual_seed(SEED)
        model = baseline(kind, splits.shape, splits.num_classes)
        secs, epochs = train_baseline(model, splits.train_x, splits.train_y, train_s, exp.config.train.batch_size)
        base[kind] = {"top1": accuracy(model, splits.test_x, splits.test_y), "train_s": secs, "epochs": epochs,
                      "params": sum(q.numel() for q in model.parameters())}
        sessions[kind] = onnx_session(model.eval(), example, tmp / f"{kind}.onnx")
    ms = time_side_by_side(sessions, splits.test_x[:1])
    for p in points:
        p["ort_ms"] = ms[f"front{p['k']}"]
    for kind in base:
        base[kind]["ort_ms"] = ms[kind]
    rows = [{k: v for k, v in p.items() if k != "static"} for p in points]
    return {"source": src.name, "space": src.space, "hardware": src.hardware, "native_menu": src.native_menu,
            "summary": splits.summary(), "epochs": exp.config.train.epochs,
            "train_s": train_s, "search_s": search_s, "front": rows, "baselines": base,
            "load": open("/proc/loadavg").read().split()[:3]}


# ---------------------------------------------------------------- report
def section(res: dict[str, Any]) -> str:
    front, base = res["front"], res["baselines"]
    best = max(front, key=lambda p: (p["top1"], -p["ort_ms"]))
    ref_kind = max(base, key=lambda k: base[k]["top1"])
    ref = base[ref_kind]
    near = [p for p in front if p["top1"] >= ref["top1"] - 1.0]
    fastest = min(near, key=lambda p: p["ort_ms"]) if near else None
    menu = ", formats fp32/int8" if res["native_menu"] else ""
    lines = [f"#### {res['source']} (space `{res['space']}`{menu}, searched on `{res['hardware']}`)", "",
             f"{res['summary']}; supernet {res['epochs']:g} epochs ({res['train_s']:.0f} s), evaluations + "
             f"search {res['search_s']:.0f} s; load average {' '.join(res['load'])}.", "",
             "| model | top-1 test (%) | onnxruntime ms (batch 1, 1 thread) | vs best baseline | cost model ms |",
             "|---|---|---|---|---|"]
    for kind, b in base.items():
        lines.append(f"| baseline `{kind}` ({b['params']:,} params, {b['epochs']:.0f} epochs in {b['train_s']:.0f} s) | "
                     f"{b['top1']:.2f} | "
                     f"{b['ort_ms']:.4f} | {b['ort_ms'] / ref['ort_ms']:.2f}x | - |")
    for p in sorted(front, key=lambda p: -p["top1"]):
        tag = " **best**" if p is best else ""
        tag += " **fastest within 1 pt**" if p is fastest else ""
        lines.append(f"| front point {p['k']}{tag} ({', '.join(p['formats'])}) | {p['top1']:.2f} | {p['ort_ms']:.4f} | "
                     f"{p['ort_ms'] / ref['ort_ms']:.2f}x | {p['model_ms']:.4f} |")
    verdict = (f"Best front point {best['top1']:.2f} % vs baseline `{ref_kind}` {ref['top1']:.2f} % "
               f"({best['top1'] - ref['top1']:+.2f} pt) at {best['ort_ms'] / ref['ort_ms']:.2f}x its latency; ")
    verdict += (f"fastest front point within 1 pt: {fastest['top1']:.2f} % at {fastest['ort_ms'] / ref['ort_ms']:.2f}x."
                if fastest else "no front point within 1 pt of the baseline.")
    return "\n".join([*lines, "", verdict, ""])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="comma-separated source names (default: all)")
    ap.add_argument("--quick", action="store_true", help="a quarter of the epochs (a smoke run; not written)")
    args = ap.parse_args()
    torch.set_num_threads(1)  # a loaded machine: one thread keeps the runs' timings comparable
    wanted = [s for s in SOURCES if not args.only or s.name in args.only.split(",")]
    sections = []
    for src in wanted:
        if src.needs is not None and not src.needs.exists():
            print(f"{src.name}: skipped, {src.needs} is missing (python examples/make_example_data.py)")
            continue
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"nasq-byo-{src.name}-") as tmp:
            res = run_source(src, Path(tmp), args.quick)
        text = section(res)
        print(text, f"({time.perf_counter() - t0:.0f} s)\n", flush=True)
        sections.append(text)
    if args.quick or not sections:
        return
    body = ("### Bring your own data (`benchmarks/byo_data.py`)\n\n"
            "Per data source: the pipeline's front (short budget, test split) beside plain baselines trained "
            "alone for as long as the supernet trained; all models lowered to ONNX and timed side by side in "
            "onnxruntime. "
            f"torch threads 1; CPU count {os.cpu_count()}.\n\n" + "\n".join(sections))
    print("written to", write_section("byo_data", body))


if __name__ == "__main__":
    main()
