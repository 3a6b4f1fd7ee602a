"""The barotropic twin model: invariants of the inviscid dynamics, Rossby waves, periodicity, balance."""

import math

import pytest
import torch

from geodiff import registry
from geodiff.dynamics import BarotropicModel, ForecastModel
from geodiff.dynamics.barotropic import GRAVITY
from geodiff.errors import ConfigError, GridError


def inviscid(dt=1800.0, **kwargs):
    return BarotropicModel(nx=32, ny=32, drag=0.0, hyperviscosity_time=float("inf"), forcing_amplitude=0.0,
                           dt=dt, **kwargs)


def _relative_drift(dt):
    model = inviscid(dt)
    state = model.random_state(2, generator=torch.Generator().manual_seed(0), rms_wind=15.0)
    # a truncated (dealiased) initial state, so the spectral system is the one that conserves both
    zeta = model._real(model._hat(model.vorticity(state)) * model.dealias)
    later = model.integrate_vorticity(zeta, 36000.0)
    assert (later - zeta).abs().max() > 1e-3 * zeta.abs().max()  # the flow did evolve
    energy = (model.energy(later) / model.energy(zeta) - 1).abs().max().item()
    enstrophy = (model.enstrophy(later) / model.enstrophy(zeta) - 1).abs().max().item()
    return energy, enstrophy


def test_energy_and_enstrophy_are_conserved_up_to_the_fourth_order_time_error():
    coarse, fine = _relative_drift(900.0), _relative_drift(450.0)
    assert fine[0] < 1e-8 and fine[1] < 1e-7
    # the drift is the Runge-Kutta error: halving dt divides it by at least 2^4
    assert coarse[0] / fine[0] > 16 and coarse[1] / fine[1] > 16


def test_dissipation_removes_energy():
    model = BarotropicModel(nx=32, ny=32, forcing_amplitude=0.0)
    zeta = model.vorticity(model.random_state(1, generator=torch.Generator().manual_seed(1)))
    assert model.energy(model.integrate_vorticity(zeta, 10 * model.dt)) < model.energy(zeta)


@pytest.mark.parametrize("k, l", [(1, 0), (2, 1), (3, -2)])
def test_single_mode_is_a_rossby_wave_with_the_analytic_phase_speed(k, l):
    model = inviscid()
    coords = model.coordinates()
    x = torch.as_tensor(coords["x"])[None, :]
    y = torch.as_tensor(coords["y"])[:, None]
    kx, ly = 2 * math.pi * k / model.length_x, 2 * math.pi * l / model.length_y
    k2 = kx**2 + ly**2
    omega = -model.beta * kx / k2  # dispersion relation; phase speed c_x = -beta / K^2

    def zeta_at(t):
        return -k2 * 1e7 * torch.cos(kx * x + ly * y - omega * t)[None]

    duration = 48 * model.dt
    later = model.integrate_vorticity(zeta_at(0.0), duration)
    torch.testing.assert_close(later, zeta_at(duration), rtol=0, atol=1e-6 * zeta_at(0.0).abs().max().item())
    assert later.sub(zeta_at(0.0)).abs().max() > 0.1 * zeta_at(0.0).abs().max()  # the wave did move


def test_forecast_commutes_with_periodic_shifts():
    model = BarotropicModel(nx=32, ny=32)
    state = model.random_state(1, generator=torch.Generator().manual_seed(2))
    shifted = torch.roll(state, shifts=(5, -11), dims=(-2, -1))
    # the steady forcing is not shift invariant: the unforced (but dissipative, nonlinear) model is
    unforced = BarotropicModel(nx=32, ny=32, forcing_amplitude=0.0)
    a = torch.roll(unforced.forecast(state, 6 * model.dt), shifts=(5, -11), dims=(-2, -1))
    b = unforced.forecast(shifted, 6 * model.dt)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_states_are_in_geostrophic_balance_and_round_trip_through_vorticity():
    model = BarotropicModel(nx=32, ny=32)
    state = model.random_state(2, generator=torch.Generator().manual_seed(3))
    z_hat = torch.fft.rfft2(state[:, 0])
    u_geo = torch.fft.irfft2(-1j * model.ky * z_hat, s=(32, 32)) * GRAVITY / model.f0
    v_geo = torch.fft.irfft2(1j * model.kx * z_hat, s=(32, 32)) * GRAVITY / model.f0
    torch.testing.assert_close(u_geo, state[:, 1], rtol=0, atol=1e-9)
    torch.testing.assert_close(v_geo, state[:, 2], rtol=0, atol=1e-9)
    torch.testing.assert_close(model.state(model.vorticity(state)), state, rtol=0, atol=1e-9)


def test_protocol_registry_and_errors():
    with pytest.raises(ConfigError, match="forcing_wavenumber=4.0 is not resolved"):
        BarotropicModel(nx=8, ny=8)
    model = BarotropicModel(nx=8, ny=8, forcing_amplitude=0.0)
    assert isinstance(model, ForecastModel)
    assert registry.get("forecast", "barotropic") is BarotropicModel
    with pytest.raises(GridError, match=r"state must be \[B, 3, 8, 8\]"):
        model.forecast(torch.zeros(1, 2, 8, 8), model.dt)
    with pytest.raises(ConfigError, match="multiple of dt"):
        model.forecast(torch.zeros(1, 3, 8, 8), 1.5 * model.dt)
    with pytest.raises(ConfigError, match="vorticity_from"):
        BarotropicModel(vorticity_from="pressure")
