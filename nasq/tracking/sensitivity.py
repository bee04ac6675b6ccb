"""The per-layer sensitivity table in MLflow: a heat map (layer x format, PNG) and the table itself
(``log_table`` JSON plus the CSV), logged on a run. Knows nothing of torch: it is given rows."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nasq.tracking.client import _client
from nasq.tracking.plots import _figure_classes, _save_atomic

HEATMAP_PNG = "sensitivity_heatmap.png"
TABLE_JSON = "sensitivity_table.json"  # what mlflow.log_table writes: shown as a table in the UI


def matrix(rows: Sequence[dict[str, Any]], column: str) -> tuple[list[str], list[str], np.ndarray]:
    """``column`` as a (layers x formats) matrix, layers and formats in first-seen order."""
    layers = list(dict.fromkeys(str(r["layer"]) for r in rows))
    formats = list(dict.fromkeys(str(r["format"]) for r in rows))
    m = np.full((len(layers), len(formats)), np.nan)
    for r in rows:
        m[layers.index(str(r["layer"])), formats.index(str(r["format"]))] = float(r[column])
    return layers, formats, m


def heatmap_png(rows: Sequence[dict[str, Any]], path: Path, column: str = "top1_drop", title: str = "") -> Path:
    """A layer x format heat map of ``column``, each cell annotated; written atomically."""
    layers, formats, m = matrix(rows, column)
    Figure, FigureCanvasAgg = _figure_classes()
    fig = Figure(figsize=(1.4 + 1.1 * len(formats), 1.2 + 0.42 * len(layers)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(m, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(formats)), formats)
    ax.set_yticks(range(len(layers)), layers)
    for i in range(len(layers)):
        for j in range(len(formats)):
            ax.text(j, i, f"{m[i, j]:.3g}", ha="center", va="center", fontsize=7, color="w")
    fig.colorbar(image, ax=ax, label=column)
    ax.set_title(title or f"{column} per layer and format")
    fig.tight_layout()
    return _save_atomic(fig, path)


def log_sensitivity(uri: str, run_id: str, rows: Sequence[dict[str, Any]], files: Sequence[Path],
                    folder: Path) -> list[str]:
    """On run ``run_id``: the rows as an MLflow table, the heat map (written into ``folder``) and
    ``files`` (the artifact's JSON and CSV). Returns the artifact names logged."""
    client = _client(uri)
    png = heatmap_png(rows, folder / HEATMAP_PNG)
    table = {k: [r[k] for r in rows] for k in rows[0]} if rows else {}
    client.log_table(run_id, data=table, artifact_file=TABLE_JSON)
    for path in [*files, png]:
        client.log_artifact(run_id, str(path))
    return [TABLE_JSON, *(Path(p).name for p in files), png.name]
