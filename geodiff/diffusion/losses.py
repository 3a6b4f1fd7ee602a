"""Denoising score-matching losses, masked to valid (ocean) cells.

Convention ``x = x0 + sigma * eps`` (variance exploding), as everywhere in geodiff. Every loss draws a noise level
``sigma [B]`` (float64) with a per-sample weight ``lambda(sigma) [B]`` (float64) and a standard normal ``eps``, forms
``x = x0 + sigma * eps`` (set to 0 on land cells) and averages ``lambda(sigma) * (D(x, sigma) - x0) ** 2`` over the
valid cells of the batch (land cells count neither in the sum nor in the number of cells):

- :class:`EDMLoss` (Karras et al. 2022, eq. 8 and Table 1): ``ln sigma ~ N(P_mean, P_std^2)``,
  ``lambda = (sigma^2 + sigma_data^2) / (sigma * sigma_data)^2``.
- :class:`DDPMLoss` (Ho et al. 2020, "L_simple"): a training timestep ``t`` uniform in ``{0, ..., T-1}``,
  ``sigma = sqrt((1 - abar_t) / abar_t)`` from a :class:`~geodiff.diffusion.schedules.VPSchedule`, and
  ``lambda = 1 / sigma^2``, so the loss is ``|eps_hat - eps|^2`` with ``eps_hat = (x - D) / sigma``: the DDPM
  noise-prediction MSE. With ``x_vp = x / sqrt(1 + sigma^2) = sqrt(abar) x0 + sqrt(1 - abar) eps`` this is exactly the
  DDPM training objective for any parameterisation of the denoiser (``eps``, ``v``, ``x0`` or ``edm``).

A loss is split into :meth:`DenoisingLoss.draw` (the random part: ``sigma``, ``weight``, ``eps``) and
:meth:`DenoisingLoss.terms` (the weighted squared-error sum and the count of valid cells), so a data-parallel trainer
can draw for the global batch, evaluate its own share and normalise by the global count.

Example
-------
>>> import torch
>>> from geodiff.diffusion.gaussian import GaussianDenoiser
>>> from geodiff.diffusion.losses import DDPMLoss, EDMLoss
>>> oracle = GaussianDenoiser(torch.zeros(4), torch.eye(4) * 0.25, shape=(1, 2, 2))  # exact D for N(0, 0.5^2)
>>> x0 = oracle.sample(256, generator=torch.Generator().manual_seed(0)).float()
>>> loss = EDMLoss(sigma_data=0.5)(oracle, x0, generator=torch.Generator().manual_seed(1))
>>> round(loss.item(), 1)  # the exact denoiser of N(0, sd^2) reaches lambda * E|D - x0|^2 = 1 at every sigma
1.0
>>> mask = torch.tensor([[[True, False], [True, True]]])  # [C, H, W], False = land
>>> bool(DDPMLoss()(oracle, x0, mask=mask, generator=torch.Generator().manual_seed(1)) > 0)
True
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from geodiff import registry
from geodiff.diffusion.schedules import VPSchedule
from geodiff.errors import ConfigError, GridError

__all__ = ["NoiseDraw", "DenoisingLoss", "EDMLoss", "DDPMLoss", "masked_mean"]

DenoiserFn = Callable[..., Tensor]


@dataclass
class NoiseDraw:
    """The random part of a loss evaluation for a batch of ``B`` fields.

    ``sigma [B]`` float64 noise levels, ``weight [B]`` float64 loss weights ``lambda(sigma)``, ``noise [B,C,H,W]``
    standard normal (the field's dtype). ``draw[a:b]`` is the draw of samples ``a..b-1``.
    """

    sigma: Tensor
    weight: Tensor
    noise: Tensor

    def __getitem__(self, index: slice) -> NoiseDraw:
        return NoiseDraw(self.sigma[index], self.weight[index], self.noise[index])

    def to(self, device: torch.device | str) -> NoiseDraw:
        """The same draw on ``device``."""
        return NoiseDraw(self.sigma.to(device), self.weight.to(device), self.noise.to(device))


def _mask_like(mask: Tensor | None, x0: Tensor) -> Tensor | None:
    """``mask`` ([C,H,W] or [B,C,H,W], bool) as a float tensor broadcastable to ``x0``; checked against its shape."""
    if mask is None:
        return None
    mask = torch.as_tensor(mask, device=x0.device)
    if mask.dtype != torch.bool:
        raise GridError(f"mask must be a bool tensor (True = valid cell), got dtype {mask.dtype}")
    if tuple(mask.shape) not in (tuple(x0.shape[1:]), tuple(x0.shape)):
        raise GridError(
            f"mask must have shape [C, H, W] = {list(x0.shape[1:])} or [B, C, H, W] = {list(x0.shape)}, "
            f"got {list(mask.shape)}"
        )
    return mask.to(x0.dtype)


def masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``values [B,C,H,W]`` over the cells where ``mask`` ([C,H,W] or [B,C,H,W] bool) is True.

    Returns 0 when no cell is valid.

    >>> import torch
    >>> masked_mean(torch.tensor([[[[1.0, 100.0]]]]), torch.tensor([[[True, False]]])).item()
    1.0
    """
    m = _mask_like(mask, values)
    if m is None:
        return values.mean()
    m = m.expand_as(values)
    return (values * m).sum() / m.sum().clamp_min(1)


class DenoisingLoss(ABC):
    """Base class of denoising losses: ``loss(denoiser, x0 [B,C,H,W], *, mask, cond, generator) -> scalar``.

    Subclasses define :meth:`noise_levels`; the rest (noise, masking, weighting) is shared.
    """

    @abstractmethod
    def noise_levels(
        self, batch: int, generator: torch.Generator | None, device: torch.device
    ) -> tuple[Tensor, Tensor]:
        """Draw ``batch`` noise levels: ``(sigma [B], weight [B])``, float64 on ``device``."""

    @property
    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON description of the loss (recorded in training checkpoints)."""

    def draw(
        self,
        shape: tuple[int, ...] | torch.Size,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> NoiseDraw:
        """Draw noise levels, weights and standard normal noise for a batch of fields of ``shape = (B, C, H, W)``.

        Everything is drawn from ``generator`` (on the generator's device; ``device`` when no generator is given),
        first ``sigma`` then ``noise``, so the same generator state always gives the same draw.
        """
        if device is None:
            device = generator.device if generator is not None else torch.device("cpu")
        device = torch.device(device)
        sigma, weight = self.noise_levels(int(shape[0]), generator, device)
        noise = torch.randn(tuple(shape), generator=generator, dtype=dtype, device=device)
        return NoiseDraw(sigma, weight, noise)

    def terms(
        self,
        denoiser: DenoiserFn,
        x0: Tensor,
        draw: NoiseDraw,
        *,
        mask: Tensor | None = None,
        cond: dict[str, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``(sum over valid cells of lambda * (D(x, sigma) - x0)^2, number of valid cells)`` for ``x0 [B,C,H,W]``.

        ``draw`` comes from :meth:`draw` for this batch; ``mask`` is ``[C,H,W]`` or ``[B,C,H,W]`` bool (True =
        valid) or None (every cell valid). Land cells of ``x`` are set to 0 before the denoiser sees them, so land
        values of ``x0`` cannot change the loss.
        """
        if x0.ndim != 4:
            raise GridError(f"x0 must be a [B, C, H, W] batch of fields, got shape {list(x0.shape)}")
        if tuple(draw.noise.shape) != tuple(x0.shape):
            raise GridError(f"noise draw has shape {list(draw.noise.shape)}, the batch x0 has {list(x0.shape)}")
        m = _mask_like(mask, x0)
        draw = draw.to(x0.device)
        sigma = draw.sigma.to(torch.float64)
        x = x0 + sigma.to(x0.dtype).reshape(-1, 1, 1, 1) * draw.noise.to(x0.dtype)
        if m is not None:
            x = x * m
        error = (denoiser(x, sigma, cond) - x0) ** 2
        if m is not None:
            error = error * m
            count = m.expand_as(x0).sum()
        else:
            count = torch.tensor(float(x0[0].numel() * x0.shape[0]), device=x0.device)
        per_sample = error.flatten(1).sum(1)
        return (per_sample * draw.weight.to(per_sample.dtype)).sum(), count.to(per_sample.dtype)

    def __call__(
        self,
        denoiser: DenoiserFn,
        x0: Tensor,
        *,
        mask: Tensor | None = None,
        cond: dict[str, Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Weighted denoising loss of ``x0 [B,C,H,W]``, averaged over valid cells (a scalar tensor).

        ``denoiser`` is any callable ``(x, sigma [B] float64, cond) -> x0_hat``; ``mask`` ``[C,H,W]`` or
        ``[B,C,H,W]`` bool (True = valid); ``generator`` makes the draw reproducible.
        """
        device = x0.device if generator is None else None
        draw = self.draw(x0.shape, generator=generator, dtype=x0.dtype, device=device)
        total, count = self.terms(denoiser, x0, draw, mask=mask, cond=cond)
        return total / count.clamp_min(1)


class EDMLoss(DenoisingLoss):
    """EDM loss (Karras et al. 2022): ``ln sigma ~ N(P_mean, P_std^2)``, ``lambda = (s^2 + sd^2) / (s sd)^2``.

    ``sigma_data`` should equal the denoiser's; with it, an exact denoiser of ``N(m, sd^2)`` data scores 1 at every
    noise level.

    >>> loss = EDMLoss()
    >>> sigma, weight = loss.noise_levels(3, torch.Generator().manual_seed(0), torch.device("cpu"))
    >>> sigma.dtype, weight.shape
    (torch.float64, torch.Size([3]))
    """

    def __init__(self, P_mean: float = -1.2, P_std: float = 1.2, sigma_data: float = 0.5):  # noqa: N803 (paper names)
        if P_std <= 0 or sigma_data <= 0:
            raise ConfigError(f"P_std and sigma_data must be > 0, got P_std={P_std}, sigma_data={sigma_data}")
        self.P_mean, self.P_std, self.sigma_data = float(P_mean), float(P_std), float(sigma_data)

    @property
    def config(self) -> dict[str, Any]:
        return {"name": "edm", "P_mean": self.P_mean, "P_std": self.P_std, "sigma_data": self.sigma_data}

    def noise_levels(self, batch, generator, device):
        log_sigma = torch.randn(batch, generator=generator, dtype=torch.float64, device=device)
        sigma = (log_sigma * self.P_std + self.P_mean).exp()
        weight = (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2
        return sigma, weight

    def __repr__(self) -> str:
        return f"EDMLoss(P_mean={self.P_mean}, P_std={self.P_std}, sigma_data={self.sigma_data})"


class DDPMLoss(DenoisingLoss):
    """DDPM noise-prediction loss (Ho et al. 2020): ``t ~ U{0..T-1}``, ``sigma = sigma_t`` of ``schedule``,
    ``lambda = 1 / sigma^2`` (the MSE of ``eps_hat = (x - D) / sigma`` against ``eps``).

    ``schedule`` is a :class:`~geodiff.diffusion.schedules.VPSchedule` (default ``VPSchedule()``), normally the
    denoiser's own.

    >>> loss = DDPMLoss(VPSchedule(num_train_timesteps=10))
    >>> sigma, weight = loss.noise_levels(4, torch.Generator().manual_seed(0), torch.device("cpu"))
    >>> bool(torch.isin(sigma, loss.schedule.train_sigmas).all()), torch.allclose(weight, sigma**-2)
    (True, True)
    """

    def __init__(self, schedule: VPSchedule | None = None):
        schedule = VPSchedule() if schedule is None else schedule
        if not isinstance(schedule, VPSchedule):
            raise ConfigError(f"DDPMLoss needs a VPSchedule, got {type(schedule).__name__}")
        self.schedule = schedule

    @property
    def config(self) -> dict[str, Any]:
        schedule = {"name": registry.name_of("schedule", self.schedule), "config": self.schedule.config}
        return {"name": "ddpm", "schedule": schedule}

    def noise_levels(self, batch, generator, device):
        t = torch.randint(0, self.schedule.num_train_timesteps, (batch,), generator=generator, device=device)
        sigma = self.schedule.train_sigmas.to(device)[t]
        return sigma, sigma**-2

    def __repr__(self) -> str:
        return f"DDPMLoss({type(self.schedule).__name__}(**{self.schedule.config}))"
