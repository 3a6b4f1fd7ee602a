r"""Moment-matching posterior sampling (MMPS, Rozet et al. 2024) and its diagonal SDA variant (Rozet & Louppe 2023).

The denoiser is replaced by an estimate of ``E[x0 | x_sigma, y]``. With Tweedie's formulas for the prior,
``x0_hat = E[x0 | x]`` and ``V = Cov[x0 | x] = sigma^2 d x0_hat / d x``, moment matching takes
``p(x0 | x) ~ N(x0_hat, V)``, hence ``p(y | x) ~ N(A x0_hat, R + A V A^T)``, ``R = diag(error_std^2)``, and

    ``x0_guided = x0_hat + sigma^2 grad_x log p(y | x) = x0_hat + sigma^2 (d x0_hat / d x)^T A^T u``,
    ``u = (R + sigma^2 A (d x0_hat / d x) A^T)^-1 (y - A x0_hat)``

(the Jacobian of the covariance is neglected in the gradient, as in MMPS). Everything is matrix-free:

- ``method="cg"`` (MMPS, default): ``u`` is solved with ``cg_iterations`` (default 1) conjugate-gradient steps; each
  step is one vector-Jacobian product through the network (``(d x0_hat / d x)^T v`` with autograd; the Jacobian of an
  exact denoiser is symmetric, so the VJP equals the JVP) plus one application of ``A`` and ``A^T``; one more
  VJP gives the final gradient. Cost per denoiser call: 1 forward + ``cg_iterations + 1`` backward passes.
  For a Gaussian prior with its exact denoiser and ``cg_iterations >= N`` (distinct eigenvalues at most ``N``),
  ``x0_guided`` is the exact ``E[x0 | x, y]``, so a converged sampler draws from the exact (Kalman) posterior.
  A trained network's Jacobian is not exactly symmetric (nor positive definite), so more CG steps can diverge: on the
  World Ocean Atlas prior shipped with geodiff (5 % coverage, Heun 24 steps) the held-out RMSE was 1.2 degC with 1
  iteration and 3.1-3.2 degC with 2 or 3. One iteration is the default; raise it for near-exact denoisers: with the
  exact Gaussian prior of optimal interpolation on real grids (``benchmarks/gaussian_check.py``, 34-238
  observations of error 1-6 % of the field's std) one iteration leaves the ensemble mean 0.43-0.47 posterior sd
  from the exact posterior mean (RMSE up to 11 % above OI's), four iterations 0.27-0.30 (0.25 is the Monte Carlo
  floor of 16 members). ``preconditioner="diagonal"`` runs preconditioned CG with ``P = R + v diag(A A^T)``,
  ``v = sigma^2 / (1 + sigma^2)`` (the posterior variance of a unit-variance prior cell): its first step is along
  ``P^-1 (y - A x0_hat)``, so observations of very different errors (a coarse field and stations) are weighted by
  their own precision, where plain CG takes one step along the raw residuals. The overshoot control of the diagonal method (:mod:`geodiff.guidance.overshoot`) is not
  applied to CG: the trained prior's Jacobian makes a poor line-search metric there (demo, 4 members: RMSE 1.24 -> 1.91 degC).
- ``method="diagonal"`` (SDA): ``V ~ gamma sigma^2 I``, so ``R + A V A^T`` is replaced by its diagonal
  ``error_std^2 + gamma sigma^2 diag(A A^T)``: no solve, one VJP. ``gamma = 1e-2`` by default, as in SDA
  (Rozet & Louppe use ``Sigma_y + gamma sigma^2 / mu^2 I``; ``diag(A A^T) = 1`` for grid-point observations, so
  this is the same there, and it accounts for the shrinkage of interpolation weights otherwise). The diagonal
  ignores that observations within one correlation length pull the same cells: with many observations of small
  error the step overshoots and samples run away (8 degC held-out RMSE against climatology's 2.7 on a real grid);
  with ``limit_overshoot=True`` (default) such a step is cut to the best step along it
  (:mod:`geodiff.guidance.overshoot`).

- ``method="exact"``: for a denoiser that knows its Gaussian Tweedie covariance
  (:class:`~geodiff.diffusion.spectral.SpectralPrior`: the exact Gaussian denoiser, the hybrid prior of
  ``geodiff.fit``), ``R + A V A^T`` is formed from the prior's eigendecomposition and solved by Cholesky
  (:mod:`geodiff.guidance.exact`): the exact ``E[x0 | x, y]`` of a Gaussian prior at every noise level, with no
  backward pass (one forward per denoiser call). For the hybrid prior ``V`` is its Gaussian part's;
  ``network_jacobian=True`` takes the last product through the whole denoiser instead (one VJP).
  :func:`geodiff.reconstruct` chooses it for such denoisers (:func:`preferred_method`). With a Gaussian prior the
  sampled ensemble is then exact up to the sampler: Heun's discretisation (posterior spread +4-6 % with 24 steps,
  +1 % with 48 on real grids) and the start at ``sigma_max eps``, which leaves the ensemble mean ``m_k / sigma_max``
  posterior sds from the posterior mean ``m`` along each eigenvector ``k`` of the posterior covariance, whatever
  the step count (:class:`~geodiff.diffusion.centred_start.CentredStart` removes it).

Step-size convention: the correction is the exact posterior-mean update above (``sigma^2`` times the likelihood
score); ``scale`` multiplies it (1 = Bayes; keep 1 unless the prior is misspecified).

Example
-------
>>> import torch
>>> from geodiff.diffusion.gaussian import GaussianDenoiser
>>> from geodiff.guidance import MMPSGuidance
>>> from geodiff.operators import GridPointOperator
>>> prior = GaussianDenoiser(torch.zeros(2), torch.eye(2), shape=(1, 1, 2))
>>> guided = MMPSGuidance(torch.tensor([1.0]), GridPointOperator(torch.tensor([0]), (1, 1, 2)), 1.0).wrap(prior)
>>> guided(torch.zeros(1, 1, 1, 2, dtype=torch.float64), 1.0).flatten().tolist()  # exact: y / 3 at sigma = 1
[0.3333333333333333, 0.0]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from geodiff.diffusion.spectral import SpectralPrior
from geodiff.errors import ConfigError
from geodiff.guidance.base import DenoiserFn, GuidedDenoiser, ObservationGuidance, sigma_column
from geodiff.guidance.exact import ExactSolve
from geodiff.guidance.overshoot import limited_step

__all__ = ["MMPSGuidance", "SDAGuidance", "MMPSDenoiser", "conjugate_gradient", "preferred_method", "METHODS"]

#: how ``u`` is solved: conjugate gradients through the network, SDA's diagonal, or exactly (spectral priors)
METHODS = ("cg", "diagonal", "exact")


def preferred_method(denoiser: Any) -> str:
    """``"exact"`` for a denoiser that offers its Gaussian spectrum (:class:`~geodiff.diffusion.spectral.SpectralPrior`,
    e.g. the hybrid prior of ``geodiff.fit``), else ``"cg"``.

    >>> import torch
    >>> from geodiff.diffusion.gaussian import GaussianDenoiser
    >>> preferred_method(GaussianDenoiser(torch.zeros(1), torch.eye(1), shape=(1, 1, 1))), preferred_method(None)
    ('exact', 'cg')
    """
    return "exact" if isinstance(denoiser, SpectralPrior) else "cg"


def conjugate_gradient(matvec: Callable[[Tensor], Tensor], b: Tensor, iterations: int) -> Tensor:
    """Solve ``M u = b`` for each row of ``b [B, N]`` (``M`` symmetric positive definite, applied row-wise by
    ``matvec``) with ``iterations`` conjugate-gradient steps from ``u = 0``; stops early when converged.

    >>> m = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    >>> conjugate_gradient(lambda v: v @ m, torch.tensor([[1.0, 2.0]], dtype=torch.float64), 2).tolist()
    [[0.09090909090909091, 0.6363636363636364]]
    """
    return _conjugate_gradient(lambda p: (matvec(p), None), b, iterations)[0]


def _conjugate_gradient(
    matvec: Callable[[Tensor], tuple[Tensor, Tensor | None]], b: Tensor, iterations: int,
    inverse: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """CG as :func:`conjugate_gradient`, where ``matvec(p)`` also returns a companion ``L p`` of any linear map
    ``L`` (or None); returns ``(u, L u)``, with ``L u = sum_k alpha_k L p_k`` accumulated on the way, so that
    ``L u`` costs no extra application of ``L``. ``inverse``: the inverse of a diagonal preconditioner (``[N]`` or
    ``[B, N]``, positive): preconditioned CG, whose first step is along ``inverse * b`` rather than ``b``. The
    convergence test (a host sync on GPUs) is skipped after the last iteration, so one iteration never syncs."""
    tiny = torch.finfo(b.dtype).tiny
    u = torch.zeros_like(b)
    lu: Tensor | None = None
    r = b.clone()
    z = r if inverse is None else inverse * r
    p = z.clone()
    rs = (r * z).sum(-1, keepdim=True)
    threshold = (rs * torch.finfo(b.dtype).eps ** 2).clamp_min(tiny)
    for iteration in range(iterations):
        mp, lp = matvec(p)
        curvature = (p * mp).sum(-1, keepdim=True)
        alpha = torch.where(curvature > 0, rs / curvature.clamp_min(tiny), torch.zeros_like(rs))
        u = u + alpha * p
        if lp is not None:
            step = lp * alpha.reshape(-1, *([1] * (lp.ndim - 1)))
            lu = step if lu is None else lu + step
        if iteration == iterations - 1:
            break
        r = r - alpha * mp
        z = r if inverse is None else inverse * r
        rs_new = (r * z).sum(-1, keepdim=True)
        if bool(torch.all(rs_new <= threshold)):
            break
        p = z + torch.where(rs > 0, rs_new / rs.clamp_min(tiny), torch.zeros_like(rs)) * p
        rs = rs_new
    return u, lu


class MMPSGuidance(ObservationGuidance):
    """MMPS (``method="cg"``, ``cg_iterations``) or SDA (``method="diagonal"``, ``gamma``): builds an
    :class:`MMPSDenoiser` (module docstring)."""

    name = "mmps"

    def __init__(
        self,
        y: Any,
        operator: Callable[[Tensor], Tensor],
        error_std: Any,
        *,
        method: str = "cg",
        cg_iterations: int = 1,
        gamma: float = 1e-2,
        scale: float = 1.0,
        limit_overshoot: bool = True,
        preconditioner: str = "none",
        network_jacobian: bool = False,
    ):
        super().__init__(y, operator, error_std)
        if method not in METHODS:
            raise ConfigError(f"method must be one of {METHODS}, got {method!r}")
        if not isinstance(cg_iterations, int) or cg_iterations < 1:
            raise ConfigError(f"cg_iterations must be a positive integer, got {cg_iterations!r}")
        if preconditioner not in ("none", "diagonal"):
            raise ConfigError(f"preconditioner must be 'none' or 'diagonal', got {preconditioner!r}")
        if not gamma > 0 or not scale >= 0:
            raise ConfigError(f"need gamma > 0 and scale >= 0, got gamma={gamma}, scale={scale}")
        self.method = method
        self.cg_iterations = cg_iterations
        self.gamma = float(gamma)
        self.scale = float(scale)
        self.limit_overshoot = bool(limit_overshoot)
        self.preconditioner = preconditioner
        self.network_jacobian = bool(network_jacobian)
        self.config = {"method": method, "cg_iterations": cg_iterations, "gamma": self.gamma, "scale": self.scale}
        if preconditioner != "none":
            self.config["preconditioner"] = preconditioner
        if method == "diagonal":
            self.config["limit_overshoot"] = self.limit_overshoot
        if method == "exact":
            self.config["network_jacobian"] = self.network_jacobian

    def wrap(self, denoiser: DenoiserFn) -> MMPSDenoiser:
        return MMPSDenoiser(denoiser, self)


class SDAGuidance(MMPSGuidance):
    """SDA's diagonal guidance: :class:`MMPSGuidance` with ``method="diagonal"`` by default (``settings`` as
    :class:`MMPSGuidance`).

    >>> import torch
    >>> from geodiff.operators import GridPointOperator
    >>> SDAGuidance(torch.tensor([1.0]), GridPointOperator(torch.tensor([0]), (1, 1, 2)), 0.1).config["method"]
    'diagonal'
    """

    name = "sda"

    def __init__(self, y: Any, operator: Callable[[Tensor], Tensor], error_std: Any, **settings: Any):
        super().__init__(y, operator, error_std, **{"method": "diagonal", **settings})


class MMPSDenoiser(GuidedDenoiser):
    """The MMPS-guided denoiser ``(x [B, C, H, W], sigma, cond=None) -> x0_guided`` with the settings and
    observations of ``guidance`` (module docstring).

    Cost: one forward with graph and ``cg_iterations`` vector-Jacobian products (``method="cg"``) or one
    (``"diagonal"``): the final ``(d x0_hat / d x)^T A^T u`` is accumulated from the products CG already made
    (``u`` is a combination of the CG directions), so it costs no extra backward pass.
    """

    def __init__(self, denoiser: DenoiserFn, guidance: MMPSGuidance):
        super().__init__(denoiser)
        self.guidance = guidance
        self._exact: ExactSolve | None = None
        if guidance.method == "exact" and not isinstance(denoiser, SpectralPrior):
            raise ConfigError(f"method='exact' needs a denoiser that offers its Gaussian spectrum (gaussian_spectrum), "
                              f"got {type(denoiser).__name__}; use method='cg'")

    def __call__(self, x: Tensor, sigma: float | Tensor, cond: Any = None) -> Tensor:
        settings, observations = self.guidance, self.guidance.observations
        if settings.method == "exact":
            return self._exact_update(x, sigma, cond)
        _, column = sigma_column(sigma, x)
        variance = column.reshape(-1, 1) ** 2  # sigma^2, [B, 1]
        denoised = self.linearize(x, sigma, cond)
        residual = observations.observed(x) - observations.operator(denoised.value)
        error_var = observations.variance(x)

        if settings.method == "cg":

            def covariance(v: Tensor) -> tuple[Tensor, Tensor]:  # ((R + sigma^2 A J A^T) v, J^T A^T v), row-wise
                jtv = denoised.vjp(observations.adjoint(v, x))
                return error_var * v + observations.operator(column**2 * jtv), jtv

            inverse = None
            if settings.preconditioner == "diagonal":  # R + v(sigma) diag(A A^T), v: a unit-variance prior's
                inverse = 1 / (error_var + variance / (1 + variance) * observations.gram_diagonal(x))
            _, correction = _conjugate_gradient(covariance, residual, settings.cg_iterations, inverse)
        else:
            u = residual / (error_var + settings.gamma * variance * observations.gram_diagonal(x))
            correction = denoised.vjp(observations.adjoint(u, x), keep_graph=False)
            if settings.limit_overshoot:
                return limited_step(denoised.value, column**2 * correction, residual, u, observations.operator,
                                    error_var, settings.scale)  # fmt: skip
        return torch.addcmul(denoised.value, column**2, correction, value=settings.scale)

    def _exact_update(self, x: Tensor, sigma: float | Tensor, cond: Any) -> Tensor:
        """``x0_hat + V A^T u`` with ``u`` solved exactly (:mod:`geodiff.guidance.exact`); with
        ``network_jacobian`` the last product is ``sigma^2 (d x0_hat / d x)^T A^T u`` through the whole denoiser."""
        settings, observations = self.guidance, self.guidance.observations
        if self._exact is None:
            self._exact = ExactSolve(self.denoiser.gaussian_spectrum(), observations, x)  # type: ignore[attr-defined]
        if settings.network_jacobian:
            denoised = self.linearize(x, sigma, cond)
            value = denoised.value
        else:
            value = self.denoiser(x, sigma, cond)
        u = self._exact.solve(observations.observed(x) - observations.operator(value), sigma)
        if settings.network_jacobian:
            _, column = sigma_column(sigma, x)
            correction = column**2 * denoised.vjp(observations.adjoint(u.to(x.dtype), x), keep_graph=False)
        else:
            correction = self._exact.covariance_times_adjoint(u, sigma).to(x.dtype)
        return torch.add(value, correction, alpha=settings.scale)
