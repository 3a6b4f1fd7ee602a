"""The downscaling notebook runs from top to bottom at small settings."""

from tests.notebooks import run_notebook


def test_downscaling_notebook_executes(tmp_path):
    _, text = run_notebook("downscaling.ipynb", tmp_path, "MEMBERS, STEPS, YEARS = 2, 3, [0]")
    assert "'crps'" in text and "'high_k_power_ratio'" in text and "member" in text
    assert (tmp_path / "downscaling.png").stat().st_size > 10_000
