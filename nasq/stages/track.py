"""Stage 6, track: MLflow - the search run, nested supernet / predictor / point runs, per-iteration
history (when the search recorded it), and ``experiment.json`` (the resolved config and space,
what ``nasq export`` needs to rebuild the supernet from the run alone).

Under ``nasq run`` the search run is the parent run :func:`parent_run` opened when the command
started (:mod:`nasq.tracking.lifecycle`: tags and params known then, a nested run per stage, always
ended FINISHED or FAILED); this stage logs the results into it. Called alone (no ``parent``), it opens
and ends a parent run of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nasq.experiment import Experiment
from nasq.files import atomic_write_json
from nasq.predict.fit import PREDICTOR_JSON, PREDICTOR_NPZ
from nasq.stages.runs import RUN_RECORD, TRACKING_JSON, run_record
from nasq.stages.search import EVALUATIONS_CSV
from nasq.supernet import checkpoint
from nasq.tracking import client as tracking
from nasq.tracking import lifecycle

MLARTIFACTS_DIR = "mlartifacts"  # the artifact store of the default local MLflow store


def _existing(folder: Path, *names: str) -> list[Path]:
    return [folder / n for n in names if (folder / n).is_file()]


def uri_of(exp: Experiment) -> str:
    """The experiment's tracking URI: ``tracking.uri``, else a sqlite store in its workdir."""
    return exp.config.tracking.uri or tracking.default_uri(exp.workdir)


def run_params(exp: Experiment) -> dict[str, Any]:
    """The search run's params: all known before the run starts."""
    return {"experiment": exp.config.model_dump(mode="json"), "space.genes": exp.space.n_genes}


def run_tags(exp: Experiment) -> dict[str, str]:
    """The search run's tags known before the run starts: the lineage hashes, the source, every
    target profile, and which formats of the space a target only emulates (``allow_emulated``; each
    point run's ``emulated_layers`` metric counts the layers using them)."""
    emulated = {p.name: p.emulated_in(exp.space) for p in exp.profiles}
    return {**exp.lineage(), "nasq.experiment": exp.config.name, "nasq.source": str(exp.source),
            "nasq.profiles": ",".join(p.name for p in exp.profiles),
            "nasq.allow_emulated": str(exp.config.allow_emulated).lower(),
            "nasq.emulated_formats": ";".join(f"{k}:{','.join(v)}" for k, v in emulated.items() if v) or "none"}


@contextmanager
def parent_run(exp: Experiment, wait_s: float = lifecycle.DEFAULT_WAIT_S) -> Iterator[lifecycle.TrackedRun]:
    """The experiment's parent run for the block (:func:`nasq.tracking.lifecycle.tracked_run`). The
    workdir is created only once the run exists — unless the store lives in it (the default)."""
    cfg = exp.config
    if cfg.tracking.uri is None:
        exp.workdir.mkdir(parents=True, exist_ok=True)
    with lifecycle.tracked_run(uri_of(exp), cfg.tracking.experiment, cfg.name, tags=run_tags(exp),
                               params=run_params(exp), artifact_root=exp.workdir / MLARTIFACTS_DIR,
                               wait_s=wait_s) as run:
        exp.workdir.mkdir(parents=True, exist_ok=True)
        yield run


def run(exp: Experiment, result: Any, workdir: Path,
        parent: lifecycle.TrackedRun | None = None) -> tracking.TrackingResult:
    """Log ``result`` (a :class:`nasq.stages.pipeline.PipelineResult`) into the open run ``parent``
    (a parent run of its own when None) and record where it went."""
    cfg = exp.config
    uri = parent.uri if parent is not None else uri_of(exp)
    atomic_write_json(workdir / RUN_RECORD, run_record(exp))
    metrics = {**result.fit_report.as_metrics(), "front.size": float(len(result.front.points)),
               "evaluations.true": float(result.evaluated), **{f"time.{k}_s": v for k, v in result.timings.items()},
               **{f"supernet.{k}": float(v) for k, v in result.train_info.items()}}
    components = [
        tracking.Component("supernet", {"space": exp.space.name, "train": cfg.train.model_dump(mode="json")},
                           {k: float(v) for k, v in result.train_info.items()},
                           _existing(workdir, checkpoint.RECORD, checkpoint.WEIGHTS)),
        tracking.Component("predictor", {"recipe": exp.recipe.config.model_dump(mode="json")},
                           result.fit_report.as_metrics(""), _existing(workdir, PREDICTOR_JSON, PREDICTOR_NPZ))]
    logged = dict(metrics=metrics, tags=run_tags(exp), artifacts_dir=workdir,
                  extra_files=_existing(workdir, EVALUATIONS_CSV, RUN_RECORD), others=result.evaluations,
                  modelled=exp.profile.config.status == "modelled",
                  history=list(getattr(result, "history", None) or []), components=components)
    if parent is not None:
        tracked = parent.log_results(result.front, **logged)
    else:
        tracked = tracking.log_search(result.front, uri=uri, experiment=cfg.tracking.experiment, run_name=cfg.name,
                                      params=run_params(exp), artifact_root=workdir / MLARTIFACTS_DIR, **logged)
    atomic_write_json(workdir / TRACKING_JSON, {"uri": uri, "run_id": tracked.run_id, "view_url": tracked.view_url,
                                                "experiment_id": tracked.experiment_id})
    return tracked
