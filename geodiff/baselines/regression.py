"""Deterministic regression baseline for downscaling: the conditional backbone trained with an MSE loss.

:class:`RegressionModel` wraps the same backbone as the diffusion model (e.g.
:class:`~geodiff.backbones.conditional.ConditionalUNet`) and predicts the high-resolution field directly from the
sources: ``prediction = backbone(0, noise_label=0, cond=sources)`` (the field input is zero, so everything comes
from the conditioning). It has the denoiser call signature ``(x, sigma, cond) -> [B, C, H, W]`` (``x`` gives only
the shape, ``sigma`` is ignored), so :class:`~geodiff.diffusion.patches.PatchDenoiser` predicts large domains with
the same blended windows. :func:`geodiff.training.regression.train_regression` fits it on
:class:`~geodiff.training.pairs.DownscalingPairs` with the training loop and the mean squared error. The
regression estimates the conditional mean: it is smooth (low high-wavenumber power) and has no spread.

Example
-------
>>> import torch
>>> from geodiff.backbones.conditional import ConditionalUNet
>>> model = RegressionModel(ConditionalUNet(1, sources={"coarse": 1}, base_channels=8, channel_mults=(1,),
...                                         num_res_blocks=1, attention_levels=(), mid_attention=False))
>>> model(torch.zeros(1, 1, 8, 8), 0.0, {"coarse": torch.zeros(1, 1, 2, 2)}).shape  # x gives only the shape
torch.Size([1, 1, 8, 8])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from geodiff.config import Configurable
from geodiff.diffusion.denoiser import build_plugin, describe_plugin

__all__ = ["RegressionModel"]


class RegressionModel(Configurable, nn.Module):
    """``(x [B, C, H, W], sigma, cond) -> prediction [B, C, H, W]`` from the sources only (module docstring).

    ``backbone``: an ``nn.Module`` with the backbone contract, or ``{"name", "config"}`` of a registered one.
    """

    def __init__(self, backbone: nn.Module | dict[str, Any]):
        super().__init__()
        if isinstance(backbone, dict):
            backbone = build_plugin("backbone", backbone)
        self.backbone = backbone
        self.config = {"backbone": describe_plugin("backbone", backbone)}

    def forward(self, x: Tensor, sigma: Any = None, cond: dict[str, Tensor] | None = None) -> Tensor:
        zeros = torch.zeros_like(x)
        return self.backbone(zeros, torch.zeros(x.shape[0], device=x.device), cond=cond)
