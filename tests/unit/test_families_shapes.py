"""Families over any input shape: images of any channels and resolution (mbconv, resnet, vit),
real (C, T) series (sequence), table rows (mlp). Per shape: forward, extract equality, layer
shapes against the module's quantized layers, ONNX export in onnxruntime against torch; and the
input rules of each family as one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from nasq.errors import ConfigError
from nasq.space import SearchSpace
from nasq.supernet.layers import StaticQConv
from nasq.supernet.network import Supernet
from nasq.testing.blocks import check_extract_equals_supernet

REPO = Path(__file__).resolve().parents[2]
MENU = {"w_format": ["fp32", "int8", "int4", "fp8_e4m3"], "a_format": ["fp32", "int8", "int4", "fp8_e4m3"]}
MBCONV = {"block": "mbconv", "width": [8, 12], "stride": 2, "depth": [1, 2], "kernel": [3, 5], "expand": [2, 3]}
RESNET = {"block": "resnet", "width": [8, 12], "stride": 2, "depth": [1, 2], "kernel": [3], "expand": [0.5, 1]}
ENCODER = {"block": "vit", "width": [16, 24], "depth": [1, 2], "heads": [2, 4], "mlp_ratio": [2]}
DENSE = [{"block": "dense", "width": [8, 16], "depth": [1, 2]}, {"block": "dense", "width": [8], "depth": [1, 2]}]


def _space(family: str, inp: dict[str, int], stages: list[dict[str, Any]], stem: dict[str, int]) -> SearchSpace:
    data = {"name": f"tiny_{family}", "family": family, "input": inp, "stem": stem, "stages": stages,
            "precision": MENU}
    return SearchSpace.from_dict(data, source="tiny.yaml")


SHAPES = {
    "mbconv_3x32": ("mbconv", {"channels": 3, "resolution": 32, "num_classes": 10}, [MBCONV], {"channels": 8, "stride": 2}),
    "mbconv_1x16": ("mbconv", {"channels": 1, "resolution": 16, "num_classes": 4}, [MBCONV], {"channels": 8}),
    "resnet_3x32": ("resnet", {"channels": 3, "resolution": 32, "num_classes": 10}, [RESNET], {"channels": 8, "stride": 2}),
    "resnet_1x16": ("resnet", {"channels": 1, "resolution": 16, "num_classes": 4}, [RESNET], {"channels": 8}),
    "vit_3x32": ("vit", {"channels": 3, "resolution": 32, "num_classes": 10}, [ENCODER], {"channels": 16, "kernel": 8}),
    "vit_1x16": ("vit", {"channels": 1, "resolution": 16, "num_classes": 4}, [ENCODER], {"channels": 16, "kernel": 4}),
    "series_2x24": ("sequence", {"channels": 2, "length": 24, "num_classes": 3}, [ENCODER], {"channels": 16, "kernel": 4}),
    "series_3x9": ("sequence", {"channels": 3, "length": 9, "num_classes": 2}, [ENCODER], {"channels": 16}),  # patch 3
    "rows_3x12": ("sequence", {"channels": 3, "resolution": 12, "num_classes": 2}, [ENCODER], {"channels": 16, "kernel": 2}),
    "table_13": ("mlp", {"features": 13, "num_classes": 3}, DENSE, {"channels": 16}),
}
EXPECTED_INPUT = {"mbconv_3x32": (3, 32, 32), "mbconv_1x16": (1, 16, 16), "resnet_3x32": (3, 32, 32),
                  "resnet_1x16": (1, 16, 16), "vit_3x32": (3, 32, 32), "vit_1x16": (1, 16, 16),
                  "series_2x24": (2, 24), "series_3x9": (3, 9), "rows_3x12": (3, 12, 12), "table_13": (13,)}


def _build(name: str) -> SearchSpace:
    return _space(*SHAPES[name])


def _calibrated(space: SearchSpace, spec: Any, seed: int = 0) -> tuple[Supernet, torch.Tensor]:
    torch.manual_seed(seed)
    net = Supernet(space)
    x = torch.randn(24, *space.config.input_shape, generator=torch.Generator().manual_seed(seed))
    net.set_active(spec)
    net.calibrate([x])
    net.eval()
    return net, x


@pytest.mark.parametrize("name", SHAPES)
def test_forward_extract_and_layer_shapes(name):
    space = _build(name)
    assert space.config.input_shape == EXPECTED_INPUT[name]
    check_extract_equals_supernet(space, n_specs=1)  # largest, smallest and one random subnet
    for spec in (space.largest(), space.sample(np.random.default_rng(1), 1)[0]):
        net, x = _calibrated(space, spec)
        with torch.no_grad():
            assert net(x).shape == (len(x), space.config.input.num_classes)
        # every searched layer of the shapes is one quantized layer of the module, and back
        searched = [s for s in space.layer_shapes(spec) if s.name.startswith("stages.") and s.op != "matmul"]
        quantized = [m for m in net.extract().modules() if isinstance(m, StaticQConv)]
        assert len(searched) == len(quantized) > 0
        params = sum(m.conv.weight.numel() for m in quantized)
        assert params == sum(s.params for s in searched)


@pytest.mark.parametrize("name", ["mbconv_3x32", "vit_3x32", "series_2x24", "rows_3x12", "table_13"])
def test_export_runs_in_onnxruntime_and_matches_torch(name, tmp_path):
    import onnxruntime as ort

    from nasq.export.bundle import export_onnx

    space = _build(name)
    for k, spec in enumerate((space.largest(), space.sample(np.random.default_rng(3), 1)[0])):
        net, x = _calibrated(space, spec)
        static = net.extract()
        path = tmp_path / f"{k}.onnx"
        export_onnx(static, x[:1], path)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():
            want = static(x).numpy()
        assert got.shape == want.shape == (len(x), space.config.input.num_classes)
        scale = float(np.abs(want).max())
        assert float(np.abs(got - want).max()) <= 1e-4 * max(scale, 1.0), spec.key()


def test_sequence_stem_cuts_series_into_patches():
    series = SearchSpace.from_yaml(REPO / "search_spaces" / "seq_series.yaml")
    stem = series.layer_shapes(series.largest())[0]
    assert (stem.name, stem.cin, stem.tokens) == ("stem", 10, 15)  # 150 steps, patches of 10
    motions = SearchSpace.from_yaml(REPO / "search_spaces" / "seq_motions.yaml")
    stem = motions.layer_shapes(motions.largest())[0]
    assert (stem.cin, stem.tokens) == (60, 10)  # 6 channels x 10 steps per token
    qkv = next(s for s in motions.layer_shapes(motions.largest()) if s.name.endswith("qkv"))
    assert qkv.tokens == 10
    net = Supernet(motions)
    assert net.stem.pos.shape[1] == 10 and net.stem.linear.fin == 60


def test_image_read_by_rows_keeps_the_row_tokens():
    """An image in a sequence space is a series of C*W channels over its H rows: with patch 1
    each token is one row, features ordered (channel, column) as the old row stem had them;
    with patch 2 a token holds two rows, each feature's two steps side by side."""
    x = torch.randn(2, 3, 12, 12)
    rows = x.permute(0, 2, 1, 3).reshape(2, 12, 36)  # row h as (channel, column) features
    one = Supernet(_space("sequence", {"channels": 3, "resolution": 12, "num_classes": 2}, [ENCODER],
                          {"channels": 16, "kernel": 1}))
    assert torch.equal(one.stem.tokens(x), rows)
    tokens = Supernet(_build("rows_3x12")).stem.tokens(x)
    assert tokens.shape == (2, 6, 72)
    pairs = tokens.reshape(2, 6, 36, 2)
    assert torch.equal(pairs[:, 1, :, 0], rows[:, 2]) and torch.equal(pairs[:, 1, :, 1], rows[:, 3])


def test_mlp_layers_are_linear_and_cost_more_when_larger(profile):
    from nasq.hardware import CostModel

    space = SearchSpace.from_yaml(REPO / "search_spaces" / "mlp_table.yaml")
    shapes = space.layer_shapes(space.largest())
    assert {s.op for s in shapes} == {"linear"}
    assert shapes[0].cin == 13 and shapes[-1].cout == 3
    cm = CostModel(space, profile)
    big, small = cm.score([space.largest()]), cm.score([space.smallest()])
    for metric in ("latency_ms", "size_mb", "bops_g"):
        assert big[metric][0] > small[metric][0] > 0, metric


@pytest.mark.parametrize("family, inp, stem, field", [
    ("mlp", {"channels": 1, "resolution": 16, "num_classes": 3}, {"channels": 8}, "input.resolution"),
    ("mbconv", {"channels": 1, "length": 16, "num_classes": 3}, {"channels": 8}, "input.length"),
    ("vit", {"features": 16, "num_classes": 3}, {"channels": 8}, "input.features"),
    ("sequence", {"features": 16, "num_classes": 3}, {"channels": 8}, "input.features"),
    ("sequence", {"channels": 2, "length": 150, "num_classes": 3}, {"channels": 8, "kernel": 7}, "stem.kernel"),
    ("sequence", {"channels": 2, "length": 16, "num_classes": 3, "resolution_choices": [8, 16]}, {"channels": 8},
     "input.resolution_choices"),
    ("mlp", {"features": 16, "num_classes": 3}, {"channels": 8, "kernel": 5}, "stem.kernel"),
    ("mlp", {"features": 16, "num_classes": 3}, {"channels": 8, "stride": 2}, "stem.stride"),
    ("mlp", {"features": 16, "num_classes": 3, "channels": 2}, {"channels": 8}, "input"),
    ("mlp", {"num_classes": 3}, {"channels": 8}, "input"),
    ("mbconv", {"resolution": 16, "length": 16, "num_classes": 3}, {"channels": 8}, "input"),
])
def test_input_rules_are_one_line_errors(family, inp, stem, field):
    stages = DENSE if family == "mlp" else [ENCODER] if family in ("vit", "sequence") else [MBCONV]
    with pytest.raises(ConfigError) as err:
        _space(family, inp, stages, stem)
    assert str(err.value).startswith(f"tiny.yaml: {field}: ") and "\n" not in str(err.value)


def test_dense_blocks_belong_to_the_mlp_family():
    with pytest.raises(ConfigError, match=r"stages\[0\]\.block: block 'dense' does not belong to family 'mbconv'"):
        _space("mbconv", {"channels": 1, "resolution": 16, "num_classes": 3}, DENSE, {"channels": 8})


@pytest.mark.parametrize("name", ["mlp_table", "seq_series", "seq_motions", "mbconv_rgb32", "seq_fmnist"])
def test_config_round_trip_keeps_the_network(name):
    """Ray workers and export bundles rebuild the space from its dumped config: every field is
    then set, and the network must not change (defaults are not told apart from given values)."""
    from nasq.specs import SpaceConfig

    space = SearchSpace.from_yaml(REPO / "search_spaces" / f"{name}.yaml")
    again = SearchSpace(SpaceConfig.model_validate_json(space.config.model_dump_json()))
    assert again.config.input_shape == space.config.input_shape
    assert again.layer_shapes(again.largest()) == space.layer_shapes(space.largest())
