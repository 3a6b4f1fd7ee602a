"""Training of the deterministic regression baseline (:class:`~geodiff.baselines.regression.RegressionModel`) with
the one loop and the mean squared error.

Example
-------
>>> import torch
>>> from geodiff.backbones.conditional import ConditionalUNet
>>> from geodiff.baselines.regression import RegressionModel
>>> from geodiff.training.pairs import DownscalingPairs
>>> from geodiff.training.regression import train_regression
>>> net = ConditionalUNet(1, sources={"coarse": 1}, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
...                       attention_levels=(), mid_attention=False, source_channels=8, source_dropout=0.0)
>>> model = RegressionModel(net)
>>> pairs = DownscalingPairs(torch.randn(4, 1, 16, 16), 4, patch=(8, 8))
>>> losses = train_regression(model, pairs, steps=3, batch_size=2, progress=False)
>>> len(losses), model.training  # trained, then left in eval mode
(3, False)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch.utils.data import Dataset

from geodiff.training.objectives import RegressionObjective
from geodiff.training.trainer import train

if TYPE_CHECKING:
    from geodiff.baselines.regression import RegressionModel

__all__ = ["train_regression"]


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
    options = {"weight_decay": 0.01, "ema_decay": None, **options}
    result = train(model, data, objective=RegressionObjective(), steps=steps, batch_size=batch_size, lr=lr,
                   grad_clip=grad_clip, seed=seed, progress=progress, **options)
    model.eval()
    return result.losses
