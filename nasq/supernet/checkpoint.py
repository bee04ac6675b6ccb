"""The trained supernet of a run folder: its one writer, its one reader and its lineage check.

A finished training leaves ``supernet.safetensors`` (weights and batch-norm statistics, no pickle)
and ``supernet.json`` (space, space hash, fingerprint of the settings that decide the weights, the
training result and loss curve); the record is written last, so its presence means "finished".
Every stage and command that needs the trained supernet (``nasq run`` reusing it, ``nasq search``,
``nasq export``, the benchmarks) reads it through :func:`load`, with the same checks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from nasq.errors import LineageError, NasqError
from nasq.files import atomic_write_json, read_json_object, sha256_bytes
from nasq.space import SearchSpace
from nasq.specs import TrainConfig
from nasq.supernet.network import Supernet
from nasq.supernet.train import weights_config

WEIGHTS = "supernet.safetensors"
RECORD = "supernet.json"


class SupernetMismatch(NasqError):
    """The weights file does not fit the supernet this code builds for the space."""


def fingerprint(space_hash: str, data: dict[str, Any], train: TrainConfig) -> str:
    """What makes two trained supernets interchangeable: the space file and the data and
    training configs (threads and checkpoint spacing excluded: they do not change the weights)."""
    ident = {"space_hash": space_hash, "data": data, "train": weights_config(train)}
    return sha256_bytes(json.dumps(ident, sort_keys=True).encode())


def save(net: torch.nn.Module, folder: Path, record: dict[str, Any]) -> None:
    """Weights first (temporary name, renamed), then the record that marks them finished."""
    tmp = folder / f"{WEIGHTS}.tmp"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp))
    os.replace(tmp, folder / WEIGHTS)
    atomic_write_json(folder / RECORD, record)


def finished_record(folder: Path, expected_fingerprint: str) -> dict[str, Any] | None:
    """The record of a finished supernet in ``folder`` trained the same way, or None."""
    meta, weights = folder / RECORD, folder / WEIGHTS
    if not (meta.is_file() and weights.is_file()):
        return None
    try:
        record = json.loads(meta.read_text())
    except ValueError:
        return None
    return record if record.get("fingerprint") == expected_fingerprint else None


def load_state(net: Supernet, weights: Path) -> Supernet:
    """Load ``weights`` into ``net``; a file that does not fit is a one-line SupernetMismatch."""
    try:
        net.load_state_dict(load_file(str(weights)))
    except (RuntimeError, OSError) as e:  # torch's message lists every key: keep the line short
        raise SupernetMismatch(f"{weights}: does not fit this version's supernet of space "
                               f"{net.space.name!r} ({' '.join(str(e).split())[:160]})") from e
    return net


def check_space(folder: Path, space: SearchSpace, hint: str = "") -> dict[str, Any]:
    """The record in ``folder`` (``{}`` when absent); a LineageError when it was trained on
    another space than ``space``. ``hint`` ends the message (what to run instead)."""
    meta = folder / RECORD
    record = read_json_object(meta) if meta.is_file() else {}
    if record and record.get("space_hash") != space.hash:
        raise LineageError(f"{meta}: trained on space {record.get('space')!r} ({str(record.get('space_hash'))[:12]}), "
                           f"not on {space.name!r} ({space.hash[:12]}){hint}")
    return record


def load(folder: Path, space: SearchSpace, *, require_record: bool = True, hint: str = "") -> tuple[Supernet, dict]:
    """The trained supernet in ``folder`` and its record (``{}`` when absent and not required).
    Refused in one line: no weights (or no record when required), a record made on another
    space, weights that do not fit. ``hint`` ends the first two messages (what to run instead)."""
    weights, meta = folder / WEIGHTS, folder / RECORD
    if not weights.is_file() or (require_record and not meta.is_file()):
        raise NasqError(f"{folder}: no trained supernet ({WEIGHTS} + {RECORD}){hint}")
    record = check_space(folder, space, hint)
    with torch.random.fork_rng(devices=[]):  # initial weights are overwritten; keep the caller's RNG
        net = Supernet(space)
    return load_state(net, weights).eval(), record
