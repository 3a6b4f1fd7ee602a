"""Guidance: steering a diffusion prior towards observations ``y = A x0 + e``, ``e ~ N(0, diag(error_std^2))``.

Every guidance is built from ``(y [N] or [B, N], A, error_std [N])`` in the **normalised** units of the field
(see :meth:`geodiff.operators.PointOperator.to_normalized`) and acts on the sampler in up to three ways:

- ``wrap(denoiser)``: a new denoiser ``(x, sigma, cond=None) -> x0_hat`` (methods that change the estimate of
  ``x0``: DPS, MMPS/SDA);
- ``hook(x_next, *, x, x0_hat, sigma, sigma_next, generator) -> x_next``: a transition hook run after each
  sampler step (methods that change the transition: ReconMOST's mean shift, replacement);
- ``wrap_sampler(sampler)``: a sampler with the same signature (RePaint's resampling).

:meth:`Guidance.sample` applies all three: ``guidance.sample(sampler, denoiser, noise, sigmas, generator=g)``.
Several observation sets combine with :class:`CombinedGuidance` (or a list passed to :func:`combine`): sets of
the same method and settings are merged into one (observations concatenated, operators stacked, so MMPS solves
one joint system); for different methods the denoiser corrections add (``x0_hat + sum_k (x0_guided_k - x0_hat)``:
the likelihood scores of independent observation sets add), hooks are applied in turn.

The operator ``A`` is a :class:`~geodiff.operators.LinearOperator` (``A(x) -> [B, N]``, ``A.adjoint(r)``) or any
linear callable ``x [B, C, H, W] -> [B, N]`` (its adjoint is then taken with autograd). Noise convention
``x = x0 + sigma * eps``.

Example
-------
>>> import torch
>>> from geodiff.diffusion.gaussian import GaussianDenoiser
>>> from geodiff.diffusion.samplers import DDPMSampler
>>> from geodiff.diffusion.schedules import EDMSchedule
>>> from geodiff.guidance import MMPSGuidance
>>> from geodiff.operators import GridPointOperator
>>> prior = GaussianDenoiser(torch.zeros(4), torch.eye(4), shape=(1, 2, 2))
>>> A = GridPointOperator(torch.tensor([0]), (1, 2, 2))
>>> guidance = MMPSGuidance(torch.tensor([2.0]), A, torch.tensor([0.01]))
>>> g = torch.Generator().manual_seed(0)
>>> x = guidance.sample(DDPMSampler(), prior, torch.randn(64, 1, 2, 2, generator=g), EDMSchedule().sigmas(32),
...                     generator=g)
>>> round(x[:, 0, 0, 0].mean().item(), 1)
2.0
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from geodiff.errors import ConfigError, GridError, ObservationError
from geodiff.operators import LinearOperator, StackedOperator

__all__ = ["Guidance", "CombinedGuidance", "combine", "apply_adjoint", "sigma_column"]

DenoiserFn = Callable[..., Tensor]


def sigma_column(sigma: float | Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """Noise level as float64 ``[B]`` and as a ``[B, 1, 1, 1]`` column in ``x``'s dtype."""
    s = torch.as_tensor(sigma, dtype=torch.float64, device=x.device)
    s = s.expand(x.shape[0]) if s.ndim == 0 else s.reshape(-1)
    if s.shape[0] != x.shape[0]:
        raise GridError(f"sigma must be a scalar or have one value per batch member ({x.shape[0]})")
    return s, s.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


def apply_adjoint(operator: Callable[[Tensor], Tensor], r: Tensor, like: Tensor) -> Tensor:
    """``A^T r`` for ``r [B, N]``: the operator's own ``adjoint`` or, for a plain linear callable, the
    vector-Jacobian product of ``A`` at ``like [B, C, H, W]``."""
    adjoint = getattr(operator, "adjoint", None)
    if adjoint is not None:
        return adjoint(r)
    with torch.enable_grad():
        probe = torch.zeros_like(like, requires_grad=True)
        (out,) = torch.autograd.grad(operator(probe), probe, r)
    return out


class Guidance:
    """Base class of observation guidance built from ``(y, operator, error_std)`` (module docstring).

    ``y``: ``[N]`` (shared by the batch) or ``[B, N]``; ``error_std``: a positive number or ``[N]``. Subclasses
    override :meth:`wrap`, :meth:`hook` and/or :meth:`wrap_sampler`; ``config`` holds their JSON settings.
    """

    #: registry name (``geodiff.registry.get("guidance", name)``)
    name: ClassVar[str] = ""

    def __init__(self, y: Any, operator: Callable[[Tensor], Tensor], error_std: Any):
        if not callable(operator):
            raise ObservationError(f"the observation operator must be callable, got {type(operator).__name__}")
        y = torch.as_tensor(y)
        if not torch.is_floating_point(y):
            y = y.to(torch.float64)
        if y.ndim not in (1, 2) or y.shape[-1] == 0:
            raise ObservationError(f"y must be [N] or [B, N] with N >= 1, got shape {tuple(y.shape)}")
        n_obs = y.shape[-1]
        expected = getattr(operator, "n_obs", n_obs)
        if expected != n_obs:
            raise ObservationError(f"y has {n_obs} observations but the operator maps to {expected}")
        if not torch.all(torch.isfinite(y)):
            raise ObservationError("y has non-finite values; drop them with validate_observations first")
        error_std = torch.as_tensor(error_std, dtype=y.dtype).reshape(-1)
        if error_std.numel() == 1:
            error_std = error_std.expand(n_obs).clone()
        if error_std.numel() != n_obs:
            raise ObservationError(f"error_std has {error_std.numel()} values; expected 1 or {n_obs}")
        if not torch.all((error_std > 0) & torch.isfinite(error_std)):
            raise ObservationError("error_std must be positive and finite for every observation")
        self.y = y
        self.operator = operator
        self.error_std = error_std
        self.config: dict[str, Any] = {}

    @property
    def n_obs(self) -> int:
        """Number of observations ``N``."""
        return int(self.y.shape[-1])

    def describe(self) -> dict[str, Any]:
        """Name, settings and number of observations, for provenance attributes."""
        return {"name": self.name, "n_obs": self.n_obs, **self.config}

    def observed(self, x: Tensor) -> Tensor:
        """``y`` as ``[B, N]`` in ``x``'s dtype and device."""
        y = self.y.to(device=x.device, dtype=x.dtype)
        return y.expand(x.shape[0], -1) if y.ndim == 1 else y

    def variance(self, x: Tensor) -> Tensor:
        """``error_std^2`` ``[N]`` in ``x``'s dtype and device."""
        return self.error_std.to(device=x.device, dtype=x.dtype) ** 2

    # ---- the three ways of acting on a sampler (identity by default)

    def wrap(self, denoiser: DenoiserFn) -> DenoiserFn:
        """A denoiser ``(x, sigma, cond=None) -> x0_hat`` that includes this guidance (identity here)."""
        return denoiser

    def hook(self, x_next: Tensor, *, x: Tensor, x0_hat: Tensor, sigma: float, sigma_next: float, generator: Any):
        """Transition hook run after each sampler step (identity here)."""
        return x_next

    def wrap_sampler(self, sampler: Any) -> Any:
        """A sampler with the standard signature that includes this guidance (the sampler itself here)."""
        return sampler

    def sampling_hook(self) -> Callable[..., Tensor] | None:
        """The hook :meth:`sample` passes to the sampler (None when :meth:`hook` is the identity)."""
        return None if type(self).hook is Guidance.hook else self.hook

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
        """Guided sampling: ``wrap_sampler(sampler)(wrap(denoiser), noise, sigmas, hook=...)`` -> ``[B, C, H, W]``."""
        run = self.wrap_sampler(sampler)
        return run(
            self.wrap(denoiser), noise, sigmas, cond=cond, generator=generator, callback=callback,
            hook=self.sampling_hook(),
        )  # fmt: skip

    # ---- combination

    @classmethod
    def merge(cls, guidances: Sequence[Guidance]) -> Guidance | None:
        """One guidance of this class for several observation sets with equal settings (observations
        concatenated, operators stacked), or None when they cannot be merged (different settings, operators
        that are not :class:`~geodiff.operators.LinearOperator`, or per-member ``y``)."""
        configs = [g.config for g in guidances]
        if any(c != configs[0] for c in configs) or any(type(g) is not cls for g in guidances):
            return None
        if not all(isinstance(g.operator, LinearOperator) for g in guidances) or any(g.y.ndim != 1 for g in guidances):
            return None
        y = torch.cat([g.y.to(torch.float64) for g in guidances])
        error_std = torch.cat([g.error_std.to(torch.float64) for g in guidances])
        return cls(y, StackedOperator([g.operator for g in guidances]), error_std, **configs[0])


class CombinedGuidance(Guidance):
    """Several guidances (observation sets or methods) acting together; see the module docstring.

    Example
    -------
    >>> import torch
    >>> from geodiff.guidance import DPSGuidance
    >>> from geodiff.operators import GridPointOperator
    >>> a = DPSGuidance(torch.tensor([1.0]), GridPointOperator(torch.tensor([0]), (1, 1, 2)), 0.1)
    >>> b = DPSGuidance(torch.tensor([2.0]), GridPointOperator(torch.tensor([1]), (1, 1, 2)), 0.1)
    >>> combined = CombinedGuidance([a, b])
    >>> len(combined.parts), combined.parts[0].n_obs
    (1, 2)
    """

    name = "combined"

    def __init__(self, guidances: Sequence[Guidance]):
        flat: list[Guidance] = []
        for g in guidances:
            if not isinstance(g, Guidance):
                raise ConfigError(f"CombinedGuidance takes Guidance objects, got {type(g).__name__}")
            flat += g.parts if isinstance(g, CombinedGuidance) else [g]
        if not flat:
            raise ConfigError("CombinedGuidance needs at least one guidance")
        parts: list[Guidance] = []
        for cls in dict.fromkeys(type(g) for g in flat):  # classes in order of first appearance
            group = [g for g in flat if type(g) is cls]
            merged = cls.merge(group) if len(group) > 1 else group[0]
            parts += [merged] if merged is not None else group
        if sum(type(g).wrap_sampler is not Guidance.wrap_sampler for g in parts) > 1:
            raise ConfigError("at most one sampler-wrapping guidance (e.g. repaint) can be combined")
        self.parts = parts
        self.config = {"parts": [g.describe() for g in parts]}

    @property
    def n_obs(self) -> int:
        return sum(g.n_obs for g in self.parts)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "n_obs": self.n_obs, **self.config}

    def wrap(self, denoiser: DenoiserFn) -> DenoiserFn:
        wrapped = [g.wrap(denoiser) for g in self.parts]
        wrapped = [w for w in wrapped if w is not denoiser]
        if not wrapped:
            return denoiser
        return wrapped[0] if len(wrapped) == 1 else _SumOfCorrections(denoiser, wrapped)

    def hook(self, x_next: Tensor, *, x: Tensor, x0_hat: Tensor, sigma: float, sigma_next: float, generator: Any):
        for g in self.parts:
            own = g.sampling_hook()
            if own is not None:
                x_next = own(x_next, x=x, x0_hat=x0_hat, sigma=sigma, sigma_next=sigma_next, generator=generator)
        return x_next

    def sampling_hook(self) -> Callable[..., Tensor] | None:
        return self.hook if any(g.sampling_hook() is not None for g in self.parts) else None

    def wrap_sampler(self, sampler: Any) -> Any:
        for g in self.parts:
            sampler = g.wrap_sampler(sampler)
        return sampler


class _SumOfCorrections:
    """Several guided denoisers around one denoiser: ``x0_hat + sum_k (x0_guided_k - x0_hat)`` (each wrapper
    evaluates the denoiser itself; the likelihood scores of independent observation sets add)."""

    def __init__(self, denoiser: DenoiserFn, wrapped: Sequence[DenoiserFn]):
        self.denoiser = denoiser
        self.wrapped = list(wrapped)

    def __call__(self, x: Tensor, sigma: float | Tensor, cond: dict[str, Tensor] | None = None) -> Tensor:
        with torch.no_grad():
            base = self.denoiser(x, sigma, cond)
        out = base.clone()
        for guided in self.wrapped:
            out = out + (guided(x, sigma, cond) - base)
        return out


def combine(guidances: Guidance | Sequence[Guidance]) -> Guidance:
    """A single guidance from one or several (a list becomes a :class:`CombinedGuidance`; an empty list means
    unguided sampling).

    >>> combine([]).describe()
    {'name': 'none', 'n_obs': 0}
    """
    if isinstance(guidances, Guidance):
        return guidances
    guidances = list(guidances)
    if not guidances:
        return _NoGuidance()
    return guidances[0] if len(guidances) == 1 else CombinedGuidance(guidances)


class _NoGuidance(Guidance):
    """Unguided sampling (what an empty list of guidances means)."""

    name = "none"

    def __init__(self) -> None:
        self.y = torch.zeros(0)
        self.error_std = torch.zeros(0)
        self.operator = None
        self.config = {}
