"""Stage 3, evaluate: true evaluations of subnets on the trained supernet, through the ledger.

The ledger of true evaluations lives in ``search.cache_dir`` (default ``<workdir>/cache``) under the
supernet's identity - the sha256 of ``supernet.safetensors`` plus every setting that changes a
measured top1 - so any later search on that supernet reuses every evaluation. :func:`run` is the
predictor's training sample: the largest, the smallest and seeded random subnets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nasq import data as data_mod
from nasq.cluster.tasks import Fanout, eval_specs
from nasq.cluster.tune import TuneEvaluate
from nasq.errors import NasqError
from nasq.experiment import Experiment
from nasq.files import sha256_bytes, sha256_file
from nasq.search.ledger import Evaluator, Ledger, ledger_identity
from nasq.space import SubnetSpec
from nasq.stages import baselines
from nasq.stages.progress import Reporter
from nasq.supernet import checkpoint
from nasq.supernet.evaluate import EvalPayload, SubnetEvaluator
from nasq.supernet.network import Supernet

CACHE_DIR = "cache"  # default search.cache_dir, inside the workdir


@dataclass(frozen=True)
class Samples:
    """The successfully evaluated sample (failed evaluations stay in the ledger as failed)."""

    specs: list[SubnetSpec]
    top1: np.ndarray
    rows_sha256: str  # of their ledger rows: what the predictor fitted on them is stamped with


def payload(exp: Experiment, net: Supernet, splits: data_mod.Splits) -> EvalPayload:
    return EvalPayload.build(exp.space, net, splits.train_x, splits.val_x, splits.val_y, exp.config.evaluate)


def open_ledger(exp: Experiment, evaluate: Evaluator, workdir: Path) -> Ledger:
    cfg = exp.config
    settings = {"evaluate": cfg.evaluate.model_dump(mode="json", exclude={"batch_size", "num_subnets"}),
                "data": cfg.data.model_dump(mode="json"), "space_hash": exp.space.hash}
    digest = sha256_file(workdir / checkpoint.WEIGHTS)
    cache = Path(cfg.search.cache_dir) if cfg.search.cache_dir else exp.workdir / CACHE_DIR
    return Ledger.in_cache(evaluate, cache, ledger_identity(digest, _flatten(settings)),
                           {"supernet_sha256": digest, **settings})


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def evaluator(ray: Any, data: EvalPayload, rep: Reporter, chunk: int | None = None,
              max_in_flight: int | None = None) -> Evaluator:
    """True evaluations as Ray tasks when ``ray`` is up (one :class:`Fanout` for the whole search:
    the payload is put once; each batch ends with a line saying where its tasks ran), else in this
    process."""
    if ray is not None:
        fanout = Fanout(ray, data, chunk=chunk, max_in_flight=max_in_flight)

        def evaluate_remote(specs: list[SubnetSpec]) -> list[float | None]:
            with rep.bar("evaluating", len(specs)) as bar:
                out = fanout(specs, progress=bar)
            for line in fanout.stats.summary():
                rep.say(f"      {line}")
            return out
        return evaluate_remote

    local = SubnetEvaluator(data, threads=None)

    def evaluate(specs: list[SubnetSpec]) -> list[float | None]:
        with rep.bar("evaluating", len(specs)) as bar:
            out: list[float | None] = []
            for i, s in enumerate(specs):
                try:
                    out += local([s])
                except (RuntimeError, ValueError):  # recorded as failed by the ledger, not fatal
                    out.append(None)
                bar(i + 1)
        return out
    return evaluate


def tune_evaluator(data: EvalPayload) -> TuneEvaluate:
    """What a Ray Tune trial needs to evaluate one subnet: (function, payload)."""
    return eval_specs, data


def run(exp: Experiment, ledger: Ledger, workdir: Path | None = None, rep: Reporter | None = None) -> Samples:
    """Evaluate the predictor's training sample through ``ledger`` (reusing what it holds): the
    largest and smallest subnets, the largest at each uniform baseline format (INT8, INT4, fp8
    where a target runs it: a strong point mixed precision must beat, on the front from the start
    and known to the predictor), then seeded random subnets up to ``evaluate.num_subnets``."""
    ecfg = exp.config.evaluate
    rng = np.random.default_rng(ecfg.seed)
    largest = exp.space.largest()
    fixed = [largest, exp.space.smallest()]
    for fmt in baselines.uniform_formats(exp):
        twin = baselines.uniform(exp, largest, fmt)
        if twin is not None and twin.key() not in {s.key() for s in fixed}:
            fixed.append(twin)
    fixed = fixed[: ecfg.num_subnets]
    specs = fixed + exp.space.sample_unique(rng, ecfg.num_subnets - len(fixed), {s.key() for s in fixed})
    top1 = ledger(specs, "sample")
    ok = np.isfinite(top1)
    if ok.sum() < 4:
        raise NasqError(f"only {int(ok.sum())} of {len(specs)} sampled subnets were evaluated successfully; "
                        f"see {ledger.path or 'the ledger'} (status=failed)")
    if ledger.reused and rep is not None:
        rep.say(f"      {ledger.reused} evaluations reused from {ledger.path}")
    specs = [s for s, good in zip(specs, ok, strict=True) if good]
    return Samples(specs, top1[ok], sha256_bytes(ledger.to_csv([s.key() for s in specs]).encode()))
