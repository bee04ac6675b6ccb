"""The whole pipeline: data -> supernet (trained once) -> sampled evaluations on Ray -> predictor
-> search with predictors in the loop -> MLflow -> export of one point. Each stage is a module of
``nasq.stages`` with one entry, ``run(exp, upstream, workdir) -> artifact``; this module composes
them. Each stage writes its artifact into the experiment's working folder
(:mod:`nasq.stages.artifacts` names every file), stamped with lineage hashes.

:func:`run_pipeline` (``nasq run``) is one MLflow parent run from its start
(:mod:`nasq.tracking.lifecycle`): opened before anything is written (an unreachable tracking server
is a one-line error after at most ``tracking_wait_s`` seconds, with no workdir created), a nested
run per stage created as the stage starts, ended FINISHED, or FAILED with the one-line reason as the
tag ``nasq.error``. SIGTERM (what ``nasq jobs stop`` sends) and SIGINT raise :class:`Interrupted` in
the main thread for the duration, so the runs end FAILED (reason ``SIGTERM``/``SIGINT``) even when
the signal lands inside a tracking call. If the tracking server goes away mid-run the run fails
cleanly: a one-line error naming the server, the files made so far stay in the workdir, and a
rerun reuses the trained supernet and the cached evaluations. ``nasq train`` and ``nasq search``
(:func:`run_training`, :func:`evaluate_and_search` alone) log nothing to MLflow.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nasq import data as data_mod
from nasq.cluster.tasks import job_address, ray_session
from nasq.errors import NasqError
from nasq.experiment import Experiment
from nasq.files import atomic_write_bytes, atomic_write_json
from nasq.predict.fit import FitReport
from nasq.profiling.check import drift_note
from nasq.search.pareto import Front
from nasq.stages import (
    baselines,
    data,
    evaluate,
    export,
    predict,
    search,
    sensitivity,
    track,
    train,
)
from nasq.stages.progress import Reporter
from nasq.supernet import checkpoint
from nasq.supernet.network import Supernet
from nasq.tracking.lifecycle import DEFAULT_WAIT_S, TrackedRun, TrackingLost

TIMINGS_JSON = "timings.json"
SIGNALS = (signal.SIGTERM, signal.SIGINT)
REPEAT_GRACE_S = 2.0


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT arrived during :func:`run_pipeline`; ``str()`` is the signal's name.
    A KeyboardInterrupt, so code that stops on Ctrl-C stops on it; the CLI exits ``exit_code``."""

    def __init__(self, signum: int):
        self.signum, self.name = signum, signal.Signals(signum).name
        super().__init__(self.name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 143 for SIGTERM, 130 for SIGINT


class SignalGuard:
    """SIGTERM and SIGINT turned into :class:`Interrupted` in the main thread, once (see
    :func:`signals_raise`)."""

    def __init__(self, active: bool = True):
        self.active, self.signum, self.at = active, 0, 0.0  # signum: the first signal, 0 before it
        self._handler = self._handle  # one bound method, so rearm can recognise it

    def _handle(self, signum: int, _frame: Any) -> None:
        if not self.signum:
            self.signum, self.at = signum, time.monotonic()
            raise Interrupted(signum)
        if time.monotonic() - self.at > REPEAT_GRACE_S:  # asked again: stop now
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def rearm(self) -> None:
        """(Re)install the handlers: ``ray.init`` replaces SIGTERM's with its own."""
        for sig in SIGNALS if self.active else ():
            if signal.getsignal(sig) is not self._handler:
                signal.signal(sig, self._handler)

    @contextmanager
    def translate(self) -> Iterator[None]:
        """A plain KeyboardInterrupt leaving the block after a signal becomes that signal's
        :class:`Interrupted`: Ray's ``get`` replaces the exception a handler raises with one."""
        try:
            yield
        except KeyboardInterrupt as e:
            if self.signum and not isinstance(e, Interrupted):
                raise Interrupted(self.signum) from e
            raise


@contextmanager
def signals_raise() -> Iterator[SignalGuard]:
    """For the block, SIGTERM and SIGINT raise :class:`Interrupted` in the main thread (elsewhere:
    nothing is installed), once. Further signals within :data:`REPEAT_GRACE_S` are ignored, so the
    cleanup that marks the runs FAILED completes: the same stop often arrives twice (a process-group
    signal, as ``ray job stop`` and Ctrl-C send, plus the copy the ``nasq`` supervisor forwards). A
    later one ends the process the default way. The previous handlers are put back after."""
    guard = SignalGuard(active=threading.current_thread() is threading.main_thread())
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS} if guard.active else {}
    guard.rearm()
    try:
        yield guard
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)


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
    baselines: list[dict] = field(default_factory=list)  # nasq.stages.baselines rows (baselines.csv)


def _train_header(exp: Experiment) -> str:
    return f"supernet: training once on space '{exp.space.name}' ({exp.space.size():.2e} subnets)"


def run_pipeline(exp: Experiment, console: Any = None, tracking_wait_s: float = DEFAULT_WAIT_S) -> PipelineResult:
    """Every stage under one MLflow parent run (see the module docstring)."""
    with signals_raise() as guard:
        try:
            with track.parent_run(exp, wait_s=tracking_wait_s) as run, guard.translate():
                return _stages(exp, Reporter(console, on_stage=_stage_hook(run, guard)), run)
        except TrackingLost as e:
            raise NasqError(f"{e}; what the finished stages made is in {exp.workdir}: run `nasq run "
                            f"{exp.source}` again once the server is back (the trained supernet and the "
                            "evaluations are reused)") from e


def _stage_hook(run: TrackedRun, guard: SignalGuard) -> Callable[[str], Any]:
    @contextmanager
    def hook(name: str) -> Iterator[None]:
        guard.rearm()
        with run.stage(name), guard.translate():
            yield
    return hook


def _stages(exp: Experiment, rep: Reporter, run: TrackedRun) -> PipelineResult:
    cfg, workdir = exp.config, exp.workdir
    with rep.stage("data", f"data: {cfg.data.name}"):
        splits = data.run(exp, None, workdir, rep)
    # train.workers > 1 trains on Ray Train: one Ray for the training and the evaluations (the
    # stages' own sessions join it), not two started one after the other
    with ray_session(cfg.ray.address, cfg.ray.num_cpus) if cfg.train.workers > 1 else nullcontext():
        with rep.stage("train", _train_header(exp)):
            trained = train.run(exp, splits, workdir, rep)
        result = evaluate_and_search(exp, trained.net, splits, rep, trained.info)
    with rep.stage("track", "tracking: MLflow"):
        result.tracking = track.run(exp, result, workdir, run)
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
        ledger = evaluate.open_ledger(exp, evaluate.evaluator(ray, payload, rep, cfg.ray.chunk, cfg.ray.max_in_flight), workdir)
        with rep.stage("evaluate", f"evaluate: {cfg.evaluate.num_subnets} sampled subnets ({_where(cfg.ray.address)})"):
            samples = evaluate.run(exp, ledger, workdir, rep)
        with rep.stage("predict", f"predictor: {exp.recipe.config.kind} on {len(samples.specs)} subnets"):
            fitted = predict.run(exp, samples, workdir, rep)
        s = cfg.search
        for note in drift_notes(exp):
            rep.say(f"warning: {note}")
        with rep.stage("search", f"search: {s.strategy}, {s.max_true_evals} true evaluations in batches of {s.batch_size}"):
            on_tune = ray is not None and s.strategy.startswith("optuna")
            # ilp / sensitivity_seeded: the per-layer loss table first (reused when sensitivity.json fits)
            table = sensitivity.for_search(exp, net, splits, workdir)
            upstream = search.SearchUpstream(ledger, samples, fitted.predictor,
                                             evaluate.tune_evaluator(payload) if on_tune else None, sensitivity=table,
                                             val_images=len(payload.val_y))
            outcome = search.run(exp, upstream, run_dir, rep, resume=resume)
        # uniform INT8/INT4(/FP8) twins of the largest subnet and of each front point, truly evaluated
        with rep.timed("baselines"):
            uniform = baselines.run(exp, ledger, outcome.front, run_dir)
        rep.say(f"      {baselines.summary_line(baselines.summary(exp, outcome.front, uniform))}")
    keys = search.used_keys(samples.specs, outcome, ledger)
    search.write_artifacts(run_dir, ledger, keys, outcome)
    return PipelineResult(exp, outcome.front, fitted.report, run_dir, len(keys), rep.timings, data_note=splits.note,
                          train_info=train_info,
                          evaluations=search.evaluation_matrix(ledger, keys, fitted.predictor.cost_model),
                          history=outcome.history, baselines=uniform)


def drift_notes(exp: Experiment) -> list[str]:
    """One line per target whose latency predictions may not hold on this machine (see
    :func:`nasq.profiling.check.drift_note`): a check here found them off, or the CPU differs."""
    return [note for p in exp.profiles if (note := drift_note(p)) is not None]


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


def run_sweep(exps: list[Experiment], console: Any = None,
              tracking_wait_s: float = DEFAULT_WAIT_S) -> list[PipelineResult]:
    """Several experiments in one driver (``nasq sweep``), each a whole :func:`run_pipeline` with its
    own MLflow parent run (siblings) and workdir, sharing one Ray session (the first experiment's
    ``ray`` settings) and what they can reuse: the supernet the first one trained is copied into
    the others' workdirs before they start, and the train stage reuses it wherever the fingerprint
    (space, data, training config) matches; the ledger is shared through one ``search.cache_dir``
    (the caller sets it)."""
    results: list[PipelineResult] = []
    with ray_session(exps[0].config.ray.address, exps[0].config.ray.num_cpus):
        for exp in exps:
            trained = results[0].workdir if results else None
            if trained is not None and not (exp.workdir / checkpoint.WEIGHTS).exists():
                exp.workdir.mkdir(parents=True, exist_ok=True)
                for name in (checkpoint.WEIGHTS, checkpoint.RECORD):  # weights first: the record names them
                    atomic_write_bytes(exp.workdir / name, (trained / name).read_bytes())
            results.append(run_pipeline(exp, console, tracking_wait_s))
    return results


def _where(address: str) -> str:
    address = job_address(address, say=False)  # inside a Ray job: the job's cluster
    return {"local": "embedded Ray", "none": "in-process", "auto": "the cluster this job runs on"}.get(address, f"Ray at {address}")
