"""Search spaces: the genome codec, canonical subnet specs and their layer-by-layer shapes.

A genome is a fixed-length vector of choice indices, one gene per (stage, slot, field). Genes of
layers beyond a stage's active depth are inactive; :meth:`SearchSpace.canonical` zeroes them so
that two genomes describing the same subnet compare equal and share one :meth:`SubnetSpec.key`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nasq.errors import ConfigError
from nasq.files import sha256_bytes
from nasq.formats import FORMATS, highest_bits, lowest_bits
from nasq.specs import SpaceConfig, load_model, validate

LAYER_FIELDS = ("kernel", "expand", "w_format", "a_format")
STEM_FORMAT = "fp32"  # stem and classifier stay fp32: first/last layers are the most sensitive


@dataclass(frozen=True)
class LayerChoice:
    kernel: int
    expand: int
    w_format: str
    a_format: str

    def token(self) -> str:
        return f"k{self.kernel}e{self.expand}.{self.w_format}.{self.a_format}"


@dataclass(frozen=True)
class SubnetSpec:
    """A concrete subnet: active layers per stage. Frozen and hashable; ``key()`` is canonical."""

    stages: tuple[tuple[LayerChoice, ...], ...]

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(len(s) for s in self.stages)

    def key(self) -> str:
        return "-".join("+".join(layer.token() for layer in stage) for stage in self.stages)

    def short_key(self) -> str:
        return sha256_bytes(self.key().encode())[:12]

    def layers(self) -> list[LayerChoice]:
        return [layer for stage in self.stages for layer in stage]

    def formats_used(self) -> set[tuple[str, str]]:
        return {(layer.w_format, layer.a_format) for layer in self.layers()}

    def to_dict(self) -> dict[str, Any]:
        return {"stages": [[asdict(layer) for layer in stage] for stage in self.stages]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SubnetSpec:
        return cls(tuple(tuple(LayerChoice(**layer) for layer in stage) for stage in data["stages"]))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


@dataclass(frozen=True)
class Gene:
    name: str
    choices: tuple[Any, ...]
    stage: int
    slot: int | None  # None for a stage's depth gene
    field: str


@dataclass(frozen=True)
class LayerShape:
    """One weight layer of a subnet, as the cost model sees it."""

    name: str
    op: str  # conv | dwconv | linear
    cin: int
    cout: int
    kernel: int
    stride: int
    hin: int
    hout: int
    w_format: str
    a_format: str

    @property
    def groups(self) -> int:
        return self.cin if self.op == "dwconv" else 1

    @property
    def params(self) -> int:
        return self.cout * (self.cin // self.groups) * self.kernel * self.kernel

    @property
    def macs(self) -> int:
        return self.params * self.hout * self.hout

    @property
    def in_elements(self) -> int:
        return self.cin * self.hin * self.hin


class SearchSpace:
    """Built from a validated :class:`SpaceConfig`; never mutated."""

    def __init__(self, config: SpaceConfig, source: str = "<memory>", content_hash: str = ""):
        self.config, self.source = config, source
        self.hash = content_hash or sha256_bytes(config.model_dump_json().encode())
        self._check_kinds()
        self.genes = self._build_genes()
        self.n_genes = len(self.genes)
        self.upper = np.array([len(g.choices) - 1 for g in self.genes], dtype=np.int64)
        self._depth_gene = {g.stage: i for i, g in enumerate(self.genes) if g.slot is None}

    # ------------------------------------------------------------ construction
    @classmethod
    def from_yaml(cls, path: str | Path, source: str | None = None) -> SearchSpace:
        config, digest = load_model(SpaceConfig, Path(path), source)
        return cls(config, source or str(path), digest)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> SearchSpace:
        return cls(validate(SpaceConfig, data, source), source)

    def _check_kinds(self) -> None:
        from nasq.supernet_kinds import BLOCK_KINDS

        for i, stage in enumerate(self.config.stages):
            if stage.block not in BLOCK_KINDS:
                raise ConfigError(self.source, f"stages[{i}].block", BLOCK_KINDS.miss_message(stage.block))
        for field in ("w_format", "a_format"):
            for j, name in enumerate(getattr(self.config.precision, field)):
                if name not in FORMATS:
                    raise ConfigError(self.source, f"precision.{field}[{j}]", FORMATS.miss_message(name))

    def _build_genes(self) -> list[Gene]:
        genes: list[Gene] = []
        menu = self.config.precision
        for i, st in enumerate(self.config.stages):
            genes.append(Gene(f"stage{i}.depth", st.depth, i, None, "depth"))
            for j in range(max(st.depth)):
                for field, choices in zip(LAYER_FIELDS, (st.kernel, st.expand, menu.w_format, menu.a_format), strict=True):
                    genes.append(Gene(f"stage{i}.layer{j}.{field}", tuple(choices), i, j, field))
        return genes

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def gene_names(self) -> list[str]:
        return [g.name for g in self.genes]

    # ------------------------------------------------------------ codec
    def decode(self, genome: np.ndarray | list[int]) -> SubnetSpec:
        g = self._check_genome(genome)
        stages = []
        for i, _ in enumerate(self.config.stages):
            depth = self.genes[self._depth_gene[i]].choices[g[self._depth_gene[i]]]
            layers = []
            for j in range(depth):
                base = self._depth_gene[i] + 1 + j * len(LAYER_FIELDS)
                vals = [self.genes[base + f].choices[g[base + f]] for f in range(len(LAYER_FIELDS))]
                layers.append(LayerChoice(*vals))
            stages.append(tuple(layers))
        return SubnetSpec(tuple(stages))

    def encode(self, spec: SubnetSpec) -> np.ndarray:
        if len(spec.stages) != len(self.config.stages):
            raise ValueError(f"spec has {len(spec.stages)} stages, space {self.name} has {len(self.config.stages)}")
        g = np.zeros(self.n_genes, dtype=np.int64)
        for i, layers in enumerate(spec.stages):
            dg = self._depth_gene[i]
            g[dg] = self._index(dg, len(layers))
            for j, layer in enumerate(layers):
                base = dg + 1 + j * len(LAYER_FIELDS)
                for f, field in enumerate(LAYER_FIELDS):
                    g[base + f] = self._index(base + f, getattr(layer, field))
        return g

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
    def sample(self, rng: np.random.Generator, n: int) -> list[SubnetSpec]:
        raw = rng.integers(0, self.upper + 1, size=(n, self.n_genes))
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
            stages.append(tuple(LayerChoice(pick(st.kernel), pick(st.expand), fmt, fmt) for _ in range(pick(st.depth))))
        return SubnetSpec(tuple(stages))

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
        """Number of distinct subnets (canonical)."""
        menu = self.config.precision
        per_layer = [len(st.kernel) * len(st.expand) * len(menu.w_format) * len(menu.a_format) for st in self.config.stages]
        total = 1.0
        for st, n in zip(self.config.stages, per_layer, strict=True):
            total *= sum(float(n) ** d for d in st.depth)
        return total

    # ------------------------------------------------------------ analytics
    def layer_shapes(self, spec: SubnetSpec) -> list[LayerShape]:
        cfg = self.config
        res = cfg.input.resolution
        out_res = _conv_out(res, cfg.stem.stride)
        shapes = [LayerShape("stem", "conv", cfg.input.channels, cfg.stem.channels, cfg.stem.kernel,
                             cfg.stem.stride, res, out_res, STEM_FORMAT, STEM_FORMAT)]
        cin, res = cfg.stem.channels, out_res
        for i, (st, layers) in enumerate(zip(cfg.stages, spec.stages, strict=True)):
            for j, layer in enumerate(layers):
                stride = st.stride if j == 0 else 1
                mid, hout = cin * layer.expand, _conv_out(res, stride)
                w, a = layer.w_format, layer.a_format
                p = f"stages.{i}.{j}"
                if layer.expand != 1:
                    shapes.append(LayerShape(f"{p}.expand", "conv", cin, mid, 1, 1, res, res, w, a))
                shapes.append(LayerShape(f"{p}.dw", "dwconv", mid, mid, layer.kernel, stride, res, hout, w, a))
                shapes.append(LayerShape(f"{p}.project", "conv", mid, st.width, 1, 1, hout, hout, w, a))
                cin, res = st.width, hout
        shapes.append(LayerShape("classifier", "linear", cin, cfg.input.num_classes, 1, 1, 1, 1,
                                 STEM_FORMAT, STEM_FORMAT))
        return shapes

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "hash": self.hash, "genes": self.n_genes, "subnets": self.size(),
                "formats": sorted(self.all_formats())}


def _conv_out(res: int, stride: int) -> int:
    return (res + stride - 1) // stride
