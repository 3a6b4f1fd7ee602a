"""Normalisation statistics per variable and level, kept as a small ``xr.Dataset``.

``normalised = (value - mean) / std``. Statistics are either *fitted* (``Normalizer.fit``: mean and standard
deviation over time, lat, lon and member of each variable at each level, NaN skipped, computed lazily with dask
so data larger than memory stream through) or *affine* (``Normalizer.affine``: a fixed ``(offset, scale)`` per
variable, the same at every level, e.g. ReconMOST's ``x = 2 (T + 5) / 45 - 1`` is ``offset=17.5, scale=22.5``;
``Normalizer.from_range({"thetao": (-5, 40)})`` builds it from the range mapped onto ``[-1, 1]``).

The statistics dataset has one data variable per field variable, dims ``("statistic",)`` or
``("statistic", <level>)``, with ``statistic = ["mean", "std"]``; attribute ``kind`` is ``fitted`` or
``affine`` and ``units`` records the field's units. It is saved as JSON or netCDF (never pickled).

Example
-------
>>> import numpy as np, xarray as xr
>>> from geodiff.io.normalize import Normalizer
>>> ds = xr.Dataset({"tos": (("time", "lat", "lon"), np.arange(8.0).reshape(2, 2, 2), {"units": "degC"})})
>>> norm = Normalizer.fit(ds)
>>> float(norm.mean["tos"]), round(float(norm.std["tos"]), 4)
(3.5, 2.2913)
>>> xr.testing.assert_allclose(norm.denormalize(norm.normalize(ds)), ds)
>>> recon = Normalizer.from_range({"thetao": (-5.0, 40.0)})  # ReconMOST: x = 2 (T + 5) / 45 - 1
>>> recon.stats["thetao"].values.tolist()
[17.5, 22.5]
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import xarray as xr

from geodiff.errors import ConfigError, CoordinateError, DataError, GridError
from geodiff.io.encoding import write_netcdf
from geodiff.io.spec import array_to_json as _array_to_json
from geodiff.io.spec import from_json as _from_json
from geodiff.io.spec import to_json as _to_json
from geodiff.io.spec import variable_from_json as _variable_from_json
from geodiff.io.spec import variable_names as _names

if TYPE_CHECKING:
    from geodiff.io.codec import Codec

__all__ = ["Normalizer", "NORMALIZER_FORMAT", "NORMALIZER_VERSION", "NORMALIZED_ATTR"]

NORMALIZER_FORMAT = "geodiff.normalizer"
NORMALIZER_VERSION = 1
STATISTIC = "statistic"
KINDS = ("fitted", "affine")
#: attribute that ``normalize`` adds to each variable (and ``denormalize`` removes) as a record
NORMALIZED_ATTR = "geodiff_normalized"
_HORIZONTAL = ("member", "time", "lat", "lon")  # dims averaged over by ``fit``
_LEVEL_RTOL = 1e-6  # level coordinates match when equal to float32 rounding


class FieldStatistics(ABC):
    """What every normaliser shares: :meth:`normalize` and :meth:`denormalize` of Datasets / named DataArrays,
    variable by variable through the subclass's ``_apply_one(name, da, inverse)``."""

    def normalize(self, data: xr.Dataset | xr.DataArray) -> xr.Dataset | xr.DataArray:
        """Normalised values of every data variable (lazy for dask data; dtype, coords, attrs kept).

        Every data variable needs statistics (:class:`~geodiff.errors.GridError` naming it otherwise);
        attribute ``geodiff_normalized`` records the map and is removed again by :meth:`denormalize`.
        """
        return apply_per_variable(data, lambda name, da: self._apply_one(name, da, False))

    def denormalize(self, data: xr.Dataset | xr.DataArray) -> xr.Dataset | xr.DataArray:
        """Physical values of every data variable (the inverse of :meth:`normalize`)."""
        return apply_per_variable(data, lambda name, da: self._apply_one(name, da, True))

    @abstractmethod
    def _apply_one(self, name: str, da: xr.DataArray, inverse: bool) -> xr.DataArray:
        """``da`` of variable ``name`` normalised (``inverse=False``) or back in physical units."""


class Normalizer(FieldStatistics):
    """Per-variable (per-level) ``mean`` / ``std``: ``normalize(ds) = (ds - mean) / std`` and back.

    Build it with :meth:`fit`, :meth:`affine`, :meth:`from_range`, :meth:`load` or from a statistics
    dataset (module docstring for its layout). Raises :class:`~geodiff.errors.DataError` naming the
    variable and level when a standard deviation is zero or a statistic is not finite.
    """

    def __init__(self, stats: xr.Dataset):
        if not isinstance(stats, xr.Dataset):
            raise ConfigError(f"Normalizer expects a statistics xarray.Dataset, got {type(stats).__name__}")
        if STATISTIC not in stats.coords or stats[STATISTIC].values.tolist() != ["mean", "std"]:
            raise ConfigError(f"the statistics dataset needs a coordinate {STATISTIC!r} = ['mean', 'std']")
        if not stats.data_vars:
            raise ConfigError("the statistics dataset has no variables")
        for name, stat in stats.data_vars.items():
            if not isinstance(name, str):
                raise ConfigError(f"statistics variable name {name!r} is not a string")
            if stat.dims[:1] != (STATISTIC,) or len(stat.dims) > 2:
                raise ConfigError(f"statistics of {name!r} have dims {stat.dims}; expected ('statistic'[, <level>])")
            if stat.attrs.get("kind") not in KINDS:
                raise ConfigError(f"statistics of {name!r} need attribute 'kind' in {KINDS}")
            if len(stat.dims) == 2:
                level = stat.dims[1]
                if level not in stats.coords or stats[level].dims != (level,):
                    raise ConfigError(f"statistics of {name!r} have no coordinate values for {level!r}")
            values = np.asarray(stat.values, dtype="float64").reshape(2, -1)
            for k in range(values.shape[1]):
                where = f"variable {name!r}"
                if len(stat.dims) == 2:
                    where += f" at {stat.dims[1]}={stats[stat.dims[1]].values[k].item()!r}"
                mean, std = values[:, k]
                if not (math.isfinite(mean) and math.isfinite(std)):
                    raise DataError(f"{where} has non-finite statistics (mean={mean}, std={std}); no valid values?")
                if std <= 0:
                    raise DataError(
                        f"{where} has standard deviation {std} (a constant field); normalisation would divide by "
                        "zero. Drop that variable/level or give it fixed statistics with Normalizer.affine"
                    )
        self._stats = stats.copy(deep=True)

    # -------------------------------------------------------------------------------------------------------
    # construction

    @classmethod
    def fit(
        cls, ds: xr.Dataset, variables: str | Sequence[str] | None = None, *, progress: bool = False
    ) -> Normalizer:
        """Fit mean and std (ddof 0, NaN skipped) of each variable per level over time, lat, lon (and member).

        Dask-backed data stay lazy until one ``dask.compute`` of all statistics (``progress=True`` shows a
        tqdm bar), so data larger than memory stream through chunk by chunk. Sums run in float64.

        Example
        -------
        >>> import numpy as np, xarray as xr
        >>> from geodiff.io.normalize import Normalizer
        >>> ds = xr.Dataset({"so": (("time", "depth", "lat", "lon"), np.ones((2, 3, 2, 2)) * [[[[1]], [[2]], [[4]]]])},
        ...                 coords={"depth": [5.0, 10.0, 20.0]})
        >>> ds["so"][0] += 1.0
        >>> Normalizer.fit(ds.chunk({"time": 1})).mean["so"].values.tolist()
        [1.5, 2.5, 4.5]
        """
        import dask

        if not isinstance(ds, xr.Dataset):
            raise GridError(f"Normalizer.fit expects an xarray.Dataset, got {type(ds).__name__}")
        names = _names(ds, variables)
        if not names:
            raise GridError("the dataset has no data variables to fit")
        pending, levels = [], []
        for name in names:
            if name not in ds.data_vars:
                raise GridError(f"variable {name!r} is not a data variable of the dataset; found {list(ds.data_vars)}")
            da = ds[name]
            if da.dtype.kind not in "biuf":
                raise GridError(f"variable {name!r} has dtype {da.dtype}; expected numbers")
            level = level_dimension(name, da)
            if level is not None and (level not in ds.coords or ds[level].dims != (level,)):
                raise CoordinateError(f"dimension {level!r} of variable {name!r} has no coordinate values")
            reduce = [d for d in da.dims if d != level]
            values = da.astype("float64").reset_coords(drop=True)
            pending.append((values.mean(reduce, skipna=True), values.std(reduce, skipna=True)))
            levels.append(level)
        if progress:
            from tqdm.dask import TqdmCallback

            with TqdmCallback(desc="normaliser statistics"):
                (computed,) = dask.compute(pending)
        else:
            (computed,) = dask.compute(pending)
        data_vars = {}
        for name, level, (mean, std) in zip(names, levels, computed):
            attrs = {"kind": "fitted"}
            if "units" in ds[name].attrs:
                attrs["units"] = ds[name].attrs["units"]
            dims = (STATISTIC,) if level is None else (STATISTIC, level)
            coords = {} if level is None else {level: xr.Variable((level,), ds[level].values, ds[level].attrs)}
            stacked = np.stack([np.asarray(mean.values), np.asarray(std.values)])
            data_vars[name] = xr.DataArray(stacked, dims=dims, coords=coords, attrs=attrs)
        return cls(_assemble(data_vars))

    @classmethod
    def affine(cls, maps: Mapping[str, tuple[float, float]]) -> Normalizer:
        """Fixed maps ``normalised = (value - offset) / scale`` per variable (all levels alike).

        Example
        -------
        >>> from geodiff.io.normalize import Normalizer
        >>> Normalizer.affine({"thetao": (17.5, 22.5)}).std["thetao"].item()
        22.5
        """
        data_vars = {}
        if not maps:
            raise ConfigError("Normalizer.affine needs at least one variable -> (offset, scale)")
        for name, pair in maps.items():
            try:
                offset, scale = (float(v) for v in pair)
            except (TypeError, ValueError) as err:
                raise ConfigError(f"affine map of {name!r} must be (offset, scale) numbers, got {pair!r}") from err
            if not (math.isfinite(offset) and math.isfinite(scale)) or scale <= 0:
                raise ConfigError(f"affine map of {name!r} needs a finite offset and a scale > 0, got {pair!r}")
            data_vars[name] = xr.DataArray(np.array([offset, scale]), dims=(STATISTIC,), attrs={"kind": "affine"})
        return cls(_assemble(data_vars))

    @classmethod
    def from_range(cls, ranges: Mapping[str, tuple[float, float]]) -> Normalizer:
        """Affine maps sending ``[low, high]`` of each variable onto ``[-1, 1]``.

        Example
        -------
        >>> from geodiff.io.normalize import Normalizer
        >>> Normalizer.from_range({"thetao": (-5.0, 40.0)}).stats["thetao"].values.tolist()
        [17.5, 22.5]
        """
        maps = {}
        for name, pair in ranges.items():
            try:
                low, high = (float(v) for v in pair)
            except (TypeError, ValueError) as err:
                raise ConfigError(f"range of {name!r} must be (low, high) numbers, got {pair!r}") from err
            if not high > low:
                raise ConfigError(f"range of {name!r} must have high > low, got {pair!r}")
            maps[name] = ((low + high) / 2, (high - low) / 2)
        return cls.affine(maps)

    # -------------------------------------------------------------------------------------------------------
    # access

    @property
    def stats(self) -> xr.Dataset:
        """The statistics dataset (a copy): variables with dims ``("statistic"[, <level>])``."""
        return self._stats.copy(deep=True)

    @property
    def mean(self) -> xr.Dataset:
        """Means per variable (and level)."""
        return self._stats.sel({STATISTIC: "mean"}, drop=True)

    @property
    def std(self) -> xr.Dataset:
        """Standard deviations per variable (and level)."""
        return self._stats.sel({STATISTIC: "std"}, drop=True)

    @property
    def variables(self) -> list[str]:
        """Names of the variables with statistics."""
        return [str(name) for name in self._stats.data_vars]

    def __repr__(self) -> str:
        parts = []
        for name, stat in self._stats.data_vars.items():
            level = f"[{stat.dims[1]}={stat.shape[1]}]" if stat.ndim == 2 else ""
            parts.append(f"{name}{level}:{stat.attrs['kind']}")
        return f"Normalizer({', '.join(parts)})"

    def _per_level(self, name: str, level_dim: str | None, levels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """``(mean [L], std [L])`` float64 of variable ``name`` at the given level values (``L = 1`` if none)."""
        if name not in self._stats.data_vars:
            raise GridError(f"variable {name!r} has no normalisation statistics; the normalizer has {self.variables}")
        stat = self._stats[name]
        count = 1 if levels is None else len(levels)
        if stat.ndim == 1:
            if stat.attrs["kind"] == "fitted" and level_dim is not None:
                raise GridError(
                    f"statistics of {name!r} were fitted without levels, but the data have dimension {level_dim!r}"
                )
            mean, std = np.asarray(stat.values, dtype="float64")
            return np.full(count, mean), np.full(count, std)
        stat_dim = stat.dims[1]
        if level_dim is None:
            raise GridError(f"statistics of {name!r} are per {stat_dim!r} level, but the data have no {stat_dim!r}")
        if level_dim != stat_dim:
            raise GridError(f"variable {name!r} has level dimension {level_dim!r}; its statistics use {stat_dim!r}")
        expected = np.asarray(self._stats[stat_dim].values)
        assert levels is not None
        index = _match_levels(name, stat_dim, np.asarray(levels), expected)
        values = np.asarray(stat.values, dtype="float64")[:, index]
        return values[0], values[1]

    def tensors(self, codec: Codec) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean [C], std [C])`` float32 in ``codec``'s channel order.

        Example
        -------
        >>> import numpy as np, xarray as xr
        >>> from geodiff.io.codec import Codec
        >>> from geodiff.io.normalize import Normalizer
        >>> ds = xr.Dataset({"thetao": (("time", "depth", "lat", "lon"), np.ones((1, 2, 2, 2)))},
        ...                 coords={"time": [0], "depth": [5.0, 10.0], "lat": [0.0, 1.0], "lon": [0.0, 1.0]})
        >>> mean, std = Normalizer.from_range({"thetao": (-5.0, 40.0)}).tensors(Codec.from_dataset(ds))
        >>> mean.tolist(), std.tolist()
        ([17.5, 17.5], [22.5, 22.5])
        """
        means, stds = [], []
        for name in codec.variables:
            mean, std = self._per_level(name, codec.level_dim(name), codec.levels(name))
            means.append(mean)
            stds.append(std)
        return (
            torch.from_numpy(np.concatenate(means).astype("float32")),
            torch.from_numpy(np.concatenate(stds).astype("float32")),
        )

    kind = "channel"
    #: values beyond this many standard deviations are far outside the training data (see ``reconstruct``)
    bound = 10.0

    def cell_statistics(self, codec: Codec, time: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """``(mean [C, H, W], std [C, H, W])`` float64: :meth:`tensors` broadcast over the grid (``time`` unused).

        The same call as :meth:`~geodiff.io.anomaly.AnomalyNormalizer.cell_statistics`, so pipelines treat both
        normalisers alike.
        """
        mean, std = (t.numpy().astype(np.float64)[:, None, None] for t in self.tensors(codec))
        shape = codec.shape
        return np.broadcast_to(mean, shape).copy(), np.broadcast_to(std, shape).copy()

    def check(self, codec: Codec) -> None:
        """GridError / CoordinateError unless every codec variable and level has statistics."""
        self.tensors(codec)

    # -------------------------------------------------------------------------------------------------------
    # apply

    def _apply_one(self, name: str, da: xr.DataArray, inverse: bool) -> xr.DataArray:
        if da.dtype.kind != "f":
            raise GridError(f"variable {name!r} has dtype {da.dtype}; expected floating point")
        marked = NORMALIZED_ATTR in da.attrs
        if not inverse and marked:
            raise GridError(f"variable {name!r} is already normalised (attribute {NORMALIZED_ATTR!r})")
        level_dim = level_dimension(name, da)
        stat = self._stats[name] if name in self._stats.data_vars else None
        shape: list[int] = [1] * da.ndim
        if stat is not None and stat.ndim == 1:  # one (offset, scale) for all levels
            mean, std = self._per_level(name, level_dim, None)
        elif level_dim is not None:
            if level_dim not in da.coords:
                raise CoordinateError(f"dimension {level_dim!r} of variable {name!r} has no coordinate values")
            mean, std = self._per_level(name, level_dim, da[level_dim].values)
            shape[da.get_axis_num(level_dim)] = mean.size
        elif stat is not None and stat.ndim == 2 and stat.dims[1] in da.coords and da[stat.dims[1]].ndim == 0:
            dim = stat.dims[1]  # one level selected: a scalar level coordinate picks the statistics
            mean, std = self._per_level(name, dim, da[dim].values.reshape(1))
        else:
            mean, std = self._per_level(name, None, None)
        mean = mean.astype(da.dtype).reshape(shape) if shape else mean.astype(da.dtype)[0]
        std = std.astype(da.dtype).reshape(shape) if shape else std.astype(da.dtype)[0]
        values = da.data * std + mean if inverse else (da.data - mean) / std
        return with_record(da.copy(deep=False, data=values), da, inverse,
                           "(value - mean) / std with geodiff normaliser statistics")

    # -------------------------------------------------------------------------------------------------------
    # storage

    def to_dict(self) -> dict[str, Any]:
        """The statistics as plain JSON (exact values)."""
        stats = self._stats
        return {
            "format": NORMALIZER_FORMAT,
            "format_version": NORMALIZER_VERSION,
            "attrs": _to_json(dict(stats.attrs), "normaliser attributes"),
            "coords": [_to_json_variable(str(n), c.variable) for n, c in stats.coords.items()],
            "variables": [_to_json_variable(str(n), v.variable) for n, v in stats.data_vars.items()],
        }

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> Normalizer:
        """Rebuild from :meth:`to_dict` output.

        Example
        -------
        >>> from geodiff.io.normalize import Normalizer
        >>> norm = Normalizer.affine({"tos": (15.0, 10.0)})
        >>> Normalizer.from_dict(norm.to_dict()).stats.identical(norm.stats)
        True
        """
        if not isinstance(spec, Mapping) or spec.get("format") != NORMALIZER_FORMAT:
            raise ConfigError(f"a normaliser spec needs 'format': {NORMALIZER_FORMAT!r}")
        version = spec.get("format_version")
        if not isinstance(version, int) or version > NORMALIZER_VERSION:
            raise ConfigError(f"normaliser 'format_version' {version!r} is not supported (up to {NORMALIZER_VERSION})")
        try:
            coords = {c["name"]: _variable_from_json(c) for c in spec["coords"]}
            data_vars = {v["name"]: _variable_from_json(v) for v in spec["variables"]}
            stats = xr.Dataset(data_vars, coords=coords, attrs=_from_json(spec["attrs"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"normaliser spec is malformed: {type(err).__name__}: {err}") from err
        return cls(stats)

    def save(self, path: str | Path) -> None:
        """Write the statistics to ``path``: ``.json`` (plain JSON) or ``.nc`` (netCDF)."""
        path = Path(path)
        if path.suffix == ".json":
            path.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True, allow_nan=False))
        elif path.suffix == ".nc":
            write_netcdf(self._stats, path)
        else:
            raise ConfigError(f"normaliser file {str(path)!r} must end in .json or .nc")

    @classmethod
    def load(cls, path: str | Path) -> Normalizer:
        """Read statistics written by :meth:`save` (``.json`` or ``.nc``).

        Example
        -------
        >>> import tempfile, pathlib
        >>> from geodiff.io.normalize import Normalizer
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "stats.json"
        >>> Normalizer.affine({"tos": (15.0, 10.0)}).save(path)
        >>> Normalizer.load(path)
        Normalizer(tos:affine)
        """
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"normaliser file {str(path)!r} does not exist")
        if path.suffix == ".json":
            try:
                spec = json.loads(path.read_text())
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise ConfigError(f"normaliser file {str(path)!r} is not valid JSON: {err}") from err
            return cls.from_dict(spec)
        if path.suffix == ".nc":
            with xr.open_dataset(path, engine="netcdf4") as stats:
                stats = stats.load()
            for var in stats.variables.values():
                var.encoding = {}
            return cls(stats)
        raise ConfigError(f"normaliser file {str(path)!r} must end in .json or .nc")


# ---------------------------------------------------------------------------------------------------------------


def _assemble(data_vars: Mapping[str, xr.DataArray]) -> xr.Dataset:
    stats = xr.Dataset(dict(data_vars), attrs={"title": "geodiff normalisation statistics",
                                               "convention": "normalised = (value - mean) / std"})
    return stats.assign_coords({STATISTIC: np.array(["mean", "std"])})


def with_record(out: xr.DataArray, source: xr.DataArray, inverse: bool, note: str) -> xr.DataArray:
    """``out`` with ``source``'s attributes and the :data:`NORMALIZED_ATTR` record: ``note`` after normalising,
    removed after de-normalising."""
    out.attrs = dict(source.attrs)
    if inverse:
        out.attrs.pop(NORMALIZED_ATTR, None)
    else:
        out.attrs[NORMALIZED_ATTR] = note
    return out


def apply_per_variable(data: xr.Dataset | xr.DataArray,
                       apply_one: Callable[[str, xr.DataArray], xr.DataArray]) -> xr.Dataset | xr.DataArray:
    """``apply_one(name, da)`` on a named DataArray or on every data variable of a Dataset (coords and attributes of
    the Dataset kept; each variable's attributes as ``apply_one`` returns them)."""
    if isinstance(data, xr.DataArray):
        if not isinstance(data.name, str):
            raise GridError("a DataArray to (de)normalise needs the variable's name (da.name)")
        return apply_one(data.name, data)
    if not isinstance(data, xr.Dataset):
        raise GridError(f"expected an xarray Dataset or DataArray, got {type(data).__name__}")
    new = {name: apply_one(str(name), da) for name, da in data.data_vars.items()}
    out = data.copy(deep=False, data={name: da.data for name, da in new.items()})
    for name, da in new.items():
        out[name].attrs = da.attrs
    return out


def level_dimension(name: str, da: xr.DataArray) -> str | None:
    """The vertical dimension of ``da`` (the one dim besides member, time, lat, lon), or None."""
    others = [d for d in da.dims if d not in _HORIZONTAL]
    if len(others) > 1:
        raise GridError(
            f"variable {name!r} has dims {da.dims}; expected at most one level dimension besides {_HORIZONTAL}"
        )
    return None if not others else str(others[0])


def _match_levels(name: str, dim: str, levels: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Index into ``expected`` of each value of ``levels`` (equal up to float32 rounding), or CoordinateError."""
    index = []
    for value in levels:
        if expected.dtype.kind in "biuf" and levels.dtype.kind in "biuf":
            close = np.isclose(expected.astype("float64"), float(value), rtol=_LEVEL_RTOL, atol=0)
        else:
            close = expected == value
        hits = np.flatnonzero(close)
        if hits.size != 1:
            raise CoordinateError(
                f"{dim}={value.item() if isinstance(value, np.generic) else value!r} of variable {name!r} has no "
                f"normalisation statistics; the statistics have {dim} = {expected.tolist()}"
            )
        index.append(int(hits[0]))
    return np.asarray(index, dtype=int)


def _to_json_variable(name: str, variable: xr.Variable) -> dict[str, Any]:
    return {
        "name": name,
        "dims": list(variable.dims),
        "data": _array_to_json(np.asarray(variable.values), f"normaliser variable {name!r}"),
        "attrs": _to_json(dict(variable.attrs), f"attributes of normaliser variable {name!r}"),
        "encoding": {},
    }
