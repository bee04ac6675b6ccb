"""This machine's CPU as ``/proc/cpuinfo`` describes it: its model name (profiles and host checks)
and its instruction-set flags (the export's int8 weight storage). Read once per process.
Torch-free."""

from __future__ import annotations

import functools
import platform
from pathlib import Path


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first CPU's ``key: value`` lines (empty where ``/proc/cpuinfo`` cannot be read)."""
    out: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep:
                out.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return out


def cpu_model() -> str:
    """The CPU's model name, for profiles and host checks."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_flags() -> frozenset[str] | None:
    """The instruction-set flags (None where they cannot be read)."""
    flags = _cpuinfo().get("flags")
    return None if flags is None else frozenset(flags.split())
