"""Data-parallel supernet training on Ray Train (``train.workers`` > 1).

A :class:`ray.train.torch.TorchTrainer` starts ``workers`` processes in one ``torch.distributed``
group (gloo on CPU, nccl on GPUs). Each builds the supernet from the space with the experiment's
seed and runs :func:`nasq.supernet.train.train_supernet` on its :class:`~nasq.supernet.train.Shard`:
the same subnets and global batch on every rank, its part of each batch, one all-reduce of the
gradients per step (see that module). The gradients are reduced by hand rather than by DDP's
wrapper: a sandwich step runs several subnets (each leaving other parameters unused) through one
optimizer step, which DDP would reduce once per backward and would need unused-parameter
detection for; one flat all-reduce per step is exact and cheaper.

Rank 0 writes the usual checkpoint (safetensors + JSON) to the workdir's checkpoint folder, every
``checkpoint_every`` steps and at the end, and the driver loads the final weights from there, so
the run resumes from it like a single-process one (with any worker count) and nothing of ours goes
through Ray Train's own checkpoints. The folder must be on storage every rank and the driver
share (one machine; a shared filesystem on a cluster).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from nasq.errors import NasqError
from nasq.space import SearchSpace
from nasq.specs import TrainConfig
from nasq.supernet.network import Supernet
from nasq.supernet.train import (
    Shard,
    TrainResult,
    load_checkpoint_weights,
    read_checkpoint_state,
    train_supernet,
)


def use_gpu(ray: Any, cfg: TrainConfig) -> bool:
    """One GPU per worker when asked (``device: cuda``) or, with ``auto``, when the cluster has one
    for every worker."""
    if cfg.device == "cpu":
        return False
    return cfg.device == "cuda" or ray.cluster_resources().get("GPU", 0) >= cfg.workers


def _worker(config: dict[str, Any]) -> None:
    """One rank: rebuild the supernet (same seed, same weights) and train its shard."""
    import ray
    import ray.train
    import torch

    ctx = ray.train.get_context()
    cfg: TrainConfig = config["cfg"]
    torch.set_num_threads(cfg.threads or 1)  # one Ray CPU per worker
    torch.manual_seed(cfg.seed)  # the stage's weight initialisation, on every rank
    net = Supernet(config["space"])
    x, y = ray.get(config["data"][0])
    train_supernet(net, config["space"], x, y, cfg, checkpoint_dir=config["checkpoint_dir"],
                   resume=config["resume"], stop_after=config["stop_after"],
                   shard=Shard(ctx.get_world_rank(), ctx.get_world_size()))


def train_distributed(ray: Any, net: Supernet, space: SearchSpace, x: np.ndarray, y: np.ndarray, cfg: TrainConfig,
                      checkpoint_dir: str | Path, resume: bool = False, stop_after: int | None = None) -> TrainResult:
    """:func:`train_supernet` on ``cfg.workers`` Ray Train workers (Ray already started: ``ray``);
    ``net`` receives the final weights. ``seconds`` and images/s are the driver's wall time,
    Ray Train's start included."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    ckpt = Path(checkpoint_dir).resolve()
    before = read_checkpoint_state(ckpt) if resume else None
    start = int(before["step"]) if before else 0
    gpu = use_gpu(ray, cfg)
    cpus = ray.cluster_resources().get("CPU", 0)
    if cpus < cfg.workers:  # Ray Train would wait for them for ever
        raise NasqError(f"train.workers: {cfg.workers} workers need {cfg.workers} Ray CPUs, the cluster has {cpus:g} "
                        "(ray.num_cpus sets an embedded Ray's)")
    config = {"cfg": cfg, "space": space, "data": [ray.put((x, y))], "checkpoint_dir": str(ckpt),
              "resume": resume, "stop_after": stop_after}
    t0 = time.perf_counter()
    # Ray Train's own run state (no weights of ours) goes to a scratch folder, removed after
    with tempfile.TemporaryDirectory(prefix="nasq-raytrain-") as scratch:
        trainer = TorchTrainer(_worker, train_loop_config=config,
                               torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
                               scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=gpu),
                               run_config=RunConfig(name="supernet", storage_path=scratch))
        try:
            trainer.fit()
        except Exception as e:  # Ray Train wraps the worker's error (a LineageError on resume, ...)
            raise NasqError(f"distributed training ({cfg.workers} workers) failed: {e}") from e
    seconds = time.perf_counter() - t0
    state = read_checkpoint_state(ckpt)
    if state is None:  # rank 0 writes at the end of every run: an empty folder means it never got there
        raise NasqError(f"distributed training left no checkpoint in {ckpt}")
    load_checkpoint_weights(net, ckpt)
    steps, total = int(state["step"]), int(state["total_steps"])
    return TrainResult(steps, seconds, (steps - start) * cfg.batch_size / max(seconds, 1e-9),
                       [float(v) for v in state["losses"]], steps >= total, start, "cuda" if gpu else "cpu")
