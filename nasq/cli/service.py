"""Commands on finished runs and on Ray clusters: ``nasq front``, ``nasq export``, ``nasq submit``
and ``nasq jobs``. Registered on the main app by :func:`register`; heavy modules are imported
inside the commands. Bad input is one line on stderr, exit 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from nasq.cli.app import fail
from nasq.errors import ConfigError, NasqError

RunArg = Annotated[str, typer.Argument(help="A run folder (e.g. runs/demo) or an MLflow run id "
                                       "(of a search run or one of its point runs).", show_default=False)]
UriOpt = Annotated[Optional[str], typer.Option(  # noqa: UP045 - typer needs Optional here
    "--tracking-uri", help="MLflow tracking URI for a run id (default: $MLFLOW_TRACKING_URI).")]
ExpOpt = Annotated[Optional[Path], typer.Option(  # noqa: UP045
    "--experiment", help="Experiment file, for run folders made before experiment.json was written.")]
WhereOpt = Annotated[Optional[str], typer.Option(  # noqa: UP045
    "--where", help='Filter, e.g. "latency_ms<2 and size_mb<0.5" (metrics, < <= > >= == !=, and/or, ()).')]
PickOpt = Annotated[Optional[str], typer.Option(  # noqa: UP045
    "--pick", help="knee | max-top1 | min-latency (among the points --where keeps).")]
AddressOpt = Annotated[str, typer.Option("--address", help="Ray dashboard URL, e.g. http://127.0.0.1:8265.")]



def _table(front: object, indices: list[int], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from nasq.cli.report import format_mix

    table = Table(title=title)
    for col in ("#", *front.objectives, "top1_pred", "depths", "layer formats (w/a)"):
        table.add_column(col, justify="left" if col in ("depths", "layer formats (w/a)") else "right")
    for i in indices:
        p = front.points[i]
        table.add_row(str(i), *(f"{p.value(o):.4g}" for o in front.objectives),
                      f"{p.predicted.get('top1', float('nan')):.4g}", "-".join(map(str, p.spec.depths)), format_mix(p))
    Console().print(table)


def front(run: RunArg, where: WhereOpt = None, pick: PickOpt = None, tracking_uri: UriOpt = None,
          experiment: ExpOpt = None,
          as_json: Annotated[bool, typer.Option("--json", help="Print JSON rows instead of a table.")] = False) -> None:
    """Show a finished run's Pareto front (filtered by --where, or the --pick point); no search."""
    from nasq.search import query
    from nasq.stages.runs import open_run

    try:
        _check_query_options(run, where, pick, tracking_uri)
        with open_run(run, tracking_uri, experiment) as found:
            indices = query.select(found.front, where)
            if pick:
                indices = [query.pick(found.front, pick, indices)]
            rows = [found.front.rows()[i] for i in indices]
            if as_json:
                typer.echo(json.dumps(rows, indent=2, default=str))
            else:
                _table(found.front, indices, f"{run}: {len(indices)} of {len(found.front.points)} front points"
                       + (f" where {where}" if where else "") + (f", {pick}" if pick else ""))
    except NasqError as e:
        fail(e)


def _choose(found: object, point: int | None, pick: str | None, where: str | None) -> int:
    from nasq.search import query

    n = len(found.front.points)
    if point is not None:
        if where or pick:
            raise NasqError("give one of --point, or --where/--pick")
        if not 0 <= point < n:
            raise NasqError(f"--point {point}: out of range (the front of {found.name} has points 0..{n - 1})")
        return point
    if found.point is not None and not (where or pick):
        return found.point  # a point run id names its point
    if not (where or pick):
        raise NasqError("which point? give --point K, --pick knee|max-top1|min-latency or --where EXPR")
    return query.pick(found.front, pick or "knee", query.select(found.front, where))


def export(run: RunArg,
           out: Annotated[Path, typer.Option("--out", help="Folder to write the bundle into (must not exist or be empty).")],
           point: Annotated[Optional[int], typer.Option("--point", help="Front point index.")] = None,  # noqa: UP045
           pick: PickOpt = None, where: WhereOpt = None, tracking_uri: UriOpt = None, experiment: ExpOpt = None,
           register: Annotated[Optional[str], typer.Option(  # noqa: UP045
               "--register", help="Register the ONNX model under this name in the MLflow Model Registry.")] = None,
           refine: Annotated[Optional[str], typer.Option(  # noqa: UP045
               "--refine", help="Refine the quantized layers before export: none, bias_correction, adaround, "
                                "flexround or quantease (default: the run's export.refine).")] = None,
           int8_weights: Annotated[Optional[str], typer.Option(  # noqa: UP045
               "--int8-weights", help="How integer kernels' int8 weights are stored: auto (uint8 codes with zero "
                                      "point 128 on an x86 CPU without VNNI, where onnxruntime's int8 kernel "
                                      "saturates; int8 elsewhere), int8 or uint8 (default: the run's "
                                      "export.int8_weights).")] = None,
           ) -> None:
    """Export one point of a finished run: ONNX + safetensors + arch + manifest, checked in onnxruntime."""
    from nasq.cli import options
    from nasq.stages.runs import open_run

    try:
        options.out_dir(out, "--out", empty=True)  # before any work: a bundle can be written there
        options.count(point, "--point", 0, 1_000_000)
        if register is not None:
            options.name(register, "--register")
        if refine is not None:
            _check_choice("refine", "--refine", refine, "refinement")
        if int8_weights is not None:
            _check_choice("int8_weights", "--int8-weights", int8_weights, "int8 weight storage")
        _check_query_options(run, where, pick, tracking_uri)
        with open_run(run, tracking_uri, experiment) as found:
            index = _choose(found, point, pick, where)
            if register is not None:
                _check_register(found, register)
            from nasq.stages.export import from_run as export_from_run

            result, manifest = export_from_run(found, index, out, register, refine, int8_weights)
    except NasqError as e:
        fail(e)
    m = manifest["measured"]
    typer.echo(f"point {index} of {run} -> {result.out_dir}/ (model.onnx, model.safetensors, arch.json, manifest.json)")
    typer.echo(f"  top-1: supernet {m.get('top1', float('nan')):.2f} %, onnx {m['onnx_top1_val']:.2f} % on the same "
               f"{int(m['onnx_val_images'])} validation images, onnx {m['onnx_top1_test']:.2f} % on the test split")
    pred = manifest["predicted"].get("latency_ms")
    typer.echo(f"  latency: onnxruntime {m['onnx_latency_ms_batch1']:.3f} ms (1 image, 1 thread)"
               + (f", predicted {pred:.3f} ms" if pred is not None else ""))
    if "int8_weights" in manifest.get("runtime", {}):
        typer.echo(f"  integer kernels' int8 weights stored as {manifest['runtime']['int8_weights']} codes")
    if "refine" in manifest:
        r = manifest["refine"]
        typer.echo(f"  refined ({r['kind']}, {r['layers_refined']} layers, {r['seconds']:.1f} s): top-1 "
                   f"{r['top1_before']:.2f} % -> {r['top1_after']:.2f} % on {r['val_images']} validation images")
    if "registry" in manifest:
        r = manifest["registry"]
        typer.echo(f"  registered: {r['name']} version {r['version']} at {r['tracking_uri']}")


def _check_choice(field: str, flag: str, value: str, what: str) -> None:
    """``value`` of ``flag`` is one of ExportConfig.``field``'s choices, or a one-line ConfigError."""
    from typing import get_args

    from nasq.errors import ConfigError
    from nasq.specs import ExportConfig

    known = get_args(ExportConfig.model_fields[field].annotation)
    if value not in known:
        raise ConfigError("command line", flag, f"unknown {what} '{value}' (known: {', '.join(known)})")


def _check_query_options(run: str, where: str | None, pick: str | None, tracking_uri: str | None) -> None:
    """The run, --where, --pick and --tracking-uri of `front`/`export`, before a run is opened."""
    from nasq.cli import options
    from nasq.search import query
    from nasq.stages.runs import is_run_id

    if where is not None:
        query.parse_where(where)  # the syntax now; the metric names once the front is read
    if pick is not None:
        query.check_pick(pick)
    options.text(tracking_uri, "--tracking-uri")
    options.text(run, "RUN")
    if not options.is_dir(Path(run)) and not is_run_id(run):  # said here in one short line, before anything
        raise NasqError(f"RUN {options.show(run)}: no such run folder, and not an MLflow run id (32 hex characters)")


def _check_register(found: object, name: str) -> None:
    from nasq.tracking import client as tracking

    if not name.strip():
        raise NasqError("--register '': give a model name")
    if not (found.uri and found.run_id):
        raise NasqError(f"--register: {found.name} has no MLflow run recorded (tracking.json); "
                        "export from an MLflow run id instead")
    tracking.check_reachable(found.uri)


def submit(experiment: Annotated[Path, typer.Argument(help="Experiment YAML to run on the cluster "
                                                   "(with --sweep: a sweep YAML, see `nasq sweep --help`).")],
           address: AddressOpt,
           wait: Annotated[bool, typer.Option("--wait", help="Wait for the job to finish and print its logs.")] = False,
           sweep: Annotated[bool, typer.Option("--sweep", help="Submit a sweep file as one job (`nasq sweep` on "
                                               "the cluster: one supernet, one ledger, an MLflow run per entry).")] = False,
           ) -> None:
    """Run an experiment as a Ray job: ships the experiment and its catalog files, runs `nasq run`
    (with --sweep: the base experiment, every entry's catalog files and the entries, runs `nasq sweep`)."""
    import tempfile

    from nasq.cli import options
    from nasq.cluster import jobs as service

    try:
        options.text(address, "--address")
        if sweep:
            base_path, base, entries = sweep_entries(experiment)
            # the variants are written only to check them and find their catalog files; the
            # cluster merges the entries itself
            with tempfile.TemporaryDirectory(dir=base_path.parent, prefix=".nasq-sweep-") as tmp:
                variants = [_variant_file(base, name, over, Path(tmp) / f"{name}.yaml") for name, over in entries]
                job_id = service.submit(base_path, address, sweep=(variants, entries))
            experiment = base_path
        else:
            job_id = service.submit(experiment, address)
        note = service.tracking_warning(experiment)
        if note:
            typer.echo(note, err=True)
        typer.echo(job_id)
        if wait:
            state = service.wait(address, job_id)
            typer.echo(service.logs(address, job_id))
            typer.echo(f"job {job_id}: {state}")
            if state != "SUCCEEDED":
                raise typer.Exit(1)
    except NasqError as e:
        fail(e)


SWEEP_KEYS = ("experiment", "runs", "grid")


def _merge(base: dict, over: dict) -> dict:
    """``over`` deep-merged into ``base`` (mappings merge key by key; anything else replaces)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _variant_file(base: dict, name: str, over: dict, path: Path, cache_dir: str | None = None) -> Path:
    """Write one sweep entry's experiment (``over`` merged into ``base``, named ``<base>-<name>``;
    ``cache_dir``: the ledger folder it shares) to ``path``."""
    import yaml

    from nasq.files import atomic_write_text

    cfg = _merge(base, {**over, "name": f"{base.get('name', 'nasq')}-{name}"})
    if cache_dir and not (cfg.get("search") or {}).get("cache_dir"):
        cfg = _merge(cfg, {"search": {"cache_dir": cache_dir}})
    atomic_write_text(path, yaml.safe_dump(cfg, sort_keys=False))
    return path


def _mapping(value: object, source: str, field: str) -> dict:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ConfigError(source, field, f"expected a mapping, got {str(value)[:80]!r}")
    return value


def sweep_entries(sweep: Path) -> tuple[Path, dict, list[tuple[str, dict]]]:
    """The base experiment file, its content and the sweep's ``(name, overrides)`` entries: the
    explicit ``runs`` then the cross product of the ``grid`` axes (each a mapping name -> overrides)."""
    import itertools

    import yaml

    src = str(sweep)
    try:
        doc = _mapping(yaml.safe_load(sweep.read_text(encoding="utf-8")), src, "")
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(src, "", f"cannot read the sweep file ({type(e).__name__})") from None
    if extra := sorted(set(doc) - set(SWEEP_KEYS)):
        raise ConfigError(src, extra[0], f"unknown key; a sweep has {', '.join(SWEEP_KEYS)}")
    if not isinstance(doc.get("experiment"), str):
        raise ConfigError(src, "experiment", "give the base experiment file, relative to the sweep file")
    base_path = (sweep.parent / doc["experiment"]).resolve()
    try:
        base = _mapping(yaml.safe_load(base_path.read_text(encoding="utf-8")), str(base_path), "")
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(src, "experiment", f"cannot read {doc['experiment']!r} ({type(e).__name__})") from None
    entries: list[tuple[str, dict]] = []
    for i, run in enumerate(doc.get("runs") or []):
        run = _mapping(run, src, f"runs[{i}]")
        if not isinstance(run.get("name"), str) or set(run) - {"name", "set"}:
            raise ConfigError(src, f"runs[{i}]", "expected {name: NAME, set: {overrides}}")
        entries.append((run["name"], _mapping(run.get("set") or {}, src, f"runs[{i}].set")))
    axes = [list(_mapping(axis, src, f"grid[{i}]").items()) for i, axis in enumerate(doc.get("grid") or [])]
    for combo in itertools.product(*axes) if axes else ():
        over: dict = {}
        for j, (_, part) in enumerate(combo):
            over = _merge(over, _mapping(part, src, f"grid[{j}]"))
        entries.append(("-".join(n for n, _ in combo), over))
    if len(entries) < 1 or len({n for n, _ in entries}) != len(entries):
        raise ConfigError(src, "runs", "give one or more entries with distinct names")
    for name, over in entries:
        if {"name", "workdir"} & set(over):
            raise ConfigError(src, name, "an entry may not set name or workdir (each is named <base>-<entry>)")
    return base_path, base, entries


def sweep(sweep_file: Annotated[Path, typer.Argument(help="Sweep YAML: experiment (the base file), runs "
                                                    "[{name, set}] and/or grid [{name: overrides}, ...].")],
          quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the summaries.")] = False) -> None:
    """Run several variants of one experiment (targets x constraints ...) in one driver: the
    supernet trained once, one shared ledger of evaluations, one MLflow run each. Each variant is
    written as .<sweep>.<entry>.yaml beside the base file and runs as <base name>-<entry>."""
    import sys

    from rich.console import Console

    from nasq.cli.report import print_summary
    from nasq.experiment import load_experiment

    try:
        base_path, base, entries = sweep_entries(sweep_file)
        exps: list = []
        for name, over in entries:
            shared = str(exps[0].workdir.resolve() / "cache") if exps else None  # one ledger for all
            # beside the base file, so its relative references and catalog lookups hold as written
            path = _variant_file(base, name, over, base_path.parent / f".{sweep_file.stem}.{name}.yaml", shared)
            exps.append(load_experiment(path))
        from nasq.stages.pipeline import Interrupted, run_sweep

        console = Console(width=None if sys.stdout.isatty() else 150)
        results = run_sweep(exps, None if quiet else console)
    except NasqError as e:
        fail(e)
    except Interrupted as e:
        typer.echo(f"nasq: stopped by {e.name}", err=True)
        raise typer.Exit(e.exit_code) from None
    for result in results:
        print_summary(result, console)


jobs_app = typer.Typer(help="Ray jobs of a cluster: list, status, logs, stop.", no_args_is_help=True)
JobArg = Annotated[str, typer.Argument(help="Job (submission) id, as printed by nasq submit.")]


@jobs_app.command("list")
def jobs_list(address: AddressOpt) -> None:
    """List the cluster's jobs."""
    from nasq.cli import options
    from nasq.cluster import jobs as service

    try:
        options.text(address, "--address")
        for row in service.list_jobs(address):
            typer.echo(f"{row['job_id']}  {row['status']:<10} {row['entrypoint']}")
    except NasqError as e:
        fail(e)


def _on_job(what: str, job_id: str, address: str) -> Any:
    """``cluster.jobs.<what>(address, job_id)`` after checking both arguments; errors: one line."""
    from nasq.cli import options
    from nasq.cluster import jobs as service

    try:
        options.text(address, "--address")
        options.name(job_id, "JOB_ID")
        return getattr(service, what)(address, job_id)
    except NasqError as e:
        fail(e)


@jobs_app.command("status")
def jobs_status(job_id: JobArg, address: AddressOpt) -> None:
    """Print a job's status (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED)."""
    typer.echo(_on_job("status", job_id, address))


@jobs_app.command("logs")
def jobs_logs(job_id: JobArg, address: AddressOpt) -> None:
    """Print a job's logs so far."""
    typer.echo(_on_job("logs", job_id, address), nl=False)


@jobs_app.command("stop")
def jobs_stop(job_id: JobArg, address: AddressOpt) -> None:
    """Ask the cluster to stop a job."""
    typer.echo("stopping" if _on_job("stop", job_id, address) else "not running")


def register(app: typer.Typer) -> None:
    app.command("front")(front)
    app.command("export")(export)
    app.command("submit")(submit)
    app.command("sweep")(sweep)
    app.add_typer(jobs_app, name="jobs")
