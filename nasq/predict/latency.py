"""Latency predictor: the per-layer table, corrected by a model fitted on whole subnets.

Summing isolated layer timings is biased, and the bias depends on how each layer executes: every
isolated measurement pays one session run, and a float conv pays layout reorders that vanish
between neighbouring float convs of a real subnet, while an int8-weight conv (dequantized every run)
or a layer behind fp8 rounding ops keeps most of its isolated cost. So the correction is affine
per execution class (:func:`nasq.hardware.keys.execution_class`), plus a fixed cost per
change of activation format between adjacent layers, by the format changed to::

    latency_ms = c0 + sum over classes c of ( a_c * table_ms[c] + b_c * layers[c] )
                    + sum over formats f of t_f * transitions_to[f]

``table_ms[c]`` is the summed table time of the subnet's layers in class ``c``, ``layers[c]``
their number: ``a_c`` rescales the class's isolated times, ``b_c`` adds or removes a fixed cost
per layer. ``transitions_to[f]`` counts the layers whose input format is ``f`` while the previous
layer's input format was not (the image counts as fp32, as in
:func:`nasq.hardware.keys.transitions`): an isolated layer always pays its own input quantizer,
but in a whole subnet only a format change leaves a quantize/dequantize (or a layout reorder)
between two layers, while a run of layers in one format may be fused, so a mixed pick can cost
more (or less) than its table rows say. Grouped by the target format, not by (from, to) pair:
the ops inserted at a boundary are the target format's quantizer, and 12 pair features over
100 fitting subnets overfit (benchmarks/latency_transitions.py, on a shared 2-core machine: the
pair model took front-like picks from 6.5 to 10.4 % median |error|; the per-target one stayed
within that machine's noise of the per-class model alone, 7.6 -> 7.6 % and 6.5 -> 6.8 % on two
exporter versions). Fitted by weighted ridge least squares on measured whole subnets (weights 1/measured,
so the fit minimises *relative* error, what a latency budget cares about; a tiny ridge keeps
classes absent from the fitting subnets at zero). Deterministic; saved as JSON, never pickled,
with the hashes of the space and the table it was fitted for. A ``latency_model.json`` written
before the transition features existed (no ``transitions.*`` features) still loads and predicts
as it did. Torch-free.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field
from sklearn.linear_model import Ridge

from nasq.errors import ConfigError, LineageError, NotFittedError
from nasq.files import atomic_write_json, read_json
from nasq.hardware.keys import (
    LayerKey,
    execution_class,
    execution_classes,
    integer_kernel,
    layer_key,
    space_keys,
    subnet_keys,
)
from nasq.hardware.table import LATENCY_CSV, LatencyTable
from nasq.space import SearchSpace, SubnetSpec
from nasq.space.search_space import ordered_sum
from nasq.specs import Frozen, one_line, show, validate

LATENCY_MODEL_JSON = "latency_model.json"
KIND = "table_per_class_affine"
MAX_FEATURES = 1024  # 2 per execution class + 1 per activation format; a few dozen classes at most
TRANSITION_PREFIX = "transitions."


class ModelFile(Frozen):
    """``latency_model.json`` as :meth:`LatencyPredictor.to_dict` writes it; loading checks every
    field (finite numbers, bounded lists) before anything is built from it."""

    kind: Literal["table_per_class_affine"]
    features: tuple[str, ...] = Field(max_length=MAX_FEATURES)
    coef: tuple[float, ...] = Field(max_length=MAX_FEATURES)
    intercept: float
    ridge: float = Field(ge=0, le=1e6)
    n_fit: int = Field(ge=0, le=1_000_000_000)
    fit_rmse_ms: float = Field(ge=0)
    space: str
    space_hash: str
    table: str
    table_hash: str


CHAINS_FEATURE = "chains.int8"
PREDICTION_FLOOR = 0.2  # the least share of its table sum a prediction may be (see LatencyPredictor._apply)


def feature_names(classes: list[str], transition_formats: list[str] | None = None, chains: bool = False) -> list[str]:
    return ([f"table_ms.{c}" for c in classes] + [f"layers.{c}" for c in classes]
            + [f"{TRANSITION_PREFIX}to_{f}" for f in transition_formats or []] + ([CHAINS_FEATURE] if chains else []))


def int8_chains(keys: list[LayerKey]) -> int:
    """Runs of consecutive integer-kernel layers along ``keys`` (execution order). Each layer of the
    table was timed alone, paying the quantizer into and the dequantizer out of its integer kernel;
    inside a chain only the run's ends pay them, so the correction needs the number of runs."""
    runs, prev = 0, False
    for key in keys:
        here = integer_kernel(key.w_format, key.a_format)
        runs += here and not prev
        prev = here
    return runs


def run_starts(ids: np.ndarray, flags: np.ndarray, pad: int) -> np.ndarray:
    """:func:`int8_chains` of layer-id rows (``pad`` marks an absent layer): where a flagged layer
    follows an unflagged one, skipping pads, per row."""
    valid = ids != pad
    here = flags[ids] & valid
    n, width = ids.shape
    last = np.maximum.accumulate(np.where(valid, np.arange(1, width + 1), 0), axis=1)
    prev_at = np.concatenate([np.zeros((n, 1), dtype=np.int64), last[:, :-1]], axis=1)
    here_ext = np.concatenate([np.zeros((n, 1), dtype=bool), here], axis=1)
    return (here & ~np.take_along_axis(here_ext, prev_at, axis=1)).sum(axis=1)


def per_row_bins(bins: np.ndarray, n_bins: int, weights: np.ndarray | None = None) -> np.ndarray:
    """For a (rows, layers) matrix of bin indices ``0 .. n_bins - 1``: per row and bin, how many
    layers fall in it, or with ``weights`` (same shape) the sum of theirs. ``np.bincount`` adds
    element after element in the order given, from 0.0 - what the per-spec loop does layer after
    layer - so the sums are the same to the last bit."""
    rows = len(bins)
    flat = (bins + (np.arange(rows, dtype=np.int64) * n_bins)[:, None]).ravel()
    return np.bincount(flat, weights=None if weights is None else weights.ravel(),
                       minlength=rows * n_bins).reshape(rows, n_bins)


def transition_formats(space: SearchSpace) -> list[str]:
    """Every activation format a layer of ``space`` can take, sorted: one transition feature each."""
    return sorted({k.a_format for k in space_keys(space)})


def transition_counts(keys: list[LayerKey], formats: list[str]) -> list[int]:
    """Per format of :func:`transition_formats`, how many layers along ``keys`` (execution order)
    change the activation format to it; the counts sum to :func:`nasq.hardware.keys.transitions`."""
    index = {f: i for i, f in enumerate(formats)}
    out, prev = [0] * len(formats), "fp32"  # the input image is fp32
    for key in keys:
        if key.a_format != prev:
            out[index[key.a_format]] += 1
        prev = key.a_format
    return out


class LatencyPredictor:
    """Predicts whole-subnet latency (ms) of ``space`` from ``table``. Refuses a table that lacks
    rows for the space (a ConfigError naming the table's file and the first missing keys).
    ``transitions=False`` leaves out the transition features (what a model file
    written before they existed holds; :meth:`load` decides from the file)."""

    def __init__(self, space: SearchSpace, table: LatencyTable, ridge: float = 1e-3, transitions: bool = True,
                 chains: bool = True):
        table.check_covers(space)
        self.space, self.table, self.ridge = space, table, ridge
        self.classes = execution_classes(space)
        self.transition_formats = transition_formats(space) if transitions else []
        self.chains = chains
        self.features_names = feature_names(self.classes, self.transition_formats, chains)
        self.coef: np.ndarray | None = None
        self.intercept = 0.0
        self.n_fit = 0
        self.fit_rmse_ms = math.nan
        self._cache: dict[str, np.ndarray] = {}
        self._columns: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._kernels: tuple[Any, np.ndarray] | None = None  # (layer table, its integer-kernel flags)

    # ------------------------------------------------------------ features
    def _features_one(self, spec: SubnetSpec) -> np.ndarray:
        hit = self._cache.get(spec.key())
        if hit is not None:
            return hit
        n = len(self.classes)
        # per-class table time, per-class layer count, per-pair transitions, total table time
        out = np.zeros(len(self.features_names) + 1)
        keys = subnet_keys(self.space, spec)
        for key in keys:
            c = self.classes.index(execution_class(key))
            ms = self.table.latency_us(key) / 1e3
            out[c] += ms
            out[n + c] += 1
            out[-1] += ms
        if self.transition_formats:
            out[2 * n:2 * n + len(self.transition_formats)] = transition_counts(keys, self.transition_formats)
        if self.chains:
            out[-2] = int8_chains(keys)
        self._cache[spec.key()] = out
        return out

    def _matrix(self, specs: list[SubnetSpec]) -> np.ndarray:
        return np.array([self._features_one(s) for s in specs], dtype=np.float64).reshape(-1, len(self.features_names) + 1)

    def features(self, specs: list[SubnetSpec]) -> np.ndarray:
        """One row per spec, columns :attr:`features_names`; ``inf`` where a layer is unsupported."""
        return self._matrix(specs)[:, :-1]

    def table_sum_ms(self, specs: list[SubnetSpec]) -> np.ndarray:
        """The uncorrected prediction: the sum of the subnet's table rows."""
        return self._matrix(specs)[:, -1]

    # ------------------------------------------------------------ features of genome matrices
    def _layer_columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per layer id of the space's table: its table time (ms), its execution class (index
        into :attr:`classes`, -1 at the pad) and its input format (index into
        :attr:`transition_formats`, -1 at the pad or for a format without a feature)."""
        if self._columns is None:
            table = self.space.layer_table()
            keys = [layer_key(s) for s in table.shapes]
            ms = np.array([self.table.latency_us(k) / 1e3 for k in keys] + [0.0])
            cls = np.array([self.classes.index(execution_class(k)) for k in keys] + [-1], dtype=np.int64)
            index = {f: i for i, f in enumerate(self.transition_formats)}
            fmt = np.array([index.get(k.a_format, -1) for k in keys] + [-1], dtype=np.int64)
            self._columns = ms, cls, fmt
        return self._columns

    def _matrix_genomes(self, genomes: np.ndarray) -> np.ndarray:
        """:meth:`_matrix` of the decoded genomes, by table lookups; sums run in execution order
        as :meth:`_features_one` adds them, so the values are the same to the last bit."""
        table = self.space.layer_table()
        if table is None:  # a space too large for a table: the per-spec path
            return self._matrix([self.space.decode(g) for g in self.space.canonical_batch(genomes)])
        batch = self.space.batch(genomes)  # the tables the scoring call's other consumers share
        G, ids = batch.G, batch.ids
        ms_col, cls_col, fmt_col = self._layer_columns()
        ms = ms_col[ids]
        n, n_formats = len(self.classes), len(self.transition_formats)
        out = np.zeros((len(G), len(self.features_names) + 1))
        # per class, the pad (-1) in a bin of its own that is dropped
        cls = np.where(cls_col < 0, n, cls_col)[ids]
        out[:, :n] = per_row_bins(cls, n + 1, ms)[:, :n]
        out[:, n:2 * n] = per_row_bins(cls, n + 1)[:, :n]
        if n_formats:
            fmt = np.where(batch.format_changes, fmt_col[ids], -1)
            out[:, 2 * n:2 * n + n_formats] = per_row_bins(np.where(fmt < 0, n_formats, fmt), n_formats + 1)[:, :n_formats]
        if self.chains:
            flags = self._integer_kernels(table)  # False at the pad: no run before the first layer
            out[:, -2] = (flags[ids] & ~flags[batch.previous]).sum(axis=1)  # run_starts, on the shared tables
        out[:, -1] = ordered_sum(ms)
        return out

    def _integer_kernels(self, table: Any) -> np.ndarray:
        """Per layer id of ``table`` (the pad included, False): whether it is an integer kernel.
        Kept per table: rebuilding it was a Python call per layer on every scoring call (issue 17)."""
        if self._kernels is None or self._kernels[0] is not table:
            self._kernels = (table, np.array([integer_kernel(s.w_format, s.a_format) for s in table.shapes] + [False],
                                             dtype=bool))
        return self._kernels[1]

    def features_genomes(self, genomes: np.ndarray) -> np.ndarray:
        """:meth:`features` of the decoded ``genomes`` (rows of gene indices), without decoding."""
        return self._matrix_genomes(genomes)[:, :-1]

    def predict_genomes(self, genomes: np.ndarray) -> np.ndarray:
        """:meth:`predict` of the decoded ``genomes``, without decoding them."""
        if self.coef is None:
            raise NotFittedError("LatencyPredictor.predict_genomes called before fit (or load)")
        return self._apply(self.features_genomes(genomes))

    # ------------------------------------------------------------ fit / predict
    def fit(self, specs: list[SubnetSpec], measured_ms: np.ndarray | list[float]) -> LatencyPredictor:
        y = np.asarray(measured_ms, dtype=np.float64)
        x = self.features(specs)
        if len(specs) != len(y) or len(y) < 2:
            raise ValueError(f"need matching specs and measurements, at least 2; got {len(specs)} and {len(y)}")
        if not (np.isfinite(x).all() and np.isfinite(y).all() and (y > 0).all()):
            raise ValueError("fit needs supported subnets and finite, positive measured latencies")
        design = np.hstack([np.ones((len(y), 1)), x]) / y[:, None]  # rows scaled by 1/y: relative error
        scale = np.abs(design).max(axis=0).clip(min=1e-12)  # the ridge then treats every column alike
        z = design / scale
        # Ridge without its own intercept: the column of ones is the intercept, penalised like the rest.
        ridge = Ridge(alpha=self.ridge, fit_intercept=False, solver="cholesky").fit(z, np.ones(len(y)))
        beta = ridge.coef_ / scale
        self.intercept, self.coef = float(beta[0]), beta[1:]
        self.n_fit = len(y)
        self.fit_rmse_ms = float(np.sqrt(np.mean((self.predict(specs) - y) ** 2)))
        return self

    def predict(self, specs: list[SubnetSpec]) -> np.ndarray:
        """Milliseconds per spec; ``inf`` where a layer is unsupported on this profile."""
        if self.coef is None:
            raise NotFittedError("LatencyPredictor.predict called before fit (or load)")
        return self._apply(self.features(specs))

    def _apply(self, x: np.ndarray) -> np.ndarray:
        finite = np.isfinite(x).all(axis=1)
        out = np.full(len(x), np.inf)
        fitted = self.intercept + x[finite] @ self.coef
        # The affine correction is unconstrained (a per-layer cost may be negative: isolated timings
        # include overheads a whole subnet pays once), so far outside its fitting data it can
        # extrapolate below anything physical, even below zero. Guard: never below a fixed share of
        # the table sum (whole subnets measured 0.35-0.9x their table sum on the shipped profiles).
        table_ms = x[finite, : len(self.classes)].sum(axis=1)
        out[finite] = np.maximum(fitted, PREDICTION_FLOOR * table_ms)
        return out

    # ------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        if self.coef is None:
            raise NotFittedError("save a LatencyPredictor after fit")
        return {"kind": KIND, "features": self.features_names, "coef": self.coef.tolist(),
                "intercept": self.intercept, "ridge": self.ridge, "n_fit": self.n_fit,
                "fit_rmse_ms": self.fit_rmse_ms, "space": self.space.name, "space_hash": self.space.hash,
                "table": self.table.source, "table_hash": self.table.hash}

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path, space: SearchSpace, table: LatencyTable) -> LatencyPredictor:
        data, source = _read_model(path), str(path)
        for field, want in (("space_hash", space.hash), ("table_hash", table.hash)):
            if getattr(data, field) != want:
                raise LineageError(f"{source}: fitted for another {field.split('_')[0]} "
                                   f"({field} {show(getattr(data, field)[:12])} != {want[:12]})")
        # A file without transition features predates them: it loads as the model it was.
        has_transitions = any(f.startswith(TRANSITION_PREFIX) for f in data.features)
        model = cls(space, table, data.ridge, transitions=has_transitions, chains=CHAINS_FEATURE in data.features)
        if list(data.features) != model.features_names or len(data.coef) != len(model.features_names):
            raise ConfigError(source, "features", f"expected the {len(model.features_names)} features of this "
                              f"space and table ({show(model.features_names)}), got {show(list(data.features))} "
                              f"with {len(data.coef)} coefficients")
        model.coef, model.intercept = np.asarray(data.coef, dtype=np.float64), data.intercept
        model.n_fit, model.fit_rmse_ms = data.n_fit, data.fit_rmse_ms
        return model


def _read_model(path: str | Path) -> ModelFile:
    source = str(path)
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise ConfigError(source, "", "file not found") from None
    except (OSError, ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise ConfigError(source, "", f"not valid JSON ({one_line(e)})") from None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        got = data.get("kind") if isinstance(data, dict) else type(data).__name__
        raise ConfigError(source, "kind", f"expected {KIND!r}, got {show(got)}")
    return validate(ModelFile, data, source)


def load_profile_predictor(profile_yaml: str | Path, space: SearchSpace) -> LatencyPredictor | None:
    """The fitted predictor shipped beside a measured ``profile.yaml`` (its folder's latency.csv
    and latency_model.json), or None for a profile without a latency table (a modelled one).
    Raises ConfigError when the table lacks rows for ``space`` or the correction is missing, and
    LineageError when the correction was fitted on another table or space."""
    folder = Path(profile_yaml).parent
    csv_path, model_path = folder / LATENCY_CSV, folder / LATENCY_MODEL_JSON
    if not csv_path.is_file():
        return None
    table = LatencyTable.load(csv_path)
    if not model_path.is_file():
        raise ConfigError(str(model_path), "", "file not found: a measured latency table needs its fitted "
                          "correction (nasq profile measure --fit-subnets N)")
    return LatencyPredictor.load(model_path, space, table)
