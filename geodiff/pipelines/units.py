"""Gridded pipeline inputs in the model's units: converted with pint (and recorded), never guessed.

Example
-------
>>> import numpy as np, xarray as xr
>>> from geodiff.pipelines.units import to_model_units
>>> ds = xr.Dataset({"t": ("x", np.array([0.0, 10.0]), {"units": "degC"})})
>>> to_model_units(ds, {"t": "K"}, "background")["t"].values.tolist()
[273.15, 283.15]
"""

from __future__ import annotations

from collections.abc import Mapping

import xarray as xr

from geodiff.adapters.standardize import convert_units, record

__all__ = ["to_model_units", "model_units"]


def model_units(codec: object, variables: list[str]) -> dict[str, str]:
    """``{variable: units}`` of the model's codec (variables it has no units for are left out)."""
    out = {}
    for variable in variables:
        units = codec._var(variable)["attrs"].get("units")  # type: ignore[attr-defined]
        if units is not None:
            out[variable] = str(units)
    return out


def to_model_units(ds: xr.Dataset, units: Mapping[str, str], label: str) -> xr.Dataset:
    """``ds`` with each variable of ``units`` converted to its unit (changes appended to ``history``);
    :class:`~geodiff.errors.UnitsError` naming ``<label> <variable>`` when units are missing or do not convert."""
    changes: list[str] = []
    for variable, unit in units.items():
        converted, done = convert_units(ds[variable], unit, name=f"{label} {variable}")
        if done:
            ds = ds.assign({variable: converted})
            changes += done
    return record(ds, changes, step=label)
