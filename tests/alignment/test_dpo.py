"""Diffusion-DPO: known value and gradient at the reference, and fine-tuning moves towards the winners."""

import copy
import math

import pytest
import torch

from geodiff.alignment.dpo import denoising_error, dpo_finetune, dpo_loss
from geodiff.backbones.unet import UNet
from geodiff.diffusion.denoiser import Denoiser
from geodiff.errors import ConfigError, GridError


def tiny(seed=0):
    torch.manual_seed(seed)
    net = UNet(in_channels=1, base_channels=8, channel_mults=(1,), num_res_blocks=1)
    for p in net.parameters():  # the output layer starts at 0; give every weight a value
        torch.nn.init.normal_(p, std=0.05)
    return Denoiser(net, sigma_data=1.0)


def test_loss_is_log2_at_the_reference_and_its_gradient_is_the_error_difference():
    policy = tiny()
    reference = copy.deepcopy(policy)
    g = torch.Generator().manual_seed(0)
    w, l, noise = torch.randn(3, 4, 1, 8, 8, generator=g)
    sigma = torch.tensor([0.3, 1.0, 2.0, 5.0], dtype=torch.float64)
    beta = 7.0
    loss = dpo_loss(policy, reference, w, l, sigma, noise, beta=beta)
    assert abs(loss.item() - math.log(2)) < 1e-7
    grads = torch.autograd.grad(loss, list(policy.parameters()))
    # d/dtheta -log sigmoid(-beta m) at m = 0 is (beta / 2) dm/dtheta; m = e(w) - e(l) - const
    margin = (denoising_error(policy, w, sigma, noise) - denoising_error(policy, l, sigma, noise)).mean()
    expected = torch.autograd.grad(0.5 * beta * margin, list(policy.parameters()))
    assert any(e.abs().max() > 1e-6 for e in expected)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)


def test_identical_winner_and_loser_give_zero_gradient():
    policy = tiny(1)
    reference = copy.deepcopy(policy)
    x, noise = torch.randn(2, 3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    loss = dpo_loss(policy, reference, x, x.clone(), torch.ones(3, dtype=torch.float64), noise)
    for grad in torch.autograd.grad(loss, list(policy.parameters())):
        assert grad.abs().max() == 0


def test_finetuning_lowers_the_loss_and_favours_the_winners():
    policy = tiny(2)
    g = torch.Generator().manual_seed(2)
    winners = 0.2 * torch.randn(32, 1, 8, 8, generator=g) + 1.0
    losers = 0.2 * torch.randn(32, 1, 8, 8, generator=g) - 1.0
    result = dpo_finetune(policy, winners, losers, steps=20, batch_size=8, beta=50.0, lr=5e-3, progress=False)
    assert len(result.losses) == 20 and abs(result.losses[0] - math.log(2)) < 1e-6
    assert sum(result.losses[-5:]) / 5 < math.log(2) - 0.05
    sigma = torch.full((32,), 0.5, dtype=torch.float64)
    noise = torch.randn(winners.shape, generator=g)
    with torch.no_grad():
        ref_w, ref_l = (denoising_error(result.reference, x, sigma, noise) for x in (winners, losers))
        gain_w = ref_w - denoising_error(policy, winners, sigma, noise)
        gain_l = ref_l - denoising_error(policy, losers, sigma, noise)
    assert gain_w.mean() > gain_l.mean()


def test_early_stopping_keeps_the_weights_of_the_best_validation_step():
    g = torch.Generator().manual_seed(3)
    winners = 0.2 * torch.randn(24, 1, 8, 8, generator=g) + 1.0
    losers = 0.2 * torch.randn(24, 1, 8, 8, generator=g) - 1.0
    # held-out pairs that prefer the opposite: training on the others soon makes them worse
    validation = (losers[:8] + 0.1, winners[:8] - 0.1, None)
    options = dict(batch_size=8, beta=50.0, lr=5e-3, seed=4, progress=False)
    policy = tiny(3)
    initial = copy.deepcopy(policy.state_dict())
    result = dpo_finetune(policy, winners, losers, steps=12, validation=validation, eval_every=4, **options)
    assert len(result.validation_losses) == 4  # steps 0, 4, 8, 12
    assert abs(result.validation_losses[0] - math.log(2)) < 1e-6
    assert result.best_step == 0 == min(range(4), key=result.validation_losses.__getitem__)
    assert all(torch.equal(initial[k], v) for k, v in policy.state_dict().items())
    # held-out pairs like the training ones improve: a later step is kept, below log 2
    policy = tiny(3)
    result = dpo_finetune(policy, winners, losers, steps=12, validation=(winners[:8], losers[:8], None),
                          eval_every=4, **options)  # fmt: skip
    best = min(range(4), key=result.validation_losses.__getitem__)
    assert result.best_step == 4 * best > 0 and result.validation_losses[best] < math.log(2) - 0.01
    # the kept weights are exactly those of plain training for best_step steps (same batches and noise)
    plain = tiny(3)
    dpo_finetune(plain, winners, losers, steps=result.best_step, **options)
    for name, value in plain.state_dict().items():
        assert torch.equal(policy.state_dict()[name], value), name


def test_validation_pairs_must_match_the_training_pairs():
    winners = torch.zeros(4, 1, 8, 8)
    with pytest.raises(GridError, match="validation winners"):
        dpo_finetune(tiny(), winners, winners, steps=1, validation=(winners[:, :, :4], winners, None), progress=False)
    with pytest.raises(GridError, match="validation pairs"):
        dpo_finetune(tiny(), winners, winners, steps=1, validation=(winners[:, :, :4], winners[:, :, :4], None),
                     progress=False)  # fmt: skip
    with pytest.raises(ConfigError, match="eval_every"):
        dpo_finetune(tiny(), winners, winners, steps=1, validation=(winners, winners, None), eval_every=0,
                     progress=False)  # fmt: skip
