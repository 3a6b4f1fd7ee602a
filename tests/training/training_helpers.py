"""Shared pieces of the training tests: a tiny per-pixel backbone and Gaussian toy data."""

from __future__ import annotations

import math

import torch
from torch import nn

from geodiff import registry
from geodiff.config import Configurable
from geodiff.diffusion.denoiser import Denoiser

MEANS = (0.3, -0.5)  # per-channel mean of the toy data
STDS = (0.4, 0.8)  # per-channel standard deviation
SHAPE = (2, 4, 4)  # [C, H, W]


class TinyNet(Configurable, nn.Module):
    """Per-pixel MLP backbone following the backbone contract: 1x1 convolutions whose features are scaled and
    shifted by an embedding of the noise label (Fourier features), so slopes can depend on the noise level."""

    def __init__(self, channels: int = 2, hidden: int = 32, frequencies: int = 4):
        super().__init__()
        self.register_buffer("freqs", 2 ** torch.arange(frequencies, dtype=torch.float32) * math.pi / 4)
        self.embed = nn.Linear(2 * frequencies, 2 * hidden)
        self.inp = nn.Conv2d(channels, hidden, 1)
        self.mid = nn.Conv2d(hidden, hidden, 1)
        self.out = nn.Conv2d(hidden, channels, 1)

    def forward(self, x, noise_label, *, mask=None, cond=None):
        angles = noise_label[:, None].float() * self.freqs
        scale, shift = self.embed(torch.cat([angles.sin(), angles.cos()], dim=1))[:, :, None, None].chunk(2, dim=1)
        h = torch.nn.functional.silu(self.inp(x) * (1 + scale) + shift)
        h = torch.nn.functional.silu(self.mid(h))
        return self.out(h)


registry.register("backbone", "tiny_test_net", TinyNet, overwrite=True)


def tiny_denoiser(seed: int = 0, **kwargs) -> Denoiser:
    """A freshly initialised :class:`Denoiser` around :class:`TinyNet` (weights fixed by ``seed``)."""
    torch.manual_seed(seed)
    return Denoiser(TinyNet(channels=SHAPE[0]), **kwargs)


def gaussian_data(n: int, seed: int = 0) -> torch.Tensor:
    """``n`` fields ``[n, C, H, W]`` float32, cell values independent N(MEANS[c], STDS[c]^2)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, *SHAPE, generator=g)
    return z * torch.tensor(STDS).reshape(1, -1, 1, 1) + torch.tensor(MEANS).reshape(1, -1, 1, 1)


def resume_case(case: str) -> tuple[Denoiser, torch.Tensor, dict]:
    """Denoiser, data and ``train`` settings of the resume tests: ``"fields"`` (EDM loss on whole fields) or
    ``"crops"`` (DDPM loss, eps denoiser, random crops of masked 6x8 fields)."""
    if case == "fields":
        settings = dict(batch_size=4, lr=5e-3, warmup_steps=3, ema_decay=0.9, seed=7)
        return tiny_denoiser(), gaussian_data(10, seed=3), settings
    g = torch.Generator().manual_seed(3)
    data = torch.randn(10, 2, 6, 8, generator=g) * 0.5
    mask = torch.ones(2, 6, 8, dtype=torch.bool)
    mask[0, :3, :2] = False
    data[:, ~mask] = 0.0
    settings = dict(batch_size=4, lr=5e-3, warmup_steps=3, ema_decay=0.9, seed=7, mask=mask, patch_size=(4, 4),
                    loss="ddpm", weight_decay=0.01)
    return tiny_denoiser(parameterization="eps"), data, settings
