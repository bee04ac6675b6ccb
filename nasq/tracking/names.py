"""Names and values as MLflow accepts them: keys, flattened params, a point's genes and metrics.

Pure Python (no mlflow import); :mod:`nasq.tracking` logs what these functions build.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

from nasq.search.pareto import FrontPoint
from nasq.space import SubnetSpec

PARAM_VALUE_MAX = 500
KEY_MAX = 250  # mlflow's own limit
_BAD_KEY_CHARS = re.compile(r"[^\w.\- /]")


def metric_key(name: str) -> str:
    """A per-target metric as MLflow may name it: ``latency_ms@cpu_x`` -> ``latency_ms.cpu_x``
    (``@`` is not allowed in MLflow keys)."""
    return str(name).replace("@", ".")


def clean_key(key: str) -> str:
    """A key mlflow accepts: ``@`` becomes ``.`` (:func:`metric_key`), other disallowed characters
    ``_``; at most 250 characters."""
    key = _BAD_KEY_CHARS.sub("_", metric_key(key)).strip("/")
    key = re.sub(r"/+", "/", key).replace("..", "_.")
    return (key or "_")[:KEY_MAX]


def flatten_params(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts become dotted keys; values are stringified and cut to 500 characters."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten_params(value, name + "."))
        else:
            out[clean_key(name)] = _stringify(value)[:PARAM_VALUE_MAX]
    return out


def _stringify(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def point_params(spec: SubnetSpec) -> dict[str, str]:
    """The genes of a subnet spelled out from ``spec.to_dict()``, whatever its family's fields:
    ``s<i>.depth`` and ``s<i>.l<j>.<field>`` for per-stage layer lists, dotted keys otherwise."""
    out: dict[str, str] = {}
    for name, value in spec.to_dict().items():
        if name == "stages" and isinstance(value, list):
            for i, stage in enumerate(value):
                out[f"s{i}.depth"] = str(len(stage))
                for j, layer in enumerate(stage):
                    out.update(flatten_params(layer, f"s{i}.l{j}."))
        else:
            out.update(flatten_params({name: value}))
    return out


def point_metrics(point: FrontPoint) -> dict[str, float]:
    """Predicted values as ``<name>_pred``; the front's value of every metric as ``<name>``: the
    measured one where there is one, else the prediction (as ``FrontPoint.value``), so charts over
    the point runs have every objective. The ``nasq.measured`` tag says which were measured.
    Per-target names are mapped by :func:`metric_key`; ``emulated_layers`` is added when counted."""
    out = {f"{metric_key(k)}_pred": float(v) for k, v in point.predicted.items()}
    out.update({metric_key(k): float(point.value(k)) for k in {*point.predicted, *point.measured}})
    if point.emulated_layers is not None:
        out["emulated_layers"] = float(point.emulated_layers)
    return out


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
