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
