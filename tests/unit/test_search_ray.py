"""Real embedded Ray: a failing evaluation task is retried and then recorded as failed; an optuna
strategy runs as a Ray Tune experiment and an interrupted one finishes from nasq's own trial journal,
never unpickling what Tune left in the folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from nasq.hardware import CostModel
from nasq.search.ledger import Ledger
from nasq.search.loop import SearchTask
from nasq.specs import ConstraintSpec, SearchConfig

pytestmark = [pytest.mark.slow, pytest.mark.ray]


@pytest.fixture(scope="module")
def ray():
    from nasq.cluster.tasks import ray_session

    with ray_session("local", 2) as r:
        yield r


def _flaky_task():
    # a closure, so Ray ships it by value (the test module is not importable in workers)
    def task(payload, spec_dicts):
        # counts attempts on disk (tasks run in other processes); always fails for the marked subnet
        import uuid
        from pathlib import Path

        state = payload.state
        (Path(state["dir"]) / f"attempt-{uuid.uuid4().hex}").touch()
        if any(d["stages"][0][0]["kernel"] == state["bad_kernel"] and len(d["stages"][0]) == state["bad_depth"]
               for d in spec_dicts):
            raise RuntimeError("simulated evaluation failure")
        return [float(len(d["stages"][0])) for d in spec_dicts]
    return task


def test_failed_ray_task_is_retried_then_recorded(ray, space, tmp_path):
    from nasq.cluster.tasks import evaluate_on_ray
    from nasq.supernet.evaluate import EvalPayload

    bad, good = space.largest(), space.smallest()
    assert (len(bad.stages[0]), bad.stages[0][0].kernel) != (len(good.stages[0]), good.stages[0][0].kernel)
    state = {"dir": str(tmp_path), "bad_kernel": bad.stages[0][0].kernel, "bad_depth": len(bad.stages[0])}
    payload = EvalPayload({}, state, np.zeros(1), np.zeros(1), np.zeros(1), 1)
    ledger = Ledger(lambda specs: evaluate_on_ray(ray, payload, specs, chunk=1, max_retries=2, task=_flaky_task()),
                    tmp_path / "ledger.csv")
    top1 = ledger([bad, good], "sample")
    assert math.isnan(top1[0]) and top1[1] == len(good.stages[0])
    assert ledger.failed == [bad.key()]
    assert len(list(tmp_path.glob("attempt-*"))) == 1 + 3  # the good one once, the bad one 1 + 2 retries
    assert "failed" in (tmp_path / "ledger.csv").read_text()


def _counted_evaluate():
    # a closure, so Ray ships it by value to the trial actors. Every call claims the next number
    # in payload["calls"] (O_EXCL: trials run concurrently in other processes) and records which
    # Tune trial evaluated which subnet; calls from number payload["succeed"] on crash while the
    # flag file exists, the way a trial dies when its node goes away.
    def evaluate(payload, spec_dicts):
        import json
        import os
        from pathlib import Path

        from ray import tune

        spec = json.dumps(spec_dicts[0], sort_keys=True)
        n = 0
        while True:
            try:
                fd = os.open(Path(payload["calls"]) / f"{n:03d}.json", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                break
            except FileExistsError:
                n += 1
        crash = n >= payload["succeed"] and Path(payload["flag"]).exists()
        with os.fdopen(fd, "w") as f:
            json.dump({"trial": tune.get_context().get_trial_id(), "spec": spec, "crashed": crash}, f)
        if crash:
            raise SystemError("simulated crash of the trial")
        return [80.0 + len(spec_dicts[0]["stages"][0])]
    return evaluate


def _calls(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def test_optuna_on_ray_tune_resumes_from_the_journal_not_a_pickle(ray, space, profile, tmp_path):
    import pickle

    from nasq.cluster.tune import JOURNAL, run_tune_search

    cost = CostModel(space, profile)
    cfg = SearchConfig(strategy="optuna_tpe", max_true_evals=3, batch_size=3, seed=0)
    task = SearchTask(space, ("top1", "latency_ms", "size_mb"), (ConstraintSpec(metric="size_mb", max=10.0),),
                      cost, cfg)
    storage, calls, flag = tmp_path / "tune", tmp_path / "calls", tmp_path / "crash"
    calls.mkdir()
    flag.touch()
    tune_evaluate = (_counted_evaluate(), {"calls": str(calls), "flag": str(flag), "succeed": 2})

    # The interruption: the first two trials finish, the third crashes.
    ledger = Ledger(lambda specs: [None] * len(specs))
    try:
        run_tune_search(task, ledger, tune_evaluate, storage)
    except Exception:  # noqa: BLE001 - whatever Tune raises for an experiment with a crashed trial
        pass
    before = _calls(calls)
    assert [c["crashed"] for c in before] == [False, False, True], before
    done_before = sorted(c["spec"] for c in before if not c["crashed"])
    journal = [json.loads(line) for line in (storage / JOURNAL).read_text().splitlines()]
    assert sorted(json.dumps(json.loads(r["spec"]), sort_keys=True) for r in journal) == done_before

    # Someone else's run folder: every pickle Tune would read runs code when unpickled.
    pwned = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            return (open, (str(pwned), "w"))

    planted = 0
    for p in storage.rglob("*"):
        if p.is_file() and p.suffix in (".pkl", ".json") and p.name != JOURNAL:
            p.write_bytes(pickle.dumps(Evil()))
            planted += 1
    assert planted > 0

    flag.unlink()
    done = run_tune_search(task, ledger, tune_evaluate, storage, resume=True)

    assert not pwned.exists(), "resume unpickled a file from the run folder"
    # the two finished trials count and are not run again: exactly one more evaluation, of a new subnet
    after = _calls(calls)[len(before):]
    assert [c["crashed"] for c in after] == [False], after
    evaluated = [*done_before, after[0]["spec"]]
    assert len(set(evaluated)) == 3
    assert done.state.true_evals == 3 and len(ledger) == 3
    assert sorted(json.dumps(done.state.specs[k].to_dict(), sort_keys=True) for k in done.state.keys) == sorted(evaluated)
    assert all(80 < v < 90 for v in ledger.top1.values())
    assert done.front.points and done.history[-1]["true_evals"] == 3


def test_a_foreign_journal_is_refused_in_one_line(space, profile, tmp_path):
    from nasq.cluster.tune import JOURNAL, read_journal
    from nasq.errors import NasqError

    cost = CostModel(space, profile)
    task = SearchTask(space, ("top1", "latency_ms", "size_mb"), (), cost,
                      SearchConfig(strategy="optuna_tpe", max_true_evals=3, batch_size=3, seed=0))
    spec = space.smallest()
    good = {"key": spec.key(), "spec": spec.to_json(), "top1": 50.0, "feasible": True}
    path = tmp_path / JOURNAL
    path.write_text(json.dumps(good) + "\n" + '{"key": "x", "sp')  # a torn last append is dropped
    assert [r["key"] for r in read_journal(path, task)] == [spec.key()]
    for bad in ({**good, "top1": 1e9}, {**good, "key": "other"}, {**good, "feasible": "yes"},
                {**good, "spec": json.dumps({"stages": [[{"kernel": 99}]]})}):
        path.write_text(json.dumps(bad) + "\n" + json.dumps(good) + "\n")
        with pytest.raises(NasqError) as err:
            read_journal(path, task)
        assert "\n" not in str(err.value) and str(path) in str(err.value) and "line 1" in str(err.value)


def test_bounded_scheduler_keeps_the_bound_and_the_order():
    """run_bounded with a fake backend of our own that finishes pending work in a scrambled order."""
    from nasq.cluster.tasks import chunk_size, run_bounded

    rng = np.random.default_rng(0)
    for n_parts, bound in ((0, 3), (1, 3), (7, 1), (50, 4), (200, 16)):
        in_flight: set[int] = set()
        seen_max, results = 0, [None] * n_parts

        def submit(i, in_flight=in_flight):
            in_flight.add(i)
            return i

        def wait(pending, in_flight=in_flight):
            nonlocal seen_max
            seen_max = max(seen_max, len(in_flight))
            assert set(pending) == in_flight
            ready = list(rng.permutation(pending)[: int(rng.integers(1, len(pending) + 1))])
            in_flight.difference_update(ready)
            return ready

        def done(i, handle, results=results):
            assert results[i] is None and handle == i
            results[i] = i * i

        peak = run_bounded(n_parts, submit, wait, done, bound)
        assert seen_max <= bound and peak == min(bound, n_parts) == (seen_max if n_parts else 0)
        assert results == [i * i for i in range(n_parts)]
    assert chunk_size(10, 2) == 1 and chunk_size(10_000, 2) == 16 and chunk_size(100, 2) == 7
    assert chunk_size(1, 8) == 1 and chunk_size(200, 2) == 13


def _tiny_task():
    def task(payload, spec_dicts):
        return [float(sum(b["kernel"] for st in d["stages"] for b in st)) for d in spec_dicts]
    return task


def test_fanout_many_tiny_evaluations_in_order_with_one_put(ray, space):
    """Real embedded Ray: 300 tiny evaluations in two batches through one Fanout: results in input
    order, never more than max_in_flight tasks pending, the payload put once and fetched once per
    worker process."""
    from nasq.cluster.tasks import Fanout
    from nasq.supernet.evaluate import EvalPayload

    specs = space.sample_unique(np.random.default_rng(1), 300, set())
    payload = EvalPayload({}, {"w": np.arange(1000.0)}, np.zeros(1), np.zeros(1), np.zeros(1), 1)
    fanout = Fanout(ray, payload, max_in_flight=3, task=_tiny_task())
    seen = []
    out = fanout(specs[:200], progress=lambda k, n: seen.append((k, n))) + fanout(specs[200:])
    expected = [float(sum(b.kernel for st in s.stages for b in st)) for s in specs]
    assert out == expected
    st = fanout.stats
    assert st.evaluations == 300 and st.puts == 1 and st.peak_in_flight <= 3
    assert sum(st.tasks.values()) == math.ceil(200 / 13) + math.ceil(100 / 7)  # chunk_size(200|100, 2 CPUs)
    assert set(st.pid_fetches.values()) == {1}  # each worker process fetched the payload once
    assert seen[-1] == (200, 200) and [k for k, _ in seen] == sorted(k for k, _ in seen)
    assert 0.0 <= st.ray_share() <= 1.0 and "payload put 1x" in st.summary()[0]


def test_a_job_evaluates_on_its_own_cluster(monkeypatch, capsys):
    from nasq.cluster.tasks import ADDRESS_ENV, RAY_JOB_ENV, job_address

    monkeypatch.delenv(ADDRESS_ENV, raising=False)
    monkeypatch.delenv(RAY_JOB_ENV, raising=False)
    assert job_address("local") == "local" and capsys.readouterr().err == ""  # not in a job: as written
    monkeypatch.setenv(RAY_JOB_ENV, "{}")  # what Ray sets for a job's driver
    assert job_address("local") == "auto" and job_address("127.0.0.1:6379") == "127.0.0.1:6379"
    assert job_address("none") == "none"
    monkeypatch.setenv(ADDRESS_ENV, "auto")  # what `nasq submit` sets: wins whatever the file says
    assert [job_address(a) for a in ("local", "none", "10.0.0.1:6379")] == ["auto"] * 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all("-> 'auto'" in line and "cluster this job runs on" in line for line in err)


def test_submit_warns_when_tracking_stays_on_the_head(tmp_path):
    import yaml

    from nasq.cluster.jobs import tracking_warning

    base = {"name": "w", "data": {"name": "digits", "val_size": 200}, "space": "mbconv_small",
            "hardware": ["cpu_roofline"], "search": {"max_true_evals": 6}}
    for uri, warns in ((None, True), ("sqlite:///tmp/x.db", True), ("mlruns", True), ("file:///tmp/m", True),
                       ("http://127.0.0.1:5000", False), ("https://mlflow.example.org", False)):
        path = tmp_path / "e.yaml"
        path.write_text(yaml.safe_dump({**base, "tracking": {"uri": uri}}))
        note = tracking_warning(path)
        assert (note is not None) == warns, (uri, note)
        if note:
            assert "\n" not in note and "head node" in note and str(path) in note
