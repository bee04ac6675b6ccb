"""Export fidelity: does an exported front point keep what the search said about it?

    .venv/bin/python benchmarks/export_fidelity.py [--run runs/demo] [--points 4] [--repeats 200]

For a few points of a finished run's front (max-top1, knee, min-latency and points spread
between), exports each one exactly as `nasq export` does (supernet rebuilt from the run folder,
subnet extracted and recalibrated on the search's calibration images) and measures:

* ONNX top-1 in onnxruntime on the same validation images the search evaluated the supernet on,
  against the supernet's measured top-1 (goal: within 0.2 points), and on the test split;
* onnxruntime latency (batch 1, one thread, median of ``--repeats`` runs after warm-up, timed as
  the profile was measured) against the latency the search predicted on the measured profile
  ``cpu_ort_epyc`` (goal: within 15 %);
* the latency of the fp32 export of the same architecture (all formats fp32), measured the same
  way, so the int8/fp32 ratio of each point is visible.

Prints the table and writes it to docs/benchmarks.md (section ``export_fidelity``) unless
``--no-write``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PROFILE = "cpu_ort_epyc"


def choose_points(front, k: int) -> list[int]:
    from nasq.search import query

    chosen = [query.pick(front, how) for how in ("max-top1", "knee", "min-latency")]
    spread = np.unique(np.round(np.linspace(0, len(front.points) - 1, k)).astype(int)).tolist()
    out: list[int] = []
    for i in chosen + spread:
        if i not in out and len(out) < max(k, 3):
            out.append(int(i))
    return out


def latency_model():
    """The cost model of the measured profile (table sum + fitted correction) for the run's space."""
    import yaml

    from nasq.experiment import load_experiment

    with tempfile.TemporaryDirectory() as tmp:
        exp_file = Path(tmp) / "e.yaml"
        exp_file.write_text(yaml.safe_dump({"space": "mbconv_small", "hardware": [PROFILE], "allow_emulated": True,
                                            "data": {"name": "digits"}}))
        return load_experiment(exp_file).cost_model()


def time_ms(onnx_path: Path, shape: tuple[int, ...], repeats: int) -> float:
    from nasq.export.bundle import ort_session
    from nasq.profiling.onnxruntime_backend import time_session_us

    session = ort_session(onnx_path, threads=1)
    feed = {session.get_inputs()[0].name: np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)}
    return float(np.median(time_session_us(session, feed, warmup=20, repeats=repeats)) / 1e3)


def fp32_twin(spec):
    from nasq.space import LayerChoice, SubnetSpec

    return SubnetSpec(tuple(tuple(dataclasses.replace(layer, w_format="fp32", a_format="fp32")
                                  if isinstance(layer, LayerChoice) else layer for layer in stage)
                            for stage in spec.stages))


def measure(run_dir: str, n_points: int, repeats: int) -> tuple[list[dict], str]:
    import torch

    from nasq import data as data_mod
    from nasq.cli.report import format_mix
    from nasq.export.bundle import export_onnx
    from nasq.export.checks import calibrated_subnet
    from nasq.stages.export import from_run as export_from_run
    from nasq.stages.runs import open_run
    from nasq.supernet import checkpoint

    rows = []
    cost = latency_model()
    with open_run(run_dir) as run, tempfile.TemporaryDirectory() as tmp:
        cfg, space = run.experiment_config(), run.space()
        splits = data_mod.load(cfg.data, run.name)
        net, _ = checkpoint.load(run.folder, space, require_record=False)
        shape = tuple(splits.test_x.shape[1:])
        for i in choose_points(run.front, n_points):
            point = run.front.points[i]
            t0 = time.perf_counter()
            _, manifest = export_from_run(run, i, Path(tmp) / f"p{i}")
            m = manifest["measured"]
            twin = fp32_twin(point.spec)
            twin_path = Path(tmp) / f"p{i}-fp32.onnx"
            export_onnx(calibrated_subnet(net, twin, splits.train_x, cfg.evaluate),
                        torch.from_numpy(splits.test_x[:1]), twin_path, opset=cfg.export.opset)
            pred_ms = float(cost.score([point.spec])["latency_ms"][0])
            rows.append({"point": i, "formats": format_mix(point), "top1_supernet": m["top1"],
                         "top1_onnx_val": m["onnx_top1_val"], "top1_onnx_test": m["onnx_top1_test"],
                         "val_images": int(m["onnx_val_images"]),
                         "latency_pred_ms": pred_ms,
                         "latency_ms": time_ms(Path(tmp) / f"p{i}" / "model.onnx", shape, repeats),
                         "latency_fp32_pred_ms": float(cost.score([twin])["latency_ms"][0]),
                         "latency_fp32_ms": time_ms(twin_path, shape, repeats),
                         "seconds": time.perf_counter() - t0})
        note = f"run `{run_dir}` ({run.record['lineage'].get('nasq.profile', '?')} profile at search time), " \
               f"data {cfg.data.name}"
    return rows, note


def render(rows: list[dict], note: str, repeats: int) -> str:
    lines = ["| point | formats (w/a) | top-1 supernet | top-1 ONNX (same val) | Δ pts | top-1 ONNX test "
             "| latency predicted | latency ONNX | error | fp32 twin predicted | fp32 twin ONNX | int8-mix / fp32 speed |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        d = r["top1_onnx_val"] - r["top1_supernet"]
        err = 100 * (r["latency_ms"] - r["latency_pred_ms"]) / r["latency_pred_ms"]
        lines.append(f"| {r['point']} | {r['formats']} | {r['top1_supernet']:.2f} | {r['top1_onnx_val']:.2f} | "
                     f"{d:+.2f} | {r['top1_onnx_test']:.2f} | {r['latency_pred_ms']:.3f} ms | {r['latency_ms']:.3f} ms | "
                     f"{err:+.0f} % | {r['latency_fp32_pred_ms']:.3f} ms | {r['latency_fp32_ms']:.3f} ms | "
                     f"{r['latency_fp32_ms'] / r['latency_ms']:.2f}x |")
    top1_ok = sum(abs(r["top1_onnx_val"] - r["top1_supernet"]) <= 0.2 for r in rows)
    lat_ok = sum(abs(r["latency_ms"] - r["latency_pred_ms"]) <= 0.15 * r["latency_pred_ms"] for r in rows)
    summary = (f"\nTop-1 within 0.2 points of the supernet's evaluation: {top1_ok}/{len(rows)} points (the same "
               f"{rows[0]['val_images'] if rows else 0} validation images, same calibration). Latency within 15 % of "
               f"the prediction on `{PROFILE}`: {lat_ok}/{len(rows)}. Latency: onnxruntime 1 thread, batch 1, median of "
               f"{repeats} runs, timed like the profile; the machine is shared, so timings carry noise. "
               "A speed ratio below 1x means the quantized point is slower than its fp32 twin: int8 x int8 "
               "layers run as integer kernels chained without round trips, but int4 and fp8 layers compute in "
               "float here, and their activations are rounded by elementwise ops (see \"Deployment truth\")."
               f"\n\nSource: {note}. Command: `.venv/bin/python "
               f"benchmarks/export_fidelity.py {' '.join(sys.argv[1:])}`.")
    return "\n".join(lines) + "\n" + summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", default="runs/demo")
    parser.add_argument("--points", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--note", default="", help="A sentence about the run, added to the report.")
    args = parser.parse_args()
    rows, note = measure(args.run, args.points, args.repeats)
    note = f"{note}. {args.note}".rstrip(". ") if args.note else note
    body = render(rows, note, args.repeats)
    print(body)
    if not args.no_write:
        doc = write_section("export_fidelity", "### Export fidelity (`benchmarks/export_fidelity.py`)\n\n" + body)
        print(f"written to {doc}")


if __name__ == "__main__":
    main()
