"""Stage 6, track: MLflow - the search run, nested supernet / predictor / point runs, per-iteration
history (when the search recorded it), and ``experiment.json`` (the resolved config and space,
what ``nasq export`` needs to rebuild the supernet from the run alone)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nasq.experiment import Experiment
from nasq.files import atomic_write_json
from nasq.predict.fit import PREDICTOR_JSON, PREDICTOR_NPZ
from nasq.stages.search import EVALUATIONS_CSV
from nasq.supernet import checkpoint
from nasq.tracking import client as tracking

RUN_RECORD = "experiment.json"
TRACKING_JSON = "tracking.json"
MLARTIFACTS_DIR = "mlartifacts"  # the artifact store of the default local MLflow store


def run_record(exp: Experiment) -> dict[str, Any]:
    """What a finished run needs to be rebuilt without its experiment file or the catalogs."""
    return {"config": exp.config.model_dump(mode="json"), "source": exp.source, "experiment_hash": exp.hash,
            "space_config": exp.space.config.model_dump(mode="json"), "space_hash": exp.space.hash,
            "lineage": exp.lineage()}


def _existing(folder: Path, *names: str) -> list[Path]:
    return [folder / n for n in names if (folder / n).is_file()]


def run(exp: Experiment, result: Any, workdir: Path) -> tracking.TrackingResult:
    """Log ``result`` (a :class:`nasq.stages.pipeline.PipelineResult`) and record where it went."""
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
                           _existing(workdir, checkpoint.RECORD, checkpoint.WEIGHTS)),
        tracking.Component("predictor", {"recipe": exp.recipe.config.model_dump(mode="json")},
                           result.fit_report.as_metrics(""), _existing(workdir, PREDICTOR_JSON, PREDICTOR_NPZ))]
    tracked = tracking.log_search(result.front, uri=uri, experiment=cfg.tracking.experiment, run_name=cfg.name,
                                  params=params, metrics=metrics, tags=exp.lineage(),
                                  artifact_root=workdir / MLARTIFACTS_DIR, artifacts_dir=workdir,
                                  extra_files=_existing(workdir, EVALUATIONS_CSV, RUN_RECORD),
                                  others=result.evaluations, modelled=exp.profile.config.status == "modelled",
                                  history=list(getattr(result, "history", None) or []), components=components)
    atomic_write_json(workdir / TRACKING_JSON, {"uri": uri, "run_id": tracked.run_id, "view_url": tracked.view_url,
                                                "experiment_id": tracked.experiment_id})
    return tracked
