"""Exponential moving average (EMA) of a model's weights.

After update ``n`` (counting from 1) the averaged weights are ``w_ema <- d_n w_ema + (1 - d_n) w`` with
``d_n = min(decay, (1 + n) / (10 + n))`` (the warm-up of ``diffusers.training_utils.EMAModel``), so a short run is
not dominated by the initial weights. The average is kept as a full copy of the model (``ema.model``), so it can be
used for sampling directly; floating-point buffers are averaged the same way, other buffers are copied. Its state is
plain tensors (``state_dict``) plus the number of updates, which checkpoints store as safetensors + JSON.

Example
-------
>>> import torch
>>> from geodiff.training.ema import EMA
>>> net = torch.nn.Linear(2, 1)
>>> ema = EMA(net, decay=0.9)
>>> with torch.no_grad():
...     _ = net.weight.fill_(1.0)
>>> ema.update(net)  # the first update copies the weights (d_1 = 0)
>>> ema.model.weight.tolist()
[[1.0, 1.0]]
>>> ema.decay_at(100)
0.9
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from geodiff.errors import CheckpointError, ConfigError

__all__ = ["EMA"]


class EMA:
    """EMA of the weights of ``model`` (an ``nn.Module``), kept in ``self.model`` (a frozen copy in eval mode)."""

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.num_updates = 0
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)

    def decay_at(self, n: int) -> float:
        """Decay used by update number ``n`` (1-based): ``min(decay, (1 + n) / (10 + n))``; 0 for ``n <= 1``."""
        if n <= 1:
            return 0.0
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards the current weights of ``model`` (same architecture as ``self.model``)."""
        self.num_updates += 1
        weight = 1.0 - self.decay_at(self.num_updates)
        averaged = dict(self.model.named_parameters())
        for name, param in model.named_parameters():
            averaged[name].lerp_(param.detach(), weight)
        ema_buffers = dict(self.model.named_buffers())
        for name, buffer in model.named_buffers():
            target = ema_buffers.get(name)
            if target is None or target.shape != buffer.shape:
                continue  # e.g. a mask swapped in for one batch of crops
            if target.is_floating_point():
                target.lerp_(buffer, weight)
            else:
                target.copy_(buffer)

    def state_dict(self) -> dict[str, Tensor]:
        """The averaged weights (the model's ``state_dict``)."""
        return self.model.state_dict()

    def load_state_dict(self, tensors: dict[str, Tensor], num_updates: int) -> None:
        """Restore averaged weights written by :meth:`state_dict` and the update count."""
        try:
            self.model.load_state_dict(tensors, strict=True)
        except RuntimeError as err:
            raise CheckpointError(f"EMA weights do not fit the model: {err}") from err
        self.num_updates = int(num_updates)

    @property
    def config(self) -> dict[str, Any]:
        """JSON state besides the weights."""
        return {"decay": self.decay, "num_updates": self.num_updates}
