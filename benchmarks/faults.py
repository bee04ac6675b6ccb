"""Fault injection, measured: runs the fault tests (real Ray, real MLflow server, real processes,
real disk-full via RLIMIT_FSIZE) with ``$NASQ_FAULTS_REPORT`` set, collects what each saw (front
identical or not, ledger rows and distinct keys, exit codes, run states) and writes the table to
docs/benchmarks.md. The same tests run in ``make test``, where they assert these figures.

    .venv/bin/python benchmarks/faults.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import write_section

REPO = Path(__file__).resolve().parents[1]
TESTS = [
    "tests/integration/test_faults.py",
    "tests/unit/test_cli_search.py::test_search_resume_after_kill",
    "tests/unit/test_state_stores.py::test_concurrent_searches_share_the_ledger",
    "tests/unit/test_state_stores.py::test_disk_full_while_saving_keeps_the_previous_supernet",
    "tests/integration/test_run_lifecycle.py::test_sigterm_to_nasq_run_fails_the_run_and_exits_143",
    "tests/integration/test_run_lifecycle.py::test_server_down_at_start_is_one_line_exit_2_and_writes_nothing",
    "tests/integration/test_run_lifecycle.py::test_server_lost_mid_run_fails_cleanly",
]


def main() -> int:
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": "disabled"}
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "faults.jsonl"
        env["NASQ_FAULTS_REPORT"] = str(report)
        load = os.getloadavg()[0]
        t0 = time.monotonic()
        out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS], cwd=REPO,
                             env=env, capture_output=True, text=True)
        wall = time.monotonic() - t0
        rows = [json.loads(line) for line in report.read_text().splitlines()] if report.is_file() else []
    summary = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "(no pytest output)"
    print(f"pytest: {summary} in {wall:.0f} s (load average at start {load:.2f})")
    lines = ["## Fault injection", "",
             f"`python benchmarks/faults.py` ran {len(TESTS)} fault tests ({summary}; {wall:.0f} s wall; "
             f"1-min load average at start {load:.2f}, other work was running: a loaded machine). "
             "Each row is what one test observed; the tests assert the same figures in `make test`.", "",
             "| fault | observed |", "|---|---|"]
    for r in rows:
        fault = r.pop("fault")
        observed = ", ".join(f"{k} = {v}" for k, v in sorted(r.items()))
        print(f"- {fault}: {observed}")
        lines.append(f"| {fault} | {observed.replace('|', '/')} |")
    write_section("faults", "\n".join(lines))
    return 0 if out.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
