"""The genome-matrix layer table: every distinct layer of a search space, numbered once, so that a
whole population's per-layer quantities (latency, energy, bits, features) are column lookups by id
instead of a decode and a walk per genome. :meth:`SearchSpace.layer_table` builds it on first use.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from nasq.formats import FORMATS
from nasq.space.kinds import BLOCK_KINDS, head_shapes, stem_shapes
from nasq.space.types import FORMAT_FIELDS, STEM_FORMAT, LayerChoice, LayerShape, SubnetSpec
from nasq.specs import StageSpec


def layer_fields(stage: StageSpec) -> tuple[str, ...]:
    """The genes of one layer slot of ``stage``: its block kind's architecture genes, then formats."""
    return BLOCK_KINDS.get(stage.block).layer_fields + FORMAT_FIELDS


class _Segment:
    """A run of consecutive layers of a subnet decided by a few genes: the stem, one layer slot, or
    the classifier. ``ids[v]`` are the layer ids of variant ``v = genomes[:, genes] @ strides``,
    padded; a slot's layers count only while the slot is within its stage's depth."""

    def __init__(self, genes: list[int], sizes: list[int], ids: list[list[int]], stage: int = -1, slot: int = -1):
        self.genes = np.array(genes, dtype=np.int64)
        self.strides = np.array([math.prod(sizes[k + 1:]) for k in range(len(sizes))], dtype=np.int64)
        self.stage, self.slot = stage, slot
        width = max(len(row) for row in ids)
        self.ids = np.array([row + [-1] * (width - len(row)) for row in ids], dtype=np.int64)

    def variant(self, genomes: np.ndarray) -> np.ndarray:
        return genomes[:, self.genes] @ self.strides if len(self.genes) else np.zeros(len(genomes), dtype=np.int64)


class LayerTable:
    """Every layer shape a subnet of ``space`` can contain (``shapes``, numbered), and for each
    segment of a subnet which of them it holds, so that the layers of a whole population of
    genomes are one integer matrix (:meth:`ids`; rows: genomes, columns: layers in execution order,
    ``pad`` where a row has fewer) and any per-layer quantity is an array lookup.

    A slot's layers depend only on its own genes and its inputs, and those only on the input
    resolution and the widths of its stage and the one before - never on other slots' choices
    (what :func:`nasq.hardware.keys.space_keys` relies on too). So each slot is enumerated over
    those genes alone, calling the block kind's own shape function with the inputs
    :meth:`SearchSpace.slot_inputs` gives: the table is built from the same code as
    :meth:`SearchSpace.layer_shapes`, and tests check the two agree on random subnets."""

    def __init__(self, space: Any):  # a SearchSpace (which imports this module)
        self.space = space
        self._shared: dict[str, np.ndarray] = {}  # see shared_column()
        self.shapes: list[LayerShape] = []
        self._numbers: dict[LayerShape, int] = {}
        # False when a block kind breaks what the table assumes (a layer's output resolution
        # depending on its genes, or a layer after a stage's first changing it): no table then.
        self.exact = True
        cfg = space.config
        res = [space._res_gene] if space._res_gene is not None else []
        self.segments = [self._stem(res + [space._width_gene[i] for i in (0,) if i in space._width_gene])]
        for i, st in enumerate(cfg.stages):
            for j in range(max(st.depth)):
                self.segments.append(self._slot(i, j, res))
        last = len(cfg.stages) - 1
        self.segments.append(self._head([space._width_gene[i] for i in (last,) if i in space._width_gene]))
        self.pad = len(self.shapes)
        for seg in self.segments:
            seg.ids[seg.ids < 0] = self.pad
        del self._numbers
        self._index_columns()
        self.formats = sorted({s.a_format for s in self.shapes} | {s.w_format for s in self.shapes} | {STEM_FORMAT})
        code = {f: n for n, f in enumerate(self.formats)}
        self.fp32_code = code[STEM_FORMAT]  # the input image's format: where transitions start
        self.a_code = self.column(lambda s: code[s.a_format], np.int64, -1)
        # the input format a layer's predecessor leaves: at the pad, the image's (see GenomeBatch.previous)
        self.a_code_before = self.column(lambda s: code[s.a_format], np.int64, self.fp32_code)
        self.macs = self.column(lambda s: s.macs, np.int64)
        self.params = self.column(lambda s: s.params, np.int64)
        self.w_bits = self.column(lambda s: FORMATS.get(s.w_format).bits, np.int64)
        self.a_bits = self.column(lambda s: FORMATS.get(s.a_format).bits, np.int64)

    @staticmethod
    def variants(space: Any) -> int:
        """How many segment variants the table of ``space`` would hold (to refuse a huge one)."""
        sizes = [len(g.choices) for g in space.genes]
        res = sizes[space._res_gene] if space._res_gene is not None else 1
        widths = {i: sizes[k] for i, k in space._width_gene.items()}
        total = res * widths.get(0, 1) + widths.get(len(space.config.stages) - 1, 1)
        for i, st in enumerate(space.config.stages):
            per_slot = math.prod(sizes[space._slot_base[(i, 0)] + n] for n in range(len(layer_fields(st))))
            first = res * widths.get(i - 1, 1) * widths.get(i, 1) * per_slot
            total += first + (max(st.depth) - 1) * res * widths.get(i, 1) * per_slot
        return total

    # ------------------------------------------------------------ construction
    def _number(self, shapes: list[LayerShape]) -> list[int]:
        out = []
        for shape in shapes:
            n = self._numbers.get(shape)
            if n is None:
                n = self._numbers[shape] = len(self.shapes)
                self.shapes.append(shape)
            out.append(n)
        return out

    def _spec(self, genes: list[int], combo: tuple[int, ...]) -> SubnetSpec:
        """A subnet with every stage at its deepest and ``genes`` set to ``combo``."""
        g = np.zeros(self.space.n_genes, dtype=np.int64)
        for i, k in self.space._depth_gene.items():
            g[k] = int(np.argmax(self.space._depth_values[i]))
        g[genes] = combo
        return self.space.decode(g)

    def _stem(self, genes: list[int]) -> _Segment:
        sizes = [len(self.space.genes[k].choices) for k in genes]
        rows = []
        for combo in itertools.product(*(range(n) for n in sizes)):
            spec = self._spec(genes, combo)
            shapes, _, _ = stem_shapes(self.space.config, self.space.input_resolution(spec), self.space.stage_width(spec, 0))
            rows.append(self._number(shapes))
        return _Segment(genes, sizes, rows)

    def _head(self, genes: list[int]) -> _Segment:
        sizes = [len(self.space.genes[k].choices) for k in genes]
        last = len(self.space.config.stages) - 1
        rows = [self._number(head_shapes(self.space.config, self.space.stage_width(self._spec(genes, combo), last)))
                for combo in itertools.product(*(range(n) for n in sizes))]
        return _Segment(genes, sizes, rows)

    def _slot(self, i: int, j: int, res: list[int]) -> _Segment:
        space, st = self.space, self.space.config.stages[i]
        kind, fields = BLOCK_KINDS.get(st.block), layer_fields(st)
        context = res + [space._width_gene[k] for k in ((i - 1,) if j == 0 and i > 0 else ()) + (i,)
                         if k in space._width_gene]
        base = space._slot_base[(i, j)]
        own = list(range(base, base + len(fields)))
        genes = context + own
        sizes = [len(space.genes[k].choices) for k in genes]
        choices = [LayerChoice.of(**{f: space.genes[base + n].choices[c[n]] for n, f in enumerate(fields)})
                   for c in itertools.product(*(range(len(space.genes[k].choices)) for k in own))]
        rows = []
        for combo in itertools.product(*(range(n) for n in sizes[: len(context)])):
            cin, width, stride, r = space.slot_inputs(self._spec(context, combo), i, j)
            outs = set()
            for choice in choices:
                shapes, out = kind.shapes(f"stages.{i}.{j}", cin, width, stride, r, choice, st, j == 0)
                rows.append(self._number(shapes))
                outs.add(out)
            self.exact &= len(outs) == 1 and (j == 0 or outs == {r})
        return _Segment(genes, sizes, rows, i, j)

    # ------------------------------------------------------------ use
    def column(self, fn: Any, dtype: Any = np.float64, pad: Any = 0) -> np.ndarray:
        """``fn(shape)`` of every layer, indexed by layer id; ``pad`` at :attr:`pad`."""
        return np.array([fn(s) for s in self.shapes] + [pad], dtype=dtype)

    def shared_column(self, key: str, fn: Any, dtype: Any = np.float64, pad: Any = 0) -> np.ndarray:
        """:meth:`column`, built once per table and kept under ``key`` (a name for what ``fn``
        computes; it must depend on nothing but the layer): consumers made afresh for each search,
        such as a cost model, then reuse it instead of a Python call per layer (~1,000) each time."""
        return self.shared(key, lambda: self.column(fn, dtype, pad))

    def shared(self, key: str, build: Any) -> np.ndarray:
        """``build()`` (an array of per-layer quantities of this table), built on first use and
        kept under ``key`` (a name for what it holds). Read-only: every consumer shares it."""
        hit = self._shared.get(key)
        if hit is None:
            hit = self._shared[key] = build()
            hit.flags.writeable = False
        return hit

    def segment_rows(self, genomes: np.ndarray, depths: np.ndarray | None = None) -> list[np.ndarray]:
        """Per segment, the layer ids of every genome (``pad`` for an inactive slot); ``depths``:
        the genomes' :meth:`SearchSpace.depths_of` when the caller has them."""
        G = np.asarray(genomes, dtype=np.int64)
        depths = self.space.depths_of(G) if depths is None else depths
        out = []
        for seg in self.segments:
            rows = seg.ids[seg.variant(G)]
            if seg.slot >= 0:
                rows = np.where((seg.slot < depths[:, seg.stage])[:, None], rows, self.pad)
            out.append(rows)
        return out

    def ids(self, genomes: np.ndarray, depths: np.ndarray | None = None) -> np.ndarray:
        """Layer ids of valid genomes, rows in the order of :meth:`SearchSpace.layer_shapes`
        (:meth:`segment_rows` side by side, in a handful of whole-matrix operations: every
        segment's variant from one product, every layer from one gather); ``depths``: the
        genomes' :meth:`SearchSpace.depths_of` when the caller has them."""
        G = np.asarray(genomes, dtype=np.int64)
        depths = self.space.depths_of(G) if depths is None else depths
        variants = G @ self._strides  # (genomes, segments)
        flat = self._col_base + variants[:, self._col_segment] * self._col_width
        ids = self._flat_ids.take(flat)
        shown = (self._col_slot < 0) | (self._col_slot < depths[:, self._col_stage])  # a slot within its depth
        return np.where(shown, ids, self.pad)

    def _index_columns(self) -> None:
        # what ids() needs: every segment's id table flattened one after the other; per column of
        # the ids matrix, its segment, where its layer sits in that table, and its slot and stage
        widths = [seg.ids.shape[1] for seg in self.segments]
        bases = np.cumsum([0] + [seg.ids.size for seg in self.segments[:-1]])
        self._flat_ids = np.concatenate([seg.ids.ravel() for seg in self.segments])
        self._strides = np.zeros((self.space.n_genes, len(self.segments)), dtype=np.int64)
        for s, seg in enumerate(self.segments):
            self._strides[seg.genes, s] = seg.strides
        self._col_segment = np.repeat(np.arange(len(self.segments)), widths)
        self._col_width = np.repeat(widths, widths).astype(np.int64)
        self._col_base = (np.repeat(bases, widths) + np.concatenate([np.arange(w) for w in widths])).astype(np.int64)
        self._col_slot = np.repeat([seg.slot for seg in self.segments], widths).astype(np.int64)
        self._col_stage = np.repeat([max(seg.stage, 0) for seg in self.segments], widths).astype(np.int64)

    def format_changes(self, ids: np.ndarray) -> np.ndarray:
        """Where a layer's input format differs from the previous layer's (the image is fp32)."""
        valid = ids != self.pad
        a = self.a_code[ids]
        n, width = ids.shape
        last = np.maximum.accumulate(np.where(valid, np.arange(1, width + 1), 0), axis=1)
        prev_at = np.concatenate([np.zeros((n, 1), dtype=np.int64), last[:, :-1]], axis=1)
        a_ext = np.concatenate([np.full((n, 1), self.fp32_code, dtype=np.int64), a], axis=1)
        return valid & (a != np.take_along_axis(a_ext, prev_at, axis=1))
