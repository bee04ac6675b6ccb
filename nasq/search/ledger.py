"""Every true evaluation, keyed by canonical subnet key: each subnet is evaluated once.

A ledger may be persisted (CSV, written atomically after every batch) in a cache folder named by
the identity of what produced the numbers - the supernet's weights and the evaluation settings -
so a second search on the same supernet reuses them. A subnet whose evaluation failed (after the
evaluator's own retries) is recorded with ``status=failed`` and never asked for again.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nasq.errors import NasqError
from nasq.files import atomic_write_json, atomic_write_text, read_json, sha256_bytes
from nasq.search.protocols import Evaluator
from nasq.space import SubnetSpec

# The evaluator returns one top1 per spec, in order; None (or NaN) marks a failed evaluation.

COLUMNS = ("key", "origin", "status", "top1", "spec")


@dataclass(frozen=True)
class Entry:
    key: str
    origin: str
    status: str  # "ok" or "failed"
    top1: float  # NaN when failed


def ledger_identity(supernet_sha256: str, evaluation: dict) -> str:
    """The cache key: the supernet's weights and every setting that changes a measured top1."""
    return sha256_bytes((supernet_sha256 + "|" + repr(sorted(evaluation.items()))).encode())


class Ledger:
    """``ledger(specs, origin) -> top1 array`` (NaN where the evaluation failed). Only the subnets
    not already in the ledger go to ``evaluate``; ``path`` (a CSV) is loaded if it exists and
    rewritten atomically after each batch."""

    def __init__(self, evaluate: Evaluator, path: str | Path | None = None):
        self.evaluate = evaluate
        self.path = Path(path) if path is not None else None
        self.entries: dict[str, Entry] = {}
        self.specs: dict[str, SubnetSpec] = {}
        self.reused = 0  # lookups answered from a ledger loaded from disk
        self._loaded: set[str] = set()
        if self.path is not None and self.path.is_file():
            self._load(self.path)

    @classmethod
    def in_cache(cls, evaluate: Evaluator, cache_dir: str | Path, identity: str, about: dict) -> Ledger:
        """The ledger of ``cache_dir/<identity[:16]>/ledger.csv``; ``about`` (what the identity was
        made from) is written beside it so a person can tell the folders apart."""
        folder = Path(cache_dir) / identity[:16]
        meta = folder / "identity.json"
        if meta.is_file() and read_json(meta).get("identity") != identity:
            raise NasqError(f"{meta}: belongs to another supernet/evaluation ({read_json(meta).get('identity')!r:.20})")
        if not meta.is_file():
            atomic_write_json(meta, {"identity": identity, **about})
        return cls(evaluate, folder / "ledger.csv")

    # ------------------------------------------------------------ lookups
    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def top1(self) -> dict[str, float]:
        """The successful evaluations, key -> top1."""
        return {k: e.top1 for k, e in self.entries.items() if e.status == "ok"}

    @property
    def failed(self) -> list[str]:
        return [k for k, e in self.entries.items() if e.status == "failed"]

    def values(self, keys: Sequence[str]) -> np.ndarray:
        return np.array([self.entries[k].top1 for k in keys], dtype=np.float64)

    def __call__(self, specs: list[SubnetSpec], origin: str) -> np.ndarray:
        todo = list({s.key(): s for s in specs if s.key() not in self.entries}.values())
        self.reused += len({s.key() for s in specs if s.key() in self._loaded})
        if todo:
            values = list(self.evaluate(todo))
            if len(values) != len(todo):
                raise NasqError(f"the evaluator returned {len(values)} values for {len(todo)} subnets")
            for spec, value in zip(todo, values, strict=True):
                ok = value is not None and math.isfinite(float(value))
                self.entries[spec.key()] = Entry(spec.key(), origin, "ok" if ok else "failed",
                                                 float(value) if ok else math.nan)
                self.specs[spec.key()] = spec
            self.save()
        for s in specs:
            self.specs.setdefault(s.key(), s)
        return self.values([s.key() for s in specs])

    def record(self, spec: SubnetSpec, top1: float, origin: str) -> None:
        """Add a measurement made elsewhere (a resumed checkpoint, a Ray Tune trial); a key already
        in the ledger keeps its first value."""
        if spec.key() not in self.entries:
            ok = math.isfinite(top1)
            self.entries[spec.key()] = Entry(spec.key(), origin, "ok" if ok else "failed", top1 if ok else math.nan)
            self.specs[spec.key()] = spec

    # ------------------------------------------------------------ persistence
    def to_csv(self, keys: Sequence[str] | None = None) -> str:
        """All entries, or those of ``keys`` in that order. top1 is written exactly (shortest
        round-trip repr): a search resumed from the cache must see the very same numbers."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(COLUMNS)
        for e in (self.entries[k] for k in (self.entries if keys is None else keys)):
            w.writerow([e.key, e.origin, e.status, "" if e.status != "ok" else repr(e.top1),
                        self.specs[e.key].to_json()])
        return buf.getvalue()

    def save(self) -> None:
        if self.path is not None:
            atomic_write_text(self.path, self.to_csv())

    def _load(self, path: Path) -> None:
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
        if rows and set(COLUMNS) - set(rows[0]):
            raise NasqError(f"{path}: not a nasq ledger (columns {sorted(rows[0])}, expected {list(COLUMNS)})")
        for r in rows:
            ok = r["status"] == "ok"
            self.entries[r["key"]] = Entry(r["key"], r["origin"], r["status"], float(r["top1"]) if ok else math.nan)
            self.specs[r["key"]] = SubnetSpec.from_dict(json.loads(r["spec"]))
        self._loaded = set(self.entries)
