"""Data-parallel supernet training on Ray Train: images/s and the loss-curve difference with
``train.workers: 1`` (in-process) vs ``2`` (Ray Train, gloo, one CPU each), through the train stage.

    .venv/bin/python benchmarks/ray_train.py [--data digits] [--space mbconv_small]
        [--batch-size 64] [--epochs 0.5 1.0] [--repeats 1]

Each worker count trains at two lengths (``--epochs``), interleaved (1, 2, 1, 2 workers) so load
changes hit both alike; the wall images/s of a run includes Ray Train's start-up (worker processes,
process group), the marginal images/s (extra images / extra seconds between the two lengths) is
the steady training rate without it. One embedded Ray (2 CPUs) serves every run; its own start
is not counted. The loss difference compares the two workers' curves at the longer length (same
seeds, same batches and subnets; batch-norm statistics per shard make them differ). To tell that
apart from an error in the gradient reduction it also trains in one process on the same batch in
two batch-norm shards (:func:`emulate_shards`: the distributed arithmetic, without Ray): its
distance to the 1-worker curve is what per-shard statistics alone do. Prints the figures and the
load average and writes "Distributed training (Ray Train)" to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _report import write_section  # noqa: E402

from nasq.cluster.tasks import ray_session  # noqa: E402
from nasq.experiment import load_experiment  # noqa: E402
from nasq.stages import data as data_stage  # noqa: E402
from nasq.stages import train as train_stage  # noqa: E402
from nasq.supernet import train as T  # noqa: E402
from nasq.supernet.network import Supernet  # noqa: E402


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def one_run(folder: Path, args: argparse.Namespace, workers: int, epochs: float) -> dict:
    run = folder / f"w{workers}-e{epochs}"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    cfg = {"name": "bench", "workdir": str(run / "work"), "data": {"name": args.data, "val_size": 100},
           "space": args.space, "ray": {"address": "local", "num_cpus": 2},
           "train": {"epochs": epochs, "batch_size": args.batch_size, "seed": 0, "threads": 1, "workers": workers}}
    (run / "e.yaml").write_text(yaml.safe_dump(cfg))
    exp = load_experiment(run / "e.yaml")
    splits = data_stage.run(exp, None, exp.workdir)
    t0 = time.perf_counter()
    trained = train_stage.run(exp, splits, exp.workdir)
    seconds = time.perf_counter() - t0
    losses = json.loads((exp.workdir / "supernet.json").read_text())["losses"]
    return {"steps": trained.info["steps"], "seconds": seconds, "losses": losses,
            "images": trained.info["steps"] * args.batch_size, "exp": exp, "splits": splits}


def emulate_shards(exp, splits, world: int) -> list[float]:
    """train_supernet's loop in one process, each global batch run as ``world`` share-weighted
    shards (batch norm per shard) whose gradients accumulate: what ``world`` ranks compute."""
    import torch

    c, space = exp.config.train, exp.space
    torch.manual_seed(c.seed)
    net = Supernet(space).train()
    opt = T.make_optimizer(net, c)
    total, per_epoch = T.total_steps(c, len(splits.train_y))
    xt, yt = torch.from_numpy(splits.train_x), torch.from_numpy(splits.train_y)
    losses = []
    for step in range(total):
        epoch, lo = divmod(step, per_epoch)
        batch = T.epoch_order(c, len(yt), epoch)[lo * c.batch_size:(lo + 1) * c.batch_size]
        for group in opt.param_groups:
            group["lr"] = T.lr_at(c, step, total)
        others = [space.smallest(), *T.step_subnets(space, c, step, total)]
        loss = 0.0
        for rank in range(world):
            a, b = T.shard_bounds(len(batch), T.Shard(rank, world))
            idx = torch.from_numpy(batch[a:b])
            loss += T._sandwich_step(net, net, xt[idx], yt[idx], space.largest(), others, c.distill, (b - a) / len(batch))
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss)
    return losses


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="digits")
    ap.add_argument("--space", default="mbconv_small")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--epochs", type=float, nargs=2, default=[0.5, 1.0])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    before = load()
    best: dict[tuple[int, float], dict] = {}
    with tempfile.TemporaryDirectory(prefix="nasq-bench-rt-") as tmp, ray_session("local", 2):
        for _ in range(args.repeats):
            for epochs in args.epochs:
                for workers in (1, 2):
                    r = one_run(Path(tmp), args, workers, epochs)
                    print(f"workers {workers} epochs {epochs}: {r['steps']} steps in {r['seconds']:.1f} s")
                    key = (workers, epochs)
                    if key not in best or r["seconds"] < best[key]["seconds"]:
                        best[key] = r
        long_run = best[(1, args.epochs[1])]
        emulated = np.array(emulate_shards(long_run["exp"], long_run["splits"], 2))
    after = load()
    short, long = args.epochs
    rows, rate = [], {}
    for workers in (1, 2):
        a, b = best[(workers, short)], best[(workers, long)]
        marginal = (b["images"] - a["images"]) / max(b["seconds"] - a["seconds"], 1e-9)
        rate[workers] = marginal
        rows.append(f"| {workers} | {b['steps']} | {b['seconds']:.1f} | {b['images'] / b['seconds']:.0f} | "
                    f"{marginal:.0f} |")
    diff = np.abs(np.array(best[(2, long)]["losses"]) - np.array(best[(1, long)]["losses"]))
    final = abs(np.mean(best[(2, long)]["losses"][-5:]) - np.mean(best[(1, long)]["losses"][-5:]))
    bn = np.abs(emulated - np.array(best[(1, long)]["losses"]))
    impl = np.abs(emulated - np.array(best[(2, long)]["losses"]))
    first = " ".join(f"{v:.1e}" for v in impl[:4])
    body = "\n".join([
        f"`benchmarks/ray_train.py --data {args.data} --space {args.space} --batch-size {args.batch_size} "
        f"--epochs {short} {long} --repeats {args.repeats}`: the train stage with `train.workers` 1 (in-process) "
        "and 2 (Ray Train, gloo, one CPU and one torch thread per worker, the global batch split in two), "
        f"on an embedded Ray with 2 CPUs. Load average before {before}, after {after} (a shared, loaded "
        "2-core machine).",
        "",
        "| workers | steps | wall s | wall images/s | marginal images/s |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"Scaling (marginal, 2 workers / 1): {rate[2] / max(rate[1], 1e-9):.2f}x; Ray Train's start-up per run "
        f"(wall minus steps at the marginal rate): {best[(2, long)]['seconds'] - best[(2, long)]['images'] / max(rate[2], 1e-9):.1f} s. "
        f"Loss curves, 2 workers vs 1, over {len(diff)} steps: max |difference| {diff.max():.4f}, "
        f"mean {diff.mean():.4f}; last-5-step mean loss differs by {final:.4f}. One process with the same "
        f"batches in 2 batch-norm shards (no Ray) differs from 1 worker by max {bn.max():.4f}, mean "
        f"{bn.mean():.4f}: per-shard statistics alone move the curve as far. That emulation and the 2 Ray "
        f"workers agree to float rounding at first (steps 1-4: {first}; the reduction is exact) and drift "
        f"apart later (max {impl.max():.4f}): fake-quantization rounding turns last-bit differences in the "
        "weights into whole quantization steps, so any perturbation (per-shard statistics, float order) "
        "grows within ~10 steps to this size, step by step noise around the same downward curve.",
        "",
        "Two workers on two cores shared with other work cannot give 2x: the per-step all-reduce, the "
        "halved per-worker batch (less efficient kernels) and Ray Train's start-up (worker processes, "
        "process group) all count; the path is for machines with more cores or GPUs (nccl).",
    ])
    print(body)
    if not args.no_write:
        doc = write_section("ray_train", "### Distributed training (Ray Train)\n\n" + body)
        print(f"wrote {doc}")


if __name__ == "__main__":
    main()
