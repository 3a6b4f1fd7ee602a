r"""Barotropic vorticity on a doubly periodic beta plane: the twin model of the assimilation experiments.

The relative vorticity ``zeta = laplacian(psi)`` obeys

    ``d zeta / dt + J(psi, zeta) + beta d psi / dx = F - mu zeta - nu (-laplacian)^p zeta``

with ``J(psi, zeta) = u d zeta / dx + v d zeta / dy``, ``u = -d psi / dy``, ``v = d psi / dx``, a steady
forcing ``F`` on a ring of wavenumbers, linear drag ``mu`` and hyperviscosity of order ``p``. It is solved
pseudo-spectrally (FFT, 2/3-rule dealiasing of the advection) with classical fourth-order Runge-Kutta steps of
``dt`` seconds. Without forcing and dissipation the truncated system conserves energy
``E = mean(|grad psi|^2) / 2`` and enstrophy ``Z = mean(zeta^2) / 2`` (up to the time-stepping error), and a single
Fourier mode is an exact Rossby wave of phase speed ``c_x = -beta / (k^2 + l^2)``.

The state seen from outside is ``(z, u, v)`` in physical units on the grid ``[ny, nx]`` (``y`` northward,
``x`` eastward): geopotential-height anomaly ``z = f0 psi / g`` (m) and the winds ``u, v`` (m/s), exactly in
geostrophic balance for states made by the model. An arbitrary state is brought back to vorticity with
``vorticity_from``: ``"wind"`` (``dv/dx - du/dy``), ``"height"`` (``g / f0 laplacian(z)``) or ``"mean"`` of the two
(default: errors of the two estimates partly cancel). The domain is also given latitude/longitude coordinates
around ``(lat0, lon0)`` (a local tangent plane) so that observation tables and codecs can refer to it.

Example
-------
>>> import torch
>>> from geodiff.dynamics import BarotropicModel
>>> model = BarotropicModel(nx=16, ny=16)
>>> state = model.random_state(2, generator=torch.Generator().manual_seed(0))
>>> model.forecast(state, 6 * 3600.0).shape
torch.Size([2, 3, 16, 16])
>>> model.variables
('z', 'u', 'v')
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from geodiff.config import Configurable
from geodiff.errors import ConfigError, GridError

__all__ = ["BarotropicModel", "EARTH_RADIUS", "GRAVITY", "OMEGA"]

EARTH_RADIUS = 6.371e6  # m
GRAVITY = 9.80665  # m s-2
OMEGA = 7.2921e-5  # s-1

VORTICITY_FROM = ("mean", "wind", "height")


class BarotropicModel(Configurable, nn.Module):
    """Pseudo-spectral barotropic vorticity model; ``forecast(state [B, 3, ny, nx], duration_s)`` (module docstring).

    Parameters
    ----------
    nx, ny: grid points in x (east) and y (north); the grid is ``[ny, nx]``.
    length_x, length_y: domain size (m); periodic in both directions.
    lat0, lon0: centre of the domain (degrees); ``f0 = 2 Omega sin(lat0)`` and ``beta = 2 Omega cos(lat0) / R``
        unless given.
    dt: time step (s).
    drag: linear drag rate ``mu`` (1/s).
    hyperviscosity_order, hyperviscosity_time: ``p`` and the e-folding time (s) of the smallest resolved scale.
    forcing_amplitude: rms of the steady forcing (1/s^2) on the ring ``forcing_wavenumber +- 1`` (in units of
        ``2 pi / length``), phases drawn from ``forcing_seed``; 0 switches it off.
    vorticity_from: how a state becomes vorticity (module docstring).
    """

    variables: tuple[str, ...] = ("z", "u", "v")

    def __init__(
        self,
        nx: int = 32,
        ny: int = 32,
        *,
        length_x: float = 6.0e6,
        length_y: float = 6.0e6,
        lat0: float = 45.0,
        lon0: float = 0.0,
        f0: float | None = None,
        beta: float | None = None,
        dt: float = 3600.0,
        drag: float = 1.0 / (10 * 86400.0),
        hyperviscosity_order: int = 4,
        hyperviscosity_time: float = 3 * 3600.0,
        forcing_amplitude: float = 2.0e-10,
        forcing_wavenumber: float = 4.0,
        forcing_seed: int = 0,
        vorticity_from: str = "mean",
    ):
        super().__init__()
        if nx < 4 or ny < 4:
            raise ConfigError(f"nx and ny must be >= 4, got nx={nx}, ny={ny}")
        if not (dt > 0 and length_x > 0 and length_y > 0):
            raise ConfigError(f"dt, length_x and length_y must be positive, got {dt}, {length_x}, {length_y}")
        if vorticity_from not in VORTICITY_FROM:
            raise ConfigError(f"vorticity_from must be one of {VORTICITY_FROM}, got {vorticity_from!r}")
        self.nx, self.ny = int(nx), int(ny)
        self.length_x, self.length_y = float(length_x), float(length_y)
        self.lat0, self.lon0 = float(lat0), float(lon0)
        self.f0 = float(2 * OMEGA * math.sin(math.radians(lat0)) if f0 is None else f0)
        self.beta = float(2 * OMEGA * math.cos(math.radians(lat0)) / EARTH_RADIUS if beta is None else beta)
        if self.f0 == 0:
            raise ConfigError("f0 must not be 0 (the height is f0 psi / g); choose lat0 away from the equator")
        self.dt = float(dt)
        self.drag = float(drag)
        self.vorticity_from = vorticity_from
        kx = 2 * math.pi / length_x * torch.fft.rfftfreq(nx, 1.0 / nx, dtype=torch.float64)
        ky = 2 * math.pi / length_y * torch.fft.fftfreq(ny, 1.0 / ny, dtype=torch.float64)
        ky, kx = torch.meshgrid(ky, kx, indexing="ij")  # [ny, nx//2+1]
        k2 = kx**2 + ky**2
        inverse_k2 = torch.where(k2 > 0, 1.0 / torch.where(k2 > 0, k2, 1.0), 0.0)
        index_x = torch.fft.rfftfreq(nx, 1.0 / nx, dtype=torch.float64).abs()
        index_y = torch.fft.fftfreq(ny, 1.0 / ny, dtype=torch.float64).abs()
        dealias = (index_y[:, None] < ny / 3) & (index_x[None, :] < nx / 3)
        k2_max = float(k2.max())
        damping = self.drag + (k2 / k2_max) ** hyperviscosity_order / float(hyperviscosity_time)
        forcing = torch.zeros_like(k2, dtype=torch.complex128)
        if forcing_amplitude:
            ring = ((k2.sqrt() * length_x / (2 * math.pi) - forcing_wavenumber).abs() <= 1.0) & dealias
            if not bool(ring.any()):
                raise ConfigError(f"forcing_wavenumber={forcing_wavenumber} is not resolved on a {ny}x{nx} grid "
                                  "after dealiasing; use a smaller wavenumber, a finer grid or forcing_amplitude=0")
            phases = torch.rand(k2.shape, generator=torch.Generator().manual_seed(forcing_seed), dtype=torch.float64)
            forcing = torch.where(ring, torch.exp(2j * math.pi * phases), 0)
            field = torch.fft.irfft2(forcing, s=(ny, nx))
            forcing = forcing * (forcing_amplitude / field.pow(2).mean().sqrt())
        for name, value in {"kx": kx, "ky": ky, "k2": k2, "inverse_k2": inverse_k2, "dealias": dealias,
                            "damping": damping, "forcing_hat": forcing}.items():  # fmt: skip
            self.register_buffer(name, value, persistent=False)

    # ---- grid

    @property
    def dx(self) -> float:
        """Grid spacing in x (m)."""
        return self.length_x / self.nx

    @property
    def dy(self) -> float:
        """Grid spacing in y (m)."""
        return self.length_y / self.ny

    def coordinates(self) -> dict[str, np.ndarray]:
        """``{"lat": [ny], "lon": [nx], "x": [nx], "y": [ny]}``: cell centres in degrees and metres (tangent plane)."""
        x = (np.arange(self.nx) + 0.5) * self.dx - self.length_x / 2
        y = (np.arange(self.ny) + 0.5) * self.dy - self.length_y / 2
        lat = self.lat0 + np.degrees(y / EARTH_RADIUS)
        lon = self.lon0 + np.degrees(x / (EARTH_RADIUS * math.cos(math.radians(self.lat0))))
        return {"lat": lat, "lon": lon, "x": x, "y": y}

    # ---- spectral transforms (fields [..., ny, nx])

    def _check(self, state: Tensor) -> None:
        if state.ndim != 4 or state.shape[1] != len(self.variables) or tuple(state.shape[-2:]) != (self.ny, self.nx):
            raise GridError(f"state must be [B, {len(self.variables)}, {self.ny}, {self.nx}] (z, u, v); "
                            f"got {list(state.shape)}")

    def _hat(self, field: Tensor) -> Tensor:
        return torch.fft.rfft2(field)

    def _real(self, field_hat: Tensor) -> Tensor:
        return torch.fft.irfft2(field_hat, s=(self.ny, self.nx))

    def _k(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        real = like.real.dtype if like.is_complex() else like.dtype
        return self.kx.to(real), self.ky.to(real), self.inverse_k2.to(real)

    def vorticity(self, state: Tensor) -> Tensor:
        """Relative vorticity ``[B, ny, nx]`` (1/s) of a state ``[B, 3, ny, nx]`` (``vorticity_from``)."""
        self._check(state)
        z_hat, u_hat, v_hat = self._hat(state).unbind(1)
        kx, ky, _ = self._k(z_hat)
        from_wind = 1j * kx * v_hat - 1j * ky * u_hat
        from_height = -(kx**2 + ky**2) * (GRAVITY / self.f0) * z_hat
        if self.vorticity_from == "wind":
            zeta_hat = from_wind
        elif self.vorticity_from == "height":
            zeta_hat = from_height
        else:
            zeta_hat = 0.5 * (from_wind + from_height)
        return self._real(zeta_hat)

    def state(self, zeta: Tensor) -> Tensor:
        """The balanced state ``(z, u, v)`` ``[B, 3, ny, nx]`` of vorticity ``zeta [B, ny, nx]``."""
        zeta_hat = self._hat(zeta)
        kx, ky, inverse_k2 = self._k(zeta_hat)
        psi_hat = -zeta_hat * inverse_k2
        fields = [self.f0 / GRAVITY * psi_hat, -1j * ky * psi_hat, 1j * kx * psi_hat]
        return self._real(torch.stack(fields, dim=1))

    def energy(self, zeta: Tensor) -> Tensor:
        """Kinetic energy per unit mass ``mean(u^2 + v^2) / 2`` ``[B]`` (m^2/s^2) of vorticity ``[B, ny, nx]``."""
        state = self.state(zeta)
        return 0.5 * (state[:, 1] ** 2 + state[:, 2] ** 2).mean(dim=(-2, -1))

    def enstrophy(self, zeta: Tensor) -> Tensor:
        """Enstrophy ``mean(zeta^2) / 2`` ``[B]`` (1/s^2)."""
        return 0.5 * zeta.pow(2).mean(dim=(-2, -1))

    # ---- time stepping

    def tendency(self, zeta_hat: Tensor) -> Tensor:
        """``d zeta_hat / dt`` of spectral vorticity ``[B, ny, nx//2+1]``."""
        kx, ky, inverse_k2 = self._k(zeta_hat)
        psi_hat = -zeta_hat * inverse_k2
        u = self._real(-1j * ky * psi_hat)
        v_hat = 1j * kx * psi_hat
        v = self._real(v_hat)
        advection = u * self._real(1j * kx * zeta_hat) + v * self._real(1j * ky * zeta_hat)
        advection_hat = self._hat(advection) * self.dealias
        damping = self.damping.to(kx.dtype)
        forcing = self.forcing_hat.to(zeta_hat.dtype)
        return -advection_hat - self.beta * v_hat - damping * zeta_hat + forcing

    def step(self, zeta_hat: Tensor) -> Tensor:
        """One RK4 step of ``dt`` seconds on spectral vorticity ``[B, ny, nx//2+1]``."""
        dt = self.dt
        k1 = self.tendency(zeta_hat)
        k2 = self.tendency(zeta_hat + 0.5 * dt * k1)
        k3 = self.tendency(zeta_hat + 0.5 * dt * k2)
        k4 = self.tendency(zeta_hat + dt * k3)
        return zeta_hat + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)

    def steps_for(self, duration_s: float) -> int:
        """Number of steps in ``duration_s`` (a non-negative multiple of ``dt``), else :class:`ConfigError`."""
        n = round(float(duration_s) / self.dt)
        if n < 0 or abs(n * self.dt - float(duration_s)) > 1e-6 * self.dt:
            raise ConfigError(f"duration_s={duration_s} must be a non-negative multiple of dt={self.dt} s")
        return n

    def integrate_vorticity(self, zeta: Tensor, duration_s: float) -> Tensor:
        """Vorticity ``[B, ny, nx]`` advanced by ``duration_s`` seconds."""
        zeta_hat = self._hat(zeta)
        for _ in range(self.steps_for(duration_s)):
            zeta_hat = self.step(zeta_hat)
        return self._real(zeta_hat)

    def forecast(self, state: Tensor, duration_s: float) -> Tensor:
        """State ``[B, 3, ny, nx]`` (z m, u m/s, v m/s) advanced by ``duration_s`` seconds (balanced output)."""
        self._check(state)
        return self.state(self.integrate_vorticity(self.vorticity(state), duration_s))

    def trajectory(
        self, state: Tensor, n_times: int, interval_s: float, *, progress: bool = False
    ) -> Tensor:
        """States ``[n_times, B, 3, ny, nx]`` every ``interval_s`` seconds, the first being ``state`` balanced."""
        self._check(state)
        zeta = self.vorticity(state)
        out = [self.state(zeta)]
        for _ in tqdm(range(n_times - 1), desc="trajectory", disable=not progress):
            zeta = self.integrate_vorticity(zeta, interval_s)
            out.append(self.state(zeta))
        return torch.stack(out)

    def random_state(
        self, batch: int, *, generator: torch.Generator | None = None, rms_wind: float = 10.0,
        dtype: torch.dtype = torch.float64,
    ) -> Tensor:
        """Random balanced states ``[batch, 3, ny, nx]``: a red spectrum of random phases, rms wind ``rms_wind``."""
        noise = torch.randn(batch, self.ny, self.nx, generator=generator, dtype=torch.float64)
        noise_hat = self._hat(noise) * self.dealias * (self.k2.sqrt() * self.length_x / (2 * math.pi) + 1) ** -1.5
        state = self.state(self._real(noise_hat))
        scale = rms_wind / (state[:, 1:] ** 2).mean(dim=(1, 2, 3)).sqrt()
        return (state * scale[:, None, None, None]).to(dtype)

    def spin_up(self, state: Tensor, duration_s: float, *, progress: bool = False) -> Tensor:
        """``forecast`` for spinning up to statistical equilibrium (shown with a progress bar)."""
        zeta = self.vorticity(state)
        n = self.steps_for(duration_s)
        zeta_hat = self._hat(zeta)
        for _ in tqdm(range(n), desc="spin-up", disable=not progress):
            zeta_hat = self.step(zeta_hat)
        return self.state(self._real(zeta_hat))

    def extra_repr(self) -> str:
        return f"nx={self.nx}, ny={self.ny}, dt={self.dt}, f0={self.f0:.3e}, beta={self.beta:.3e}"

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> BarotropicModel:
        return super().from_config(config)
