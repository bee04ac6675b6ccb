"""Supernet training throughput: images/s of sandwich training with fake quantization, and the
ratio to the same training with every format fp32 (no quantizer does any work).

    .venv/bin/python benchmarks/train_throughput.py [--device auto|cpu|cuda] [--steps 30]
        [--spaces mbconv_fmnist resnet_fmnist vit_fmnist seq_fmnist] [--batch-size 256]

Same architectures sampled in both runs (same seed); only the precision menu differs. On a GPU
the trainer uses bf16 autocast and torch.compile (its defaults there); the first steps (warm-up,
compilation) are not timed. Needs torch, numpy, pydantic and pyyaml only. Prints the figures and
writes them to docs/benchmarks.md ("Training throughput").
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _report import write_section  # noqa: E402

from nasq.space import SearchSpace  # noqa: E402
from nasq.specs import TrainConfig  # noqa: E402
from nasq.supernet.network import Supernet  # noqa: E402
from nasq.supernet.train import train_supernet  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def fp32_twin(space: SearchSpace) -> SearchSpace:
    data = space.config.model_dump(mode="json")
    data["precision"] = {"w_format": ["fp32"], "a_format": ["fp32"]}
    data["name"] += "_fp32"
    return SearchSpace.from_dict(data)


def images_per_s(space: SearchSpace, device: str, steps: int, warmup: int, batch: int) -> float:
    n = batch * (steps + warmup)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, size=n).astype(np.int64)
    cfg = TrainConfig(epochs=1.0, batch_size=batch, device=device, seed=0)
    torch.manual_seed(0)
    net = Supernet(space)
    marks: list[float] = []
    train_supernet(net, space, x, y, cfg, progress=lambda s, total, loss: marks.append(time.perf_counter()))
    if torch.cuda.is_available() and device != "cpu":
        torch.cuda.synchronize()
    timed = marks[warmup - 1:]
    return batch * (len(timed) - 1) / (timed[-1] - timed[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--spaces", nargs="+", default=["mbconv_fmnist", "resnet_fmnist", "vit_fmnist", "seq_fmnist"])
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    where = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} torch threads"
    rows = []
    for name in args.spaces:
        space = SearchSpace.from_yaml(REPO / "search_spaces" / f"{name}.yaml")
        q = images_per_s(space, device, args.steps, args.warmup, args.batch_size)
        f = images_per_s(fp32_twin(space), device, args.steps, args.warmup, args.batch_size)
        rows.append((name, q, f, q / f))
        print(f"{name:<15} fake-quant {q:8.0f} img/s   fp32 {f:8.0f} img/s   ratio {q / f:.2f}", flush=True)
    body = (f"`python benchmarks/train_throughput.py --device {args.device} --steps {args.steps} "
            f"--batch-size {args.batch_size}` on **{where}** (torch {torch.__version__}). Sandwich training "
            "(largest + smallest + 2 random subnets per step, in-place distillation); images/s count each "
            "batch once. Goal on a GPU: fake-quant / fp32 >= 0.85.\n\n"
            "| space | with fake quantization (img/s) | all fp32 (img/s) | ratio |\n|---|---|---|---|\n")
    body += "".join(f"| {n} | {q:.0f} | {f:.0f} | {r:.2f} |\n" for n, q, f, r in rows)
    if device == "cpu":
        body += ("\nMeasured on CPU: no GPU was lent to the session that ran it, so the GPU goal is not "
                 "shown here. On CPU the fake quantizers (elementwise rounding, per-channel max) are a "
                 "large share of each step.\n")
    if not args.no_write:
        doc = write_section("train-throughput", "## Training throughput\n\n" + body)
        print(f"written to {doc}")


if __name__ == "__main__":
    main()
