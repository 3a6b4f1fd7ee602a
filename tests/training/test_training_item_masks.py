"""Datasets whose items carry their own masks (downscaling patches cut at varying positions): land stays out of
the training loss of the conditional models, and a mask that is all valid changes nothing."""

import pytest
import torch

import geodiff
from geodiff.diffusion.denoiser import Denoiser
from geodiff.diffusion.residual import RegressionModel
from geodiff.errors import ConfigError, DataError
from geodiff.training import RegressionObjective
from geodiff.training.data import stack_items
from geodiff.training.pairs import DownscalingPairs
from tests.downscaling.conftest import tiny_net


def land_case():
    """Fields ``[6, 1, 16, 16]`` (land = 0), the same fields with large values on land, and the mask."""
    g = torch.Generator().manual_seed(0)
    fields = torch.randn(6, 1, 16, 16, generator=g)
    mask = torch.ones(1, 16, 16, dtype=torch.bool)
    mask[:, 2:9, 3:12] = False  # a block of land larger than a coarse cell
    clean = fields * mask
    dirty = torch.where(mask, fields, 50.0 + 10 * fields)
    return clean, dirty, mask


def pairs(fields, mask):
    return DownscalingPairs(fields, 4, mask=mask, patch=(8, 8), patches_per_field=3, seed=2)


def fit(model, data, objective=None):
    torch.manual_seed(0)
    extra = {} if objective is None else {"objective": objective}
    result = geodiff.train(model, data, steps=4, batch_size=6, lr=3e-3, ema_decay=None, progress=False, **extra)
    return result.losses, [p.detach().clone() for p in model.parameters()]


def regression():
    torch.manual_seed(0)
    return RegressionModel(tiny_net(sources={"coarse": 1}, source_dropout=0.0), coarse_skip=True)


def conditional_denoiser():
    torch.manual_seed(0)
    return Denoiser(tiny_net(sources={"coarse": 1}, source_dropout=0.0), sigma_data=1.0)


def test_items_carry_the_mask_of_their_patch():
    clean, _, mask = land_case()
    data = pairs(clean, mask)
    for index in range(len(data)):
        x, cond, item_mask = data[index]
        _, (i0, i1, j0, j1) = data.window(index)
        assert torch.equal(item_mask, mask[:, i0:i1, j0:j1])
    assert len(DownscalingPairs(clean, 4, patch=(8, 8))[0]) == 2  # without a mask: (x, cond) pairs as before
    assert any(not data[i][2].all() for i in range(len(data)))  # some patches hold land, so the tests can fail


@pytest.mark.parametrize("model, objective", [(regression, RegressionObjective()), (conditional_denoiser, None)])
def test_land_values_do_not_reach_the_loss(model, objective):
    clean, dirty, mask = land_case()
    clean_losses, clean_weights = fit(model(), pairs(clean, mask), objective)
    dirty_losses, dirty_weights = fit(model(), pairs(dirty, mask), objective)
    assert clean_losses == dirty_losses
    assert all(torch.equal(a, b) for a, b in zip(clean_weights, dirty_weights))
    # without item masks the land values are targets: the same check fails
    unmasked = DownscalingPairs(dirty, 4, patch=(8, 8), patches_per_field=3, seed=2)
    unmasked.sources = pairs(dirty, mask).sources  # the same (land-aware) coarse inputs
    assert fit(model(), unmasked, objective)[0] != clean_losses


def test_the_loss_is_the_mean_over_valid_cells():
    clean, _, mask = land_case()
    data = pairs(clean, mask)
    model = regression()
    torch.manual_seed(0)
    first = geodiff.train(model, data, steps=1, batch_size=len(data), lr=1e-30, ema_decay=None, progress=False,
                          objective=RegressionObjective()).losses[0]
    x, cond, item_mask = stack_items([data[i] for i in range(len(data))])
    model.eval()
    with torch.no_grad():
        error = (model(x, None, cond) - x) ** 2
    assert first == pytest.approx(float(error[item_mask].mean()), rel=1e-5)
    assert first != pytest.approx(float(error.mean()), rel=1e-3)


def test_all_valid_item_masks_train_bitwise_like_no_mask():
    clean, _, _ = land_case()
    everywhere = torch.ones(1, 16, 16, dtype=torch.bool)
    with_mask = fit(regression(), pairs(clean, everywhere), RegressionObjective())
    without = fit(regression(), DownscalingPairs(clean, 4, patch=(8, 8), patches_per_field=3, seed=2),
                  RegressionObjective())
    assert with_mask[0] == without[0]
    assert all(torch.equal(a, b) for a, b in zip(with_mask[1], without[1]))


def test_item_masks_are_checked():
    clean, _, mask = land_case()
    data = pairs(clean, mask)
    with pytest.raises(ConfigError, match="carry their own masks"):
        geodiff.train(regression(), data, mask=mask[:, :8, :8], steps=1, batch_size=2, progress=False,
                      objective=RegressionObjective())
    x, cond, _ = data[0]
    with pytest.raises(DataError, match=r"mask of a dataset item must be a bool tensor \[C, H, W\]"):
        stack_items([(x, cond, torch.ones(1, 4, 4, dtype=torch.bool))])
    with pytest.raises(DataError, match="every dataset item carries a mask or none"):
        stack_items([(x, cond), (x, cond, torch.ones_like(x, dtype=torch.bool))])
