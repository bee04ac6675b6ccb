"""The transformer families start from the original ViT's initialisation: Xavier-uniform linears
(q, k and v each on its own), not a trunc normal 0.02 that leaves narrow residual branches near
zero (docs/benchmarks.md, "Supernet quality": +14 points for the largest vit_fmnist subnet)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from nasq.space import SearchSpace
from nasq.supernet.blocks import ElasticEncoderLayer, xavier_groups
from nasq.supernet.network import Supernet

REPO = Path(__file__).resolve().parents[2]


def test_xavier_groups_initialises_each_stacked_output_alone():
    w = torch.zeros(3 * 8, 32)
    torch.manual_seed(0)
    xavier_groups(w, 3)
    bound = math.sqrt(6 / (32 + 8))  # of one (8, 32) part, not of the whole (24, 32) matrix
    for part in w.view(3, 8, 32):
        assert float(part.abs().max()) <= bound
        assert float(part.std()) == pytest.approx(bound / math.sqrt(3), rel=0.2)


@pytest.mark.parametrize("name", ["vit_fmnist", "seq_fmnist"])
def test_encoder_linears_are_xavier_sized(name):
    torch.manual_seed(0)
    net = Supernet(SearchSpace.from_yaml(REPO / "search_spaces" / f"{name}.yaml"))
    layers = [m for m in net.modules() if isinstance(m, ElasticEncoderLayer)]
    assert layers
    for unit in (layers[0].qkv, layers[0].fc1, layers[0].fc2):
        w = unit.linear.weight.detach()
        fout, fin = w.shape[0] // unit.linear.groups, w.shape[1]
        assert float(w.std()) == pytest.approx(math.sqrt(2 / (fin + fout)), rel=0.15)  # trunc normal 0.02 fails
