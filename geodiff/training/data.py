"""Deterministic batches for training: which samples and crops make up the global batch of each step.

The global batch of step ``s`` (``batch_size`` samples, shared by all ranks) is the slice
``[s * batch_size, (s + 1) * batch_size)`` of an endless stream of epochs, epoch ``e`` being a permutation of the
``N`` samples drawn from a generator seeded by ``(seed, e)``. Rank ``r`` of ``W`` takes the contiguous share
``[r * b, (r + 1) * b)`` with ``b = batch_size / W`` (like ``DistributedSampler``, but the global batch does not
depend on ``W``). Random crops (``patch_size``) are drawn per step from ``(seed, s)`` for the whole global batch.
So a batch is a pure function of ``(seed, step)``: resuming needs only the step, and one process sees the same
global batch as several.

Example
-------
>>> from geodiff.training.data import BatchPlan
>>> plan = BatchPlan(num_samples=5, batch_size=4, seed=0, field_shape=(1, 8, 8), patch_size=(4, 4))
>>> plan.indices(0).tolist() == plan.indices(0).tolist(), plan.indices(0).shape, plan.crops(3).shape
(True, torch.Size([4]), torch.Size([4, 2]))
>>> sorted(plan.indices(0).tolist() + plan.indices(1).tolist()[:1])  # epoch 0 visits every sample once
[0, 1, 2, 3, 4]
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from geodiff.errors import DataError, GridError

__all__ = ["derive_seed", "BatchPlan", "crop_batch", "LocalBatchSampler", "stack_fields", "stack_items", "split_item"]


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed derived from ``seed`` and ``keys`` (ints or strings), well mixed (``numpy.random.SeedSequence``).

    >>> derive_seed(0, "noise", 3) == derive_seed(0, "noise", 3) != derive_seed(0, "noise", 4)
    True
    """
    words = [int(seed)] + [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in keys]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> np.uint64(1))


class BatchPlan:
    """Sample indices and crop offsets of every global batch, a pure function of ``(seed, step)``.

    ``num_samples`` fields of shape ``field_shape = (C, H, W)``; ``patch_size = (h, w)`` crops or None.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        seed: int,
        field_shape: tuple[int, int, int],
        patch_size: tuple[int, int] | None = None,
    ):
        if num_samples < 1:
            raise DataError("data holds no sample")
        self.num_samples, self.batch_size, self.seed = int(num_samples), int(batch_size), int(seed)
        self.field_shape = tuple(int(n) for n in field_shape)
        self.patch_size = None if patch_size is None else (int(patch_size[0]), int(patch_size[1]))
        if self.patch_size is not None:
            _, height, width = self.field_shape
            h, w = self.patch_size
            if not (0 < h <= height and 0 < w <= width):
                raise GridError(f"patch_size must fit in the field (H, W) = ({height}, {width}), got {patch_size}")
        self._epochs: dict[int, Tensor] = {}

    def _epoch(self, epoch: int) -> Tensor:
        if epoch not in self._epochs:
            if len(self._epochs) > 2:
                self._epochs.pop(min(self._epochs))
            generator = torch.Generator().manual_seed(derive_seed(self.seed, "epoch", epoch))
            self._epochs[epoch] = torch.randperm(self.num_samples, generator=generator)
        return self._epochs[epoch]

    def indices(self, step: int) -> Tensor:
        """Sample indices of the global batch of ``step``, int64 ``[batch_size]``."""
        start = step * self.batch_size
        parts, position = [], start
        while position < start + self.batch_size:
            epoch, offset = divmod(position, self.num_samples)
            take = min(self.num_samples - offset, start + self.batch_size - position)
            parts.append(self._epoch(epoch)[offset : offset + take])
            position += take
        return torch.cat(parts)

    def crops(self, step: int) -> Tensor | None:
        """``(top, left)`` crop corners of the global batch of ``step``, int64 ``[batch_size, 2]`` (None: no crops)."""
        if self.patch_size is None:
            return None
        _, height, width = self.field_shape
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "crop", step))
        top = torch.randint(0, height - self.patch_size[0] + 1, (self.batch_size,), generator=generator)
        left = torch.randint(0, width - self.patch_size[1] + 1, (self.batch_size,), generator=generator)
        return torch.stack([top, left], dim=1)

    def state(self, step: int) -> dict[str, Any]:
        """JSON position of the sampler before ``step``: seed, epoch and offset in the epoch's permutation."""
        epoch, offset = divmod(step * self.batch_size, self.num_samples)
        return {"seed": self.seed, "epoch": epoch, "offset": offset, "batch_size": self.batch_size,
                "num_samples": self.num_samples}


def crop_batch(x: Tensor, corners: Tensor | None, patch_size: tuple[int, int] | None) -> Tensor:
    """Crop ``x`` (``[B, C, H, W]``, or one ``[C, H, W]`` field shared by the batch) at ``corners [B, 2]``.

    >>> crop_batch(torch.arange(16.0).reshape(1, 1, 4, 4), torch.tensor([[1, 2]]), (2, 2)).flatten().tolist()
    [6.0, 7.0, 10.0, 11.0]
    """
    if corners is None or patch_size is None:
        return x
    h, w = patch_size
    fields = x.unsqueeze(0).expand(len(corners), *x.shape) if x.ndim == 3 else x
    return torch.stack([f[:, t : t + h, l : l + w] for f, (t, l) in zip(fields, corners.tolist())])


class LocalBatchSampler:
    """Index lists of this rank's share of the global batches of steps ``start .. stop - 1`` (for a DataLoader)."""

    def __init__(self, plan: BatchPlan, start: int, stop: int, rank: int, world_size: int):
        self.plan, self.start, self.stop = plan, start, stop
        self.local = plan.batch_size // world_size
        self.rank = rank

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            yield self.plan.indices(step)[self.rank * self.local : (self.rank + 1) * self.local].tolist()

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def _check_field(item: Any) -> Tensor:
    if not isinstance(item, Tensor) or item.ndim != 3:
        shape = list(item.shape) if isinstance(item, Tensor) else type(item).__name__
        raise DataError(f"dataset items must be float32 tensors [C, H, W] or (x, cond) pairs, got {shape}")
    if item.dtype != torch.float32:
        raise DataError(f"dataset items must be float32 tensors [C, H, W], got dtype {item.dtype}")
    return item


def stack_fields(items: list[Any]) -> Tensor:
    """Collate dataset items (float32 ``[C, H, W]`` tensors) into ``[B, C, H, W]``."""
    return torch.stack([_check_field(item) for item in items])


def split_item(item: Any) -> tuple[Tensor, dict[str, Tensor] | None, Tensor | None]:
    """A dataset item as ``(x [C, H, W], cond or None, mask or None)``: items are fields, ``(field, {name:
    tensor})`` pairs or ``(field, cond, mask)`` triples whose ``mask`` (bool ``[C, H, W]``, True = valid) says which
    cells of that item count in the loss (e.g. the land of a patch cut at a varying position)."""
    if isinstance(item, (tuple, list)):
        if len(item) not in (2, 3) or not isinstance(item[1], dict):
            raise DataError("dataset items must be tensors [C, H, W], (x, cond) pairs or (x, cond, mask) triples "
                            f"with cond a dict of tensors; got a {type(item).__name__} of length {len(item)}")
        x, cond = _check_field(item[0]), item[1]
        for name, value in cond.items():
            if not isinstance(name, str) or not isinstance(value, Tensor):
                raise DataError(f"conditioning entry {name!r} must be a tensor under a str key, got "
                                f"{type(value).__name__}")
        mask = item[2] if len(item) == 3 else None
        if mask is not None and (not isinstance(mask, Tensor) or mask.dtype != torch.bool
                                 or tuple(mask.shape) != tuple(x.shape)):
            got = f"{mask.dtype} {list(mask.shape)}" if isinstance(mask, Tensor) else type(mask).__name__
            raise DataError(f"the mask of a dataset item must be a bool tensor [C, H, W] = {list(x.shape)}, got {got}")
        return x, cond, mask
    return _check_field(item), None, None


def stack_items(items: list[Any]) -> tuple[Tensor, dict[str, Tensor] | None, Tensor | None]:
    """Collate fields, ``(x, cond)`` pairs or ``(x, cond, mask)`` triples into ``(x [B, C, H, W], {name: [B, ...]}
    or None, mask [B, C, H, W] or None)``.

    >>> x, cond, mask = stack_items([(torch.zeros(1, 2, 2), {"c": torch.ones(3)})] * 2)
    >>> list(x.shape), list(cond["c"].shape), mask
    ([2, 1, 2, 2], [2, 3], None)
    """
    parts = [split_item(item) for item in items]
    x = torch.stack([p[0] for p in parts])
    masks = [p[2] for p in parts]
    if any(m is None for m in masks) and not all(m is None for m in masks):
        raise DataError("either every dataset item carries a mask or none does")
    mask = None if masks[0] is None else torch.stack(masks)  # type: ignore[arg-type]
    conds = [p[1] for p in parts]
    if all(c is None for c in conds):
        return x, None, mask
    keys = set(conds[0] or {})
    if any(c is None or set(c) != keys for c in conds):
        raise DataError(f"every dataset item must carry the same conditioning keys; expected {sorted(keys)}")
    return x, {k: torch.stack([c[k] for c in conds]) for k in sorted(keys)}, mask  # type: ignore[index]
