"""Grid rules, numpy only: coordinate checks, longitude wrap and periodicity, interpolation stencils, channel layout,
refined and coarsened coordinates. Every other module asks this one; none writes these rules again.

Conventions: latitudes and depth levels ascend (depth in metres, positive down); longitudes ascend in one
convention ``[lon0, lon0 + 360)`` of the grid's choosing (degrees east). A field has ``C`` channels, one per
``(variable, level)`` pair in the codec's order (``level`` a depth in metres, or ``None`` for a 2-D variable).

A point stencil is the interpolation of a field ``[C, H, W]`` at a position: bilinear in latitude/longitude
(across the seam of a periodic longitude axis), linear in depth: eight corners ``c*H*W + j*W + i`` with weights
that sum to 1 (land corners get weight 0 and the rest are renormalised).

Example
-------
>>> import numpy as np
>>> from geodiff import grid
>>> lon = np.arange(0.0, 360.0, 90.0)
>>> grid.is_periodic(lon), float(grid.wrap_longitude(-45.0, lon[0]))
(True, 315.0)
>>> stencil = grid.point_stencil([0.0, 10.0], lon, grid.channel_layout(), lat=[5.0], lon=[315.0])
>>> stencil.index[0, :4].tolist(), stencil.weight[0, :4].tolist()
([3, 0, 7, 4], [0.25, 0.25, 0.25, 0.25])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from geodiff.errors import CoordinateError, GridError, ObservationError

__all__ = [
    "LON_CONVENTIONS",
    "STENCIL_REASONS",
    "EMPTY_WEIGHT",
    "Stencil",
    "ascending",
    "regular_spacing",
    "is_periodic",
    "wrap_longitude",
    "wrap_into_grid",
    "linear_stencil",
    "longitude_stencil",
    "channel_layout",
    "channel_mask",
    "point_stencil",
    "refine_coords",
    "coarse_coords",
]

#: the longitude conventions a dataset can declare
LON_CONVENTIONS: tuple[str, ...] = ("-180..180", "0..360")
#: why a point has no stencil: a variable that is no channel, a NaN position, outside the grid, every corner on land
STENCIL_REASONS: tuple[str, ...] = ("variable", "missing", "outside", "land")
#: weight sum below which a point has no valid (ocean) corner
EMPTY_WEIGHT = 1e-12
#: degrees within which a longitude counts as on the grid's east edge (rounding of the wrap)
_EDGE_DEGREES = 1e-9


# --------------------------------------------------------------------------------------------------------------
# coordinate checks


def ascending(values: Any, name: str) -> np.ndarray:
    """``values`` as a float64 array ``[N]`` after checking it is 1-D, non-empty, finite and strictly ascending;
    else :class:`~geodiff.errors.CoordinateError` naming the coordinate.

    >>> ascending([0.0, 2.5], "lat").tolist()
    [0.0, 2.5]
    """
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise CoordinateError(f"coordinate {name!r} must be a non-empty 1-D array, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise CoordinateError(f"coordinate {name!r} has non-finite values")
    if array.size > 1 and not np.all(np.diff(array) > 0):
        raise CoordinateError(f"coordinate {name!r} must be strictly ascending")
    return array


def regular_spacing(values: Any, name: str) -> float:
    """The constant step of an ascending regular grid ``[N]`` (N >= 2; steps equal to a relative 1e-4);
    else :class:`~geodiff.errors.CoordinateError` naming the coordinate.

    >>> regular_spacing([0.5, 1.5, 2.5], "lat")
    1.0
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size < 2:
        raise CoordinateError(f"coordinate {name!r} needs at least two values to define a grid spacing")
    steps = np.diff(values)
    if not np.all(steps > 0) or not np.allclose(steps, steps[0], rtol=1e-4, atol=0):
        raise CoordinateError(f"coordinate {name!r} must be ascending with a constant spacing (a regular grid)")
    return float(steps.mean())


# --------------------------------------------------------------------------------------------------------------
# longitude


def is_periodic(grid_lon: Any) -> bool:
    """True when longitudes ``[W]`` (ascending, degrees) cover the globe: the gap closing the circle, from the
    last longitude back to the first + 360, is positive and no wider than 1.5 grid spacings.

    >>> is_periodic(np.arange(0.0, 360.0, 2.5)), is_periodic(np.arange(-30.0, 30.0, 1.0))
    (True, False)
    """
    lon = ascending(grid_lon, "lon")
    if lon.size < 2:
        return False
    gap = lon[0] + 360.0 - lon[-1]
    return bool(0 < gap <= 1.5 * np.diff(lon).max() + 1e-9)


def wrap_longitude(lon: Any, convention: str | float = "-180..180") -> Any:
    """Longitudes (numbers, arrays or DataArrays, degrees) taken into ``[west, west + 360)``: ``convention`` is
    ``"-180..180"`` (west = -180), ``"0..360"`` (west = 0) or the western bound itself. A signed difference of
    longitudes wraps with ``"-180..180"``.

    >>> wrap_longitude(np.array([0.0, 180.0, 359.5]), "-180..180").tolist()
    [0.0, -180.0, -0.5]
    >>> wrap_longitude(-90.0, "0..360"), wrap_longitude(400.0, 20.5)
    (270.0, 40.0)
    """
    if isinstance(convention, str):
        if convention not in LON_CONVENTIONS:
            raise CoordinateError(f"unknown longitude convention {convention!r}; expected one of {LON_CONVENTIONS}")
        if convention == "0..360":
            return lon % 360.0
        return ((lon + 180.0) % 360.0) - 180.0
    return convention + (lon - convention) % 360.0


def wrap_into_grid(grid_lon: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Longitudes ``[N]`` taken into the convention ``[lon0, lon0 + 360)`` of an ascending grid ``[W]``; values
    already there (or within 1e-9 degrees of the last column after wrapping) are kept exactly, so that rounding
    never moves a point on the east edge outside.

    >>> wrap_into_grid(np.array([0.0, 90.0, 180.0, 270.0]), np.array([-90.0, 90.0])).tolist()
    [270.0, 90.0]
    """
    wrapped = wrap_longitude(lon, grid_lon[0])
    wrapped = np.where(np.abs(wrapped - lon) <= _EDGE_DEGREES, lon, wrapped)
    return np.where((wrapped > grid_lon[-1]) & (wrapped - grid_lon[-1] <= _EDGE_DEGREES), grid_lon[-1], wrapped)


# --------------------------------------------------------------------------------------------------------------
# stencils


def linear_stencil(
    grid: np.ndarray, values: np.ndarray, *, extrapolate_below: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Neighbours ``(i0, i1, t, inside)`` ``[N]`` of ``values`` on an ascending ``grid [G]``: the interpolant is
    ``(1 - t) f[i0] + t f[i1]``, ``t`` in [0, 1]; ``inside`` is False for NaN values and values off the grid.
    ``extrapolate_below`` keeps values below ``grid[0]`` at the first entry (``t = 0``, inside).

    >>> [a.tolist() for a in linear_stencil(np.array([0.0, 10.0, 20.0]), np.array([15.0, 25.0]))]
    [[1, 1], [2, 2], [0.5, 1.0], [True, False]]
    """
    n = grid.size
    finite = np.isfinite(values)
    safe = np.where(finite, values, grid[0])
    if n == 1:
        i0 = np.zeros(values.shape, dtype=np.int64)
        t = np.zeros(values.shape)
        inside = finite & np.isclose(safe, grid[0], rtol=0, atol=1e-9)
        if extrapolate_below:
            inside |= finite & (safe < grid[0])
        return i0, i0, t, inside
    i0 = np.clip(np.searchsorted(grid, safe, side="right") - 1, 0, n - 2).astype(np.int64)
    i1 = i0 + 1
    t = (safe - grid[i0]) / (grid[i1] - grid[i0])
    inside = finite & (safe >= grid[0]) & (safe <= grid[-1])
    if extrapolate_below:
        above = finite & (safe < grid[0])
        t = np.where(above, 0.0, t)
        inside |= above
    return i0, i1, np.clip(t, 0.0, 1.0), inside


def longitude_stencil(
    grid_lon: np.ndarray, lon: np.ndarray, periodic: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Longitude neighbours ``(i0, i1, t, inside, wrapped)`` ``[N]``: ``lon`` is first taken into the grid's
    convention (:func:`wrap_into_grid`, ``wrapped``); with ``periodic`` the last and first columns are neighbours
    across the seam, so every finite longitude is inside.

    >>> i0, i1, t, inside, wrapped = longitude_stencil(np.array([0.0, 120.0, 240.0]), np.array([-60.0]), True)
    >>> i0.tolist(), i1.tolist(), t.tolist(), wrapped.tolist()
    ([2], [0], [0.5], [300.0])
    """
    finite = np.isfinite(lon)
    safe = np.where(finite, lon, grid_lon[0])
    wrapped = wrap_into_grid(grid_lon, safe)
    if not periodic:
        i0, i1, t, inside = linear_stencil(grid_lon, wrapped)
        return i0, i1, t, inside & finite, wrapped
    n = grid_lon.size
    i0 = np.clip(np.searchsorted(grid_lon, wrapped, side="right") - 1, 0, n - 1).astype(np.int64)
    last = i0 == n - 1
    i1 = np.where(last, 0, i0 + 1)
    right = np.where(last, grid_lon[0] + 360.0, grid_lon[np.minimum(i0 + 1, n - 1)])
    t = np.clip((wrapped - grid_lon[i0]) / (right - grid_lon[i0]), 0.0, 1.0)
    return i0, i1, t, finite, wrapped


# --------------------------------------------------------------------------------------------------------------
# channels


def channel_layout(
    channels: Sequence[tuple[Any, Any]] | None = None, grid_depth: Any = None
) -> dict[Any, tuple[np.ndarray, np.ndarray | None]]:
    """``{variable: (channel indices [L], depth levels [L] or None)}`` from a codec's ``channels`` list.

    Without ``channels`` the field is a single variable (key ``None``): 2-D, or 3-D on ``grid_depth``.
    A 3-D variable's levels must be strictly ascending (depth positive down).

    >>> layout = channel_layout([("tos", None), ("thetao", 5.0), ("thetao", 15.0)])
    >>> layout["thetao"][0].tolist(), layout["thetao"][1].tolist(), layout["tos"][1]
    ([1, 2], [5.0, 15.0], None)
    """
    if channels is None:
        if grid_depth is None:
            return {None: (np.array([0]), None)}
        levels = ascending(grid_depth, "depth")
        return {None: (np.arange(levels.size), levels)}
    if grid_depth is not None:
        raise GridError("give either channels (the codec's (variable, level) list) or grid_depth, not both")
    grouped: dict[Any, list[tuple[int, Any]]] = {}
    for index, item in enumerate(channels):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise GridError(f"channels[{index}] must be a (variable, level) pair, got {item!r}")
        grouped.setdefault(item[0], []).append((index, item[1]))
    layout: dict[Any, tuple[np.ndarray, np.ndarray | None]] = {}
    for variable, entries in grouped.items():
        indices = np.array([i for i, _ in entries])
        levels = [level for _, level in entries]
        if all(level is None for level in levels):
            if len(entries) > 1:
                raise GridError(f"variable {variable!r} appears in {len(entries)} channels without levels")
            layout[variable] = (indices, None)
        elif any(level is None for level in levels):
            raise GridError(f"variable {variable!r} mixes channels with and without a depth level")
        else:
            layout[variable] = (indices, ascending(levels, f"depth levels of {variable!r}"))
    return layout


def channel_mask(mask: Any, shape: tuple[int, int, int], name: str = "mask") -> np.ndarray:
    """A validity mask (True = valid, e.g. ocean) ``[H, W]`` or ``[C, H, W]`` as bool ``[C, H, W]`` for a field of
    ``shape = (C, H, W)``; another shape raises :class:`~geodiff.errors.GridError` naming ``name``.

    >>> channel_mask(np.ones((2, 3)), (4, 2, 3)).shape
    (4, 2, 3)
    """
    array = np.asarray(mask).astype(bool)
    channels, height, width = shape
    if array.shape == (height, width):
        array = np.broadcast_to(array, shape)
    if array.shape != tuple(shape):
        raise GridError(
            f"{name} must be [C, H, W] = {list(shape)} or [H, W] = {[height, width]}, got {list(array.shape)}"
        )
    return array


@dataclass(frozen=True)
class Stencil:
    """Point stencils on a field of ``field_shape = (C, H, W)``.

    ``index [N, 8]`` flat corners ``c*H*W + j*W + i`` (int64) and ``weight [N, 8]`` (float64, summing to 1 over a
    point's valid corners); ``reason [N]`` is ``""`` where the point has a stencil, else one of
    :data:`STENCIL_REASONS` (its row is then zero); ``lon [N]`` the longitudes in the grid's convention;
    ``above [N]`` marks points shallower than their variable's first level that took that level.
    """

    index: np.ndarray
    weight: np.ndarray
    reason: np.ndarray
    lon: np.ndarray
    above: np.ndarray
    field_shape: tuple[int, int, int]
    periodic: bool

    def rows(self, rows: Any) -> Stencil:
        """The stencils of the points ``rows`` (indices or a bool selection).

        >>> point_stencil([0.0, 1.0], [0.0, 1.0], channel_layout(), [0.5, 9.0], [0.5, 0.5]).rows([0]).reason.tolist()
        ['']
        """
        return Stencil(self.index[rows], self.weight[rows], self.reason[rows], self.lon[rows], self.above[rows],
                       self.field_shape, self.periodic)


def point_stencil(
    grid_lat: Any,
    grid_lon: Any,
    layout: dict[Any, tuple[np.ndarray, np.ndarray | None]],
    lat: Any,
    lon: Any,
    depth: np.ndarray | None = None,
    variable: np.ndarray | None = None,
    *,
    mask: Any = None,
    periodic: bool | None = None,
    extrapolate_above: bool = True,
) -> Stencil:
    """Interpolation stencils of the points ``(lat, lon[, depth, variable])`` ``[N]`` on the grid
    ``grid_lat [H]``, ``grid_lon [W]`` (degrees) with the channels ``layout`` (:func:`channel_layout`).

    Bilinear in lat/lon (``periodic``: longitude wraps across the seam, ``None``: :func:`is_periodic` decides),
    linear in depth between the levels around the point; a point shallower than the first level takes it when
    ``extrapolate_above``. With ``mask`` (``[C, H, W]`` or ``[H, W]``, True = valid) land corners get weight 0 and
    the others are renormalised; a point without a valid corner is ``"land"``. Raises
    :class:`~geodiff.errors.ObservationError` when a named layout needs a ``variable`` or ``depth`` the points lack.

    >>> s = point_stencil([0.0, 1.0], [0.0, 1.0], channel_layout(grid_depth=[0.0, 10.0]), [0.25], [0.5],
    ...                   depth=np.array([2.5]))
    >>> round(float(s.weight[0] @ np.array([0, 1, 0, 1, 10, 11, 10, 11])), 12)  # the field lon + depth
    3.0
    """
    grid_lat = ascending(grid_lat, "lat")
    grid_lon = ascending(grid_lon, "lon")
    if grid_lon[-1] - grid_lon[0] >= 360:
        raise CoordinateError("coordinate 'lon' spans 360 degrees or more; drop the repeated seam column")
    periodic = is_periodic(grid_lon) if periodic is None else bool(periodic)
    lat = np.asarray(lat, dtype=np.float64).reshape(-1)
    lon = np.asarray(lon, dtype=np.float64).reshape(-1)
    height, width = grid_lat.size, grid_lon.size
    n_channels = sum(chans.size for chans, _ in layout.values())
    n = lat.size
    j0, j1, ty, in_lat = linear_stencil(grid_lat, lat)
    i0, i1, tx, in_lon, wrapped = longitude_stencil(grid_lon, lon, periodic)
    c0 = np.zeros(n, dtype=np.int64)
    c1 = np.zeros(n, dtype=np.int64)
    tz = np.zeros(n)
    above = np.zeros(n, dtype=bool)
    reason = np.full(n, "", dtype=object)
    reason[~(np.isfinite(lat) & np.isfinite(lon))] = "missing"
    known = np.zeros(n, dtype=bool)
    named = not (len(layout) == 1 and None in layout)
    if named and variable is None:
        if len(layout) > 1:
            raise ObservationError(
                f"the field has variables {sorted(map(str, layout))}: observations need a 'variable' column"
            )
        variable = np.full(n, next(iter(layout)), dtype=object)
    for key, (chans, levels) in layout.items():
        selected = np.ones(n, dtype=bool) if key is None else np.asarray(variable == key, dtype=bool)
        known |= selected
        if not selected.any():
            continue
        if levels is None:
            c0[selected] = c1[selected] = chans[0]
            continue
        if depth is None:
            raise ObservationError(
                f"observations of 3-D variable {key!r} need a 'depth' column (metres, positive down)"
            )
        d = depth[selected]
        if np.any(d[np.isfinite(d)] < 0):
            raise ObservationError("observation column 'depth' has negative values; depth is in metres, positive down")
        k0, k1, t, inside = linear_stencil(levels, d, extrapolate_below=extrapolate_above)
        c0[selected], c1[selected], tz[selected] = chans[k0], chans[k1], t
        if extrapolate_above:
            above[selected] = np.isfinite(d) & (d < levels[0])
        where = np.flatnonzero(selected)
        reason[where[~np.isfinite(d) & (reason[where] == "")]] = "missing"
        reason[where[~inside & (reason[where] == "")]] = "outside"
    if named:
        reason[~known] = "variable"
    reason[(reason == "") & ~(in_lat & in_lon)] = "outside"
    plane = height * width
    index = np.empty((n, 8), dtype=np.int64)
    weight = np.empty((n, 8))
    k = 0
    for cz, wz in ((c0, 1 - tz), (c1, tz)):
        for jy, wy in ((j0, 1 - ty), (j1, ty)):
            for ix, wx in ((i0, 1 - tx), (i1, tx)):
                index[:, k] = cz * plane + jy * width + ix
                weight[:, k] = wz * wy * wx
                k += 1
    bad = reason != ""
    index[bad], weight[bad] = 0, 0.0
    field_shape = (n_channels, height, width)
    if mask is not None:
        valid = channel_mask(mask, field_shape).reshape(-1)
        weight = weight * valid[index]
        total = weight.sum(axis=1)
        reason[(reason == "") & (total <= EMPTY_WEIGHT)] = "land"
        weight = np.divide(weight, total[:, None], out=np.zeros_like(weight), where=total[:, None] > EMPTY_WEIGHT)
    return Stencil(index, weight, reason, wrapped, above, field_shape, periodic)


# --------------------------------------------------------------------------------------------------------------
# refined and coarsened grids


def refine_coords(values: Any, factor: int, name: str = "coordinate") -> np.ndarray:
    """Cell centres of a regular grid refined by an integer ``factor`` (each cell split into ``factor`` equal
    cells): ``[n] -> [n factor]``.

    >>> refine_coords(np.array([0.0, 4.0]), 4).tolist()
    [-1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 4.5, 5.5]
    """
    values = np.asarray(values, dtype=np.float64)
    step = regular_spacing(values, name)
    offsets = ((np.arange(factor) + 0.5) / factor - 0.5) * step
    return (values[:, None] + offsets[None, :]).reshape(-1)


def coarse_coords(values: Any, factor: int, name: str = "coordinate") -> np.ndarray:
    """Cell centres of a regular grid coarsened by an integer ``factor``: ``[n factor] -> [n]`` (block means).

    >>> coarse_coords(np.array([0.5, 1.5, 2.5, 3.5]), 2).tolist()
    [1.0, 3.0]
    """
    values = np.asarray(values, dtype=np.float64)
    regular_spacing(values, name)
    if values.size % factor:
        raise GridError(f"coordinate {name!r} has {values.size} cells, not a multiple of the factor {factor}")
    return values.reshape(-1, factor).mean(axis=1)


def grid_for_ratio(values: Any, ratio: Any, name: str = "coordinate") -> np.ndarray:
    """Cell centres of the grid with ``ratio`` cells per cell of ``values`` over the same extent (``ratio`` an
    integer or 1 / integer, e.g. a :class:`fractions.Fraction` or ``"1/4"``).

    >>> grid_for_ratio(np.array([0.5, 1.5, 2.5, 3.5]), "1/2").tolist(), grid_for_ratio(np.array([0.0, 1.0]), 2).tolist()
    ([1.0, 3.0], [-0.25, 0.25, 0.75, 1.25])
    """
    from fractions import Fraction

    ratio = Fraction(ratio)
    if ratio <= 0 or (ratio.denominator != 1 and ratio.numerator != 1):
        raise GridError(f"grid ratio {ratio} of {name!r} must be an integer or 1 / integer")
    refined = np.asarray(values, dtype=np.float64) if ratio.numerator == 1 else \
        refine_coords(values, ratio.numerator, name)
    return refined if ratio.denominator == 1 else coarse_coords(refined, ratio.denominator, name)
