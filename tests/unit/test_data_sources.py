"""Data sources on real data that ships with packages, and each kind of bad input as one line."""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import yaml

from nasq import data
from nasq.data import images as images_mod
from nasq.errors import ConfigError
from nasq.experiment import load_experiment
from nasq.specs import DataConfig, SpaceConfig, load_model
from nasq.testing.sources import aeon_data, fashion_rows, wine_frame, write_image_folder

REPO = Path(__file__).resolve().parents[2]


def _space(name: str, **input_update) -> SpaceConfig:
    path = REPO / "search_spaces" / f"{name}.yaml"
    space = load_model(SpaceConfig, path, str(path))[0]
    if input_update:  # a space with another head or input size, to see the data refused
        space = space.model_copy(update={"input": space.input.model_copy(update=input_update)})
    return space


def _refused(call, *names: str) -> str:
    with pytest.raises(ConfigError) as e:
        call()
    msg = str(e.value)
    assert "\n" not in msg and all(n in msg for n in names), msg
    return msg


def _need(value, what: str):
    if value is None:
        reason = f"{what} is absent on this machine"
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(f"{reason}; CI=true: these data-source tests must run in CI", pytrace=False)
        pytest.skip(reason)
    return value


@pytest.fixture(scope="module")
def fashion():
    return _need(fashion_rows(400), "Fashion-MNIST (apt-get install dataset-fashion-mnist)")


# ---------------------------------------------------------------- config
def test_old_name_key_still_selects_the_source():
    cfg = DataConfig.model_validate({"name": "digits", "val_size": 300})
    assert cfg.source == "digits" and cfg.name == "digits"
    with pytest.raises(ValueError, match="not both"):
        DataConfig.model_validate({"name": "digits", "source": "digits"})


def test_unknown_source_is_a_helpful_miss():
    _refused(lambda: data.check_available(DataConfig(source="imagefolder"), "x.yaml"),
             "x.yaml: data.source: unknown data source 'imagefolder'", "did you mean 'image_folder'?")


def test_source_without_a_path_is_one_line():
    _refused(lambda: data.load(DataConfig(source="table"), "x.yaml"), "x.yaml: data.path: source 'table' needs a path")


# ---------------------------------------------------------------- presets
def test_presets_measure_their_normalisation():
    """Statistics measured on the training split, close to the constants the demo used to hard-code."""
    digits = data.load(DataConfig(source="digits", val_size=100))
    assert digits.mean != (0.0,) and abs(float(digits.train_x.mean())) < 1e-3
    if fashion_rows(1) is not None:
        f = data.load(DataConfig(val_size=5000, test_limit=100))
        assert abs(f.mean[0] - 0.2860) < 0.002 and abs(f.std[0] - 0.3530) < 0.002, (f.mean, f.std)
        assert f.normalisation() == {"scale": 255.0, "mean": list(f.mean), "std": list(f.std), "axis": 1}


# ---------------------------------------------------------------- npz
def test_npz_given_splits_are_kept(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2, 16)).astype(np.float32)
    y = np.arange(300) % 3
    np.savez(tmp_path / "s.npz", x_train=x[:200], y_train=y[:200], x_test=x[200:260], y_test=y[200:260],
             x_val=x[260:], y_val=y[260:])
    s = data.load(DataConfig(source="npz", path=str(tmp_path / "s.npz")))
    assert (len(s.train_y), len(s.val_y), len(s.test_y)) == (200, 40, 60) and s.shape == (2, 16)
    assert np.allclose(s.train_x.mean(axis=(0, 2)), 0, atol=1e-5)


def test_npz_class_without_training_samples(tmp_path):
    y = np.array([0, 1, 3] * 40)
    np.savez(tmp_path / "gap.npz", x=np.ones((120, 5), np.float32), y=y)
    _refused(lambda: data.load(DataConfig(source="npz", path=str(tmp_path / "gap.npz"))),
             "gap.npz: labels: class '2' (id 2) has no training samples")


def test_npz_nan_row_is_named(tmp_path):
    x = np.ones((120, 5), np.float32)
    x[17, 2] = np.inf
    np.savez(tmp_path / "inf.npz", x=x, y=np.arange(120) % 2)
    _refused(lambda: data.load(DataConfig(source="npz", path=str(tmp_path / "inf.npz"))), "inf.npz: x row 17")


# ---------------------------------------------------------------- image_folder
def test_image_folder_rgb_resized_and_given_split(tmp_path, fashion):
    x, y = fashion
    write_image_folder(tmp_path / "f" / "train", x[:300], y[:300])
    write_image_folder(tmp_path / "f" / "test", x[300:], y[300:])
    jpeg = next((tmp_path / "f" / "train" / "class_0").iterdir())
    from PIL import Image

    Image.open(jpeg).convert("RGB").save(jpeg.with_suffix(".jpg"))  # JPEG and RGB files mix in
    s = data.load(DataConfig(source="image_folder", path=str(tmp_path / "f"), val_size=50), "x", _space("mbconv_rgb32"))
    assert s.shape == (3, 32, 32) and len(s.test_y) == 100 and s.class_names[0] == "class_0"
    assert len(s.mean) == 3 and 0.2 < s.mean[0] < 0.4


def test_image_folder_bad_inputs(tmp_path, fashion):
    x, y = fashion
    write_image_folder(tmp_path / "f", x[:200], y[:200])
    (tmp_path / "f" / "class_9_empty").mkdir()
    cfg = DataConfig(source="image_folder", path=str(tmp_path / "f"))
    _refused(lambda: data.check_available(cfg, "x"), "class_9_empty: class: class 'class_9_empty' has no")
    (tmp_path / "f" / "class_9_empty").rmdir()
    _refused(lambda: data.check_available(cfg, "x", _space("mbconv_small", num_classes=5)),
             "f: classes: the data has 10 classes, more than the space's head")
    _refused(lambda: data.check_available(cfg, "x", _space("mlp_table")), "images become 1 or 3 channels")


def test_image_folder_decodes_into_bounded_memory(tmp_path, fashion, monkeypatch):
    """Above the threshold the decoded uint8 array is a memmap in the cache folder: decoding then
    holds one batch of images, not the whole folder (tracemalloc sees numpy's allocations)."""
    x, y = fashion
    write_image_folder(tmp_path / "f", x, y)
    monkeypatch.setattr(images_mod, "BATCH", 16)
    cfg = DataConfig(source="image_folder", path=str(tmp_path / "f"), val_size=50)
    space = _space("mbconv_rgb32")  # 3x32x32: 3 KiB per image, 1.2 MiB for the folder
    full = len(y) * 3 * 32 * 32

    def peak(memmap_bytes: int, cache: Path | None) -> int:
        src = data.make(cfg, "x", space, cache)
        src.memmap_bytes = memmap_bytes
        tracemalloc.start()
        raw = src._read()
        got = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return got, raw

    in_memory, raw_mem = peak(1 << 30, None)
    on_disk, raw_disk = peak(1024, tmp_path / "cache")
    # both peaks carry the same few hundred KiB besides the images (file list, decoder); the memmap
    # saves the whole array over that
    assert in_memory >= full and in_memory - on_disk >= 0.75 * full and on_disk < full, (in_memory, on_disk, full)
    assert isinstance(raw_disk.x, np.memmap) and np.array_equal(raw_disk.x, raw_mem.x)
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".npy"]  # nothing half-written left


# ---------------------------------------------------------------- table
def test_table_csv_and_parquet_agree(tmp_path):
    frame = wine_frame()
    frame["label"] = frame["label"].map({0: "barolo", 1: "grignolino", 2: "barbera"})
    frame.to_csv(tmp_path / "w.csv", index=False)
    frame.to_parquet(tmp_path / "w.parquet")
    a = data.load(DataConfig(source="table", path=str(tmp_path / "w.csv"), val_size=50), "x", _space("mlp_table"))
    b = data.load(DataConfig(source="table", path=str(tmp_path / "w.parquet"), val_size=50), "x", _space("mlp_table"))
    assert a.class_names == ("barbera", "barolo", "grignolino") and a.shape == (13,)
    assert np.allclose(a.train_x, b.train_x) and np.array_equal(a.test_y, b.test_y)


@pytest.mark.parametrize(("edit", "names"), [
    (lambda f: f.drop(columns="label"), "t.csv: data.label: no column 'label'"),
    (lambda f: f.assign(colour="red"), "t.csv: column 'colour': features must be numeric"),
    (lambda f: f.assign(ash=f["ash"].where(f.index != 4, float("inf"))), "t.csv: row 6 (line): column 'ash'"),
])
def test_table_bad_inputs(tmp_path, edit, names):
    edit(wine_frame()).to_csv(tmp_path / "t.csv", index=False)
    _refused(lambda: data.load(DataConfig(source="table", path=str(tmp_path / "t.csv"))), names)


def test_table_shape_against_the_space(tmp_path):
    wine_frame().to_csv(tmp_path / "t.csv", index=False)
    _refused(lambda: data.check_available(DataConfig(source="table", path=str(tmp_path / "t.csv")), "x",
                                          _space("mlp_table", features=12)), "t.csv: shape: samples are 13")


# ---------------------------------------------------------------- series
def test_series_multichannel_and_variable_length():
    motions = _need(aeon_data("BasicMotions"), "aeon's data files (pip install --no-deps aeon==1.3.0)")
    s = data.load(DataConfig(source="series", path=str(motions), val_size=50), "x", _space("seq_motions"))
    assert s.shape == (6, 100) and s.num_classes == 4 and s.class_names[0] == "Standing" and len(s.mean) == 6
    vowels = _need(aeon_data("JapaneseVowels"), "aeon's JapaneseVowels")
    longest = data.load(DataConfig(source="series", path=str(vowels), val_size=50))
    cut = data.load(DataConfig(source="series", path=str(vowels), val_size=50, length=20))
    assert longest.shape == (12, 26) and cut.shape == (12, 20)
    raw = data.make(DataConfig(source="series", path=str(vowels), length=40), "x")._read()
    assert (raw.x[:, :, 29:] == 0).all() and (raw.x[:, :, :7] != 0).any()  # zeros after each series' end


def test_series_nan_and_npz(tmp_path):
    gun = _need(aeon_data("GunPoint"), "aeon's data files (pip install --no-deps aeon==1.3.0)")
    lines = (gun / "GunPoint_TRAIN.ts").read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("@data")) + 5
    lines[at] = lines[at].replace(",", ",NaN,", 1)
    (tmp_path / "nan.ts").write_text("\n".join(lines))
    _refused(lambda: data.load(DataConfig(source="series", path=str(tmp_path / "nan.ts"))), f"nan.ts: line {at + 1}: holds NaN")
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "s.npz", x=rng.normal(size=(200, 1, 160)), y=np.arange(200) % 2)
    s = data.load(DataConfig(source="series", path=str(tmp_path / "s.npz"), length=150, val_size=50), "x",
                  _space("seq_series"))
    assert s.shape == (1, 150)


# ---------------------------------------------------------------- experiments and the CLI
@pytest.mark.parametrize("name", ["data_npz", "data_image_folder", "data_table", "data_series", "data_idx"])
def test_example_experiments_validate(name, tmp_path, monkeypatch):
    """Each examples/data_*.yaml loads with small stand-ins for what make_example_data.py writes."""
    out = tmp_path / "examples" / "data"
    out.mkdir(parents=True)
    rows = fashion_rows(300)
    if name in ("data_npz", "data_image_folder", "data_idx"):
        _need(rows, "Fashion-MNIST (apt-get install dataset-fashion-mnist)")
    if name == "data_npz":
        np.savez(out / "fashion_small.npz", x_train=rows[0][:250], y_train=rows[1][:250], x_test=rows[0][250:],
                 y_test=rows[1][250:])
    elif name == "data_image_folder":
        write_image_folder(out / "fashion_png", *rows)
    elif name == "data_table":
        wine_frame().to_csv(out / "wine.csv", index=False)
    elif name == "data_series":
        gun = _need(aeon_data("GunPoint"), "aeon's data files")
        (out / "GunPoint").symlink_to(gun)
    monkeypatch.chdir(tmp_path)
    exp = load_experiment(REPO / "examples" / f"{name}.yaml")
    assert exp.config.data.source == name.removeprefix("data_")


def test_validate_refuses_bad_data_in_one_line_exit_2(tmp_path):
    frame = wine_frame()
    frame.loc[3, "magnesium"] = float("nan")
    frame.to_csv(tmp_path / "wine.csv", index=False)
    exp = yaml.safe_load((REPO / "examples" / "data_table.yaml").read_text())
    exp["data"]["path"] = str(tmp_path / "wine.csv")
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(exp))
    # the label column is checked before anything is written; NaN rows when the data is loaded
    exp["data"]["label"] = "cultivar"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(exp))
    env = {**os.environ, "NASQ_CATALOG": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "nasq.cli", "validate", str(tmp_path / "bad.yaml")], cwd=tmp_path,
                         capture_output=True, text=True, env=env, timeout=120)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert "wine.csv: data.label: no column 'cultivar'" in lines[0], out.stderr
    _refused(lambda: data.load(load_experiment(tmp_path / "exp.yaml").config.data, "exp.yaml"),
             "wine.csv: row 5 (line): column 'magnesium'")


def test_a_field_the_source_does_not_read_is_refused():
    _refused(lambda: data.check_available(DataConfig(source="digits", path="/tmp"), "x.yaml"),
             "x.yaml: data.path: source 'digits' does not read it")
    _refused(lambda: data.load(DataConfig(source="table", path="t.csv", length=30), "x.yaml"),
             "x.yaml: data.length: source 'table' does not read it (used by: series)")
    assert data.check_available(DataConfig(source="digits", fallback="digits"), "x.yaml").num_classes == 10
