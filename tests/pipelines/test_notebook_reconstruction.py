"""The ocean-reconstruction notebook runs from top to bottom at small settings."""

from tests.notebooks import run_notebook


def test_ocean_reconstruction_notebook_executes(tmp_path):
    _, text = run_notebook("ocean_reconstruction.ipynb", tmp_path, "MEMBERS, STEPS, COVERAGE, MONTH = 2, 10, 0.05, 7")
    assert "'rmse'" in text and "'spread_skill'" in text
    assert (tmp_path / "reconstruction.png").stat().st_size > 10_000
