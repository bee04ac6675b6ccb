"""MLflow tracking of a search: one parent run, one nested child run per Pareto point.

``nasq.tracking`` is the only package of nasq that imports mlflow (an import-linter contract);
this module imports it at its top, so only code that tracks loads it. Everything goes through an explicit
``MlflowClient(tracking_uri=uri)``; the global ``mlflow.set_tracking_uri`` state is never used.

Layout of what :func:`log_search` (a parent run of its own) or ``nasq run`` (the parent run of
:mod:`nasq.tracking.lifecycle`, opened when the command starts, plus :func:`log_results`) records::

    experiment <experiment>            tags mlflow.experimentKind, mlflow.sharedViewState.<key>
      run <run_name>                   tags nasq.kind=search, nasq.lineage.*, nasq.<kind>_run_id
        params (a.b.c), metrics, search.* history metrics per step (iteration), artifacts
        front.csv front.json pareto.png pareto.html (+extra)
        run stage-<name>               (nasq run) one per stage, created as it starts: tags
                                       nasq.kind=stage, nasq.stage; metric seconds; nasq.error
        run supernet / predictor       nested: params, metrics, their files
        run point-<i>                  tags mlflow.parentRunId, nasq.kind=pareto_point, nasq.key,
                                       nasq.point, nasq.measured, nasq.<kind>_run_id; params
                                       s<i>.l<j>.<gene>; metrics <name>_pred (predicted) and <name>
                                       (measured where nasq.measured lists it, else predicted)
        run export-<i>                 (nasq export --register) ONNX model + bundle, registered

Runs are never left RUNNING while the store answers: on any exception the open child and the parent
are set FAILED before the exception propagates.
"""

from __future__ import annotations

import logging
import shlex
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import mlflow
import mlflow.onnx
import onnx
import onnxruntime
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from nasq.errors import NasqError
from nasq.files import atomic_write_json, atomic_write_text
from nasq.search.pareto import FRONT_CSV, FRONT_JSON, Front, FrontPoint
from nasq.search.uncertainty import CI_HIGH, CI_LOW, has_intervals
from nasq.tracking import view as mlflow_view
from nasq.tracking.names import _chunks, clean_key, flatten_params, point_metrics, point_params  # noqa: F401
from nasq.tracking.plots import (
    BASELINES_CSV,
    baseline_metrics,
    pareto_html,
    pareto_png,
    read_baselines,
)
from nasq.tracking.view import view_url

log = logging.getLogger(__name__)

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
PARENT_TAG = "mlflow.parentRunId"
TAG_VALUE_MAX = 8000  # mlflow's own limit
PARAMS_PER_BATCH = 100  # mlflow's limit for params (and tags) per log_batch
METRICS_PER_BATCH = 1000  # mlflow's limit for metrics per log_batch
MLFLOW_DB = "mlflow.db"  # the default local tracking store, in the workdir
PARETO_PNG = "pareto.png"
PARETO_HTML = "pareto.html"
ARTIFACT_FILES = (PARETO_PNG, PARETO_HTML, MLFLOW_DB)


@dataclass
class TrackingResult:
    run_id: str
    experiment_id: str
    uri: str
    child_run_ids: list[str] = field(default_factory=list)
    ui_command: str = ""
    view_url: str = ""  # the saved "Pareto front" chart view in the MLflow UI
    lineage_run_ids: dict[str, str] = field(default_factory=dict)  # nasq.supernet_run_id, ...


# ---------------------------------------------------------------- URIs
def default_uri(root: Path) -> str:
    """A local sqlite store in ``root``: ``sqlite:////abs/root/mlflow.db``."""
    return "sqlite:///" + str((Path(root) / MLFLOW_DB).resolve())


def ui_command(uri: str) -> str:
    """What to type to look at the runs: ``mlflow ui ...`` for local stores, a URL otherwise."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    return f"mlflow ui --backend-store-uri {shlex.quote(uri)}"


def _is_local_store(uri: str) -> bool:
    scheme = urlparse(uri).scheme
    return scheme in ("sqlite", "file") or (scheme == "" and bool(uri))


def _default_artifact_root(uri: str) -> Path | None:
    """For a sqlite store, artifacts live beside the database, never relative to the cwd."""
    if not uri.startswith("sqlite:///"):
        return None
    db = unquote(uri[len("sqlite:///"):].split("?", 1)[0])
    if not db or db == ":memory:":
        return None
    return Path(db).parent / "mlartifacts"


def _client(uri: str) -> Any:
    """A client bound to ``uri``; a store mlflow refuses to open becomes a one-line NasqError."""
    # mlflow announces creating/migrating a new sqlite store at INFO: noise in our progress output
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        return mlflow.tracking.MlflowClient(tracking_uri=uri)
    except mlflow.exceptions.MlflowException as exc:
        raise NasqError(f"cannot open MLflow tracking store {uri}: {exc.message}") from exc


def fail_run(uri: str, run_id: str) -> None:
    """Mark a run FAILED (e.g. one a crashed process left RUNNING)."""
    _client(uri).set_terminated(run_id, status="FAILED")


# ---------------------------------------------------------------- params, metrics, keys
def _log_batch(client: Any, run_id: str, params: dict[str, str], metrics: dict[str, float]) -> None:
    """Params and metrics in as few ``log_batch`` calls as mlflow's per-request limits allow."""
    stamp = int(time.time() * 1000)
    plist = [Param(k, v) for k, v in params.items()]
    mlist = [Metric(clean_key(k), float(v), stamp, 0) for k, v in metrics.items()]
    pchunks = list(_chunks(plist, PARAMS_PER_BATCH)) or [[]]
    mchunks = list(_chunks(mlist, METRICS_PER_BATCH)) or [[]]
    for n in range(max(len(pchunks), len(mchunks))):
        p = pchunks[n] if n < len(pchunks) else []
        m = mchunks[n] if n < len(mchunks) else []
        if p or m:
            client.log_batch(run_id, metrics=list(m), params=list(p))


def _tags(tags: dict[str, Any]) -> dict[str, str]:
    return {clean_key(k): str(v)[:TAG_VALUE_MAX] for k, v in tags.items()}


def set_tags(client: Any, run_id: str, tags: dict[str, Any]) -> None:
    """Set (or overwrite) tags of a run in as few ``log_batch`` calls as mlflow allows."""
    items = [RunTag(k, v) for k, v in _tags(tags).items()]
    for chunk in _chunks(items, PARAMS_PER_BATCH):
        client.log_batch(run_id, tags=list(chunk))


# ---------------------------------------------------------------- experiment
def get_or_create_experiment(client: Any, name: str, artifact_root: Path | None = None) -> str:
    """The experiment's id; created (with ``artifact_root`` for local stores) when missing."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = None
        uri = client.tracking_uri
        root = artifact_root or _default_artifact_root(uri)
        if root is not None and _is_local_store(uri):
            location = Path(root).resolve().as_uri()
        try:
            exp_id = client.create_experiment(name, artifact_location=location)
        except MlflowException:  # created concurrently by another process
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
            exp_id = exp.experiment_id
    elif exp.lifecycle_stage != "active":
        raise NasqError(f"MLflow experiment '{name}' (id {exp.experiment_id}) is deleted; restore it "
                        f"with `mlflow experiments restore --experiment-id {exp.experiment_id}` "
                        "or use another experiment name")
    else:
        exp_id = exp.experiment_id
    client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return str(exp_id)


# ---------------------------------------------------------------- runs
@dataclass
class Component:
    """A nested run beside the points: the supernet or a predictor (params, metrics, files)."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    files: Sequence[Path] = ()


def _child(client: Any, exp_id: str, parent_id: str, name: str, tags: dict[str, str],
           opened: list[str]) -> str:
    run = client.create_run(exp_id, run_name=name, tags=_tags({PARENT_TAG: parent_id, **tags}))
    opened.append(run.info.run_id)
    return run.info.run_id


def _finish(client: Any, run_id: str, opened: list[str]) -> str:
    client.set_terminated(run_id, status="FINISHED")
    opened.remove(run_id)
    return run_id


def _log_component(client: Any, exp_id: str, parent_id: str, comp: Component, opened: list[str]) -> str:
    run_id = _child(client, exp_id, parent_id, comp.kind, {"nasq.kind": comp.kind}, opened)
    _log_batch(client, run_id, flatten_params(comp.params), comp.metrics)
    for path in comp.files:
        client.log_artifact(run_id, str(path))
    return _finish(client, run_id, opened)


def _log_point(client: Any, exp_id: str, parent_id: str, i: int, point: FrontPoint,
               opened: list[str], lineage: dict[str, str]) -> str:
    tags = {"nasq.kind": "pareto_point", "nasq.key": point.spec.key(), "nasq.point": str(i),
            "nasq.short_key": point.spec.short_key(), "nasq.formats": point.formats_summary(),
            "nasq.measured": ",".join(sorted(point.measured)), **lineage}
    run_id = _child(client, exp_id, parent_id, f"point-{i}", tags, opened)
    _log_batch(client, run_id, point_params(point.spec), point_metrics(point))
    return _finish(client, run_id, opened)


def _log_history(client: Any, run_id: str, history: Sequence[dict[str, Any]]) -> None:
    """One metric per column of each history row, at ``step`` = the row's iteration."""
    stamp = int(time.time() * 1000)
    rows = [Metric(clean_key(f"search.{k}"), float(v), stamp, int(row.get("iteration", n)))
            for n, row in enumerate(history) for k, v in row.items()
            if k != "iteration" and isinstance(v, (int, float)) and v == v]
    for chunk in _chunks(rows, METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=list(chunk))


def _write_artifacts(front: Front, folder: Path, title: str, others: Any, modelled: bool,
                     baselines: list[dict[str, Any]] | None = None) -> list[Path]:
    return [atomic_write_text(folder / FRONT_CSV, front.to_csv()),
            atomic_write_json(folder / FRONT_JSON, front.to_dict()),
            pareto_png(front, folder / PARETO_PNG, title=title, others=others, modelled=modelled, baselines=baselines),
            pareto_html(front, folder / PARETO_HTML, title=title, modelled=modelled)]


def _log_artifacts(client: Any, run_id: str, front: Front, title: str, artifacts_dir: Path | None,
                   extra_files: Iterable[Path], others: Any, modelled: bool) -> None:
    extra = [Path(p) for p in extra_files]
    missing = [str(p) for p in extra if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"extra files to log do not exist: {missing}")
    with tempfile.TemporaryDirectory(prefix="nasq-mlflow-") as tmp:
        folder = Path(artifacts_dir) if artifacts_dir is not None else Path(tmp)
        baselines = read_baselines(folder / BASELINES_CSV)  # written by the search stage, if any
        if baselines:  # the CSV, and its values as parent-run metrics
            extra.append(folder / BASELINES_CSV)
            _log_batch(client, run_id, {}, baseline_metrics(baselines))
        for path in _write_artifacts(front, folder, title, others, modelled, baselines) + extra:
            client.log_artifact(run_id, str(path))


def _save_view(client: Any, exp_id: str, parent_id: str, front: Front, run_name: str) -> str:
    """The experiment tag that makes the saved "Pareto front" chart view (nasq.tracking.view)."""
    key = mlflow_view.view_key(parent_id)
    depth_params = [k for k in point_params(front.points[0].spec) if k.endswith("depth")] if front.points else []
    state = mlflow_view.page_state(parent_id, list(front.objectives), depth_params,
                                   (CI_LOW, CI_HIGH) if has_intervals(front) else None)
    value = mlflow_view.envelope(f"Pareto front: {run_name}", state)
    if len(value) > TAG_VALUE_MAX:
        log.warning("saved chart view skipped: %d characters exceed MLflow's tag limit", len(value))
        return ""
    client.set_experiment_tag(exp_id, mlflow_view.TAG_PREFIX + key, value)
    return key


def _abort(client: Any, run_ids: Iterable[str]) -> None:
    """Best effort: mark runs FAILED while another exception is already on its way up."""
    for run_id in run_ids:
        try:
            client.set_terminated(run_id, status="FAILED")
        except Exception:  # noqa: BLE001 - never mask the original error
            log.warning("could not mark MLflow run %s FAILED", run_id, exc_info=True)


def ui_base(uri: str) -> str:
    """Where the UI for ``uri`` is: the server itself, or ``mlflow ui``'s default address."""
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"


def log_search(front: Front, *, uri: str, experiment: str, run_name: str, params: dict[str, Any],
               metrics: dict[str, float], tags: dict[str, str], artifacts_dir: Path | None = None,
               artifact_root: Path | None = None, extra_files: Sequence[Path] = (),
               others: Any = None, modelled: bool = False, history: Sequence[dict[str, Any]] = (),
               components: Sequence[Component] = ()) -> TrackingResult:
    """Log a search and its front in a new parent run, then end it FINISHED (see the module
    docstring); returns the ids of what was made. ``nasq run`` instead opens its parent run when it
    starts (:mod:`nasq.tracking.lifecycle`) and logs into it with :func:`log_results`.

    ``artifacts_dir``: where front.csv/front.json/pareto.png/pareto.html are written (and kept)
    before being logged; a temporary folder when None. ``artifact_root``: artifact location of a
    new experiment on a local store (default: ``mlartifacts`` beside a sqlite database).
    ``others``/``modelled`` go to :func:`nasq.tracking.plots.pareto_png`. ``history``: rows of per-iteration
    values (``iteration`` is the step). ``components``: nested runs logged before the points, whose
    run ids become lineage tags ``nasq.<kind>_run_id`` of the parent and of every point.
    """
    client = _client(uri)
    exp_id = get_or_create_experiment(client, experiment, artifact_root)
    parent = client.create_run(exp_id, run_name=run_name, tags=_tags({**tags, "nasq.kind": "search"}))
    parent_id = parent.info.run_id
    try:
        _log_batch(client, parent_id, flatten_params(params), {})
        result = log_results(client, exp_id, parent_id, front, run_name=run_name, metrics=metrics, tags=tags,
                             artifacts_dir=artifacts_dir, extra_files=extra_files, others=others,
                             modelled=modelled, history=history, components=components)
        client.set_terminated(parent_id, status="FINISHED")
    except BaseException:
        _abort(client, [parent_id])
        raise
    return result


def log_results(client: Any, exp_id: str, parent_id: str, front: Front, *, run_name: str,
                metrics: dict[str, float], tags: dict[str, str], artifacts_dir: Path | None = None,
                extra_files: Sequence[Path] = (), others: Any = None, modelled: bool = False,
                history: Sequence[dict[str, Any]] = (), components: Sequence[Component] = ()) -> TrackingResult:
    """Log a search's results into the open parent run ``parent_id``: tags, metrics, history,
    the nested component and point runs, artifacts and the saved chart view (arguments as
    :func:`log_search`). Leaves the parent RUNNING: its owner ends it. On any exception the nested
    run being logged is set FAILED before the exception propagates."""
    uri = client.tracking_uri
    run_tags = {f"nasq.lineage.{k}": v for k, v in front.lineage.items()}
    run_tags.update(tags)
    run_tags["nasq.kind"] = "search"
    opened: list[str] = []
    children: list[str] = []
    try:
        set_tags(client, parent_id, run_tags)
        _log_batch(client, parent_id, {}, metrics)
        _log_history(client, parent_id, history)
        lineage = {f"nasq.{c.kind}_run_id": _log_component(client, exp_id, parent_id, c, opened)
                   for c in components}
        set_tags(client, parent_id, lineage)
        for i, point in enumerate(front.points):
            children.append(_log_point(client, exp_id, parent_id, i, point, opened, lineage))
        _log_artifacts(client, parent_id, front, run_name, artifacts_dir, extra_files, others, modelled)
        key = _save_view(client, exp_id, parent_id, front, run_name)
    except BaseException:
        _abort(client, reversed(opened))
        raise
    return TrackingResult(parent_id, exp_id, uri, children, ui_command(uri),
                          view_url(ui_base(uri), exp_id, key) if key else "", lineage)


# ---------------------------------------------------------------- finished runs, model registry
def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """A server must answer ``/health`` within ``timeout_s``: mlflow's client retries for minutes."""
    if not uri.startswith(("http://", "https://")):
        return

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as reply:
            reply.read()
    except (OSError, ValueError) as exc:
        raise NasqError(f"MLflow tracking server {uri} is unreachable ({exc})") from exc


def get_run_tags(uri: str, run_id: str) -> dict[str, str]:
    """The tags of a run (``nasq.kind``, parent and lineage ids); an unknown id is a NasqError."""
    check_reachable(uri)
    try:
        run = _client(uri).get_run(run_id)
    except mlflow.exceptions.MlflowException as exc:
        raise NasqError(f"MLflow run {run_id!r} not found at {uri}") from exc
    return {**run.data.tags, "nasq.experiment_id": run.info.experiment_id, "nasq.status": run.info.status}


def download(uri: str, run_id: str, names: Sequence[str], dest: Path) -> None:
    """Download the named artifacts of a run into ``dest``; a missing one is a NasqError."""
    client = _client(uri)
    for name in names:
        try:
            client.download_artifacts(run_id, name, str(dest))
        except (mlflow.exceptions.MlflowException, OSError) as exc:
            raise NasqError(f"MLflow run {run_id}: artifact {name!r} cannot be downloaded ({exc})") from exc


def register_onnx(uri: str, parent_run_id: str, bundle: Path, name: str, point: int) -> str:
    """Log an export bundle as a nested ``export-<point>`` run (ONNX flavor under ``model/``, the
    bundle under ``bundle/``) and register ``model/`` as a new version of ``name``; its version."""
    client = _client(uri)
    exp_id = client.get_run(parent_run_id).info.experiment_id
    opened: list[str] = []
    run_id = _child(client, exp_id, parent_run_id, f"export-{point}", {"nasq.kind": "export",
                                                                      "nasq.point": str(point)}, opened)
    try:
        with tempfile.TemporaryDirectory(prefix="nasq-model-") as tmp:
            # explicit requirements: mlflow would otherwise spend seconds inferring them
            reqs = [f"onnx=={onnx.__version__}", f"onnxruntime=={onnxruntime.__version__}"]
            mlflow.onnx.save_model(onnx.load(str(bundle / "model.onnx")), str(Path(tmp) / "model"),
                                   pip_requirements=reqs)
            client.log_artifacts(run_id, str(Path(tmp) / "model"), "model")
        client.log_artifacts(run_id, str(bundle), "bundle")
        if not client.search_registered_models(filter_string=f"name = '{name}'"):
            client.create_registered_model(name)
        source = client.get_run(run_id).info.artifact_uri.rstrip("/") + "/model"
        version = client.create_model_version(name, source, run_id=run_id)
        _finish(client, run_id, opened)
    except BaseException:
        _abort(client, opened)
        raise
    return str(version.version)
