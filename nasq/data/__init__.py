"""Data sources as registered kinds: ``data: {source: KIND, path: ...}`` in an experiment.

Kinds: ``idx`` (any IDX quadruple), ``npz`` (x/y arrays, optional given splits), ``image_folder``
(one sub-folder per class, PNG/JPEG), ``table`` (CSV/Parquet with a label column), ``series``
(aeon ``.ts`` files or ``(N, C, T)`` arrays) and the presets ``fashion_mnist`` and ``digits``.
Every source is checked against the space before anything is written (:func:`check_available`)
and loaded as float32 :class:`Splits` normalised with statistics of the training split
(:func:`load`). Pillow and pandas are imported only by the sources that need them.
"""

from __future__ import annotations

from pathlib import Path

from nasq.data import arrays, images, series, table  # noqa: F401 - registers the kinds
from nasq.data.base import SOURCES, DataSource, Probe, Raw, Splits, expected_shape, make, stratified
from nasq.data.idx import (
    FASHION_MNIST_DIRS,
    IDX_FILES,
    fashion_mnist_folder,
    read_idx,
    read_idx_header,
)
from nasq.specs import DataConfig, SpaceConfig

__all__ = ["FASHION_MNIST_DIRS", "IDX_FILES", "SOURCES", "DataSource", "Probe", "Raw", "Splits", "check_available",
           "expected_shape", "fashion_mnist_folder", "load", "make", "read_idx", "read_idx_header", "stratified"]


def load(cfg: DataConfig, source: str = "experiment", space_config: SpaceConfig | None = None,
         cache_dir: Path | None = None) -> Splits:
    """Load, check and split the data the experiment names. ``space_config``: check shape and class
    count against it; ``cache_dir``: where a large image folder may keep its decoded uint8 memmap.
    A missing Fashion-MNIST falls back to digits when ``fallback: digits`` (``Splits.fallback``)."""
    return make(cfg, source, space_config, cache_dir).load()


def check_available(cfg: DataConfig, source: str, space_config: SpaceConfig | None = None) -> Probe:
    """Validate the data section cheaply (headers, listings, first rows) before anything is written."""
    return make(cfg, source, space_config).check()
