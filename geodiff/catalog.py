"""The data catalog: geodiff's sources described in ``data_catalog/`` and opened by name.

``data_catalog/products.yaml`` is an intake (v1 YAML) catalog of every product an adapter reads and of the
samples geodiff ships: intake's ``driver`` and ``args.urlpath`` (files under the data root,
``{{ env('GEODIFF_DATA_ROOT') }}``, or next to the catalog, ``{{ CATALOG_DIR }}``), and in ``metadata`` what the
product is (``url``, ``doi``, ``licence``, ``reference``), the geodiff adapter (``"module:function"``) with its
default ``adapter_args``, and the variables and units the raw files hold. CMIP6 output is described by an
intake-esm ESM collection (``cmip6_collection.json`` + ``.csv``, CMIP6 data reference syntax). :func:`open`
opens an entry by name; :func:`check` compares a raw file with the entry's expected variables and units;
:func:`esm_datastore` gives the ESM collection with its paths resolved under a data root, usable from any folder.

The data root is the ``root=`` argument or the ``GEODIFF_DATA_ROOT`` environment variable; the catalog folder is
``GEODIFF_CATALOG_DIR`` or the ``data_catalog/`` folder next to the package.

Example
-------
>>> import tempfile
>>> from geodiff import catalog
>>> from geodiff.testing import products
>>> "en4_analysis" in catalog.names()
True
>>> catalog.describe("en4_analysis")["doi"]
'10.1002/2013JC009067'
>>> root = products.write_catalog_tree(tempfile.mkdtemp(), only=["hirs_olr"])
>>> catalog.open("hirs_olr", root=root).olr.attrs["units"]
'W m-2'
"""

from __future__ import annotations

import builtins
import glob
import importlib
import os
from pathlib import Path
from typing import Any

from geodiff.errors import DataError

__all__ = ["catalog_dir", "check", "data_root", "describe", "esm_collection_path", "esm_datastore", "load", "names",
           "open", "paths"]

#: the intake templates of ``products.yaml`` urlpaths: the data root and the catalog's own folder
ROOT_TEMPLATE = "{{ env('GEODIFF_DATA_ROOT') }}"
CATALOG_TEMPLATE = "{{ CATALOG_DIR }}"


def catalog_dir() -> Path:
    """The folder holding ``products.yaml`` and the ESM collections.

    >>> (catalog_dir() / "products.yaml").exists()
    True
    """
    env = os.environ.get("GEODIFF_CATALOG_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "data_catalog"


def load() -> dict[str, Any]:
    """``products.yaml`` as a dict (``{"metadata": {"version": 1, ...}, "sources": {...}}``).

    >>> load()["metadata"]["version"]
    1
    """
    import yaml

    path = catalog_dir() / "products.yaml"
    if not path.exists():
        raise DataError(f"no data catalog at {str(path)!r}; set GEODIFF_CATALOG_DIR to the data_catalog folder")
    with builtins.open(path, encoding="utf-8") as fh:
        spec = yaml.safe_load(fh)
    if not isinstance(spec, dict) or not isinstance(spec.get("sources"), dict):
        raise DataError(f"{str(path)!r} has no 'sources' mapping")
    return spec


def names() -> list[str]:
    """Names of the catalog's sources, sorted.

    >>> names()[:3]
    ['amsua_tmt', 'cmip6_thetao', 'en4_analysis']
    """
    return sorted(load()["sources"])


def describe(name: str) -> dict[str, Any]:
    """The catalog entry ``name`` in one mapping: ``description``, ``driver``, ``urlpath`` (intake template) or
    ``collection`` (an ESM collection file), ``adapter`` and its default ``args``, ``url``, ``doi``, ``licence``,
    ``reference``, ``variables`` and units.

    >>> entry = describe("en4_analysis")
    >>> entry["variables"]["temperature"]["units"], entry["licence"].startswith("Non-Commercial")
    ('kelvin', True)
    """
    sources = load()["sources"]
    if name not in sources:
        raise DataError(f"no catalog entry {name!r}; entries are {sorted(sources)}")
    source = sources[name]
    metadata = dict(source.get("metadata") or {})
    entry = {"description": source.get("description", ""), "driver": source.get("driver"),
             **{key: value for key, value in metadata.items() if key != "adapter_args"},
             "args": dict(metadata.get("adapter_args") or {})}
    location = dict(source.get("args") or {})
    if "urlpath" in location:
        entry["urlpath"] = location["urlpath"]
    if "obj" in location:
        entry["collection"] = str(location["obj"]).replace(CATALOG_TEMPLATE, "").lstrip("/")
    return entry


def esm_collection_path(name: str = "cmip6") -> Path:
    """Path of the ESM collection JSON ``data_catalog/<name>_collection.json``.

    >>> esm_collection_path().name
    'cmip6_collection.json'
    """
    path = catalog_dir() / f"{name}_collection.json"
    if not path.exists():
        raise DataError(f"no ESM collection {name!r} at {str(path)!r}")
    return path


def esm_datastore(name: str = "cmip6", root: str | os.PathLike | None = None) -> Any:
    """The intake-esm datastore of ESM collection ``name`` with its relative paths taken under the data root
    (``root`` or ``$GEODIFF_DATA_ROOT``), so that ``search(...).to_dataset_dict()`` works from any folder.

    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> store = esm_datastore(root=root)
    >>> store.df["path"][0].startswith(root)
    True
    """
    import json

    import pandas as pd

    try:
        import intake_esm
    except ImportError as err:  # an optional extra
        raise DataError("an ESM collection needs intake-esm: pip install 'geodiffusion[catalog]'") from err
    from geodiff.io.paths import join

    path = esm_collection_path(name)
    spec = json.loads(path.read_text())
    column = spec["assets"]["column_name"]
    base = data_root(root)
    table = pd.read_csv(path.parent / spec.pop("catalog_file"))
    table[column] = [str(join(base, value)) for value in table[column]]
    return intake_esm.esm_datastore({"esmcat": spec, "df": table})


def data_root(root: str | os.PathLike | None = None) -> Path:
    """``root``, else ``$GEODIFF_DATA_ROOT``; DataError when neither is set.

    >>> data_root("/data").as_posix()
    '/data'
    """
    if root is None:
        root = os.environ.get(load().get("metadata", {}).get("root_env", "GEODIFF_DATA_ROOT"))
    if root is None:
        raise DataError("no data root: pass root= or set the GEODIFF_DATA_ROOT environment variable")
    return Path(root)


def paths(name: str, root: str | os.PathLike | None = None) -> list[Path]:
    """The files of entry ``name`` under the data root (sorted); DataError when none match its ``urlpath``.

    >>> import tempfile
    >>> from geodiff.testing import products
    >>> root = products.write_catalog_tree(tempfile.mkdtemp(), only=["era5_single_levels"])
    >>> [p.name for p in paths("era5_single_levels", root)]
    ['data_stream-oper_stepType-accum.nc', 'data_stream-oper_stepType-instant.nc']
    """
    entry = describe(name)
    if "urlpath" not in entry:
        raise DataError(f"catalog entry {name!r} is an ESM collection; use geodiff.adapters.cmip6.search")
    pattern = str(entry["urlpath"]).replace(CATALOG_TEMPLATE, str(catalog_dir()))
    if ROOT_TEMPLATE in pattern:
        pattern = pattern.replace(ROOT_TEMPLATE, str(data_root(root)))
    found = sorted(Path(p) for p in glob.glob(pattern))
    if not found:
        raise DataError(f"catalog entry {name!r}: no file matches {pattern!r}")
    return found


def _adapter(entry: dict[str, Any], name: str) -> Any:
    target = str(entry.get("adapter", ""))
    module_name, _, attribute = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as err:
        raise DataError(f"catalog entry {name!r} names adapter {target!r}, which cannot be imported: {err}") from err


def open(name: str, *, root: str | os.PathLike | None = None, **kwargs: Any) -> Any:  # noqa: A001 - catalog.open
    """Open catalog entry ``name``: its adapter on its files, the entry's ``args`` updated with ``kwargs``.

    ESM-collection entries (CMIP6) call their adapter with the collection, ``root`` and the query/arguments
    (``target=`` is required for :func:`geodiff.adapters.cmip6.open_collection`). See the module example.
    """
    entry = describe(name)
    adapter = _adapter(entry, name)
    args = {**dict(entry.get("args") or {}), **kwargs}
    if "collection" in entry:
        collection = catalog_dir() / entry["collection"]
        return adapter(collection, root=data_root(root), **args)
    if entry.get("shipped"):  # a sample shipped with geodiff: its reader checks it against the sample manifest
        return adapter(**args)
    files = paths(name, root)
    if entry.get("single_file"):
        if len(files) != 1:
            raise DataError(f"catalog entry {name!r} expects one file, found {[f.name for f in files]}")
        return adapter(files[0], **args)
    return adapter(files, **args)


def check(name: str, ds: Any) -> None:
    """Check a raw file (path or opened Dataset) against entry ``name``: expected variables and their units.

    Raises :class:`~geodiff.errors.DataError` listing every missing variable and every unit that differs.

    >>> import xarray as xr
    >>> check("hirs_olr", xr.Dataset({"olr": ("x", [200.0], {"units": "W m-2"})}))
    >>> check("hirs_olr", xr.Dataset({"olr": ("x", [200.0], {"units": "K"})}))
    Traceback (most recent call last):
    ...
    geodiff.errors.DataError: data do not match catalog entry 'hirs_olr': variable 'olr' has units 'K', expected 'W m-2'
    """
    import xarray as xr

    entry = describe(name)
    if not isinstance(ds, xr.Dataset):
        ds = xr.open_dataset(ds, decode_times=False)
    problems = []
    for var, spec in (entry.get("variables") or {}).items():
        if var not in ds.variables:
            problems.append(f"variable {var!r} is missing")
            continue
        expected = spec.get("units")
        found = ds[var].attrs.get("units", ds[var].encoding.get("units"))
        if expected is not None and str(found) != str(expected):
            problems.append(f"variable {var!r} has units {found!r}, expected {expected!r}")
    if problems:
        raise DataError(f"data do not match catalog entry {name!r}: " + "; ".join(problems))
