"""Search spaces: the genome codec, canonical subnet specs and their layer-by-layer shapes.

A genome is a fixed-length vector of choice indices, one gene per (stage, slot, field). Genes of
layers beyond a stage's active depth are inactive; :meth:`SearchSpace.canonical` zeroes them so
that two genomes describing the same subnet compare equal and share one :meth:`SubnetSpec.key`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from nasq.errors import ConfigError
from nasq.files import sha256_bytes
from nasq.formats import FORMATS, highest_bits, lowest_bits
from nasq.space.kinds import BLOCK_KINDS, check_family, head_shapes, stem_shapes
from nasq.space.types import FORMAT_FIELDS, STEM_FORMAT, Gene, LayerChoice, LayerShape, SubnetSpec
from nasq.specs import MAX_SUPERNET_PARAMS, SpaceConfig, StageSpec, load_model, validate

__all__ = ["FORMAT_FIELDS", "Gene", "LayerChoice", "LayerShape", "SearchSpace", "SubnetSpec", "STEM_FORMAT"]


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
        return spec.resolution or self.config.input.resolution

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
        return np.stack([self.canonical(g) for g in np.asarray(genomes)])

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
        seen = set(exclude or ())
        out: list[SubnetSpec] = []
        for _ in range(100 * n):
            spec = self.sample(rng, 1)[0]
            if spec.key() not in seen:
                seen.add(spec.key())
                out.append(spec)
            if len(out) == n:
                break
        return out

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
    def layer_shapes(self, spec: SubnetSpec) -> list[LayerShape]:
        cfg = self.config
        shapes, cin, res = stem_shapes(cfg, self.input_resolution(spec), self.stage_width(spec, 0))
        for i, (st, layers) in enumerate(zip(cfg.stages, spec.stages, strict=True)):
            kind, width = BLOCK_KINDS.get(st.block), self.stage_width(spec, i)
            for j, layer in enumerate(layers):
                stride = st.stride if j == 0 else 1
                block, res = kind.shapes(f"stages.{i}.{j}", cin, width, stride, res, layer, st, j == 0)
                shapes += block
                cin = width
        return shapes + head_shapes(cfg, cin)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "hash": self.hash, "genes": self.n_genes,
                "subnets": self.size(), "formats": sorted(self.all_formats())}
