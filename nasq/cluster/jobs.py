"""Ray Jobs: run an experiment on a Ray cluster (``nasq submit``) and manage its jobs (``nasq jobs``).

What is shipped is data only: the experiment file and the catalog files it names (search space,
the hardware profile's own files, predictor recipe), copied under fixed names into a temporary
folder that becomes the job's ``working_dir``. The entrypoint is fixed, ``nasq run experiment.yaml``:
the user's file name never reaches the shell Ray runs the entrypoint with (a name such as
``x.yaml;touch INJECTED;.yaml`` is shipped as ``experiment.yaml`` and kept only as metadata).
Only regular files on an allow-list are shipped from a profile folder, never a symlink, and every
shipped file must lie inside the catalog folder it was found in. ``entrypoint_num_cpus=0`` keeps the
driver off a CPU; no user code or user runtime_env is sent, only one environment variable,
``NASQ_RAY_ADDRESS=auto``: the job evaluates on the cluster it runs on whatever ``ray.address`` the
file says (nasq.cluster.tasks.job_address). The cluster runs ``nasq`` from its own Python environment.
The job's driver runs on the head node: a ``tracking.uri`` that is unset or a local path (file,
sqlite) is resolved there, inside the job's temporary working_dir when relative, so ``nasq submit``
warns about it.

Authentication follows Ray: with ``RAY_AUTH_MODE=token`` the client sends the token Ray finds
(``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``); unset, nasq sets
``RAY_AUTH_MODE=disabled`` explicitly rather than depend on leftover ``~/.ray`` state. Anyone who
can reach an unauthenticated Jobs port can run code on the cluster: keep it on loopback or use
token auth.
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from nasq.cluster.tasks import ADDRESS_ENV, configure_env
from nasq.errors import MissingDependencyError, NasqError
from nasq.experiment import load_experiment

JOB_EXPERIMENT = "experiment.yaml"  # the shipped experiment's fixed name in the job's working_dir
ENTRYPOINT = "nasq run " + shlex.quote(JOB_EXPERIMENT)
# a sweep job: the base experiment as experiment.yaml, its entries (grid expanded) as sweep.yaml
JOB_SWEEP = "sweep.yaml"
SWEEP_ENTRYPOINT = "nasq sweep " + shlex.quote(JOB_SWEEP)
# what a hardware profile folder may hold; anything else beside profile.yaml (a .env, keys) stays home
PROFILE_FILES = ("profile.yaml", "latency.csv", "latency_model.json", "measurement.json")
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def client(address: str) -> Any:
    """A JobSubmissionClient for ``address`` (``http://HOST:8265``); unreachable -> NasqError."""
    if not address.startswith(("http://", "https://")):
        raise NasqError(f"--address {address!r}: expected the Ray dashboard URL, e.g. http://127.0.0.1:8265")
    configure_env()
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as e:  # pragma: no cover - ray is a core dependency
        raise MissingDependencyError("job submission needs Ray: pip install 'ray[default]'") from e
    from ray.exceptions import AuthenticationError

    try:
        return JobSubmissionClient(address)
    except AuthenticationError as e:
        raise _auth_error(address, e) from None
    except (ConnectionError, RuntimeError, ValueError, OSError) as e:
        raise NasqError(f"cannot reach the Ray Jobs API at {address}: {_first_line(e)}") from e


def _auth_error(address: str, e: Exception) -> NasqError:
    """Ray's token refusal (a paragraph of help) as one line saying what to set."""
    what = " ".join(str(getattr(e, "message", "") or "authentication failed").split())[:200].rstrip(".")
    return NasqError(f"Ray at {address} refused the request: {what}; the cluster uses token authentication: "
                     "set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH, a file holding the token)")


def _first_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:300] or type(e).__name__


def _inside(path: Path, root: Path, what: str, experiment: Path) -> Path:
    """``path`` resolved, refused unless it is a regular file (not a symlink) inside ``root``."""
    if path.is_symlink() or not path.is_file():
        raise NasqError(f"{experiment}: {what}: {str(path)[:200]!r} is not a regular file; a submitted "
                        "experiment ships regular catalog files only")
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise NasqError(f"{experiment}: {what}: {str(resolved)[:200]!r} lies outside {str(root)[:200]!r}")
    return resolved


def assemble(experiment: Path, dest: Path, ship_experiment: bool = True) -> str:
    """Copy the experiment (as ``experiment.yaml``; not with ``ship_experiment=False``, used for a
    sweep's variants, which bring only their catalog files) and the catalog files it names into
    ``dest`` (validated first, with the same loader ``nasq run`` uses); returns the shipped name."""
    experiment = Path(experiment)
    exp = load_experiment(experiment)  # a bad experiment fails here, before anything is sent
    for ref in (exp.config.space, exp.config.predictor, *exp.config.hardware):
        if "/" in ref or ref.endswith(".yaml") or ref in (".", "..") or "\\" in ref:
            raise NasqError(f"{experiment}: {ref[:100]!r}: a submitted experiment must name catalog entries "
                            "(e.g. space: mbconv_small), not paths")
    space_src, recipe_src = Path(exp.space.source), Path(exp.recipe.source)
    files: dict[Path, Path] = {
        **({experiment.resolve(): dest / JOB_EXPERIMENT} if ship_experiment else {}),
        _inside(space_src, space_src.parent, "space", experiment): dest / "search_spaces" / f"{exp.config.space}.yaml",
        _inside(recipe_src, recipe_src.parent, "predictor", experiment): dest / "predictors" / f"{exp.config.predictor}.yaml",
    }
    for name, prof in zip(exp.config.hardware, exp.profiles, strict=True):
        folder = Path(prof.source).parent
        if folder.name != name or folder.parent.name != "hardware_profiles":
            raise NasqError(f"{experiment}: hardware: {name[:100]!r} resolves to {str(folder)[:200]!r}, "
                            "not a hardware_profiles/<name> folder")
        for fname in PROFILE_FILES:
            path = folder / fname
            if path.exists() or path.is_symlink():
                files[_inside(path, folder, f"hardware {name}", experiment)] = dest / "hardware_profiles" / name / fname
    for src, dst in files.items():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    return JOB_EXPERIMENT


def tracking_warning(experiment: Path) -> str | None:
    """One line when the experiment's ``tracking.uri`` is unset or a local store: the job's driver
    resolves it on the head node, where nothing off the head can read it."""
    uri = load_experiment(Path(experiment)).config.tracking.uri
    if uri and urlparse(uri).scheme not in ("", "file", "sqlite"):
        return None
    what = f"tracking.uri {uri!r} is a local path" if uri else "tracking.uri is unset (a sqlite file in the workdir)"
    return (f"warning: {experiment}: {what}: the job's driver runs on the cluster's head node, so the MLflow "
            "runs are written there (a relative path inside the job's temporary working_dir) where other "
            "nodes and this machine cannot read them; use an MLflow server URL (http://HOST:PORT)")


def assemble_sweep(base: Path, variants: list[Path], entries: list[tuple[str, dict]], dest: Path) -> str:
    """A sweep job's folder: the base experiment and its catalog files, every variant's catalog
    files (a variant may name other targets), and ``sweep.yaml`` listing the entries (data only:
    names and overrides, merged by ``nasq sweep`` on the cluster); returns the sweep file's name."""
    import yaml

    assemble(base, dest)
    for variant in variants:
        assemble(variant, dest, ship_experiment=False)
    doc = {"experiment": JOB_EXPERIMENT, "runs": [{"name": name, "set": over} for name, over in entries]}
    (dest / JOB_SWEEP).write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return JOB_SWEEP


def submit(experiment: Path, address: str, submission_id: str | None = None,
           sweep: tuple[list[Path], list[tuple[str, dict]]] | None = None) -> str:
    """Submit ``nasq run`` of ``experiment`` to the cluster at ``address``; returns the job id.
    With ``sweep`` (its variants' files and its ``(name, overrides)`` entries), the job is one
    ``nasq sweep`` of them instead: one driver, one supernet, one ledger, an MLflow run each."""
    jobs = client(address)
    with tempfile.TemporaryDirectory(prefix="nasq-job-") as tmp:
        if sweep is None:
            name, entrypoint = assemble(Path(experiment), Path(tmp)), ENTRYPOINT
        else:
            name, entrypoint = assemble_sweep(Path(experiment), *sweep, Path(tmp)), SWEEP_ENTRYPOINT
        runtime_env = {"working_dir": tmp, "env_vars": {ADDRESS_ENV: "auto"}}
        from ray.exceptions import AuthenticationError

        try:
            return jobs.submit_job(entrypoint=entrypoint, runtime_env=runtime_env,
                                   entrypoint_num_cpus=0, submission_id=submission_id,
                                   metadata={"nasq.experiment": Path(experiment).name[:200], "nasq.shipped": name})
        except AuthenticationError as e:
            raise _auth_error(address, e) from None
        except (RuntimeError, ValueError, ConnectionError) as e:
            raise NasqError(f"Ray at {address} refused the job: {_first_line(e)}") from e


def _call(address: str, what: str, fn: str, *args: Any) -> Any:
    from ray.exceptions import AuthenticationError

    jobs = client(address)
    try:
        return getattr(jobs, fn)(*args)
    except AuthenticationError as e:
        raise _auth_error(address, e) from None
    except (RuntimeError, ValueError, ConnectionError) as e:
        raise NasqError(f"{what} at {address}: {_first_line(e)}") from e


def list_jobs(address: str) -> list[dict[str, Any]]:
    rows = []
    for job in _call(address, "listing jobs", "list_jobs"):
        rows.append({"job_id": job.submission_id or job.job_id, "status": str(job.status.value),
                     "entrypoint": job.entrypoint, "start_time": job.start_time, "end_time": job.end_time,
                     "message": job.message or ""})
    return rows


def status(address: str, job_id: str) -> str:
    return str(_call(address, f"job {job_id}", "get_job_status", job_id).value)


def logs(address: str, job_id: str) -> str:
    return str(_call(address, f"job {job_id}", "get_job_logs", job_id))


def stop(address: str, job_id: str) -> bool:
    return bool(_call(address, f"job {job_id}", "stop_job", job_id))


def wait(address: str, job_id: str, timeout_s: float = 600.0, poll_s: float = 1.0) -> str:
    """Poll until the job reaches a terminal status (or ``timeout_s``); returns the status."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = status(address, job_id)
        if state in TERMINAL or time.monotonic() > deadline:
            return state
        time.sleep(poll_s)


def auth_mode() -> str:
    return os.environ.get("RAY_AUTH_MODE", "disabled")
