"""Every file and folder a run writes into its working folder, named once: each name is defined by
the module that writes it and listed here, so a reader sees the whole run folder in one place."""

from __future__ import annotations

from nasq.predict.fit import PREDICTOR_JSON, PREDICTOR_NPZ
from nasq.search.pareto import FRONT_CSV, FRONT_JSON
from nasq.search.state import STATE_FILE as SEARCH_STATE_JSON
from nasq.stages.baselines import BASELINES_CSV
from nasq.stages.data import DATA_CACHE_DIR
from nasq.stages.evaluate import CACHE_DIR
from nasq.stages.export import EXPORT_DIR
from nasq.stages.pipeline import TIMINGS_JSON
from nasq.stages.search import EVALUATIONS_CSV, HISTORY_JSON, TUNE_DIR
from nasq.stages.sensitivity import SENSITIVITY_CSV, SENSITIVITY_JSON
from nasq.stages.track import MLARTIFACTS_DIR, RUN_RECORD, TRACKING_JSON
from nasq.stages.train import CHECKPOINT_DIR
from nasq.supernet.checkpoint import RECORD as SUPERNET_JSON
from nasq.supernet.checkpoint import WEIGHTS as SUPERNET_WEIGHTS
from nasq.tracking.client import ARTIFACT_FILES
from nasq.tracking.sensitivity import HEATMAP_PNG as SENSITIVITY_PNG

# name -> (stage that writes it, what it holds)
RUN_FOLDER: dict[str, tuple[str, str]] = {
    SUPERNET_WEIGHTS: ("train", "the trained supernet's weights and batch-norm statistics (safetensors)"),
    SUPERNET_JSON: ("train", "space, space hash, training fingerprint, result and loss curve; written last"),
    CHECKPOINT_DIR: ("train", "the training checkpoint of an unfinished training (safetensors + JSON)"),
    DATA_CACHE_DIR: ("data", "decoded uint8 images of an image folder too large for memory (.npy memmaps)"),
    CACHE_DIR: ("evaluate", "ledgers of true evaluations, one per supernet identity (CSV + JSON)"),
    PREDICTOR_JSON: ("predict", "the accuracy predictor's recipe, space, features and hashes"),
    PREDICTOR_NPZ: ("predict", "the accuracy predictor's training set"),
    SEARCH_STATE_JSON: ("search", "the search checkpoint `nasq search --resume` continues from"),
    TUNE_DIR: ("search", "Ray Tune's experiment folder (optuna strategies on Ray)"),
    FRONT_JSON: ("search", "the Pareto front: specs, genomes, predicted and measured values, lineage"),
    FRONT_CSV: ("search", "the Pareto front, one row per point"),
    EVALUATIONS_CSV: ("search", "every true evaluation this run used"),
    BASELINES_CSV: ("search", "uniform INT8/INT4/FP8 twins of the largest subnet and each front point, evaluated"),
    HISTORY_JSON: ("search", "per-iteration true evaluations, hypervolume, predictor tau"),
    SENSITIVITY_JSON: ("sensitivity", "per layer x format: Hessian trace, Fisher, HAWQ proxy, measured top-1 drop; "
                       "settings and lineage (`nasq sensitivity`, or the search for ilp/sensitivity_seeded)"),
    SENSITIVITY_CSV: ("sensitivity", "the sensitivity table, one row per layer x format"),
    SENSITIVITY_PNG: ("sensitivity", "its heat map (layer x format), written when logged to MLflow"),
    RUN_RECORD: ("track", "resolved experiment config and space: what `nasq export` rebuilds from"),
    TRACKING_JSON: ("track", "MLflow tracking URI, run id, experiment id, saved view URL"),
    MLARTIFACTS_DIR: ("track", "the artifact store of the default local MLflow store"),
    **{name: ("track", "front table and plots logged to MLflow") for name in ARTIFACT_FILES},
    EXPORT_DIR: ("export", "the exported pick: model.onnx, model.safetensors, arch.json, manifest.json"),
    TIMINGS_JSON: ("pipeline", "seconds per stage"),
}
