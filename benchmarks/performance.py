"""Performance against peers, in one run on one machine: every number is a ratio to a baseline timed in the same run.

Sections (Markdown tables on stdout):

1. matmul peak: a oneDNN GEMM (1x1 convolution, channels-last) fp32 and bf16, the same convolution as PyTorch
   dispatches it, and MKL's ``torch.mm``;
2. network throughput: diffusers ``UNet2DModel`` (20 channels, 64x128, 18.2 M parameters, 26.1 GFLOP per
   sample forward counted with ``torch.utils.flop_counter``; self-attention at the coarsest level only) as is,
   channels-last, with the glibc allocator setting, and bf16 autocast; GFLOP/s, share of the GEMM figure, page
   faults per forward;
3. sampling loops with that network: geodiff DDPM / DDIM against diffusers' ``DDPMScheduler`` / ``DDIMScheduler``
   loops and azula's samplers; the share of time outside the network (timer around every network call);
4. cost of one guided denoiser evaluation (DPS, MMPS with one CG step, ReconMOST's mean shift) relative to an unguided one;
5. bf16 on the shipped World Ocean Atlas prior: reconstruction throughput and held-out RMSE against fp32;
6. accuracy against network evaluations, against the 1000-step ReconMOST-faithful configuration;
7. training throughput: ``geodiff.train`` against a plain diffusers training loop (same UNet, AdamW, clipping, EMA).

Absolute seconds on shared machines drift; competing variants are timed interleaved (A B A B ...) and the
median is reported. ``python benchmarks/performance.py`` (10-15 minutes on 2 CPU cores), ``--quick`` for a smoke
run. Needs the ``bench`` extra (azula); without it the azula rows are skipped with a note.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import os
import platform
import resource
import statistics
import subprocess
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from geodiff import runtime
from geodiff.backbones.diffusers_unet import DiffusersUNet
from geodiff.diffusion.denoiser import Denoiser
from geodiff.diffusion.samplers import DDIMSampler, DDPMSampler
from geodiff.diffusion.schedules import VPSchedule

# --------------------------------------------------------------------------------------------------- helpers


class Timed(nn.Module):
    """Wraps a module and accumulates the wall time of its forward calls (synchronising on GPU)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.seconds, self.calls = inner, 0.0, 0

    def forward(self, *args, **kwargs):
        sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
        sync()
        start = time.perf_counter()
        out = self.inner(*args, **kwargs)
        sync()
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out

    def reset(self) -> None:
        self.seconds, self.calls = 0.0, 0


def interleaved(runs: dict[str, Callable[[], object]], repeats: int, warm_up: bool = True) -> dict[str, list[float]]:
    """Wall seconds of each run, ``repeats`` times, interleaved (A B C A B C ...) after one warm-up each."""
    for run in runs.values() if warm_up else ():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    """max / min of repeated timings (run-to-run noise)."""
    return f"{max(values) / min(values):.2f}x" if len(values) > 1 else "-"


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def forward_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def machine() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
        keep = ("Model name", "CPU(s):", "Thread(s) per core", "L2 cache", "L3 cache", "Hypervisor vendor")
        cpu = "; ".join(" ".join(line.split()) for line in lines if line.startswith(keep))
        flags = next((line for line in lines if line.startswith("Flags")), "")
        isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags]
    except (OSError, subprocess.CalledProcessError):
        cpu, isa = platform.processor(), []
    return f"{cpu}; ISA {', '.join(isa) or '?'}; {platform.platform()}"


def unet_config(quick: bool) -> dict:
    """The benchmark network: 4 levels, 2 ResNet blocks per level, self-attention at the coarsest level only
    (18.2 M parameters and 26.1 GFLOP per 20x64x128 sample forward)."""
    down, up = ("DownBlock2D",) * 3 + ("AttnDownBlock2D",), ("AttnUpBlock2D",) + ("UpBlock2D",) * 3
    channels = (32, 32, 64, 64) if quick else (64, 128, 128, 256)
    return {"block_out_channels": channels, "layers_per_block": 2, "norm_num_groups": 16 if quick else 32,
            "down_block_types": down, "up_block_types": up}


def make_adapter(config: dict, channels: int, seed: int = 0) -> DiffusersUNet:
    torch.manual_seed(seed)
    net = DiffusersUNet(in_channels=channels, **config)
    for p in net.unet.conv_out.parameters():  # the adapter zero-initialises the output: give it values
        nn.init.normal_(p, std=0.02)
    return net.eval()


# --------------------------------------------------------------------------------------------------- sections


def gemm_peak(args) -> dict[str, float]:
    """GFLOP/s of a GEMM as a 1x1 convolution in channels-last through oneDNN (called explicitly: with one thread
    and a batch below 16 PyTorch itself sends fp32 1x1 convolutions to its THNN/MKL path), fp32 and bf16; and, for
    comparison, ``F.conv2d`` as PyTorch dispatches it and MKL's ``torch.mm`` (fp32)."""
    c, hw, b = (256, (16, 32), 2) if args.quick else (512, (32, 64), 4)
    flops = 2 * b * c * c * hw[0] * hw[1]
    out: dict[str, float] = {}
    rows = []
    for dtype, label in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        weight = torch.randn(c, c, 1, 1, dtype=dtype).contiguous(memory_format=torch.channels_last)
        x = torch.randn(b, c, *hw, dtype=dtype).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            times = interleaved({
                "onednn": lambda: torch.ops.aten.mkldnn_convolution(x, weight, None, [0, 0], [1, 1], [1, 1], 1),
                "dispatched": lambda: nn.functional.conv2d(x, weight)}, args.repeats * 3)  # fmt: skip
        out[f"conv_{label}"] = flops / median(times["onednn"]) / 1e9
        rows.append((f"1x1 conv, channels-last, oneDNN {label}", out[f"conv_{label}"], spread(times["onednn"])))
        rows.append((f"1x1 conv, channels-last, as PyTorch dispatches it, {label}",
                     flops / median(times["dispatched"]) / 1e9, spread(times["dispatched"])))
    a, w = torch.randn(b * hw[0] * hw[1], c), torch.randn(c, c)
    times = interleaved({"mm": lambda: torch.mm(a, w)}, args.repeats * 3)["mm"]
    rows.append(("torch.mm (MKL) fp32", 2 * a.shape[0] * c * c / median(times) / 1e9, spread(times)))
    print(f"\n## 1. Matmul peak ({b}x{c}x{hw[0]}x{hw[1]} activations, {c}x{c} weights)\n")
    print("| kernel | GFLOP/s | max/min of repeats |\n|---|---|---|")
    for name, gflops, noise in rows:
        print(f"| {name} | {gflops:.1f} | {noise} |")
    print(f"\noneDNN GEMM bf16 / fp32: {out['conv_bf16'] / out['conv_fp32']:.2f}x (what bf16 can give a network "
          f"made of GEMMs only)")
    return out


def network_throughput(args, peak: dict[str, float]) -> dict[str, float]:
    """The benchmark UNet as is, channels-last, + allocator setting, + bf16 autocast."""
    adapter = make_adapter(unet_config(args.quick), args.channels)
    unet = adapter.unet
    x = torch.randn(args.batch, args.channels, args.height, args.width)
    t = torch.full((args.batch,), 500.0)
    params = sum(p.numel() for p in unet.parameters())
    with torch.inference_mode():
        flops = forward_flops(lambda: unet(x[:1], t[:1]))
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def forward(inp, precision="fp32"):
        def run():
            with torch.inference_mode(), runtime.precision_context(precision, "cpu"):
                return unet(inp, t, return_dict=False)[0]
        return run

    results: dict[str, float] = {}
    rows = []

    def measure(label: str, run, peak_key: str) -> None:
        run()  # warm-up (the heap grows once)
        faults = minor_faults()
        times = interleaved({label: run}, args.repeats)[label]
        faults = (minor_faults() - faults) // (args.repeats + 1)  # interleaved runs one more warm-up
        gflops = args.batch * flops / median(times) / 1e9
        results[label] = median(times)
        rows.append((label, median(times), gflops, 100 * gflops / peak[peak_key], faults, spread(times)))

    measure("default (NCHW)", forward(x), "conv_fp32")
    runtime.channels_last(unet)
    measure("channels-last", forward(x_cl), "conv_fp32")
    setting = runtime.configure_allocator()
    measure("channels-last + allocator setting", forward(x_cl), "conv_fp32")
    measure("channels-last + allocator, bf16 autocast", forward(x_cl, "bf16"), "conv_bf16")
    unet_bf16 = copy.deepcopy(unet).to(torch.bfloat16)  # weights cast once instead of at every autocast call
    x_bf16 = x_cl.to(torch.bfloat16)

    def forward_bf16():
        with torch.inference_mode():
            return unet_bf16(x_bf16, t, return_dict=False)[0]

    measure("channels-last + allocator, bf16 weights and activations", forward_bf16, "conv_bf16")
    if args.compile:
        compiled = runtime.compile_module(unet)

        def compiled_forward(precision):
            def run():
                with torch.inference_mode(), runtime.precision_context(precision, "cpu"):
                    return compiled(x_cl, t, return_dict=False)[0]
            return run

        measure("channels-last + allocator + torch.compile", compiled_forward("fp32"), "conv_fp32")
        measure("channels-last + allocator + torch.compile, bf16 autocast", compiled_forward("bf16"), "conv_bf16")
    unet.to(memory_format=torch.contiguous_format)
    print(f"\n## 2. Network throughput: diffusers UNet2DModel {unet_config(args.quick)['block_out_channels']}, "
          f"{params / 1e6:.1f} M parameters, {flops / 1e9:.1f} GFLOP per sample forward, batch {args.batch}, "
          f"field {args.channels}x{args.height}x{args.width}\n")
    print(f"Allocator: {setting.reason}.\n")
    print("| setting | s per forward | GFLOP/s | % of oneDNN GEMM (same dtype) | page faults per forward | "
          "max/min of repeats |\n|---|---|---|---|---|---|")
    for label, seconds, gflops, share, faults, noise in rows:
        print(f"| {label} | {seconds:.3f} | {gflops:.1f} | {share:.0f} % | {faults} | {noise} |")
    base = results["channels-last + allocator setting"]
    print(f"\nbf16 / fp32 throughput (network alone): autocast "
          f"{base / results['channels-last + allocator, bf16 autocast']:.2f}x, bf16 weights "
          f"{base / results['channels-last + allocator, bf16 weights and activations']:.2f}x; "
          f"optimised / default fp32: {results['default (NCHW)'] / base:.2f}x")
    if args.compile:
        fp32, bf16 = (results[f"channels-last + allocator + torch.compile{s}"] for s in ("", ", bf16 autocast"))
        print(f"compiled: bf16 / fp32 {fp32 / bf16:.2f}x; compiled bf16 / eager fp32 {base / bf16:.2f}x; "
              f"compiled fp32 / eager fp32 {base / fp32:.2f}x")
    return {"flops": flops, **results}


def sampling_loops(args) -> None:
    """geodiff vs diffusers vs azula loops with one network; share of time outside the network."""
    from diffusers import DDIMScheduler, DDPMScheduler

    adapter = make_adapter(unet_config(args.quick), args.channels)
    runtime.channels_last(adapter)
    runtime.configure_allocator()
    timed = Timed(adapter.unet)
    adapter.unet = timed  # every loop calls this same timed network
    schedule = VPSchedule()
    denoiser = runtime.optimize(Denoiser(adapter, parameterization="eps", noise_label="vp_timestep",
                                         schedule=schedule))
    steps = args.steps
    shape = (args.loop_batch, args.channels, args.height, args.width)
    noise = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    ddpm, ddim = DDPMSampler(), DDIMSampler()
    # our sigmas: the VP schedule's noise levels at diffusers' "leading" timesteps
    d_ddpm, d_ddim = DDPMScheduler(num_train_timesteps=1000), DDIMScheduler(num_train_timesteps=1000)
    d_ddpm.set_timesteps(steps)
    d_ddim.set_timesteps(steps)
    levels = schedule.train_sigmas  # noise level of each training timestep
    ours = torch.cat([levels[d_ddpm.timesteps.long()], levels.new_zeros(1)])

    def geodiff_loop(sampler):
        return lambda: sampler(denoiser, noise, ours, generator=torch.Generator().manual_seed(0))

    def diffusers_loop(scheduler):
        def run():
            generator = torch.Generator().manual_seed(0)
            x = noise.clone()
            for t in scheduler.timesteps:
                eps = timed(x, t, return_dict=False)[0]
                x = scheduler.step(eps, t, x, generator=generator, return_dict=False)[0]
            return x
        return run

    runs: dict[str, Callable[[], object]] = {
        "geodiff DDPMSampler": geodiff_loop(ddpm),
        "diffusers DDPMScheduler loop": diffusers_loop(d_ddpm),
        "geodiff DDIMSampler": geodiff_loop(ddim),
        "diffusers DDIMScheduler loop": diffusers_loop(d_ddim),
    }
    note = ""
    try:
        import azula.noise
        import azula.sample
        from azula.denoise import KarrasDenoiser

        class Backbone(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = timed

            def forward(self, x, t):
                return self.net(x, t.expand(x.shape[0]) * 1000, return_dict=False)[0]

        a_denoiser = KarrasDenoiser(Backbone(), azula.noise.VPSchedule())
        a_ddpm = azula.sample.DDPMSampler(a_denoiser, steps=steps, silent=True)
        a_ddim = azula.sample.DDIMSampler(a_denoiser, steps=steps, silent=True)
        runs["azula DDPMSampler"] = lambda: a_ddpm(noise.clone())
        runs["azula DDIMSampler"] = lambda: a_ddim(noise.clone())
    except ImportError:
        note = "(azula not installed: `pip install azula` for its rows)"

    inside: dict[str, list[float]] = {name: [] for name in runs}

    def with_share(name, run):
        def wrapped():
            timed.reset()
            run()
            inside[name].append(timed.seconds)
        return wrapped

    with torch.inference_mode():
        denoiser(noise, 1.0)  # warm-up: one network call
        times = interleaved({name: with_share(name, run) for name, run in runs.items()}, args.repeats, warm_up=False)
    print(f"\n## 3. Sampling loops with the same network ({steps} steps, batch {args.loop_batch}, fp32, channels-last, "
          f"allocator setting, inference mode) {note}\n")
    print("| loop | total s | in network s | outside network | time / geodiff (same sampler) | max/min |")
    print("|---|---|---|---|---|---|")
    for name in runs:
        total = median(times[name])
        net = median(inside[name])
        ref = "geodiff DDPMSampler" if "DDPM" in name else "geodiff DDIMSampler"
        shares = [1 - i / t for i, t in zip(inside[name], times[name])]
        print(f"| {name} | {total:.3f} | {net:.3f} | {100 * median(shares):.3f} % | "
              f"{total / median(times[ref]):.3f} | {spread(times[name])} |")


def guided_steps(args) -> None:
    """Cost of one guided denoiser evaluation relative to an unguided one (same network, same batch)."""
    import numpy as np

    from geodiff.guidance import DPSGuidance, MMPSGuidance, ReconMOSTGuidance
    from geodiff.operators import PointOperator

    from geodiff.backbones.group_norm import FastGroupNorm

    adapter = make_adapter(unet_config(args.quick), args.channels)
    denoiser = runtime.optimize(Denoiser(adapter, sigma_data=1.0))
    # the same network with PyTorch's own GroupNorm (its channels-last backward is the slow one)
    native_norm = copy.deepcopy(denoiser)
    for layer in native_norm.modules():
        if type(layer) is FastGroupNorm:
            layer.__class__ = nn.GroupNorm
    lat = np.linspace(-60, 60, args.height)
    lon = np.linspace(0, 360, args.width, endpoint=False)
    depth = np.linspace(0, 1000, args.channels)
    rng = np.random.default_rng(0)
    n = int(0.05 * args.height * args.width) * args.channels // 4
    op = PointOperator(lat, lon, lat=rng.uniform(-59, 59, n), lon=rng.uniform(0, 358, n),
                       depth=rng.uniform(0, 999, n), grid_depth=depth)
    y, err = torch.randn(n), torch.full((n,), 0.1)
    sigma = 2.0
    print(f"\n## 4. Guided step cost (one denoiser evaluation, {n} point observations, sigma = {sigma})\n")
    print("| batch | unguided s | naive DPS | DPS | DPS, PyTorch's GroupNorm backward | MMPS (1 CG step) | "
          "MMPS (2 CG steps) | ReconMOST step (DDPM + mean shift) |")
    print("|---|---|---|---|---|---|---|---|")
    for batch in args.guided_batches:
        x = torch.randn(batch, args.channels, args.height, args.width)
        dps = DPSGuidance(y, op, err).wrap(denoiser)
        dps_native_norm = DPSGuidance(y, op, err).wrap(native_norm)
        mmps = MMPSGuidance(y, op, err).wrap(denoiser)
        mmps2 = MMPSGuidance(y, op, err, cg_iterations=2).wrap(denoiser)
        recon = ReconMOSTGuidance(y, op, err).wrap_sampler(DDPMSampler())
        g = torch.Generator().manual_seed(0)

        def unguided():
            with torch.inference_mode():
                return denoiser(x, sigma)

        def reconmost():
            with torch.inference_mode():
                return recon.step(denoiser, x, 0, sigma, 0.9 * sigma, {}, cond=None, generator=g)

        def naive_dps():  # PyTorch's GroupNorm, weights not frozen, autograd through operator and loss
            native_norm.requires_grad_(True)
            with torch.enable_grad():
                x_in = x.detach().requires_grad_(True)
                loss = 0.5 * (((y - op(native_norm(x_in, sigma))) / err) ** 2).sum()
                grad = torch.autograd.grad(loss, x_in)[0]
            native_norm.requires_grad_(False)
            return grad

        with torch.no_grad():
            times = interleaved({"plain": unguided, "naive": naive_dps, "dps": lambda: dps(x, sigma),
                                 "dps_native_norm": lambda: dps_native_norm(x, sigma),
                                 "mmps": lambda: mmps(x, sigma), "mmps2": lambda: mmps2(x, sigma),
                                 "recon": reconmost}, args.repeats)
        base = median(times["plain"])
        columns = ("naive", "dps", "dps_native_norm", "mmps", "mmps2", "recon")
        ratios = " | ".join(f"{median(times[k]) / base:.2f}x" for k in columns)
        print(f"| {batch} | {base:.3f} | {ratios} |")


def woa_problem(month: int = 7, coverage: float = 0.05, seed: int = 0):
    from geodiff.adapters import woa
    from geodiff.pipelines.demo import OBSERVATION_ERROR

    split = woa.holdout_split(woa.open_sample())
    truth = split.heldout.isel(time=[month]).drop_vars("sea_mask")
    obs, guidance_mask = woa.holdout_observations(truth, coverage, seed=seed, error_std=OBSERVATION_ERROR)
    heldout = truth[woa.VARIABLE].notnull() & ~guidance_mask
    return truth, obs, heldout


def heldout_rmse(truth, ensemble, heldout) -> float:
    from geodiff import metrics
    from geodiff.adapters import woa

    return float(metrics.rmse(truth[woa.VARIABLE], ensemble[woa.VARIABLE].mean("member"), where=heldout))


def bf16_reconstruction(args) -> None:
    """bf16 autocast on the shipped prior: throughput and held-out RMSE against fp32, paired (same month, seed and
    noise), over four held-out months.

    The ensemble-mean RMSE of a few members moves with the random draw alone, so fp32 with another seed is shown
    as the noise floor of the comparison."""
    import geodiff
    from geodiff.pipelines.demo import prior_path

    model = geodiff.load(prior_path())
    runtime.optimize(model.denoiser)
    members, steps = (2, 8) if args.quick else (4 * args.members, 12)
    months = (7,) if args.quick else (1, 4, 7, 10)
    rows, seconds = [], {"fp32": [], "bf16": []}
    for month in months:
        truth, obs, heldout = woa_problem(month)
        rmse = {}
        for name, precision, seed in (("fp32", "fp32", 0), ("bf16", "bf16", 0), ("fp32, seed 1", "fp32", 1)):
            start = time.perf_counter()
            ens = geodiff.reconstruct(model, obs, members=members, steps=steps, seed=seed, precision=precision,
                                      progress=False)
            if name in seconds:
                seconds[name].append(time.perf_counter() - start)
            rmse[name] = heldout_rmse(truth, ens, heldout)
        rows.append((month, rmse))
    print(f"\n## 5. bf16 autocast on the shipped WOA prior ({len(months)} held-out months, 5 % coverage, {members} "
          f"members, Heun {steps} steps + MMPS)\n")
    print("| month (0-based) | fp32 RMSE [degC] | bf16 RMSE, same seed | change | fp32 RMSE, seed 1 | change |")
    print("|---|---|---|---|---|---|")
    bf16_change, seed_change = [], []
    for month, rmse in rows:
        bf16_change.append(100 * (rmse["bf16"] / rmse["fp32"] - 1))
        seed_change.append(100 * (rmse["fp32, seed 1"] / rmse["fp32"] - 1))
        print(f"| {month} | {rmse['fp32']:.4f} | {rmse['bf16']:.4f} | {bf16_change[-1]:+.2f} % | "
              f"{rmse['fp32, seed 1']:.4f} | {seed_change[-1]:+.2f} % |")
    sem = statistics.stdev(bf16_change) / len(bf16_change) ** 0.5 if len(bf16_change) > 1 else float("nan")
    print(f"\nbf16 RMSE change: mean {statistics.mean(bf16_change):+.2f} % (standard error {sem:.2f} %), mean |change| "
          f"{statistics.mean(abs(c) for c in bf16_change):.2f} %; fp32 seed-to-seed mean |change| "
          f"{statistics.mean(abs(c) for c in seed_change):.2f} %. Throughput bf16 / fp32 on this prior: "
          f"{sum(seconds['fp32']) / sum(seconds['bf16']):.2f}x")


def member_by_member(bundle, obs, members: int, **options):
    """Reconstruct ``members`` one at a time (seeds 0, 1, ...); diverged members are dropped and counted.
    Returns ``(ensemble or None, diverged)``."""
    import xarray as xr

    import geodiff
    from geodiff.errors import SamplingError

    kept, diverged = [], 0
    for seed in range(members):
        try:
            kept.append(geodiff.reconstruct(bundle, obs, members=1, seed=seed, progress=False, **options))
        except SamplingError:
            diverged += 1
    if not kept:
        return None, diverged
    return xr.concat(kept, dim="member"), diverged


def accuracy_vs_nfe(args) -> None:
    """Held-out RMSE against network evaluations, against the 1000-step ReconMOST-faithful run.

    Members are sampled one at a time with seeds 0..M-1 so that a diverged member (non-finite values, which
    ``reconstruct`` refuses to return) is dropped and counted instead of losing the row."""
    import geodiff
    from geodiff.diffusion.schedules import EDMSchedule
    from geodiff.pipelines.demo import prior_path

    truth, obs, heldout = woa_problem()
    shipped = geodiff.load(prior_path())
    faithful = geodiff.load(prior_path().with_name("woa_prior_reconmost"))
    members = 2 if args.quick else args.members
    runs = [("ReconMOST-faithful", faithful, "ddpm", "reconmost", 100 if args.quick else 1000, VPSchedule())]
    runs += [("shipped (EDM)", shipped, "dpmpp_2m", "mmps", s, EDMSchedule()) for s in ((10,) if args.quick
                                                                                       else (10, 20, 50))]
    runs += [("shipped (EDM)", shipped, "heun", "mmps", s, EDMSchedule()) for s in ((5,) if args.quick
                                                                                   else (5, 10, 25))]
    runs += [("ReconMOST-faithful", faithful, "ddpm", "reconmost", 50, VPSchedule())]
    runs += [("ReconMOST-faithful", faithful, "dpmpp_2m", "mmps", s, VPSchedule()) for s in ((10,) if args.quick
                                                                                            else (20, 50))]
    print(f"\n## 6. Accuracy against network evaluations (August, 5 % coverage, {members} members)\n")
    print("| prior | sampler | guidance | steps | NFE | diverged members | held-out RMSE [degC] | "
          "RMSE / 1000-step reference | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    reference, first = None, True
    for prior, bundle, sampler, guidance, steps, schedule in runs:
        options = {"scale": 4.0} if guidance == "reconmost" else {}
        nfe = geodiff.registry.get("sampler", sampler)().nfe(steps)
        start = time.perf_counter()
        ens, diverged = member_by_member(bundle, obs, members, guidance=guidance, guidance_options=options,
                                         sampler=sampler, steps=steps, schedule=schedule)
        rmse = None if ens is None else heldout_rmse(truth, ens, heldout)
        reference, first = (rmse if first else reference), False  # the first row is the reference
        ratio = "-" if rmse is None or reference is None else f"{rmse / reference:.2f}"
        print(f"| {prior} | {sampler} | {guidance} | {steps} | {nfe} | {diverged}/{members} | "
              f"{'-' if rmse is None else f'{rmse:.3f}'} | {ratio} | {time.perf_counter() - start:.1f} |", flush=True)


def training_throughput(args) -> None:
    """geodiff.train vs a plain diffusers loop (DDPMScheduler.add_noise, MSE on eps, AdamW, clip 1, EMA)."""
    import geodiff
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel

    data = torch.randn(4 * args.loop_batch, args.channels, args.height, args.width)
    steps = 1 if args.quick else 2
    args = argparse.Namespace(**{**vars(args), "batch": args.loop_batch})

    ours = Denoiser(make_adapter(unet_config(args.quick), args.channels), parameterization="eps",
                    noise_label="vp_timestep", schedule=VPSchedule()).train()

    loop_rates: list[float] = []

    def geodiff_run():
        result = geodiff.train(ours, data, steps=steps, batch_size=args.batch, loss="ddpm", resume=False,
                               progress=False)
        loop_rates.append(result.steps_per_second)

    plain = make_adapter(unet_config(args.quick), args.channels).unet.train()
    optimizer = torch.optim.AdamW(plain.parameters(), lr=2e-4)
    ema = EMAModel(plain.parameters(), decay=0.999)
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    generator = torch.Generator().manual_seed(0)

    def diffusers_run():
        for step in range(steps):
            index = torch.randint(0, data.shape[0], (args.batch,), generator=generator)
            clean = data[index]
            eps = torch.randn(clean.shape, generator=generator)
            t = torch.randint(0, 1000, (args.batch,), generator=generator)
            loss = nn.functional.mse_loss(plain(scheduler.add_noise(clean, eps, t), t, return_dict=False)[0], eps)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(plain.parameters(), 1.0)
            optimizer.step()
            ema.step(plain.parameters())

    times = interleaved({"geodiff": geodiff_run, "diffusers": diffusers_run}, max(1, args.repeats - 1))
    print(f"\n## 7. Training throughput (same UNet, batch {args.batch}, {steps} steps per timing, fp32)\n")
    print("| loop | s per step (whole call) | steps/s relative to diffusers |\n|---|---|---|")
    for name in ("diffusers", "geodiff"):
        print(f"| {name} | {median(times[name]) / steps:.3f} | "
              f"{median(times['diffusers']) / median(times[name]):.3f} |")
    inner = 1 / median(loop_rates[1:])
    print(f"| geodiff, training loop only (TrainResult.steps_per_second, without setup) | {inner:.3f} | "
          f"{median(times['diffusers']) / steps / inner:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small network and sizes: a smoke run (~1-2 min)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (compiles for minutes)")
    parser.add_argument("--sections", default="1234567", help="which sections to run, e.g. 123")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.channels, args.height, args.width = (20, 32, 64) if args.quick else (20, 64, 128)
    args.batch = 2 if args.quick else 4  # network throughput
    args.loop_batch = 2  # sampling loops, training
    args.steps = 3 if args.quick else 6
    args.members = 2 if args.quick else 4
    args.guided_batches = (1,) if args.quick else (1, 2)
    if args.quick:
        args.repeats = min(args.repeats, 2)
    print(f"# geodiff performance benchmark ({'quick' if args.quick else 'full'} run), "
          f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"\nMachine: {machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"oneDNN {torch.backends.mkldnn.is_available()}\n")
    start = time.perf_counter()
    peak = gemm_peak(args) if set("12") & set(args.sections) else {}
    if "2" in args.sections:
        network_throughput(args, peak)
    for key, section in (("3", sampling_loops), ("4", guided_steps), ("5", bf16_reconstruction),
                         ("6", accuracy_vs_nfe), ("7", training_throughput)):
        if key in args.sections:
            section(args)
    print(f"\n(total {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
