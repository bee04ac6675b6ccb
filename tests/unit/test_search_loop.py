"""The search loop on a real space, the real cost model and real predictors, with a cheap synthetic
evaluator standing in for the supernet: determinism, resume, dedup, cache, failures, budgets."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from nasq.errors import NasqError
from nasq.hardware import CostModel
from nasq.predict.fit import AccuracyPredictor, Recipe
from nasq.search.ledger import Ledger
from nasq.search.loop import SearchTask, run_search
from nasq.search.state import STATE_FILE
from nasq.specs import ConstraintSpec, SearchConfig

OBJECTIVES = ("top1", "latency_ms", "size_mb")
SIZE_CAP = (ConstraintSpec(metric="size_mb", max=0.25),)


class Synthetic:
    """top1 from the cost model with a bumpy term; counts calls; can fail or crash on purpose."""

    def __init__(self, cost: CostModel, crash_on_call: int | None = None, fail_every: int | None = None):
        self.cost, self.crash_on_call, self.fail_every = cost, crash_on_call, fail_every
        self.calls, self.keys = 0, []

    def __call__(self, specs):
        self.calls += 1
        if self.crash_on_call is not None and self.calls == self.crash_on_call:
            raise KeyboardInterrupt("simulated kill")
        self.keys += [s.key() for s in specs]
        c = self.cost.score(specs)
        top1 = 90 - 1.0 / (c["bops_g"] + 0.05) + 0.5 * np.sin(c["size_mb"] * 100)
        return [None if self.fail_every and (len(self.keys) - len(specs) + i) % self.fail_every == 0 else float(v)
                for i, v in enumerate(top1)]




def _task(space, cost, fit_predictor, strategy="linas", budget=32, constraints=SIZE_CAP, **kw):
    cfg = SearchConfig(strategy=strategy, population=24, generations=6, max_true_evals=budget, batch_size=8,
                       initial_evals=12, seed=kw.pop("seed", 0), **kw)
    return SearchTask(space, OBJECTIVES, constraints, cost, cfg, fit_predictor)


def _front(out):
    return [(p.spec.key(), round(p.measured["top1"], 6)) for p in out.front.points]


def test_linas_same_seed_same_front_and_history(space, cost, fit_predictor):
    a = run_search(_task(space, cost, fit_predictor), Ledger(Synthetic(cost)))
    b = run_search(_task(space, cost, fit_predictor), Ledger(Synthetic(cost)))
    assert _front(a) == _front(b) and a.history == b.history
    assert [h["true_evals"] for h in a.history] == [8, 16, 24, 32]
    assert set(a.history[0]) == {"iteration", "true_evals", "hypervolume", "predictor_tau"}
    assert a.history[0]["predictor_tau"] is None  # the first batch is random: nothing was predicted
    assert all(isinstance(h["predictor_tau"], float) for h in a.history[2:])
    hv = [h["hypervolume"] for h in a.history]
    assert hv == sorted(hv) and hv[-1] > 0  # the front only grows
    other = run_search(_task(space, cost, fit_predictor, seed=1), Ledger(Synthetic(cost)))
    assert _front(other) != _front(a)


def test_front_is_truly_evaluated_non_dominated_and_feasible(space, cost, fit_predictor):
    evaluator = Synthetic(cost)
    out = run_search(_task(space, cost, fit_predictor), Ledger(evaluator))
    assert out.front.points
    for p in out.front.points:
        assert p.spec.key() in evaluator.keys
        assert p.predicted["size_mb"] <= 0.25
        assert {"top1", "latency_ms", "size_mb"} <= set(p.predicted)  # predicted and measured both kept
    predicted = [p for p in out.front.points if not math.isnan(p.predicted["top1"])]
    assert predicted, "LINAS points should carry the prediction made before their evaluation"
    F = out.front.matrix()
    for i in range(len(F)):
        assert not (np.all(F <= F[i], axis=1) & np.any(F < F[i], axis=1)).any()


def test_resume_after_kill_gives_identical_front(space, cost, fit_predictor, tmp_path):
    full = run_search(_task(space, cost, fit_predictor), Ledger(Synthetic(cost)))
    crashing = Synthetic(cost, crash_on_call=3)  # dies during the third iteration's evaluations
    with pytest.raises(KeyboardInterrupt):
        run_search(_task(space, cost, fit_predictor), Ledger(crashing), checkpoint_dir=tmp_path)
    saved = json.loads((tmp_path / STATE_FILE).read_text())
    assert saved["iteration"] == 2 and len(saved["evaluations"]) == 16
    assert saved["rng"]["bit_generator"] == "PCG64"
    fresh = Synthetic(cost)
    resumed = run_search(_task(space, cost, fit_predictor), Ledger(fresh), checkpoint_dir=tmp_path, resume=True)
    assert _front(resumed) == _front(full) and resumed.history == full.history
    assert len(fresh.keys) == 16  # only the iterations that had not finished were evaluated again


def test_resume_refuses_other_settings(space, cost, fit_predictor, tmp_path):
    run_search(_task(space, cost, fit_predictor, budget=8), Ledger(Synthetic(cost)), checkpoint_dir=tmp_path)
    with pytest.raises(NasqError, match="other settings"):
        run_search(_task(space, cost, fit_predictor, budget=8, seed=5), Ledger(Synthetic(cost)),
                   checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(NasqError, match="no search checkpoint"):
        run_search(_task(space, cost, fit_predictor), Ledger(Synthetic(cost)), checkpoint_dir=tmp_path / "x",
                   resume=True)


@pytest.mark.parametrize("strategy", ["linas", "random", "nsga2_true", "optuna_nsga2", "optuna_tpe"])
def test_impossible_constraint_is_a_clear_error(space, cost, fit_predictor, strategy):
    cons = (ConstraintSpec(metric="size_mb", max=1e-6),)
    with pytest.raises(NasqError, match=r"no subnet meets the constraints: size_mb <= 1e-06 \(best seen: 0\.\d+"):
        run_search(_task(space, cost, fit_predictor, strategy=strategy, constraints=cons), Ledger(Synthetic(cost)))


@pytest.mark.parametrize("strategy", ["linas", "random", "nsga2_true", "optuna_nsga2", "optuna_tpe"])
def test_strategies_respect_budget_and_never_repeat(space, cost, fit_predictor, strategy):
    evaluator = Synthetic(cost)
    out = run_search(_task(space, cost, fit_predictor, strategy=strategy, budget=28), Ledger(evaluator))
    assert len(evaluator.keys) == out.state.true_evals == 28
    assert len(set(evaluator.keys)) == 28  # each subnet evaluated once
    assert out.history[-1]["true_evals"] == 28
    assert all(cost.score([out.state.specs[k]])["size_mb"][0] <= 0.25 for k in out.state.keys)


def test_nsga2_true_improves_on_its_random_start(space, cost, fit_predictor):
    out = run_search(_task(space, cost, fit_predictor, strategy="nsga2_true", budget=48), Ledger(Synthetic(cost)))
    hv = [h["hypervolume"] for h in out.history]
    assert hv[-1] > hv[0]


def test_ledger_cache_is_reused_across_runs(space, cost, fit_predictor, tmp_path):
    first = Synthetic(cost)
    ledger = Ledger.in_cache(first, tmp_path, "ab" * 32, {"supernet_sha256": "x"})
    a = run_search(_task(space, cost, fit_predictor), ledger)
    assert (tmp_path / ("ab" * 8) / "ledger.csv").is_file()
    second = Synthetic(cost)
    again = Ledger.in_cache(second, tmp_path, "ab" * 32, {"supernet_sha256": "x"})
    b = run_search(_task(space, cost, fit_predictor), again)
    assert second.calls == 0 and _front(a) == _front(b)  # same seed: every evaluation came from the cache
    assert again.reused == 32
    with pytest.raises(NasqError, match="another supernet"):
        Ledger.in_cache(second, tmp_path, "ab" * 8 + "cd" * 24, {})


def test_failed_evaluations_are_recorded_not_fatal(space, cost, fit_predictor, tmp_path):
    evaluator = Synthetic(cost, fail_every=5)
    ledger = Ledger(evaluator, tmp_path / "ledger.csv")
    out = run_search(_task(space, cost, fit_predictor, budget=24), ledger)
    assert out.state.true_evals == 24 and len(ledger.failed) == 5
    rows = (tmp_path / "ledger.csv").read_text().splitlines()
    assert rows[0] == "key,origin,status,top1,spec"
    assert sum(",failed,," in r for r in rows) == 5
    assert not {p.spec.key() for p in out.front.points} & set(ledger.failed)
    reloaded = Ledger(Synthetic(cost), tmp_path / "ledger.csv")
    assert set(reloaded.failed) == set(ledger.failed)  # a failed subnet is not asked for again


def test_linas_spends_part_of_each_batch_on_uncertainty(space, cost, repo):
    recipe = Recipe.from_yaml(repo / "predictors" / "ensemble_onehot.yaml")
    fit = lambda specs, top1, seed: AccuracyPredictor(recipe, space, cost, seed).fit(specs, top1)  # noqa: E731
    out = run_search(_task(space, cost, fit, budget=24, uncertain_fraction=0.25), Ledger(Synthetic(cost)))
    later = out.state.keys[16:]  # the third batch was chosen by a fitted ensemble
    stds = [out.state.predicted[k].get("top1_std") for k in later]
    assert sum(s is not None for s in stds) == 2 and all(s is None or s >= 0 for s in stds)


def test_a_finished_search_extended_ends_where_the_larger_budget_does(space, cost, fit_predictor, tmp_path):
    """`--resume --max-true-evals N` with N above the finished budget continues from the saved
    state: the same front and history as a search given N from the start; only the extra
    evaluations run."""
    given_32 = run_search(_task(space, cost, fit_predictor, budget=32), Ledger(Synthetic(cost)))
    first = Synthetic(cost)
    done_16 = run_search(_task(space, cost, fit_predictor, budget=16), Ledger(first), checkpoint_dir=tmp_path)
    assert done_16.state.true_evals == 16 and json.loads((tmp_path / STATE_FILE).read_text())["budget"] == 16
    more = Synthetic(cost)
    extended = run_search(_task(space, cost, fit_predictor, budget=32), Ledger(more), checkpoint_dir=tmp_path,
                          resume=True)
    assert _front(extended) == _front(given_32) and extended.history == given_32.history
    assert len(more.keys) == 16 and not set(more.keys) & set(first.keys)  # only the 16 new ones
    assert json.loads((tmp_path / STATE_FILE).read_text())["budget"] == 32


def test_a_smaller_budget_or_a_budget_bound_strategy_is_refused(space, cost, fit_predictor, tmp_path):
    run_search(_task(space, cost, fit_predictor, budget=16), Ledger(Synthetic(cost)), checkpoint_dir=tmp_path)
    with pytest.raises(NasqError) as err:
        run_search(_task(space, cost, fit_predictor, budget=8), Ledger(Synthetic(cost)), checkpoint_dir=tmp_path,
                   resume=True)
    assert "given 16 true evaluations; --max-true-evals 8 is smaller" in str(err.value) and "\n" not in str(err.value)
    nsga = tmp_path / "nsga"
    run_search(_task(space, cost, fit_predictor, strategy="nsga2_true", budget=16), Ledger(Synthetic(cost)),
               checkpoint_dir=nsga)
    with pytest.raises(NasqError, match="'nsga2_true' sizes its search by the budget"):
        run_search(_task(space, cost, fit_predictor, strategy="nsga2_true", budget=24), Ledger(Synthetic(cost)),
                   checkpoint_dir=nsga, resume=True)
