"""Fit a predictor recipe on evaluated subnets, report its held-out ranking quality, pick the best
of several recipes by cross-validated Kendall tau, and save / load fitted predictors without pickle."""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from nasq.errors import ConfigError, LineageError
from nasq.files import (
    atomic_write_bytes,
    atomic_write_json,
    read_json_object,
    sha256_bytes,
    sha256_file,
)
from nasq.hardware import CostModel
from nasq.predict.features import FEATURES, encode_genomes
from nasq.predict.models import PREDICTORS, Predictor, fold_indices, kendall_tau, make_predictor
from nasq.space import SearchSpace, SubnetSpec
from nasq.specs import RecipeConfig, load_model, one_line

SAVE_FORMAT = "nasq.accuracy_predictor/1"


PREDICTOR_JSON = "predictor.json"  # recipe, space, features, hashes
PREDICTOR_NPZ = "predictor.npz"  # the training set (no object arrays)


@dataclass(frozen=True)
class FitReport:
    """``n_train``: subnets each fold's model was fitted on; ``n_holdout``: out-of-fold predictions.
    ``top10_precision``: of the true top 10 % by top-1, the fraction the predictor also puts in its
    top 10 %. ``recipe``: the recipe's name (empty when unknown)."""

    kind: str
    n_train: int
    n_holdout: int
    kendall_tau: float
    spearman: float
    rmse: float
    top10_precision: float = 0.0
    recipe: str = ""

    def as_metrics(self, prefix: str = "predictor.") -> dict[str, float]:
        return {f"{prefix}{k}": float(v) for k, v in asdict(self).items() if not isinstance(v, str)}


class Recipe:
    def __init__(self, config: RecipeConfig, source: str = "<memory>", content_hash: str = ""):
        self.config, self.source, self.hash = config, source, content_hash
        if config.kind not in PREDICTORS:
            raise ConfigError(source, "kind", PREDICTORS.miss_message(config.kind))
        for i, name in enumerate(config.features):
            if name not in FEATURES:
                raise ConfigError(source, f"features[{i}]", FEATURES.miss_message(name))
        try:
            PREDICTORS.get(config.kind).check_params(dict(config.params))
        except (ValueError, TypeError, OverflowError) as e:  # int(None), int(inf) in a kind's check
            raise ConfigError(source, "params", one_line(e)) from e

    @classmethod
    def from_yaml(cls, path: str | Path, source: str | None = None) -> Recipe:
        config, digest = load_model(RecipeConfig, Path(path), source)
        return cls(config, source or str(path), digest)


class AccuracyPredictor:
    """A recipe bound to a space and a cost model: ``predict(specs) -> top1``, and the same on a
    genome matrix, ``predict_genomes(genomes) -> top1`` (what the search scores populations with).
    Features are always computed on genomes (specs are encoded first): one vectorised path, equal
    to the per-spec encoders in :mod:`nasq.predict.features`."""

    def __init__(self, recipe: Recipe, space: SearchSpace, cost_model: CostModel, seed: int = 0):
        self.recipe, self.space, self.cost_model, self.seed = recipe, space, cost_model, seed
        self.model: Predictor = make_predictor(recipe.config.kind, recipe.config.params, seed)

    @property
    def has_uncertainty(self) -> bool:
        return self.model.has_uncertainty

    def features(self, specs: list[SubnetSpec]) -> np.ndarray:
        genomes = np.array([self.space.encode(s) for s in specs], dtype=np.int64).reshape(-1, self.space.n_genes)
        return self.features_genomes(genomes)

    def features_genomes(self, genomes: np.ndarray) -> np.ndarray:
        return encode_genomes(self.recipe.config.features, self.space, genomes, self.cost_model)

    def predict_genomes(self, genomes: np.ndarray) -> np.ndarray:
        return self.model.predict(self.features_genomes(genomes))

    def predict_with_std_genomes(self, genomes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.model.predict_with_std(self.features_genomes(genomes))

    def fit(self, specs: list[SubnetSpec], top1: np.ndarray) -> AccuracyPredictor:
        self.model.fit(self.features(specs), top1)
        return self

    def predict(self, specs: list[SubnetSpec]) -> np.ndarray:
        return self.model.predict(self.features(specs))

    def predict_with_std(self, specs: list[SubnetSpec]) -> tuple[np.ndarray, np.ndarray]:
        return self.model.predict_with_std(self.features(specs))

    def save(self, folder: Path, data_hash: str) -> None:
        """``predictor.npz`` holds the training set (no object arrays), ``predictor.json`` the recipe,
        seed and lineage: the space's hash, ``data_hash`` (the caller's hash of the evaluations it was
        fitted on) and the npz's own hash. Loading refits - nothing executable is stored."""
        if self.model.X_ is None:
            raise ValueError("save called before fit: there is no training set to save")
        buf = io.BytesIO()
        np.savez(buf, X=self.model.X_, y=self.model.y_)
        atomic_write_bytes(folder / PREDICTOR_NPZ, buf.getvalue())
        atomic_write_json(folder / PREDICTOR_JSON, {
            "format": SAVE_FORMAT, "recipe": self.recipe.config.model_dump(mode="json"),
            "recipe_hash": self.recipe.hash, "space": self.space.name, "space_hash": self.space.hash,
            "data_hash": data_hash, "training_set_sha256": sha256_bytes(buf.getvalue()), "seed": self.seed})

    @classmethod
    def load(cls, folder: Path, space: SearchSpace, cost_model: CostModel) -> AccuracyPredictor:
        """Refuses (LineageError) a predictor fitted on another space or whose training set changed;
        a malformed predictor.json is one ConfigError naming it."""
        meta = read_json_object(folder / PREDICTOR_JSON)
        if not isinstance(meta.get("space_hash"), str) or not isinstance(meta.get("recipe"), dict):
            raise ConfigError(str(folder / PREDICTOR_JSON), "", "not a nasq predictor record")
        if meta["space_hash"] != space.hash:
            raise LineageError(f"{folder / PREDICTOR_JSON}: fitted on space '{meta['space']}' "
                               f"({meta['space_hash'][:12]}), not on '{space.name}' ({space.hash[:12]})")
        expected = meta.get("training_set_sha256")
        if expected and sha256_file(folder / PREDICTOR_NPZ) != expected:
            raise LineageError(f"{folder / PREDICTOR_NPZ}: training set does not match the hash in predictor.json")
        recipe = Recipe(RecipeConfig.model_validate(meta["recipe"]), str(folder), meta["recipe_hash"])
        pred = cls(recipe, space, cost_model, int(meta["seed"]))
        with np.load(folder / PREDICTOR_NPZ, allow_pickle=False) as z:
            pred.model.fit(z["X"], z["y"])
        return pred


def rank_quality(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float, float]:
    """Kendall tau, Spearman rho (0 where undefined, e.g. constant predictions) and RMSE."""
    rho = spearmanr(y_true, y_pred).statistic
    rmse = float(np.sqrt(np.mean((np.asarray(y_true) - np.asarray(y_pred)) ** 2)))
    return kendall_tau(y_true, y_pred), float(np.nan_to_num(rho)), rmse


def top_fraction_precision(y_true: np.ndarray, y_pred: np.ndarray, fraction: float = 0.1) -> float:
    """Of the ``k = ceil(fraction * n)`` best subnets by ``y_true``, the share that are also among the
    k best by ``y_pred`` - what a search that keeps its predicted top candidates cares about."""
    y_true, y_pred = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    k = max(1, int(np.ceil(fraction * len(y_true))))
    best_true = np.argsort(-y_true, kind="stable")[:k]
    best_pred = np.argsort(-y_pred, kind="stable")[:k]
    return len(np.intersect1d(best_true, best_pred)) / k


def fit_with_holdout(recipe: Recipe, space: SearchSpace, cost_model: CostModel, specs: list[SubnetSpec],
                     top1: np.ndarray, seed: int) -> tuple[AccuracyPredictor, FitReport]:
    """Cross-validated quality: K folds (K = 1 / holdout_fraction), every subnet predicted once by
    a model that never saw it; Kendall tau / Spearman / RMSE / top-10 % precision over those
    out-of-fold predictions. Then refit on everything for use in the search."""
    top1 = np.asarray(top1, dtype=np.float64)
    if len(specs) != len(top1) or len(specs) < 4:
        raise ValueError(f"need matching specs and top1 with at least 4 subnets, got {len(specs)} and {len(top1)}")
    folds = max(2, min(len(specs) // 2, int(round(1.0 / recipe.config.holdout_fraction))))
    X = AccuracyPredictor(recipe, space, cost_model, seed).features(specs)  # encoders are per-row: encode once
    oof = np.empty(len(specs), dtype=np.float64)
    for hold in fold_indices(len(specs), folds, seed):
        train = np.setdiff1d(np.arange(len(specs)), hold)
        probe = make_predictor(recipe.config.kind, recipe.config.params, seed).fit(X[train], top1[train])
        oof[hold] = probe.predict(X[hold])
    tau, rho, rmse = rank_quality(top1, oof)
    final = AccuracyPredictor(recipe, space, cost_model, seed)
    final.model.fit(X, top1)
    n_train = len(specs) - int(np.ceil(len(specs) / folds))
    return final, FitReport(recipe.config.kind, n_train, len(specs), tau, rho, rmse,
                            top_fraction_precision(top1, oof), recipe.config.name)


def select_by_cv(recipes: list[Recipe], space: SearchSpace, cost_model: CostModel, specs: list[SubnetSpec],
                 top1: np.ndarray, seed: int) -> tuple[AccuracyPredictor, list[FitReport]]:
    """Fit every recipe with :func:`fit_with_holdout` (same seed, so the same folds for all) and keep
    the one with the highest cross-validated Kendall tau; ties go to the earlier recipe. Returns it,
    refitted on everything, and every recipe's report in the order given."""
    if not recipes:
        raise ValueError("select_by_cv needs at least one recipe")
    fitted = [fit_with_holdout(r, space, cost_model, specs, top1, seed) for r in recipes]
    best = max(range(len(fitted)), key=lambda i: fitted[i][1].kendall_tau)
    return fitted[best][0], [report for _, report in fitted]
