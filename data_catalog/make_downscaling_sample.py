"""Real data for the downscaling example, notebook and benchmark: North American near-surface air temperature
with real topography, and the shipped held-out sample ``geodiff/data/downscaling/``.

Sources (both downloadable here through their registries' ordinary clients):

* PyPI ``iris-sample-data`` 2.5.2 (``pip download --no-deps iris-sample-data==2.5.2``; unzip the wheel):
  ``sample_data/A1B_north_america.nc`` -- Met Office Unified Model (HadCM3-family climate run, SRES A1B scenario)
  annual-mean 1.5 m air temperature ``air_temperature`` [K], 1860-2099 (360-day calendar), 37 x 49 cells of
  1.25 deg lat x 1.875 deg lon over 15-60 N, 225-315 E. Licence: Open Government Licence (Met Office / iris).
* Debian ``ferret-datasets`` (``apt-get download ferret-datasets``; ``dpkg -x``): ``etopo5.cdf`` -- ETOPO5 5-minute
  global relief ``ROSE`` [m] (NGDC). Public domain.

:func:`north_america` returns

* ``fields``: ``tas (time, lat, lon)`` on the 36 x 48 cells 15-58.75 N, 225-313.125 E (the southern/northern
  and eastern edge cells dropped so both sizes are multiples of 4), CF attributes, ``lat``/``lon`` ascending;
* ``topography``: ``orog`` (mean surface altitude, m, sea = 0) and ``land_fraction`` (1) on the grid refined
  2x (72 x 96 cells of 0.625 x 0.9375 deg), area means of the ETOPO5 points falling in each cell.

Run as a script to write the shipped sample (the 40 held-out years 2060-2099 and the topography)::

    python data_catalog/make_downscaling_sample.py --iris DIR/sample_data --etopo DIR/etopo5.cdf
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import xarray as xr

from geodiff.io.cf import without_coordinate_fill

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "geodiff" / "data" / "downscaling"
HELDOUT_FROM = 2060  # years >= this are held out (not used in training)


def _refine(values: np.ndarray, factor: int) -> np.ndarray:
    step = float(np.diff(values).mean())
    offsets = ((np.arange(factor) + 0.5) / factor - 0.5) * step
    return (values[:, None] + offsets[None, :]).reshape(-1)


def _cell_means(lat: np.ndarray, lon: np.ndarray, src_lat: np.ndarray, src_lon: np.ndarray, values: np.ndarray):
    """Means of ``values [Y, X]`` (on ``src_lat``, ``src_lon``) over the cells centred on ``lat``, ``lon``."""
    dy, dx = float(np.diff(lat).mean()), float(np.diff(lon).mean())
    iy = np.floor((src_lat - (lat[0] - dy / 2)) / dy).astype(int)
    ix = np.floor((src_lon - (lon[0] - dx / 2)) / dx).astype(int)
    ok_y, ok_x = (iy >= 0) & (iy < lat.size), (ix >= 0) & (ix < lon.size)
    sub = values[np.ix_(ok_y, ok_x)]
    cell = iy[ok_y][:, None] * lon.size + ix[ok_x][None, :]
    sums = np.bincount(cell.ravel(), weights=sub.ravel(), minlength=lat.size * lon.size)
    counts = np.bincount(cell.ravel(), minlength=lat.size * lon.size)
    if np.any(counts == 0):
        raise ValueError("a topography cell holds no ETOPO5 point")
    return (sums / counts).reshape(lat.size, lon.size)


def topography_on(lat: np.ndarray, lon: np.ndarray, etopo: str | Path,
                  title: str = "ETOPO5 relief averaged onto a regular grid") -> xr.Dataset:
    """``orog`` (mean surface altitude, m, sea = 0) and ``land_fraction`` (1) on the cells centred on ``lat``,
    ``lon`` (regular, degrees; longitudes in 0..360): area means of the ETOPO5 points falling in each cell."""
    relief = xr.open_dataset(etopo, decode_times=False)["ROSE"]
    src_lat = relief["ETOPO05_Y"].values
    src_lon = relief["ETOPO05_X"].values
    values = relief.values.astype(np.float64)
    orog = _cell_means(lat, lon, src_lat, src_lon, np.clip(values, 0.0, None))
    land = _cell_means(lat, lon, src_lat, src_lon, (values > 0).astype(np.float64))
    coords = {"lat": ("lat", lat, {"standard_name": "latitude", "units": "degrees_north"}),
              "lon": ("lon", lon, {"standard_name": "longitude", "units": "degrees_east"})}
    return xr.Dataset(
        {"orog": (("lat", "lon"), orog.astype("float32"),
                  {"standard_name": "surface_altitude", "long_name": "mean surface altitude (sea = 0)", "units": "m"}),
         "land_fraction": (("lat", "lon"), land.astype("float32"),
                           {"standard_name": "land_area_fraction", "long_name": "land area fraction", "units": "1"})},
        coords=coords,
        attrs={"title": title,
               "source": "Debian ferret-datasets, etopo5.cdf (NGDC ETOPO5, 5-minute relief)",
               "history": "cell means of ETOPO5 points by data_catalog/make_downscaling_sample.py",
               "Conventions": "CF-1.8"},
    )


def north_america(iris_dir: str | Path, etopo: str | Path) -> tuple[xr.Dataset, xr.Dataset]:
    """``(fields, topography)`` (module docstring)."""
    coder = xr.coders.CFDatetimeCoder(use_cftime=True)
    raw = xr.open_dataset(Path(iris_dir) / "A1B_north_america.nc", decode_times=coder)
    tas = raw["air_temperature"].isel(latitude=slice(0, 36), longitude=slice(0, 48)).load()
    tas = tas.rename({"latitude": "lat", "longitude": "lon"})
    tas = tas.drop_vars([c for c in tas.coords if c not in ("time", "lat", "lon")])
    tas = tas.astype("float32")
    tas.attrs = {"standard_name": "air_temperature", "long_name": "near-surface (1.5 m) air temperature, annual mean",
                 "units": "K"}
    tas["lat"] = tas["lat"].astype("float64")
    tas["lon"] = tas["lon"].astype("float64")
    tas["time"].attrs.pop("bounds", None)  # the source's time_bnds is not kept: no dangling reference to it
    tas["time"].encoding.pop("bounds", None)
    tas["lat"].attrs = {"standard_name": "latitude", "units": "degrees_north"}
    tas["lon"].attrs = {"standard_name": "longitude", "units": "degrees_east"}
    fields = tas.to_dataset(name="tas")
    fields.attrs = {
        "title": "Met Office UM A1B annual-mean 1.5 m air temperature over North America",
        "source": "iris-sample-data 2.5.2, sample_data/A1B_north_america.nc (Met Office Unified Model 6.05)",
        "history": "cropped to 36 x 48 cells (15-58.75 N, 225-313.125 E) by data_catalog/make_downscaling_sample.py",
        "Conventions": "CF-1.8",
    }
    topography = topography_on(_refine(fields["lat"].values, 2), _refine(fields["lon"].values, 2), etopo,
                               "ETOPO5 relief averaged onto a 0.625 x 0.9375 degree grid over North America")
    return fields, topography


def heldout(fields: xr.Dataset) -> xr.Dataset:
    """The held-out years (>= 2060)."""
    years = np.array([t.year for t in fields["time"].values])
    return fields.isel(time=np.flatnonzero(years >= HELDOUT_FROM))


def training(fields: xr.Dataset) -> xr.Dataset:
    """The training years (< 2060)."""
    years = np.array([t.year for t in fields["time"].values])
    return fields.isel(time=np.flatnonzero(years < HELDOUT_FROM))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iris", required=True, help="the unzipped iris-sample-data sample_data folder")
    parser.add_argument("--etopo", required=True, help="ferret-datasets etopo5.cdf")
    args = parser.parse_args()
    fields, topography = north_america(args.iris, args.etopo)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    encoding = {"zlib": True, "complevel": 6}
    held = without_coordinate_fill(heldout(fields))  # CF: coordinate variables hold no missing values
    held.to_netcdf(OUTPUT / "north_america_tas_heldout.nc", encoding={"tas": encoding})
    without_coordinate_fill(topography).to_netcdf(OUTPUT / "north_america_topography.nc",
                                                  encoding={name: encoding for name in topography.data_vars})
    print(f"wrote {held.sizes['time']} held-out fields and the topography to {OUTPUT}")


if __name__ == "__main__":
    main()
