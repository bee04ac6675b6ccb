"""The three catalogs ship inside the package: an installed (non-editable) nasq finds them
without a source checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from nasq import experiment
from nasq.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_resolve_falls_back_to_the_packaged_catalog(tmp_path, monkeypatch):
    # as installed: no catalog beside the experiment, in the cwd, or above the package
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(experiment, "PACKAGE_ROOT", tmp_path / "site-packages")
    monkeypatch.delenv("NASQ_CATALOG", raising=False)
    for kind, name in (("space", "mbconv_small"), ("hardware", "cpu_roofline"), ("predictor", "gbdt_onehot")):
        path = experiment.resolve(kind, name, tmp_path, "exp.yaml", kind)
        assert path.is_file() and experiment.packaged_catalog() in path.parents
    with pytest.raises(ConfigError, match="known: .*mbconv_small"):
        experiment.resolve("space", "no_such_space", tmp_path, "exp.yaml", "space")


def test_wheel_holds_the_catalogs_and_an_install_finds_them(tmp_path):
    wheels, site = tmp_path / "whl", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(REPO)], check=True, capture_output=True, timeout=300)
    wheel = next(wheels.glob("nasq-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("search_spaces", "hardware_profiles", "predictors"):
        shipped = {p.relative_to(REPO).as_posix() for p in (REPO / folder).rglob("*") if p.is_file()}
        assert shipped and {f"nasq/_catalog/{s}" for s in shipped} <= names
    assert "nasq/formats/blockquant.c" in names  # the block formats' kernel source, compiled on first use
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    code = ("import nasq.experiment as e, pathlib; "
            "print(e.__file__); print(e.resolve('space', 'mbconv_small', pathlib.Path('.'), 'x', 'space'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    module, found = out.stdout.split()
    assert Path(module).is_relative_to(site) and Path(found).is_relative_to(site / "nasq" / "_catalog")
