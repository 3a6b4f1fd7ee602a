"""Regridding for adapters: any (curvilinear) source grid -> a rectilinear target grid, and depth interpolation.

Horizontal: source cell centres and target points become 3-D unit vectors on the sphere (so the dateline and the
poles need no special case), a :class:`scipy.spatial.cKDTree` finds each target point's nearest source cells
once, and the weights are reused for every time and level. Methods:

* ``"idw"`` (default): inverse-distance weights over the ``k`` nearest source cells;
* ``"mean"``: equal weights over the source cells within half a target cell diagonal (an area average when the
  source grid is finer than the target: close to conservative for smooth fields), nearest cell if none;
* ``"nearest"``: the nearest source cell.

Land: NaN source cells never contribute; with ``land="nearest"`` (default) a target point is land when its
nearest source cell is land (the coastline follows the source model), with ``land="any"`` it is ocean when any
neighbour is ocean. Target points farther than ``max_distance`` from every source cell are NaN (no
extrapolation across holes or outside a regional source grid). scipy provides the search; the weighting is a few
lines of numpy because no maintained package here regrids curvilinear grids without ESMF (xesmf needs ESMF).

Vertical: :func:`interp_depth` interpolates linearly in depth with xarray (scipy); below the deepest valid level
of a column (sea floor) the result is NaN, never extrapolated. Above the shallowest source level the shallowest
value is used by default (``surface="nearest"``, recorded) because models' first levels (5-6 m) can lie below a
target's first level (EN4: 5.02 m).

Example
-------
>>> import numpy as np, xarray as xr
>>> from geodiff.adapters.regrid import regrid, regular_grid
>>> src = regular_grid(10.0)
>>> src["t"] = np.cos(np.deg2rad(src.lat)) * xr.ones_like(src.lon)
>>> out = regrid(src, regular_grid(30.0), method="idw")
>>> out.t.shape, bool(abs(out.t - np.cos(np.deg2rad(out.lat))).max() < 0.05)
((6, 12), True)
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import xarray as xr

from geodiff.adapters.standardize import record, wrap_longitude
from geodiff.errors import CoordinateError, GridError

__all__ = [
    "EN4_DEPTHS",
    "Regridder",
    "en4_grid",
    "interp_depth",
    "regrid",
    "regular_grid",
    "target_grid",
    "unit_vectors",
]

#: The 42 depth levels (m) of the EN4 objective analyses (level centres, 5.02 m .. 5350.27 m).
EN4_DEPTHS: tuple[float, ...] = (
    5.0215898, 15.07854, 25.16046, 35.27829, 45.44776, 55.691494, 66.041985, 76.54591, 87.27029, 98.31118,
    109.806175, 121.9519, 135.02855, 149.43373, 165.72845, 184.69746, 207.42545, 235.38617, 270.53412, 315.37408,
    372.96545, 446.80093, 540.5022, 657.32294, 799.5496, 967.99585, 1161.8059, 1378.661, 1615.2905, 1868.0707,
    2133.517, 2408.5835, 2690.7803, 2978.166, 3269.278, 3563.0408, 3858.6763, 4155.628, 4453.502, 4752.021,
    5050.9897, 5350.272,
)

METHODS = ("idw", "mean", "nearest")
LAND = ("nearest", "any")


def unit_vectors(lat: Any, lon: Any) -> np.ndarray:
    """Points ``(lat, lon)`` in degrees (any matching shapes) as unit vectors ``[N, 3]`` (x, y, z).

    >>> unit_vectors([0.0, 90.0], [0.0, 0.0]).round(6).tolist()
    [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    """
    lat = np.deg2rad(np.asarray(lat, dtype="float64").ravel())
    lon = np.deg2rad(np.asarray(lon, dtype="float64").ravel())
    cos_lat = np.cos(lat)
    return np.stack([cos_lat * np.cos(lon), cos_lat * np.sin(lon), np.sin(lat)], axis=-1)


def _chord(angle_deg: float) -> float:
    return float(2.0 * np.sin(np.deg2rad(angle_deg) / 2.0))


def regular_grid(
    resolution: float, lat_bounds: Sequence[float] = (-90.0, 90.0), lon_bounds: Sequence[float] = (-180.0, 180.0)
) -> xr.Dataset:
    """An empty dataset with cell-centre ``lat`` / ``lon`` coordinates at ``resolution`` degrees.

    >>> g = regular_grid(1.0)
    >>> g.sizes["lat"], g.sizes["lon"], float(g.lat[0]), float(g.lon[0])
    (180, 360, -89.5, -179.5)
    """
    if resolution <= 0:
        raise GridError(f"resolution must be positive degrees, got {resolution}")
    (s, n), (w, e) = lat_bounds, lon_bounds
    lat = np.arange(s + resolution / 2.0, n, resolution)
    lon = np.arange(w + resolution / 2.0, e, resolution)
    return xr.Dataset(
        coords={
            "lat": ("lat", lat, {"standard_name": "latitude", "units": "degrees_north"}),
            "lon": ("lon", lon, {"standard_name": "longitude", "units": "degrees_east"}),
        }
    )


def en4_grid(lon: str = "-180..180", depth: bool = True) -> xr.Dataset:
    """The EN4 g10 analysis grid: 173 latitudes (-83..89), 360 longitudes, 42 depths (m), canonical order.

    >>> g = en4_grid()
    >>> dict(g.sizes), float(g.lon[0]), float(g.depth[-1])
    ({'depth': 42, 'lat': 173, 'lon': 360}, -180.0, 5350.272)
    """
    lons = np.sort(wrap_longitude(np.arange(1.0, 361.0), lon))
    coords: dict[str, Any] = {}
    if depth:
        coords["depth"] = ("depth", np.asarray(EN4_DEPTHS, dtype="float32"),
                           {"standard_name": "depth", "units": "m", "positive": "down", "axis": "Z"})
    coords["lat"] = ("lat", np.arange(-83.0, 90.0), {"standard_name": "latitude", "units": "degrees_north"})
    coords["lon"] = ("lon", lons, {"standard_name": "longitude", "units": "degrees_east"})
    return xr.Dataset(coords=coords, attrs={"geodiff_lon_convention": lon})


def target_grid(target: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(lat [H], lon [W], depth [D] or None) of a target given as a Dataset/DataArray or a ``(lat, lon[, depth])``.

    >>> lat, lon, depth = target_grid(([0.0, 1.0], [10.0, 20.0, 30.0]))
    >>> lat.tolist(), lon.tolist(), depth
    ([0.0, 1.0], [10.0, 20.0, 30.0], None)
    """
    if isinstance(target, (xr.Dataset, xr.DataArray)):
        for name in ("lat", "lon"):
            if name not in target.coords or target[name].ndim != 1:
                raise CoordinateError(f"the target grid needs a 1-D coordinate {name!r}; standardize it first")
        depth = np.asarray(target["depth"].values) if "depth" in target.coords else None
        return np.asarray(target["lat"].values), np.asarray(target["lon"].values), depth
    if isinstance(target, (tuple, list)) and len(target) in (2, 3):
        lat, lon = np.asarray(target[0], "float64"), np.asarray(target[1], "float64")
        depth = np.asarray(target[2], "float64") if len(target) == 3 and target[2] is not None else None
        return lat, lon, depth
    raise GridError(
        f"target must be a Dataset/DataArray with lat/lon or a (lat, lon[, depth]) tuple; got {type(target).__name__}"
    )


class Regridder:
    """Weights from a source grid (1-D or 2-D ``lat``/``lon``) to a rectilinear target ``(lat [H], lon [W])``.

    Built once, applied to any number of fields: ``regridder(obj)`` regrids every variable of a Dataset (or a
    DataArray) that has the source horizontal dimensions; other variables are kept, source cell bounds dropped.

    Parameters
    ----------
    src_lat, src_lon
        Source cell centres in degrees: 1-D (rectilinear, dims ``("lat",)``/``("lon",)``) or 2-D ``[ny, nx]``.
    lat, lon
        Target coordinates (1-D, degrees).
    method
        ``"idw"`` (``k`` nearest, weights 1/distance), ``"mean"`` (cells within half a target diagonal), ``"nearest"``.
    k
        Neighbours for ``"idw"`` (and the cap for ``"mean"``, default 64 there).
    land
        ``"nearest"``: NaN where the nearest source cell is NaN; ``"any"``: NaN only where all neighbours are.
    max_distance
        Great-circle distance (degrees) from the nearest source cell beyond which a target point gets NaN; default
        2.5 times the source spacing (95th percentile of nearest-neighbour distances).
    src_dims
        Names of the source horizontal dimensions (default: the dims of ``src_lat`` when it is a DataArray).

    Example
    -------
    >>> import numpy as np, xarray as xr
    >>> jj, ii = np.meshgrid(np.arange(20), np.arange(40), indexing="ij")
    >>> lat2d = xr.DataArray(-85.0 + 9.0 * jj + 0.5 * np.sin(ii / 6.0), dims=("j", "i"))
    >>> lon2d = xr.DataArray(ii * 9.0 + 0.3 * jj, dims=("j", "i"))
    >>> field = xr.DataArray(np.sin(np.deg2rad(lat2d)).values, dims=("j", "i"))
    >>> regridder = Regridder(lat2d, lon2d, np.arange(-60.0, 61.0, 30.0), np.arange(0.0, 360.0, 45.0))
    >>> out = regridder(field)
    >>> out.dims, bool(abs(out - np.sin(np.deg2rad(out.lat))).max() < 0.05)
    (('lat', 'lon'), True)
    """

    def __init__(
        self,
        src_lat: Any,
        src_lon: Any,
        lat: Any,
        lon: Any,
        *,
        method: str = "idw",
        k: int | None = None,
        land: str = "nearest",
        max_distance: float | None = None,
        src_dims: Sequence[Hashable] | None = None,
    ) -> None:
        from scipy.spatial import cKDTree

        if method not in METHODS:
            raise GridError(f"unknown regridding method {method!r}; expected one of {METHODS}")
        if land not in LAND:
            raise GridError(f"unknown land rule {land!r}; expected one of {LAND}")
        slat = np.asarray(getattr(src_lat, "values", src_lat), dtype="float64")
        slon = np.asarray(getattr(src_lon, "values", src_lon), dtype="float64")
        if src_dims is None:
            if isinstance(src_lat, xr.DataArray) and slat.ndim == 2:
                src_dims = src_lat.dims
            elif slat.ndim == 1:
                src_dims = ("lat", "lon")
            else:
                src_dims = ("y", "x")
        if slat.ndim == 1 and slon.ndim == 1:
            self.src_shape = (slat.size, slon.size)
            slat, slon = np.meshgrid(slat, slon, indexing="ij")
        elif slat.shape == slon.shape and slat.ndim == 2:
            self.src_shape = slat.shape
        else:
            raise GridError(f"source lat {slat.shape} and lon {slon.shape} must both be 1-D or the same 2-D shape")
        if len(src_dims) != 2:
            raise GridError(f"src_dims must name two horizontal dimensions, got {src_dims}")
        bad = ~np.isfinite(slat) | ~np.isfinite(slon) | (np.abs(slat) > 90.0)
        if np.any(bad):
            raise CoordinateError(f"source lat/lon hold {int(bad.sum())} non-finite or out-of-range positions")
        self.src_dims = tuple(src_dims)
        self.lat = np.asarray(lat, dtype="float64")
        self.lon = np.asarray(lon, dtype="float64")
        if self.lat.ndim != 1 or self.lon.ndim != 1:
            raise GridError("target lat and lon must be 1-D")
        self.method, self.land = method, land
        src_xyz = unit_vectors(slat, slon)
        tree = cKDTree(src_xyz)
        tlat, tlon = np.meshgrid(self.lat, self.lon, indexing="ij")
        tgt_xyz = unit_vectors(tlat, tlon)
        n_src = src_xyz.shape[0]
        # source spacing: 95th percentile of nearest-neighbour chord distances
        if n_src > 1:
            dnn, _ = tree.query(src_xyz, k=2)
            src_spacing = float(np.percentile(dnn[:, 1], 95))
        else:
            src_spacing = _chord(180.0)
        lon_step = _median_step(self.lon) * np.cos(np.deg2rad(min(60.0, np.abs(self.lat).max())))
        tgt_step = max(_median_step(self.lat), lon_step)
        limit = 2.5 * src_spacing if max_distance is None else _chord(max_distance)
        self.max_distance_chord = limit
        if method == "nearest":
            kk = 1
        elif method == "idw":
            kk = 4 if k is None else int(k)
        else:
            kk = 64 if k is None else int(k)
        kk = max(1, min(kk, n_src))
        self.k = kk
        dist, idx = tree.query(tgt_xyz, k=kk)
        dist, idx = dist.reshape(-1, kk), idx.reshape(-1, kk)
        if method == "idw":
            weights = 1.0 / np.maximum(dist, 1e-12)
        elif method == "mean":
            radius = max(_chord(tgt_step) * np.sqrt(2.0) / 2.0, 1e-12)
            weights = (dist <= radius).astype("float64")
            weights[:, 0] = 1.0  # the nearest cell always counts
        else:
            weights = np.ones_like(dist)
        self.index = idx.astype("int64")
        self.weights = weights
        self.reachable = dist[:, 0] <= limit
        self.shape = (self.lat.size, self.lon.size)
        self._sparse = None

    def apply_array(self, values: np.ndarray) -> np.ndarray:
        """``values [..., ny, nx]`` (NaN = land) -> ``[..., H, W]`` (float64 for float64 input, else float32).

        Two sparse products (scipy) per batch: the weighted sum of the valid neighbours and the sum of their
        weights; their ratio renormalises the weights where some neighbours are land.
        """
        values = np.asarray(values)
        if tuple(values.shape[-2:]) != tuple(self.src_shape):
            raise GridError(f"field has horizontal shape {values.shape[-2:]}; the regridder expects {self.src_shape}")
        lead = values.shape[:-2]
        dtype = np.float64 if values.dtype == np.float64 else np.float32
        flat = values.reshape(-1, self.src_shape[0] * self.src_shape[1]).astype("float64", copy=False).T  # [Ns, b]
        valid = np.isfinite(flat)
        num = self._matrix @ np.where(valid, flat, 0.0)
        den = self._matrix @ valid.astype("float64")
        with np.errstate(invalid="ignore", divide="ignore"):
            out = num / den
        out[den == 0] = np.nan
        if self.land == "nearest":
            out[~valid[self.index[:, 0]]] = np.nan
        out[~self.reachable] = np.nan
        return np.ascontiguousarray(out.T).astype(dtype, copy=False).reshape(lead + self.shape)

    @property
    def _matrix(self) -> Any:
        if self._sparse is None:
            from scipy.sparse import csr_matrix

            n_tgt, k = self.index.shape
            rows = np.repeat(np.arange(n_tgt), k)
            self._sparse = csr_matrix((self.weights.ravel(), (rows, self.index.ravel())),
                                      shape=(n_tgt, self.src_shape[0] * self.src_shape[1]))
        return self._sparse

    def __call__(self, obj: xr.DataArray | xr.Dataset) -> xr.DataArray | xr.Dataset:
        if isinstance(obj, xr.DataArray):
            return self._regrid_dataarray(obj)
        if not isinstance(obj, xr.Dataset):
            raise GridError(f"Regridder applies to an xarray Dataset or DataArray, got {type(obj).__name__}")
        out = {}
        dropped = []
        for name, var in obj.data_vars.items():
            if set(self.src_dims) <= set(var.dims):
                extra = [d for d in var.dims if d not in self.src_dims]
                if any(str(d) in ("bnds", "bounds", "nv", "vertices", "nvertex", "d2") for d in extra):
                    dropped.append(name)
                    continue
                out[name] = self._regrid_dataarray(var)
            elif set(self.src_dims) & set(var.dims):
                dropped.append(name)
            else:
                out[name] = var
        coords = {n: c for n, c in obj.coords.items()
                  if not (set(c.dims) & set(self.src_dims)) and n not in ("lat", "lon")}
        result = xr.Dataset(out, coords=coords, attrs=dict(obj.attrs))
        result = result.assign_coords(self._target_coords(obj))
        changes = [f"regridded horizontally ({self.method}, k={self.k}, land={self.land}) from {self.src_shape} "
                   f"{self.src_dims} to lat x lon {self.shape}"]
        if dropped:
            changes.append(f"dropped source-grid variables {dropped} (cell bounds / partial grids)")
        return record(result, changes, step="regrid")

    def _target_coords(self, obj: Any) -> dict[str, xr.Variable]:
        lat_attrs = {"standard_name": "latitude", "units": "degrees_north"}
        lon_attrs = {"standard_name": "longitude", "units": "degrees_east"}
        return {"lat": xr.Variable("lat", self.lat, lat_attrs), "lon": xr.Variable("lon", self.lon, lon_attrs)}

    def _regrid_dataarray(self, da: xr.DataArray) -> xr.DataArray:
        missing = [d for d in self.src_dims if d not in da.dims]
        if missing:
            raise GridError(f"variable {da.name!r} lacks the source horizontal dims {missing}; it has {da.dims}")
        if da.dtype.kind not in "iuf":
            raise GridError(f"variable {da.name!r} has dtype {da.dtype}; only numeric fields can be regridded")
        if da.chunks is not None:
            da = da.chunk({d: -1 for d in self.src_dims})
        out_dtype = np.float64 if da.dtype == np.float64 else np.float32
        result = xr.apply_ufunc(
            self.apply_array,
            da,
            input_core_dims=[list(self.src_dims)],
            output_core_dims=[["lat", "lon"]],
            exclude_dims=set(self.src_dims),
            dask="parallelized",
            output_dtypes=[out_dtype],
            dask_gufunc_kwargs={"output_sizes": {"lat": self.shape[0], "lon": self.shape[1]}},
            keep_attrs=True,
        )
        keep = {n: c for n, c in result.coords.items() if not (set(c.dims) & set(self.src_dims))}
        result = result.drop_vars([n for n in result.coords if n not in keep])
        result = result.assign_coords(self._target_coords(da))
        result.encoding = {k: v for k, v in da.encoding.items() if k in ("_FillValue", "missing_value") and
                           np.dtype(da.encoding.get("dtype", da.dtype)).kind == "f"}
        return result


def _median_step(values: np.ndarray) -> float:
    if values.size < 2:
        return 180.0
    return float(np.median(np.abs(np.diff(values))))


def interp_depth(obj: xr.Dataset | xr.DataArray, depth: Any, *, surface: str = "nearest", dim: str = "depth") -> Any:
    """Linear interpolation of ``obj`` along ``dim`` (metres, increasing) to ``depth``; NaN below the sea floor.

    Values between two valid levels are interpolated; a target level below the deepest valid level of a column
    (or below the deepest source level) is NaN, never extrapolated. Above the shallowest source level,
    ``surface="nearest"`` copies the shallowest value (recorded), ``surface="nan"`` leaves NaN.

    >>> import numpy as np, xarray as xr
    >>> da = xr.DataArray([20.0, 10.0, np.nan], dims="depth", coords={"depth": [6.0, 16.0, 30.0]}, name="t")
    >>> interp_depth(da, [5.0, 11.0, 16.0, 20.0, 40.0]).values.tolist()
    [20.0, 15.0, 10.0, nan, nan]
    """
    if surface not in ("nearest", "nan"):
        raise GridError(f"surface must be 'nearest' or 'nan', got {surface!r}")
    if dim not in obj.dims:
        raise CoordinateError(f"{dim!r} is not a dimension of the data (dims {tuple(obj.dims)})")
    src = np.asarray(obj[dim].values, dtype="float64")
    if src.size > 1 and np.any(np.diff(src) <= 0):
        raise CoordinateError(f"coordinate {dim!r} must increase (standardize the dataset first)")
    target = np.asarray(depth, dtype="float64")
    if target.ndim != 1:
        raise CoordinateError(f"target depths must be 1-D, got shape {target.shape}")
    if np.array_equal(target, src):
        return obj
    attrs = dict(obj[dim].attrs)
    if isinstance(obj, xr.Dataset):
        drop = [n for n, v in obj.data_vars.items() if dim in v.dims and v.dtype.kind not in "iuf" or
                dim in v.dims and any(str(d) in ("bnds", "bounds", "nv") for d in v.dims)]
        obj = obj.drop_vars(drop)
        if obj.chunks:
            obj = obj.chunk({dim: -1})
    elif obj.chunks is not None:
        obj = obj.chunk({dim: -1})
    out = obj.interp({dim: target}, method="linear", kwargs={"bounds_error": False, "fill_value": np.nan})
    above = xr.DataArray(target < src[0], dims=dim, coords={dim: target})
    filled = 0
    if surface == "nearest" and bool(above.any()):
        top = obj.isel({dim: 0}, drop=True)
        filled = int(above.sum())
        if isinstance(out, xr.Dataset):
            for name in list(out.data_vars):
                if dim in out[name].dims:
                    out[name] = out[name].where(~above, top[name])
        else:
            out = out.where(~above, top)
    out[dim].attrs = attrs
    if isinstance(out, xr.Dataset):  # scipy interpolates in float64: give float32 fields back as float32
        for name in out.data_vars:
            if name in obj.data_vars:
                if obj[name].dtype.kind == "f":
                    out[name] = _cast(out[name], obj[name].dtype)
                out[name].attrs = dict(obj[name].attrs)
        changes = [f"interpolated linearly in {dim} from {src.size} to {target.size} levels (NaN below the deepest "
                   "valid level, no extrapolation)"]
        if filled:
            changes.append(f"{filled} target level(s) above the shallowest source level ({src[0]:g} m) took its value")
        if isinstance(obj, xr.Dataset) and drop:
            changes.append(f"dropped {drop} (source-level bounds or non-numeric)")
        out = record(out, changes, step="interp_depth")
    else:
        if obj.dtype.kind == "f":
            out = _cast(out, obj.dtype)
        out.attrs = dict(obj.attrs)
    return out


def _cast(da: xr.DataArray, dtype: np.dtype) -> xr.DataArray:
    """``da`` computed as ``dtype`` block by block (dask's ``astype`` is skipped when its metadata already says
    ``dtype``, which xarray's interp claims for float32 although scipy returns float64)."""
    return xr.apply_ufunc(lambda a: np.asarray(a).astype(dtype, copy=False), da, dask="parallelized",
                          output_dtypes=[dtype], keep_attrs=True)


def regrid(
    ds: xr.Dataset,
    target: Any,
    *,
    depth: Any = None,
    method: str = "idw",
    k: int | None = None,
    land: str = "nearest",
    max_distance: float | None = None,
    target_mask: xr.DataArray | None = None,
    surface: str = "nearest",
) -> xr.Dataset:
    """A standardized ``ds`` (``lat``/``lon`` 1-D or 2-D, optional ``depth``) on the ``target`` grid.

    ``target`` is a Dataset/DataArray with 1-D ``lat``/``lon`` (and optional ``depth``) or ``(lat, lon[, depth])``;
    ``depth`` overrides the target depths. ``target_mask`` (bool, True = ocean, dims ``lat, lon`` or
    ``depth, lat, lon``) sets NaN where the target grid is land. Horizontal then vertical; both recorded.

    >>> import numpy as np, xarray as xr
    >>> src = regular_grid(5.0)
    >>> src["t"] = xr.DataArray(np.ones((2, 36, 72)), dims=("depth", "lat", "lon"))
    >>> src = src.assign_coords(depth=("depth", [5.0, 50.0], {"units": "m", "positive": "down"}))
    >>> out = regrid(src, regular_grid(10.0), depth=[10.0, 40.0, 60.0])
    >>> out.t.dims, out.t.isel(lat=0, lon=0).values.tolist()
    (('depth', 'lat', 'lon'), [1.0, 1.0, nan])
    """
    if "lat" not in ds.coords or "lon" not in ds.coords:
        raise CoordinateError("regrid needs coordinates 'lat' and 'lon' (standardize the dataset first)")
    lat, lon, tdepth = target_grid(target)
    if depth is not None:
        tdepth = np.asarray(depth, dtype="float64")
    src_dims = ds["lat"].dims if ds["lat"].ndim == 2 else ("lat", "lon")
    same = ds["lat"].ndim == 1 and np.array_equal(ds["lat"].values, lat) and np.array_equal(ds["lon"].values, lon)
    out = ds
    if not same:
        regridder = Regridder(ds["lat"], ds["lon"], lat, lon, method=method, k=k, land=land,
                              max_distance=max_distance, src_dims=src_dims)
        out = regridder(ds)
    if tdepth is not None and "depth" in out.dims:
        out = interp_depth(out, tdepth, surface=surface)
        if isinstance(target, xr.Dataset) and "depth" in target.coords and depth is None:
            out["depth"].attrs = dict(target["depth"].attrs)
    if target_mask is not None:
        mask = _aligned_mask(target_mask, out)
        for name in out.data_vars:
            if set(mask.dims) <= set(out[name].dims):
                out[name] = out[name].where(mask)
        land = int((~mask).sum())
        out = record(out, [f"applied the target land mask ({land} land cells of {mask.size})"], step="regrid")
    return out


def _aligned_mask(mask: xr.DataArray, out: xr.Dataset) -> xr.DataArray:
    """``mask`` as bool on ``out``'s coordinates; GridError when its dims or coordinate values do not match."""
    if not isinstance(mask, xr.DataArray):
        raise GridError(f"target_mask must be a boolean DataArray, got {type(mask).__name__}")
    coords = {}
    for dim in mask.dims:
        if dim not in out.dims or mask.sizes[dim] != out.sizes[dim]:
            raise GridError(f"target_mask dimension {dim!r} (size {mask.sizes[dim]}) does not match the output grid")
        if dim in mask.coords and not np.allclose(np.asarray(mask[dim], "float64"), np.asarray(out[dim], "float64"),
                                                  rtol=0, atol=1e-4):
            raise GridError(f"target_mask coordinate {dim!r} differs from the output grid's")
        coords[dim] = out[dim]
    return xr.DataArray(np.asarray(mask.values).astype(bool), dims=mask.dims, coords=coords)
