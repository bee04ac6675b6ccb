from __future__ import annotations

import subprocess
import sys


def test_import_nasq_is_lean():
    code = ("import sys, nasq, nasq.cli, nasq.space, nasq.hardware, nasq.search.pareto; "
            "heavy = [m for m in ('ray', 'mlflow', 'onnxruntime', 'torch', 'pymoo') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_finding_a_run_is_lean():
    """`nasq front` and `nasq export` find the run (nasq.stages.runs) before anything heavy: a
    listing or a bad argument answers without importing torch, mlflow or scikit-learn."""
    code = ("import sys, nasq.stages.runs, nasq.search.query, nasq.cli.report, nasq.cli.service; "
            "heavy = [m for m in ('ray', 'mlflow', 'onnxruntime', 'torch', 'sklearn', 'scipy') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


BLOCKED = ("torch", "ray", "mlflow", "onnxruntime")

# Runs in a fresh interpreter where importing any of BLOCKED raises ImportError (as on an install
# of `nasq[search]` alone): a generic-space search end to end through the public API.
_GENERIC_SEARCH = '''
import sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError("blocked: " + name)
        return None

sys.meta_path.insert(0, Block())
import nasq

OPS = ["none", "skip", "conv1x1", "conv3x3", "avgpool"]
GAIN = dict(zip(OPS, [0.0, 0.3, 0.6, 1.0, 0.2]))
PARAMS = dict(zip(OPS, [0.0, 0.0, 0.1, 0.9, 0.0]))
space = nasq.GenericSpace.of("cell", {{f"op_{{i}}": OPS for i in range(6)}})
front = nasq.search_generic(
    space, lambda specs: [50 + 8 * sum(GAIN[v] for _, v in s.genes) ** 0.7 for s in specs],
    {{"params_m": lambda specs: [0.05 + sum(PARAMS[v] for _, v in s.genes) for s in specs]}},
    [{{"name": "auc", "goal": "max"}}, {{"name": "params_m", "goal": "min"}}], max_true_evals=30, seed=0)
heavy = [m for m in {blocked!r} if m in sys.modules]
print(len(front.points), front.points[0].value("auc"), ",".join(heavy))
'''


def test_generic_search_runs_without_torch():
    code = _GENERIC_SEARCH.format(blocked=BLOCKED)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    n, best, heavy = out.stdout.split()[0], float(out.stdout.split()[1]), out.stdout.strip().split(" ")[2:]
    assert int(n) >= 2 and 50 < best <= 50 + 8 * 6 ** 0.7 and heavy == []
