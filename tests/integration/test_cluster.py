"""A real two-node Ray cluster on this machine (`ray start --head` + `ray start --address`, loopback,
token authentication on, stopped by PID): `nasq submit` of an experiment that says `ray.address:
local` evaluates on the cluster anyway, on both nodes, with the supernet payload put once and
fetched once per worker; submit, status, logs and stop work with the token and fail in one line
without it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.integration.servers import RayCluster

pytestmark = [pytest.mark.slow, pytest.mark.ray]

TINY = {
    "name": "clustertiny",
    "data": {"name": "digits", "val_size": 200},
    "space": "mbconv_small",
    "hardware": ["cpu_roofline"],
    "train": {"epochs": 1, "batch_size": 64, "seed": 0, "threads": 1},
    "evaluate": {"num_subnets": 8, "calib_images": 64, "val_images": 100, "batch_size": 100},
    "search": {"population": 12, "generations": 3, "max_true_evals": 6, "batch_size": 6, "seed": 0},
    "ray": {"address": "local"},  # what a user runs at home; the job must not start a second Ray
    "tracking": {"experiment": "nasq-cluster"},  # no uri: submit warns that it stays on the head
}
SUMMARY = re.compile(r"ray: (\d+) evaluations, (\d+) tasks, (\d+) node\(s\), payload put (\d+)x")
NODE = re.compile(r"ray node ([0-9a-f]{8}): (\d+) tasks, (\d+) payload fetch")


def cli(cluster: RayCluster, *args: str, cwd: Path, token: bool = True, timeout: int = 240) -> subprocess.CompletedProcess:
    env = cluster.client_env(with_token=token)
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "nasq.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.fixture(scope="module")
def cluster():
    c = RayCluster.start(nodes=(1, 1), token=True)
    yield c
    c.stop()
    assert not c.pids(), "Ray processes left behind"
    shutil.rmtree(c.temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def job(cluster, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("job")
    exp = tmp / "clustertiny.yaml"
    exp.write_text(yaml.safe_dump(TINY))
    res = cli(cluster, "submit", str(exp), "--address", cluster.address, "--wait", cwd=tmp, timeout=300)
    return {"id": res.stdout.splitlines()[0] if res.stdout else "", "submit": res, "tmp": tmp, "exp": exp}


def _one_line_error(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 2, (res.returncode, res.stdout[-500:], res.stderr[-1500:])
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr[-1500:]
    return lines[0]


def test_two_nodes_with_token_auth(cluster):
    assert cluster.token and cluster.token_file.is_file() and str(Path.home()) not in str(cluster.token_file)
    code = ("import ray, json; ray.init(address='auto', logging_level='ERROR'); "
            "print(json.dumps(sorted(n['NodeManagerAddress'] for n in ray.nodes() if n['Alive'])))")
    env = {**cluster.client_env(), "RAY_ADDRESS": cluster.gcs_address}
    ok = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.strip().splitlines()[-1] == '["127.0.0.1", "127.0.0.1"]', ok.stderr[-1500:]


def test_submit_with_token_evaluates_on_both_nodes(job):
    res = job["submit"]
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert job["id"].startswith("raysubmit_")
    assert "tracking.uri is unset" in res.stderr and "head node" in res.stderr  # the warning, one line
    logs = res.stdout
    assert "ray.address 'local' -> 'auto'" in logs  # no second, embedded Ray inside the job
    lines = logs.splitlines()
    at = [i for i, line in enumerate(lines) if SUMMARY.search(line)]
    assert at, logs[-3000:]
    last = SUMMARY.search(lines[at[-1]])  # the totals over the whole job, then one line per node
    nodes = {n: (int(t), int(f)) for n, t, f in NODE.findall("\n".join(lines[at[-1]:]))}
    print("\n".join(lines[at[-1]:at[-1] + 4]))
    assert int(last.group(3)) == len(nodes) == 2, last.group(0)  # evaluations ran on both nodes
    assert int(last.group(4)) == 1  # the payload was put into the object store once for the whole job
    # one worker per node (1 CPU each): each node fetched the weights once, however many tasks it ran
    assert all(f == 1 for _, f in nodes.values()), last.group(0)
    assert sum(t for t, _ in nodes.values()) > len(nodes), last.group(0)


def test_without_token_every_command_fails_in_one_line(cluster, job):
    tmp = job["tmp"]
    lines = [_one_line_error(cli(cluster, "submit", str(job["exp"]), "--address", cluster.address, cwd=tmp, token=False))]
    for cmd in ("status", "logs", "stop"):
        lines.append(_one_line_error(cli(cluster, "jobs", cmd, job["id"], "--address", cluster.address,
                                         cwd=tmp, token=False)))
    # no RAY_AUTH_MODE at all: nasq's default (disabled) sends no token, and the cluster refuses
    env = cluster.client_env(with_token=False)
    env.pop("RAY_AUTH_MODE")
    unset = subprocess.run([sys.executable, "-m", "nasq.cli", "jobs", "status", job["id"], "--address",
                            cluster.address], cwd=tmp, capture_output=True, text=True, env=env, timeout=120)
    lines.append(_one_line_error(unset))
    for line in lines:
        assert cluster.address in line and "RAY_AUTH_TOKEN" in line, line
    assert cluster.token not in "".join(lines)


def test_status_logs_stop_with_token(cluster, job):
    tmp = job["tmp"]
    assert cli(cluster, "jobs", "status", job["id"], "--address", cluster.address, cwd=tmp).stdout.strip() == "SUCCEEDED"
    assert "Pareto front" in cli(cluster, "jobs", "logs", job["id"], "--address", cluster.address, cwd=tmp).stdout
    assert cli(cluster, "jobs", "stop", job["id"], "--address", cluster.address, cwd=tmp).stdout.strip() == "not running"
    second = cli(cluster, "submit", str(job["exp"]), "--address", cluster.address, cwd=tmp)
    assert second.returncode == 0, second.stderr[-1500:]
    job2 = second.stdout.splitlines()[0]
    assert cli(cluster, "jobs", "stop", job2, "--address", cluster.address, cwd=tmp).stdout.strip() == "stopping"
    deadline = time.monotonic() + 60
    state = ""
    while time.monotonic() < deadline and state not in ("STOPPED", "FAILED", "SUCCEEDED"):
        state = cli(cluster, "jobs", "status", job2, "--address", cluster.address, cwd=tmp).stdout.strip()
        time.sleep(1)
    assert state == "STOPPED"


def test_sweep_submitted_as_one_job_runs_two_entries_in_one_driver(cluster, tmp_path):
    """`nasq submit --sweep`: two constraint variants of a tiny experiment as one job on the
    cluster: two MLflow search runs, the supernet trained once (the second entry reuses it), one
    shared ledger. (The store is a sqlite file on this machine, which is also the head node.)"""
    from mlflow.tracking import MlflowClient

    base = {**TINY, "name": "sw", "workdir": f"{tmp_path}/runs/{{name}}", "export": {"enabled": False},
            "tracking": {"experiment": "nasq-sweep", "uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({"experiment": "base.yaml", "grid": [
        {"loose": {"constraints": [{"metric": "size_mb", "max": 10.0}]},
         "tight": {"constraints": [{"metric": "size_mb", "max": 0.2}]}}]}))
    res = cli(cluster, "submit", "sweep.yaml", "--sweep", "--address", cluster.address, "--wait", cwd=tmp_path,
              timeout=400)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "ray.address 'local' -> 'auto'" in res.stdout  # evaluated on the cluster, not a second Ray
    assert res.stdout.count("reusing the finished supernet") == 1  # trained by the first entry only
    client = MlflowClient(tracking_uri=base["tracking"]["uri"])
    exp = client.get_experiment_by_name("nasq-sweep")
    runs = client.search_runs([exp.experiment_id], "tags.`nasq.kind` = 'search'")
    assert sorted(r.info.run_name for r in runs) == ["sw-loose", "sw-tight"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert len(list((tmp_path / "runs").glob("*/cache/*/ledger.csv"))) == 1  # one ledger, in the first workdir
    assert not list(tmp_path.glob(".nasq-sweep-*"))  # the variants written to check them are gone


def test_sweep_job_folder_holds_data_only(tmp_path):
    """What `nasq submit --sweep` ships: the base experiment, every entry's catalog files and the
    entries (grid expanded) as sweep.yaml, which reads back as the same entries."""
    from nasq.cli.service import _variant_file, sweep_entries
    from nasq.cluster.jobs import JOB_SWEEP, assemble_sweep

    (tmp_path / "base.yaml").write_text(yaml.safe_dump({**TINY, "name": "sw"}))
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({"experiment": "base.yaml", "grid": [
        {"roof": {"hardware": ["cpu_roofline"]}, "ort": {"hardware": ["cpu_ort_epyc"], "allow_emulated": True}}]}))
    base_path, base, entries = sweep_entries(tmp_path / "sweep.yaml")
    variants = [_variant_file(base, n, o, tmp_path / f"v-{n}.yaml") for n, o in entries]
    dest = tmp_path / "job"
    dest.mkdir()
    assert assemble_sweep(base_path, variants, entries, dest) == JOB_SWEEP
    shipped = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert "experiment.yaml" in shipped and "sweep.yaml" in shipped
    assert "hardware_profiles/cpu_ort_epyc/profile.yaml" in shipped  # named by an entry only
    assert not [p for p in shipped if p.startswith("v-")]  # the variants themselves stay home
    assert sweep_entries(dest / JOB_SWEEP)[2] == entries
