"""Search quality: every strategy side by side at equal true-evaluation budgets, on the demo supernet.

    .venv/bin/python benchmarks/search_quality.py [--budgets 100,300] [--seeds 0,1,2]
        [--methods linas,nsga2_true,random,optuna_nsga2,optuna_tpe,ilp,sensitivity_seeded] [--val-images 500]
        [--calib-images 256] [--batch-size 10] [--cache-dir runs/bench-search-cache] [--no-doc]

Needs the demo's trained supernet (`nasq run examples/demo.yaml` leaves it in runs/demo/). True
evaluations (inherited weights, recalibrated, top-1 on ``--val-images`` validation images) go
through embedded Ray and one on-disk ledger shared by every method, seed and budget, so a subnet
is evaluated once however many searches ask for it (each search still counts it in its budget).

Figures: hypervolume (pymoo HV, objectives normalised with fixed bounds - top1 0-100 %, costs
between the space's smallest and largest subnet - reference point 1.1) of each search's truly
evaluated feasible points; true evaluations each method needs to reach 95 % of the best
hypervolume any method found at that budget (mean over seeds; "-" if never); predictor-only
NSGA-II throughput (candidates scored per second); the share of wall time spent in true
evaluations on Ray.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
METHODS = "linas,nsga2_true,random,optuna_nsga2,optuna_tpe,ilp,sensitivity_seeded"
SENSITIVITY_METHODS = ("ilp", "sensitivity_seeded")  # given the demo supernet's sensitivity table


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiment", default=str(REPO / "examples" / "demo.yaml"))
    ap.add_argument("--budgets", default="100,300")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default=METHODS)
    ap.add_argument("--val-images", type=int, default=500)
    ap.add_argument("--calib-images", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=10, help="true evaluations per iteration")
    ap.add_argument("--initial", type=float, default=0.2, help="LINAS: share of the budget sampled at random first")
    ap.add_argument("--generations", type=int, default=15, help="LINAS: NSGA-II generations per iteration")
    ap.add_argument("--cache-dir", type=Path, default=REPO / "runs" / "bench-search-cache")
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--note", default="", help="a remark on the run for the doc")
    ap.add_argument("--section", default="search_quality", help="marker name of the section in docs/benchmarks.md")
    ap.add_argument("--no-doc", action="store_true")
    return ap.parse_args()


class TimedEvaluator:
    """Wraps the Ray evaluator; counts subnets and seconds spent in true evaluations."""

    def __init__(self, inner):
        self.inner, self.seconds, self.subnets = inner, 0.0, 0

    def __call__(self, specs):
        t0 = time.perf_counter()
        out = self.inner(specs)
        self.seconds += time.perf_counter() - t0
        self.subnets += len(specs)
        return out


def setup(args: argparse.Namespace):
    from nasq import data as data_mod
    from nasq.experiment import load_experiment
    from nasq.stages import train

    exp = load_experiment(args.experiment)
    ev = exp.config.evaluate.model_copy(update={"val_images": args.val_images, "calib_images": args.calib_images})
    exp.config = exp.config.model_copy(update={"evaluate": ev})
    net = train.load(exp).net
    splits = data_mod.load(exp.config.data, exp.source)
    return exp, net, splits


def search_hv_curve(task, state, step: int, top1_bounds: tuple[float, float]) -> list[tuple[int, float]]:
    """Hypervolume after every ``step`` true evaluations, in the order the search made them, with
    top1 normalised over ``top1_bounds`` (the range every method together measured)."""
    import dataclasses

    from nasq.search.loop import front_hypervolume
    from nasq.search.state import SearchState

    task = dataclasses.replace(task, bounds={**task.bounds, "top1": top1_bounds})
    curve = []
    for n in list(range(step, state.true_evals, step)) + [state.true_evals]:
        part = SearchState(state.strategy, state.seed, keys=state.keys[:n], specs=state.specs, top1=state.top1)
        curve.append((n, front_hypervolume(task, part)))
    return curve


def run_one(exp, ledger, method: str, budget: int, seed: int, args, table=None):
    from nasq.search.loop import run_search
    from nasq.stages.search import task as search_task

    search = exp.config.search.model_copy(update={
        "strategy": method, "max_true_evals": budget, "batch_size": args.batch_size, "seed": seed,
        "initial_evals": int(round(args.initial * budget)), "generations": args.generations})
    exp.config = exp.config.model_copy(update={"search": search})
    task = search_task(exp, None, [], table if method in SENSITIVITY_METHODS else None)
    t0 = time.perf_counter()
    out = run_search(task, ledger)
    return task, out, time.perf_counter() - t0


def throughput(exp, ledger) -> tuple[float, int]:
    """Predictor-only NSGA-II: candidates scored per second (population x generations / wall)."""
    from nasq.predict.fit import AccuracyPredictor
    from nasq.search.nsga import run_nsga2

    keys = list(ledger.top1)[:200]
    cost = exp.cost_model()
    pred = AccuracyPredictor(exp.recipe, exp.space, cost, 0).fit([ledger.specs[k] for k in keys], ledger.values(keys))
    cfg = exp.config.search.model_copy(update={"population": 100, "generations": 50, "seed": 0})
    scored = 0

    def score(specs):
        nonlocal scored
        scored += len(specs)
        return {"top1": pred.predict(specs), **cost.score(specs)}

    def score_genomes(genomes):  # the path LINAS searches on (benchmarks/scoring_throughput.py compares both)
        nonlocal scored
        scored += len(genomes)
        return {"top1": pred.predict_genomes(genomes), **cost.score_genomes(genomes)}

    t0 = time.perf_counter()
    run_nsga2(exp.space, score, exp.config.objectives, exp.config.constraints, cfg, score_genomes=score_genomes)
    return scored / (time.perf_counter() - t0), scored


def evals_to_reach(curve: list[tuple[int, float]], target: float) -> int | None:
    return next((n for n, hv in curve if hv >= target), None)


def main() -> None:
    args = parse_args()
    from nasq.cluster.tasks import ray_session
    from nasq.stages import evaluate
    from nasq.stages.progress import Reporter

    budgets = [int(b) for b in args.budgets.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    t_start = time.perf_counter()
    exp, net, splits = setup(args)
    table = sensitivity_table(exp, net, splits, args) if set(methods) & set(SENSITIVITY_METHODS) else None
    search = exp.config.search.model_copy(update={"cache_dir": str(args.cache_dir)})
    exp.config = exp.config.model_copy(update={"search": search})
    results: dict[tuple[str, int, int], dict] = {}
    with ray_session("local", args.num_cpus) as ray:
        evaluator = TimedEvaluator(evaluate.evaluator(ray, evaluate.payload(exp, net, splits), Reporter()))
        ledger = evaluate.open_ledger(exp, evaluator, exp.workdir)
        print(f"ledger {ledger.path}: {len(ledger)} cached evaluations", flush=True)
        for budget in budgets:
            for seed in seeds:
                for method in methods:
                    task, out, wall = run_one(exp, ledger, method, budget, seed, args, table)
                    results[(method, budget, seed)] = {"task": task, "state": out.state, "wall": wall}
                    print(f"budget {budget} seed {seed} {method:<13} front {len(out.front.points):>3} "
                          f"{wall:6.1f} s (ledger {len(ledger)}, true-eval time {evaluator.seconds:.0f} s)", flush=True)
    top1 = np.array(list(ledger.top1.values()))
    top1_bounds = (float(top1.min()), float(top1.max()))
    for r in results.values():
        r["curve"] = search_hv_curve(r["task"], r["state"], args.batch_size, top1_bounds)
        r["hv"] = r["curve"][-1][1]
    print(f"top1 normalised over {top1_bounds[0]:.2f}-{top1_bounds[1]:.2f} %", flush=True)
    rate, scored = throughput(exp, ledger)
    total = time.perf_counter() - t_start
    report(args, results, budgets, seeds, methods, rate, scored, evaluator, total, len(ledger))


def sensitivity_table(exp, net, splits, args):
    """The demo supernet's per-layer sensitivity (nasq.stages.sensitivity defaults, on the
    benchmark's validation / calibration sizes) as the ilp / sensitivity_seeded loss table."""
    import torch

    from nasq.stages import sensitivity as stage

    torch.set_num_threads(1)  # as true evaluations run; two threads on a loaded 2-core box thrash
    t0 = time.perf_counter()
    settings = stage.Settings(val_images=args.val_images, calib_images=args.calib_images)
    record = stage.compute(exp.space, net, splits, settings, "benchmark")
    args.sensitivity_s = time.perf_counter() - t0
    print(f"sensitivity table: {len(record['rows'])} rows in {args.sensitivity_s:.0f} s", flush=True)
    return stage.loss_table(record)


def sensitivity_lines(results, budgets, seeds, methods, args) -> list[str]:
    """Issue 15: HV after 25 / 50 / 100 (or the budget's) true evaluations along each search, and
    whether seeded LINAS reaches 95 % of the best HV in half the evaluations unseeded LINAS needs."""
    lines = []
    for budget in budgets:
        marks = [n for n in (25, 50, 100) if n <= budget] or [budget]
        best = max(results[(m, budget, s)]["hv"] for m in methods for s in seeds)
        lines += [f"\n**HV along the budget-{budget} searches** (mean over seeds)\n",
                  "| method | " + " | ".join(f"HV at {n}" for n in marks) + " |", "|---" * (len(marks) + 1) + "|"]
        for m in methods:
            at = [np.mean([max([hv for k, hv in results[(m, budget, s)]["curve"] if k <= n], default=0.0)
                           for s in seeds]) for n in marks]
            lines.append(f"| {m} | " + " | ".join(f"{v:.4f}" for v in at) + " |")
        if {"linas", "sensitivity_seeded"} <= set(methods):
            # evaluations to 95 % of the best HV per seed; the budget where never reached
            seeded, plain = ([evals_to_reach(results[(m, budget, s)]["curve"], 0.95 * best) or budget for s in seeds]
                             for m in ("sensitivity_seeded", "linas"))
            ok = np.mean(seeded) <= 0.5 * np.mean(plain)
            lines += ["", f"Goal (budget {budget}): seeded LINAS needs {np.mean(seeded):.0f} evaluations on average "
                      f"({', '.join(map(str, seeded))}) to reach 95 % of the best HV, unseeded LINAS "
                      f"{np.mean(plain):.0f} ({', '.join(map(str, plain))}; the budget counted where never "
                      f"reached): {'met' if ok else 'not met'} (half would be {0.5 * np.mean(plain):.0f})."]
    if getattr(args, "sensitivity_s", None):
        lines += ["", f"The sensitivity table (8 layers x 4 formats, Hessian trace + measured drops) took "
                  f"{args.sensitivity_s:.0f} s, not counted in any search's evaluations."]
    return lines


def report(args, results, budgets, seeds, methods, rate, scored, evaluator, total, n_ledger) -> None:
    lines = []
    for budget in budgets:
        best = max(results[(m, budget, s)]["hv"] for m in methods for s in seeds)
        lines += [f"\n**Budget {budget} true evaluations** (best HV any method found: {best:.4f}; "
                  f"95 % of it: {0.95 * best:.4f})\n",
                  "| method | HV mean ± sd | HV per seed | evals to 95 % of best HV (per seed) | mean evals (reached) |",
                  "|---|---|---|---|---|"]
        for m in methods:
            hv = np.array([results[(m, budget, s)]["hv"] for s in seeds])
            reach = [evals_to_reach(results[(m, budget, s)]["curve"], 0.95 * best) for s in seeds]
            got = [r for r in reach if r is not None]
            mean = f"{np.mean(got):.0f} ({len(got)}/{len(seeds)})" if got else f"- (0/{len(seeds)})"
            lines.append(f"| {m} | {hv.mean():.4f} ± {hv.std():.4f} | {', '.join(f'{v:.4f}' for v in hv)} | "
                         f"{', '.join('-' if r is None else str(r) for r in reach)} | {mean} |")
    share = evaluator.seconds / total
    lines += ["", "| figure | value |", "|---|---|",
              f"| predictor-only NSGA-II throughput (gbdt_onehot + measured latency model; pop 100 x 50 gen) | "
              f"{rate:,.0f} candidates/s ({scored} scored) |",
              f"| distinct subnets evaluated for real (shared ledger) | {n_ledger} |",
              f"| new true evaluations in this run | {evaluator.subnets} in {evaluator.seconds:.0f} s "
              f"({evaluator.seconds / max(1, evaluator.subnets):.2f} s each, 2 Ray workers) |",
              f"| share of wall time in true evaluations on Ray | {100 * share:.0f} % of {total:.0f} s |"]
    lines += sensitivity_lines(results, budgets, seeds, methods, args)
    title = "Search quality" + ("" if args.section == "search_quality" else f" ({args.section})")
    body = (f"### {title} (`benchmarks/search_quality.py`)\n\n"
            f"Demo supernet; true evaluations on {args.val_images} validation images, {args.calib_images} calibration "
            f"images; budgets {args.budgets}, seeds {args.seeds}, batches of {args.batch_size}; LINAS samples "
            f"{args.initial:.0%} of its budget at random first and runs NSGA-II ({args.generations} generations, "
            "population 64) on gbdt_onehot each iteration. Optuna samplers run in-process (ask/tell) here, "
            "not through Ray Tune. HV: pymoo; top1 normalised over the range all searches together measured, "
            "latency and size over their range on the smallest, largest and 1,000 seeded random subnets; "
            "reference point 1.1 per objective; feasible points only."
            + "\n\nCommand: `nice .venv/bin/python benchmarks/search_quality.py "
            + " ".join(a if " " not in a else repr(a) for a in sys.argv[1:]) + "`"
            + (f"\n\nNote: {args.note}" if args.note else "") + "\n" + "\n".join(lines))
    print(body)
    if not args.no_doc:
        print("written to", write_section(args.section, body))


# ---------------------------------------------------------------- mutation before/after (issue 13)
# `--mutation`: no supernet, no Ray. The NSGA-II mutation operator before (pymoo PM at 1/n_var over
# the whole genome) and after (nasq.search.operators.VaryingGeneMutation: 1/n_varying, always a
# different choice), side by side: genes changed per child, and hypervolume of nsga2_true and
# LINAS on a NAS-Bench-201-like cell (6 genes x 5 ops) padded with one-choice genes, under a
# deterministic synthetic objective; and predictor-free NSGA-II on the demo space's cost model.

def mutation_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="search_quality.py --mutation: the mutation operator before/after")
    ap.add_argument("--mutation", action="store_true")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--budget", type=int, default=60, help="true evaluations per search on the toy cell")
    ap.add_argument("--padding", type=int, default=24, help="one-choice genes added to the 6-gene cell")
    ap.add_argument("--generations", type=int, default=15)
    ap.add_argument("--note", default="")
    ap.add_argument("--no-doc", action="store_true")
    return ap.parse_args()


OPS = ("none", "skip", "conv1x1", "conv3x3", "avgpool")


def toy_cell(padding: int):
    """The cell and its objective: accuracy rewards conv3x3 early and a skip somewhere, with an
    interaction; params count the convolutions. Deterministic, no training."""
    from nasq.space import GenericSpace

    genes = {f"op_{i}": list(OPS) for i in range(6)}
    genes.update({f"fixed_{j}": ["x"] for j in range(padding)})
    space = GenericSpace.of("nb201_toy", genes)
    gain = np.array([[0.0, 0.4, 0.7, 1.0, 0.3]]) * np.linspace(1.4, 0.6, 6)[:, None]
    cost = {"none": 0.0, "skip": 0.0, "conv1x1": 0.15, "conv3x3": 1.0, "avgpool": 0.02}

    def acc(specs):
        out = []
        for s in specs:
            ops = [s[f"op_{i}"] for i in range(6)]
            score = sum(gain[i, OPS.index(o)] for i, o in enumerate(ops)) + (0.8 if "skip" in ops else 0.0)
            out.append(40.0 + 40.0 * (1 - np.exp(-score / 3.0)) - (8.0 if ops[0] == "none" else 0.0))
        return out

    def params(specs):
        return [0.05 + sum(cost[s[f"op_{i}"]] for i in range(6)) for s in specs]

    return space, acc, params


def _changed_per_child(space, kind: str, n: int = 4000) -> float:
    from pymoo.core.population import Population
    from pymoo.core.problem import Problem

    from nasq.search.operators import genes_changed, make_mutation

    upper = space.upper
    problem = Problem(n_var=len(upper), xl=np.zeros(len(upper)), xu=upper.astype(float), vtype=int)
    X = np.random.default_rng(0).integers(0, upper + 1, size=(n, len(upper)))
    out = make_mutation(upper, kind).do(problem, Population.new("X", X.copy()), random_state=np.random.default_rng(1))
    Y = space.canonical_batch(np.clip(np.rint(out.get("X").astype(float)), 0, upper).astype(np.int64))
    return float(genes_changed(space.canonical_batch(X), Y).mean())


def _toy_search(args, strategy: str, seed: int) -> float:
    from nasq.search.generic import FunctionCosts, default_fitter
    from nasq.search.ledger import Ledger
    from nasq.search.loop import front_hypervolume, run_search
    from nasq.search.strategy import SearchTask
    from nasq.specs import SearchConfig

    space, acc, params = toy_cell(args.padding)
    cost = FunctionCosts({"params_m": params})
    cfg = SearchConfig(strategy=strategy, max_true_evals=args.budget, batch_size=10, seed=seed, population=32,
                       generations=args.generations, initial_evals=max(8, args.budget // 4))
    task = SearchTask(space=space, objectives=({"name": "acc", "goal": "max"}, {"name": "params_m", "goal": "min"}),
                      constraints=(), cost=cost, config=cfg, fit_predictor=default_fitter(space, cost),
                      bounds={"acc": (30.0, 80.0), "params_m": (0.0, 6.1)})
    out = run_search(task, Ledger(acc))
    return front_hypervolume(task, out.state)


def _demo_nsga(seed: int, generations: int) -> float:
    """Predictor-free NSGA-II on the demo space: synthetic top1 from the cost model's BOPs (as in
    tests/unit/test_search.py), latency and size from the cost model."""
    from nasq.hardware import CostModel, HardwareProfile
    from nasq.search.nsga import hypervolume, run_nsga2
    from nasq.search.pareto import objective_bounds
    from nasq.space import SearchSpace
    from nasq.specs import SearchConfig

    space = SearchSpace.from_yaml(REPO / "search_spaces" / "mbconv_small.yaml")
    cm = CostModel(space, HardwareProfile.from_yaml(REPO / "hardware_profiles" / "cpu_roofline" / "profile.yaml"))
    objs = ("top1", "latency_ms", "size_mb")

    def score(specs):
        c = cm.score(specs)
        return {"top1": 90 - 1.0 / (c["bops_g"] + 0.05), **c}

    cfg = SearchConfig(population=32, generations=generations, seed=seed)
    front = run_nsga2(space, score, objs, (), cfg)
    F = np.array([[c.predicted[o] for o in objs] for c in front])
    bounds = {**objective_bounds(space, cm, objs), "top1": (60.0, 90.0)}
    return hypervolume(F, objs, bounds)


def mutation_main() -> None:
    import os

    from nasq.search import operators

    args = mutation_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    load = open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else ["?"]
    from nasq.space import SearchSpace

    cell, _, _ = toy_cell(args.padding)
    demo = SearchSpace.from_yaml(REPO / "search_spaces" / "mbconv_small.yaml")
    rows = {}
    for kind in ("pm", "varying"):
        operators.mutation_kind = kind
        t0 = time.perf_counter()
        r = {"cell_changed": _changed_per_child(cell, kind), "demo_changed": _changed_per_child(demo, kind)}
        for strategy in ("nsga2_true", "linas"):
            r[strategy] = [_toy_search(args, strategy, s) for s in seeds]
        r["demo_nsga"] = [_demo_nsga(s, args.generations) for s in seeds]
        r["wall"] = time.perf_counter() - t0
        rows[kind] = r
        print(kind, {k: (np.round(v, 4).tolist() if isinstance(v, list) else round(v, 3)) for k, v in r.items()}, flush=True)
    operators.mutation_kind = "varying"

    def cell_text(v):
        return f"{np.mean(v):.4f} ± {np.std(v):.4f}"

    lines = ["| figure | before (PM, 1/n_var) | after (varying genes, 1/n_varying) |", "|---|---|---|",
             f"| genes changed per child by mutation, cell 6 x 5 ops + {args.padding} one-choice genes | "
             f"{rows['pm']['cell_changed']:.3f} | {rows['varying']['cell_changed']:.3f} |",
             f"| genes changed per child by mutation, mbconv_small ({demo.n_genes} genes, canonical) | "
             f"{rows['pm']['demo_changed']:.3f} | {rows['varying']['demo_changed']:.3f} |"]
    for name, label in (("nsga2_true", f"nsga2_true HV on the cell, {args.budget} true evals"),
                        ("linas", f"LINAS HV on the cell, {args.budget} true evals"),
                        ("demo_nsga", f"NSGA-II HV on mbconv_small (synthetic top1, pop 32 x {args.generations} gen)")):
        lines.append(f"| {label} (mean ± sd over seeds {args.seeds}) | {cell_text(rows['pm'][name])} | "
                     f"{cell_text(rows['varying'][name])} |")
    # no wall-time row: run one after the other on a shared machine, the first pays the warm-up
    body = ("### Search quality: NSGA-II mutation before/after (`benchmarks/search_quality.py --mutation`)\n\n"
            "Deterministic synthetic objectives, no supernet: a NAS-Bench-201-like cell (6 genes x 5 ops) "
            f"padded with {args.padding} one-choice genes (a generic space; accuracy and params from the ops), "
            "and the mbconv_small space with top1 from its BOPs. HV: both objectives normalised over fixed "
            "bounds, reference 1.1. Load average at start: " + " ".join(load) + "."
            + "\n\nCommand: `nice .venv/bin/python benchmarks/search_quality.py "
            + " ".join(a if " " not in a else repr(a) for a in sys.argv[1:]) + "`"
            + (f"\n\nNote: {args.note}" if args.note else "") + "\n\n"
            + "\n".join(lines))
    print(body)
    if not args.no_doc:
        print("written to", write_section("search_mutation", body))


if __name__ == "__main__":
    mutation_main() if "--mutation" in sys.argv else main()
