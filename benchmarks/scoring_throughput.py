"""Predictor-scored NSGA-II throughput: the per-spec scoring path and the genome path side by side.

    .venv/bin/python benchmarks/scoring_throughput.py [--space mbconv_small] [--profile cpu_ort_epyc]
        [--recipe gbdt_onehot] [--population 100] [--generations 50] [--repeats 3]
        [--linas-population 64] [--linas-generations 40] [--cprofile spec|genome] [--top 25]
        [--operators nasq|pymoo] [--large-population 1000] [--hv-seeds 20] [--engines-only] [--write]

First the NSGA-II engines (``search.engine``: pymoo's ``minimize`` vs nasq's array engine,
nasq/search/engine.py), genome-scored, interleaved, best of ``--repeats``: candidates/s at
``--population`` and ``--large-population``, the loop alone (trivial objectives), one LINAS
iteration; the final front's hypervolume per seed for both; a cProfile of the array engine's run.
The tables after those compare scoring paths and generation operators inside pymoo's loop
(pinned to ``engine: pymoo``, the figures issue 17 started from).

No supernet needed: the accuracy predictor is fitted on ``--train`` seeded random subnets with a
synthetic top1 (a fixed function of their cost features plus seeded noise), which costs the search
exactly what a real fit does. The latency model is the profile's measured table + fitted
correction when it has one (cpu_ort_epyc does), else the roofline.

Figures, each measured for both paths in one run (interleaved, best of ``--repeats``: the fair
comparison on a shared machine): candidates scored per second by predictor-only NSGA-II
(population x generations, the figure benchmarks/search_quality.py reports), and one LINAS
iteration's overhead (predictor fit on the training set + NSGA-II at the LINAS population and
generations). Both paths must give the same front: the script checks it and says so.
``--cprofile PATH_KIND`` prints the top of a cProfile of that path's NSGA-II run instead (with
``--operators``: nasq's generation operators, the default, or pymoo's own, the ones used before).

Issue 17's before/after: the genome path is also run with pymoo's own duplicate elimination,
survival and tournament (``nasq.search.operators.operator_set = "pymoo"``), interleaved, and a
cProfile of one run per operator set says where a generation's time goes. ``--write`` records
the tables in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section  # noqa: E402
from _scoring_support import ENGINE_PARTS, ENGINE_VERDICT, PARTS, VERDICT, engine_verdict, setup  # noqa: E402


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="mbconv_small")
    ap.add_argument("--profile", default="cpu_ort_epyc", help="hardware profile (a measured one uses its latency model)")
    ap.add_argument("--recipe", default="gbdt_onehot")
    ap.add_argument("--train", type=int, default=200, help="subnets the accuracy predictor is fitted on")
    ap.add_argument("--population", type=int, default=100)
    ap.add_argument("--generations", type=int, default=50)
    ap.add_argument("--linas-population", type=int, default=64)
    ap.add_argument("--linas-generations", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-size-mb", type=float, default=0.25, help="the demo's size constraint")
    ap.add_argument("--cprofile", choices=("spec", "genome"), default=None)
    ap.add_argument("--top", type=int, default=25, help="cProfile rows to print")
    ap.add_argument("--operators", choices=("nasq", "pymoo"), default="nasq",
                    help="NSGA-II generation operators for --cprofile (pymoo: the ones used before)")
    ap.add_argument("--large-population", type=int, default=1000, help="the engines' large-population row")
    ap.add_argument("--hv-seeds", type=int, default=40, help="seeds of the engines' hypervolume table (>= 5)")
    ap.add_argument("--engines-only", action="store_true",
                    help="only the engine figures (pymoo vs array), not the older before/after tables")
    ap.add_argument("--write", action="store_true", help="write the figures to docs/benchmarks.md")
    return ap.parse_args()


def use_operators(kind: str) -> None:
    from nasq.search import operators

    operators.operator_set = kind


def search(space, cost_model, predictor, cfg, constraints, genome: bool, fronts: bool = False):
    """Predictor-only NSGA-II; returns (candidates scored, seconds, front keys), with ``fronts``
    the front's (top1, latency_ms, size_mb) rows too."""
    from nasq.search.nsga import run_nsga2

    objectives = ("top1", "latency_ms", "size_mb")
    scored = 0

    def score(specs):
        nonlocal scored
        scored += len(specs)
        return {"top1": predictor.predict(specs), **cost_model.score(specs)}

    def score_genomes(G):
        nonlocal scored
        scored += len(G)
        return {"top1": predictor.predict_genomes(G), **cost_model.score_genomes(G)}

    t0 = time.perf_counter()
    front = run_nsga2(space, score, objectives, constraints, cfg, score_genomes=score_genomes if genome else None)
    seconds, keys = time.perf_counter() - t0, sorted(c.spec.key() for c in front)
    if fronts:
        return scored, seconds, keys, np.array([[c.predicted[o] for o in objectives] for c in front])
    return scored, seconds, keys


def scoring_only(space, cost_model, predictor, population: int, batches: int, genome: bool) -> float:
    """Candidates/s of the scoring call alone, on ``batches`` seeded random populations."""
    rng = np.random.default_rng(1)
    pops = [space.canonical_batch(rng.integers(0, space.upper + 1, size=(population, space.n_genes)))
            for _ in range(batches)]
    t0 = time.perf_counter()
    for G in pops:
        if genome:
            predictor.predict_genomes(G), cost_model.score_genomes(G)
        else:
            specs = [space.decode(g) for g in G]
            predictor.predict(specs), cost_model.score(specs)
    return population * batches / (time.perf_counter() - t0)


def predict_only(space, predictor, population: int, batches: int) -> tuple[float, float, bool]:
    """Rows/s of the accuracy predictor's model alone on seeded populations' features: the
    estimator's own ``predict`` (before) and nasq's (``Predictor.predict``: for gbdt the tree
    arrays of nasq/predict/models.py), and whether they gave the very same values."""
    rng = np.random.default_rng(2)
    feats = [predictor.features_genomes(space.canonical_batch(rng.integers(0, space.upper + 1, size=(population, space.n_genes))))
             for _ in range(batches)]
    rates, outs = [], []
    for fn in (predictor.model._model.predict, predictor.model.predict):
        fn(feats[0])  # once before timing: nasq's gbdt builds its tree arrays on the first call after fit
        t0 = time.perf_counter()
        outs.append([fn(F) for F in feats])
        rates.append(population * batches / (time.perf_counter() - t0))
    same = all(np.array_equal(a, b) for a, b in zip(*outs, strict=True))
    return rates[0], rates[1], same


def machinery_only(space, cfg, constraints) -> float:
    """Candidates/s of pymoo's NSGA-II with trivial objectives (sums of genes): the ceiling the
    optimiser itself puts on any scoring path."""
    from nasq.search.nsga import run_nsga2

    scored = 0

    def trivial(G):
        nonlocal scored
        scored += len(G)
        g = np.asarray(G, dtype=np.float64)
        return {"top1": g[:, ::2].sum(axis=1), "latency_ms": g[:, 1::2].sum(axis=1) + 1, "size_mb": g.sum(axis=1) * 0.01}

    t0 = time.perf_counter()
    run_nsga2(space, None, ("top1", "latency_ms", "size_mb"), constraints, cfg, score_genomes=trivial)
    return scored / (time.perf_counter() - t0)


def measure(args, space, cost, fit, cfg, linas_cfg, constraints) -> str:
    best = {("nsga", False): 0.0, ("nsga", True): 0.0, ("linas", False): np.inf, ("linas", True): np.inf,
            ("score", False): 0.0, ("score", True): 0.0, ("machinery", True): 0.0,
            ("nsga_pymoo", True): 0.0, ("machinery_pymoo", True): 0.0}
    fronts: dict[bool, list[str]] = {}
    scored = 0
    for _ in range(args.repeats):
        use_operators("pymoo")  # before: pymoo's own generation operators, same machine moment
        best["machinery_pymoo", True] = max(best["machinery_pymoo", True], machinery_only(space, cfg, constraints))
        cost_model = cost()
        n, seconds, before_front = search(space, cost_model, fit(cost_model), cfg, constraints, True)
        best["nsga_pymoo", True] = max(best["nsga_pymoo", True], n / seconds)
        use_operators("nasq")
        best["machinery", True] = max(best["machinery", True], machinery_only(space, cfg, constraints))
        before, after, same_predict = predict_only(space, fit(cost()), cfg.population, cfg.generations + 1)
        best["predict_est", True] = max(best.get(("predict_est", True), 0.0), before)
        best["predict_nasq", True] = max(best.get(("predict_nasq", True), 0.0), after)
        for genome in (False, True):
            cost_model = cost()
            predictor = fit(cost_model)
            rate = scoring_only(space, cost_model, predictor, cfg.population, cfg.generations + 1, genome)
            best["score", genome] = max(best["score", genome], rate)
            cost_model = cost()
            predictor = fit(cost_model)
            scored, seconds, fronts[genome] = search(space, cost_model, predictor, cfg, constraints, genome)
            best["nsga", genome] = max(best["nsga", genome], scored / seconds)
            cost_model = cost()  # one LINAS iteration: fit the predictor, then the inner search
            t0 = time.perf_counter()
            predictor = fit(cost_model)
            search(space, cost_model, predictor, linas_cfg, constraints, genome)
            best["linas", genome] = min(best["linas", genome], time.perf_counter() - t0)
    pop, gen = cfg.population, cfg.generations
    lines = [f"space {args.space}, profile {args.profile}, recipe {args.recipe}, best of {args.repeats} "
             f"(load average before: {LOAD})", "",
             "| figure | per-spec path | genome path | ratio |", "|---|---|---|---|",
             f"| predictor-only NSGA-II, pop {pop} x {gen} gen ({scored} scored) | "
             f"{best['nsga', False]:,.0f} candidates/s | {best['nsga', True]:,.0f} candidates/s | "
             f"{best['nsga', True] / best['nsga', False]:.1f}x |",
             f"| one LINAS iteration (fit on {args.train} + NSGA-II pop {linas_cfg.population} x "
             f"{linas_cfg.generations} gen) | {best['linas', False]:.2f} s | {best['linas', True]:.2f} s | "
             f"{best['linas', False] / best['linas', True]:.1f}x |",
             f"| scoring call alone, {gen + 1} random populations of {pop} (fresh caches) | "
             f"{best['score', False]:,.0f} candidates/s | {best['score', True]:,.0f} candidates/s | "
             f"{best['score', True] / best['score', False]:.1f}x |", "",
             "| genome path, NSGA-II generation operators | pymoo's own (before) | nasq's (after) | ratio |",
             "|---|---|---|---|",
             f"| predictor-only NSGA-II, pop {pop} x {gen} gen | {best['nsga_pymoo', True]:,.0f} candidates/s | "
             f"{best['nsga', True]:,.0f} candidates/s | {best['nsga', True] / best['nsga_pymoo', True]:.1f}x |",
             f"| NSGA-II alone (trivial objectives: pymoo's machinery, no scoring) | "
             f"{best['machinery_pymoo', True]:,.0f} candidates/s | {best['machinery', True]:,.0f} candidates/s | "
             f"{best['machinery', True] / best['machinery_pymoo', True]:.1f}x |",
             f"| accuracy predictor's model alone ({args.recipe}) on {gen + 1} populations' features: the estimator's "
             f"predict (before) vs nasq's | {best['predict_est', True]:,.0f} rows/s | "
             f"{best['predict_nasq', True]:,.0f} rows/s | {best['predict_nasq', True] / best['predict_est', True]:.1f}x |"]
    same = fronts[False] == fronts[True]
    lines.append("")
    lines.append(f"Same front on both paths: {'yes' if same else 'NO'} ({len(fronts[True])} subnets); "
                 f"same front with pymoo's operators: {'yes' if before_front == fronts[True] else 'NO'}; "
                 f"same predictions from both predict paths: {'yes' if same_predict else 'NO'}.")
    text = "\n".join(lines)
    print(text)
    return text


def profile_parts(args, space, cost, fit, cfg, constraints) -> str:
    """A cProfile of one genome-path NSGA-II run per operator set, summed into PARTS."""
    seconds = {}
    for kind in ("pymoo", "nasq"):
        use_operators(kind)
        cost_model = cost()
        predictor = fit(cost_model)
        prof = cProfile.Profile()
        prof.enable()
        search(space, cost_model, predictor, cfg, constraints, True)
        prof.disable()
        stats = pstats.Stats(prof).stats  # (file, line, function) -> (cc, nc, tottime, cumtime, callers)
        for label, suffix, funcs in PARTS:
            funcs = funcs if isinstance(funcs, tuple) else (funcs,)
            seconds[label, kind] = sum(v[3] for (f, _, fn), v in stats.items() if f.endswith(suffix) and fn in funcs)
    use_operators("nasq")
    lines = [f"cProfile of one genome-path run (pop {cfg.population} x {cfg.generations} gen), cumulative seconds "
             "under the profiler (which inflates Python-call-heavy parts):", "",
             "| part | pymoo's operators (before) | nasq's operators (after) |", "|---|---|---|"]
    for label, _, _ in PARTS:
        lines.append(f"| {label} | {seconds[label, 'pymoo']:.3f} | {seconds[label, 'nasq']:.3f} |")
    text = "\n".join(lines)
    print(text)
    return text


def profile(args, space, cost, fit, cfg, constraints) -> None:
    use_operators(args.operators)
    cost_model = cost()
    predictor = fit(cost_model)
    prof = cProfile.Profile()
    prof.enable()
    scored, seconds, _ = search(space, cost_model, predictor, cfg, constraints, args.cprofile == "genome")
    prof.disable()
    print(f"{args.cprofile} path: {scored} candidates in {seconds:.2f} s under cProfile")
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(args.top)
    print(buf.getvalue())


ENGINES = ("pymoo", "array")
OBJECTIVES = ("top1", "latency_ms", "size_mb")


def _with(cfg, **update):
    return cfg.model_copy(update=update)


def engine_rates(args, space, cost, fit, cfg, linas_cfg, constraints) -> dict:
    """Best-of-repeats figures per engine, the engines interleaved within each repeat."""
    best: dict = {}
    sizes = (("small", cfg), ("large", _with(cfg, population=args.large_population)))
    for _ in range(args.repeats):
        for eng in ENGINES:
            for label, c in sizes:
                cost_model = cost()
                n, seconds, _ = search(space, cost_model, fit(cost_model), _with(c, engine=eng), constraints, True)
                best[label, eng] = max(best.get((label, eng), 0.0), n / seconds)
            best["machinery", eng] = max(best.get(("machinery", eng), 0.0),
                                         machinery_only(space, _with(cfg, engine=eng), constraints))
            cost_model = cost()
            t0 = time.perf_counter()
            search(space, cost_model, fit(cost_model), _with(linas_cfg, engine=eng), constraints, True)
            best["linas", eng] = min(best.get(("linas", eng), np.inf), time.perf_counter() - t0)
    return best


def hv_per_seed(args, space, cost, fit, cfg, constraints) -> dict:
    """Hypervolume of each engine's front per seed, on one predictor; bounds from all fronts."""
    from nasq.search.nsga import hypervolume

    cost_model = cost()
    predictor = fit(cost_model)
    fronts = {(eng, seed): search(space, cost_model, predictor, _with(cfg, engine=eng, seed=seed), constraints,
                                  True, fronts=True)[3]
              for seed in range(args.hv_seeds) for eng in ENGINES}
    every = np.vstack(list(fronts.values()))
    bounds = {o: (float(every[:, j].min()), float(every[:, j].max())) for j, o in enumerate(OBJECTIVES)}
    return {k: (hypervolume(F, OBJECTIVES, bounds), len(F)) for k, F in fronts.items()}


def engine_tables(args, space, cost, fit, cfg, linas_cfg, constraints) -> str:
    best = engine_rates(args, space, cost, fit, cfg, linas_cfg, constraints)
    hv = hv_per_seed(args, space, cost, fit, cfg, constraints)
    pop, gen, big = cfg.population, cfg.generations, args.large_population
    lines = [f"NSGA-II engines (`search.engine`), genome-scored, best of {args.repeats}, interleaved "
             f"(load average before: {LOAD}):", "",
             "| figure | pymoo engine | array engine | ratio |", "|---|---|---|---|"]
    rows = ((f"predictor-only NSGA-II, pop {pop} x {gen} gen", "small"),
            (f"predictor-only NSGA-II, pop {big} x {gen} gen", "large"),
            (f"NSGA-II alone, pop {pop} x {gen} gen (trivial objectives: the loop's own ceiling)", "machinery"))
    for label, key in rows:
        a, b = best[key, "pymoo"], best[key, "array"]
        lines.append(f"| {label} | {a:,.0f} candidates/s | {b:,.0f} candidates/s | {b / a:.1f}x |")
    a, b = best["linas", "pymoo"], best["linas", "array"]
    lines += [f"| one LINAS iteration (fit on {args.train} + NSGA-II pop {linas_cfg.population} x "
              f"{linas_cfg.generations} gen) | {a:.2f} s | {b:.2f} s | {a / b:.1f}x |", "",
              f"Hypervolume of the final front (pop {pop} x {gen} gen, size_mb <= {args.max_size_mb}, one predictor, "
              "objectives normalised by the bounds of all fronts, reference 1.1 each):", "",
              "| seed | pymoo engine | array engine | front sizes |", "|---|---|---|---|"]
    for seed in range(args.hv_seeds):
        (ha, na), (hb, nb) = hv["pymoo", seed], hv["array", seed]
        lines.append(f"| {seed} | {ha:.4f} | {hb:.4f} | {na} / {nb} |")
    means = {e: float(np.mean([hv[e, s][0] for s in range(args.hv_seeds)])) for e in ENGINES}
    sds = {e: float(np.std([hv[e, s][0] for s in range(args.hv_seeds)], ddof=1)) for e in ENGINES}
    wins = sum(hv["array", s][0] >= hv["pymoo", s][0] for s in range(args.hv_seeds))
    diff = np.array([hv["array", s][0] - hv["pymoo", s][0] for s in range(args.hv_seeds)])
    lines += [f"| mean (sd) | {means['pymoo']:.4f} ({sds['pymoo']:.4f}) | {means['array']:.4f} "
              f"({sds['array']:.4f}) | array >= pymoo on {wins}/{args.hv_seeds} seeds |", "",
              f"Array minus pymoo, paired by seed: {diff.mean():+.4f} (standard error "
              f"{diff.std(ddof=1) / np.sqrt(len(diff)):.4f})."]
    lines += ["", engine_verdict(best, means, diff, cfg, big)]
    text = "\n".join(lines)
    print(text)
    return text


def engine_profile(args, space, cost, fit, cfg, constraints) -> str:
    """A cProfile of one array-engine run, summed into ENGINE_PARTS."""
    cost_model = cost()
    predictor = fit(cost_model)
    prof = cProfile.Profile()
    prof.enable()
    search(space, cost_model, predictor, _with(cfg, engine="array"), constraints, True)
    prof.disable()
    stats = pstats.Stats(prof).stats  # (file, line, function) -> (cc, nc, tottime, cumtime, callers)

    def part(suffix, funcs, column=3):
        funcs = funcs if isinstance(funcs, tuple) else (funcs,)
        return sum(v[column] for (f, _, fn), v in stats.items() if f.endswith(suffix) and fn in funcs)

    rounds = part("nasq/search/engine.py", "select_parents", column=1) / max(cfg.generations - 1, 1)
    lines = [f"cProfile of one array-engine run (pop {cfg.population} x {cfg.generations} gen; "
             f"{rounds:.1f} mating rounds per generation: offspring equal to a member or to each other are "
             "dropped and mating repeated, as pymoo does), cumulative seconds under the profiler:", "",
             "| part | seconds |", "|---|---|"]
    lines += [f"| {label} | {part(suffix, funcs):.3f} |" for label, suffix, funcs in ENGINE_PARTS]
    text = "\n".join(lines)
    print(text)
    return text


LOAD = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "n/a"

def main() -> None:
    args = parse_args()
    space, cost, fit, cfg, linas_cfg, constraints = setup(args)
    if args.cprofile:
        profile(args, space, cost, fit, cfg, constraints)
        return
    engines = engine_tables(args, space, cost, fit, cfg, linas_cfg, constraints)
    engine_parts = engine_profile(args, space, cost, fit, cfg, constraints)
    if args.engines_only:
        return
    table = measure(args, space, cost, fit, cfg, linas_cfg, constraints)
    parts = profile_parts(args, space, cost, fit, cfg, constraints)
    if args.write:
        print("wrote", write_section("scoring_throughput", "### Predictor-scored NSGA-II throughput "
                                     "(`benchmarks/scoring_throughput.py`)\n\n" + engines + "\n\n" + engine_parts
                                     + "\n\n" + ENGINE_VERDICT + "\n\n#### Inside pymoo's loop (`search.engine: "
                                     "pymoo`): scoring paths and generation operators\n\n" + table + "\n\n" + parts
                                     + "\n\n" + VERDICT))


if __name__ == "__main__":
    main()
