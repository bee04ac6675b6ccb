"""Search spaces: the genome codec, canonical subnet specs and their layer-by-layer shapes.

A genome is a fixed-length vector of choice indices, one gene per (stage, slot, field). Genes of
layers beyond a stage's active depth are inactive; :meth:`SearchSpace.canonical` zeroes them so
that two genomes describing the same subnet compare equal and share one :meth:`SubnetSpec.key`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from nasq.errors import ConfigError
from nasq.files import sha256_bytes
from nasq.formats import FORMATS, highest_bits, lowest_bits
from nasq.space.batch import BatchCache, GenomeBatch
from nasq.space.kinds import BLOCK_KINDS, check_family, head_shapes, stem_shapes
from nasq.space.types import FORMAT_FIELDS, STEM_FORMAT, Gene, LayerChoice, LayerShape, SubnetSpec
from nasq.specs import MAX_SUPERNET_PARAMS, SpaceConfig, StageSpec, load_model, validate

__all__ = ["FORMAT_FIELDS", "Gene", "LayerChoice", "LayerShape", "LayerTable", "SearchSpace", "SubnetSpec", "STEM_FORMAT",
           "ordered_sum"]


def layer_fields(stage: StageSpec) -> tuple[str, ...]:
    """The genes of one layer slot of ``stage``: its block kind's architecture genes, then formats."""
    return BLOCK_KINDS.get(stage.block).layer_fields + FORMAT_FIELDS


class SearchSpace:
    """Built from a validated :class:`SpaceConfig`; never mutated.

    Gene order: the input resolution (when elastic), then per stage its depth, its width (when
    elastic) and, per layer slot up to the deepest choice, the block kind's genes and the formats."""

    def __init__(self, config: SpaceConfig, source: str = "<memory>", content_hash: str = ""):
        self.config, self.source = config, source
        self.hash = content_hash or sha256_bytes(config.model_dump_json().encode())
        self._check_kinds()
        self.genes = self._build_genes()
        self.n_genes = len(self.genes)
        self.upper = np.array([len(g.choices) - 1 for g in self.genes], dtype=np.int64)
        self._index_genes()
        self._index_batch()
        self._check_fits()

    # ------------------------------------------------------------ construction
    @classmethod
    def from_yaml(cls, path: str | Path, source: str | None = None) -> SearchSpace:
        config, digest = load_model(SpaceConfig, Path(path), source)
        return cls(config, source or str(path), digest)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> SearchSpace:
        return cls(validate(SpaceConfig, data, source), source)

    def _check_kinds(self) -> None:
        problems = check_family(self.config)
        if problems:
            raise ConfigError(self.source, *problems[0])
        for field in ("w_format", "a_format"):
            for j, name in enumerate(getattr(self.config.precision, field)):
                if name not in FORMATS:
                    raise ConfigError(self.source, f"precision.{field}[{j}]", FORMATS.miss_message(name))
        for j, name in enumerate(self.config.precision.a_format):
            if getattr(FORMATS.get(name), "weight_only", False):
                raise ConfigError(self.source, f"precision.a_format[{j}]", f"'{name}' is a weight-only format "
                                  "(its scale is a statistic of the whole tensor): use it in w_format, got it in a_format")
        for name in self.config.precision.weights:
            if name not in self.config.precision.w_format + self.config.precision.a_format:
                raise ConfigError(self.source, f"precision.weights.{name}", f"not a format of this menu, got '{name}'")

    def _check_fits(self) -> None:
        # Each size is bounded by the schema; their product is what has to fit one machine.
        params = sum(shape.params for shape in self.layer_shapes(self.largest()))
        if params > MAX_SUPERNET_PARAMS:
            raise ConfigError(self.source, "stages", f"the largest subnet has {params:.3g} weights, more than "
                              f"the {MAX_SUPERNET_PARAMS:.3g} a supernet may have (widths x depths x ratios too large)")

    def _build_genes(self) -> list[Gene]:
        genes: list[Gene] = []
        cfg, menu = self.config, self.config.precision
        if cfg.input.resolution_choices:
            genes.append(Gene("resolution", cfg.input.resolution_choices, -1, None, "resolution"))
        for i, st in enumerate(cfg.stages):
            genes.append(Gene(f"stage{i}.depth", st.depth, i, None, "depth"))
            if len(st.width) > 1:
                genes.append(Gene(f"stage{i}.width", st.width, i, None, "width"))
            for j in range(max(st.depth)):
                for field in layer_fields(st):
                    choices = getattr(menu, field) if field in FORMAT_FIELDS else getattr(st, field)
                    genes.append(Gene(f"stage{i}.layer{j}.{field}", tuple(choices), i, j, field))
        return genes

    def _index_genes(self) -> None:
        self._res_gene = 0 if self.config.input.resolution_choices else None
        self._depth_gene: dict[int, int] = {}
        self._width_gene: dict[int, int] = {}
        self._slot_base: dict[tuple[int, int], int] = {}
        for k, g in enumerate(self.genes):
            if g.field == "depth":
                self._depth_gene[g.stage] = k
            elif g.field == "width":
                self._width_gene[g.stage] = k
            elif g.slot is not None and (g.stage, g.slot) not in self._slot_base:
                self._slot_base[(g.stage, g.slot)] = k
        self._elastic_width = bool(self._width_gene)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def family(self) -> str:
        return self.config.family

    @property
    def gene_names(self) -> list[str]:
        return [g.name for g in self.genes]

    def format_gene_mask(self) -> np.ndarray:
        return np.array([g.field in FORMAT_FIELDS for g in self.genes], dtype=bool)

    # ------------------------------------------------------------ codec
    def decode(self, genome: np.ndarray | list[int]) -> SubnetSpec:
        g = self._check_genome(genome)
        stages = []
        for i, st in enumerate(self.config.stages):
            dg = self._depth_gene[i]
            fields = layer_fields(st)
            layers = []
            for j in range(self.genes[dg].choices[g[dg]]):
                base = self._slot_base[(i, j)]
                vals = {f: self.genes[base + n].choices[g[base + n]] for n, f in enumerate(fields)}
                layers.append(LayerChoice.of(**vals))
            stages.append(tuple(layers))
        widths = ()
        if self._elastic_width:
            widths = tuple(self.genes[self._width_gene[i]].choices[g[self._width_gene[i]]] if i in self._width_gene
                           else st.width[0] for i, st in enumerate(self.config.stages))
        res = self.genes[0].choices[g[0]] if self._res_gene is not None else 0
        return SubnetSpec(tuple(stages), widths, res)

    def encode(self, spec: SubnetSpec) -> np.ndarray:
        if len(spec.stages) != len(self.config.stages):
            raise ValueError(f"spec has {len(spec.stages)} stages, space {self.name} has {len(self.config.stages)}")
        g = np.zeros(self.n_genes, dtype=np.int64)
        if self._res_gene is not None:
            g[0] = self._index(0, spec.resolution or self.config.input.resolution)
        for i, layers in enumerate(spec.stages):
            st = self.config.stages[i]
            g[self._depth_gene[i]] = self._index(self._depth_gene[i], len(layers))
            if i in self._width_gene:
                g[self._width_gene[i]] = self._index(self._width_gene[i], self.stage_width(spec, i))
            for j, layer in enumerate(layers):
                base = self._slot_base[(i, j)]
                for n, field in enumerate(layer_fields(st)):
                    g[base + n] = self._index(base + n, getattr(layer, field))
        return g

    def stage_width(self, spec: SubnetSpec, i: int) -> int:
        """Active output channels of stage ``i`` (embed dim for transformer families)."""
        return spec.widths[i] if spec.widths else self.config.stages[i].width[-1]

    def input_resolution(self, spec: SubnetSpec) -> int:
        inp = self.config.input  # a series: its length (the sequence stem reads steps); a table row: 1
        return spec.resolution or inp.resolution or inp.length or 1

    def _index(self, gene: int, value: Any) -> int:
        try:
            return self.genes[gene].choices.index(value)
        except ValueError:
            raise ValueError(f"{self.genes[gene].name}: {value!r} is not a choice of space {self.name} "
                             f"(choices: {list(self.genes[gene].choices)})") from None

    def _check_genome(self, genome: np.ndarray | list[int]) -> np.ndarray:
        g = np.asarray(genome, dtype=np.int64)
        if g.shape != (self.n_genes,):
            raise ValueError(f"genome must have {self.n_genes} genes, got shape {g.shape}")
        if (g < 0).any() or (g > self.upper).any():
            bad = int(np.flatnonzero((g < 0) | (g > self.upper))[0])
            raise ValueError(f"gene {self.genes[bad].name} = {g[bad]} is out of range 0..{self.upper[bad]}")
        return g

    def canonical(self, genome: np.ndarray | list[int]) -> np.ndarray:
        return self.encode(self.decode(genome))

    def canonical_batch(self, genomes: np.ndarray) -> np.ndarray:
        """:meth:`canonical` of every row, as array operations: each gene's index mapped to the
        first equal choice (what ``encode(decode(g))`` does), the genes of inactive layers zeroed."""
        return self._canonical_parts(genomes)[0]

    def _canonical_parts(self, genomes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`canonical_batch` and, computed on the way, its rows' depths and active genes
        (zeroing inactive genes changes neither: the depth genes are always active)."""
        G = self._check_genomes(genomes)
        out = self._first_index[self._gene_range, G]
        depths = self.depths_of(out)
        active = self.active_from_depths(depths)
        out[~active] = 0
        return out, depths, active

    def batch(self, genomes: np.ndarray | GenomeBatch, canonical: bool = False) -> GenomeBatch:
        """The :class:`~nasq.space.batch.GenomeBatch` of ``genomes`` (checked and made canonical):
        the very same object for a matrix equal to them, or to their canonical rows, while it is
        among the last few asked for - so the consumers of one scoring call (features, cost
        model, latency model) share its tables. ``canonical=True``: the caller guarantees valid
        canonical rows (the search engine's repair made them so) and they are taken as they are."""
        if isinstance(genomes, GenomeBatch):
            return genomes
        G = np.ascontiguousarray(genomes, dtype=np.int64)
        hit = self._batches.find(G)
        if hit is None:
            hit = GenomeBatch(self, G.copy()) if canonical else GenomeBatch(self, *self._canonical_parts(G))
            if not np.array_equal(hit.G, G):
                self._batches.add(G, hit)
            self._batches.add(hit.G, hit)
        return hit

    def _check_genomes(self, genomes: np.ndarray | list[list[int]]) -> np.ndarray:
        G = np.asarray(genomes, dtype=np.int64)
        if G.ndim != 2 or G.shape[1] != self.n_genes:
            raise ValueError(f"genomes must have {self.n_genes} genes per row, got shape {G.shape}")
        bad = (G < 0) | (G > self.upper)
        if bad.any():
            row, k = (int(x[0]) for x in np.nonzero(bad))
            raise ValueError(f"gene {self.genes[k].name} = {G[row, k]} is out of range 0..{self.upper[k]}")
        return G

    def depths_of(self, genomes: np.ndarray) -> np.ndarray:
        """Active depth of every stage, one row per genome (valid genomes, unchecked)."""
        G = np.asarray(genomes, dtype=np.int64)
        return np.stack([self._depth_values[i][G[:, k]] for i, k in sorted(self._depth_gene.items())], axis=1)

    def active_genes(self, genomes: np.ndarray) -> np.ndarray:
        """Boolean matrix: which genes of each genome are active (layer genes beyond their stage's
        depth are not); the network- and stage-level genes always are."""
        return self.active_from_depths(self.depths_of(genomes))

    def active_from_depths(self, depths: np.ndarray) -> np.ndarray:
        """:meth:`active_genes` of genomes whose stage depths (:meth:`depths_of`) are ``depths``."""
        return ~self._slot_gene[None, :] | (self._gene_slot[None, :] < depths[:, self._gene_stage])

    def _index_batch(self) -> None:
        # Lookup arrays for the genome-matrix path (canonical_batch, depths_of, active_genes).
        width = int(self.upper.max()) + 1
        self._first_index = np.zeros((self.n_genes, width), dtype=np.int64)
        for k, g in enumerate(self.genes):
            self._first_index[k, : len(g.choices)] = [g.choices.index(c) for c in g.choices]
        self._gene_range = np.arange(self.n_genes)[None, :]
        self._slot_gene = np.array([g.slot is not None for g in self.genes], dtype=bool)
        self._gene_slot = np.array([-1 if g.slot is None else g.slot for g in self.genes], dtype=np.int64)
        self._gene_stage = np.array([max(g.stage, 0) for g in self.genes], dtype=np.int64)
        self._depth_values = {i: np.array(self.genes[k].choices, dtype=np.int64) for i, k in self._depth_gene.items()}
        self._table: LayerTable | None = None
        self._table_built = False
        self._batches = BatchCache()  # see batch()

    def layer_table(self) -> LayerTable | None:
        """The space's precomputed per-layer table (built on first use), or None for a space whose
        table would be too large (more than ``MAX_TABLE_VARIANTS`` slot variants): callers then
        decode genomes and take the per-spec path."""
        if not self._table_built:
            table = LayerTable(self) if LayerTable.variants(self) <= MAX_TABLE_VARIANTS else None
            self._table = table if table is not None and table.exact else None
            self._table_built = True
        return self._table

    # ------------------------------------------------------------ sampling
    def sample(self, rng: np.random.Generator, n: int, weighted: bool = False) -> list[SubnetSpec]:
        """``n`` uniformly random subnets; ``weighted`` draws format genes by the menu's weights."""
        raw = rng.integers(0, self.upper + 1, size=(n, self.n_genes))
        if weighted and self.config.precision.weights:
            for k in np.flatnonzero(self.format_gene_mask()):
                w = np.array([self.config.precision.weights.get(c, 1.0) for c in self.genes[k].choices])
                raw[:, k] = rng.choice(len(w), size=n, p=w / w.sum())
        return [self.decode(g) for g in raw]

    def sample_unique(self, rng: np.random.Generator, n: int, exclude: set[str] | None = None) -> list[SubnetSpec]:
        return unique_samples(lambda: self.sample(rng, 1)[0], n, exclude)

    def _extreme(self, pick: Any, fmt: str) -> SubnetSpec:
        stages = []
        for st in self.config.stages:
            arch = {f: pick(getattr(st, f)) for f in layer_fields(st) if f not in FORMAT_FIELDS}
            stages.append(tuple(LayerChoice.of(fmt, fmt, **arch) for _ in range(pick(st.depth))))
        widths = tuple(pick(st.width) for st in self.config.stages) if self._elastic_width else ()
        res = pick(self.config.input.resolution_choices) if self._res_gene is not None else 0
        return SubnetSpec(tuple(stages), widths, res)

    def largest(self) -> SubnetSpec:
        """Deepest, widest, highest precision."""
        return self._extreme(max, highest_bits(self._shared_formats()))

    def smallest(self) -> SubnetSpec:
        """Shallowest, narrowest, lowest precision."""
        return self._extreme(min, lowest_bits(self._shared_formats()))

    def _shared_formats(self) -> list[str]:
        menu = self.config.precision
        both = [f for f in menu.w_format if f in menu.a_format]
        return both or list(menu.w_format)

    def all_formats(self) -> set[str]:
        menu = self.config.precision
        return set(menu.w_format) | set(menu.a_format) | {STEM_FORMAT}

    def size(self) -> float:
        """Number of distinct subnets (canonical); ``inf`` beyond what a float holds."""
        total = len(self.config.input.resolution_choices) or 1
        for i, st in enumerate(self.config.stages):
            base = self._slot_base[(i, 0)]
            per_layer = math.prod(len(self.genes[k].choices) for k in range(base, base + len(layer_fields(st))))
            total *= len(st.width) * sum(per_layer ** d for d in st.depth)  # exact integers: no overflow
        return float(total) if total.bit_length() <= 1023 else math.inf

    # ------------------------------------------------------------ analytics
    def _walk(self, spec: SubnetSpec) -> Iterator[tuple[int, int, tuple[int, int, int, int], list[LayerShape]]]:
        """Each active layer of ``spec`` in execution order: ``(stage, slot, (cin, width, stride,
        res), shapes)`` — what the block kind is given (``res``: tokens for transformer families)
        and the layer shapes it returns. The stem and head are :meth:`layer_shapes`' own."""
        cfg = self.config
        _, cin, res = stem_shapes(cfg, self.input_resolution(spec), self.stage_width(spec, 0))
        for i, (st, layers) in enumerate(zip(cfg.stages, spec.stages, strict=True)):
            kind, width = BLOCK_KINDS.get(st.block), self.stage_width(spec, i)
            for j, layer in enumerate(layers):
                stride = st.stride if j == 0 else 1
                block, res_out = kind.shapes(f"stages.{i}.{j}", cin, width, stride, res, layer, st, j == 0)
                yield i, j, (cin, width, stride, res), block
                cin, res = width, res_out

    def slot_inputs(self, spec: SubnetSpec, stage: int, slot: int) -> tuple[int, int, int, int]:
        """``(cin, width, stride, res)`` that :meth:`layer_shapes` passes to the block kind for layer
        ``slot`` of ``stage`` (``res``: tokens for transformer families); the slot must be active."""
        for i, j, inputs, _ in self._walk(spec):
            if (i, j) == (stage, slot):
                return inputs
        raise ValueError(f"layer {slot} of stage {stage} is not active in {spec.key()}")

    def layer_shapes(self, spec: SubnetSpec) -> list[LayerShape]:
        cfg = self.config
        shapes, cin, _ = stem_shapes(cfg, self.input_resolution(spec), self.stage_width(spec, 0))
        for _, _, (_, width, _, _), block in self._walk(spec):
            shapes += block
            cin = width
        return shapes + head_shapes(cfg, cin)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "hash": self.hash, "genes": self.n_genes,
                "subnets": self.size(), "formats": sorted(self.all_formats())}


# ---------------------------------------------------------------- the genome-matrix layer table

MAX_TABLE_VARIANTS = 250_000  # segment variants in all; a larger space scores per spec (decoded)


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

    def __init__(self, space: SearchSpace):
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
    def variants(space: SearchSpace) -> int:
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


def unique_samples(draw: Any, n: int, exclude: set[str] | None = None) -> list[Any]:
    """Up to ``n`` candidates from ``draw()`` whose ``key()`` is new (not in ``exclude``, not drawn
    before); gives up after 100 draws per wanted candidate (a small space may have fewer)."""
    seen = set(exclude or ())
    out: list[Any] = []
    for _ in range(100 * n):
        spec = draw()
        if spec.key() not in seen:
            seen.add(spec.key())
            out.append(spec)
        if len(out) == n:
            break
    return out


def ordered_sum(values: np.ndarray) -> np.ndarray:
    """Row sums added left to right, as the per-spec loops add a subnet's layers (numpy's ``sum``
    adds pairwise, which can differ in the last bit); padded zeros change nothing."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape[1] == 0:
        return np.zeros(len(values))
    return np.cumsum(values, axis=1)[:, -1]
