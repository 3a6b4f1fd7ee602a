"""Guidance plumbing: input checks, combination of observation sets and methods, registry names, provenance."""

import json

import geodiff.guidance

import numpy as np
import pytest
import torch

from geodiff import registry
from geodiff.diffusion.samplers import DDPMSampler
from geodiff.diffusion.schedules import EDMSchedule
from geodiff.errors import ConfigError, ObservationError
from geodiff.guidance import (
    CombinedGuidance,
    DPSGuidance,
    Guidance,
    MMPSGuidance,
    ReconMOSTGuidance,
    ReconMOSTSampler,
    RePaintGuidance,
    RePaintSampler,
    Unguided,
    combine,
    observation_method,
)
from geodiff.operators import PointOperator

from .conftest import LAT, LON

#: every guidance method's registry name
METHODS = ["mmps", "sda", "coarse", "latent_mmps", "dps", "reward", "reconmost", "repaint"]


@pytest.mark.parametrize("name", METHODS)
def test_registry_names_resolve_to_guidance_classes_of_the_package(name):
    cls = registry.get("guidance", name)
    assert issubclass(cls, Guidance) and cls.name == name
    assert cls.__module__.startswith("geodiff.guidance.") and getattr(geodiff.guidance, cls.__name__) is cls
    assert registry.name_of("guidance", cls) == name


def test_every_guidance_method_is_registered():
    """Each method class of the package (one with a registry name, not the combination helpers) is listed."""
    methods = {cls.name for cls in vars(geodiff.guidance).values()
               if isinstance(cls, type) and issubclass(cls, Guidance) and cls.name not in ("", "none", "combined")}
    assert methods == set(METHODS)
    assert set(METHODS) <= set(registry.available("guidance"))


def test_observation_methods_resolve_and_reward_is_refused():
    assert observation_method("mmps") is MMPSGuidance and observation_method(DPSGuidance) is DPSGuidance
    with pytest.raises(ConfigError, match=r"'reward' is not built from observations.*mmps"):
        observation_method("reward")


def test_observation_guidance_validates_its_data(point_problem):
    """Every observation method is built on the validated data (details: ``test_likelihood.py``)."""
    y, op, e = point_problem.y, point_problem.operator, point_problem.error_std
    for cls in (MMPSGuidance, DPSGuidance, ReconMOSTGuidance):
        with pytest.raises(ObservationError, match="non-finite"):
            cls(torch.full_like(y, float("nan")), op, e)
        guidance = cls(y, op, e)
        assert guidance.observations.n_obs == guidance.n_obs == 6 and guidance.operator is op


def test_unguided_is_a_guidance_with_its_own_state(point_problem):
    unguided = combine([])
    assert isinstance(unguided, Unguided) and unguided.describe() == {"name": "none", "n_obs": 0}
    assert unguided.wrap(point_problem.prior) is point_problem.prior
    assert not hasattr(unguided, "observations")


def test_two_observation_sets_merge_into_one_joint_mmps(point_problem):
    """Two sets of the same method and settings: one joint solve, identical to all observations at once."""
    lat, lon = [-7.0, -2.5, 1.0, 3.3, 8.0, 9.0], [10.0, 100.0, 200.0, 352.0, 60.0, 290.0]
    first = PointOperator(LAT, LON, lat=lat[:2], lon=lon[:2])
    y, e = point_problem.y, point_problem.error_std
    third = PointOperator(LAT, LON, lat=lat[5:], lon=lon[5:])
    combined = CombinedGuidance([MMPSGuidance(y[:2], first, e[:2], cg_iterations=6),
                                 MMPSGuidance(y[2:5], PointOperator(LAT, LON, lat=lat[2:5], lon=lon[2:5]), e[2:5],
                                              cg_iterations=6),
                                 MMPSGuidance(y[5:], third, e[5:], cg_iterations=6)])
    assert len(combined.parts) == 1 and combined.n_obs == 6
    single = MMPSGuidance(y, point_problem.operator, e, cg_iterations=6)
    x = torch.randn(3, 1, 6, 8, dtype=torch.float64)
    assert torch.allclose(combined.wrap(point_problem.prior)(x, 2.0), single.wrap(point_problem.prior)(x, 2.0))


def test_different_methods_combine(point_problem):
    y, op, e = point_problem.y, point_problem.operator, point_problem.error_std
    combined = combine([MMPSGuidance(y, op, e),
                        ReconMOSTGuidance(y, op, e, scale=1.0), DPSGuidance(y, op, e, scale=0.5),
                        DPSGuidance(y, op, e, scale=0.2)])
    assert [g.name for g in combined.parts] == ["mmps", "reconmost", "dps", "dps"]  # different DPS settings
    assert isinstance(combined.wrap_sampler(DDPMSampler()), ReconMOSTSampler)
    x = point_problem.sample(combined, DDPMSampler(), EDMSchedule().sigmas(20), members=16)
    assert torch.isfinite(x).all()
    json.dumps(combined.describe())


def test_corrections_of_different_methods_add(point_problem):
    y, op, e = point_problem.y, point_problem.operator, point_problem.error_std
    mmps, dps = MMPSGuidance(y, op, e), DPSGuidance(y + 0.5, op, e)
    x = torch.randn(2, 1, 6, 8, dtype=torch.float64)
    base = point_problem.prior(x, 1.0)
    expected = mmps.wrap(point_problem.prior)(x, 1.0) + dps.wrap(point_problem.prior)(x, 1.0) - base
    assert torch.allclose(CombinedGuidance([mmps, dps]).wrap(point_problem.prior)(x, 1.0), expected)


def test_at_most_one_resampling_wrapper(grid_problem):
    y, op, e = grid_problem.y, grid_problem.operator, grid_problem.error_std
    with pytest.raises(ConfigError, match="at most one"):
        CombinedGuidance([RePaintGuidance(y, op, e, resample=2), RePaintGuidance(y, op, e, resample=3)])


def test_sampler_wrappers_nest_with_resampling_outermost(grid_problem):
    """Transitions apply in the order of the parts, RePaint's last: its replacement has the final word and its
    resampling repeats the other transitions."""
    y, op, e = grid_problem.y, grid_problem.operator, grid_problem.error_std
    combined = CombinedGuidance([RePaintGuidance(y, op, e, resample=2), ReconMOSTGuidance(y, op, e)])
    sampler = combined.wrap_sampler(DDPMSampler())
    assert isinstance(sampler, RePaintSampler) and isinstance(sampler.sampler, ReconMOSTSampler)
    x = grid_problem.sample(combined, DDPMSampler(), EDMSchedule(sigma_max=20.0).sigmas(8), members=3)
    assert torch.equal(op(x), y.float().expand(3, -1))


def test_combine_single_and_empty(point_problem):
    g = DPSGuidance(point_problem.y, point_problem.operator, point_problem.error_std)
    assert combine(g) is g and combine([g]) is g
    unguided = combine([])
    noise = torch.randn(5, 1, 6, 8, generator=torch.Generator().manual_seed(0))
    sigmas = EDMSchedule().sigmas(8)
    a = unguided.sample(DDPMSampler(), point_problem.prior, noise, sigmas, generator=torch.Generator().manual_seed(1))
    b = DDPMSampler()(point_problem.prior, noise, sigmas, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_per_member_observations(point_problem):
    """``y [B, N]``: each member guided by its own (e.g. perturbed) observations."""
    y = point_problem.y.expand(4, -1).clone()
    y[2:] += 1.0
    guidance = MMPSGuidance(y, point_problem.operator, point_problem.error_std)
    out = guidance.wrap(point_problem.prior)(torch.zeros(4, 1, 6, 8, dtype=torch.float64), 0.5)
    assert torch.allclose(out[0], out[1]) and not torch.allclose(out[0], out[2])


def test_describe_is_json_with_settings(point_problem):
    g = MMPSGuidance(point_problem.y, point_problem.operator, point_problem.error_std, cg_iterations=4)
    described = g.describe()
    assert described == {"name": "mmps", "n_obs": 6, "method": "cg", "cg_iterations": 4, "gamma": 0.01, "scale": 1.0}
    rebuilt = MMPSGuidance(point_problem.y, point_problem.operator, point_problem.error_std, **g.config)
    assert rebuilt.config == g.config
    assert np.isfinite(json.dumps(described).count("mmps"))


@pytest.mark.parametrize(
    "make",
    [
        lambda y, op: MMPSGuidance(y, op, 0.1),
        lambda y, op: MMPSGuidance(y, op, 0.1, method="diagonal"),
        lambda y, op: DPSGuidance(y, op, 0.1),
        lambda y, op: DPSGuidance(y, op, 0.1, convention="chung"),
        lambda y, op: ReconMOSTGuidance(y, op, 0.1),
    ],
    ids=["mmps", "sda", "dps", "dps_chung", "reconmost"],
)
def test_guidance_through_a_network_denoiser_with_land(make):
    """Back-propagation goes through a real (tiny) U-Net; land stays 0; the network's weights are untouched."""
    from geodiff.backbones.unet import UNet
    from geodiff.diffusion.denoiser import Denoiser

    torch.manual_seed(0)
    net = UNet(in_channels=2, out_channels=2, base_channels=8, channel_mults=(1, 2))
    mask = torch.ones(2, 8, 16, dtype=torch.bool)
    mask[:, :2, :4] = False
    operator = PointOperator(np.linspace(-10, 10, 8), np.arange(0.0, 360.0, 22.5), lat=[0.0, 5.0], lon=[100.0, 200.0],
                             depth=[5.0, 12.0], grid_depth=[0.0, 20.0], mask=mask)
    guidance = make(torch.tensor([0.5, -0.5]), operator)
    x = guidance.sample(DDPMSampler(), Denoiser(net, mask=mask), torch.randn(2, 2, 8, 16), EDMSchedule().sigmas(4),
                        generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(x).all() and (x[:, ~mask] == 0).all()
    assert all(p.grad is None for p in net.parameters())
