"""`nasq run` is one MLflow parent run from its start that always ends in a true state, against a
real `mlflow server` (sqlite, 127.0.0.1; marked slow): a failing stage, SIGTERM to a real `nasq run`
process, a signal landing inside a tracking call, a server that is down at start, one that goes away
mid-run; and, in the fast tier, the same failure and SIGTERM on the default local store. Tiny
in-process settings (digits, no Ray, no export); stages that would train are replaced or cut short,
so each test takes seconds."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from nasq.testing.faults import record
from tests.integration.servers import MlflowServer, free_port

REPO = Path(__file__).resolve().parents[2]
TINY = {
    "data": {"name": "digits", "val_size": 200},
    "space": "mbconv_small",
    "hardware": ["cpu_roofline"],
    "train": {"epochs": 1, "batch_size": 64, "seed": 0, "threads": 1},
    "evaluate": {"num_subnets": 8, "calib_images": 64, "val_images": 200, "batch_size": 100},
    "search": {"population": 8, "generations": 2, "max_true_evals": 5, "batch_size": 5, "seed": 0},
    "ray": {"address": "none"},
    "export": {"enabled": False},
}


def experiment(tmp_path: Path, name: str, uri: str | None, **overrides) -> Path:
    """A tiny experiment logging to ``uri`` (None: the default sqlite store in its workdir)."""
    cfg = {**TINY, **overrides, "name": name, "workdir": str(tmp_path / "run"),
           "tracking": {"uri": uri, "experiment": f"lifecycle-{name}"}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def runs_of(uri: str, name: str) -> dict[str, object]:
    """Every run of experiment ``lifecycle-<name>`` by run name."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(f"lifecycle-{name}")
    if exp is None:
        return {}
    return {r.info.run_name: r for r in client.search_runs([exp.experiment_id], max_results=100)}


def invoke(*args: str):
    from nasq.cli.app import app

    return CliRunner().invoke(app, list(args))


def test_failure_and_sigterm_in_process_on_the_local_store(tmp_path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    from nasq.errors import NasqError
    from nasq.experiment import load_experiment
    from nasq.stages import track, train
    from nasq.stages.pipeline import Interrupted, run_pipeline

    def broken(*_args, **_kwargs):
        raise NasqError("train: injected failure")

    def sigterm(*_args, **_kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
        raise AssertionError("SIGTERM did not interrupt the stage")

    exp = load_experiment(experiment(tmp_path, "local", None))
    monkeypatch.setattr(train, "run", broken)
    with pytest.raises(NasqError, match="injected"):
        run_pipeline(exp)
    monkeypatch.setattr(train, "run", sigterm)
    handler_before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as info:
        run_pipeline(exp)
    assert (info.value.name, info.value.exit_code) == ("SIGTERM", 143)
    assert signal.getsignal(signal.SIGTERM) is handler_before
    client = MlflowClient(tracking_uri=track.uri_of(exp))
    runs = client.search_runs([client.get_experiment_by_name("lifecycle-local").experiment_id], max_results=100)
    ended = sorted((r.info.run_name, r.info.status, r.data.tags.get("nasq.error", "")) for r in runs)
    assert ended == [("local", "FAILED", "SIGTERM"), ("local", "FAILED", "train: injected failure"),
                     ("stage-data", "FINISHED", ""), ("stage-data", "FINISHED", ""),
                     ("stage-train", "FAILED", "SIGTERM"), ("stage-train", "FAILED", "train: injected failure")]


def test_a_plain_keyboard_interrupt_after_a_signal_is_that_signal() -> None:
    """Ray's ``get`` replaces the exception the handler raises with a plain KeyboardInterrupt."""
    from nasq.stages.pipeline import Interrupted, signals_raise

    with pytest.raises(Interrupted) as info:
        with signals_raise() as guard, guard.translate():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            except Interrupted:
                raise KeyboardInterrupt from None
    assert info.value.name == "SIGTERM" and isinstance(info.value.__cause__, KeyboardInterrupt)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = MlflowServer.start(tmp_path_factory.mktemp("mlflow"))
    yield srv
    srv.stop()


@pytest.mark.slow
def test_failing_stage_fails_parent_and_stage_run(server, tmp_path, monkeypatch) -> None:
    from nasq.errors import NasqError
    from nasq.stages import train

    def broken_train(*_args, **_kwargs):
        raise NasqError("train.lr: injected failure")

    monkeypatch.setattr(train, "run", broken_train)
    res = invoke("run", str(experiment(tmp_path, "failtrain", server.uri)), "-q")
    assert res.exit_code == 2, res.output
    assert res.stderr == "nasq: error: train.lr: injected failure\n"
    runs = runs_of(server.uri, "failtrain")
    assert set(runs) == {"failtrain", "stage-data", "stage-train"}  # no stage after the failed one
    parent, failed, done = runs["failtrain"], runs["stage-train"], runs["stage-data"]
    assert parent.info.status == "FAILED" and parent.data.tags["nasq.error"] == "train.lr: injected failure"
    assert parent.data.tags["nasq.kind"] == "search" and parent.data.tags["nasq.space"] == "mbconv_small"
    assert parent.data.params["experiment.train.epochs"] == "1.0"  # logged at start, before any stage
    assert failed.info.status == "FAILED" and failed.data.tags["nasq.error"] == "train.lr: injected failure"
    assert failed.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert done.info.status == "FINISHED" and "seconds" in done.data.metrics


@pytest.mark.slow
def test_sigterm_to_nasq_run_fails_the_run_and_exits_143(server, tmp_path) -> None:
    """SIGTERM to the process group, as ``ray job stop`` sends it: the run process gets it twice
    (directly and forwarded by the ``nasq`` supervisor) and still ends its runs FAILED."""
    path = experiment(tmp_path, "sigterm", server.uri, train={"epochs": 50, "batch_size": 64, "threads": 1})
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen([sys.executable, "-m", "nasq.cli", "run", str(path), "-q"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "stage-train" not in runs_of(server.uri, "sigterm"):  # mid-run: training has started
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    runs = runs_of(server.uri, "sigterm")
    record("SIGTERM to nasq run's process group mid-training (what ray job stop sends)", exit_code=proc.returncode,
           parent_run=runs["sigterm"].info.status, parent_error_tag=runs["sigterm"].data.tags.get("nasq.error"),
           train_stage_run=runs["stage-train"].info.status)
    for name in ("sigterm", "stage-train"):
        assert runs[name].info.status == "FAILED" and runs[name].data.tags.get("nasq.error") == "SIGTERM", (name, err)
    assert runs["stage-data"].info.status == "FINISHED"
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "nasq: stopped by SIGTERM"


@pytest.mark.slow
def test_signal_inside_a_tracking_call_still_ends_the_run(server, tmp_path, monkeypatch) -> None:
    """SIGINT arrives while a tracking call waits on a server that never answers: the handler's
    exception leaves the call, the runs are marked FAILED, the command exits 130."""
    from mlflow.tracking import MlflowClient

    from nasq.tracking import lifecycle

    hole = socket.socket()  # accepts connections (backlog) and never answers
    hole.bind(("127.0.0.1", 0))
    hole.listen(8)
    real = lifecycle._log_batch

    def stuck_call(client, run_id, params, metrics):
        if metrics.keys() == {"seconds"}:  # the end of the first stage
            threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
            real(MlflowClient(tracking_uri=f"http://127.0.0.1:{hole.getsockname()[1]}"), run_id, params, metrics)
        real(client, run_id, params, metrics)

    monkeypatch.setattr(lifecycle, "_log_batch", stuck_call)
    handler_before = signal.getsignal(signal.SIGINT)
    t0 = time.monotonic()
    try:
        res = invoke("run", str(experiment(tmp_path, "inflight", server.uri)), "-q")
    finally:
        hole.close()
    assert res.exit_code == 130, res.output
    assert time.monotonic() - t0 < 25  # not the 30 s request timeout
    assert res.stderr.strip() == "nasq: stopped by SIGINT"
    runs = runs_of(server.uri, "inflight")
    assert set(runs) == {"inflight", "stage-data"}
    for run in runs.values():
        assert run.info.status == "FAILED" and run.data.tags["nasq.error"] == "SIGINT"
    assert signal.getsignal(signal.SIGINT) is handler_before  # the handlers are put back


@pytest.mark.slow
def test_server_down_at_start_is_one_line_exit_2_and_writes_nothing(tmp_path) -> None:
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    path = experiment(tmp_path, "down", uri)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "NASQ_TRACKING_WAIT_S": "2"}
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "nasq.cli", "run", str(path), "-q"], cwd=tmp_path,
                         capture_output=True, text=True, env=env, timeout=120)
    elapsed = time.monotonic() - t0
    record("MLflow server down at the start of nasq run (wait bound 2 s)", exit_code=out.returncode,
           stderr_lines=out.stderr.count("\n"), seconds=round(elapsed, 1), workdir_created=(tmp_path / "run").exists())
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith(f"nasq: error: MLflow tracking server {uri} did not answer within 2 s (")
    assert out.stderr.count("\n") == 1
    assert elapsed < 30, elapsed  # 2 s of waiting plus start-up, not mlflow's minutes of retries
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_server_lost_mid_run_fails_cleanly(tmp_path, monkeypatch) -> None:
    """The chosen behaviour: the run fails with one line naming the server; what the finished
    stages wrote stays in the workdir; no later stage starts."""
    from nasq.errors import NasqError
    from nasq.experiment import load_experiment
    from nasq.stages import data, train
    from nasq.stages.pipeline import run_pipeline

    srv = MlflowServer.start(tmp_path / "mlflow")
    real_data = data.run

    def data_then_server_gone(*args, **kwargs):
        splits = real_data(*args, **kwargs)
        srv.stop()
        return splits

    def train_must_not_start(*_args, **_kwargs):
        raise AssertionError("training started after the tracking server was gone")

    monkeypatch.setattr(data, "run", data_then_server_gone)
    monkeypatch.setattr(train, "run", train_must_not_start)
    exp = load_experiment(experiment(tmp_path, "lost", srv.uri))
    t0 = time.monotonic()
    try:
        with pytest.raises(NasqError) as info:
            run_pipeline(exp)
    finally:
        srv.stop()
    message = str(info.value)
    record("MLflow server stopped mid-run (after the data stage)", one_line="\n" not in message,
           seconds=round(time.monotonic() - t0, 1), behaviour="fails cleanly; workdir kept; rerun reuses it")
    assert time.monotonic() - t0 < 30
    assert "\n" not in message
    assert message.startswith(f"MLflow tracking at {srv.uri} failed while ending stage data (run ")
    assert f"what the finished stages made is in {exp.workdir}" in message and "nasq run" in message
    assert exp.workdir.is_dir()
