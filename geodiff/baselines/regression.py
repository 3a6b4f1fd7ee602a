"""Deterministic regression baseline for downscaling: the conditional backbone trained with an MSE loss.

:class:`RegressionModel` (defined with the residual diffusion it is the mean of,
:mod:`geodiff.diffusion.residual`) wraps the same backbone as the diffusion model (e.g.
:class:`~geodiff.backbones.conditional.ConditionalUNet`) and predicts the high-resolution field from the sources
only. :func:`geodiff.training.fit_downscaling` trains it from Datasets with the diffusion model's data, budget
and early stopping (``mode="regression"``); :func:`geodiff.training.regression.train_regression` fits it on
:class:`~geodiff.training.pairs.DownscalingPairs` directly. The regression estimates the conditional mean: it is
smooth (low high-wavenumber power) and has no spread.

Example
-------
>>> import torch
>>> from geodiff.backbones.conditional import ConditionalUNet
>>> model = RegressionModel(ConditionalUNet(1, sources={"coarse": 1}, base_channels=8, channel_mults=(1,),
...                                         num_res_blocks=1, attention_levels=(), mid_attention=False))
>>> model(torch.zeros(1, 1, 8, 8), 0.0, {"coarse": torch.zeros(1, 1, 2, 2)}).shape  # x gives only the shape
torch.Size([1, 1, 8, 8])
"""

from geodiff.diffusion.residual import RegressionModel

__all__ = ["RegressionModel"]
