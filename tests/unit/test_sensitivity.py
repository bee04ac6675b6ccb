"""Per-layer sensitivity: Hutchinson trace against the exact one, Fisher, measured one-layer drops on
a briefly trained supernet (digits), the artifact round trip, the heat map and MLflow table on a real
local store, and ``nasq sensitivity`` (in process) on a tiny trained run and its exit 2 on an untrained one."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from nasq.errors import ConfigError, LineageError
from nasq.supernet.sensitivity import hutchinson_traces, measure, quant_error, reference_spec

TINY = {"name": "unit", "data": {"source": "digits", "val_size": 200}, "space": "mbconv_small",
        "hardware": ["cpu_roofline"], "evaluate": {"num_subnets": 8, "calib_images": 64, "val_images": 100,
                                                   "batch_size": 64}, "search": {"max_true_evals": 5}}


def test_hutchinson_matches_the_exact_trace_of_a_quadratic():
    rng = np.random.default_rng(0)
    a1, a2 = rng.normal(size=(6, 6)), rng.normal(size=(4, 4))
    A1, A2 = torch.tensor(a1 @ a1.T + 6 * np.eye(6)), torch.tensor(a2 @ a2.T + 4 * np.eye(4))
    B = torch.tensor(rng.normal(size=(6, 4)))
    w1, w2 = torch.randn(6, dtype=torch.float64, requires_grad=True), torch.randn(4, dtype=torch.float64,
                                                                                  requires_grad=True)

    def loss():  # the cross term couples the groups but is off their diagonal blocks
        return 0.5 * w1 @ A1 @ w1 + 0.5 * w2 @ A2 @ w2 + w1 @ B @ w2

    gen = torch.Generator().manual_seed(0)
    traces, fisher = hutchinson_traces(loss, [[w1], [w2]], 1500, gen)
    assert traces == pytest.approx([float(A1.trace()), float(A2.trace())], rel=0.05)
    g1 = (A1 @ w1 + B @ w2).detach()
    assert fisher[0] == pytest.approx(float(g1 @ g1), rel=1e-9) and (fisher >= 0).all()
    again, _ = hutchinson_traces(loss, [[w1], [w2]], 1500, torch.Generator().manual_seed(0))
    assert np.array_equal(traces, again)  # seeded


@pytest.fixture(scope="module")
def trained(space):
    """The largest subnet of mbconv_small briefly trained on digits (fp32), as a supernet; one
    torch thread (as evaluations use), restored afterwards."""
    from nasq import data as data_mod
    from nasq.specs import DataConfig
    from nasq.supernet.network import Supernet

    splits = data_mod.load(DataConfig(source="digits", val_size=200), "test")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = Supernet(space)
    net.set_active(reference_spec(space))
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    gen = np.random.default_rng(0)
    for _ in range(40):
        idx = gen.choice(len(splits.train_y), 32, replace=False)
        loss = F.cross_entropy(net(torch.from_numpy(splits.train_x[idx])),
                               torch.from_numpy(splits.train_y[idx].astype(np.int64)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    yield net, splits
    torch.set_num_threads(threads)


def test_measure_fisher_proxy_and_one_layer_drops(space, trained):
    net, splits = trained
    calib = list(torch.from_numpy(splits.train_x[:128]).split(64))
    batch = [(torch.from_numpy(splits.train_x[:64]), torch.from_numpy(splits.train_y[:64].astype(np.int64)))]
    result = measure(net, space, ("fp32", "int2"), calib, batch, splits.val_x, splits.val_y, seed=0, probes=2)
    assert result.base_top1 > 50  # it learned something, so int2 has something to lose
    assert [s.name for s in result.layers] == ["stage0.layer0", "stage0.layer1", "stage1.layer0", "stage1.layer1",
                                               "stage1.layer2", "stage2.layer0", "stage2.layer1", "stage2.layer2"]
    assert all(s.fisher > 0 and s.params > 0 for s in result.layers)
    assert all(s.top1_drop["fp32"] == 0.0 and s.proxy_delta["fp32"] == 0.0 for s in result.layers)
    int2 = np.array([s.top1_drop["int2"] for s in result.layers])
    # int2 costs accuracy on average; one layer alone may read a gain within the noise of 200
    # images (a top-1's binomial std there is ~2.8 points; a layer read -3.5 on an AVX2 host, whose
    # float kernels train this net slightly differently), so the bound is about two of them
    assert int2.mean() > 0 and (int2 > -6.0).all()
    assert all(s.proxy_delta["int2"] != 0 for s in result.layers)
    w = [torch.randn(3, 8, generator=torch.Generator().manual_seed(0))]
    assert quant_error(w, "fp32") == 0.0 and quant_error(w, "int2") > quant_error(w, "int8") >= 0


def test_artifact_round_trip_reuse_and_lineage(space, trained, tmp_path):
    from nasq.space import SearchSpace
    from nasq.stages import sensitivity as stage
    from nasq.supernet import checkpoint

    net, splits = trained
    with pytest.raises(ConfigError, match="not trained"):
        stage.ensure(tmp_path, space, net, splits, stage.Settings())
    checkpoint.save(net, tmp_path, {"space": space.name, "space_hash": space.hash})
    settings = stage.Settings(formats=("fp32", "int4"), batches=1, batch_size=32, probes=1, val_images=100,
                              calib_images=64)
    record, reused = stage.ensure(tmp_path, space, net, splits, settings, {"space_hash": space.hash[:12]})
    assert not reused and len(record["rows"]) == 16
    again, reused = stage.ensure(tmp_path, space, net, splits, settings)
    assert reused and again == stage.load(tmp_path, space)
    rows = list(csv.DictReader((tmp_path / stage.SENSITIVITY_CSV).open()))
    assert [r["layer"] for r in rows[:2]] == ["stage0.layer0", "stage0.layer0"]
    assert set(rows[0]) == {"layer", "format", "trace", "fisher", "proxy_delta", "top1_drop"}
    table = stage.loss_table(record)
    assert stage.saved_table(space, tmp_path) == table and stage.saved_table(space, tmp_path / "x") is None
    assert set(table) == {r["layer"] for r in rows} and all(v >= 0 for t in table.values() for v in t.values())
    other = SearchSpace.from_dict({**space.config.model_dump(mode="json"), "name": "other"}, "other.yaml")
    with pytest.raises(LineageError, match="made on space 'mbconv_small'"):
        stage.load(tmp_path, other)
    with pytest.raises(ConfigError, match="--formats.*'int9'"):
        stage.menu_formats(space, ("int9",))


ROWS = [{"layer": f"stage0.layer{i}", "format": f, "trace": 1.0, "fisher": 0.5, "proxy_delta": 0.1 * i,
         "top1_drop": float(i) if f == "int4" else 0.0} for i in range(3) for f in ("fp32", "int4")]


def test_heatmap_matrix_and_png(tmp_path):
    from nasq.tracking.sensitivity import heatmap_png, matrix

    layers, formats, m = matrix(ROWS, "top1_drop")
    assert layers == ["stage0.layer0", "stage0.layer1", "stage0.layer2"] and formats == ["fp32", "int4"]
    assert m.tolist() == [[0.0, 0.0], [0.0, 1.0], [0.0, 2.0]]
    png = heatmap_png(ROWS, tmp_path / "h.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(tmp_path.glob(".*tmp"))


@pytest.mark.slow  # an sqlite MLflow store: ~5-20 s of migrations on a loaded 2-core machine
def test_table_and_heatmap_logged_to_a_real_store(tmp_path):
    from mlflow.tracking import MlflowClient

    from nasq.tracking.client import default_uri, get_or_create_experiment
    from nasq.tracking.sensitivity import TABLE_JSON, log_sensitivity

    rows = ROWS
    uri = default_uri(tmp_path)
    client = MlflowClient(tracking_uri=uri)
    exp_id = get_or_create_experiment(client, "nasq-test", tmp_path / "artifacts")
    run_id = client.create_run(exp_id).info.run_id
    extra = tmp_path / "sensitivity.csv"
    extra.write_text("layer,format\n")
    logged = log_sensitivity(uri, run_id, rows, [extra], tmp_path)
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {TABLE_JSON, "sensitivity.csv", "sensitivity_heatmap.png"} <= names and set(logged) <= names


def test_cli_on_a_tiny_trained_run_and_exit_2_untrained(space, trained, tmp_path):
    from typer.testing import CliRunner

    from nasq.cli import app
    from nasq.experiment import load_experiment
    from nasq.files import atomic_write_json
    from nasq.search.pareto import Front, FrontPoint
    from nasq.stages.track import run_record
    from nasq.supernet import checkpoint

    exp_file = tmp_path / "unit.yaml"
    exp_file.write_text(yaml.safe_dump(TINY))
    exp = load_experiment(exp_file)
    folder = tmp_path / "run"
    folder.mkdir()
    spec = exp.space.smallest()
    Front(("top1", "latency_ms", "size_mb"), [FrontPoint(spec, [int(g) for g in exp.space.encode(spec)],
                                                          {"top1": 50.0, "latency_ms": 1.0, "size_mb": 0.1}, {"top1": 49.0})],
          exp.lineage()).save(folder)
    atomic_write_json(folder / "experiment.json", run_record(exp))
    net, _ = trained
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / checkpoint.WEIGHTS))
    runner = CliRunner()
    out = runner.invoke(app, ["sensitivity", str(folder), "--quiet"])  # weights, but no training record
    assert out.exit_code == 2 and out.stderr.count("\n") == 1 and "untrained supernet" in out.stderr
    checkpoint.save(net, folder, {"space": exp.space.name, "space_hash": exp.space.hash})
    out = runner.invoke(app, ["sensitivity", str(folder), "--formats", "fp32,int4", "--batches", "1", "--probes",
                              "1", "--val-images", "60"])
    assert out.exit_code == 0, out.stderr
    assert "stage2.layer2" in out.stdout and (folder / "sensitivity.json").is_file()
    assert len(list(csv.DictReader((folder / "sensitivity.csv").open()))) == 16
    bad = runner.invoke(app, ["sensitivity", str(folder), "--formats", "int9"])
    assert bad.exit_code == 2 and bad.stderr.count("\n") == 1 and "--formats" in bad.stderr
