"""One loop for every objective: autoencoder, regression and Diffusion-DPO resume bitwise like denoising, the mask
reaches the denoiser per call, and the loop's options (cosine decay, validation, no EMA) do what they say."""

import math

import pytest
import torch

import geodiff
from geodiff.alignment.dpo import DPOObjective, dpo_finetune
from geodiff.backbones.autoencoder import Autoencoder
from geodiff.backbones.unet import UNet
from geodiff.baselines.regression import RegressionModel
from geodiff.diffusion.denoiser import Denoiser
from geodiff.errors import CheckpointError, ConfigError, DataError, GridError
from geodiff.training import AutoencoderObjective, RegressionObjective, read_checkpoint
from geodiff.training.autoencoder import train_autoencoder
from geodiff.training.pairs import DownscalingPairs
from geodiff.training.regression import train_regression

from tests.downscaling.conftest import tiny_net
from tests.training.training_helpers import gaussian_data, tiny_denoiser


def autoencoder_case():
    torch.manual_seed(0)
    model = Autoencoder(2, 2, base_channels=8, channel_mults=(1, 2))
    data = gaussian_data(10, seed=1)
    # the cosine decay spans 6 steps however far a call goes (by default it spans the call's steps)
    return model, lambda **kw: train_autoencoder(model, data, batch_size=4, lr=3e-3, seed=5, cosine_steps=6,
                                                 progress=False, **kw)


def regression_case():
    torch.manual_seed(0)
    model = RegressionModel(tiny_net(sources={"coarse": 1}, source_dropout=0.0))
    g = torch.Generator().manual_seed(0)
    pairs = DownscalingPairs(torch.randn(6, 1, 16, 16, generator=g), 4, patch=(8, 8), patches_per_field=2)
    return model, lambda **kw: train_regression(model, pairs, batch_size=4, lr=3e-3, seed=5, progress=False, **kw)


def dpo_case():
    model = tiny_denoiser(3)
    g = torch.Generator().manual_seed(3)
    winners = 0.2 * torch.randn(12, 2, 4, 4, generator=g) + 1.0
    losers = 0.2 * torch.randn(12, 2, 4, 4, generator=g) - 1.0
    options = dict(batch_size=4, beta=50.0, lr=5e-3, seed=4, eval_every=2, progress=False,
                   validation=(losers[:4] + 0.1, winners[:4] - 0.1, None))
    return model, lambda **kw: dpo_finetune(model, winners, losers, **options, **kw)


CASES = {"autoencoder": autoencoder_case, "regression": regression_case, "dpo": dpo_case}


def losses_of(result):
    return result if isinstance(result, list) else result.losses


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_objective_resumes_bitwise(case, tmp_path):
    model, run = CASES[case]()
    full = run(steps=6, checkpoint_dir=tmp_path / "full", checkpoint_every=2)
    full_state = {k: v.clone() for k, v in model.state_dict().items()}

    _, run = CASES[case]()
    run(steps=3, checkpoint_dir=tmp_path / "split", checkpoint_every=2)
    model, run = CASES[case]()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # the checkpoint restores everything
    resumed = run(steps=6, checkpoint_dir=tmp_path / "split", checkpoint_every=2)
    assert losses_of(resumed) == losses_of(full) and len(losses_of(full)) == 6
    for name, value in model.state_dict().items():
        assert torch.equal(value, full_state[name]), name
    if case == "dpo":  # validation history and the kept (best) weights are part of the state
        assert resumed.validation_losses == full.validation_losses and len(full.validation_losses) == 4  # 0, 2, 4, 6
        assert resumed.best_step == full.best_step
    # and a run is a pure function of its settings
    model, run = CASES[case]()
    assert losses_of(run(steps=6)) == losses_of(full)


def test_checkpoint_records_the_objective_and_refuses_another(tmp_path):
    torch.manual_seed(0)
    model = Autoencoder(2, 2, base_channels=8, channel_mults=(1, 2))
    options = dict(batch_size=4, lr=3e-3, seed=5, checkpoint_dir=tmp_path, progress=False)
    train_autoencoder(model, gaussian_data(10, seed=1), steps=2, **options)
    tensors, meta = read_checkpoint(tmp_path / "step-00000002")
    assert meta["settings"]["loss"] == {"name": "autoencoder", "latent_weight": 1e-3}
    assert meta["settings"]["cosine_steps"] == 2 and "ema" not in tensors and meta["ema"] is None
    with pytest.raises(CheckpointError, match="latent_weight"):
        train_autoencoder(model, gaussian_data(10, seed=1), steps=2, latent_weight=0.1, **options)
    with pytest.raises(CheckpointError, match="cosine_steps"):
        train_autoencoder(model, gaussian_data(10, seed=1), steps=4, **options)


def test_cosine_decay_and_warm_up_set_the_learning_rate_of_each_step(tmp_path):
    denoiser = tiny_denoiser()
    geodiff.train(denoiser, gaussian_data(8), steps=3, batch_size=4, lr=0.01, warmup_steps=2, cosine_steps=4,
                  checkpoint_dir=tmp_path, progress=False)
    _, meta = read_checkpoint(tmp_path / "step-00000003")
    # step index 2 (0-based): warm-up done, cosine at 2 of 4 steps
    assert meta["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.01 * (1 + math.cos(math.pi / 2)) / 2)


def test_a_rescheduled_resume_follows_the_new_cosine_and_refuses_other_changes(tmp_path):
    denoiser = tiny_denoiser()
    options = dict(batch_size=4, lr=0.01, warmup_steps=1, checkpoint_dir=tmp_path, progress=False)
    geodiff.train(denoiser, gaussian_data(8), steps=2, cosine_steps=4, **options)
    with pytest.raises(CheckpointError, match="cosine_steps"):  # without reschedule a changed schedule is refused
        geodiff.train(denoiser, gaussian_data(8), steps=3, cosine_steps=8, **options)
    with pytest.raises(CheckpointError, match="lr"):  # reschedule frees the cosine length only
        geodiff.train(denoiser, gaussian_data(8), steps=3, cosine_steps=8, reschedule=True,
                      **{**options, "lr": 0.02})
    geodiff.train(denoiser, gaussian_data(8), steps=3, cosine_steps=8, reschedule=True, **options)
    _, meta = read_checkpoint(tmp_path / "step-00000003")
    # step index 2 of the new 8-step cosine, and the checkpoint now records that schedule
    assert meta["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.01 * (1 + math.cos(math.pi * 2 / 8)) / 2)
    assert meta["settings"]["cosine_steps"] == 8


def test_the_denoiser_gets_the_mask_of_its_crops_per_call_and_keeps_its_own():
    seen = []

    class Recording(UNet):
        def forward(self, x, noise_label, *, mask=None, cond=None):
            seen.append(None if mask is None else tuple(mask.shape))
            return super().forward(x, noise_label, mask=mask, cond=cond)

    torch.manual_seed(0)
    mask = torch.ones(1, 8, 8, dtype=torch.bool)
    mask[:, :3, :3] = False
    denoiser = Denoiser(Recording(in_channels=1, base_channels=8, channel_mults=(1,), num_res_blocks=1,
                                  attention_levels=()), mask=mask)  # fmt: skip
    stored = denoiser.mask
    data = torch.randn(6, 1, 8, 8) * mask
    geodiff.train(denoiser, data, steps=2, batch_size=3, patch_size=(4, 4), progress=False)
    assert seen == [(3, 1, 4, 4)] * 2  # the crops' mask, one per sample
    assert denoiser.mask is stored and torch.equal(stored, mask)


def test_a_mask_passed_per_call_equals_a_stored_mask():
    mask = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(0)) > 0.3
    plain, stored = tiny_denoiser(), tiny_denoiser(mask=mask)
    x = torch.randn(3, 2, 4, 4)
    for sigma in (0.7, torch.tensor([0.1, 1.0, 5.0], dtype=torch.float64)):
        assert torch.equal(plain(x, sigma, mask=mask), stored(x, sigma))
        assert torch.equal(plain(x, sigma, mask=mask.expand(3, 2, 4, 4)), stored(x, sigma))
    assert plain.mask is None
    with pytest.raises(GridError, match="mask must be a bool tensor"):
        plain(x, 0.7, mask=mask[:, :2])
    with pytest.raises(GridError, match="mask must be a bool tensor"):
        plain(x, 0.7, mask=mask.float())


def test_validation_keeps_the_best_weights_and_no_ema_gives_none():
    denoiser = tiny_denoiser()
    data = gaussian_data(8)
    calls = []

    def validation(model):
        calls.append(model.training)
        return float(len(calls) != 2)  # the measurement after eval_every steps is the best one

    result = geodiff.train(denoiser, data, steps=5, batch_size=4, lr=1e-2, ema_decay=None, validation=validation,
                           eval_every=2, progress=False)
    assert result.ema is None and result.model is denoiser
    assert calls == [False] * 3 and result.validation_losses == [1.0, 0.0, 1.0]  # steps 0, 2, 4
    assert result.best_step == 2
    again = tiny_denoiser()
    geodiff.train(again, data, steps=2, batch_size=4, lr=1e-2, ema_decay=None, progress=False)
    for name, value in again.state_dict().items():
        assert torch.equal(denoiser.state_dict()[name], value), name


def test_objectives_refuse_what_they_cannot_train():
    denoiser = tiny_denoiser()
    pairs = torch.zeros(4, 2, 2, 4, 4)
    with pytest.raises(ConfigError, match="either loss= .* or objective="):
        geodiff.train(denoiser, gaussian_data(4), steps=1, batch_size=2, loss="ddpm", objective=RegressionObjective(),
                      progress=False)
    with pytest.raises(ConfigError, match="crops"):
        geodiff.train(denoiser, pairs, steps=1, batch_size=2, objective=DPOObjective(), patch_size=(2, 2),
                      progress=False)
    with pytest.raises(GridError, match=r"pairs \[N, 2, C, H, W\]"):
        geodiff.train(denoiser, gaussian_data(4), steps=1, batch_size=2, objective=DPOObjective(), progress=False)
    with pytest.raises(GridError, match=r"\[N, C, H, W\]"):
        geodiff.train(denoiser, pairs, steps=1, batch_size=2, progress=False)
    with pytest.raises(ConfigError, match="latent_weight"):
        AutoencoderObjective(latent_weight=-1.0)
    with pytest.raises(DataError, match="NaN"):
        train_autoencoder(Autoencoder(2, 2, base_channels=8), torch.full((4, 2, 4, 4), math.nan), steps=1,
                          progress=False)
    with pytest.raises(ConfigError, match="non-finite"):
        geodiff.train(tiny_denoiser(), gaussian_data(4) * 1e30, steps=2, batch_size=2, lr=1.0, progress=False)


def test_training_logs_its_losses_and_the_validation_loss(caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="geodiff"):
        geodiff.train(tiny_denoiser(), gaussian_data(8), steps=4, batch_size=4, lr=1e-2, ema_decay=None,
                      validation=lambda model: 0.5, eval_every=2, progress=False)
    lines = [r.message for r in caplog.records if r.name == "geodiff.training.trainer"]
    assert lines[0].startswith("training steps 1..4, batch 4")
    assert "step 0: validation loss 0.5 (best 0.5 at step 0)" in lines
    assert "step 4: validation loss 0.5 (best 0.5 at step 0)" in lines
    assert any(line.startswith("step 4/4: training loss ") for line in lines)
    assert lines[-1].startswith("trained 4 steps in ") and "best validation loss 0.5 at step 0" in lines[-1]
