"""The optuna strategies as Ray Tune experiments (``OptunaSearch`` with a multi-objective
``metric=[...]``/``mode=[...]``), so their trials spread over the same Ray cluster as everything else.

Each trial decodes its genome, answers from the ledger when the subnet was already evaluated, else
evaluates it through the injected ``evaluate(payload, [spec_dict]) -> [top1]`` (an infeasible subnet
is not evaluated: it reports top1 0). An interrupted experiment is continued with Tune's own
``Tuner.restore`` - note that Tune's experiment state is Tune's format (it pickles its searcher);
what nasq writes from it (ledger, front, history) is CSV / JSON as everywhere else.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from nasq.cluster.tasks import _ray
from nasq.search.baselines import directions, true_population_size
from nasq.search.ledger import Ledger
from nasq.search.loop import SearchOutcome, SearchTask, build_front, front_hypervolume
from nasq.search.state import SearchState
from nasq.space import SubnetSpec
from nasq.supernet.evaluate import EvalPayload

TuneEvaluate = tuple[Callable[[EvalPayload, list[dict]], list[float]], EvalPayload]


def _trial(config: dict, evaluate: Callable, payload: EvalPayload, task: SearchTask, known: dict[str, float]) -> None:
    from ray import tune

    space = task.space
    spec = space.decode([int(config[f"g{i}"]) for i in range(space.n_genes)])
    key = spec.key()
    feasible = bool(task.feasible([spec])[0])
    if key in known:
        top1 = known[key]
    elif feasible:
        try:
            top1 = float(evaluate(payload, [spec.to_dict()])[0])
        except (RuntimeError, ValueError):
            top1 = math.nan
    else:
        top1 = 0.0
    metrics = {o: float(v[0]) for o, v in task.score([spec], np.array([top1])).items()}
    tune.report({**metrics, "key": key, "spec": spec.to_json(), "feasible": feasible,
                 "evaluated": feasible and key not in known})


def _sampler(task: SearchTask):
    seed = task.config.seed
    if task.config.strategy == "optuna_nsga2":
        return optuna.samplers.NSGAIISampler(population_size=true_population_size(task), seed=seed)
    return optuna.samplers.TPESampler(n_startup_trials=max(8, true_population_size(task)), seed=seed, multivariate=True)


def run_tune_search(task: SearchTask, ledger: Ledger, tune_evaluate: TuneEvaluate, storage: Path,
                    resume: bool = False, max_concurrent: int = 2) -> SearchOutcome:
    """``max_true_evals`` Tune trials with OptunaSearch; with ``resume``, ``Tuner.restore`` the
    experiment in ``storage`` (errored trials are restarted). Results go into the ledger."""
    _ray()
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    evaluate, payload = tune_evaluate
    known = dict(ledger.top1)
    trainable = tune.with_parameters(_trial, evaluate=evaluate, payload=payload, task=task, known=known)
    storage = Path(storage).resolve()
    if resume and tune.Tuner.can_restore(str(storage)):
        tuner = tune.Tuner.restore(str(storage), trainable=trainable, resume_errored=False, restart_errored=True)
    else:
        param_space = {f"g{i}": tune.randint(0, int(u) + 1) for i, u in enumerate(task.space.upper)}
        search = OptunaSearch(metric=list(task.objectives), mode=[d[:3] for d in directions(task.objectives)],
                              sampler=_sampler(task))
        tuner = tune.Tuner(trainable, param_space=param_space,
                           tune_config=tune.TuneConfig(search_alg=search, num_samples=task.config.max_true_evals,
                                                       max_concurrent_trials=max_concurrent),
                           run_config=tune.RunConfig(name=storage.name, storage_path=str(storage.parent), verbose=0))
    grid = tuner.fit()
    return _outcome(task, ledger, grid)


def _outcome(task: SearchTask, ledger: Ledger, grid: Any) -> SearchOutcome:
    rows = sorted((r.metrics for r in grid if r.metrics and "key" in r.metrics), key=lambda m: m["trial_id"])
    state = SearchState(task.config.strategy, task.config.seed)
    warm = {s.key(): float(v) for s, v in zip(task.warm, ledger(task.warm, "warm"), strict=True)}
    for m in rows:
        spec = SubnetSpec.from_dict(json.loads(m["spec"]))
        if m["key"] in state.top1 or not m["feasible"]:
            continue
        ledger.record(spec, float(m["top1"]), task.config.strategy)
        state.add([spec], np.array([float(m["top1"])]), None)
        if state.true_evals % task.config.batch_size == 0 or m is rows[-1]:
            state.iteration += 1
            state.history.append({"iteration": state.iteration, "true_evals": state.true_evals,
                                  "hypervolume": front_hypervolume(task, state, warm), "predictor_tau": None})
    ledger.save()
    return SearchOutcome(build_front(task, state, {**warm, **state.top1}), state.history, state)
