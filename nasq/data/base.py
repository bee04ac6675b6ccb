"""The data-source contract: ``DataSource`` owns checking, splitting and normalising; a kind fills
``_probe`` (cheap: headers, folder listings, first rows) and ``_read`` (the samples).

What every source guarantees (tested over every registered kind by ``nasq.testing.sources``):
shapes, class count and normalisation are derived from the data - the statistics from the training
split only - and checked against the space before anything is written; the same seed gives the
same splits; bad input is one :class:`ConfigError` line naming the file and the row or field.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from nasq.errors import ConfigError
from nasq.registry import Registry
from nasq.specs import DataConfig, SpaceConfig

CHUNK_ROWS = 4096  # samples normalised at a time: bounds the float64 temporaries of a memmapped source


@dataclass(frozen=True)
class Splits:
    """float32 samples (NCHW images, NCT series, NF tables), int64 labels in ``[0, num_classes)``.

    ``mean``/``std`` (one per channel or feature, in units of the raw values divided by ``scale``)
    were measured on the training split and already applied: a consumer that feeds raw data (an
    export, a server) computes ``(raw / scale - mean) / std`` along axis 1."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    note: str = ""
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    scale: float = 1.0
    class_names: tuple[str, ...] = ()
    classes: int = 0  # 0: derived from the labels
    fallback: bool = False  # a preset stood in for the data asked for (see ``note``)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    @property
    def num_classes(self) -> int:
        if self.classes:
            return self.classes
        return int(max(self.train_y.max(), self.test_y.max()) + 1)

    def normalisation(self) -> dict:
        """What export and serving need to reproduce the input transform (JSON-ready)."""
        return {"scale": self.scale, "mean": list(self.mean), "std": list(self.std), "axis": 1}

    def summary(self) -> str:
        what = {4: "images", 3: "series", 2: "features"}.get(self.train_x.ndim, "samples")
        return (f"{self.name}: train {len(self.train_y)}, val {len(self.val_y)}, test {len(self.test_y)}, "
                f"{what} {'x'.join(map(str, self.shape))}, {self.num_classes} classes")


@dataclass(frozen=True)
class Probe:
    """What a cheap look at the data found: per-sample shape (``None`` entries: set by the space,
    e.g. an image folder resizes) and the class count."""

    shape: tuple[int | None, ...]
    num_classes: int
    where: str


@dataclass
class Raw:
    """Samples as read, before splitting and normalising. ``x`` may be a uint8 memmap; labels are
    int64 class ids. ``test_*``/``val_*`` are given splits (or ``None``: carved from ``x``)."""

    x: np.ndarray
    y: np.ndarray
    where: str
    test_x: np.ndarray | None = None
    test_y: np.ndarray | None = None
    val_x: np.ndarray | None = None
    val_y: np.ndarray | None = None
    scale: float = 1.0
    class_names: tuple[str, ...] = ()
    num_classes: int = 0
    note: str = ""
    name: str = ""  # the data really used, when a preset fell back to another ("" = the kind)
    fallback: bool = False


def expected_shape(space: SpaceConfig | None) -> tuple[int, ...] | None:
    """The per-sample shape the space's network takes (``SpaceConfig.input_shape``)."""
    return None if space is None else tuple(int(s) for s in space.input_shape)


SOURCES: Registry[type[DataSource]] = Registry("data source")
SOURCE_FIELDS = frozenset({"path", "label", "length", "fallback"})  # DataConfig fields only some sources read


class DataSource(abc.ABC):
    """One kind of data. ``check`` and ``load`` are the contract; subclasses fill the hooks.

    ``_probe`` is called by ``check`` before anything is written and must stay cheap (headers,
    folder listings, first rows); it may assume ``cfg`` passed the schema but nothing about the files.
    ``_read`` is called by ``load``; it returns every sample with labels already mapped to ids and
    may raise ConfigError naming file and row. ``self.space`` (may be ``None``) and
    ``self.cache_dir`` (may be ``None``: keep everything in memory) are set by the caller."""

    kind: ClassVar[str] = ""
    reads: ClassVar[frozenset[str]] = frozenset({"path"})  # the source-specific DataConfig fields it uses

    def __init__(self, cfg: DataConfig, source: str = "experiment", space: SpaceConfig | None = None,
                 cache_dir: Path | None = None):
        self.cfg, self.source, self.space = cfg, source, space
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None

    # ------------------------------------------------------------ hooks
    @abc.abstractmethod
    def _probe(self) -> Probe: ...

    @abc.abstractmethod
    def _read(self) -> Raw: ...

    # ------------------------------------------------------------ contract
    @property
    def path(self) -> Path:
        if not self.cfg.path:
            raise ConfigError(self.source, "data.path", f"source {self.kind!r} needs a path to its data")
        path = Path(self.cfg.path)
        if not path.exists():
            raise ConfigError(self.source, "data.path", f"no such file or folder: {self.cfg.path!r}")
        return path

    def check(self) -> Probe:
        """Open the data cheaply and compare it with the space (one-line ConfigError on mismatch)."""
        with self._reading():
            probe = self._probe()
        self._check_against_space(probe.shape, probe.num_classes, probe.where)
        return probe

    def load(self) -> Splits:
        with self._reading():
            raw = self._read()
        if len(raw.y) == 0:
            raise ConfigError(raw.where, "samples", "no training samples found")
        labels = [y for y in (raw.y, raw.test_y, raw.val_y) if y is not None and len(y)]
        k = raw.num_classes or max(int(y.max()) for y in labels) + 1
        self._check_labels(raw, k)
        self._check_against_space(tuple(raw.x.shape[1:]), k, raw.where)
        tr, va, te = self._split(raw)
        train_x, train_y = raw.x, raw.y
        mean, std = _stats(train_x, tr, raw.scale)
        norm = lambda x, idx: _gather(x, idx, raw.scale, mean, std)  # noqa: E731
        if raw.val_x is not None:
            val = (norm(raw.val_x, np.arange(len(raw.val_y))), raw.val_y)
        else:
            val = (norm(train_x, va), train_y[va])
        if raw.test_x is not None:
            te = te if te is not None else np.arange(len(raw.test_y))
            test = (norm(raw.test_x, te), raw.test_y[te])
        else:
            test = (norm(train_x, te), train_y[te])
        return Splits(raw.name or self.kind, norm(train_x, tr), train_y[tr], val[0], val[1], test[0], test[1],
                      raw.note, tuple(map(float, mean)), tuple(map(float, std)), raw.scale, raw.class_names, k,
                      raw.fallback)

    # ------------------------------------------------------------ shared checks
    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """An unreadable file or folder (permissions, a vanished mount) is one line, not a traceback."""
        try:
            yield
        except OSError as e:
            where = getattr(e, "filename", None) or self.cfg.path or self.kind
            raise ConfigError(str(where), "data.path", f"cannot read: {e.strerror or e}") from e

    def _check_labels(self, raw: Raw, k: int) -> None:
        for which, y in (("train", raw.y), ("test", raw.test_y), ("val", raw.val_y)):
            if y is not None and len(y) and (y.min() < 0 or y.max() >= k):
                raise ConfigError(raw.where, f"{which} labels", f"must lie in [0, {k}), got {int(y.min())}..{int(y.max())}")
        counts = np.bincount(raw.y, minlength=k)
        if (counts == 0).any():
            c = int(np.flatnonzero(counts == 0)[0])
            name = raw.class_names[c] if c < len(raw.class_names) else str(c)
            raise ConfigError(raw.where, "labels", f"class {name!r} (id {c}) has no training samples")

    def _check_against_space(self, shape: tuple[int | None, ...], k: int, where: str) -> None:
        want = expected_shape(self.space)
        if want is None:
            return
        head = int(self.space.input.num_classes)
        if k > head:
            raise ConfigError(where, "classes", f"the data has {k} classes, more than the space's head "
                              f"({self.space.name}: input.num_classes {head})")
        if len(shape) != len(want) or any(s is not None and s != w for s, w in zip(shape, want, strict=False)):
            got = "x".join("any" if s is None else str(s) for s in shape)
            raise ConfigError(where, "shape", f"samples are {got}, the space {self.space.name} takes "
                              f"{'x'.join(map(str, want))}")

    def _split(self, raw: Raw) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Train/val/test indices into ``raw.x`` (test: into ``raw.test_x`` when given). Seeded:
        a carved test split is stratified, validation is a seeded random draw as it always was."""
        cfg, n = self.cfg, len(raw.y)
        rng = np.random.default_rng(cfg.seed)
        rest, te = np.arange(n), None
        if raw.test_x is None:
            te, rest = stratified(raw.y, n // 5, rng)
        if raw.val_x is None:
            order = rest[np.random.default_rng(cfg.seed + (raw.test_x is None)).permutation(len(rest))]
            val_size = min(cfg.val_size, len(rest) // 5)
            va, tr = order[:val_size], order[val_size:]
        else:
            va, tr = np.arange(0), rest
        if cfg.train_limit is not None:
            tr = tr[:cfg.train_limit]
        if cfg.test_limit is not None:
            te = (te if te is not None else np.arange(len(raw.test_y)))[:cfg.test_limit]
        return tr, va, te


def stratified(y: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Seeded draw of ``n`` indices with each class in proportion: rank each sample within its
    class (in random order) and take the lowest relative ranks first."""
    order = rng.permutation(len(y))
    ys = y[order]
    rank = np.empty(len(y))
    for c in np.unique(ys):
        idx = np.flatnonzero(ys == c)
        rank[idx] = (np.arange(len(idx)) + 0.5) / len(idx)
    pick = order[np.argsort(rank, kind="stable")]
    return np.sort(pick[:n]), pick[n:]


def _stats(x: np.ndarray, idx: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std along axis 1 over the samples ``idx``, chunk by chunk (``x`` may be a memmap)."""
    c = x.shape[1]
    total, total_sq, count = np.zeros(c), np.zeros(c), 0
    axes = (0, *range(2, x.ndim))
    for lo in range(0, len(idx), CHUNK_ROWS):
        part = np.asarray(x[np.sort(idx[lo:lo + CHUNK_ROWS])], dtype=np.float64) / scale
        total += part.sum(axis=axes)
        total_sq += (part * part).sum(axis=axes)
        count += part.size // c
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(total_sq / max(count, 1) - mean * mean, 0.0))
    std[std < 1e-8] = 1.0  # a constant channel or feature carries nothing; leave it centred
    return mean, std


def _gather(x: np.ndarray, idx: np.ndarray, scale: float, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(x[idx] / scale - mean) / std`` as float32, filled chunk by chunk into one array."""
    out = np.empty((len(idx), *x.shape[1:]), dtype=np.float32)
    bshape = (1, -1) + (1,) * (x.ndim - 2)
    m, s = mean.reshape(bshape), std.reshape(bshape)
    for lo in range(0, len(idx), CHUNK_ROWS):
        part = np.asarray(x[idx[lo:lo + CHUNK_ROWS]], dtype=np.float32)
        out[lo:lo + len(part)] = (part / np.float32(scale) - m) / s
    return out


def make(cfg: DataConfig, source: str = "experiment", space: SpaceConfig | None = None,
         cache_dir: Path | None = None) -> DataSource:
    """The registered source ``cfg.source`` names; an unknown name is one line listing the kinds."""
    if cfg.source not in SOURCES:
        raise ConfigError(source, "data.source", SOURCES.miss_message(cfg.source))
    kind = SOURCES.get(cfg.source)
    changed = {n for n in SOURCE_FIELDS if getattr(cfg, n) != DataConfig.model_fields[n].default}
    for name in sorted(changed - kind.reads):  # set, but this source would silently ignore it
        users = ", ".join(k for k in SOURCES.names() if name in SOURCES.get(k).reads)
        raise ConfigError(source, f"data.{name}", f"source {cfg.source!r} does not read it (used by: {users})")
    return kind(cfg, source, space, cache_dir)
