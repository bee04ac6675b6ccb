"""What the search is given, as typed protocols: it sees genomes and specs, never torch or the
supernet. The pipeline injects a cost model (:class:`nasq.hardware.CostModel`), a predictor fitter
(fitting :class:`nasq.predict.fit.AccuracyPredictor`) and an evaluator (true evaluations, in
process or on Ray); tests inject cheap stand-ins with the same shape."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from nasq.space import SubnetSpec


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
