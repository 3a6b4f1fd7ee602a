"""Latent autoencoder for a multi-variable state: ``[B, C, H, W]`` (normalised) <-> latent ``[B, Z, H/f, W/f]``.

A small convolutional encoder/decoder (residual blocks, strided convolutions down, nearest-neighbour up-sampling;
``f = 2 ** (len(channel_mults) - 1)``) with circular padding in longitude (``periodic_lon``) and latitude
(``periodic_lat``, for doubly periodic twin domains). The latent is kept near unit scale by a small penalty on
its mean square (``latent_weight`` of :func:`geodiff.training.autoencoder.train_autoencoder`), so a diffusion model
can work on it directly.
Saved and loaded with :meth:`~geodiff.config.Configurable.save_pretrained` / ``from_pretrained`` (config.json +
model.safetensors).

Example
-------
>>> import torch
>>> from geodiff.backbones.autoencoder import Autoencoder
>>> ae = Autoencoder(in_channels=3, latent_channels=4, base_channels=8, channel_mults=(1, 2))
>>> ae.encode(torch.zeros(2, 3, 16, 16)).shape
torch.Size([2, 4, 8, 8])
>>> reconstruction, z = ae(torch.zeros(2, 3, 16, 16), with_latent=True)
>>> reconstruction.shape, z.shape
(torch.Size([2, 3, 16, 16]), torch.Size([2, 4, 8, 8]))
"""

from __future__ import annotations

from torch import Tensor, nn

from geodiff.config import Configurable
from geodiff.errors import ConfigError, GridError

__all__ = ["Autoencoder"]


class _Conv(nn.Conv2d):
    """3x3 (or 1x1) convolution with circular padding along the periodic axes, reflection otherwise."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1, *, periodic: tuple[bool, bool]):
        super().__init__(c_in, c_out, kernel, stride=stride, padding=0)
        self.pad = kernel // 2
        self.periodic = periodic

    def forward(self, x: Tensor) -> Tensor:
        p = self.pad
        if p:
            lat_mode = "circular" if self.periodic[0] else "reflect"
            lon_mode = "circular" if self.periodic[1] else "reflect"
            x = nn.functional.pad(x, (p, p, 0, 0), mode=lon_mode)
            x = nn.functional.pad(x, (0, 0, p, p), mode=lat_mode)
        return super().forward(x)


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, periodic: tuple[bool, bool]):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(8, c_in // 4) or 1, c_in)
        self.conv1 = _Conv(c_in, c_out, periodic=periodic)
        self.norm2 = nn.GroupNorm(min(8, c_out // 4) or 1, c_out)
        self.conv2 = _Conv(c_out, c_out, periodic=periodic)
        self.skip = nn.Identity() if c_in == c_out else _Conv(c_in, c_out, 1, periodic=periodic)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        h = self.conv2(nn.functional.silu(self.norm2(h)))
        return self.skip(x) + h


class Autoencoder(Configurable, nn.Module):
    """Convolutional autoencoder ``encode(x [B, C, H, W]) -> z [B, Z, H/f, W/f]``, ``decode(z) -> x_hat``.

    Parameters
    ----------
    in_channels: state channels ``C`` (variables x levels, normalised).
    latent_channels: latent channels ``Z``.
    base_channels, channel_mults: level ``i`` has ``base_channels * channel_mults[i]`` channels; one halving of
        the grid between consecutive levels (``H`` and ``W`` must be divisible by ``f``).
    num_blocks: residual blocks per level.
    periodic_lat, periodic_lon: circular padding along latitude / longitude.
    """

    def __init__(
        self,
        in_channels: int,
        latent_channels: int = 4,
        *,
        base_channels: int = 32,
        channel_mults: tuple[int, ...] | list[int] = (1, 2),
        num_blocks: int = 1,
        periodic_lat: bool = False,
        periodic_lon: bool = False,
    ):
        super().__init__()
        if in_channels < 1 or latent_channels < 1 or base_channels < 1 or not channel_mults or num_blocks < 1:
            raise ConfigError("in_channels, latent_channels, base_channels, num_blocks must be >= 1 and "
                              "channel_mults non-empty")
        self.config["channel_mults"] = list(channel_mults)
        periodic = (bool(periodic_lat), bool(periodic_lon))
        widths = [base_channels * m for m in channel_mults]
        self.in_channels, self.latent_channels = in_channels, latent_channels
        self.factor = 2 ** (len(widths) - 1)
        encoder: list[nn.Module] = [_Conv(in_channels, widths[0], periodic=periodic)]
        for level, width in enumerate(widths):
            if level:
                encoder.append(_Conv(widths[level - 1], width, 3, stride=2, periodic=periodic))
            encoder += [_Block(width, width, periodic) for _ in range(num_blocks)]
        encoder += [nn.GroupNorm(min(8, widths[-1] // 4) or 1, widths[-1]), nn.SiLU(),
                    _Conv(widths[-1], latent_channels, periodic=periodic)]  # fmt: skip
        decoder: list[nn.Module] = [_Conv(latent_channels, widths[-1], periodic=periodic)]
        for level in reversed(range(len(widths))):
            decoder += [_Block(widths[level], widths[level], periodic) for _ in range(num_blocks)]
            if level:
                decoder += [nn.Upsample(scale_factor=2, mode="nearest"),
                            _Conv(widths[level], widths[level - 1], periodic=periodic)]  # fmt: skip
        decoder += [nn.GroupNorm(min(8, widths[0] // 4) or 1, widths[0]), nn.SiLU(),
                    _Conv(widths[0], in_channels, periodic=periodic)]  # fmt: skip
        self.encoder = nn.Sequential(*encoder)
        self.decoder = nn.Sequential(*decoder)

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """``(Z, H/f, W/f)`` of a ``[.., H, W]`` field."""
        if height % self.factor or width % self.factor:
            raise GridError(f"the grid {height}x{width} must be divisible by the autoencoder factor {self.factor}")
        return self.latent_channels, height // self.factor, width // self.factor

    def encode(self, x: Tensor) -> Tensor:
        """Latent ``[B, Z, H/f, W/f]`` of normalised states ``x [B, C, H, W]``."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise GridError(f"x must be [B, {self.in_channels}, H, W]; got {list(x.shape)}")
        self.latent_shape(*x.shape[-2:])
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        """Normalised states ``[B, C, H, W]`` of latents ``z [B, Z, h, w]``."""
        if z.ndim != 4 or z.shape[1] != self.latent_channels:
            raise GridError(f"z must be [B, {self.latent_channels}, h, w]; got {list(z.shape)}")
        return self.decoder(z)

    def forward(self, x: Tensor, *, with_latent: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Reconstruction ``decode(encode(x))`` ``[B, C, H, W]``; with ``with_latent``, ``(reconstruction, z)``."""
        z = self.encode(x)
        return (self.decoder(z), z) if with_latent else self.decoder(z)
