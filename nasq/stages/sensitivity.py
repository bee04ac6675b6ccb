"""Per-layer sensitivity as a run artifact: ``sensitivity.json`` (settings, lineage and the table)
and ``sensitivity.csv`` (one row per layer x format: trace, fisher, proxy_delta, top1_drop), the
computation being :mod:`nasq.supernet.sensitivity`. Used by ``nasq sensitivity RUN`` and, for the
``ilp`` / ``sensitivity_seeded`` strategies, by the search stage, which reuses an artifact whose
fingerprint (space, supernet weights, settings) matches.

What the search gets (:data:`nasq.search.ilp.Sensitivity`): per layer slot and format, the estimated
top-1 loss in points - the measured one-layer drop, clipped at 0, plus up to ``PROXY_POINTS`` from the
Hessian proxy normalised by the table's largest (a measured drop on a few hundred images moves in
steps of a fraction of a point and is often 0; the proxy orders the formats it cannot tell apart).
The proxy is clipped at 0 too: a Hutchinson trace from few probes can come out negative on a
network away from a minimum, and quantization noise is not a gain."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nasq import data as data_mod
from nasq.errors import ConfigError, LineageError
from nasq.files import atomic_write_json, atomic_write_text, read_json_object, sha256_file
from nasq.space import SearchSpace, SubnetSpec
from nasq.supernet import checkpoint
from nasq.supernet.evaluate import calibration_batches
from nasq.supernet.network import Supernet
from nasq.supernet.sensitivity import COLUMNS, SensitivityResult, measure

Splits = data_mod.Splits

SENSITIVITY_JSON = "sensitivity.json"
SENSITIVITY_CSV = "sensitivity.csv"
SAVE_FORMAT = 1
PROXY_POINTS = 0.5


@dataclass(frozen=True)
class Settings:
    """``formats``: the menu's formats to probe (None: every format both menus hold, each used for
    weights and activations of the probed layer); ``batches`` x ``batch_size`` training images for
    the Hessian and Fisher, ``probes`` Rademacher vectors per batch; ``val_images`` validation
    images (the first ones) for the measured drops, recalibrated on ``calib_images``."""

    formats: tuple[str, ...] | None = None
    batches: int = 2
    batch_size: int = 64
    probes: int = 4
    val_images: int = 500
    calib_images: int = 256
    seed: int = 0


def menu_formats(space: SearchSpace, wanted: tuple[str, ...] | None, source: str = "command line") -> tuple[str, ...]:
    menu = space.config.precision
    both = tuple(f for f in menu.w_format if f in menu.a_format)
    if wanted is None:
        return both
    for f in wanted:
        if f not in both:
            raise ConfigError(source, "--formats", f"{f!r} is not a format of both menus of space "
                              f"{space.name} (choices: {', '.join(both)})")
    return tuple(dict.fromkeys(wanted))


def fingerprint(space: SearchSpace, weights_sha256: str, settings: Settings, formats: tuple[str, ...]) -> str:
    what = {"space": space.hash, "weights": weights_sha256, "settings": {**asdict(settings), "formats": list(formats)}}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def compute(space: SearchSpace, net: Supernet, splits: Splits, settings: Settings, weights_sha256: str,
            lineage: dict[str, str] | None = None, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The artifact's record (not yet written): settings, lineage and table."""
    formats = menu_formats(space, settings.formats)
    calib = calibration_batches(splits.train_x, settings.calib_images, 256, settings.seed)
    idx = np.sort(np.random.default_rng([settings.seed, 1]).choice(
        len(splits.train_y), size=min(settings.batches * settings.batch_size, len(splits.train_y)), replace=False))
    xs, ys = torch.from_numpy(splits.train_x[idx]), torch.from_numpy(splits.train_y[idx].astype(np.int64))
    loss_batches = list(zip(xs.split(settings.batch_size), ys.split(settings.batch_size), strict=True))
    n_val = settings.val_images or len(splits.val_y)
    result = measure(net, space, formats, calib, loss_batches, splits.val_x[:n_val], splits.val_y[:n_val],
                     seed=settings.seed, probes=settings.probes, progress=progress)
    return record_of(result, space, settings, formats, weights_sha256, lineage or {})


def record_of(result: SensitivityResult, space: SearchSpace, settings: Settings, formats: tuple[str, ...],
              weights_sha256: str, lineage: dict[str, str]) -> dict[str, Any]:
    return {"format": SAVE_FORMAT, "space": space.name, "space_hash": space.hash,
            "supernet_sha256": weights_sha256, "fingerprint": fingerprint(space, weights_sha256, settings, formats),
            "settings": {**asdict(settings), "formats": list(formats)}, "lineage": lineage,
            "reference": result.reference.to_dict(), "base_top1": result.base_top1,
            "layers": [{"name": s.name, "params": s.params} for s in result.layers], "rows": result.rows()}


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["layer", "format", *COLUMNS], lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def save(folder: Path, record: dict[str, Any]) -> list[Path]:
    """CSV first, JSON last: a JSON present means the pair is whole (each written atomically)."""
    return [atomic_write_text(folder / SENSITIVITY_CSV, to_csv(record["rows"])),
            atomic_write_json(folder / SENSITIVITY_JSON, record)]


def load(folder: Path, space: SearchSpace) -> dict[str, Any]:
    """The record in ``folder``; one line when malformed or made on another space."""
    path = folder / SENSITIVITY_JSON
    record = read_json_object(path)
    if record.get("format") != SAVE_FORMAT or not isinstance(record.get("rows"), list):
        raise ConfigError(str(path), "", "not a nasq sensitivity record")
    if record.get("space_hash") != space.hash:
        raise LineageError(f"{path}: made on space {record.get('space')!r} ({str(record.get('space_hash'))[:12]}), "
                           f"not on {space.name!r} ({space.hash[:12]})")
    return record


def loss_table(record: dict[str, Any]) -> dict[str, dict[str, float]]:
    """What the search uses: layer -> format -> estimated top-1 loss (module docstring)."""
    rows = record["rows"]
    scale = max((float(r["proxy_delta"]) for r in rows), default=0.0)
    scale = scale if scale > 0 else 1.0
    table: dict[str, dict[str, float]] = {}
    for r in rows:
        loss = max(float(r["top1_drop"]), 0.0) + PROXY_POINTS * max(float(r["proxy_delta"]), 0.0) / scale
        table.setdefault(str(r["layer"]), {})[str(r["format"])] = loss
    return table


def reference_of(record: dict[str, Any]) -> SubnetSpec:
    return SubnetSpec.from_dict(record["reference"])


def ensure(folder: Path, space: SearchSpace, net: Supernet, splits: Splits, settings: Settings,
           lineage: dict[str, str] | None = None, progress: Callable[[str], None] | None = None,
           fresh: bool = False) -> tuple[dict[str, Any], bool]:
    """The artifact in ``folder`` when its fingerprint matches (reused: True), else computed and
    written. The supernet must be the one whose weights ``folder`` holds (what makes it trained)."""
    weights = folder / checkpoint.WEIGHTS
    if not weights.is_file():
        raise ConfigError(str(folder), checkpoint.WEIGHTS, "file not found: the supernet is not trained "
                          "(run `nasq train` first)")
    digest = sha256_file(weights)
    formats = menu_formats(space, settings.formats)
    if not fresh and (folder / SENSITIVITY_JSON).is_file():
        record = load(folder, space)
        if record.get("fingerprint") == fingerprint(space, digest, settings, formats):
            return record, True
    record = compute(space, net, splits, settings, digest, lineage, progress)
    save(folder, record)
    return record, False


def from_run(run: Any, settings: Settings, progress: Callable[[str], None] | None = None,
             fresh: bool = False, downloaded: bool = False) -> tuple[dict[str, Any], bool]:
    """``nasq sensitivity RUN``: the artifact of a finished run (:class:`nasq.stages.runs.FinishedRun`),
    computed on its trained supernet (or reused when its fingerprint matches) and kept in its folder;
    ``downloaded``: the run came from MLflow (its folder holds the weights without their record)."""
    cfg, space = run.experiment_config(), run.space()
    menu_formats(space, settings.formats)  # before loading anything: a bad --formats is one line
    # a run folder's supernet is trained once supernet.json is written beside its weights (a
    # training that never finished leaves none); a run from MLflow downloads the weights alone
    hint = " (an untrained supernet: finish `nasq train` first)"
    net, _ = checkpoint.load(run.folder, space, require_record=not downloaded, hint=hint)
    splits = data_mod.load(cfg.data, run.name, space.config)
    return ensure(run.folder, space, net, splits, settings, run.record.get("lineage", {}), progress, fresh)


STRATEGIES = ("ilp", "sensitivity_seeded")  # the search strategies that use the table


def saved_table(space: SearchSpace, folder: Path) -> dict[str, dict[str, float]] | None:
    """The loss table of ``folder``'s sensitivity.json (made on ``space``), None when there is none."""
    return loss_table(load(folder, space)) if (folder / SENSITIVITY_JSON).is_file() else None


def for_search(exp: Any, net: Supernet, splits: Splits, workdir: Path,
               progress: Callable[[str], None] | None = None) -> dict[str, dict[str, float]] | None:
    """Before the search of ``exp`` (an :class:`nasq.experiment.Experiment`) on its trained ``net``:
    the loss table for the ilp / sensitivity_seeded strategies (None for the others), computed with
    the default settings or reused from ``workdir`` (what ``nasq sensitivity RUN`` leaves there)."""
    if exp.config.search.strategy not in STRATEGIES:
        return None
    record, _ = ensure(workdir, exp.space, net, splits, Settings(), exp.lineage(), progress)
    return loss_table(record)
