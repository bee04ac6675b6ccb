"""Predictor kinds. The base class owns the contract (fit returns self, predict before fit
raises, seeded); a kind fills ``_make`` with a scikit-learn estimator.

Persistence without pickle: a predictor saves its recipe, seed and training set (JSON + npz) and
loading refits it - with the same seed that reproduces the same predictions.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from nasq.errors import NotFittedError
from nasq.registry import Registry

PREDICTORS: Registry[type[Predictor]] = Registry("predictor kind")


class Predictor(abc.ABC):
    def __init__(self, params: dict[str, Any] | None = None, seed: int = 0):
        self.params, self.seed = dict(params or {}), seed
        self._model: Any = None
        self.X_: np.ndarray | None = None
        self.y_: np.ndarray | None = None

    def fit(self, X: np.ndarray, y: np.ndarray) -> Predictor:
        X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if len(X) != len(y) or len(y) < 2:
            raise ValueError(f"need matching X and y with at least 2 rows, got {len(X)} and {len(y)}")
        self._model = self._make()
        self._model.fit(X, y)
        self.X_, self.y_ = X, y
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self._model is None:
            raise NotFittedError(f"{type(self).__name__}.predict called before fit")
        return np.asarray(self._model.predict(np.asarray(X, dtype=np.float64)), dtype=np.float64)

    @abc.abstractmethod
    def _make(self) -> Any:
        """Return a fresh, seeded, unfitted scikit-learn regressor built from ``self.params``."""


@PREDICTORS.register("ridge")
class RidgePredictor(Predictor):
    def _make(self) -> Any:
        from sklearn.linear_model import Ridge
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), Ridge(alpha=float(self.params.get("alpha", 1.0))))


@PREDICTORS.register("gbdt")
class GBDTPredictor(Predictor):
    def _make(self) -> Any:
        from sklearn.ensemble import GradientBoostingRegressor

        return GradientBoostingRegressor(random_state=self.seed, **self.params)


@PREDICTORS.register("random_forest")
class ForestPredictor(Predictor):
    def _make(self) -> Any:
        from sklearn.ensemble import RandomForestRegressor

        return RandomForestRegressor(random_state=self.seed, n_jobs=1, **self.params)


def make_predictor(kind: str, params: dict[str, Any] | None = None, seed: int = 0) -> Predictor:
    return PREDICTORS.get(kind)(params, seed)
