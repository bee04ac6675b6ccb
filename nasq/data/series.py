"""``series``: time series as aeon/sktime ``.ts`` files or ``(N, C, T)`` arrays in an ``.npz``.

``path``: a folder ``<Name>`` holding ``<Name>_TRAIN.ts`` and ``<Name>_TEST.ts`` (a given split; or
one ``*_TRAIN.ts`` and at most one ``*_TEST.ts`` under any names), one ``.ts``
file (split by seed), or an ``.npz`` with the keys of the ``npz`` source. Series come out as
(C, T) with T = ``data.length`` when given - shorter series padded with zeros at the end, longer
ones cut, as users of the UEA archive expect. Without ``data.length``: equal-length data keeps its
length; variable-length data takes the space's length, else the longest training series.
A missing value (``?``) or NaN is an error naming the file and its 1-based line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nasq.data.arrays import NpzSource
from nasq.data.base import SOURCES, DataSource, Probe, Raw, expected_shape
from nasq.errors import ConfigError

_FLAGS = ("timestamps", "missing", "univariate", "equallength", "classlabel", "targetlabel")


@dataclass
class TsHeader:
    dims: int = 1
    length: int | None = None  # @seriesLength when @equalLength true
    labels: tuple[str, ...] = ()
    data_line: int = 0  # 1-based line of @data


def read_ts_header(path: Path) -> TsHeader:
    """The header of a .ts file, reading up to ``@data`` only."""
    head, flags = TsHeader(), {}
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not line.startswith("@"):
                raise ConfigError(str(path), f"line {lineno}", "data before the @data line")
            key, _, rest = line[1:].partition(" ")
            key, words = key.lower(), rest.split()
            if key == "data":
                head.data_line = lineno
                break
            if key in _FLAGS:
                flags[key] = bool(words) and words[0].lower() == "true"
                if key == "classlabel" and flags[key]:
                    head.labels = tuple(words[1:])
            elif key in ("dimensions", "serieslength"):
                value = _int(words, path, lineno, key)
                if key == "dimensions":
                    head.dims = value
                else:
                    head.length = value
    if not head.data_line:
        raise ConfigError(str(path), "header", "no @data line: not a .ts file")
    if flags.get("timestamps"):
        raise ConfigError(str(path), "@timeStamps", "series with time stamps are not supported; give plain values")
    if not flags.get("classlabel") or not head.labels:
        raise ConfigError(str(path), "@classLabel", "a classification file must declare its labels (@classLabel true ...)")
    if not flags.get("equallength", False):
        head.length = None
    return head


def _open_text(path: Path):
    try:
        return open(path, encoding="utf-8")
    except OSError as e:
        raise ConfigError(str(path), "file", f"cannot read: {e}") from e


def _int(words: list[str], path: Path, lineno: int, key: str) -> int:
    if len(words) != 1 or not words[0].isdigit() or int(words[0]) < 1:
        raise ConfigError(str(path), f"line {lineno}", f"@{key} must be a positive integer, got {' '.join(words)!r}")
    return int(words[0])


def read_ts(path: Path, labels: tuple[str, ...] | None = None) -> tuple[list[np.ndarray], np.ndarray, TsHeader]:
    """Series (each (C, T_i) float32), label ids (in the header's order) and the header."""
    head = read_ts_header(path)
    names = labels or head.labels
    series, y = [], []
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if lineno <= head.data_line or not line or line.startswith("#"):
                continue
            *dims, label = line.split(":")
            if len(dims) != head.dims:
                raise ConfigError(str(path), f"line {lineno}", f"{len(dims)} dimensions, the header declares {head.dims}")
            if label.strip() not in names:
                raise ConfigError(str(path), f"line {lineno}", f"label {label.strip()!r} is not declared (@classLabel: {' '.join(names)})")
            series.append(_values(dims, path, lineno))
            y.append(names.index(label.strip()))
    return series, np.array(y, dtype=np.int64), head


def _values(dims: list[str], path: Path, lineno: int) -> np.ndarray:
    rows = []
    for d in dims:
        if "?" in d:
            raise ConfigError(str(path), f"line {lineno}", "holds a missing value '?'")
        try:
            rows.append(np.array(d.split(","), dtype=np.float32))
        except ValueError as e:
            raise ConfigError(str(path), f"line {lineno}", f"not a list of numbers: {str(e)[:80]}") from e
    if len({len(r) for r in rows}) > 1:
        raise ConfigError(str(path), f"line {lineno}", f"dimensions differ in length: {[len(r) for r in rows]}")
    out = np.stack(rows)
    if not np.isfinite(out).all():
        raise ConfigError(str(path), f"line {lineno}", "holds NaN or infinity")
    return out


def fit_length(series: list[np.ndarray], length: int) -> np.ndarray:
    """(N, C, length): each series padded with zeros at its end or cut."""
    out = np.zeros((len(series), series[0].shape[0], length), dtype=np.float32)
    for i, s in enumerate(series):
        t = min(length, s.shape[1])
        out[i, :, :t] = s[:, :t]
    return out


@SOURCES.register("series")
class SeriesSource(DataSource):
    kind = "series"
    reads = frozenset({"path", "length"})

    def _files(self) -> tuple[Path, Path | None]:
        path = self.path
        if path.is_file():
            if path.suffix.lower() not in (".ts", ".npz"):
                raise ConfigError(self.source, "data.path", f"a series file must be .ts or .npz, got {path.name!r}")
            return path, None
        if (path / f"{path.name}_TRAIN.ts").is_file():  # UEA layout: <Name>/<Name>_TRAIN.ts beside variants
            train, test = [path / f"{path.name}_TRAIN.ts"], [p for p in [path / f"{path.name}_TEST.ts"] if p.is_file()]
        else:
            train, test = sorted(path.glob("*_TRAIN.ts")), sorted(path.glob("*_TEST.ts"))
        if len(train) != 1 or len(test) > 1:
            raise ConfigError(self.source, "data.path", f"{str(path)!r} must hold one *_TRAIN.ts (and at most one "
                              f"*_TEST.ts), found {len(train)} and {len(test)}")
        return train[0], (test[0] if test else None)

    def _length(self, equal: int | None, longest: int) -> int:
        want = expected_shape(self.space)
        return self.cfg.length or equal or (want[-1] if want is not None and len(want) == 2 else longest)

    def _probe(self) -> Probe:
        train, test = self._files()
        if train.suffix.lower() == ".npz":
            probe = NpzSource(self.cfg, self.source, self.space)._probe()
            return Probe((*probe.shape[:-1], self.cfg.length or probe.shape[-1]), probe.num_classes, probe.where)
        head = read_ts_header(train)
        if test is not None:
            other = read_ts_header(test)
            if other.dims != head.dims:
                raise ConfigError(str(test), "@dimensions", f"{other.dims}, the training file has {head.dims}")
        length = self.cfg.length or head.length  # None: variable length, decided when loading
        if length is None and (want := expected_shape(self.space)) is not None and len(want) == 2:
            length = want[-1]
        return Probe((head.dims, length), len(head.labels), str(train))

    def _read(self) -> Raw:
        train, test = self._files()
        if train.suffix.lower() == ".npz":
            raw = NpzSource(self.cfg, self.source, self.space)._read()
            if raw.x.ndim != 3:
                raise ConfigError(str(train), "x", f"series must be (N, C, T) arrays, got {raw.x.shape}")
            if self.cfg.length:
                for part in ("x", "test_x", "val_x"):
                    arr = getattr(raw, part)
                    if arr is not None:
                        setattr(raw, part, fit_length(list(arr.astype(np.float32)), self.cfg.length))
            return raw
        series, y, head = read_ts(train)
        length = self._length(head.length, max(s.shape[1] for s in series) if series else 1)
        raw = Raw(fit_length(series, length) if series else np.zeros((0, head.dims, length), np.float32), y,
                  str(train), class_names=head.labels, num_classes=len(head.labels),
                  note=f"{len(y)} series of {head.dims}x{length} from {train.name}")
        if test is not None:
            test_series, raw.test_y, _ = read_ts(test, head.labels)
            raw.test_x = fit_length(test_series, length)
        return raw
