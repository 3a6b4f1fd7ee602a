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

Step-size convention: there is no step size; the observed points are set to the observations noised to the
level the step ends at (``sigma_next``), so the imposed noise always matches the sampler's.

:class:`RePaintSampler` overrides only the step of the standard sampler loop; ``resample=1`` is replacement alone.

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
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from geodiff.errors import ConfigError, ObservationError
from geodiff.guidance.base import Guidance, GuidedSampler, ObservationGuidance
from geodiff.operators import GridPointOperator

__all__ = ["RePaintGuidance", "RePaintSampler"]


def _standard_normal(like: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)


class RePaintGuidance(ObservationGuidance):
    """Replacement at observed grid points with ``resample`` passes per step: builds a :class:`RePaintSampler`
    (module docstring)."""

    name = "repaint"
    resamples = True

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
        """One replacement for several sets with equal settings: grid points concatenated."""
        if any(g.config != guidances[0].config for g in guidances) or any(g.y.ndim != 1 for g in guidances):
            return None
        index = torch.cat([g.operator.index for g in guidances])
        operator = GridPointOperator(index, guidances[0].operator.field_shape)
        y = torch.cat([g.y.to(torch.float64) for g in guidances])
        error_std = torch.cat([g.error_std.to(torch.float64) for g in guidances])
        return cls(y, operator, error_std, **guidances[0].config)

    def wrap_sampler(self, sampler: Any) -> RePaintSampler:
        return RePaintSampler(sampler, self)


class RePaintSampler(GuidedSampler):
    """The wrapped sampler's step with RePaint's replacement and ``resample`` passes (steps 1-4 of the module
    docstring); the loop is the standard one."""

    def __init__(self, sampler: Any, guidance: RePaintGuidance):
        super().__init__(sampler)
        self.guidance = guidance

    def nfe(self, steps: int) -> int:
        """Network evaluations of a ``steps``-step run: ``resample`` passes of each step."""
        return self.sampler.nfe(steps) * self.guidance.resample

    def replace(self, x_next: Tensor, sigma_next: float, generator: torch.Generator | None) -> Tensor:
        """``x_next [B, C, H, W]`` with the observed points set to ``y + sigma_next * z`` (steps 2-3)."""
        flat = x_next.reshape(x_next.shape[0], -1).clone()
        known = self.guidance.observations.observed(x_next)
        if sigma_next > 0:
            known = known + sigma_next * _standard_normal(known, generator)
        flat[:, self.guidance.operator.index.to(x_next.device)] = known
        return flat.reshape(x_next.shape)

    def step(self, denoiser, x, i, sigma, sigma_next, state, *, cond, generator):
        passes = self.guidance.resample if sigma_next > 0 else 1
        for u in range(passes):
            x_next, x0_hat = self.sampler.step(denoiser, x, i, sigma, sigma_next, state, cond=cond,
                                               generator=generator)  # fmt: skip
            x_next = self.replace(x_next, sigma_next, generator)
            if u < passes - 1:  # jump back to sigma with fresh noise (step 4)
                x = x_next + math.sqrt(sigma**2 - sigma_next**2) * _standard_normal(x_next, generator)
        return x_next, x0_hat
