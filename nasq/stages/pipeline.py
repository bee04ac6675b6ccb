"""The whole pipeline: data -> supernet (trained once) -> sampled evaluations on Ray -> predictor
-> search with predictors in the loop -> MLflow -> export of one point. Each stage is a module of
``nasq.stages`` with one entry, ``run(exp, upstream, workdir) -> artifact``; this module composes
them. Each stage writes its artifact into the experiment's working folder
(:mod:`nasq.stages.artifacts` names every file), stamped with lineage hashes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nasq import data as data_mod
from nasq.cluster.tasks import ray_session
from nasq.experiment import Experiment
from nasq.files import atomic_write_json
from nasq.predict.fit import FitReport
from nasq.search.pareto import Front
from nasq.stages import data, evaluate, export, predict, search, track, train
from nasq.stages.progress import Reporter
from nasq.supernet.network import Supernet

TIMINGS_JSON = "timings.json"


@dataclass
class PipelineResult:
    experiment: Experiment
    front: Front
    fit_report: FitReport
    workdir: Path
    evaluated: int
    timings: dict[str, float] = field(default_factory=dict)
    tracking: Any = None
    export: Any = None
    data_note: str = ""
    train_info: dict[str, float] = field(default_factory=dict)
    evaluations: np.ndarray | None = None  # (top1, latency_ms, size_mb) of every true evaluation
    # one row per search iteration: {"iteration", "true_evals", "hypervolume", "predictor_tau"}
    # (predictor_tau: Kendall tau of the predictor on that iteration's batch, None where not defined)
    history: list[dict] = field(default_factory=list)


def _train_header(exp: Experiment) -> str:
    return f"supernet: training once on space '{exp.space.name}' ({exp.space.size():.2e} subnets)"


def run_pipeline(exp: Experiment, console: Any = None) -> PipelineResult:
    cfg = exp.config
    rep = Reporter(console)
    workdir = exp.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    with rep.stage("data", f"data: {cfg.data.name}"):
        splits = data.run(exp, None, workdir, rep)
    with rep.stage("train", _train_header(exp)):
        trained = train.run(exp, splits, workdir, rep)
    result = evaluate_and_search(exp, trained.net, splits, rep, trained.info)
    with rep.stage("track", "tracking: MLflow"):
        result.tracking = track.run(exp, result, workdir)
    with rep.stage("export", f"export: the {cfg.export.pick} point"):
        result.export = (export.run(exp, export.ExportUpstream(trained.net, result.front, splits), workdir)
                         if cfg.export.enabled else None)
    atomic_write_json(workdir / TIMINGS_JSON, rep.timings)
    return result


def evaluate_and_search(exp: Experiment, net: Supernet, splits: data_mod.Splits, rep: Reporter,
                        train_info: dict[str, float], resume: bool = False, run_dir: Path | None = None) -> PipelineResult:
    """Sampled evaluations -> predictor -> search on a trained supernet (``nasq run``, ``nasq search``);
    the search's checkpoint, front and history go to ``run_dir`` (default: the workdir)."""
    cfg, workdir = exp.config, exp.workdir
    run_dir = run_dir or workdir
    payload = evaluate.payload(exp, net, splits)
    with ray_session(cfg.ray.address, cfg.ray.num_cpus) as ray:
        ledger = evaluate.open_ledger(exp, evaluate.evaluator(ray, payload, rep), workdir)
        with rep.stage("evaluate", f"evaluate: {cfg.evaluate.num_subnets} sampled subnets ({_where(cfg.ray.address)})"):
            samples = evaluate.run(exp, ledger, workdir, rep)
        with rep.stage("predict", f"predictor: {exp.recipe.config.kind} on {len(samples.specs)} subnets"):
            fitted = predict.run(exp, samples, workdir, rep)
        s = cfg.search
        with rep.stage("search", f"search: {s.strategy}, {s.max_true_evals} true evaluations in batches of {s.batch_size}"):
            on_tune = ray is not None and s.strategy.startswith("optuna")
            upstream = search.SearchUpstream(ledger, samples, fitted.predictor,
                                             evaluate.tune_evaluator(payload) if on_tune else None)
            outcome = search.run(exp, upstream, run_dir, rep, resume=resume)
    keys = search.used_keys(samples.specs, outcome, ledger)
    search.write_artifacts(run_dir, ledger, keys, outcome)
    return PipelineResult(exp, outcome.front, fitted.report, run_dir, len(keys), rep.timings, data_note=splits.note,
                          train_info=train_info,
                          evaluations=search.evaluation_matrix(ledger, keys, fitted.predictor.cost_model),
                          history=outcome.history)


def run_training(exp: Experiment, console: Any = None, fresh: bool = False) -> dict:
    """The data and training stages alone (``nasq train``): leaves the trained supernet in the
    workdir for a later ``nasq run`` or ``nasq search`` to reuse."""
    rep = Reporter(console, total_stages=2)
    exp.workdir.mkdir(parents=True, exist_ok=True)
    with rep.stage("data", f"data: {exp.config.data.name}"):
        splits = data.run(exp, None, exp.workdir, rep)
    with rep.stage("train", _train_header(exp)):
        trained = train.run(exp, splits, exp.workdir, rep, fresh=fresh)
    return {**trained.info, "seconds_total": sum(rep.timings.values())}


def _where(address: str) -> str:
    return {"local": "embedded Ray", "none": "in-process"}.get(address, f"Ray at {address}")
