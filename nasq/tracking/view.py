"""A saved "Pareto front" chart view for the MLflow UI, built as data (no mlflow import).

The MLflow UI (checked on 3.17.2, the pinned version) keeps saved views as experiment tags
``mlflow.sharedViewState.<key>``. The tag value is an envelope
``{"name", "createdAt", "updatedAt", "state"}`` (times in ms) whose ``state`` is
``"deflate;" + base64(zlib(json))`` of the runs page state. The UI reads from that state the
search facets (``searchFilter``, ``orderByKey``, ``orderByAsc``, ...) and the page's UI keys
(``compareRunCharts``, ``compareRunSections``, ``runsHiddenMode``, ``selectedColumns``, ...);
``runsPinned``/``runsHidden``/``runsExpanded`` are ignored when a view is loaded. Chart cards are
the UI's ``RunsChartsCardConfig`` objects: ``SCATTER`` with ``xaxis``/``yaxis`` ``{key, type:
"METRIC"}`` and ``PARALLEL`` with ``selectedParams``/``selectedMetrics``.

``#/experiments/<id>/runs?viewStateShareKey=<key>&compareRunsMode=CHART`` opens the view. The
format is undocumented: the browser test in tests/integration checks it still renders.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import zlib
from itertools import combinations
from typing import Any

TAG_PREFIX = "mlflow.sharedViewState."
CHECKED_ON_MLFLOW = "3.17.2"
SECTION = "Pareto front"


def view_key(parent_run_id: str) -> str:
    """A stable share key per search run: the same search always gets the same view."""
    return "nasq-pareto-" + hashlib.sha256(parent_run_id.encode()).hexdigest()[:16]


def _card_base(uuid: str, section: str, kind: str, name: str) -> dict[str, Any]:
    return {"uuid": uuid, "type": kind, "runsCountToCompare": 100, "metricSectionId": section,
            "deleted": False, "isGenerated": False, "displayName": name}


def _scatter(uuid: str, section: str, x: str, y: str) -> dict[str, Any]:
    card = _card_base(uuid, section, "SCATTER", f"{y} vs {x}")
    card.update(xaxis={"key": x, "type": "METRIC"}, yaxis={"key": y, "type": "METRIC"})
    return card


def _parallel(uuid: str, section: str, metrics: list[str], params: list[str]) -> dict[str, Any]:
    card = _card_base(uuid, section, "PARALLEL", "all objectives")
    card.update(selectedParams=list(params), selectedMetrics=list(metrics), showAllRuns=True)
    return card


def page_state(parent_run_id: str, objectives: list[str] | tuple[str, ...],
               params: list[str] = (), interval: tuple[str, str] | None = None) -> dict[str, Any]:
    """The runs-page state: only the front's point runs, one scatter chart per objective pair
    (top1 on the y axis when present), a parallel-coordinates chart over all objectives.
    ``interval``: the metrics of top1's 95 % bounds (low, high) when the points log them. The UI's
    scatter cards draw no error bars, so each top1 chart gets a twin plotting the lower bound (the
    accuracy a point keeps at worst), and both bounds join the table and the parallel chart."""
    section = f"{view_key(parent_run_id)}-section"
    objectives = [o.replace("@", ".") for o in objectives]  # as the point runs log them (names.metric_key)
    pairs = []
    for a, b in combinations(objectives, 2):
        x, y = (a, b) if b == "top1" else (b, a)
        pairs.append((x, y))
    if interval is not None:
        pairs += [(x, interval[0]) for x, y in list(pairs) if y == "top1"]
    metrics = list(objectives) + ([m for m in interval if m not in objectives] if interval else [])
    cards = [_scatter(f"{section}-scatter-{i}", section, x, y) for i, (x, y) in enumerate(pairs)]
    cards.append(_parallel(f"{section}-parallel", section, metrics, list(params)))
    columns = [f"metrics.`{m}`" for m in metrics] + [f"params.`{p}`" for p in params]
    return {
        "searchFilter": f"tags.mlflow.parentRunId = '{parent_run_id}' and tags.`nasq.kind` = 'pareto_point'",
        "orderByKey": f"metrics.`{objectives[0]}`",
        "orderByAsc": False,
        "selectedColumns": columns,
        "runsHiddenMode": "SHOW_ALL",
        "compareRunCharts": cards,
        "compareRunSections": [{"uuid": section, "name": SECTION, "display": True, "isReordered": True,
                                "deleted": False, "isGenerated": False}],
        "isAccordionReordered": True,
        "hideEmptyCharts": False,
        "viewMaximized": False,
        "runListHidden": False,
        "groupBy": None,
        "useGroupedValuesInCharts": True,
    }


def encode_state(state: dict[str, Any]) -> str:
    raw = json.dumps(state, separators=(",", ":"), sort_keys=True).encode()
    return "deflate;" + base64.b64encode(zlib.compress(raw, 9)).decode("ascii")


def decode_state(text: str) -> dict[str, Any]:
    if not text.startswith("deflate;"):
        return json.loads(text)
    return json.loads(zlib.decompress(base64.b64decode(text[len("deflate;"):])))


def envelope(name: str, state: dict[str, Any], now_ms: int | None = None) -> str:
    """The tag value the UI expects (see the module docstring)."""
    stamp = int(time.time() * 1000) if now_ms is None else int(now_ms)
    return json.dumps({"name": name, "createdAt": stamp, "updatedAt": stamp, "state": encode_state(state)})


def view_url(ui_base: str, experiment_id: str, key: str) -> str:
    return f"{ui_base.rstrip('/')}/#/experiments/{experiment_id}/runs?viewStateShareKey={key}&compareRunsMode=CHART"
