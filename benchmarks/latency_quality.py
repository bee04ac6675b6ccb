"""How well the latency predictor of a measured profile predicts real onnxruntime latency.

    .venv/bin/python benchmarks/latency_quality.py [--n-train 100 --n-test 100 --n-ratio 100]

Samples ``n_train + n_test`` distinct subnets of the space (seeded), builds each as the pipeline
does (one Supernet, set_active, recalibrate on random data, extract), exports it to ONNX and
times it in onnxruntime (batch 1, the profile's thread count, median of ``--repeats`` runs).
The LatencyPredictor's correction is fitted on the first ``n_train`` and scored on the held-out
``n_test``, next to the raw table sum and to the analytic roofline CostModel of
``hardware_profiles/cpu_roofline`` (and of the measured profile's own derived rates).
Then the same held-out architectures are measured all-int8 and all-fp32: the int8/fp32 speed
ratio, plus per-layer-kind ratios from the table. Prints the tables; writes them to
docs/benchmarks.md (section ``latency_quality``) unless ``--no-write``.
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
from _report import write_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default=str(REPO / "search_spaces" / "mbconv_small.yaml"))
    ap.add_argument("--profile", default=str(REPO / "hardware_profiles" / "cpu_ort_epyc"))
    ap.add_argument("--roofline", default=str(REPO / "hardware_profiles" / "cpu_roofline" / "profile.yaml"))
    ap.add_argument("--n-train", type=int, default=100)
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--n-ratio", type=int, default=100, help="held-out architectures measured all-int8 and all-fp32")
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10, help="untimed runs per subnet and round")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved passes the repeats are split over")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default="", help="JSON file to store (and reuse) the subnet timings; for iterating")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    return ap.parse_args()


def with_formats(spec, fmt: str):
    from nasq.space import SubnetSpec

    return SubnetSpec(tuple(tuple(dataclasses.replace(c, w_format=fmt, a_format=fmt) for c in st) for st in spec.stages))


class SubnetBuilder:
    """Builds static subnets from one seeded supernet and loads their ONNX exports in onnxruntime."""

    def __init__(self, space, threads: int, seed: int):
        import torch

        from nasq.supernet.network import Supernet

        torch.manual_seed(seed)
        self.net = Supernet(space)
        self.gen = torch.Generator().manual_seed(seed)
        inp = space.config.input
        self.shape = (1, inp.channels, inp.resolution, inp.resolution)
        self.threads, self.seed = threads, seed

    def __call__(self, spec):
        from nasq.profiling.layer_models import static_subnet
        from nasq.profiling.measure import subnet_session

        return subnet_session(static_subnet(self.net, spec, self.gen), self.shape, self.threads, self.seed)


def build_all(builder: SubnetBuilder, specs: list, label: str, progress) -> list:
    task = progress.add_task(label, total=len(specs))
    out = []
    for spec in specs:
        out.append(builder(spec))
        progress.advance(task)
    return out


def scores(pred: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    from scipy.stats import kendalltau

    rel = np.abs(pred - measured) / measured
    return {"within10": float(np.mean(rel <= 0.10)), "rmse_ms": float(np.sqrt(np.mean((pred - measured) ** 2))),
            "mape": float(np.mean(rel)), "tau": float(kendalltau(pred, measured).statistic)}


def layer_kind(key) -> str:
    if key.op == "dwconv":
        return f"depthwise {key.kernel}x{key.kernel}"
    return "conv 1x1 expand (+ReLU6)" if key.act == "relu6" else "conv 1x1 project"


def per_kind_ratios(table, formats: tuple[str, ...]) -> list[tuple[str, list[float], int]]:
    """Median over layer shapes of t(fp32)/t(fmt) with w = a = fmt: > 1 means fmt is faster."""
    by_kind: dict[str, dict[str, list[float]]] = {}
    for key, row in table.rows.items():
        if (key.w_format, key.a_format) != ("fp32", "fp32") or key.op == "linear":
            continue
        for fmt in formats:
            other = dataclasses.replace(key, w_format=fmt, a_format=fmt)
            if other in table and table.rows[other].supported:
                by_kind.setdefault(layer_kind(key), {}).setdefault(fmt, []).append(row.median_us / table.rows[other].median_us)
    return [(kind, [float(np.median(r[f])) for f in formats], len(r[formats[0]])) for kind, r in sorted(by_kind.items())]


def markdown(ctx: dict) -> str:
    a = ctx["args"]
    lines = ["### Latency predictor vs measured onnxruntime latency (`benchmarks/latency_quality.py`)", "",
             f"Space `{ctx['space']}`, profile `{ctx['profile']}` ({ctx['device']}; its {ctx['rows']}-row layer table "
             f"and shipped correction were measured in {ctx['profile_wall_s']:.0f} s). {a.n_train} subnets fit the correction, {a.n_test} "
             f"held-out subnets are scored; each subnet exported to ONNX and timed in onnxruntime, batch 1, "
             f"{ctx['threads']} thread, median of {a.repeats} runs in {a.rounds} interleaved rounds "
             f"(each after {a.warmup} warm-ups). Held-out measured "
             f"latency ranges {ctx['test_min']:.3f}-{ctx['test_max']:.3f} ms (median {ctx['test_med']:.3f}).", "",
             "| latency model (scored on the held-out subnets unless noted) | within ±10 % | RMSE (ms) | mean abs rel. error | Kendall τ |",
             "|---|---|---|---|---|"]
    for name, s in ctx["scores"].items():
        lines.append(f"| {name} | {100 * s['within10']:.0f} % | {s['rmse_ms']:.3f} | {100 * s['mape']:.1f} % | {s['tau']:.3f} |")
    r = ctx["ratio"]
    lines += ["", f"Goal: ≥ 95 % of held-out subnets within ±10 % — {'met' if ctx['goal_met'] else 'not met'}.", "",
              f"**int8 vs fp32, whole subnets** ({r['n']} held-out architectures, every layer int8/int8 vs "
              f"fp32/fp32): int8 speed = t(fp32)/t(int8) = **{r['median']:.2f}×** median "
              f"(range {r['min']:.2f}-{r['max']:.2f}; median latency {r['fp32_ms']:.3f} ms fp32 vs "
              f"{r['int8_ms']:.3f} ms int8; the LatencyPredictor predicts {r['predicted']:.2f}×). "
              "Below 1 means int8 is slower.", "",
              "**Per layer kind, from the table** (median over shapes of t(fp32)/t(format), weights and "
              "activations in the format):", "", "| layer kind | shapes | " + " | ".join(ctx["formats"]) + " |",
              "|---|---|" + "---|" * len(ctx["formats"])]
    for kind, ratios, n in ctx["kinds"]:
        lines.append(f"| {kind} | {n} | " + " | ".join(f"{x:.2f}×" for x in ratios) + " |")
    load = ", ".join(f"{x:.1f}" for x in ctx["load"])
    reused = f"; subnet timings reused from {ctx['reused']}" if ctx["reused"] else ""
    lines += ["", ctx["why"], "", f"Benchmark wall time: {ctx['wall_s']:.0f} s{reused} (load average 1/5/15 min "
              f"before and after: {load})."]
    return "\n".join(lines)


WHY = ("How the formats run (nasq's lowering, `docs/architecture.md`): int8 x int8 convs become integer "
       "kernels (QLinearConv) that hand their output straight to the next one, batch norm folded, so an "
       "int8 chain pays one quantize at its start and one dequantize at its end; the table times each layer "
       "alone, with both, which the correction's `chains.int8` feature accounts for. Depthwise convs gain "
       "little from int8 at these sizes (batch 1, 14x14 and smaller). int4 and fp8 layers run fp32 kernels "
       "on packed weights unpacked at load, plus the rounding of their input as branch-free elementwise ops "
       "(fp8: 12, bit-exact with torch's float8 cast, at a speed independent of the data). The roofline "
       "profile `cpu_roofline` assumes int8 is ~3x faster than fp32 everywhere.")


def measure_subnets(args, space, threads: int) -> dict:
    """Sample the subnets and time them (or reuse ``--cache`` when it holds the same sample)."""
    from nasq.files import atomic_write_json, read_json
    from nasq.space import SubnetSpec

    specs = space.sample_unique(np.random.default_rng(args.seed), args.n_train + args.n_test)
    ratio_specs = specs[args.n_train:][: args.n_ratio]
    cache = Path(args.cache) if args.cache else None
    wanted = {"keys": [s.key() for s in specs], "n_ratio": len(ratio_specs), "repeats": args.repeats,
              "rounds": args.rounds}
    if cache is not None and cache.is_file():
        data = read_json(cache)
        if {k: data.get(k) for k in wanted} == wanted:
            print(f"reusing measurements from {cache}")
            return {k: np.array(v) for k, v in data["ms"].items()} | {"specs": specs, "ratio_specs": ratio_specs,
                                                                      "reused": str(cache)}
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from nasq.profiling.measure import time_interleaved_ms

    builder = SubnetBuilder(space, threads, args.seed)
    groups = {"mixed": specs, "int8": [with_formats(s, "int8") for s in ratio_specs],
              "fp32": [with_formats(s, "fp32") for s in ratio_specs]}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        sessions = {g: build_all(builder, ss, f"build {g} subnets", progress) for g, ss in groups.items()}
        flat = [x for g in groups for x in sessions[g]]
        times = time_interleaved_ms(flat, warmup=args.warmup, repeats=args.repeats, rounds=args.rounds,
                                    progress=progress, label=f"time {len(flat)} subnets x {args.rounds} rounds")
    bounds = np.cumsum([0, *(len(ss) for ss in groups.values())])
    ms = {g: times[a:b] for g, a, b in zip(groups, bounds[:-1], bounds[1:], strict=True)}
    if cache is not None:
        atomic_write_json(cache, {**wanted, "ms": {k: v.tolist() for k, v in ms.items()},
                                  "specs": [SubnetSpec.to_dict(s) for s in specs]})
    return ms | {"specs": specs, "ratio_specs": ratio_specs, "reused": ""}


def predictor_rows(name: str, predictor, test: list, y_test: np.ndarray, m: dict) -> dict[str, dict]:
    """Scores on the held-out subnets and on their uniform-format twins (all fp32, all int8)."""
    rows = {name: scores(predictor.predict(test), y_test)}
    for f in ("fp32", "int8"):
        twins = [with_formats(s, f) for s in m["ratio_specs"]]
        rows[f"{name} — on the all-{f} twins"] = scores(predictor.predict(twins), m[f])
    return rows


def evaluate(args, space, prof_dir: Path, table, m: dict) -> dict:
    """Fit on the first n_train subnets; score every latency model on the held-out rest."""
    from nasq.hardware import CostModel, HardwareProfile
    from nasq.predict.latency import (
        LATENCY_MODEL_JSON,
        LatencyPredictor,
        load_profile_predictor,
    )

    train, test = m["specs"][: args.n_train], m["specs"][args.n_train:]
    y_train, y_test = m["mixed"][: args.n_train], m["mixed"][args.n_train:]
    predictor = LatencyPredictor(space, table).fit(train, y_train)
    main_name = f"LatencyPredictor, correction fitted on the {args.n_train} training subnets"
    all_scores = predictor_rows(main_name, predictor, test, y_test, m)
    if (prof_dir / LATENCY_MODEL_JSON).is_file():
        shipped = load_profile_predictor(prof_dir / "profile.yaml", space)
        name = f"LatencyPredictor as shipped (latency_model.json: {shipped.n_fit} other subnets, 1 in 5 uniform-format)"
        all_scores |= predictor_rows(name, shipped, test, y_test, m)
    all_scores["table sum alone"] = scores(predictor.table_sum_ms(test), y_test)
    for path, label in ((Path(args.roofline), "(modelled)"), (prof_dir / "profile.yaml", "derived rates")):
        cost = CostModel(space, HardwareProfile.from_yaml(path))
        all_scores[f"roofline CostModel, `{cost.profile.name}` {label}"] = scores(cost.score(test)["latency_ms"], y_test)
    twins = {f: [with_formats(s, f) for s in m["ratio_specs"]] for f in ("fp32", "int8")}
    pred_ratio = predictor.predict(twins["fp32"]) / predictor.predict(twins["int8"])
    speed = m["fp32"] / m["int8"]
    print("fitted correction:", {"intercept": round(predictor.intercept, 4),
                                 **dict(zip(predictor.features_names, np.round(predictor.coef, 4).tolist(), strict=True))})
    return {"scores": all_scores, "goal_met": all_scores[main_name]["within10"] >= 0.95,
            "test_min": float(y_test.min()), "test_max": float(y_test.max()), "test_med": float(np.median(y_test)),
            "ratio": {"n": len(speed), "median": float(np.median(speed)), "min": float(speed.min()),
                      "max": float(speed.max()), "predicted": float(np.median(pred_ratio)),
                      "fp32_ms": float(np.median(m["fp32"])), "int8_ms": float(np.median(m["int8"]))}}


def main() -> None:
    args = parse_args()
    import torch

    from nasq.hardware.table import (
        LATENCY_CSV,
        MEASUREMENT_JSON,
        LatencyTable,
        load_measurement_info,
    )
    from nasq.space import SearchSpace

    # torch only builds and exports here; its OpenMP threads must not compete with the timed runs.
    torch.set_num_threads(1)
    started, load_before = time.perf_counter(), os.getloadavg()
    space = SearchSpace.from_yaml(args.space)
    prof_dir = Path(args.profile)
    table = LatencyTable.load(prof_dir / LATENCY_CSV)
    info = load_measurement_info(prof_dir / MEASUREMENT_JSON)
    measurements = measure_subnets(args, space, info.threads)
    formats = tuple(f for f in ("int8", "int4", "fp8_e4m3") if f in space.all_formats())
    ctx = {"args": args, "space": space.name, "profile": prof_dir.name, "device": info.device, "rows": len(table),
           "profile_wall_s": info.wall_s, "threads": info.threads, "formats": formats,
           "kinds": per_kind_ratios(table, formats), "why": WHY, "reused": measurements["reused"],
           **evaluate(args, space, prof_dir, table, measurements),
           "wall_s": time.perf_counter() - started, "load": (*load_before, *os.getloadavg())}
    text = markdown(ctx)
    print(text)
    if not args.no_write:
        print("written to", write_section("latency_quality", text))


if __name__ == "__main__":
    main()
