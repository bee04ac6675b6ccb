"""LINAS, predictors in the loop: refit the accuracy predictor on every true evaluation so far, run
NSGA-II on predicted top1 + cost model, evaluate the most promising new candidates."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from nasq.errors import NasqError
from nasq.search.nsga import Candidate, GenomeScoreFn, nsga2_population
from nasq.search.protocols import AccuracyModel
from nasq.search.state import SearchState, derived_seed
from nasq.search.strategy import STRATEGIES, Proposal, Strategy, spec_of
from nasq.space import SubnetSpec


@STRATEGIES.register("linas")
class Linas(Strategy):
    """Predictors in the loop: refit the accuracy predictor on every true evaluation so far, run
    NSGA-II on predicted top1 + cost model, evaluate the most promising new candidates (spread along
    the predicted front) and, where the predictor has an uncertainty, the most uncertain ones."""

    name = "linas"
    extendable = True

    def propose(self, state: SearchState, known: dict[str, float], rng: np.random.Generator, k: int) -> Proposal:
        task, cfg = self.task, self.task.config
        ok = [key for key, v in known.items() if math.isfinite(v)]
        if len(ok) < max(cfg.initial_evals, 4):  # too few evaluations for the predictor to fit
            return self._before_predictor(state, known, rng, k), None
        if task.fit_predictor is None:
            raise NasqError(f"strategy '{self.name}' needs an accuracy predictor (fit_predictor)")
        specs = [spec_of(task, state, key) for key in ok]
        predictor = task.fit_predictor(specs, np.array([known[key] for key in ok]), cfg.seed)

        def score(batch: list[SubnetSpec]) -> dict[str, np.ndarray]:
            return task.with_quality({"top1": predictor.predict(batch), **task.cost.score(batch)})

        nsga_cfg = cfg.model_copy(update={"seed": derived_seed(cfg.seed, state.iteration)})
        by_genome = genome_scorer(predictor, task.cost)
        if by_genome is not None and task.quality != "top1":
            by_genome = _finished(by_genome, task.with_quality)
        initial = self._initial_population(state, known, predictor, rng)
        pool = [c for c in nsga2_population(task.space, score, task.objectives, task.constraints, nsga_cfg,
                                            by_genome, initial=initial)
                if c.spec.key() not in known]
        chosen = self._choose(predictor, pool, k)
        if len(chosen) < k:  # the predicted population is exhausted: explore at random
            extra = self.random_feasible(rng, k - len(chosen), set(known) | {c.spec.key() for c in chosen})
            if extra:
                values = score(extra)
                chosen += [Candidate(task.space.encode(s), s, {m: float(v[i]) for m, v in values.items()})
                           for i, s in enumerate(extra)]
        return [c.spec for c in chosen], [c.predicted for c in chosen]

    def _before_predictor(self, state: SearchState, known: dict[str, float], rng: np.random.Generator,
                          k: int) -> list[SubnetSpec]:
        """The batch proposed while too few evaluations are known to fit the predictor: ``k``
        random feasible subnets (a subclass may seed it)."""
        return self.random_feasible(rng, k, set(known))

    def _initial_population(self, state: SearchState, known: dict[str, float], predictor: AccuracyModel,
                            rng: np.random.Generator) -> np.ndarray | None:
        """The inner NSGA-II's first population as genomes, called once per iteration after the
        predictor is fitted; None: pymoo's uniform random sampling."""
        return None

    def _choose(self, predictor: AccuracyModel, pool: list[Candidate], k: int) -> list[Candidate]:
        n_uncertain = int(round(k * self.task.config.uncertain_fraction)) if predictor.has_uncertainty else 0
        chosen = pick_spread([c for c in pool if c.rank == 0], k - n_uncertain)
        taken = {c.spec.key() for c in chosen}
        rest = [c for c in pool if c.spec.key() not in taken]
        chosen += rest[: max(0, k - n_uncertain - len(chosen))]  # next ranks, when the front is short
        taken = {c.spec.key() for c in chosen}
        rest = [c for c in pool if c.spec.key() not in taken]
        if n_uncertain and rest:
            _, std = predictor.predict_with_std([c.spec for c in rest])
            for i in np.argsort(-std, kind="stable")[:n_uncertain]:
                rest[i].predicted["top1_std"] = float(std[i])
                chosen.append(rest[i])
        return chosen[:k]


def _finished(score: GenomeScoreFn, finish: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]) -> GenomeScoreFn:
    return lambda genomes: finish(score(genomes))


def genome_scorer(predictor: AccuracyModel, cost: object) -> GenomeScoreFn | None:
    """Predicted top1 + costs of a genome matrix, when both the predictor and the cost model have
    a genome path (``predict_genomes``, ``score_genomes``: nasq's AccuracyPredictor and CostModel);
    None otherwise (test stand-ins), and the search scores decoded specs instead."""
    predict, costs = getattr(predictor, "predict_genomes", None), getattr(cost, "score_genomes", None)
    if predict is None or costs is None:
        return None

    def score(genomes: np.ndarray) -> dict[str, np.ndarray]:
        return {"top1": predict(genomes), **costs(genomes)}

    return score


def pick_spread(candidates: list[Candidate], k: int) -> list[Candidate]:
    """At most ``k`` candidates spread evenly along predicted top1."""
    ordered = sorted(candidates, key=lambda c: -c.predicted["top1"])
    if len(ordered) <= k or k <= 0:
        return ordered[: max(k, 0)]
    idx = np.unique(np.round(np.linspace(0, len(ordered) - 1, k)).astype(int))
    return [ordered[i] for i in idx]
