"""Interpolation baselines for downscaling: bilinear and bicubic (cubic B-spline) refinement of a coarse field.

The coarse grid is refined by an integer factor exactly as :func:`geodiff.grid.refine_coords`
(each coarse cell split into ``factor x factor`` cells) and the coarse values, taken at the coarse cell centres,
are interpolated with :class:`scipy.interpolate.RegularGridInterpolator` (``order=1``: bilinear; ``order=3``:
bicubic, a tensor-product cubic spline with not-a-knot ends, so polynomials up to cubic are reproduced exactly;
the half coarse cell beyond the outermost centres is extrapolated with the edge pieces). NaN
(land) coarse cells are filled from the nearest valid cell before interpolating and are NaN again (with all their
fine cells) in the result, unless a high-resolution ``mask`` says otherwise.

Example
-------
>>> import numpy as np, xarray as xr
>>> from geodiff.baselines.interpolation import bicubic
>>> coarse = xr.Dataset({"tas": (("lat", "lon"), np.full((4, 5), 280.0), {"units": "K"})},
...                     coords={"lat": [0.0, 4.0, 8.0, 12.0], "lon": [0.0, 4.0, 8.0, 12.0, 16.0]})
>>> fine = bicubic(coarse, 4)
>>> fine.tas.shape, round(float(fine.tas.max()), 6), fine.tas.attrs["units"]
((16, 20), 280.0, 'K')
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from scipy import ndimage
from scipy.interpolate import RegularGridInterpolator

from geodiff.errors import ConfigError, GridError
from geodiff.grid import refine_coords
from geodiff.provenance import append_history

__all__ = ["bilinear", "bicubic", "interpolate"]

LAT, LON = "lat", "lon"


def _fill_nearest(values: np.ndarray) -> np.ndarray:
    """NaN cells of ``values [H, W]`` take the value of the nearest finite cell."""
    bad = ~np.isfinite(values)
    if not bad.any():
        return values
    if bad.all():
        raise GridError("the coarse field has no finite value to interpolate from")
    index = ndimage.distance_transform_edt(bad, return_distances=False, return_indices=True)
    return values[tuple(index)]


def interpolate(coarse: xr.Dataset | xr.DataArray, factor: int, order: int,
                mask: xr.DataArray | None = None) -> xr.Dataset | xr.DataArray:
    """Refine ``coarse`` (dims ``(..., lat, lon)``) by ``factor`` with spline ``order`` (1 bilinear, 3 bicubic)."""
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ConfigError(f"factor must be a positive integer, got {factor!r}")
    if isinstance(coarse, xr.DataArray):
        name = coarse.name if coarse.name is not None else "field"
        out = interpolate(coarse.to_dataset(name=name), factor, order, mask)[name]
        return out.rename(coarse.name)
    if LAT not in coarse.dims or LON not in coarse.dims:
        raise GridError(f"interpolation needs dimensions 'lat' and 'lon', got {tuple(coarse.dims)}")
    lat = refine_coords(coarse[LAT].values, factor, LAT)
    lon = refine_coords(coarse[LON].values, factor, LON)

    if order not in (1, 3):
        raise ConfigError(f"order must be 1 (bilinear) or 3 (bicubic), got {order!r}")
    method = "linear" if order == 1 else "cubic"
    points = (np.asarray(coarse[LAT].values, dtype=np.float64), np.asarray(coarse[LON].values, dtype=np.float64))
    if order == 3 and min(p.size for p in points) < 4:
        raise GridError(f"bicubic interpolation needs at least 4 coarse cells in lat and lon, got {points[0].size} "
                        f"x {points[1].size}")
    targets = tuple(np.meshgrid(lat, lon, indexing="ij"))

    def refine(values: np.ndarray) -> np.ndarray:
        filled = _fill_nearest(values.astype(np.float64))
        offset = filled.mean()  # scipy solves the cubic spline iteratively: remove the mean for accuracy
        spline = RegularGridInterpolator(points, filled - offset, method=method, bounds_error=False, fill_value=None)
        fine = spline(targets) + offset
        land = np.repeat(np.repeat(~np.isfinite(values), factor, 0), factor, 1)
        return np.where(land, np.nan, fine)

    data = {}
    for name, da in coarse.data_vars.items():
        if LAT not in da.dims or LON not in da.dims:
            continue
        moved = da.transpose(..., LAT, LON)
        result = xr.apply_ufunc(refine, moved, input_core_dims=[[LAT, LON]], output_core_dims=[["lat_f", "lon_f"]],
                                vectorize=True, dask="parallelized", output_dtypes=[np.float64],
                                dask_gufunc_kwargs={"output_sizes": {"lat_f": lat.size, "lon_f": lon.size}})
        result = result.rename({"lat_f": LAT, "lon_f": LON}).astype(da.dtype if da.dtype.kind == "f" else np.float64)
        result.attrs = dict(da.attrs)
        data[name] = result
    out = xr.Dataset(data).assign_coords({LAT: (LAT, lat, dict(coarse[LAT].attrs)),
                                          LON: (LON, lon, dict(coarse[LON].attrs))})
    if mask is not None:
        valid = mask.transpose(LAT, LON).values.astype(bool)
        if valid.shape != (lat.size, lon.size):
            raise GridError(f"mask must be (lat, lon) = {(lat.size, lon.size)}, got {valid.shape}")
        out = out.where(xr.DataArray(valid, dims=(LAT, LON), coords={LAT: lat, LON: lon}))
    kind = {1: "bilinear", 3: "bicubic"}.get(order, f"order-{order} spline")
    out.attrs = append_history(dict(coarse.attrs), f"geodiff {kind} interpolation, factor {factor}")
    return out


def bilinear(coarse: xr.Dataset | xr.DataArray, factor: int, mask: xr.DataArray | None = None):
    """Bilinear refinement by ``factor`` (:func:`interpolate` with ``order=1``).

    >>> import numpy as np, xarray as xr
    >>> coarse = xr.DataArray([[0.0, 2.0]], dims=("lat", "lon"), coords={"lat": [0.0], "lon": [0.0, 2.0]}, name="t")
    >>> bilinear(xr.concat([coarse, coarse], "lat").assign_coords(lat=[0.0, 2.0]), 2).isel(lat=0).values.tolist()
    [-0.5, 0.5, 1.5, 2.5]
    """
    return interpolate(coarse, factor, 1, mask)


def bicubic(coarse: xr.Dataset | xr.DataArray, factor: int, mask: xr.DataArray | None = None):
    """Bicubic (cubic B-spline) refinement by ``factor`` (:func:`interpolate` with ``order=3``)."""
    return interpolate(coarse, factor, 3, mask)
