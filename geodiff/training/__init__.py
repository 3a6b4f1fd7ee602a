"""Training: the one loop (:func:`train`) with pluggable objectives, EMA, checkpoints with exact resume, torchrun data
parallelism.

Example
-------
>>> from geodiff.training import DenoisingObjective, Objective, TrainResult, train
>>> callable(train), TrainResult.__name__, issubclass(DenoisingObjective, Objective)
(True, 'TrainResult', True)
"""

from geodiff.training.checkpoint import latest_checkpoint, read_checkpoint
from geodiff.training.ema import EMA
from geodiff.training.objectives import AutoencoderObjective, DenoisingObjective, Objective, RegressionObjective
from geodiff.training.trainer import TrainResult, train

__all__ = [
    "EMA",
    "AutoencoderObjective",
    "DenoisingObjective",
    "Objective",
    "RegressionObjective",
    "TrainResult",
    "latest_checkpoint",
    "read_checkpoint",
    "train",
]
