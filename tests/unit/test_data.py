from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from nasq import data
from nasq.data import idx
from nasq.errors import ConfigError
from nasq.specs import DataConfig


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


@pytest.fixture()
def fake_fashion(tmp_path):
    rng = np.random.default_rng(0)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 255, (600, 28, 28)))
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, 600))
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 255, (100, 28, 28)))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, 100))
    return tmp_path


def test_idx_round_trip(fake_fashion):
    arr = data.read_idx(fake_fashion / "t10k-images-idx3-ubyte.gz")
    assert arr.shape == (100, 28, 28) and arr.dtype == np.uint8


def test_loader_reads_named_folder_with_seeded_split(fake_fashion):
    cfg = DataConfig(path=str(fake_fashion), val_size=100, seed=3)
    a, b = data.load(cfg), data.load(cfg)
    assert a.name == "fashion_mnist" and a.train_x.shape == (500, 1, 28, 28) and len(a.val_y) == 100
    assert np.array_equal(a.val_y, b.val_y) and np.array_equal(a.train_x, b.train_x)
    c = data.load(DataConfig(path=str(fake_fashion), val_size=100, seed=4))
    assert not np.array_equal(a.val_x, c.val_x)


def test_named_folder_without_files_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="data.path: no Fashion-MNIST IDX files"):
        data.load(DataConfig(path=str(tmp_path)), "exp.yaml")


def test_fallback_to_digits_is_announced(monkeypatch, tmp_path):
    monkeypatch.setattr(idx, "FASHION_MNIST_DIRS", (str(tmp_path / "absent"),))
    splits = data.load(DataConfig(val_size=200))
    assert splits.name == "digits" and splits.fallback and "using scikit-learn digits" in splits.note
    assert splits.train_x.shape[1:] == (1, 28, 28)
    with pytest.raises(ConfigError):
        data.load(DataConfig(fallback="none"))


def test_bad_idx_header(tmp_path):
    p = tmp_path / "x-idx1-ubyte"
    p.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ConfigError, match="not an unsigned-byte IDX file"):
        data.read_idx(p)


def test_fashion_split_is_the_one_runs_were_made_with(fake_fashion):
    """Validation = the first val_size of a seeded permutation of the training file, as before
    sources became kinds: earlier runs' data and the demo's figures stay reproducible."""
    s = data.load(DataConfig(path=str(fake_fashion), val_size=100, seed=3))
    labels = data.read_idx(fake_fashion / "train-labels-idx1-ubyte.gz")
    order = np.random.default_rng(3).permutation(600)
    assert np.array_equal(s.val_y, labels[order[:100]]) and np.array_equal(s.train_y, labels[order[100:]])


def test_idx_quadruple_with_test_spelling_and_plain_files(fake_fashion, tmp_path):
    """KMNIST/EMNIST-style names ('test' for 't10k', a prefix, not gzipped) are found; the check
    reads headers only and agrees with the load."""
    folder = tmp_path / "k"
    folder.mkdir()
    for f in fake_fashion.glob("*.gz"):
        name = "kmnist-" + f.name.removesuffix(".gz").replace("t10k", "test")
        (folder / name).write_bytes(gzip.decompress(f.read_bytes()))
    cfg = DataConfig(source="idx", path=str(folder), val_size=100)
    probe = data.check_available(cfg, "exp.yaml")
    s = data.load(cfg, "exp.yaml")
    assert probe.shape == s.shape == (1, 28, 28) and s.name == "idx" and len(s.test_y) == 100
    assert data.read_idx_header(folder / "kmnist-test-images-idx3-ubyte") == [100, 28, 28]
