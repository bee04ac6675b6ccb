"""Feature encoders: how a subnet becomes a row of numbers for a regressor."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from nasq.formats import FORMATS
from nasq.hardware import CostModel
from nasq.registry import Registry
from nasq.space import SearchSpace, SubnetSpec

Encoder = Callable[[SearchSpace, list[SubnetSpec], CostModel | None], np.ndarray]
FEATURES: Registry[Encoder] = Registry("feature encoder")


@FEATURES.register("onehot")
def onehot(space: SearchSpace, specs: list[SubnetSpec], costs: CostModel | None) -> np.ndarray:
    """One column per (gene, choice); the genes of inactive layers are all zero."""
    widths = space.upper + 1
    offsets = np.concatenate([[0], np.cumsum(widths)[:-1]])
    out = np.zeros((len(specs), int(widths.sum())), dtype=np.float64)
    for r, spec in enumerate(specs):
        g = space.encode(spec)
        active = _active_mask(space, spec)
        cols = offsets[active] + g[active]
        out[r, cols] = 1.0
    return out


def _active_mask(space: SearchSpace, spec: SubnetSpec) -> np.ndarray:
    depths = spec.depths
    return np.array([g.slot is None or g.slot < depths[g.stage] for g in space.genes], dtype=bool)


@FEATURES.register("costs")
def costs(space: SearchSpace, specs: list[SubnetSpec], cost_model: CostModel | None) -> np.ndarray:
    """Parameters, MACs, BOPs and the share of MACs run at each bit width of weights and activations."""
    bit_levels = sorted({f.bits for f in (FORMATS.get(n) for n in space.all_formats())})
    rows = []
    for spec in specs:
        layers = space.layer_shapes(spec)
        macs = np.array([lay.macs for lay in layers], dtype=np.float64)
        wb = np.array([FORMATS.get(lay.w_format).bits for lay in layers])
        ab = np.array([FORMATS.get(lay.a_format).bits for lay in layers])
        total = macs.sum()
        row = [np.log(sum(lay.params for lay in layers)), np.log(total), np.log((macs * wb * ab).sum())]
        row += [macs[wb == b].sum() / total for b in bit_levels]
        row += [macs[ab == b].sum() / total for b in bit_levels]
        row += [float(wb.min()), float(ab.min())]
        rows.append(row)
    return np.asarray(rows, dtype=np.float64)


def encode(names: tuple[str, ...], space: SearchSpace, specs: list[SubnetSpec], cost_model: CostModel | None) -> np.ndarray:
    return np.hstack([FEATURES.get(n)(space, specs, cost_model) for n in names])
