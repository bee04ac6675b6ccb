"""Every catalog space (mbconv, resnet, vit, sequence, mlp; conv, fused_mbconv and dense blocks): codec,
canonical keys, shapes, sampling, validation of family rules, export to onnxruntime and back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nasq.errors import ConfigError
from nasq.space import SearchSpace, SubnetSpec

REPO = Path(__file__).resolve().parents[2]
SPACES = sorted((REPO / "search_spaces").glob("*.yaml"))
# one space per family, plus fused_fmnist for the dense-conv block kinds (conv, fused_mbconv)
FAMILY_SPACES = ["mbconv_fmnist", "resnet_fmnist", "vit_fmnist", "seq_fmnist", "fused_fmnist"]
# the spaces for other input shapes: a table (mlp), series (sequence), colour images (mbconv)
SHAPE_SPACES = ["mlp_table", "seq_series", "seq_motions", "mbconv_rgb32"]


def _space(name: str) -> SearchSpace:
    return SearchSpace.from_yaml(REPO / "search_spaces" / f"{name}.yaml")


def test_every_family_has_a_catalog_space():
    assert {SearchSpace.from_yaml(p).family for p in SPACES} >= {"mbconv", "resnet", "vit", "sequence", "mlp"}


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.stem)
def test_codec_round_trip_and_canonical_keys(path):
    space = SearchSpace.from_yaml(path)
    rng = np.random.default_rng(0)
    raw = rng.integers(0, space.upper + 1, size=(50, space.n_genes))
    for g in raw:
        spec = space.decode(g)
        assert space.decode(space.encode(spec)) == spec
        assert SubnetSpec.from_dict(spec.to_dict()) == spec
        assert SubnetSpec.from_dict(spec.to_dict()).key() == spec.key()
        # genes of inactive slots do not change the subnet
        other = g.copy()
        inactive = [k for k, gene in enumerate(space.genes) if gene.slot is not None and gene.slot >= spec.depths[gene.stage]]
        other[inactive] = 0
        assert space.decode(other).key() == spec.key()
    assert space.largest().key() != space.smallest().key()


@pytest.mark.parametrize("name", FAMILY_SPACES + SHAPE_SPACES)
def test_larger_subnets_cost_more(name, profile):
    from nasq.hardware import CostModel

    space = _space(name)
    cm = CostModel(space, profile)
    big, small = cm.score([space.largest()]), cm.score([space.smallest()])
    for metric in ("latency_ms", "size_mb", "bops_g"):
        assert big[metric][0] > small[metric][0] > 0, metric


def test_transformer_shapes_count_attention_and_tokens():
    space = _space("vit_fmnist")
    spec = space.largest()
    shapes = {s.name: s for s in space.layer_shapes(spec)}
    qkv, att = shapes["stages.0.0.qkv"], shapes["stages.0.0.attention"]
    assert qkv.tokens == 49 and qkv.macs == 64 * 3 * 64 * 49
    assert att.params == 0 and att.macs == 2 * 64 * 49 * 49
    seq = {s.name: s for s in _space("seq_fmnist").layer_shapes(spec)}
    assert seq["stem"].tokens == 28 and seq["stem"].cin == 28


@pytest.mark.parametrize("name, shape", [("seq_fmnist", (1, 28, 28)), ("seq_series", (1, 150)),
                                         ("seq_motions", (6, 100)), ("mlp_table", (13,)), ("mbconv_rgb32", (3, 32, 32))])
def test_input_shape_is_what_the_supernet_reads(name, shape):
    from nasq.supernet.network import Supernet

    space = _space(name)
    assert space.config.input_shape == shape
    net = Supernet(space).eval()
    with torch.no_grad():
        assert net(torch.randn(2, *shape)).shape == (2, space.config.input.num_classes)


def test_weighted_format_sampling_follows_the_menu():
    data = _space("mbconv_small").config.model_dump(mode="json")
    data["precision"]["weights"] = {"int4": 20.0}
    space = SearchSpace.from_dict(data)
    specs = space.sample(np.random.default_rng(0), 200, weighted=True)
    share = np.mean([layer.w_format == "int4" for s in specs for layer in s.layers()])
    uniform = np.mean([layer.w_format == "int4" for s in space.sample(np.random.default_rng(0), 200) for layer in s.layers()])
    assert share > 0.7 and uniform < 0.4


@pytest.mark.parametrize("edit, field", [
    (lambda d: d["stages"][0].update(block="vit"), "stages[0].block"),
    (lambda d: d["stages"][0].pop("kernel"), "stages[0].kernel"),
    (lambda d: d["stages"][0].update(heads=[2]), "stages[0].heads"),
    (lambda d: d["stages"][1].update(se=True, block="mbconv") or d.update(family="resnet"), "stages[0].block"),
    (lambda d: d["precision"].update(weights={"int9": 2}), "precision.weights.int9"),
])
def test_family_rules_are_one_line_errors(edit, field):
    data = _space("mbconv_small").config.model_dump(mode="json")
    edit(data)
    with pytest.raises(ConfigError) as err:
        SearchSpace.from_dict(data, source="space.yaml")
    assert str(err.value).startswith(f"space.yaml: {field}: ") and "\n" not in str(err.value)


def test_transformer_spaces_have_one_stage():
    data = _space("vit_fmnist").config.model_dump(mode="json")
    data["stages"] = data["stages"] * 2
    with pytest.raises(ConfigError, match="stages: a vit space has one stage"):
        SearchSpace.from_dict(data, source="v.yaml")


@pytest.mark.parametrize("name", FAMILY_SPACES)
def test_export_runs_in_onnxruntime_and_loads_back(name, tmp_path):
    from nasq.export.bundle import export_bundle, load_export
    from nasq.supernet.network import Supernet

    space = _space(name)
    torch.manual_seed(0)
    net = Supernet(space)
    spec = space.sample(np.random.default_rng(3), 1)[0]
    x = torch.randn(32, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    net.set_active(spec)
    net.calibrate([x])
    static = net.extract()
    res = export_bundle(static, spec=spec, space=space, out_dir=tmp_path / "b", sample_input=x.numpy(),
                        predicted={}, measured={}, lineage={}, opset=17)
    assert res.top1_agreement >= 0.9
    back = load_export(tmp_path / "b")
    with torch.no_grad():
        assert float((back(x) - static(x)).abs().max()) <= 1e-5


def _conv_stem_vit(convs: int = 2) -> SearchSpace:
    data = _space("vit_fmnist").config.model_dump(mode="json")
    data["stem"].update(convs=convs, channels=32)
    return SearchSpace.from_dict(data)


def test_conv_stem_shapes_tokens_and_supernet_agree():
    from nasq.supernet.network import Supernet

    space = _conv_stem_vit()
    shapes = space.layer_shapes(space.largest())
    stem = [(s.name, s.cin, s.cout, s.kernel, s.stride, s.hin, s.hout) for s in shapes[:3]]
    # 28 -> 14 -> 7 by two 3x3 stride-2 convs (16, then 32 channels), then 1x1 patches to the width
    assert stem == [("stem.conv0", 1, 16, 3, 2, 28, 14), ("stem.conv1", 16, 32, 3, 2, 14, 7), ("stem", 32, 64, 1, 1, 7, 7)]
    assert shapes[3].tokens == 49
    patches = _conv_stem_vit(0)  # 4x4 patches of the image, no convs
    plain = patches.layer_shapes(patches.largest())
    assert plain[0].name == "stem" and plain[0].kernel == 4 and plain[1].tokens == 49
    assert sum(s.params for s in shapes) > sum(s.params for s in plain)
    torch.manual_seed(0)
    net = Supernet(space)
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    for spec in (space.largest(), space.smallest()):
        net.set_active(spec)
        net.calibrate([x])
        net.eval()
        with torch.no_grad():
            assert torch.equal(net(x), net.extract()(x))


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["stem"].update(convs=1), "stem.convs: a convolutional stem is for the vit family"),
    (None, "stem.convs: each stem conv halves the image, so the patch 4 must divide by 2**convs = 8"),
])
def test_conv_stem_rules_are_one_line_errors(edit, message):
    if edit is None:
        data = _space("vit_fmnist").config.model_dump(mode="json")
        data["stem"].update(convs=3)
    else:
        data = _space("mbconv_small").config.model_dump(mode="json")
        edit(data)
    with pytest.raises(ConfigError) as err:
        SearchSpace.from_dict(data, source="space.yaml")
    assert str(err.value).startswith(f"space.yaml: {message}") and "\n" not in str(err.value)
