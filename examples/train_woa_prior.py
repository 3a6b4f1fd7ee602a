"""Train the small diffusion prior shipped with geodiff (``geodiff/data/woa_prior``) and write its bundle.

The prior models World Ocean Atlas monthly temperature (19 depths, 0-1000 m, 2 degrees) on 32x32 patches.
It never sees the held-out North Pacific box of :func:`geodiff.adapters.woa.holdout_split`: the box is
masked out like land, so patches are drawn from the rest of the ocean only. The bundle's grid is the held-out
box, the domain the demo reconstructs (the network is fully convolutional; the codec fixes the domain).

Reproducible: ``python examples/train_woa_prior.py`` (same seed -> same weights on the same torch build).
Takes about 20-30 minutes on 2 CPU cores with the default settings; ``--steps 200`` gives a quick, weak prior.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import geodiff
from geodiff.adapters import woa
from geodiff.backbones.unet import UNet
from geodiff.diffusion.denoiser import Denoiser
from geodiff.diffusion.losses import EDMLoss
from geodiff.diffusion.schedules import VPSchedule
from geodiff.io import Codec, ModelBundle, Normalizer

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "geodiff" / "data" / "woa_prior"


def build_denoiser(channels: int, base_channels: int, faithful: bool = False) -> Denoiser:
    """The prior's architecture: a UNet with three resolutions.

    Default: mask-aware, EDM preconditioning. ``faithful``: ReconMOST's configuration (an eps-prediction network
    on the DDPM timestep of a linear 1e-4..0.02 beta schedule over 1000 steps, no land mask input).
    """
    backbone = UNet(in_channels=channels, base_channels=base_channels, channel_mults=(1, 2, 2), num_res_blocks=1,
                    attention_levels=(), mid_attention=True, mask_aware=not faithful)
    if faithful:
        return Denoiser(backbone, parameterization="eps", noise_label="vp_timestep", schedule=VPSchedule())
    return Denoiser(backbone, sigma_data=1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=14000)
    parser.add_argument("--p-mean", type=float, default=-0.4, help="EDM log-sigma mean of the training noise levels")
    parser.add_argument("--p-std", type=float, default=1.6, help="EDM log-sigma spread of the training noise levels")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--base-channels", type=int, default=24)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--patch", type=int, nargs=2, default=(32, 32), help="training patch (rows, columns)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--faithful", action="store_true",
                        help="ReconMOST's configuration: eps-prediction, DDPM loss and schedule, x = 2(T+5)/45 - 1, "
                             "land = 0 and no mask (for benchmarks/reconstruction.py)")
    parser.add_argument("--output", type=Path, default=None, help="bundle folder (default: geodiff/data/...)")
    parser.add_argument("--checkpoints", type=Path, default=Path("woa_prior_checkpoints"))
    args = parser.parse_args()

    split = woa.holdout_split(woa.open_sample())
    training = split.train[[woa.VARIABLE]].drop_vars("sea_mask")
    output = args.output or DEFAULT_OUTPUT.with_name("woa_prior_reconmost" if args.faithful else "woa_prior")
    normalizer = Normalizer.from_range({woa.VARIABLE: (-5.0, 40.0)}) if args.faithful else Normalizer.fit(training)
    data, mask = Codec.from_dataset(training).encode(normalizer.normalize(training))
    print(f"training fields {tuple(data.shape)}, ocean cells {int(mask.sum())}, patches {tuple(args.patch)}")

    denoiser = build_denoiser(data.shape[1], args.base_channels, args.faithful)
    loss = "ddpm" if args.faithful else EDMLoss(P_mean=args.p_mean, P_std=args.p_std, sigma_data=1.0)
    start = time.perf_counter()
    result = geodiff.train(denoiser, data, mask=None if args.faithful else mask, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                           warmup_steps=min(200, args.steps // 10), ema_decay=0.9995,
                           loss=loss, patch_size=tuple(args.patch),
                           checkpoint_dir=args.checkpoints, checkpoint_every=250, seed=args.seed)
    seconds = time.perf_counter() - start
    target = split.target[[woa.VARIABLE]].drop_vars("sea_mask").isel(time=[0])
    codec = Codec.from_dataset(target)
    result.ema.set_mask(codec.mask)
    bundle = ModelBundle(result.ema, codec, normalizer, metadata={
        "name": "woa_monthly_temperature_prior",
        "description": "diffusion prior of WOA monthly temperature, 19 depths 0-1000 m, 2 degrees, trained on "
                       "32x32 patches outside the held-out North Pacific box; grid = the held-out box",
        "trained_by": "examples/train_woa_prior.py",
        "training": {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                     "patch_size": list(args.patch), "ema_decay": 0.9995,
                     "loss": "ddpm" if args.faithful else {"name": "edm", "P_mean": args.p_mean, "P_std": args.p_std,
                                                           "sigma_data": 1.0},
                     "faithful_reconmost": args.faithful,
                     "final_loss": float(sum(result.losses[-100:]) / len(result.losses[-100:])),
                     "seconds": round(seconds, 1), "torch": torch.__version__},
        "holdout_box": {k: list(v) for k, v in split.box.items()},
    })
    bundle.save(output, overwrite=True)
    print(f"wrote {output} (sha256 {bundle.sha256}) after {seconds:.0f} s")


if __name__ == "__main__":
    main()
