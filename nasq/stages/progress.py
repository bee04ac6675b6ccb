"""Stage headers and progress for the pipeline's console; silent without a console (``--quiet``).
On a terminal, progress is a rich bar with ETA. Where output is not a terminal (CI logs, Ray job
logs, a redirected ``make demo``) a bar would print nothing until it ends, so a one-line status
(done/total, rate, the caller's info such as the loss, ETA) is printed every
``NASQ_PROGRESS_EVERY_S`` seconds (default 15) and once at the end instead.
A reporter may also wrap every stage in a context of the caller's (``on_stage``): ``nasq run``
opens the stage's nested MLflow run there."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class Reporter:
    """Stage headers and progress bars (rich); silent when ``console`` is None. ``on_stage(name)``,
    when given, returns a context manager entered around each stage's body (after its header); an
    exception from the stage passes through it."""

    def __init__(self, console: Any = None, total_stages: int = 7,
                 on_stage: Callable[[str], AbstractContextManager[Any]] | None = None):
        self.console, self.total, self.n = console, total_stages, 0
        self.on_stage = on_stage
        self.timings: dict[str, float] = {}

    def say(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text)

    @contextmanager
    def stage(self, name: str, what: str) -> Iterator[None]:
        self.n += 1
        self.say(f"[bold cyan][{self.n}/{self.total}][/] {what}")
        with self.timed(name), self.on_stage(name) if self.on_stage is not None else nullcontext():
            yield
        self.say(f"      [dim]done in {self.timings[name]:.1f} s[/]")

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Time a step inside a stage into ``timings`` (no header: it is not a stage of its own)."""
        t0 = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - t0, 2)

    @contextmanager
    def bar(self, description: str, total: int) -> Iterator[Callable[..., None]]:
        if self.console is None:
            yield lambda *a, **k: None
            return
        if not getattr(self.console, "is_terminal", False):
            status = StatusLines(description, total, lambda line: self.console.print(line, markup=False, highlight=False),
                                 status_interval_s())
            yield status.update
            status.finish()
            return
        with Progress(TextColumn("      {task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=self.console,
                      transient=True) as prog:
            task = prog.add_task(description, total=total, info="")

            def update(done: int, _total: int | None = None, info: str = "") -> None:
                prog.update(task, completed=done, info=info)

            yield update


DEFAULT_STATUS_EVERY_S = 15.0


def status_interval_s() -> float:
    """Seconds between status lines off a terminal: ``NASQ_PROGRESS_EVERY_S`` if it is a positive
    number, else the default (a malformed value must not break a run: it is only cosmetics)."""
    try:
        value = float(os.environ.get("NASQ_PROGRESS_EVERY_S", DEFAULT_STATUS_EVERY_S))
    except ValueError:
        return DEFAULT_STATUS_EVERY_S
    return value if value > 0 else DEFAULT_STATUS_EVERY_S


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class StatusLines:
    """The non-terminal form of a progress bar: ``update(done, total=None, info="")`` like the
    bar's, printing ``say(line)`` at most every ``every_s`` seconds; ``finish()`` prints the last
    state unless it was just printed. ``clock`` is injectable for tests."""

    def __init__(self, description: str, total: float, say: Callable[[str], None], every_s: float,
                 clock: Callable[[], float] = time.monotonic):
        self.description, self.total, self.say, self.every_s, self.clock = description, total, say, every_s, clock
        self.t0 = self.last = clock()
        self.done, self.info, self.printed = 0.0, "", True

    def update(self, done: float, total: float | None = None, info: str = "") -> None:
        self.done, self.info, self.printed = done, info, False
        if total is not None:
            self.total = total
        if self.clock() - self.last >= self.every_s:
            self._print()

    def finish(self) -> None:
        if not self.printed:
            self._print()

    def line(self) -> str:
        elapsed = self.clock() - self.t0
        frac = self.done / self.total if self.total else 0.0
        parts = [f"{self.description}: {100 * frac:.0f} %"]
        if self.total != 1:  # a count, not a fraction: show it and its rate
            parts[0] += f" ({self.done:g}/{self.total:g})"
            if elapsed > 0:
                parts.append(f"{self.done / elapsed:.3g}/s")
        if self.info:
            parts.append(self.info)
        if 0 < frac < 1:
            parts.append(f"ETA {_duration(elapsed * (1 - frac) / frac)}")
        else:
            parts.append(f"elapsed {_duration(elapsed)}")
        return "      " + " | ".join(parts)

    def _print(self) -> None:
        self.say(self.line())
        self.last, self.printed = self.clock(), True
