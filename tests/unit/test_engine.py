"""The array NSGA-II engine (nasq/search/engine.py) and its selection by ``search.engine``."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pymoo.core.population import Population
from pymoo.core.problem import Problem

from nasq.errors import ConfigError, NasqError
from nasq.search import engine
from nasq.search.nsga import nsga2_population, run_nsga2, use_array_engine
from nasq.search.operators import FeasibleFirstRankAndCrowding
from nasq.search.pareto import non_dominated, to_minimisation
from nasq.space.generic import GenericSpace
from nasq.specs import ConstraintSpec, SearchConfig, validate

OBJS = ("top1", "latency_ms", "size_mb")


def _by_genome(cost):
    def score(G):
        c = cost.score_genomes(G)
        return {"top1": 90 - 1.0 / (c["bops_g"] + 0.05), **c}

    return score


def _array(**kw) -> SearchConfig:
    return SearchConfig(engine="array", **kw)


def _keys(front) -> list[str]:
    return [c.spec.key() for c in front]


def test_same_seed_same_front_and_other_seeds_differ(space, cost):
    cfg = _array(population=24, generations=8, seed=3)
    a = run_nsga2(space, None, OBJS, (), cfg, _by_genome(cost))
    b = run_nsga2(space, None, OBJS, (), cfg, _by_genome(cost))
    assert _keys(a) == _keys(b) and len(a) > 1
    assert [c.predicted for c in a] == [c.predicted for c in b]
    others = {tuple(_keys(run_nsga2(space, None, OBJS, (), cfg.model_copy(update={"seed": s}), _by_genome(cost))))
              for s in (4, 5)}
    assert tuple(_keys(a)) not in others


def test_population_is_canonical_unique_and_sorted_by_rank(space, cost):
    pop = nsga2_population(space, None, OBJS, (), _array(population=30, generations=6, seed=0), _by_genome(cost))
    keys = _keys(pop)
    assert len(keys) == len(set(keys)) == 30
    G = np.stack([c.genome for c in pop])
    assert np.array_equal(space.canonical_batch(G), G)
    ranks = [c.rank for c in pop]
    assert ranks == sorted(ranks) and ranks[0] == 0
    # the rank-0 members are exactly the non-dominated ones of the final population
    F = to_minimisation(np.array([[c.predicted[o] for o in OBJS] for c in pop]), OBJS)
    assert sorted(non_dominated(F).tolist()) == [i for i, r in enumerate(ranks) if r == 0]


def test_constraint_respected_and_impossible_one_is_clear(space, cost):
    sizes = cost.score(space.sample_unique(np.random.default_rng(0), 40))["size_mb"]
    limit = float(np.quantile(sizes, 0.3))
    cons = (ConstraintSpec(metric="size_mb", max=limit),)
    out = nsga2_population(space, None, ("top1", "latency_ms"), cons, _array(population=24, generations=8, seed=1),
                           _by_genome(cost))
    assert out and all(c.predicted["size_mb"] <= limit for c in out)
    cons = (ConstraintSpec(metric="size_mb", max=1e-6),)
    with pytest.raises(NasqError, match=r"no subnet meets the constraints: size_mb <= 1e-06 \(best seen"):
        run_nsga2(space, None, ("top1", "size_mb"), cons, _array(population=8, generations=2, seed=0),
                  _by_genome(cost))


def test_spec_scorer_gives_the_genome_scorers_front(space, cost):
    """Without a genome scorer the array engine decodes rows for ``score``: same values, same front."""
    def by_spec(specs):
        c = cost.score(specs)
        return {"top1": 90 - 1.0 / (c["bops_g"] + 0.05), **c}

    cfg = _array(population=20, generations=5, seed=2)
    assert _keys(run_nsga2(space, by_spec, OBJS, (), cfg)) == _keys(run_nsga2(space, None, OBJS, (), cfg,
                                                                            _by_genome(cost)))


def _toy():
    space = GenericSpace.of("toy", {"a": list(range(6)), "b": list(range(6)), "c": list(range(6))})

    def score(G):
        G = np.asarray(G, dtype=np.float64)
        return {"top1": G.sum(axis=1), "latency_ms": G[:, 0] ** 2 + 2 * G[:, 1] ** 2 + 3 * G[:, 2] ** 2}

    return space, score


def test_finds_the_enumerated_front_of_a_tiny_problem():
    space, score = _toy()
    every = np.array(list(itertools.product(range(6), repeat=3)))
    values = score(every)
    F = to_minimisation(np.column_stack([values["top1"], values["latency_ms"]]), ("top1", "latency_ms"))
    truth = {tuple(g) for g in every[non_dominated(F)]}
    front = run_nsga2(space, None, ("top1", "latency_ms"), (), _array(population=40, generations=30, seed=0), score)
    assert {tuple(int(x) for x in c.genome) for c in front} == truth


def test_initial_population_is_used():
    space, score = _toy()
    initial = np.array([[5, 5, 5], [0, 0, 0], [5, 5, 5]])  # the duplicate is dropped
    pop = engine.run(space, lambda X: (score(X), np.zeros((len(X), 1)), np.zeros((len(X), 0))), 4, 1, 0, initial)
    assert sorted(map(tuple, pop.X.tolist())) == [(0, 0, 0), (5, 5, 5)]


@pytest.mark.parametrize("seed", range(3))
def test_survival_keeps_what_pymoos_feasible_first_survival_keeps(seed):
    rng = np.random.default_rng(seed)
    n = 60
    F = rng.integers(0, 6, size=(n, 2)).astype(float)  # ties: crowding and random cuts matter
    G = rng.normal(0, 1, size=(n, 1))
    X = np.arange(n)[:, None]
    problem = Problem(n_var=1, n_obj=2, n_ieq_constr=1)
    for n_survive in (10, 30, 50):
        ref = FeasibleFirstRankAndCrowding().do(problem, Population.new(X=X, F=F, G=G), n_survive=n_survive,
                                                random_state=np.random.default_rng(7))
        pop = engine.evaluated(X, lambda X: ({}, F, G))
        ours = engine.survive(pop, n_survive, np.random.default_rng(7))
        assert ours.X.ravel().tolist() == ref.get("X").ravel().tolist()
        feasible = ours.cv <= 0
        assert ours.rank[feasible].tolist() == [i.get("rank") for i in ref if i.CV[0] <= 0]


def test_engine_field_selects_and_validates():
    assert SearchConfig().engine == "auto"
    genome_score = object()
    assert use_array_engine(SearchConfig(), genome_score) and not use_array_engine(SearchConfig(), None)
    assert use_array_engine(SearchConfig(engine="array"), None)
    assert not use_array_engine(SearchConfig(engine="pymoo"), genome_score)
    with pytest.raises(ConfigError, match=r"experiment\.yaml: engine: .*'auto', 'array' or 'pymoo', got 'fast'"):
        validate(SearchConfig, {"engine": "fast"}, "experiment.yaml")


@pytest.mark.parametrize("seed", range(40))
def test_sbx_gives_pymoos_children_and_draws(seed):
    from pymoo.operators.crossover.sbx import cross_sbx

    rng = np.random.default_rng(seed)
    n_var, m = int(rng.integers(1, 40)), int(rng.integers(1, 60))
    upper = rng.integers(0, 5, n_var).astype(np.float64)  # some genes with one choice
    X = np.stack([rng.integers(0, upper + 1, size=(m, n_var)) for _ in range(2)]).astype(np.float64)
    X[1, : m // 3] = X[0, : m // 3]  # identical parents: no crossover there
    col = np.ones((m, 1))
    ours_rng, pymoo_rng = np.random.default_rng(seed + 99), np.random.default_rng(seed + 99)
    ref = cross_sbx(X.copy(), np.zeros(n_var), upper, engine.SBX_ETA * col, engine.SBX_PROB_VAR * col,
                    engine.SBX_PROB_BIN * col, random_state=pymoo_rng)
    assert np.array_equal(engine.sbx(X.copy(), upper, ours_rng), ref)
    assert ours_rng.random() == pymoo_rng.random()  # the same draws consumed
