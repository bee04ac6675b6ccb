"""True-evaluation throughput on a real two-node Ray test cluster, Ray's share of the fan-out's wall
time, and one LINAS iteration's overhead.

    .venv/bin/python benchmarks/cluster_throughput.py [--subnets 12] [--val-images 500]
        [--calib-images 128] [--repeats 3] [--skip-linas] [--no-write]

Each setting gets its own cluster on this machine from tests/integration/servers.py
(``ray start --head`` + ``ray start --address``, loopback, stopped by PID): 2 nodes x 1 CPU and
1 node x 2 CPUs, both up at once, each with its own driver process that evaluates seeded random
subnets of the demo experiment (examples/demo.yaml: mbconv_small on Fashion-MNIST, ``--val-images``
validation and ``--calib-images`` calibration images: fewer than the demo's, to fit a loaded 2-core
box) through :class:`nasq.cluster.tasks.Fanout`, the path ``nasq run`` takes. After a warm-up batch
(worker start and payload fetch, reported apart) the settings run their batches alternately, one
evaluating at a time. The supernet has fresh seeded weights: an evaluation's cost does not depend on
what the weights are.

Figures: subnets/s on each setting (over its ``--repeats`` batches) and their ratio (goal >= 90 %);
Ray's share = 1 - (evaluation work inside tasks) / (wall x CPUs), i.e. the CPU time the fan-out
held but did not spend evaluating (scheduling, transfers, payload fetches, idle CPUs at the tail;
goal <= 5 %); the LINAS iteration (predictor fit on 200 subnets + NSGA-II at population 64 x 40
generations, benchmarks/scoring_throughput.py's setup, genome path). On a loaded 2-core machine two
CPU-bound evaluations in parallel run far below 2x (STACK_NOTES): compare the settings side by side.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(Path(__file__).parent)]
from _report import write_section  # noqa: E402


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subnets", type=int, default=12, help="subnets per measured batch")
    ap.add_argument("--val-images", type=int, default=500)
    ap.add_argument("--calib-images", type=int, default=128)
    ap.add_argument("--chunk", type=int, default=None, help="subnets per task (default: nasq's chunk_size)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-linas", action="store_true")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    ap.add_argument("--driver", default=None, help=argparse.SUPPRESS)  # internal: one setting's driver
    return ap.parse_args()


def payload_and_specs(args: argparse.Namespace):
    import torch

    from nasq import data as data_mod
    from nasq.experiment import load_experiment
    from nasq.supernet.evaluate import EvalPayload
    from nasq.supernet.network import Supernet

    exp = load_experiment(REPO / "examples" / "demo.yaml")
    splits = data_mod.load(exp.config.data, space_config=exp.space.config)
    torch.manual_seed(0)  # the fresh supernet's weights; nothing else draws from torch here
    net = Supernet(exp.space)
    ecfg = exp.config.evaluate.model_copy(update={"val_images": args.val_images, "calib_images": args.calib_images})
    payload = EvalPayload.build(exp.space, net, splits.train_x, splits.val_x, splits.val_y, ecfg)
    specs = exp.space.sample_unique(np.random.default_rng(0), 4 + args.repeats * args.subnets, set())
    return payload, specs


def driver(args: argparse.Namespace) -> None:
    """``--driver GCS``: join that cluster, warm up, then evaluate batch r for each line "r" read on
    stdin, answering one JSON line per batch (the parent alternates the settings batch by batch)."""
    import json

    import ray

    from nasq.cluster.tasks import Fanout

    payload, specs = payload_and_specs(args)
    ray.init(address=args.driver, logging_level="ERROR", log_to_driver=False)
    fanout = Fanout(ray, payload, chunk=args.chunk)
    t0 = time.perf_counter()
    fanout(specs[:4])  # warm-up: workers start, each fetches the payload once
    print(json.dumps({"warmup_s": time.perf_counter() - t0}), flush=True)
    for line in sys.stdin:
        r = int(line)
        st = fanout.stats
        work0, wall0 = st.work_s, st.wall_s
        batch = specs[4 + r * args.subnets: 4 + (r + 1) * args.subnets]
        t0 = time.perf_counter()
        out = fanout(batch)
        wall = time.perf_counter() - t0
        print(json.dumps({"wall": wall, "n": len(batch), "failed": sum(v is None for v in out),
                          "work": st.work_s - work0, "held": (st.wall_s - wall0) * st.slots,
                          "nodes": len(st.tasks), "puts": st.puts, "fetches": sum(st.fetches.values())}), flush=True)
    ray.shutdown()


def side_by_side(settings: dict[str, tuple[int, ...]], args: argparse.Namespace) -> dict[str, dict]:
    """Start every setting's cluster and a driver on each, then run the batches alternately (one
    setting evaluating at a time): the fair comparison on a machine whose load moves."""
    import json
    import subprocess

    from tests.integration.servers import RayCluster

    clusters, drivers, results = {}, {}, {}
    try:
        for name, nodes in settings.items():
            print(f"{name}: starting", flush=True)
            clusters[name] = RayCluster.start(nodes=nodes, token=False)
            cmd = [sys.executable, __file__, "--driver", clusters[name].gcs_address, "--subnets", str(args.subnets),
                   "--val-images", str(args.val_images), "--calib-images", str(args.calib_images),
                   "--repeats", str(args.repeats), *(["--chunk", str(args.chunk)] if args.chunk else [])]
            drivers[name] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                             env={**os.environ, **clusters[name].client_env()})
            results[name] = {"batches": [], **json.loads(drivers[name].stdout.readline())}
        for r in range(args.repeats):
            for name, proc in drivers.items():
                proc.stdin.write(f"{r}\n")
                proc.stdin.flush()
                batch = json.loads(proc.stdout.readline())
                print(f"{name}: {batch['n']} subnets in {batch['wall']:.1f} s", flush=True)
                results[name]["batches"].append(batch)
    finally:
        for proc in drivers.values():
            proc.stdin.close()
            proc.wait(timeout=60)
        for cluster in clusters.values():
            cluster.stop()
            shutil.rmtree(cluster.temp_dir, ignore_errors=True)
    return results


def summarise(res: dict) -> dict:
    """Totals over the measured batches: subnets/s, Ray's share, evaluation work per subnet."""
    b = res["batches"]
    n, wall, work, held = (sum(x[k] for x in b) for k in ("n", "wall", "work", "held"))
    assert not sum(x["failed"] for x in b), "an evaluation failed"
    return {"rate": n / wall, "share": max(0.0, 1 - work / held), "work_per": work / n, "warmup_s": res["warmup_s"],
            "nodes": b[-1]["nodes"], "puts": b[-1]["puts"], "fetches": b[-1]["fetches"]}


def linas_iteration(repeats: int) -> float:
    from scoring_throughput import search, setup

    args = argparse.Namespace(space="mbconv_small", profile="cpu_ort_epyc", recipe="gbdt_onehot", train=200,
                              population=100, generations=50, linas_population=64, linas_generations=40,
                              max_size_mb=0.25)
    space, cost, fit, _, linas_cfg, constraints = setup(args)
    best = np.inf
    for _ in range(repeats):
        cost_model = cost()
        t0 = time.perf_counter()
        predictor = fit(cost_model)
        search(space, cost_model, predictor, linas_cfg, constraints, genome=True)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    args = parse_args()
    from nasq.cluster.tasks import configure_env

    configure_env()  # loopback Ray: set before anything imports ray (it reads the setting at import)
    if args.driver:
        driver(args)
        return
    load = open("/proc/loadavg").read().split()[:3]
    raw = side_by_side({"2 nodes x 1 CPU": (1, 1), "1 node x 2 CPUs": (2,)}, args)
    res = {name: summarise(r) for name, r in raw.items()}
    load_after = open("/proc/loadavg").read().split()[:3]
    two, one = res["2 nodes x 1 CPU"], res["1 node x 2 CPUs"]
    lines = [
        f"Demo experiment's evaluation ({args.val_images} validation, {args.calib_images} calibration images), "
        f"{args.repeats} batches of {args.subnets} subnets per setting, "
        f"{f'{args.chunk} subnets per task' if args.chunk else 'default chunking'}, the settings alternating batch by batch "
        f"(both clusters up, one evaluating at a time); load average {' '.join(load)} before, "
        f"{' '.join(load_after)} after.",
        "",
        "| setting | subnets/s | Ray's share of wall x CPUs | evaluation work per subnet | warm-up (4 subnets) "
        "| nodes used | payload puts / fetches |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in res.items():
        lines.append(f"| {name} | {r['rate']:.2f} | {100 * r['share']:.1f} % | {r['work_per']:.2f} s | "
                     f"{r['warmup_s']:.1f} s | {r['nodes']} | {r['puts']} / {r['fetches']} |")
    lines += ["", f"2 nodes x 1 CPU reach {100 * two['rate'] / one['rate']:.0f} % of 1 node x 2 CPUs (goal >= 90 %)."]
    if not args.skip_linas:
        linas = linas_iteration(args.repeats)
        lines.append(f"One LINAS iteration (predictor fit on 200 subnets + NSGA-II population 64 x 40 generations, "
                     f"genome path): {linas:.2f} s (best of {args.repeats}).")
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        title = "### Ray cluster throughput (`benchmarks/cluster_throughput.py`)"
        print(f"wrote {write_section('cluster_throughput', title + chr(10) + chr(10) + body)}")


if __name__ == "__main__":
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    main()
