"""The ``nasq`` Typer app and what every command shares. Commands import their machinery inside
their bodies (one of the few places in nasq where imports are function-local, see
docs/architecture.md): ``nasq --help`` and ``nasq validate`` answer in a fraction of a second
instead of importing torch, Ray and MLflow."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer
from typer.exceptions import TyperException

from nasq.errors import NasqError

app = typer.Typer(
    name="nasq",
    help="Neural architecture and quantization-policy search: train one supernet, fit predictors, "
    "search architecture and per-layer formats with NSGA-II on Ray, log Pareto fronts to MLflow, "
    "export a subnet.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ExperimentArg = Annotated[
    Optional[Path],  # noqa: UP045 - typer needs Optional here
    typer.Argument(help="Experiment YAML (default: examples/demo.yaml, the embedded demo).", show_default=False),
]


def fail(err: Exception) -> NoReturn:
    """A command's one-line error: ``nasq: error: ...`` on stderr, exit code 2."""
    typer.echo(f"nasq: error: {err}", err=True)
    raise typer.Exit(2)


# what `pip install nasq` leaves out: the torch-free core and `nasq[search]` lack these
EXTRA_MODULES = ("torch", "ray", "mlflow", "onnx", "onnxruntime", "onnxscript", "openvino", "pandas",
                 "safetensors", "matplotlib", "plotly", "PIL", "pymoo", "optuna", "sklearn", "scipy")


def missing_extra(err: ModuleNotFoundError) -> str | None:
    """The one-line error for a command that needs a package of ``nasq[all]``; None for any other
    missing module (a real bug, which keeps its traceback)."""
    top = (err.name or "").split(".")[0]
    if top not in EXTRA_MODULES:
        return None
    return f"nasq: error: this command needs {top}, which is not installed: pip install 'nasq[all]'"


def main() -> None:
    from nasq.cli.supervise import supervise, wanted

    if wanted(sys.argv[1:]):  # run/search: watched from outside, see nasq.cli.supervise
        sys.exit(supervise(sys.argv[1:]))
    try:
        code = app(standalone_mode=False, prog_name="nasq")
    except NasqError as e:  # anything that slipped past a command's own handling
        typer.echo(f"nasq: error: {e}", err=True)
        sys.exit(2)
    except ModuleNotFoundError as e:  # the child of a supervised run/search ends here too
        line = missing_extra(e)
        if line is None:
            raise
        typer.echo(line, err=True)
        sys.exit(2)
    except typer.Abort:
        typer.echo("nasq: aborted", err=True)
        sys.exit(130)
    except TyperException as e:  # Click's usage errors (a bad option or value): one line, exit 2
        ctx = getattr(e, "ctx", None)
        where = f"{ctx.command_path}: " if ctx is not None else ""
        text = " ".join(e.format_message().split()) if hasattr(e, "format_message") else str(e)
        typer.echo(f"nasq: error: {where}{text[:300]} (see --help)", err=True)
        sys.exit(int(getattr(e, "exit_code", 2) or 2))
    sys.exit(code if isinstance(code, int) else 0)
