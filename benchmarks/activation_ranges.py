"""What int4 costs the smallest subnet of each family, and how much of it learned activation
ranges win back. Per family, the smallest architecture trained alone from scratch (the
supernet_quality.py recipe: ``full`` preset, 5 epochs, SGD for the conv families and AdamW for the
transformers, the same data order), then recalibrated and evaluated on Fashion-MNIST's
10,000-image test split, under four format settings side by side:

* fp32 weights and activations (the architecture's own ceiling);
* int4 weights, fp32 activations;
* int4 weights and activations, ranges from each batch's maximum (``activation_ranges: max``);
* int4 weights and activations, learned ranges (``activation_ranges: learned``, the default).

    .venv/bin/python benchmarks/activation_ranges.py [--spaces mbconv_fmnist ...] [--epochs 5]
        [--threads 1] [--section learned-ranges] [--no-write]

Needs torch, numpy, pydantic and pyyaml only. Prints the figures and writes them to
docs/benchmarks.md (section "learned-ranges").
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import supernet_quality as sq  # noqa: E402
from _report import load_average, write_section  # noqa: E402

from nasq import data as data_mod  # noqa: E402
from nasq.space import SearchSpace, SubnetSpec  # noqa: E402
from nasq.space.types import LayerChoice  # noqa: E402
from nasq.specs import DataConfig  # noqa: E402
from nasq.supernet.evaluate import calibration_batches  # noqa: E402

# (label, weight format, activation format, activation_ranges)
SETTINGS = [("fp32", "fp32", "fp32", "learned"), ("int4 weights, fp32 activations", "int4", "fp32", "learned"),
            ("int4, ranges from the batch maximum", "int4", "int4", "max"),
            ("int4, learned ranges", "int4", "int4", "learned")]


def with_formats(spec: SubnetSpec, w: str, a: str) -> SubnetSpec:
    """``spec``'s architecture with every layer in weight format ``w`` and activation format ``a``."""
    stages = tuple(tuple(LayerChoice(w, a, layer.arch) for layer in stage) for stage in spec.stages)
    return SubnetSpec(stages, spec.widths, spec.resolution)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spaces", nargs="+", default=["mbconv_fmnist", "resnet_fmnist", "vit_fmnist", "seq_fmnist"])
    ap.add_argument("--epochs", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--section", default="learned-ranges")
    ap.add_argument("--note", default="", help="a reading to write under the table")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    splits = data_mod.load(DataConfig(name="fashion_mnist", fallback="none", val_size=5000))
    held = (splits.test_x, splits.test_y)
    calib = calibration_batches(splits.train_x, 1024, 256, seed=1)
    knobs = argparse.Namespace(distill="auto", epochs=args.epochs, batch_size=128, device="cpu", adamw_lr=2e-3,
                               lr=0.05, amp="off", compile="off")
    rows, t0 = [], time.perf_counter()
    for name in args.spaces:
        space = SearchSpace.from_yaml(sq.REPO / "search_spaces" / f"{name}.yaml")
        cfg = sq.train_config(space, "full", knobs)
        tops = []
        for label, w, a, ranges in SETTINGS:
            run_cfg = cfg.model_copy(update={"activation_ranges": ranges})
            spec = with_formats(space.smallest(), w, a)
            top1, secs = sq.train_alone(space, "smallest", splits, held, run_cfg, calib, 120, spec=spec)
            tops.append((top1, secs))
            print(f"{name:<14} {label:<36} top-1 {top1:5.2f} %  ({secs:.0f} s)", flush=True)
        rows.append((name, space.smallest().key(), tops))
    load = load_average()
    head = "| space | smallest architecture | " + " | ".join(label for label, *_ in SETTINGS) + " | learned minus max (pts) |"
    body = (f"`python benchmarks/activation_ranges.py --spaces {' '.join(args.spaces)} --epochs {args.epochs:g} "
            f"--threads {args.threads}` on CPU ({args.threads} torch thread(s)), load average at the end "
            f"{' '.join(load)}, {time.perf_counter() - t0:.0f} s in all. Each family's smallest architecture trained "
            f"alone from scratch for {args.epochs:g} epochs on Fashion-MNIST's {len(splits.train_y)} training "
            "images (the `full` preset: 5 % warm-up, label smoothing 0.1; SGD lr 0.05 for the conv families, "
            "AdamW lr 0.002 for the transformers; the same initialisation and data order in every column), then "
            "batch norm and activation ranges recalibrated on 1,024 training images; top-1 on the 10,000-image "
            "test split (binomial std about 0.3 points).\n\n" + head + "\n" + "|---" * (len(SETTINGS) + 3) + "|\n")
    for name, key, tops in rows:
        body += (f"| {name} | `{key}` | " + " | ".join(f"{t:.2f} %" for t, _ in tops)
                 + f" | {tops[3][0] - tops[2][0]:+.2f} |\n")
    if args.note:
        body += "\n" + args.note + "\n"
    print(body)
    if not args.no_write:
        print(f"written to {write_section(args.section, '### Learned activation ranges (int4)' + chr(10) * 2 + body)}")


if __name__ == "__main__":
    main()
