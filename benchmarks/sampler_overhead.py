"""Share of sampling time spent outside the network, for every sampler, on a 20-channel 64x128 field.

The backbone's forward is timed inside the sampling run (perf_counter around each call; CPU execution is
synchronous, on GPU the timer synchronises), so ``outside = 1 - network / total`` is measured in the same run,
independent of how fast the machine is at the moment. A bare loop of the same number of network calls is timed
back to back as a second estimate. Prints a table; run with ``python benchmarks/sampler_overhead.py``
(``--networks 18`` for the 18 M-parameter network of ``benchmarks/performance.py`` only; ``--plain`` without
:func:`geodiff.runtime.optimize`).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from geodiff import runtime
from geodiff.backbones.diffusers_unet import DiffusersUNet
from geodiff.backbones.unet import UNet
from geodiff.diffusion.denoiser import Denoiser
from geodiff.diffusion.samplers import (
    DDIMSampler,
    DDPMSampler,
    DPMSolverPP2MSampler,
    EulerSampler,
    HeunSampler,
)
from geodiff.diffusion.schedules import EDMSchedule


class TimedBackbone(torch.nn.Module):
    """Wraps a backbone and accumulates the wall time of its forward calls."""

    def __init__(self, backbone: torch.nn.Module):
        super().__init__()
        self.backbone, self.seconds, self.calls = backbone, 0.0, 0

    def forward(self, *args, **kwargs):
        sync = torch.cuda.synchronize if args[0].is_cuda else (lambda: None)
        sync()
        start = time.perf_counter()
        out = self.backbone(*args, **kwargs)
        sync()
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


def networks(channels: int) -> dict[str, torch.nn.Module]:
    return {
        "geodiff UNet (32, 1-2-2-2)": UNet(in_channels=channels, base_channels=32, channel_mults=(1, 2, 2, 2),
                                           num_res_blocks=1, mask_aware=False),
        "diffusers UNet2DModel (32-64-64-128)": DiffusersUNet(
            in_channels=channels, block_out_channels=(32, 64, 64, 128), layers_per_block=1,
            down_block_types=("DownBlock2D",) * 3 + ("AttnDownBlock2D",),
            up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * 3),
        "diffusers UNet2DModel (64-128-128-256, 18 M)": DiffusersUNet(
            in_channels=channels, block_out_channels=(64, 128, 128, 256), layers_per_block=2,
            down_block_types=("DownBlock2D",) * 3 + ("AttnDownBlock2D",),
            up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=20)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--plain", action="store_true", help="without geodiff.runtime.optimize (channels-last, "
                        "allocator setting)")
    parser.add_argument("--networks", default="", help="only networks whose name contains this text")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    samplers = {"ddpm": DDPMSampler(), "ddim": DDIMSampler(), "euler": EulerSampler(), "heun": HeunSampler(),
                "dpmpp_2m": DPMSolverPP2MSampler()}
    sigmas = EDMSchedule().sigmas(args.steps)
    shape = (args.batch, args.channels, args.height, args.width)
    print(f"# sampler overhead: field {shape[1:]} batch {args.batch}, {args.steps} steps, device {args.device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| network | sampler | NFE | total s | in network s | outside network | bare loop s | (total-bare)/total |")
    print("|---|---|---|---|---|---|---|---|")
    for net_name, backbone in networks(args.channels).items():
        if args.networks not in net_name:
            continue
        timed = TimedBackbone(backbone.eval()).to(args.device)
        denoiser = Denoiser(timed).to(args.device)
        noise = torch.randn(shape, device=args.device)
        if not args.plain:
            runtime.optimize(denoiser)
            noise = runtime.as_channels_last(noise)
        with torch.inference_mode():
            denoiser(noise, 1.0)  # warm-up
            for name, sampler in samplers.items():
                totals, insides, bares = [], [], []
                for _ in range(args.repeats):
                    timed.seconds, timed.calls = 0.0, 0
                    start = time.perf_counter()
                    sampler(denoiser, noise, sigmas, generator=torch.Generator(args.device).manual_seed(0))
                    totals.append(time.perf_counter() - start)
                    insides.append(timed.seconds)
                    calls = timed.calls
                    label = torch.zeros(args.batch, device=args.device)
                    start = time.perf_counter()
                    for _ in range(calls):
                        timed.backbone(noise, label)
                    bares.append(time.perf_counter() - start)
                total, inside, bare = (statistics.median(v) for v in (totals, insides, bares))
                print(f"| {net_name} | {name} | {calls} | {total:.3f} | {inside:.3f} | {100 * (1 - inside / total):.2f} % "
                      f"| {bare:.3f} | {100 * (total - bare) / total:+.2f} % |", flush=True)


if __name__ == "__main__":
    main()
