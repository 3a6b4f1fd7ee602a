"""Training of the latent autoencoder (:class:`~geodiff.backbones.autoencoder.Autoencoder`) with the one loop.

Example
-------
>>> import torch
>>> from geodiff.backbones.autoencoder import Autoencoder
>>> from geodiff.training.autoencoder import train_autoencoder
>>> data = torch.randn(8, 3, 16, 16)
>>> result = train_autoencoder(Autoencoder(3, 4, base_channels=8), data, steps=2, batch_size=4, progress=False)
>>> len(result.losses), result.autoencoder.training  # trained, then left in eval mode
(2, False)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from geodiff.backbones.autoencoder import Autoencoder
from geodiff.errors import GridError
from geodiff.training.objectives import AutoencoderObjective
from geodiff.training.trainer import train

__all__ = ["AutoencoderTrainResult", "train_autoencoder"]


@dataclass
class AutoencoderTrainResult:
    """``autoencoder`` (trained, in place, eval mode), ``losses`` per step (:class:`AutoencoderObjective`: mean
    squared reconstruction error plus the latent penalty), ``seconds``."""

    autoencoder: Autoencoder
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def train_autoencoder(
    autoencoder: Autoencoder,
    data: Tensor,
    *,
    steps: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    latent_weight: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    **options: Any,
) -> AutoencoderTrainResult:
    """Fit ``autoencoder`` to normalised states ``data [N, C, H, W]`` with :func:`geodiff.train` and the
    :class:`~geodiff.training.objectives.AutoencoderObjective` (mean squared reconstruction error +
    ``latent_weight * mean(z^2)``): AdamW with a cosine decay over ``steps``, no gradient clipping, no EMA.
    ``options`` go to :func:`geodiff.train` (``checkpoint_dir``, ``resume``, ``device``, ...): resume and
    determinism are those of the training loop (to stop early and resume to more steps, fix the decay's length
    with ``cosine_steps=``)."""
    if data.ndim != 4 or data.shape[1] != autoencoder.in_channels:
        raise GridError(f"data must be [N, {autoencoder.in_channels}, H, W]; got {list(data.shape)}")
    autoencoder.latent_shape(*data.shape[-2:])
    start = time.perf_counter()
    options = {"grad_clip": None, "ema_decay": None, "cosine_steps": steps, **options}
    result = train(autoencoder, data, objective=AutoencoderObjective(latent_weight), steps=steps,
                   batch_size=min(batch_size, data.shape[0]), lr=lr, seed=seed, progress=progress, **options)
    autoencoder.eval()
    return AutoencoderTrainResult(autoencoder=autoencoder, losses=result.losses, seconds=time.perf_counter() - start)
