"""EN4 (Met Office Hadley Centre, EN.4.2.2): objective analyses as gridded data, profiles as observation tables.

* Analyses ``EN.4.2.2.f.analysis.g10.YYYYMM.nc``: ``temperature`` (potential temperature, in kelvin),
  ``salinity``, their uncertainties, 42 depth levels, 1 deg grid of 173 x 360 (-83..89 N, 1..360 E).
  :func:`open_analysis` returns a canonical dataset (degC, depth in m positive down, lat ascending, lon in one
  convention). The analyses' ``valid_min``/``valid_max`` attributes are in degC while the data are in kelvin:
  a :class:`~geodiff.errors.GeodiffWarning` says so, and they are never used to mask.
* Profiles ``EN.4.2.2.f.profiles.g10.YYYYMM.nc``: ``N_PROF x N_LEVELS`` arrays (``DEPH_CORRECTED``,
  ``POTM_CORRECTED``, ``PSAL_CORRECTED``...), times ``JULD``, positions ``LATITUDE``/``LONGITUDE`` and character
  QC flags. :func:`read_profiles` returns an observation table with the Met Office's rule applied: a value is
  rejected when any of ``POSITION_QC``, ``JULD_QC``, ``PROFILE_<VAR>_QC``, ``<VAR>_CORRECTED_QC`` (and
  ``DEPH_CORRECTED_QC`` when present) is ``'4'``. Every rejection is counted in the table's attributes.

Example
-------
>>> import tempfile
>>> from geodiff.adapters import en4
>>> from geodiff.testing import products
>>> folder = tempfile.mkdtemp()
>>> obs = en4.read_profiles(products.write_en4_profiles(folder))
>>> sorted(set(obs.variable.values.tolist())), obs.attrs["qc_rejected"] > 0
(['so', 'thetao'], True)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from geodiff.adapters.files import INCOMPLETE, netcdf_files, open_netcdf_files
from geodiff.adapters.standardize import convert_units, record, standardize
from geodiff.adapters.stations import observation_table
from geodiff.errors import DataError, ObservationError

__all__ = ["PROFILE_VARIABLES", "open_analysis", "read_profiles"]

#: Profile variables: canonical name in the table, canonical unit, default error std (in that unit), QC stem.
PROFILE_VARIABLES: dict[str, dict[str, Any]] = {
    "POTM_CORRECTED": {"name": "thetao", "units": "degC", "error_std": 0.5, "profile_qc": "PROFILE_POTM_QC"},
    "PSAL_CORRECTED": {"name": "so", "units": "1e-3", "error_std": 0.1, "profile_qc": "PROFILE_PSAL_QC"},
    "TEMP": {"name": "to", "units": "degC", "error_std": 0.5, "profile_qc": "PROFILE_TEMP_QC"},
}

_ANALYSIS_UNITS = {"temperature": "degC", "salinity": "1e-3", "temperature_uncertainty": "K",
                   "salinity_uncertainty": "1e-3"}


def open_analysis(
    paths: str | Path | Sequence[str | Path],
    variables: Sequence[str] = ("temperature", "salinity"),
    *,
    units: Mapping[str, str] | None = None,
    lon: str = "-180..180",
) -> xr.Dataset:
    """EN4 objective analyses (one file per month) as a canonical dataset ``(time, depth, lat, lon)``.

    ``units`` overrides the canonical units (default: temperature in degC, salinity in 1e-3, uncertainties in K
    and 1e-3). Data stay lazy (dask).

    >>> import tempfile, warnings
    >>> from geodiff.testing import products
    >>> path = products.write_en4_analysis(tempfile.mkdtemp())
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")  # the product's valid_max=45 (degC) on kelvin data is reported
    ...     ds = open_analysis(path)
    >>> dict(ds.temperature.sizes), ds.temperature.attrs["units"], float(ds.lon[0])
    ({'time': 1, 'depth': 42, 'lat': 173, 'lon': 360}, 'degC', -180.0)
    """
    files = netcdf_files(paths, "EN4")
    ds = open_netcdf_files(files, "EN4 analysis", variables, along="time")
    keep = list(variables) + [n for n in ("depth_bnds", "time_bnds") if n in ds.data_vars]
    ds = ds[keep]
    wanted = {v: (units or {}).get(v, _ANALYSIS_UNITS.get(v, ds[v].attrs.get("units"))) for v in variables}
    out = standardize(ds, variables=wanted, lon=lon)
    out.attrs["geodiff_source_files"] = json.dumps([f.name for f in files])
    return out


def _flag(ds: xr.Dataset, name: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """Char QC flags as a ``str`` array broadcast to ``shape`` (``[N_PROF]`` flags repeat along levels)."""
    if name not in ds.variables:
        return None
    raw = np.asarray(ds[name].values)
    if raw.dtype.kind == "S":
        text = raw.astype("U1")
    else:
        text = raw.astype(str)
    if text.ndim == 1 and len(shape) == 2:
        text = np.broadcast_to(text[:, None], shape)
    return np.asarray(text)


def read_profiles(
    paths: str | Path | Sequence[str | Path],
    variables: Sequence[str] = ("POTM_CORRECTED", "PSAL_CORRECTED"),
    *,
    names: Mapping[str, str] | None = None,
    error_std: Mapping[str, float] | None = None,
    reject: Sequence[str] = ("4",),
    max_depth: float | None = None,
    lon: str = "-180..180",
    source: str = "EN4",
) -> xr.Dataset:
    """EN4 profile files as one observation table (dim ``obs``), QC honoured and counted.

    ``variables`` are profile variables (see :data:`PROFILE_VARIABLES`); each value becomes one row named
    ``names[var]`` (default ``thetao`` for POTM_CORRECTED, ``so`` for PSAL_CORRECTED) in its canonical unit
    (degC, 1e-3), with error ``error_std[var]`` (default 0.5 degC, 0.1). Rows whose flags are in ``reject`` are
    dropped; ``max_depth`` drops deeper values. Attributes ``qc_present``, ``qc_rejected``, ``qc_kept``,
    ``qc_rejected_<FLAG>`` (values rejected by each flag; a value can fail several) and per variable
    ``qc_<var>_rejected`` say what happened.
    """
    files = netcdf_files(paths, "EN4")
    unknown = [v for v in variables if v not in PROFILE_VARIABLES]
    if unknown:
        raise DataError(f"unknown EN4 profile variables {unknown}; expected some of {sorted(PROFILE_VARIABLES)}")
    names = {v: (names or {}).get(v, PROFILE_VARIABLES[v]["name"]) for v in variables}
    errors = {v: float((error_std or {}).get(v, PROFILE_VARIABLES[v]["error_std"])) for v in variables}
    columns: dict[str, list[Any]] = {k: [] for k in ("value", "error", "lat", "lon", "time", "depth", "variable",
                                                     "obs_id", "units", "platform")}
    counts: dict[str, int] = {"qc_present": 0, "qc_rejected": 0, "qc_kept": 0, "n_profiles": 0, "qc_too_deep": 0}
    for path in files:
        try:
            ds = xr.open_dataset(path, concat_characters=False)
        except (OSError, ValueError) as err:
            raise DataError(f"cannot open EN4 profile file {str(path)!r} ({INCOMPLETE} or not netCDF): {err}") from err
        with ds:
            required = ["JULD", "LATITUDE", "LONGITUDE", "DEPH_CORRECTED", *variables]
            missing = [n for n in required if n not in ds.variables]
            if missing:
                raise DataError(f"EN4 profile file {path.name!r} lacks {missing}")
            n_prof, n_lev = ds.sizes["N_PROF"], ds.sizes["N_LEVELS"]
            counts["n_profiles"] += n_prof
            shape = (n_prof, n_lev)
            depth = np.asarray(ds["DEPH_CORRECTED"].values, dtype="float64")
            lat = np.broadcast_to(np.asarray(ds["LATITUDE"].values, "float64")[:, None], shape)
            lon_v = np.broadcast_to(np.asarray(ds["LONGITUDE"].values, "float64")[:, None], shape)
            juld = np.asarray(ds["JULD"].values)
            if not np.issubdtype(juld.dtype, np.datetime64):
                raise DataError(f"JULD in {path.name!r} could not be decoded to dates (units {ds['JULD'].attrs})")
            time = np.broadcast_to(juld.astype("datetime64[ns]")[:, None], shape)
            platform = None
            if "PLATFORM_NUMBER" in ds.variables:
                chars = np.asarray(ds["PLATFORM_NUMBER"].values)
                platform = np.array([b"".join(row).decode(errors="replace").strip() for row in chars])
            position_ok = np.isfinite(lat) & np.isfinite(lon_v)
            time_ok = ~np.isnat(time)
            for var in variables:
                values = np.asarray(ds[var].values, dtype="float64")
                present = np.isfinite(values) & np.isfinite(depth) & position_ok & time_ok
                n_present = int(present.sum())
                counts["qc_present"] += n_present
                flags = {
                    "POSITION_QC": _flag(ds, "POSITION_QC", shape),
                    "JULD_QC": _flag(ds, "JULD_QC", shape),
                    PROFILE_VARIABLES[var]["profile_qc"]: _flag(ds, PROFILE_VARIABLES[var]["profile_qc"], shape),
                    f"{var}_QC": _flag(ds, f"{var}_QC", shape),
                    "DEPH_CORRECTED_QC": _flag(ds, "DEPH_CORRECTED_QC", shape),
                }
                rejected = np.zeros(shape, bool)
                for flag_name, flag in flags.items():
                    if flag is None:
                        continue
                    bad = np.isin(flag, list(reject)) & present
                    key = f"qc_rejected_{flag_name}"
                    counts[key] = counts.get(key, 0) + int(bad.sum())
                    rejected |= bad
                n_rej = int(rejected.sum())
                counts["qc_rejected"] += n_rej
                counts[f"qc_{names[var]}_rejected"] = counts.get(f"qc_{names[var]}_rejected", 0) + n_rej
                keep = present & ~rejected
                if max_depth is not None:
                    deep = keep & (depth > max_depth)
                    counts["qc_too_deep"] += int(deep.sum())
                    keep &= ~deep
                counts["qc_kept"] += int(keep.sum())
                units = ds[var].attrs.get("units")
                converted, _ = convert_units(xr.DataArray(values[keep], dims="obs", attrs={"units": units}),
                                             PROFILE_VARIABLES[var]["units"], name=var)
                prof_idx, lev_idx = np.nonzero(keep)
                columns["value"].append(np.asarray(converted.values, "float64"))
                columns["error"].append(np.full(prof_idx.size, errors[var]))
                columns["lat"].append(lat[keep])
                columns["lon"].append(lon_v[keep])
                columns["time"].append(time[keep])
                columns["depth"].append(depth[keep])
                columns["variable"].append(np.full(prof_idx.size, names[var], dtype=object))
                columns["units"].append(np.full(prof_idx.size, PROFILE_VARIABLES[var]["units"], dtype=object))
                ids = [f"{path.stem}/{var}/{p}/{k}" for p, k in zip(prof_idx, lev_idx, strict=True)]
                columns["obs_id"].append(np.array(ids, dtype=object))
                columns["platform"].append(platform[prof_idx] if platform is not None else
                                           np.full(prof_idx.size, "", dtype=object))
    value = np.concatenate(columns["value"]) if columns["value"] else np.zeros(0)
    if value.size == 0:
        raise ObservationError(f"no EN4 observation passed quality control in {[f.name for f in files]} ({counts})")
    obs = observation_table(
        value=value, error_std=np.concatenate(columns["error"]), lat=np.concatenate(columns["lat"]),
        lon=np.concatenate(columns["lon"]), time=np.concatenate(columns["time"]),
        depth=np.concatenate(columns["depth"]), variable=np.concatenate(columns["variable"]).astype(str),
        source=source, obs_id=np.concatenate(columns["obs_id"]).astype(str),
        units=np.concatenate(columns["units"]).astype(str), lon_convention=lon,
        coords={"platform": np.concatenate(columns["platform"]).astype(str)},
        attrs={**counts, "qc_reject_flags": ",".join(reject),
               "geodiff_source_files": json.dumps([f.name for f in files])},
    )
    flags_text = ", ".join(f"{k[len('qc_rejected_'):]}={v}" for k, v in counts.items() if k.startswith("qc_rejected_"))
    changes = [f"read {counts['n_profiles']} profiles: {counts['qc_present']} values present, "
               f"{counts['qc_rejected']} rejected by QC flags in {list(reject)} ({flags_text}), "
               f"{counts['qc_kept']} kept"]
    if counts["qc_too_deep"]:
        changes.append(f"dropped {counts['qc_too_deep']} values deeper than {max_depth} m")
    return record(obs, changes, step="en4.read_profiles")
