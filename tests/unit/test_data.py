from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from nasq import data
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
    monkeypatch.setattr(data, "FASHION_MNIST_DIRS", (str(tmp_path / "absent"),))
    splits = data.load(DataConfig(val_size=200))
    assert splits.name == "digits" and "using scikit-learn digits" in splits.note
    assert splits.train_x.shape[1:] == (1, 28, 28)
    with pytest.raises(ConfigError):
        data.load(DataConfig(fallback="none"))


def test_bad_idx_header(tmp_path):
    p = tmp_path / "x-idx1-ubyte"
    p.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ConfigError, match="not an unsigned-byte IDX file"):
        data.read_idx(p)
