"""Patch-wise denoising: blending creates no seam (pointwise denoisers give exactly the unpatched field), sources
are cut on their own grids at the right place, and guidance gradients pass through the blend."""

import pytest
import torch

from geodiff.diffusion.patches import PatchDenoiser, alignment, source_window, window_starts
from geodiff.errors import ConfigError, GridError


@pytest.mark.parametrize("patch,overlap", [((8, 8), (4, 4)), ((8, 12), (2, 6)), ((16, 16), (0, 0))])
def test_pointwise_denoisers_are_reproduced_exactly(patch, overlap):
    x = torch.randn(3, 2, 20, 28, dtype=torch.float64)
    for fn in (lambda v: v, lambda v: torch.full_like(v, 1.7), lambda v: torch.tanh(2 * v) - v**2):
        patched = PatchDenoiser(lambda v, sigma, cond=None: fn(v), patch=patch, overlap=overlap)
        assert torch.allclose(patched(x, 0.5), fn(x), rtol=0, atol=1e-12)


def test_windows_cover_the_domain_and_weights_are_smooth():
    patched = PatchDenoiser(lambda v, s, c=None: v, patch=(8, 8), overlap=(4, 4))
    cover = torch.zeros(20, 28)
    total = torch.zeros(20, 28, dtype=torch.float64)
    for (i0, i1, j0, j1), weight in patched.weights(20, 28):
        cover[i0:i1, j0:j1] += 1
        total[i0:i1, j0:j1] += weight
    assert bool((cover >= 1).all()) and bool((total > 0).all())
    # a denoiser that is a different constant in every window blends into a field without jumps larger
    # than the constants' steps times the taper's largest weight change
    counter = iter(range(100))
    step_denoiser = lambda v, s, c=None: torch.full_like(v, float(next(counter)))
    out = PatchDenoiser(step_denoiser, patch=(8, 8), overlap=(4, 4), max_batch=1)(torch.zeros(1, 1, 20, 28), 1.0)
    hard = torch.zeros(1, 1, 20, 28)  # the same windows pasted without blending
    for k, (i0, i1, j0, j1) in enumerate(patched.windows(20, 28)):
        hard[..., i0:i1, j0:j1] = float(k)
    assert out.diff(dim=-1).abs().max() < 0.6 * hard.diff(dim=-1).abs().max()


def test_sources_are_cut_on_their_own_grids():
    height, width = 16, 24
    coarse = torch.randn(1, 1, height // 4, width // 4)
    fine = torch.randn(1, 1, 2 * height, 2 * width)

    def denoiser(v, sigma, cond):  # each window returns its own crop of the sources, upsampled/averaged
        up = cond["coarse"].repeat_interleave(4, -2).repeat_interleave(4, -1)
        down = torch.nn.functional.avg_pool2d(cond["fine"], 2)
        assert up.shape[-2:] == v.shape[-2:] == down.shape[-2:]
        return up + down

    out = PatchDenoiser(denoiser, patch=(8, 8), overlap=(4, 4))(torch.zeros(2, 1, height, width), 1.0,
                                                               {"coarse": coarse, "fine": fine})
    expected = coarse.repeat_interleave(4, -2).repeat_interleave(4, -1) + torch.nn.functional.avg_pool2d(fine, 2)
    assert torch.allclose(out, expected.expand(2, -1, -1, -1), atol=1e-6)


def test_alignment_and_errors():
    assert alignment({"c": torch.zeros(1, 1, 4, 6), "s": torch.zeros(1, 1, 8, 12)}, (16, 24)) == 4
    assert window_starts(36, 16, 4, 4) == [0, 12, 20]
    with pytest.raises(GridError, match="whole cells"):
        source_window(torch.zeros(1, 4, 6), (16, 24), (2, 10, 0, 8), "coarse")
    with pytest.raises(ConfigError, match="overlap"):
        PatchDenoiser(lambda v, s, c=None: v, patch=(8, 8), overlap=(8, 2))


def test_gradients_pass_through_the_blend():
    weight = torch.linspace(0.5, 1.5, 20 * 28).reshape(1, 1, 20, 28)
    patched = PatchDenoiser(lambda v, s, c=None: v * 2.0, patch=(8, 8), overlap=(4, 4))
    x = torch.randn(1, 1, 20, 28, requires_grad=True)
    (grad,) = torch.autograd.grad((patched(x, 1.0) * weight).sum(), x)
    assert torch.allclose(grad, 2.0 * weight, atol=1e-6)


def test_all_land_windows_are_skipped_with_the_same_result():
    """A masked denoiser under a domain mask: windows without a valid cell are not computed, and the field (valid
    cells and land, and the gradient guidance takes through it) is exactly the one of computing every window."""
    from geodiff.backbones.unet import UNet
    from geodiff.diffusion.denoiser import Denoiser

    torch.manual_seed(0)
    mask = torch.zeros(2, 24, 40, dtype=torch.bool)
    mask[:, 4:14, 22:38] = True  # an ocean basin in a land-heavy domain
    mask[1, 4:8, 22:26] = False  # a shallower deep level
    net = UNet(in_channels=2, base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(),
               mid_attention=False, mask_aware=True)
    torch.nn.init.normal_(net.output[-1].weight, std=0.1)
    base = Denoiser(net, sigma_data=1.0)
    calls = []

    def counted(x, sigma, cond=None, **kw):
        calls.append(x.shape[0])
        return base(x, sigma, cond, **kw)

    x = torch.randn(2, 2, 24, 40, requires_grad=True)
    full = PatchDenoiser(counted, patch=(8, 8), overlap=(4, 4), mask=mask, skip_masked=False)
    skipping = PatchDenoiser(counted, patch=(8, 8), overlap=(4, 4), mask=mask)
    reference = full(x, 0.7)
    computed_full = sum(calls)
    calls.clear()
    out = skipping(x, 0.7)
    assert sum(calls) < computed_full / 2  # most windows are land only
    assert len(skipping.computed(24, 40)) < len(full.computed(24, 40))
    assert torch.equal(out, reference)
    assert bool((out[:, ~mask] == 0).all()) and bool((out[:, mask] != 0).all())
    v = torch.randn_like(out)
    (g_full,) = torch.autograd.grad(reference, x, v)
    (g_skip,) = torch.autograd.grad(out, x, v)
    assert torch.equal(g_skip, g_full)
    with pytest.raises(GridError, match="mask"):
        PatchDenoiser(counted, patch=(8, 8), overlap=(4, 4), mask=mask[0])
    with pytest.raises(GridError, match="mask"):
        skipping(torch.zeros(1, 2, 24, 32), 0.7)


def test_periodic_longitude_blends_across_the_seam():
    """On a whole latitude circle, a denoiser that looks at its neighbours (a circular 3-point mean along lon) gives
    the whole-domain result with wrapped windows; without wrapping the columns at the seam differ."""
    def smooth(x, sigma, cond=None):
        return (torch.roll(x, 1, -1) + x + torch.roll(x, -1, -1)) / 3

    def local_mean(x, sigma, cond=None):  # what a network with zero padding sees inside a window
        padded = torch.nn.functional.pad(x, (1, 1))
        return (padded[..., :-2] + padded[..., 1:-1] + padded[..., 2:]) / 3

    x = torch.randn(2, 1, 8, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact = smooth(x, 1.0)
    cond = {"coarse": torch.randn(1, 1, 2, 8, dtype=torch.float64)}
    wrapped = PatchDenoiser(local_mean, patch=(8, 16), overlap=(0, 4), periodic_lon=True)(x, 1.0, cond)
    plain = PatchDenoiser(local_mean, patch=(8, 16), overlap=(0, 4))(x, 1.0, cond)
    assert torch.allclose(wrapped[..., [0, 31]], exact[..., [0, 31]], atol=1e-12)
    assert not torch.allclose(plain[..., [0, 31]], exact[..., [0, 31]], atol=1e-3)
