"""Remake the inputs the example configurations read (``examples/configs/data/``), from the shipped WOA sample.

Two held-out months (July and August) of the North Pacific box that the shipped prior never saw:

- ``woa_truth.nc``: the World Ocean Atlas temperature there (the truth ``evaluate.yaml`` scores against);
- ``woa_observations.nc``: 5 % of its ocean cells on every level, with 0.1 degC Gaussian noise (seed 0), as an
  observation table (``reconstruct_woa_batch.yaml`` reconstructs from it).

Both are written compressed and without time stamps in their history, so a rerun gives the same bytes.

    python examples/configs/make_example_inputs.py
"""

from __future__ import annotations

from pathlib import Path

from geodiff.adapters import woa

DATA = Path(__file__).resolve().parent / "data"
MONTHS = [6, 7]  # July, August
COVERAGE, ERROR_STD, SEED = 0.05, 0.1, 0


def main() -> None:
    truth = woa.holdout_split(woa.open_sample()).heldout.isel(time=MONTHS).drop_vars("sea_mask")
    observations, _ = woa.holdout_observations(truth, COVERAGE, seed=SEED, error_std=ERROR_STD)
    line = f"examples/configs/make_example_inputs.py: months {MONTHS} of the held-out box"
    DATA.mkdir(exist_ok=True)
    for name, ds in (("woa_truth.nc", truth), ("woa_observations.nc", observations)):
        ds = ds.copy()
        ds.attrs["history"] = line
        encoding = {var: {"zlib": True, "complevel": 9, "shuffle": True, **({"dtype": "S1"} if kind == "U" else {})}
                    for var in ds.variables if (kind := ds[var].dtype.kind) in "fiuMU" and var not in ds.indexes}
        ds.to_netcdf(DATA / name, encoding=encoding)
        print(f"wrote {DATA / name} ({(DATA / name).stat().st_size / 1024:.0f} kB)")


if __name__ == "__main__":
    main()
