"""MLflow tracking of a search: one parent run, one nested child run per Pareto point.

This is the only module of nasq that imports mlflow, and it does so lazily inside functions:
``import nasq.tracking`` alone never imports mlflow. Everything goes through an explicit
``MlflowClient(tracking_uri=uri)``; the global ``mlflow.set_tracking_uri`` state is never used.

Layout of what :func:`log_search` records::

    experiment <experiment>            tag mlflow.experimentKind=custom_model_development
      run <run_name>                   tags nasq.kind=search, nasq.lineage.*, caller's tags
        params  flattened (a.b.c), metrics, artifacts front.csv front.json pareto.png (+extra)
        run point-<i>                  tags mlflow.parentRunId, nasq.kind=pareto_point,
                                       nasq.key, nasq.point; params s<i>.l<j>.kernel ...;
                                       metrics <name>_pred (predicted) and <name> (measured)

Runs are never left RUNNING: on any exception the open child and the parent are set FAILED
before the exception propagates.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from nasq.errors import MissingDependencyError, NasqError
from nasq.search.pareto import Front, FrontPoint
from nasq.space import SubnetSpec

log = logging.getLogger(__name__)

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
PARENT_TAG = "mlflow.parentRunId"
PARAM_VALUE_MAX = 500
TAG_VALUE_MAX = 8000  # mlflow's own limit
KEY_MAX = 250  # mlflow's own limit
PARAMS_PER_BATCH = 100  # mlflow's limit for params (and tags) per log_batch
METRICS_PER_BATCH = 1000  # mlflow's limit for metrics per log_batch
_BAD_KEY_CHARS = re.compile(r"[^\w.\- /]")


@dataclass
class TrackingResult:
    run_id: str
    experiment_id: str
    uri: str
    child_run_ids: list[str] = field(default_factory=list)
    ui_command: str = ""


# ---------------------------------------------------------------- URIs
def default_uri(root: Path) -> str:
    """A local sqlite store in ``root``: ``sqlite:////abs/root/mlflow.db``."""
    return "sqlite:///" + str((Path(root) / "mlflow.db").resolve())


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


# ---------------------------------------------------------------- mlflow, lazily
def _mlflow() -> Any:
    try:
        import mlflow
        import mlflow.exceptions
        import mlflow.tracking  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            f"tracking needs mlflow ({exc}); install it with `pip install mlflow`") from exc
    return mlflow


def _client(uri: str) -> Any:
    """A client bound to ``uri``; a store mlflow refuses to open becomes a one-line NasqError."""
    mlflow = _mlflow()
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
def clean_key(key: str) -> str:
    """A key mlflow accepts: disallowed characters become ``_``; at most 250 characters."""
    key = _BAD_KEY_CHARS.sub("_", str(key)).strip("/")
    key = re.sub(r"/+", "/", key).replace("..", "_.")
    return (key or "_")[:KEY_MAX]


def flatten_params(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts become dotted keys; values are stringified and cut to 500 characters."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten_params(value, name + "."))
        else:
            out[clean_key(name)] = _stringify(value)[:PARAM_VALUE_MAX]
    return out


def _stringify(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def point_params(spec: SubnetSpec) -> dict[str, str]:
    """The genes of a subnet spelled out: ``s<i>.depth`` and ``s<i>.l<j>.<field>``."""
    out: dict[str, str] = {}
    for i, stage in enumerate(spec.stages):
        out[f"s{i}.depth"] = str(len(stage))
        if spec.widths:
            out[f"s{i}.width"] = str(spec.widths[i])
        for j, layer in enumerate(stage):
            for name, value in layer.to_dict().items():
                out[f"s{i}.l{j}.{name}"] = str(value)
    if spec.resolution:
        out["resolution"] = str(spec.resolution)
    return out


def point_metrics(point: FrontPoint) -> dict[str, float]:
    """Predicted values as ``<name>_pred``, measured values as ``<name>``."""
    out = {f"{k}_pred": float(v) for k, v in point.predicted.items()}
    out.update({k: float(v) for k, v in point.measured.items()})
    return out


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _log_batch(client: Any, run_id: str, params: dict[str, str], metrics: dict[str, float]) -> None:
    """Params and metrics in as few ``log_batch`` calls as mlflow's per-request limits allow."""
    from mlflow.entities import Metric, Param

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


# ---------------------------------------------------------------- experiment
def get_or_create_experiment(client: Any, name: str, artifact_root: Path | None = None) -> str:
    """The experiment's id; created (with ``artifact_root`` for local stores) when missing."""
    from mlflow.exceptions import MlflowException

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
def _log_point(client: Any, exp_id: str, parent_id: str, i: int, point: FrontPoint,
               opened: list[str]) -> str:
    tags = {PARENT_TAG: parent_id, "nasq.kind": "pareto_point", "nasq.key": point.spec.key(),
            "nasq.point": str(i), "nasq.short_key": point.spec.short_key()}
    run = client.create_run(exp_id, run_name=f"point-{i}", tags=_tags(tags))
    run_id = run.info.run_id
    opened.append(run_id)
    _log_batch(client, run_id, point_params(point.spec), point_metrics(point))
    client.set_terminated(run_id, status="FINISHED")
    opened.remove(run_id)
    return run_id


def _write_artifacts(front: Front, folder: Path, title: str, others: Any, modelled: bool) -> list[Path]:
    from nasq.files import atomic_write_json, atomic_write_text
    from nasq.plots import pareto_png

    files = [atomic_write_text(folder / "front.csv", front.to_csv()),
             atomic_write_json(folder / "front.json", front.to_dict())]
    files.append(pareto_png(front, folder / "pareto.png", title=title, others=others, modelled=modelled))
    return files


def _log_artifacts(client: Any, run_id: str, front: Front, title: str, artifacts_dir: Path | None,
                   extra_files: Iterable[Path], others: Any, modelled: bool) -> None:
    extra = [Path(p) for p in extra_files]
    missing = [str(p) for p in extra if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"extra files to log do not exist: {missing}")
    with tempfile.TemporaryDirectory(prefix="nasq-mlflow-") as tmp:
        folder = Path(artifacts_dir) if artifacts_dir is not None else Path(tmp)
        for path in _write_artifacts(front, folder, title, others, modelled) + extra:
            client.log_artifact(run_id, str(path))


def _abort(client: Any, run_ids: Iterable[str]) -> None:
    """Best effort: mark runs FAILED while another exception is already on its way up."""
    for run_id in run_ids:
        try:
            client.set_terminated(run_id, status="FAILED")
        except Exception:  # noqa: BLE001 - never mask the original error
            log.warning("could not mark MLflow run %s FAILED", run_id, exc_info=True)


def log_search(front: Front, *, uri: str, experiment: str, run_name: str, params: dict[str, Any],
               metrics: dict[str, float], tags: dict[str, str], artifacts_dir: Path | None = None,
               artifact_root: Path | None = None, extra_files: Sequence[Path] = (),
               others: Any = None, modelled: bool = False) -> TrackingResult:
    """Log a search and its front (see the module docstring); returns the ids of what was made.

    ``artifacts_dir``: where front.csv/front.json/pareto.png are written (and kept) before being
    logged; a temporary folder when None. ``artifact_root``: artifact location of a new experiment
    on a local store (default: ``mlartifacts`` beside a sqlite database). ``others``/``modelled``
    go to :func:`nasq.plots.pareto_png`.
    """
    client = _client(uri)
    exp_id = get_or_create_experiment(client, experiment, artifact_root)
    run_tags = {f"nasq.lineage.{k}": v for k, v in front.lineage.items()}
    run_tags.update(tags)
    run_tags["nasq.kind"] = "search"
    parent = client.create_run(exp_id, run_name=run_name, tags=_tags(run_tags))
    parent_id, opened, children = parent.info.run_id, [parent.info.run_id], []
    try:
        _log_batch(client, parent_id, flatten_params(params), metrics)
        for i, point in enumerate(front.points):
            children.append(_log_point(client, exp_id, parent_id, i, point, opened))
        _log_artifacts(client, parent_id, front, run_name, artifacts_dir, extra_files, others, modelled)
        client.set_terminated(parent_id, status="FINISHED")
    except BaseException:
        _abort(client, reversed(opened))
        raise
    return TrackingResult(parent_id, exp_id, uri, children, ui_command(uri))
