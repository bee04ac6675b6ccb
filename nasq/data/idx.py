"""IDX image quadruples (MNIST, Fashion-MNIST, KMNIST...) and the two named presets.

Nothing is downloaded: Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` package or any
folder holding the same four IDX files; ``digits`` is scikit-learn's bundled 8x8 digits.
IDX images must already have the space's resolution (no resizing: use ``image_folder`` for that).
"""

from __future__ import annotations

import gzip
import logging
import re
from pathlib import Path

import numpy as np

from nasq.data.base import SOURCES, DataSource, Probe, Raw
from nasq.errors import ConfigError, MissingDependencyError

log = logging.getLogger(__name__)

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# Which file is which, by name: "t10k" (MNIST's spelling) or "test", optional prefixes (EMNIST's
# "emnist-balanced-"), "-idx3-ubyte" or ".idx3-ubyte", optionally gzipped.
_ROLE_PATTERNS = {
    "train_images": r"train[-_]images[-_.]idx3[-_]ubyte",
    "train_labels": r"train[-_]labels[-_.]idx1[-_]ubyte",
    "test_images": r"(t10k|test)[-_]images[-_.]idx3[-_]ubyte",
    "test_labels": r"(t10k|test)[-_]labels[-_.]idx1[-_]ubyte",
}


def _header(raw: bytes, path: Path) -> list[int]:
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ConfigError(str(path), "header", f"not an unsigned-byte IDX file, got magic {raw[:4].hex()}")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise ConfigError(str(path), "header", f"cut short: {ndim} dimensions declared, {len(raw)} bytes")
    return [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx_header(path: Path) -> list[int]:
    """The dimensions an IDX file declares, reading only its first bytes."""
    try:
        with _open(path) as fh:
            return _header(fh.read(4 + 4 * 4), path)
    except (OSError, EOFError) as e:
        raise ConfigError(str(path), "header", f"cannot read: {e}") from e


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzipped) into a numpy array."""
    try:
        with _open(path) as fh:
            raw = fh.read()
    except (OSError, EOFError) as e:
        raise ConfigError(str(path), "body", f"cannot read: {e}") from e
    dims = _header(raw, path)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * len(dims))
    if data.size != int(np.prod(dims)):
        raise ConfigError(str(path), "body", f"expected {int(np.prod(dims))} values, got {data.size}")
    return data.reshape(dims)


def idx_files(folder: Path) -> dict[str, Path] | None:
    """The four files of an IDX quadruple in ``folder`` by role, or None when one is missing."""
    if not folder.is_dir():
        return None
    names = sorted(p.name for p in folder.iterdir())
    found = {}
    for role, pattern in _ROLE_PATTERNS.items():
        hits = [n for n in names if re.search(pattern + r"(\.gz)?$", n)]
        if len(hits) != 1:
            return None
        found[role] = folder / hits[0]
    return found


def fashion_mnist_folder(path: str | None) -> Path | None:
    """The folder holding the four IDX files: ``path`` if given, else the Debian package's."""
    candidates = [Path(path)] if path else [Path(p) for p in FASHION_MNIST_DIRS]
    for folder in candidates:
        if idx_files(folder) is not None:
            return folder
    return None


@SOURCES.register("idx")
class IdxSource(DataSource):
    """A folder with train/test images (idx3) and labels (idx1); the given test split is kept."""

    kind = "idx"

    def _folder(self) -> tuple[Path, dict[str, Path]]:
        folder = self.path
        files = idx_files(folder)
        if files is None:
            raise ConfigError(self.source, "data.path", f"no IDX quadruple found in {str(folder)!r} "
                              f"(need {', '.join(IDX_FILES.values())}[.gz] or the same with 'test' for 't10k')")
        return folder, files

    def _probe(self) -> Probe:
        folder, files = self._folder()
        dims = {role: read_idx_header(p) for role, p in files.items()}
        for role in ("train_images", "test_images"):
            if len(dims[role]) != 3:
                raise ConfigError(str(files[role]), "header", f"images must have 3 dimensions (N, H, W), got {dims[role]}")
        labels = read_idx(files["train_labels"])
        k = int(labels.max()) + 1 if labels.size else 0
        return Probe((1, *dims["train_images"][1:]), k, str(folder))

    def _read(self) -> Raw:
        folder, files = self._folder()
        arrays = {role: read_idx(p) for role, p in files.items()}
        for part in ("train", "test"):
            x, y = arrays[f"{part}_images"], arrays[f"{part}_labels"]
            if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
                raise ConfigError(str(files[f"{part}_labels"]), "header",
                                  f"{len(y)} labels for {len(x)} images of shape {x.shape[1:]}")
        return Raw(arrays["train_images"][:, None], arrays["train_labels"].astype(np.int64), str(folder),
                   test_x=arrays["test_images"][:, None], test_y=arrays["test_labels"].astype(np.int64),
                   scale=255.0, note=f"from {folder}")


@SOURCES.register("fashion_mnist")
class FashionMnist(IdxSource):
    """Fashion-MNIST from Debian's folder (or ``path``); without it, digits if ``fallback: digits``."""

    kind = "fashion_mnist"
    reads = frozenset({"path", "fallback"})

    def _resolve(self) -> DataSource:
        folder = fashion_mnist_folder(self.cfg.path)
        if folder is not None:
            return _At(self, folder)
        where = self.cfg.path or FASHION_MNIST_DIRS[0]
        if self.cfg.fallback == "none" or self.cfg.path:
            raise ConfigError(self.source, "data.path", f"no Fashion-MNIST IDX files found in {where!r} "
                              f"(need {', '.join(IDX_FILES.values())}[.gz]; on Debian: apt-get install dataset-fashion-mnist)")
        return Digits(self.cfg, self.source, self.space, self.cache_dir)

    def _probe(self) -> Probe:
        return self._resolve()._probe()

    def _read(self) -> Raw:
        src = self._resolve()
        raw = src._read()
        if isinstance(src, Digits):
            raw.note = f"Fashion-MNIST not found in {self.cfg.path or FASHION_MNIST_DIRS[0]}; using scikit-learn digits instead"
            raw.name, raw.fallback = "digits", True
            log.warning(raw.note)
        else:
            raw.name = self.kind
        return raw


class _At(IdxSource):
    """An IdxSource pinned to a folder found by a preset."""

    def __init__(self, parent: DataSource, folder: Path):
        super().__init__(parent.cfg, parent.source, parent.space, parent.cache_dir)
        self._fixed = folder

    @property
    def path(self) -> Path:
        return self._fixed


@SOURCES.register("digits")
class Digits(DataSource):
    """scikit-learn's 1,797 8x8 digits, upsampled to 28x28 so the same spaces apply (no path)."""

    kind = "digits"
    reads = frozenset()

    def _probe(self) -> Probe:
        return Probe((1, 28, 28), 10, "scikit-learn load_digits")

    def _read(self) -> Raw:
        try:  # scikit-learn only here: the data package imports with numpy alone (GPU machines)
            from sklearn.datasets import load_digits
        except ImportError as e:
            raise MissingDependencyError("the digits data source needs scikit-learn: pip install scikit-learn") from e
        d = load_digits()
        images = np.kron(d.images.astype(np.float32) / 16.0, np.ones((4, 4), dtype=np.float32))[:, 2:30, 2:30]
        return Raw(images[:, None], d.target.astype(np.int64), "scikit-learn load_digits",
                   note="scikit-learn load_digits, 8x8 upsampled to 28x28")
