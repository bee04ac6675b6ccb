"""Contract of a predictor kind (and, in :func:`check_latency_predictor`, of the latency predictor): fit returns self, predict before fit raises NotFittedError, same
seed same predictions, an uncertainty of the right shape that is never negative (and not all zero
for kinds that declare one), and - bound to a space through a recipe - a save/load round trip that
reproduces the predictions and refuses a foreign space.

The checks run each kind with light params (``FAST_PARAMS``) so the suite stays fast; a kind not
listed there runs with its defaults.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from nasq.errors import LineageError, NotFittedError
from nasq.hardware import CostModel
from nasq.hardware.table import LatencyTable, Row
from nasq.predict.features import encode
from nasq.predict.fit import AccuracyPredictor
from nasq.predict.latency import LatencyPredictor
from nasq.predict.models import PREDICTORS, make_predictor
from nasq.space import SearchSpace

FAST_PARAMS: dict[str, dict[str, Any]] = {
    "gbdt": {"n_estimators": 60, "max_depth": 3},
    "random_forest": {"n_estimators": 30},
    "mlp": {"hidden_units": 32, "max_iter": 200},
    "gp": {"restarts": 0},
    "ensemble": {"members": 3, "n_estimators": 40},
    "auto": {"candidates": "ridge,gbdt", "folds": 3, "gbdt.n_estimators": 40},
}


def _linear_data(seed: int, n: int = 80, d: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    return X, X @ rng.normal(size=d) + 0.1 * rng.normal(size=n)


def check_predictor(kind: str, seed: int = 0, params: dict[str, Any] | None = None) -> None:
    """The estimator-level contract on a noisy linear signal."""
    params = FAST_PARAMS.get(kind, {}) if params is None else params
    X, y = _linear_data(seed)
    p = make_predictor(kind, params, seed)
    for call in (p.predict, p.predict_with_std):
        try:
            call(X)
        except NotFittedError:
            pass
        else:
            raise AssertionError(f"{kind}: {call.__name__} before fit did not raise NotFittedError")
    assert p.fit(X, y) is p, f"{kind}: fit does not return self"
    a = p.predict(X)
    b = make_predictor(kind, params, seed).fit(X, y).predict(X)
    assert np.array_equal(a, b), f"{kind}: same seed, different predictions"
    assert np.corrcoef(a, y)[0, 1] > 0.8, f"{kind}: does not learn a linear signal"
    check_uncertainty(kind, p, X)


def check_uncertainty(kind: str, fitted: Any, X: np.ndarray) -> None:
    mean, std = fitted.predict_with_std(X)
    assert mean.shape == std.shape == (len(X),), f"{kind}: predict_with_std shapes {mean.shape}, {std.shape}"
    assert np.allclose(mean, fitted.predict(X)), f"{kind}: predict_with_std mean differs from predict"
    assert np.isfinite(std).all() and (std >= 0).all(), f"{kind}: std must be finite and >= 0"
    if PREDICTORS.get(kind).has_uncertainty:
        assert (std > 0).any(), f"{kind}: declares has_uncertainty but its std is all zero"
    else:
        assert not std.any(), f"{kind}: has no uncertainty, so its std must be all zero"


def check_recipe_round_trip(recipe: Any, space: SearchSpace, cost_model: CostModel, seed: int = 0,
                            n: int = 40) -> None:
    """``AccuracyPredictor`` built from ``recipe``: fit on ``n`` sampled subnets, save, load -> the same
    predictions; loading against a space with another hash raises LineageError."""
    specs = space.sample_unique(np.random.default_rng(seed), n)
    feats = encode(("costs",), space, specs, cost_model)
    top1 = 70 + 3 * feats[:, 0] + 2 * feats[:, -1] / 8  # synthetic, driven by size and bits
    pred = AccuracyPredictor(recipe, space, cost_model, seed)
    assert pred.fit(specs, top1) is pred, f"{recipe.config.name}: fit does not return self"
    with tempfile.TemporaryDirectory(prefix="nasq-contract-") as tmp:
        folder = Path(tmp)
        pred.save(folder, "data-hash")
        back = AccuracyPredictor.load(folder, space, cost_model)
        assert np.array_equal(pred.predict(specs), back.predict(specs)), f"{recipe.config.name}: round trip changed predictions"
        a, b = pred.predict_with_std(specs), back.predict_with_std(specs)
        assert np.array_equal(a[1], b[1]), f"{recipe.config.name}: round trip changed the std"
        check_refuses_foreign_space(folder, space, cost_model)


def check_refuses_foreign_space(folder: Path, space: SearchSpace, cost_model: CostModel) -> None:
    other = SearchSpace(space.config.model_copy(update={"name": f"{space.name}_other", "description": "changed"}))
    try:
        AccuracyPredictor.load(folder, other, cost_model)
    except LineageError as e:
        assert f"fitted on space '{space.name}'" in str(e), f"the refusal does not name the space: {e}"
    else:
        raise AssertionError(f"{folder}: a predictor fitted on '{space.name}' loaded on a foreign space")


def check_latency_predictor(space: SearchSpace, table: LatencyTable, seed: int = 0) -> None:
    """The predictor contract for the latency predictor of a measured table: predict before fit
    raises NotFittedError, fit returns self, same data same predictions, and a JSON (never pickled)
    save/load round trip that reproduces the predictions and refuses another table."""
    rng = np.random.default_rng(seed)
    specs = [space.largest(), space.smallest(), *space.sample(rng, 30)]
    specs = [s for s in specs if np.isfinite(LatencyPredictor(space, table).table_sum_ms([s])[0])]
    assert len(specs) >= 4, f"{table.source}: fewer than 4 supported subnets to fit on"
    fresh = LatencyPredictor(space, table)
    try:
        fresh.predict(specs)
    except NotFittedError:
        pass
    else:
        raise AssertionError("latency predictor: predict before fit did not raise NotFittedError")
    # a plausible whole-subnet latency: the table sum, plus a fixed session cost
    measured = 0.9 * fresh.table_sum_ms(specs) + 0.05
    assert fresh.fit(specs, measured) is fresh, "latency predictor: fit does not return self"
    again = LatencyPredictor(space, table).fit(specs, measured)
    assert np.array_equal(fresh.predict(specs), again.predict(specs)), "latency predictor: same data, different fit"
    with tempfile.TemporaryDirectory() as tmp:
        path = fresh.save(Path(tmp) / "latency_model.json")
        assert path.read_text().lstrip().startswith("{"), "latency predictor: not saved as JSON"
        back = LatencyPredictor.load(path, space, table)
        assert np.array_equal(back.predict(specs), fresh.predict(specs)), "latency predictor: load changes predictions"
        other = LatencyTable(dict(list(table.rows.items())[1:]) | {next(iter(table.rows)): Row.unsupported("x")},
                             "other.csv")
        try:
            LatencyPredictor.load(path, space, other)
        except LineageError:
            pass
        else:
            raise AssertionError("latency predictor: loaded against another table")
