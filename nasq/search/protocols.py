"""What the search is given, as typed protocols: it sees genomes and specs, never torch or the
supernet. The pipeline injects a cost model (:class:`nasq.hardware.CostModel`), a predictor fitter
(fitting :class:`nasq.predict.fit.AccuracyPredictor`) and an evaluator (true evaluations, in
process or on Ray); tests inject cheap stand-ins with the same shape."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from nasq.space import SubnetSpec


class Candidate(Protocol):
    """What the search needs of one candidate: a :class:`nasq.space.SubnetSpec` of a network space,
    a :class:`nasq.space.GenericSpec` of a generic one."""

    def key(self) -> str: ...

    def short_key(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


@runtime_checkable
class Space(Protocol):
    """What the search uses of a search space; :class:`nasq.space.SearchSpace` (a network) and
    :class:`nasq.space.GenericSpace` (named categorical genes) both satisfy it. ``upper``: the
    largest choice index of each gene; ``canonical_batch``: one representative genome per distinct
    candidate; ``layer_table()``: None where the space has no per-layer table (a generic one), and
    vectorised cost/feature paths fall back to the per-spec one."""

    name: str
    hash: str
    n_genes: int
    upper: np.ndarray

    @property
    def gene_names(self) -> list[str]: ...

    def decode(self, genome: Any) -> Any: ...

    def encode(self, spec: Any) -> np.ndarray: ...

    def canonical(self, genome: Any) -> np.ndarray: ...

    def canonical_batch(self, genomes: np.ndarray) -> np.ndarray: ...

    def sample(self, rng: np.random.Generator, n: int, weighted: bool = False) -> list[Any]: ...

    def sample_unique(self, rng: np.random.Generator, n: int, exclude: set[str] | None = None) -> list[Any]: ...

    def smallest(self) -> Any: ...

    def largest(self) -> Any: ...

    def layer_table(self) -> Any: ...


class CostScorer(Protocol):
    """Optionally also ``score_genomes(genomes) -> dict`` (same metrics, one row per genome of the
    space's integer matrix, canonical): predictor-scored searches then skip decoding
    (:func:`nasq.search.linas.genome_scorer` looks for it with ``getattr``)."""

    def score(self, specs: list[SubnetSpec]) -> dict[str, np.ndarray]:
        """Per metric (``latency_ms``, ``size_mb``, ``bops_g``, ...), one value per spec."""
        ...


class AccuracyModel(Protocol):
    """A fitted accuracy predictor. Optionally also ``predict_genomes(genomes)`` (and
    ``predict_with_std_genomes``): a whole population's genome matrix in one call."""

    @property
    def has_uncertainty(self) -> bool: ...

    def predict(self, specs: list[SubnetSpec]) -> np.ndarray: ...

    def predict_with_std(self, specs: list[SubnetSpec]) -> tuple[np.ndarray, np.ndarray]: ...


class PredictorFitter(Protocol):
    def __call__(self, specs: list[SubnetSpec], top1: np.ndarray, seed: int) -> AccuracyModel:
        """A predictor fitted on ``specs`` and their measured ``top1``, seeded by ``seed``."""
        ...


class Evaluator(Protocol):
    def __call__(self, specs: list[SubnetSpec]) -> list[float | None]:
        """True top1 (percent) per spec, in order; None where the evaluation failed."""
        ...
