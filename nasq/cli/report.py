"""The end-of-run summary: the front as a table, where MLflow and the export are."""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.table import Table

from nasq.search.uncertainty import point_interval


def _short(fmt: str) -> str:
    return fmt.split("_")[0]


def format_mix(point: Any) -> str:
    """e.g. ``int4/fp32 x3, int8/int8, fp8/fp32``: weight/activation formats and their counts."""
    counts = Counter(f"{_short(layer.w_format)}/{_short(layer.a_format)}" for layer in point.spec.layers())
    return ", ".join(k + (f" x{n}" if n > 1 else "") for k, n in counts.most_common())


def top1_interval_text(point: Any) -> str:
    """``[82.1, 84.3]``: the measured top-1's 95 % interval, ``-`` where the front has none."""
    bounds = point_interval(point.measured)
    return "-" if bounds is None else f"[{bounds[0]:.1f}, {bounds[1]:.1f}]"


def print_summary(result: Any, console: Any) -> None:
    front = result.front
    modelled = result.experiment.profile.config.status == "modelled"
    table = Table(title=f"Pareto front: {len(front.points)} non-dominated subnets "
                  f"(top1 measured on the supernet; latency {'modelled' if modelled else 'measured'} on "
                  f"{result.experiment.profile.name})")
    # further targets (hardware: [a, b, ...]) get a latency column each; emulated layers are counted
    others = [prof.name for prof in result.experiment.profiles[1:]]
    emulated = any(p.emulated_layers for p in front.points)
    columns = ["#", "top1 %", "95 % interval", "pred top1 %", "latency ms", *(f"latency ms @{n}" for n in others), "size MB",
               *(["emulated layers"] if emulated else []), "depths", "layer formats (w/a)"]
    for col in columns:
        table.add_column(col, justify="right" if col not in ("layer formats (w/a)", "depths") else "left")
    knee = front.pick("knee") if front.points else -1
    for i, p in enumerate(front.points):
        extra = [f"{p.predicted.get(f'latency_ms@{n}', float('nan')):.3f}" for n in others]
        table.add_row(f"{i}{'*' if i == knee else ''}", f"{p.value('top1'):.2f}", top1_interval_text(p),
                      f"{p.predicted['top1']:.2f}",
                      f"{p.value('latency_ms'):.3f}", *extra, f"{p.value('size_mb'):.4f}",
                      *([str(p.emulated_layers or 0)] if emulated else []),
                      "-".join(map(str, p.spec.depths)), format_mix(p))
    console.print(table)
    print_baselines(result, console)
    console.print("[dim]95 % interval: Wilson on the validation images counted, widened by the calibration-set "
                  "std (nasq.search.uncertainty); two points measured on the same images differ more surely.[/]")
    console.print(f"[dim]* knee point. {result.evaluated} subnets evaluated for real; predictor cross-validated "
                  f"Kendall tau {result.fit_report.kendall_tau:.3f}.[/]")
    if result.data_note:
        console.print(f"[yellow]data: {result.data_note}[/]")
    console.print(f"Artifacts:   {result.workdir}/ (front.csv, front.json, pareto.png, evaluations.csv, supernet.safetensors)")
    if result.tracking is not None:
        t = result.tracking
        console.print(f"MLflow run:  {t.run_id} (experiment {t.experiment_id}, {len(t.child_run_ids)} point runs)")
        console.print(f"Browse:      {t.ui_command}")
        if getattr(t, "view_url", ""):
            console.print(f"Pareto view: {t.view_url}")
    if result.export is not None:
        e = result.export
        console.print(f"Export:      {e.out_dir}/ (model.onnx, model.safetensors, arch.json, manifest.json); "
                      f"onnxruntime vs torch max |diff| {e.max_abs_diff:.2e}, top-1 agreement {100 * e.top1_agreement:.1f} %")
    total = sum(result.timings.values())
    console.print(f"Time:        {total:.0f} s (" + ", ".join(f"{k} {v:.0f} s" for k, v in result.timings.items()) + ")")


def print_baselines(result: Any, console: Any) -> None:
    """The uniform-precision twins (baselines.csv) under the front, and the equal-top-1 summary."""
    from nasq.stages import baselines as base

    rows = getattr(result, "baselines", None) or []
    if not rows:
        return
    lat = [k for k in rows[0] if k.startswith("latency_ms@")]
    table = Table(title="Uniform-precision baselines (truly evaluated; latency and size from the same cost model)")
    for col in ("of", "format", "top1 %", *(f"latency ms @{k.split('@', 1)[1]}" for k in lat), "size MB"):
        table.add_column(col, justify="left" if col in ("of", "format") else "right")
    for r in rows:
        table.add_row(r["of"], r["format"], f"{r['top1']:.2f}", *(f"{r[k]:.3f}" for k in lat), f"{r['size_mb']:.4f}")
    console.print(table)
    console.print(base.summary_line(base.summary(result.experiment, result.front, rows)))

