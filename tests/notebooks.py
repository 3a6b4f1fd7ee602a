"""Run a notebook of ``notebooks/`` from top to bottom in a fresh kernel, with its ``# parameters`` cell replaced."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_notebook(name: str, workdir: Path, parameters: str | None = None) -> tuple[object, str]:
    """Execute ``notebooks/<name>`` in ``workdir`` (the kernel imports this checkout's geodiff); fail on any cell
    error. Returns the executed notebook and the plain-text outputs joined by newlines."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    if parameters is not None:
        cell = next(c for c in nb.cells if c.cell_type == "code" and "# parameters" in c.source)
        cell.source = parameters
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = path
    try:
        client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                         resources={"metadata": {"path": str(workdir)}})
        client.execute()
    finally:
        if previous is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    errors = [f"{o.ename}: {o.evalue}" for o in outputs if o.output_type == "error"]
    assert not errors, errors
    return nb, "\n".join(o.get("data", {}).get("text/plain", "") for o in outputs)
