"""The adapters notebook runs from top to bottom (it writes its own small files)."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "data_adapters.ipynb"


def test_data_adapters_notebook_executes(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code_lines = [line for cell in nb.cells if cell.cell_type == "code" for line in cell.source.splitlines()
                  if line.strip() and not line.strip().startswith("#")]
    assert len(code_lines) < 20  # "in under 20 lines of user code"
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "(time: 6, depth: 42, lat: 173, lon: 360)" in text and "Dimensions:    (obs:" in text
