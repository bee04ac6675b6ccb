"""Int8 weights stored as INT8 or as UINT8 (zero point 128): which one onnxruntime runs exactly here.

    .venv/bin/python benchmarks/int8_weights.py [--steps 100] [--images 1000] [--repeats 60] [--no-write]

On an x86 CPU without VNNI, onnxruntime's uint8 x int8 integer kernels sum pairs of products in
int16 with saturation (VPMADDUBSW), so the int8 export of a subnet can compute something else than
torch; its uint8 x uint8 kernels widen to int16 first. ``export.int8_weights: auto`` (the default)
picks UINT8 codes on such a CPU and INT8 ones elsewhere (``nasq.export.lower.int8_weight_type``).

The largest subnet of ``search_spaces/fused_fmnist.yaml`` at int8 (weights and activations) is
trained alone for ``--steps`` SGD steps on Fashion-MNIST (batch 64, fake quantization, seed 0),
recalibrated on 512 training images, and exported three ways: int8 weights as INT8 codes, as
UINT8 codes, and its fp32 twin. Each export runs in onnxruntime (default options, one thread) on
``--images`` test images against torch's output of the same static subnet: the share of images
whose logits match to 1e-3 and whose top-1 agrees. Latency: batch 1 and 64, median of
``--repeats`` runs per model, the three models interleaved in three rounds. Prints the table and
writes docs/benchmarks.md (section ``int8-weights``) unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _report import load_average, write_section  # noqa: E402
from deploy_truth import with_formats  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ATOL = 1e-3
BATCHES = (1, 64)
ROUNDS = 3


def trained_twins(steps: int, seed: int):
    """(int8 static subnet, fp32 static subnet, splits): the int8 largest subnet trained alone."""
    import torch
    import torch.nn.functional as F

    from nasq import data as data_mod
    from nasq.space import SearchSpace
    from nasq.specs import DataConfig
    from nasq.supernet.evaluate import calibration_batches
    from nasq.supernet.network import Supernet

    splits = data_mod.load(DataConfig(name="fashion_mnist", fallback="none"))
    space = SearchSpace.from_yaml(REPO / "search_spaces" / "fused_fmnist.yaml")
    torch.manual_seed(seed)
    net = Supernet(space)
    int8 = with_formats(space.largest(), "int8")
    net.set_active(int8)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.choice(len(splits.train_y), 64, replace=False)
        loss = F.cross_entropy(net(torch.from_numpy(splits.train_x[idx])), torch.from_numpy(splits.train_y[idx]).long())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    calib = calibration_batches(splits.train_x, 512, 128, seed=seed)
    out = []
    for spec in (int8, with_formats(space.largest(), "fp32")):
        net.set_active(spec)
        net.calibrate(calib)
        net.eval()
        out.append(net.extract().eval())
    return out[0], out[1], splits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=100, help="SGD steps training the int8 subnet alone")
    ap.add_argument("--images", type=int, default=1000, help="test images compared with torch")
    ap.add_argument("--repeats", type=int, default=60, help="timed runs per model and batch size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    import torch

    from nasq.export.bundle import export_onnx, ort_session
    from nasq.export.lower import int8_weight_type
    from nasq.hardware.host import cpu_flags

    t0, load_before = time.time(), load_average()
    int8_model, fp32_model, splits = trained_twins(args.steps, args.seed)
    x = splits.test_x[:args.images].astype(np.float32)
    with torch.no_grad():
        want = torch.cat([int8_model(torch.from_numpy(x[i:i + 250])) for i in range(0, len(x), 250)]).numpy()
    folder = Path(tempfile.mkdtemp(prefix="nasq-int8w-"))
    paths = {}
    for label, model, kind in (("int8 weights as INT8", int8_model, "int8"),
                               ("int8 weights as UINT8", int8_model, "uint8"), ("fp32 twin", fp32_model, "int8")):
        paths[label] = folder / f"{label.replace(' ', '_')}.onnx"
        export_onnx(model, torch.from_numpy(x[:1]), paths[label], int8_weights=kind)
    sessions = {k: ort_session(p) for k, p in paths.items()}

    def run(s, xb):
        return s.run(None, {s.get_inputs()[0].name: xb})[0]

    rows = {}
    for label in list(paths)[:2]:
        got = np.concatenate([run(sessions[label], x[i:i + 250]) for i in range(0, len(x), 250)])
        rows[label] = [f"{100 * np.mean(np.abs(got - want).max(axis=1) < ATOL):.1f} %",
                       f"{100 * np.mean(got.argmax(1) == want.argmax(1)):.1f} %", f"{np.abs(got - want).max():.3g}"]
    timings = {k: {b: [] for b in BATCHES} for k in paths}
    for _ in range(ROUNDS):
        for b in BATCHES:
            xb = np.ascontiguousarray(x[:b])
            for label, s in sessions.items():
                for _ in range(5):
                    run(s, xb)
                for _ in range(max(1, args.repeats // ROUNDS)):
                    t = time.perf_counter()
                    run(s, xb)
                    timings[label][b].append(1e3 * (time.perf_counter() - t))
    ms = {k: {b: float(np.median(v)) for b, v in per.items()} for k, per in timings.items()}
    flags = cpu_flags() or frozenset()
    vnni = sorted(flags & {"avx512_vnni", "avx_vnni"}) or ["none"]
    lines = ["| export | images matching torch to 1e-3 | same top-1 as torch | max abs diff | "
             + " | ".join(f"ms, batch {b}" for b in BATCHES) + " | fp32 twin / it, batch 1 |",
             "|---|---|---|---|" + "---|" * len(BATCHES) + "---|"]
    for label in paths:
        fig = rows.get(label, ["", "", ""])
        lines.append(f"| {label} | " + " | ".join(fig) + " | " + " | ".join(f"{ms[label][b]:.3f}" for b in BATCHES)
                     + f" | {ms['fp32 twin'][1] / ms[label][1]:.2f}x |")
    table = "\n".join(lines)
    body = (f"`python benchmarks/int8_weights.py --steps {args.steps} --images {args.images} --repeats {args.repeats}` "
            f"in {time.time() - t0:.0f} s; load average before {' '.join(load_before)}, after "
            f"{' '.join(load_average())}. CPU VNNI flags: {', '.join(vnni)}; `export.int8_weights: auto` picks "
            f"**{int8_weight_type()}** here. The largest fused_fmnist subnet at int8, trained alone for {args.steps} "
            f"steps, recalibrated on 512 training images; onnxruntime default options, one thread; "
            f"{args.images} test images against torch.\n\n{table}\n")
    print(table, flush=True)
    if not args.no_write:
        write_section("int8-weights", "### Int8 weights: INT8 or UINT8 codes (`benchmarks/int8_weights.py`)\n\n" + body)


if __name__ == "__main__":
    main()
