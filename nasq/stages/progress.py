"""Stage headers and progress bars for the pipeline's console (rich); silent without a console.
A reporter may also wrap every stage in a context of the caller's (``on_stage``): ``nasq run``
opens the stage's nested MLflow run there."""

from __future__ import annotations

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
        t0 = time.perf_counter()
        with self.on_stage(name) if self.on_stage is not None else nullcontext():
            yield
        self.timings[name] = round(time.perf_counter() - t0, 2)
        self.say(f"      [dim]done in {self.timings[name]:.1f} s[/]")

    @contextmanager
    def bar(self, description: str, total: int) -> Iterator[Callable[..., None]]:
        if self.console is None:
            yield lambda *a, **k: None
            return
        with Progress(TextColumn("      {task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=self.console,
                      transient=True) as prog:
            task = prog.add_task(description, total=total, info="")

            def update(done: int, _total: int | None = None, info: str = "") -> None:
                prog.update(task, completed=done, info=info)

            yield update
