"""``npz``: arrays in one ``.npz`` file (read with ``allow_pickle=False``).

Keys: ``x``, ``y`` (split by seed), or ``x_train``, ``y_train``, ``x_test``, ``y_test`` and optionally
``x_val``, ``y_val`` (used as given). Samples are (N, C, H, W) images, (N, H, W) grey images,
(N, C, T) series or (N, F) feature rows; uint8 samples are scaled by 1/255 first. Labels must be
integers; a class id with no training sample is an error. Samples must already have the space's
shape (images are not resized here: ``image_folder`` resizes); a 3-D uint8 array is read as grey
images, so give series as floating-point arrays.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from nasq.data.base import SOURCES, DataSource, Probe, Raw
from nasq.errors import ConfigError

GIVEN = ("x_train", "y_train", "x_test", "y_test")


def open_npz(path: Path, source: str) -> np.lib.npyio.NpzFile:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ConfigError(str(path), "file", f"not a readable .npz: {e}") from e


def _keys(npz: np.lib.npyio.NpzFile, path: Path) -> list[str]:
    keys = set(npz.files)
    if {"x", "y"} <= keys:
        return ["x", "y"]
    if set(GIVEN) <= keys:
        return [*GIVEN, *(["x_val", "y_val"] if {"x_val", "y_val"} <= keys else [])]
    raise ConfigError(str(path), "keys", f"need x and y, or {', '.join(GIVEN)} [x_val, y_val]; got {sorted(keys)}")


def _samples(x: np.ndarray, path: Path, key: str) -> np.ndarray:
    if x.ndim == 3 and x.dtype == np.uint8:  # (N, H, W) grey images
        x = x[:, None]
    if x.ndim not in (2, 3, 4) or not (np.issubdtype(x.dtype, np.number) and not np.iscomplexobj(x)):
        raise ConfigError(str(path), key, f"must be a real (N, F), (N, C, T) or (N, C, H, W) array, got {x.dtype} {x.shape}")
    if x.dtype != np.uint8:
        bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        if bad.any():
            raise ConfigError(str(path), f"{key} row {int(np.flatnonzero(bad)[0])}", "holds NaN or infinity")
    return x


def _labels(y: np.ndarray, n: int, path: Path, key: str) -> np.ndarray:
    if y.ndim != 1 or len(y) != n:
        raise ConfigError(str(path), key, f"must be {n} labels in one dimension, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.isfinite(y).all() and (y == np.round(y)).all():
            return y.astype(np.int64)
        raise ConfigError(str(path), key, f"labels must be integer class ids, got dtype {y.dtype}")
    if len(y) and y.min() < 0:
        raise ConfigError(str(path), f"{key} row {int(np.argmin(y))}", f"labels must be >= 0, got {int(y.min())}")
    return y.astype(np.int64)


@SOURCES.register("npz")
class NpzSource(DataSource):
    kind = "npz"

    def _probe(self) -> Probe:
        path = self.path
        with open_npz(path, self.source) as npz:
            keys = _keys(npz, path)
            y = _labels(npz[keys[1]], len(npz[keys[1]]), path, keys[1])
            shape = _shape(path, keys[0])
        return Probe(shape, int(y.max()) + 1 if len(y) else 0, str(path))

    def _read(self) -> Raw:
        path = self.path
        with open_npz(path, self.source) as npz:
            keys = _keys(npz, path)
            got = {}
            for xk, yk in zip(keys[::2], keys[1::2], strict=True):
                x = _samples(npz[xk], path, xk)
                got[xk], got[yk] = x, _labels(npz[yk], len(x), path, yk)
        shapes = {k: v.shape[1:] for k, v in got.items() if k.startswith("x")}
        if len(set(shapes.values())) > 1:
            raise ConfigError(str(path), "shape", f"samples differ in shape between arrays: {shapes}")
        scale = 255.0 if got[keys[0]].dtype == np.uint8 else 1.0
        if len(keys) == 2:
            return Raw(got["x"], got["y"], str(path), scale=scale)
        return Raw(got["x_train"], got["y_train"], str(path), test_x=got["x_test"], test_y=got["y_test"],
                   val_x=got.get("x_val"), val_y=got.get("y_val"), scale=scale)


def _shape(path: Path, key: str) -> tuple[int, ...]:
    """Per-sample shape from the .npy header inside the archive, without reading the array."""
    with zipfile.ZipFile(path) as zf, zf.open(key + ".npy") as fh:
        version = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(fh)
    if len(shape) == 3 and dtype == np.uint8:
        return (1, *shape[1:])
    return tuple(shape[1:])
