"""The evaluate -> predict -> search stages of the pipeline, and ``nasq search``: the same stages on
the supernet an earlier ``nasq run`` trained and left in the experiment's working folder.

The ledger of true evaluations lives in ``search.cache_dir`` (default ``<workdir>/cache``) under the
supernet's identity - the sha256 of ``supernet.safetensors`` plus every setting that changes a
measured top1 - so any later search on that supernet reuses every evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nasq.errors import NasqError
from nasq.experiment import Experiment
from nasq.files import atomic_write_json, atomic_write_text, read_json, sha256_file
from nasq.predict.fit import AccuracyPredictor
from nasq.search.ledger import EvaluateFn, Ledger, ledger_identity
from nasq.search.loop import SearchOutcome, SearchTask, run_search
from nasq.space import SubnetSpec

SUPERNET_FILE = "supernet.safetensors"


def open_ledger(exp: Experiment, evaluate: EvaluateFn, supernet_path: Path) -> Ledger:
    cfg = exp.config
    settings = {"evaluate": cfg.evaluate.model_dump(mode="json", exclude={"batch_size", "num_subnets"}),
                "data": cfg.data.model_dump(mode="json"), "space_hash": exp.space.hash}
    digest = sha256_file(supernet_path)
    cache = Path(cfg.search.cache_dir) if cfg.search.cache_dir else exp.workdir / "cache"
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


def sample_stage(exp: Experiment, ledger: Ledger) -> tuple[list[SubnetSpec], np.ndarray]:
    """The predictor's training sample: largest, smallest and seeded random subnets; failed
    evaluations are left out (they stay in the ledger as failed)."""
    ecfg = exp.config.evaluate
    rng = np.random.default_rng(ecfg.seed)
    fixed = [exp.space.largest(), exp.space.smallest()]
    specs = fixed + exp.space.sample_unique(rng, ecfg.num_subnets - len(fixed), {s.key() for s in fixed})
    top1 = ledger(specs, "sample")
    ok = np.isfinite(top1)
    if ok.sum() < 4:
        raise NasqError(f"only {int(ok.sum())} of {len(specs)} sampled subnets were evaluated successfully; "
                        f"see {ledger.path or 'the ledger'} (status=failed)")
    return [s for s, good in zip(specs, ok, strict=True) if good], top1[ok]


def search_task(exp: Experiment, predictor: AccuracyPredictor | None, warm: list[SubnetSpec]) -> SearchTask:
    cfg = exp.config
    cost = predictor.cost_model if predictor is not None else exp.cost_model()

    def fit_predictor(specs: list[SubnetSpec], top1: np.ndarray, seed: int) -> AccuracyPredictor:
        return AccuracyPredictor(exp.recipe, exp.space, cost, seed).fit(specs, top1)

    return SearchTask(exp.space, cfg.objectives, cfg.constraints, cost, cfg.search, fit_predictor, warm,
                      lineage=exp.lineage())


def search_stage(exp: Experiment, task: SearchTask, ledger: Ledger, rep: Any, run_dir: Path,
                 resume: bool = False, ray: Any = None, tune_evaluate: Any = None) -> SearchOutcome:
    """Run the configured strategy; the optuna strategies go to Ray Tune when Ray is up and a
    Tune-side evaluation (``tune_evaluate``) is given, else they run in-process."""
    cfg = exp.config.search

    def say(row: dict) -> None:
        tau = "" if row["predictor_tau"] is None else f", predictor tau on the batch {row['predictor_tau']:.2f}"
        rep.say(f"      iteration {row['iteration']}: {row['true_evals']}/{cfg.max_true_evals} true evaluations, "
                f"hypervolume {row['hypervolume']:.4f}{tau}")

    if cfg.strategy.startswith("optuna") and ray is not None and tune_evaluate is not None:
        from nasq.cluster.tune import run_tune_search

        return run_tune_search(task, ledger, tune_evaluate, run_dir / "tune", resume=resume)
    return run_search(task, ledger, checkpoint_dir=run_dir, resume=resume, progress=say)


def evaluation_matrix(ledger: Ledger, keys: list[str], cost: Any) -> np.ndarray:
    """(top1, latency_ms, size_mb) of every successful true evaluation among ``keys``."""
    keys = [k for k in keys if k in ledger.top1]
    specs = [ledger.specs[k] for k in keys]
    c = cost.score(specs)
    return np.column_stack([ledger.values(keys), c["latency_ms"], c["size_mb"]])


def used_keys(samples: list[SubnetSpec], outcome: SearchOutcome, ledger: Ledger) -> list[str]:
    keys = [s.key() for s in samples] + [k for k in outcome.state.keys if k not in {s.key() for s in samples}]
    return [k for k in dict.fromkeys(keys) if k in ledger]


def write_search_artifacts(workdir: Path, ledger: Ledger, keys: list[str], outcome: SearchOutcome) -> None:
    atomic_write_text(workdir / "evaluations.csv", ledger.to_csv(keys))
    atomic_write_json(workdir / "search_history.json", outcome.history)
    outcome.front.save(workdir)


def load_trained_supernet(exp: Experiment) -> Any:
    """The supernet ``nasq run`` left in the workdir; a clear error when there is none or it was
    trained on another space."""
    import torch
    from safetensors.torch import load_file

    from nasq.supernet.network import Supernet

    weights, meta_path = exp.workdir / SUPERNET_FILE, exp.workdir / "supernet.json"
    if not weights.is_file() or not meta_path.is_file():
        raise NasqError(f"{exp.workdir}: no trained supernet ({SUPERNET_FILE} + supernet.json); "
                        f"train it first with `nasq train {exp.source}`")
    meta = read_json(meta_path)
    if meta.get("space_hash") != exp.space.hash:
        raise NasqError(f"{meta_path}: trained on space {meta.get('space')!r} ({str(meta.get('space_hash'))[:12]}), "
                        f"not on {exp.space.name!r} ({exp.space.hash[:12]}); retrain with `nasq run {exp.source}`")
    torch.manual_seed(exp.config.train.seed)
    net = Supernet(exp.space)
    try:
        net.load_state_dict(load_file(str(weights)))
    except RuntimeError as e:  # torch's message lists every key: keep the line short
        raise NasqError(f"{weights}: does not fit this version's supernet ({str(e).splitlines()[1].strip()[:120]}...); "
                        f"retrain with `nasq run {exp.source}`") from e
    return net, meta.get("result", {})
