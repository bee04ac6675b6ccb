"""One-shot supernet training with the sandwich rule and in-place distillation."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from nasq.space import SearchSpace
from nasq.specs import TrainConfig
from nasq.supernet.network import Supernet

ProgressFn = Callable[[int, int, float], None]


@dataclass
class TrainResult:
    steps: int
    seconds: float
    images_per_s: float
    losses: list[float] = field(default_factory=list)


def train_supernet(net: Supernet, space: SearchSpace, x: np.ndarray, y: np.ndarray, cfg: TrainConfig,
                   progress: ProgressFn | None = None) -> TrainResult:
    """Each step trains the largest subnet on the labels, then the smallest and
    ``cfg.random_subnets`` random ones (architecture and per-layer formats sampled uniformly)
    on the largest's soft predictions; gradients accumulate and one SGD step follows."""
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    steps_per_epoch = max(1, len(y) // cfg.batch_size)
    total = max(1, math.ceil(cfg.epochs * steps_per_epoch))
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    largest, smallest = space.largest(), space.smallest()
    net.train()
    losses: list[float] = []
    t0 = time.perf_counter()
    order = torch.randperm(len(y), generator=gen)
    for step in range(total):
        lo = (step % steps_per_epoch) * cfg.batch_size
        if lo == 0 and step > 0:
            order = torch.randperm(len(y), generator=gen)
        idx = order[lo : lo + cfg.batch_size]
        loss = _sandwich_step(net, xt[idx], yt[idx], largest, [smallest, *space.sample(rng, cfg.random_subnets)], cfg.distill)
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        losses.append(loss)
        if progress:
            progress(step + 1, total, loss)
    seconds = time.perf_counter() - t0
    return TrainResult(total, seconds, total * cfg.batch_size / max(seconds, 1e-9), losses)


def _sandwich_step(net: Supernet, xb: torch.Tensor, yb: torch.Tensor, largest, others, distill: bool) -> float:
    net.set_active(largest)
    logits = net(xb)
    loss = F.cross_entropy(logits, yb)
    loss.backward()
    soft = F.softmax(logits.detach(), dim=1)
    for spec in others:
        net.set_active(spec)
        out = net(xb)
        sub = F.cross_entropy(out, soft) if distill else F.cross_entropy(out, yb)
        sub.backward()
    return float(loss.detach())
