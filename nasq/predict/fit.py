"""Fit a predictor recipe on evaluated subnets and report its held-out ranking quality."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from nasq.errors import ConfigError, LineageError
from nasq.files import atomic_write_bytes, atomic_write_json, read_json
from nasq.hardware import CostModel
from nasq.predict.features import FEATURES, encode
from nasq.predict.models import PREDICTORS, Predictor, make_predictor
from nasq.space import SearchSpace, SubnetSpec
from nasq.specs import RecipeConfig, load_model


@dataclass(frozen=True)
class FitReport:
    """``n_train``: subnets each fold's model was fitted on; ``n_holdout``: out-of-fold predictions."""

    kind: str
    n_train: int
    n_holdout: int
    kendall_tau: float
    spearman: float
    rmse: float

    def as_metrics(self, prefix: str = "predictor.") -> dict[str, float]:
        return {f"{prefix}{k}": float(v) for k, v in asdict(self).items() if k != "kind"}


class Recipe:
    def __init__(self, config: RecipeConfig, source: str = "<memory>", content_hash: str = ""):
        self.config, self.source, self.hash = config, source, content_hash
        if config.kind not in PREDICTORS:
            raise ConfigError(source, "kind", PREDICTORS.miss_message(config.kind))
        for i, name in enumerate(config.features):
            if name not in FEATURES:
                raise ConfigError(source, f"features[{i}]", FEATURES.miss_message(name))

    @classmethod
    def from_yaml(cls, path: str | Path, source: str | None = None) -> Recipe:
        config, digest = load_model(RecipeConfig, Path(path), source)
        return cls(config, source or str(path), digest)


class AccuracyPredictor:
    """A recipe bound to a space and a cost model: ``predict(specs) -> top1``."""

    def __init__(self, recipe: Recipe, space: SearchSpace, cost_model: CostModel, seed: int = 0):
        self.recipe, self.space, self.cost_model, self.seed = recipe, space, cost_model, seed
        self.model: Predictor = make_predictor(recipe.config.kind, recipe.config.params, seed)

    def features(self, specs: list[SubnetSpec]) -> np.ndarray:
        return encode(self.recipe.config.features, self.space, specs, self.cost_model)

    def fit(self, specs: list[SubnetSpec], top1: np.ndarray) -> AccuracyPredictor:
        self.model.fit(self.features(specs), top1)
        return self

    def predict(self, specs: list[SubnetSpec]) -> np.ndarray:
        return self.model.predict(self.features(specs))

    def save(self, folder: Path, data_hash: str) -> None:
        import io

        buf = io.BytesIO()
        np.savez(buf, X=self.model.X_, y=self.model.y_)
        atomic_write_bytes(folder / "predictor.npz", buf.getvalue())
        atomic_write_json(folder / "predictor.json", {
            "recipe": self.recipe.config.model_dump(mode="json"), "recipe_hash": self.recipe.hash,
            "space": self.space.name, "space_hash": self.space.hash, "data_hash": data_hash, "seed": self.seed})

    @classmethod
    def load(cls, folder: Path, space: SearchSpace, cost_model: CostModel) -> AccuracyPredictor:
        meta = read_json(folder / "predictor.json")
        if meta["space_hash"] != space.hash:
            raise LineageError(f"{folder / 'predictor.json'}: fitted on space '{meta['space']}' "
                               f"({meta['space_hash'][:12]}), not on '{space.name}' ({space.hash[:12]})")
        recipe = Recipe(RecipeConfig.model_validate(meta["recipe"]), str(folder), meta["recipe_hash"])
        pred = cls(recipe, space, cost_model, int(meta["seed"]))
        with np.load(folder / "predictor.npz", allow_pickle=False) as z:
            pred.model.fit(z["X"], z["y"])
        return pred


def rank_quality(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float, float]:
    from scipy.stats import kendalltau, spearmanr

    tau = kendalltau(y_true, y_pred).statistic
    rho = spearmanr(y_true, y_pred).statistic
    rmse = float(np.sqrt(np.mean((np.asarray(y_true) - np.asarray(y_pred)) ** 2)))
    return float(np.nan_to_num(tau)), float(np.nan_to_num(rho)), rmse


def fit_with_holdout(recipe: Recipe, space: SearchSpace, cost_model: CostModel, specs: list[SubnetSpec],
                     top1: np.ndarray, seed: int) -> tuple[AccuracyPredictor, FitReport]:
    """Cross-validated quality: K folds (K = 1 / holdout_fraction), every subnet predicted once by
    a model that never saw it; Kendall tau / Spearman / RMSE over those out-of-fold predictions.
    Then refit on everything for use in the search."""
    top1 = np.asarray(top1, dtype=np.float64)
    folds = max(2, min(len(specs), int(round(1.0 / recipe.config.holdout_fraction))))
    order = np.random.default_rng(seed).permutation(len(specs))
    oof = np.empty(len(specs), dtype=np.float64)
    for k in range(folds):
        hold = order[k::folds]
        train = np.setdiff1d(order, hold)
        probe = AccuracyPredictor(recipe, space, cost_model, seed).fit([specs[i] for i in train], top1[train])
        oof[hold] = probe.predict([specs[i] for i in hold])
    tau, rho, rmse = rank_quality(top1, oof)
    final = AccuracyPredictor(recipe, space, cost_model, seed).fit(specs, top1)
    n_train = len(specs) - int(np.ceil(len(specs) / folds))
    return final, FitReport(recipe.config.kind, n_train, len(specs), tau, rho, rmse)
