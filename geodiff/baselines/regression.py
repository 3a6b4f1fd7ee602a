"""Deterministic regression baseline for downscaling: the conditional backbone trained with an MSE loss.

:class:`RegressionModel` wraps the same backbone as the diffusion model (e.g.
:class:`~geodiff.backbones.conditional.ConditionalUNet`) and predicts the high-resolution field directly from the
sources: ``prediction = backbone(0, noise_label=0, cond=sources)`` (the field input is zero, so everything comes
from the conditioning). It has the denoiser call signature ``(x, sigma, cond) -> [B, C, H, W]`` (``x`` gives only
the shape, ``sigma`` is ignored), so :class:`~geodiff.diffusion.patches.PatchDenoiser` predicts large domains with
the same blended windows. :func:`train_regression` fits it on :class:`~geodiff.training.pairs.DownscalingPairs`
with AdamW on the mean squared error. The regression estimates the conditional mean: it is smooth (low
high-wavenumber power) and has no spread.

Example
-------
>>> import torch
>>> from geodiff.backbones.conditional import ConditionalUNet
>>> from geodiff.baselines.regression import RegressionModel, train_regression
>>> from geodiff.training.pairs import DownscalingPairs
>>> net = ConditionalUNet(1, sources={"coarse": 1}, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
...                       attention_levels=(), mid_attention=False, source_channels=8, source_dropout=0.0)
>>> model = RegressionModel(net)
>>> pairs = DownscalingPairs(torch.randn(4, 1, 16, 16), 4, patch=(8, 8))
>>> losses = train_regression(model, pairs, steps=3, batch_size=2, progress=False)
>>> len(losses), model(torch.zeros(1, 1, 8, 8), 0.0, {"coarse": torch.zeros(1, 1, 2, 2)}).shape
(3, torch.Size([1, 1, 8, 8]))
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, RandomSampler
from tqdm.auto import tqdm

from geodiff.config import Configurable
from geodiff.diffusion.denoiser import _build, _describe
from geodiff.errors import ConfigError
from geodiff.training.data import stack_items

__all__ = ["RegressionModel", "train_regression"]


class RegressionModel(Configurable, nn.Module):
    """``(x [B, C, H, W], sigma, cond) -> prediction [B, C, H, W]`` from the sources only (module docstring).

    ``backbone``: an ``nn.Module`` with the backbone contract, or ``{"name", "config"}`` of a registered one.
    """

    def __init__(self, backbone: nn.Module | dict[str, Any]):
        super().__init__()
        if isinstance(backbone, dict):
            backbone = _build("backbone", backbone)
        self.backbone = backbone
        self.config = {"backbone": _describe("backbone", backbone)}

    def forward(self, x: Tensor, sigma: Any = None, cond: dict[str, Tensor] | None = None) -> Tensor:
        zeros = torch.zeros_like(x)
        return self.backbone(zeros, torch.zeros(x.shape[0], device=x.device), cond=cond)


def train_regression(
    model: RegressionModel,
    data: Dataset,
    *,
    steps: int,
    batch_size: int,
    lr: float = 1e-3,
    grad_clip: float | None = 1.0,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Fit ``model`` in place on ``(x, cond)`` items with the MSE loss; returns the loss of every step."""
    if steps < 1 or batch_size < 1:
        raise ConfigError(f"steps and batch_size must be >= 1, got {steps}, {batch_size}")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    sampler = RandomSampler(data, replacement=True, num_samples=steps * batch_size, generator=generator)
    loader = DataLoader(data, batch_size=batch_size, sampler=sampler, collate_fn=stack_items, drop_last=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    for x, cond in tqdm(loader, total=steps, desc="regression", disable=not progress):
        loss = ((model(x, None, cond) - x) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses
