"""geodiff: score-based (diffusion) models for geoscience fields, xarray in and xarray out.

The public entry points are imported lazily so that ``import geodiff`` stays light. Progress and results are
logged through the ``geodiff`` logger (``logging.getLogger("geodiff")``, silent until the application configures
logging; the ``geodiff`` command logs at INFO level to stderr).

Example
-------
>>> import geodiff
>>> callable(geodiff.train) and callable(geodiff.load)
True
>>> "heun" in geodiff.registry.available("sampler")
True
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from geodiff import accessor, errors, registry  # accessor registers ``.geodiff`` on xarray objects
from geodiff.errors import GeodiffError

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

# public name -> "module:attribute", imported on first use
_LAZY: dict[str, str] = {
    "train": "geodiff.training.trainer:train",
    "fit": "geodiff.training.fit:fit",
    "fit_downscaling": "geodiff.training.fit_downscaling:fit_downscaling",
    "load": "geodiff.io.bundle:load",
    "ModelBundle": "geodiff.io.bundle:ModelBundle",
    "Codec": "geodiff.io.codec:Codec",
    "Normalizer": "geodiff.io.normalize:Normalizer",
    "AnomalyNormalizer": "geodiff.io.anomaly:AnomalyNormalizer",
    "Denoiser": "geodiff.diffusion.denoiser:Denoiser",
    "reconstruct": "geodiff.pipelines.reconstruct:reconstruct",
    "assimilate": "geodiff.pipelines.assimilate:assimilate",
    "downscale": "geodiff.pipelines.downscale:downscale",
}

__all__ = ["GeodiffError", "__version__", "errors", "registry", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module_name, _, attribute = _LAZY[name].partition(":")
        value = getattr(importlib.import_module(module_name), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'geodiff' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
