"""``nasq search``: search again on the supernet an earlier ``nasq run`` trained, with any strategy,
reusing every cached true evaluation; ``--resume RUN_DIR`` continues an interrupted search."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from nasq.cli.app import fail
from nasq.errors import ConfigError, NasqError


def _overrides(exp, strategy: str | None, budget: int | None, batch: int | None, seed: int | None) -> None:
    from pydantic import ValidationError

    from nasq.specs import SearchConfig, format_loc, one_line, show

    update = {k: v for k, v in {"strategy": strategy, "max_true_evals": budget, "batch_size": batch,
                                "seed": seed}.items() if v is not None}
    if not update:
        return
    try:
        search = SearchConfig.model_validate({**exp.config.search.model_dump(), **update})
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        option = {"max_true_evals": "--max-true-evals"}.get(str(err["loc"][0]), f"--{err['loc'][0]}".replace("_", "-"))
        raise ConfigError("command line", option if len(err["loc"]) == 1 else format_loc(err["loc"]),
                          f"{one_line(err['msg'])}, got {show(err.get('input'))}") from e
    exp.config = exp.config.model_copy(update={"search": search})


def search(
    experiment: Annotated[Optional[Path], typer.Argument(  # noqa: UP045 - typer needs Optional here
        help="Experiment YAML (default: examples/demo.yaml).", show_default=False)] = None,
    resume: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--resume", help="Continue the interrupted search whose search_state.json is in this folder.")] = None,
    out: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--out", help="Folder for the search's checkpoint, front and history (default: the workdir).")] = None,
    strategy: Annotated[Optional[str], typer.Option(  # noqa: UP045
        "--strategy", help="linas, nsga2_true, random, optuna_nsga2 or optuna_tpe.")] = None,
    budget: Annotated[Optional[int], typer.Option("--max-true-evals", help="True evaluations to spend.")] = None,  # noqa: UP045
    batch: Annotated[Optional[int], typer.Option("--batch-size", help="True evaluations per iteration.")] = None,  # noqa: UP045
    seed: Annotated[Optional[int], typer.Option("--seed", help="Search seed.")] = None,  # noqa: UP045
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the final summary.")] = False,
) -> None:
    """Search on the experiment's trained supernet (from `nasq run`): sampled evaluations and
    predictor (cached), then the chosen strategy; writes front.json/csv and search_history.json."""
    from rich.console import Console

    from nasq.cli import options
    from nasq.experiment import load_experiment
    from nasq.search.loop import check_budget
    from nasq.search.state import STATE_FILE, saved_budget

    try:
        exp = load_experiment(experiment)
        _overrides(exp, strategy, budget, batch, seed)
        # before the ledger and the predictor are touched: where the results go must be writable
        options.out_dir(exp.workdir, "workdir", empty=False, source=exp.source)
        for option, folder in (("--resume", resume), ("--out", out)):
            if folder is not None:
                options.out_dir(folder, option, empty=False)
        if resume is not None and out is not None and resume.resolve() != out.resolve():
            raise ConfigError("command line", "--out", f"give --resume alone (it is also the output folder), got {out}")
        if resume is not None and not ((resume / STATE_FILE).is_file() or (resume / "tune").is_dir()):
            raise ConfigError("command line", "--resume", f"no interrupted search in {resume} (no {STATE_FILE})")
        if resume is not None:  # a budget that may not be used is refused before any work
            cfg = exp.config.search
            check_budget(saved_budget(resume), cfg.strategy, cfg.max_true_evals, resume / STATE_FILE)
        console = Console(width=None if sys.stdout.isatty() else 150)
        console.print(f"[bold]nasq search[/] {exp.config.name}: {exp.config.search.strategy}, "
                      f"{exp.config.search.max_true_evals} true evaluations" + (f", resuming {resume}" if resume else ""))
        from nasq.cli.report import print_summary
        from nasq.stages import data, train
        from nasq.stages.pipeline import evaluate_and_search
        from nasq.stages.progress import Reporter

        trained = train.load(exp)
        rep = Reporter(None if quiet else console, total_stages=3)
        splits = data.run(exp)
        result = evaluate_and_search(exp, trained.net, splits, rep, trained.info, resume=resume is not None,
                                     run_dir=resume or out or exp.workdir)
    except NasqError as e:
        fail(e)
    print_summary(result, console)


def register(app: typer.Typer) -> None:
    app.command("search")(search)
