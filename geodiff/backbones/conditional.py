"""Conditional U-Net for multi-source downscaling: one encoder per source, fused into the U-Net by cross-attention.

Each conditioning source (the coarse field, satellite brightness temperature, sounder fields, topography, ...)
arrives in ``cond[name]`` as ``[B, C_s, H_s, W_s]`` **on its own grid**, spanning the same area as the field
``x [B, C, H, W]`` (cell edges aligned; ``H_s / H`` may be 1/4 for a coarse field or 2 for a finer topography).
The network:

1. encodes every source on its own grid with a small convolutional encoder -> ``[B, E, H_s, W_s]``;
2. resamples the features onto the U-Net's grid at each resolution (bilinear to the field grid, then the same
   padding as the U-Net and area means for the coarser levels), so every feature map cell sees each source's
   features at the same place;
3. after every encoder, middle and decoder block, fuses the sources with a **multi-source cross-attention**
   block (:class:`SourceFusion`): at each cell the U-Net features are the query and the sources' features
   (plus a learned "null" token) the keys and values; a source that is absent is masked out of the attention,
   so any subset of sources (none included) is a valid input. The output projection starts at zero.

**Source dropout**: in training (``self.training``) each source of each sample is dropped with probability
``source_dropout`` (a ``torch.rand`` on the input's device, so seeded training runs stay reproducible); a model
trained that way can be given any subset of its sources at inference, and :class:`ClassifierFreeDenoiser`
applies classifier-free guidance over sources: ``D_base + scale (D_all - D_base)`` where ``D_base`` leaves out
some (default: all) sources.

Example
-------
>>> import torch
>>> from geodiff.backbones.conditional import ConditionalUNet
>>> net = ConditionalUNet(1, sources={"coarse": 1, "topography": 1}, base_channels=8, channel_mults=(1, 2),
...                       num_res_blocks=1, attention_levels=(), source_channels=8)
>>> x = torch.randn(2, 1, 16, 16)
>>> cond = {"coarse": torch.randn(2, 1, 4, 4), "topography": torch.randn(2, 1, 32, 32)}
>>> net(x, torch.zeros(2), cond=cond).shape
torch.Size([2, 1, 16, 16])
>>> net(x, torch.zeros(2), cond={"topography": cond["topography"]}).shape  # any subset of sources
torch.Size([2, 1, 16, 16])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geodiff.backbones.layers import (
    EmbedSequential,
    GeoConv2d,
    ResBlock,
    assemble_input,
    crop,
    group_norm,
    noise_labels,
    pad_to_multiple,
)
from geodiff.backbones.unet import UNet
from geodiff.errors import ConfigError, GridError

__all__ = ["ConditionalUNet", "SourceEncoder", "SourceFusion", "ClassifierFreeDenoiser"]


class SourceEncoder(nn.Module):
    """Convolutional encoder of one source on its own grid: ``[B, C_s, H_s, W_s] -> [B, E, H_s, W_s]``.

    >>> SourceEncoder(2, 8)(torch.randn(1, 2, 5, 7)).shape
    torch.Size([1, 8, 5, 7])
    """

    def __init__(self, in_channels: int, channels: int, *, periodic_lon: bool = False, layers: int = 3):
        super().__init__()
        blocks: list[nn.Module] = [GeoConv2d(in_channels, channels, 3, periodic_lon=periodic_lon)]
        for _ in range(layers - 1):
            blocks += [nn.SiLU(), GeoConv2d(channels, channels, 3, periodic_lon=periodic_lon)]
        self.net = nn.Sequential(*blocks)

    def forward(self, source: Tensor) -> Tensor:
        return self.net(source)


class SourceFusion(nn.Module):
    """Multi-source cross-attention at every cell: ``h [B, C, h, w]`` attends to the ``S`` sources' features
    ``[B, S, E, h, w]`` plus a learned null token; ``present [B, S]`` (bool) masks absent sources.

    Per cell and head: ``q = W_q norm(h)``, ``k_s, v_s = W_kv (f_s + e_s)`` (``e_s`` a learned source embedding),
    ``out = h + W_o sum_s softmax_s(q . k_s / sqrt(d)) v_s`` with ``W_o`` initialised to zero.

    >>> fusion = SourceFusion(8, 4, n_sources=2)
    >>> h = torch.randn(3, 8, 5, 6)
    >>> out = fusion(h, torch.randn(3, 2, 4, 5, 6), torch.tensor([[True, False]] * 3))
    >>> torch.equal(out, h)  # zero-initialised output projection
    True
    """

    def __init__(self, channels: int, source_channels: int, n_sources: int, *, heads: int = 1, norm_groups: int = 32):
        super().__init__()
        if channels % heads:
            raise ConfigError(f"fusion heads ({heads}) must divide the channels ({channels})")
        self.heads = heads
        self.norm = group_norm(channels, norm_groups)
        self.query = nn.Conv2d(channels, channels, 1)
        self.key_value = nn.Conv2d(source_channels, 2 * channels, 1)
        self.embedding = nn.Parameter(torch.randn(n_sources + 1, source_channels) * 0.1)  # index 0: null token
        self.output = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(self, h: Tensor, features: Tensor, present: Tensor) -> Tensor:
        batch, channels, height, width = h.shape
        null = torch.zeros_like(features[:, :1])
        tokens = torch.cat([null, features], dim=1) + self.embedding[None, :, :, None, None].to(h.dtype)
        n_tokens = tokens.shape[1]
        kv = self.key_value(tokens.flatten(0, 1)).reshape(batch, n_tokens, 2, self.heads, -1, height, width)
        key, value = kv[:, :, 0], kv[:, :, 1]  # [B, S+1, n, d, h, w]
        query = self.query(self.norm(h)).reshape(batch, 1, self.heads, -1, height, width)
        logits = (query * key).sum(3) / math.sqrt(key.shape[3])  # [B, S+1, n, h, w]
        keep = torch.cat([torch.ones_like(present[:, :1]), present], dim=1).to(torch.bool)
        logits = logits.masked_fill(~keep[:, :, None, None, None], float("-inf"))
        attention = logits.softmax(dim=1)
        mixed = (attention[:, :, :, None] * value).sum(1).reshape(batch, channels, height, width)
        return h + self.output(mixed)


def _block_channels(block: EmbedSequential, channels: int) -> int:
    """Output channels of a U-Net block (its last residual block's, else unchanged)."""
    for layer in block:
        if isinstance(layer, ResBlock):
            channels = layer.conv2.out_channels
    return channels


class ConditionalUNet(UNet):
    """U-Net conditioned on several sources on their own grids (module docstring):
    ``net(x [B, C, H, W], noise_label [B], *, mask=None, cond={name: [B|1, C_s, H_s, W_s]}) -> [B, Cout, H, W]``.

    Parameters
    ----------
    in_channels, out_channels: field channels in and out (as :class:`~geodiff.backbones.unet.UNet`).
    sources: ``{name: channels}`` of every source the model knows (e.g. ``{"coarse": 1, "topography": 1}``).
    source_channels: feature channels of each source encoder.
    source_dropout: probability of dropping each source of each training sample (0 disables it).
    fusion_heads: attention heads of the fusion blocks.
    unet: further :class:`~geodiff.backbones.unet.UNet` keyword arguments (``base_channels``, ``channel_mults``,
        ``num_res_blocks``, ``attention_levels``, ``periodic_lon``, ``mask_aware``, ...; not ``cond_channels``).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int | None = None,
        *,
        sources: Mapping[str, int] | None = None,
        source_channels: int = 16,
        source_dropout: float = 0.1,
        fusion_heads: int = 1,
        **unet: Any,
    ) -> None:
        if unet.get("cond_channels", 0):
            raise ConfigError("ConditionalUNet takes its conditioning as sources; cond_channels must stay 0")
        unet.pop("cond_channels", None)
        super().__init__(in_channels, out_channels, **unet)
        sources = dict(sources or {})
        if not sources:
            raise ConfigError("ConditionalUNet needs at least one source: sources={name: channels}")
        for name, count in sources.items():
            if not isinstance(name, str) or not name or name == "concat":
                raise ConfigError(f"source names must be non-empty strings other than 'concat', got {name!r}")
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ConfigError(f"source {name!r} needs a positive integer number of channels, got {count!r}")
        if not 0.0 <= source_dropout < 1.0:
            raise ConfigError(f"source_dropout must be in [0, 1), got {source_dropout!r}")
        if isinstance(source_channels, bool) or not isinstance(source_channels, int) or source_channels < 1:
            raise ConfigError(f"source_channels must be a positive integer, got {source_channels!r}")
        self.source_names = sorted(sources)
        self.source_sizes = {name: sources[name] for name in self.source_names}
        self.source_dropout = float(source_dropout)
        groups = unet.get("norm_groups", 32)
        self.encoders = nn.ModuleDict(
            {name: SourceEncoder(sources[name], source_channels, periodic_lon=self.periodic_lon)
             for name in self.source_names}
        )  # fmt: skip
        n = len(self.source_names)

        def fusion(channels: int) -> SourceFusion:
            return SourceFusion(channels, source_channels, n, heads=fusion_heads, norm_groups=groups)

        channels = self.input_conv.out_channels
        encoder_fusion = []
        for block in self.encoder:
            channels = _block_channels(block, channels)
            encoder_fusion.append(fusion(channels))
        self.encoder_fusion = nn.ModuleList(encoder_fusion)
        self.middle_fusion = fusion(_block_channels(self.middle, channels))
        decoder_fusion = []
        for block in self.decoder:
            channels = _block_channels(block, channels)
            decoder_fusion.append(fusion(channels))
        self.decoder_fusion = nn.ModuleList(decoder_fusion)

    # ---------------------------------------------------------------------------------------------------------

    def _sources(self, cond: Mapping[str, Tensor] | None, batch: int, like: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """Checked sources ``{name: [B, C_s, H_s, W_s]}`` and ``present [B, S]`` (bool, after dropout)."""
        cond = dict(cond or {})
        unknown = sorted(set(cond) - set(self.source_names))
        if unknown:
            raise ConfigError(f"unexpected cond keys {unknown}; this model's sources are {self.source_names}")
        present = torch.zeros(batch, len(self.source_names), dtype=torch.bool, device=like.device)
        checked = {}
        for s, name in enumerate(self.source_names):
            if name not in cond or cond[name] is None:
                continue
            value = torch.as_tensor(cond[name], device=like.device)
            if value.ndim == 3:
                value = value[None]
            if value.ndim != 4 or value.shape[0] not in (1, batch) or value.shape[1] != self.source_sizes[name]:
                raise GridError(f"cond[{name!r}] must be [B, {self.source_sizes[name]}, H_s, W_s] with B in "
                                f"(1, {batch}); got {list(value.shape)}")
            checked[name] = value.to(like.dtype).expand(batch, -1, -1, -1)
            present[:, s] = True
        if self.training and self.source_dropout > 0:
            present = present & (torch.rand(present.shape, device=like.device) >= self.source_dropout)
        return checked, present

    def _features(self, sources: dict[str, Tensor], hw: tuple[int, int], batch: int, like: Tensor) -> Tensor:
        """Encoded sources on the (padded) full-resolution U-Net grid ``[B, S, E, H', W']``."""
        maps = []
        for name in self.source_names:
            if name not in sources:
                maps.append(None)
                continue
            encoded = self.encoders[name](sources[name])
            if tuple(encoded.shape[-2:]) != hw:
                shrink = encoded.shape[-2] >= hw[0] and encoded.shape[-1] >= hw[1]
                if shrink and encoded.shape[-2] % hw[0] == 0 and encoded.shape[-1] % hw[1] == 0:
                    encoded = F.adaptive_avg_pool2d(encoded, hw)  # exact block means of a finer grid
                else:
                    encoded = F.interpolate(encoded, size=hw, mode="bilinear", align_corners=False)
            maps.append(pad_to_multiple(encoded, self.downsampling_factor, periodic_lon=self.periodic_lon)[0])
        reference = next((m for m in maps if m is not None), None)
        if reference is None:
            channels = self.encoders[self.source_names[0]].net[-1].out_channels
            height, width = (-(-s // self.downsampling_factor) * self.downsampling_factor for s in hw)
            return like.new_zeros(batch, len(maps), channels, height, width)
        return torch.stack([torch.zeros_like(reference) if m is None else m for m in maps], dim=1)

    def forward(
        self,
        x: Tensor,
        noise_label: Tensor | float,
        *,
        mask: Tensor | None = None,
        cond: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        """``x [B, in_channels, H, W]``, ``noise_label [B]``, ``cond`` = any subset of the sources -> output."""
        h = assemble_input(x, in_channels=self.in_channels, mask=mask, mask_aware=self.mask_aware)
        batch = x.shape[0]
        sources, present = self._sources(cond, batch, x)
        full = self._features(sources, tuple(x.shape[-2:]), batch, x)
        cache: dict[tuple[int, int], Tensor] = {}

        def at(size: torch.Size) -> Tensor:
            key = (int(size[-2]), int(size[-1]))
            if key not in cache:
                flat = full.flatten(0, 1)
                cache[key] = (flat if key == tuple(flat.shape[-2:]) else F.adaptive_avg_pool2d(flat, key)).reshape(
                    batch, full.shape[1], full.shape[2], *key
                )
            return cache[key]

        emb = self.embedding(noise_labels(noise_label, batch, x.device))
        h, pads = pad_to_multiple(h, self.downsampling_factor, periodic_lon=self.periodic_lon)
        h = self.input_conv(h)
        skips = [h]
        for block, fuse in zip(self.encoder, self.encoder_fusion):
            h = self._run(block, h, emb)
            h = fuse(h, at(h.shape), present)
            skips.append(h)
        h = self.middle_fusion(self._run(self.middle, h, emb), at(h.shape), present)
        for block, fuse in zip(self.decoder, self.decoder_fusion):
            h = self._run(block, torch.cat([h, skips.pop()], dim=1), emb)
            h = fuse(h, at(h.shape), present)
        return crop(self.output(h), pads)


class ClassifierFreeDenoiser:
    """Classifier-free guidance over sources: ``D(x, cond_base) + scale (D(x, cond) - D(x, cond_base))``.

    ``cond_base`` is ``cond`` without the sources in ``drop`` (default ``None``: without every source).
    ``scale = 1`` is the plain conditional denoiser; ``scale > 1`` strengthens the dropped sources' influence.
    Needs a model trained with source dropout.

    >>> import torch
    >>> denoiser = lambda x, sigma, cond=None: x + (cond or {}).get("topography", torch.zeros(1)).mean()
    >>> guided = ClassifierFreeDenoiser(denoiser, scale=2.0)
    >>> guided(torch.zeros(1, 1, 2, 2), 1.0, {"topography": torch.ones(1, 1, 2, 2)}).flatten().tolist()
    [2.0, 2.0, 2.0, 2.0]
    """

    def __init__(self, denoiser: Callable[..., Tensor], scale: float, drop: Sequence[str] | None = None):
        if not scale >= 0:
            raise ConfigError(f"the classifier-free guidance scale must be >= 0, got {scale}")
        self.denoiser = denoiser
        self.scale = float(scale)
        self.drop = None if drop is None else list(drop)

    def __call__(self, x: Tensor, sigma: float | Tensor, cond: Mapping[str, Tensor] | None = None) -> Tensor:
        full = self.denoiser(x, sigma, None if cond is None else dict(cond))
        if self.scale == 1.0 or not cond:
            return full
        base_cond = {} if self.drop is None else {k: v for k, v in cond.items() if k not in self.drop}
        base = self.denoiser(x, sigma, base_cond or None)
        return base + self.scale * (full - base)
