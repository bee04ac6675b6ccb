"""What a search knows between iterations, the checkpoint it writes after each one, and the
per-iteration random generators that make an interrupted and resumed search end where an
uninterrupted one does: iteration ``i`` always draws from ``default_rng([seed, i])``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nasq.errors import NasqError
from nasq.files import atomic_write_json, read_json
from nasq.space import SubnetSpec

STATE_FORMAT = "nasq.search_state/1"
STATE_FILE = "search_state.json"


def iteration_rng(seed: int, iteration: int) -> np.random.Generator:
    return np.random.default_rng([seed, iteration])


def derived_seed(seed: int, iteration: int) -> int:
    """A 31-bit seed for libraries that take an int (pymoo, optuna), fixed by (seed, iteration)."""
    return int(iteration_rng(seed, iteration).integers(0, 2**31 - 1))


@dataclass
class SearchState:
    """``keys``: the subnets this search asked to evaluate, in order (each counts against the
    budget, failed ones too); ``top1``: measured values (NaN when failed); ``predicted``: what the
    strategy predicted for a subnet when it proposed it (LINAS only)."""

    strategy: str
    seed: int
    iteration: int = 0
    keys: list[str] = field(default_factory=list)
    specs: dict[str, SubnetSpec] = field(default_factory=dict)
    top1: dict[str, float] = field(default_factory=dict)
    predicted: dict[str, dict[str, float]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    fingerprint: str = ""

    @property
    def true_evals(self) -> int:
        return len(self.keys)

    def add(self, specs: list[SubnetSpec], top1: np.ndarray, predicted: list[dict[str, float]] | None) -> None:
        for i, (spec, value) in enumerate(zip(specs, top1, strict=True)):
            key = spec.key()
            self.keys.append(key)
            self.specs[key], self.top1[key] = spec, float(value)
            if predicted is not None:
                self.predicted[key] = predicted[i]

    def ok(self) -> tuple[list[SubnetSpec], np.ndarray]:
        """The successfully evaluated subnets and their top1."""
        keys = [k for k in self.keys if math.isfinite(self.top1[k])]
        return [self.specs[k] for k in keys], np.array([self.top1[k] for k in keys], dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT, "strategy": self.strategy, "seed": self.seed, "iteration": self.iteration,
                "fingerprint": self.fingerprint,
                "rng": iteration_rng(self.seed, self.iteration).bit_generator.state,
                "evaluations": [{"key": k, "spec": self.specs[k].to_dict(),
                                 "top1": None if math.isnan(self.top1[k]) else self.top1[k],
                                 "predicted": self.predicted.get(k)} for k in self.keys],
                "history": self.history}

    def save(self, folder: Path) -> None:
        atomic_write_json(Path(folder) / STATE_FILE, self.to_dict())

    @classmethod
    def load(cls, folder: Path, fingerprint: str) -> SearchState:
        """Refuses a checkpoint written by a search with other settings (``fingerprint``)."""
        path = Path(folder) / STATE_FILE
        if not path.is_file():
            raise NasqError(f"{path}: no search checkpoint to resume from")
        data = read_json(path)
        if data.get("format") != STATE_FORMAT:
            raise NasqError(f"{path}: not a nasq search checkpoint (format {data.get('format')!r})")
        if data["fingerprint"] != fingerprint:
            raise NasqError(f"{path}: written by a search with other settings (strategy, seed, budget, space "
                            f"or objectives differ); start a new search instead of --resume")
        state = cls(data["strategy"], int(data["seed"]), int(data["iteration"]), fingerprint=fingerprint,
                    history=list(data["history"]))
        for e in data["evaluations"]:
            spec = SubnetSpec.from_dict(e["spec"])
            state.add([spec], np.array([math.nan if e["top1"] is None else e["top1"]]),
                      None if e["predicted"] is None else [e["predicted"]])
        return state
