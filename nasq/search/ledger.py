"""Every true evaluation, keyed by canonical subnet key: each subnet is evaluated once.

A ledger may be persisted in a cache folder named by the identity of what produced the numbers -
the supernet's weights and the evaluation settings - so any later search on the same supernet
reuses them, and searches running at the same time share them. A subnet whose evaluation failed
(after the evaluator's own retries) is recorded with ``status=failed`` and never asked for again.

The store (``ledger.csv``) is append-only: one CSV line per key, appended under a lock file
(``ledger.csv.lock``) after each batch, never rewritten. A line counts once its newline is written:
readers take complete lines only (no lock needed: a half-written row is never read), and the next
writer cuts off the incomplete line a killed writer may have left. A writer reads what others
appended before it appends, and appends only keys not already there: each key is stored once and
the first value written wins, for every process. Anything else wrong in the file is a one-line
:class:`~nasq.errors.ConfigError` naming the file and the line.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import filelock
import numpy as np

from nasq.errors import ConfigError, NasqError
from nasq.files import atomic_write_bytes, atomic_write_json, read_json_object, sha256_bytes
from nasq.search.protocols import Evaluator
from nasq.search.state import decode_saved_spec
from nasq.space import SubnetSpec
from nasq.specs import one_line

# The evaluator returns one top1 per spec, in order; None (or NaN) marks a failed evaluation.

COLUMNS = ("key", "origin", "status", "top1", "spec")
TOP1_RANGE = (0.0, 100.0)  # top-1 accuracy in percent
LOCK_TIMEOUT_S = 600.0  # a writer holds the lock for one append; this long means something is stuck


@dataclass(frozen=True)
class Entry:
    key: str
    origin: str
    status: str  # "ok" or "failed"
    top1: float  # NaN when failed


def ledger_identity(supernet_sha256: str, evaluation: dict) -> str:
    """The cache key: the supernet's weights and every setting that changes a measured top1."""
    return sha256_bytes((supernet_sha256 + "|" + repr(sorted(evaluation.items()))).encode())


def valid_top1(value: float) -> bool:
    """A measured top-1: finite and within [0, 100] (percent)."""
    return math.isfinite(value) and TOP1_RANGE[0] <= value <= TOP1_RANGE[1]


def _row(fields: list[str], columns: dict[str, int], source: str, line: int) -> tuple[Entry, SubnetSpec]:
    """One data line of a ledger file, checked; any problem is a ConfigError naming file and line."""
    where = f"line {line}"
    if len(fields) != len(columns):
        raise ConfigError(source, where, f"expected {len(columns)} fields, got {len(fields)} (truncated or not a ledger row)")
    key, origin, status, top1, spec_json = (fields[columns[c]] for c in COLUMNS)
    if status == "ok":
        try:
            value = float(top1)
        except ValueError:
            value = math.nan
        if not valid_top1(value):
            raise ConfigError(source, where, f"top1 must be a number in [0, 100] for status ok, got {top1[:40]!r}")
    elif status == "failed":
        value = math.nan
    else:
        raise ConfigError(source, where, f"status must be 'ok' or 'failed', got {status[:40]!r}")
    try:
        spec = decode_saved_spec(json.loads(spec_json))
    except json.JSONDecodeError as e:
        raise ConfigError(source, where, f"spec is not JSON ({one_line(e, 120)})") from None
    except ValueError as e:
        raise ConfigError(source, where, f"spec {e}") from None
    if spec.key() != key:
        raise ConfigError(source, where, f"key {key[:40]!r} is not the key of its spec ({spec.key()[:40]!r})")
    return Entry(key, origin, status, value), spec


class _CsvStore:
    """The append-only CSV file of a ledger: incremental reads of complete lines, locked appends."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = filelock.FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT_S)
        self._reset(None)

    def _reset(self, inode: int | None) -> None:
        self.inode, self.offset, self.lines = inode, 0, 0
        self.columns: dict[str, int] | None = None

    def read_new(self) -> list[tuple[Entry, SubnetSpec]] | None:
        """The rows committed since the last call; None when the file was replaced or cut shorter
        meanwhile (then the next call reads it again from the start)."""
        try:
            with open(self.path, "rb") as fh:
                st = os.fstat(fh.fileno())
                if self.inode is not None and (st.st_ino != self.inode or st.st_size < self.offset):
                    self._reset(None)
                    return None
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            fresh = self.inode is None
            self._reset(None)
            return [] if fresh else None
        self.inode = st.st_ino
        complete = data[:data.rfind(b"\n") + 1]
        if self.offset == 0 and not complete:
            raise ConfigError(str(self.path), "line 1", "no complete header line (empty or truncated file); "
                              "remove the file to start an empty ledger")
        rows = [self._parse(raw) for raw in complete.split(b"\n")[:-1]]
        self.offset += len(complete)
        return [r for r in rows if r is not None]

    def _parse(self, raw: bytes) -> tuple[Entry, SubnetSpec] | None:
        self.lines += 1
        source, where = str(self.path), f"line {self.lines}"
        try:
            fields = next(csv.reader([raw.decode("utf-8")]), [])
        except UnicodeDecodeError:
            raise ConfigError(source, where, "not UTF-8 text (a corrupt ledger)") from None
        except csv.Error as e:
            raise ConfigError(source, where, f"not a CSV row ({one_line(e, 120)})") from None
        if self.columns is None:
            if set(COLUMNS) - set(fields) or len(set(fields)) != len(fields):
                raise ConfigError(source, where, f"not a nasq ledger (columns {fields[:8]}, expected {list(COLUMNS)})")
            self.columns = {name: i for i, name in enumerate(fields)}
            return None
        return _row(fields, self.columns, source, self.lines)

    def append(self, rows: list[list[str]]) -> None:
        """Append ``rows`` (call with the lock held, right after :meth:`read_new`). A new file is
        created whole (header and rows) by one rename; an incomplete line a killed writer left is
        cut off first; a failed write (a full disk) is cut off again."""
        data = self._encode(rows)
        if self.inode is None:
            header = self._encode([list(COLUMNS)])
            atomic_write_bytes(self.path, header + data)
            self.inode, self.offset, self.lines = os.stat(self.path).st_ino, len(header + data), 1 + len(rows)
            self.columns = {name: i for i, name in enumerate(COLUMNS)}
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            if os.fstat(fd).st_size > self.offset:
                os.ftruncate(fd, self.offset)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError:
                os.ftruncate(fd, self.offset)
                raise
        finally:
            os.close(fd)
        self.offset, self.lines = self.offset + len(data), self.lines + len(rows)

    @staticmethod
    def _encode(rows: list[list[str]]) -> bytes:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        return buf.getvalue().encode("utf-8")


class Ledger:
    """``ledger(specs, origin) -> top1 array`` (NaN where the evaluation failed). Only the subnets
    not already in the ledger go to ``evaluate``; with ``path`` (a CSV) the ledger is loaded from
    it, re-read before each batch (other processes' evaluations are not repeated) and the batch's
    new rows are appended to it (see the module docstring)."""

    def __init__(self, evaluate: Evaluator, path: str | Path | None = None, identity: str | None = None):
        self.evaluate = evaluate
        self.path = Path(path) if path is not None else None
        self.identity = identity  # the supernet/evaluation identity of a cached ledger
        self.entries: dict[str, Entry] = {}
        self.specs: dict[str, SubnetSpec] = {}
        self.reused = 0  # lookups answered from a ledger loaded from disk
        self._loaded: set[str] = set()
        self._on_disk: set[str] = set()
        self._store = _CsvStore(self.path) if self.path is not None else None
        self.refresh()

    @classmethod
    def in_cache(cls, evaluate: Evaluator, cache_dir: str | Path, identity: str, about: dict) -> Ledger:
        """The ledger of ``cache_dir/<identity[:16]>/ledger.csv``; ``about`` (what the identity was
        made from) is written beside it so a person can tell the folders apart."""
        folder = Path(cache_dir) / identity[:16]
        meta = folder / "identity.json"
        if meta.is_file():
            found = read_json_object(meta).get("identity")
            if found != identity:
                raise NasqError(f"{meta}: belongs to another supernet/evaluation ({found!r:.20})")
        else:
            atomic_write_json(meta, {"identity": identity, **about})
        return cls(evaluate, folder / "ledger.csv", identity)

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
        self.refresh()
        todo = list({s.key(): s for s in specs if s.key() not in self.entries}.values())
        self.reused += len({s.key() for s in specs if s.key() in self._loaded})
        if todo:
            values = list(self.evaluate(todo))
            if len(values) != len(todo):
                raise NasqError(f"the evaluator returned {len(values)} values for {len(todo)} subnets")
            for spec, value in zip(todo, values, strict=True):
                self._add(spec, math.nan if value is None else float(value), origin)
        self.save()
        for s in specs:
            self.specs.setdefault(s.key(), s)
        return self.values([s.key() for s in specs])

    def record(self, spec: SubnetSpec, top1: float, origin: str) -> None:
        """Add a measurement made elsewhere (a resumed checkpoint, a Ray Tune trial); a key already
        in the ledger keeps its first value. It is stored with the next batch, or by :meth:`save`."""
        if spec.key() not in self.entries:
            self._add(spec, top1, origin)

    def check_resumed(self, top1: dict[str, float], source: str) -> None:
        """Refuse, in one line naming ``source``, the measurements of a resumed search (key -> top1,
        NaN: failed) that a persisted ledger cannot vouch for: a search made on this supernet with
        these evaluation settings added each of its evaluations to this ledger before it checkpointed,
        so a key it lacks, or holds with another value, means another supernet or cache. Nothing of a
        resumed search is then ever copied into a shared ledger. An in-memory ledger checks values only."""
        bad = next((k for k, v in top1.items() if not (math.isnan(v) or valid_top1(v))), None)
        if bad is not None:
            raise NasqError(f"{source}: top1 {top1[bad]!r} of {bad[:40]} is not a top-1 in [0, 100]")
        if self.path is None:
            return
        self.refresh()
        missing = [k for k in top1 if k not in self.entries]
        differ = [k for k in top1 if k not in missing and not _same(self.entries[k].top1, top1[k])]
        if missing or differ:
            what = (f"{len(missing)} of its {len(top1)} evaluations are not in" if missing else
                    f"top1 of {differ[0][:40]} is {top1[differ[0]]!r}, not {self.entries[differ[0]].top1!r} as in")
            raise NasqError(f"{source}: {what} the ledger {self.path} of this supernet and evaluation "
                            f"settings: it was made on another supernet or cache; start a new search instead of --resume")

    # ------------------------------------------------------------ persistence
    def to_csv(self, keys: Sequence[str] | None = None) -> str:
        """All entries, or those of ``keys`` in that order. top1 is written exactly (shortest
        round-trip repr): a search resumed from the cache must see the very same numbers."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(COLUMNS)
        w.writerows(self._fields(k) for k in (self.entries if keys is None else keys))
        return buf.getvalue()

    def refresh(self) -> None:
        """Read what was appended to the file since the last read (other processes' evaluations)."""
        if self._store is not None:
            self._merge(self._store.read_new())

    def save(self) -> None:
        """Append the entries not yet in the file (creating it, with its header, if needed)."""
        if self._store is None or (self.path.is_file() and not self._pending()):
            return
        try:
            with self._store.lock:
                self._merge(self._store.read_new())
                pending = self._pending()
                if pending or self._store.inode is None:
                    self._store.append([self._fields(k) for k in pending])
                    self._on_disk.update(pending)
        except filelock.Timeout:
            raise NasqError(f"{self._store.lock.lock_file}: held by another process for over "
                            f"{LOCK_TIMEOUT_S:.0f} s; is a search stuck?") from None
        except OSError as e:
            raise NasqError(f"{self.path}: could not append to the ledger ({e.strerror or e})") from e

    def _merge(self, rows: list[tuple[Entry, SubnetSpec]] | None) -> None:
        if rows is None:  # the file was replaced: read it whole again
            self._on_disk.clear()
            rows = self._store.read_new() or []
        for entry, spec in rows:
            if entry.key in self._on_disk:
                continue  # a later duplicate (an older nasq, a race): the first row wins
            self._on_disk.add(entry.key)
            if entry.key not in self.entries:
                self._loaded.add(entry.key)
            self.entries[entry.key], self.specs[entry.key] = entry, spec

    def _pending(self) -> list[str]:
        return [k for k in self.entries if k not in self._on_disk]

    def _add(self, spec: SubnetSpec, top1: float, origin: str) -> None:
        ok = math.isfinite(top1)  # None, NaN or inf: the evaluation failed
        if ok and not valid_top1(top1):
            raise NasqError(f"top1 {top1!r} of {spec.key()[:40]} ({origin}) is not a top-1 in [0, 100]")
        self.entries[spec.key()] = Entry(spec.key(), origin, "ok" if ok else "failed", top1 if ok else math.nan)
        self.specs[spec.key()] = spec

    def _fields(self, key: str) -> list[str]:
        e = self.entries[key]
        return [e.key, e.origin, e.status, "" if e.status != "ok" else repr(e.top1), self.specs[key].to_json()]


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b
