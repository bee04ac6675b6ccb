"""Execute the notebooks on tiny settings (NASQ_QUICK=1): they must run top to bottom."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))

pytestmark = [pytest.mark.slow, pytest.mark.notebooks, pytest.mark.ray]
# what each notebook must print (default: a front)
EXPECTED = {"01_quickstart": ("points on the front", "max |onnx - torch|"),
            "02_custom_search": ("points on the front", "6 genes, 15625 cells")}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("NASQ_QUICK", "1")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert all(want in text for want in EXPECTED.get(path.stem, ("points on the front",)))


def test_there_is_a_quickstart():
    assert any(p.name == "01_quickstart.ipynb" for p in NOTEBOOKS)
    assert any(p.name == "02_custom_search.ipynb" for p in NOTEBOOKS)
