"""Training of denoisers: the loop (:func:`train`), EMA, checkpoints with exact resume, torchrun data parallelism.

Example
-------
>>> from geodiff.training import TrainResult, train
>>> callable(train), TrainResult.__name__
(True, 'TrainResult')
"""

from geodiff.training.checkpoint import latest_checkpoint, read_checkpoint
from geodiff.training.ema import EMA
from geodiff.training.trainer import TrainResult, train

__all__ = ["EMA", "TrainResult", "latest_checkpoint", "read_checkpoint", "train"]
