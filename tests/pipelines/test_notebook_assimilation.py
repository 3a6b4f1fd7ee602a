"""The assimilation notebook runs from top to bottom at small settings."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "assimilation.ipynb"


def test_assimilation_notebook_executes(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    parameters = next(cell for cell in nb.cells if cell.cell_type == "code" and "# parameters" in cell.source)
    parameters.source = ("TRAIN_TIMES, SPIN_UP_DAYS, AE_STEPS, PRIOR_STEPS, CYCLES, MEMBERS, STEPS = "
                         "16, 2, 2, 2, 2, 2, 2")
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    errors = [f"{o.ename}: {o.evalue}" for o in outputs if o.output_type == "error"]
    assert not errors, errors
    text = "\n".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "'analysis_rmse'" in text and "'var3d_rmse'" in text and "'geostrophic_balance'" in text
    assert (tmp_path / "assimilation.png").stat().st_size > 10_000
