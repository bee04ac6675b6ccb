"""How well each accuracy-predictor recipe ranks subnets it never saw, against training-set size.

    .venv/bin/python benchmarks/predictor_quality.py [--n-eval 400] [--holdout 200]
        [--sizes 25,50,100,200] [--val-images 2000] [--supernet PATH/supernet.safetensors]
        [--workdir runs/bench-predictor-quality] [--cache PATH] [--recipes a,b]
        [--reference test] [--experiment FILE] [--section NAME] [--no-doc]

Trains the experiment's supernet exactly as `nasq run` does (``--experiment``, default
examples/demo.yaml; or loads ``--supernet``),
evaluates ``--n-eval`` unique random subnets of its space for real (inherited weights,
recalibrated, top-1 on the validation images), holds out ``--holdout`` of them and fits every
recipe in ``predictors/`` on the first 25/50/100/200 of the rest. Kendall tau, Spearman, RMSE and
top-10 % precision are measured on the held-out subnets; ``--reference test`` also scores them
against the held-out subnets' top-1 on the whole test split (a low-noise reference). Evaluations are cached as CSV (key, top1)
with the settings and the supernet's hash in a header line, so a rerun skips straight to fitting.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SECTION = "predictor_quality"  # the default section: the demo's predictors


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiment", default=str(REPO / "examples" / "demo.yaml"))
    ap.add_argument("--n-eval", type=int, default=400, help="unique random subnets evaluated for real")
    ap.add_argument("--holdout", type=int, default=200, help="of those, held out for scoring")
    ap.add_argument("--sizes", default="25,50,100,200", help="training-set sizes, comma-separated")
    ap.add_argument("--val-images", type=int, default=None, help="validation images per evaluation "
                    "(default: the experiment's evaluate.val_images)")
    ap.add_argument("--supernet", type=Path, default=None, help="a trained supernet.safetensors to reuse")
    ap.add_argument("--workdir", type=Path, default=REPO / "runs" / "bench-predictor-quality")
    ap.add_argument("--cache", type=Path, default=None, help="evaluation cache (default: WORKDIR/evaluations.csv)")
    ap.add_argument("--recipes", default="", help="recipe names (default: every predictors/*.yaml)")
    ap.add_argument("--retest", type=int, default=60, help="re-evaluate this many held-out subnets on the "
                    "next, disjoint validation images to measure the noise of a measurement (0: skip)")
    ap.add_argument("--reference", choices=["none", "test"], default="none",
                    help="test: also evaluate the held-out subnets on the whole test split (10,000 images on "
                    "Fashion-MNIST, same calibration) and score every recipe against that low-noise reference")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the evaluations")
    ap.add_argument("--seed", type=int, default=0, help="subnet sampling and predictor seed")
    ap.add_argument("--note", default="", help="a remark on the run (machine load, partial settings) for the doc")
    ap.add_argument("--section", default=SECTION, help="docs/benchmarks.md section to write")
    ap.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    return ap.parse_args()


# ------------------------------------------------------------------ evaluation cache
class EvalCache:
    """``key,top1`` rows after one ``# k=v ...`` header naming what the numbers depend on. A cache
    whose settings differ from this run's is ignored rather than mixed in."""

    def __init__(self, path: Path, settings: dict[str, str]):
        self.path, self.settings = path, settings
        self.top1: dict[str, float] = {}
        if path.is_file():
            lines = path.read_text().splitlines()
            if lines and _parse_header(lines[0]) == settings:
                self.top1 = {k: float(v) for k, v in (ln.rsplit(",", 1) for ln in lines[2:] if ln)}
            else:
                print(f"cache {path} was made with other settings; starting afresh")
        if not self.top1:
            path.parent.mkdir(parents=True, exist_ok=True)
            header = "# " + " ".join(f"{k}={v}" for k, v in sorted(settings.items()))
            path.write_text(header + "\nkey,top1\n")

    def add(self, keys: list[str], values: list[float]) -> None:
        # appended as we go, so an interrupted run resumes where it stopped
        with self.path.open("a") as fh:
            for k, v in zip(keys, values, strict=True):
                self.top1[k] = float(v)
                fh.write(f"{k},{float(v):.4f}\n")


def _parse_header(line: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in line.lstrip("# ").split() if "=" in part)


# ------------------------------------------------------------------ supernet
def supernet_file(exp: Any, args: argparse.Namespace) -> Path:
    """The supernet to evaluate with: ``--supernet``, one already trained in the workdir, or a fresh
    one trained exactly as ``nasq run`` trains the experiment's (the train stage also writes supernet.json)."""
    from nasq import data as data_mod
    from nasq.errors import LineageError
    from nasq.files import read_json
    from nasq.stages import train

    path = args.supernet or args.workdir / "supernet.safetensors"
    if path.is_file():
        meta = path.with_name("supernet.json")
        if meta.is_file() and read_json(meta)["space_hash"] != exp.space.hash:
            raise LineageError(f"{path}: trained on another space than '{exp.space.name}'")
        return path
    if args.supernet:
        sys.exit(f"--supernet {args.supernet}: file not found")
    print(f"training the {exp.config.name} supernet into {args.workdir} ...", flush=True)
    args.workdir.mkdir(parents=True, exist_ok=True)
    splits = data_mod.load(exp.config.data, exp.source)
    train.run(exp, splits, args.workdir)
    return path


def make_evaluate(exp: Any, path: Path, threads: int, val_offset: int = 0, on_test: bool = False) -> Any:
    """The pipeline's own in-process evaluator over the supernet at ``path``; ``val_offset`` skips
    that many validation images (a disjoint slice, to measure the measurement's own noise);
    ``on_test`` scores on the whole test split instead (the low-noise reference)."""
    import torch

    from nasq import data as data_mod
    from nasq.stages import evaluate
    from nasq.stages.progress import Reporter
    from nasq.supernet import checkpoint

    torch.set_num_threads(threads)
    net, _ = checkpoint.load(path.parent, exp.space, require_record=False)
    splits = data_mod.load(exp.config.data, exp.source)
    if val_offset:
        if len(splits.val_y) < val_offset + (exp.config.evaluate.val_images or len(splits.val_y)):
            sys.exit(f"--retest needs {val_offset} + {exp.config.evaluate.val_images} validation images, "
                     f"the split has {len(splits.val_y)}")
        splits = dataclasses.replace(splits, val_x=splits.val_x[val_offset:], val_y=splits.val_y[val_offset:])
    if on_test:
        splits = dataclasses.replace(splits, val_x=splits.test_x, val_y=splits.test_y)
        ecfg = exp.config.evaluate.model_copy(update={"val_images": None})
        exp = dataclasses.replace(exp, config=exp.config.model_copy(update={"evaluate": ecfg}))
    return evaluate.evaluator(None, evaluate.payload(exp, net, splits), Reporter())


def evaluate_all(exp: Any, specs: list, args: argparse.Namespace, cache_path: Path,
                 val_offset: int = 0, on_test: bool = False) -> tuple[np.ndarray, dict]:
    from nasq.files import sha256_file

    path = supernet_file(exp, args)
    ecfg = exp.config.evaluate
    settings = {"space_hash": exp.space.hash[:16], "supernet_sha256": sha256_file(path)[:16],
                "calib_images": str(ecfg.calib_images), "val_images": str(ecfg.val_images),
                "eval_seed": str(ecfg.seed), **({"val_offset": str(val_offset)} if val_offset else {}),
                **({"split": "test"} if on_test else {})}
    cache = EvalCache(cache_path, settings)
    todo = [s for s in specs if s.key() not in cache.top1]
    if todo:
        evaluate, t0 = make_evaluate(exp, path, args.threads, val_offset, on_test), time.perf_counter()
        for lo in range(0, len(todo), 10):
            part = todo[lo : lo + 10]
            cache.add([s.key() for s in part], evaluate(part))
            rate = (time.perf_counter() - t0) / (lo + len(part))
            print(f"  evaluated {lo + len(part)}/{len(todo)} ({rate:.2f} s per subnet)", flush=True)
        record_timing(cache_path, len(todo), time.perf_counter() - t0)
    return np.array([cache.top1[s.key()] for s in specs], dtype=np.float64), timing_info(path, cache_path)


def _timing_path(cache_path: Path) -> Path:
    return cache_path.with_name(cache_path.stem + ".timing.json")


def record_timing(cache_path: Path, evaluated: int, seconds: float) -> None:
    """Evaluation wall time, summed over the runs that filled the cache, for the report."""
    import json

    timing = _timing_path(cache_path)
    old = json.loads(timing.read_text()) if timing.is_file() else {"evaluated": 0, "seconds": 0.0}
    timing.write_text(json.dumps({"evaluated": old["evaluated"] + evaluated, "seconds": old["seconds"] + seconds}))


def timing_info(supernet: Path, cache_path: Path) -> dict[str, Any]:
    import json

    meta, timing = supernet.with_name("supernet.json"), _timing_path(cache_path)
    train_s = json.loads(meta.read_text())["result"]["seconds"] if meta.is_file() else None
    evals = json.loads(timing.read_text()) if timing.is_file() else {"evaluated": 0, "seconds": 0.0}
    return {"train_s": train_s, "evaluated": evals["evaluated"], "eval_s": evals["seconds"]}


# ------------------------------------------------------------------ fitting and scoring
def score_recipes(exp: Any, recipes: list, specs: list, top1: np.ndarray, holdout: int,
                  sizes: list[int], seed: int, reference: np.ndarray | None = None) -> list[dict[str, Any]]:
    from nasq.predict.fit import AccuracyPredictor, rank_quality, top_fraction_precision

    cm = exp.cost_model()
    hold_specs, hold_y = specs[:holdout], top1[:holdout]
    pool_specs, pool_y = specs[holdout:], top1[holdout:]
    rows = []
    for recipe in recipes:
        for n in sizes:
            t0 = time.perf_counter()
            pred = AccuracyPredictor(recipe, exp.space, cm, seed).fit(pool_specs[:n], pool_y[:n])
            guess = pred.predict(hold_specs)
            fit_s = time.perf_counter() - t0
            tau, rho, rmse = rank_quality(hold_y, guess)
            rows.append({"recipe": recipe.config.name, "kind": recipe.config.kind, "n": n, "tau": tau,
                         "rho": rho, "rmse": rmse, "top10": top_fraction_precision(hold_y, guess), "fit_s": fit_s,
                         "picked": getattr(pred.model, "chosen", "")})
            if reference is not None:
                rows[-1]["tau_ref"], rows[-1]["rho_ref"], _ = rank_quality(reference, guess)
            print(f"  {recipe.config.name:<18} n={n:<4} tau {tau:.3f}  rho {rho:.3f}  rmse {rmse:.2f}  "
                  f"top10 {rows[-1]['top10']:.2f}  ({fit_s:.1f} s)"
                  + (f"  tau vs reference {rows[-1]['tau_ref']:.3f}" if reference is not None else ""), flush=True)
    return rows


def pivot(rows: list[dict[str, Any]], sizes: list[int], field: str, fmt: str) -> str:
    recipes = list(dict.fromkeys(r["recipe"] for r in rows))
    cell = {(r["recipe"], r["n"]): r[field] for r in rows}
    head = "| recipe | " + " | ".join(f"n={n}" for n in sizes) + " |\n|---|" + "---:|" * len(sizes)
    body = [f"| {name} | " + " | ".join(format(cell[name, n], fmt) for n in sizes) + " |" for name in recipes]
    return head + "\n" + "\n".join(body)


def full_table(rows: list[dict[str, Any]]) -> str:
    head = ("| recipe | kind | n train | Kendall τ | Spearman | RMSE (pts) | top-10 % precision | fit (s) |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|")
    body = [f"| {r['recipe']} | {r['kind']}{' → ' + r['picked'] if r['picked'] else ''} | {r['n']} | {r['tau']:.3f} "
            f"| {r['rho']:.3f} | {r['rmse']:.2f} | {r['top10']:.2f} | {r['fit_s']:.1f} |" for r in rows]
    return head + "\n" + "\n".join(body)


def reference_text(rows: list[dict[str, Any]], sizes: list[int], top1: np.ndarray,
                   reference: np.ndarray | None) -> str:
    """Every recipe scored against the held-out subnets' top-1 on the whole test split."""
    if reference is None:
        return ""
    from nasq.predict.fit import rank_quality

    hold = top1[: len(reference)]
    tau, rho, _ = rank_quality(reference, hold)
    biggest = max(sizes)
    best = max((r for r in rows if r["n"] == biggest), key=lambda r: r["tau_ref"])
    verdict = "met" if best["tau_ref"] >= 0.85 else "not met"
    return (f"**Against a low-noise reference** (issue 14): the {len(reference)} held-out subnets evaluated "
            f"again on the whole test split (top-1 {reference.min():.2f} - {reference.max():.2f} %; "
            "same calibration images). The measurement the predictors are trained on agrees with that reference at "
            f"Kendall τ {tau:.3f} (Spearman {rho:.3f}). Goal τ ≥ 0.85 at n={biggest} against the reference: "
            f"**{verdict}** (best: {best['recipe']}, τ = {best['tau_ref']:.3f}).\n\n"
            "Kendall τ against the test-split reference:\n\n" + pivot(rows, sizes, "tau_ref", ".3f") + "\n\n")


def report(rows: list[dict[str, Any]], sizes: list[int], args: argparse.Namespace, top1: np.ndarray,
           info: dict[str, Any], exp: Any, noise: dict[str, float] | None,
           reference: np.ndarray | None = None) -> str:
    ecfg = exp.config.evaluate
    hold = top1[: args.holdout]
    biggest = max(sizes)
    best = max((r for r in rows if r["n"] == biggest), key=lambda r: r["tau"])
    verdict = "met" if best["tau"] >= 0.9 else "not met"
    train = exp.config.train
    setup = (f"{args.n_eval} unique random subnets of `{exp.space.name}` (seed {args.seed}) evaluated for real on the "
             f"{exp.config.name} supernet (recipe {train.recipe}, epochs {train.epochs:g}; {ecfg.calib_images} "
             f"calibration, {ecfg.val_images or 'all'} validation images each); "
             f"the first {args.holdout} held out (top-1 {hold.min():.2f} - {hold.max():.2f} %, "
             f"std {hold.std():.2f} pts), each recipe fitted on the first n of the other {args.n_eval - args.holdout}.")
    timing = (f"Supernet training loop {info['train_s']:.0f} s; " if info.get("train_s") else "") + (
        f"{info['evaluated']} evaluations took {info['eval_s']:.0f} s of wall time "
        f"({info['eval_s'] / max(1, info['evaluated']):.2f} s each, in-process, {args.threads} torch threads)."
        if info["evaluated"] else "evaluation time not recorded.")
    run = "" if args.section == SECTION else f", {args.section}"
    return (f"### Accuracy predictors (`benchmarks/predictor_quality.py`{run})\n\n" + setup + " " + timing + "\n\n"
            f"Goal Kendall τ ≥ 0.9 at n={biggest}: **{verdict}** (best: {best['recipe']}, τ = {best['tau']:.3f}).\n\n"
            + noise_text(noise, ecfg.val_images) + reference_text(rows, sizes, top1, reference) +
            "Kendall τ on the held-out subnets:\n\n" + pivot(rows, sizes, "tau", ".3f") + "\n\n"
            "RMSE (top-1 points) on the held-out subnets:\n\n" + pivot(rows, sizes, "rmse", ".2f") + "\n\n"
            "Every figure (`auto → kind`: the kind its cross-validation picked):\n\n" + full_table(rows)
            + (f"\n\n{args.note}" if args.note else ""))


def measurement_noise(exp: Any, specs: list, top1: np.ndarray, args: argparse.Namespace,
                      cache_path: Path) -> dict[str, float] | None:
    """Test-retest: the same subnets measured on two disjoint validation slices. With measured =
    truth + independent noise, the retest correlation r is var(truth) / var(measured), so even a
    predictor that knew the truth would correlate sqrt(r) with one measurement - Kendall tau
    (2/pi) arcsin(sqrt(r)) for Gaussian scores. That is the ceiling the table should be read against."""
    from nasq.predict.fit import rank_quality

    n = min(args.retest, args.holdout)
    if n < 10:
        return None
    val = exp.config.evaluate.val_images
    again, _ = evaluate_all(exp, specs[:n], args, cache_path.with_name(cache_path.stem + ".retest.csv"), val)
    tau, rho, rmse = rank_quality(top1[:n], again)
    r = float(np.corrcoef(top1[:n], again)[0, 1])
    ceiling = 2 / np.pi * np.arcsin(np.sqrt(max(r, 0.0)))
    return {"n": n, "tau": tau, "rho": rho, "rmse": rmse, "r": r, "ceiling_tau": float(ceiling),
            "shift": float(np.mean(again - top1[:n]))}


def noise_text(noise: dict[str, float] | None, val_images: int) -> str:
    if noise is None:
        return ""
    return (f"Measurement noise: the first {noise['n']} held-out subnets measured again on the next "
            f"{val_images} validation images (disjoint; same calibration images) agree with Kendall τ "
            f"{noise['tau']:.3f}, Spearman {noise['rho']:.3f}, Pearson r {noise['r']:.3f}, RMSE "
            f"{noise['rmse']:.2f} pts (of which a mean shift of {noise['shift']:+.2f} pts between the slices). With independent noise a predictor that knew each subnet's true "
            f"accuracy would reach only about τ = (2/π)·arcsin(√r) = **{noise['ceiling_tau']:.2f}** against "
            "one measurement - and less, since calibration noise is not counted here. "
            + ("The τ ≥ 0.9 goal is above what this measurement can show; " if noise["ceiling_tau"] < 0.9 else "")
            + "read the table against that ceiling.\n\n")


def load_recipes(names: str) -> list:
    from nasq.predict.fit import Recipe

    paths = sorted((REPO / "predictors").glob("*.yaml"))
    if names:
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        paths = [REPO / "predictors" / f"{n}.yaml" for n in wanted]
    return [Recipe.from_yaml(p, f"predictors/{p.name}") for p in paths]


def main() -> None:
    from nasq.experiment import load_experiment

    args = parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    if args.n_eval - args.holdout < max(sizes):
        sys.exit(f"--n-eval {args.n_eval} leaves {args.n_eval - args.holdout} subnets to train on, "
                 f"fewer than the largest size {max(sizes)}")
    exp = load_experiment(args.experiment)
    if args.val_images:
        ecfg = exp.config.evaluate.model_copy(update={"val_images": args.val_images})
        exp = dataclasses.replace(exp, config=exp.config.model_copy(update={"evaluate": ecfg}))
    specs = exp.space.sample_unique(np.random.default_rng(args.seed), args.n_eval)
    cache = args.cache or args.workdir / "evaluations.csv"
    top1, info = evaluate_all(exp, specs, args, cache)
    noise = measurement_noise(exp, specs, top1, args, cache) if args.retest else None
    reference = None
    if args.reference == "test":
        reference, _ = evaluate_all(exp, specs[: args.holdout], args,
                                    cache.with_name(cache.stem + ".test.csv"), on_test=True)
    rows = score_recipes(exp, load_recipes(args.recipes), specs, top1, args.holdout, sizes, args.seed, reference)
    body = report(rows, sizes, args, top1, info, exp, noise, reference)
    print(body)
    if not args.no_doc:
        print("written to", write_section(args.section, body))


if __name__ == "__main__":
    main()
