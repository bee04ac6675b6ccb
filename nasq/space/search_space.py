"""Search spaces: the genome codec, canonical subnet specs and their layer-by-layer shapes.

A genome is a fixed-length vector of choice indices, one gene per (stage, slot, field). Genes of
layers beyond a stage's active depth are inactive; :meth:`SearchSpace.canonical` zeroes them so
that two genomes describing the same subnet compare equal and share one :meth:`SubnetSpec.key`.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from nasq.errors import ConfigError
from nasq.files import sha256_bytes
from nasq.formats import FORMATS, highest_bits, lowest_bits
from nasq.space.batch import BatchCache, GenomeBatch
from nasq.space.kinds import BLOCK_KINDS, check_family, head_shapes, stem_shapes
from nasq.space.layer_table import LayerTable, layer_fields
from nasq.space.types import FORMAT_FIELDS, STEM_FORMAT, Gene, LayerChoice, LayerShape, SubnetSpec
from nasq.specs import MAX_SUPERNET_PARAMS, SpaceConfig, load_model, validate

__all__ = ["FORMAT_FIELDS", "Gene", "LayerChoice", "LayerShape", "LayerTable", "SearchSpace", "SubnetSpec", "STEM_FORMAT",
           "ordered_sum"]


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
        return self._field_mask(FORMAT_FIELDS)

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
    def sample(self, rng: np.random.Generator, n: int, weighted: bool = False,
               elastic: Collection[str] | None = None) -> list[SubnetSpec]:
        """``n`` uniformly random subnets; ``weighted`` draws format genes by the menu's weights.
        ``elastic`` (progressive shrinking): only the genes of these fields (``Gene.field``:
        ``depth``, ``kernel``, ``w_format``...) vary, the others take the largest subnet's choice;
        the same random numbers are drawn whatever ``elastic`` says."""
        raw = rng.integers(0, self.upper + 1, size=(n, self.n_genes))
        if weighted and self.config.precision.weights:
            for k in np.flatnonzero(self.format_gene_mask()):
                w = np.array([self.config.precision.weights.get(c, 1.0) for c in self.genes[k].choices])
                raw[:, k] = rng.choice(len(w), size=n, p=w / w.sum())
        if elastic is not None:
            raw = np.where(self._field_mask(elastic), raw, self._full_genome(largest=True))
        return [self.decode(g) for g in raw]

    def gene_fields(self) -> list[str]:
        """The fields the genes decide, in gene order without repeats (what ``elastic`` may name)."""
        return list(dict.fromkeys(g.field for g in self.genes))

    def shrink_problems(self, shrink: list[list[str]]) -> list[tuple[str, str]]:
        """``(field, problem)`` for each name in a training's ``shrink`` phases that no gene has."""
        known = self.gene_fields()
        return [(f"train.shrink[{i}][{j}]", f"must name a gene field of space '{self.name}' "
                 f"({', '.join(known)}), got {name!r}")
                for i, group in enumerate(shrink) for j, name in enumerate(group) if name not in known]

    def _field_mask(self, fields: Collection[str]) -> np.ndarray:
        return np.array([g.field in fields for g in self.genes], dtype=bool)

    def _full_genome(self, largest: bool) -> np.ndarray:
        """The largest's (or smallest's) choice for every gene, also the layer slots beyond its
        depth: what a partly elastic draw takes for the fields that do not vary yet."""
        pick, bits = (max, highest_bits) if largest else (min, lowest_bits)
        fmt = bits(self._shared_formats())
        return np.array([g.choices.index((fmt if fmt in g.choices else bits(list(g.choices)))
                                         if g.field in FORMAT_FIELDS else pick(g.choices)) for g in self.genes],
                        dtype=np.int64)

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

    def smallest(self, elastic: Collection[str] | None = None) -> SubnetSpec:
        """Shallowest, narrowest, lowest precision; with ``elastic`` (see :meth:`sample`), the
        smallest in those fields and the largest in the others."""
        if elastic is None:
            return self._extreme(min, lowest_bits(self._shared_formats()))
        return self.decode(np.where(self._field_mask(elastic), self._full_genome(largest=False),
                                    self._full_genome(largest=True)))

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


MAX_TABLE_VARIANTS = 250_000  # segment variants in all; a larger space scores per spec (decoded)


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
