"""The trained supernet of a run folder: its one writer, its one reader and its lineage check.

A finished training leaves ``supernet.safetensors`` (weights and batch-norm statistics, no pickle)
and ``supernet.json`` (space, space hash, fingerprint of the settings that decide the weights, the
training result and loss curve, and ``weights_sha256``, the hash of the weights file it goes with).
Every stage and command that needs the trained supernet (``nasq run`` reusing it, ``nasq search``,
``nasq export``, the benchmarks) reads it through :func:`load` or :func:`load_finished`.

The two files are published as a pair: both are written in full beside their targets first (a full
disk leaves the previous pair untouched), then renamed - weights, then record - under the folder's
lock file (``.supernet.lock``), which readers take too. A reader therefore gets a matching pair, and
checks it: weights whose sha256 is not the record's (a writer killed between the two renames) are a
one-line error. A record without ``weights_sha256`` (written before nasq recorded it) is still read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import filelock
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from nasq.errors import LineageError, NasqError
from nasq.files import json_bytes, read_json_object, replace_all, sha256_bytes, write_beside
from nasq.space import SearchSpace
from nasq.specs import TrainConfig, one_line
from nasq.supernet.files import LOCK, RECORD, WEIGHTS  # the names live torch-free
from nasq.supernet.network import Supernet
from nasq.supernet.train import weights_config

WEIGHTS_SHA256 = "weights_sha256"  # the record's field naming the weights it goes with
LOCK_TIMEOUT_S = 600.0


class SupernetMismatch(NasqError):
    """The weights file does not fit the supernet this code builds for the space."""


class TornPair(NasqError):
    """The weights file is not the one the record names (a publication cut between its renames)."""


def fingerprint(space_hash: str, data: dict[str, Any], train: TrainConfig) -> str:
    """What makes two trained supernets interchangeable: the space file and the data and
    training configs (threads and checkpoint spacing excluded: they do not change the weights)."""
    ident = {"space_hash": space_hash, "data": data, "train": weights_config(train)}
    return sha256_bytes(json.dumps(ident, sort_keys=True).encode())


def save(net: torch.nn.Module, folder: Path, record: dict[str, Any]) -> None:
    """Publish the weights of ``net`` and ``record`` (plus the weights' sha256) as a pair (see the
    module docstring); on any failure the previous pair is left as it was, and no temp file."""
    data = save_bytes({k: v.contiguous() for k, v in net.state_dict().items()})
    meta = json_bytes({**record, WEIGHTS_SHA256: sha256_bytes(data)})
    moves: list[tuple[Path, Path]] = []
    try:
        moves.append((write_beside(folder / WEIGHTS, data), folder / WEIGHTS))
        moves.append((write_beside(folder / RECORD, meta), folder / RECORD))
        with _locked(folder):
            replace_all(moves)
    except BaseException:
        for tmp, _ in moves:
            tmp.unlink(missing_ok=True)
        raise


def finished_record(folder: Path, expected_fingerprint: str) -> dict[str, Any] | None:
    """The record of a finished supernet in ``folder`` trained the same way, or None."""
    meta, weights = folder / RECORD, folder / WEIGHTS
    if not (meta.is_file() and weights.is_file()):
        return None
    try:
        record = json.loads(meta.read_text())
    except (ValueError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) and record.get("fingerprint") == expected_fingerprint else None


def load_finished(net: Supernet, folder: Path, expected_fingerprint: str) -> dict[str, Any] | None:
    """Load the finished supernet in ``folder`` into ``net`` and return its record, when it was
    trained the same way (``expected_fingerprint``); None otherwise. Weights that do not fit are a
    SupernetMismatch, weights that are not the record's a TornPair."""
    if finished_record(folder, expected_fingerprint) is None:
        return None
    record, tensors = _read_pair(folder, require_record=True)
    if record.get("fingerprint") != expected_fingerprint:  # replaced since the first look
        return None
    _load_tensors(net, tensors, folder / WEIGHTS)
    return record


def _load_tensors(net: Supernet, tensors: dict[str, torch.Tensor], weights: Path) -> Supernet:
    try:
        net.load_state_dict(tensors)
    except (RuntimeError, OSError) as e:  # torch's message lists every key: keep the line short
        raise SupernetMismatch(f"{weights}: does not fit this version's supernet of space "
                               f"{net.space.name!r} ({one_line(e, 160)})") from e
    return net


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """The folder's pair lock; none in a folder nobody can write (nobody can publish there)."""
    lock = filelock.FileLock(str(folder / LOCK), timeout=LOCK_TIMEOUT_S)
    held: filelock.FileLock | None = lock
    try:
        lock.acquire()
    except filelock.Timeout:
        raise NasqError(f"{folder / LOCK}: held by another process for over {LOCK_TIMEOUT_S:.0f} s; "
                        f"is a training stuck publishing its supernet?") from None
    except PermissionError:
        if os.access(folder, os.W_OK):
            raise
        held = None
    try:
        yield
    finally:
        if held is not None:
            held.release()


def _read_pair(folder: Path, require_record: bool) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Record (``{}`` when absent and not required) and weights, read together under the lock and
    checked against each other."""
    meta, weights = folder / RECORD, folder / WEIGHTS
    with _locked(folder):
        record = read_json_object(meta) if require_record or meta.is_file() else {}
        data = weights.read_bytes()
    expected = record.get(WEIGHTS_SHA256)
    if expected is not None and sha256_bytes(data) != expected:
        raise TornPair(f"{weights}: sha256 {sha256_bytes(data)[:12]} is not the {expected!s:.12} {RECORD} names: "
                        f"the pair was not published whole (a training killed while saving it?); train again")
    try:
        return record, load_bytes(data)
    except SafetensorError as e:
        raise SupernetMismatch(f"{weights}: not a safetensors file ({one_line(e, 120)})") from e


def check_space(folder: Path, space: SearchSpace, hint: str = "") -> dict[str, Any]:
    """The record in ``folder`` (``{}`` when absent); a LineageError when it was trained on
    another space than ``space``. ``hint`` ends the message (what to run instead)."""
    meta = folder / RECORD
    record = read_json_object(meta) if meta.is_file() else {}
    _check_record_space(record, meta, space, hint)
    return record


def _check_record_space(record: dict[str, Any], meta: Path, space: SearchSpace, hint: str) -> None:
    if record and record.get("space_hash") != space.hash:
        raise LineageError(f"{meta}: trained on space {record.get('space')!r} ({str(record.get('space_hash'))[:12]}), "
                           f"not on {space.name!r} ({space.hash[:12]}){hint}")


def load(folder: Path, space: SearchSpace, *, require_record: bool = True, hint: str = "") -> tuple[Supernet, dict]:
    """The trained supernet in ``folder`` and its record (``{}`` when absent and not required).
    Refused in one line: no weights (or no record when required), a record made on another
    space, weights that are not the record's, weights that do not fit. ``hint`` ends the first
    two messages (what to run instead)."""
    weights, meta = folder / WEIGHTS, folder / RECORD
    if not weights.is_file() or (require_record and not meta.is_file()):
        raise NasqError(f"{folder}: no trained supernet ({WEIGHTS} + {RECORD}){hint}")
    check_space(folder, space, hint)  # before reading the weights: a clear error, however large they are
    record, tensors = _read_pair(folder, require_record)
    _check_record_space(record, meta, space, hint)  # the pair read may have been published since
    with torch.random.fork_rng(devices=[]):  # initial weights are overwritten; keep the caller's RNG
        net = Supernet(space)
    return _load_tensors(net, tensors, weights).eval(), record
