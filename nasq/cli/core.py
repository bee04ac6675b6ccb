"""The pipeline commands: ``nasq run``, ``train``, ``validate``, ``catalog``, ``profile measure``,
``profile check``, ``profile calibrate``, ``version``."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated

import typer

from nasq.cli.app import ExperimentArg, app, fail
from nasq.errors import ConfigError, NasqError


@app.command()
def run(experiment: ExperimentArg = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the final summary.")] = False,
        tracking_wait: Annotated[float, typer.Option(
            "--tracking-wait", min=0, max=3600, envvar="NASQ_TRACKING_WAIT_S",
            help="Seconds to wait at start for an MLflow tracking server that does not answer; "
                 "then one-line error, exit 2, nothing written.")] = 10.0) -> None:
    """Run the whole pipeline: train, evaluate, fit predictors, search, track, export — all under one
    MLflow parent run, ended FINISHED or FAILED (SIGTERM exits 143, SIGINT 130)."""
    from rich.console import Console

    from nasq.cli import options
    from nasq.experiment import load_experiment

    try:
        if not math.isfinite(tracking_wait):
            raise ConfigError("command line", "--tracking-wait", f"must be a number of seconds, got {tracking_wait}")
        exp = load_experiment(experiment)
        options.out_dir(exp.workdir, "workdir", empty=False, source=exp.source)  # writable, before any work
    except NasqError as e:
        fail(e)
    console = Console(width=None if sys.stdout.isatty() else 150)
    console.print(f"[bold]nasq[/] experiment [bold]{exp.config.name}[/] from {exp.source} -> {exp.workdir}")
    try:
        from nasq.cli.report import print_summary
        from nasq.stages.pipeline import Interrupted, run_pipeline
    except NasqError as e:  # a missing dependency
        fail(e)
    try:
        result = run_pipeline(exp, None if quiet else console, tracking_wait_s=tracking_wait)
    except NasqError as e:
        fail(e)
    except Interrupted as e:
        typer.echo(f"nasq: stopped by {e.name}", err=True)
        raise typer.Exit(e.exit_code) from None
    print_summary(result, console)


@app.command()
def train(experiment: ExperimentArg = None,
          fresh: Annotated[bool, typer.Option("--fresh", help="Train from scratch: ignore a finished supernet "
                                              "and any checkpoint in the workdir.")] = False,
          quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the final line.")] = False) -> None:
    """Train the experiment's supernet once (resuming an interrupted run from its checkpoint);
    `nasq run` then reuses it instead of training again."""
    from rich.console import Console

    from nasq.cli import options
    from nasq.experiment import load_experiment

    try:
        exp = load_experiment(experiment)
        options.out_dir(exp.workdir, "workdir", empty=False, source=exp.source)  # writable, before any work
    except NasqError as e:
        fail(e)
    console = Console(width=None if sys.stdout.isatty() else 150)
    try:
        from nasq.stages.pipeline import run_training

        info = run_training(exp, None if quiet else console, fresh=fresh)
    except NasqError as e:
        fail(e)
    what = "reused" if info.get("reused") else f"{info['steps']} steps, final loss {info['final_loss']:.3f}"
    console.print(f"supernet: {exp.workdir / 'supernet.safetensors'} ({what})")


@app.command()
def validate(experiment: ExperimentArg = None) -> None:
    """Check an experiment file and every catalog file it names; writes nothing."""
    from nasq.experiment import load_experiment

    try:
        exp = load_experiment(experiment)
    except NasqError as e:
        fail(e)
    typer.echo(f"ok: {exp.source}: space {exp.space.name} ({exp.space.n_genes} genes, {exp.space.size():.3g} subnets), "
               f"hardware {', '.join(p.name for p in exp.profiles)}, predictor {exp.recipe.config.name}")


@app.command()
def catalog() -> None:
    """List the search spaces, hardware profiles and predictor recipes nasq can find."""
    from nasq.experiment import CATALOGS, search_roots

    roots = search_roots(Path.cwd())
    for kind, (folder, pattern) in CATALOGS.items():
        seen: dict[str, Path] = {}
        for root in roots:
            for p in sorted((root / folder).glob(pattern.format(name="*"))):
                name = p.parent.name if kind == "hardware" else p.stem
                seen.setdefault(name, p)
        typer.echo(f"{folder}/")
        for name, p in seen.items():
            typer.echo(f"  {name:<20} {p}{_profile_summary(p) if kind == 'hardware' else ''}")


def _profile_summary(path: Path) -> str:
    """`` [backend, status; emulates ...]`` for a profile that loads, nothing for one that does not
    (``nasq validate`` is where a broken catalog file is reported)."""
    from nasq.hardware import HardwareProfile

    try:
        profile = HardwareProfile.from_yaml(path)
    except NasqError:
        return ""
    emulated = sorted(profile.emulated)
    return (f"  [{profile.config.backend}, {profile.config.status}"
            + (f"; emulates {', '.join(emulated)}" if emulated else "") + "]")


profile_app = typer.Typer(help="Hardware profiles: measure per-layer latency tables, check and calibrate "
                          "them on this machine.", no_args_is_help=True)
app.add_typer(profile_app, name="profile")


@profile_app.command("measure")
def profile_measure(
    out: Annotated[Path, typer.Option("--out", help="Profile folder to write, e.g. hardware_profiles/cpu_ort_epyc; "
                                      "its name is the profile's name.")],
    space: Annotated[str, typer.Option("--space", help="Search space: catalog name or YAML path.")] = "mbconv_small",
    backend: Annotated[str, typer.Option("--backend", help="onnxruntime or openvino (this CPU), or torch-cuda (an NVIDIA GPU).")] = "onnxruntime",
    threads: Annotated[int, typer.Option("--threads", min=1, help="Intra-op threads per timed run.")] = 1,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Timed runs per layer (median, p10, p90).")] = 30,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed runs per layer and round.")] = 5,
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Interleaved passes the repeats are split over.")] = 3,
    fit_subnets: Annotated[int, typer.Option("--fit-subnets", min=0, help="Whole subnets timed to fit the "
                                             "predictor's correction, on the same backend (not torch-cuda; 0 skips it).")] = 100,
) -> None:
    """Time every distinct layer of a space; write profile.yaml, latency.csv, latency_model.json."""
    from nasq.cli import options
    from nasq.profiling.measure import profile_measure as measure

    try:
        options.name(out.name, "--out")  # the folder's name is the profile's name
        options.out_dir(out, "--out", empty=False)
        options.name(backend, "--backend")
        options.catalog_ref(space, "--space")
        for option, value, high in (("--threads", threads, 4096), ("--repeats", repeats, 100_000),
                                    ("--warmup", warmup, 100_000), ("--rounds", rounds, 1_000),
                                    ("--fit-subnets", fit_subnets, 100_000)):
            options.count(value, option, 0, high)
        measure(space, backend, out, threads=threads, repeats=repeats, warmup=warmup, rounds=rounds,
                fit_subnets=fit_subnets)
    except NasqError as e:
        fail(e)


ProfileArg = Annotated[str, typer.Argument(help="Measured hardware profile: catalog name or profile.yaml path.",
                                           show_default=False)]


def _timing_checks(repeats: int, warmup: int, rounds: int, seed: int) -> None:
    from nasq.cli import options

    for option, value, low, high in (("--repeats", repeats, 1, 100_000), ("--warmup", warmup, 0, 100_000),
                                     ("--rounds", rounds, 1, 1_000), ("--seed", seed, 0, 2**32 - 1)):
        options.count(value, option, low, high)


@profile_app.command("check")
def profile_check(
    profile: ProfileArg,
    space: Annotated[str | None, typer.Option("--space", help="Search space: catalog name or YAML path "
                                              "(default: the first space the profile was measured for).")] = None,
    subnets: Annotated[int, typer.Option("--subnets", help="Reference subnets to time (smallest, largest, "
                                         "random mixed-precision ones), at least 3.")] = 8,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random reference subnets.")] = 0,
    repeats: Annotated[int, typer.Option("--repeats", help="Timed runs per subnet.")] = 50,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed runs per subnet and round.")] = 5,
    rounds: Annotated[int, typer.Option("--rounds", help="Interleaved passes the repeats are split over.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON instead of a table.")] = False,
) -> None:
    """Time a few reference subnets here and compare them with the profile's predictions: speed factor,
    Kendall tau, verdict (holds / scaled / drifted). Cached per user and host, never written into the
    catalog; exits 0 whatever the verdict."""
    import json

    from nasq.cli import options
    from nasq.profiling.check import check_profile

    try:
        options.catalog_ref(profile, "PROFILE")
        if space is not None:
            options.catalog_ref(space, "--space")
        options.count(subnets, "--subnets", 3, 1_000)
        _timing_checks(repeats, warmup, rounds, seed)
        result = check_profile(profile, space=space, subnets=subnets, seed=seed, repeats=repeats, warmup=warmup,
                               rounds=rounds)
    except NasqError as e:
        fail(e)
    if as_json:
        typer.echo(json.dumps(result, indent=2, sort_keys=True))
        return
    _print_check(result)


def _print_check(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 150)
    table = Table(title=f"{result['profile']} on {result['host']['key']} ({result['backend']}, "
                        f"{result['threads']} thread{'s' if result['threads'] > 1 else ''})")
    for col in ("subnet", "predicted ms", "measured ms", "measured / predicted"):
        table.add_column(col, justify="left" if col == "subnet" else "right")
    for row in result["subnets"]:
        table.add_row(row["label"], f"{row['predicted_ms']:.3f}", f"{row['measured_ms']:.3f}", f"{row['ratio']:.2f}")
    console.print(table)
    tau = "n/a" if result["tau"] is None else f"{result['tau']:.2f}"
    console.print(f"{result['profile']}: speed factor {result['factor']:.2f}x, Kendall tau {tau}, within ±10 %: "
                  f"{result['within_10pct']:.0%} raw, {result['within_10pct_scaled']:.0%} after the factor -> "
                  f"[bold]{result['verdict']}[/]: {result['advice']}")
    if result.get("cache"):
        typer.echo(f"saved to {result['cache']}", err=True)


@profile_app.command("calibrate")
def profile_calibrate(
    profile: ProfileArg,
    subnets: Annotated[int, typer.Option("--subnets", help="Whole subnets to time and refit the correction on "
                                         "(at least 8).")] = 40,
    out: Annotated[Path | None, typer.Option("--out", help="Folder of the calibrated copy (default: "
                                             "./hardware_profiles/<profile>_<host>); its name is the new "
                                             "profile's name. The original profile is never changed.")] = None,
    space: Annotated[str | None, typer.Option("--space", help="Search space: catalog name or YAML path "
                                              "(default: the first space the profile was measured for).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random subnets.")] = 0,
    repeats: Annotated[int, typer.Option("--repeats", help="Timed runs per subnet.")] = 50,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed runs per subnet and round.")] = 5,
    rounds: Annotated[int, typer.Option("--rounds", help="Interleaved passes the repeats are split over.")] = 5,
) -> None:
    """Refit the profile's latency correction on subnets timed on this machine; write a calibrated copy
    of the profile folder (all files at once) and record the calibration in its measurement.json."""
    from nasq.cli import options
    from nasq.profiling.check import calibrate_profile

    try:
        options.catalog_ref(profile, "PROFILE")
        if space is not None:
            options.catalog_ref(space, "--space")
        options.count(subnets, "--subnets", 8, 100_000)
        _timing_checks(repeats, warmup, rounds, seed)
        if out is not None:
            options.name(out.name, "--out")  # the folder's name is the profile's name
            options.out_dir(out, "--out", empty=False)
        path, cal = calibrate_profile(profile, subnets=subnets, out=out, space=space, seed=seed, repeats=repeats,
                                      warmup=warmup, rounds=rounds)
    except NasqError as e:
        fail(e)
    typer.echo(f"wrote {path}: median |error| on {cal['subnets']} subnets {cal['median_abs_error_before']:.1%} "
               f"before, {cal['median_abs_error_after']:.1%} after (cross-validated; speed factor was "
               f"{cal['factor_before']:.2f}x); "
               f"use it as hardware: {path.parent.name}")


@app.command()
def version() -> None:
    """Print the nasq version."""
    from nasq import __version__

    typer.echo(__version__)
