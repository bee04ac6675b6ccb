"""Uniform-precision baselines on a tiny pipeline run (in-process evaluations, real MLflow on
sqlite): they are truly evaluated through the run's ledger, written to baselines.csv, drawn on the
front plot, printed under the end-of-run table and logged on the parent run."""

from __future__ import annotations

import csv

import pytest
import yaml

from nasq.experiment import load_experiment
from nasq.stages.pipeline import run_pipeline

pytestmark = [pytest.mark.slow]

TINY = {
    "name": "base",
    "data": {"name": "digits", "val_size": 300},
    "space": "mbconv_small",
    "train": {"epochs": 1, "batch_size": 64, "seed": 0, "threads": 1},
    "evaluate": {"num_subnets": 8, "calib_images": 64, "val_images": 100, "batch_size": 64},
    "search": {"population": 8, "generations": 2, "max_true_evals": 5, "seed": 0},
    "constraints": [{"metric": "size_mb", "max": 0.3}],
    "ray": {"address": "none"},
    "export": {"enabled": False},
}


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("baselines")
    p = tmp / "base.yaml"
    p.write_text(yaml.safe_dump({**TINY, "workdir": str(tmp / "run-{name}")}))
    return run_pipeline(load_experiment(p))


def test_baselines_are_evaluated_and_shown(result):
    from mlflow.tracking import MlflowClient
    from rich.console import Console

    from nasq.cli.report import print_summary
    from nasq.stages.baselines import uniform_formats

    rows = result.baselines
    formats = uniform_formats(result.experiment)
    assert {"int8", "int4"} <= set(formats) and {r["format"] for r in rows} == set(formats)
    assert sum(r["of"] == "largest" for r in rows) == len(formats)
    assert len(rows) == len(formats) * (1 + len(result.front.points))
    with open(result.workdir / "baselines.csv", newline="") as f:
        saved = list(csv.DictReader(f))
    assert [r["key"] for r in saved] == [r["key"] for r in rows]
    # truly evaluated: in the run's ledger, with the values the rows carry
    ledgers = list((result.workdir / "cache").rglob("ledger.csv"))
    text = "".join(p.read_text() for p in ledgers)
    assert all(r["key"] in text for r in rows) and "baseline" in text
    assert all(0 <= r["top1"] <= 100 for r in rows)
    largest = next(r for r in rows if r["of"] == "largest" and r["format"] == "int4")
    assert largest["key"].count(".int4.int4") >= 1 and ".int8." not in largest["key"]
    console = Console(record=True, width=200)
    print_summary(result, console)
    out = console.export_text()
    assert "Uniform-precision baselines" in out and "mixed precision vs uniform INT8 of the largest subnet" in out
    p0 = result.front.points[0].measured  # the front's top-1 is printed with its 95 % interval
    assert "95 % interval" in out and f"[{p0['top1_ci_low']:.1f}, {p0['top1_ci_high']:.1f}]" in out
    client = MlflowClient(result.tracking.uri)
    metrics = client.get_run(result.tracking.run_id).data.metrics
    assert "baseline.largest.int8.top1" in metrics
    arts = [a.path for a in client.list_artifacts(result.tracking.run_id)]
    assert "baselines.csv" in arts


def test_baseline_markers_are_drawn(result, tmp_path, monkeypatch):
    import nasq.tracking.plots as plots

    drawn = []
    original = plots._draw_baselines
    monkeypatch.setattr(plots, "_draw_baselines", lambda ax, rows, x, y: drawn.append((x, y, len(rows))) or original(ax, rows, x, y))
    plots.pareto_png(result.front, tmp_path / "p.png", baselines=result.baselines)
    assert drawn and all(n == len(result.baselines) for _, _, n in drawn)
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert plots.read_baselines(result.workdir / "baselines.csv") == result.baselines
