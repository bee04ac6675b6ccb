"""A generic categorical search space (``family: generic``): named genes with listed choices and
no network, for driving the search on a foreign problem (a NAS-Bench-201 cell, a pipeline's
hyperparameters) with the user's own evaluator and cost functions.

It offers what the search uses of a space (:class:`nasq.search.protocols.Space`): the genome codec,
canonical specs with a key, seeded sampling, the two extreme genomes, a content hash. It has no
layers, so no layer table: cost models and predictor features that need one take their per-spec
path or the injected costs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nasq.files import sha256_bytes
from nasq.space.search_space import SearchSpace, unique_samples
from nasq.space.types import Gene
from nasq.specs import GenericSpaceConfig, SpaceConfig, load_model, read_yaml, validate

GENERIC = "generic"


def _token(value: Any) -> str:
    """A choice as it appears in a key: strings bare unless they would read as another scalar."""
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            return value
    return json.dumps(value)


@dataclass(frozen=True)
class GenericSpec:
    """One candidate of a generic space: ``(gene name, chosen value)`` pairs in the space's gene
    order. Frozen and hashable; ``key()`` is canonical (every gene named)."""

    genes: tuple[tuple[str, Any], ...]

    def __getitem__(self, name: str) -> Any:
        for key, value in self.genes:
            if key == name:
                return value
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.genes)

    def key(self) -> str:
        return ",".join(f"{name}={_token(value)}" for name, value in self.genes)

    def short_key(self) -> str:
        return sha256_bytes(self.key().encode())[:12]

    # a generic candidate has no network: these keep code that summarises subnets working
    @property
    def depths(self) -> tuple[int, ...]:
        return ()

    def layers(self) -> list[Any]:
        return []

    def to_dict(self) -> dict[str, Any]:
        return {"genes": dict(self.genes)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenericSpec:
        genes = data["genes"]
        if not isinstance(genes, dict) or set(data) != {"genes"}:
            raise ValueError("a generic spec is {'genes': {name: value, ...}}")
        return cls(tuple(genes.items()))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


class GenericSpace:
    """Built from a validated :class:`GenericSpaceConfig`; never mutated. The genome is one choice
    index per gene, in the file's order; every genome is canonical (no gene is ever inactive)."""

    def __init__(self, config: GenericSpaceConfig, source: str = "<memory>", content_hash: str = ""):
        self.config, self.source = config, source
        self.hash = content_hash or sha256_bytes(config.model_dump_json().encode())
        self.genes = [Gene(g.name, tuple(g.choices), -1, None, g.name) for g in config.genes]
        self.n_genes = len(self.genes)
        self.upper = np.array([len(g.choices) - 1 for g in self.genes], dtype=np.int64)

    @classmethod
    def from_yaml(cls, path: str | Path, source: str | None = None) -> GenericSpace:
        config, digest = load_model(GenericSpaceConfig, Path(path), source)
        return cls(config, source or str(path), digest)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> GenericSpace:
        return cls(validate(GenericSpaceConfig, data, source), source)

    @classmethod
    def of(cls, name: str, genes: dict[str, list[Any]]) -> GenericSpace:
        """From Python: ``GenericSpace.of("cell", {"op_0": ["none", "conv3x3"], ...})``."""
        return cls.from_dict({"name": name, "family": GENERIC,
                              "genes": [{"name": k, "choices": list(v)} for k, v in genes.items()]})

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def family(self) -> str:
        return GENERIC

    @property
    def gene_names(self) -> list[str]:
        return [g.name for g in self.genes]

    def format_gene_mask(self) -> np.ndarray:
        return np.zeros(self.n_genes, dtype=bool)

    def layer_table(self) -> None:
        """No layers: callers take their per-spec path."""
        return None

    # ------------------------------------------------------------ codec
    def decode(self, genome: np.ndarray | list[int]) -> GenericSpec:
        g = self._check_genomes(np.asarray(genome, dtype=np.int64).reshape(1, -1))[0]
        return GenericSpec(tuple((gene.name, gene.choices[i]) for gene, i in zip(self.genes, g, strict=True)))

    def encode(self, spec: GenericSpec) -> np.ndarray:
        if not isinstance(spec, GenericSpec) or [n for n, _ in spec.genes] != self.gene_names:
            raise ValueError(f"not a candidate of generic space {self.name!r} (genes: {self.gene_names})")
        return np.array([self._index(k, v) for k, (_, v) in enumerate(spec.genes)], dtype=np.int64)

    def _index(self, k: int, value: Any) -> int:
        # by type and value: True and 1 are different choices
        for i, c in enumerate(self.genes[k].choices):
            if type(c) is type(value) and c == value:
                return i
        raise ValueError(f"{self.genes[k].name}: {value!r} is not a choice of space {self.name} "
                         f"(choices: {list(self.genes[k].choices)})")

    def _check_genomes(self, genomes: np.ndarray) -> np.ndarray:
        G = np.asarray(genomes, dtype=np.int64)
        if G.ndim != 2 or G.shape[1] != self.n_genes:
            raise ValueError(f"genomes must have {self.n_genes} genes per row, got shape {G.shape}")
        bad = (G < 0) | (G > self.upper)
        if bad.any():
            row, k = (int(x[0]) for x in np.nonzero(bad))
            raise ValueError(f"gene {self.genes[k].name} = {G[row, k]} is out of range 0..{self.upper[k]}")
        return G

    def canonical(self, genome: np.ndarray | list[int]) -> np.ndarray:
        return self._check_genomes(np.asarray(genome, dtype=np.int64).reshape(1, -1))[0].copy()

    def canonical_batch(self, genomes: np.ndarray) -> np.ndarray:
        return self._check_genomes(genomes).copy()

    def active_genes(self, genomes: np.ndarray) -> np.ndarray:
        return np.ones(np.shape(genomes), dtype=bool)

    # ------------------------------------------------------------ sampling
    def sample(self, rng: np.random.Generator, n: int, weighted: bool = False) -> list[GenericSpec]:
        """``n`` uniformly random candidates (``weighted`` is accepted for the network spaces' sake)."""
        return [self.decode(g) for g in rng.integers(0, self.upper + 1, size=(n, self.n_genes))]

    def sample_unique(self, rng: np.random.Generator, n: int, exclude: set[str] | None = None) -> list[GenericSpec]:
        return unique_samples(lambda: self.sample(rng, 1)[0], n, exclude)

    def smallest(self) -> GenericSpec:
        """Every gene at its first choice (the choices' order is the user's: no size is implied)."""
        return self.decode(np.zeros(self.n_genes, dtype=np.int64))

    def largest(self) -> GenericSpec:
        """Every gene at its last choice."""
        return self.decode(self.upper)

    def size(self) -> float:
        total = math.prod(int(u) + 1 for u in self.upper)
        return float(total) if total.bit_length() <= 1023 else math.inf


def load_space(path: str | Path, source: str | None = None) -> Any:
    """The space in a YAML file: a :class:`GenericSpace` for ``family: generic``, else a network
    :class:`nasq.space.SearchSpace`; one ConfigError line for a file that is neither."""
    path = Path(path)
    data, raw = read_yaml(path, source)
    where = source or str(path)
    if isinstance(data, dict) and data.get("family") == GENERIC:
        return GenericSpace(validate(GenericSpaceConfig, data, where), where, sha256_bytes(raw))
    return SearchSpace(validate(SpaceConfig, data, where), where, sha256_bytes(raw))
