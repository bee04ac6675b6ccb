"""Predictor kinds. The base class owns the contract (fit returns self, predict before fit
raises, seeded, an uncertainty that is never negative); a kind fills ``_make`` with a
scikit-learn-style estimator and, if it has a real uncertainty, ``_predict_with_std``.

Persistence without pickle: a predictor saves its recipe, seed and training set (JSON + npz) and
loading refits it - with the same seed that reproduces the same predictions.
"""

from __future__ import annotations

import abc
import contextlib
import warnings
from typing import Any, ClassVar

import numpy as np
from scipy.stats import kendalltau
from sklearn.compose import TransformedTargetRegressor
from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Matern, WhiteKernel
from sklearn.linear_model import Ridge
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import ThreadpoolController

from nasq.errors import NotFittedError
from nasq.predict.trees import TreeArrays
from nasq.registry import Registry

PREDICTORS: Registry[type[Predictor]] = Registry("predictor kind")


class Predictor(abc.ABC):
    """``has_uncertainty``: whether ``predict_with_std`` gives a real spread (else all zeros)."""

    has_uncertainty: ClassVar[bool] = False
    # whether predicting may call BLAS (then limited to one thread): a kind that never does skips
    # the limit, whose setting and restoring cost more than a population's tree lookups
    uses_blas: ClassVar[bool] = True

    def __init__(self, params: dict[str, Any] | None = None, seed: int = 0):
        self.params, self.seed = dict(params or {}), seed
        self.check_params(self.params)
        self._model: Any = None
        self.X_: np.ndarray | None = None
        self.y_: np.ndarray | None = None

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        """Called on construction (and by ``Recipe`` when a recipe file is loaded), before anything
        is fitted: raise ValueError naming the bad param. Most kinds leave checking to scikit-learn."""
        return None

    def fit(self, X: np.ndarray, y: np.ndarray) -> Predictor:
        X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if X.ndim != 2 or y.ndim != 1 or len(X) != len(y) or len(y) < 2:
            raise ValueError(f"need a 2-d X and a 1-d y with matching rows (at least 2), got X {X.shape} and y {y.shape}")

        model = self._make(X.shape[1])
        # tiny training sets stop iterative solvers at max_iter or hyperparameters at a bound; expected
        with warnings.catch_warnings(), _one_blas_thread():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X, y)
        self._model, self.X_, self.y_ = model, X, y
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        self._fitted()
        with _one_blas_thread() if self.uses_blas else contextlib.nullcontext():
            return np.asarray(self._predict(_as_2d(X)), dtype=np.float64)

    def _predict(self, X: np.ndarray) -> Any:
        """Called by ``predict`` after fit, with a float 2-d X. A kind may override it with a faster
        path that gives the estimator's very values."""
        return self._model.predict(X)

    def predict_with_std(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation per row; the std is all zeros for kinds without uncertainty."""
        self._fitted()
        with _one_blas_thread():
            mean, std = self._predict_with_std(_as_2d(X))
        return np.asarray(mean, dtype=np.float64), np.clip(np.asarray(std, dtype=np.float64), 0.0, None)

    def _fitted(self) -> Any:
        if self._model is None:
            raise NotFittedError(f"{type(self).__name__}.predict called before fit")
        return self._model

    @abc.abstractmethod
    def _make(self, n_features: int) -> Any:
        """Called by ``fit`` on every fit, with the number of feature columns: return a fresh,
        unfitted estimator (``fit(X, y)``, ``predict(X)``) built from ``self.params`` and seeded
        from ``self.seed`` - never from the global RNG."""

    def _predict_with_std(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Called by ``predict_with_std`` after fit, with a float 2-d X. Kinds with
        ``has_uncertainty`` override it; negative stds are clipped by the caller."""
        return self.predict(X), np.zeros(len(X))


_CONTROLLER: ThreadpoolController | None = None


def _one_blas_thread() -> Any:
    """Predictor matrices are a few hundred rows: BLAS threads cost more in hand-offs than they
    save, and several times more on a machine already busy evaluating subnets. One controller,
    built on first use: ``threadpool_limits`` rescans every loaded library on each call (~3 ms),
    which was most of a population's scoring time. (A BLAS library loaded later is not limited;
    numpy's and scipy's are loaded by then.)"""
    global _CONTROLLER
    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="blas")


def _as_2d(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-d (rows x features), got shape {X.shape}")
    return X


def _scaled(estimator: Any) -> Any:
    return make_pipeline(StandardScaler(), estimator)


@PREDICTORS.register("ridge")
class RidgePredictor(Predictor):
    def _make(self, n_features: int) -> Any:
        return _scaled(Ridge(alpha=float(self.params.get("alpha", 1.0))))


@PREDICTORS.register("gbdt")
class GBDTPredictor(Predictor):
    """Predicts through :class:`~nasq.predict.trees.TreeArrays` (the same values as
    scikit-learn's ``predict``): a search scores populations of ~100 rows, where scikit-learn's
    input checks and per-tree calls cost more than the trees."""

    _arrays: TreeArrays | None = None
    uses_blas = False  # tree arrays, or scikit-learn's trees: no BLAS

    def _make(self, n_features: int) -> Any:
        return GradientBoostingRegressor(random_state=self.seed, **self.params)

    def _predict(self, X: np.ndarray) -> Any:
        if self._arrays is None or self._arrays.model is not self._model:  # built once per fit
            self._arrays = TreeArrays(self._model)
        # scikit-learn keeps its own input checks (it refuses NaN and inf) and the cases not covered
        return self._arrays.predict(X) if self._arrays.exact and np.isfinite(X).all() else self._model.predict(X)


@PREDICTORS.register("random_forest")
class ForestPredictor(Predictor):
    """The spread of the trees' predictions is the uncertainty."""

    has_uncertainty = True

    def _make(self, n_features: int) -> Any:
        return RandomForestRegressor(random_state=self.seed, n_jobs=1, **self.params)

    def _predict_with_std(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        per_tree = np.stack([tree.predict(X) for tree in self._model.estimators_])
        return self._model.predict(X), per_tree.std(axis=0)


@PREDICTORS.register("mlp")
class MLPPredictor(Predictor):
    """A small multilayer perceptron on standardised features and a standardised target.

    Defaults suit 25-500 rows: two hidden layers of 64, a strong L2 ``alpha`` (1.0) against the
    few rows, Adam at learning rate 1e-2 for at most 500 epochs - ten times faster than L-BFGS at
    this size and as good. No early-stopping split (it would take rows from a small training set
    and make the fit hinge on which); minibatch shuffling is seeded. Params: ``hidden_units``,
    ``hidden_layers``, ``alpha``, ``max_iter``, ``activation``, ``solver``, ``learning_rate_init``.
    """

    def _make(self, n_features: int) -> Any:
        p = self.params
        layers = (int(p.get("hidden_units", 64)),) * int(p.get("hidden_layers", 2))
        mlp = MLPRegressor(hidden_layer_sizes=layers, alpha=float(p.get("alpha", 1.0)),
                           activation=str(p.get("activation", "relu")), solver=str(p.get("solver", "adam")),
                           learning_rate_init=float(p.get("learning_rate_init", 1e-2)),
                           max_iter=int(p.get("max_iter", 500)), early_stopping=False, random_state=self.seed)
        return TransformedTargetRegressor(regressor=_scaled(mlp), transformer=StandardScaler())


@PREDICTORS.register("gp")
class GaussianProcessPredictor(Predictor):
    """Gaussian process on standardised features: constant x (Matern or RBF) + white noise, with a
    normalised target; the posterior std is the uncertainty.

    Params: ``kernel`` (matern | rbf), ``nu`` (Matern smoothness, default 2.5), ``ard`` (a length
    scale per feature: worth it on a few dense features, slow on one-hot), ``restarts`` (extra
    optimizer starts, drawn from the seed; default 2).
    """

    has_uncertainty = True

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        if str(params.get("kernel", "matern")) not in ("matern", "rbf"):
            raise ValueError(f"kernel: must be 'matern' or 'rbf', got {params['kernel']!r}")

    def _make(self, n_features: int) -> Any:
        scale: Any = np.ones(n_features) if self.params.get("ard", False) else 1.0
        if str(self.params.get("kernel", "matern")) == "rbf":
            shape: Any = RBF(scale, (1e-2, 1e3))
        else:
            shape = Matern(scale, (1e-2, 1e3), nu=float(self.params.get("nu", 2.5)))
        kernel = ConstantKernel(1.0, (1e-3, 1e3)) * shape + WhiteKernel(1e-2, (1e-6, 1e1))
        return _scaled(GaussianProcessRegressor(kernel=kernel, normalize_y=True, random_state=self.seed,
                                                n_restarts_optimizer=int(self.params.get("restarts", 2))))

    def _predict_with_std(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._model.predict(X, return_std=True)  # the pipeline hands return_std to the GP


class _Bagged:
    """``members`` copies of one predictor kind, each fitted on its own bootstrap resample."""

    def __init__(self, kind: str, params: dict[str, Any], members: int, seed: int):
        self.kind, self.params, self.members, self.seed = kind, params, members, seed
        self.models_: list[Predictor] = []

    def fit(self, X: np.ndarray, y: np.ndarray) -> _Bagged:
        rng = np.random.default_rng(self.seed)
        self.models_ = []
        for _ in range(self.members):
            rows = rng.integers(0, len(y), size=len(y))
            member_seed = int(rng.integers(2**31 - 1))
            self.models_.append(make_predictor(self.kind, self.params, member_seed).fit(X[rows], y[rows]))
        return self

    def predict_members(self, X: np.ndarray) -> np.ndarray:
        return np.stack([m.predict(X) for m in self.models_])

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predict_members(X).mean(axis=0)


@PREDICTORS.register("ensemble")
class EnsemblePredictor(Predictor):
    """Bagged gradient boosting: the mean of ``members`` (default 8) GBDTs fitted on bootstrap
    resamples, and their spread as the uncertainty. ``member`` picks another member kind; every
    other param goes to the members (default: 150 trees of depth 3, learning rate 0.05)."""

    has_uncertainty = True
    _DEFAULTS: ClassVar[dict[str, Any]] = {"n_estimators": 150, "max_depth": 3, "learning_rate": 0.05}

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        member = str(params.get("member", "gbdt"))
        if member not in PREDICTORS or member in ("ensemble", "auto"):
            raise ValueError(f"member: {PREDICTORS.miss_message(member)}; and not 'ensemble' or 'auto'")
        if int(params.get("members", 8)) < 2:
            raise ValueError(f"members: need at least 2 for a spread, got {params['members']}")

    def _make(self, n_features: int) -> Any:
        member = str(self.params.get("member", "gbdt"))
        rest = {k: v for k, v in self.params.items() if k not in ("member", "members")}
        if member == "gbdt":
            rest = {**self._DEFAULTS, **rest}
        return _Bagged(member, rest, int(self.params.get("members", 8)), self.seed)

    def _predict_with_std(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        per_member = self._model.predict_members(X)
        return per_member.mean(axis=0), per_member.std(axis=0)


def fold_indices(n: int, folds: int, seed: int) -> list[np.ndarray]:
    """Row indices held out by each of ``folds`` folds: a seeded permutation dealt round-robin, so
    every row is held out exactly once."""
    order = np.random.default_rng(seed).permutation(n)
    return [order[k::folds] for k in range(folds)]


def kendall_tau(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.nan_to_num(kendalltau(y_true, y_pred).statistic))  # constant predictions rank nothing


def cv_predictions(kind: str, params: dict[str, Any], X: np.ndarray, y: np.ndarray, folds: int,
                   seed: int) -> np.ndarray:
    """Out-of-fold predictions of ``kind``: every row predicted by a model that never saw it."""
    oof = np.empty(len(y), dtype=np.float64)
    for hold in fold_indices(len(y), folds, seed):
        train = np.setdiff1d(np.arange(len(y)), hold)
        oof[hold] = make_predictor(kind, params, seed).fit(X[train], y[train]).predict(X[hold])
    return oof


class _SelectByCV:
    def __init__(self, candidates: dict[str, dict[str, Any]], folds: int, seed: int):
        self.candidates, self.folds, self.seed = candidates, folds, seed
        self.scores_: dict[str, float] = {}

    def fit(self, X: np.ndarray, y: np.ndarray) -> _SelectByCV:
        folds = min(self.folds, len(y) // 2)  # every training fold keeps at least 2 rows
        if folds >= 2:
            self.scores_ = {kind: kendall_tau(y, cv_predictions(kind, params, X, y, folds, self.seed))
                            for kind, params in self.candidates.items()}
            self.chosen_ = max(self.scores_, key=self.scores_.__getitem__)  # ties: the first listed
        else:
            self.chosen_ = next(iter(self.candidates))
        self.best_ = make_predictor(self.chosen_, self.candidates[self.chosen_], self.seed).fit(X, y)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.best_.predict(X)


@PREDICTORS.register("auto")
class AutoPredictor(Predictor):
    """Selection by cross-validation, as a kind: fits each of ``candidates`` (comma-separated kinds,
    default "ridge,gbdt,mlp,gp") in ``folds`` (default 4) seeded folds, keeps the one with the best
    out-of-fold Kendall tau and refits it on everything. ``KIND.PARAM`` params go to that candidate
    (``gbdt.n_estimators: 200``). After fit, ``chosen`` and ``cv_scores`` say what won and why.
    Its std is zeros: which uncertainty it would carry depends on the winner."""

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        kinds = cls._kinds(params)
        for i, kind in enumerate(kinds):
            if kind not in PREDICTORS or kind == "auto":
                raise ValueError(f"candidates[{i}]: {PREDICTORS.miss_message(kind)}; and not 'auto' itself")
        for key in params:
            if key not in ("candidates", "folds") and key.split(".", 1)[0] not in kinds:
                raise ValueError(f"{key}: not 'candidates', 'folds' or 'KIND.PARAM' of a candidate {kinds}")
        if int(params.get("folds", 4)) < 2:
            raise ValueError(f"folds: need at least 2, got {params['folds']}")

    @staticmethod
    def _kinds(params: dict[str, Any]) -> list[str]:
        kinds = [k.strip() for k in str(params.get("candidates", "ridge,gbdt,mlp,gp")).split(",") if k.strip()]
        if not kinds or len(set(kinds)) != len(kinds):
            raise ValueError(f"candidates: need distinct kinds, got {params.get('candidates')!r}")
        return kinds

    def _make(self, n_features: int) -> Any:
        per_kind = {k: {key.split(".", 1)[1]: v for key, v in self.params.items() if key.startswith(k + ".")}
                    for k in self._kinds(self.params)}
        return _SelectByCV(per_kind, int(self.params.get("folds", 4)), self.seed)

    @property
    def chosen(self) -> str:
        return self._fitted().chosen_

    @property
    def cv_scores(self) -> dict[str, float]:
        return dict(self._fitted().scores_)


def make_predictor(kind: str, params: dict[str, Any] | None = None, seed: int = 0) -> Predictor:
    return PREDICTORS.get(kind)(params, seed)
