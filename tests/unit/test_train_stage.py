"""`nasq train` as its own stage: a finished supernet is reused when space, data and training
config match, retrained when they differ, and --fresh starts over."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def _experiment(tmp_path: Path, **train) -> Path:
    cfg = {"name": "t", "workdir": str(tmp_path / "run"), "data": {"name": "digits", "val_size": 100},
           "space": "mbconv_small", "train": {"epochs": 0.1, "batch_size": 64, "threads": 1, **train}}
    p = tmp_path / "t.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def _train(path: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NASQ_CATALOG": str(REPO)}
    return subprocess.run([sys.executable, "-m", "nasq.cli", "train", str(path), "--quiet", *extra], cwd=path.parent,
                          capture_output=True, text=True, env=env, timeout=300)


def test_train_then_reuse_then_retrain_on_change(tmp_path):
    path = _experiment(tmp_path)
    first = _train(path)
    assert first.returncode == 0, first.stderr
    meta = json.loads((tmp_path / "run" / "supernet.json").read_text())
    assert meta["result"]["steps"] > 0 and len(meta["losses"]) == meta["result"]["steps"]
    assert (tmp_path / "run" / "checkpoint" / "checkpoint.json").is_file()
    weights = (tmp_path / "run" / "supernet.safetensors").read_bytes()

    again = _train(path)
    assert again.returncode == 0 and "reused" in again.stdout
    assert (tmp_path / "run" / "supernet.safetensors").read_bytes() == weights

    fresh = _train(path, "--fresh")
    assert fresh.returncode == 0 and "reused" not in fresh.stdout
    assert (tmp_path / "run" / "supernet.safetensors").read_bytes() == weights  # same seed, same weights

    changed = _train(_experiment(tmp_path, seed=1))
    assert changed.returncode == 0 and "reused" not in changed.stdout
    assert (tmp_path / "run" / "supernet.safetensors").read_bytes() != weights


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path):
    path = _experiment(tmp_path)
    assert _train(path).returncode == 0
    (tmp_path / "run" / "supernet.json").unlink()  # as if interrupted after step 1's checkpoint
    state_path = tmp_path / "run" / "checkpoint" / "checkpoint.json"
    state = json.loads(state_path.read_text())
    state_path.write_text(json.dumps({**state, "step": 1, "losses": state["losses"][:1]}))
    out = _train(_experiment(tmp_path, lr=0.01))
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "checkpoint.json: train: the checkpoint was made with" in out.stderr
