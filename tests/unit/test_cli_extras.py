"""The torch-free install's edges: a command needing `nasq[all]` says so in one line; a generic
space given to the pipeline is refused in one line."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from nasq.cli.app import missing_extra

BLOCK_TORCH = textwrap.dedent("""
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "torch":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    sys.meta_path.insert(0, Block())
    sys.argv = ["nasq", *sys.argv[1:]]
    from nasq.cli.app import main
    main()
""")


def test_missing_extra_names_the_install_and_ignores_other_modules():
    line = missing_extra(ModuleNotFoundError("No module named 'torch.nn'", name="torch.nn"))
    assert line is not None and "torch" in line and "pip install 'nasq[all]'" in line
    assert missing_extra(ModuleNotFoundError("x", name="nasq.oops")) is None


def test_a_command_without_torch_fails_in_one_line(tmp_path: Path):
    script = tmp_path / "no_torch.py"
    script.write_text(BLOCK_TORCH)
    out = subprocess.run([sys.executable, str(script), "train", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0  # help needs no torch
    catalog = subprocess.run([sys.executable, str(script), "catalog"], capture_output=True, text=True, timeout=120)
    assert catalog.returncode == 0 and "mbconv_small" in catalog.stdout  # listing catalogs needs no torch
    fail = subprocess.run([sys.executable, str(script), "profile", "check", "cpu_ort_epyc"],
                          capture_output=True, text=True, timeout=120)
    assert fail.returncode == 2
    assert fail.stderr.strip() == "nasq: error: this command needs torch, which is not installed: pip install 'nasq[all]'"


def test_generic_space_in_an_experiment_is_refused(tmp_path: Path):
    (tmp_path / "cell.yaml").write_text("name: cell\nfamily: generic\ngenes:\n  - {name: op_0, choices: [a, b]}\n")
    (tmp_path / "exp.yaml").write_text("space: cell.yaml\n")
    out = subprocess.run([sys.executable, "-m", "nasq.cli", "validate", str(tmp_path / "exp.yaml")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "generic" in out.stderr and "nasq.search_generic" in out.stderr
    assert out.stderr.strip().count("\n") == 0
