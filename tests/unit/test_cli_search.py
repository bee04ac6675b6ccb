"""`nasq search` at the command line: clear one-line errors (exit 2) before anything runs; a search
on a supernet `nasq train` left that succeeds end to end; and `--resume` of a search killed midway
that ends on the same front as an uninterrupted search with the same seed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from nasq.testing.faults import record

REPO = Path(__file__).resolve().parents[2]


def _nasq_command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "nasq.cli", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "NASQ_CATALOG": str(REPO)}


def _nasq(args: list[str], cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(_nasq_command(args), cwd=cwd, capture_output=True, text=True, env=_env(), timeout=timeout)


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


# ---------------------------------------------------------------- real searches (tiny, in-process)
# digits, a few training steps, 8 sampled subnets, LINAS over 3 iterations of 2 true evaluations;
# `ray: none` keeps every evaluation in the nasq process, so killing it kills the whole search.
TINY = {
    "name": "tiny", "data": {"name": "digits", "val_size": 100}, "space": "mbconv_small",
    "hardware": ["cpu_roofline"],
    "train": {"epochs": 0.1, "batch_size": 64, "threads": 1, "seed": 0},
    "evaluate": {"num_subnets": 8, "calib_images": 64, "val_images": 100, "batch_size": 100},
    "search": {"strategy": "linas", "population": 8, "generations": 2, "max_true_evals": 6, "batch_size": 2,
               "seed": 0},
    "constraints": [{"metric": "size_mb", "max": 0.3}],
    "ray": {"address": "none"},
    "export": {"enabled": False},
}
BUDGET = TINY["search"]["max_true_evals"]
EVALS_AFTER_EACH_ITERATION = list(range(TINY["search"]["batch_size"], BUDGET + 1, TINY["search"]["batch_size"]))
ITERATIONS = len(EVALS_AFTER_EACH_ITERATION)  # 3
STATE = "search_state.json"  # the checkpoint a search writes after every iteration


def _true_evals(checkpoint: dict) -> int:
    return len(checkpoint["evaluations"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A folder with exp.yaml whose supernet `nasq train` has trained (in ./run)."""
    folder = tmp_path_factory.mktemp("search")
    (folder / "exp.yaml").write_text(yaml.safe_dump({**TINY, "workdir": str(folder / "run")}))
    out = _nasq(["train", "exp.yaml", "--quiet"], folder, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (folder / "run" / "supernet.safetensors").is_file()
    return folder


def _points(folder: Path) -> str:
    """front.json's points - spec, key, genome, predicted and measured values - as canonical JSON
    (NaN-safe: an unmeasured prediction is NaN)."""
    return json.dumps(json.loads((folder / "front.json").read_text())["points"], sort_keys=True)


@pytest.mark.slow
def test_search_end_to_end(trained):
    out = _nasq(["search", "exp.yaml", "--out", "full", "--quiet"], trained, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    full = trained / "full"
    front = json.loads((full / "front.json").read_text())
    assert len(front["points"]) >= 1
    assert front["objectives"] == ["top1", "latency_ms", "size_mb"]
    for p in front["points"]:
        assert 0 <= p["measured"]["top1"] <= 100 and p["predicted"]["size_mb"] <= 0.3  # measured, feasible
    history = json.loads((full / "search_history.json").read_text())
    assert [h["true_evals"] for h in history] == EVALS_AFTER_EACH_ITERATION
    assert _true_evals(json.loads((full / STATE).read_text())) == BUDGET
    assert (full / "front.csv").is_file() and (full / "evaluations.csv").is_file()
    assert "Pareto front" in out.stdout


@pytest.mark.slow
def test_search_resume_after_kill(trained):
    """Kill `nasq search` (SIGKILL) right after its first checkpoint; `nasq search --resume` then
    finishes it, on exactly the front of an uninterrupted search with the same seed."""
    part = trained / "part"
    proc = subprocess.Popen(_nasq_command(["search", "exp.yaml", "--out", "part", "--seed", "1", "--quiet"]),
                            cwd=trained, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (part / STATE).is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        proc.kill()  # SIGKILL: the interruption (a no-op if the search already ended by itself)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the search ended before it was killed: {proc.returncode} {err[-2000:]}"
    assert (part / STATE).is_file(), "no checkpoint within 240 s"
    checkpoint = json.loads((part / STATE).read_text())
    assert 0 < _true_evals(checkpoint) < BUDGET, checkpoint
    assert not (part / "front.json").exists()

    resumed = _nasq(["search", "exp.yaml", "--resume", "part", "--seed", "1"], trained, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _true_evals(json.loads((part / STATE).read_text())) == BUDGET
    # it continued from the checkpoint: only the iterations after it ran (and reported progress)
    done = len(checkpoint["history"])
    ran = [int(i) for i in re.findall(r"iteration (\d+): \d+/\d+ true evaluations", resumed.stdout)]
    assert ran == list(range(done + 1, ITERATIONS + 1)), resumed.stdout

    fresh = _nasq(["search", "exp.yaml", "--out", "fresh", "--seed", "1", "--quiet"], trained, timeout=300)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert json.loads((part / "front.json").read_text())["points"], "empty front"
    record("nasq search driver SIGKILLed after its first checkpoint, then --resume",
           front_identical=_points(part) == _points(trained / "fresh"), evaluations_in_checkpoint=_true_evals(checkpoint),
           budget=BUDGET)
    assert _points(part) == _points(trained / "fresh")
    history = (part / "search_history.json").read_text()
    assert json.dumps(json.loads(history)) == json.dumps(json.loads((trained / "fresh" / "search_history.json").read_text()))
    assert [h["true_evals"] for h in json.loads(history)] == EVALS_AFTER_EACH_ITERATION

    # a finished search can be extended but not shortened: refused in one line before any work
    shorter = _nasq(["search", "exp.yaml", "--resume", "part", "--seed", "1", "--max-true-evals", str(BUDGET - 2)],
                    trained)
    line = _one_line_error(shorter)
    assert f"this search was given {BUDGET} true evaluations; --max-true-evals {BUDGET - 2} is smaller" in line
    assert "[1/3]" not in shorter.stdout
