"""Gridded sounder climate data records (AMSU-A, HIRS, MHS) -> canonical datasets.

Products (monthly, regular latitude-longitude grids, NOAA CDR conventions: lat ascending, lon 0..360):

* ``amsua_tmt``: MSU/AMSU-A mean layer temperature, mid-troposphere (``tcdr_TMT``, K)
* ``amsua_tls``: MSU/AMSU-A mean layer temperature, lower stratosphere (``tcdr_TLS``, K)
* ``hirs_olr``: HIRS outgoing longwave radiation (``olr``, W m-2)
* ``hirs_uth``: HIRS upper-tropospheric humidity, channel 12 (``uth``, %)
* ``mhs_uth``: MHS upper-tropospheric humidity, 183 GHz (``uth``, %)

:func:`open_dataset` checks that the product's variable is there with convertible units, converts to the
canonical unit and standardizes the grid. The product is found from the file name when not given.

Example
-------
>>> import tempfile
>>> from geodiff.adapters import sounders
>>> from geodiff.testing import products
>>> ds = sounders.open_dataset(products.write_sounder(tempfile.mkdtemp(), "hirs_olr"))
>>> list(ds.data_vars), ds.olr.attrs["units"], ds.attrs["geodiff_sounder_product"]
(['olr'], 'W m-2', 'hirs_olr')
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import xarray as xr

from geodiff.adapters.files import netcdf_files, open_netcdf_files
from geodiff.adapters.standardize import standardize
from geodiff.errors import DataError

__all__ = ["PRODUCTS", "open_dataset", "product_of"]

#: Sounder products: file-name pattern, variable and canonical unit.
PRODUCTS: dict[str, dict[str, Any]] = {
    "amsua_tmt": {"pattern": "*TCDR_MSU-AMSUA*_TMT_*.nc", "variable": "tcdr_TMT", "units": "K",
                  "long_name": "MSU/AMSU-A mid-tropospheric mean layer temperature"},
    "amsua_tls": {"pattern": "*TCDR_MSU-AMSUA*_TLS_*.nc", "variable": "tcdr_TLS", "units": "K",
                  "long_name": "MSU/AMSU-A lower-stratospheric mean layer temperature"},
    "hirs_olr": {"pattern": "olr-monthly_*.nc", "variable": "olr", "units": "W m-2",
                 "long_name": "HIRS outgoing longwave radiation"},
    "hirs_uth": {"pattern": "HIRS_UTH_*.nc", "variable": "uth", "units": "%",
                 "long_name": "HIRS upper-tropospheric humidity"},
    "mhs_uth": {"pattern": "MHS_UTH_*.nc", "variable": "uth", "units": "%",
                "long_name": "MHS upper-tropospheric humidity"},
}


def product_of(path: str | Path) -> str:
    """The product whose file-name pattern matches ``path``; DataError when none or several do.

    >>> product_of("olr-monthly_v02r07_197901_202312.nc")
    'hirs_olr'
    """
    name = Path(path).name
    found = [p for p, spec in PRODUCTS.items() if fnmatch.fnmatch(name, spec["pattern"])]
    if len(found) != 1:
        raise DataError(f"cannot tell the sounder product of {name!r} (matches {found}); pass product= one of "
                        f"{sorted(PRODUCTS)}")
    return found[0]


def open_dataset(
    paths: str | Path | Sequence[str | Path], product: str | None = None, *, lon: str = "-180..180"
) -> xr.Dataset:
    """Sounder CDR file(s) of one product as a canonical ``(time, lat, lon)`` dataset in the canonical unit."""
    files = netcdf_files(paths, "sounder")
    product = product or product_of(files[0])
    if product not in PRODUCTS:
        raise DataError(f"unknown sounder product {product!r}; products are {sorted(PRODUCTS)}")
    spec = PRODUCTS[product]
    variable = spec["variable"]
    ds = open_netcdf_files(files, product, [variable])
    out = standardize(ds[[variable]], variables={variable: spec["units"]}, lon=lon)
    out.attrs["geodiff_sounder_product"] = product
    out.attrs["geodiff_source_files"] = json.dumps([f.name for f in files])
    return out
