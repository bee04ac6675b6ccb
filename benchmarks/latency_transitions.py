"""Does counting format transitions make the latency predictor better on mixed-precision picks?

    .venv/bin/python benchmarks/latency_transitions.py [--n-fit 100 --n-test 30 --n-front 20]

Fits the LatencyPredictor's correction twice on the same ``n_fit`` subnets
(:func:`nasq.profiling.measure.correction_specs`, as ``nasq profile measure`` does): without the
transition features (the per-class affine model as it was) and with them
(``transitions.to_<format>``: format changes between adjacent layers, by the format changed to). Scores both on ``n_test`` held-out random subnets and
on ``n_front`` "front-like" picks: mostly one quantized format with several layers in another
(what a search front holds, and where docs/benchmarks.md saw a +87 % miss). Every subnet is built
as the pipeline builds it, exported, and timed in onnxruntime with the profile's thread count, all
in one interleaved pass (a shared machine's slow spells hit every group alike). Prints a table
(median |error|, share within +-10 %, Kendall tau); writes nothing unless ``--cache``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency_quality import SubnetBuilder, build_all  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default=str(REPO / "search_spaces" / "mbconv_small.yaml"))
    ap.add_argument("--profile", default=str(REPO / "hardware_profiles" / "cpu_ort_epyc"))
    ap.add_argument("--n-fit", type=int, default=100)
    ap.add_argument("--n-test", type=int, default=30)
    ap.add_argument("--n-front", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3, help="untimed runs per subnet and round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved passes the repeats are split over")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default="", help="JSON file to store (and reuse) the timings; for iterating")
    return ap.parse_args()


def front_like(space, n: int, seed: int) -> list:
    """Mostly-quantized picks with several transitions: each subnet has a main quantized format
    (int8 two times in three) for weights and activations; about one layer in four takes another
    activation format (fp32 or another quantized one). Kept when it has at least 3 transitions."""
    from nasq.hardware.keys import subnet_keys, transitions
    from nasq.space import SubnetSpec

    rng = np.random.default_rng(seed + 7)
    menu = space.config.precision
    quantized = [f for f in menu.a_format if f != "fp32" and f in menu.w_format]
    main_choices = ["int8"] * 2 + [f for f in quantized if f != "int8"] if "int8" in quantized else quantized
    out: list = []
    for base in space.sample_unique(rng, 20 * n):
        main = main_choices[rng.integers(len(main_choices))]
        stages = []
        for stage in base.stages:
            layers = []
            for c in stage:
                a = main if rng.random() >= 0.25 else menu.a_format[rng.integers(len(menu.a_format))]
                layers.append(dataclasses.replace(c, w_format=main, a_format=a))
            stages.append(tuple(layers))
        spec = SubnetSpec(tuple(stages), base.widths, base.resolution)
        if transitions(subnet_keys(space, spec)) >= 3:
            out.append(spec)
        if len(out) == n:
            break
    return out


def scores(pred: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    from scipy.stats import kendalltau

    rel = np.abs(pred / measured - 1)
    return {"median": float(np.median(rel)), "max": float(rel.max()), "within10": float(np.mean(rel <= 0.10)),
            "tau": float(kendalltau(pred, measured).statistic)}


def measure(args, space, threads: int, groups: dict[str, list]) -> dict[str, np.ndarray]:
    from nasq.files import atomic_write_json, read_json

    wanted = {"keys": {g: [s.key() for s in ss] for g, ss in groups.items()}, "repeats": args.repeats,
              "rounds": args.rounds}
    cache = Path(args.cache) if args.cache else None
    if cache is not None and cache.is_file():
        data = read_json(cache)
        if {k: data.get(k) for k in wanted} == wanted:
            print(f"reusing measurements from {cache}")
            return {g: np.array(v) for g, v in data["ms"].items()}
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from nasq.profiling.measure import time_interleaved_ms

    builder = SubnetBuilder(space, threads, args.seed)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        flat = [x for g, ss in groups.items() for x in build_all(builder, ss, f"build {g}", progress)]
        times = time_interleaved_ms(flat, warmup=args.warmup, repeats=args.repeats, rounds=args.rounds,
                                    progress=progress, label=f"time {len(flat)} subnets x {args.rounds} rounds")
    bounds = np.cumsum([0, *(len(ss) for ss in groups.values())])
    ms = {g: times[a:b] for g, a, b in zip(groups, bounds[:-1], bounds[1:], strict=True)}
    if cache is not None:
        atomic_write_json(cache, {**wanted, "ms": {g: v.tolist() for g, v in ms.items()}})
    return ms


def main() -> None:
    args = parse_args()
    import torch

    from nasq.hardware.keys import subnet_keys, transitions
    from nasq.hardware.table import LATENCY_CSV, LatencyTable
    from nasq.predict.latency import LatencyPredictor
    from nasq.profiling.check import read_measurement
    from nasq.profiling.measure import correction_specs
    from nasq.space import SearchSpace

    torch.set_num_threads(1)  # torch only builds and exports; its threads must not compete with the timing
    started, load_before = time.perf_counter(), os.getloadavg()
    space = SearchSpace.from_yaml(args.space)
    prof_dir = Path(args.profile)
    table = LatencyTable.load(prof_dir / LATENCY_CSV)
    info, _ = read_measurement(prof_dir / "measurement.json")
    fit = correction_specs(space, args.n_fit, args.seed)
    test = space.sample_unique(np.random.default_rng(args.seed + 1), args.n_test, exclude={s.key() for s in fit})
    front = front_like(space, args.n_front, args.seed)
    groups = {"fit": fit, "held-out random": test, "front-like": front}
    ms = measure(args, space, info.threads, groups)
    models = {"per-class affine (before)": LatencyPredictor(space, table, transitions=False).fit(fit, ms["fit"]),
              "+ transition features (after)": LatencyPredictor(space, table).fit(fit, ms["fit"])}
    print(f"\n{space.name} on {prof_dir.name} ({info.device}), {args.repeats} runs in {args.rounds} rounds; "
          f"fit on {len(fit)} subnets; transitions per subnet (median): "
          + ", ".join(f"{g} {np.median([transitions(subnet_keys(space, s)) for s in ss]):.0f}"
                      for g, ss in groups.items()))
    print("\n| model | subnets | median abs error | max abs error | within 10 % | Kendall tau |")
    print("|---|---|---:|---:|---:|---:|")
    for name, model in models.items():
        for g in ("held-out random", "front-like"):
            s = scores(model.predict(groups[g]), ms[g])
            print(f"| {name} | {g} ({len(groups[g])}) | {s['median']:.1%} | {s['max']:.1%} | {s['within10']:.0%} "
                  f"| {s['tau']:.3f} |")
    after = models["+ transition features (after)"]
    coef = dict(zip(after.features_names, after.coef.tolist(), strict=True))
    print("\ntransition coefficients (ms per transition):",
          {k.split(".", 1)[1]: round(v, 4) for k, v in coef.items() if k.startswith("transitions.")})
    print(f"wall {time.perf_counter() - started:.0f} s, load average {load_before} -> {os.getloadavg()}")


if __name__ == "__main__":
    main()
