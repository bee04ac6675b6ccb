"""Datasets as numpy arrays: Fashion-MNIST from IDX files, scikit-learn digits as the fallback.

Splits are fixed by a seed. Nothing is downloaded: Fashion-MNIST comes from Debian's
``dataset-fashion-mnist`` package or any folder holding the same four IDX files.
"""

from __future__ import annotations

import gzip
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nasq.errors import ConfigError
from nasq.specs import DataConfig

log = logging.getLogger(__name__)

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530


@dataclass(frozen=True)
class Splits:
    """float32 images in NCHW, int64 labels."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    note: str = ""

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    @property
    def num_classes(self) -> int:
        return int(max(self.train_y.max(), self.test_y.max()) + 1)

    def summary(self) -> str:
        return (f"{self.name}: train {len(self.train_y)}, val {len(self.val_y)}, test {len(self.test_y)}, "
                f"images {'x'.join(map(str, self.shape))}")


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzipped) into a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ConfigError(str(path), "header", f"not an unsigned-byte IDX file, got magic {raw[:4].hex()}")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ConfigError(str(path), "body", f"expected {int(np.prod(dims))} values, got {data.size}")
    return data.reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (folder / name).is_file():
            return folder / name
    return None


def fashion_mnist_folder(path: str | None) -> Path | None:
    """The folder holding the four IDX files: ``path`` if given, else the Debian package's."""
    candidates = [Path(path)] if path else [Path(p) for p in FASHION_MNIST_DIRS]
    for folder in candidates:
        if all(_find_idx(folder, stem) for stem in IDX_FILES.values()):
            return folder
    return None


def load(cfg: DataConfig, source: str = "experiment") -> Splits:
    """Load and split the dataset the experiment names. A missing Fashion-MNIST falls back to
    digits when ``fallback: digits`` (announced in ``Splits.note``), else it is an error."""
    if cfg.name == "fashion_mnist":
        folder = fashion_mnist_folder(cfg.path)
        if folder is not None:
            return _fashion(folder, cfg)
        where = cfg.path or FASHION_MNIST_DIRS[0]
        if cfg.fallback == "none" or cfg.path:
            raise ConfigError(source, "data.path", f"no Fashion-MNIST IDX files found in {where!r} "
                              f"(need {', '.join(IDX_FILES.values())}[.gz]; on Debian: apt-get install dataset-fashion-mnist)")
        splits = _digits(cfg)
        note = f"Fashion-MNIST not found in {where}; using scikit-learn digits instead"
        log.warning(note)
        return Splits(**{**splits.__dict__, "note": note})
    return _digits(cfg)


def check_available(cfg: DataConfig, source: str) -> None:
    """Validate the data section without loading (used before anything is written)."""
    if cfg.name == "fashion_mnist" and cfg.path and fashion_mnist_folder(cfg.path) is None:
        raise ConfigError(source, "data.path", f"no Fashion-MNIST IDX files found in {cfg.path!r}")


def _split(x: np.ndarray, y: np.ndarray, val_size: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    val_size = min(val_size, len(y) // 5)
    val, train = order[:val_size], order[val_size:]
    return x[train], y[train], x[val], y[val]


def _limit(x: np.ndarray, y: np.ndarray, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    return (x, y) if limit is None else (x[:limit], y[:limit])


def _fashion(folder: Path, cfg: DataConfig) -> Splits:
    arrays = {k: read_idx(_find_idx(folder, stem)) for k, stem in IDX_FILES.items()}

    def norm(images: np.ndarray) -> np.ndarray:
        return ((images.astype(np.float32) / 255.0 - FASHION_MEAN) / FASHION_STD)[:, None, :, :]

    train_x, train_y, val_x, val_y = _split(norm(arrays["train_images"]), arrays["train_labels"].astype(np.int64),
                                            cfg.val_size, cfg.seed)
    train_x, train_y = _limit(train_x, train_y, cfg.train_limit)
    test_x, test_y = _limit(norm(arrays["test_images"]), arrays["test_labels"].astype(np.int64), cfg.test_limit)
    return Splits("fashion_mnist", train_x, train_y, val_x, val_y, test_x, test_y, f"from {folder}")


def _digits(cfg: DataConfig) -> Splits:
    """scikit-learn's 8x8 digits, upsampled to 28x28 so the same spaces apply."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = d.images.astype(np.float32) / 16.0
    images = np.kron(images, np.ones((4, 4), dtype=np.float32))  # 32x32
    images = images[:, 2:30, 2:30]
    images = ((images - images.mean()) / images.std())[:, None, :, :].astype(np.float32)
    labels = d.target.astype(np.int64)
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(labels))
    n_test = len(labels) // 5
    test, rest = order[:n_test], order[n_test:]
    train_x, train_y, val_x, val_y = _split(images[rest], labels[rest], min(cfg.val_size, len(rest) // 5), cfg.seed + 1)
    train_x, train_y = _limit(train_x, train_y, cfg.train_limit)
    test_x, test_y = _limit(images[test], labels[test], cfg.test_limit)
    return Splits("digits", train_x, train_y, val_x, val_y, test_x, test_y, "scikit-learn load_digits, 8x8 upsampled to 28x28")
