"""Finding a finished run: by run folder (``runs/demo``) or by MLflow run id.

A run folder holds what the pipeline wrote: ``front.json``, ``supernet.safetensors`` and
``experiment.json`` (the resolved config and space; folders made before it existed need the
experiment file, ``--experiment``, whose space must have the hash recorded in ``supernet.json``),
and ``tracking.json`` (the MLflow run it was logged as). An MLflow run id (of a search run or of
one of its ``point-<i>`` runs) is resolved through the tracking URI and its artifacts are
downloaded into a temporary folder that lives as long as the ``open_run`` block.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasq.errors import ConfigError, NasqError
from nasq.files import read_json_object
from nasq.search.pareto import FRONT_JSON, Front
from nasq.search.state import decode_saved_spec
from nasq.space import SearchSpace
from nasq.specs import ExperimentConfig, SpaceConfig, validate
from nasq.supernet.files import WEIGHTS

if TYPE_CHECKING:
    from nasq.experiment import Experiment

# Written by the track stage (nasq.stages.track), named here: this module stays free of torch,
# mlflow and scikit-learn until a run has to be downloaded or rebuilt, so `nasq front` and a bad
# `nasq export` answer in about a second instead of after importing them all.
RUN_RECORD = "experiment.json"
TRACKING_JSON = "tracking.json"

_RUN_ID = re.compile(r"[0-9a-f]{32}")


def run_record(exp: Experiment) -> dict[str, Any]:
    """What a finished run needs to be rebuilt without its experiment file or the catalogs."""
    return {"config": exp.config.model_dump(mode="json"), "source": exp.source, "experiment_hash": exp.hash,
            "space_config": exp.space.config.model_dump(mode="json"), "space_hash": exp.space.hash,
            "lineage": exp.lineage()}


@dataclass
class FinishedRun:
    folder: Path  # holds front.json, experiment.json, supernet.safetensors (maybe a download)
    record: dict[str, Any]  # experiment.json: config, space_config, space_hash, lineage ({} if absent)
    front: Front
    name: str  # what the user gave: a folder or a run id
    uri: str | None = None  # MLflow tracking URI of the search run, when known
    run_id: str | None = None  # MLflow search (parent) run id, when known
    point: int | None = None  # the point, when a point run id was given

    def _require_record(self) -> None:
        if not self.record:
            raise ConfigError(str(self.folder), RUN_RECORD, "file not found (a run made before nasq recorded "
                              "it): pass the experiment file with --experiment")

    def experiment_config(self) -> Any:
        self._require_record()
        return validate(ExperimentConfig, self.record.get("config"), f"{self.name}: {RUN_RECORD}")

    def space(self) -> Any:
        self._require_record()
        config = validate(SpaceConfig, self.record.get("space_config"), f"{self.name}: {RUN_RECORD}")
        return SearchSpace(config, f"{self.name}: {RUN_RECORD}", str(self.record.get("space_hash", "")))


def is_run_id(text: str) -> bool:
    return bool(_RUN_ID.fullmatch(text))


@contextmanager
def open_run(run: str, tracking_uri: str | None = None, experiment: Path | None = None) -> Iterator[FinishedRun]:
    """The finished run named by ``run`` (folder or MLflow run id); see the module docstring."""
    folder = Path(run)
    if folder.is_dir():
        yield _from_folder(folder, run, experiment)
        return
    if not is_run_id(run):
        raise NasqError(f"RUN {run!r}: no such run folder, and not an MLflow run id (32 hex characters)")
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise NasqError(f"RUN {run!r}: an MLflow run id needs --tracking-uri (or MLFLOW_TRACKING_URI)")
    with tempfile.TemporaryDirectory(prefix="nasq-run-") as tmp:
        yield _from_mlflow(run, uri, Path(tmp))


def _from_folder(folder: Path, name: str, experiment: Path | None) -> FinishedRun:
    for needed in (FRONT_JSON, WEIGHTS):
        if not (folder / needed).is_file():
            raise ConfigError(str(folder), needed, "file not found: not a finished nasq run folder")
    record = _record(folder, experiment)
    tracked = read_json_object(folder / TRACKING_JSON) if (folder / TRACKING_JSON).is_file() else {}
    return _checked(FinishedRun(folder, record, _front(folder), name, tracked.get("uri"), tracked.get("run_id")))


def _record(folder: Path, experiment: Path | None) -> dict[str, Any]:
    if experiment is None:  # without it, the front can be shown but not exported
        return read_json_object(folder / RUN_RECORD) if (folder / RUN_RECORD).is_file() else {}
    from nasq.experiment import load_experiment
    from nasq.supernet import checkpoint

    exp = load_experiment(experiment)
    checkpoint.check_space(folder, exp.space, hint=f" (the space {experiment} names)")
    return run_record(exp)


def _from_mlflow(run_id: str, uri: str, dest: Path) -> FinishedRun:
    from nasq.tracking import client as tracking

    tags = tracking.get_run_tags(uri, run_id)
    point, parent = None, run_id
    if tags.get("nasq.kind") == "pareto_point":
        point, parent = int(tags["nasq.point"]), tags["mlflow.parentRunId"]
        tags = tracking.get_run_tags(uri, parent)
    if tags.get("nasq.kind") != "search":
        raise NasqError(f"MLflow run {run_id}: not a nasq search or Pareto point run "
                        f"(nasq.kind={tags.get('nasq.kind')!r})")
    if tags.get("nasq.status") != "FINISHED":
        raise NasqError(f"MLflow run {parent}: status {tags.get('nasq.status')}, not FINISHED")
    supernet_run = tags.get("nasq.supernet_run_id")
    if not supernet_run:
        raise NasqError(f"MLflow run {parent}: no nasq.supernet_run_id tag (logged before nasq recorded it)")
    tracking.download(uri, parent, [FRONT_JSON, RUN_RECORD], dest)
    tracking.download(uri, supernet_run, [WEIGHTS], dest)
    return _checked(FinishedRun(dest, read_json_object(dest / RUN_RECORD), _front(dest), run_id, uri, parent, point))


def _front(folder: Path) -> Front:
    return Front.load(folder / FRONT_JSON)  # anything wrong with it: one ConfigError naming it


def _checked(run: FinishedRun) -> FinishedRun:
    """``run``, once every point of its front is a subnet of the run's space (when it records one)."""
    if run.record:
        space = run.space()
        for i, point in enumerate(run.front.points):
            try:
                decode_saved_spec(point.spec.to_dict(), space)
            except ValueError as e:
                raise ConfigError(str(run.folder / FRONT_JSON), f"points[{i}].spec", str(e)) from None
    return run
