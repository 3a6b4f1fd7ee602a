"""Maps of fields, errors, observation positions and ensemble spread (matplotlib + cartopy, the ``plot`` extra).

Coastlines come from GSHHS shapefiles already on the machine (Debian's ``python-cartopy-data`` installs them in
``/usr/share/cartopy/data``; cartopy's own data directories are searched too). Nothing is downloaded: without
coastline files a map still renders, without coastlines, and a :class:`CoastlineWarning` says so.

Example
-------
>>> import numpy as np, xarray as xr
>>> from geodiff.plot import plot_map
>>> field = xr.DataArray(np.random.rand(10, 20), dims=("lat", "lon"),
...     coords={"lat": np.linspace(-45, 45, 10), "lon": np.linspace(-90, 90, 20)}, name="thetao",
...     attrs={"units": "degC", "long_name": "temperature"})
>>> import warnings
>>> with warnings.catch_warnings():
...     warnings.simplefilter("ignore")
...     ax = plot_map(field, title="example")
>>> ax.get_title()
'example'
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import xarray as xr

from geodiff.errors import GridError

__all__ = ["CoastlineWarning", "coastline_file", "plot_map", "plot_reconstruction", "projection_for"]

_SEARCH = ("/usr/share/cartopy/data", "/usr/local/share/cartopy/data")
_warned_no_coastlines: list[bool] = []  # warn once per process, not once per panel


class CoastlineWarning(UserWarning):
    """No coastline file is installed: maps are drawn without coastlines."""


@functools.cache
def coastline_file(scale: str = "l") -> Path | None:
    """The GSHHS level-1 coastline shapefile of ``scale`` ('c' coarse, 'l' low) found on this machine, or None."""
    import cartopy

    roots = [cartopy.config.get("pre_existing_data_dir"), cartopy.config.get("data_dir"), *_SEARCH]
    for root in roots:
        if root:
            candidate = Path(root) / "shapefiles" / "gshhs" / scale / f"GSHHS_{scale}_L1.shp"
            if candidate.is_file():
                return candidate
    return None


def _add_coastlines(ax: Any) -> None:
    import cartopy.crs as ccrs
    from cartopy.feature import ShapelyFeature
    from cartopy.io.shapereader import Reader

    path = coastline_file("l") or coastline_file("c")
    if path is None:
        if _warned_no_coastlines:
            return
        _warned_no_coastlines.append(True)
        warnings.warn(
            "no GSHHS coastline shapefile found (install Debian's python-cartopy-data or set cartopy.config"
            "['pre_existing_data_dir']); drawing the map without coastlines",
            CoastlineWarning,
            stacklevel=3,
        )
        return
    feature = ShapelyFeature(Reader(str(path)).geometries(), ccrs.PlateCarree())
    ax.add_feature(feature, facecolor="0.85", edgecolor="0.3", linewidth=0.4)


def _label(da: xr.DataArray) -> str:
    units = da.attrs.get("units")
    return f"{da.name or ''} [{units}]" if units else str(da.name or "")


def projection_for(lon: Any) -> Any:
    """PlateCarree centred on the middle of ``lon`` (degrees), so a region across 180 E is drawn in one piece."""
    import cartopy.crs as ccrs

    values = np.asarray(lon, dtype=float)
    return ccrs.PlateCarree(central_longitude=float(values.min() + values.max()) / 2)


def plot_map(
    field: xr.DataArray,
    *,
    ax: Any = None,
    title: str | None = None,
    cmap: str = "RdYlBu_r",
    vmin: float | None = None,
    vmax: float | None = None,
    points: tuple[np.ndarray, np.ndarray] | None = None,
    coastlines: bool = True,
) -> Any:
    """Draw a 2-D ``(lat, lon)`` field on a PlateCarree map; ``points=(lat, lon)`` marks observation positions."""
    import cartopy.crs as ccrs
    import matplotlib.pyplot as plt

    if set(field.dims) != {"lat", "lon"}:
        raise GridError(f"plot_map needs a (lat, lon) field, got dims {field.dims} for {field.name!r}")
    if ax is None:
        ax = plt.figure(figsize=(6, 3.5)).add_subplot(projection=projection_for(field["lon"]))
    mesh = ax.pcolormesh(field["lon"], field["lat"], field.transpose("lat", "lon"), transform=ccrs.PlateCarree(),
                         cmap=cmap, vmin=vmin, vmax=vmax, shading="nearest")
    if coastlines:
        _add_coastlines(ax)
    if points is not None:
        ax.scatter(points[1], points[0], s=3, c="k", transform=ccrs.PlateCarree(), label="observations")
    lon, lat = field["lon"].values, field["lat"].values
    ax.set_extent([lon.min(), lon.max(), lat.min(), lat.max()], crs=ccrs.PlateCarree())
    ax.figure.colorbar(mesh, ax=ax, shrink=0.8, label=_label(field))
    ax.set_title(title if title is not None else str(field.name))
    return ax


def plot_reconstruction(
    truth: xr.DataArray,
    ensemble: xr.DataArray,
    observations: xr.Dataset | None = None,
    *,
    depths: Sequence[float] | None = None,
    path: str | Path | None = None,
    dpi: int = 110,
) -> Any:
    """Truth, observation positions, ensemble mean, ensemble std and error for chosen depths (one row each).

    ``truth (depth, lat, lon)``, ``ensemble (member, depth, lat, lon)``; ``observations`` is an observation table
    (dim ``obs`` with ``lat``, ``lon`` and ``depth``). Returns the figure; writes it to ``path`` when given.
    """
    import matplotlib.pyplot as plt

    if "member" not in ensemble.dims:
        raise GridError(f"ensemble {ensemble.name!r} needs a 'member' dimension, got {ensemble.dims}")
    depths = list(depths) if depths is not None else [float(truth["depth"][0]), float(truth["depth"][-1])]
    lon, lat = np.asarray(truth["lon"]), np.asarray(truth["lat"])
    aspect = (lat.max() - lat.min()) / max(lon.max() - lon.min(), 1e-9)
    figure = plt.figure(figsize=(20, 0.6 + 4.0 * aspect * 2.2 * len(depths)))
    for row, depth in enumerate(depths):
        t = truth.sel(depth=depth)
        member_mean = ensemble.sel(depth=depth).mean("member")
        member_std = ensemble.sel(depth=depth).std("member")
        error = member_mean - t
        lo, hi = float(t.min()), float(t.max())
        limit = float(np.nanmax(np.abs(error.values))) or 1.0
        points = None
        if observations is not None:
            at_depth = observations.isel(obs=np.flatnonzero(np.isclose(observations["depth"].values, depth)))
            points = (at_depth["lat"].values, at_depth["lon"].values)
        panels = [
            (t, f"truth, {depth:g} m", "RdYlBu_r", lo, hi, None),
            (t, f"observations, {depth:g} m ({0 if points is None else len(points[0])})", "RdYlBu_r", lo, hi, points),
            (member_mean, "ensemble mean", "RdYlBu_r", lo, hi, None),
            (member_std, "ensemble std", "viridis", 0, None, None),
            (error, "mean - truth", "RdBu_r", -limit, limit, None),
        ]
        for col, (field, title, cmap, vmin, vmax, pts) in enumerate(panels):
            ax = figure.add_subplot(len(depths), 5, row * 5 + col + 1, projection=projection_for(truth["lon"]))
            plot_map(field.rename(truth.name), ax=ax, title=title, cmap=cmap, vmin=vmin, vmax=vmax, points=pts)
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=dpi)
    return figure
