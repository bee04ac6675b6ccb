"""Ray: the only module that imports ray. Fans true subnet evaluations out as Ray tasks.

Embedded by default (``address: local`` starts a private single-node Ray bound to 127.0.0.1);
``address: none`` evaluates in-process; any other address joins that cluster.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

from nasq.errors import MissingDependencyError, NasqError
from nasq.space import SubnetSpec
from nasq.supernet.evaluate import EvalPayload, SubnetEvaluator

LOOPBACK_ENV = {
    # Without this Ray 2.60 binds the machine's external address even when told 127.0.0.1.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    # Token auth otherwise depends on leftover ~/.ray state; set it explicitly.
    "RAY_AUTH_MODE": "disabled",
}

ProgressFn = Callable[[int, int], None]


def configure_env() -> None:
    for key, value in LOOPBACK_ENV.items():
        os.environ.setdefault(key, value)


def _ray() -> Any:
    try:
        import ray
    except ImportError as e:  # pragma: no cover - ray is a core dependency
        raise MissingDependencyError("Ray is not installed: pip install 'ray[default,tune]'") from e
    return ray


@contextmanager
def ray_session(address: str = "local", num_cpus: int | None = None):
    """Start (or join) Ray for the duration of the block; only what we started is shut down."""
    if address == "none":
        yield None
        return
    configure_env()
    ray = _ray()
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
        if address == "local":
            kwargs.update(address="local", num_cpus=num_cpus or os.cpu_count(), _node_ip_address="127.0.0.1")
        else:
            kwargs.update(address=address)
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise NasqError(f"cannot reach Ray at {address!r}: {e}") from e
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def eval_chunk(payload: EvalPayload, spec_dicts: list[dict]) -> list[float]:
    """One Ray task (or Ray Tune trial, see nasq.cluster.tune): rebuild the supernet from ``payload``
    and evaluate the specs (one thread)."""
    return SubnetEvaluator(payload, threads=1)([SubnetSpec.from_dict(d) for d in spec_dicts])



def evaluate_on_ray(ray: Any, payload: EvalPayload, specs: list[SubnetSpec], chunk: int = 2,
                    progress: ProgressFn | None = None, max_retries: int = 2,
                    task: Callable[[EvalPayload, list[dict]], list[float]] | None = None) -> list[float | None]:
    """One task per ``chunk`` specs, results in input order. A task that fails (its worker dies, or
    the evaluation raises) is retried ``max_retries`` times; after that its specs come back as None
    (recorded as failed by the ledger) instead of failing the whole batch. ``task`` replaces the
    subnet evaluation (tests inject a cheap one with the same signature)."""
    remote = ray.remote(num_cpus=1, max_retries=max_retries, retry_exceptions=True)(task or eval_chunk)
    ref = ray.put(payload)
    pending = {}
    for lo in range(0, len(specs), chunk):
        part = [s.to_dict() for s in specs[lo : lo + chunk]]
        pending[remote.remote(ref, part)] = (lo, len(part))
    results: list[float | None] = [None] * len(specs)
    done = 0
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            lo, n = pending.pop(ref)
            try:
                values = [float(v) for v in ray.get(ref)]
            except ray.exceptions.RayError:
                values = [None] * n  # retried max_retries times already: record, do not crash the search
            results[lo : lo + n] = values
            done += n
            if progress:
                progress(done, len(specs))
    return results
