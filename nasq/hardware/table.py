"""The per-layer latency table (``hardware_profiles/<name>/latency.csv``) and its measurement notes.

One row per :class:`~nasq.hardware.keys.LayerKey`. Columns, in this order:

* the key: ``op, cin, cout, kernel, stride, hin, act, w_format, a_format``;
* ``latency_us_median``, ``latency_us_p10``, ``latency_us_p90`` - microseconds per run of the
  layer alone, batch 1, over ``repeats`` timed runs after a warm-up;
* ``status`` - ``supported`` or ``unsupported`` (the runtime could not export or run the layer;
  latencies are then empty and ``reason`` says why: nothing is invented for it);
* ``reason``, ``runtime_ops`` - the ops the runtime actually executed, after its graph
  optimisations (e.g. ``DequantizeLinear>Conv>BatchNormalization>Clip``).

Loading is strict: a wrong header, a bad number or a duplicate key is one :class:`ConfigError`
line naming the file, the row (with its line) and the column; so is a file that is not UTF-8, larger
than :data:`MAX_TABLE_BYTES`, or has a cell longer than :data:`MAX_CELL_CHARS`. Torch-free.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from nasq.errors import ConfigError
from nasq.files import atomic_write_text, read_json, sha256_bytes
from nasq.formats import FORMATS
from nasq.hardware.keys import ACTIVATIONS, KEY_FIELDS, OPS, LayerKey, space_keys
from nasq.space import SearchSpace
from nasq.specs import (
    MAX_CHOICES,
    MAX_THREADS,
    Frozen,
    Name,
    decode_utf8,
    one_line,
    read_bounded,
    show,
    validate,
)

LATENCY_CSV = "latency.csv"
MEASUREMENT_JSON = "measurement.json"
TIMING_FIELDS = ("latency_us_median", "latency_us_p10", "latency_us_p90", "repeats")
COLUMNS = (*KEY_FIELDS, *TIMING_FIELDS, "status", "reason", "runtime_ops")
STATUSES = ("supported", "unsupported")
_INT_FIELDS = ("cin", "cout", "kernel", "stride", "hin")
_SHOW_MISSING = 5
# A measured table has one row per distinct layer of the spaces it covers: the shipped one is 86 KB
# for ~900 rows; 64 MiB holds ~600,000 rows. A cell is a number, a name or a short reason.
MAX_TABLE_BYTES = 64 << 20
MAX_CELL_CHARS = 2048
MAX_KEY_INT = 10_000_000  # channels (width x expand), kernel, stride, input size of one layer
MAX_REPEATS = 1_000_000_000


@dataclass(frozen=True)
class Row:
    status: str
    median_us: float = math.nan
    p10_us: float = math.nan
    p90_us: float = math.nan
    repeats: int = 0
    reason: str = ""
    runtime_ops: str = ""

    @property
    def supported(self) -> bool:
        return self.status == "supported"

    @classmethod
    def unsupported(cls, reason: str) -> Row:
        return cls("unsupported", reason=" ".join(reason.split()) or "unknown failure")


class LatencyTable:
    """Rows by key. ``source`` names the CSV in errors; ``hash`` is the sha256 of its text."""

    def __init__(self, rows: dict[LayerKey, Row], source: str = "<memory>"):
        self.rows, self.source = dict(sorted(rows.items())), source
        self.hash = sha256_bytes(self.to_csv().encode())

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, key: object) -> bool:
        return key in self.rows

    def latency_us(self, key: LayerKey) -> float:
        """Median microseconds; ``inf`` for an unsupported layer; KeyError for a missing one."""
        row = self.rows[key]
        return row.median_us if row.supported else math.inf

    def missing(self, space: SearchSpace) -> list[LayerKey]:
        """Keys a subnet of ``space`` can need that this table lacks, sorted."""
        return [k for k in space_keys(space) if k not in self.rows]

    def check_covers(self, space: SearchSpace) -> None:
        missing = self.missing(space)
        if missing:
            shown = "; ".join(k.token() for k in missing[:_SHOW_MISSING])
            more = f" (and {len(missing) - _SHOW_MISSING} more)" if len(missing) > _SHOW_MISSING else ""
            raise ConfigError(self.source, "", f"lacks {len(missing)} of the {len(space_keys(space))} "
                              f"layer rows space '{space.name}' needs: {shown}{more}")

    # ------------------------------------------------------------ CSV
    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(COLUMNS)
        for key, row in self.rows.items():
            timing = [_num(row.median_us), _num(row.p10_us), _num(row.p90_us), row.repeats]
            writer.writerow([*(getattr(key, f) for f in KEY_FIELDS), *timing, row.status, row.reason, row.runtime_ops])
        return buf.getvalue()

    def save(self, path: str | Path) -> Path:
        return atomic_write_text(path, self.to_csv())

    @classmethod
    def load(cls, path: str | Path, source: str | None = None) -> LatencyTable:
        path = Path(path)
        source = source or str(path)
        return cls.from_csv(decode_utf8(read_bounded(path, MAX_TABLE_BYTES, source), source), source)

    @classmethod
    def from_csv(cls, text: str, source: str = "<csv>") -> LatencyTable:
        reader = csv.reader(io.StringIO(text))
        try:
            header = next(reader, None)
            _check_header(header, source)
            rows: dict[LayerKey, Row] = {}
            for n, values in enumerate(reader, start=1):
                where = f"row {n} (line {reader.line_num})"
                if len(values) != len(COLUMNS):
                    raise ConfigError(source, where, f"expected {len(COLUMNS)} columns, got {len(values)}")
                cells = dict(zip(COLUMNS, values, strict=True))
                for col, value in cells.items():
                    if len(value) > MAX_CELL_CHARS:
                        raise _cell_error(source, where, col, f"longer than {MAX_CELL_CHARS} characters ({len(value):,})")
                key, row = _parse_key(cells, source, where), _parse_row(cells, source, where)
                if key in rows:
                    raise ConfigError(source, where, f"duplicate key {key.token()}")
                rows[key] = row
        except csv.Error as e:  # e.g. a cell beyond the csv module's field size limit
            raise ConfigError(source, f"line {reader.line_num}", f"not valid CSV ({one_line(e)})") from None
        if not rows:
            raise ConfigError(source, "", "no rows")
        table = cls(rows, source)
        table.hash = sha256_bytes(text.encode())
        return table


def _num(x: float) -> str:
    return "" if math.isnan(x) else f"{x:.3f}"


def _check_header(header: list[str] | None, source: str) -> None:
    if header is None:
        raise ConfigError(source, "", "empty file, expected a header row")
    for i, name in enumerate(header):
        if name not in COLUMNS:
            raise ConfigError(source, f"header column {i + 1}", f"unknown column {show(name)} (expected: {', '.join(COLUMNS)})")
    absent = [c for c in COLUMNS if c not in header]
    if absent:
        raise ConfigError(source, "header", f"missing column(s) {', '.join(absent)}")
    if tuple(header) != COLUMNS:
        raise ConfigError(source, "header", f"columns must be in the order {', '.join(COLUMNS)}")


def _cell_error(source: str, where: str, col: str, message: str) -> ConfigError:
    return ConfigError(source, f"{where}, column {col}", message)


def _parse_key(cells: dict[str, str], source: str, where: str) -> LayerKey:
    for col, allowed in (("op", OPS), ("act", ACTIVATIONS)):
        if cells[col] not in allowed:
            raise _cell_error(source, where, col, f"must be one of {', '.join(allowed)}, got {show(cells[col])}")
    for col in ("w_format", "a_format"):
        if cells[col] not in FORMATS:  # the registry echoes the name: give it a short one
            raise _cell_error(source, where, col, FORMATS.miss_message(show(cells[col], 40).strip("'\"")))
    ints = {col: _int(cells[col], source, where, col, minimum=1, maximum=MAX_KEY_INT) for col in _INT_FIELDS}
    return LayerKey(cells["op"], ints["cin"], ints["cout"], ints["kernel"], ints["stride"], ints["hin"],
                    cells["act"], cells["w_format"], cells["a_format"])


def _parse_row(cells: dict[str, str], source: str, where: str) -> Row:
    status = cells["status"]
    if status not in STATUSES:
        raise _cell_error(source, where, "status", f"must be one of {', '.join(STATUSES)}, got {show(status)}")
    if status == "unsupported":
        if not cells["reason"].strip():
            raise _cell_error(source, where, "reason", "an unsupported row must say why")
        for col in TIMING_FIELDS[:3]:
            if cells[col].strip():
                raise _cell_error(source, where, col, f"must be empty for an unsupported row, got {show(cells[col])}")
        return Row("unsupported", reason=cells["reason"], runtime_ops=cells["runtime_ops"])
    median, p10, p90 = (_float(cells[c], source, where, c) for c in TIMING_FIELDS[:3])
    if not p10 <= median <= p90:
        raise _cell_error(source, where, "latency_us_median",
                          f"must lie between latency_us_p10 and latency_us_p90, got {p10} <= {median} <= {p90}")
    repeats = _int(cells["repeats"], source, where, "repeats", minimum=1, maximum=MAX_REPEATS)
    return Row("supported", median, p10, p90, repeats, cells["reason"], cells["runtime_ops"])


def _int(text: str, source: str, where: str, col: str, minimum: int, maximum: int) -> int:
    if len(text) > 20:  # int() of thousands of digits is slow, and refused past 4,300
        raise _cell_error(source, where, col, f"not an integer of at most 20 characters, got {show(text)}")
    try:
        value = int(text)
    except ValueError:
        raise _cell_error(source, where, col, f"not an integer, got {show(text)}") from None
    if not minimum <= value <= maximum:
        raise _cell_error(source, where, col, f"must be >= {minimum} and <= {maximum:,}, got {value}")
    return value


def _float(text: str, source: str, where: str, col: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _cell_error(source, where, col, f"not a number, got {show(text)}") from None
    if not math.isfinite(value) or value <= 0:
        raise _cell_error(source, where, col, f"must be a finite number > 0, got {show(text)}")
    return value


# ---------------------------------------------------------------- measurement notes
class Calibration(Frozen):
    """The ``calibration`` entry :func:`calibrate_profile` adds to a calibrated copy's measurement.json."""

    host: str
    cpu: str
    date: str
    subnets: int = Field(ge=1)
    seed: int
    from_profile: str
    from_profile_hash: str
    median_abs_error_before: float = Field(ge=0)  # relative: |measured / predicted - 1|
    median_abs_error_after: float = Field(ge=0)  # cross-validated: each subnet predicted by a fit without it
    median_abs_error_after_fit: float = Field(ge=0)  # in-sample, on the subnets the correction was fitted on
    factor_before: float = Field(gt=0)


class MeasurementInfo(Frozen):
    """``measurement.json`` beside a measured ``latency.csv``: how and on what it was measured,
    and the spaces whose every layer it covers (checked by tests/catalog)."""

    backend: str
    spaces: tuple[Name, ...] = Field(min_length=1, max_length=MAX_CHOICES)
    device: str
    measured_on: str
    versions: dict[str, str] = Field(max_length=MAX_CHOICES)
    threads: int = Field(ge=1, le=MAX_THREADS)
    warmup: int = Field(ge=0, le=MAX_REPEATS)
    repeats: int = Field(ge=1, le=MAX_REPEATS)
    rounds: int = Field(default=1, ge=1, le=MAX_REPEATS)  # interleaved passes the repeats were split over
    rows: int = Field(ge=1, le=MAX_REPEATS)
    unsupported_rows: int = Field(ge=0, le=MAX_REPEATS)
    session_overhead_us: float | None = None
    fit_subnets: int = Field(default=0, ge=0, le=MAX_REPEATS)  # whole subnets the shipped correction was fitted on
    wall_s: float = Field(ge=0)
    load_average: tuple[float, ...] = Field(default=(), max_length=MAX_CHOICES)
    # int8 or uint8: the int8 weight storage of the integer kernels timed (None: not recorded, or
    # a backend that runs no exported ONNX); nasq.export.lower.int8_weight_type
    int8_weights: Literal["int8", "uint8"] | None = None
    calibration: Calibration | None = None  # set in a copy written by `nasq profile calibrate`


def load_measurement_info(path: str | Path) -> MeasurementInfo:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "", "file not found")
    try:
        data = read_json(path)
    except (OSError, ValueError, RecursionError) as e:
        raise ConfigError(str(path), "", f"not valid JSON ({one_line(e)})") from None
    return validate(MeasurementInfo, data, str(path))
