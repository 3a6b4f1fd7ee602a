"""The denoiser: ``D(x, sigma) ~ E[x0 | x_sigma]`` built around any backbone with EDM preconditioning.

Convention: ``x = x0 + sigma * eps`` (variance exploding). With ``F`` the backbone, Karras et al. (2022) write
``D(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma))``. The parameterisations differ only
in those coefficients (``a = 1 / sqrt(1 + sigma^2)`` is the VP scale, ``abar = a^2``):

============  ==============================  ===============  =================  ===========================
name          network predicts                c_in             c_skip             c_out
============  ==============================  ===============  =================  ===========================
``edm``       EDM's F (sigma_data scaled)     1/sqrt(s^2+sd^2) sd^2/(s^2+sd^2)    s sd / sqrt(s^2 + sd^2)
``eps``       noise eps (DDPM, ReconMOST)     a                1                  -s
``v``         velocity v = a eps - s a x0     a                a^2                -s a
``x0``        the clean field                 a                0                  1
============  ==============================  ===============  =================  ===========================

The noise label given to the backbone is ``ln(sigma)/4`` (``noise_label="edm"``), the fractional DDPM
timestep (``"vp_timestep"``, needs a :class:`~geodiff.diffusion.schedules.VPSchedule`) or sigma itself
(``"sigma"``). Coefficients are computed in float64 and cast to the field's dtype.

Example
-------
>>> import torch
>>> from geodiff.backbones.unet import UNet
>>> from geodiff.diffusion.denoiser import Denoiser
>>> net = UNet(in_channels=2, out_channels=2, base_channels=8, channel_mults=(1, 2))
>>> denoiser = Denoiser(net)
>>> x = torch.randn(3, 2, 9, 16)
>>> denoiser(x, 1.0).shape
torch.Size([3, 2, 9, 16])
>>> sorted(denoiser.config)
['backbone', 'noise_label', 'parameterization', 'schedule', 'sigma_data']
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from geodiff import registry
from geodiff.config import Configurable
from geodiff.diffusion.schedules import Schedule, VPSchedule
from geodiff.errors import ConfigError, GridError, PluginError

__all__ = [
    "Denoiser", "x0_to_eps", "eps_to_x0", "x0_to_v", "v_to_x0", "sigma_tensor", "build_plugin", "describe_plugin",
]

PARAMETERIZATIONS = ("edm", "eps", "v", "x0")
NOISE_LABELS = ("edm", "vp_timestep", "sigma")


def sigma_tensor(sigma: float | Tensor, batch: int, device: torch.device | str) -> Tensor:
    """Noise level as a float64 ``[batch]`` tensor on ``device`` (a scalar is broadcast)."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64, device=device)
    if sigma.ndim == 0:
        return sigma.expand(batch)
    if sigma.shape != (batch,):
        raise GridError(f"sigma must be a scalar or have shape [{batch}], got {tuple(sigma.shape)}")
    return sigma


def _column(c: Tensor, like: Tensor) -> Tensor:
    """``[B]`` float64 coefficient -> ``[B, 1, 1, 1]`` in ``like``'s dtype."""
    return c.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def x0_to_eps(x: Tensor, x0: Tensor, sigma: Tensor) -> Tensor:
    """``eps = (x - x0) / sigma``; ``sigma`` is ``[B]``."""
    return (x - x0) / _column(sigma, x)


def eps_to_x0(x: Tensor, eps: Tensor, sigma: Tensor) -> Tensor:
    """``x0 = x - sigma eps``; ``sigma`` is ``[B]``."""
    return x - _column(sigma, x) * eps


def x0_to_v(x: Tensor, x0: Tensor, sigma: Tensor) -> Tensor:
    """VP velocity ``v = a eps - sigma a x0`` with ``a = 1/sqrt(1+sigma^2)`` (Salimans & Ho 2022, VP coordinates)."""
    a = 1 / (1 + sigma**2).sqrt()
    return _column(a, x) * x0_to_eps(x, x0, sigma) - _column(sigma * a, x) * x0


def v_to_x0(x: Tensor, v: Tensor, sigma: Tensor) -> Tensor:
    """Inverse of :func:`x0_to_v`: ``x0 = a^2 x - sigma a v``."""
    a = 1 / (1 + sigma**2).sqrt()
    return _column(a**2, x) * x - _column(sigma * a, x) * v


class Denoiser(Configurable, nn.Module):
    """EDM-preconditioned denoiser ``(x [B,C,H,W], sigma float | [B], cond=None) -> x0_hat [B,C,H,W]``.

    Parameters
    ----------
    backbone: an ``nn.Module`` following the backbone contract, or ``{"name": ..., "config": {...}}``.
    sigma_data: standard deviation of the (normalised) data, used by ``edm`` preconditioning.
    parameterization: what the backbone predicts: ``edm``, ``eps``, ``v`` or ``x0`` (module docstring).
    noise_label: ``edm`` (ln sigma / 4), ``vp_timestep`` (fractional DDPM step) or ``sigma``.
    schedule: the training schedule (needed for ``vp_timestep``), an instance or ``{"name", "config"}``.
    mask: ``[C, H, W]`` bool, True where the field is valid; masked-out cells of ``x0_hat`` are 0. A call may
        pass its own mask instead (``denoiser(x, sigma, cond, mask=...)``, e.g. the mask of a batch of crops).
    """

    def __init__(
        self,
        backbone: nn.Module | dict[str, Any],
        *,
        sigma_data: float = 0.5,
        parameterization: str = "edm",
        noise_label: str = "edm",
        schedule: Schedule | dict[str, Any] | None = None,
        mask: Tensor | None = None,
    ):
        super().__init__()
        if parameterization not in PARAMETERIZATIONS:
            raise ConfigError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")
        if noise_label not in NOISE_LABELS:
            raise ConfigError(f"noise_label must be one of {NOISE_LABELS}, got {noise_label!r}")
        if isinstance(backbone, dict):
            backbone = build_plugin("backbone", backbone)
        if isinstance(schedule, dict):
            schedule = build_plugin("schedule", schedule)
        if noise_label == "vp_timestep" and not isinstance(schedule, VPSchedule):
            raise ConfigError("noise_label='vp_timestep' needs schedule=VPSchedule(...)")
        self.backbone = backbone
        self.sigma_data = float(sigma_data)
        self.parameterization = parameterization
        self.noise_label = noise_label
        self.schedule = schedule
        self.register_buffer("mask", None if mask is None else torch.as_tensor(mask, dtype=torch.bool), persistent=False)
        self.config = {
            "backbone": describe_plugin("backbone", backbone),
            "sigma_data": self.sigma_data,
            "parameterization": parameterization,
            "noise_label": noise_label,
            "schedule": None if schedule is None else describe_plugin("schedule", schedule),
        }
        #: run the network on channels-last (NHWC) inputs (see :func:`geodiff.runtime.optimize`)
        self.channels_last = False
        self._coefficient_cache: dict[tuple[Any, ...], tuple[float, float, float, float]] = {}
        object.__setattr__(self, "_compiled", None)

    def set_mask(self, mask: Tensor | None) -> None:
        """Set the validity mask ``[C, H, W]`` (bool, True = valid); ``None`` removes it."""
        self.mask = None if mask is None else torch.as_tensor(mask, dtype=torch.bool, device=self._device())

    def _device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        return torch.device("cpu")

    def coefficients(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(c_in, c_skip, c_out, c_noise)`` for float64 ``sigma [B]``, all float64 ``[B]``."""
        if self.parameterization == "edm":
            sd2 = self.sigma_data**2
            c_in = 1 / (sigma**2 + sd2).sqrt()
            c_skip = sd2 / (sigma**2 + sd2)
            c_out = sigma * self.sigma_data / (sigma**2 + sd2).sqrt()
        else:
            a = 1 / (1 + sigma**2).sqrt()
            c_in = a
            if self.parameterization == "eps":
                c_skip, c_out = torch.ones_like(sigma), -sigma
            elif self.parameterization == "v":
                c_skip, c_out = a**2, -sigma * a
            else:  # "x0"
                c_skip, c_out = torch.zeros_like(sigma), torch.ones_like(sigma)
        if self.noise_label == "edm":
            c_noise = sigma.log() / 4
        elif self.noise_label == "vp_timestep":
            c_noise = self.schedule.timestep(sigma)  # type: ignore[union-attr]
        else:
            c_noise = sigma
        return c_in, c_skip, c_out, c_noise

    def forward(
        self, x: Tensor, sigma: float | Tensor, cond: dict[str, Tensor] | None = None, *, mask: Tensor | None = None
    ) -> Tensor:
        """Denoised estimate ``x0_hat [B,C,H,W]`` of ``x [B,C,H,W]`` at noise level ``sigma``.

        ``mask``: ``[C, H, W]`` or ``[B, C, H, W]`` bool (True = valid) for this call instead of the stored
        :attr:`mask` (which stays as it is). A scalar ``sigma`` (what the samplers pass) takes the fused path: the
        coefficients are computed once per noise level in float64 and cached as Python floats, and the
        preconditioning is two or three fused element-wise operations; a ``[B]`` tensor of noise levels takes the
        general path. Both give the same values up to float rounding.
        """
        if mask is not None:
            mask = torch.as_tensor(mask, device=x.device)
            if mask.dtype != torch.bool or tuple(mask.shape) not in (tuple(x.shape[1:]), tuple(x.shape)):
                raise GridError(f"mask must be a bool tensor [C, H, W] = {list(x.shape[1:])} or [B, C, H, W], got "
                                f"{mask.dtype} {list(mask.shape)}")
        if isinstance(sigma, Tensor) and sigma.ndim > 0:
            return self._forward_batched(x, sigma, cond, self.mask if mask is None else mask)
        c_in, c_skip, c_out, c_noise = self._scalar_coefficients(float(sigma))
        mask = self.mask if mask is None else mask
        valid = None if mask is None else mask.to(device=x.device, dtype=x.dtype)
        x_in = x * c_in if valid is None else x * (valid * c_in)
        if self.channels_last and x_in.ndim == 4:
            x_in = x_in.contiguous(memory_format=torch.channels_last)
        label = torch.full((x.shape[0],), c_noise, dtype=torch.float32, device=x.device)
        out = self._backbone_call()(x_in, label, mask=mask, cond=cond)
        if out.dtype != x.dtype:
            out = out.to(x.dtype)
        if c_skip == 0.0:
            x0 = out * c_out
        else:
            x0 = torch.add(x, out, alpha=c_out / c_skip).mul_(c_skip) if c_out != 0.0 else x * c_skip
        return x0 if valid is None else x0.mul_(valid)

    def _forward_batched(
        self, x: Tensor, sigma: Tensor, cond: dict[str, Tensor] | None, mask: Tensor | None
    ) -> Tensor:
        sigma = sigma_tensor(sigma, x.shape[0], x.device)
        c_in, c_skip, c_out, c_noise = self.coefficients(sigma)
        x_in = _column(c_in, x) * x
        if mask is not None:
            x_in = x_in * mask
        if self.channels_last and x_in.ndim == 4:
            x_in = x_in.contiguous(memory_format=torch.channels_last)
        out = self._backbone_call()(x_in, c_noise.to(torch.float32), mask=mask, cond=cond)
        x0 = _column(c_skip, x) * x + _column(c_out, x) * out.to(x.dtype)
        return x0 if mask is None else x0 * mask

    def _scalar_coefficients(self, sigma: float) -> tuple[float, float, float, float]:
        """``(c_in, c_skip, c_out, c_noise)`` of one noise level as Python floats (float64 maths, cached)."""
        key = (sigma, self.sigma_data, self.parameterization, self.noise_label)  # settings may be changed later
        cached = self._coefficient_cache.get(key)
        if cached is None:
            values = self.coefficients(torch.tensor([sigma], dtype=torch.float64))
            cached = tuple(float(v[0]) for v in values)
            if len(self._coefficient_cache) > 4096:
                self._coefficient_cache.clear()
            self._coefficient_cache[key] = cached  # type: ignore[assignment]
        return cached  # type: ignore[return-value]

    def _backbone_call(self) -> Any:
        return self._compiled if self._compiled is not None else self.backbone

    @property
    def is_compiled(self) -> bool:
        """Whether network calls go through ``torch.compile`` (:meth:`compile_backbone`)."""
        return self._compiled is not None

    def compile_backbone(self, **options: Any) -> None:
        """Use ``torch.compile(backbone, **options)`` for the network calls (weights stay shared; saving is
        unaffected). The first call compiles."""
        object.__setattr__(self, "_compiled", torch.compile(self.backbone, **options))

    def eps(self, x: Tensor, sigma: float | Tensor, cond: dict[str, Tensor] | None = None) -> Tensor:
        """Predicted noise ``(x - x0_hat) / sigma`` ``[B,C,H,W]``."""
        sigma = sigma_tensor(sigma, x.shape[0], x.device)
        return x0_to_eps(x, self(x, sigma, cond), sigma)

    def score(self, x: Tensor, sigma: float | Tensor, cond: dict[str, Tensor] | None = None) -> Tensor:
        """Score ``grad log p_sigma(x) = (x0_hat - x) / sigma^2`` ``[B,C,H,W]``."""
        sigma = sigma_tensor(sigma, x.shape[0], x.device)
        return (self(x, sigma, cond) - x) / _column(sigma**2, x)


def describe_plugin(kind: str, obj: Any) -> dict[str, Any]:
    """``{"name", "config"}`` of a plugin; an unregistered one gets ``name=None`` (usable, but not saveable).

    >>> from geodiff.diffusion.schedules import VPSchedule
    >>> spec = describe_plugin("schedule", VPSchedule(num_train_timesteps=10))
    >>> build_plugin("schedule", spec).config == spec["config"], spec["name"]
    (True, 'vp')
    """
    try:
        name: str | None = registry.name_of(kind, obj)
    except PluginError:
        name = None
    return {"name": name, "config": getattr(obj, "config", None)}


def build_plugin(kind: str, spec: dict[str, Any]) -> Any:
    """The plugin of ``kind`` described by ``{"name", "config"}`` (:func:`describe_plugin`), built from its config."""
    if set(spec) != {"name", "config"}:
        raise ConfigError(f"a {kind} spec needs exactly the keys 'name' and 'config', got {sorted(spec)}")
    if spec["name"] is None:
        raise ConfigError(f"the {kind} was not a registered plugin when saved, so it cannot be rebuilt by name")
    return registry.get(kind, spec["name"]).from_config(spec["config"])
