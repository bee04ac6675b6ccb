"""The dense-conv block kinds (fused_mbconv, conv) and the fused_fmnist space that mixes them with
MBConv: extraction, layer shapes, latency-table keys, genome round trip and training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nasq.space import LayerChoice, SearchSpace, SubnetSpec

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fused():
    return SearchSpace.from_yaml(REPO / "search_spaces" / "fused_fmnist.yaml")


def _uniform(space: SearchSpace, w: str, a: str, expand: float) -> SubnetSpec:
    """Every layer at the deepest depth with formats (w, a); fused layers with ``expand``."""
    stages = []
    for st in space.config.stages:
        genes = {"kernel": max(st.kernel)}
        if st.block == "fused_mbconv":
            genes["expand"] = expand
        elif st.block == "mbconv":
            genes["expand"] = max(st.expand)
        stages.append((LayerChoice.of(w, a, **genes),) * max(st.depth))
    return SubnetSpec(tuple(stages))


def _extract_diff(space: SearchSpace, spec: SubnetSpec, seed: int = 0) -> tuple[float, torch.nn.Module]:
    from nasq.supernet.network import Supernet

    torch.manual_seed(seed)
    net = Supernet(space)
    gen = torch.Generator().manual_seed(seed)
    net.set_active(spec)
    net.calibrate([torch.randn(32, 1, 28, 28, generator=gen) for _ in range(2)])
    net.eval()
    static = net.extract()
    x = torch.randn(16, 1, 28, 28, generator=gen)
    with torch.no_grad():
        return float((net(x) - static(x)).abs().max()), static


def test_space_mixes_the_three_kinds_in_the_mbconv_family(fused):
    assert fused.family == "mbconv"
    assert [st.block for st in fused.config.stages] == ["conv", "fused_mbconv", "mbconv"]


@pytest.mark.parametrize("fmt", ["fp32", "int8"])
@pytest.mark.parametrize("expand", [1, 2, 4])
def test_extracted_fused_blocks_equal_the_supernet(fused, fmt, expand):
    from nasq.supernet.blocks import StaticFusedMBConv

    diff, static = _extract_diff(fused, _uniform(fused, fmt, fmt, expand))
    assert diff <= 1e-5
    blocks = [b for b in static.blocks if isinstance(b, StaticFusedMBConv)]
    assert len(blocks) == 2 + 3  # conv stage and fused stage at their deepest
    fused_parts = [sorted(b.parts) for b in blocks[2:]]
    assert all(p == (["conv"] if expand == 1 else ["expand", "project"]) for p in fused_parts)
    # identity skip only where the shape is kept: not the strided first fused block
    assert [b.residual for b in blocks] == [True, True, False, True, True]


def test_int8_changes_the_output_and_extraction_follows(fused):
    """The int8 path really quantizes (so the equality above is not vacuous)."""
    diff32, fp = _extract_diff(fused, _uniform(fused, "fp32", "fp32", 4))
    diff8, q = _extract_diff(fused, _uniform(fused, "int8", "int8", 4))
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert float((fp(x) - q(x)).abs().max()) > 1e-4
    assert max(diff32, diff8) <= 1e-5


def test_layer_shapes_name_the_dense_convs(fused):
    spec = _uniform(fused, "int8", "int8", 4)
    shapes = {s.name: s for s in fused.layer_shapes(spec)}
    conv, expand, project = shapes["stages.0.0.conv"], shapes["stages.1.0.expand"], shapes["stages.1.0.project"]
    assert (conv.op, conv.cin, conv.cout, conv.kernel, conv.stride, conv.hin) == ("conv", 16, 16, 5, 1, 14)
    assert (expand.op, expand.cin, expand.cout, expand.kernel, expand.stride, expand.hout) == ("conv", 16, 64, 3, 2, 7)
    assert (project.op, project.cin, project.cout, project.kernel) == ("conv", 64, 24, 1)
    one = {s.name: s for s in fused.layer_shapes(_uniform(fused, "int8", "int8", 1))}
    assert "stages.1.0.expand" not in one
    assert (one["stages.1.0.conv"].cin, one["stages.1.0.conv"].cout, one["stages.1.0.conv"].stride) == (16, 24, 2)
    assert not any(s.op == "dwconv" for s in shapes.values() if s.name.startswith(("stages.0.", "stages.1.")))


def test_genome_round_trip(fused):
    rng = np.random.default_rng(0)
    for g in rng.integers(0, fused.upper + 1, size=(40, fused.n_genes)):
        spec = fused.decode(g)
        assert fused.decode(fused.encode(spec)) == spec
        assert SubnetSpec.from_dict(spec.to_dict()) == spec
        assert all(set(dict(layer.arch)) == {"kernel"} for layer in spec.stages[0])  # conv: kernel only
        assert all(set(dict(layer.arch)) == {"kernel", "expand"} for layer in spec.stages[1])
    assert fused.largest().key().startswith("k5.fp32.fp32+k5.fp32.fp32-k3e4.fp32.fp32")


def test_space_keys_yield_dense_conv_keys(fused):
    from nasq.hardware.keys import space_keys

    keys = space_keys(fused)
    dense = {(k.cin, k.cout, k.kernel, k.stride, k.hin, k.act) for k in keys if k.op == "conv"}
    assert (16, 16, 5, 1, 14, "relu6") in dense  # plain conv stage
    assert (16, 64, 3, 2, 14, "relu6") in dense  # fused expand 4, strided
    assert (16, 24, 3, 2, 14, "relu6") in dense  # fused expand 1: one conv to the width
    assert (64, 24, 1, 1, 7, "none") in dense  # fused project: no activation
    int8 = [k for k in keys if k.op == "conv" and k.kernel > 1 and k.w_format == k.a_format == "int8"]
    assert len(int8) >= 6
    assert all(k.cin == k.cout for k in keys if k.op == "dwconv")  # depthwise only in the mbconv stage
    assert min(k.cin for k in keys if k.op == "dwconv") >= 3 * 24


@pytest.mark.parametrize("edit, field, words", [
    (lambda d: d["stages"][0].update(expand=[2]), "stages[0].expand", "has no 'expand' gene"),
    (lambda d: d["stages"][1].pop("expand"), "stages[1].expand", "needs choices for 'expand'"),
    (lambda d: d["stages"][1].update(se=True), "stages[1].se", "only mbconv blocks"),
    (lambda d: d.update(family="resnet"), "stages[0].block", "does not belong to family 'resnet'"),
])
def test_dense_kinds_validate_in_one_line(fused, edit, field, words):
    from nasq.errors import ConfigError

    data = fused.config.model_dump(mode="json")
    edit(data)
    with pytest.raises(ConfigError) as err:
        SearchSpace.from_dict(data, source="fused.yaml")
    text = str(err.value)
    assert text.startswith(f"fused.yaml: {field}: ") and words in text and "\n" not in text


def test_training_a_few_steps_updates_every_dense_path(fused):
    from nasq.specs import TrainConfig
    from nasq.supernet.network import Supernet
    from nasq.supernet.train import train_supernet

    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 1, 28, 28)).astype(np.float32)
    y = (x[:, 0, :14].mean(axis=(1, 2)) > 0).astype(np.int64)
    torch.manual_seed(0)
    net = Supernet(fused)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    res = train_supernet(net, fused, x, y, TrainConfig(epochs=1, batch_size=64, lr=0.05, seed=1))
    assert res.steps == 2 and all(np.isfinite(res.losses))
    moved = {n for n, p in net.named_parameters() if not torch.equal(p, before[n])}
    for name in ("stages.0.0.conv.conv.weight", "stages.1.0.expand.conv.weight",
                 "stages.1.0.project.conv.weight", "stages.1.0.conv.conv.weight"):
        assert name in moved, name


def test_elastic_width_and_resolution_switch_the_skip(fused):
    """With elastic widths a block's skip comes and goes with the active widths (a conv stage of
    width 24 after a 16-channel stem has none in its first block); extraction follows."""
    from nasq.testing.blocks import check_extract_equals_supernet

    data = fused.config.model_dump(mode="json")
    data["input"]["resolution_choices"] = [24, 28]
    data["stages"][0]["width"] = [16, 24]
    data["stages"][1]["width"] = [24, 32]
    space = SearchSpace.from_dict(data, source="elastic.yaml")
    assert check_extract_equals_supernet(space, n_specs=6, seed=3) <= 1e-5


def test_feature_encoders_and_cost_model_take_the_space(fused, profile):
    """Every registered feature encoder and the cost model read the dense kinds' layer shapes as
    they read MBConv's: finite rows, a bigger subnet costs more."""
    from nasq.hardware import CostModel
    from nasq.predict.features import FEATURES, encode

    specs = [fused.largest(), fused.smallest(), *fused.sample(np.random.default_rng(2), 6)]
    costs = CostModel(fused, profile)
    features = encode(tuple(FEATURES.names()), fused, specs, costs)
    assert features.shape[0] == len(specs) and np.all(np.isfinite(features))
    score = costs.score(specs[:2])
    for metric in ("latency_ms", "size_mb", "bops_g"):
        assert score[metric][0] > score[metric][1] > 0, metric
