"""The assimilation notebook runs from top to bottom at small settings."""

from tests.notebooks import run_notebook

TINY = "TRAIN_TIMES, SPIN_UP_DAYS, AE_STEPS, PRIOR_STEPS, CYCLES, MEMBERS, STEPS = 16, 2, 2, 2, 2, 2, 2"


def test_assimilation_notebook_executes(tmp_path):
    _, text = run_notebook("assimilation.ipynb", tmp_path, TINY)
    assert "'analysis_rmse'" in text and "'var3d_rmse'" in text and "'geostrophic_balance'" in text
    assert (tmp_path / "assimilation.png").stat().st_size > 10_000
