"""Feature encoders: how a subnet becomes a row of numbers for a regressor.

An encoder is called with the space, the specs and (optionally) a cost model, and returns one
float row per spec with the same columns for every spec of that space - so a predictor fitted on
one batch can score any other batch of the same space.

Each encoder also has a genome-matrix twin in ``GENOME_FEATURES`` (same name, same values to the
last bit, tested on random subnets of every catalog space): it takes a matrix of genomes and
reads layer quantities from the space's :class:`~nasq.space.layer_table.LayerTable`, so a whole
population is encoded without a SubnetSpec per row. :func:`encode_genomes` falls back to decoding
for an encoder without a twin or a space without a table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from nasq.formats import FORMATS
from nasq.hardware import CostModel, layer_bits
from nasq.hardware.cost import size_mb_of
from nasq.registry import Registry
from nasq.space import GenericSpace, SearchSpace, SubnetSpec, layer_fields
from nasq.space.search_space import ordered_sum

Encoder = Callable[[SearchSpace, list[SubnetSpec], CostModel | None], np.ndarray]
FEATURES: Registry[Encoder] = Registry("feature encoder")
GenomeEncoder = Callable[[SearchSpace, np.ndarray, CostModel | None], np.ndarray]
GENOME_FEATURES: Registry[GenomeEncoder] = Registry("genome feature encoder")

FORMAT_COLUMNS = ("w_bits", "a_bits", "w_float", "a_float")


def layerwise_columns(space: SearchSpace, stage: int) -> tuple[str, ...]:
    """Columns of one layer slot of ``stage`` in the ``layerwise`` encoding."""
    arch = tuple(f for f in layer_fields(space.config.stages[stage]) if f not in ("w_format", "a_format"))
    return ("active", *arch, *FORMAT_COLUMNS, "macs_share")


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
    """Parameters, MACs, BOPs and the share of MACs run at each bit width of weights and activations
    (what the network's layers are, read from the space); for a generic space, which has no layers,
    the injected cost model's own columns instead."""
    if isinstance(space, GenericSpace):
        return injected_costs(specs, cost_model)
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
    return np.asarray(rows, dtype=np.float64).reshape(len(specs), 5 + 2 * len(bit_levels))


def injected_costs(specs: list[Any], cost_model: Any) -> np.ndarray:
    """Every column the cost model gives (sorted by name: the same for every batch); none without one."""
    if cost_model is None or not specs:
        return np.zeros((len(specs), 0))
    values = cost_model.score(specs)
    return np.column_stack([np.asarray(values[k], dtype=np.float64) for k in sorted(values)]).reshape(len(specs), -1)


# what a generic space (no layers) can be encoded with
GENERIC_FEATURES = ("onehot", "costs")


@FEATURES.register("layerwise")
def layerwise(space: SearchSpace, specs: list[SubnetSpec], cost_model: CostModel | None) -> np.ndarray:
    """The elastic resolution and stage widths (where the space has them), then per layer slot,
    stages in order and slots up to each stage's deepest choice, the numbers in
    :func:`layerwise_columns`: active flag, the block kind's genes (kernel and expand, or heads and
    MLP ratio), weight and activation bits, whether each format is a float format (fp8 and int8
    share 8 bits but not their error), and the slot's share of the subnet's MACs. Every column of
    an inactive slot is zero."""
    stages = space.config.stages
    slots = [(i, j, layerwise_columns(space, i)) for i, st in enumerate(stages) for j in range(max(st.depth))]
    lead = int(bool(space.config.input.resolution_choices)) + sum(len(st.width) > 1 for st in stages)
    out = np.zeros((len(specs), lead + sum(len(c) for *_, c in slots)), dtype=np.float64)
    for r, spec in enumerate(specs):
        head = ([float(spec.resolution)] if space.config.input.resolution_choices else [])
        head += [float(spec.widths[i]) for i, st in enumerate(stages) if len(st.width) > 1]
        out[r, :lead] = head
        macs = _macs_per_slot(space, spec)
        total = sum(macs.values()) + _fixed_macs(space, spec)
        col = lead
        for i, j, columns in slots:
            if j < len(spec.stages[i]):
                layer = spec.stages[i][j]
                w, a = FORMATS.get(layer.w_format), FORMATS.get(layer.a_format)
                arch = [float(getattr(layer, c)) for c in columns[1:-len(FORMAT_COLUMNS) - 1]]
                out[r, col : col + len(columns)] = [1.0, *arch, w.bits, a.bits, w.kind == "float",
                                                     a.kind == "float", macs[i, j] / total]
            col += len(columns)
    return out


def _macs_per_slot(space: SearchSpace, spec: SubnetSpec) -> dict[tuple[int, int], float]:
    """MACs of each active slot's expand + depthwise + project convolutions (names ``stages.i.j.*``)."""
    out: dict[tuple[int, int], float] = {}
    for lay in space.layer_shapes(spec):
        parts = lay.name.split(".")
        if parts[0] == "stages":
            key = (int(parts[1]), int(parts[2]))
            out[key] = out.get(key, 0.0) + lay.macs
    return out


def _fixed_macs(space: SearchSpace, spec: SubnetSpec) -> float:
    return float(sum(lay.macs for lay in space.layer_shapes(spec) if not lay.name.startswith("stages.")))


@FEATURES.register("bops")
def bops(space: SearchSpace, specs: list[SubnetSpec], cost_model: CostModel | None) -> np.ndarray:
    """Four dense columns: log parameters, log MACs, log BOPs (MACs x weight bits x activation bits)
    and the stored size in MB - the cost model's ``size_mb`` when one is given, else the same
    accounting (weights in their format with per-channel scales, plus an fp32 bias per channel)."""
    size_mb = cost_model.score(specs)["size_mb"] if cost_model is not None else None
    rows = []
    for r, spec in enumerate(specs):
        layers = space.layer_shapes(spec)
        params = sum(lay.params for lay in layers)
        macs = sum(lay.macs for lay in layers)
        bit_ops = sum(lay.macs * FORMATS.get(lay.w_format).bits * FORMATS.get(lay.a_format).bits for lay in layers)
        if size_mb is None:
            mb = size_mb_of(sum(layer_bits(lay) for lay in layers))
        else:
            mb = float(size_mb[r])
        rows.append([np.log(params), np.log(macs), np.log(bit_ops), mb])
    return np.asarray(rows, dtype=np.float64).reshape(len(specs), 4)


def encode(names: tuple[str, ...], space: SearchSpace, specs: list[SubnetSpec], cost_model: CostModel | None) -> np.ndarray:
    if isinstance(space, GenericSpace):
        bad = [n for n in names if n not in GENERIC_FEATURES]
        if bad:
            raise ValueError(f"feature {bad[0]!r} describes a network's layers; generic space {space.name!r} "
                             f"has none (use {', '.join(GENERIC_FEATURES)})")
    return np.hstack([FEATURES.get(n)(space, specs, cost_model) for n in names])


# ---------------------------------------------------------------- the same encoders on genome matrices
# Each takes canonical genomes (encode_genomes canonicalises) and a space with a layer table, and
# reads the matrix's tables from ``space.batch(G)``: the ones the other encoders and the cost and
# latency models of the same scoring call read (nasq.space.batch), computed once.

def _onehot_offsets(space: SearchSpace) -> tuple[np.ndarray, int]:
    widths = space.upper + 1
    return np.concatenate([[0], np.cumsum(widths)[:-1]]), int(widths.sum())


@GENOME_FEATURES.register("onehot")
def onehot_genomes(space: SearchSpace, G: np.ndarray, costs: CostModel | None) -> np.ndarray:
    offsets, width = _onehot_offsets(space)
    out = np.zeros((len(G), width), dtype=np.float64)
    rows, genes = np.nonzero(space.batch(G).active)
    out[rows, offsets[genes] + G[rows, genes]] = 1.0
    return out


def _layer_matrix(space: SearchSpace, G: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray]:
    batch = space.batch(G)
    return batch.table, batch.ids, batch.ids != batch.table.pad


def _cost_columns(space: SearchSpace, table: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per layer id, one row per quantity (kept by the table): what ``costs`` sums (params, MACs,
    BOPs, then MACs at each weight and at each activation bit width of the space; 0 at the pad)
    and what it minimises (weight and activation bits; the int64 maximum at the pad). Rows of
    quantities, so a gather copies each quantity's layers side by side and the sums run along
    contiguous memory: ~2x faster than a column per quantity."""
    def sums() -> np.ndarray:
        macs, wb, ab = table.macs, table.w_bits, table.a_bits
        levels = sorted({f.bits for f in (FORMATS.get(n) for n in space.all_formats())})
        return np.stack([table.params, macs, macs * wb * ab] + [np.where(wb == b, macs, 0) for b in levels]
                        + [np.where(ab == b, macs, 0) for b in levels])

    def mins() -> np.ndarray:
        out = np.stack([table.w_bits, table.a_bits])
        out[:, table.pad] = np.iinfo(np.int64).max
        return out

    return table.shared("features.costs.sums", sums), table.shared("features.costs.mins", mins)


@GENOME_FEATURES.register("costs")
def costs_genomes(space: SearchSpace, G: np.ndarray, cost_model: CostModel | None) -> np.ndarray:
    batch = space.batch(G)
    sum_rows, min_rows = _cost_columns(space, batch.table)
    # integer sums: exact, so the same as the per-spec sums whatever the order
    sums = sum_rows.take(batch.ids, axis=1).sum(axis=2)  # (quantity, genome)
    total = sums[1].astype(np.float64)
    levels = (len(sum_rows) - 3) // 2
    out = np.empty((len(G), 5 + 2 * levels))
    out[:, 0], out[:, 1], out[:, 2] = np.log(sums[0]), np.log(total), np.log(sums[2])
    out[:, 3:3 + 2 * levels] = (sums[3:] / total).T
    out[:, 3 + 2 * levels:] = min_rows.take(batch.ids, axis=1).min(axis=2).T
    return out


@GENOME_FEATURES.register("layerwise")
def layerwise_genomes(space: SearchSpace, G: np.ndarray, cost_model: CostModel | None) -> np.ndarray:
    stages, table, batch = space.config.stages, space.layer_table(), space.batch(G)
    rows = table.segment_rows(G, batch.depths)
    seg_macs = [table.macs[r].sum(axis=1) for r in rows]
    total = np.sum(seg_macs, axis=0).astype(np.float64)
    cols: list[np.ndarray] = []
    if space.config.input.resolution_choices:
        cols.append(np.array(space.genes[0].choices, dtype=np.float64)[G[:, 0]])
    for i, st in enumerate(stages):
        if len(st.width) > 1:
            k = space._width_gene[i]
            cols.append(np.array(space.genes[k].choices, dtype=np.float64)[G[:, k]])
    depths = batch.depths
    for seg, macs in zip(table.segments, seg_macs, strict=True):
        if seg.slot < 0:
            continue
        active = seg.slot < depths[:, seg.stage]
        base, fields = space._slot_base[(seg.stage, seg.slot)], layer_fields(stages[seg.stage])
        part = [np.ones(len(G))]
        for n, field in enumerate(fields):
            choices = space.genes[base + n].choices
            if field not in ("w_format", "a_format"):
                part.append(np.array(choices, dtype=np.float64)[G[:, base + n]])
        fmts = [[FORMATS.get(c) for c in space.genes[base + n].choices] for n, f in enumerate(fields)
                if f in ("w_format", "a_format")]
        part += [np.array([f.bits for f in m], dtype=np.float64)[G[:, base + fields.index(name)]]
                 for m, name in zip(fmts, ("w_format", "a_format"), strict=True)]
        part += [np.array([f.kind == "float" for f in m], dtype=np.float64)[G[:, base + fields.index(name)]]
                 for m, name in zip(fmts, ("w_format", "a_format"), strict=True)]
        part.append(macs / total)
        cols += [np.where(active, p, 0.0) for p in part]
    return np.column_stack(cols).astype(np.float64) if cols else np.zeros((len(G), 0))


@GENOME_FEATURES.register("bops")
def bops_genomes(space: SearchSpace, G: np.ndarray, cost_model: CostModel | None) -> np.ndarray:
    table, ids, _ = _layer_matrix(space, G)
    macs = table.macs[ids]
    bit_ops = (macs * table.w_bits[ids] * table.a_bits[ids]).sum(axis=1)
    if cost_model is None:
        mb = size_mb_of(ordered_sum(table.shared_column("cost.layer_bits", layer_bits)[ids]))
    elif hasattr(cost_model, "score_genomes"):
        mb = cost_model.score_genomes(G)["size_mb"]
    else:
        mb = cost_model.score([space.decode(g) for g in G])["size_mb"]
    return np.column_stack([np.log(table.params[ids].sum(axis=1)), np.log(macs.sum(axis=1)), np.log(bit_ops),
                            np.asarray(mb, dtype=np.float64)]).reshape(len(G), 4)


def encode_genomes(names: tuple[str, ...], space: SearchSpace, genomes: np.ndarray,
                   cost_model: CostModel | None) -> np.ndarray:
    """:func:`encode` of the decoded ``genomes`` (rows of gene indices), from the genome twins."""
    if space.layer_table() is None or any(n not in GENOME_FEATURES for n in names):
        return encode(names, space, [space.decode(g) for g in space.canonical_batch(genomes)], cost_model)
    G = space.batch(genomes).G
    return np.hstack([GENOME_FEATURES.get(n)(space, G, cost_model) for n in names])
