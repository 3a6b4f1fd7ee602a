"""Adapter giving diffusers' ``UNet2DModel`` the geodiff backbone contract.

The noise label is passed to ``UNet2DModel`` as its timestep, as is (use ``time_embedding_type="positional"``,
the default: ``"fourier"`` takes the log of the label and divides the output by it, ``"learned"`` needs
integer timesteps). Inputs are padded to a multiple of the model's downsampling factor and cropped back.
diffusers' convolutions pad with zeros, so ``periodic_lon`` only changes that outer padding (wrap-around);
the network is not roll-equivariant (use :class:`geodiff.backbones.UNet` for that). Nothing is downloaded.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from geodiff.backbones.layers import crop, grid_input
from geodiff.config import Configurable
from geodiff.errors import ConfigError

__all__ = ["DiffusersUNet"]

_SET_BY_ADAPTER = ("in_channels", "out_channels")


class DiffusersUNet(Configurable, nn.Module):
    """``UNet2DModel`` as a backbone: ``net(x [B, Cin, H, W], noise_label [B], *, mask=None, cond=None)``
    -> ``[B, Cout, H, W]``.

    Parameters
    ----------
    in_channels, out_channels:
        Field channels in and out (``out_channels=None``: same as ``in_channels``). ``UNet2DModel`` gets
        ``in_channels * (2 if mask_aware else 1) + cond_channels`` input channels.
    mask_aware:
        ``mask`` (``[C, H, W]`` or ``[B, C, H, W]``, 1/True = valid) is appended as extra input channels and
        invalid inputs are set to 0; without it ``mask`` is ignored.
    cond_channels:
        Channels of ``cond["concat"] [B, cond_channels, H, W]`` concatenated to the input.
    periodic_lon:
        Pad longitude by wrap-around (else by reflection) to reach the size ``UNet2DModel`` needs.
    gradient_checkpointing:
        Enable diffusers' gradient checkpointing.
    **unet_kwargs:
        Any other ``UNet2DModel`` argument (``block_out_channels``, ``down_block_types``, ``norm_num_groups``, ...).
        The recorded configuration holds every ``UNet2DModel`` argument as resolved, defaults included.

    The output convolution is initialised to zero: an untrained network returns 0 everywhere.

    Example
    -------
    >>> import torch
    >>> from geodiff.backbones import DiffusersUNet
    >>> net = DiffusersUNet(in_channels=2, mask_aware=True, block_out_channels=(8, 16), layers_per_block=1,
    ...                     down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
    ...                     norm_num_groups=4)
    >>> net(torch.randn(2, 2, 45, 90), torch.tensor([0.3, 2.0]), mask=torch.ones(2, 45, 90)).shape
    torch.Size([2, 2, 45, 90])
    >>> net.config["block_out_channels"], net.downsampling_factor
    ([8, 16], 2)
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int | None = None,
        *,
        mask_aware: bool = False,
        cond_channels: int = 0,
        periodic_lon: bool = False,
        gradient_checkpointing: bool = False,
        **unet_kwargs: Any,
    ) -> None:
        super().__init__()
        from diffusers import UNet2DModel

        accepted = set(inspect.signature(UNet2DModel.__init__).parameters) - {"self", *_SET_BY_ADAPTER}
        unknown = sorted(set(unet_kwargs) - accepted)
        if unknown:
            raise ConfigError(f"unknown UNet2DModel arguments {unknown}; accepted: {sorted(accepted)}")
        for name, value in (("in_channels", in_channels), ("cond_channels", cond_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < (name == "in_channels"):
                raise ConfigError(f"{name} must be a non-negative integer (in_channels >= 1); got {value!r}")
        self.in_channels = in_channels
        self.out_channels = in_channels if out_channels is None else out_channels
        self.mask_aware = bool(mask_aware)
        self.cond_channels = cond_channels
        self.periodic_lon = bool(periodic_lon)

        total_in = in_channels * (2 if self.mask_aware else 1) + cond_channels
        try:
            self.unet = UNet2DModel(in_channels=total_in, out_channels=self.out_channels, **unet_kwargs)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"UNet2DModel rejected the configuration {unet_kwargs}: {err}") from err
        if gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        nn.init.zeros_(self.unet.conv_out.weight)
        nn.init.zeros_(self.unet.conv_out.bias)

        resolved = {key: value for key, value in self.unet.config.items() if key in accepted}
        self.config.update(json.loads(json.dumps(resolved)))  # record diffusers' defaults too, as plain JSON
        halvings = sum(getattr(block, "downsamplers", None) is not None for block in self.unet.down_blocks)
        self.downsampling_factor = 2**halvings

    def forward(
        self,
        x: torch.Tensor,
        noise_label: torch.Tensor | float,
        *,
        mask: torch.Tensor | None = None,
        cond: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``x [B, in_channels, H, W]``, ``noise_label [B]`` (or scalar) -> ``[B, out_channels, H, W]``."""
        h, label, pads = grid_input(self, x, noise_label, mask, cond)
        return crop(self.unet(h, label, return_dict=False)[0], pads)
