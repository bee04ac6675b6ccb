"""Post-training refinement (nasq.export.refine): each kind on one layer, the grid contract, the
ONNX of a refined subnet, the manifest record and the one-line refusal."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace
from typing import get_args

import numpy as np
import pytest
import torch
from torch import nn

from nasq.errors import ConfigError
from nasq.export.refine import REFINERS, capture, refine_subnet
from nasq.formats import get_format
from nasq.space import SearchSpace, SubnetSpec
from nasq.specs import EvaluateConfig, ExportConfig
from nasq.supernet.layers import StaticQConv, StaticQLinear, per_channel_amax
from nasq.supernet.network import Supernet

SPACE_YAML = Path(__file__).resolve().parents[2] / "search_spaces" / "mbconv_small.yaml"


def _conv_layer(w_format: str, seed: int = 0) -> tuple[nn.Sequential, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(8, 12, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.2)
    model = nn.Sequential(StaticQConv(conv, w_format, "fp32", torch.tensor(0.0))).eval()
    # inputs with a nonzero mean and correlated channels: rounding errors do not average out
    base = torch.rand(32, 1, 6, 6, generator=g)
    x = (base + 0.3 * torch.rand(32, 8, 6, 6, generator=g)).split(16)
    return model, list(x)


def _layer_mse(model: nn.Sequential, calib: list[torch.Tensor], w_float: torch.Tensor) -> float:
    layer = model[0]
    x = torch.cat(calib)
    with torch.no_grad():
        want = layer._op(x, w_float, layer.conv.bias)
        return float((model(x) - want).pow(2).mean())


def test_refiners_match_the_export_config():
    assert set(REFINERS.names()) == set(get_args(ExportConfig.model_fields["refine"].annotation))


@pytest.mark.parametrize("kind, options", [("adaround", {"iters": 80}), ("flexround", {"iters": 80}),
                                           ("quantease", {"iters": 3})])
@pytest.mark.parametrize("w_format", ["int4", "ternary"])
def test_rounding_refiners_beat_nearest_and_stay_on_the_grid(kind, options, w_format):
    model, calib = _conv_layer(w_format)
    w_float = model[0].conv.weight.detach().clone()
    nearest = _layer_mse(model, calib, w_float)
    report = refine_subnet(model, calib, kind, seed=0, **options)
    assert report.layers_refined == 1 and report.layers_kept_nearest == 0
    w = model[0].conv.weight.detach()
    fmt = get_format(w_format)
    assert torch.equal(fmt.quantize(w, per_channel_amax(w)), w)  # what the export writes
    assert _layer_mse(model, calib, w_float) < 0.95 * nearest


def test_refinement_is_seeded():
    a, calib = _conv_layer("int4")
    b, _ = _conv_layer("int4")
    refine_subnet(a, calib, "adaround", seed=3, iters=50)
    refine_subnet(b, calib, "adaround", seed=3, iters=50)
    assert torch.equal(a[0].conv.weight, b[0].conv.weight)


def test_bias_correction_zeroes_the_mean_output_error():
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(32, 10)
    layer = StaticQLinear(lin, "ternary", "fp32", torch.tensor(0.0))
    model = nn.Sequential(layer).eval()
    calib = list((torch.rand(128, 32, generator=g) + 0.5).split(64))
    x = torch.cat(calib)
    with torch.no_grad():
        want = lin(x)
    def mean_err() -> torch.Tensor:
        with torch.no_grad():
            return (model(x) - want).mean(0).abs()
    before = mean_err()
    report = refine_subnet(model, calib, "bias_correction")
    assert report.layers_refined == 1
    assert float(before.max()) > 1e-2 and float(mean_err().max()) < 1e-5


def test_capture_sees_the_quantized_input():
    model, calib = _conv_layer("int4")
    layer = model[0]
    layer.a_format, layer.a_amax = "int4", torch.tensor(1.5)
    got = capture(model, layer, calib)
    assert torch.equal(got, get_format("int4").quantize(torch.cat(calib), torch.tensor(1.5)))
    assert "compute" not in vars(layer)  # the spy is gone


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return SearchSpace.from_yaml(SPACE_YAML)


def _twin(spec: SubnetSpec, w: str, a: str) -> SubnetSpec:
    stages = tuple(tuple(dataclasses.replace(c, w_format=w, a_format=a) for c in st) for st in spec.stages)
    return dataclasses.replace(spec, stages=stages)


def _subnet(space: SearchSpace, spec: SubnetSpec, calib: list[torch.Tensor]) -> nn.Module:
    torch.manual_seed(0)
    net = Supernet(space)
    net.set_active(spec)
    net.calibrate(calib)
    net.eval()
    return net.extract()


def _data(n: int = 96) -> SimpleNamespace:
    rng = np.random.default_rng(0)
    x = rng.random((n, 1, 28, 28), dtype=np.float32)
    return SimpleNamespace(train_x=x, val_x=x[:64], val_y=rng.integers(0, 10, 64), test_x=x[:8])


def test_refined_subnet_exports_what_it_computes(space, tmp_path):
    """ONNX of a refined subnet (packed int4 weights) runs in onnxruntime and equals torch; the
    manifest records the refinement with top-1 before and after."""
    import onnxruntime as ort

    from nasq.export.bundle import export_bundle
    from nasq.stages.export import refine

    data = _data()
    ecfg = EvaluateConfig(calib_images=64, val_images=64, batch_size=32)
    spec = _twin(space.smallest(), "int4", "int8")
    model = _subnet(space, spec, list(torch.from_numpy(data.train_x[:64]).split(32)))
    summary = refine(model, "quantease", data, ecfg, "exp.yaml", "export.refine")
    assert summary["layers_refined"] > 0 and {"top1_before", "top1_after", "seconds"} <= set(summary)
    res = export_bundle(model, spec=spec, space=space, out_dir=tmp_path / "b", sample_input=data.test_x,
                        predicted={}, measured={}, lineage={})
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["refine"]["kind"] == "quantease" and manifest["refine"]["top1_after"] == summary["top1_after"]
    sess = ort.InferenceSession(str(tmp_path / "b" / "model.onnx"))
    got = sess.run(None, {sess.get_inputs()[0].name: data.test_x})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(data.test_x)).numpy()
    assert np.abs(got - want).max() < 1e-3 and res.top1_agreement == 1.0


def test_no_quantized_layer_is_one_line(space):
    from nasq.stages.export import refine

    data = _data()
    ecfg = EvaluateConfig(calib_images=64, val_images=64, batch_size=32)
    model = _subnet(space, _twin(space.smallest(), "fp32", "fp32"), [torch.from_numpy(data.train_x[:32])])
    with pytest.raises(ConfigError) as e:
        refine(model, "adaround", data, ecfg, "command line", "--refine")
    assert "\n" not in str(e.value) and str(e.value).startswith("command line: --refine: 'adaround':")
    assert "no quantized layer" in str(e.value)


@pytest.mark.parametrize("flag, value, known", [("--refine", "adaroun", "adaround"),
                                               ("--int8-weights", "s8", "uint8")])
def test_cli_unknown_export_choice_is_one_line(tmp_path, flag, value, known):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "nasq.cli", "export", str(tmp_path), "--out", str(tmp_path / "o"),
                          "--point", "0", flag, value], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0] and repr(value) in lines[0] and known in lines[0]
    assert not (tmp_path / "o").exists()
