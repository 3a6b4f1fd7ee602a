"""Training pairs for conditional downscaling: high-resolution truth patches with their coarse version and sources.

:class:`DownscalingPairs` is a map-style dataset for :func:`geodiff.train`: item ``i`` is
``(x [C, ph, pw], {"coarse": [C, ph/f, pw/f], <source>: [C_s, ph r_s, pw r_s], ...})`` -- a patch of a
normalised high-resolution field, the area mean of that patch by the integer factor ``f`` (land-aware,
:class:`~geodiff.operators.CoarsenOperator`; or a given coarse product) and the same area cut from every auxiliary
source on its own grid (``r_s = H_s / H``). Patches start on multiples of the alignment that cuts every grid on
whole cells, at positions drawn from ``(seed, i)``: the dataset is deterministic, and ``patches_per_field``
different patches are taken from each field. Land cells are 0 in the field (normalised data) and in the coarse
field where a whole block is land. With a ``mask``, item ``i`` is the triple ``(x, cond, mask [C, ph, pw])``: the
patch's own validity mask, so that :func:`geodiff.train` leaves its land out of the loss.

Example
-------
>>> import torch
>>> from geodiff.training.pairs import DownscalingPairs
>>> fields = torch.randn(3, 1, 32, 48)
>>> pairs = DownscalingPairs(fields, 4, sources={"topography": torch.randn(1, 1, 32, 48)}, patch=(16, 16),
...                          patches_per_field=2)
>>> x, cond = pairs[0]
>>> len(pairs), tuple(x.shape), {k: tuple(v.shape) for k, v in cond.items()}
(6, (1, 16, 16), {'coarse': (1, 4, 4), 'topography': (1, 16, 16)})
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from geodiff.diffusion.patches import alignment, source_window
from geodiff.errors import ConfigError, DataError, GridError
from geodiff.grid import channel_mask
from geodiff.operators import CoarsenOperator

__all__ = ["DownscalingPairs", "COARSE", "downscaling_metadata"]

#: name of the coarse-field source
COARSE = "coarse"


def downscaling_metadata(
    factor: int, patch: Sequence[int], target: Sequence[str], sources: Mapping[str, tuple[Sequence[str], Any]],
    *, area_weights: str | None = "coslat",
) -> dict[str, Any]:
    """The bundle metadata entry ``"downscaling"`` for :func:`geodiff.downscale`.

    ``sources``: ``{name: (variables, ratio)}`` of the auxiliary sources (``ratio`` = source cells per
    high-resolution cell, e.g. 1 or ``"1/2"``); the coarse source ``(target, 1/factor)`` is added.
    ``area_weights``: the weights of the coarse area means the model was trained with (``"coslat"`` or None for
    equal weights; recorded when not the default ``"coslat"``).

    >>> downscaling_metadata(4, (32, 32), ["tas"], {"topography": (["orog"], 1)})["sources"]["coarse"]
    {'variables': ['tas'], 'ratio': '1/4'}
    """
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ConfigError(f"factor must be a positive integer, got {factor!r}")
    entries = {COARSE: {"variables": list(target), "ratio": str(Fraction(1, factor))}}
    for name, (variables, ratio) in sources.items():
        if name == COARSE:
            raise ConfigError(f"source name {COARSE!r} is reserved for the coarse field")
        entries[name] = {"variables": list(variables), "ratio": str(Fraction(ratio))}
    if area_weights not in ("coslat", None):
        raise ConfigError(f"area_weights must be 'coslat' or None, got {area_weights!r}")
    spec = {"factor": factor, "patch": [int(p) for p in patch], "target": list(target), "sources": entries}
    return spec if area_weights == "coslat" else {**spec, "area_weights": area_weights}


def _patch_seed(seed: int, index: int) -> int:
    digest = hashlib.sha256(f"{int(seed)}|pairs|{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class DownscalingPairs(Dataset):
    """``(x, cond)`` patches of high-resolution fields with their coarse version and sources (module docstring).

    Parameters
    ----------
    fields: normalised high-resolution truth ``[N, C, H, W]`` (land = 0).
    factor: integer coarsening factor of the coarse field.
    sources: ``{name: [N or 1, C_s, H_s, W_s]}`` auxiliary sources on their own grids over the same area (a
        source with one entry, e.g. topography, is shared by every field).
    coarse: a given coarse product ``[N, C, H/f, W/f]`` (normalised) instead of the area mean of ``fields``.
    mask: ``[C, H, W]`` or ``[H, W]`` bool, True = valid (ocean / inside the domain); items then carry their
        patch of it (module docstring).
    grid_lat: latitudes ``[H]`` for area (cos-lat) weights of the coarsening; None: equal weights.
    patch: ``(ph, pw)``; None: whole fields.
    patches_per_field: patches per field (dataset length ``N * patches_per_field``).
    seed: seed of the patch positions.
    """

    def __init__(
        self,
        fields: Tensor,
        factor: int,
        *,
        sources: Mapping[str, Tensor] | None = None,
        coarse: Tensor | None = None,
        mask: Any = None,
        grid_lat: Any = None,
        patch: tuple[int, int] | None = None,
        patches_per_field: int = 1,
        seed: int = 0,
    ):
        fields = torch.as_tensor(fields, dtype=torch.float32)
        if fields.ndim != 4 or fields.shape[0] < 1:
            raise DataError(f"fields must be [N, C, H, W] with N >= 1, got {tuple(fields.shape)}")
        if not torch.isfinite(fields).all():
            raise DataError("fields hold NaN/inf values; land cells must be 0 in normalised data")
        n, channels, height, width = fields.shape
        operator = CoarsenOperator((channels, height, width), factor, mask=mask, grid_lat=grid_lat)
        if coarse is None:
            with torch.no_grad():
                coarse = operator.coarsen(fields.to(torch.float64)).to(torch.float32)
        coarse = torch.as_tensor(coarse, dtype=torch.float32)
        if tuple(coarse.shape) != (n, *operator.coarse_shape):
            raise GridError(f"coarse must be [N, C, H/f, W/f] = {[n, *operator.coarse_shape]}, got "
                            f"{list(coarse.shape)}")
        self.fields = fields
        self.mask = None if mask is None else torch.from_numpy(np.array(channel_mask(
            mask.detach().cpu().numpy() if isinstance(mask, Tensor) else mask, (channels, height, width))))
        self.sources = {COARSE: torch.nan_to_num(coarse, nan=0.0)}
        for name, value in (sources or {}).items():
            if name == COARSE:
                raise ConfigError(f"source name {COARSE!r} is reserved for the coarse field")
            value = torch.as_tensor(value, dtype=torch.float32)
            if value.ndim != 4 or value.shape[0] not in (1, n):
                raise GridError(f"source {name!r} must be [N or 1, C_s, H_s, W_s], got {list(value.shape)}")
            if not torch.isfinite(value).all():
                raise DataError(f"source {name!r} holds NaN/inf values; fill them (e.g. 0 after normalising)")
            self.sources[name] = value
        self.align = alignment({k: v[:1] for k, v in self.sources.items()}, (height, width))
        self.patch = (height, width) if patch is None else tuple(int(p) for p in patch)
        ph, pw = self.patch
        if ph > height or pw > width or ph % self.align or pw % self.align:
            raise ConfigError(f"patch {self.patch} must fit in the {height} x {width} fields and be a multiple of "
                              f"{self.align} (so that every source is cut on whole cells)")
        if isinstance(patches_per_field, bool) or not isinstance(patches_per_field, int) or patches_per_field < 1:
            raise ConfigError(f"patches_per_field must be a positive integer, got {patches_per_field!r}")
        self.factor = operator.factor
        self.patches_per_field = patches_per_field
        self.seed = int(seed)

    def __len__(self) -> int:
        return self.fields.shape[0] * self.patches_per_field

    def window(self, index: int) -> tuple[int, tuple[int, int, int, int]]:
        """``(field index, (i0, i1, j0, j1))`` of item ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} pairs")
        n = index % self.fields.shape[0]
        height, width = self.fields.shape[-2:]
        ph, pw = self.patch
        generator = torch.Generator().manual_seed(_patch_seed(self.seed, index))
        i0 = int(torch.randint((height - ph) // self.align + 1, (1,), generator=generator)) * self.align
        j0 = int(torch.randint((width - pw) // self.align + 1, (1,), generator=generator)) * self.align
        return n, (i0, i0 + ph, j0, j0 + pw)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]] | tuple[Tensor, dict[str, Tensor], Tensor]:
        """``(x, cond)``, or ``(x, cond, mask)`` when the pairs have a mask (module docstring)."""
        n, (i0, i1, j0, j1) = self.window(index)
        hw = tuple(self.fields.shape[-2:])
        cond = {}
        for name, value in self.sources.items():
            row = value[n] if value.shape[0] > 1 else value[0]
            cond[name] = source_window(row, hw, (i0, i1, j0, j1), name).contiguous()
        x = self.fields[n, :, i0:i1, j0:j1].contiguous()
        return (x, cond) if self.mask is None else (x, cond, self.mask[:, i0:i1, j0:j1].contiguous())
