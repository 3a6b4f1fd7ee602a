"""Regression mean and residual diffusion (CorrDiff): ``x0 = mu(cond) + r`` with ``r`` denoised by a network.

:class:`RegressionModel` predicts the high-resolution field from the conditioning only:
``mu = backbone(0, noise_label=0, cond)`` (the field input is zero). It has the denoiser call signature
``(x, sigma, cond) -> [B, C, H, W]`` (``x`` gives only the shape, ``sigma`` is ignored), so
:class:`~geodiff.diffusion.patches.PatchDenoiser` predicts large domains with the same blended windows, and one
Euler step of any sampler returns its prediction exactly. Trained with the mean squared error
(:class:`~geodiff.training.objectives.RegressionObjective`) it estimates the conditional mean: smooth, no spread.

:class:`ResidualDenoiser` is a :class:`~geodiff.diffusion.denoiser.Denoiser` of the residual ``r = x0 - mu``
around a frozen regression: ``D(x, sigma, cond) = mu(cond) + D_r(x - mu(cond), sigma, cond)``. Since
``x - mu = r + sigma n``, ``D_r`` is an ordinary EDM denoiser of the residual (its ``sigma_data`` is the
residual's std), trained by the denoising loss on ``x`` unchanged; samplers, guidance (``mu`` does not depend on
``x``, so the Jacobian is ``D_r``'s) and patch-wise sampling use it like any denoiser.

Example
-------
>>> import torch
>>> from geodiff.backbones.conditional import ConditionalUNet
>>> def net():
...     return ConditionalUNet(1, sources={"coarse": 1}, base_channels=8, channel_mults=(1,), num_res_blocks=1,
...                            attention_levels=(), mid_attention=False)
>>> mean = RegressionModel(net())
>>> cond = {"coarse": torch.zeros(1, 1, 2, 2)}
>>> mean(torch.zeros(1, 1, 8, 8), 0.0, cond).shape  # x gives only the shape
torch.Size([1, 1, 8, 8])
>>> residual = ResidualDenoiser(net(), mean=mean, sigma_data=0.3)
>>> residual(torch.zeros(1, 1, 8, 8), 1.0, cond).shape, residual.config["mean"]["backbone"]["name"]
(torch.Size([1, 1, 8, 8]), 'conditional_unet')
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from geodiff.config import Configurable
from geodiff.diffusion.denoiser import Denoiser, build_plugin, describe_plugin
from geodiff.errors import ConfigError

__all__ = ["RegressionModel", "ResidualDenoiser"]


class RegressionModel(Configurable, nn.Module):
    """``(x [B, C, H, W], sigma, cond) -> prediction [B, C, H, W]`` from the conditioning only (module docstring).

    ``backbone``: an ``nn.Module`` with the backbone contract, or ``{"name", "config"}`` of a registered one.
    ``coarse_skip``: add the bilinear interpolation of ``cond["coarse"]`` (``[B, C, H/f, W/f]``, cell centres
    aligned) to the network's output, so the network learns only what interpolation misses (and an untrained
    one with a zero output is bilinear interpolation).
    """

    def __init__(self, backbone: nn.Module | dict[str, Any], *, coarse_skip: bool = False):
        super().__init__()
        if isinstance(backbone, dict):
            backbone = build_plugin("backbone", backbone)
        self.backbone = backbone
        self.coarse_skip = bool(coarse_skip)
        self.config = {"backbone": describe_plugin("backbone", backbone)}
        if self.coarse_skip:
            self.config["coarse_skip"] = True

    def forward(self, x: Tensor, sigma: Any = None, cond: dict[str, Tensor] | None = None, *,
                mask: Tensor | None = None) -> Tensor:  # fmt: skip
        """The prediction ``[B, C, H, W]``; ``mask`` (``[C, H, W]`` or ``[B, C, H, W]``, True = valid) zeroes
        the invalid cells."""
        out = self.backbone(torch.zeros_like(x), torch.zeros(x.shape[0], device=x.device), cond=cond)
        if self.coarse_skip:
            if cond is None or "coarse" not in cond:
                raise ConfigError("a regression with coarse_skip needs the coarse field in cond['coarse']")
            out = out + torch.nn.functional.interpolate(cond["coarse"].to(out.dtype), size=tuple(x.shape[-2:]),
                                                        mode="bilinear", align_corners=False)
        return out if mask is None else out * torch.as_tensor(mask, device=x.device).to(out.dtype)


class ResidualDenoiser(Denoiser):
    """``mu(cond) + D_r(x - mu(cond), sigma, cond)`` with a frozen :class:`RegressionModel` ``mean`` (module
    docstring). ``backbone``, ``sigma_data`` (the residual's std, normalised units) and the other options are
    :class:`~geodiff.diffusion.denoiser.Denoiser`'s; ``mean`` is a model or its ``config`` (weights are part of
    this module's state)."""

    def __init__(self, backbone: nn.Module | dict[str, Any], *, mean: RegressionModel | dict[str, Any],
                 sigma_data: float = 0.5, parameterization: str = "edm", noise_label: str = "edm",
                 schedule: Any = None, mask: Tensor | None = None):  # fmt: skip
        super().__init__(backbone, sigma_data=sigma_data, parameterization=parameterization,
                         noise_label=noise_label, schedule=schedule, mask=mask)
        if isinstance(mean, dict):
            mean = RegressionModel.from_config(mean)
        self.mean = mean
        self.mean.eval()
        self.mean.requires_grad_(False)
        self.config["mean"] = mean.config

    def train(self, mode: bool = True) -> ResidualDenoiser:
        """Train mode for the residual network; the regression mean stays frozen in eval mode."""
        super().train(mode)
        self.mean.eval()
        return self

    def forward(self, x: Tensor, sigma: float | Tensor, cond: dict[str, Tensor] | None = None, *,
                mask: Tensor | None = None) -> Tensor:  # fmt: skip
        valid = self.mask if mask is None else mask
        with torch.no_grad():
            mu = self.mean(x, None, cond, mask=valid).to(x.dtype)
        return mu + super().forward(x - mu, sigma, cond, mask=mask)
