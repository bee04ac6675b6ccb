"""Contract of a predictor kind: fit returns self, predict before fit raises, seeded."""

from __future__ import annotations

import numpy as np

from nasq.errors import NotFittedError
from nasq.predict.models import make_predictor


def check_predictor(kind: str, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(80, 6))
    y = X @ rng.normal(size=6) + 0.1 * rng.normal(size=80)
    p = make_predictor(kind, seed=seed)
    try:
        p.predict(X)
    except NotFittedError:
        pass
    else:
        raise AssertionError(f"{kind}: predict before fit did not raise")
    assert p.fit(X, y) is p, f"{kind}: fit does not return self"
    a = p.predict(X)
    b = make_predictor(kind, seed=seed).fit(X, y).predict(X)
    assert np.array_equal(a, b), f"{kind}: same seed, different predictions"
    assert np.corrcoef(a, y)[0, 1] > 0.8, f"{kind}: does not learn a linear signal"
