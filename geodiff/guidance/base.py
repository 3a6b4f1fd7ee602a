r"""The guidance contract: a method's settings build a guided **denoiser** or a guided **sampler**.

A guidance method is a :class:`Guidance`: its settings (``config``, JSON) and, for observation guidance
(:class:`ObservationGuidance`), the observations as data, a :class:`~geodiff.guidance.likelihood.GaussianLikelihood`
``(y, A, error_std)`` in the **normalised** units of the field. It acts on sampling in one of two ways:

- ``wrap(denoiser)`` returns a :class:`GuidedDenoiser`, ``(x, sigma, cond=None) -> x0_guided``: the method changes
  the estimate of ``x0`` only (DPS, MMPS/SDA, coarse, latent MMPS, reward); any sampler then uses it unchanged;
- ``wrap_sampler(sampler)`` returns a :class:`GuidedSampler`, a sampler with the standard signature that overrides
  :meth:`~geodiff.diffusion.samplers.Sampler.step` (never the loop) around the wrapped sampler's own step: the
  method changes the transition ``x -> x_next`` (ReconMOST's mean shift, RePaint's replacement and resampling,
  DPS's step in Chung et al.'s convention).

:meth:`Guidance.sample` applies both: ``guidance.sample(sampler, denoiser, noise, sigmas, generator=g)`` is
``guidance.wrap_sampler(sampler)(guidance.wrap(denoiser), noise, sigmas, generator=g)``. Noise convention
``x = x0 + sigma * eps`` (sigma as in :mod:`geodiff.diffusion.schedules`); each method's module documents its step
size. Several guidances act together through :func:`geodiff.guidance.combined.combine`.

Example
-------
>>> import torch
>>> from geodiff.diffusion.samplers import HeunSampler
>>> from geodiff.guidance import DPSGuidance, ReconMOSTGuidance
>>> from geodiff.operators import GridPointOperator
>>> A, y = GridPointOperator(torch.tensor([0]), (1, 2, 2)), torch.tensor([2.0])
>>> type(DPSGuidance(y, A, 0.1).wrap(lambda x, sigma, cond=None: x)).__name__  # changes x0_hat
'DPSDenoiser'
>>> type(ReconMOSTGuidance(y, A, 0.1).wrap_sampler(HeunSampler())).__name__  # changes the transition
'ReconMOSTSampler'
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from geodiff import registry
from geodiff.diffusion.samplers import Sampler
from geodiff.errors import ConfigError, GridError
from geodiff.guidance.likelihood import GaussianLikelihood
from geodiff.guidance.linearization import Linearization

__all__ = [
    "DenoiserFn",
    "Guidance",
    "ObservationGuidance",
    "GuidedDenoiser",
    "GuidedSampler",
    "sigma_column",
    "observation_method",
]

DenoiserFn = Callable[..., Tensor]


def sigma_column(sigma: float | Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """Noise level as float64 ``[B]`` and as a ``[B, 1, 1, 1]`` column in ``x``'s dtype."""
    s = torch.as_tensor(sigma, dtype=torch.float64, device=x.device)
    s = s.expand(x.shape[0]) if s.ndim == 0 else s.reshape(-1)
    if s.shape[0] != x.shape[0]:
        raise GridError(f"sigma must be a scalar or have one value per batch member ({x.shape[0]})")
    return s, s.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


class Guidance:
    """A guidance method: its settings ``config`` and what it wraps (module docstring). The identity here
    (unguided sampling); subclasses override :meth:`wrap` and/or :meth:`wrap_sampler`."""

    #: registry name (``geodiff.registry.get("guidance", name)``)
    name: ClassVar[str] = ""
    #: True for a sampler wrapper that repeats the wrapped transition (RePaint's resampling): at most one combines
    resamples: ClassVar[bool] = False

    def __init__(self) -> None:
        self.config: dict[str, Any] = {}

    @property
    def n_obs(self) -> int:
        """Number of observations ``N`` (0 for guidance without observations)."""
        return 0

    def describe(self) -> dict[str, Any]:
        """Name, settings and number of observations, for provenance attributes."""
        return {"name": self.name, "n_obs": self.n_obs, **self.config}

    def wrap(self, denoiser: DenoiserFn) -> DenoiserFn:
        """A denoiser ``(x, sigma, cond=None) -> x0_hat`` that includes this guidance (the denoiser itself here)."""
        return denoiser

    def wrap_sampler(self, sampler: Any) -> Any:
        """A sampler with the standard signature that includes this guidance (the sampler itself here)."""
        return sampler

    def sample(
        self,
        sampler: Any,
        denoiser: DenoiserFn,
        noise: Tensor,
        sigmas: Tensor,
        *,
        cond: dict[str, Tensor] | None = None,
        generator: torch.Generator | None = None,
        callback: Callable[..., None] | None = None,
    ) -> Tensor:
        """Guided sampling: ``wrap_sampler(sampler)(wrap(denoiser), noise, sigmas, ...)`` -> ``[B, C, H, W]``."""
        run = self.wrap_sampler(sampler)
        return run(self.wrap(denoiser), noise, sigmas, cond=cond, generator=generator, callback=callback)

    @classmethod
    def merge(cls, guidances: Sequence[Guidance]) -> Guidance | None:
        """One guidance of this class acting as all of ``guidances`` together, or None (the default: they act
        one after the other)."""
        return None


class ObservationGuidance(Guidance):
    """Guidance towards observations ``y = A x0 + e`` (:class:`~geodiff.guidance.likelihood.GaussianLikelihood`):
    ``y [N]`` or ``[B, N]``, ``operator`` ``A``, ``error_std`` a positive number or ``[N]``, normalised units."""

    def __init__(self, y: Any, operator: Callable[[Tensor], Tensor], error_std: Any):
        super().__init__()
        self.observations = GaussianLikelihood(y, operator, error_std)

    @property
    def y(self) -> Tensor:
        """The observations ``[N]`` or ``[B, N]``."""
        return self.observations.y

    @property
    def operator(self) -> Callable[[Tensor], Tensor]:
        """The observation operator ``A``."""
        return self.observations.operator

    @property
    def error_std(self) -> Tensor:
        """The observation error standard deviations ``[N]``."""
        return self.observations.error_std

    @property
    def n_obs(self) -> int:
        return self.observations.n_obs

    @classmethod
    def merge(cls, guidances: Sequence[Guidance]) -> Guidance | None:
        """One guidance of this class for several observation sets with equal settings (observations
        concatenated, operators stacked: one joint update), or None when they cannot be merged (different
        settings, operators that are not :class:`~geodiff.operators.LinearOperator`, or per-member ``y``)."""
        if any(type(g) is not cls or g.config != guidances[0].config for g in guidances):
            return None
        joint = GaussianLikelihood.concatenate([g.observations for g in guidances])  # type: ignore[attr-defined]
        if joint is None:
            return None
        return cls(joint.y, joint.operator, joint.error_std, **guidances[0].config)


def observation_method(method: str | type) -> Any:
    """The registered observation guidance ``method`` (a name such as ``"mmps"``, or a class), built as
    ``method(y, A, error_std, **settings)``; raises :class:`~geodiff.errors.ConfigError` naming the observation
    methods for a :class:`Guidance` that is not built from observations (``"reward"``).

    >>> observation_method("sda").__name__
    'SDAGuidance'
    """
    def takes_observations(cls: Any) -> bool:  # plugins that are not Guidance subclasses are taken at their word
        return not (isinstance(cls, type) and issubclass(cls, Guidance) and not issubclass(cls, ObservationGuidance))

    cls = registry.get("guidance", method)
    if not takes_observations(cls):
        names = [name for name in registry.available("guidance") if takes_observations(registry.get("guidance", name))]
        raise ConfigError(f"guidance {method!r} is not built from observations (y, A, error_std); "
                          f"observation guidance: {', '.join(names)}")  # fmt: skip
    return cls


class GuidedDenoiser(ABC):
    """A denoiser wrapper ``(x [B, C, H, W], sigma, cond=None) -> x0_guided [B, C, H, W]`` around ``denoiser``:
    the guidance changes the estimate of ``x0`` only."""

    def __init__(self, denoiser: DenoiserFn):
        self.denoiser = denoiser

    def linearize(self, x: Tensor, sigma: float | Tensor, cond: Any = None) -> Linearization:
        """The wrapped denoiser at ``x`` with its graph kept: ``.value = x0_hat``,
        ``.vjp(v) = (d x0_hat / d x)^T v``."""
        return Linearization(lambda point: self.denoiser(point, sigma, cond), x)

    @abstractmethod
    def __call__(self, x: Tensor, sigma: float | Tensor, cond: Any = None) -> Tensor:
        """The guided estimate of ``x0`` at ``x``."""


class GuidedSampler(Sampler):
    """A sampler wrapper: the standard sampler signature and loop (:class:`~geodiff.diffusion.samplers.Sampler`)
    around ``sampler``'s own :meth:`step` (any geodiff sampler, or a wrapper with a ``step`` such as
    :class:`~geodiff.diffusion.clipping.ClipDenoised` or another guided sampler). Subclasses override
    :meth:`step` to change the transition; this one delegates."""

    def __init__(self, sampler: Any):
        if not callable(getattr(sampler, "step", None)):
            raise ConfigError(
                f"a guided sampler wraps a geodiff sampler with a step method, got {type(sampler).__name__}"
            )
        self.sampler = sampler

    def nfe(self, steps: int) -> int:
        """Network evaluations of a ``steps``-step run (those of the wrapped sampler)."""
        return self.sampler.nfe(steps)

    def step(self, denoiser, x, i, sigma, sigma_next, state, *, cond, generator):
        return self.sampler.step(denoiser, x, i, sigma, sigma_next, state, cond=cond, generator=generator)
