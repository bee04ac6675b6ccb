"""Supernet training throughput: images/s of sandwich training with fake quantization, and the
ratio to the same training with every format fp32 (no quantizer does any work).

    .venv/bin/python benchmarks/train_throughput.py [--device auto|cpu|cuda] [--steps 30]
        [--spaces mbconv_fmnist resnet_fmnist vit_fmnist seq_fmnist] [--batch-size 256]
    .venv/bin/python benchmarks/train_throughput.py --formats all [--space mbconv_small]
        [--steps 6] [--warmup 2] [--batch-size 64] [--repeats 2]

``--formats all`` (or a list of names) trains one space with a uniform menu of each registered
format instead (weights and activations; weight-only formats such as ternary on weights only, fp32
activations), interleaved with its all-fp32 twin so load changes hit both sides alike; the best of
``--repeats`` runs per side is kept. It also times ``fake_quant`` forward + backward alone on a
128x64x14x14 activation and a 64x64x3x3 per-channel weight. Writes "Training throughput per format".

Same architectures sampled in both runs (same seed); only the precision menu differs. On a GPU
the trainer uses bf16 autocast and torch.compile (its defaults there); the first steps (warm-up,
compilation) are not timed. Needs torch, numpy, pydantic and pyyaml only. Prints the figures and
writes them to docs/benchmarks.md ("Training throughput").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _report import write_section  # noqa: E402

from nasq.files import atomic_write_text  # noqa: E402
from nasq.formats import FORMATS  # noqa: E402
from nasq.space import SearchSpace  # noqa: E402
from nasq.specs import TrainConfig  # noqa: E402
from nasq.supernet.network import Supernet  # noqa: E402
from nasq.supernet.train import train_supernet  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def fp32_twin(space: SearchSpace) -> SearchSpace:
    return uniform_twin(space, "fp32")


def uniform_twin(space: SearchSpace, fmt: str) -> SearchSpace:
    """``space`` with the single format ``fmt`` on weights, and on activations unless ``fmt`` is
    weight-only (then activations stay fp32)."""
    data = space.config.model_dump(mode="json")
    act = "fp32" if getattr(FORMATS.get(fmt), "weight_only", False) else fmt
    data["precision"] = {"w_format": [fmt], "a_format": [act]}
    data["name"] += f"_{fmt}"
    return SearchSpace.from_dict(data)


CLOCK = time.perf_counter  # --clock cpu: time.process_time (CPU seconds of this process)


AMP, COMPILE = "auto", "auto"  # --amp, --compile: TrainConfig's (auto: bf16 autocast and torch.compile on a GPU)
RANGES = "learned"  # --activation-ranges: TrainConfig's (int2-int7 activations: learned or max ranges)


def images_per_s(space: SearchSpace, device: str, steps: int, warmup: int, batch: int) -> float:
    n = batch * (steps + warmup)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, size=n).astype(np.int64)
    cfg = TrainConfig(epochs=1.0, batch_size=batch, device=device, seed=0, amp=AMP, compile=COMPILE,
                      activation_ranges=RANGES)
    torch.manual_seed(0)
    net = Supernet(space)
    marks: list[float] = []
    train_supernet(net, space, x, y, cfg, progress=lambda s, total, loss: marks.append(CLOCK()))
    if torch.cuda.is_available() and device != "cpu":
        torch.cuda.synchronize()
    timed = marks[warmup - 1:]
    return batch * (len(timed) - 1) / (timed[-1] - timed[0])


def interleaved(space: SearchSpace, device: str, args: argparse.Namespace) -> tuple[float, float]:
    """Images/s of ``space`` with fake quantization and of its all-fp32 twin: one untimed warm-up
    step of each (one-time costs), then ``args.repeats`` alternating runs, best per side, so load
    changes and the process's first-run costs weigh on both sides alike."""
    twin = fp32_twin(space)
    for s in (space, twin):
        images_per_s(s, device, 1, 1, args.batch_size)
    q_runs, f_runs = [], []
    for _ in range(args.repeats):
        q_runs.append(images_per_s(space, device, args.steps, args.warmup, args.batch_size))
        f_runs.append(images_per_s(twin, device, args.steps, args.warmup, args.batch_size))
    return max(q_runs), max(f_runs)


def fake_quant_ms(fmt_name: str, x: torch.Tensor, per_channel: bool, reps: int) -> float:
    """Best-of-``reps`` milliseconds of ``fake_quant`` forward + backward (a sum's gradient)."""
    from nasq.supernet.layers import per_channel_amax

    fmt = FORMATS.get(fmt_name)
    best = float("inf")
    for _ in range(reps + 1):  # the first call warms caches and the allocator
        xg = x.clone().requires_grad_()
        _sync(x.device)
        t = CLOCK()
        fmt.fake_quant(xg, per_channel_amax(xg) if per_channel else None).sum().backward()
        _sync(x.device)
        best = min(best, CLOCK() - t)
    return best * 1e3


def per_format(args: argparse.Namespace, device: str, where: str) -> None:
    names = FORMATS.names() if args.formats == ["all"] else args.formats
    names = [n for n in names if n != "fp32"]
    space = SearchSpace.from_yaml(REPO / "search_spaces" / f"{args.space}.yaml")
    gen = torch.Generator().manual_seed(0)
    act = torch.randn(128, 64, 14, 14, generator=gen).to(device)
    wt = torch.randn(64, 64, 3, 3, generator=gen).to(device)
    loads, rows = [_load()], []
    for name in names:
        q, f = interleaved(uniform_twin(space, name), device, args)
        ref_a, ref_w = fake_quant_ms("fp32", act, False, 5), fake_quant_ms("fp32", wt, True, 5)
        ms_a, ms_w = fake_quant_ms(name, act, False, 5), fake_quant_ms(name, wt, True, 5)
        rows.append((name, q, f, q / f, ms_a, ref_a, ms_w, ref_w))
        loads.append(_load())
        print(f"{name:<12} {q:7.0f} / {f:7.0f} img/s = {q / f:.2f}   fake_quant act {ms_a:6.2f} ms "
              f"(fp32 {ref_a:.2f})  weight {ms_w:.3f} ms (fp32 {ref_w:.3f})   load {loads[-1]}", flush=True)
    if args.save:  # for a later run's --before (e.g. this command on the commit before a change)
        atomic_write_text(args.save, json.dumps({"label": args.label, "ratio": {r[0]: r[3] for r in rows},
                                                 "act_ms": {r[0]: r[4] for r in rows}}, indent=1))
    before = json.loads(Path(args.before).read_text()) if args.before else None
    gpu = device == "cuda"
    goal = 0.85 if gpu else 0.7
    clock = ("images per CPU-second of the benchmark process (`--clock cpu`: on a shared machine wall "
             "time measures the other jobs)" if args.clock == "cpu" else "images per wall-clock second")
    body = (f"`python benchmarks/train_throughput.py --formats {' '.join(args.formats)} --space {args.space} "
            f"--steps {args.steps} --warmup {args.warmup} --batch-size {args.batch_size} --repeats {args.repeats} "
            f"--clock {args.clock}{f' --threads {args.threads}' if args.threads else ''}"
            + "".join(f" --{k} {getattr(args, k)}" for k in ("amp", "compile") if getattr(args, k) != "auto")
            + (f" --activation-ranges {args.activation_ranges}" if args.activation_ranges != "learned" else "") + "` "
            f"on **{where}** (torch {torch.__version__}); 1-minute load average {min(loads)}..{max(loads)} "
            "(the machine was shared). Each format alone as a uniform menu (weights and activations; "
            "weight-only formats on weights, fp32 activations), trained interleaved with the all-fp32 twin, "
            "best of the repeats per side. fake_quant: forward + backward of one call, best of 5, on a "
            "128x64x14x14 activation (per-tensor range) and a 64x64x3x3 weight (per-channel range); "
            f"fp32 is the identity. Throughput is {clock}. Goal: ratio >= {goal} on {'a GPU' if gpu else 'CPU'}.\n\n"
            + _format_table(rows, before, goal))
    if not args.no_write:
        section = args.section or "train-throughput-formats" + ("-gpu" if gpu else "")
        title = f"Training throughput per format{' (GPU)' if gpu else ''}" + (f": {args.section}" if args.section else "")
        doc = write_section(section, f"## {title}\n\n" + body)
        print(f"written to {doc}")


def _format_table(rows: list[tuple], before: dict | None, goal: float = 0.7) -> str:
    """The per-format table (with the --before run's ratio and act time beside), and the shortfall."""
    text = ((f"Columns marked *before* come from the same command run on {before['label']} "
             "(`--before`).\n\n" if before else "")
            + f"| format | fake-quant (img/s) | all fp32 (img/s) | ratio | >= {goal} | "
            + ("ratio before | fake_quant act before (ms) | " if before else "")
            + "fake_quant act (ms) | fp32 act (ms) | fake_quant weight (ms) | fp32 weight (ms) |\n"
            + "|---" * (11 if before else 9) + "|\n")
    nan = float("nan")
    for n, q, f, r, a, ra, w, rw in rows:
        old = f"{before['ratio'].get(n, nan):.2f} | {before['act_ms'].get(n, nan):.2f} | " if before else ""
        text += (f"| {n} | {q:.0f} | {f:.0f} | {r:.2f} | {'yes' if r >= goal else 'no'} | {old}{a:.2f} | {ra:.2f} | "
                 f"{w:.3f} | {rw:.3f} |\n")
    short = [row[0] for row in rows if row[3] < goal]
    return (text + f"\nBelow {goal}: " + (", ".join(short) if short else "none") + ". "
            + (SHORTFALL_NOTE if goal == 0.7 else "") + "\n")


SHORTFALL_NOTE = (
    "On CPU every format but bf16/fp16 (torch's vectorised casts) quantizes float32 tensors with a "
    "fused C kernel (nasq/formats/blockquant.c, built with the system compiler on first use, loaded "
    "by ctypes; nasq/formats/native.py): MX, NVFP4 and the per-group integers walk each block once, "
    "reading a channels-last activation through a tiled transpose instead of two torch copies and "
    "about ten elementwise passes; symmetric and asymmetric integers and the scaled FP8/FP6/FP4 "
    "formats take one pass per row of one scale (per tensor or per channel) over memory in any "
    "order; a tensor's |x| maximum is one pass without a temporary. Each performs the torch path's "
    "fp32 operations in the same order (no fast-math, no FMA contraction), so values are bit-equal "
    "(tests/unit/test_native.py, ties and signed zeros included). `*_mse` formats search 19 clipping "
    "ratios: in training on a strided sample of at most 8,192 elements drawn in memory order, in the "
    "kernel with errors summed in double (the torch path sums fp32, so a near tie may pick a "
    "neighbouring ratio); evaluation and export search every element with torch. int8 activations "
    "of integer-kernel layers (int8_activation_quant in nasq/supernet/layers.py) keep their own path, "
    "torch's fused fake-quantize bit for bit. `NASQ_NATIVE=0` (the *before* columns here when so labelled) "
    "takes the torch path everywhere; GPUs, ONNX export and torch.compile always do. torch.compile "
    "(inductor) of the torch path was measured slower on CPU (5.1 ms against 1.6 ms eager per "
    "32x64x14x14 channels-last MX activation, after 15 s of compilation per shape class). Ratios "
    "move by about 0.05 between runs on a shared machine.")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _load() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "n/a"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--spaces", nargs="+", default=["mbconv_fmnist", "resnet_fmnist", "vit_fmnist", "seq_fmnist"])
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--formats", nargs="+", help="'all' or format names: one uniform menu per format")
    ap.add_argument("--space", default="mbconv_small", help="the space --formats trains")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved runs per side")
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                    help="cpu: CPU seconds of this process (steadier on a shared machine; use --threads 1)")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    ap.add_argument("--save", help="--formats: write the ratios to this JSON file")
    ap.add_argument("--before", help="--formats: a --save file to show beside (e.g. from the previous commit)")
    ap.add_argument("--label", default="this tree", help="--save: what the saved run measured")
    ap.add_argument("--amp", default="auto", choices=["auto", "off", "bf16"],
                    help="bf16 autocast (TrainConfig.amp; auto: on a GPU only)")
    ap.add_argument("--compile", default="auto", choices=["auto", "off", "on"],
                    help="torch.compile (TrainConfig.compile; auto: on a GPU only)")
    ap.add_argument("--activation-ranges", default="learned", choices=["learned", "max"],
                    help="int2-int7 activations: learned ranges (LSQ, the default) or each batch's max")
    ap.add_argument("--section", default=None, help="--formats: the docs/benchmarks.md section to write "
                    "(default train-throughput-formats, -gpu on a GPU)")
    args = ap.parse_args()
    global CLOCK, AMP, COMPILE, RANGES
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    AMP, COMPILE, RANGES = args.amp, args.compile, args.activation_ranges
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    where = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} torch threads"
    if args.formats:
        per_format(args, device, where)
        return
    rows, loads = [], [_load()]
    for name in args.spaces:
        space = SearchSpace.from_yaml(REPO / "search_spaces" / f"{name}.yaml")
        q, f = interleaved(space, device, args)
        rows.append((name, q, f, q / f))
        loads.append(_load())
        print(f"{name:<15} fake-quant {q:8.0f} img/s   fp32 {f:8.0f} img/s   ratio {q / f:.2f}   "
              f"load {loads[-1]}", flush=True)
    cfg = TrainConfig()
    body = (f"`python benchmarks/train_throughput.py --device {args.device} --steps {args.steps} "
            f"--batch-size {args.batch_size} --repeats {args.repeats}` on **{where}** (torch {torch.__version__}); "
            f"1-minute load average {min(loads)}..{max(loads)}. Sandwich training (largest + smallest + "
            f"{cfg.random_subnets} random subnets per step, in-place distillation); images/s count each batch "
            "once. Each space's fake-quant run and its all-fp32 twin alternate, after one untimed warm-up "
            "of each, best of the repeats per side (one run per side, one after the other, let order and load "
            "decide the ratio). Goal on a GPU: fake-quant / fp32 >= 0.85.\n\n"
            "| space | with fake quantization (img/s) | all fp32 (img/s) | ratio |\n|---|---|---|---|\n")
    body += "".join(f"| {n} | {q:.0f} | {f:.0f} | {r:.2f} |\n" for n, q, f, r in rows)
    if device == "cpu":
        body += "\nMeasured on CPU: the GPU goal is not shown here.\n"
    if not args.no_write:
        doc = write_section("train-throughput", "## Training throughput\n\n" + body)
        print(f"written to {doc}")


if __name__ == "__main__":
    main()
