"""Write a benchmark's section into docs/benchmarks.md between its own markers."""

from __future__ import annotations

import platform
import re
from datetime import UTC, datetime
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def load_average() -> list[str]:
    """The 1-, 5- and 15-minute load averages as /proc/loadavg writes them (["?"] where there is none)."""
    path = Path("/proc/loadavg")
    return path.read_text().split()[:3] if path.exists() else ["?"]


def measured_here() -> str:
    """When and where: "2026-11-30 17:45 UTC on x86_64, 16 cores, Python 3.12.3"."""
    return f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} on {machine()}"


def write_section(name: str, body: str, measured: str | None = None) -> Path:
    """Replace (or append) the block between ``<!-- name:begin -->`` and ``<!-- name:end -->``;
    ``measured`` (default: now, here) names when and where figures measured elsewhere were taken."""
    block = (f"<!-- {name}:begin -->\n_Measured {measured or measured_here()}._\n\n{body.strip()}\n"
             f"<!-- {name}:end -->")
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"<!-- {re.escape(name)}:begin -->.*?<!-- {re.escape(name)}:end -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text)
    return DOC
