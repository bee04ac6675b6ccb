"""Does the supernet rank subnets truthfully? Per family, on Fashion-MNIST:

* top-1 of the largest fp32 subnet and of the smallest int4 subnet with inherited weights
  (batch norm and activation ranges recalibrated, nothing else trained);
* Kendall tau between the inherited-weight top-1 of 12 seeded random subnets and the top-1 of
  the same 12 subnets fine-tuned alone (extracted, then trained with their formats' fake
  quantization for a fixed number of steps).

    .venv/bin/python benchmarks/supernet_quality.py [--epochs 2] [--finetune-steps 150]
        [--train-limit N] [--spaces mbconv_fmnist resnet_fmnist vit_fmnist seq_fmnist]
        [--device auto|cpu|cuda]

Goals: largest >= 92 %, smallest int4 >= 85 %, tau >= 0.6. Top-1 is measured on a held-out
validation split of the training set. Needs torch, numpy, pydantic and pyyaml only (it runs on
the GPU machine). Prints the figures and writes them to docs/benchmarks.md ("Supernet quality").
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _report import write_section  # noqa: E402

from nasq import data as data_mod  # noqa: E402
from nasq.space import SearchSpace, SubnetSpec  # noqa: E402
from nasq.specs import DataConfig, TrainConfig  # noqa: E402
from nasq.supernet.evaluate import accuracy, calibration_batches  # noqa: E402
from nasq.supernet.network import Supernet  # noqa: E402
from nasq.supernet.train import resolve_device, train_supernet  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
N_RANKED = 12


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall tau-b (ties counted as neither concordant nor discordant)."""
    n, conc, disc, ta, tb = len(a), 0, 0, 0, 0
    for i in range(n):
        for j in range(i + 1, n):
            da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
            ta += da == 0
            tb += db == 0
            conc += da * db > 0
            disc += da * db < 0
    pairs = n * (n - 1) / 2
    denom = math.sqrt((pairs - ta) * (pairs - tb))
    return float((conc - disc) / denom) if denom else 0.0


def finetune_alone(net: Supernet, spec: SubnetSpec, splits: data_mod.Splits, calib: list[torch.Tensor],
                   steps: int, batch: int, lr: float, seed: int, device: torch.device, adamw: bool = False) -> float:
    """Extract ``spec`` with inherited weights and train it alone for ``steps`` SGD steps."""
    net.set_active(spec)
    net.calibrate(calib)
    model = net.extract().to(device).train()
    opt = (torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05) if adamw else
           torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=4e-5))
    rng = np.random.default_rng(seed)
    x, y = torch.from_numpy(splits.train_x).to(device), torch.from_numpy(splits.train_y).to(device)
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        idx = torch.from_numpy(rng.integers(0, len(splits.train_y), size=batch)).to(device)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return accuracy(model.cpu(), splits.val_x, splits.val_y)


def inherited(net: Supernet, spec: SubnetSpec, splits: data_mod.Splits, calib: list[torch.Tensor]) -> float:
    net.set_active(spec)
    net.calibrate(calib)
    return accuracy(net, splits.val_x, splits.val_y)


def run_space(name: str, splits: data_mod.Splits, args: argparse.Namespace) -> dict:
    space = SearchSpace.from_yaml(REPO / "search_spaces" / f"{name}.yaml")
    transformer = space.family in ("vit", "sequence")
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, device=args.device, seed=0,
                      optimizer="adamw" if transformer else "sgd", lr=args.adamw_lr if transformer else args.lr,
                      weight_decay=0.05 if transformer else 4e-5)
    torch.manual_seed(0)
    net = Supernet(space)
    t0 = time.perf_counter()
    res = train_supernet(net, space, splits.train_x, splits.train_y, cfg)
    train_s = time.perf_counter() - t0
    calib = calibration_batches(splits.train_x, 1024, 256, seed=1)
    net.eval()
    largest, smallest = inherited(net, space.largest(), splits, calib), inherited(net, space.smallest(), splits, calib)
    specs = space.sample_unique(np.random.default_rng(7), N_RANKED)
    shared = np.array([inherited(net, s, splits, calib) for s in specs])
    device = resolve_device(cfg)
    t1 = time.perf_counter()
    lr = args.finetune_lr / 10 if transformer else args.finetune_lr
    alone = np.array([finetune_alone(net, s, splits, calib, args.finetune_steps, args.batch_size, lr,
                                     seed=i, device=device, adamw=transformer) for i, s in enumerate(specs)])
    out = {"space": name, "family": space.family, "train_s": train_s, "steps": res.steps, "device": res.device,
           "largest": largest, "smallest": smallest, "smallest_key": space.smallest().key(),
           "tau": kendall_tau(shared, alone), "inherited": shared.tolist(), "alone": alone.tolist(),
           "finetune_s": time.perf_counter() - t1}
    print(f"{name:<14} train {train_s:6.0f} s  largest fp32 {largest:5.2f} %  smallest int4 {smallest:5.2f} %  "
          f"tau {out['tau']:.2f}  (inherited {shared.min():.1f}-{shared.max():.1f}, alone {alone.min():.1f}-{alone.max():.1f})",
          flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spaces", nargs="+", default=["mbconv_fmnist", "resnet_fmnist", "vit_fmnist", "seq_fmnist"])
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (conv families)")
    ap.add_argument("--adamw-lr", type=float, default=2e-3, help="AdamW learning rate (transformer families)")
    ap.add_argument("--finetune-steps", type=int, default=150)
    ap.add_argument("--finetune-lr", type=float, default=0.01)
    ap.add_argument("--train-limit", type=int, default=None, help="use only this many training images")
    ap.add_argument("--val-size", type=int, default=5000)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--data", default=None, help="Fashion-MNIST folder (default: the Debian package's)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    splits = data_mod.load(DataConfig(name="fashion_mnist", path=args.data, fallback="none",
                                      train_limit=args.train_limit, val_size=args.val_size))
    print(splits.summary(), flush=True)
    rows = [run_space(name, splits, args) for name in args.spaces]
    where = torch.cuda.get_device_name() if rows[0]["device"] == "cuda" else f"CPU ({torch.get_num_threads()} torch threads)"
    cmd = (f"python benchmarks/supernet_quality.py --epochs {args.epochs:g} --finetune-steps {args.finetune_steps}"
           + (f" --train-limit {args.train_limit}" if args.train_limit else ""))
    body = (f"`{cmd}` on **{where}**. Fashion-MNIST ({len(splits.train_y)} training images, top-1 on "
            f"{len(splits.val_y)} held-out validation images). Supernet trained {args.epochs:g} epochs with the "
            f"sandwich rule and in-place distillation (SGD lr {args.lr:g} for conv families, AdamW lr "
            f"{args.adamw_lr:g} for transformers, cosine schedule); inherited weights are recalibrated (batch norm, "
            f"activation ranges) on 1024 training images; the {N_RANKED} ranked subnets are fine-tuned "
            f"alone for {args.finetune_steps} steps of batch {args.batch_size}. Goals: largest >= 92 %, "
            "smallest int4 >= 85 %, tau >= 0.6.\n\n"
            "| space | family | training (s) | largest fp32 top-1 | smallest int4 top-1 | Kendall tau (12 subnets) |\n"
            "|---|---|---|---|---|---|\n")
    body += "".join(f"| {r['space']} | {r['family']} | {r['train_s']:.0f} | {r['largest']:.2f} % | "
                    f"{r['smallest']:.2f} % | {r['tau']:.2f} |\n" for r in rows)
    if not args.no_write:
        doc = write_section("supernet-quality", "## Supernet quality\n\n" + body)
        print(f"written to {doc}")


if __name__ == "__main__":
    main()
