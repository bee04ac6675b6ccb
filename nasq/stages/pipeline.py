"""The whole pipeline: data -> supernet (trained once) -> sampled evaluations on Ray -> predictor
-> NSGA-II on predictors -> true evaluation of the front -> MLflow -> export of one point.

Each stage writes its artifact into the experiment's working folder, stamped with lineage hashes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nasq import data as data_mod
from nasq.experiment import Experiment
from nasq.files import atomic_write_json, sha256_bytes
from nasq.predict.fit import FitReport, fit_with_holdout
from nasq.search.ledger import EvaluateFn
from nasq.search.pareto import Front
from nasq.space import SubnetSpec
from nasq.stages.search import (
    evaluation_matrix,
    open_ledger,
    sample_stage,
    search_stage,
    search_task,
    used_keys,
    write_search_artifacts,
)


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


class Reporter:
    """Stage headers and progress bars (rich); silent when ``console`` is None."""

    def __init__(self, console: Any = None, total_stages: int = 7):
        self.console, self.total, self.n = console, total_stages, 0
        self.timings: dict[str, float] = {}

    def say(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text)

    @contextmanager
    def stage(self, name: str, what: str) -> Iterator[None]:
        self.n += 1
        self.say(f"[bold cyan][{self.n}/{self.total}][/] {what}")
        t0 = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - t0, 2)
        self.say(f"      [dim]done in {self.timings[name]:.1f} s[/]")

    @contextmanager
    def bar(self, description: str, total: int) -> Iterator[Callable[..., None]]:
        if self.console is None:
            yield lambda *a, **k: None
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        with Progress(TextColumn("      {task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=self.console,
                      transient=True) as prog:
            task = prog.add_task(description, total=total, info="")

            def update(done: int, _total: int | None = None, info: str = "") -> None:
                prog.update(task, completed=done, info=info)

            yield update


def run_pipeline(exp: Experiment, console: Any = None) -> PipelineResult:
    cfg = exp.config
    rep = Reporter(console)
    workdir = exp.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    with rep.stage("data", f"data: {cfg.data.name}"):
        splits = data_mod.load(cfg.data, exp.source)
        rep.say(f"      {splits.summary()}" + (f"\n      [yellow]{splits.note}[/]" if splits.name != cfg.data.name else ""))
    with rep.stage("train", f"supernet: training once on space '{exp.space.name}' ({exp.space.size():.2e} subnets)"):
        net, train_info = train_stage(exp, splits, workdir, rep)
    result = evaluate_and_search(exp, net, splits, rep, train_info)
    with rep.stage("track", "tracking: MLflow"):
        result.tracking = track_stage(exp, result, workdir)
    with rep.stage("export", f"export: the {cfg.export.pick} point"):
        result.export = export_stage(exp, net, result.front, splits, workdir) if cfg.export.enabled else None
    atomic_write_json(workdir / "timings.json", rep.timings)
    return result


def evaluate_and_search(exp: Experiment, net: Any, splits: data_mod.Splits, rep: Reporter,
                        train_info: dict[str, float], resume: bool = False, run_dir: Path | None = None) -> PipelineResult:
    """Sampled evaluations -> predictor -> search on a trained supernet (``nasq run``, ``nasq search``);
    the search's checkpoint, front and history go to ``run_dir`` (default: the workdir)."""
    from nasq.cluster.tasks import ray_session

    cfg, workdir = exp.config, exp.workdir
    run_dir = run_dir or workdir
    with ray_session(cfg.ray.address, cfg.ray.num_cpus) as ray:
        ledger = open_ledger(exp, make_evaluator(ray, exp, net, splits, rep), workdir / "supernet.safetensors")
        with rep.stage("evaluate", f"evaluate: {cfg.evaluate.num_subnets} sampled subnets ({_where(cfg.ray.address)})"):
            specs, top1 = sample_stage(exp, ledger)
            if ledger.reused:
                rep.say(f"      {ledger.reused} evaluations reused from {ledger.path}")
        with rep.stage("predict", f"predictor: {exp.recipe.config.kind} on {len(specs)} subnets"):
            predictor, report = fit_with_holdout(exp.recipe, exp.space, exp.cost_model(), specs, top1, cfg.search.seed)
            predictor.save(workdir, sha256_bytes(ledger.to_csv([s.key() for s in specs]).encode()))
            rep.say(f"      cross-validated Kendall tau {report.kendall_tau:.3f}, Spearman {report.spearman:.3f}, "
                    f"RMSE {report.rmse:.2f} pts, top-10 % precision {report.top10_precision:.2f}")
            if hasattr(predictor.model, "chosen"):
                rep.say(f"      auto: picked {predictor.model.chosen} (CV tau {predictor.model.cv_scores})")
        s = cfg.search
        with rep.stage("search", f"search: {s.strategy}, {s.max_true_evals} true evaluations in batches of {s.batch_size}"):
            outcome = search_stage(exp, search_task(exp, predictor, specs), ledger, rep, run_dir, resume=resume,
                                   ray=ray, tune_evaluate=tune_evaluator(exp, net, splits) if s.strategy.startswith("optuna") else None)
    keys = used_keys(specs, outcome, ledger)
    write_search_artifacts(run_dir, ledger, keys, outcome)
    return PipelineResult(exp, outcome.front, report, run_dir, len(keys), rep.timings, data_note=splits.note,
                          train_info=train_info, evaluations=evaluation_matrix(ledger, keys, predictor.cost_model),
                          history=outcome.history)


def run_training(exp: Experiment, console: Any = None, fresh: bool = False) -> dict:
    """The data and training stages alone (``nasq train``): leaves ``supernet.safetensors`` and
    ``supernet.json`` in the workdir for a later ``nasq run`` to reuse."""
    rep = Reporter(console, total_stages=2)
    exp.workdir.mkdir(parents=True, exist_ok=True)
    with rep.stage("data", f"data: {exp.config.data.name}"):
        splits = data_mod.load(exp.config.data, exp.source)
        rep.say(f"      {splits.summary()}")
    with rep.stage("train", f"supernet: training once on space '{exp.space.name}' ({exp.space.size():.2e} subnets)"):
        _, info = train_stage(exp, splits, exp.workdir, rep, fresh=fresh)
    return {**info, "seconds_total": sum(rep.timings.values())}


def _where(address: str) -> str:
    return {"local": "embedded Ray", "none": "in-process"}.get(address, f"Ray at {address}")


def supernet_fingerprint(exp: Experiment) -> str:
    """What makes two trained supernets interchangeable: the space file and the data and
    training configs (threads and checkpoint spacing excluded: they do not change the weights)."""
    from nasq.supernet.train import weights_config

    cfg = exp.config
    ident = {"space_hash": exp.space.hash, "data": cfg.data.model_dump(mode="json"),
             "train": weights_config(cfg.train)}
    return sha256_bytes(json.dumps(ident, sort_keys=True).encode())


def finished_supernet(exp: Experiment, workdir: Path) -> dict | None:
    """The record of a finished supernet in ``workdir`` trained the same way, or None."""
    meta, weights = workdir / "supernet.json", workdir / "supernet.safetensors"
    if not (meta.is_file() and weights.is_file()):
        return None
    try:
        record = json.loads(meta.read_text())
    except ValueError:
        return None
    return record if record.get("fingerprint") == supernet_fingerprint(exp) else None


def train_stage(exp: Experiment, splits: data_mod.Splits, workdir: Path, rep: Reporter,
                fresh: bool = False) -> tuple[Any, dict]:
    """Train the supernet once. A finished supernet of the same space, data and training config
    in ``workdir`` is reused; an interrupted one resumes from its checkpoint."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from nasq.supernet.network import Supernet
    from nasq.supernet.train import checkpoint_finished, train_supernet

    cfg = exp.config.train
    torch.manual_seed(cfg.seed)  # weight initialisation; training itself uses its own generators
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    net = Supernet(exp.space)
    record = None if fresh else finished_supernet(exp, workdir)
    if record is not None:
        try:
            net.load_state_dict(load_file(str(workdir / "supernet.safetensors")))
            rep.say(f"      reusing the finished supernet in {workdir} (same space, data and training config)")
            return net, {**record["result"], "reused": 1.0}
        except RuntimeError:  # saved by another version of the supernet code: train again
            rep.say(f"      [yellow]the supernet in {workdir} does not fit this code version: training again[/]")
            fresh = True
    ckpt = workdir / "checkpoint"
    if ckpt.exists() and (fresh or checkpoint_finished(ckpt)):
        shutil.rmtree(ckpt)  # a finished run's checkpoint is nothing to resume
    with rep.bar("training", 1) as bar:
        res = train_supernet(net, exp.space, splits.train_x, splits.train_y, cfg,
                             progress=lambda s, n, loss: bar(s / n, info=f"step {s}/{n} loss {loss:.3f}"),
                             checkpoint_dir=ckpt, resume=not fresh)
    if res.resumed_from:
        rep.say(f"      resumed from the checkpoint at step {res.resumed_from}")
    tmp = workdir / "supernet.safetensors.tmp"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp))
    os.replace(tmp, workdir / "supernet.safetensors")
    info = {"steps": res.steps, "seconds": round(res.seconds, 2), "images_per_s": round(res.images_per_s, 1),
            "final_loss": round(float(np.mean(res.losses[-20:])), 4), "resumed_from": res.resumed_from}
    atomic_write_json(workdir / "supernet.json", {"space": exp.space.name, "space_hash": exp.space.hash,
                                                  "fingerprint": supernet_fingerprint(exp), "device": res.device,
                                                  "train": cfg.model_dump(), "result": info,
                                                  "losses": [round(v, 5) for v in res.losses]})
    rep.say(f"      {res.steps} steps on {res.device}, {res.images_per_s:.0f} images/s, final loss {info['final_loss']:.3f}")
    return net, info


def make_evaluator(ray: Any, exp: Experiment, net: Any, splits: data_mod.Splits, rep: Reporter) -> EvaluateFn:
    from nasq.supernet.evaluate import SubnetEvaluator, calibration_images, state_to_numpy

    ecfg = exp.config.evaluate
    calib_x = calibration_images(splits.train_x, ecfg.calib_images, ecfg.seed)
    n_val = ecfg.val_images or len(splits.val_y)
    val_x, val_y = splits.val_x[:n_val], splits.val_y[:n_val]
    space_cfg, state = exp.space.config.model_dump(mode="json"), state_to_numpy(net)
    if ray is None:
        local = SubnetEvaluator(space_cfg, state, calib_x, val_x, val_y, ecfg.batch_size, threads=None)

        def evaluate(specs: list[SubnetSpec]) -> list[float | None]:
            with rep.bar("evaluating", len(specs)) as bar:
                out: list[float | None] = []
                for i, s in enumerate(specs):
                    try:
                        out += local([s])
                    except (RuntimeError, ValueError):  # recorded as failed by the ledger, not fatal
                        out.append(None)
                    bar(i + 1)
            return out
        return evaluate

    from nasq.cluster.tasks import evaluate_on_ray

    def evaluate_remote(specs: list[SubnetSpec]) -> list[float | None]:
        with rep.bar("evaluating", len(specs)) as bar:
            return evaluate_on_ray(ray, space_cfg, state, calib_x, val_x, val_y, specs, ecfg.batch_size,
                                   progress=bar)
    return evaluate_remote


def tune_evaluator(exp: Experiment, net: Any, splits: data_mod.Splits) -> Any:
    """What a Ray Tune trial needs to evaluate one subnet: (function, payload of arrays)."""
    from nasq.cluster.tasks import tune_eval
    from nasq.supernet.evaluate import calibration_images, state_to_numpy

    ecfg = exp.config.evaluate
    n_val = ecfg.val_images or len(splits.val_y)
    payload = {"space_config": exp.space.config.model_dump(mode="json"), "state": state_to_numpy(net),
               "calib_x": calibration_images(splits.train_x, ecfg.calib_images, ecfg.seed),
               "val_x": splits.val_x[:n_val], "val_y": splits.val_y[:n_val], "batch_size": ecfg.batch_size}
    return tune_eval, payload


def track_stage(exp: Experiment, result: PipelineResult, workdir: Path) -> Any:
    """MLflow: the search run, nested supernet / predictor / point runs, per-iteration history
    (``result.history`` rows when the search records them), and ``experiment.json`` (the resolved
    config and space, what ``nasq export`` needs to rebuild the supernet from the run alone)."""
    from nasq.tracking import client as tracking

    cfg = exp.config
    uri = cfg.tracking.uri or tracking.default_uri(workdir)
    atomic_write_json(workdir / RUN_RECORD, run_record(exp))
    params = {"experiment": cfg.model_dump(mode="json"), "space.genes": exp.space.n_genes}
    metrics = {**result.fit_report.as_metrics(), "front.size": float(len(result.front.points)),
               "evaluations.true": float(result.evaluated), **{f"time.{k}_s": v for k, v in result.timings.items()},
               **{f"supernet.{k}": float(v) for k, v in result.train_info.items()}}
    components = [
        tracking.Component("supernet", {"space": exp.space.name, "train": cfg.train.model_dump(mode="json")},
                           {k: float(v) for k, v in result.train_info.items()},
                           _existing(workdir, "supernet.json", "supernet.safetensors")),
        tracking.Component("predictor", {"recipe": exp.recipe.config.model_dump(mode="json")},
                           result.fit_report.as_metrics(""), _existing(workdir, "predictor.json", "predictor.npz"))]
    tracked = tracking.log_search(result.front, uri=uri, experiment=cfg.tracking.experiment, run_name=cfg.name,
                                  params=params, metrics=metrics, tags=exp.lineage(),
                                  artifact_root=workdir / "mlartifacts", artifacts_dir=workdir,
                                  extra_files=_existing(workdir, "evaluations.csv", RUN_RECORD),
                                  others=result.evaluations, modelled=exp.profile.config.status == "modelled",
                                  history=list(getattr(result, "history", None) or []), components=components)
    atomic_write_json(workdir / "tracking.json", {"uri": uri, "run_id": tracked.run_id, "view_url": tracked.view_url,
                                                  "experiment_id": tracked.experiment_id})
    return tracked


RUN_RECORD = "experiment.json"


def run_record(exp: Experiment) -> dict[str, Any]:
    """What a finished run needs to be rebuilt without its experiment file or the catalogs."""
    return {"config": exp.config.model_dump(mode="json"), "source": exp.source, "experiment_hash": exp.hash,
            "space_config": exp.space.config.model_dump(mode="json"), "space_hash": exp.space.hash,
            "lineage": exp.lineage()}


def _existing(folder: Path, *names: str) -> list[Path]:
    return [folder / n for n in names if (folder / n).is_file()]


def export_stage(exp: Experiment, net: Any, front: Front, splits: data_mod.Splits, workdir: Path) -> Any:
    """Export the configured pick to ``<workdir>/export`` and check it in onnxruntime on the
    validation images the search used and on the test split (see nasq.export.checks)."""
    import shutil

    from nasq.export.checks import calibrated_subnet, export_checked

    i = front.pick(exp.config.export.pick)
    point = front.points[i]
    model = calibrated_subnet(net, point.spec, splits.train_x, exp.config.evaluate)
    out = workdir / "export"
    if out.exists():
        shutil.rmtree(out)
    result, _ = export_checked(model, spec=point.spec, space=exp.space, out=out, splits=splits,
                               ecfg=exp.config.evaluate, predicted=point.predicted,
                               measured={**point.measured, "point": float(i)}, lineage=exp.lineage(),
                               opset=exp.config.export.opset)
    return result
