"""The adapters notebook runs from top to bottom (it writes its own small files)."""

from __future__ import annotations

from tests.notebooks import run_notebook


def test_data_adapters_notebook_executes(tmp_path):
    nb, text = run_notebook("data_adapters.ipynb", tmp_path)
    code_lines = [line for cell in nb.cells if cell.cell_type == "code" for line in cell.source.splitlines()
                  if line.strip() and not line.strip().startswith("#")]
    assert len(code_lines) < 20  # "in under 20 lines of user code"
    assert "(time: 6, depth: 42, lat: 173, lon: 360)" in text and "Dimensions:    (obs:" in text
