"""Contract of a data source (``nasq.data.SOURCES``), run over every registered kind:

- ``check`` (cheap) agrees with ``load``: same per-sample shape, no more classes than loaded;
- float32 samples and int64 labels in ``[0, num_classes)``, every split the same per-sample shape;
- normalisation from the training split only: train mean ~0 and std ~1 per channel/feature, and
  the statistics do not move when the test split changes;
- the same seed gives the same splits, another seed another validation split (when carved);
- a space whose head has fewer classes than the data is refused with one line;
- a bad input (one per kind) is one ConfigError line naming the file and the row or field.

``FIXTURES`` builds a small case per kind from real data that ships with packages (Fashion-MNIST
from Debian, scikit-learn's digits and wine, aeon's GunPoint); a builder returns ``None`` when its
data is absent on this machine (the caller skips). Builders take a scratch folder and the catalog
root (the spaces the data must fit come from its ``search_spaces/``).
"""

from __future__ import annotations

import gzip
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits, load_wine

from nasq import data as data_mod
from nasq.errors import ConfigError, MissingDependencyError
from nasq.specs import DataConfig, SpaceConfig, load_model

try:  # Pillow is optional (the image_folder source); only the image-folder fixture needs it
    from PIL import Image
except ImportError:  # pragma: no cover - Pillow ships with the dev install
    Image = None

FASHION = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class Case:
    cfg: DataConfig
    space: SpaceConfig | None  # what the data should fit (None: no space check)
    bad: DataConfig  # a config over broken data of the same kind
    bad_space: SpaceConfig | None
    bad_names: str  # the file (and row/field) the bad input's error must name


def check_source(case: Case) -> data_mod.Splits:
    cfg, space = case.cfg, case.space
    probe = data_mod.check_available(cfg, "contract.yaml", space)
    a = data_mod.load(cfg, "contract.yaml", space)
    _check_splits(a)
    assert all(p is None or p == s for p, s in zip(probe.shape, a.shape, strict=True)), (probe.shape, a.shape)
    assert 2 <= probe.num_classes <= a.num_classes, (probe.num_classes, a.num_classes)
    b = data_mod.load(cfg, "contract.yaml", space)
    for name in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), f"{name} differs for the same seed"
    if len(a.val_y) > 1:
        c = data_mod.load(cfg.model_copy(update={"seed": cfg.seed + 1}), "contract.yaml", space)
        assert not np.array_equal(a.val_x, c.val_x), "another seed gave the same validation split"
    fewer = data_mod.load(cfg.model_copy(update={"test_limit": 50}), "contract.yaml", space)
    assert fewer.mean == a.mean and fewer.std == a.std, "normalisation moved with the test split"
    if space is not None:
        small = space.model_copy(update={"input": space.input.model_copy(update={"num_classes": a.num_classes - 1})})
        _one_line(lambda: data_mod.load(cfg, "contract.yaml", small), "more than the space's head")
    _one_line(lambda: data_mod.load(case.bad, "contract.yaml", case.bad_space), case.bad_names)
    return a


def _check_splits(s: data_mod.Splits) -> None:
    for part in ("train", "val", "test"):
        x, y = getattr(s, f"{part}_x"), getattr(s, f"{part}_y")
        assert x.dtype == np.float32 and y.dtype == np.int64, (part, x.dtype, y.dtype)
        assert len(x) == len(y) and x.shape[1:] == s.shape, (part, x.shape, s.shape)
        assert len(y) == 0 or (y.min() >= 0 and y.max() < s.num_classes), (part, y.min(), y.max())
        assert np.isfinite(x).all(), part
    assert len(s.train_y) > 0 and len(s.test_y) > 0
    axes = (0, *range(2, s.train_x.ndim))
    mean, std = s.train_x.mean(axis=axes, dtype=np.float64), s.train_x.std(axis=axes, dtype=np.float64)
    assert np.allclose(mean, 0, atol=1e-3), mean
    assert np.allclose(std[std > 1e-6], 1, atol=1e-3), std
    assert len(s.mean) == len(s.std) == s.shape[0], (s.mean, s.std, s.shape)


def _one_line(call: Callable[[], object], names: str) -> None:
    try:
        call()
    except ConfigError as e:
        msg = str(e)
        assert "\n" not in msg and names in msg, msg
        return
    raise AssertionError(f"bad input loaded without a ConfigError (expected one naming {names!r})")


# ---------------------------------------------------------------- fixtures from real data
def aeon_data(name: str) -> Path | None:
    """aeon's shipped UCR/UEA folder ``name``, found without importing aeon (its dependencies do
    not resolve beside ours; it is installed with --no-deps for these files only)."""
    spec = importlib.util.find_spec("aeon")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / name
    return folder if (folder / f"{name}_TRAIN.ts").is_file() else None


def fashion_rows(n: int, part: str = "train") -> tuple[np.ndarray, np.ndarray] | None:
    """The first ``n`` Fashion-MNIST images (uint8, N x 28 x 28) and labels, or None without them."""
    stem = "train" if part == "train" else "t10k"
    files = [FASHION / f"{stem}-images-idx3-ubyte.gz", FASHION / f"{stem}-labels-idx1-ubyte.gz"]
    if not all(f.is_file() for f in files):
        return None
    return data_mod.read_idx(files[0])[:n], data_mod.read_idx(files[1])[:n]


def write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


def write_image_folder(folder: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    if Image is None:
        raise MissingDependencyError("writing an image folder needs Pillow: pip install pillow")
    for i, (im, label) in enumerate(zip(images, labels, strict=True)):
        d = folder / f"class_{int(label)}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(d / f"{i:05d}.png")
    return folder


def wine_frame():
    return load_wine(as_frame=True).frame.rename(columns={"target": "label"})


def _space(catalog: Path, name: str) -> SpaceConfig:
    path = catalog / "search_spaces" / f"{name}.yaml"
    return load_model(SpaceConfig, path, str(path))[0]


def _idx(tmp: Path, catalog: Path) -> Case | None:
    train, test = fashion_rows(600), fashion_rows(100, "test")
    if train is None or test is None:
        return None
    for stem, arr in (("train-images-idx3-ubyte", train[0]), ("train-labels-idx1-ubyte", train[1]),
                      ("t10k-images-idx3-ubyte", test[0]), ("t10k-labels-idx1-ubyte", test[1])):
        write_idx(tmp / f"{stem}.gz", arr)
    bad = tmp / "bad"
    bad.mkdir()
    for f in tmp.glob("*.gz"):
        (bad / f.name).write_bytes(f.read_bytes())
    with gzip.open(bad / "t10k-images-idx3-ubyte.gz", "wb") as fh:  # header says 100 images, body holds 10
        fh.write(bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (100, 28, 28)) + bytes(10 * 784))
    space = _space(catalog, "mbconv_small")
    return Case(DataConfig(source="idx", path=str(tmp), val_size=100), space,
                DataConfig(source="idx", path=str(bad), val_size=100), space, "t10k-images-idx3-ubyte.gz: body")


def _npz(tmp: Path, catalog: Path) -> Case:
    d = load_digits()
    np.savez(tmp / "digits.npz", x=d.images[:, None].astype(np.float32), y=d.target)
    np.savez(tmp / "bad.npz", x=d.images[:, None].astype(np.float32), y=d.target + 0.5)
    return Case(DataConfig(source="npz", path=str(tmp / "digits.npz"), val_size=100), None,
                DataConfig(source="npz", path=str(tmp / "bad.npz")), None, "bad.npz: y: labels must be integer")


def _image_folder(tmp: Path, catalog: Path) -> Case | None:
    rows = fashion_rows(300)
    if rows is None:
        return None
    write_image_folder(tmp / "good", *rows)
    write_image_folder(tmp / "bad", *rows)
    (tmp / "bad" / "class_3" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    space = _space(catalog, "mbconv_small")
    return Case(DataConfig(source="image_folder", path=str(tmp / "good"), val_size=50), space,
                DataConfig(source="image_folder", path=str(tmp / "bad"), val_size=50), space, "broken.png: image")


def _table(tmp: Path, catalog: Path) -> Case:
    frame = wine_frame()
    frame.to_csv(tmp / "wine.csv", index=False)
    frame.loc[7, "alcohol"] = float("nan")
    frame.to_csv(tmp / "bad.csv", index=False)
    space = _space(catalog, "mlp_table")
    return Case(DataConfig(source="table", path=str(tmp / "wine.csv"), val_size=50), space,
                DataConfig(source="table", path=str(tmp / "bad.csv")), space, "bad.csv: row 9 (line)")


def _series(tmp: Path, catalog: Path) -> Case | None:
    folder = aeon_data("GunPoint")
    if folder is None:
        return None
    lines = (folder / "GunPoint_TRAIN.ts").read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.lower().startswith("@data")) + 3
    lines[at] = "?," + lines[at].split(",", 1)[1]
    (tmp / "bad_TRAIN.ts").write_text("\n".join(lines) + "\n")
    space = _space(catalog, "seq_series")
    return Case(DataConfig(source="series", path=str(folder), val_size=50), space,
                DataConfig(source="series", path=str(tmp / "bad_TRAIN.ts")), space, f"bad_TRAIN.ts: line {at + 1}")


def _fashion_mnist(tmp: Path, catalog: Path) -> Case | None:
    if fashion_rows(1) is None:
        return None
    return Case(DataConfig(source="fashion_mnist", val_size=500, train_limit=2000, test_limit=500),
                _space(catalog, "mbconv_small"), DataConfig(source="fashion_mnist", path=str(tmp)), None, "data.path")


def _digits(tmp: Path, catalog: Path) -> Case:
    return Case(DataConfig(source="digits", val_size=100), _space(catalog, "mbconv_small"),
                DataConfig(source="digits"), _space(catalog, "mlp_table"), "load_digits: classes")


FIXTURES: dict[str, Callable[[Path, Path], Case | None]] = {
    "idx": _idx, "npz": _npz, "image_folder": _image_folder, "table": _table, "series": _series,
    "fashion_mnist": _fashion_mnist, "digits": _digits,
}
