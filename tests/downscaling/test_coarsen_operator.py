"""CoarsenOperator: exact adjoint, exact on block-constant fields, land-aware, and the xarray `coarsen` twin."""

import numpy as np
import pytest
import torch
import xarray as xr

from geodiff.errors import GridError, ObservationError
from geodiff.operators import CoarsenOperator
from geodiff.pipelines.downscale import coarsen

LAT = np.linspace(-60.0, 70.0, 8)


def land_mask() -> np.ndarray:
    mask = np.ones((2, 8, 12), dtype=bool)
    mask[:, :2, :3] = False  # a whole 2x3 block of land (dropped)
    mask[0, 5, 7] = False  # one land cell inside a block (renormalised)
    return mask


@pytest.mark.parametrize("factor", [2, (2, 3), (4, 4)])
def test_adjoint_identity(factor):
    op = CoarsenOperator((2, 8, 12), factor, mask=land_mask(), grid_lat=LAT)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 8, 12, dtype=torch.float64, generator=g)
    r = torch.randn(3, op.n_obs, dtype=torch.float64, generator=g)
    assert torch.allclose((op(x) * r).sum(), (x * op.adjoint(r)).sum(), rtol=1e-12, atol=0)
    dense = torch.stack([op(torch.eye(2 * 8 * 12, dtype=torch.float64)[k].reshape(1, 2, 8, 12))[0]
                         for k in range(2 * 8 * 12)], dim=1)  # A [N, D] column by column
    assert torch.allclose(op.gram_diagonal(), (dense**2).sum(1), rtol=1e-12, atol=0)


def test_exact_on_block_constant_fields():
    op = CoarsenOperator((2, 8, 12), (2, 3), mask=land_mask(), grid_lat=LAT)
    blocks = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    fine = blocks.repeat_interleave(2, dim=2).repeat_interleave(3, dim=3)
    coarse = op.coarsen(fine)
    kept = torch.zeros(2 * 4 * 4, dtype=torch.bool)
    kept[torch.as_tensor(op.kept)] = True
    assert torch.equal(torch.isnan(coarse).reshape(-1), ~kept)  # only the all-land block is dropped
    assert torch.allclose(coarse.reshape(-1)[kept], blocks.reshape(-1)[kept], rtol=1e-14, atol=1e-14)
    assert op.observed(blocks[0]).shape == (op.n_obs,)


def test_weights_are_area_and_land_aware():
    op = CoarsenOperator((1, 2, 2), 2, mask=np.array([[True, False], [True, True]]), grid_lat=[0.0, 60.0])
    x = torch.tensor([[[[1.0, 100.0], [2.0, 4.0]]]], dtype=torch.float64)
    # weights cos(0) = 1 for the first row (one valid cell), cos(60) = 0.5 for the second row (two cells)
    assert torch.allclose(op(x), torch.tensor([[(1.0 + 0.5 * 2.0 + 0.5 * 4.0) / 2.0]], dtype=torch.float64))


def test_bad_inputs_raise():
    with pytest.raises(GridError, match="multiples of the factor"):
        CoarsenOperator((1, 10, 12), 4)
    with pytest.raises(GridError, match="positive integer"):
        CoarsenOperator((1, 8, 8), 1.5)
    op = CoarsenOperator((1, 4, 4), 2)
    with pytest.raises(ObservationError, match="missing"):
        op.observed(torch.tensor([[[1.0, float("nan")], [0.0, 0.0]]]))


def test_xarray_coarsen_matches_operator():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(3, 8, 12))
    mask = land_mask()[0]
    values[:, ~mask] = np.nan
    da = xr.DataArray(values, dims=("time", "lat", "lon"),
                      coords={"lat": LAT, "lon": np.arange(12.0)}, name="tas", attrs={"units": "K"})
    expected = CoarsenOperator((1, 8, 12), 4, mask=mask, grid_lat=LAT).coarsen(
        torch.from_numpy(np.nan_to_num(values))[:, None])[:, 0]
    out = coarsen(da, 4)
    np.testing.assert_allclose(out.values, expected.numpy(), rtol=1e-12, equal_nan=True)
    assert out.attrs["units"] == "K" and out.name == "tas"
    np.testing.assert_allclose(out["lon"].values, [1.5, 5.5, 9.5])
