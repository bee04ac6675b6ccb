"""Time the demo end to end (`nasq run examples/demo.yaml`, after install) and record what it found.

    .venv/bin/python benchmarks/pipeline_demo.py [--experiment examples/demo.yaml]

Runs the CLI in a fresh temporary working folder (so nothing is reused), then reads the run's
timings.json and front.json. Prints the figures and writes them to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section  # noqa: E402

from nasq.search.uncertainty import point_interval  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _interval(measured: dict) -> str:
    bounds = point_interval(measured)
    return f"{measured['top1']:.2f}" + ("" if bounds is None else f" [{bounds[0]:.2f}, {bounds[1]:.2f}]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiment", default=str(REPO / "examples" / "demo.yaml"))
    ap.add_argument("--keep", default=None, help="run in this (empty) folder and keep the run there "
                    "(e.g. for benchmarks/export_fidelity.py) instead of a temporary one")
    args = ap.parse_args()
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    with (contextlib.nullcontext(args.keep) if args.keep else tempfile.TemporaryDirectory(prefix="nasq-bench-")) as tmp:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "nasq.cli", "run", args.experiment, "--quiet"], cwd=tmp,
                             capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if out.returncode != 0:
            sys.exit(f"demo failed:\n{out.stderr[-3000:]}")
        run = Path(tmp) / "runs" / "demo"
        timings = json.loads((run / "timings.json").read_text())
        front = json.loads((run / "front.json").read_text())
        manifest = json.loads((run / "export" / "manifest.json").read_text())
    points = front["points"]
    mixed = sum(len({(lay["w_format"], lay["a_format"]) for st in p["spec"]["stages"] for lay in st}) > 1 for p in points)
    top1 = [p["measured"]["top1"] for p in points]
    rows = [("wall time of `nasq run` (s)", f"{wall:.0f}"),
            *[(f"stage {k} (s)", f"{v:.1f}") for k, v in timings.items()],
            ("front points (non-dominated)", str(len(points))),
            ("front points mixing formats across layers", str(mixed)),
            ("front top-1 range (%, supernet, validation)", f"{min(top1):.2f} - {max(top1):.2f}"),
            ("best front point, top-1 and its 95 % interval (%)", _interval(points[int(np.argmax(top1))]["measured"])),
            ("export: onnxruntime vs torch max abs diff", f"{manifest['measured']['onnx_max_abs_diff']:.2e}"),
            ("export: onnxruntime latency, batch 1 (ms)", f"{manifest['measured']['onnx_latency_ms_batch1']:.3f}")]
    rows.append(("load average (1/5/15 min) before / after", f"{' '.join(load_before)} / "
                 f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])}"))
    table = "| figure | value |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)
    print(table)
    body = ("### Demo pipeline (`benchmarks/pipeline_demo.py`)\n\n"
            "`nasq run examples/demo.yaml` in a fresh folder, after `make demo` installed everything.\n\n" + table)
    print("written to", write_section("pipeline_demo", body))


if __name__ == "__main__":
    main()
