"""Post-training refinement before export, and what mixed precision buys over uniform INT8.

    .venv/bin/python benchmarks/refinement.py [--run runs/demo] [--calib 256] [--iters 80] [--val 2000]

On a finished run's supernet (default the demo run), for an int4 twin of the largest subnet (int4
weights and activations), a ternary twin (ternary weights, int8 activations), and two mixed front
points (knee and max-top1): top-1 of the fp32 twin (all layers fp32, recalibrated), before
refinement, and after each refiner (nasq.export.refine), with the seconds each took. Calibration
uses ``--calib`` of the run's seeded calibration images; AdaRound and FlexRound run ``--iters``
steps per layer (QuantEase: 4 passes); top-1 is measured on the first ``--val`` validation images.

Then the uniform baselines of nasq.stages.baselines on the same run: the largest subnet and each
front point at uniform INT8 / INT4, truly evaluated as the search evaluated, costed with the run's
measured profile; and the best front point vs uniform INT8 of the largest subnet at equal top-1.

Prints the tables and writes them to docs/benchmarks.md (section ``refinement``) unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
KINDS = ("bias_correction", "adaround", "flexround", "quantease")


def twin(spec, w: str, a: str):
    stages = tuple(tuple(dataclasses.replace(c, w_format=w, a_format=a) for c in st) for st in spec.stages)
    return dataclasses.replace(spec, stages=stages)


def refinement_table(run, args) -> tuple[str, list[str]]:
    import torch

    from nasq import data as data_mod
    from nasq.export.checks import calibrated_subnet
    from nasq.export.refine import refine_subnet
    from nasq.search import query
    from nasq.supernet import checkpoint
    from nasq.supernet.evaluate import accuracy, calibration_batches

    torch.set_num_threads(1)
    cfg, space = run.experiment_config(), run.space()
    splits = data_mod.load(cfg.data, run.name, space.config)
    net, _ = checkpoint.load(run.folder, space, require_record=False)
    ecfg = cfg.evaluate
    xv, yv = np.ascontiguousarray(splits.val_x[:args.val], np.float32), splits.val_y[:args.val]
    calib = calibration_batches(splits.train_x, args.calib, 128, ecfg.seed)
    big = space.largest()
    knee, top = query.pick(run.front, "knee"), query.pick(run.front, "max-top1")
    cases = [("largest, int4 w/a", twin(big, "int4", "int4"), big),
             ("largest, ternary w, int8 a", twin(big, "ternary", "int8"), big),
             (f"front point {knee} (knee)", run.front.points[knee].spec, run.front.points[knee].spec),
             (f"front point {top} (max-top1)", run.front.points[top].spec, run.front.points[top].spec)]
    lines = ["| subnet | fp32 twin | before | " + " | ".join(KINDS) + " |", "|---|---:|---:|" + "---:|" * len(KINDS)]
    notes = []
    for label, spec, arch in cases:
        fp32 = accuracy(calibrated_subnet(net, twin(arch, "fp32", "fp32"), splits.train_x, ecfg), xv, yv)
        model = calibrated_subnet(net, spec, splits.train_x, ecfg)
        before = accuracy(model, xv, yv)
        cells = []
        for kind in KINDS:
            m = copy.deepcopy(model)
            opts = {"iters": args.iters} if kind in ("adaround", "flexround") else {}
            t0 = time.perf_counter()
            rep = refine_subnet(m, calib, kind, seed=0, **opts)
            secs = time.perf_counter() - t0
            after = accuracy(m, xv, yv)
            cells.append(f"{after:.2f} ({secs:.0f} s)")
            print(f"{label}: {kind} {before:.2f} -> {after:.2f} in {secs:.1f} s ({rep.layers_refined} refined, "
                  f"{rep.layers_skipped} skipped, {rep.layers_kept_nearest} kept nearest)", flush=True)
            if kind == "bias_correction":
                notes.append(f"{label}: bias correction refined {rep.layers_refined}, skipped {rep.layers_skipped}")
        lines.append(f"| {label} | {fp32:.2f} | {before:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines), notes


def baselines_table(run, args) -> str:
    import yaml

    from nasq import data as data_mod
    from nasq.experiment import load_experiment
    from nasq.stages import baselines
    from nasq.supernet import checkpoint
    from nasq.supernet.evaluate import calibration_batches, evaluate_spec

    cfg, space = run.experiment_config(), run.space()
    splits = data_mod.load(cfg.data, run.name, space.config)
    net, _ = checkpoint.load(run.folder, space, require_record=False)
    ecfg = cfg.evaluate
    n_val = ecfg.val_images or len(splits.val_y)
    calib = calibration_batches(splits.train_x, ecfg.calib_images, ecfg.batch_size, ecfg.seed)

    def ledger(specs, origin):  # the search's true evaluation, in-process
        return np.array([evaluate_spec(net, s, calib, splits.val_x[:n_val], splits.val_y[:n_val]) for s in specs])

    with tempfile.TemporaryDirectory() as tmp:
        exp_file = Path(tmp) / "e.yaml"
        exp_file.write_text(yaml.safe_dump({"space": cfg.space, "hardware": list(cfg.hardware), "allow_emulated": True,
                                            "data": {"name": "digits"}}))
        exp = load_experiment(exp_file)
        rows = baselines.run(exp, ledger, run.front, Path(tmp))
    summary = baselines.summary(exp, run.front, rows)
    lat = [k for k in rows[0] if k.startswith("latency_ms@")]
    out = ["| of | format | top1 % | " + " | ".join(lat) + " | size MB |", "|---|---|---:|" + "---:|" * len(lat) + "---:|"]
    for r in rows:
        if r["of"] == "largest" or r["of"] in ("point 0", f"point {len(run.front.points) - 1}"):
            out.append(f"| {r['of']} | {r['format']} | {r['top1']:.2f} | " + " | ".join(f"{r[k]:.3f}" for k in lat)
                       + f" | {r['size_mb']:.4f} |")
    return "\n".join(out) + "\n\n" + baselines.summary_line(summary) + f" ({len(rows)} baselines evaluated)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=str(REPO / "runs" / "demo"))
    ap.add_argument("--calib", type=int, default=256)
    ap.add_argument("--iters", type=int, default=80)
    ap.add_argument("--val", type=int, default=2000)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    from nasq.stages.runs import open_run

    load = open("/proc/loadavg").read().split()[:3]
    t0 = time.perf_counter()
    with open_run(args.run) as run:
        refine_md, notes = refinement_table(run, args)
        print(refine_md, flush=True)
        base_md = baselines_table(run, args)
        print(base_md, flush=True)
    load_after = open("/proc/loadavg").read().split()[:3]
    body = (f"`benchmarks/refinement.py --calib {args.calib} --iters {args.iters} --val {args.val}` on `{args.run}`, "
            f"{time.perf_counter() - t0:.0f} s, load average {' '.join(load)} before, {' '.join(load_after)} after "
            "(2 shared cores: times are indicative).\n\n"
            "Top-1 (%) on the validation images; each refiner's time in brackets. fp32 twin: the same "
            "architecture with every layer fp32, recalibrated.\n\n" + refine_md + "\n\n"
            + "\n".join(f"- {n}" for n in notes) + "\n\nUniform baselines (largest subnet, first and last front "
            "point shown):\n\n" + base_md)
    if not args.no_write:
        print("written to", write_section("refinement", body))


if __name__ == "__main__":
    main()
