"""Neural networks that map a noisy field and its noise label to an output field (the diffusion backbones).

Every backbone is an ``nn.Module`` and :class:`~geodiff.config.Configurable` with one forward contract::

    backbone(x [B, Cin, H, W] float32, noise_label [B] float32, *, mask=None, cond=None) -> [B, Cout, H, W]

``mask`` is ``[C, H, W]`` or ``[B, C, H, W]`` (1/True = valid); ``cond`` is a dict of tensors
(``cond["concat"] [B, Ccond, H, W]`` for backbones built with ``cond_channels``). Fields of any size work.

Example
-------
>>> import torch
>>> from geodiff.backbones import UNet
>>> net = UNet(in_channels=1, base_channels=8, channel_mults=(1, 2), num_res_blocks=1)
>>> net(torch.randn(2, 1, 17, 33), torch.tensor([0.0, 1.0])).shape
torch.Size([2, 1, 17, 33])
"""

from geodiff.backbones.diffusers_unet import DiffusersUNet
from geodiff.backbones.unet import UNet

__all__ = ["DiffusersUNet", "UNet"]
