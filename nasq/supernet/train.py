"""One-shot supernet training: the sandwich rule with in-place distillation (at a temperature),
per-layer format sampling, a cosine learning rate after an optional linear warm-up, label
smoothing, seeded crop-and-flip augmentation of images (:mod:`nasq.supernet.augment`), bf16
autocast and ``torch.compile`` on a GPU, and checkpoints (safetensors + JSON) that a resumed run
continues from on the same loss curve.

Importable with torch and numpy alone (the GPU machine has nothing else).

Every random draw of step ``s`` comes from generators seeded by ``(seed, s)`` (subnets) and
``(seed, epoch)`` (data order), never from a stream carried across steps: a run resumed at step
``s`` draws exactly what the uninterrupted run drew.

Data-parallel (a :class:`Shard` of ``world`` > 1 processes in an initialised ``torch.distributed``
group; nasq.cluster.train starts them on Ray Train): every rank draws the same subnets and the same
global batch (the generators above depend on neither rank nor world), trains on its contiguous
part of the batch with its loss weighted by its share, and one all-reduce (sum) of the gradients
and the loss per step gives every rank the global batch's mean gradient, so all ranks take the
same optimizer step. Only batch-norm statistics differ from one process: they are per shard.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nasq.errors import LineageError
from nasq.files import atomic_write_bytes, atomic_write_text
from nasq.space import SearchSpace, SubnetSpec
from nasq.specs import TrainConfig
from nasq.supernet.augment import crop_flip
from nasq.supernet.network import Supernet

ProgressFn = Callable[[int, int, float], None]
CHECKPOINT_WEIGHTS = "checkpoint.safetensors"
CHECKPOINT_STATE = "checkpoint.json"


@dataclass(frozen=True)
class Shard:
    """This process's place in a data-parallel training (``world`` 1: a single process)."""

    rank: int = 0
    world: int = 1


def shard_bounds(n: int, shard: Shard) -> tuple[int, int]:
    """The contiguous part ``[lo, hi)`` of a global batch of ``n`` that ``shard`` trains on; the
    parts cover the batch once, their sizes differ by at most one."""
    return shard.rank * n // shard.world, (shard.rank + 1) * n // shard.world


@dataclass
class TrainResult:
    steps: int
    seconds: float
    images_per_s: float
    losses: list[float] = field(default_factory=list)
    completed: bool = True
    resumed_from: int = 0
    device: str = "cpu"


def resolve_device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def total_steps(cfg: TrainConfig, n_train: int) -> tuple[int, int]:
    per_epoch = max(1, n_train // cfg.batch_size)
    return max(1, math.ceil(cfg.epochs * per_epoch)), per_epoch


def warmup_steps(cfg: TrainConfig, total: int) -> int:
    """Steps of linear warm-up: ``warmup_epochs`` as a share of the ``epochs`` that make ``total``."""
    return min(total - 1, round(total * cfg.warmup_epochs / cfg.epochs)) if cfg.warmup_epochs > 0 else 0


def lr_at(cfg: TrainConfig, step: int, total: int) -> float:
    """Linear warm-up to ``lr`` (step 0 already trains, at ``lr / warm``), then a cosine to 0
    over the remaining steps; without warm-up, the cosine over all of them."""
    warm = warmup_steps(cfg, total)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(step - warm, total - warm) / (total - warm)))


def step_subnets(space: SearchSpace, cfg: TrainConfig, step: int, total: int) -> list[SubnetSpec]:
    """The ``random_subnets`` random subnets trained at ``step`` of ``total`` (formats drawn
    uniformly, or by the menu's weights; during progressive shrinking, only the fields elastic at
    ``step`` vary); the smallest is trained at every step too."""
    rng = np.random.default_rng([cfg.seed, step])
    return space.sample(rng, cfg.random_subnets, weighted=cfg.format_sampling == "weighted",
                        elastic=elastic_at(cfg, step, total))


def elastic_at(cfg: TrainConfig, step: int, total: int) -> frozenset[str] | None:
    """The gene fields that vary at ``step`` of ``total`` under progressive shrinking (``shrink``
    phases of equal length over the first ``shrink_epochs``), or None: every field varies."""
    end = round(total * cfg.shrink_epochs / cfg.epochs)
    if not cfg.shrink or step >= end:
        return None
    phase = step * len(cfg.shrink) // end
    return frozenset(f for group in cfg.shrink[:phase + 1] for f in group)


def epoch_order(cfg: TrainConfig, n: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([cfg.seed, 1_000_003, epoch]).permutation(n)


def train_supernet(net: Supernet, space: SearchSpace, x: np.ndarray, y: np.ndarray, cfg: TrainConfig,
                   progress: ProgressFn | None = None, checkpoint_dir: str | Path | None = None,
                   resume: bool = False, stop_after: int | None = None, shard: Shard = Shard()) -> TrainResult:
    """Each step trains the largest subnet on the labels, then the smallest and random ones on
    the largest's soft predictions; gradients accumulate and one SGD step follows. With
    ``checkpoint_dir`` a checkpoint is written every ``cfg.checkpoint_every`` steps and at the
    end; ``resume`` continues from one there. ``stop_after`` ends the run after that many steps
    (in total), as an interruption would, leaving a resumable checkpoint. With a ``shard`` of
    several processes (see the module docstring) only rank 0 writes checkpoints."""
    device = resolve_device(cfg)
    net.to(device)
    net.learn_ranges(cfg.activation_ranges == "learned")
    problems = space.shrink_problems(cfg.shrink)
    if problems:
        raise ValueError(": ".join(problems[0]))
    total, per_epoch = total_steps(cfg, len(y))
    opt = make_optimizer(net, cfg)
    start, losses = 0, []
    ckpt = Path(checkpoint_dir) if checkpoint_dir else None
    if resume and ckpt is not None and (ckpt / CHECKPOINT_STATE).is_file():
        start, losses = load_checkpoint(net, opt, ckpt, cfg, space)
    _broadcast(net, shard)  # every rank starts from rank 0's weights, however it was initialised
    model = _maybe_compile(net, cfg, device)
    autocast = _autocast(cfg, device)
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    largest, smallest = space.largest(), space.smallest()
    augment = cfg.augment and augments(space)
    net.train()
    t0 = time.perf_counter()
    end = total if stop_after is None else min(total, stop_after)
    order, order_epoch = None, -1
    for step in range(start, end):
        epoch, lo = divmod(step, per_epoch)
        if epoch != order_epoch:
            order, order_epoch = epoch_order(cfg, len(y), epoch), epoch
        batch = order[lo * cfg.batch_size:(lo + 1) * cfg.batch_size]
        a, b = shard_bounds(len(batch), shard)
        idx = torch.from_numpy(batch[a:b]).to(device)
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, step, total)
        xb = crop_flip(xt[idx], cfg.seed, step, a, len(batch)) if augment else xt[idx]
        with autocast:
            elastic = elastic_at(cfg, step, total)
            others = [smallest if elastic is None else space.smallest(elastic), *step_subnets(space, cfg, step, total)]
            others = [spec for spec in others if spec != largest]  # early shrinking phases draw it again
            loss = _sandwich_step(net, model, xb, yt[idx], largest, others, cfg.distill, (b - a) / len(batch),
                                  smoothing=cfg.label_smoothing, temperature=cfg.distill_temperature)
        loss = _all_reduce(net, loss, shard)
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss)
        if progress:
            progress(step + 1, total, loss)
        if ckpt is not None and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == end):
            _average_buffers(net, shard)  # every rank, so that all keep the same statistics
            if shard.rank == 0:
                save_checkpoint(net, opt, ckpt, cfg, space, step + 1, total, losses)
    seconds = time.perf_counter() - t0
    done = end - start
    net.to("cpu")
    return TrainResult(end, seconds, done * cfg.batch_size / max(seconds, 1e-9), losses, end == total, start, device.type)


def augments(space: SearchSpace) -> bool:
    """Whether ``augment`` applies: image inputs only (a series or a table row is left as it is)."""
    return space.config.input.resolution is not None


def make_optimizer(net: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (Nesterov momentum) or AdamW at the recipe's rate; the learned activation ranges
    (``learned_amax``) without weight decay, which would pull them towards zero."""
    named = list(net.named_parameters())
    ranges = [p for n, p in named if n.endswith("learned_amax")]
    rest = [p for n, p in named if not n.endswith("learned_amax")]
    groups = [{"params": rest}] + ([{"params": ranges, "weight_decay": 0.0}] if ranges else [])
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)


def _sandwich_step(net: Supernet, model: torch.nn.Module, xb: torch.Tensor, yb: torch.Tensor,
                   largest: SubnetSpec, others: list[SubnetSpec], distill: bool, share: float = 1.0, *,
                   smoothing: float = 0.0, temperature: float = 1.0) -> float:
    """Backward of every subnet's loss times ``share`` (this shard's part of the global batch);
    returns the largest subnet's loss times ``share``. Hard-label losses take ``smoothing``; the
    distilled ones compare the student's and the largest's predictions at ``temperature`` T,
    scaled by T^2 so that their gradients keep their size whatever T (Hinton et al. 2015)."""
    net.set_active(largest)
    logits = model(xb).float()
    loss = F.cross_entropy(logits, yb, label_smoothing=smoothing) * share
    loss.backward()
    soft = F.softmax(logits.detach() / temperature, dim=1)
    for spec in others:
        net.set_active(spec)
        out = model(xb).float()
        if distill:
            sub = F.cross_entropy(out / temperature, soft) * temperature ** 2
        else:
            sub = F.cross_entropy(out, yb, label_smoothing=smoothing)
        (sub * share).backward()
    return float(loss.detach())


def _all_reduce(net: torch.nn.Module, loss: float, shard: Shard) -> float:
    """Sum the gradients and the (share-weighted) loss over the ranks, in one flat all-reduce:
    each rank's share-weighted mean adds up to the global batch's mean. Every rank trained the same
    subnets, so the same parameters have gradients everywhere; the others keep None, as in one
    process (SGD then leaves them, weight decay included, untouched)."""
    if shard.world == 1:
        return loss
    import torch.distributed as dist

    grads = [p.grad for p in net.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads] + [torch.tensor([loss], device=grads[0].device)])
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
    return float(flat[-1])


def _average_buffers(net: torch.nn.Module, shard: Shard) -> None:
    """Batch-norm running statistics, averaged over the ranks (each saw only its shards)."""
    if shard.world == 1:
        return
    import torch.distributed as dist

    for buf in net.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf)
            buf.div_(shard.world)


def _broadcast(net: torch.nn.Module, shard: Shard) -> None:
    """Rank 0's weights and statistics to every rank."""
    if shard.world == 1:
        return
    import torch.distributed as dist

    for t in [*net.parameters(), *net.buffers()]:
        dist.broadcast(t.data, src=0)


def _autocast(cfg: TrainConfig, device: torch.device):
    use = cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use)


def _maybe_compile(net: Supernet, cfg: TrainConfig, device: torch.device) -> torch.nn.Module:
    """``torch.compile`` on a GPU (``auto``) or when asked; shapes change with every subnet, so it
    compiles with dynamic shapes. The supernet itself stays the module that owns the weights."""
    if cfg.compile == "on" or (cfg.compile == "auto" and device.type == "cuda"):
        return torch.compile(net, dynamic=True)
    return net


# ---------------------------------------------------------------- checkpoints
# Recipe settings added after checkpoints were first written, at the values that train as before:
# left out of the fingerprint there, so that those checkpoints (and supernet identities) still match.
NEUTRAL = {k: TrainConfig.model_fields[k].get_default(call_default_factory=True)
           for k in ("warmup_epochs", "label_smoothing", "augment", "distill_temperature", "shrink", "shrink_epochs")}


def weights_config(cfg: TrainConfig) -> dict:
    """The training settings that decide the weights (threads, checkpoint spacing and the number of
    data-parallel workers do not: workers change only batch-norm statistics, within noise, and a
    checkpoint resumes with another worker count; nor does ``recipe``, which only fills the other
    fields, whose values are what count)."""
    return drop_neutral(cfg.model_dump(mode="json", exclude={"threads", "checkpoint_every", "workers", "recipe"}))


def drop_neutral(train: dict) -> dict:
    """``train`` (a dumped TrainConfig) without the fields at their NEUTRAL value: what
    :func:`weights_config` keeps, also of a record written while one of them was kept."""
    return {k: v for k, v in train.items() if k not in NEUTRAL or v != NEUTRAL[k]}


def checkpoint_finished(folder: Path) -> bool:
    """Whether ``folder`` holds the checkpoint of a run that reached its last step."""
    try:
        state = json.loads((folder / CHECKPOINT_STATE).read_text())
        return int(state["step"]) >= int(state["total_steps"])
    except (OSError, ValueError, KeyError):
        return False


def _fingerprint(cfg: TrainConfig, space: SearchSpace) -> dict:
    return {"space_hash": space.hash, "train": weights_config(cfg)}


def save_checkpoint(net: Supernet, opt: torch.optim.Optimizer, folder: Path, cfg: TrainConfig,
                    space: SearchSpace, step: int, total: int, losses: list[float]) -> None:
    """Weights, batch-norm statistics and the optimizer's state (momentum; AdamW moments and
    step) as safetensors; step and loss curve
    as JSON. Both are written to temporary names of their own (two trainings never share one)
    and renamed, the JSON last."""
    from safetensors.torch import save  # lazy: training must import with torch and numpy alone

    folder.mkdir(parents=True, exist_ok=True)
    names = {id(p): n for n, p in net.named_parameters()}
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    for p, st in opt.state.items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt.{key}.{names[id(p)]}"] = value.detach().cpu().contiguous().reshape(value.shape)
    atomic_write_bytes(folder / CHECKPOINT_WEIGHTS, save(tensors))
    state = {"step": step, "total_steps": total, "losses": losses, **_fingerprint(cfg, space)}
    atomic_write_text(folder / CHECKPOINT_STATE, json.dumps(state))


def load_checkpoint(net: Supernet, opt: torch.optim.Optimizer, folder: Path, cfg: TrainConfig,
                    space: SearchSpace) -> tuple[int, list[float]]:
    from safetensors.torch import load_file  # lazy: training must import with torch and numpy alone

    state = json.loads((folder / CHECKPOINT_STATE).read_text())
    if isinstance(state.get("train"), dict):  # written while a neutral field was kept (shrink: [], 08f841d..306d30b)
        state["train"] = drop_neutral(state["train"])
    expected = _fingerprint(cfg, space)
    for key, value in expected.items():
        if state.get(key) != value:
            raise LineageError(f"{folder / CHECKPOINT_STATE}: {key}: the checkpoint was made with "
                               f"{state.get(key)!r}, this run has {value!r}; pass --fresh (or remove the folder) to start over")
    tensors = load_file(str(folder / CHECKPOINT_WEIGHTS))
    device = next(net.parameters()).device
    net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    params = dict(net.named_parameters())
    for k, v in tensors.items():
        if k.startswith("opt."):
            key, name = k[4:].split(".", 1)
            opt.state[params[name]][key] = v if key == "step" else v.to(device)
    return int(state["step"]), [float(v) for v in state["losses"]]


def read_checkpoint_state(folder: Path) -> dict | None:
    """The JSON half of the checkpoint in ``folder`` (step, total_steps, losses), or None."""
    try:
        return json.loads((Path(folder) / CHECKPOINT_STATE).read_text())
    except (OSError, ValueError):
        return None


def load_checkpoint_weights(net: Supernet, folder: Path) -> None:
    """The weights and statistics of the checkpoint in ``folder`` into ``net`` (a data-parallel
    run's rank 0 leaves its final weights there for the driver)."""
    from safetensors.torch import load_file  # lazy: training must import with torch and numpy alone

    tensors = load_file(str(Path(folder) / CHECKPOINT_WEIGHTS))
    net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
