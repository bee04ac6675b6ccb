"""The optuna strategies as Ray Tune experiments (``OptunaSearch`` with a multi-objective
``metric=[...]``/``mode=[...]``), so their trials spread over the same Ray cluster as everything else.

Each trial decodes its genome, answers from the ledger when the subnet was already evaluated, else
evaluates it through the injected ``evaluate(payload, [spec_dict]) -> [top1]`` (an infeasible subnet
is not evaluated: it reports top1 0).

Resuming never reads Tune's own experiment state: Tune pickles its searcher and trials
(``tuner.pkl``, ``experiment_state-*.json`` holding pickled blobs), and unpickling a run folder
from someone else would run their code. Instead the driver appends every finished trial to nasq's
own journal, ``trials.jsonl`` (one JSON object per line, written and fsynced as each result
arrives); ``--resume`` validates the journal (each spec decodes in this space, its key matches,
top1 is a percentage in [0, 100]), replays it into a fresh optuna study (``Study.add_trial``, the same
parameters and objective values) and runs a fresh Tune experiment for the trials still owed.
Whatever Tune left in the folder is never opened.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from nasq.cluster.tasks import _ray
from nasq.errors import NasqError
from nasq.search.baselines import directions, true_population_size
from nasq.search.ledger import Ledger
from nasq.search.loop import SearchOutcome, SearchTask, build_front, front_hypervolume
from nasq.search.state import SearchState
from nasq.space import SubnetSpec
from nasq.specs import one_line
from nasq.supernet.evaluate import EvalPayload

TuneEvaluate = tuple[Callable[[EvalPayload, list[dict]], list[float]], EvalPayload]
JOURNAL = "trials.jsonl"  # nasq's own record of finished trials, the only thing --resume reads


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


def _sampler(task: SearchTask, resumed: int = 0):
    # a resumed search draws from a different stream (seed + trials done): the same seed would
    # propose the journal's first subnets again
    seed = task.config.seed + resumed
    if task.config.strategy == "optuna_nsga2":
        return optuna.samplers.NSGAIISampler(population_size=true_population_size(task), seed=seed)
    return optuna.samplers.TPESampler(n_startup_trials=max(8, true_population_size(task)), seed=seed, multivariate=True)


def read_journal(path: Path, task: SearchTask) -> list[dict[str, Any]]:
    """The finished trials of an interrupted search, validated; a torn last line (the driver died
    while appending) is dropped, anything else wrong is one line naming the file and the line."""
    if not path.is_file():
        return []
    try:
        lines = path.read_bytes().decode("utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise NasqError(f"{path}: not a nasq trial journal ({type(e).__name__})") from None
    rows: list[dict[str, Any]] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            spec = SubnetSpec.from_dict(json.loads(row["spec"]))
            top1 = float(row["top1"])
            feasible = row["feasible"]
            if not isinstance(feasible, bool) or not isinstance(row["key"], str):
                raise ValueError("feasible/key of the wrong type")
        except (ValueError, KeyError, TypeError) as e:
            if n == len(lines) or (n == len(lines) - 1 and not lines[-1]):
                break  # torn final append
            raise NasqError(f"{path}: line {n}: not a nasq trial record ({type(e).__name__}: {one_line(e, 80)})") from None
        try:
            belongs = task.space.decode(task.space.encode(spec)).key() == spec.key() == row["key"]
        except (ValueError, KeyError, IndexError, AttributeError):
            belongs = False
        if not belongs:
            raise NasqError(f"{path}: line {n}: subnet {row['key'][:40]!r} does not belong to space {task.space.name!r}")
        if not (math.isnan(top1) or 0.0 <= top1 <= 100.0):
            raise NasqError(f"{path}: line {n}: top1 {top1!r} is not a percentage in [0, 100]")
        rows.append({"key": row["key"], "spec": spec, "top1": top1, "feasible": feasible})
    return rows


def _warm_study(task: SearchTask, done: list[dict[str, Any]]) -> tuple[Any, str]:
    """An in-memory optuna study holding the journal's trials as completed ones."""
    storage = optuna.storages.InMemoryStorage()
    name = "nasq"
    study = optuna.create_study(storage=storage, study_name=name, sampler=_sampler(task, len(done)),
                                directions=["minimize" if d.startswith("min") else "maximize"
                                            for d in directions(task.objectives)])
    dists = {f"g{i}": optuna.distributions.IntDistribution(0, int(u)) for i, u in enumerate(task.space.upper)}
    for row in done:
        genome = task.space.encode(row["spec"])
        values = task.score([row["spec"]], np.array([row["top1"]]))
        if not all(math.isfinite(float(values[o][0])) for o in task.objectives):
            continue
        study.add_trial(optuna.trial.create_trial(
            params={f"g{i}": int(g) for i, g in enumerate(genome)}, distributions=dists,
            values=[float(values[o][0]) for o in task.objectives]))
    return storage, name


def _journal_callback(path: Path) -> Any:
    """A Tune callback (it runs in the driver) appending each trial's reported result to the journal."""
    from ray.tune import Callback

    class Journal(Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):  # noqa: ANN001 - Tune's signature
            if "key" not in result:
                return
            line = json.dumps({"key": result["key"], "spec": result["spec"], "top1": float(result["top1"]),
                               "feasible": bool(result["feasible"])}, sort_keys=True)
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
                fh.flush()
                os.fsync(fh.fileno())

    return Journal()


def run_tune_search(task: SearchTask, ledger: Ledger, tune_evaluate: TuneEvaluate, storage: Path,
                    resume: bool = False, max_concurrent: int = 2) -> SearchOutcome:
    """``max_true_evals`` Tune trials with OptunaSearch; with ``resume``, the trials in nasq's
    journal (``storage/trials.jsonl``) count as done and seed the sampler, and a fresh Tune
    experiment runs the rest. Results go into the ledger."""
    _ray()
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    evaluate, payload = tune_evaluate
    storage = Path(storage).resolve()
    storage.mkdir(parents=True, exist_ok=True)
    journal = storage / JOURNAL
    if not resume:
        journal.unlink(missing_ok=True)
    done = read_journal(journal, task)
    known = {**dict(ledger.top1), **{r["key"]: r["top1"] for r in done if not math.isnan(r["top1"])}}
    owed = task.config.max_true_evals - len(done)
    if owed > 0:
        trainable = tune.with_parameters(_trial, evaluate=evaluate, payload=payload, task=task, known=known)
        param_space = {f"g{i}": tune.randint(0, int(u) + 1) for i, u in enumerate(task.space.upper)}
        study_storage, study_name = _warm_study(task, done)
        search = OptunaSearch(metric=list(task.objectives), mode=[d[:3] for d in directions(task.objectives)],
                              sampler=_sampler(task, len(done)), storage=study_storage, study_name=study_name)
        attempt = sum(1 for p in storage.iterdir() if p.is_dir() and p.name.startswith("attempt-"))
        tuner = tune.Tuner(trainable, param_space=param_space,
                           tune_config=tune.TuneConfig(search_alg=search, num_samples=owed,
                                                       max_concurrent_trials=max_concurrent),
                           run_config=tune.RunConfig(name=f"attempt-{attempt}", storage_path=str(storage), verbose=0,
                                                     callbacks=[_journal_callback(journal)]))
        tuner.fit()
    return _outcome(task, ledger, read_journal(journal, task))


def _outcome(task: SearchTask, ledger: Ledger, rows: list[dict[str, Any]]) -> SearchOutcome:
    state = SearchState(task.config.strategy, task.config.seed)
    warm = {s.key(): float(v) for s, v in zip(task.warm, ledger(task.warm, "warm"), strict=True)}
    for n, m in enumerate(rows, 1):
        spec = m["spec"]
        if m["key"] not in state.top1 and m["feasible"]:
            ledger.record(spec, m["top1"], task.config.strategy)
            state.add([spec], np.array([m["top1"]]), None)
        if (state.true_evals and state.true_evals % task.config.batch_size == 0) or n == len(rows):
            if state.history and state.history[-1]["true_evals"] == state.true_evals:
                continue
            state.iteration += 1
            state.history.append({"iteration": state.iteration, "true_evals": state.true_evals,
                                  "hypervolume": front_hypervolume(task, state, warm), "predictor_tau": None})
    ledger.save()
    return SearchOutcome(build_front(task, state, {**warm, **state.top1}), state.history, state)
