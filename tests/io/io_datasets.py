"""Small canonical ocean datasets for the io tests: 3-D and 2-D variables, depths, a land mask, CF metadata."""

import numpy as np
import xarray as xr

T, Z, H, W = 3, 4, 5, 6


def land_mask() -> np.ndarray:
    """Land cells ``[Z, H, W]``: a coast in the south-west corner and a seafloor that rises in the north-east."""
    land = np.zeros((Z, H, W), bool)
    land[:, 0, :2] = True
    land[2:, 4, 5] = True
    land[3, 3:, 4:] = True
    return land


def make_ocean(*, times: int = T, seed: int = 0) -> xr.Dataset:
    """A canonical dataset: thetao (float32) and so (float64) on depth, zos (float32, 2-D); NaN on land."""
    rng = np.random.default_rng(seed)
    land = land_mask()
    thetao = rng.normal(10, 5, (times, Z, H, W)).astype("float32")
    thetao[:, land] = np.nan
    so = rng.normal(35, 1, (times, Z, H, W))
    so[:, land] = np.nan
    zos = rng.normal(0, 0.1, (times, H, W)).astype("float32")
    zos[:, land[0]] = np.nan
    return xr.Dataset(
        {
            "thetao": (
                ("time", "depth", "lat", "lon"),
                thetao,
                {
                    "units": "degC",
                    "standard_name": "sea_water_potential_temperature",
                    "long_name": "Sea Water Potential Temperature",
                    "valid_range": np.array([-5, 40], "float32"),
                },
            ),
            "so": (("time", "depth", "lat", "lon"), so, {"units": "0.001", "long_name": "Salinity"}),
            "zos": (("time", "lat", "lon"), zos, {"units": "m", "long_name": "Sea Surface Height"}),
        },
        coords={
            "time": xr.date_range("2000-01-01", periods=times, freq="MS", calendar="noleap", use_cftime=True),
            "depth": ("depth", np.array([5.0, 15.0, 30.0, 60.0], "float32"), {"units": "m", "positive": "down"}),
            "lat": ("lat", np.linspace(-10.0, 10.0, H), {"units": "degrees_north", "standard_name": "latitude"}),
            "lon": ("lon", np.linspace(0.0, 50.0, W), {"units": "degrees_east", "standard_name": "longitude"}),
            "month": ("time", np.arange(times) % 12 + 1),
            "area": (("lat", "lon"), np.random.default_rng(99).uniform(1.0, 2.0, (H, W)), {"units": "m2"}),
            "realization": 1,
        },
        attrs={"title": "tiny ocean", "history": "2024-01-01 made by the tests", "Conventions": "CF-1.8"},
    )
