"""Fuzzing every input nasq reads, with a large budget: mutated experiment, search-space,
hardware-profile and predictor-recipe files, latency tables and fitted latency models, and
``--where`` expressions. Each input must load, or be refused with one NasqError line under 1,000
characters; anything else (another exception, a multi-line or huge message) is a crash.

    .venv/bin/python benchmarks/fuzz.py [--inputs 10000] [--seed N] [--no-write]

The strategies are the ones of ``tests/unit/test_fuzz.py`` (which runs them with a small budget in
the test suite); this script only runs more of them, generation only (no shrinking). Without
``--seed`` the run is derandomized: the same inputs on every machine. Prints the figures - inputs
tried, accepted, refused with one line, crashes, multi-line errors, peak memory (ru_maxrss),
the slowest case - and writes them to docs/benchmarks.md (section ``fuzz``) unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
COMMAND = ".venv/bin/python benchmarks/fuzz.py"
# Share of the budget per kind of input (the where grammar and the loaders are cheap, the
# experiment loads every catalog file it names).
SHARES = {"experiment": 0.2, "space": 0.2, "profile": 0.1, "recipe": 0.15, "latency_model": 0.1,
          "latency_csv": 0.1, "where": 0.15}


def _cases() -> Any:
    """tests/unit/test_fuzz.py as a module: its strategies, targets and property."""
    path = REPO / "tests" / "unit" / "test_fuzz.py"
    spec = importlib.util.spec_from_file_location("nasq_fuzz_cases", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@dataclass
class Tally:
    outcomes: Counter = field(default_factory=Counter)  # (target, accepted|refused|crash|multi-line)
    crashes: list[str] = field(default_factory=list)
    slowest: tuple[float, str] = (0.0, "")

    def record(self, target: str, seconds: float, what: str, outcome: str, detail: str = "") -> None:
        self.outcomes[(target, outcome)] += 1
        if detail:
            self.crashes.append(detail)
        if seconds > self.slowest[0]:
            self.slowest = (seconds, f"{target}: {what}")

    def total(self, outcome: str | None = None, target: str | None = None) -> int:
        return sum(n for (t, o), n in self.outcomes.items()
                   if (outcome is None or o == outcome) and (target is None or t == target))


def _timed(tally: Tally, cases: Any, target: str, what: str, call: Any) -> None:
    started = time.perf_counter()
    try:
        outcome, detail = cases.check(call, what), ""
    except cases.Crash as e:
        outcome, detail = ("multi-line" if "multi-line or long NasqError" in str(e) else "crash"), str(e)
    tally.record(target, time.perf_counter() - started, what, outcome, detail)


def run(inputs: int, seed_value: int | None) -> tuple[Tally, float]:
    cases = _cases()
    tally = Tally()
    fuzz = dict(deadline=None, database=None, phases=[Phase.generate], derandomize=seed_value is None,
                suppress_health_check=list(HealthCheck))

    def budget(name: str) -> int:
        return max(1, round(inputs * SHARES[name]))

    def seeded(fn: Any) -> Any:
        return seed(seed_value)(fn) if seed_value is not None else fn

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nasq-fuzz-") as tmp:
        folder = cases.workspace(Path(tmp))
        def file_runner(name: str, target: Any) -> Any:
            @seeded
            @settings(max_examples=budget(name), **fuzz)
            @given(cases.document(target))
            def files(case: tuple[bytes, str]) -> None:
                raw, what = case
                path = folder / target.file_name
                path.write_bytes(raw)
                _timed(tally, cases, name, f"{what} ({len(raw):,} bytes)", lambda: target.load(path, folder))

            return files

        for name, target in cases.TARGETS.items():
            file_runner(name, target)()
            print(f"  {name}: {tally.total(target=name):,} inputs", flush=True)

        @seeded
        @settings(max_examples=budget("latency_csv"), **fuzz)
        @given(cases.csv_mutant())
        def tables(case: tuple[bytes, str]) -> None:
            raw, op = case
            path = folder / "mutant.csv"
            path.write_bytes(raw)
            _timed(tally, cases, "latency_csv", f"latency.csv mutated, text op {op} ({len(raw):,} bytes)",
                   lambda: cases.LatencyTable.load(path))

        tables()
        print(f"  latency_csv: {tally.total(target='latency_csv'):,} inputs", flush=True)

        @seeded
        @settings(max_examples=budget("where"), **fuzz)
        @given(cases.where_text())
        def where(text: str) -> None:
            _timed(tally, cases, "where", f"--where of {len(text):,} characters {text[:40]!r}",
                   lambda: cases.parse_where(text, set(cases.METRICS)))

        where()
        print(f"  where: {tally.total(target='where'):,} inputs", flush=True)
    return tally, time.perf_counter() - started


def report(tally: Tally, wall_s: float, args: argparse.Namespace) -> str:
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    rows = ["| input | tried | accepted | refused (one line) | crashes | multi-line errors |", "|---|---|---|---|---|---|"]
    for name in SHARES:
        rows.append(f"| {name} | {tally.total(target=name):,} | {tally.total('accepted', name):,} | "
                    f"{tally.total('refused', name):,} | {tally.total('crash', name)} | {tally.total('multi-line', name)} |")
    rows.append(f"| **all** | **{tally.total():,}** | {tally.total('accepted'):,} | {tally.total('refused'):,} | "
                f"**{tally.total('crash')}** | **{tally.total('multi-line')}** |")
    seconds, what = tally.slowest
    command = COMMAND + (f" --inputs {args.inputs}" if args.inputs != 10_000 else "") + \
        (f" --seed {args.seed}" if args.seed is not None else "")
    lines = [
        "### Fuzzing the inputs (`benchmarks/fuzz.py`)",
        "",
        "Mutants of the shipped experiment, search-space, hardware-profile and predictor-recipe files, of "
        "`latency.csv` and `latency_model.json`, and generated `--where` expressions (the strategies of "
        "`tests/unit/test_fuzz.py`: hostile values - huge integers, NaN and infinity, long strings, nested "
        "lists and dicts, None, wrong types, deep nesting - deleted, added and duplicated keys, dropped lines, "
        "non-UTF-8 bytes, truncation, alias bombs). Each must load, or be refused with one NasqError line under "
        "1,000 characters; anything else counts as a crash.",
        "",
        f"Command: `{command}`",
        "",
        *rows,
        "",
        f"- inputs tried: {tally.total():,}; accepted {tally.total('accepted'):,}; refused with one line "
        f"{tally.total('refused'):,}; crashes {tally.total('crash')}; multi-line errors {tally.total('multi-line')}",
        f"- peak memory (ru_maxrss of the process): {peak_mib:.0f} MiB",
        f"- slowest case: {seconds:.2f} s - {what}",
        f"- wall time: {wall_s:.0f} s",
    ]
    if tally.crashes:
        lines += ["", "Crashes (first 10):", "", *(f"- `{c[:300]}`" for c in tally.crashes[:10])]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", type=int, default=10_000, help="inputs to generate in all (default 10,000)")
    ap.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: derandomized)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = ap.parse_args()
    print(f"fuzzing {args.inputs:,} inputs ...", flush=True)
    tally, wall_s = run(args.inputs, args.seed)
    body = report(tally, wall_s, args)
    print(body)
    if not args.no_write:
        print(f"wrote {write_section('fuzz', body)}")
    return 1 if tally.total("crash") or tally.total("multi-line") else 0


if __name__ == "__main__":
    sys.exit(main())
