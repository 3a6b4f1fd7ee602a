"""Building blocks shared by the geodiff backbones.

Tensors are ``[B, C, H, W]`` with ``H`` = latitude and ``W`` = longitude. With ``periodic_lon=True`` every
spatial operation wraps around in longitude (circular padding), so a network built from these blocks is
equivariant to longitude rolls by multiples of its total downsampling factor.

Example
-------
>>> import torch
>>> from geodiff.backbones.layers import GeoConv2d, pad_to_multiple, crop
>>> x = torch.randn(1, 2, 45, 90)
>>> padded, pads = pad_to_multiple(x, 4, periodic_lon=True)
>>> padded.shape, pads
(torch.Size([1, 2, 48, 92]), (1, 2, 1, 1))
>>> torch.equal(crop(padded, pads), x)
True
>>> GeoConv2d(2, 3, periodic_lon=True)(x).shape
torch.Size([1, 3, 45, 90])
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from geodiff.errors import ConfigError, GridError

__all__ = [
    "SKIP_SCALE",
    "Downsample",
    "EmbedSequential",
    "GeoConv2d",
    "NoiseEmbedding",
    "ResBlock",
    "SelfAttention",
    "Upsample",
    "assemble_input",
    "crop",
    "group_norm",
    "noise_labels",
    "pad_to_multiple",
]

SKIP_SCALE = 1.0 / math.sqrt(2.0)  # residual sums are scaled to keep unit variance (as in EDM)


# ----------------------------------------------------------------------------------------------------------------
# padding


def _reflect_index(n: int, before: int, after: int, device: torch.device) -> torch.Tensor:
    """Indices of a reflect padding (edge not repeated) of an axis of length ``n``; any pad width."""
    index = torch.arange(-before, n + after, device=device)
    if n == 1:
        return torch.zeros_like(index)
    period = 2 * (n - 1)
    index = index % period
    return torch.where(index < n, index, period - index)


def _circular_index(n: int, before: int, after: int, device: torch.device) -> torch.Tensor:
    """Indices of a circular (wrap-around) padding of an axis of length ``n``; any pad width."""
    return torch.arange(-before, n + after, device=device) % n


def pad_to_multiple(
    x: torch.Tensor, multiple: int, *, periodic_lon: bool = False
) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Pad ``x [..., H, W]`` so that ``H`` and ``W`` are multiples of ``multiple``.

    Latitude is padded by reflection; longitude by wrapping around when ``periodic_lon`` else by reflection.
    The padding is split between both sides. Returns the padded tensor and ``(top, bottom, left, right)``
    for :func:`crop`. Nothing is padded along an axis that is already a multiple.
    """
    height, width = x.shape[-2:]
    pad_h = -height % multiple
    pad_w = -width % multiple
    top, left = pad_h // 2, pad_w // 2
    pads = (top, pad_h - top, left, pad_w - left)
    if pad_h:
        x = x.index_select(-2, _reflect_index(height, pads[0], pads[1], x.device))
    if pad_w:
        index = _circular_index if periodic_lon else _reflect_index
        x = x.index_select(-1, index(width, pads[2], pads[3], x.device))
    return x, pads


def crop(x: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
    """Undo :func:`pad_to_multiple`: remove ``(top, bottom, left, right)`` cells from ``x [..., H, W]``."""
    top, bottom, left, right = pads
    height, width = x.shape[-2:]
    return x[..., top : height - bottom, left : width - right]


# ----------------------------------------------------------------------------------------------------------------
# input checks


def noise_labels(noise_label: torch.Tensor | float, batch: int, device: torch.device) -> torch.Tensor:
    """Return the noise label as float32 ``[batch]``; a scalar or a one-element tensor is broadcast."""
    label = torch.as_tensor(noise_label, device=device).to(torch.float32)
    if label.ndim == 0 or label.shape == (1,):
        return label.reshape(1).expand(batch)
    if label.shape != (batch,):
        raise GridError(
            f"noise_label must have shape [{batch}] (one per sample) or be a scalar; got {list(label.shape)}"
        )
    return label


def _batched(
    name: str, value: torch.Tensor, batch: int, channels: tuple[int, ...], hw: tuple[int, int]
) -> torch.Tensor:
    """Check ``value`` is ``[C, H, W]`` or ``[B|1, C, H, W]`` with ``C`` in ``channels``; return ``[B, C, H, W]``."""
    if value.ndim == 3:
        value = value.unsqueeze(0)
    expected = f"[C, H, W] or [B, C, H, W] with B in (1, {batch}), C in {list(channels)}, (H, W) = {tuple(hw)}"
    if value.ndim != 4 or value.shape[0] not in (1, batch) or value.shape[1] not in channels or value.shape[-2:] != hw:
        raise GridError(f"{name} must have shape {expected}; got {list(value.shape)}")
    return value.expand(batch, -1, -1, -1)


def assemble_input(
    x: torch.Tensor,
    *,
    in_channels: int,
    mask: torch.Tensor | None = None,
    mask_aware: bool = False,
    cond: Mapping[str, torch.Tensor] | None = None,
    cond_channels: int = 0,
) -> torch.Tensor:
    """Check the inputs of a backbone and stack them into one tensor ``[B, Cin (+Cin) (+Ccond), H, W]``.

    ``x [B, in_channels, H, W]``. When ``mask_aware``, cells where ``mask`` is 0/False are set to 0 in ``x``
    (whatever they held, NaN included) and the mask (1 = valid, ``[C, H, W]`` or ``[B, C, H, W]`` with
    ``C = in_channels`` or 1; None = all valid) is appended as ``in_channels`` extra channels. When
    ``cond_channels > 0``, ``cond["concat"] [B, cond_channels, H, W]`` is appended. Without ``mask_aware``
    the mask is not used. ``cond`` keys the backbone does not use raise :class:`ConfigError`.
    """
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise GridError(f"x must have shape [B, {in_channels}, H, W]; got {list(x.shape)}")
    batch, hw = x.shape[0], tuple(x.shape[-2:])
    if mask_aware:
        if mask is None:
            valid = torch.ones_like(x, dtype=torch.bool)
        else:
            valid = _batched("mask", torch.as_tensor(mask, device=x.device), batch, (in_channels, 1), hw)
            valid = (valid > 0.5 if valid.is_floating_point() else valid.bool()).expand_as(x)
        parts = [torch.where(valid, x, torch.zeros((), dtype=x.dtype, device=x.device)), valid.to(x.dtype)]
    else:
        parts = [x]
    cond = dict(cond or {})
    if cond_channels:
        if "concat" not in cond:
            raise ConfigError(
                f"cond['concat'] of shape [B, {cond_channels}, H, W] is required (cond_channels={cond_channels})"
            )
        concat = _batched("cond['concat']", cond.pop("concat"), batch, (cond_channels,), hw)
        parts.append(concat.to(device=x.device, dtype=x.dtype))
    if cond:
        used = "'concat'" if cond_channels else "none (cond_channels=0)"
        raise ConfigError(f"unexpected cond keys {sorted(cond)}; this backbone uses: {used}")
    if len(parts) == 1:
        return parts[0]
    stacked = torch.cat(parts, dim=1)
    if _is_channels_last(x):  # keep the caller's layout (the mask parts are broadcast views, NCHW-strided)
        stacked = stacked.contiguous(memory_format=torch.channels_last)
    return stacked


def grid_input(
    backbone: nn.Module,
    x: torch.Tensor,
    noise_label: torch.Tensor | float,
    mask: torch.Tensor | None,
    cond: Mapping[str, torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int, int, int]]:
    """The start every grid backbone's ``forward`` shares: ``(h, labels [B], pads)`` with ``h`` the input channels
    (:func:`assemble_input`: field, mask, conditioning) padded to the backbone's ``downsampling_factor``
    (:func:`pad_to_multiple`); crop the output with ``crop(out, pads)``. ``backbone`` has ``in_channels``,
    ``mask_aware``, ``cond_channels``, ``downsampling_factor`` and ``periodic_lon``."""
    h = assemble_input(x, in_channels=backbone.in_channels, mask=mask, mask_aware=backbone.mask_aware, cond=cond,
                       cond_channels=backbone.cond_channels)
    labels = noise_labels(noise_label, x.shape[0], x.device)
    h, pads = pad_to_multiple(h, backbone.downsampling_factor, periodic_lon=backbone.periodic_lon)
    return h, labels, pads


def _is_channels_last(x: torch.Tensor) -> bool:
    """True when ``x [B, C, H, W]`` is stored channels-last and not also plain contiguous (C or H*W > 1)."""
    return x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


# ----------------------------------------------------------------------------------------------------------------
# layers


def group_norm(channels: int, groups: int = 32, *, min_channels_per_group: int = 4, eps: float = 1e-6) -> nn.GroupNorm:
    """GroupNorm with at most ``groups`` groups of at least ``min_channels_per_group`` channels (fewer for small C).

    >>> group_norm(8).num_groups, group_norm(12).num_groups, group_norm(256).num_groups
    (2, 3, 32)
    """
    groups = max(1, min(groups, channels // min_channels_per_group))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels, eps=eps)


class GeoConv2d(nn.Conv2d):
    """2-D convolution with "same" padding: zeros in latitude, wrap-around in longitude when ``periodic_lon``.

    ``[B, Cin, H, W] -> [B, Cout, H / stride, W / stride]`` (odd kernel; H, W multiples of ``stride``).

    >>> conv = GeoConv2d(1, 1, 3, periodic_lon=True)
    >>> x = torch.randn(1, 1, 4, 8)
    >>> torch.allclose(conv(x.roll(3, -1)), conv(x).roll(3, -1), atol=1e-6)
    True
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, *, stride: int = 1, periodic_lon: bool = False
    ) -> None:
        if kernel_size % 2 != 1:
            raise ConfigError(f"kernel_size must be odd; got {kernel_size}")
        pad = kernel_size // 2
        padding = (pad, 0 if periodic_lon else pad)  # longitude wrap-around is added in forward
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
        self.periodic_lon = periodic_lon
        self.lon_pad = pad if periodic_lon else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lon_pad:
            pad, width = self.lon_pad, x.shape[-1]
            if pad <= width and _is_channels_last(x):  # wrap by concatenation: keeps the channels-last layout
                x = torch.cat([x[..., width - pad :], x, x[..., :pad]], dim=-1)
            else:
                x = x.index_select(-1, _circular_index(width, pad, pad, x.device))
        return super().forward(x)


class Downsample(nn.Module):
    """Strided 3x3 convolution: ``[B, C, H, W] -> [B, C, H/2, W/2]`` (H, W even)."""

    def __init__(self, channels: int, *, periodic_lon: bool = False) -> None:
        super().__init__()
        self.conv = GeoConv2d(channels, channels, 3, stride=2, periodic_lon=periodic_lon)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then 3x3 convolution: ``[B, C, H, W] -> [B, C, 2H, 2W]``."""

    def __init__(self, channels: int, *, periodic_lon: bool = False) -> None:
        super().__init__()
        self.conv = GeoConv2d(channels, channels, 3, periodic_lon=periodic_lon)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class NoiseEmbedding(nn.Module):
    """Noise label ``[B]`` -> embedding ``[B, out_channels]``: sinusoidal features then a 2-layer SiLU MLP.

    ``kind="positional"``: frequencies ``max_positions ** -(i / (n/2 - 1))`` (transformer / DDPM++ style; suits
    both EDM labels ``ln(sigma)/4`` and DDPM timesteps 0..999). ``kind="fourier"``: fixed random Gaussian
    frequencies of scale ``fourier_scale`` (NCSN++ style), drawn from a fixed seed and stored with the weights.

    >>> NoiseEmbedding(16, 64)(torch.tensor([0.1, -0.3])).shape
    torch.Size([2, 64])
    """

    def __init__(
        self,
        channels: int,
        out_channels: int,
        *,
        kind: str = "positional",
        max_positions: float = 10000.0,
        fourier_scale: float = 16.0,
    ) -> None:
        super().__init__()
        if kind not in ("positional", "fourier"):
            raise ConfigError(f"embedding_type must be 'positional' or 'fourier'; got {kind!r}")
        if channels < 4 or channels % 2:
            raise ConfigError(f"noise embedding channels must be even and >= 4; got {channels}")
        half = channels // 2
        if kind == "positional":
            freqs = max_positions ** -(torch.arange(half, dtype=torch.float32) / (half - 1))
        else:
            generator = torch.Generator().manual_seed(0)
            freqs = 2 * math.pi * fourier_scale * torch.randn(half, generator=generator)
        self.register_buffer("freqs", freqs)
        self.mlp = nn.Sequential(
            nn.Linear(channels, out_channels), nn.SiLU(), nn.Linear(out_channels, out_channels), nn.SiLU()
        )

    def forward(self, noise_label: torch.Tensor) -> torch.Tensor:
        phase = noise_label.to(torch.float32)[:, None] * self.freqs[None, :]
        return self.mlp(torch.cat([phase.cos(), phase.sin()], dim=1))


class ResBlock(nn.Module):
    """Residual block with adaptive group norm: ``x [B, Cin, H, W], emb [B, E] -> [B, Cout, H, W]``.

    ``h = conv1(silu(norm1(x)))``; ``h = conv2(dropout(silu(norm2(h) * (1 + scale) + shift)))`` with
    ``(scale, shift) = linear(emb)``; output ``(h + skip(x)) / sqrt(2)``.

    >>> block = ResBlock(4, 8, 16)
    >>> block(torch.randn(2, 4, 6, 10), torch.randn(2, 16)).shape
    torch.Size([2, 8, 6, 10])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_channels: int,
        *,
        dropout: float = 0.0,
        norm_groups: int = 32,
        periodic_lon: bool = False,
    ) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels, norm_groups)
        self.conv1 = GeoConv2d(in_channels, out_channels, 3, periodic_lon=periodic_lon)
        self.emb_proj = nn.Linear(emb_channels, 2 * out_channels)
        self.norm2 = group_norm(out_channels, norm_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = GeoConv2d(out_channels, out_channels, 3, periodic_lon=periodic_lon)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb_proj(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(torch.addcmul(shift, self.norm2(h), scale + 1))
        h = self.conv2(self.dropout(h))
        return (h + self.skip(x)) * SKIP_SCALE


class SelfAttention(nn.Module):
    """Multi-head self-attention over all grid cells: ``[B, C, H, W] -> [B, C, H, W]`` (residual).

    No positional encoding, so it commutes with longitude rolls. ``C // head_channels`` heads (1 if C is
    not a multiple of ``head_channels``).

    >>> SelfAttention(8, head_channels=4)(torch.randn(1, 8, 3, 5)).shape
    torch.Size([1, 8, 3, 5])
    """

    def __init__(self, channels: int, *, head_channels: int = 32, norm_groups: int = 32) -> None:
        super().__init__()
        self.heads = channels // head_channels if channels % head_channels == 0 else 1
        self.norm = group_norm(channels, norm_groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        height, width = x.shape[-2:]
        q, k, v = rearrange(self.qkv(self.norm(x)), "b (three n d) h w -> three b n (h w) d", three=3, n=self.heads)
        attended = F.scaled_dot_product_attention(q, k, v)
        attended = rearrange(attended, "b n (h w) d -> b (n d) h w", h=height, w=width)
        return (x + self.proj(attended)) * SKIP_SCALE


class EmbedSequential(nn.Sequential):
    """A sequence of layers called as ``layer(h, emb)``: ``[B, C, H, W], [B, E] -> [B, C', H', W']``."""

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            h = layer(h, emb)
        return h
