"""Stage 2, train: the supernet, trained once. A finished supernet of the same space, data and
training config in the workdir is reused; an interrupted training resumes from its checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nasq import data as data_mod
from nasq.cluster.tasks import ray_session
from nasq.cluster.train import train_distributed
from nasq.errors import ConfigError
from nasq.experiment import Experiment, remove_own_folder
from nasq.stages.progress import Reporter
from nasq.supernet import checkpoint
from nasq.supernet.network import Supernet
from nasq.supernet.train import (
    CHECKPOINT_STATE,
    CHECKPOINT_WEIGHTS,
    TrainResult,
    checkpoint_finished,
    train_supernet,
)

CHECKPOINT_DIR = "checkpoint"  # the training checkpoint, removed once a training has finished


@dataclass
class TrainedSupernet:
    net: Supernet
    info: dict[str, Any] = field(default_factory=dict)  # steps, seconds, images/s, final loss (reused: 1.0)


def fingerprint(exp: Experiment) -> str:
    return checkpoint.fingerprint(exp.space.hash, exp.config.data.model_dump(mode="json"), exp.config.train)


def run(exp: Experiment, splits: data_mod.Splits, workdir: Path, rep: Reporter | None = None,
        fresh: bool = False) -> TrainedSupernet:
    rep = rep or Reporter()
    cfg = exp.config.train
    torch.manual_seed(cfg.seed)  # weight initialisation; training itself uses its own generators
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    net = Supernet(exp.space)
    try:
        record = None if fresh else checkpoint.load_finished(net, workdir, fingerprint(exp))
        if record is not None:
            rep.say(f"      reusing the finished supernet in {workdir} (same space, data and training config)")
            return TrainedSupernet(net, {**record["result"], "reused": 1.0})
    except checkpoint.SupernetMismatch:  # saved by another version of the supernet code
        rep.say(f"      [yellow]the supernet in {workdir} does not fit this code version: training again[/]")
        fresh = True
    except checkpoint.TornPair:  # its saving was cut short: not a finished supernet
        rep.say(f"      [yellow]the supernet in {workdir} was not saved whole: training again[/]")
        fresh = True
    ckpt = workdir / CHECKPOINT_DIR
    if ckpt.exists() and (fresh or checkpoint_finished(ckpt)):
        remove_own_folder(ckpt, (CHECKPOINT_WEIGHTS, CHECKPOINT_STATE))  # a finished run's checkpoint is nothing to resume
    with rep.bar("training", 1) as bar:
        if cfg.workers > 1:
            res = _train_on_ray(exp, net, splits, ckpt, resume=not fresh)
            bar(1.0, info=f"step {res.steps}/{res.steps} loss {res.losses[-1]:.3f}")
        else:
            res = train_supernet(net, exp.space, splits.train_x, splits.train_y, cfg,
                                 progress=lambda s, n, loss: bar(s / n, info=f"step {s}/{n} loss {loss:.3f}"),
                                 checkpoint_dir=ckpt, resume=not fresh)
    if res.resumed_from:
        rep.say(f"      resumed from the checkpoint at step {res.resumed_from}")
    info = {"steps": res.steps, "seconds": round(res.seconds, 2), "images_per_s": round(res.images_per_s, 1),
            "final_loss": round(float(np.mean(res.losses[-20:])), 4), "resumed_from": res.resumed_from}
    checkpoint.save(net, workdir, {"space": exp.space.name, "space_hash": exp.space.hash,
                                   "fingerprint": fingerprint(exp), "device": res.device,
                                   "train": cfg.model_dump(), "result": info,
                                   "losses": [round(v, 5) for v in res.losses]})
    on = f"{res.device}" if cfg.workers == 1 else f"{cfg.workers} Ray Train workers ({res.device})"
    rep.say(f"      {res.steps} steps on {on}, {res.images_per_s:.0f} images/s, final loss {info['final_loss']:.3f}")
    return TrainedSupernet(net, info)


def check_workers(exp: Experiment) -> None:
    """``train.workers`` > 1 needs Ray and at least two images per worker in every batch
    (batch-norm statistics of one image are undefined)."""
    cfg, address = exp.config.train, exp.config.ray.address
    if cfg.workers > 1 and address == "none":
        raise ConfigError(exp.source, "train.workers", f"{cfg.workers} workers run on Ray Train, but ray.address is 'none'")
    if cfg.workers * 2 > cfg.batch_size:
        raise ConfigError(exp.source, "train.workers", f"{cfg.workers} workers need train.batch_size >= "
                          f"{2 * cfg.workers} (two images per worker), got {cfg.batch_size}")


def _train_on_ray(exp: Experiment, net: Supernet, splits: data_mod.Splits, ckpt: Path, resume: bool) -> TrainResult:
    check_workers(exp)
    with ray_session(exp.config.ray.address, exp.config.ray.num_cpus) as ray:
        return train_distributed(ray, net, exp.space, splits.train_x, splits.train_y, exp.config.train, ckpt, resume=resume)


def load(exp: Experiment) -> TrainedSupernet:
    """The supernet an earlier ``nasq run``/``nasq train`` left in the workdir (``nasq search``)."""
    net, record = checkpoint.load(exp.workdir, exp.space, hint=f"; train it first with `nasq train {exp.source}`")
    return TrainedSupernet(net, record.get("result", {}))
