"""Stage 5, search: the configured strategy (LINAS, a baseline, or an optuna strategy on Ray Tune)
spends ``search.max_true_evals`` true evaluations through the ledger; writes the front
(``front.json``/``front.csv``), ``evaluations.csv`` and ``search_history.json`` into its folder
(the workdir, or ``nasq search --out``), beside its checkpoint (``search_state.json``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nasq.cluster.tune import TuneEvaluate, run_tune_search
from nasq.experiment import Experiment
from nasq.files import atomic_write_json, atomic_write_text
from nasq.predict.fit import AccuracyPredictor
from nasq.search.ledger import Ledger
from nasq.search.loop import SearchOutcome, run_search
from nasq.search.pareto import Front
from nasq.search.protocols import CostScorer
from nasq.search.state import STATE_FILE, SearchState
from nasq.search.strategy import SearchTask
from nasq.search.uncertainty import annotate_front, calibration_std
from nasq.space import SubnetSpec
from nasq.stages import sensitivity as sensitivity_stage
from nasq.stages.evaluate import Samples
from nasq.stages.progress import Reporter

EVALUATIONS_CSV = "evaluations.csv"
HISTORY_JSON = "search_history.json"
TUNE_DIR = "tune"  # Ray Tune's experiment folder (optuna strategies on Ray)


@dataclass
class SearchUpstream:
    ledger: Ledger
    samples: Samples  # the warm set: evaluated already, known to every strategy
    predictor: AccuracyPredictor | None = None
    tune_evaluate: TuneEvaluate | None = None  # given when Ray is up: the optuna strategies run on Tune
    # ilp / sensitivity_seeded: layer -> format -> estimated top-1 loss (nasq.stages.sensitivity.for_search);
    # None: sensitivity.json of the workdir when there is one, else the strategies use the predictor
    sensitivity: dict[str, dict[str, float]] | None = None
    # the validation images each true evaluation counted (len(payload.val_y)): the front's top-1
    # intervals; None: the configured number (evaluate.val_images, else data.val_size)
    val_images: int | None = None


def task(exp: Experiment, predictor: AccuracyPredictor | None, warm: list[SubnetSpec],
         sensitivity: dict[str, dict[str, float]] | None = None) -> SearchTask:
    cfg = exp.config
    cost = predictor.cost_model if predictor is not None else exp.cost_model()

    def fit_predictor(specs: list[SubnetSpec], top1: np.ndarray, seed: int) -> AccuracyPredictor:
        return AccuracyPredictor(exp.recipe, exp.space, cost, seed).fit(specs, top1)

    return SearchTask(exp.space, cfg.objectives, cfg.constraints, cost, cfg.search, fit_predictor, warm,
                      lineage=exp.lineage(), emulated_layers=exp.emulated_layers, sensitivity=sensitivity)


def run(exp: Experiment, upstream: SearchUpstream, workdir: Path, rep: Reporter | None = None,
        resume: bool = False) -> SearchOutcome:
    """Run (or with ``resume`` continue, from ``workdir``) the configured strategy."""
    cfg = exp.config.search
    rep = rep or Reporter()

    def say(row: dict) -> None:
        tau = "" if row["predictor_tau"] is None else f", predictor tau on the batch {row['predictor_tau']:.2f}"
        rep.say(f"      iteration {row['iteration']}: {row['true_evals']}/{cfg.max_true_evals} true evaluations, "
                f"hypervolume {row['hypervolume']:.4f}{tau}")

    table = upstream.sensitivity
    if table is None and cfg.strategy in sensitivity_stage.STRATEGIES:
        table = sensitivity_stage.saved_table(exp.space, workdir)
    search_task = task(exp, upstream.predictor, upstream.samples.specs, table)
    if cfg.strategy.startswith("optuna") and upstream.tune_evaluate is not None:
        outcome = run_tune_search(search_task, upstream.ledger, upstream.tune_evaluate, workdir / TUNE_DIR,
                                  resume=resume)
    else:
        if resume:
            check_resumable(exp, search_task, upstream.ledger, workdir)
        outcome = run_search(search_task, upstream.ledger, checkpoint_dir=workdir, resume=resume, progress=say)
    with_intervals(exp, outcome.front, upstream.val_images)
    return outcome


def with_intervals(exp: Experiment, front: Front, val_images: int | None = None) -> Front:
    """The front's measured top-1 with its 95 % interval (``top1_ci_low``/``top1_ci_high``, see
    :mod:`nasq.search.uncertainty`): Wilson on the validation images counted, widened by the
    calibration-set std measured for ``evaluate.calib_images``. Before the artifacts are written,
    so front.csv/front.json, MLflow and the export manifest all carry them."""
    ecfg, data = exp.config.evaluate, exp.config.data
    n = val_images or min(ecfg.val_images or data.val_size, data.val_size)
    return annotate_front(front, n, calibration_std(ecfg.calib_images))


def check_resumable(exp: Experiment, search_task: SearchTask, ledger: Ledger, workdir: Path) -> None:
    """Before a resumed search's measurements reach the (shared) ledger: its checkpoint must be
    whole, made with these settings, hold top1 values in [0, 100] and subnets of this space, and
    belong to this ledger's supernet and evaluation settings; else one line and nothing written."""
    state = SearchState.load(workdir, search_task.fingerprint(), exp.space)
    ledger.check_resumed(state.top1, str(workdir / STATE_FILE))


def evaluation_matrix(ledger: Ledger, keys: list[str], cost: CostScorer) -> np.ndarray:
    """(top1, latency_ms, size_mb) of every successful true evaluation among ``keys``."""
    keys = [k for k in keys if k in ledger.top1]
    specs = [ledger.specs[k] for k in keys]
    c = cost.score(specs)
    return np.column_stack([ledger.values(keys), c["latency_ms"], c["size_mb"]])


def used_keys(samples: list[SubnetSpec], outcome: SearchOutcome, ledger: Ledger) -> list[str]:
    keys = [s.key() for s in samples] + [k for k in outcome.state.keys if k not in {s.key() for s in samples}]
    return [k for k in dict.fromkeys(keys) if k in ledger]


def write_artifacts(workdir: Path, ledger: Ledger, keys: list[str], outcome: SearchOutcome) -> None:
    atomic_write_text(workdir / EVALUATIONS_CSV, ledger.to_csv(keys))
    atomic_write_json(workdir / HISTORY_JSON, outcome.history)
    outcome.front.save(workdir)

