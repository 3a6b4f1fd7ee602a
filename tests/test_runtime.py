"""Runtime settings: allocator (glibc and the fallback), channels-last, autocast precision, optimize()."""

import platform

import pytest
import torch

from geodiff import runtime
from geodiff.backbones.unet import UNet
from geodiff.diffusion.denoiser import Denoiser
from geodiff.diffusion.samplers import HeunSampler
from geodiff.diffusion.schedules import EDMSchedule
from geodiff.errors import ConfigError


def small_denoiser(seed: int = 0, mask=None) -> Denoiser:
    torch.manual_seed(seed)
    net = UNet(in_channels=2, base_channels=8, channel_mults=(1, 2), attention_levels=(1,))
    torch.nn.init.normal_(net.output[-1].weight, std=0.1)
    return Denoiser(net, mask=mask)


@pytest.fixture(autouse=True)
def _default_allocator():
    yield
    runtime.restore_allocator()


def test_allocator_applies_on_glibc_and_reports_why_not_elsewhere(monkeypatch):
    setting = runtime.configure_allocator()
    is_glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert setting.applied == is_glibc, setting.reason
    if setting.applied:
        assert setting.mmap_threshold is None and setting.trim_threshold == 1024**3
        assert runtime.configure_allocator(mmap_threshold=16 * 1024 * 1024).mmap_threshold == 16 * 1024 * 1024
        assert runtime.restore_allocator().applied
    monkeypatch.setattr(runtime, "_libc", lambda: None)
    fallback = runtime.configure_allocator()
    assert not fallback.applied and fallback.mmap_threshold is None and "not glibc" in fallback.reason


@pytest.mark.parametrize("kwargs", [{"mmap_threshold": 0}, {"mmap_threshold": 64 * 1024 * 1024},
                                    {"trim_threshold": -1}])
def test_allocator_rejects_values_glibc_cannot_take(kwargs):
    with pytest.raises(ConfigError, match="threshold"):
        runtime.configure_allocator(**kwargs)


def test_precision_context_rejects_unknown_and_cpu_fp16():
    with pytest.raises(ConfigError, match="precision must be one of"):
        runtime.precision_context("int8")
    with pytest.raises(ConfigError, match="fp16"):
        runtime.precision_context("fp16", "cpu")


def test_bf16_autocast_keeps_the_denoiser_output_in_the_field_dtype_and_close_to_fp32():
    denoiser = small_denoiser().eval()
    x = torch.randn(2, 2, 8, 16)
    with torch.no_grad():
        reference = denoiser(x, 0.5)
        with runtime.precision_context("bf16", "cpu"):
            low = denoiser(x, 0.5)
    assert low.dtype == torch.float32
    assert not torch.equal(low, reference)  # the network really ran in bf16
    assert (low - reference).abs().max() < 0.05 * reference.abs().max()


def test_optimize_keeps_outputs_freezes_weights_and_runs_channels_last():
    mask = torch.rand(2, 8, 16) > 0.2
    plain, fast = small_denoiser(mask=mask).eval(), runtime.optimize(small_denoiser(mask=mask), allocator=False)
    assert fast.channels_last and not any(p.requires_grad for p in fast.parameters())
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in fast.parameters() if p.ndim == 4)
    seen = []
    fast.backbone.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)),
        with_kwargs=True,
    )
    noise = torch.randn(3, 2, 8, 16)
    sigmas = EDMSchedule().sigmas(4)
    with torch.no_grad():
        expected = HeunSampler()(plain, noise, sigmas, generator=torch.Generator().manual_seed(0))
        got = HeunSampler()(fast, noise, sigmas, generator=torch.Generator().manual_seed(0))
    assert seen and all(seen)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    # guidance can still pull gradients back to the input through the frozen network
    x = torch.randn(1, 2, 8, 16, requires_grad=True)
    fast(x, 1.0).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_optimize_does_not_change_what_is_saved():
    denoiser = small_denoiser()
    before = {k: v.clone() for k, v in denoiser.state_dict().items()}
    runtime.optimize(denoiser, allocator=False)
    after = denoiser.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_optimize_needs_a_denoiser():
    with pytest.raises(ConfigError, match="backbone"):
        runtime.optimize(torch.nn.Linear(2, 2), allocator=False)


@pytest.mark.parametrize("periodic_lon", [False, True])
def test_unet_runs_channels_last_end_to_end_with_the_same_output(periodic_lon):
    torch.manual_seed(0)
    net = UNet(in_channels=3, base_channels=16, channel_mults=(1, 2), attention_levels=(1,), mask_aware=True,
               periodic_lon=periodic_lon).eval()
    torch.nn.init.normal_(net.output[-1].weight, std=0.1)
    x, mask, label = torch.randn(2, 3, 12, 20), torch.rand(3, 12, 20) > 0.2, torch.tensor([0.1, 0.5])
    with torch.no_grad():
        expected = net(x, label, mask=mask)
        runtime.channels_last(net)
        fed = []
        for module in net.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.register_forward_pre_hook(
                    lambda m, args: fed.append(args[0].is_contiguous(memory_format=torch.channels_last)))
        got = net(runtime.as_channels_last(x), label, mask=mask)
    assert len(fed) > 10 and all(fed)  # no convolution sees an NCHW tensor (no layout conversion inside)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_reconstruct_bf16_path_records_its_precision_and_stays_close_to_fp32():
    import json

    import geodiff
    from geodiff.adapters import woa
    from geodiff.pipelines.demo import prior_path
    from geodiff.pipelines.reconstruct import reconstruct

    model = geodiff.load(prior_path())
    truth = woa.holdout_split(woa.open_sample()).heldout.isel(time=[7]).drop_vars("sea_mask")
    obs, _ = woa.holdout_observations(truth, 0.05, seed=0, error_std=0.1)
    options = {"members": 1, "steps": 10, "sampler": "dpmpp_2m", "seed": 0, "progress": False}
    fp32 = reconstruct(model, obs, **options)
    bf16 = reconstruct(model, obs, precision="bf16", **options)
    assert json.loads(bf16.attrs["geodiff_guidance"])["precision"] == "bf16"
    difference = abs(bf16[woa.VARIABLE] - fp32[woa.VARIABLE]).max()
    assert 0 < float(difference) < 0.5 * float(abs(fp32[woa.VARIABLE]).max())  # changed, but the same field
    with pytest.raises(ConfigError, match="fp16"):
        reconstruct(model, obs, members=1, steps=2, precision="fp16", progress=False)


# ---------------------------------------------------------------------------------------------------------------
# threads


def test_torch_threads_sets_and_restores_the_count_and_refuses_bad_values():
    before = torch.get_num_threads()
    with runtime.torch_threads(2):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before
    with runtime.torch_threads(None):
        assert torch.get_num_threads() == before
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ConfigError, match="threads must be a positive integer"):
            with runtime.torch_threads(bad):
                pass


def test_uses_threads_runs_the_call_with_its_threads_argument():
    @runtime.uses_threads
    def work(x, *, threads=runtime.DEFAULT_THREADS):
        return torch.get_num_threads()

    before = torch.get_num_threads()
    assert work(0) == runtime.DEFAULT_THREADS == 1
    assert work(0, threads=2) == 2 and torch.get_num_threads() == before
    assert "threads" in __import__("inspect").signature(work).parameters
    with pytest.raises(ConfigError, match="has no 'threads' parameter"):
        runtime.uses_threads(lambda x: x)


def test_pipelines_and_training_take_threads_and_record_it(caplog, monkeypatch):
    import inspect
    import json
    import logging

    import geodiff
    from geodiff.adapters import woa
    from geodiff.pipelines.demo import prior_path

    from geodiff.training.fit_downscaling import fit_downscaling

    for function in (geodiff.reconstruct, geodiff.downscale, geodiff.assimilate, geodiff.train, geodiff.fit,
                     fit_downscaling):
        assert inspect.signature(function).parameters["threads"].default == runtime.DEFAULT_THREADS
    seen = []
    monkeypatch.setattr(runtime.torch, "set_num_threads", lambda n: seen.append(n))
    split = woa.holdout_split(woa.open_sample())
    obs, _ = woa.holdout_observations(split.heldout.isel(time=[0]), 0.02, seed=0, error_std=0.1)
    with caplog.at_level(logging.INFO, logger="geodiff"):
        out = geodiff.reconstruct(geodiff.load(prior_path()), obs, members=1, steps=2, threads=3, progress=False,
                                  on_runaway="keep")
    assert seen[0] == 3  # set for the call, then restored
    assert json.loads(out.attrs["geodiff_guidance"])["threads"] == 3
    assert any(r.name == "geodiff.diffusion.engine" and "reconstruct: 1 field(s) x 1 members, 2 steps" in r.message
               for r in caplog.records)
