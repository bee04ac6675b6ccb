"""`nasq search` at the command line: clear one-line errors (exit 2) before anything runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def _nasq(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NASQ_CATALOG": str(REPO)}
    return subprocess.run([sys.executable, "-m", "nasq.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=120)


def _one_line_error(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    return lines[0]


def test_search_without_trained_supernet(tmp_path):
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump({"name": "x", "data": {"name": "digits"}}))
    line = _one_line_error(_nasq(["search", "exp.yaml"], tmp_path))
    assert "runs/x: no trained supernet (supernet.safetensors + supernet.json); train it first with `nasq train exp.yaml`" in line
    assert not (tmp_path / "runs").exists()


def test_search_on_supernet_of_another_space(tmp_path):
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump({"name": "x", "data": {"name": "digits"}}))
    (tmp_path / "runs" / "x").mkdir(parents=True)
    (tmp_path / "runs" / "x" / "supernet.safetensors").write_bytes(b"")
    (tmp_path / "runs" / "x" / "supernet.json").write_text('{"space": "other", "space_hash": "abc"}')
    line = _one_line_error(_nasq(["search", "exp.yaml"], tmp_path))
    assert "supernet.json: trained on space 'other' (abc), not on 'mbconv_small'" in line


def test_search_bad_option_values(tmp_path):
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump({"name": "x", "data": {"name": "digits"}}))
    line = _one_line_error(_nasq(["search", "exp.yaml", "--strategy", "grid"], tmp_path))
    assert line.startswith("nasq: error: command line: --strategy: ") and "'grid'" in line
    line = _one_line_error(_nasq(["search", "exp.yaml", "--max-true-evals", "0"], tmp_path))
    assert "--max-true-evals" in line and "got 0" in line
    line = _one_line_error(_nasq(["search", "exp.yaml", "--resume", "nowhere"], tmp_path))
    assert "command line: --resume: no interrupted search in nowhere (no search_state.json)" in line
