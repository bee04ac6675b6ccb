"""Stage 1, data: the experiment's dataset as train / validation / test splits."""

from __future__ import annotations

from pathlib import Path

from nasq import data as data_mod
from nasq.experiment import Experiment
from nasq.stages.progress import Reporter

DATA_CACHE_DIR = "data_cache"  # decoded images of a large image folder (uint8 .npy memmaps)


def run(exp: Experiment, upstream: None = None, workdir: Path | None = None,
        rep: Reporter | None = None) -> data_mod.Splits:
    """Load, check against the space and split the data. Nothing is written, except the decoded
    uint8 memmap of an image folder too large for memory, under ``workdir/data_cache``."""
    cache = workdir / DATA_CACHE_DIR if workdir is not None else None
    splits = data_mod.load(exp.config.data, exp.source, exp.space.config, cache)
    if rep is not None:
        note = f"\n      [yellow]{splits.note}[/]" if splits.fallback else ""
        rep.say(f"      {splits.summary()}{note}")
    return splits
