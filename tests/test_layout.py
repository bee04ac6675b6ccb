"""The package layout rules of docs/architecture.md that import-linter does not check: few modules
directly in nasq/, and function-local imports only where a module says why it needs them."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nasq"
MAX_TOP_LEVEL_MODULES = 8

# Where an import inside a function is the design, not a hidden edge (see docs/architecture.md).
LAZY_ALLOWED = {
    "cli": "command bodies import their machinery, so `nasq --help` and `nasq validate` stay fast",
    "formats": "torch is loaded only to quantize: the space, hardware and search metadata stay torch-free",
    "cluster": "Ray is imported only after its loopback environment is set",
    "supernet/train.py": "training must import with torch and numpy alone (GPU machines)",
    "export": "onnx is imported only to write or read ONNX: load_export works on a machine that only trains",
    "profiling/backend.py": "listing the registered backends imports no runtime and no torch",
    "profiling/check.py": "drift_note runs before every search: it stays free of torch and the runtimes",
    "profiling/openvino_backend.py": "openvino's submodules are imported where they are used, after the checked import",
    "stages/runs.py": "finding a run (nasq front, a bad nasq export) stays free of torch, mlflow and scikit-learn",
}


def _local_imports(path: Path) -> list[int]:
    """Line numbers of imports inside functions, except those guarded by try/except ImportError
    (an optional dependency with a clear install message)."""
    found: list[int] = []

    def visit(node: ast.AST, in_func: bool, in_try: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom) and in_func and not in_try:
                found.append(child.lineno)
            visit(child, in_func or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef),
                  in_try or isinstance(child, ast.Try))

    visit(ast.parse(path.read_text()), False, False)
    return found


def test_few_modules_directly_in_nasq():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_function_local_imports_only_where_allowed():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if any(rel == key or rel.startswith(f"{key}/") for key in LAZY_ALLOWED):
            continue
        offenders += [f"nasq/{rel}:{line}" for line in _local_imports(path)]
    assert offenders == [], "imports inside functions hide upward edges; move them to the module top"


def test_the_layout_check_sees_a_local_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    import json\n    try:\n        import yaml\n    except ImportError:\n        pass\n")
    assert _local_imports(probe) == [2]
