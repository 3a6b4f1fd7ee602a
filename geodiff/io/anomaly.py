"""Per-cell anomaly statistics: ``normalised = (value - climatology[period(t), cell]) / scale[cell]``.

A prior trained on fields normalised per channel has to learn the mean state (a meridional gradient of 5000 m,
the seasonal cycle of SST) before it can learn anything about variability. :class:`AnomalyNormalizer` removes a
per-cell climatology, optionally one per calendar month or season, and divides by a per-cell standard deviation
of the anomalies (pooled over periods, smoothed over neighbouring cells and floored), so the network models
standardised variability only. The statistics are fitted lazily (dask) on the training period and stored with
the model bundle; observation operators and decoding use them cell by cell.

Storage: JSON with each array as base64 of its little-endian float32 bytes (``dtype``, ``shape``), exact for the
stored values, which are the ones used.

Example
-------
>>> import numpy as np, pandas as pd, xarray as xr
>>> from geodiff.io.anomaly import AnomalyNormalizer
>>> time = pd.date_range("2000-01-01", periods=24, freq="MS")
>>> season = np.cos(2 * np.pi * (time.month.values - 1) / 12)[:, None, None]
>>> noise = np.random.default_rng(0).normal(size=(24, 3, 4))
>>> ds = xr.Dataset({"tos": (("time", "lat", "lon"), 15 + 5 * season + noise, {"units": "degC"})},
...                 coords={"time": time, "lat": [0.0, 1.0, 2.0], "lon": [0.0, 1.0, 2.0, 3.0]})
>>> norm = AnomalyNormalizer.fit(ds, climatology="month")
>>> norm
AnomalyNormalizer(tos: per cell, climatology by month)
>>> anomalies = norm.normalize(ds)
>>> round(float(abs(anomalies.tos.mean("time")).max()), 6)  # each month's mean is removed
0.0
>>> xr.testing.assert_allclose(norm.denormalize(anomalies), ds, atol=1e-5)
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from geodiff.errors import ConfigError, CoordinateError, DataError, GridError
from geodiff.io.normalize import NORMALIZED_ATTR, FieldStatistics, level_dimension, with_record

if TYPE_CHECKING:
    from geodiff.io.codec import Codec

__all__ = ["AnomalyNormalizer", "ANOMALY_FORMAT", "ANOMALY_BOUND", "climatology_periods"]

ANOMALY_FORMAT = "geodiff.anomaly_normalizer"
ANOMALY_VERSION = 1
PERIODS = {"none": 1, "month": 12, "season": 4}
#: anomalies beyond this many of a cell's standard deviations are refused as observations (wrong units, fill
#: values) and bound the samples: per-cell stds are small, and a warmer or shifted period moves values further
ANOMALY_BOUND = 40.0
_TOLERANCE = 1e-6  # coordinates match when equal to float32 rounding (degrees, metres)

Climatology = Literal["auto", "none", "month", "season"]


def _period_of(months: np.ndarray, climatology: str) -> np.ndarray:
    """Period index (0-based) of calendar months 1..12: month -> month - 1, season DJF=0 MAM=1 JJA=2 SON=3."""
    months = np.asarray(months, dtype=int)
    if climatology == "month":
        return months - 1
    if climatology == "season":
        return (months % 12) // 3
    return np.zeros_like(months)


def _months(time: Any, where: str) -> np.ndarray:
    """Calendar months (1..12) of datetime64 or cftime values, or CoordinateError naming ``where``."""
    values = np.atleast_1d(np.asarray(time))
    if values.dtype.kind == "M":
        return pd.DatetimeIndex(values.astype("datetime64[ns]")).month.to_numpy()
    if values.dtype.kind == "O" and all(hasattr(v, "month") for v in values.ravel()):
        return np.asarray([v.month for v in values.ravel()], dtype=int).reshape(values.shape)
    raise CoordinateError(f"{where} must be datetimes (datetime64 or cftime) to pick the climatology period; got "
                          f"dtype {values.dtype}")


def climatology_periods(time: Any) -> Literal["none", "month"]:
    """The climatology a series supports: ``"month"`` when its times are datetimes spaced about a month apart and
    cover every calendar month at least twice, else ``"none"`` (annual or irregular series, or too short).

    >>> import pandas as pd
    >>> climatology_periods(pd.date_range("2000-01-01", periods=36, freq="MS").values)
    'month'
    >>> climatology_periods(pd.date_range("2000-01-01", periods=30, freq="YS").values)
    'none'
    """
    try:
        months = _months(time, "time")
    except CoordinateError:
        return "none"
    if months.size < 24:
        return "none"
    values = np.asarray(time)
    if values.dtype.kind == "M":
        days = np.diff(values.astype("datetime64[s]").astype("int64")) / 86400.0
    else:
        days = np.asarray([(b - a).total_seconds() / 86400.0 for a, b in zip(values[:-1], values[1:])])
    counts = np.bincount(months, minlength=13)[1:]
    return "month" if np.median(days) < 40 and counts.min() >= 2 else "none"


def _encode_array(array: np.ndarray) -> dict[str, Any]:
    data = np.ascontiguousarray(array, dtype="<f4")
    return {"dtype": "<f4", "shape": list(data.shape), "base64": base64.b64encode(data.tobytes()).decode("ascii")}


def _decode_array(spec: Mapping[str, Any]) -> np.ndarray:
    if spec.get("dtype") != "<f4":
        raise ConfigError(f"anomaly statistics array has dtype {spec.get('dtype')!r}; expected '<f4'")
    raw = base64.b64decode(spec["base64"], validate=True)
    shape = tuple(int(n) for n in spec["shape"])
    if len(raw) != 4 * int(np.prod(shape, dtype=np.int64)):
        raise ConfigError(f"anomaly statistics array of shape {list(shape)} has {len(raw)} bytes")
    return np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)


def _smooth(field: np.ndarray, valid: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of ``field [H, W]`` over ``valid`` cells only (normalised convolution; ``sigma`` in cells)."""
    from scipy.ndimage import gaussian_filter

    if sigma <= 0:
        return field
    weight = gaussian_filter(valid.astype(np.float64), sigma, mode="nearest")
    total = gaussian_filter(np.where(valid, field, 0.0), sigma, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(valid, total / weight, field)


class AnomalyNormalizer(FieldStatistics):
    """Per-cell climatology and anomaly scale of each variable (and level); module docstring for the maths.

    Build it with :meth:`fit` (or :meth:`from_dict` / :meth:`load`). ``stats`` holds, per variable ``v``,
    ``v`` with dims ``("statistic", "period", [level,] "lat", "lon")``, ``statistic = ["mean", "std"]``
    (the std is the same for every period). Attribute ``climatology`` is ``"none"``, ``"month"`` or ``"season"``.
    """

    kind = "anomaly"
    bound = ANOMALY_BOUND

    def __init__(self, stats: xr.Dataset):
        if not isinstance(stats, xr.Dataset) or not stats.data_vars:
            raise ConfigError("AnomalyNormalizer expects a statistics xarray.Dataset with one variable per field")
        climatology = stats.attrs.get("climatology")
        if climatology not in PERIODS:
            raise ConfigError(f"anomaly statistics need attribute 'climatology' in {list(PERIODS)}, got {climatology!r}")
        for name, stat in stats.data_vars.items():
            if stat.dims[:2] != ("statistic", "period") or stat.dims[-2:] != ("lat", "lon") or stat.ndim > 5:
                raise ConfigError(f"anomaly statistics of {name!r} have dims {stat.dims}; expected "
                                  "('statistic', 'period'[, <level>], 'lat', 'lon')")
            if stat.sizes["period"] != PERIODS[climatology]:
                raise ConfigError(f"anomaly statistics of {name!r} have {stat.sizes['period']} periods; climatology "
                                  f"{climatology!r} has {PERIODS[climatology]}")
            std = stat.isel(statistic=1).values
            if not np.all(np.isfinite(stat.values)) or not np.all(std > 0):
                raise DataError(f"anomaly statistics of {name!r} must be finite with std > 0 everywhere")
        self._stats = stats.copy(deep=True)

    # -------------------------------------------------------------------------------------------------------
    # construction

    @classmethod
    def fit(
        cls,
        ds: xr.Dataset,
        variables: str | Sequence[str] | None = None,
        *,
        climatology: Climatology = "auto",
        smooth: float = 1.0,
        floor: float = 0.05,
        progress: bool = False,
    ) -> AnomalyNormalizer:
        """Fit the per-cell climatology (by ``climatology`` period) and anomaly std of ``ds`` (dask stays lazy).

        Parameters
        ----------
        ds: canonical dataset ``(time, [level,] lat, lon)``, NaN on land; the training period only.
        climatology: ``"month"``, ``"season"``, ``"none"`` (one mean per cell) or ``"auto"``
            (:func:`climatology_periods`: monthly for monthly series of two years or more).
        smooth: Gaussian smoothing of the anomaly std over valid neighbours, in grid cells (0: none).
        floor: the std of a cell is at least ``floor`` times the median std of its level (a nearly constant cell
            must not blow up the normalised values).

        Cells with fewer than two valid times are land: mean 0, std 1 (they stay NaN in the data).
        """
        import dask

        if not isinstance(ds, xr.Dataset):
            raise GridError(f"AnomalyNormalizer.fit expects an xarray.Dataset, got {type(ds).__name__}")
        if "time" not in ds.dims or ds.sizes["time"] < 2:
            raise DataError("AnomalyNormalizer.fit needs a 'time' dimension with at least two times")
        names = [variables] if isinstance(variables, str) else list(variables or ds.data_vars)
        if climatology == "auto":
            climatology = climatology_periods(ds["time"].values)
        if climatology not in PERIODS:
            raise ConfigError(f"climatology must be one of 'auto', {list(PERIODS)}; got {climatology!r}")
        if not (smooth >= 0 and 0 <= floor < 1):
            raise ConfigError(f"need smooth >= 0 and 0 <= floor < 1, got smooth={smooth}, floor={floor}")
        periods = PERIODS[climatology]
        index = _period_of(_months(ds["time"].values, "coordinate 'time'"), climatology) if periods > 1 else \
            np.zeros(ds.sizes["time"], dtype=int)
        missing = sorted(set(range(periods)) - set(index.tolist()))
        if missing:
            raise DataError(f"climatology {climatology!r} needs every period in the training times; periods "
                            f"{[m + 1 for m in missing]} have none")
        key = xr.DataArray(index, dims="time", name="period")
        pending, levels = [], []
        for name in names:
            if name not in ds.data_vars:
                raise GridError(f"variable {name!r} is not a data variable of the dataset; found {list(ds.data_vars)}")
            da = ds[name]
            if da.dtype.kind not in "biuf":
                raise GridError(f"variable {name!r} has dtype {da.dtype}; expected numbers")
            level = level_dimension(name, da)
            if da.dims[-2:] != ("lat", "lon") or "time" not in da.dims:
                raise GridError(f"variable {name!r} has dims {da.dims}; expected (time, [level,] lat, lon)")
            values = da.astype("float64").reset_coords(drop=True).assign_coords(period=key)
            grouped = values.groupby("period")
            mean = grouped.mean("time", skipna=True)
            anomaly = (grouped - mean).reset_coords(drop=True)
            count = anomaly.notnull().sum("time")
            variance = (anomaly**2).sum("time", skipna=True) / count.clip(min=1)
            pending.append((mean, variance, count))
            levels.append(level)
        if progress:
            from tqdm.dask import TqdmCallback

            with TqdmCallback(desc="anomaly statistics"):
                (computed,) = dask.compute(pending)
        else:
            (computed,) = dask.compute(pending)
        data_vars = {}
        for name, level, (mean, variance, count) in zip(names, levels, computed):
            mean = mean.transpose("period", ...).values
            std = np.sqrt(variance.values)
            valid = count.values >= 2
            if not valid.any():
                raise DataError(f"variable {name!r} has no cell with two or more valid times")
            flat_std = std.reshape(-1, *std.shape[-2:])
            flat_valid = valid.reshape(flat_std.shape)
            for k in range(flat_std.shape[0]):
                ok = flat_valid[k]
                if not ok.any():
                    flat_std[k] = 1.0
                    continue
                smoothed = _smooth(flat_std[k], ok, smooth)
                typical = float(np.median(smoothed[ok]))
                if not typical > 0:
                    where = f"variable {name!r}" + ("" if level is None else f" at {level} index {k}")
                    raise DataError(f"{where} does not vary in time (median anomaly std {typical}); it cannot be "
                                    "normalised as anomalies; use Normalizer.fit or drop it")
                flat_std[k] = np.where(ok, np.maximum(smoothed, floor * typical), 1.0)
            std = flat_std.reshape(std.shape)
            mean = np.where(valid[None], np.nan_to_num(mean), 0.0)
            stacked = np.stack([mean, np.broadcast_to(std, mean.shape)]).astype(np.float32)
            dims = ("statistic", "period", *(() if level is None else (level,)), "lat", "lon")
            coords = {"lat": ds["lat"].variable.to_base_variable(), "lon": ds["lon"].variable.to_base_variable()}
            if level is not None:
                if level not in ds.coords:
                    raise CoordinateError(f"dimension {level!r} of variable {name!r} has no coordinate values")
                coords[level] = ds[level].variable.to_base_variable()
            attrs = {k: ds[name].attrs[k] for k in ("units",) if k in ds[name].attrs}
            data_vars[name] = xr.DataArray(stacked, dims=dims, coords=coords, attrs=attrs)
        stats = xr.Dataset(data_vars, attrs={"climatology": climatology, "smooth_cells": float(smooth),
                                             "floor": float(floor)})
        return cls(stats.assign_coords(statistic=["mean", "std"]))

    # -------------------------------------------------------------------------------------------------------

    @property
    def stats(self) -> xr.Dataset:
        """The statistics dataset (a copy)."""
        return self._stats.copy(deep=True)

    @property
    def climatology(self) -> str:
        """``"none"``, ``"month"`` or ``"season"``."""
        return str(self._stats.attrs["climatology"])

    @property
    def variables(self) -> list[str]:
        """Variables with statistics."""
        return [str(name) for name in self._stats.data_vars]

    def __repr__(self) -> str:
        by = "" if self.climatology == "none" else f", climatology by {self.climatology}"
        return f"AnomalyNormalizer({', '.join(self.variables)}: per cell{by})"

    def _stat(self, name: str) -> xr.DataArray:
        if name not in self._stats.data_vars:
            raise GridError(f"variable {name!r} has no anomaly statistics; the normaliser has {self.variables}")
        return self._stats[name]

    def _on_grid(self, name: str, coords: Mapping[str, np.ndarray]) -> xr.DataArray:
        """Statistics of ``name`` at the given lat / lon / level values (exact up to float32 rounding)."""
        stat = self._stat(name)
        for dim, values in coords.items():
            if dim not in stat.dims:
                raise GridError(f"the data of {name!r} have dimension {dim!r}; its anomaly statistics have "
                                f"{list(stat.dims[2:])}")
            try:
                stat = stat.sel({dim: np.asarray(values)}, method="nearest", tolerance=_TOLERANCE * max(
                    1.0, float(np.abs(np.asarray(values, dtype=float)).max(initial=0.0))))
            except KeyError as err:
                raise CoordinateError(f"{dim} values of {name!r} are not all on the grid of its anomaly statistics "
                                      f"({stat[dim].values.min()}..{stat[dim].values.max()}, {stat.sizes[dim]} "
                                      "values)") from err
        extra = [d for d in stat.dims[2:] if d not in coords]
        if extra:
            raise GridError(f"anomaly statistics of {name!r} have dimension(s) {extra} that the data lack")
        return stat

    def _periods(self, time: Any) -> np.ndarray:
        if self.climatology == "none":
            return np.zeros(np.atleast_1d(np.asarray(time)).shape, dtype=int)
        return _period_of(_months(time, "time"), self.climatology)

    def cell_statistics(self, codec: Codec, time: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """``(mean [C, H, W], std [C, H, W])`` float64 on ``codec``'s grid and channels for one ``time``.

        ``time`` picks the climatology period; it may be None only without a climatology (``"none"``).
        """
        if time is None and self.climatology != "none":
            raise CoordinateError(f"the anomaly statistics have a climatology by {self.climatology}: pass the time")
        period = 0 if time is None else int(self._periods(time).reshape(-1)[0])
        means, stds = [], []
        for name in codec.variables:
            coords: dict[str, np.ndarray] = {"lat": codec.lat, "lon": codec.lon}
            level = codec.level_dim(name)
            if level is not None:
                coords[level] = np.asarray(codec.levels(name))
            stat = self._on_grid(name, coords).isel(period=period)
            order = ("statistic", *(() if level is None else (level,)), "lat", "lon")
            values = stat.transpose(*order).values.astype(np.float64)
            means.append(values[0].reshape(-1, *values.shape[-2:]))
            stds.append(values[1].reshape(-1, *values.shape[-2:]))
        return np.concatenate(means), np.concatenate(stds)

    def check(self, codec: Codec) -> None:
        """GridError / CoordinateError unless every codec variable, level and cell has statistics."""
        for period in range(PERIODS[self.climatology]):
            month = {"none": 1, "month": period + 1, "season": (3 * period + 12) % 12 or 12}[self.climatology]
            self.cell_statistics(codec, None if self.climatology == "none" else np.datetime64(f"2000-{month:02d}-15"))

    # -------------------------------------------------------------------------------------------------------
    # apply

    def _apply_one(self, name: str, da: xr.DataArray, inverse: bool) -> xr.DataArray:
        if da.dtype.kind != "f":
            raise GridError(f"variable {name!r} has dtype {da.dtype}; expected floating point")
        if not inverse and NORMALIZED_ATTR in da.attrs:
            raise GridError(f"variable {name!r} is already normalised (attribute {NORMALIZED_ATTR!r})")
        for dim in ("lat", "lon"):
            if dim not in da.coords:
                raise CoordinateError(f"variable {name!r} has no {dim!r} coordinate; anomaly statistics are per cell")
        level = level_dimension(name, da)
        coords = {"lat": da["lat"].values, "lon": da["lon"].values}
        if level is not None:
            if level not in da.coords:
                raise CoordinateError(f"dimension {level!r} of variable {name!r} has no coordinate values")
            coords[level] = da[level].values
        stat = self._on_grid(name, coords)
        order = [d for d in ("time", level, "lat", "lon") if d is not None and d in da.dims]
        extra = [d for d in da.dims if d not in order]  # e.g. member, leading
        if "time" not in da.dims and self.climatology != "none":
            if "time" not in da.coords or da["time"].ndim != 0:
                raise CoordinateError(f"variable {name!r} has no 'time' coordinate to pick its {self.climatology} "
                                      "climatology")
        canonical = da.transpose(*extra, *order)
        values = stat.transpose("statistic", "period", *[d for d in order if d != "time"]).values.astype(da.dtype)
        mean, std = values[0], values[1][0]  # mean [P, ...], std the same for every period
        if "time" in da.dims:
            period = self._periods(da["time"].values) if self.climatology != "none" else \
                np.zeros(da.sizes["time"], dtype=int)
            mean_data = _take(mean, period, canonical.data, axis=len(extra))
        else:
            which = self._periods(da["time"].values).item() if self.climatology != "none" else 0
            mean_data = mean[which]
        data = canonical.data * std + mean_data if inverse else (canonical.data - mean_data) / std
        return with_record(canonical.copy(deep=False, data=data).transpose(*da.dims), da, inverse,
                           "(value - climatology) / std with geodiff anomaly statistics")

    # -------------------------------------------------------------------------------------------------------
    # storage

    def to_dict(self) -> dict[str, Any]:
        """The statistics as JSON (arrays as base64 float32)."""
        stats = self._stats
        return {
            "format": ANOMALY_FORMAT,
            "format_version": ANOMALY_VERSION,
            "attrs": {k: (v.item() if isinstance(v, np.generic) else v) for k, v in stats.attrs.items()},
            "coords": {str(n): {"values": np.asarray(c.values, dtype=np.float64).tolist(), "attrs": _plain(c.attrs)}
                       for n, c in stats.coords.items() if n != "statistic"},
            "variables": {str(n): {"dims": list(v.dims), "data": _encode_array(v.values), "attrs": _plain(v.attrs)}
                          for n, v in stats.data_vars.items()},
        }

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> AnomalyNormalizer:
        """Rebuild from :meth:`to_dict` output."""
        if not isinstance(spec, Mapping) or spec.get("format") != ANOMALY_FORMAT:
            raise ConfigError(f"an anomaly normaliser spec needs 'format': {ANOMALY_FORMAT!r}")
        version = spec.get("format_version")
        if not isinstance(version, int) or version > ANOMALY_VERSION:
            raise ConfigError(f"anomaly normaliser 'format_version' {version!r} is not supported")
        try:
            coords = {n: xr.Variable((n,), np.asarray(c["values"], dtype=np.float64), c["attrs"])
                      for n, c in spec["coords"].items()}
            data_vars = {n: xr.Variable(tuple(v["dims"]), _decode_array(v["data"]), v["attrs"])
                         for n, v in spec["variables"].items()}
            stats = xr.Dataset(data_vars, coords=coords, attrs=dict(spec["attrs"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"anomaly normaliser spec is malformed: {type(err).__name__}: {err}") from err
        return cls(stats.assign_coords(statistic=["mean", "std"]))

    def save(self, path: str | Path) -> None:
        """Write the statistics to ``path`` (``.json``)."""
        path = Path(path)
        if path.suffix != ".json":
            raise ConfigError(f"anomaly normaliser file {str(path)!r} must end in .json")
        path.write_text(json.dumps(self.to_dict(), sort_keys=True, allow_nan=False))

    @classmethod
    def load(cls, path: str | Path) -> AnomalyNormalizer:
        """Read statistics written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"anomaly normaliser file {str(path)!r} does not exist")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ConfigError(f"anomaly normaliser file {str(path)!r} is not valid JSON: {err}") from err


def _take(table: np.ndarray, period: np.ndarray, like: Any, axis: int) -> Any:
    """``table[period]`` ([T, ...] climatology of each time), lazy and chunked like ``like`` along ``axis`` (time)
    when ``like`` is a dask array, so a long series never materialises a climatology field per time."""
    shape = (1,) * axis + (period.size, *table.shape[1:])
    try:
        import dask.array as dsa
    except ImportError:  # pragma: no cover - dask is a dependency
        dsa = None
    if dsa is not None and isinstance(like, dsa.Array):
        time_chunks = like.chunks[axis]
        blocks, start = [], 0
        for size in time_chunks:
            index = period[start:start + size]
            blocks.append(dsa.from_delayed(_delayed_take(table, index), (size, *table.shape[1:]), dtype=table.dtype))
            start += size
        return dsa.concatenate(blocks, axis=0).reshape(shape)
    return table[period].reshape(shape)


def _delayed_take(table: np.ndarray, index: np.ndarray) -> Any:
    import dask

    return dask.delayed(np.take)(table, index, axis=0)


def _plain(attrs: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in attrs.items():
        value = value.item() if isinstance(value, np.generic) else value
        value = value.tolist() if isinstance(value, np.ndarray) else value
        if isinstance(value, (str, int, float, bool, list)) or value is None:
            out[str(key)] = value
    return out


