"""Where the noise of a true evaluation comes from: validation sample size, calibration set, pairing.

    .venv/bin/python benchmarks/eval_noise.py [--run runs/demo] [--subnets 14] [--calib-sizes 256,512,2048]
        [--calib-seeds 1,2,3] [--calib-val 1000] [--cache PATH] [--no-doc]

On a finished run's trained supernet (loaded as `nasq export` loads it), ``--subnets`` seeded random
subnets of its space plus the largest and smallest are recalibrated (batch norm + activation
ranges, as every true evaluation does) on each calibration set - each size in ``--calib-sizes``
drawn with each seed in ``--calib-seeds`` from the training split exactly as the pipeline draws it
- and their per-image correctness is recorded once per (subnet, calibration set): on the validation
split, and for the reference set (first seed, largest size) also on the 10,000-image test split.
Every figure below is derived from those boolean matrices:

* validation sample size: Kendall tau between the same subnets' top-1 on disjoint validation
  subsets of 500 ... 5,000 images (5,000: the validation split against the first 5,000 test
  images), each size against the 10,000-image test reference, and the per-subnet std of top-1;
* calibration set: per-subnet top-1 std and tau between calibration seeds, on the same images;
* paired vs unpaired: std of the top-1 difference of two subnets measured on identical images
  against disjoint ones (empirical over 500-image blocks, and the paired standard error from the
  per-image discordance);
* the signal: the std of top-1 across subnets;
* the metric: for the reference set the same forward pass also keeps each image's log-probability
  of its true class and its margin (that minus the best other class), so smooth scores - the mean
  probability of the true class, its log, top-1 smoothed by a sigmoid of the margin - can be set
  against top-1: how well each repeats on disjoint validation halves, and how well each ranks the
  test split's top-1 (what a user deploys for);
* images needed: the retest tau of two independent draws of m images (with replacement) from all
  the images scored with the reference calibration (validation + test), for m beyond what
  Fashion-MNIST holds - how many images a retest tau of 0.9 would take at this signal.

The correctness matrices are cached (npz, keyed by the supernet's hash and the settings), so a
rerun only re-derives the figures.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VAL_SIZES = (500, 1000, 2000, 5000, 10000)  # those up to the validation split's size
PAIR_BLOCK = 500  # images per block of the paired/unpaired comparison


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=str(REPO / "runs" / "demo"))
    ap.add_argument("--subnets", type=int, default=14, help="seeded random subnets (plus largest and smallest)")
    ap.add_argument("--calib-sizes", default="256,512,2048")
    ap.add_argument("--calib-seeds", default="1,2,3", help="the first is the reference (the pipeline's seed)")
    ap.add_argument("--calib-val", type=int, default=1000, help="validation images scored for every calibration "
                    "set (the reference one: the whole split)")
    ap.add_argument("--seed", type=int, default=0, help="subnet sampling seed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=None, help="default: RUN/eval_noise.npz")
    ap.add_argument("--note", default="", help="a remark for the doc")
    ap.add_argument("--section", default="eval_noise", help="the docs/benchmarks.md section to write; "
                    "another name than eval_noise (e.g. for a run with a larger validation split) gets the "
                    "figures and --note, without the reading written for the demo's settings")
    ap.add_argument("--no-doc", action="store_true")
    return ap.parse_args()


# ------------------------------------------------------------------ measuring
def measure(args: argparse.Namespace) -> dict:
    """Correctness matrices ``val[(size, seed)]`` (subnets x calib-val images), ``test`` (subnets x
    10,000, reference calibration) and timings, from the cache when its settings match."""
    import torch

    from nasq import data as data_mod
    from nasq.files import sha256_file
    from nasq.stages.runs import open_run
    from nasq.supernet import checkpoint
    from nasq.supernet.evaluate import calibration_batches, correct_mask

    torch.set_num_threads(args.threads)
    sizes, seeds = _ints(args.calib_sizes), _ints(args.calib_seeds)
    with open_run(args.run) as run:
        cfg, space, folder = run.experiment_config(), run.space(), run.folder
    settings = f"{sha256_file(folder / checkpoint.WEIGHTS)[:16]} n={args.subnets} seed={args.seed} " \
               f"sizes={sizes} seeds={seeds} val={args.calib_val} scores=1"
    cache = args.cache or Path(args.run) / "eval_noise.npz"
    if cache.is_file():
        got = dict(np.load(cache))
        if str(got.pop("settings")) == settings:
            print(f"correctness matrices from {cache}")
            return _unpack(got, sizes, seeds)
    splits = data_mod.load(cfg.data, run.name)
    net, _ = checkpoint.load(folder, space, require_record=False)
    rng = np.random.default_rng(args.seed)
    fixed = [space.largest(), space.smallest()]
    specs = fixed + space.sample_unique(rng, args.subnets, {s.key() for s in fixed})
    bs = cfg.evaluate.batch_size
    calib = {(c, s): calibration_batches(splits.train_x, c, bs, s) for c in sizes for s in seeds}
    ref = (max(sizes), seeds[0])
    # the reference calibration is scored on the whole split; the others on its first --calib-val
    n_val = {k: len(splits.val_y) if k == ref else min(args.calib_val, len(splits.val_y)) for k in calib}
    val = {k: np.zeros((len(specs), n_val[k]), bool) for k in calib}
    test = np.zeros((len(specs), len(splits.test_y)), bool)
    soft = {f"{split}_{kind}": np.zeros((len(specs), n), np.float32) for split, n in
            (("val", n_val[ref]), ("test", len(splits.test_y))) for kind in ("ll", "margin")}
    t_cal = {c: 0.0 for c in sizes}
    t_fwd, n_fwd, t0 = 0.0, 0, time.perf_counter()
    for i, spec in enumerate(specs):
        net.set_active(spec)
        for (c, s), batches in calib.items():
            t = time.perf_counter()
            net.calibrate(batches)
            t_cal[c] += time.perf_counter() - t
            t = time.perf_counter()
            m = n_val[(c, s)]
            if (c, s) == ref:
                val[ref][i], soft["val_ll"][i], soft["val_margin"][i] = image_scores(
                    net, splits.val_x[:m], splits.val_y[:m], bs)
                test[i], soft["test_ll"][i], soft["test_margin"][i] = image_scores(
                    net, splits.test_x, splits.test_y, bs)
                n_fwd += len(splits.test_y)
            else:
                val[(c, s)][i] = correct_mask(net, splits.val_x[:m], splits.val_y[:m], bs)
            t_fwd += time.perf_counter() - t
            n_fwd += m
        print(f"  subnet {i + 1}/{len(specs)}: {(time.perf_counter() - t0) / (i + 1):.1f} s per subnet", flush=True)
    timing = np.array([t_fwd / n_fwd * 1000.0] + [t_cal[c] / (len(specs) * len(seeds)) for c in sizes])
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cache, settings=np.array(settings), test=test, timing=timing, **soft,
                        **{f"val_{c}_{s}": m for (c, s), m in val.items()})
    return {"val": val, "test": test, "timing": timing, "sizes": sizes, "seeds": seeds, "soft": soft}


def image_scores(model, x: np.ndarray, y: np.ndarray, batch_size: int) -> tuple[np.ndarray, ...]:
    """One forward pass: per image, correct (bool, as ``correct_mask``), the log-probability of the
    true class and the margin (that minus the largest other class's log-probability)."""
    import torch

    model.eval()
    correct, ll, margin = np.empty(len(y), bool), np.empty(len(y), np.float32), np.empty(len(y), np.float32)
    with torch.no_grad():
        for lo in range(0, len(y), batch_size):
            logits = model(torch.from_numpy(x[lo: lo + batch_size]))
            logp = torch.log_softmax(logits.float(), 1)
            target = torch.from_numpy(y[lo: lo + batch_size]).long()
            true = logp.gather(1, target[:, None])[:, 0]
            others = logp.scatter(1, target[:, None], float("-inf")).amax(1)
            hi = lo + len(target)
            correct[lo:hi] = (logits.argmax(1) == target).numpy()
            ll[lo:hi], margin[lo:hi] = true.numpy(), (true - others).numpy()
    return correct, ll, margin


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _unpack(got: dict, sizes: list[int], seeds: list[int]) -> dict:
    val = {(c, s): got[f"val_{c}_{s}"] for c in sizes for s in seeds}
    soft = {k: got[k] for k in ("val_ll", "val_margin", "test_ll", "test_margin")}
    return {"val": val, "test": got["test"], "timing": got["timing"], "sizes": sizes, "seeds": seeds, "soft": soft}


# ------------------------------------------------------------------ deriving
def reference(meas: dict) -> np.ndarray:
    """The reference calibration's validation matrix (largest size, first seed): the one scored on
    the whole split, with the test split and the per-image scores beside it."""
    return meas["val"][(max(meas["sizes"]), meas["seeds"][0])]


def top1(mask: np.ndarray, idx: np.ndarray | slice = slice(None)) -> np.ndarray:
    return 100.0 * mask[:, idx].mean(axis=1)


def tau(a: np.ndarray, b: np.ndarray) -> float:
    return float(kendalltau(a, b).statistic)


def rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(values))))


def sample_size_rows(ref: np.ndarray, test: np.ndarray) -> list[dict]:
    """Per validation-subset size: retest tau (disjoint subsets), tau vs the test reference,
    per-subnet std of top-1 across subsets (empirical) and the binomial expectation."""
    n, test_top1 = ref.shape[1], top1(test)
    rows = []
    for m in (m for m in VAL_SIZES if m <= n):
        if m <= n // 2:
            blocks = [np.arange(k * m, (k + 1) * m) for k in range(n // m)]
            scores = [top1(ref, b) for b in blocks]
            retest = [tau(scores[k], scores[k + 1]) for k in range(0, len(scores) - 1, 2)]
            where = f"{len(retest)} disjoint val pair(s)"
            spread = rms(np.std(np.stack(scores), axis=0, ddof=1))
        else:  # no two disjoint subsets of the val split: the val split against test images
            m = min(m, n, test.shape[1])
            scores = [top1(ref, np.arange(m))]
            retest = [tau(scores[0], top1(test, np.arange(m)))]
            where = f"val[:{m}] vs test[:{m}]"
            spread = float("nan")
        p = top1(ref) / 100.0
        rows.append({"m": m, "retest": float(np.mean(retest)), "where": where,
                     "vs_test": float(np.mean([tau(s, test_top1) for s in scores])), "std_emp": spread,
                     "std_binom": rms(100.0 * np.sqrt(p * (1 - p) / m))})
    return rows


def calibration_rows(meas: dict) -> list[dict]:
    """Per calibration size: per-subnet std of top-1 across seeds (same images), mean pairwise tau
    between seeds, and the mean tau of each seed against the test reference."""
    rows, test_top1 = [], top1(meas["test"])
    for c in meas["sizes"]:
        n = min(m.shape[1] for m in meas["val"].values())  # the images every calibration set was scored on
        scores = np.stack([top1(meas["val"][(c, s)][:, :n]) for s in meas["seeds"]])
        pairs = list(itertools.combinations(range(len(scores)), 2))
        rows.append({"c": c, "std": rms(np.std(scores, axis=0, ddof=1)),
                     "tau": float(np.mean([tau(scores[a], scores[b]) for a, b in pairs])),
                     "vs_test": float(np.mean([tau(s, test_top1) for s in scores])),
                     "shift": float(np.mean(scores) - np.mean(top1(reference(meas)[:, :n])))})
    return rows


def pairing_rows(ref: np.ndarray) -> list[dict]:
    """Std of the top-1 difference of every pair of subnets: on identical 500-image blocks
    (paired) vs on neighbouring disjoint blocks (unpaired), and analytically at 2,000 and 5,000
    images from the per-image discordance (paired) and the two binomial variances (unpaired)."""
    k = ref.shape[1] // PAIR_BLOCK
    blocks = np.stack([top1(ref, np.arange(b * PAIR_BLOCK, (b + 1) * PAIR_BLOCK)) for b in range(k)])  # (k, subnets)
    pairs = list(itertools.combinations(range(ref.shape[0]), 2))
    paired = [np.std(blocks[:, i] - blocks[:, j], ddof=1) for i, j in pairs]
    unpaired = [np.std(blocks[:, i] - np.roll(blocks[:, j], 1), ddof=1) for i, j in pairs]
    rows = [{"m": PAIR_BLOCK, "how": f"empirical over {k} blocks", "paired": rms(np.array(paired)),
             "unpaired": rms(np.array(unpaired))}]
    p = ref.mean(axis=1)
    for m in (2000, ref.shape[1]):
        se_p, se_u = [], []
        for i, j in pairs:
            b = np.mean(ref[i] & ~ref[j])
            c = np.mean(~ref[i] & ref[j])
            se_p.append(100.0 * np.sqrt((b + c - (b - c) ** 2) / m))
            se_u.append(100.0 * np.sqrt((p[i] * (1 - p[i]) + p[j] * (1 - p[j])) / m))
        rows.append({"m": m, "how": "from per-image discordance", "paired": rms(np.array(se_p)),
                     "unpaired": rms(np.array(se_u))})
    return rows


BOOT_SIZES = (2500, 5000, 10000, 20000, 40000, 80000)
BOOT_PAIRS = 20


def bootstrap_rows(meas: dict, seed: int = 0) -> list[dict]:
    """Retest tau of two independent m-image draws (with replacement, the same images for every
    subnet within a draw: paired, as a search measures) from the pooled reference images; mean and
    std over ``BOOT_PAIRS`` pairs, seeded."""
    pool = np.concatenate([reference(meas), meas["test"]], axis=1)
    rng = np.random.default_rng(seed)
    rows = []
    for m in BOOT_SIZES:
        taus = [tau(pool[:, rng.integers(0, pool.shape[1], m)].mean(1), pool[:, rng.integers(0, pool.shape[1], m)].mean(1))
                for _ in range(BOOT_PAIRS)]
        rows.append({"m": m, "tau": float(np.mean(taus)), "std": float(np.std(taus, ddof=1)), "pool": pool.shape[1]})
    return rows


def needed_images(boot: list[dict], n_test: int) -> str:
    """The sentence under the table: between which two sizes a retest tau of 0.9 is reached."""
    i = next((i for i, r in enumerate(boot) if r["tau"] >= 0.9), None)
    if i is None:
        where = f"more than {boot[-1]['m']} images"
    elif i == 0:
        where = f"{boot[0]['m']} images or fewer"
    else:
        where = f"between {boot[i - 1]['m']} and {boot[i]['m']} images"
    enough = i is not None and boot[i]["m"] <= n_test
    return (f"A retest tau of 0.9 takes {where} per evaluation at this signal, "
            f"{'within' if enough else 'beyond'} the {n_test}-image test split. Draws larger than the pool "
            "resample its images, whose means carry the pool's own noise as signal, so the largest sizes "
            "are an optimistic extrapolation.")


SMOOTHING = (0.1, 0.3, 1.0)  # sigmoid temperatures (log-probability units) of the smoothed top-1


def metric_rows(meas: dict) -> list[dict]:
    """Per per-image score: retest tau between the two halves of the validation split, tau of the
    whole split's mean against the test split's top-1, and against the same score on the test split."""
    from scipy.special import expit

    soft, test_top1 = meas["soft"], top1(meas["test"])
    ref = reference(meas)
    scores = {"top-1": (ref.astype(np.float32), meas["test"].astype(np.float32))}
    for t in SMOOTHING:
        scores[f"top-1 smoothed, sigmoid(margin / {t:g})"] = (expit(soft["val_margin"] / t), expit(soft["test_margin"] / t))
    scores["probability of the true class"] = (np.exp(soft["val_ll"]), np.exp(soft["test_ll"]))
    scores["log-probability of the true class"] = (soft["val_ll"], soft["test_ll"])
    half = ref.shape[1] // 2
    return [{"metric": name, "retest": tau(v[:, :half].mean(1), v[:, half:].mean(1)),
             "vs_test_top1": tau(v.mean(1), test_top1), "vs_test_same": tau(v.mean(1), t.mean(1))}
            for name, (v, t) in scores.items()]


def metric_reading(rows: list[dict]) -> str:
    by = {r["metric"]: r for r in rows}
    t1, p = by["top-1"], by["probability of the true class"]
    best = max(rows, key=lambda r: r["vs_test_top1"])
    verdict = ("so a smooth score would rank what is deployed no better, and the search keeps top-1"
               if best["metric"] == "top-1" or best["vs_test_top1"] - t1["vs_test_top1"] < 0.05 else
               f"and {best['metric']} ranks the test split's top-1 best ({best['vs_test_top1']:.2f})")
    return (f"Smooth scores repeat far better than top-1 (retest tau {p['retest']:.2f} for the probability of the "
            f"true class, {t1['retest']:.2f} for top-1) but rank the test split's top-1 "
            f"{'worse' if p['vs_test_top1'] < t1['vs_test_top1'] else 'no worse'} ({p['vs_test_top1']:.2f} against "
            f"{t1['vs_test_top1']:.2f}): they measure confidence as well as correctness, and the subnets differ in "
            f"both. The sigmoid-smoothed top-1 lies between the two; its best temperature reaches "
            f"{max(r['vs_test_top1'] for r in rows if 'smoothed' in r['metric']):.2f} against the test top-1, "
            f"{verdict} (one tau over these subnets is uncertain by about ±0.05).")


# ------------------------------------------------------------------ report
def render(meas: dict, args: argparse.Namespace, load: str, seconds: float) -> tuple[str, dict]:
    sizes, seeds = meas["sizes"], meas["seeds"]
    ref = reference(meas)
    size_rows, cal_rows, pair_rows = sample_size_rows(ref, meas["test"]), calibration_rows(meas), pairing_rows(ref)
    signal_val, signal_test = float(np.std(top1(ref), ddof=1)), float(np.std(top1(meas["test"]), ddof=1))
    n_sub = ref.shape[0]
    out = [f"{n_sub} subnets of the run's space (largest, smallest, {n_sub - 2} seeded random); reference "
           f"calibration: {max(sizes)} images, seed {seeds[0]}; validation split {ref.shape[1]} images, test "
           f"{meas['test'].shape[1]}. **Signal**: std of top-1 across subnets {signal_val:.2f} pt on the "
           f"validation split, {signal_test:.2f} pt on the test split.", "",
           "Validation sample size (reference calibration):", "",
           "| images | retest tau | between | tau vs test 10k | top-1 std per subnet (measured) | binomial std |",
           "|---:|---:|---|---:|---:|---:|"]
    for r in size_rows:
        emp = "-" if np.isnan(r["std_emp"]) else f"{r['std_emp']:.2f} pt"
        out.append(f"| {r['m']} | {r['retest']:.2f} | {r['where']} | {r['vs_test']:.2f} | {emp} | {r['std_binom']:.2f} pt |")
    n_cal = min(m.shape[1] for m in meas["val"].values())
    out += ["", f"Calibration set (the same first {n_cal} validation images, seeds {', '.join(map(str, seeds))}):", "",
            "| calibration images | top-1 std per subnet across seeds | tau between seeds | tau vs test 10k "
            f"| mean top-1 shift vs {max(sizes)} |", "|---:|---:|---:|---:|---:|"]
    for r in cal_rows:
        out.append(f"| {r['c']} | {r['std']:.2f} pt | {r['tau']:.2f} | {r['vs_test']:.2f} | {r['shift']:+.2f} pt |")
    out += ["", "Paired vs unpaired (std of the top-1 difference of two subnets, RMS over all pairs):", "",
            "| images | how | paired (identical images) | unpaired (disjoint images) |", "|---:|---|---:|---:|"]
    for r in pair_rows:
        out.append(f"| {r['m']} | {r['how']} | {r['paired']:.2f} pt | {r['unpaired']:.2f} pt |")
    met_rows = metric_rows(meas)
    out += ["", f"Metric (reference calibration; the validation split's two halves of {ref.shape[1] // 2} images, "
            f"the test split's {meas['test'].shape[1]}; every score from the same forward pass):", "",
            "| per-image score | retest tau (val halves) | tau vs test top-1 | tau vs the same score on test |",
            "|---|---:|---:|---:|"]
    for r in met_rows:
        out.append(f"| {r['metric']} | {r['retest']:.2f} | {r['vs_test_top1']:.2f} | {r['vs_test_same']:.2f} |")
    out += ["", metric_reading(met_rows)]
    boot = bootstrap_rows(meas, args.seed)
    out += ["", f"Images needed (retest tau of two independent draws of m images, with replacement, from the "
            f"{boot[0]['pool']} images scored with the reference calibration; mean ± std over {BOOT_PAIRS} pairs):", "",
            "| m images | " + " | ".join(str(r["m"]) for r in boot) + " |", "|---|" + "---:|" * len(boot),
            "| retest tau | " + " | ".join(f"{r['tau']:.2f} ± {r['std']:.2f}" for r in boot) + " |"]
    out += ["", needed_images(boot, meas["test"].shape[1])]
    fwd_ms, cal_s = meas["timing"][0], dict(zip(sizes, meas["timing"][1:], strict=True))
    out += ["", "Evaluation time per subnet (calibration + validation forward, this run's mean): " + ", ".join(
        f"calibrate {c}: {cal_s[c]:.2f} s" for c in sizes) + f"; forward {fwd_ms:.2f} s per 1,000 images "
        f"({fwd_ms * 2:.2f} s per 2,000, {fwd_ms * 5:.2f} s per 5,000)."]
    figures = {"size": size_rows, "calib": cal_rows, "pair": pair_rows, "signal": signal_val, "metric": met_rows,
               "boot": boot}
    if args.section == "eval_noise":
        out += ["", reading(figures, fwd_ms, cal_s, ref.shape[1])]
    argv = sys.argv[1:]
    if "--note" in argv:  # the note is printed once, below, not inside the command
        del argv[argv.index("--note"): argv.index("--note") + 2]
    out += ["", f"Load average at the end of this run: {load}. Wall time {seconds:.0f} s. Command: `.venv/bin/python "
            f"benchmarks/eval_noise.py {' '.join(argv)}`." + (f" {args.note}" if args.note else "")]
    return "\n".join(out), figures


def reading(fig: dict, fwd_s_per_1000: float, cal_s: dict[int, float], n_val: int) -> str:
    """Which source dominates, from the figures, and the settings chosen on them."""
    size = {r["m"]: r for r in fig["size"]}
    cal = {r["c"]: r for r in fig["calib"]}
    pair = {r["m"]: r for r in fig["pair"]}
    c_old = 512 if 512 in cal else min(cal)
    v_old, v_new, c_sd = size[2000]["std_binom"], size[max(size)]["std_binom"], cal[c_old]["std"]
    share = v_old ** 2 / (v_old ** 2 + c_sd ** 2)
    cost = {m: cal_s[c_old] + m / 1000 * fwd_s_per_1000 for m in (2000, n_val)}
    big = max(cal)
    cal_txt = ", ".join(f"{c}: {r['std']:.2f} pt (tau {r['tau']:.2f})" for c, r in cal.items())
    lead = "The validation sample dominates" if share > 0.5 else "The calibration set dominates"
    return (f"**Reading.** {lead}. At the demo's former setting (2,000 validation "
            f"images, {c_old} calibration images) a subnet's top-1 carries a sampling std of {v_old:.2f} pt "
            f"against {c_sd:.2f} pt from drawing another calibration set - {100 * share:.0f} % of the noise "
            f"variance - while the signal (std across subnets) is {fig['signal']:.2f} pt; retest tau at 2,000 "
            f"images is {size[2000]['retest']:.2f} and {size[2000]['vs_test']:.2f} against the 10,000-image test "
            f"split. The whole {n_val}-image split brings the sampling std to {v_new:.2f} pt and tau against the "
            f"test split to {size[max(size)]['vs_test']:.2f}. Calibration sets by size (per-subnet std across "
            f"seeds, tau between seeds): {cal_txt}. Pairing already works "
            f"for us: every subnet of a search is measured on the same images with the same seeded calibration "
            f"set (`EvalPayload.build`, `calibration_images`), and the std of a difference between two subnets is "
            f"{pair[PAIR_BLOCK]['paired']:.2f} pt paired against {pair[PAIR_BLOCK]['unpaired']:.2f} pt unpaired "
            f"on {PAIR_BLOCK} images ({pair[n_val]['paired']:.2f} vs {pair[n_val]['unpaired']:.2f} pt on "
            f"{n_val}). So the demo now evaluates on the whole validation split (`evaluate.val_images: null`, "
            f"the `EvaluateConfig` default already) and keeps {c_old} calibration images; at this run's speed an "
            f"evaluation costs {cost[n_val]:.1f} s instead of {cost[2000]:.1f} s ({cost[n_val] / cost[2000]:.1f}x). "
            f"More calibration images buy little: {big} images cost {cal_s[big] / cal_s[c_old]:.1f}x the calibration "
            f"time of {c_old} for a std of {cal[big]['std']:.2f} against {cal[c_old]['std']:.2f} pt, so the "
            f"`EvaluateConfig` default drops from 2,048 to 512. Front intervals (`nasq/search/uncertainty.py`) "
            "are Wilson on the images counted, widened in quadrature by the calibration std measured here "
            "(measured on fewer images, it includes image-level flips and errs wide).")


def main() -> None:
    args = parse_args()
    t0 = time.perf_counter()
    meas = measure(args)
    load = Path("/proc/loadavg").read_text().split()[:3]
    body, _ = render(meas, args, " ".join(load), time.perf_counter() - t0)
    print(body)
    if not args.no_doc:
        title = "### Evaluation noise (`benchmarks/eval_noise.py`" + (
            f", run {Path(args.run).name})" if args.section != "eval_noise" else ")")
        doc = write_section(args.section, title + "\n\n" + body)
        print(f"written to {doc}")


if __name__ == "__main__":
    main()
