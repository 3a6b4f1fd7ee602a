"""Rewards on known inputs: balanced fields score best, spectra have their known slope, skill is exact."""

import math

import pytest
import torch

from geodiff import registry
from geodiff.alignment.rewards import (
    ForecastSkill,
    GeostrophicBalance,
    ObservationAccuracy,
    SpectralSlope,
    WeightedReward,
    kinetic_energy_spectrum,
)
from geodiff.dynamics import BarotropicModel
from geodiff.errors import ConfigError, GridError, ObservationError
from geodiff.operators import GridPointOperator


@pytest.fixture(scope="module")
def model():
    return BarotropicModel(nx=32, ny=32)


def test_registered_names():
    for name, cls in [("observation_accuracy", ObservationAccuracy), ("forecast_skill", ForecastSkill),
                      ("geostrophic_balance", GeostrophicBalance), ("spectral_slope", SpectralSlope)]:
        assert registry.get("reward", name) is cls
        assert registry.name_of("reward", cls) == name


def test_balanced_state_gets_the_best_balance_score_and_perturbations_lower_it(model):
    reward = GeostrophicBalance(f0=model.f0, dx=model.dx, dy=model.dy)
    balanced = model.random_state(1, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    scores = reward(torch.cat([balanced, balanced + noise * torch.tensor([0.0, 1.0, 1.0]).reshape(1, 3, 1, 1),
                               balanced + noise * torch.tensor([5.0, 0.0, 0.0]).reshape(1, 3, 1, 1),
                               balanced + 0.1 * noise]))
    assert abs(scores[0].item()) < 1e-20
    assert bool((scores[1:] < -1e-4).all())
    # wind noise of unit variance in u and v: reward = -2 / wind_scale^2 up to sampling error
    assert scores[1].item() == pytest.approx(-2 / 100, rel=0.1)


def test_finite_difference_balance_agrees_on_a_smooth_field(model):
    spectral = GeostrophicBalance(f0=model.f0, dx=model.dx, dy=model.dy)
    finite = GeostrophicBalance(f0=model.f0, dx=model.dx, dy=model.dy, periodic=False)
    # a single large-scale mode: centred differences are accurate in the interior
    coords = model.coordinates()
    x, y = torch.as_tensor(coords["x"]), torch.as_tensor(coords["y"])
    psi = 1e7 * torch.sin(2 * math.pi * x[None, :] / model.length_x) * torch.cos(
        2 * math.pi * y[:, None] / model.length_y)
    zeta = model._real(model._hat(psi) * -model.k2)
    state = model.state(zeta[None])
    u_g, v_g = finite.geostrophic_wind(state[:, 0])
    atol = 0.02 * state[:, 1].abs().max().item()
    torch.testing.assert_close(u_g[:, 2:-2, 2:-2], state[:, 1, 2:-2, 2:-2], rtol=0.02, atol=atol)
    assert abs(spectral(state).item()) < 1e-20


def test_spectral_slope_of_a_power_law_field():
    n, length = 64, 1.0
    index = torch.fft.fftfreq(n, 1.0 / n, dtype=torch.float64)
    k = torch.sqrt(index[:, None] ** 2 + index[None, :] ** 2)
    # amplitude |u_hat| ~ k^((s - 1) / 2) in 2-D gives a shell spectrum E(k) ~ k^s (shell area ~ k)
    s = -3.0
    amplitude = torch.where(k > 0, k.clamp_min(1) ** ((s - 1) / 2), 0)
    phases = torch.rand(2, n, n, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    u = torch.fft.ifft2(amplitude * torch.exp(2j * math.pi * phases[0])).real
    v = torch.fft.ifft2(amplitude * torch.exp(2j * math.pi * phases[1])).real
    state = torch.stack([torch.zeros_like(u), u, v])[None]
    reward = SpectralSlope(target=s, length_x=length, band=(4, 20))
    assert reward.slope(state).item() == pytest.approx(s, abs=0.3)
    assert reward(state).item() > SpectralSlope(target=-5 / 3, length_x=length, band=(4, 20))(state).item()
    wavenumbers, spectrum = kinetic_energy_spectrum(u[None], v[None], length)
    assert wavenumbers.shape == (31,) and spectrum.shape == (1, 31)
    with pytest.raises(GridError, match="exceeds"):
        SpectralSlope(target=s, length_x=length, band=(4, 40)).slope(state)


def test_observation_accuracy_and_forecast_skill_known_values(model):
    op = GridPointOperator(torch.tensor([0, 5]), (1, 2, 3))
    reward = ObservationAccuracy(op, torch.tensor([1.0, -1.0]), torch.tensor([0.5, 1.0]))
    field = torch.zeros(2, 1, 2, 3)
    field[1, 0, 0, 0] = 1.0
    # member 0: residuals (-1, 1) / (0.5, 1) -> (4 + 1) / 2; member 1: (0, 1) -> 1 / 2
    assert reward(field).tolist() == [-2.5, -0.5]
    truth = model.random_state(1, generator=torch.Generator().manual_seed(4))
    later = model.forecast(truth, 12 * model.dt)
    skill = ForecastSkill(model, 12 * model.dt, target=later[0], scale=[10.0, 1.0, 1.0])
    perturbed = truth + 0.5 * model.random_state(1, generator=torch.Generator().manual_seed(5), rms_wind=1.0)
    values = skill(torch.cat([truth, perturbed]))
    assert abs(values[0].item()) < 1e-20 and values[1].item() < -1e-4
    obs_skill = ForecastSkill(model, 12 * model.dt, operator=GridPointOperator(torch.tensor([7, 1500]), (3, 32, 32)),
                              y=GridPointOperator(torch.tensor([7, 1500]), (3, 32, 32))(later)[0], error_std=1.0)
    assert abs(obs_skill(truth).item()) < 1e-20


def test_weighted_reward_and_errors(model):
    balance = GeostrophicBalance(f0=model.f0, dx=model.dx, dy=model.dy)
    op = GridPointOperator(torch.tensor([0]), (3, 32, 32))
    accuracy = ObservationAccuracy(op, torch.tensor([3.0]), 1.0)
    total = WeightedReward({"balance": (balance, 2.0), "accuracy": (accuracy, 0.5)})
    state = model.random_state(2, generator=torch.Generator().manual_seed(6))
    parts = total.parts(state)
    torch.testing.assert_close(total(state), 2.0 * parts["balance"] + 0.5 * parts["accuracy"])
    assert total.describe()["parts"]["accuracy"]["weight"] == 0.5
    with pytest.raises(ObservationError):
        ObservationAccuracy(op, torch.tensor([1.0, 2.0]), 1.0)
    with pytest.raises(ConfigError, match="either observations"):
        ForecastSkill(model, model.dt)
    with pytest.raises(GridError, match="states"):
        balance(torch.zeros(3, 32, 32))
