"""Between xarray and torch: the codec (Dataset <-> tensors), normalisation statistics and the model bundle.

Example
-------
>>> from geodiff.io import Codec, ModelBundle, Normalizer, load
>>> Normalizer.from_range({"thetao": (-5.0, 40.0)})
Normalizer(thetao:affine)
"""

from geodiff.io.anomaly import AnomalyNormalizer
from geodiff.io.bundle import ModelBundle, load
from geodiff.io.codec import Codec
from geodiff.io.normalize import Normalizer

__all__ = ["Codec", "Normalizer", "AnomalyNormalizer", "ModelBundle", "load"]
