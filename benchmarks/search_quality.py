"""Search quality: every strategy side by side at equal true-evaluation budgets, on the demo supernet.

    .venv/bin/python benchmarks/search_quality.py [--budgets 100,300] [--seeds 0,1,2]
        [--methods linas,nsga2_true,random,optuna_nsga2,optuna_tpe] [--val-images 500]
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
METHODS = "linas,nsga2_true,random,optuna_nsga2,optuna_tpe"


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


def run_one(exp, ledger, method: str, budget: int, seed: int, args):
    from nasq.search.loop import run_search
    from nasq.stages.search import task as search_task

    search = exp.config.search.model_copy(update={
        "strategy": method, "max_true_evals": budget, "batch_size": args.batch_size, "seed": seed,
        "initial_evals": int(round(args.initial * budget)), "generations": args.generations})
    exp.config = exp.config.model_copy(update={"search": search})
    task = search_task(exp, None, [])
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
                    task, out, wall = run_one(exp, ledger, method, budget, seed, args)
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


if __name__ == "__main__":
    main()
