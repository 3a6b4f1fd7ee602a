"""Codec: a canonical ``xr.Dataset`` <-> tensors ``[batch, channel, lat, lon]``, with an exact inverse.

A canonical dataset holds one or more data variables, each ``(time, <level>, lat, lon)`` or ``(time, lat, lon)``
(``<level>`` is the vertical dimension, e.g. ``depth`` or ``level``), with NaN on land. The codec stacks them into
channels, ``channel = variable x level``: variables in codec order, each variable's levels in dataset order, a 2-D
variable taking one channel. Land cells (NaN) become 0 in the tensor and ``False`` in the mask ``[C, H, W]``.

``decode`` rebuilds the dataset: data variables with their dtype, attributes and encoding (dtype, ``_FillValue``,
units and calendar of time, compression; chunk layout and source path are not kept), every coordinate (index
and non-index, with attributes and encoding), global attributes, and NaN on land. Decoding the output of
``encode`` gives the input back exactly (``xr.testing.assert_identical``) when the tensor dtype holds the
variables' values exactly: always for float32 variables; for float64 variables pass ``dtype=torch.float64``
to ``encode`` (the default float32 tensor rounds them).

The spec (``to_dict``) is plain JSON: variables, dims, coordinates (lat/lon, levels, non-index coordinates),
attributes and encodings. The time *values* are not part of it (only the time attributes and encoding):
a codec rebuilt from a spec decodes with an explicit ``time=``. The mask is kept apart (``codec.mask``) so
that a model bundle can store it as a tensor.

Example
-------
>>> import numpy as np, xarray as xr
>>> from geodiff.io.codec import Codec
>>> temp = np.arange(2 * 3 * 4 * 5, dtype="float32").reshape(2, 3, 4, 5)
>>> temp[:, :, 0, 0] = np.nan  # a land cell
>>> ds = xr.Dataset(
...     {"thetao": (("time", "depth", "lat", "lon"), temp, {"units": "degC"}),
...      "tos": (("time", "lat", "lon"), temp[:, 0], {"units": "degC"})},
...     coords={"time": np.array(["2000-01-01", "2000-02-01"], dtype="datetime64[ns]"),
...             "depth": [5.0, 15.0, 25.0], "lat": [-1.5, -0.5, 0.5, 1.5], "lon": [0.0, 1.0, 2.0, 3.0, 4.0]})
>>> codec = Codec.from_dataset(ds)
>>> x, mask = codec.encode(ds)
>>> tuple(x.shape), tuple(mask.shape), codec.channels[:2]
((2, 4, 4, 5), (4, 4, 5), [('thetao', 5.0), ('thetao', 15.0)])
>>> xr.testing.assert_identical(codec.decode(x), ds)
>>> codec.decode(x[None].repeat(3, 1, 1, 1, 1), member=True).thetao.dims
('member', 'time', 'depth', 'lat', 'lon')
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr

from geodiff.errors import ConfigError, CoordinateError, GridError
from geodiff.io.cf import as_cf_ensemble, member_coordinate
from geodiff.io.spec import clean_encoding as _clean_encoding
from geodiff.io.spec import from_json as _from_json
from geodiff.io.spec import to_json as _to_json
from geodiff.io.spec import variable_from_json as _variable_from_json
from geodiff.io.spec import variable_names as _names
from geodiff.io.spec import variable_to_json as _variable_to_json

__all__ = ["Codec", "CODEC_FORMAT", "CODEC_VERSION", "VARYING_NAN"]

CODEC_FORMAT = "geodiff.codec"
CODEC_VERSION = 1

TIME, LAT, LON, MEMBER = "time", "lat", "lon", "member"
#: How ``Codec.from_dataset`` treats a NaN (land) pattern that changes over time (see :class:`Codec`).
VARYING_NAN = ("raise", "valid_always", "valid_ever")
_EXPECTED_DIMS = "(time, <level>, lat, lon) or (time, lat, lon)"


class _TimeFromCodec:
    """Sentinel: decode with the time axis the codec was learned from."""

    def __repr__(self) -> str:
        return "<time axis of the learned dataset>"


_FROM_CODEC: Any = _TimeFromCodec()


def _fmt(value: Any) -> str:
    """A coordinate value for a message (numpy scalars shown as plain Python values)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _describe_cell(coords: Sequence[tuple[str, np.ndarray]], index: Sequence[int]) -> str:
    return ", ".join(f"{name}={_fmt(values[i])}" for (name, values), i in zip(coords, index))


# ---------------------------------------------------------------------------------------------------------------


class Codec:
    """Layout of a canonical dataset: variables x levels -> channels on a fixed ``(lat, lon)`` grid.

    Build it with :meth:`from_dataset` (or :meth:`from_dict` for a saved spec). ``encode(ds)`` gives
    ``(x [T, C, H, W], mask [C, H, W] bool)``; ``decode(x)`` gives the dataset back.

    ``varying_nan`` says what to do when the NaN (land) pattern of a variable changes over time:
    ``"raise"`` (default: :class:`~geodiff.errors.GridError` naming the variable), ``"valid_always"``
    (a cell is valid only where it is never NaN; values at other cells are dropped by ``encode`` and come
    back as NaN) or ``"valid_ever"`` (a cell is valid where it is ever finite; NaNs there are encoded as 0 and
    come back as numbers). Only ``"raise"`` guarantees the exact inverse.

    Example
    -------
    >>> import numpy as np, xarray as xr
    >>> from geodiff.io.codec import Codec
    >>> ds = xr.Dataset({"zos": (("time", "lat", "lon"), np.ones((1, 2, 3), "float32"))},
    ...                 coords={"time": [0], "lat": [0.0, 1.0], "lon": [0.0, 1.0, 2.0]})
    >>> codec = Codec.from_dataset(ds)
    >>> codec.shape, codec.channels
    ((1, 2, 3), [('zos', None)])
    """

    def __init__(self, spec: Mapping[str, Any], mask: Any, *, _time: dict[str, xr.Variable] | None = None):
        """Build from a JSON ``spec`` (as returned by :meth:`to_dict`) and ``mask [C, H, W]`` bool."""
        if not isinstance(spec, Mapping):
            raise ConfigError(f"a codec spec must be a dict, got {type(spec).__name__}")
        if spec.get("format") != CODEC_FORMAT:
            raise ConfigError(f"codec spec key 'format' must be {CODEC_FORMAT!r}, got {spec.get('format')!r}")
        version = spec.get("format_version")
        if not isinstance(version, int) or version > CODEC_VERSION:
            raise ConfigError(f"codec spec 'format_version' {version!r} is not supported (up to {CODEC_VERSION})")
        self._spec = copy.deepcopy(dict(spec))
        try:
            self._build()
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"codec spec is malformed: {type(err).__name__}: {err}") from err
        mask = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
        if mask.dtype != torch.bool or tuple(mask.shape) != self.shape:
            raise GridError(f"codec mask must be bool {list(self.shape)}, got {mask.dtype} {list(mask.shape)}")
        self._mask = mask.detach().to("cpu").clone()
        self._template_time = _time

    def _build(self) -> None:
        spec = self._spec
        self.varying_nan: str = spec["varying_nan"]
        if self.varying_nan not in VARYING_NAN:
            raise ConfigError(f"codec spec 'varying_nan' must be one of {VARYING_NAN}, got {self.varying_nan!r}")
        self._coords: dict[str, xr.Variable] = {c["name"]: _variable_from_json(c) for c in spec["coords"]}
        self._coord_order: list[str] = list(spec["coord_order"])
        self._attrs = _from_json(spec["attrs"])
        self._encoding = _from_json(spec["encoding"])
        self._time_meta = None if spec["time"] is None else {k: _from_json(v) for k, v in spec["time"].items()}
        for name in (LAT, LON):
            if name not in self._coords or self._coords[name].dims != (name,):
                raise ConfigError(f"codec spec has no 1-D coordinate {name!r}")
        self._vars: list[dict[str, Any]] = []
        start = 0
        for var in spec["variables"]:
            dims = tuple(var["dims"])
            if dims[-2:] != (LAT, LON) or len(dims) not in (2, 3):
                raise ConfigError(f"codec spec variable {var['name']!r} has dims {dims}; expected ([level,] lat, lon)")
            level_dim = dims[0] if len(dims) == 3 else None
            if level_dim is not None and level_dim not in self._coords:
                raise ConfigError(f"codec spec has no coordinate for dimension {level_dim!r} of {var['name']!r}")
            size = 1 if level_dim is None else self._coords[level_dim].size
            self._vars.append(
                {
                    "name": var["name"],
                    "dims": dims,
                    "level_dim": level_dim,
                    "dtype": np.dtype(var["dtype"]),
                    "attrs": _from_json(var["attrs"]),
                    "encoding": _from_json(var["encoding"]),
                    "slice": slice(start, start + size),
                }
            )
            start += size
        if not self._vars:
            raise ConfigError("codec spec has no variables")
        self._shape = (start, self._coords[LAT].size, self._coords[LON].size)

    # -------------------------------------------------------------------------------------------------------
    # construction

    @classmethod
    def from_dataset(
        cls, ds: xr.Dataset, variables: str | Sequence[str] | None = None, *, varying_nan: str = "raise"
    ) -> Codec:
        """Learn the layout of ``ds`` (the given ``variables``, default all data variables, in that order).

        The mask is computed from the NaN pattern (lazily with dask, one pass). Raises
        :class:`~geodiff.errors.GridError` naming the variable or coordinate on a layout that is not
        ``(time, <level>, lat, lon)`` / ``(time, lat, lon)``, a non-float variable or (with
        ``varying_nan="raise"``) a land mask that changes over time.
        """
        if not isinstance(ds, xr.Dataset):
            raise GridError(f"Codec.from_dataset expects an xarray.Dataset, got {type(ds).__name__}")
        if varying_nan not in VARYING_NAN:
            raise ConfigError(f"varying_nan must be one of {VARYING_NAN}, got {varying_nan!r}")
        names = _names(ds, variables)
        if not names:
            raise GridError("the dataset has no data variables to encode")
        for name in names:
            if not isinstance(name, str):
                raise GridError(f"variable name {name!r} is not a string; expected string names")
            if name not in ds.data_vars:
                raise GridError(f"variable {name!r} is not a data variable of the dataset; found {list(ds.data_vars)}")
        if len(set(names)) != len(names):
            raise GridError(f"variables {names} contain duplicates")
        sub = ds[names]
        has_time = any(TIME in sub[name].dims for name in names)
        var_specs = []
        for name in names:
            dims = _check_layout(name, sub[name], with_time=has_time)
            var_specs.append(
                {
                    "name": name,
                    "dims": list(dims),
                    "dtype": sub[name].dtype.str,
                    "attrs": _to_json(dict(sub[name].attrs), f"attributes of variable {name!r}"),
                    "encoding": _to_json(_clean_encoding(sub[name].encoding), f"encoding of variable {name!r}"),
                }
            )
            for dim in dims:
                _check_index(sub, dim, name)
        coords, template = [], None
        for cname, coord in sub.coords.items():
            if not isinstance(cname, str):
                raise GridError(f"coordinate name {cname!r} is not a string; expected string names")
            if TIME in coord.dims:
                if coord.dims != (TIME,):
                    raise GridError(
                        f"coordinate {cname!r} has dims {coord.dims}; coordinates along time must be 1-D (time,)"
                    )
                continue
            coords.append(_variable_to_json(cname, coord.variable))
        time_meta = None
        if has_time:
            _check_index(sub, TIME, names[0])
            time = sub[TIME]
            time_meta = {
                "attrs": _to_json(dict(time.attrs), "attributes of coordinate 'time'"),
                "encoding": _to_json(_clean_encoding(time.encoding), "encoding of coordinate 'time'"),
            }
            template = {}
            for n, c in sub.coords.items():
                if c.dims == (TIME,):
                    template[str(n)] = c.variable.copy(deep=True)
                    template[str(n)].encoding = _clean_encoding(c.encoding)
        spec = {
            "format": CODEC_FORMAT,
            "format_version": CODEC_VERSION,
            "variables": var_specs,
            "coords": coords,
            "coord_order": [str(n) for n in sub.coords],
            "time": time_meta,
            "attrs": _to_json(dict(sub.attrs), "global attributes"),
            "encoding": _to_json(_clean_encoding(sub.encoding), "dataset encoding"),
            "varying_nan": varying_nan,
        }
        mask = _nan_mask(sub, names, has_time, varying_nan)
        return cls(spec, mask, _time=template)

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], mask: Any) -> Codec:
        """Rebuild a codec from :meth:`to_dict` output and its ``mask [C, H, W]`` (bool tensor or array).

        Example
        -------
        >>> import numpy as np, xarray as xr
        >>> from geodiff.io.codec import Codec
        >>> ds = xr.Dataset({"zos": (("time", "lat", "lon"), np.ones((1, 2, 3), "float32"))},
        ...                 coords={"time": [0], "lat": [0.0, 1.0], "lon": [0.0, 1.0, 2.0]})
        >>> codec = Codec.from_dataset(ds)
        >>> again = Codec.from_dict(codec.to_dict(), codec.mask)
        >>> xr.testing.assert_identical(again.decode(codec.encode(ds)[0], time=ds.time), ds)
        """
        return cls(spec, mask)

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain JSON (variables, dims, coordinates, attributes, encodings; not the mask or times)."""
        return copy.deepcopy(self._spec)

    # -------------------------------------------------------------------------------------------------------
    # layout

    @property
    def variables(self) -> list[str]:
        """Variable names in channel order."""
        return [v["name"] for v in self._vars]

    @property
    def channels(self) -> list[tuple[str, Any]]:
        """``[(variable, level value or None)]``, one entry per channel, in channel order."""
        out: list[tuple[str, Any]] = []
        for v in self._vars:
            if v["level_dim"] is None:
                out.append((v["name"], None))
            else:
                out.extend((v["name"], level.item()) for level in self._coords[v["level_dim"]].values)
        return out

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one encoded field."""
        return self._shape

    @property
    def mask(self) -> torch.Tensor:
        """Validity mask ``[C, H, W]`` bool (True = valid, False = land / missing), a copy on the CPU."""
        return self._mask.clone()

    @property
    def has_time(self) -> bool:
        """Whether the variables have a ``time`` dimension."""
        return self._time_meta is not None

    @property
    def lat(self) -> np.ndarray:
        """Latitudes ``[H]`` (degrees north, as in the dataset)."""
        return self._coords[LAT].values.copy()

    @property
    def lon(self) -> np.ndarray:
        """Longitudes ``[W]`` (degrees east, in the dataset's convention)."""
        return self._coords[LON].values.copy()

    def level_dim(self, variable: str) -> str | None:
        """Name of ``variable``'s vertical dimension (``None`` for a 2-D variable)."""
        return self._var(variable)["level_dim"]

    def levels(self, variable: str) -> np.ndarray | None:
        """Vertical coordinate values of ``variable`` (``None`` for a 2-D variable)."""
        dim = self._var(variable)["level_dim"]
        return None if dim is None else self._coords[dim].values.copy()

    def channel_slice(self, variable: str) -> slice:
        """The channels of ``variable``: ``x[:, codec.channel_slice("thetao")]``."""
        return self._var(variable)["slice"]

    def _var(self, variable: str) -> dict[str, Any]:
        for v in self._vars:
            if v["name"] == variable:
                return v
        raise GridError(f"variable {variable!r} is not in the codec; variables are {self.variables}")

    def __repr__(self) -> str:
        parts = [f"{v['name']}({v['level_dim']}={self._coords[v['level_dim']].size})" if v["level_dim"]
                 else v["name"] for v in self._vars]
        c, h, w = self.shape
        return f"Codec({', '.join(parts)}; channels={c}, lat={h}, lon={w}, valid={int(self._mask.sum())}/{c * h * w})"

    # -------------------------------------------------------------------------------------------------------
    # checks

    def check_grid(self, ds: xr.Dataset, *, atol: float = 1e-6) -> None:
        """Raise :class:`~geodiff.errors.GridError` unless ``ds`` has the codec's variables, dims and grid.

        Every variable must be present, float, with dims ``[time,] <codec dims>``; every non-time
        dimension must have the codec's size and coordinate values (within ``atol``, in the coordinate's
        units). All variables either have ``time`` or none has.

        Example
        -------
        >>> import numpy as np, xarray as xr
        >>> from geodiff.io.codec import Codec
        >>> ds = xr.Dataset({"zos": (("time", "lat", "lon"), np.ones((1, 2, 3)))},
        ...                 coords={"time": [0], "lat": [0.0, 1.0], "lon": [0.0, 1.0, 2.0]})
        >>> codec = Codec.from_dataset(ds)
        >>> codec.check_grid(ds.assign_coords(lat=[0.0, 2.0]))
        Traceback (most recent call last):
        ...
        geodiff.errors.CoordinateError: coordinate 'lat' of variable 'zos' differs from the codec's grid ...
        """
        if not isinstance(ds, xr.Dataset):
            raise GridError(f"expected an xarray.Dataset, got {type(ds).__name__}")
        with_time = None
        for v in self._vars:
            name = v["name"]
            if name not in ds.data_vars:
                raise GridError(f"variable {name!r} is missing; the codec needs {self.variables}")
            da = ds[name]
            dims = da.dims
            if dims == (TIME, *v["dims"]):
                has = True
            elif dims == v["dims"]:
                has = False
            else:
                expected = ", ".join(v["dims"])
                raise GridError(f"variable {name!r} has dims {dims}; expected (time, {expected}) or ({expected})")
            if with_time is not None and has != with_time:
                raise GridError(f"variable {name!r} differs from the other variables in having a 'time' dimension")
            with_time = has
            if da.dtype.kind != "f":
                raise GridError(f"variable {name!r} has dtype {da.dtype}; expected floating point with NaN on land")
            for dim in v["dims"]:
                expected = self._coords[dim].values
                if da.sizes[dim] != expected.size:
                    raise GridError(
                        f"dimension {dim!r} of variable {name!r} has size {da.sizes[dim]}; expected {expected.size}"
                    )
                if dim not in da.coords:
                    raise CoordinateError(f"dimension {dim!r} of variable {name!r} has no coordinate values")
                _check_values(dim, name, np.asarray(da[dim].values), expected, atol)

    # -------------------------------------------------------------------------------------------------------
    # encode / decode

    def encode(
        self, ds: xr.Dataset, *, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``ds`` -> ``(x [T, C, H, W] dtype, mask [C, H, W] bool)``, NaN (land) as 0.

        A dataset without a time dimension gives ``T = 1``. Dask-backed data are computed here. With
        ``varying_nan="raise"`` every field must have NaN exactly where the mask is False
        (:class:`~geodiff.errors.GridError` naming the variable and cell otherwise).

        Example
        -------
        >>> import numpy as np, xarray as xr
        >>> from geodiff.io.codec import Codec
        >>> ds = xr.Dataset({"zos": (("time", "lat", "lon"), [[[np.nan, 1.0], [2.0, 3.0]]])},
        ...                 coords={"time": [0], "lat": [0.0, 1.0], "lon": [0.0, 1.0]})
        >>> x, mask = Codec.from_dataset(ds).encode(ds)
        >>> x.tolist(), mask.tolist()
        ([[[[0.0, 1.0], [2.0, 3.0]]]], [[[False, True], [True, True]]])
        """
        self.check_grid(ds)
        first = ds[self._vars[0]["name"]]
        steps = first.sizes[TIME] if TIME in first.dims else 1
        np_dtype = torch.empty((), dtype=dtype).numpy().dtype
        out = np.zeros((steps, *self.shape), dtype=np_dtype)
        mask = self._mask.numpy()
        for v in self._vars:
            values = np.asarray(ds[v["name"]].values)
            if TIME not in ds[v["name"]].dims:
                values = values[None]
            if v["level_dim"] is None:
                values = values[:, None]
            valid = mask[v["slice"]]
            nan = np.isnan(values)
            if self.varying_nan == "raise":
                self._check_nan(v, nan, valid)
            out[:, v["slice"]] = np.where(nan | ~valid, 0, values)
        return torch.from_numpy(out), self.mask

    def _check_nan(self, v: dict[str, Any], nan: np.ndarray, valid: np.ndarray) -> None:
        bad = nan == valid
        if not bad.any():
            return
        t, level, i, j = (int(k) for k in np.argwhere(bad)[0])
        where = [(LAT, self._coords[LAT].values), (LON, self._coords[LON].values)]
        cell = _describe_cell(where, (i, j))
        if v["level_dim"] is not None:
            cell = f"{v['level_dim']}={_fmt(self._coords[v['level_dim']].values[level])}, {cell}"
        what = "is NaN at a valid cell" if valid[level, i, j] else "has a value at a land (masked) cell"
        raise GridError(
            f"variable {v['name']!r} {what} (time index {t}, {cell}; {int(bad.sum())} cells in all); expected "
            "NaN exactly on the codec's land mask (build the codec with varying_nan='valid_always' or "
            "'valid_ever' to mask such cells explicitly)"
        )

    def decode(self, x: torch.Tensor | np.ndarray, *, member: bool = False, time: Any = _FROM_CODEC) -> xr.Dataset:
        """Tensors -> dataset with the codec's variables, coordinates, attributes and encodings; NaN on land.

        ``x`` is ``[B, C, H, W]`` (``B`` fields along time) or ``[C, H, W]`` (one field); with
        ``member=True`` it is ``[M, B, C, H, W]`` or ``[M, C, H, W]`` and the dataset gets a leading
        ``member`` dimension (coordinate ``0..M-1``, a CF realization) and the CF form of generated values
        (:func:`geodiff.io.cf.as_cf_ensemble`: source-storage attributes dropped, coordinates without
        ``_FillValue``).

        ``time``: omitted -> the time axis of the dataset the codec was learned from (``B`` must match it),
        or no time dimension for a single field ``[C, H, W]``; ``None`` -> no time dimension (``B`` must be
        1); values (array, list, scalar, or a ``time`` DataArray, whose coordinates along time come too)
        -> that time axis, ``len(time) == B``. Given time values without attributes take the codec's time
        attributes and encoding.

        Example
        -------
        >>> import numpy as np, torch, xarray as xr
        >>> from geodiff.io.codec import Codec
        >>> ds = xr.Dataset({"zos": (("time", "lat", "lon"), [[[np.nan, 1.0], [2.0, 3.0]]])},
        ...                 coords={"time": [0], "lat": [0.0, 1.0], "lon": [0.0, 1.0]})
        >>> codec = Codec.from_dataset(ds)
        >>> codec.decode(torch.ones(1, 1, 2, 2)).zos.values.tolist()
        [[[nan, 1.0], [1.0, 1.0]]]
        >>> codec.decode(torch.ones(4, 3, 1, 2, 2), member=True, time=[10, 20, 30]).zos.shape
        (4, 3, 2, 2)
        """
        if isinstance(x, torch.Tensor):
            x = x.detach().to("cpu")
            if not x.dtype.is_floating_point or x.dtype in (torch.bfloat16, torch.float16):
                x = x.to(torch.float32)
            array = x.numpy()
        else:
            array = np.asarray(x)
        if array.ndim < 3 or array.shape[-3:] != self.shape:
            raise GridError(f"x has shape {list(array.shape)}; expected [..., {', '.join(map(str, self.shape))}]")
        leading = array.shape[:-3]
        max_leading = 2 if member else 1
        if not (max_leading - 1 <= len(leading) <= max_leading):
            expected = "[M, B, C, H, W] or [M, C, H, W]" if member else "[B, C, H, W] or [C, H, W]"
            raise GridError(f"x has shape {list(array.shape)}; expected {expected} (member={member})")
        batch = leading[-1] if len(leading) == max_leading else None
        members = leading[0] if member else 1
        time_vars = self._time_axis(time, batch)
        array = array.reshape(members, 1 if batch is None else batch, *self.shape)
        mask = self._mask.numpy()
        leading_dims = ((MEMBER,) if member else ()) + ((TIME,) if time_vars is not None else ())
        data_vars = {}
        for v in self._vars:
            block = array[:, :, v["slice"]].astype(v["dtype"], copy=True)
            block[:, :, ~mask[v["slice"]]] = np.nan
            if v["level_dim"] is None:
                block = block[:, :, 0]
            if time_vars is None:
                block = block[:, 0]
            if not member:
                block = block[0]
            data_vars[v["name"]] = xr.Variable(
                leading_dims + v["dims"], block, attrs=copy.deepcopy(v["attrs"]), encoding=copy.deepcopy(v["encoding"])
            )
        coords: dict[str, xr.Variable] = {}
        if member:
            coords[MEMBER] = member_coordinate(members)
        for name in self._coord_order:
            if time_vars is not None and name in time_vars:
                coords[name] = time_vars[name]
            elif name in self._coords and not (time_vars is not None and name == TIME):
                coords[name] = self._coords[name].copy(deep=True)
        for name, var in (time_vars or {}).items():
            coords.setdefault(name, var)
        ds = xr.Dataset(data_vars, coords=coords, attrs=copy.deepcopy(self._attrs))
        ds.encoding = copy.deepcopy(self._encoding)
        return as_cf_ensemble(ds) if member else ds

    def _time_axis(self, time: Any, batch: int | None) -> dict[str, xr.Variable] | None:
        """Coordinates along ``time`` for the decoded dataset, or ``None`` for no time dimension."""
        if time is _FROM_CODEC:
            if batch is None:
                return None
            if self._time_meta is None:
                if batch == 1:
                    return None
                raise GridError(f"x holds {batch} fields but the codec has no time axis; pass time=")
            if self._template_time is None:
                raise GridError(
                    "the codec was rebuilt from a spec and has no time values of its own; pass time= to decode"
                )
            size = self._template_time[TIME].size
            if size != batch:
                raise GridError(f"x holds {batch} fields but the codec's time axis has {size}; pass time=")
            return {k: v.copy(deep=True) for k, v in self._template_time.items()}
        if time is None:
            if batch not in (None, 1):
                raise GridError(f"time=None needs a single field, but x holds {batch} fields along time")
            return None
        meta = self._time_meta or {"attrs": {}, "encoding": {}}
        if isinstance(time, xr.DataArray):
            if time.ndim == 0:
                time = time.expand_dims(TIME) if time.name == TIME else time.expand_dims(TIME).rename(TIME)
            if time.dims != (TIME,):
                raise GridError(f"time has dims {time.dims}; expected ('time',)")
            out = {str(n): c.variable.copy(deep=True) for n, c in time.coords.items() if c.dims == (TIME,)}
            if TIME not in out:
                out[TIME] = time.variable.copy(deep=True)
            for var in out.values():
                var.encoding = _clean_encoding(var.encoding)
            index = out[TIME]
            if not index.attrs:
                index.attrs = copy.deepcopy(meta["attrs"])
            if not index.encoding:
                index.encoding = copy.deepcopy(meta["encoding"])
        else:
            values = np.asarray(time)
            if values.ndim == 0:
                values = values.reshape(1)
            if values.ndim != 1:
                raise GridError(f"time has shape {list(values.shape)}; expected 1-D values")
            index = xr.Variable(
                (TIME,), values, attrs=copy.deepcopy(meta["attrs"]), encoding=copy.deepcopy(meta["encoding"])
            )
            out = {TIME: index}
        expected = 1 if batch is None else batch
        if index.size != expected:
            raise GridError(f"time has {index.size} values but x holds {expected} fields along time")
        return out


# ---------------------------------------------------------------------------------------------------------------


def _check_layout(name: str, da: xr.DataArray, *, with_time: bool) -> tuple[Hashable, ...]:
    """The non-time dims of variable ``name`` after checking its layout and dtype."""
    dims = da.dims
    expected = _EXPECTED_DIMS if with_time else "(<level>, lat, lon) or (lat, lon)"
    rest = dims
    if with_time:
        if not dims or dims[0] != TIME:
            raise GridError(f"variable {name!r} has dims {dims}; expected {expected}")
        rest = dims[1:]
    if len(rest) not in (2, 3) or rest[-2:] != (LAT, LON) or (len(rest) == 3 and rest[0] in (TIME, LAT, LON, MEMBER)):
        raise GridError(f"variable {name!r} has dims {dims}; expected {expected}")
    if len(rest) == 3 and not isinstance(rest[0], str):
        raise GridError(f"variable {name!r} has a vertical dimension {rest[0]!r} that is not a string")
    if da.dtype.kind != "f":
        raise GridError(f"variable {name!r} has dtype {da.dtype}; expected floating point with NaN on land")
    return rest


def _check_index(ds: xr.Dataset, dim: Hashable, name: str) -> None:
    if dim not in ds.coords or ds[dim].dims != (dim,):
        raise CoordinateError(
            f"dimension {dim!r} of variable {name!r} has no coordinate values; expected a 1-D coordinate"
        )


def _check_values(dim: Hashable, name: str, values: np.ndarray, expected: np.ndarray, atol: float) -> None:
    if values.dtype.kind in "biuf" and expected.dtype.kind in "biuf":
        diff = np.abs(values.astype("float64") - expected.astype("float64"))
        bad = ~(diff <= atol)
    else:
        bad = values != expected
    if np.any(bad):
        k = int(np.argmax(bad))
        raise CoordinateError(
            f"coordinate {dim!r} of variable {name!r} differs from the codec's grid at index {k}: "
            f"{_fmt(values[k])}, expected {_fmt(expected[k])} ({int(np.sum(bad))} values differ; atol={atol})"
        )


def _nan_mask(ds: xr.Dataset, names: list[str], has_time: bool, varying_nan: str) -> torch.Tensor:
    """Validity mask ``[C, H, W]`` from the NaN pattern of every variable (one lazy pass with dask)."""
    import dask

    pending = []
    for name in names:
        nan = ds[name].isnull()
        if has_time:
            pending.append((nan.any(TIME), nan.all(TIME)))
        else:
            pending.append((nan, nan))
    (computed,) = dask.compute(pending)
    blocks = []
    for name, (nan_any, nan_all) in zip(names, computed):
        nan_any, nan_all = np.asarray(nan_any.values), np.asarray(nan_all.values)
        if varying_nan == "raise" and np.any(nan_any != nan_all):
            diff = nan_any != nan_all
            index = np.argwhere(diff)[0]
            dims = ds[name].dims[1:] if has_time else ds[name].dims
            cell = _describe_cell([(str(d), ds[d].values) for d in dims], index)
            raise GridError(
                f"variable {name!r} has a NaN (land) pattern that changes over time at {int(diff.sum())} cells "
                f"(first at {cell}); expected a fixed land mask. Pass varying_nan='valid_always' (mask cells that "
                "are ever NaN) or 'valid_ever' (mask cells that are always NaN) to handle it explicitly"
            )
        valid = ~nan_any if varying_nan == "valid_always" else ~nan_all
        blocks.append(valid.reshape(-1, *valid.shape[-2:]))
    return torch.from_numpy(np.concatenate(blocks, axis=0).astype(bool))
