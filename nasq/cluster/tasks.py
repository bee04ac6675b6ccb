"""Ray: the only module that imports ray. Fans true subnet evaluations out as Ray tasks.

Embedded by default (``address: local`` starts a private single-node Ray bound to 127.0.0.1);
``address: none`` evaluates in-process; any other address joins that cluster. Inside a Ray job the
experiment's address is overridden so the job evaluates on the cluster it runs on (see
:func:`job_address`).

Fan-out (:class:`Fanout`): the payload (supernet weights, calibration and validation images) is put
into the object store once per search; each task carries a reference to it, and each worker process
fetches and rebuilds it once (:func:`eval_chunk` caches it by object id), so a node pulls the
weights once per worker, not once per task. Tasks hold a few subnets each (:func:`chunk_size`) so
Ray's per-task cost stays small against the evaluation work, and at most ``max_in_flight`` tasks
are pending at a time (:func:`run_bounded`): a 10,000-evaluation search submits as results come
back instead of queueing thousands of tasks at once. Results keep the input order.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Hashable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

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
EvalFn = Callable[[EvalPayload, list[dict]], list[float]]
H = TypeVar("H", bound=Hashable)
# Set by `nasq submit` in the job's runtime_env: the address the job's driver evaluates on.
ADDRESS_ENV = "NASQ_RAY_ADDRESS"
# Ray sets this in the environment of every job's entrypoint (the driver), and only there.
RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def configure_env() -> None:
    for key, value in LOOPBACK_ENV.items():
        os.environ.setdefault(key, value)


def _ray() -> Any:
    try:
        import ray
    except ImportError as e:  # pragma: no cover - ray is a core dependency
        raise MissingDependencyError("Ray is not installed: pip install 'ray[default,tune]'") from e
    return ray


def job_address(address: str, say: bool = True) -> str:
    """The address to use: ``$NASQ_RAY_ADDRESS`` (set by ``nasq submit``) wins over the experiment;
    inside any other Ray job an embedded ``local`` Ray becomes ``auto`` (a second Ray inside the
    job would keep its evaluations off the cluster). Says so in one line on stderr (``say``)."""
    forced = os.environ.get(ADDRESS_ENV, "").strip()
    chosen = forced or ("auto" if address == "local" and RAY_JOB_ENV in os.environ else address)
    if chosen != address and say:
        why = f"${ADDRESS_ENV}" if forced else "running as a Ray job"
        print(f"ray.address {address!r} -> {chosen!r} ({why}): evaluating on the cluster this job runs on",
              file=sys.stderr, flush=True)
    return chosen


@contextmanager
def ray_session(address: str = "local", num_cpus: int | None = None):
    """Start (or join) Ray for the duration of the block; only what we started is shut down."""
    address = job_address(address)
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


def eval_specs(payload: EvalPayload, spec_dicts: list[dict]) -> list[float]:
    """Evaluate the specs on the supernet rebuilt from ``payload`` (one thread): a Ray Tune trial's
    evaluation (see nasq.cluster.tune)."""
    return SubnetEvaluator(payload, threads=1)([SubnetSpec.from_dict(d) for d in spec_dicts])


# One worker process's copy of the payload and its rebuilt supernet, keyed by the object id: a
# worker fetches and rebuilds the weights once however many tasks it runs (only the latest kept).
_WORKER: dict[str, Any] = {}


def eval_chunk(refs: list[Any], spec_dicts: list[dict], task: EvalFn | None = None) -> dict[str, Any]:
    """One Ray task: evaluate ``spec_dicts`` on the payload behind ``refs[0]`` (a reference wrapped
    in a list, so Ray hands the task the reference and this worker fetches it only on a cache miss).
    ``task`` replaces the subnet evaluation (tests). Returns the top1 values and where and how long
    the work ran."""
    ray = _ray()
    key = refs[0].hex()
    fetched = _WORKER.get("key") != key
    if fetched:
        _WORKER.clear()
        _WORKER.update(key=key, payload=ray.get(refs[0]))
    start = time.perf_counter()
    if task is not None:
        values = task(_WORKER["payload"], spec_dicts)
    else:
        if "evaluator" not in _WORKER:
            _WORKER["evaluator"] = SubnetEvaluator(_WORKER["payload"], threads=1)
        values = _WORKER["evaluator"]([SubnetSpec.from_dict(d) for d in spec_dicts])
    return {"top1": [float(v) for v in values], "node": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(), "fetched": fetched, "work_s": time.perf_counter() - start}


def chunk_size(n: int, workers: int, per_worker: int = 8, cap: int = 16) -> int:
    """Subnets per task: about ``per_worker`` tasks per worker, at most ``cap`` subnets (a failed
    task retries, or loses, at most ``cap`` evaluations; progress stays live). Ray's own cost per
    task is milliseconds beside evaluations of ~0.1-1 s, so a small batch goes one subnet per task:
    with fewer, larger tasks the CPUs idle at the batch's tail instead (benchmarks/cluster_throughput.py
    measured Ray's share at 3-6 % with one subnet per task, 7-9 % with two, on 12-subnet batches)."""
    return max(1, min(cap, math.ceil(n / (per_worker * max(1, workers)))))


def run_bounded(n_parts: int, submit: Callable[[int], H], wait: Callable[[list[H]], list[H]],
                done: Callable[[int, H], None], max_in_flight: int) -> int:
    """Submit parts ``0..n_parts-1`` keeping at most ``max_in_flight`` pending; ``wait`` returns the
    finished handles among those pending, ``done(part, handle)`` takes each one. Returns the peak
    number in flight. Backend-free, so the bound and the bookkeeping are unit-tested with a fake."""
    pending: dict[H, int] = {}
    nxt = peak = 0
    while nxt < n_parts or pending:
        while nxt < n_parts and len(pending) < max_in_flight:
            pending[submit(nxt)] = nxt
            nxt += 1
        peak = max(peak, len(pending))
        for handle in wait(list(pending)):
            done(pending.pop(handle), handle)
    return peak


@dataclass
class FanoutStats:
    """What the fan-out did: tasks and payload fetches per node and per worker process, the
    evaluation work done inside tasks and the wall time of the batches, over all batches so far."""

    tasks: Counter = field(default_factory=Counter)  # node id -> tasks run there
    fetches: Counter = field(default_factory=Counter)  # node id -> payload fetches there
    pid_fetches: Counter = field(default_factory=Counter)  # (node, pid) -> payload fetches
    puts: int = 0  # payload puts into the object store
    work_s: float = 0.0
    wall_s: float = 0.0
    slots: int = 1  # CPUs the tasks could use at once
    peak_in_flight: int = 0
    evaluations: int = 0

    def add(self, out: dict[str, Any]) -> None:
        self.tasks[out["node"]] += 1
        self.fetches[out["node"]] += int(out["fetched"])
        self.pid_fetches[(out["node"], out["pid"])] += int(out["fetched"])
        self.work_s += float(out["work_s"])

    def ray_share(self) -> float:
        """The share of the CPU time the fan-out held (wall x slots) not spent evaluating: Ray's
        scheduling, transfers, payload fetches and idle slots at the tail."""
        held = self.wall_s * self.slots
        return max(0.0, 1.0 - self.work_s / held) if held > 0 else 0.0

    def summary(self) -> list[str]:
        """Short lines (a console wraps long ones): totals, Ray's share, then one line per node."""
        return [f"ray: {self.evaluations} evaluations, {sum(self.tasks.values())} tasks, {len(self.tasks)} "
                f"node(s), payload put {self.puts}x, <= {self.peak_in_flight} in flight",
                f"ray: Ray's share {100 * self.ray_share():.1f} % of {self.wall_s:.1f} s x {self.slots} CPU",
                *(f"ray node {node[:8]}: {self.tasks[node]} tasks, {self.fetches[node]} payload fetch"
                  for node in sorted(self.tasks))]


class Fanout:
    """True evaluations as Ray tasks, results in input order. A task that fails (its worker dies,
    or the evaluation raises) is retried ``max_retries`` times; after that its subnets come back as
    None (recorded as failed by the ledger) instead of failing the whole batch. ``chunk`` fixes the
    subnets per task (default :func:`chunk_size`); ``max_in_flight`` bounds pending tasks (default
    twice the cluster's CPUs); ``task`` replaces the subnet evaluation (tests)."""

    def __init__(self, ray: Any, payload: EvalPayload, chunk: int | None = None, max_in_flight: int | None = None,
                 max_retries: int = 2, task: EvalFn | None = None):
        self.ray, self.payload, self.chunk, self.task = ray, payload, chunk, task
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.max_in_flight = max_in_flight or 2 * cpus
        self.stats = FanoutStats(slots=min(cpus, self.max_in_flight))
        self._remote = ray.remote(num_cpus=1, max_retries=max_retries, retry_exceptions=True)(eval_chunk)
        self._ref: Any = None

    def __call__(self, specs: list[SubnetSpec], progress: ProgressFn | None = None) -> list[float | None]:
        ray = self.ray
        if self._ref is None:  # once per search: every batch's tasks share the object
            self._ref = ray.put(self.payload)
            self.stats.puts += 1
        chunk = self.chunk or chunk_size(len(specs), self.stats.slots)
        parts = [(lo, [s.to_dict() for s in specs[lo : lo + chunk]]) for lo in range(0, len(specs), chunk)]
        results: list[float | None] = [None] * len(specs)
        finished = [0]

        def done(i: int, handle: Any) -> None:
            lo, part = parts[i]
            try:
                out = ray.get(handle)
                self.stats.add(out)
                results[lo : lo + len(part)] = out["top1"]
            except ray.exceptions.RayError:
                pass  # retried max_retries times already: recorded as failed, the search goes on
            finished[0] += len(part)
            if progress:
                progress(finished[0], len(specs))

        start = time.perf_counter()
        peak = run_bounded(len(parts), lambda i: self._remote.remote([self._ref], parts[i][1], self.task),
                           lambda pending: ray.wait(pending, num_returns=1)[0], done, self.max_in_flight)
        self.stats.wall_s += time.perf_counter() - start
        self.stats.peak_in_flight = max(self.stats.peak_in_flight, peak)
        self.stats.evaluations += len(specs)
        return results


def evaluate_on_ray(ray: Any, payload: EvalPayload, specs: list[SubnetSpec], chunk: int | None = None,
                    progress: ProgressFn | None = None, max_retries: int = 2, task: EvalFn | None = None,
                    max_in_flight: int | None = None) -> list[float | None]:
    """One batch through a fresh :class:`Fanout` (a search keeps one Fanout for all its batches)."""
    return Fanout(ray, payload, chunk, max_in_flight, max_retries, task)(specs, progress)
