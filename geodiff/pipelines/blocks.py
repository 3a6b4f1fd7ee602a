"""Per-time blocks: the one function that a lazy pipeline result and a batch region both compute.

A pipeline over a long series works on blocks of consecutive times. :class:`PipelineBlock` is that per-block
function: it picks every input at the block's times (:func:`select_times`, loading only those) and calls the
eager pipeline on them. Pipelines derive the generator of each time from ``(seed, time)``, so a block gives the
same values as the same times within a longer call, bit for bit.

:func:`lazy_over_time` turns a block function into a lazy (dask-backed) result: one dask task per block of
``time_chunk`` times (``xr.map_blocks``), computed on ``.compute()``, ``.load()`` or ``.to_zarr()`` with at most
a few blocks in memory. :mod:`geodiff.batch` runs the same :class:`PipelineBlock` region by region into a
resumable store. Blocks of one process sample one at a time (the network already uses every intra-op thread).

Example
-------
>>> import numpy as np, pandas as pd, xarray as xr
>>> from geodiff.pipelines.blocks import lazy_over_time
>>> def block(times):  # a toy pipeline: the output at time t is its index, two members
...     index = np.searchsorted(axis, times).astype("float32")
...     return xr.Dataset({"v": (("member", "time"), np.stack([index, index + 10]))},
...                       coords={"member": [0, 1], "time": times})
>>> axis = pd.date_range("2000-01-01", periods=5).values
>>> lazy = lazy_over_time(block, block(axis[:1]), axis, time_chunk=2)
>>> lazy["v"].chunks
((2,), (2, 2, 1))
>>> lazy["v"].values[1].tolist()
[10.0, 11.0, 12.0, 13.0, 14.0]
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from geodiff.errors import ConfigError

__all__ = ["PipelineBlock", "lazy_over_time", "is_lazy", "select_times", "time_axis"]

#: one block samples at a time in a process (a threaded dask scheduler would otherwise run several at once)
_SAMPLING = threading.Lock()


def is_lazy(value: Any) -> bool:
    """True when ``value`` (a Dataset, DataArray, or a dict / list of them) holds dask-backed data.

    >>> import xarray as xr
    >>> ds = xr.Dataset({"t": ("time", [1.0, 2.0])})
    >>> is_lazy(ds), is_lazy(ds.chunk()), is_lazy({"a": ds.chunk()})
    (False, True, True)
    """
    if isinstance(value, (xr.Dataset, xr.DataArray)):
        return any(var.chunks is not None for var in value.variables.values()) if isinstance(value, xr.Dataset) \
            else value.chunks is not None
    if isinstance(value, Mapping):
        return any(is_lazy(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(is_lazy(item) for item in value)
    return False


def select_times(value: Any, times: np.ndarray) -> Any:
    """The part of ``value`` at ``times``, loaded into memory; values without a time axis are returned as they are.

    Gridded ``xr.Dataset``/``DataArray`` with a ``time`` dimension: ``.sel(time=times)``; observation tables (a
    ``Dataset`` with dimension ``obs`` and a ``time`` coordinate, or a DataFrame with a ``time`` column): the rows
    at those times; dicts and lists: each item.

    >>> table = pd.DataFrame({"time": pd.to_datetime(["2000-01-01", "2000-02-01", "2000-02-01"]),
    ...                       "value": [1., 2., 3.]})
    >>> select_times(table, np.array(["2000-02-01"], dtype="datetime64[ns]"))["value"].tolist()
    [2.0, 3.0]
    """
    if isinstance(value, (xr.Dataset, xr.DataArray)):  # before Mapping: a Dataset is one
        if "time" in value.dims:
            return value.sel(time=times).load()
        if "obs" in value.dims and "time" in value.coords:
            keep = np.flatnonzero(np.isin(value["time"].values, times))
            return value.isel(obs=keep).load()
        return value
    if isinstance(value, pd.DataFrame):
        return value[np.isin(value["time"].to_numpy(), times)] if "time" in value.columns else value
    if isinstance(value, Mapping):
        return {key: select_times(item, times) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(select_times(item, times) for item in value)
    return value


def time_axis(value: Any, name: str) -> np.ndarray:
    """Sorted unique times of an input: a gridded dataset's ``time`` or an observation table's time values."""
    if isinstance(value, (xr.Dataset, xr.DataArray)) and "time" in value.dims:
        return np.asarray(value["time"].values)
    if isinstance(value, (xr.Dataset, xr.DataArray)) and "time" in value.coords:
        return np.unique(value["time"].values)
    if isinstance(value, pd.DataFrame) and "time" in value.columns:
        return np.unique(value["time"].to_numpy())
    raise ConfigError(f"input {name!r} has no time axis (a 'time' dimension, coordinate or column)")


@dataclass
class PipelineBlock:
    """A pipeline on a block of times: ``pipeline(model, *inputs at times, **keyword inputs at times, **options)``.

    ``inputs`` are positional in order, ``keyword_inputs`` by name (both may be dask-backed or in memory; only
    the block's times are loaded); ``options`` are passed unchanged; ``pass_times``: the pipeline takes
    ``times=`` (reconstruct does, since an observation table may have times it should not reconstruct).
    """

    pipeline: Callable[..., xr.Dataset]
    model: Any
    inputs: tuple[Any, ...]
    keyword_inputs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    pass_times: bool = False

    def __call__(self, times: np.ndarray) -> xr.Dataset:
        """The pipeline's output at ``times``."""
        args = [select_times(value, times) for value in self.inputs]
        kwargs = {name: select_times(value, times) for name, value in self.keyword_inputs.items()}
        if self.pass_times:
            kwargs["times"] = times
        with _SAMPLING:
            return self.pipeline(self.model, *args, **kwargs, **self.options)

    def __dask_tokenize__(self) -> Any:
        from dask.base import tokenize

        model = getattr(self.model, "sha256", None) or id(self.model)
        return ("geodiff.PipelineBlock", getattr(self.pipeline, "__qualname__", repr(self.pipeline)), model,
                tokenize(self.inputs, self.keyword_inputs), repr(sorted(self.options.items())), self.pass_times)


def lazy_over_time(block: Callable[[np.ndarray], xr.Dataset], template: xr.Dataset, times: Any,
                   time_chunk: int = 1, attrs: Mapping[str, Any] | None = None) -> xr.Dataset:
    """A dask-backed dataset whose blocks of ``time_chunk`` times are ``block(times of the block)``.

    ``template``: the output at one time (any values: only variables, dims, coords, attrs, dtypes are used);
    ``times``: the full time axis (array or ``xr.Variable`` with attributes and encoding); ``attrs``: the
    result's attributes (default: the template's). Each data variable gets chunks of ``time_chunk`` along
    ``time`` and one chunk along every other dimension.
    """
    if not isinstance(time_chunk, int) or time_chunk < 1:
        raise ConfigError(f"time_chunk must be an integer >= 1, got {time_chunk!r}")
    for name, var in template.data_vars.items():
        if "time" not in var.dims:
            raise ConfigError(f"output variable {name!r} has no time dimension; a lazy result is built per time")
    axis = times if isinstance(times, xr.Variable) else xr.Variable(("time",), np.asarray(times),
                                                                   dict(template["time"].attrs),
                                                                   dict(template["time"].encoding))
    size = axis.size
    chunks = tuple(min(time_chunk, size - start) for start in range(0, size, time_chunk))
    index = xr.Dataset({"index": ("time", da.arange(size, chunks=(chunks,)))}, coords={"time": axis})
    data_vars = {}
    for name, var in template.data_vars.items():
        shape = tuple(size if d == "time" else var.sizes[d] for d in var.dims)
        var_chunks = tuple(chunks if d == "time" else (var.sizes[d],) for d in var.dims)
        data_vars[name] = xr.Variable(var.dims, da.empty(shape, dtype=var.dtype, chunks=var_chunks),
                                      dict(var.attrs), dict(var.encoding))
    coords = {name: coord.variable for name, coord in template.coords.items() if "time" not in coord.dims}
    coords["time"] = axis
    layout = xr.Dataset(data_vars, coords=coords, attrs=dict(template.attrs if attrs is None else attrs))

    def compute_block(part: xr.Dataset) -> xr.Dataset:
        out = block(np.asarray(part["time"].values))
        return out.assign_coords(time=part["time"]).drop_vars(
            [name for name in out.variables if name not in layout.variables])

    return xr.map_blocks(compute_block, index, template=layout)
