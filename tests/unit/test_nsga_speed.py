"""The NSGA-II speed-ups: duplicate elimination by hashed genome rows (and the faster paths
that must give what the old ones gave)."""

from __future__ import annotations

import numpy as np
import pytest
from pymoo.core.duplicate import DefaultDuplicateElimination
from pymoo.core.population import Population

from nasq.search import operators
from nasq.search.nsga import run_nsga2
from nasq.search.operators import RowDuplicateElimination, genome_rows, make_duplicates
from nasq.specs import SearchConfig


def _pop(X: np.ndarray) -> Population:
    return Population.new(X=np.asarray(X))


def _brute_self(X: np.ndarray) -> list[int]:
    """Indices kept: a row is dropped when an earlier row equals it."""
    return [i for i in range(len(X)) if not any(np.array_equal(X[i], X[j]) for j in range(i))]


def _brute_other(X: np.ndarray, *others: np.ndarray) -> list[int]:
    return [i for i in range(len(X)) if not any(np.array_equal(X[i], o) for other in others for o in other)]


@pytest.mark.parametrize("seed", range(5))
def test_finds_exactly_the_duplicate_rows_and_keeps_the_first(seed):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 2, size=(60, 4))  # 16 distinct rows in 60: many duplicates
    kept, no_dup, dup = RowDuplicateElimination().do(_pop(X), return_indices=True)
    assert no_dup == _brute_self(X)
    assert sorted(no_dup + dup) == list(range(len(X))) and dup
    assert np.array_equal(genome_rows(kept), X[no_dup])
    # pymoo's pairwise-distance elimination, the one replaced, agrees
    assert np.array_equal(genome_rows(kept), genome_rows(DefaultDuplicateElimination().do(_pop(X))))


@pytest.mark.parametrize("seed", range(5))
def test_offspring_against_population_and_earlier_offspring(seed):
    # pymoo's infill calls do(new_offspring, population, offspring_so_far)
    rng = np.random.default_rng(seed)
    off, pop, earlier = (rng.integers(0, 3, size=(n, 3)) for n in (40, 20, 10))
    got = RowDuplicateElimination().do(_pop(off), _pop(pop), _pop(earlier))
    expect = [i for i in _brute_self(off) if i in _brute_other(off, pop, earlier)]
    assert np.array_equal(genome_rows(got), off[expect])
    ref = DefaultDuplicateElimination().do(_pop(off), _pop(pop), _pop(earlier))
    assert np.array_equal(genome_rows(got), genome_rows(ref))
    # empty others are skipped, as pymoo does
    alone = RowDuplicateElimination().do(_pop(off), Population.empty(), _pop(pop))
    assert np.array_equal(genome_rows(alone), off[[i for i in _brute_self(off) if i in _brute_other(off, pop)]])


def test_equal_values_match_whatever_their_dtype_or_sign_of_zero():
    X = np.array([[0.0, 1.0], [-0.0, 1.0], [0.0, 1.5], [0.0, 2.0]])
    got = genome_rows(RowDuplicateElimination().do(_pop(X)))
    assert np.array_equal(got, X[[0, 2, 3]])
    ints = np.array([[0, 1], [0, 2]])
    assert len(RowDuplicateElimination().do(_pop(X), _pop(ints))) == 1  # only [0, 1.5] is new
    assert len(RowDuplicateElimination().do(Population.empty())) == 0


def test_make_survival_kinds():
    from pymoo.operators.survival.rank_and_crowding import RankAndCrowding

    from nasq.search.operators import FeasibleFirstRankAndCrowding, make_survival

    assert isinstance(make_survival("nasq"), FeasibleFirstRankAndCrowding)
    assert type(make_survival("pymoo")) is RankAndCrowding
    with pytest.raises(ValueError, match="unknown operator set 'x'"):
        make_survival("x")


def test_make_duplicates_kinds():
    assert isinstance(make_duplicates("nasq"), RowDuplicateElimination)
    assert type(make_duplicates("pymoo")) is DefaultDuplicateElimination
    with pytest.raises(ValueError, match="unknown operator set 'x'"):
        make_duplicates("x")


def _bops_scorer(cm):
    """A synthetic top1 that rises with BOPs, beside the cost model's own metrics (specs in)."""
    def score(specs):
        c = cm.score(specs)
        return {"top1": 90 - 1.0 / (c["bops_g"] + 0.05), **c}
    return score


def test_same_front_as_pymoo_operators(space, profile, monkeypatch):
    """Same decisions, same random stream: the search gives the very same front either way."""
    from nasq.hardware import CostModel

    cm = CostModel(space, profile)
    score = _bops_scorer(cm)

    cfg = SearchConfig(population=24, generations=10, seed=5)
    objs = ("top1", "latency_ms", "size_mb")
    fronts = {}
    for kind in ("pymoo", "nasq"):
        monkeypatch.setattr(operators, "operator_set", kind)
        fronts[kind] = [(c.spec.key(), c.predicted["top1"]) for c in run_nsga2(space, score, objs, (), cfg)]
    assert fronts["nasq"] == fronts["pymoo"] and len(fronts["nasq"]) > 1


def test_empty_populations_and_genome_rows():
    assert genome_rows(Population.empty()).shape == (0, 0)
    dedup = RowDuplicateElimination()
    assert not dedup._do(Population.empty(), None, np.zeros(0, dtype=bool)).any()
    X = np.array([[1, 2], [1, 2]])
    assert not dedup._do(_pop(X), Population.empty(), np.zeros(2, dtype=bool)).any()


def _constrained_pop(rng, n=60):
    F = rng.integers(0, 6, size=(n, 2)).astype(float)  # ties and equal points: crowding and random tie-breaks matter
    G = rng.normal(0, 1, size=(n, 1))  # about half infeasible
    return Population.new(X=rng.integers(0, 3, size=(n, 3)), F=F, G=G)


@pytest.mark.parametrize("seed", range(4))
def test_survival_same_survivors_as_pymoo(seed):
    from pymoo.core.problem import Problem
    from pymoo.operators.survival.rank_and_crowding import RankAndCrowding

    from nasq.search.operators import FeasibleFirstRankAndCrowding

    problem = Problem(n_var=3, n_obj=2, n_ieq_constr=1)
    for n_survive in (10, 30, 50):  # fewer than the feasible ones, and more (infeasible fill the rest)
        ours = FeasibleFirstRankAndCrowding().do(problem, _constrained_pop(np.random.default_rng(seed)),
                                                 n_survive=n_survive, random_state=np.random.default_rng(7))
        ref = RankAndCrowding().do(problem, _constrained_pop(np.random.default_rng(seed)),
                                   n_survive=n_survive, random_state=np.random.default_rng(7))
        assert len(ours) == len(ref) == n_survive
        for key in ("X", "F", "CV"):
            assert np.array_equal(ours.get(key), ref.get(key))
        assert [i.get("rank") for i in ours] == [i.get("rank") for i in ref]


def test_survival_all_infeasible_and_unconstrained_match_pymoo():
    from pymoo.core.problem import Problem
    from pymoo.operators.survival.rank_and_crowding import RankAndCrowding

    from nasq.search.operators import FeasibleFirstRankAndCrowding

    rng = np.random.default_rng(3)
    F, G = rng.normal(size=(20, 2)), rng.uniform(0.1, 2, size=(20, 1))
    for problem, kw in ((Problem(n_var=1, n_obj=2, n_ieq_constr=1), {"G": G}), (Problem(n_var=1, n_obj=2), {})):
        out = [s().do(problem, Population.new(X=np.arange(20)[:, None], F=F, **kw), n_survive=8,
                      random_state=np.random.default_rng(0)).get("X").ravel().tolist()
               for s in (FeasibleFirstRankAndCrowding, RankAndCrowding)]
        assert out[0] == out[1] and len(out[0]) == 8


def test_same_constrained_front_as_pymoo_operators(space, profile, monkeypatch):
    """Both new operators at once, with a constraint that leaves part of the population infeasible."""
    from nasq.hardware import CostModel
    from nasq.specs import ConstraintSpec

    cm = CostModel(space, profile)
    score = _bops_scorer(cm)

    cfg = SearchConfig(population=24, generations=10, seed=2)
    sizes = cm.score(space.sample_unique(np.random.default_rng(0), 40))["size_mb"]
    cons = (ConstraintSpec(metric="size_mb", max=float(np.quantile(sizes, 0.3))),)
    fronts = {}
    for kind in ("pymoo", "nasq"):
        monkeypatch.setattr(operators, "operator_set", kind)
        fronts[kind] = [c.spec.key() for c in run_nsga2(space, score, ("top1", "latency_ms"), cons, cfg)]
    assert fronts["nasq"] == fronts["pymoo"] and fronts["pymoo"]


@pytest.mark.parametrize("seed", range(4))
def test_binary_tournament_same_winners_and_random_stream_as_pymoo(seed):
    from types import SimpleNamespace

    from pymoo.algorithms.moo.nsga2 import binary_tournament as pymoo_binary_tournament

    from nasq.search.operators import binary_tournament

    rng = np.random.default_rng(seed)
    pop = _constrained_pop(rng, n=40)
    G = pop.get("G")
    G[rng.random(len(G)) < 0.5] = -1.0  # more feasible pairs: the dominance and crowding branches
    pop.set("G", G)
    crowd = rng.integers(0, 3, size=len(pop)).astype(float)  # equal crowding: random tie-breaks
    crowd[rng.random(len(pop)) < 0.1] = np.inf
    pop.set("crowding", crowd)
    P = rng.integers(0, len(pop), size=(200, 2))
    algos = [SimpleNamespace(tournament_type="comp_by_dom_and_crowding", random_state=np.random.default_rng(9))
             for _ in range(2)]
    ours, ref = binary_tournament(pop, P, algos[0]), pymoo_binary_tournament(pop, P, algos[1])
    assert ours.shape == ref.shape == (200, 1)
    assert np.array_equal(ours, ref)
    assert algos[0].random_state.random() == algos[1].random_state.random()  # same draws consumed
    assert (pop.get("CV")[P].reshape(200, 2) > 0).any()  # the infeasible branch ran too


@pytest.mark.parametrize("params", [
    {"n_estimators": 300, "max_depth": 3, "learning_rate": 0.05, "subsample": 0.8},  # gbdt_onehot's recipe
    {"n_estimators": 40, "max_depth": 6},  # uneven depths: leaves above max_depth
    {"n_estimators": 30, "loss": "huber"}, {"n_estimators": 30, "loss": "quantile", "alpha": 0.3},
    {"n_estimators": 20, "init": "zero"},
])
def test_gbdt_predicts_sklearns_very_values(params):
    from nasq.predict.models import GBDTPredictor

    rng = np.random.default_rng(0)

    def rows(n):
        X = rng.integers(0, 2, size=(n, 30)).astype(np.float64)  # one-hot-like columns plus costs
        X[:, -3:] = rng.normal(size=(n, 3)) * 1e3
        return X

    X = rows(150)
    p = GBDTPredictor(params, seed=1).fit(X, X[:, :8].sum(axis=1) + X[:, -1] * 1e-3 + rng.normal(0, 0.1, 150))
    Xt = np.vstack([rows(100), X[:5]])
    ours = p.predict(Xt)
    assert p._arrays is not None and p._arrays.exact
    assert np.array_equal(ours, p._model.predict(Xt))
    assert np.ptp(ours) > 0
    with pytest.raises(ValueError, match="features"):
        p.predict(Xt[:, :-1])
    bad = Xt.copy()
    bad[0, -1] = np.nan
    with pytest.raises(ValueError, match="NaN"):  # scikit-learn's own check still applies
        p.predict(bad)
    p.fit(X[:100], X[:100, 0])  # a refit rebuilds the arrays
    assert np.array_equal(p.predict(Xt), p._model.predict(Xt))
