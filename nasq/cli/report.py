"""The end-of-run summary: the front as a table, where MLflow and the export are."""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.table import Table


def _short(fmt: str) -> str:
    return fmt.split("_")[0]


def format_mix(point: Any) -> str:
    """e.g. ``int4/fp32 x3, int8/int8, fp8/fp32``: weight/activation formats and their counts."""
    counts = Counter(f"{_short(layer.w_format)}/{_short(layer.a_format)}" for layer in point.spec.layers())
    return ", ".join(k + (f" x{n}" if n > 1 else "") for k, n in counts.most_common())


def print_summary(result: Any, console: Any) -> None:
    front = result.front
    modelled = result.experiment.profile.config.status == "modelled"
    table = Table(title=f"Pareto front: {len(front.points)} non-dominated subnets "
                  f"(top1 measured on the supernet; latency {'modelled' if modelled else 'measured'} on "
                  f"{result.experiment.profile.name})")
    for col in ("#", "top1 %", "pred top1 %", "latency ms", "size MB", "depths", "layer formats (w/a)"):
        table.add_column(col, justify="right" if col not in ("layer formats (w/a)", "depths") else "left")
    knee = front.pick("knee") if front.points else -1
    for i, p in enumerate(front.points):
        table.add_row(f"{i}{'*' if i == knee else ''}", f"{p.value('top1'):.2f}", f"{p.predicted['top1']:.2f}",
                      f"{p.value('latency_ms'):.3f}", f"{p.value('size_mb'):.4f}",
                      "-".join(map(str, p.spec.depths)), format_mix(p))
    console.print(table)
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
