from __future__ import annotations

import subprocess
import sys


def test_import_nasq_is_lean():
    code = ("import sys, nasq, nasq.cli, nasq.space, nasq.hardware, nasq.search.pareto; "
            "heavy = [m for m in ('ray', 'mlflow', 'onnxruntime', 'torch', 'pymoo') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
