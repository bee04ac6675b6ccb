"""What a search knows between iterations, the checkpoint it writes after each one, and the
per-iteration random generators that make an interrupted and resumed search end where an
uninterrupted one does: iteration ``i`` always draws from ``default_rng([seed, i])``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from nasq.errors import ConfigError, NasqError
from nasq.files import atomic_write_json, read_json_object
from nasq.space import GenericSpec, SearchSpace, SubnetSpec
from nasq.specs import one_line, validate

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
    budget: int | None = None  # the max_true_evals it was run (or extended) with; None: unknown

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
                "fingerprint": self.fingerprint, "budget": self.budget,
                "rng": iteration_rng(self.seed, self.iteration).bit_generator.state,
                "evaluations": [{"key": k, "spec": self.specs[k].to_dict(),
                                 "top1": None if math.isnan(self.top1[k]) else self.top1[k],
                                 "predicted": self.predicted.get(k)} for k in self.keys],
                "history": self.history}

    def save(self, folder: Path) -> None:
        atomic_write_json(Path(folder) / STATE_FILE, self.to_dict())

    @classmethod
    def load(cls, folder: Path, fingerprint: str, space: SearchSpace | None = None) -> SearchState:
        """Refuses a checkpoint written by a search with other settings (``fingerprint``), and in
        one line naming the file anything in it that is not a search checkpoint: its shape, a top1
        that is not a number in [0, 100] (or null: failed), a spec that does not decode (or, given
        ``space``, is not a subnet of it)."""
        path = Path(folder) / STATE_FILE
        if not path.is_file():
            raise NasqError(f"{path}: no search checkpoint to resume from")
        data = read_json_object(path)
        if data.get("format") != STATE_FORMAT:
            raise ConfigError(str(path), "format", f"not a nasq search checkpoint (format {str(data.get('format'))[:40]!r}, "
                              f"expected {STATE_FORMAT!r})")
        saved = validate(_StateFile, data, str(path))
        if saved.fingerprint != fingerprint:
            raise NasqError(f"{path}: written by a search with other settings (strategy, seed, space "
                            f"or objectives differ); start a new search instead of --resume")
        state = cls(saved.strategy, saved.seed, saved.iteration, fingerprint=fingerprint, history=saved.history,
                    budget=saved.budget)
        for i, e in enumerate(saved.evaluations):
            spec = _decode(e, space, str(path), f"evaluations[{i}]")
            if e.key in state.top1:
                raise ConfigError(str(path), f"evaluations[{i}].key", f"{e.key[:40]!r} appears twice")
            state.add([spec], np.array([math.nan if e.top1 is None else e.top1]),
                      None if e.predicted is None else [e.predicted])
        return state


def saved_budget(folder: Path) -> int | None:
    """The budget recorded in ``folder``'s checkpoint, read before any work (None when the file
    has none or is not a checkpoint: :meth:`SearchState.load` reports that, in one line, later)."""
    try:
        value = read_json_object(Path(folder) / STATE_FILE).get("budget")
    except NasqError:
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


class _Evaluation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str
    spec: dict[str, Any]
    top1: float | None = Field(ge=0.0, le=100.0, allow_inf_nan=False)  # null: the evaluation failed
    predicted: dict[str, float] | None = None


class _StateFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: str
    strategy: str
    seed: int
    iteration: int = Field(ge=0)
    fingerprint: str
    budget: int | None = Field(default=None, ge=1)
    rng: dict[str, Any]
    evaluations: list[_Evaluation]
    history: list[dict[str, Any]]


def _decode(e: _Evaluation, space: SearchSpace | None, source: str, where: str) -> SubnetSpec:
    try:
        spec = decode_saved_spec(e.spec, space)
    except ValueError as err:
        raise ConfigError(source, f"{where}.spec", str(err)) from None
    if spec.key() != e.key:
        raise ConfigError(source, f"{where}.key", f"{e.key[:40]!r} is not the key of its spec ({spec.key()[:40]!r})")
    return spec


def decode_saved_spec(data: Any, space: SearchSpace | None = None) -> SubnetSpec:
    """A spec as a state file, ledger or front stores it (``SubnetSpec.to_dict``); given ``space``,
    one of its subnets in canonical form. Anything else is a ValueError with a one-line message."""
    try:
        # a generic space's candidate is {"genes": {...}}; a network's subnet has stages
        spec = GenericSpec.from_dict(data) if isinstance(data, dict) and "genes" in data else SubnetSpec.from_dict(data)
        key = spec.key()
        hash(spec)
        if space is not None and space.decode(space.encode(spec)).key() != key:
            raise ValueError(f"not in canonical form for space {space.name!r}")
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        raise ValueError(f"does not decode{'' if space is None else ' in space ' + repr(space.name)} "
                         f"({type(e).__name__}: {one_line(e, 120)})") from None
    return spec
