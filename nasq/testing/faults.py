"""What a fault-injection test saw, for ``benchmarks/faults.py``: each call appends one JSON line to
``$NASQ_FAULTS_REPORT`` when that variable is set (the benchmark runs the fault tests with it), and
does nothing otherwise. The tests assert on the same figures they record."""

from __future__ import annotations

import json
import os

REPORT_ENV = "NASQ_FAULTS_REPORT"


def record(fault: str, **figures: object) -> None:
    path = os.environ.get(REPORT_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"fault": fault, **figures}, sort_keys=True, default=str) + "\n")
