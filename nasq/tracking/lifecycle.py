"""The life of one MLflow parent run that spans a whole command (``nasq run``): opened before any
work starts, a nested run per stage created as the stage starts, and always ended in a true state.

:func:`tracked_run` is the one entry:

- **Server down at start.** For an ``http(s)`` tracking URI it first waits, at most ``wait_s``
  seconds (default :data:`DEFAULT_WAIT_S`), for the server's ``/health`` to answer; otherwise it
  raises a one-line :class:`~nasq.errors.NasqError` naming the URI, before the caller has written
  anything or started any work (mlflow's own client would retry for minutes).
- **Bounded HTTP retries.** For the duration of the block the ``MLFLOW_HTTP_REQUEST_*`` variables of
  :data:`HTTP_LIMITS` are set (a variable the user already set wins): mlflow's defaults retry a dead
  server for about four minutes per call.
- **Ends in a true state.** The parent run is created with the caller's tags (``nasq.kind=search``)
  and params, yielded as a :class:`TrackedRun`, and ended FINISHED when the block completes — or
  FAILED, with the one-line reason as the tag ``nasq.error``, when anything leaves the block: a
  NasqError, any other exception, KeyboardInterrupt (the pipeline turns SIGTERM and SIGINT into a
  KeyboardInterrupt subclass whose text is the signal's name), SystemExit. Every still-RUNNING run
  nested under the parent (a stage, a point whose logging was cut short, a stage run whose creation
  was interrupted mid-call) is set FAILED too.
- **Server gone mid-run: the run fails cleanly.** The first tracking call that fails while the
  server no longer answers ``/health`` raises :class:`TrackingLost`, a one-line NasqError naming the
  URI, the run and what was being logged; nothing more is sent to the store (the runs cannot be
  marked FAILED on a server that is gone: they stay RUNNING there until someone sets them FAILED).
  What the stages wrote stays in the run folder, and the caller says how to rerun. A call the store refuses while
  it answers (a bad value) is a one-line NasqError, and the runs are ended FAILED as for any error.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException

from nasq.errors import NasqError
from nasq.search.pareto import Front
from nasq.tracking.client import (
    PARENT_TAG,
    TrackingResult,
    _client,
    _log_batch,
    _tags,
    check_reachable,
    get_or_create_experiment,
    log_results,
    set_tags,
)
from nasq.tracking.names import flatten_params

log = logging.getLogger(__name__)

ERROR_TAG = "nasq.error"  # the one-line reason a run FAILED
DEFAULT_WAIT_S = 10.0
# mlflow reads these on every request; its defaults (7 retries, backoff factor 2, 120 s timeout)
# keep a call to a dead server busy for minutes
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
REASON_MAX = 500
_POLL_S = 0.5
_PROBE_S = 2.0  # after a failed call: does the server still answer /health?


class TrackingLost(NasqError):
    """The tracking server stopped answering in the middle of a run."""


def one_line(exc: BaseException) -> str:
    """The reason of a failure as one short line: a NasqError's or an interrupt's own text, else
    ``Type: text``."""
    text = " ".join(str(exc).split())
    if not (isinstance(exc, NasqError | KeyboardInterrupt) and text):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text[:REASON_MAX]


@contextmanager
def http_limits(limits: dict[str, str] | None = None) -> Iterator[None]:
    """Set mlflow's HTTP retry variables (default :data:`HTTP_LIMITS`) the user has not set, for the block."""
    limits = HTTP_LIMITS if limits is None else limits
    added = [k for k in limits if k not in os.environ]
    for k in added:
        os.environ[k] = limits[k]
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def wait_until_reachable(uri: str, wait_s: float) -> None:
    """Return once an ``http(s)`` tracking server answers ``/health``; after ``wait_s`` seconds of
    no answer, a one-line NasqError naming ``uri``. Local stores (sqlite, file) return at once."""
    if not uri.startswith(("http://", "https://")):
        return
    deadline = time.monotonic() + wait_s
    while True:
        try:
            check_reachable(uri, timeout_s=min(5.0, max(deadline - time.monotonic(), _POLL_S)))
            return
        except NasqError as exc:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                cause = one_line(exc.__cause__) if exc.__cause__ is not None else str(exc)
                raise NasqError(f"MLflow tracking server {uri} did not answer within {wait_s:g} s ({cause}); "
                                "start it, or point tracking.uri at one that runs") from exc
        time.sleep(min(_POLL_S, remaining))


@dataclass
class TrackedRun:
    """An open parent run (see the module docstring). Its methods raise :class:`TrackingLost`
    when the store fails a call; :meth:`fail` and :meth:`finish` are idempotent."""

    client: Any
    uri: str
    experiment_id: str
    run_id: str
    run_name: str
    status: str = "RUNNING"
    stage_run_ids: dict[str, str] = field(default_factory=dict)  # stage name -> its nested run
    lost: bool = False  # a call failed: nothing more is sent

    @contextmanager
    def calls(self, what: str) -> Iterator[None]:
        """Store errors of the tracking calls made in the block become TrackingLost."""
        if self.lost:
            raise TrackingLost(f"MLflow tracking at {self.uri} is not answering ({what} skipped)")
        try:
            yield
        except (MlflowException, OSError) as exc:
            if self._answers():  # a call the store refused: the runs can still be ended
                raise NasqError(f"MLflow tracking at {self.uri} failed while {what}: {one_line(exc)}") from exc
            self.lost = True
            raise TrackingLost(f"MLflow tracking at {self.uri} failed while {what} (run {self.run_id} is left "
                               f"RUNNING there): {one_line(exc)}") from exc

    def _answers(self) -> bool:
        try:
            check_reachable(self.uri, timeout_s=_PROBE_S)  # local stores: True
        except NasqError:
            return False
        return True

    @contextmanager
    def stage(self, name: str) -> Iterator[str]:
        """A nested run ``stage-<name>`` (tags ``nasq.kind=stage``, ``nasq.stage``) for the block:
        FINISHED with metric ``seconds`` when it completes. An exception leaving it ends the stage run
        and the parent FAILED at once (the command stops; before slow cleanups such as Ray's)."""
        with self.calls(f"starting stage {name}"):
            run = self.client.create_run(self.experiment_id, run_name=f"stage-{name}",
                                         tags={PARENT_TAG: self.run_id, "nasq.kind": "stage", "nasq.stage": name})
        run_id = self.stage_run_ids[name] = run.info.run_id
        t0 = time.perf_counter()
        try:
            yield run_id
        except BaseException as exc:
            self.fail(one_line(exc), first=[run_id])
            raise
        with self.calls(f"ending stage {name}"):
            _log_batch(self.client, run_id, {}, {"seconds": round(time.perf_counter() - t0, 3)})
            self.client.set_terminated(run_id, status="FINISHED")

    def log_results(self, front: Front, **kwargs: Any) -> TrackingResult:
        """The search's results into this run (:func:`nasq.tracking.client.log_results`)."""
        with self.calls("logging the search's results"):
            return log_results(self.client, self.experiment_id, self.run_id, front, run_name=self.run_name, **kwargs)

    def finish(self) -> None:
        if self.status == "RUNNING":
            with self.calls("ending the run"):
                self.client.set_terminated(self.run_id, status="FINISHED")
            self.status = "FINISHED"

    def fail(self, reason: str, first: list[str] | tuple[str, ...] = ()) -> None:
        """Best effort, never raising: the runs in ``first``, the parent, then every nested run still
        RUNNING, set FAILED with the tag ``nasq.error`` = ``reason``. Skipped once the store failed a call."""
        if self.status != "RUNNING":
            return
        self.status = "FAILED"
        if self.lost:
            log.warning("MLflow run %s left RUNNING at %s: the store is not answering", self.run_id, self.uri)
            return
        try:
            for run_id in [*first, self.run_id]:
                self._mark_failed(run_id, reason)
            running = self.client.search_runs([self.experiment_id], max_results=1000,
                                              filter_string=f"tags.mlflow.parentRunId = '{self.run_id}' "
                                                            "and attributes.status = 'RUNNING'")
            for run in running:
                self._mark_failed(run.info.run_id, reason)
        except (MlflowException, OSError):
            self.lost = True
            log.warning("could not mark MLflow run %s FAILED at %s", self.run_id, self.uri, exc_info=True)

    def _mark_failed(self, run_id: str, reason: str) -> None:
        set_tags(self.client, run_id, {ERROR_TAG: reason})
        self.client.set_terminated(run_id, status="FAILED")


def start_run(uri: str, experiment: str, run_name: str, *, tags: dict[str, Any], params: dict[str, Any],
              artifact_root: Path | None = None) -> TrackedRun:
    """Create the experiment (when missing) and a RUNNING parent run with ``tags`` and ``params``."""
    client = _client(uri)
    try:
        exp_id = get_or_create_experiment(client, experiment, artifact_root)
        run = client.create_run(exp_id, run_name=run_name, tags=_tags({**tags, "nasq.kind": "search"}))
    except (MlflowException, OSError) as exc:
        raise NasqError(f"cannot start an MLflow run at {uri}: {one_line(exc)}") from exc
    tracked = TrackedRun(client, uri, exp_id, run.info.run_id, run_name)
    try:
        with tracked.calls("logging the run's params"):
            _log_batch(client, tracked.run_id, flatten_params(params), {})
    except BaseException as exc:
        tracked.fail(one_line(exc))
        raise
    return tracked


@contextmanager
def tracked_run(uri: str, experiment: str, run_name: str, *, tags: dict[str, Any], params: dict[str, Any],
                artifact_root: Path | None = None, wait_s: float = DEFAULT_WAIT_S) -> Iterator[TrackedRun]:
    """The parent run of a whole command, for the block (see the module docstring)."""
    with http_limits():
        wait_until_reachable(uri, wait_s)
        run = start_run(uri, experiment, run_name, tags=tags, params=params, artifact_root=artifact_root)
        try:
            yield run
            run.finish()
        except BaseException as exc:
            run.fail(one_line(exc))
            raise
