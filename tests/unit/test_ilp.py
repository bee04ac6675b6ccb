"""ILP format allocation (scipy milp) against brute force, its infeasible budget, and the ``ilp`` and
``sensitivity_seeded`` strategies in the real search loop with a synthetic evaluator."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from nasq.errors import NasqError
from nasq.hardware import CostModel
from nasq.search import ilp
from nasq.search.ledger import Ledger
from nasq.search.loop import SearchTask, run_search
from nasq.search.state import SearchState
from nasq.specs import ConstraintSpec, SearchConfig

OBJECTIVES = ("top1", "latency_ms", "size_mb")
SIZE_CAP = (ConstraintSpec(metric="size_mb", max=0.25),)


def brute_force(loss: np.ndarray, cost: np.ndarray, budget: float) -> float | None:
    best = None
    for choice in itertools.product(range(loss.shape[1]), repeat=loss.shape[0]):
        rows = np.arange(loss.shape[0])
        if cost[rows, choice].sum() <= budget and (best is None or loss[rows, choice].sum() < best):
            best = float(loss[rows, choice].sum())
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_milp_matches_brute_force_on_a_hand_made_table(seed):
    rng = np.random.default_rng(seed)
    loss = rng.uniform(0, 3, size=(4, 3))
    loss[:, 0] = 0.0  # format 0: lossless and the dearest, like fp32
    cost = np.column_stack([np.full(4, 4.0), rng.uniform(1, 2, 4), rng.uniform(0.2, 1, 4)])
    for budget in np.linspace(cost.min(axis=1).sum(), cost.max(axis=1).sum(), 7):
        choice = ilp.solve(loss, cost, float(budget))
        rows = np.arange(4)
        assert choice is not None and cost[rows, choice].sum() <= budget + 1e-9
        assert loss[rows, choice].sum() == pytest.approx(brute_force(loss, cost, float(budget)), abs=1e-4)
    assert ilp.solve(loss, cost, cost.min(axis=1).sum() - 0.1) is None  # below the cheapest allocation


class Synthetic:
    """top1 falls with low-precision layers, most for the first slots (a known sensitivity)."""

    def __init__(self, cost: CostModel):
        self.cost = cost

    def __call__(self, specs):
        c = self.cost.score(specs)
        out = []
        for s, bops in zip(specs, c["bops_g"], strict=True):
            penalty = sum((2.0 if f == "int4" else 0.3 if f != "fp32" else 0.0) / (1 + n)
                          for n, f in enumerate(layer.w_format for layer in s.layers()))
            out.append(float(90 - 1.0 / (bops + 0.05) - penalty))
        return out




def table(space) -> dict[str, dict[str, float]]:
    names = ilp.slot_names(space.largest())
    drop = {"fp32": 0.0, "int8": 0.2, "fp8_e4m3": 0.25, "int4": 2.0}
    return {n: {f: v / (1 + k) for f, v in drop.items()} for k, n in enumerate(names)}


def _task(space, cost, fit_predictor, strategy, sensitivity=None, seed=0, constraints=SIZE_CAP, budget=24):
    cfg = SearchConfig(strategy=strategy, population=24, generations=5, max_true_evals=budget, batch_size=8,
                       initial_evals=8, seed=seed)
    return SearchTask(space, OBJECTIVES, constraints, cost, cfg, fit_predictor, sensitivity=sensitivity)


def _front(out):
    return [(p.spec.key(), round(p.measured["top1"], 6)) for p in out.front.points]


def test_ilp_strategy_runs_in_the_loop_same_seed_same_front(space, cost, fit_predictor):
    task = _task(space, cost, fit_predictor, "ilp", table(space))
    a = run_search(task, Ledger(Synthetic(cost)))
    b = run_search(_task(space, cost, fit_predictor, "ilp", table(space)), Ledger(Synthetic(cost)))
    assert _front(a) == _front(b) and a.state.true_evals == 24
    # the first iteration is all ILP allocations: one format per layer, for weights and activations
    first = [a.state.specs[k] for k in a.state.keys[:8]]
    assert all(layer.w_format == layer.a_format for s in first for layer in s.layers())
    assert task.feasible(first).all()


def test_a_new_sensitivity_table_is_a_new_search(space, cost, fit_predictor):
    """A checkpoint of a search seeded by one table must not be resumed with another."""
    base = _task(space, cost, fit_predictor, "ilp", table(space)).fingerprint()
    other = table(space)
    first = next(iter(other))
    other[first] = {f: v + 1.0 for f, v in other[first].items()}
    assert _task(space, cost, fit_predictor, "ilp", table(space)).fingerprint() == base
    assert _task(space, cost, fit_predictor, "ilp", other).fingerprint() != base
    assert _task(space, cost, fit_predictor, "ilp").fingerprint() != base


def test_ilp_without_sensitivity_uses_the_predictor(space, cost, fit_predictor):
    out = run_search(_task(space, cost, fit_predictor, "ilp"), Ledger(Synthetic(cost)))
    later = [out.state.specs[k] for k in out.state.keys[8:16]]
    assert out.state.true_evals == 24
    assert any(all(layer.w_format == layer.a_format for layer in s.layers()) for s in later)


def test_sweep_spans_the_budget_under_the_cap(space, cost, fit_predictor):
    allocator = ilp.Allocator(_task(space, cost, fit_predictor, "ilp", table(space), constraints=()))
    assert allocator.metric == "latency_ms"  # no constraint: the first cost objective
    allocator = ilp.Allocator(_task(space, cost, fit_predictor, "ilp", table(space)))
    assert allocator.metric == "size_mb"
    specs = allocator.sweep(space.largest(), 6)
    sizes = cost.score(specs)["size_mb"]
    assert len(specs) >= 2 and (sizes <= 0.25 + 1e-9).all()
    cheapest = specs[int(np.argmin(sizes))]
    assert all(layer.w_format in ("int4", "int8", "fp8_e4m3") for layer in cheapest.layers())


def test_infeasible_budget_is_one_line(space, cost, fit_predictor):
    tight = (ConstraintSpec(metric="size_mb", max=0.001),)
    with pytest.raises(NasqError) as err:
        run_search(_task(space, cost, fit_predictor, "ilp", table(space), constraints=tight), Ledger(Synthetic(cost)))
    msg = str(err.value)
    assert "\n" not in msg and "size_mb <= 0.001" in msg and "minimum achievable" in msg


def test_seeded_initial_population_holds_the_ilp_genomes(space, cost, fit_predictor):
    task = _task(space, cost, fit_predictor, "sensitivity_seeded", table(space))
    state = SearchState("sensitivity_seeded", 0)
    rng = np.random.default_rng(0)
    genomes = ilp.seed_genomes(task, state, {}, None, rng, 24)
    assert genomes.shape == (24, space.n_genes) and len(np.unique(genomes, axis=0)) == 24
    archs = ilp.architectures(task, state, {}, np.random.default_rng(0), 4, 4)
    allocs = ilp.Allocator(task).sweep(space.largest(), max(2, 24 // len(archs)))
    assert allocs
    rows = {g.tobytes() for g in genomes}
    assert all(space.encode(s).tobytes() in rows for s in allocs)


def test_sensitivity_seeded_runs_same_seed_same_front(space, cost, fit_predictor):
    a = run_search(_task(space, cost, fit_predictor, "sensitivity_seeded", table(space)), Ledger(Synthetic(cost)))
    b = run_search(_task(space, cost, fit_predictor, "sensitivity_seeded", table(space)), Ledger(Synthetic(cost)))
    assert _front(a) == _front(b) and a.state.true_evals == 24
    assert a.history[-1]["predictor_tau"] is not None  # the later batches were predicted
