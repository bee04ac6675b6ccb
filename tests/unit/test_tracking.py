"""nasq.tracking and nasq.tracking.plots against a real local sqlite MLflow store under tmp_path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nasq.search.pareto import Front, FrontPoint
from nasq.space import SearchSpace

REPO = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_front(n: int = 6, seed: int = 0) -> Front:
    space = SearchSpace.from_yaml(REPO / "search_spaces" / "mbconv_small.yaml")
    specs = space.sample(np.random.default_rng(seed), n)
    points = []
    for i, spec in enumerate(specs):
        predicted = {"top1": 0.80 - 0.02 * i, "latency_ms": 3.0 - 0.3 * i, "size_mb": 1.5 - 0.1 * i}
        measured = {"top1": 0.79 - 0.02 * i, "latency_ms": 3.1 - 0.3 * i, "size_mb": 1.5 - 0.1 * i}
        points.append(FrontPoint(spec, [int(g) for g in space.encode(spec)], predicted, measured))
    lineage = {"space_hash": space.hash[:12], "profile": "cpu_roofline"}
    return Front(("top1", "latency_ms", "size_mb"), points, lineage)


@pytest.fixture()
def store(tmp_path: Path) -> dict:
    from nasq.tracking.client import default_uri

    return {"uri": default_uri(tmp_path), "artifact_root": tmp_path / "artifacts"}


def run_search(store: dict, front: Front, **kwargs):
    from nasq.tracking.client import log_search

    args = dict(uri=store["uri"], experiment="nasq-test", run_name="search-1",
                params={"search": {"population": 16, "seed": 0}, "space": "mbconv_small",
                        "objectives": ["top1", "latency_ms"], "long": "x" * 900},
                metrics={"hypervolume": 0.42, "true_evals": 12.0},
                tags={"nasq.experiment": "demo"}, artifact_root=store["artifact_root"])
    args.update(kwargs)
    return log_search(front, **args)


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def children_of(c, experiment_id: str, parent_id: str) -> list:
    return c.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
                         max_results=1000)


def test_default_uri_and_ui_command(tmp_path: Path) -> None:
    from nasq.tracking.client import default_uri, ui_command

    uri = default_uri(tmp_path / "sub" / "..")
    assert uri == "sqlite:///" + str((tmp_path / "mlflow.db").resolve())
    assert uri.startswith("sqlite:////")
    assert ui_command(uri) == f"mlflow ui --backend-store-uri {uri}"
    assert ui_command("http://127.0.0.1:5000") == "open http://127.0.0.1:5000"


def test_flatten_params_dots_stringifies_and_truncates() -> None:
    from nasq.tracking.names import flatten_params

    flat = flatten_params({"a": {"b": {"c": 1}, "d": None}, "e": [1, 2], "f": "y" * 600, "g h?": 1.5})
    assert flat == {"a.b.c": "1", "a.d": "None", "e": "[1, 2]", "f": "y" * 500, "g h_": "1.5"}


def test_log_search_parent_children_and_artifacts(store: dict, tmp_path: Path) -> None:
    from nasq.search.uncertainty import annotate_front

    front = annotate_front(make_front(), n_images=2000, calib_std=0.3)  # top1_ci_low/high, as the search stage adds
    extra = tmp_path / "notes.txt"
    extra.write_text("hello")
    params = {"search": {"population": 16, "seed": 0}, "space": "mbconv_small", "long": "x" * 900,
              "many": {f"p{i}": i for i in range(230)}}  # > 100: needs several log_batch calls
    res = run_search(store, front, params=params, extra_files=[extra], artifacts_dir=tmp_path / "local")
    c = client(store["uri"])

    exp = c.get_experiment(res.experiment_id)
    assert exp.name == "nasq-test"
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert exp.artifact_location == store["artifact_root"].resolve().as_uri()

    parent = c.get_run(res.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == "search-1"
    assert parent.data.params["search.population"] == "16"
    assert parent.data.params["search.seed"] == "0"
    assert parent.data.params["space"] == "mbconv_small"
    assert len(parent.data.params["long"]) == 500
    assert len(parent.data.params) == 234 and parent.data.params["many.p229"] == "229"
    assert parent.data.metrics == {"hypervolume": 0.42, "true_evals": 12.0}
    assert parent.data.tags["nasq.kind"] == "search"
    assert parent.data.tags["nasq.experiment"] == "demo"
    assert parent.data.tags["nasq.lineage.profile"] == "cpu_roofline"
    assert parent.data.tags["nasq.lineage.space_hash"] == front.lineage["space_hash"]

    kids = children_of(c, res.experiment_id, res.run_id)
    assert len(kids) == len(front.points) == len(res.child_run_ids)
    assert {k.info.run_id for k in kids} == set(res.child_run_ids)
    for kid in kids:
        i = int(kid.data.tags["nasq.point"])
        spec = front.points[i].spec
        assert kid.info.status == "FINISHED"
        assert kid.info.run_name == f"point-{i}"
        assert kid.data.tags["nasq.kind"] == "pareto_point"
        assert kid.data.tags["nasq.key"] == spec.key()
        for s, stage in enumerate(spec.stages):
            assert kid.data.params[f"s{s}.depth"] == str(len(stage))
            for j, layer in enumerate(stage):
                assert kid.data.params[f"s{s}.l{j}.kernel"] == str(layer.kernel)
                assert kid.data.params[f"s{s}.l{j}.expand"] == str(layer.expand)
                assert kid.data.params[f"s{s}.l{j}.w_format"] == layer.w_format
                assert kid.data.params[f"s{s}.l{j}.a_format"] == layer.a_format
        for name in ("top1", "latency_ms", "size_mb"):
            assert kid.data.metrics[f"{name}_pred"] == pytest.approx(front.points[i].predicted[name])
            assert kid.data.metrics[name] == pytest.approx(front.points[i].measured[name])
        m = kid.data.metrics
        assert m["top1_ci_low"] < m["top1"] < m["top1_ci_high"]
        assert m["top1_ci_low"] == pytest.approx(front.points[i].measured["top1_ci_low"])

    names = {a.path for a in c.list_artifacts(res.run_id)}
    assert {"front.csv", "front.json", "pareto.png", "notes.txt"} <= names
    got = Path(c.download_artifacts(res.run_id, "front.json", str(tmp_path / "dl")))
    back = Front.from_dict(json.loads(got.read_text()))
    assert [p.spec.key() for p in back.points] == [p.spec.key() for p in front.points]
    assert (tmp_path / "local" / "pareto.png").read_bytes().startswith(PNG_SIGNATURE)
    assert res.ui_command == f"mlflow ui --backend-store-uri {store['uri']}"


def test_second_search_reuses_experiment(store: dict) -> None:
    first = run_search(store, make_front(2, seed=1))
    second = run_search(store, make_front(3, seed=2), run_name="search-2")
    assert first.experiment_id == second.experiment_id
    assert first.run_id != second.run_id
    c = client(store["uri"])
    assert len(children_of(c, second.experiment_id, second.run_id)) == 3


def test_failure_during_child_logging_marks_runs_failed(store: dict, monkeypatch) -> None:
    import nasq.tracking.client as tracking

    real = tracking.point_params
    calls = []

    def boom(spec):
        calls.append(spec)
        if len(calls) == 3:
            raise RuntimeError("injected failure")
        return real(spec)

    monkeypatch.setattr(tracking, "point_params", boom)
    with pytest.raises(RuntimeError, match="injected failure"):
        run_search(store, make_front())
    c = client(store["uri"])
    exp = c.get_experiment_by_name("nasq-test")
    runs = c.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("nasq.kind") == "search"]
    kids = [r for r in runs if r.data.tags.get("nasq.kind") == "pareto_point"]
    assert len(parents) == 1 and parents[0].info.status == "FAILED"
    assert len(kids) == 3
    assert [k.info.status for k in kids].count("FINISHED") == 2
    assert all(k.info.status in ("FINISHED", "FAILED") for k in kids)


def test_import_does_not_import_mlflow() -> None:
    code = "import sys, nasq.tracking, nasq.tracking.plots; print('mlflow' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         timeout=120, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_pareto_png_writes_png(tmp_path: Path) -> None:
    from nasq.tracking.plots import pareto_png

    front = make_front()
    others = np.array([[0.5, 4.0, 2.0], [0.6, 3.5, 1.8], [np.nan, 1.0, 1.0]])
    out = pareto_png(front, tmp_path / "figs" / "pareto.png", title="t", others=others, modelled=True)
    data = out.read_bytes()
    assert out == tmp_path / "figs" / "pareto.png"
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    assert [p.name for p in out.parent.iterdir()] == ["pareto.png"]  # no temp file left behind


def test_front_plots_draw_top1_intervals(tmp_path: Path) -> None:
    from nasq.search.uncertainty import annotate_front
    from nasq.tracking.plots import pareto_html, pareto_png, top1_error_bars

    assert top1_error_bars(make_front(3)) is None  # an older front without intervals: no bars
    front = annotate_front(make_front(3), n_images=500)
    bars = top1_error_bars(front)
    assert bars.shape == (2, 3) and (bars > 0).all()
    assert bars[0, 0] == pytest.approx(front.points[0].measured["top1"] - front.points[0].measured["top1_ci_low"])
    assert pareto_png(front, tmp_path / "p.png").read_bytes().startswith(PNG_SIGNATURE)
    html = pareto_html(front, tmp_path / "p.html").read_text()
    assert '"arrayminus"' in html and "95 % interval" in html


def test_pareto_png_empty_front_and_bad_others(tmp_path: Path) -> None:
    from nasq.tracking.plots import pareto_png

    empty = Front(("top1", "latency_ms"), [])
    assert pareto_png(empty, tmp_path / "e.png").read_bytes().startswith(PNG_SIGNATURE)
    with pytest.raises(ValueError, match="others"):
        pareto_png(make_front(2), tmp_path / "bad.png", others=np.zeros((3, 2)))


# ---------------------------------------------------------------- issue 7: lineage, history, views
def test_point_params_come_from_spec_to_dict() -> None:
    from nasq.tracking.names import point_params

    spec = make_front(1).points[0].spec
    params = point_params(spec)
    layers = [(s, j, layer) for s, stage in enumerate(spec.to_dict()["stages"]) for j, layer in enumerate(stage)]
    assert len(params) == len(spec.stages) + sum(len(layer) for _, _, layer in layers)
    for s, j, layer in layers:
        for name, value in layer.items():
            assert params[f"s{s}.l{j}.{name}"] == str(value)


def test_history_components_html_and_saved_view(store: dict, tmp_path: Path) -> None:
    from nasq.tracking import view as mlflow_view
    from nasq.tracking.client import Component

    front = make_front(4)
    weights = tmp_path / "supernet.json"
    weights.write_text("{}")
    history = [{"iteration": 0, "true_evals": 10, "hypervolume": 0.1, "predictor_tau": 0.5},
               {"iteration": 1, "true_evals": 18, "hypervolume": 0.3, "predictor_tau": 0.6},
               {"iteration": 2, "true_evals": 24, "hypervolume": 0.35, "predictor_tau": float("nan")}]
    res = run_search(store, front, history=history, artifacts_dir=tmp_path / "art",
                     components=[Component("supernet", {"epochs": 1}, {"final_loss": 0.5}, [weights]),
                                 Component("predictor", {"kind": "gbdt"}, {"kendall_tau": 0.7})])
    c = client(store["uri"])

    hv = c.get_metric_history(res.run_id, "search.hypervolume")
    assert [(m.step, m.value) for m in sorted(hv, key=lambda m: m.step)] == [(0, 0.1), (1, 0.3), (2, 0.35)]
    tau = c.get_metric_history(res.run_id, "search.predictor_tau")
    assert sorted(m.step for m in tau) == [0, 1]  # NaN rows are skipped, not logged as NaN
    assert [m.step for m in c.get_metric_history(res.run_id, "search.true_evals")] == [0, 1, 2]

    parent = c.get_run(res.run_id)
    runs = c.search_runs([res.experiment_id], f"tags.mlflow.parentRunId = '{res.run_id}'", max_results=100)
    by_kind = {}
    for r in runs:
        by_kind.setdefault(r.data.tags["nasq.kind"], []).append(r)
    assert len(by_kind["pareto_point"]) == 4 and len(by_kind["supernet"]) == 1 and len(by_kind["predictor"]) == 1
    sup, pred = by_kind["supernet"][0], by_kind["predictor"][0]
    assert parent.data.tags["nasq.supernet_run_id"] == sup.info.run_id == res.lineage_run_ids["nasq.supernet_run_id"]
    assert parent.data.tags["nasq.predictor_run_id"] == pred.info.run_id
    assert sup.data.metrics == {"final_loss": 0.5} and sup.info.status == "FINISHED"
    assert {a.path for a in c.list_artifacts(sup.info.run_id)} == {"supernet.json"}
    for point in by_kind["pareto_point"]:
        assert point.data.tags["nasq.supernet_run_id"] == sup.info.run_id
        assert point.data.tags["nasq.formats"] == front.points[int(point.data.tags["nasq.point"])].formats_summary()

    html = (tmp_path / "art" / "pareto.html").read_text()
    assert "pareto.html" in {a.path for a in c.list_artifacts(res.run_id)}
    assert "<script src=" not in html and len(html) > 1_000_000  # plotly.js embedded, not linked
    # hover text carries each point's formats (plotly escapes "/" in its JSON)
    assert front.points[0].formats_summary().replace("/", "\\u002f") in html

    key = mlflow_view.view_key(res.run_id)
    tag = c.get_experiment(res.experiment_id).tags[mlflow_view.TAG_PREFIX + key]
    env = json.loads(tag)
    assert set(env) == {"name", "createdAt", "updatedAt", "state"} and isinstance(env["createdAt"], int)
    assert env["state"].startswith("deflate;")
    state = mlflow_view.decode_state(env["state"])
    cards = state["compareRunCharts"]
    scatters = {(c_["xaxis"]["key"], c_["yaxis"]["key"]) for c_ in cards if c_["type"] == "SCATTER"}
    assert scatters == {("latency_ms", "top1"), ("size_mb", "top1"), ("size_mb", "latency_ms")}
    parallel = [c_ for c_ in cards if c_["type"] == "PARALLEL"]
    assert len(parallel) == 1 and parallel[0]["selectedMetrics"] == ["top1", "latency_ms", "size_mb"]
    assert res.run_id in state["searchFilter"]
    assert res.view_url == (f"http://127.0.0.1:5000/#/experiments/{res.experiment_id}/runs?"
                            f"viewStateShareKey={key}&compareRunsMode=CHART")
    # the view's filter selects exactly the front's point runs
    matched = c.search_runs([res.experiment_id], state["searchFilter"], max_results=100)
    assert {r.info.run_id for r in matched} == set(res.child_run_ids)


def test_point_metrics_give_every_objective() -> None:
    from nasq.search.pareto import FrontPoint
    from nasq.tracking.names import point_metrics

    p = make_front(1).points[0]
    only_top1 = FrontPoint(p.spec, p.genome, {"top1": 80.0, "latency_ms": 0.5}, {"top1": 79.0})
    assert point_metrics(only_top1) == {"top1": 79.0, "top1_pred": 80.0, "latency_ms": 0.5, "latency_ms_pred": 0.5}


def test_view_state_round_trip() -> None:
    from nasq.tracking import view as mlflow_view

    state = mlflow_view.page_state("abc", ["top1", "latency_ms"], ["s0.depth"])
    assert mlflow_view.decode_state(mlflow_view.encode_state(state)) == state
    env = json.loads(mlflow_view.envelope("v", state, now_ms=5))
    assert env["createdAt"] == env["updatedAt"] == 5
    assert len([c for c in state["compareRunCharts"] if c["type"] == "SCATTER"]) == 1


def test_view_charts_the_interval_when_points_carry_one(store: dict) -> None:
    """Points with a 95 % interval: each top1 chart gets a lower-bound twin, and both bounds are
    in the table and the parallel chart; a front without one keeps the plain view (above)."""
    from mlflow.tracking import MlflowClient

    from nasq.search.pareto import Front, FrontPoint
    from nasq.tracking import view as mlflow_view

    front = make_front(3)
    points = [FrontPoint(p.spec, p.genome, p.predicted,
                         {**p.measured, "top1_ci_low": p.measured["top1"] - 1, "top1_ci_high": p.measured["top1"] + 1})
              for p in front.points]
    res = run_search(store, Front(front.objectives, points, front.lineage))
    c = MlflowClient(store["uri"])
    tag = c.get_experiment(res.experiment_id).tags[mlflow_view.TAG_PREFIX + mlflow_view.view_key(res.run_id)]
    state = mlflow_view.decode_state(json.loads(tag)["state"])
    cards = state["compareRunCharts"]
    scatters = {(c_["xaxis"]["key"], c_["yaxis"]["key"]) for c_ in cards if c_["type"] == "SCATTER"}
    assert scatters == {("latency_ms", "top1"), ("size_mb", "top1"), ("size_mb", "latency_ms"),
                        ("latency_ms", "top1_ci_low"), ("size_mb", "top1_ci_low")}
    parallel = [c_ for c_ in cards if c_["type"] == "PARALLEL"][0]
    assert parallel["selectedMetrics"] == ["top1", "latency_ms", "size_mb", "top1_ci_low", "top1_ci_high"]
    assert "metrics.`top1_ci_high`" in state["selectedColumns"]
    point = c.get_run(res.child_run_ids[0])
    assert point.data.metrics["top1_ci_low"] < point.data.metrics["top1"] < point.data.metrics["top1_ci_high"]


def test_unreachable_server_is_one_line() -> None:
    from nasq.errors import NasqError
    from nasq.tracking.client import check_reachable

    with pytest.raises(NasqError, match="unreachable") as info:
        check_reachable("http://127.0.0.1:9", timeout_s=2)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- run lifecycle (nasq.tracking.lifecycle)
def test_tracked_run_stages_results_and_failure(store: dict) -> None:
    """A finished run takes the results; a failed one ends itself, its stage and every nested run
    still RUNNING FAILED, with the one-line reason as ``nasq.error``."""
    from nasq.errors import NasqError
    from nasq.tracking.lifecycle import ERROR_TAG, TrackingLost, tracked_run

    with tracked_run(store["uri"], "life", "ok", tags={}, params={"p": 1}, artifact_root=store["artifact_root"]) as ok:
        with ok.stage("track"):
            res = ok.log_results(make_front(3), metrics={"hypervolume": 0.5}, tags={"nasq.experiment": "x"})
        assert ok.status == "RUNNING"
    with pytest.raises(NasqError, match="injected"):
        with tracked_run(store["uri"], "life", "r1", tags={"nasq.space": "mbconv_small"},
                         params={"train": {"epochs": 1}}) as run:
            with run.stage("data"):
                pass
            # a nested run left RUNNING, e.g. one whose creation a signal cut short
            orphan = run.client.create_run(run.experiment_id, run_name="orphan",
                                           tags={"mlflow.parentRunId": run.run_id})
            with run.stage("train"):
                raise NasqError("train.lr: injected\n   failure")
    with pytest.raises(NasqError, match="failed while logging a changed param") as refused:
        with tracked_run(store["uri"], "life", "r2", tags={}, params={"p": 1}) as bad:
            with bad.calls("logging a changed param"):  # mlflow refuses to change a param
                bad.client.log_param(bad.run_id, "p", "2")
    assert not isinstance(refused.value, TrackingLost)  # the store answers: not a lost server

    c = client(store["uri"])
    parent = c.get_run(ok.run_id)
    assert res.run_id == ok.run_id and parent.info.status == "FINISHED" and ERROR_TAG not in parent.data.tags
    assert parent.data.metrics == {"hypervolume": 0.5} and parent.data.tags["nasq.experiment"] == "x"
    assert parent.data.tags["nasq.lineage.profile"] == "cpu_roofline" and parent.data.params == {"p": "1"}
    kids = children_of(c, ok.experiment_id, ok.run_id)
    assert sorted(k.data.tags["nasq.kind"] for k in kids) == ["pareto_point"] * 3 + ["stage"]
    assert all(k.info.status == "FINISHED" for k in kids)

    runs = {r.info.run_name: r for r in children_of(c, run.experiment_id, run.run_id)}
    assert set(runs) == {"stage-data", "stage-train", "orphan"}
    parent = c.get_run(run.run_id)
    assert parent.info.status == "FAILED" and parent.data.tags[ERROR_TAG] == "train.lr: injected failure"
    assert parent.data.tags["nasq.kind"] == "search" and parent.data.params == {"train.epochs": "1"}
    for name in ("stage-train", "orphan"):
        assert runs[name].info.status == "FAILED" and runs[name].data.tags[ERROR_TAG] == "train.lr: injected failure"
    assert runs["orphan"].info.run_id == orphan.info.run_id
    done = runs["stage-data"]
    assert done.info.status == "FINISHED" and "seconds" in done.data.metrics and ERROR_TAG not in done.data.tags
    assert done.data.tags["nasq.kind"] == "stage" and done.data.tags["nasq.stage"] == "data"
    refused_run = c.get_run(bad.run_id)
    assert refused_run.info.status == "FAILED" and "logging a changed param" in refused_run.data.tags[ERROR_TAG]


def test_http_limits_and_one_line(monkeypatch) -> None:
    import os

    from mlflow.environment_variables import (
        MLFLOW_HTTP_REQUEST_MAX_RETRIES,
        MLFLOW_HTTP_REQUEST_TIMEOUT,
    )

    from nasq.errors import NasqError
    from nasq.tracking.lifecycle import http_limits, one_line

    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")  # set by the user: kept
    with http_limits():
        assert MLFLOW_HTTP_REQUEST_MAX_RETRIES.get() == 2 and MLFLOW_HTTP_REQUEST_TIMEOUT.get() == 7
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ and os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"
    assert one_line(NasqError("a.yaml: x:\n  bad")) == "a.yaml: x: bad"
    assert one_line(ValueError("no")) == "ValueError: no"
    assert one_line(KeyboardInterrupt()) == "KeyboardInterrupt"
    assert len(one_line(RuntimeError("x" * 2000))) == 500


def test_server_down_at_start_waits_a_bounded_time(tmp_path: Path) -> None:
    import socket
    import time

    from nasq.errors import NasqError
    from nasq.tracking.lifecycle import tracked_run, wait_until_reachable

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{s.getsockname()[1]}"  # closed once the block ends
    wait_until_reachable("sqlite:///" + str(tmp_path / "x.db"), 60)  # a local store: no wait
    t0 = time.monotonic()
    with pytest.raises(NasqError) as info:
        with tracked_run(uri, "e", "r", tags={}, params={}, wait_s=1):
            pytest.fail("the block ran without a server")
    assert 1 <= time.monotonic() - t0 < 5
    assert str(info.value).startswith(f"MLflow tracking server {uri} did not answer within 1 s (")
    assert "\n" not in str(info.value)
