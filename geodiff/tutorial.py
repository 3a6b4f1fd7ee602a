"""Shipped sample data with provenance (like ``xarray.tutorial``): the files inside ``geodiff/data``.

Every shipped file has an entry in the sample manifest (``data_catalog/samples.yaml``, copied into the package as
``geodiff/data/samples.yaml``) with its provenance, licence and sha256; :func:`open_dataset` refuses a file whose
sha256 differs from its entry. What ships:

==============================  ================================================================================
name                            what
==============================  ================================================================================
``woa_monthly_temperature``     World Ocean Atlas monthly temperature, 0-1000 m, 2 degree (:mod:`geodiff.adapters.woa`)
:func:`downscaling_paths`       UM A1B annual-mean air temperature over North America (held-out years), ETOPO5
                                topography on the grid refined 2x, and the conditional model trained on them
:func:`prior_path`              the small diffusion prior trained on the WOA sample (``examples/train_woa_prior.py``)
==============================  ================================================================================

Example
-------
>>> from geodiff import tutorial
>>> ds = tutorial.open_dataset("woa_monthly_temperature")
>>> dict(ds.sizes)
{'time': 12, 'depth': 19, 'lat': 90, 'lon': 180}
>>> sorted(tutorial.downscaling_paths()), tutorial.prior_path().name
(['heldout', 'model', 'topography'], 'woa_prior')
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import xarray as xr

from geodiff.errors import DataError

__all__ = [
    "WOA_SAMPLE",
    "downscaling_paths",
    "file_sha256",
    "load_manifest",
    "manifest_path",
    "open_dataset",
    "open_downscaling",
    "prior_path",
    "sample_path",
]

#: manifest name of the World Ocean Atlas sample
WOA_SAMPLE = "woa_monthly_temperature"

_DATA_DIR = Path(__file__).resolve().parent / "data"
_REPO_MANIFEST = Path(__file__).resolve().parents[1] / "data_catalog" / "samples.yaml"
_PACKAGED_MANIFEST = _DATA_DIR / "samples.yaml"


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks.

    >>> len(file_sha256(sample_path()))
    64
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_path() -> Path:
    """The sample manifest: ``data_catalog/samples.yaml`` of a source checkout, else the packaged copy.

    Both copies are written by ``data_catalog/make_woa_sample.py`` and are identical.

    >>> manifest_path().name
    'samples.yaml'
    """
    return _REPO_MANIFEST if _REPO_MANIFEST.is_file() else _PACKAGED_MANIFEST


def load_manifest(path: str | Path | None = None) -> dict[str, Any]:
    """The ``samples`` mapping of the manifest (name -> entry with ``file``, ``sha256``, ``source``, ...).

    >>> entry = load_manifest()["woa_monthly_temperature"]
    >>> entry["source"]["package"], entry["source"]["package_version"]
    ('ferret-datasets', '7.6.0-5')
    """
    import yaml

    path = Path(path) if path is not None else manifest_path()
    if not path.is_file():
        raise DataError(f"sample manifest {str(path)!r} does not exist")
    with open(path, encoding="utf-8") as handle:
        content = yaml.safe_load(handle)
    if not isinstance(content, dict) or not isinstance(content.get("samples"), dict):
        raise DataError(f"sample manifest {str(path)!r} has no 'samples' mapping")
    return content["samples"]


def _entry(name: str) -> dict[str, Any]:
    samples = load_manifest()
    if name not in samples:
        raise DataError(f"no sample named {name!r} in {manifest_path()}; available: {sorted(samples)}")
    return samples[name]


def sample_path(name: str = WOA_SAMPLE) -> Path:
    """Path of the shipped sample file ``name`` (inside ``geodiff/data``), from its manifest entry.

    >>> sample_path().name
    'woa_monthly_temperature.nc'
    """
    return _DATA_DIR / _entry(name)["file"]


def open_dataset(name: str = WOA_SAMPLE, *, chunks: Any = None, verify: bool = True) -> xr.Dataset:
    """Open the shipped sample ``name`` lazily, after checking its sha256 against the manifest.

    Parameters
    ----------
    name : manifest entry, default ``"woa_monthly_temperature"``.
    chunks : passed to :func:`xarray.open_dataset` (``None``: lazily indexed numpy; ``{}``: dask, one chunk per
        stored chunk).
    verify : check the file's sha256 (``DataError`` on mismatch); the check reads the file once (~3 MB).

    >>> ds = open_dataset()
    >>> ds.temperature.attrs["standard_name"], ds.depth.attrs["positive"]
    ('sea_water_temperature', 'down')
    >>> bool(ds.sea_mask.isel(depth=0).sel(lat=0.5, lon=-149.5))  # central Pacific is ocean
    True
    """
    entry = _entry(name)
    path = _DATA_DIR / entry["file"]
    if not path.is_file():
        raise DataError(f"sample {name!r}: file {str(path)!r} is missing; remake it with {entry.get('made_by')}")
    if verify:
        actual = file_sha256(path)
        if actual != entry["sha256"]:
            raise DataError(
                f"sample {name!r}: sha256 of {str(path)!r} is {actual}, the manifest expects {entry['sha256']}; "
                f"the file is corrupt or was changed without updating {manifest_path()}"
            )
    return xr.open_dataset(path, chunks=chunks)


def downscaling_paths() -> dict[str, Path]:
    """Paths of the shipped downscaling sample (``geodiff/data/downscaling``, made by
    ``data_catalog/make_downscaling_sample.py`` and ``benchmarks/downscaling.py --train``):
    ``heldout`` (UM A1B annual-mean air temperature over North America, held-out years 2060-2099),
    ``topography`` (ETOPO5 orography and land fraction on the grid refined 2x) and ``model`` (the conditional model
    bundle trained on 1860-2059; its ``satellite`` source is a proxy derived from the temperature itself).

    >>> downscaling_paths()["model"].name
    'north_america_model'
    """
    folder = _DATA_DIR / "downscaling"
    return {"heldout": folder / "north_america_tas_heldout.nc", "topography": folder / "north_america_topography.nc",
            "model": folder / "north_america_model"}


def open_downscaling() -> tuple[xr.Dataset, xr.Dataset]:
    """``(heldout fields, topography)`` of the shipped downscaling sample (:func:`downscaling_paths`), in memory.

    >>> fields, topography = open_downscaling()
    >>> dict(fields.sizes), dict(topography.sizes)
    ({'time': 40, 'lat': 36, 'lon': 48}, {'lat': 72, 'lon': 96})
    """
    paths = downscaling_paths()
    coder = xr.coders.CFDatetimeCoder(use_cftime=True)
    with xr.open_dataset(paths["heldout"], decode_times=coder) as fields, xr.open_dataset(paths["topography"]) as topo:
        return fields.load(), topo.load()


def prior_path() -> Path:
    """Folder of the small pretrained prior bundle trained on the WOA sample (``geodiff/data/woa_prior``).

    >>> (prior_path() / "manifest.json").is_file()
    True
    """
    return _DATA_DIR / "woa_prior"
