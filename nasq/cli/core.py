"""The pipeline commands: ``nasq run``, ``train``, ``validate``, ``catalog``, ``profile measure``,
``version``."""

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
            typer.echo(f"  {name:<20} {p}")


profile_app = typer.Typer(help="Hardware profiles: measure per-layer latency tables.", no_args_is_help=True)
app.add_typer(profile_app, name="profile")


@profile_app.command("measure")
def profile_measure(
    out: Annotated[Path, typer.Option("--out", help="Profile folder to write, e.g. hardware_profiles/cpu_ort_epyc; "
                                      "its name is the profile's name.")],
    space: Annotated[str, typer.Option("--space", help="Search space: catalog name or YAML path.")] = "mbconv_small",
    backend: Annotated[str, typer.Option("--backend", help="onnxruntime (this CPU) or torch-cuda (an NVIDIA GPU).")] = "onnxruntime",
    threads: Annotated[int, typer.Option("--threads", min=1, help="Intra-op threads per timed run.")] = 1,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Timed runs per layer (median, p10, p90).")] = 30,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed runs per layer and round.")] = 5,
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Interleaved passes the repeats are split over.")] = 3,
    fit_subnets: Annotated[int, typer.Option("--fit-subnets", min=0, help="Whole subnets timed to fit the "
                                             "predictor's correction (onnxruntime only; 0 skips it).")] = 100,
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


@app.command()
def version() -> None:
    """Print the nasq version."""
    from nasq import __version__

    typer.echo(__version__)
