from __future__ import annotations

import numpy as np
import pytest

from nasq.errors import NasqError
from nasq.hardware import CostModel
from nasq.search.nsga import run_nsga2
from nasq.search.pareto import Front, FrontPoint, knee_index, non_dominated
from nasq.specs import ConstraintSpec, SearchConfig


def _score(space, profile):
    cm = CostModel(space, profile)

    def score(specs):
        c = cm.score(specs)
        # synthetic accuracy: bigger and higher-precision is better, with diminishing returns
        return {"top1": 90 - 1.0 / (c["bops_g"] + 0.05), **c}

    return score


def test_same_seed_same_front(space, profile):
    cfg = SearchConfig(population=24, generations=8, seed=3)
    objs = ("top1", "latency_ms", "size_mb")
    a = run_nsga2(space, _score(space, profile), objs, (), cfg)
    b = run_nsga2(space, _score(space, profile), objs, (), cfg)
    assert [c.spec.key() for c in a] == [c.spec.key() for c in b]
    keys = [c.spec.key() for c in a]
    assert len(keys) == len(set(keys)) > 1  # duplicates eliminated on canonical keys
    for c in a:
        assert np.array_equal(space.canonical(c.genome), c.genome)


def test_constraint_respected(space, profile):
    cfg = SearchConfig(population=24, generations=8, seed=0)
    cons = (ConstraintSpec(metric="size_mb", max=0.05),)
    out = run_nsga2(space, _score(space, profile), ("top1", "size_mb"), cons, cfg)
    assert out and all(c.predicted["size_mb"] <= 0.05 for c in out)


def test_impossible_constraint_is_clear(space, profile):
    cfg = SearchConfig(population=8, generations=2, seed=0)
    cons = (ConstraintSpec(metric="size_mb", max=1e-6),)
    with pytest.raises(NasqError, match=r"no subnet meets the constraints: size_mb <= 1e-06 \(best seen"):
        run_nsga2(space, _score(space, profile), ("top1", "size_mb"), cons, cfg)


def test_non_dominated_and_knee():
    F = np.array([[0, 1], [1, 0], [1, 1], [0.4, 0.4], [2, 2]])
    assert list(non_dominated(F)) == [0, 1, 3]
    assert knee_index(F[[0, 1, 3]]) == 2


def test_front_round_trip(space):
    specs = space.sample(np.random.default_rng(0), 3)
    pts = [FrontPoint(s, list(space.encode(s)), {"top1": 80.0 + i, "latency_ms": 0.1 * (i + 1), "size_mb": 0.1},
                      {"top1": 79.0 + i}) for i, s in enumerate(specs)]
    f = Front(("top1", "latency_ms", "size_mb"), pts, {"nasq.space": "x"})
    back = Front.from_dict(f.to_dict())
    assert [p.spec for p in back.points] == specs and back.lineage == {"nasq.space": "x"}
    assert f.pick("max-top1") == 2 and f.pick("min-latency") == 0
    assert f.to_csv().splitlines()[0].startswith("point,key")


def _mutated(upper, kind, n=4000):
    from pymoo.core.population import Population
    from pymoo.core.problem import Problem

    from nasq.search.operators import genes_changed, make_mutation

    problem = Problem(n_var=len(upper), xl=np.zeros(len(upper)), xu=upper.astype(float), vtype=int)
    X = np.random.default_rng(0).integers(0, upper + 1, size=(n, len(upper)))
    out = make_mutation(upper, kind).do(problem, Population.new("X", X.copy()), random_state=np.random.default_rng(1))
    Y = np.clip(np.rint(out.get("X").astype(float)), 0, upper).astype(np.int64)
    return genes_changed(X, Y)


def test_mutation_changes_about_one_varying_gene():
    # a NAS-Bench-201-like cell (6 genes x 5 choices) padded with 24 one-choice genes
    upper = np.array([4] * 6 + [0] * 24)
    changed = _mutated(upper, "varying")
    assert 0.9 < changed.mean() < 1.1
    old = _mutated(upper, "pm")  # pymoo's PM at 1/n_var: the padding dilutes it
    assert old.mean() < 0.3


def test_mutation_never_touches_one_choice_genes_and_is_seeded():
    from pymoo.core.population import Population
    from pymoo.core.problem import Problem

    from nasq.search.operators import VaryingGeneMutation

    upper = np.array([0, 3, 0, 1, 0])
    problem = Problem(n_var=5, xl=np.zeros(5), xu=upper.astype(float), vtype=int)
    X = np.zeros((500, 5), dtype=np.int64)
    a = VaryingGeneMutation(upper).do(problem, Population.new("X", X.copy()), random_state=np.random.default_rng(7))
    b = VaryingGeneMutation(upper).do(problem, Population.new("X", X.copy()), random_state=np.random.default_rng(7))
    Y = np.asarray(a.get("X"))
    assert np.array_equal(Y, np.asarray(b.get("X")))
    assert (Y[:, [0, 2, 4]] == 0).all() and (Y <= upper).all() and (Y[:, 1] > 0).any()
