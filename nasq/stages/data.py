"""Stage 1, data: the experiment's dataset as train / validation / test splits."""

from __future__ import annotations

from pathlib import Path

from nasq import data as data_mod
from nasq.experiment import Experiment
from nasq.stages.progress import Reporter


def run(exp: Experiment, upstream: None = None, workdir: Path | None = None,
        rep: Reporter | None = None) -> data_mod.Splits:
    """Load and split the data (nothing is written)."""
    splits = data_mod.load(exp.config.data, exp.source)
    if rep is not None:
        note = f"\n      [yellow]{splits.note}[/]" if splits.name != exp.config.data.name else ""
        rep.say(f"      {splits.summary()}{note}")
    return splits
