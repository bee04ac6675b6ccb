"""``nasq run`` and ``nasq search`` run in a child process watched by the ``nasq`` process itself.

Why: a Ray driver is terminated from inside Ray's C++ core worker when its node goes away (the
raylet dies, or one of Ray's agents does and takes the raylet with it: "The connection to the
plasma store is failed. Terminate the process"). Python sees no exception, so nasq could neither
say what happened nor where the work stands: the process just ended with exit 1. The supervisor
(this module) turns any such death - Ray's, the kernel's OOM killer's, a signal nobody handled -
into one ``nasq: error:`` line saying how the child ended and, when a search checkpoint exists,
the ``nasq search ... --resume`` command that continues it.

The child is the same command line with ``NASQ_SUPERVISED=1`` in its environment. It shares the
terminal, stdout and stderr, and the process group (Ctrl-C reaches it directly; a process-group
signal, which is what ``ray job stop`` sends, too). SIGTERM/SIGHUP/SIGINT sent to the supervisor
alone are forwarded. The child is started with ``PR_SET_PDEATHSIG`` = SIGKILL, so killing the
supervisor (even with SIGKILL) still ends the work, as if there were one process. Exit codes pass
through unchanged: 0, 2 (a nasq error, already printed by the child), 130/143 (interrupted).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

CHILD_ENV = "NASQ_SUPERVISED"
SUPERVISED = ("run", "search")
PASS_THROUGH = (0, 2, 130, 143)  # the child's own, already explained, outcomes
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: killing the supervisor then leaves the child running to its end


def wanted(argv: list[str]) -> bool:
    return (not os.environ.get(CHILD_ENV) and bool(argv) and argv[0] in SUPERVISED
            and not {"--help", "-h"} & set(argv))


def supervise(argv: list[str]) -> int:
    """Run ``nasq <argv>`` as a child; return the exit code ``nasq`` should end with."""
    env = {**os.environ, CHILD_ENV: "1"}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "nasq.cli", *argv], env=env,
                            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    forwarded: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        if proc.poll() is None:
            forwarded.append(signum)
            try:
                proc.send_signal(signum)
            except ProcessLookupError:
                pass

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    try:
        while True:
            try:
                rc = proc.wait()
                break
            except KeyboardInterrupt:  # pragma: no cover - the handler above replaces SIGINT's default
                continue
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if rc in PASS_THROUGH:
        return rc
    if rc < 0 and -rc in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP) and forwarded:
        return 128 - rc
    how = f"was killed by {signal.Signals(-rc).name}" if rc < 0 else f"exited with code {rc}"
    print(f"nasq: error: the {argv[0]} process {how} after {time.monotonic() - started:.0f} s without a nasq "
          f"error of its own (an embedded Ray node that died terminates its driver this way; so does the "
          f"OOM killer){_hint(argv)}", file=sys.stderr, flush=True)
    return rc if 0 < rc < 128 else 1


def _option(argv: list[str], name: str) -> str | None:
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def _hint(argv: list[str]) -> str:
    """Where the work stands, and the command that continues it (best effort, never raises)."""
    try:
        from nasq.errors import NasqError
        from nasq.experiment import load_experiment
        from nasq.search.state import STATE_FILE
    except ImportError:  # pragma: no cover
        return ""
    positional = [a for a in argv[1:] if not a.startswith("-")]
    try:
        exp = load_experiment(Path(positional[0]) if positional else None)
    except (NasqError, OSError, ValueError):
        return ""
    folder = _option(argv, "--resume") or _option(argv, "--out") or str(exp.workdir)
    if (Path(folder) / STATE_FILE).is_file():
        return (f"; the search checkpoint {Path(folder) / STATE_FILE} is intact: continue with "
                f"`nasq search {exp.source} --resume {folder}`")
    return ""
