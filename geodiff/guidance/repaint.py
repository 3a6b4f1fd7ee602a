r"""RePaint (Lugmayr et al. 2022): replacement of the observed grid points, with resampling.

For observations exactly on grid points (a :class:`~geodiff.operators.GridPointOperator`), each transition
``sigma -> sigma_next`` is

1. ``x_unknown = step(x)``: one step of the wrapped sampler (its ``step`` method, so any sampler works);
2. ``x_known = y + sigma_next * z`` at the observed points (``z`` standard normal): the observations noised to
   the next level -- in VP coordinates RePaint's ``sqrt(abar) y + sqrt(1 - abar) z``, divided by ``sqrt(abar)``;
3. ``x_next = x_unknown`` with the observed points replaced by ``x_known``;
4. resampling: ``resample - 1`` times, jump back to ``sigma`` with fresh noise,
   ``x = x_next + sqrt(sigma^2 - sigma_next^2) * z`` (RePaint's ``sqrt(1 - beta) x + sqrt(beta) z`` in VP
   coordinates), and repeat 1-3; the last pass is kept. Jumps are one step long (RePaint's ``j = 1``).

The resampling lets the unobserved part harmonise with the imposed values: without it (``resample=1``) the
unobserved points only see the observations through later denoiser calls, and the ensemble is biased. RePaint
treats the observations as **exact**: at the end the observed points equal ``y`` and ``error_std`` is not used
(give it anyway: it is recorded). For noisy or off-grid observations use MMPS or DPS. The sampler wrapper costs
``resample`` times the sampler's network evaluations; use it with single-step samplers (DDPM, DDIM, Euler, Heun);
multistep history (DPM-Solver++(2M)) is not meaningful across jumps.

``hook`` is the replacement alone (steps 2-3, no resampling), usable with any sampler through ``hook=``.

Example
-------
>>> import torch
>>> from geodiff.diffusion.gaussian import GaussianDenoiser
>>> from geodiff.diffusion.samplers import DDPMSampler
>>> from geodiff.diffusion.schedules import EDMSchedule
>>> from geodiff.guidance import RePaintGuidance
>>> from geodiff.operators import GridPointOperator
>>> prior = GaussianDenoiser(torch.zeros(2), torch.tensor([[1.0, 0.9], [0.9, 1.0]]), shape=(1, 1, 2))
>>> guidance = RePaintGuidance(torch.tensor([1.0]), GridPointOperator(torch.tensor([0]), (1, 1, 2)), 1e-3,
...                            resample=4)
>>> g = torch.Generator().manual_seed(0)
>>> x = guidance.sample(DDPMSampler(), prior, torch.randn(400, 1, 1, 2, generator=g), EDMSchedule().sigmas(50),
...                     generator=g)
>>> x[:, 0, 0, 0].unique().tolist(), round(x[:, 0, 0, 1].mean().item(), 1)  # exact: 1 and 0.9
([1.0], 0.9)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from geodiff.diffusion.samplers import StepInfo
from geodiff.errors import ConfigError, ObservationError
from geodiff.guidance.base import Guidance
from geodiff.operators import GridPointOperator

__all__ = ["RePaintGuidance", "RePaintSampler"]


def _noise_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


class RePaintGuidance(Guidance):
    """Replacement at observed grid points with ``resample`` passes per step (module docstring)."""

    name = "repaint"

    def __init__(self, y: Any, operator: GridPointOperator, error_std: Any, *, resample: int = 10):
        if not isinstance(operator, GridPointOperator):
            raise ObservationError(
                "repaint replaces values at grid points: its operator must be a GridPointOperator "
                f"(got {type(operator).__name__}); use mmps or dps for interpolated observations"
            )
        super().__init__(y, operator, error_std)
        if operator.has_duplicates():
            raise ObservationError("repaint needs at most one observation per grid point; merge duplicates first")
        if not isinstance(resample, int) or resample < 1:
            raise ConfigError(f"resample must be a positive integer, got {resample!r}")
        self.resample = resample
        self.config = {"resample": resample}

    @classmethod
    def merge(cls, guidances: Sequence[Guidance]) -> Guidance | None:
        if any(g.config != guidances[0].config for g in guidances) or any(g.y.ndim != 1 for g in guidances):
            return None
        index = torch.cat([g.operator.index for g in guidances])
        operator = GridPointOperator(index, guidances[0].operator.field_shape)
        y = torch.cat([g.y.to(torch.float64) for g in guidances])
        error_std = torch.cat([g.error_std.to(torch.float64) for g in guidances])
        return cls(y, operator, error_std, **guidances[0].config)

    def replace(self, x_next: Tensor, sigma_next: float, generator: torch.Generator | None) -> Tensor:
        """``x_next`` with the observed points set to ``y + sigma_next * z``."""
        flat = x_next.reshape(x_next.shape[0], -1).clone()
        known = self.observed(x_next)
        if sigma_next > 0:
            known = known + sigma_next * torch.randn(known.shape, generator=generator, device=known.device,
                                                     dtype=known.dtype)  # fmt: skip
        flat[:, self.operator.index.to(x_next.device)] = known
        return flat.reshape(x_next.shape)

    def hook(self, x_next: Tensor, *, x: Tensor, x0_hat: Tensor, sigma: float, sigma_next: float, generator: Any):
        return self.replace(x_next, float(sigma_next), generator)

    def sampling_hook(self):
        return None  # the replacement happens inside the RePaint sampler

    def wrap_sampler(self, sampler: Any) -> RePaintSampler:
        return RePaintSampler(self, sampler)


class RePaintSampler:
    """A sampler (standard signature) running ``sampler.step`` with RePaint's replacement and resampling."""

    def __init__(self, guidance: RePaintGuidance, sampler: Any):
        if not hasattr(sampler, "step"):
            raise ConfigError(f"repaint needs a geodiff sampler with a step method, got {type(sampler).__name__}")
        self.guidance = guidance
        self.sampler = sampler

    def nfe(self, steps: int) -> int:
        """Network evaluations of a ``steps``-step run: ``resample`` passes of each step."""
        return self.sampler.nfe(steps) * self.guidance.resample

    @torch.no_grad()
    def __call__(
        self,
        denoiser: Callable[..., Tensor],
        noise: Tensor,
        sigmas: Tensor,
        *,
        cond: dict[str, Tensor] | None = None,
        generator: torch.Generator | None = None,
        callback: Callable[..., None] | None = None,
        hook: Callable[..., Tensor] | None = None,
    ) -> Tensor:
        levels = torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1).tolist()
        if len(levels) < 2 or any(b >= a for a, b in zip(levels[:-1], levels[1:])) or levels[-1] < 0:
            raise ConfigError("sigmas must be strictly decreasing, non-negative, with at least 2 levels")
        steps = len(levels) - 1
        x = noise * levels[0]
        state: dict[str, Any] = {"steps": steps}
        for i in range(steps):
            sigma, sigma_next = levels[i], levels[i + 1]
            passes = self.guidance.resample if sigma_next > 0 else 1
            for u in range(passes):
                x_next, x0_hat = self.sampler.step(denoiser, x, i, sigma, sigma_next, state, cond=cond,
                                                   generator=generator)  # fmt: skip
                x_next = self.guidance.replace(x_next, sigma_next, generator)
                if hook is not None:
                    x_next = hook(x_next, x=x, x0_hat=x0_hat, sigma=sigma, sigma_next=sigma_next, generator=generator)
                if u < passes - 1:
                    x = x_next + math.sqrt(sigma**2 - sigma_next**2) * _noise_like(x_next, generator)
            if callback is not None:
                callback(StepInfo(i, steps, sigma, sigma_next, x, x0_hat, x_next))
            x = x_next
        return x
