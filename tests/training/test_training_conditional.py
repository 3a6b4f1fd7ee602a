"""train() with conditioning: the batch's cond reaches the denoiser, Dataset pairs equal tensor + cond, and a tiny
conditional model learns a conditional mean."""

import math

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

import geodiff
from geodiff.config import Configurable
from geodiff.diffusion.denoiser import Denoiser
from geodiff.diffusion.samplers import HeunSampler
from geodiff.diffusion.schedules import EDMSchedule
from geodiff.errors import ConfigError, DataError, GridError


class OffsetNet(Configurable, nn.Module):
    """Per-pixel backbone whose input is the noisy field plus a channel holding ``cond["offset"]`` ``[B]``."""

    def __init__(self, hidden: int = 32, frequencies: int = 4):
        super().__init__()
        self.register_buffer("freqs", 2 ** torch.arange(frequencies, dtype=torch.float32) * math.pi / 4)
        self.embed = nn.Linear(2 * frequencies, 2 * hidden)
        self.inp = nn.Conv2d(2, hidden, 1)
        self.mid = nn.Conv2d(hidden, hidden, 1)
        self.out = nn.Conv2d(hidden, 1, 1)
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x, noise_label, *, mask=None, cond=None):
        offset = cond["offset"].to(x.dtype)
        self.seen.append((offset.detach().clone(), x.detach().clone()))
        angles = noise_label[:, None].float() * self.freqs
        scale, shift = self.embed(torch.cat([angles.sin(), angles.cos()], dim=1))[:, :, None, None].chunk(2, dim=1)
        h = torch.cat([x, offset[:, None, None, None].expand_as(x)], dim=1)
        h = nn.functional.silu(self.inp(h) * (1 + scale) + shift)
        return self.out(nn.functional.silu(self.mid(h)))


def offset_data(n: int = 256, seed: int = 0):
    """Fields ``[n, 1, 4, 4]`` = offset + 0.2 * noise, with the offset (+-1) as the conditioning."""
    g = torch.Generator().manual_seed(seed)
    offset = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    x = offset[:, None, None, None] + 0.2 * torch.randn(n, 1, 4, 4, generator=g)
    return x, {"offset": offset}


class PairDataset(Dataset):
    def __init__(self, x, cond):
        self.x, self.cond = x, cond

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], {k: v[i] for k, v in self.cond.items()}


def fresh(seed: int = 0) -> Denoiser:
    torch.manual_seed(seed)
    return Denoiser(OffsetNet(), sigma_data=1.0)


def test_each_batch_gets_the_cond_of_its_own_samples():
    x, cond = offset_data(64)
    x = 100 * x  # fields of +-100: the sign of a noisy field's mean gives its offset at any trained noise level
    cond = {"offset": cond["offset"], "index": torch.arange(64)}
    denoiser = fresh()
    geodiff.train(denoiser, x, cond=cond, steps=5, batch_size=8, progress=False)
    seen = denoiser.backbone.seen
    assert len(seen) == 5
    for offsets, inputs in seen:
        assert torch.equal(torch.sign(inputs.mean(dim=(1, 2, 3))), offsets)
    both = torch.cat([offsets for offsets, _ in seen])
    assert 0 < int((both > 0).sum()) < both.numel()  # both offsets occur, so the check can fail


def test_dataset_pairs_train_bitwise_like_tensor_and_cond():
    x, cond = offset_data(64)
    a = geodiff.train(fresh(), x, cond=cond, steps=6, batch_size=8, progress=False)
    b = geodiff.train(fresh(), PairDataset(x, cond), steps=6, batch_size=8, progress=False)
    assert a.losses == b.losses
    for p, q in zip(a.ema.parameters(), b.ema.parameters()):
        assert torch.equal(p, q)


def test_conditional_model_learns_the_conditional_mean():
    x, cond = offset_data(512)
    result = geodiff.train(fresh(), x, cond=cond, steps=300, batch_size=64, lr=1e-2, warmup_steps=20,
                           ema_decay=0.99, progress=False)
    noise = torch.randn(400, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    for value in (-1.0, 1.0):
        c = {"offset": torch.full((400,), value)}
        with torch.no_grad():
            samples = HeunSampler()(result.ema, noise, EDMSchedule().sigmas(32), cond=c)
        assert abs(samples.mean().item() - value) < 0.05, (value, samples.mean().item())
        assert abs(samples.std().item() / 0.2 - 1) < 0.15, (value, samples.std().item())


def test_bad_conditioning_is_rejected():
    x, cond = offset_data(16)
    with pytest.raises(GridError, match="offset"):
        geodiff.train(fresh(), x, cond={"offset": cond["offset"][:8]}, steps=1, batch_size=4, progress=False)
    with pytest.raises(DataError, match="offset"):
        geodiff.train(fresh(), x, cond={"offset": cond["offset"] * float("nan")}, steps=1, batch_size=4,
                      progress=False)
    with pytest.raises(ConfigError, match="Dataset"):
        geodiff.train(fresh(), PairDataset(x, cond), cond=cond, steps=1, batch_size=4, progress=False)
