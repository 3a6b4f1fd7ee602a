"""Between xarray and torch: the codec (Dataset <-> tensors), normalisation statistics and the model bundle; and
where data live (:mod:`geodiff.io.paths`: local paths and fsspec URLs, netCDF and zarr).

The torch-side classes are imported on first use, so the adapters can open data through
:mod:`geodiff.io.paths` without importing torch.

Example
-------
>>> from geodiff.io import Codec, ModelBundle, Normalizer, load
>>> Normalizer.from_range({"thetao": (-5.0, 40.0)})
Normalizer(thetao:affine)
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module, imported on first use
_LAZY: dict[str, str] = {
    "AnomalyNormalizer": "geodiff.io.anomaly",
    "ModelBundle": "geodiff.io.bundle",
    "load": "geodiff.io.bundle",
    "Codec": "geodiff.io.codec",
    "Normalizer": "geodiff.io.normalize",
}

__all__ = ["Codec", "Normalizer", "AnomalyNormalizer", "ModelBundle", "load"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'geodiff.io' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
