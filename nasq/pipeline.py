"""The whole pipeline: data -> supernet (trained once) -> sampled evaluations on Ray -> predictor
-> NSGA-II on predictors -> true evaluation of the front -> MLflow -> export of one point.

Each stage writes its artifact into the experiment's working folder, stamped with lineage hashes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nasq import data as data_mod
from nasq.experiment import Experiment
from nasq.files import atomic_write_json, atomic_write_text, sha256_bytes
from nasq.predict.fit import AccuracyPredictor, FitReport, fit_with_holdout
from nasq.search.nsga import Candidate, run_nsga2
from nasq.search.pareto import Front, FrontPoint, non_dominated
from nasq.space import SubnetSpec

EvaluateFn = Callable[[list[SubnetSpec]], list[float]]


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


class Ledger:
    """Every true evaluation, keyed by canonical subnet key: each subnet is evaluated once."""

    def __init__(self, evaluate: EvaluateFn):
        self.evaluate = evaluate
        self.top1: dict[str, float] = {}
        self.specs: dict[str, SubnetSpec] = {}
        self.origin: dict[str, str] = {}

    def __call__(self, specs: list[SubnetSpec], origin: str) -> np.ndarray:
        todo = list({s.key(): s for s in specs if s.key() not in self.top1}.values())
        if todo:
            for spec, value in zip(todo, self.evaluate(todo), strict=True):
                self.top1[spec.key()], self.specs[spec.key()], self.origin[spec.key()] = value, spec, origin
        return np.array([self.top1[s.key()] for s in specs], dtype=np.float64)

    def to_csv(self) -> str:
        lines = ["key,origin,top1"]
        lines += [f"{k},{self.origin[k]},{v:.4f}" for k, v in self.top1.items()]
        return "\n".join(lines) + "\n"


def run_pipeline(exp: Experiment, console: Any = None) -> PipelineResult:
    from nasq.distributed import ray_session

    cfg = exp.config
    rep = Reporter(console)
    workdir = exp.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    with rep.stage("data", f"data: {cfg.data.name}"):
        splits = data_mod.load(cfg.data, exp.source)
        rep.say(f"      {splits.summary()}" + (f"\n      [yellow]{splits.note}[/]" if splits.name != cfg.data.name else ""))
    with rep.stage("train", f"supernet: training once on space '{exp.space.name}' ({exp.space.size():.2e} subnets)"):
        net, train_info = train_stage(exp, splits, workdir, rep)
    with ray_session(cfg.ray.address, cfg.ray.num_cpus) as ray:
        ledger = Ledger(make_evaluator(ray, exp, net, splits, rep))
        with rep.stage("evaluate", f"evaluate: {cfg.evaluate.num_subnets} sampled subnets ({_where(cfg.ray.address)})"):
            specs, top1 = sample_stage(exp, ledger)
        with rep.stage("predict", f"predictor: {exp.recipe.config.kind} on {len(specs)} subnets"):
            predictor, report = fit_with_holdout(exp.recipe, exp.space, exp.cost_model(), specs, top1, cfg.search.seed)
            predictor.save(workdir, sha256_bytes(ledger.to_csv().encode()))
            rep.say(f"      cross-validated Kendall tau {report.kendall_tau:.3f}, Spearman {report.spearman:.3f}, "
                    f"RMSE {report.rmse:.2f} pts, top-10 % precision {report.top10_precision:.2f}")
            if hasattr(predictor.model, "chosen"):
                rep.say(f"      auto: picked {predictor.model.chosen} (CV tau {predictor.model.cv_scores})")
        with rep.stage("search", f"search: NSGA-II, population {cfg.search.population} x {cfg.search.generations} generations"):
            front = search_stage(exp, predictor, ledger, rep)
    atomic_write_text(workdir / "evaluations.csv", ledger.to_csv())
    front.save(workdir)
    result = PipelineResult(exp, front, report, workdir, len(ledger.top1), rep.timings,
                            data_note=splits.note, train_info=train_info,
                            evaluations=evaluation_matrix(ledger, predictor.cost_model))
    with rep.stage("track", "tracking: MLflow"):
        result.tracking = track_stage(exp, result, workdir)
    with rep.stage("export", f"export: the {cfg.export.pick} point"):
        result.export = export_stage(exp, net, front, splits, workdir) if cfg.export.enabled else None
    atomic_write_json(workdir / "timings.json", rep.timings)
    return result


def _where(address: str) -> str:
    return {"local": "embedded Ray", "none": "in-process"}.get(address, f"Ray at {address}")


def train_stage(exp: Experiment, splits: data_mod.Splits, workdir: Path, rep: Reporter) -> tuple[Any, dict]:
    import torch
    from safetensors.torch import save_file

    from nasq.supernet.network import Supernet
    from nasq.supernet.train import train_supernet

    cfg = exp.config.train
    torch.manual_seed(cfg.seed)  # weight initialisation; training itself uses its own generator
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    net = Supernet(exp.space)
    with rep.bar("training", 1) as bar:
        res = train_supernet(net, exp.space, splits.train_x, splits.train_y, cfg,
                             progress=lambda s, n, loss: bar(s / n, info=f"step {s}/{n} loss {loss:.3f}"))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(workdir / "supernet.safetensors"))
    info = {"steps": res.steps, "seconds": round(res.seconds, 2), "images_per_s": round(res.images_per_s, 1),
            "final_loss": round(float(np.mean(res.losses[-20:])), 4)}
    atomic_write_json(workdir / "supernet.json", {"space": exp.space.name, "space_hash": exp.space.hash,
                                                  "train": cfg.model_dump(), "result": info})
    rep.say(f"      {res.steps} steps, {res.images_per_s:.0f} images/s, final loss {info['final_loss']:.3f}")
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

        def evaluate(specs: list[SubnetSpec]) -> list[float]:
            with rep.bar("evaluating", len(specs)) as bar:
                out = []
                for i, s in enumerate(specs):
                    out += local([s])
                    bar(i + 1)
            return out
        return evaluate

    from nasq.distributed import evaluate_on_ray

    def evaluate_remote(specs: list[SubnetSpec]) -> list[float]:
        with rep.bar("evaluating", len(specs)) as bar:
            return evaluate_on_ray(ray, space_cfg, state, calib_x, val_x, val_y, specs, ecfg.batch_size,
                                   progress=bar)
    return evaluate_remote


def sample_stage(exp: Experiment, ledger: Ledger) -> tuple[list[SubnetSpec], np.ndarray]:
    ecfg = exp.config.evaluate
    rng = np.random.default_rng(ecfg.seed)
    fixed = [exp.space.largest(), exp.space.smallest()]
    specs = fixed + exp.space.sample_unique(rng, ecfg.num_subnets - len(fixed), {s.key() for s in fixed})
    return specs, ledger(specs, "sample")


def search_stage(exp: Experiment, predictor: AccuracyPredictor, ledger: Ledger, rep: Reporter) -> Front:
    cfg = exp.config
    cost = predictor.cost_model

    def score(specs: list[SubnetSpec]) -> dict[str, np.ndarray]:
        return {"top1": predictor.predict(specs), **cost.score(specs)}

    candidates = run_nsga2(exp.space, score, cfg.objectives, cfg.constraints, cfg.search)
    chosen = pick_spread(candidates, cfg.search.max_true_evals)
    rep.say(f"      {len(candidates)} predicted-optimal candidates; evaluating {len(chosen)} for real")
    measured = ledger([c.spec for c in chosen], "front")
    points = [FrontPoint(c.spec, [int(g) for g in c.genome], c.predicted, {"top1": float(m)})
              for c, m in zip(chosen, measured, strict=True)]
    front = Front(cfg.objectives, points, exp.lineage())
    keep = non_dominated(front.matrix())
    front.points = sorted((points[i] for i in keep), key=lambda p: -p.value("top1"))
    return front


def pick_spread(candidates: list[Candidate], k: int) -> list[Candidate]:
    """At most ``k`` candidates spread evenly along predicted top1."""
    ordered = sorted(candidates, key=lambda c: -c.predicted["top1"])
    if len(ordered) <= k:
        return ordered
    idx = np.unique(np.round(np.linspace(0, len(ordered) - 1, k)).astype(int))
    return [ordered[i] for i in idx]


def evaluation_matrix(ledger: Ledger, cost: Any) -> np.ndarray:
    specs = list(ledger.specs.values())
    c = cost.score(specs)
    return np.column_stack([ledger(specs, "cached"), c["latency_ms"], c["size_mb"]])


def track_stage(exp: Experiment, result: PipelineResult, workdir: Path) -> Any:
    """MLflow: the search run, nested supernet / predictor / point runs, per-iteration history
    (``result.history`` rows when the search records them), and ``experiment.json`` (the resolved
    config and space, what ``nasq export`` needs to rebuild the supernet from the run alone)."""
    from nasq import tracking

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
    validation images the search used and on the test split (see nasq.export_run)."""
    import shutil

    from nasq.export_run import calibrated_subnet, export_checked

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
