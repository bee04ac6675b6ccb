"""Faults under a real embedded Ray, through the real CLI: an evaluation worker killed mid-batch
(Ray retries it: same front, every subnet in the ledger once) and the Ray node itself dying under
the search (Ray terminates its driver from C++; nasq's supervisor turns that into one line naming
the checkpoint, and `--resume` ends on the front of an uninterrupted search)."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from nasq.testing.faults import record

pytestmark = [pytest.mark.slow, pytest.mark.ray]

REPO = Path(__file__).resolve().parents[2]
TINY = {
    "name": "faults", "data": {"name": "digits", "val_size": 600}, "space": "mbconv_small",
    "hardware": ["cpu_roofline"], "workdir": "run",
    "train": {"epochs": 0.1, "batch_size": 64, "threads": 1, "seed": 0},
    "evaluate": {"num_subnets": 8, "calib_images": 64, "val_images": 600, "batch_size": 100},
    "search": {"strategy": "linas", "population": 8, "generations": 2, "max_true_evals": 16, "batch_size": 4,
               "seed": 1},
    "constraints": [{"metric": "size_mb", "max": 0.3}],
    "ray": {"address": "local", "num_cpus": 2},
    "export": {"enabled": False},
}
STATE = "search_state.json"


def _env() -> dict[str, str]:
    env = {**os.environ, "NASQ_CATALOG": str(REPO), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "nasq.cli", *args]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A trained tiny supernet in ./run and one experiment file per search, each with its own
    evaluation cache (a shared cache would answer the later searches without evaluating)."""
    folder = tmp_path_factory.mktemp("faults")
    for name in ("fresh", "node", "worker"):
        cfg = {**TINY, "search": {**TINY["search"], "cache_dir": f"cache-{name}"}}
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    out = subprocess.run(_command(["train", "fresh.yaml", "--quiet"]), cwd=folder, env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    fresh = subprocess.run(_command(["search", "fresh.yaml", "--out", "fresh", "--quiet"]), cwd=folder, env=_env(),
                           capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    return folder


def _points(out: Path) -> str:
    return json.dumps(json.loads((out / "front.json").read_text())["points"], sort_keys=True)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for c in _children(todo.pop()):
            found.append(c)
            todo.append(c)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _start(folder: Path, exp: str, out: str) -> subprocess.Popen:
    return subprocess.Popen(_command(["search", exp, "--out", out, "--quiet"]), cwd=folder, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert path.is_file(), f"no {path.name} before the search ended ({proc.poll()})"


def _ledger_keys(cache: Path) -> list[str]:
    (ledger,) = cache.glob("*/ledger.csv")
    return [r["key"] for r in csv.DictReader(io.StringIO(ledger.read_text()))]


def test_killed_evaluation_worker_changes_nothing(folder: Path) -> None:
    proc = _start(folder, "worker.yaml", "worker")
    killed = None
    try:
        _wait_for(folder / "worker" / STATE, proc)
        deadline = time.monotonic() + 120
        while killed is None and proc.poll() is None and time.monotonic() < deadline:
            for pid in _descendants(proc.pid):
                if _cmdline(pid).startswith("ray::eval_chunk"):
                    os.kill(pid, signal.SIGKILL)
                    killed = pid
                    break
            time.sleep(0.002)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed is not None, "no busy evaluation worker seen to kill"
    assert proc.returncode == 0, err[-3000:]
    same = _points(folder / "worker") == _points(folder / "fresh")
    keys = _ledger_keys(folder / "cache-worker")
    record("evaluation worker SIGKILLed mid-batch", front_identical=same, ledger_rows=len(keys),
           ledger_unique=len(set(keys)), uninterrupted_rows=len(_ledger_keys(folder / "cache-fresh")),
           exit_code=proc.returncode)
    assert same
    assert len(keys) == len(set(keys)) == len(_ledger_keys(folder / "cache-fresh"))


def test_dead_ray_node_is_one_line_and_resumable(folder: Path) -> None:
    proc = _start(folder, "node.yaml", "node")
    try:
        _wait_for(folder / "node" / STATE, proc)
        # the child nasq process (the supervisor's only child) started the raylet; its dashboard
        # agent shares the raylet's fate, so killing it takes the node down
        agents = [p for p in _descendants(proc.pid) if _cmdline(p).startswith("ray::DashboardAgent")]
        assert agents, "no Ray dashboard agent under the search"
        os.kill(agents[0], signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, (proc.returncode, err[-3000:])
    nasq_lines = [line for line in err.splitlines() if line.startswith("nasq:")]
    assert len(nasq_lines) == 1 and "Traceback" not in err, err[-3000:]
    assert "exited with code 1" in nasq_lines[0] and "`nasq search node.yaml --resume node`" in nasq_lines[0]
    state = json.loads((folder / "node" / STATE).read_text())
    assert 0 < len(state["evaluations"]) < TINY["search"]["max_true_evals"]
    assert not (folder / "node" / "front.json").exists()

    resumed = subprocess.run(_command(["search", "node.yaml", "--resume", "node", "--quiet"]), cwd=folder, env=_env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    same = _points(folder / "node") == _points(folder / "fresh")
    keys = _ledger_keys(folder / "cache-node")
    record("Ray node killed under the search (dashboard agent SIGKILLed), then --resume", front_identical=same,
           ledger_rows=len(keys), ledger_unique=len(set(keys)), exit_code=proc.returncode,
           evaluations_in_checkpoint=len(state["evaluations"]), message=nasq_lines[0][:160])
    assert same
    assert len(keys) == len(set(keys))


def test_supervised_child_dies_with_the_supervisor(folder: Path) -> None:
    """SIGKILL of the `nasq` process (the supervisor) ends the search too: nothing runs on orphaned."""
    proc = subprocess.Popen(_command(["search", "fresh.yaml", "--out", "orphan", "--quiet"]), cwd=folder, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    child = []
    while not child and time.monotonic() < deadline:
        child = [p for p in _children(proc.pid) if "nasq.cli" in _cmdline(p)]
        time.sleep(0.01)
    assert child, "no supervised child"
    proc.kill()
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{child[0]}").exists() and time.monotonic() < deadline:
        state = Path(f"/proc/{child[0]}/stat").read_text().split()[2] if Path(f"/proc/{child[0]}/stat").exists() else "X"
        if state == "Z":
            break
        time.sleep(0.05)
    alive = Path(f"/proc/{child[0]}/stat").exists() and Path(f"/proc/{child[0]}/stat").read_text().split()[2] != "Z"
    assert not alive, "the nasq child outlived its supervisor"
