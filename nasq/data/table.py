"""``table``: a CSV or Parquet file read through pandas; one label column (``data.label``, default
``label``), every other column a numeric feature. Labels become ids in sorted order of their values.
Rows are named 1-based as a spreadsheet shows them (CSV: the header is line 1, so row r is line r+1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nasq.data.base import SOURCES, DataSource, Probe, Raw
from nasq.errors import ConfigError, MissingDependencyError

PROBE_ROWS = 1000  # rows read to check the columns before anything is written


def _pandas():
    try:
        import pandas as pd
    except ImportError as e:
        raise MissingDependencyError("the table data source needs pandas: pip install pandas "
                                     "(and pyarrow for Parquet)") from e
    return pd


def _read_frame(path: Path, nrows: int | None = None):
    pd = _pandas()
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path, nrows=nrows)
        if suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)  # columnar: no cheap first rows, but the file holds its schema
            return frame if nrows is None else frame.head(nrows)
    except ImportError as e:
        raise MissingDependencyError(f"reading {path.name} needs pyarrow: pip install pyarrow") from e
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise ConfigError(str(path), "file", f"cannot read as a table: {str(e).splitlines()[0][:160]}") from e
    raise ConfigError(str(path), "file", f"a table must be .csv or .parquet, got {suffix or 'no extension'!r}")


@SOURCES.register("table")
class TableSource(DataSource):
    kind = "table"
    reads = frozenset({"path", "label"})

    def _columns(self, frame, path: Path) -> list[str]:
        pd = _pandas()
        label = self.cfg.label
        if label not in frame.columns:
            raise ConfigError(str(path), "data.label", f"no column {label!r} (columns: {', '.join(map(str, frame.columns))[:200]})")
        features = [c for c in frame.columns if c != label]
        if not features:
            raise ConfigError(str(path), "columns", "no feature columns besides the label")
        for c in features:
            if not pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]):
                raise ConfigError(str(path), f"column {c!r}", f"features must be numeric, got {frame[c].dtype}")
        return features

    def _probe(self) -> Probe:
        path = self.path
        frame = _read_frame(path, PROBE_ROWS)
        features = self._columns(frame, path)
        return Probe((len(features),), int(frame[self.cfg.label].nunique()), str(path))

    def _read(self) -> Raw:
        path = self.path
        frame = _read_frame(path)
        features = self._columns(frame, path)
        labels = frame[self.cfg.label]
        if labels.isna().any():
            raise ConfigError(str(path), f"row {_row(path, int(np.flatnonzero(labels.isna().to_numpy())[0]))}",
                              f"label column {self.cfg.label!r} is empty")
        x = frame[features].to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(x)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise ConfigError(str(path), f"row {_row(path, int(r))}", f"column {features[c]!r} holds {x[r, c]!r} (NaN or infinity)")
        values = labels.to_numpy()
        classes, y = np.unique(values.astype(str) if values.dtype == object else values, return_inverse=True)
        return Raw(x.astype(np.float32), y.astype(np.int64), str(path), class_names=tuple(map(str, classes)),
                   num_classes=len(classes), note=f"{len(y)} rows, {len(features)} features from {path}")


def _row(path: Path, i: int) -> str:
    """How a user finds row ``i`` (0-based data row): a CSV line number, a Parquet row number."""
    return f"{i + 2} (line)" if path.suffix.lower() == ".csv" else f"{i + 1}"
