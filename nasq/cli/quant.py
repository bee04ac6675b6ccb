"""``nasq sensitivity RUN``: per-layer, per-format quantization sensitivity of a finished run's
supernet (Hutchinson Hessian trace, empirical Fisher, HAWQ-v2 proxy, measured one-layer top-1
drop), kept in the run folder as ``sensitivity.json`` + ``sensitivity.csv`` and, when the run
was tracked, logged to MLflow as a table and a heat map. Bad input: one line, exit 2."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nasq.cli.app import fail
from nasq.cli.service import ExpOpt, RunArg, UriOpt
from nasq.errors import NasqError


def _print_table(record: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    formats = record["settings"]["formats"]
    table = Table(title=f"top-1 drop (points) when one layer takes a format; base top-1 {record['base_top1']:.2f} %")
    for col in ("layer", "trace", "fisher", *formats):
        table.add_column(col, justify="left" if col == "layer" else "right")
    by_layer: dict[str, dict] = {}
    for r in record["rows"]:
        by_layer.setdefault(r["layer"], {"trace": r["trace"], "fisher": r["fisher"]})[r["format"]] = r["top1_drop"]
    for name, v in by_layer.items():
        table.add_row(name, f"{v['trace']:.3g}", f"{v['fisher']:.3g}", *(f"{v[f]:.2f}" for f in formats))
    Console().print(table)


def sensitivity(run: RunArg,
                formats: Annotated[Optional[str], typer.Option(  # noqa: UP045 - typer needs Optional here
                    "--formats", help="Comma-separated formats to probe (default: every format of both menus).")] = None,
                batches: Annotated[int, typer.Option("--batches", help="Training batches for Hessian and Fisher.")] = 2,
                probes: Annotated[int, typer.Option("--probes", help="Hutchinson vectors per batch.")] = 4,
                val_images: Annotated[int, typer.Option("--val-images", help="Validation images per measured drop.")] = 500,
                seed: Annotated[int, typer.Option("--seed", help="Seed of the batches and Rademacher vectors.")] = 0,
                fresh: Annotated[bool, typer.Option("--fresh", help="Recompute even if sensitivity.json matches.")] = False,
                quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar and no table.")] = False,
                threads: Annotated[int, typer.Option("--threads", help="torch threads (0: torch's default); "
                                                     "1 like true evaluations.")] = 1,
                tracking_uri: UriOpt = None, experiment: ExpOpt = None) -> None:
    """Per-layer quantization sensitivity of a finished run: sensitivity.json/.csv in its folder, a
    table and heat map on its MLflow run."""
    from nasq.cli import options
    from nasq.stages import sensitivity as stage
    from nasq.stages.progress import Reporter
    from nasq.stages.runs import is_run_id, open_run

    try:
        options.text(run, "RUN")
        options.count(batches, "--batches", 1, 1000)
        options.count(probes, "--probes", 1, 1000)
        options.count(val_images, "--val-images", 1, 1_000_000)
        options.count(seed, "--seed", 0, 2**31 - 1)
        options.count(threads, "--threads", 0, 1024)
        wanted = None if formats is None else tuple(f.strip() for f in formats.split(",") if f.strip())
        settings = stage.Settings(formats=wanted, batches=batches, probes=probes, val_images=val_images, seed=seed)
        rep = Reporter(None if quiet else _console())
        if threads:
            import torch

            torch.set_num_threads(threads)
        with open_run(run, tracking_uri, experiment) as found:
            total = len(found.space().largest().layers()) * len(stage.menu_formats(found.space(), wanted))
            with rep.bar("sensitivity", total) as update:
                done = [0]

                def step(info: str) -> None:
                    done[0] += 1
                    update(done[0], total, info)

                record, reused = stage.from_run(found, settings, step, fresh, downloaded=is_run_id(run))
            logged = _log(found, record) if found.uri and found.run_id else []
    except NasqError as e:
        fail(e)
    if not quiet:
        _print_table(record)
    where = Path(str(found.folder))
    typer.echo(f"{'reused' if reused else 'wrote'} {where / stage.SENSITIVITY_JSON} and {stage.SENSITIVITY_CSV}"
               + (f"; logged {', '.join(logged)} to MLflow run {found.run_id}" if logged else ""))


def _console():
    from rich.console import Console

    return Console(stderr=True)


def _log(found, record: dict) -> list[str]:
    from nasq.stages import sensitivity as stage
    from nasq.tracking.sensitivity import log_sensitivity

    folder = Path(found.folder)
    return log_sensitivity(found.uri, found.run_id, record["rows"],
                           [folder / stage.SENSITIVITY_JSON, folder / stage.SENSITIVITY_CSV], folder)


def register(app: typer.Typer) -> None:
    app.command("sensitivity")(sensitivity)
