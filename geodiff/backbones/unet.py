"""Mask-aware U-Net for gridded geoscience fields (ADM / DDPM++ layout, adaptive group norm).

Fields of any size are padded to a multiple of the total downsampling factor ``2 ** (len(channel_mults) - 1)``
(reflection in latitude; wrap-around in longitude when ``periodic_lon``) and cropped back. With
``periodic_lon=True`` every convolution wraps around in longitude, so when the width is a multiple of the
downsampling factor the network is equivariant to longitude rolls by multiples of that factor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from geodiff.backbones.layers import (
    Downsample,
    EmbedSequential,
    GeoConv2d,
    NoiseEmbedding,
    ResBlock,
    SelfAttention,
    Upsample,
    crop,
    group_norm,
    grid_input,
)
from geodiff.config import Configurable
from geodiff.errors import ConfigError
from geodiff.resources import check_memory, unet_bytes

__all__ = ["UNet"]


def _positive_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return value


class UNet(Configurable, nn.Module):
    """U-Net score backbone: ``unet(x [B, Cin, H, W], noise_label [B], *, mask=None, cond=None) -> [B, Cout, H, W]``.

    Parameters
    ----------
    in_channels, out_channels:
        Field channels in and out (``out_channels=None``: same as ``in_channels``).
    base_channels, channel_mults:
        Level ``i`` has ``base_channels * channel_mults[i]`` channels; there are ``len(channel_mults) - 1``
        halvings of the grid (:attr:`downsampling_factor` ``= 2 ** (len(channel_mults) - 1)``).
    num_res_blocks:
        Residual blocks per level in the encoder (the decoder has one more per level).
    attention_levels:
        Levels (0 = full resolution, negative counts from the coarsest) with self-attention after each block.
    mid_attention:
        Self-attention between the two residual blocks at the bottom of the U.
    attention_head_channels:
        Channels per attention head.
    dropout:
        Dropout probability inside residual blocks.
    norm_groups:
        Maximum GroupNorm groups (fewer, of at least 4 channels, for small channel counts).
    embedding_type, embedding_mult:
        Noise-label features (``"positional"`` or ``"fourier"``) of ``base_channels`` sinusoids, mapped by an
        MLP to ``embedding_mult * base_channels`` channels, which scale and shift every residual block.
    periodic_lon:
        Longitude (last axis) wraps around (global grids).
    mask_aware:
        ``mask`` (``[C, H, W]`` or ``[B, C, H, W]``, 1/True = valid, ``C = in_channels`` or 1; None = all valid)
        is appended as ``in_channels`` extra input channels and invalid (land) inputs are set to 0, so land
        values never reach the network. Without it, ``mask`` is ignored.
    cond_channels:
        Channels of a conditioning field ``cond["concat"] [B, cond_channels, H, W]`` concatenated to the input.
    gradient_checkpointing:
        Recompute block activations in the backward pass (less memory, about one more forward pass of time).

    The output convolution is initialised to zero: an untrained network returns 0 everywhere.

    Example
    -------
    >>> import torch
    >>> from geodiff.backbones import UNet
    >>> net = UNet(in_channels=2, base_channels=8, channel_mults=(1, 2), num_res_blocks=1, mask_aware=True)
    >>> x, mask = torch.randn(3, 2, 45, 90), torch.rand(2, 45, 90) > 0.3
    >>> out = net(x, torch.tensor([0.1, 0.5, 1.0]), mask=mask)
    >>> out.shape
    torch.Size([3, 2, 45, 90])
    >>> bool((out == 0).all())  # zero-initialised output layer
    True
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int | None = None,
        *,
        base_channels: int = 64,
        channel_mults: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attention_levels: Sequence[int] = (-1,),
        mid_attention: bool = True,
        attention_head_channels: int = 32,
        dropout: float = 0.0,
        norm_groups: int = 32,
        embedding_type: str = "positional",
        embedding_mult: int = 4,
        periodic_lon: bool = False,
        mask_aware: bool = False,
        cond_channels: int = 0,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = _positive_int("in_channels", in_channels)
        self.out_channels = in_channels if out_channels is None else _positive_int("out_channels", out_channels)
        base = _positive_int("base_channels", base_channels, 4)
        mults = [_positive_int("channel_mults[]", m) for m in channel_mults]
        if not mults:
            raise ConfigError("channel_mults must list at least one level multiplier; got []")
        _positive_int("num_res_blocks", num_res_blocks)
        _positive_int("attention_head_channels", attention_head_channels)
        _positive_int("norm_groups", norm_groups)
        _positive_int("embedding_mult", embedding_mult)
        _positive_int("cond_channels", cond_channels, 0)
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1); got {dropout!r}")
        check_memory(unet_bytes(self.in_channels, base, mults, num_res_blocks),
                     f"a UNet with base_channels={base}, channel_mults={mults}")  # before any weight is allocated
        levels = len(mults)
        attention = set()
        for level in attention_levels:
            if isinstance(level, bool) or not isinstance(level, int) or not -levels <= level < levels:
                raise ConfigError(
                    f"attention_levels must hold level indices in [{-levels}, {levels - 1}]; got {level!r}"
                )
            attention.add(level % levels)

        self.periodic_lon = bool(periodic_lon)
        self.mask_aware = bool(mask_aware)
        self.cond_channels = cond_channels
        self.gradient_checkpointing = bool(gradient_checkpointing)
        self.downsampling_factor = 2 ** (levels - 1)

        emb_channels = embedding_mult * base
        geo = {"periodic_lon": self.periodic_lon}
        res = {"emb_channels": emb_channels, "dropout": dropout, "norm_groups": norm_groups, **geo}
        attn = {"head_channels": attention_head_channels, "norm_groups": norm_groups}

        self.embedding = NoiseEmbedding(base, emb_channels, kind=embedding_type)
        total_in = in_channels * (2 if self.mask_aware else 1) + cond_channels
        self.input_conv = GeoConv2d(total_in, base, 3, **geo)

        channels, skips = base, [base]
        encoder: list[EmbedSequential] = []
        for level, mult in enumerate(mults):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [ResBlock(channels, base * mult, **res)]
                channels = base * mult
                if level in attention:
                    layers.append(SelfAttention(channels, **attn))
                encoder.append(EmbedSequential(*layers))
                skips.append(channels)
            if level < levels - 1:
                encoder.append(EmbedSequential(Downsample(channels, **geo)))
                skips.append(channels)
        self.encoder = nn.ModuleList(encoder)

        middle: list[nn.Module] = [ResBlock(channels, channels, **res)]
        if mid_attention:
            middle.append(SelfAttention(channels, **attn))
        middle.append(ResBlock(channels, channels, **res))
        self.middle = EmbedSequential(*middle)

        decoder: list[EmbedSequential] = []
        for level in reversed(range(levels)):
            for block in range(num_res_blocks + 1):
                layers = [ResBlock(channels + skips.pop(), base * mults[level], **res)]
                channels = base * mults[level]
                if level in attention:
                    layers.append(SelfAttention(channels, **attn))
                if level > 0 and block == num_res_blocks:
                    layers.append(Upsample(channels, **geo))
                decoder.append(EmbedSequential(*layers))
        self.decoder = nn.ModuleList(decoder)

        self.output = nn.Sequential(
            group_norm(channels, norm_groups), nn.SiLU(), GeoConv2d(channels, self.out_channels, 3, **geo)
        )
        nn.init.zeros_(self.output[-1].weight)
        nn.init.zeros_(self.output[-1].bias)

    def _run(self, block: EmbedSequential, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, h, emb, use_reentrant=False)
        return block(h, emb)

    def forward(
        self,
        x: torch.Tensor,
        noise_label: torch.Tensor | float,
        *,
        mask: torch.Tensor | None = None,
        cond: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``x [B, in_channels, H, W]``, ``noise_label [B]`` (or scalar) -> ``[B, out_channels, H, W]``."""
        h, labels, pads = grid_input(self, x, noise_label, mask, cond)
        emb = self.embedding(labels)
        h = self.input_conv(h)
        skips = [h]
        for block in self.encoder:
            h = self._run(block, h, emb)
            skips.append(h)
        h = self._run(self.middle, h, emb)
        for block in self.decoder:
            h = self._run(block, torch.cat([h, skips.pop()], dim=1), emb)
        return crop(self.output(h), pads)
