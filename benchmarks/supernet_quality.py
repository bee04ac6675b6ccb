"""Does the supernet rank subnets truthfully? Per family, on Fashion-MNIST:

* top-1 of the largest fp32 subnet and of the smallest int4 subnet with inherited weights
  (batch norm and activation ranges recalibrated, nothing else trained);
* beside each, the same architecture (and formats) trained alone from scratch for the same number
  of steps (the same schedule, augmentation and label smoothing; plain cross-entropy, no other
  subnets), recalibrated and evaluated the same way;
* Kendall tau between the inherited-weight top-1 of 12 seeded random subnets and the top-1 of
  the same 12 subnets fine-tuned alone (extracted, then trained with their formats' fake
  quantization for a fixed number of steps; ``--finetune-steps 0`` skips it); ``--ranked random
  stratified`` adds 12 subnets spread evenly by weight bits, smallest to largest, and
  ``random_fp32`` the uniform draws' architectures with every layer in fp32 (the ranking's misses
  without the formats); for each set the text gives what fine-tuning adds per subnet and its
  correlation with the subnets' formats and resolution;
  ``--reference-seeds K`` ranks them by the mean of K fine-tunings on different batch orders, and
  ``--retest`` fine-tunes them again on K more to measure how well that reference repeats;
* beside each tau, its 90 % interval over bootstrap draws of the evaluation images, and beside what
  fine-tuning adds, how much of its spread the images' chance alone makes (``--json-out`` also keeps
  every ranked subnet's per-image correctness as npz); ``--eval-on test+val`` measures on the
  test and validation images together (15,000) for less of that chance.

    .venv/bin/python benchmarks/supernet_quality.py [--recipe custom|demo|full ...] [--epochs E|KEY=E ...]
        [--finetune-steps 150] [--reference-seeds 1] [--retest] [--distill-temperature 1] [--train-limit N]
        [--no-alone] [--section supernet-quality]
        [--spaces mbconv_fmnist resnet_fmnist vit_fmnist seq_fmnist] [--device auto|cpu|cuda]

``--recipe`` names TrainConfig presets (several: one row each, side by side); ``--epochs``
overrides the preset's (custom: 2), for every family (``--epochs 5``) or per family or space
(``--epochs 6 resnet=8 vit=9 sequence=18``: what fills each family's 30 minutes on 2 CPU cores). The
table gives each family's time in all (supernet, trained alone, fine-tuned), the 30-minute goal's. The optimizer is picked by family: SGD for the conv families,
AdamW for the transformers. Progress is printed as a status line every ``--progress-s`` seconds.

Goals: largest >= 92 % (mbconv, resnet), >= 90 % (vit, sequence), smallest int4 >= 88 %, tau >= 0.8,
each beside the architecture trained alone. Top-1 is measured on Fashion-MNIST's 10,000-image
test split (``--eval-on val``: the validation split held out of the training set); the 12 subnets
are fine-tuned alone on the same batches in the same order, so their ranking is paired. Needs torch, numpy, pydantic and pyyaml only (it runs on
the GPU machine). Prints the figures and writes them to docs/benchmarks.md ("Supernet quality").
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import sys
import time
from pathlib import Path
from typing import NoReturn, get_args

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _report import load_average, measured_here, write_section  # noqa: E402

from nasq import data as data_mod  # noqa: E402
from nasq.files import atomic_write_bytes, atomic_write_text  # noqa: E402
from nasq.formats import get_format  # noqa: E402
from nasq.space import SearchSpace, SubnetSpec  # noqa: E402
from nasq.specs import MAX_CHOICES, DataConfig, Family, TrainConfig  # noqa: E402
from nasq.supernet.augment import crop_flip  # noqa: E402
from nasq.supernet.evaluate import calibration_batches, correct_mask  # noqa: E402
from nasq.supernet.network import Supernet  # noqa: E402
from nasq.supernet.train import (  # noqa: E402
    augments,
    drop_neutral,
    epoch_order,
    lr_at,
    make_optimizer,
    resolve_device,
    total_steps,
    train_supernet,
    weights_config,
)

REPO = Path(__file__).resolve().parents[1]
N_RANKED = 12
Held = tuple[np.ndarray, np.ndarray]  # the images and labels every top-1 here is measured on


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall tau-b (ties counted as neither concordant nor discordant)."""
    return float(kendall_tau_rows(np.asarray(a, dtype=float)[None], np.asarray(b, dtype=float)[None])[0])


def kendall_tau_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Kendall tau-b of each row of ``a`` (shape (rows, n)) against the same row of ``b``. Values
    within 1e-9 tie: a top-1 summed in another order (a mean of masks or of top-1s) ranks the same."""
    i, j = np.triu_indices(a.shape[1], k=1)
    da, db = np.sign((a[:, i] - a[:, j]).round(9)), np.sign((b[:, i] - b[:, j]).round(9))
    pairs = len(i)
    denom = np.sqrt((pairs - (da == 0).sum(1)) * (pairs - (db == 0).sum(1)))
    num = (da * db).sum(1)
    return np.divide(num, denom, out=np.zeros(len(a)), where=denom > 0)


def image_noise(inh: np.ndarray, ref: np.ndarray, resamples: int = 2000, seed: int = 0) -> dict:
    """How much of a ranking is the evaluation images': ``inh`` and ``ref`` hold each ranked
    subnet's per-image correctness (shape (subnets, images); ``ref`` a mean over batch orders, so
    fractions), inherited and fine-tuned, on the same images.

    * ``tau_ci``: the 5th and 95th percentiles of Kendall tau (inherited vs reference top-1) over
      ``resamples`` bootstrap draws of the images, the same draw for both (paired, as measured);
    * ``gain_noise``: the sampling std of each subnet's gain (reference minus inherited top-1) from
      its per-image differences, root mean square over the subnets (percentage points);
    * ``gain_half_r``: Pearson r between the subnets' gains on two random halves of the images
      (mean over 200 splits): near 0 the gains differ by the images' chance alone, near 1 by the
      subnets."""
    rng = np.random.default_rng(seed)
    inh, ref = np.asarray(inh, dtype=float), np.asarray(ref, dtype=float)
    n = inh.shape[1]
    taus = []
    for chunk in np.array_split(np.arange(resamples), max(1, resamples // 250)):  # (images, 250) at a time
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=len(chunk)).T / n
        taus.append(kendall_tau_rows((inh @ weights).T, (ref @ weights).T))
    taus = np.concatenate(taus)
    diff = ref - inh
    noise = 100 * np.sqrt(np.mean(diff.var(axis=1, ddof=1) / n))
    halves = []
    for _ in range(200):
        order = rng.permutation(n)
        a, b = (diff[:, order[:n // 2]].mean(1), diff[:, order[n // 2:]].mean(1))
        halves.append(np.corrcoef(a, b)[0, 1] if min(np.ptp(a), np.ptp(b)) > 0 else 0.0)
    return {"tau_ci": [float(np.percentile(taus, 5)), float(np.percentile(taus, 95))],
            "gain_noise": float(noise), "gain_half_r": float(np.mean(halves))}


def finetune_alone(net: Supernet, spec: SubnetSpec, splits: data_mod.Splits, held: Held, calib: list[torch.Tensor],
                   steps: int, batch: int, lr: float, seed: int, device: torch.device, adamw: bool = False) -> np.ndarray:
    """Extract ``spec`` with inherited weights and train it alone for ``steps`` SGD steps; its
    per-image correctness on ``held``."""
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
    return correct_mask(model, *held)  # on the training device


class Status:
    """A status line every ``every_s`` seconds (nasq's StatusLines where rich is installed)."""

    def __init__(self, what: str, total: int, every_s: float):
        try:
            from nasq.stages.progress import StatusLines
            self.lines = StatusLines(what, total, lambda line: print(line, flush=True), every_s)
        except ImportError:  # the GPU machine may lack rich: fall back to the bare figures
            self.lines = None
        self.what, self.total, self.every_s, self.last = what, total, every_s, time.monotonic()

    def __call__(self, done: int, total: int, loss: float) -> None:
        if self.lines is not None:
            self.lines.update(done, total, f"loss {loss:.3f}")
        elif time.monotonic() - self.last >= self.every_s:
            print(f"      {self.what}: {done}/{total} | loss {loss:.3f}", flush=True)
            self.last = time.monotonic()

    def finish(self) -> None:
        if self.lines is not None:
            self.lines.finish()


def train_alone(space: SearchSpace, which: str, splits: data_mod.Splits, held: Held, cfg: TrainConfig,
                calib: list[torch.Tensor], every_s: float, spec: SubnetSpec | None = None) -> tuple[float, float]:
    """The ``which`` (largest or smallest) subnet as a network of its own (a fresh supernet with only it active, its formats' fake
    quantization included), from scratch, trained for the supernet's steps with its schedule,
    data order, augmentation and label smoothing: plain cross-entropy, no other subnets. Evaluated
    as the inherited subnets are (batch norm and activation ranges recalibrated on ``calib``).
    ``spec``: another subnet than the largest or smallest (``which`` then only names it).
    Returns (top-1, seconds)."""
    if spec is None:
        spec = space.largest() if which == "largest" else space.smallest()
    torch.manual_seed(0)
    net = Supernet(space)
    net.learn_ranges(cfg.activation_ranges == "learned")
    net.set_active(spec)
    device = resolve_device(cfg)
    net.to(device).train()
    opt = make_optimizer(net, cfg)
    x, y = torch.from_numpy(splits.train_x).to(device), torch.from_numpy(splits.train_y).to(device)
    total, per_epoch = total_steps(cfg, len(y))
    augment, status = cfg.augment and augments(space), Status(f"{which} alone", total, every_s)
    t0, order, order_epoch = time.perf_counter(), None, -1
    for step in range(total):
        epoch, lo = divmod(step, per_epoch)
        if epoch != order_epoch:
            order, order_epoch = epoch_order(cfg, len(y), epoch), epoch
        idx = torch.from_numpy(order[lo * cfg.batch_size:(lo + 1) * cfg.batch_size]).to(device)
        xb = crop_flip(x[idx], cfg.seed, step) if augment else x[idx]
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step, total)
        loss = F.cross_entropy(net(xb), y[idx], label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        status(step + 1, total, float(loss.detach()))
    status.finish()
    seconds = time.perf_counter() - t0
    net.eval()
    return inherited(net, spec, held, calib), seconds  # recalibrated and evaluated on the training device


def inherited(net: Supernet, spec: SubnetSpec, held: Held, calib: list[torch.Tensor]) -> float:
    return float(top1(inherited_mask(net, spec, held, calib)))


def inherited_mask(net: Supernet, spec: SubnetSpec, held: Held, calib: list[torch.Tensor]) -> np.ndarray:
    """Per-image correctness of ``spec`` with inherited weights, recalibrated on ``calib``."""
    net.set_active(spec)
    net.calibrate(calib)
    return correct_mask(net, *held)


def top1(mask: np.ndarray) -> np.ndarray:
    """Percent of the images right (the mean over the last axis: per subnet for a stack of masks)."""
    return 100.0 * np.asarray(mask, dtype=float).mean(axis=-1)


def is_transformer(space: SearchSpace) -> bool:
    """The families trained with AdamW (and, by default, without in-place distillation)."""
    return space.family in ("vit", "sequence")


def train_config(space: SearchSpace, recipe: str, args: argparse.Namespace) -> TrainConfig:
    """The recipe's preset, with the optimizer picked by family (AdamW for the transformers), and
    in-place distillation as ``--distill`` says (auto: on for the conv families, off for the
    transformers), at ``--distill-temperature``, with ``--random-subnets`` random subnets per step
    (TrainConfig's defaults where ``args`` has none)."""
    transformer = is_transformer(space)
    distill = args.distill == "on" or (args.distill == "auto" and not transformer)
    epochs = epochs_for(space, args.epochs)
    epochs = epochs if epochs is not None else (2.0 if recipe == "custom" else None)
    given = {"epochs": epochs} if epochs is not None else {}
    return TrainConfig(recipe=recipe, **given, batch_size=args.batch_size, device=args.device,
                       seed=getattr(args, "seed", 0),
                       optimizer="adamw" if transformer else "sgd", lr=args.adamw_lr if transformer else args.lr,
                       weight_decay=0.05 if transformer else 4e-5, distill=distill, amp=args.amp,
                       compile=args.compile, distill_temperature=getattr(args, "distill_temperature", DISTILL_T),
                       random_subnets=getattr(args, "random_subnets", RANDOM_SUBNETS),
                       shrink=shrink_groups(getattr(args, "shrink", [])), shrink_epochs=getattr(args, "shrink_epochs", 0.0))


def shrink_groups(words: list[str]) -> list[list[str]]:
    """``--shrink``'s words as TrainConfig.shrink: each word one phase, its fields comma-separated."""
    return [[f for f in word.split(",") if f] for word in words]


def parse_epochs(words: list[str], spaces: list[str] | None = None) -> dict[str, float]:
    """``--epochs``' words as ``{key: epochs}``: a bare number is every family's (key ``""``),
    ``KEY=E`` one family's (``nasq.specs.Family``) or one space's (``seq_fmnist=18``); a
    space's entry wins over its family's, a family's over the bare number. Raises ValueError naming
    the word that is not one of these (with ``spaces``, a KEY that names none of them or of the
    families)."""
    known = None if spaces is None else set(spaces) | set(get_args(Family))
    out: dict[str, float] = {}
    for word in words:
        key, _, value = word.rpartition("=")
        if key and known is not None and key not in known:
            raise ValueError(f"--epochs: {word!r} names no family or space (known: {', '.join(sorted(known))})")
        try:
            epochs = float(value)
        except ValueError:
            raise ValueError(f"--epochs: {word!r} is not a number of epochs (E or KEY=E)") from None
        if not 0 < epochs <= 1000:
            raise ValueError(f"--epochs: {word!r}: epochs must lie in (0, 1000]")
        if key in out:
            raise ValueError(f"--epochs: {key or 'the bare number'!s} given twice")
        out[key] = epochs
    return out


def epochs_for(space: SearchSpace, given: list[str] | float | None) -> float | None:
    """The epochs ``--epochs`` gives this space (None: the recipe's). ``given`` is ``--epochs``'
    words, or one number (benchmarks/activation_ranges.py passes one)."""
    if given is None or isinstance(given, (int, float)):
        return given
    per = parse_epochs(given)  # its keys were checked against --spaces when parsed
    for key in (space.name, space.family, ""):
        if key in per:
            return per[key]
    return None


def run_space(name: str, recipe: str, splits: data_mod.Splits, args: argparse.Namespace) -> dict:
    space = SearchSpace.from_yaml(REPO / "search_spaces" / f"{name}.yaml")
    transformer = is_transformer(space)
    cfg = train_config(space, recipe, args)
    print(f"{name} recipe {recipe}: {cfg.epochs:g} epochs, warm-up {cfg.warmup_epochs:g}, smoothing "
          f"{cfg.label_smoothing:g}, augment {cfg.augment and augments(space)}, {cfg.optimizer} lr {cfg.lr:g}, "
          f"distill {cfg.distill}" + (f" (T {cfg.distill_temperature:g})" if cfg.distill else ""), flush=True)
    kept = Path(args.load_supernet or args.save_supernet or ".") / f"{name}_{recipe}"  # --load/--save-supernet
    if args.load_supernet:
        net, trained = load_supernet(kept, space, cfg, args.train_limit)
        train_s, steps, trained_on = trained["train_s"], trained["steps"], trained["device"]
        t0 = time.perf_counter() - train_s  # "in all" keeps the training time its record gives
    else:
        torch.manual_seed(getattr(args, "seed", 0))
        net = Supernet(space)
        t0 = time.perf_counter()
        status = Status("supernet", total_steps(cfg, len(splits.train_y))[0], args.progress_s)
        res = train_supernet(net, space, splits.train_x, splits.train_y, cfg, progress=status)
        status.finish()
        train_s, steps, trained_on = time.perf_counter() - t0, res.steps, res.device
        if args.save_supernet:
            save_supernet(net, kept, space, cfg,
                          {"train_s": train_s, "steps": steps, "device": trained_on, "train_limit": args.train_limit})
    calib = calibration_batches(splits.train_x, 1024, 256, seed=1)
    device = resolve_device(cfg)
    net.to(device).eval()  # recalibrate and evaluate where it trained (a GPU too)
    held = held_images(splits, args.eval_on)
    largest, smallest = inherited(net, space.largest(), held, calib), inherited(net, space.smallest(), held, calib)
    out = {"space": name, "family": space.family, "recipe": recipe, "epochs": cfg.epochs, "train_s": train_s,
           "steps": steps, "device": trained_on, "distill": cfg.distill, "largest": largest, "smallest": smallest,
           "smallest_key": space.smallest().key(), "tau": float("nan"), "largest_alone": float("nan"),
           "smallest_alone": float("nan"), "alone_s": 0.0, "smallest_alone_s": 0.0,
           "where": (torch.cuda.get_device_name() if trained_on == "cuda"
                     else f"CPU ({torch.get_num_threads()} torch threads)"),
           "args": {k: getattr(args, k) for k in RENDERED_ARGS}, "n_train": len(splits.train_y),
           "held": held_note(len(held[1]), args.eval_on), "measured": measured_here()}
    if args.load_supernet:
        out["loaded_from"] = str(kept)
    save_row(out, args.json_out, t0)
    lr = args.finetune_lr / 10 if transformer else args.finetune_lr
    for ranked in args.ranked if args.finetune_steps > 0 else ():
        specs = ranked_subnets(space, ranked)
        shared_masks = np.array([inherited_mask(net, s, held, calib) for s in specs])
        shared = top1(shared_masks)
        t1 = time.perf_counter()
        # one seed for all: every subnet is fine-tuned on the same batches in the same order (paired)
        masks = reference(net, specs, splits, held, calib, lr, device, args, range(args.reference_seeds),
                          adamw=transformer)
        per_seed = top1(masks)
        alone = per_seed.mean(axis=0)
        suffix = RANKED[ranked][0]
        out.update({f"tau{suffix}": kendall_tau(shared, alone), f"subnets{suffix}": [s.to_dict() for s in specs],
                    f"inherited{suffix}": shared.tolist(),
                    f"alone{suffix}": alone.tolist(), f"finetune_s{suffix}": time.perf_counter() - t1,
                    **{f"{k}{suffix}": v for k, v in image_noise(shared_masks, masks.mean(axis=0)).items()}})
        save_masks(out, args.json_out, suffix, shared_masks, masks)
        if args.reference_seeds > 1:  # the reference's repeatability, from its own halves
            half = args.reference_seeds // 2
            out.update({f"alone_seeds{suffix}": per_seed.tolist(),
                        f"half_tau{suffix}": kendall_tau(per_seed[:half].mean(axis=0), per_seed[half:].mean(axis=0))})
        save_row(out, args.json_out, t0)
        print(f"{name} {N_RANKED} {ranked} subnets, inherited top-1: {' '.join(f'{v:.2f}' for v in shared)}\n"
              f"{name} {N_RANKED} {ranked} subnets, fine-tuned alone: {' '.join(f'{v:.2f}' for v in alone)}\n"
              f"{name} {N_RANKED} {ranked} subnets, tau {out[f'tau{suffix}']:.2f}", flush=True)
    if not args.no_alone:
        out["largest_alone"], out["alone_s"] = train_alone(space, "largest", splits, held, cfg, calib, args.progress_s)
        save_row(out, args.json_out, t0)
        out["smallest_alone"], out["smallest_alone_s"] = train_alone(space, "smallest", splits, held, cfg, calib,
                                                                     args.progress_s)
        save_row(out, args.json_out, t0)
    save_row(out, None, t0)  # the whole family's time, the 30-minute goal's
    if args.retest and args.finetune_steps > 0:
        retest(out, net, space, splits, held, calib, lr, device, args)
    print(f"{name:<14} {recipe:<6} train {train_s:6.0f} s ({out['total_s'] / 60:.1f} min in all)  largest fp32 {largest:5.2f} % (alone "
          f"{out['largest_alone']:5.2f} %)  smallest int4 {smallest:5.2f} % (alone {out['smallest_alone']:5.2f} %)  "
          f"tau {out['tau']:.2f}", flush=True)
    return out


# --epochs for each family's 30 minutes on 2 CPU cores (whole run: supernet, the two trained
# alone, the 24 fine-tuned), measured: 25-29 minutes each (docs/benchmarks.md, supernet-budget30)
BUDGET_30MIN = ("6", "resnet=8", "vit=9", "sequence=18")

DISTILL_T = TrainConfig.model_fields["distill_temperature"].default  # T = 1: plain in-place distillation
RANDOM_SUBNETS = TrainConfig.model_fields["random_subnets"].default  # the sandwich's middle: 2 random subnets

# the arguments the section's text names, kept in each row so that ``--from-json`` renders it as run
RENDERED_ARGS = ("recipe", "epochs", "finetune_steps", "eval_on", "distill", "distill_temperature", "random_subnets",
                 "train_limit", "no_alone", "lr", "adamw_lr", "batch_size", "amp", "compile", "ranked", "retest",
                 "reference_seeds", "shrink", "shrink_epochs", "seed")


def save_supernet(net: Supernet, folder: Path, space: SearchSpace, cfg: TrainConfig, trained: dict) -> None:
    """``--save-supernet``: the trained supernet as nasq's checkpoint pair (safetensors + JSON), with
    the TrainConfig it was trained under, the training images it saw (``trained["train_limit"]``)
    and its time, so a later run can rank subnets on it again."""
    from nasq.supernet import checkpoint  # filelock: not needed on a machine that only trains

    folder.mkdir(parents=True, exist_ok=True)
    checkpoint.save(net.cpu(), folder, {"space": space.name, "space_hash": space.hash,
                                        "train": weights_config(cfg), **trained})


def load_supernet(folder: Path, space: SearchSpace, cfg: TrainConfig,
                  train_limit: int | None = None) -> tuple[Supernet, dict]:
    """``--load-supernet``: a supernet saved by ``--save-supernet`` for this space; refused (exit
    2, one line) when the folder lacks it or it was trained under another TrainConfig than the
    arguments give now, or on another ``--train-limit`` (the row would name settings its weights
    were not trained with)."""
    from nasq.errors import NasqError
    from nasq.supernet import checkpoint

    try:
        net, record = checkpoint.load(folder, space)
    except NasqError as e:
        refuse(f"--load-supernet: {e}")
    want = {"train_limit": train_limit, **{f"train.{k}": v for k, v in weights_config(cfg).items()}}
    saved = {"train_limit": record.get("train_limit"),
             **{f"train.{k}": v for k, v in drop_neutral(record.get("train", {})).items()}}
    differ = sorted(k for k in want.keys() | saved.keys() if saved.get(k) != want.get(k))
    if differ:
        k = differ[0]
        refuse(f"--load-supernet: {folder / checkpoint.RECORD}: {k} is {saved.get(k)!r}, "
               f"the arguments give {want.get(k)!r}")
    return net, record


def refuse(message: str) -> NoReturn:
    """Bad input: one line naming the file, field and value, exit 2."""
    print(f"supernet_quality.py: {message}", file=sys.stderr)
    sys.exit(2)


def reference(net: Supernet, specs: list[SubnetSpec], splits: data_mod.Splits, held: Held,
              calib: list[torch.Tensor], lr: float, device: torch.device, args: argparse.Namespace,
              seeds: range, adamw: bool) -> np.ndarray:
    """Per-image correctness of each of ``specs`` fine-tuned alone once per seed (a batch order,
    the same for every subnet: paired), shape (seeds, subnets, images); :func:`top1` of it is the
    (seeds, subnets) top-1, the reference its mean over seeds."""
    return np.array([[finetune_alone(net, s, splits, held, calib, args.finetune_steps, args.batch_size, lr,
                                     seed=seed, device=device, adamw=adamw) for s in specs] for seed in seeds])


def retest(out: dict, net: Supernet, space: SearchSpace, splits: data_mod.Splits, held: Held,
           calib: list[torch.Tensor], lr: float, device: torch.device, args: argparse.Namespace) -> None:
    """``--retest``: fine-tune the ranked subnets alone once more, on other batch orders (seeds K
    to 2K - 1 for ``--reference-seeds K``; each the same for all twelve), and record tau between
    the two references (how well the reference repeats its own ranking: a ceiling for tau against
    it) and tau of the inherited top-1 against the second. Runs after the family's timed parts:
    ``total_s`` stays as it was."""
    t0 = time.perf_counter()
    k = args.reference_seeds
    for ranked in args.ranked:
        suffix = RANKED[ranked][0]
        again_seeds = top1(reference(net, ranked_specs(out, ranked), splits, held, calib, lr, device, args,
                                     range(k, 2 * k), adamw=is_transformer(space)))
        again = again_seeds.mean(axis=0)
        if k > 1:
            out[f"alone_again_seeds{suffix}"] = again_seeds.tolist()
        out.update({f"alone_again{suffix}": again.tolist(),
                    f"retest_tau{suffix}": kendall_tau(np.array(out[f"alone{suffix}"]), again),
                    f"tau_again{suffix}": kendall_tau(np.array(out[f"inherited{suffix}"]), again),
                    "retest_s": time.perf_counter() - t0})
        save_row(out, args.json_out, None)
        print(f"{out['space']} {N_RANKED} {ranked} subnets, fine-tuned again ({f'seed {k}' if k == 1 else f'seeds {k}-{2 * k - 1}'}): "
              f"{' '.join(f'{v:.2f}' for v in again)}\n{out['space']} {N_RANKED} {ranked} subnets, tau between the "
              f"two fine-tunings {out[f'retest_tau{suffix}']:.2f}, inherited vs the second "
              f"{out[f'tau_again{suffix}']:.2f}", flush=True)


# each ``--ranked`` set (see ranked_subnets): its row keys' suffix and its name in the text
RANKED = {"random": ("", "uniform draws"), "stratified": ("_stratified", "spread by size"),
          "random_fp32": ("_random_fp32", "uniform draws' architectures, all fp32")}
RANKED_LABELS = tuple(RANKED.values())


def retest_note(rows: list[dict]) -> str:
    """The ``--retest`` figures of the rows that have them, as a paragraph under the table."""
    parts = []
    seeds = max([r.get("args", {}).get("reference_seeds", 1) for r in rows] or [1])
    pair = "fine-tunings" if seeds == 1 else "means"
    for r in rows:
        kinds = [(k, label) for k, label in RANKED_LABELS if f"retest_tau{k}" in r]
        if kinds:
            parts.append(f"{r['space']} ({r['recipe']}): " + "; ".join(
                f"{label}: {r[f'retest_tau{k}']:.2f} between the two {pair}, {r[f'tau_again{k}']:.2f} "
                f"inherited vs the second" for k, label in kinds)
                + f" ({r['retest_s'] / 60:.1f} min more, not in \"in all\")")
    orders = "another batch order (seed 1)" if seeds == 1 else f"{seeds} other batch orders (seeds {seeds}-{2 * seeds - 1}, averaged)"
    text = ("\n**Retest of the reference** (`--retest`): the ranked subnets fine-tuned alone again for the same "
            f"steps on {orders}. Kendall tau " + ". ".join(parts) + ".\n") if parts else ""
    halves = []
    for r in rows:
        kinds = [(k, label) for k, label in RANKED_LABELS if f"half_tau{k}" in r]
        if kinds:
            k_seeds = len(r[f"alone_seeds{kinds[0][0]}"])
            halves.append(f"{r['space']} ({r['recipe']}): " + "; ".join(
                f"{label}: {r[f'half_tau{k}']:.2f}" for k, label in kinds) + f" ({k_seeds} batch orders)")
    if halves:
        text += ("\n**The reference's halves** (`--reference-seeds`): Kendall tau between the mean of the first "
                 "half of the batch orders and the mean of the second. " + ". ".join(halves) + ".\n")
    return text


def ranked_specs(row: dict, how: str) -> list[SubnetSpec]:
    """The subnets of a row's ranked set ``how``: as the row keeps them, or (rows written before
    it did) drawn again from the row's space the way :func:`ranked_subnets` drew them."""
    suffix = RANKED[how][0]
    if f"subnets{suffix}" in row:
        return [SubnetSpec.from_dict(d) for d in row[f"subnets{suffix}"]]
    return ranked_subnets(SearchSpace.from_yaml(REPO / "search_spaces" / f"{row['space']}.yaml"), how)


def gain(row: dict, suffix: str) -> np.ndarray:
    """What fine-tuning adds to each subnet of a row's ranked set: reference minus inherited top-1."""
    return np.array(row[f"alone{suffix}"]) - np.array(row[f"inherited{suffix}"])


def gain_features(specs: list[SubnetSpec]) -> dict[str, np.ndarray]:
    """Per subnet: the share of its layers with fp32 weights, the share with weights of 4 bits or
    fewer, and its input resolution (what :func:`gain_note` correlates the fine-tuning gain with)."""
    bits = [[get_format(layer.w_format).bits for layer in s.layers()] for s in specs]
    return {"the share of layers with fp32 weights": np.array([np.mean([b >= 32 for b in row]) for row in bits]),
            "the share with weights of 4 bits or fewer": np.array([np.mean([b <= 4 for b in row]) for row in bits]),
            "the resolution": np.array([float(s.resolution) for s in specs])}


def twins_gain_r(row: dict, suffix: str) -> float | None:
    """For the fp32 twins (``_random_fp32``) of a row that also ranked their originals
    (``random``): Pearson r between the two sets' gains, subnet by subnet. Near 1, what fine-tuning
    adds is the architecture's and not the formats'."""
    if suffix != "_random_fp32" or "alone" not in row:
        return None
    gains = [gain(row, ""), gain(row, suffix)]
    return float(np.corrcoef(*gains)[0, 1]) if min(np.ptp(g) for g in gains) > 0 else None


def gain_note(rows: list[dict]) -> str:
    """What fine-tuning adds to each ranked subnet (reference minus inherited top-1): its mean, how
    much it differs between subnets, and its Pearson correlation with the subnets' formats and
    resolution; a subnet-dependent gain is what moves the inherited ranking off the reference. The
    sets the table has no column for (``random_fp32``) give their tau here."""
    parts = []
    for r in rows:
        for how, (k, label) in RANKED.items():
            if f"alone{k}" not in r:
                continue
            added = gain(r, k)
            feats = gain_features(ranked_specs(r, how))
            corr = [f"{name} {np.corrcoef(x, added)[0, 1]:+.2f}" for name, x in feats.items()
                    if np.ptp(x) > 0 and np.ptp(added) > 0]
            parts.append(f"{r['space']}, {label}: "
                         + (f"tau {_tau(r, k)}; " if k not in ("", "_stratified") else "")
                         + f"mean {added.mean():+.2f} pt, std {added.std(ddof=1):.2f} pt between subnets"
                         + (f" (the images' chance alone: {r[f'gain_noise{k}']:.2f} pt; r between the gains on two "
                            f"halves of the images {r[f'gain_half_r{k}']:+.2f})" if f"gain_noise{k}" in r else "")
                         + (f"; r with {', '.join(corr)}" if corr else "")
                         + (f"; r with their originals' gain (the same architectures in their own formats) {twin_r:+.2f}"
                            if (twin_r := twins_gain_r(r, k)) is not None else ""))
    if not parts:
        return ""
    return ("\n**What fine-tuning adds** (reference minus inherited top-1 of each ranked subnet; r: Pearson "
            "correlation over the subnets): " + ". ".join(parts) + ".\n")


def save_row(row: dict, folder: str | None, started: float | None) -> None:
    """The row so far, with ``total_s`` (seconds since ``started``, the family's start; kept as it
    was when ``started`` is None), as ``<folder>/<space>.json`` (rewritten after each part, so a run
    stopped by a time limit still leaves what it measured; ``--from-json`` renders such rows)."""
    if started is not None:
        row["total_s"] = time.perf_counter() - started
    if folder:
        row["load"] = load_average()
        Path(folder).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(folder) / f"{row['space']}_{row['recipe']}.json", json.dumps(row, indent=1))


def save_masks(row: dict, folder: str | None, suffix: str, inherited: np.ndarray, reference: np.ndarray) -> None:
    """With ``--json-out``: a ranked set's per-image correctness, inherited (subnets, images) and
    fine-tuned (batch orders, subnets, images), as ``<space>_<recipe>_masks<suffix>.npz`` beside
    the row, so that any other statistic over the images can be computed later."""
    if folder:
        buf = io.BytesIO()
        np.savez_compressed(buf, inherited=inherited.astype(bool), reference=reference.astype(bool))
        atomic_write_bytes(Path(folder) / f"{row['space']}_{row['recipe']}_masks{suffix}.npz", buf.getvalue())


def ranked_subnets(space: SearchSpace, how: str) -> list[SubnetSpec]:
    """The subnets whose ranking tau measures. ``random``: 12 seeded uniform draws, most of them
    mid-sized, so they may lie within a point of each other. ``stratified``: 12 spread over the
    space's range, from 240 seeded draws sorted by weight bits (parameters times their format's
    bits: size and precision together), the 0th, 1/11th, ..., last of that order, as a front
    spreads from small to large. ``random_fp32``: the ``random`` draws' architectures with every
    layer in fp32 (weights and activations): beside ``random``, the ranking's misses of the
    architectures alone, without their formats."""
    if how in ("random", "random_fp32"):
        drawn = space.sample_unique(np.random.default_rng(7), N_RANKED)
        return drawn if how == "random" else [all_fp32(s) for s in drawn]
    pool = space.sample_unique(np.random.default_rng(8), 20 * N_RANKED)
    bits = [sum(s.params * get_format(s.w_format).bits for s in space.layer_shapes(spec)) for spec in pool]
    order = np.argsort(bits, kind="stable")
    return [pool[order[i]] for i in np.linspace(0, len(pool) - 1, N_RANKED).round().astype(int)]


def all_fp32(spec: SubnetSpec) -> SubnetSpec:
    """``spec`` with every layer's weights and activations in fp32 (the same architecture)."""
    return dataclasses.replace(spec, stages=tuple(
        tuple(dataclasses.replace(layer, w_format="fp32", a_format="fp32") for layer in stage)
        for stage in spec.stages))


def _spread(row: dict, suffix: str = "") -> str:
    """Max - min top-1 of the ranked subnets, inherited and fine-tuned alone: next to tau, how much
    signal the ranking had against the validation split's noise."""
    if f"inherited{suffix}" not in row:
        return "-"
    return f"{np.ptp(row[f'inherited{suffix}']):.2f} / {np.ptp(row[f'alone{suffix}']):.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spaces", nargs="+", default=["mbconv_fmnist", "resnet_fmnist", "vit_fmnist", "seq_fmnist"])
    ap.add_argument("--recipe", nargs="+", default=["custom"], choices=["custom", "demo", "full"],
                    help="TrainConfig presets, one row each (custom: today's plain recipe)")
    ap.add_argument("--epochs", nargs="+", default=None, metavar="E|KEY=E",
                    help="override the recipe's epochs (custom: 2): a number for every family, KEY=E for one "
                         "family (mbconv, resnet, vit, sequence) or space; e.g. the 30-minute budget per "
                         f"family on 2 CPU cores: --epochs {' '.join(BUDGET_30MIN)}")
    ap.add_argument("--no-alone", action="store_true", help="skip the largest and smallest subnets trained alone")
    ap.add_argument("--progress-s", type=float, default=30.0, help="seconds between status lines")
    ap.add_argument("--section", default="supernet-quality", help="docs/benchmarks.md section to write")
    ap.add_argument("--note", default="", help="a reading to write under the table")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (conv families)")
    ap.add_argument("--adamw-lr", type=float, default=2e-3, help="AdamW learning rate (transformer families)")
    ap.add_argument("--distill", default="auto", choices=["auto", "on", "off"],
                    help="in-place distillation from the largest subnet (auto: on for the conv families, off for "
                         "the transformers, where it cost 7-8 points at 2 epochs)")
    ap.add_argument("--distill-temperature", type=float, default=DISTILL_T,
                    help="T of the in-place distillation (TrainConfig.distill_temperature; soft targets and "
                         "students at T, the loss scaled by T^2; T 2 diverged on mbconv_fmnist at SGD lr 0.05, "
                         "docs/benchmarks.md, supernet-budget30-mbconv7)")
    ap.add_argument("--random-subnets", type=int, default=RANDOM_SUBNETS,
                    help="random subnets per step between the largest and the smallest (TrainConfig.random_subnets; "
                         "each costs about a fifth of an mbconv step)")
    ap.add_argument("--shrink", nargs="+", default=[], metavar="FIELD[,FIELD]",
                    help="progressive shrinking (TrainConfig.shrink): one word per phase, the gene fields it makes "
                         "elastic, e.g. kernel depth expand,width; every field varies after --shrink-epochs")
    ap.add_argument("--shrink-epochs", type=float, default=0.0, metavar="E",
                    help="epochs the --shrink phases share equally (TrainConfig.shrink_epochs)")
    ap.add_argument("--seed", type=int, default=0,
                    help="the supernet's seed (TrainConfig.seed and its initial weights); the ranked subnets, "
                         "calibration images and fine-tuning orders keep theirs")
    ap.add_argument("--finetune-steps", type=int, default=150)
    ap.add_argument("--ranked", nargs="+", default=["random"], choices=list(RANKED),
                    help="which 12 subnets tau ranks (see ranked_subnets): random and stratified side by side in "
                         "the table; random_fp32 (the random draws' architectures, all in fp32) below it")
    ap.add_argument("--finetune-lr", type=float, default=0.01)
    ap.add_argument("--retest", action="store_true",
                    help="after the timed parts, fine-tune the ranked subnets again on K more batch orders "
                         "(--reference-seeds K): tau between the two references, the reference's own "
                         "repeatability")
    ap.add_argument("--reference-seeds", type=int, default=1, metavar="K",
                    help="fine-tune each ranked subnet on K batch orders and rank by the mean (a reference K "
                         "times less noisy in variance; the 12 fine-tunings take K times as long); K >= 2 also "
                         "reports tau between the means of the two halves")
    ap.add_argument("--save-supernet", default=None, metavar="DIR",
                    help="save each trained supernet (safetensors + JSON) in DIR/<space>_<recipe>/")
    ap.add_argument("--load-supernet", default=None, metavar="DIR",
                    help="train nothing: rank and fine-tune on the supernets --save-supernet left in DIR (the same "
                         "recipe and arguments; the training time is the saved one)")
    ap.add_argument("--train-limit", type=int, default=None, help="use only this many training images")
    ap.add_argument("--val-size", type=int, default=5000)
    ap.add_argument("--eval-on", default="test", choices=["test", "val", "test+val"],
                    help="measure top-1 on the 10,000-image test split (default; nothing here is tuned on it), "
                         "on the validation split held out of the training images, or on both together (less "
                         "image-sampling noise in tau)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--data", default=None, help="Fashion-MNIST folder (default: the Debian package's)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    ap.add_argument("--amp", default="auto", choices=["auto", "off", "bf16"],
                    help="bf16 autocast (TrainConfig.amp; auto: on a GPU only)")
    ap.add_argument("--compile", default="auto", choices=["auto", "off", "on"],
                    help="torch.compile (TrainConfig.compile; auto: on a GPU only)")
    ap.add_argument("--json-out", default=None, help="also write each row as JSON in this folder, after each part")
    ap.add_argument("--from-json", nargs="+", default=None,
                    help="train nothing: render the section from rows written by --json-out (e.g. on a GPU machine)")
    ap.add_argument("--measured", default=None,
                    help="--from-json: when and where the rows were measured (default: as the rows say)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.epochs is not None:
        try:
            parse_epochs(args.epochs, args.spaces)
        except ValueError as e:
            ap.error(str(e))
    if not 0 < args.distill_temperature <= 100:  # TrainConfig's bounds
        ap.error(f"--distill-temperature: {args.distill_temperature:g} must lie in (0, 100]")
    if not 0 <= args.random_subnets <= MAX_CHOICES:  # TrainConfig's bounds
        ap.error(f"--random-subnets: {args.random_subnets} must lie in [0, {MAX_CHOICES}]")
    if bool(args.shrink) != (args.shrink_epochs > 0):
        ap.error(f"--shrink and --shrink-epochs (> 0) go together, got {args.shrink} and {args.shrink_epochs:g}")
    if not 1 <= args.reference_seeds <= 16:
        ap.error(f"--reference-seeds: {args.reference_seeds} must lie in [1, 16]")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.from_json:  # rows measured elsewhere: the text names the arguments they were run with
        rows = [json.loads(Path(f).read_text()) for f in args.from_json]
        vars(args).update(rows[0]["args"], recipe=sorted({r["recipe"] for r in rows}))
        load = rows[-1]["load"]
    else:
        splits = data_mod.load(DataConfig(name="fashion_mnist", path=args.data, fallback="none",
                                          train_limit=args.train_limit, val_size=args.val_size))
        print(splits.summary(), flush=True)
        rows = [run_space(name, recipe, splits, args) for name in args.spaces for recipe in args.recipe]
        load = load_average()
    where = rows[0]["where"]
    cmd = (f"python benchmarks/supernet_quality.py --recipe {' '.join(args.recipe)}"
           + (f" --epochs {' '.join(epochs_words(args.epochs))}" if args.epochs is not None else "")
           + f" --finetune-steps {args.finetune_steps} --eval-on {args.eval_on} --distill {args.distill}"
           + (f" --distill-temperature {args.distill_temperature:g}" if args.distill_temperature != DISTILL_T else "")
           + (f" --random-subnets {args.random_subnets}" if args.random_subnets != RANDOM_SUBNETS else "")
           + (f" --shrink {' '.join(args.shrink)} --shrink-epochs {args.shrink_epochs:g}" if args.shrink else "")
           + (f" --seed {args.seed}" if getattr(args, "seed", 0) else "")
           + (f" --train-limit {args.train_limit}" if args.train_limit else "") + (" --no-alone" if args.no_alone else "")
           + "".join(f" --{k} {getattr(args, k)}" for k in ("amp", "compile") if getattr(args, k) != "auto")
           + (f" --ranked {' '.join(args.ranked)}" if args.ranked != ["random"] else "")
           + (" --retest" if getattr(args, "retest", False) else "")
           + (f" --reference-seeds {args.reference_seeds}" if args.reference_seeds > 1 else ""))
    stratified = "stratified" in args.ranked
    noise = any("tau_ci" in r for r in rows)
    body = (f"`{cmd}` on **{where}**, load average at the end {' '.join(load)}. Fashion-MNIST "
            f"({rows[0]['n_train']} training images, top-1 on the {rows[0]['held']}). "
            f"Supernet trained with the sandwich rule ({args.random_subnets} random subnet{'' if args.random_subnets == 1 else 's'} per step; in-place distillation: "
            + ", ".join(f"{'on' if r['distill'] else 'off'} for {r['space']}" for r in rows) + ") under the named TrainConfig recipe"
            + (f", with progressive shrinking: {len(args.shrink)} equal phases over the first {args.shrink_epochs:g} "
               f"epochs, varying {' then '.join('+'.join(shrink_groups([w])[0]) for w in args.shrink)} (the other "
               "fields at the largest's choice), every field after" if args.shrink else "") + " "
            f"(SGD lr {args.lr:g} for conv families, AdamW lr {args.adamw_lr:g} for transformers); inherited weights "
            "are recalibrated (batch norm, activation ranges) on 1024 training images. \"alone\": the same "
            "architecture and formats trained from scratch by itself for the same steps and recipe (schedule, "
            "augmentation, label smoothing), cross-entropy on the labels, no other subnets, then recalibrated "
            "and evaluated the same way. "
            + (f"Tau: the {N_RANKED} ranked subnets fine-tuned alone for {args.finetune_steps} steps of batch "
               f"{args.batch_size}"
               + (f", the mean of {args.reference_seeds} batch orders" if args.reference_seeds > 1 else "")
               + ". " if args.finetune_steps > 0 else "Tau not measured (`--finetune-steps 0`). ")
            + ("The 12 ranked subnets: seeded uniform draws (\"Kendall tau\"); \"spread by size\": 12 of 240 "
               "seeded draws evenly spaced in weight bits (parameters times bits), smallest to largest. "
               if stratified else "")
            + ("The supernets were trained by an earlier run and loaded (`--load-supernet`); their training "
               "time is the one saved with them. " if any("loaded_from" in r for r in rows) else "")
            + ("The interval beside each tau: its 5th to 95th percentile over 2,000 bootstrap draws of the "
               "evaluation images (the same draw for inherited and fine-tuned), what the images' chance alone "
               "moves it by. " if noise else "")
            + "Goals: largest >= 92 % (conv) / >= 90 % (transformers), smallest int4 >= 88 %, "
            "tau >= 0.8.\n\n"
            "| space | family | recipe | epochs | training (s) | in all (min) | largest fp32 top-1 | largest trained alone | "
            f"smallest int4 top-1 | smallest trained alone | Kendall tau (12 subnets{', 90 % interval' if noise else ''}) | spread of the 12, inherited / alone (pts) |"
            + (" tau, 12 spread by size | their spread (pts) |" if stratified else "") + "\n"
            + "|---" * (14 if stratified else 12) + "|\n")
    body += "".join(f"| {r['space']} | {r['family']} | {r['recipe']} | {r['epochs']:g} | {r['train_s']:.0f} | "
                    f"{_num(r.get('total_s', math.nan) / 60, 1)} | "
                    f"{r['largest']:.2f} % | {_pct(r['largest_alone'])} | {r['smallest']:.2f} % | "
                    f"{_pct(r['smallest_alone'])} | {_tau(r)} | {_spread(r)} |"
                    + (f" {_tau(r, '_stratified')} | {_spread(r, '_stratified')} |" if stratified else "")
                    + "\n" for r in rows)
    body += retest_note(rows) + gain_note(rows)
    if args.note:
        body += "\n" + args.note + "\n"
    if args.from_json:
        print(body)
    if not args.no_write:
        title = "## Supernet quality" if args.section == "supernet-quality" else f"### Supernet quality: {args.section}"
        measured = (args.measured or rows[0].get("measured")) if args.from_json else None
        if args.from_json and not measured:
            sys.exit("supernet_quality.py: --from-json rows without 'measured': give --measured 'WHEN on WHERE'")
        doc = write_section(args.section, f"{title}\n\n" + body, measured)
        print(f"written to {doc}")


def epochs_words(given: list[str] | float) -> list[str]:
    """``--epochs`` as typed (rows written before it took words hold one number)."""
    return [f"{given:g}"] if isinstance(given, (int, float)) else list(given)


def held_images(splits: data_mod.Splits, eval_on: str) -> Held:
    """The images every top-1 is measured on: the test split, the validation split, or both."""
    parts = {"test": [(splits.test_x, splits.test_y)], "val": [(splits.val_x, splits.val_y)],
             "test+val": [(splits.test_x, splits.test_y), (splits.val_x, splits.val_y)]}[eval_on]
    return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])


def held_note(n_held: int, eval_on: str) -> str:
    if eval_on == "test+val":
        return (f"{n_held} images: the test split and the validation images held out of the training split, "
                "together")
    return (f"{n_held}-image test split" if eval_on == "test"
            else f"{n_held} validation images held out of the training split")


def _tau(row: dict, suffix: str = "") -> str:
    """A ranked set's tau, with its 90 % interval over resampled evaluation images where the row
    has one (rows from before it did not)."""
    tau = _num(row.get(f"tau{suffix}", math.nan))
    ci = row.get(f"tau_ci{suffix}")
    return f"{tau} ({ci[0]:.2f} to {ci[1]:.2f})" if ci else tau


def _pct(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:.2f} %"


def _num(v: float, digits: int = 2) -> str:
    return "-" if math.isnan(v) else f"{v:.{digits}f}"


if __name__ == "__main__":
    main()
