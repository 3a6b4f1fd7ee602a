"""Deterministic regression baseline for downscaling: the conditional backbone trained with an MSE loss.

:class:`RegressionModel` wraps the same backbone as the diffusion model (e.g.
:class:`~geodiff.backbones.conditional.ConditionalUNet`) and predicts the high-resolution field directly from the
sources: ``prediction = backbone(0, noise_label=0, cond=sources)`` (the field input is zero, so everything comes
from the conditioning). It has the denoiser call signature ``(x, sigma, cond) -> [B, C, H, W]`` (``x`` gives only
the shape, ``sigma`` is ignored), so :class:`~geodiff.diffusion.patches.PatchDenoiser` predicts large domains with
the same blended windows. :func:`train_regression` fits it on :class:`~geodiff.training.pairs.DownscalingPairs`
with the training loop and the mean squared error. The regression estimates the conditional mean: it is smooth (low
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
from torch.utils.data import Dataset

from geodiff.config import Configurable
from geodiff.diffusion.denoiser import build_plugin, describe_plugin

__all__ = ["RegressionModel", "train_regression"]


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
    **options: Any,
) -> list[float]:
    """Fit ``model`` in place on ``(x, cond)`` items with :func:`geodiff.train` and the mean squared error
    (:class:`~geodiff.training.objectives.RegressionObjective`; AdamW with weight decay 0.01, no EMA); returns the
    loss of every step. ``options`` go to :func:`geodiff.train` (``checkpoint_dir``, ``resume``, ``mask``, ...)."""
    from geodiff.training.objectives import RegressionObjective
    from geodiff.training.trainer import train

    options = {"weight_decay": 0.01, "ema_decay": None, **options}
    result = train(model, data, objective=RegressionObjective(), steps=steps, batch_size=batch_size, lr=lr,
                   grad_clip=grad_clip, seed=seed, progress=progress, **options)
    model.eval()
    return result.losses
