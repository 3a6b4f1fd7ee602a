"""Reconstruct every held-out month of the World Ocean Atlas box as a resumable batch job, in parts.

Writes the inputs (observation table, truth) and a configuration made from ``examples/configs/``, then runs
``geodiff reconstruct --config ... --part i/N`` for each part (as a scheduler's array job would), shows
``geodiff batch status``, finishes the job (the last part finalises the store) and scores it with
``geodiff evaluate``. Killed at any moment, the same command continues where it stopped.

    python examples/batch_reconstruct.py --output batch-woa --members 4 --steps 24 --parts 3
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from geodiff.adapters import woa
from geodiff.cli import app
from geodiff.pipelines.demo import prior_path

CONFIGS = Path(__file__).resolve().parent / "configs"


def geodiff_command(*args: str) -> None:
    """Run a ``geodiff`` command in this process (as typed on the command line)."""
    print(f"$ geodiff {' '.join(args)}")
    app(list(args), standalone_mode=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("batch-woa"))
    parser.add_argument("--coverage", type=float, default=0.05, help="observed fraction of ocean cells per level")
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--parts", type=int, default=3, help="array-job parts")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    args.output.mkdir(parents=True, exist_ok=True)
    truth = woa.holdout_split(woa.open_sample()).heldout.drop_vars("sea_mask")  # 12 months
    observations, _ = woa.holdout_observations(truth, args.coverage, seed=args.seed, error_std=0.1)
    observations.to_netcdf(args.output / "observations.nc")
    truth.to_netcdf(args.output / "truth.nc")

    config = yaml.safe_load((CONFIGS / "reconstruct_woa_batch.yaml").read_text())
    config.update(model=str(prior_path()), observations="observations.nc", members=args.members, seed=args.seed,
                  progress=True)
    config["options"]["steps"] = args.steps
    (args.output / "reconstruct.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    scoring = yaml.safe_load((CONFIGS / "evaluate.yaml").read_text())
    (args.output / "evaluate.yaml").write_text(yaml.safe_dump({**scoring, "truth": "truth.nc"}, sort_keys=False))

    for part in range(1, args.parts + 1):
        geodiff_command("reconstruct", "--config", str(args.output / "reconstruct.yaml"), "--part",
                        f"{part}/{args.parts}")
        if part == 1:
            geodiff_command("batch", "status", str(args.output / "reconstruction.zarr"))
    geodiff_command("evaluate", "--config", str(args.output / "evaluate.yaml"))


if __name__ == "__main__":
    main()
