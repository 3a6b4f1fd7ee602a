"""The sampling engine: members in batches from one generator (exactly as drawn by hand), runaway members found
relative to the ensemble and to an absolute bound, and the three policies (resample, raise, keep)."""

import pytest
import torch

from geodiff.diffusion.engine import (
    RunawayCheck,
    SamplingEngine,
    derive_seed,
    find_runaways,
    median_distances,
)
from geodiff.diffusion.gaussian import GaussianDenoiser
from geodiff.diffusion.samplers import EulerSampler, HeunSampler
from geodiff.diffusion.schedules import EDMSchedule
from geodiff.errors import ConfigError, SamplingError
from geodiff.guidance import combine

SHAPE = (1, 4, 4)
PRIOR = GaussianDenoiser(torch.zeros(16), torch.eye(16), shape=SHAPE)
SIGMAS = EDMSchedule().sigmas(6)


class RunsAway:
    """Unguided sampling, except that member ``member`` of a first draw (a batch of more than one member) is
    pushed ``offset`` standard deviations away: a member that runs away once and is fine when redrawn."""

    def __init__(self, member: int = 2, offset: float = 8.0, always: bool = False):
        self.member, self.offset, self.always = member, offset, always
        self.calls = []

    def sample(self, sampler, denoiser, noise, sigmas, **kwargs):
        self.calls.append(noise.shape[0])
        x = sampler(denoiser, noise, sigmas, **kwargs)
        if noise.shape[0] > self.member:
            x[self.member] += self.offset
        elif self.always:
            x += self.offset
        return x


def engine(policy="resample", members=6, batch_size=None, **check):
    return SamplingEngine(EulerSampler(), PRIOR, SIGMAS, members=members, batch_size=batch_size,
                          runaway=RunawayCheck(policy, **check))


def test_batches_draw_exactly_what_a_hand_written_loop_draws():
    generator = torch.Generator().manual_seed(7)
    expected = []
    for size in (4, 2):
        noise = torch.randn(size, *SHAPE, generator=generator)
        expected.append(HeunSampler()(PRIOR, noise, SIGMAS, generator=generator))
    got = SamplingEngine(HeunSampler(), PRIOR, SIGMAS, members=6, batch_size=4).draw(
        combine([]), SHAPE, generator=torch.Generator().manual_seed(7))
    assert torch.equal(got.x, torch.cat(expected)) and got.runaways == []


def test_a_runaway_member_is_redrawn_from_a_derived_generator_and_recorded():
    guidance = RunsAway()
    first = engine().draw(guidance, SHAPE, generator=torch.Generator().manual_seed(0))
    again = engine().draw(RunsAway(), SHAPE, generator=torch.Generator().manual_seed(0))
    assert guidance.calls == [6, 1]  # the ensemble, then one redraw of one member
    assert [r.describe() for r in first.runaways] == [
        {"member": 2, "reason": first.runaways[0].reason, "redraws": 1, "kept": False}]
    assert "from the ensemble median" in first.runaways[0].reason
    assert torch.equal(first.x, again.x)  # the redraw is reproducible
    distances = median_distances(first.x)
    assert distances.max() < 3 * distances.median()  # nothing far out is left
    unchecked = engine(factor=None).draw(RunsAway(), SHAPE, generator=torch.Generator().manual_seed(0))
    assert torch.equal(first.x[[0, 1, 3, 4, 5]], unchecked.x[[0, 1, 3, 4, 5]])  # the others are untouched
    assert (unchecked.x[2] - first.x[2]).abs().mean() > 4  # the runaway draw is gone


def test_raise_and_keep_policies():
    with pytest.raises(SamplingError, match=r"member\(s\) \[2\] ran away.*from the ensemble median"):
        engine("raise").draw(RunsAway(), SHAPE, generator=torch.Generator().manual_seed(0), where="time 3")
    kept = engine("keep").draw(RunsAway(), SHAPE, generator=torch.Generator().manual_seed(0))
    assert [(r.member, r.redraws, r.kept) for r in kept.runaways] == [(2, 0, True)]
    assert median_distances(kept.x)[2] > 5 * median_distances(kept.x).median()


def test_a_member_that_runs_away_on_every_redraw_raises_after_the_last_one():
    guidance = RunsAway(always=True)
    with pytest.raises(SamplingError, match=r"member\(s\) \[2\] ran away \(still after 2 redraws each\)"):
        engine(max_resamples=2).draw(guidance, SHAPE, generator=torch.Generator().manual_seed(0))
    assert guidance.calls == [6, 1, 1]


def test_absolute_bound_and_non_finite_values():
    x = torch.zeros(2, *SHAPE)
    x[1, 0, 0, 0] = 12.0
    assert list(find_runaways(x, None, RunawayCheck(bound=10.0))) == [1]
    assert find_runaways(x, torch.ones(SHAPE, dtype=torch.bool).index_put_((torch.tensor([0]),) * 3,
                                                                           torch.tensor(False)),
                         RunawayCheck(bound=10.0)) == {}  # only valid cells count
    x[0, 0, 1, 1] = float("nan")
    assert find_runaways(x, None, RunawayCheck(bound=10.0))[0] == "1 non-finite values in valid cells"

    class Nan:
        def sample(self, sampler, denoiser, noise, sigmas, **kwargs):
            return noise * float("nan")

    with pytest.raises(SamplingError, match="non-finite"):  # never kept
        engine("keep", members=1).draw(Nan(), SHAPE, generator=torch.Generator().manual_seed(0))


def test_relative_check_needs_three_members_and_respects_the_floor():
    x = torch.zeros(2, *SHAPE)
    x[1] = 5.0
    assert find_runaways(x, None, RunawayCheck()) == {}  # two members: no median to compare with
    tight = torch.randn(5, *SHAPE, generator=torch.Generator().manual_seed(0)) * 0.01
    tight[4] += 0.2  # 20 times the typical distance, but a fifth of the data's standard deviation
    assert find_runaways(tight, None, RunawayCheck()) == {}
    assert list(find_runaways(tight, None, RunawayCheck(floor=0.0))) == [4]


@pytest.mark.parametrize("settings", [dict(policy="drop"), dict(factor=0.0), dict(bound=-1.0), dict(floor=-1.0),
                                      dict(max_resamples=0)])
def test_bad_settings_are_refused(settings):
    with pytest.raises(ConfigError):
        RunawayCheck(**settings)
    with pytest.raises(ConfigError):
        SamplingEngine(EulerSampler(), PRIOR, SIGMAS, members=0)


def test_derived_seeds_are_stable():
    assert derive_seed(0, "a") == derive_seed(0, "a") != derive_seed(0, "b")
    assert derive_seed(3, "x") == 3914483039638676252  # sha256 of "3|x", first 8 bytes, 63 bits


def test_the_relative_check_reads_an_evenly_strided_subset_of_large_fields():
    x = torch.randn(5, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    valid = torch.ones(1, 64, 64, dtype=torch.bool)
    valid[0, :, :8] = False
    full = median_distances(x, valid, max_cells=None)
    part = median_distances(x, valid, max_cells=1024)
    assert torch.allclose(full, part, rtol=0.1) and not torch.equal(full, part)
    x[:, :, :, :8] = float("nan")  # land is never read
    assert torch.equal(median_distances(x, valid, max_cells=1024), part)
