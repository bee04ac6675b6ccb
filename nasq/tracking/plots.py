"""Figures of a search: the Pareto front as one scatter panel per (top1, other objective) pair,
as a PNG (matplotlib) and as an interactive HTML page (plotly, plotly.js embedded).

matplotlib is imported lazily and drawn through the Agg canvas directly (no pyplot, no global
backend switch), so importing this module costs nothing and works on headless machines.
"""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from nasq.errors import MissingDependencyError
from nasq.files import atomic_write_text
from nasq.search.pareto import Front
from nasq.search.uncertainty import CI_HIGH, CI_LOW, has_intervals, point_interval

# columns of the optional ``others`` array: every evaluated subnet, drawn in grey
OTHERS_COLUMNS = ("top1", "latency_ms", "size_mb")
LABELS = {"top1": "top-1 accuracy (%)", "latency_ms": "latency (ms)", "size_mb": "size (MB)",
          "bops_g": "BOPs (G)", "throughput_ips": "throughput (images/s)"}


BASELINES_CSV = "baselines.csv"  # uniform-precision twins beside the front (nasq.stages.baselines)
# marker of each uniform format's baselines; the largest subnet's are drawn bigger
BASELINE_MARKERS = {"int8": "s", "int4": "^", "fp8_e4m3": "D"}


def read_baselines(path: Path) -> list[dict[str, Any]]:
    """The rows of a baselines.csv (numbers as floats); [] when there is none."""
    if not Path(path).is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    keep = {"of", "format", "key"}
    return [{k: (v if k in keep else float(v)) for k, v in r.items()} for r in rows]


def baseline_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """``baseline.<of>.<format>.<metric>`` (e.g. ``baseline.largest.int8.top1``) of each row."""
    return {f"baseline.{r['of'].replace(' ', '')}.{r['format']}.{k}": float(v)
            for r in rows for k, v in r.items() if k not in ("of", "format", "key") and v == v}


def _baseline_value(row: dict[str, Any], metric: str) -> float:
    if metric in row:
        return float(row[metric])
    found = [v for k, v in row.items() if k.startswith(f"{metric}@")]  # the first target's latency
    return float(found[0]) if found else float("nan")


def _draw_baselines(ax: Any, rows: list[dict[str, Any]], x_metric: str, y_metric: str) -> None:
    for fmt in sorted({r["format"] for r in rows}):
        mine = [r for r in rows if r["format"] == fmt]
        xs = [_baseline_value(r, x_metric) for r in mine]
        ys = [_baseline_value(r, y_metric) for r in mine]
        sizes = [90 if r["of"] == "largest" else 30 for r in mine]
        ax.scatter(xs, ys, s=sizes, marker=BASELINE_MARKERS.get(fmt, "x"), facecolors="none",
                   edgecolors="tab:green" if fmt == "int8" else "tab:orange" if fmt == "int4" else "tab:purple",
                   linewidths=1.0, label=f"uniform {fmt} ({len(mine)}; big: largest)", zorder=2)


def _figure_classes() -> tuple[Any, Any]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingDependencyError(
            f"plotting needs matplotlib ({exc}); install it with `pip install matplotlib`") from exc
    return Figure, FigureCanvasAgg


def axis_label(metric: str, modelled: bool = False) -> str:
    base, _, profile = metric.partition("@")  # a per-target metric: latency_ms@cpu_x
    label = LABELS.get(base, metric)
    if base == "latency_ms" and modelled:
        label = "latency (ms, modelled)"
    return f"{label} on {profile}" if profile else label


def _check_others(others: np.ndarray | None) -> np.ndarray | None:
    if others is None:
        return None
    arr = np.asarray(others, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < len(OTHERS_COLUMNS):
        raise ValueError(f"others must be an (n, 3) array of {OTHERS_COLUMNS} rows, got shape {arr.shape}")
    return arr[np.isfinite(arr[:, : len(OTHERS_COLUMNS)]).all(axis=1)]


def _draw_panel(ax: Any, front: Front, x_metric: str, y_metric: str, others: np.ndarray | None,
                knee: int | None, modelled: bool, baselines: list[dict[str, Any]] | None = None) -> None:
    if others is not None and x_metric in OTHERS_COLUMNS and y_metric in OTHERS_COLUMNS:
        xs = others[:, OTHERS_COLUMNS.index(x_metric)]
        ys = others[:, OTHERS_COLUMNS.index(y_metric)]
        ax.scatter(xs, ys, s=14, c="0.75", label=f"evaluated ({len(others)})", zorder=1)
    if baselines:
        _draw_baselines(ax, baselines, x_metric, y_metric)
    px = np.array([p.value(x_metric) for p in front.points], dtype=np.float64)
    py = np.array([p.value(y_metric) for p in front.points], dtype=np.float64)
    bars = top1_error_bars(front) if y_metric == "top1" else None
    if len(px) and bars is not None:
        ax.errorbar(px, py, yerr=bars, fmt="none", ecolor="tab:blue", elinewidth=1, capsize=2, alpha=0.7,
                    label="95 % interval", zorder=2)
    if len(px):
        ax.scatter(px, py, s=36, c="tab:blue", edgecolors="black", linewidths=0.5,
                   label=f"front ({len(px)})", zorder=3)
        for i, (x, y) in enumerate(zip(px, py, strict=True)):
            ax.annotate(str(i), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8, zorder=4)
    if knee is not None:
        ax.scatter([px[knee]], [py[knee]], s=220, marker="*", c="tab:red", edgecolors="black",
                   linewidths=0.6, label=f"knee (#{knee})", zorder=5)
    ax.set_xlabel(axis_label(x_metric, modelled))
    ax.set_ylabel(axis_label(y_metric, modelled))
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8)


def top1_error_bars(front: Front) -> np.ndarray | None:
    """(2, n) distances below and above each point's top-1 to its 95 % interval
    (``top1_ci_low``/``top1_ci_high``); None when some point has none (an older front)."""
    if not has_intervals(front):
        return None
    top1 = np.array([p.value("top1") for p in front.points], dtype=np.float64)
    low = np.array([p.measured[CI_LOW] for p in front.points], dtype=np.float64)
    high = np.array([p.measured[CI_HIGH] for p in front.points], dtype=np.float64)
    return np.stack([np.maximum(top1 - low, 0.0), np.maximum(high - top1, 0.0)])


def _save_atomic(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=110)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def pareto_png(front: Front, path: Path, title: str = "", *, others: np.ndarray | None = None,
               modelled: bool = False, baselines: list[dict[str, Any]] | None = None) -> Path:
    """Write the front as a PNG: one panel per (top1, other objective), knee point starred.

    ``others`` are (top1, latency_ms, size_mb) rows of every evaluated subnet, drawn in grey
    behind the front; ``modelled`` labels latency as modelled rather than measured;
    ``baselines`` (rows of baselines.csv) are drawn as hollow markers, one shape per format.
    """
    Figure, FigureCanvasAgg = _figure_classes()
    objectives = list(front.objectives)
    y_metric = "top1" if "top1" in objectives else objectives[0]
    x_metrics = [o for o in objectives if o != y_metric] or [y_metric]
    others_arr = _check_others(others)
    knee = front.pick("knee") if front.points else None
    fig = Figure(figsize=(5.0 * len(x_metrics), 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(x_metrics), squeeze=False)[0]
    for ax, x_metric in zip(axes, x_metrics, strict=True):
        _draw_panel(ax, front, x_metric, y_metric, others_arr, knee, modelled, baselines)
    if title:
        fig.suptitle(title)
    return _save_atomic(fig, Path(path))


def _hover(front: Front, i: int) -> str:
    p = front.points[i]
    values = "<br>".join(f"{m}: {p.value(m):.4g}" + (f" (pred {p.predicted[m]:.4g})" if m in p.measured
                                                     and m in p.predicted else "")
                         for m in front.objectives)
    bounds = point_interval(p.measured)
    if bounds is not None:
        values += f"<br>top1 95 % interval: [{bounds[0]:.2f}, {bounds[1]:.2f}]"
    return (f"<b>point {i}</b> {p.spec.short_key()}<br>{values}<br>depths "
            f"{'-'.join(map(str, p.spec.depths))}<br>formats (w/a): {p.formats_summary()}")


def pareto_html(front: Front, path: Path, title: str = "", *, modelled: bool = False) -> Path:
    """Write the front as a self-contained interactive HTML page (plotly.js embedded, works
    offline): one scatter panel per (top1, other objective); hovering a point shows its values,
    depths and per-layer formats."""
    try:
        from plotly.graph_objects import Figure as PlotlyFigure
        from plotly.graph_objects import Scatter
        from plotly.subplots import make_subplots
    except ImportError as exc:
        raise MissingDependencyError(f"the interactive plot needs plotly ({exc}); "
                                     "install it with `pip install plotly`") from exc
    objectives = list(front.objectives)
    y_metric = "top1" if "top1" in objectives else objectives[0]
    x_metrics = [o for o in objectives if o != y_metric] or [y_metric]
    fig: PlotlyFigure = make_subplots(rows=1, cols=len(x_metrics))
    knee = front.pick("knee") if front.points else None
    hover = [_hover(front, i) for i in range(len(front.points))]
    bars = top1_error_bars(front) if y_metric == "top1" else None
    error_y = None if bars is None else {"type": "data", "symmetric": False, "array": bars[1].tolist(),
                                         "arrayminus": bars[0].tolist(), "thickness": 1}
    for col, x_metric in enumerate(x_metrics, start=1):
        fig.add_trace(Scatter(error_y=error_y,
            x=[p.value(x_metric) for p in front.points], y=[p.value(y_metric) for p in front.points],
            mode="markers+text", text=[str(i) for i in range(len(front.points))], textposition="top right",
            hovertext=hover, hoverinfo="text", name=f"front ({len(front.points)})", showlegend=col == 1,
            marker={"size": [16 if i == knee else 9 for i in range(len(front.points))],
                    "symbol": ["star" if i == knee else "circle" for i in range(len(front.points))]}),
            row=1, col=col)
        fig.update_xaxes(title_text=axis_label(x_metric, modelled), row=1, col=col)
        fig.update_yaxes(title_text=axis_label(y_metric, modelled), row=1, col=col)
    fig.update_layout(title=title or "Pareto front", height=480, width=480 * len(x_metrics))
    html = fig.to_html(include_plotlyjs=True, full_html=True)  # embedded: a CDN link renders blank offline

    return atomic_write_text(Path(path), html)
