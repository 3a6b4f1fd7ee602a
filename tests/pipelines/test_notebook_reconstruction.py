"""The ocean-reconstruction notebook runs from top to bottom at small settings."""

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "ocean_reconstruction.ipynb"


def test_ocean_reconstruction_notebook_executes(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    parameters = next(cell for cell in nb.cells if cell.cell_type == "code" and "# parameters" in cell.source)
    parameters.source = "MEMBERS, STEPS, COVERAGE, MONTH = 2, 10, 0.05, 7"
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    errors = [f"{o.ename}: {o.evalue}" for o in outputs if o.output_type == "error"]
    assert not errors, errors
    text = "\n".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "'rmse'" in text and "'spread_skill'" in text
    assert (tmp_path / "reconstruction.png").stat().st_size > 10_000
