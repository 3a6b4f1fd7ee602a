"""Pipeline inputs in the model's units: converted with pint (and recorded), never guessed.

:func:`to_model_units` converts gridded inputs; :func:`observations_to_model_units` converts an observation
table whose ``value`` carries a ``units`` attribute (``error_std`` by the same factor, or from its own ``units``).

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

import numpy as np
import xarray as xr

from geodiff.adapters.standardize import convert_units, record, unit_conversion
from geodiff.errors import UnitsError

__all__ = ["to_model_units", "model_units", "observations_to_model_units"]


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


def observations_to_model_units(table: xr.Dataset, units: Mapping[str, str], label: str = "observations"
                                ) -> xr.Dataset:
    """An observation table (:func:`~geodiff.observations.as_observations`) with ``value`` converted from its
    ``units`` attribute to ``units[variable]`` of each record's variable (the ``variable`` column, or the model's
    only variable) and ``error_std`` scaled alike (from its own ``units`` when it has them); every conversion
    appended to ``history``. A table without a ``units`` attribute on ``value`` is taken as in the model's units.
    :class:`UnitsError` names the table, the variable and the units when they cannot be converted.

    >>> import pandas as pd
    >>> from geodiff.observations import as_observations
    >>> table = as_observations(pd.DataFrame({"value": [50.0], "error_std": [0.9], "lat": [0.0], "lon": [0.0],
    ...                                       "time": [pd.Timestamp("2020-01-15")]}))
    >>> table["value"].attrs["units"] = "degF"
    >>> out = observations_to_model_units(table, {"thetao": "degC"})
    >>> round(float(out.value[0]), 6), round(float(out.error_std[0]), 6), out.value.attrs["units"]
    (10.0, 0.5, 'degC')
    """
    source = table["value"].attrs.get("units")
    if source is None:
        return table
    if "variable" in table.coords:
        variables = np.asarray(table["variable"].values).astype(str)
    elif len(units) == 1:
        variables = np.full(table.sizes["obs"], next(iter(units)))
    else:
        raise UnitsError(f"{label}: 'value' has units {source!r} but no 'variable' column says which of the "
                         f"model's variables {sorted(units)} each record is")
    error_source = table["error_std"].attrs.get("units", source)
    value = np.asarray(table["value"].values, dtype=np.float64).copy()
    error = np.asarray(table["error_std"].values, dtype=np.float64).copy()
    changes, targets = [], set()
    for name in map(str, np.unique(variables)):
        if name not in units:
            continue  # not a variable of the model: counted and dropped by the validation
        rows = variables == name
        try:
            converted, done = convert_units(table["value"][rows], units[name], name=name)
        except UnitsError as err:
            raise UnitsError(f"{label} 'value': {err}") from None
        value[rows] = converted.values
        scale, _ = unit_conversion(str(error_source), units[name], f"{label} 'error_std' of {name!r}")
        error[rows] *= abs(scale)
        changes += done
        targets.add(units[name])
    out = table.copy()
    value_attrs = {k: v for k, v in table["value"].attrs.items() if k != "units"}
    if len(targets) == 1:
        value_attrs["units"] = targets.pop()
    out["value"] = table["value"].copy(data=value)
    out["value"].attrs = value_attrs
    out["error_std"] = table["error_std"].copy(data=error)
    out["error_std"].attrs = {**table["error_std"].attrs, **({"units": value_attrs["units"]}
                                                             if "units" in value_attrs else {})}
    if "units" not in value_attrs:
        out["error_std"].attrs.pop("units", None)
    return record(out, changes, step=label)
