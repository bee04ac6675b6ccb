from __future__ import annotations

import numpy as np
import pytest
import torch

from nasq.space import LayerChoice, SubnetSpec


def test_codec_round_trip_and_canonical(space):
    rng = np.random.default_rng(0)
    raw = rng.integers(0, space.upper + 1, size=(50, space.n_genes))
    for g in raw:
        spec = space.decode(g)
        assert space.decode(space.encode(spec)) == spec
        canon = space.canonical(g)
        assert space.decode(canon) == spec
        assert np.array_equal(space.canonical(canon), canon)


def test_inactive_genes_do_not_change_key(space):
    spec = space.smallest()
    g = space.encode(spec)
    g2 = g.copy()
    inactive = [i for i, gene in enumerate(space.genes) if gene.slot is not None and gene.slot >= spec.depths[gene.stage]]
    assert inactive
    g2[inactive] = space.upper[inactive]
    assert space.decode(g2).key() == spec.key()
    assert not np.array_equal(g, g2) and np.array_equal(space.canonical(g2), g)


def test_key_is_stable_string(space):
    spec = SubnetSpec(((LayerChoice.of("int8", "fp32", kernel=3, expand=3),), (LayerChoice.of("int4", "int4", kernel=5, expand=6),),
                       (LayerChoice.of("fp8_e4m3", "int8", kernel=3, expand=6),)))
    assert spec.key() == "k3e3.int8.fp32-k5e6.int4.int4-k3e6.fp8_e4m3.int8"
    assert SubnetSpec.from_dict(spec.to_dict()) == spec
    assert len(spec.short_key()) == 12


def test_sampling_is_seeded(space):
    a = [s.key() for s in space.sample(np.random.default_rng(7), 10)]
    b = [s.key() for s in space.sample(np.random.default_rng(7), 10)]
    c = [s.key() for s in space.sample(np.random.default_rng(8), 10)]
    assert a == b and a != c
    uniq = space.sample_unique(np.random.default_rng(0), 30)
    assert len({s.key() for s in uniq}) == 30


def test_bad_genome_rejected(space):
    with pytest.raises(ValueError, match="genes"):
        space.decode([0, 1])
    g = np.zeros(space.n_genes, dtype=int)
    g[0] = 99
    with pytest.raises(ValueError, match="out of range"):
        space.decode(g)


@pytest.mark.parametrize("name", ["mbconv_small", "mbconv_fmnist", "resnet_fmnist", "fused_fmnist"])
def test_layer_shapes_match_torch_params(name, repo):
    """The conv families' layer shapes count exactly the weights the extracted subnet holds."""
    from nasq.space import SearchSpace
    from nasq.supernet.network import Supernet

    space = SearchSpace.from_yaml(repo / "search_spaces" / f"{name}.yaml")
    net = Supernet(space)
    for spec in [space.largest(), space.smallest(), *space.sample(np.random.default_rng(1), 3)]:
        net.set_active(spec)
        static = net.extract()
        weighted = [m for m in static.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        torch_params = sum(m.weight.numel() for m in weighted)  # the classifier and SE linears too
        ours = sum(layer.params for layer in space.layer_shapes(spec))
        assert ours == torch_params


def test_largest_smallest(space):
    big, small = space.largest(), space.smallest()
    assert big.depths == (2, 3, 3) and small.depths == (1, 1, 1)
    assert {layer.w_format for layer in big.layers()} == {"fp32"}
    assert {layer.w_format for layer in small.layers()} == {"int4"}


def test_weight_only_format_refused_as_activation_format(tmp_path):
    from pathlib import Path

    import yaml

    from nasq.errors import ConfigError
    from nasq.space import SearchSpace

    data = yaml.safe_load((Path(__file__).parents[2] / "search_spaces" / "mbconv_small.yaml").read_text())
    data["precision"]["a_format"] = [*data["precision"]["a_format"], "ternary"]
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    try:
        SearchSpace.from_yaml(path)
    except ConfigError as e:
        assert "precision.a_format" in str(e) and "ternary" in str(e) and "weight-only" in str(e)
    else:
        raise AssertionError("ternary accepted as an activation format")
