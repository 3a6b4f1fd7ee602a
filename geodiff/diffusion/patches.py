"""Patch-wise denoising of domains larger than a model's training patch, blended without seams.

:class:`PatchDenoiser` turns a denoiser trained on ``ph x pw`` patches into a denoiser of a whole domain
``[B, C, H, W]``: at every call (so at every sampler step) the domain is cut into overlapping windows, each window
is denoised with its own crop of the conditioning sources, and the window estimates ``x0_hat`` are blended with
smooth weights ``w`` (a cosine taper over the overlap, 1 inside and on the domain border):

    ``x0_hat(cell) = sum_k w_k(cell) D(x_k, sigma, cond_k)(cell) / sum_k w_k(cell)``

The weights sum to one at every cell, so a denoiser that acts cell by cell (identity, a constant, any
pointwise map) gives exactly the same field as without patches: the blending itself creates no seam. Because the
blend is a fixed linear combination, the patch denoiser is differentiable and works under guidance (MMPS takes
vector-Jacobian products through it).

**Masked domains** (``mask [C, H, W]``, True = valid, e.g. the ocean): each window's denoiser call gets its crop of
the mask (``denoiser(x_k, sigma, cond_k, mask=mask_k)``, the call of a masked
:class:`~geodiff.diffusion.denoiser.Denoiser`, whose estimate is 0 on masked cells), and windows without a
valid cell are skipped: such a window only adds zeros, so the result is the same, and an all-land tile costs
nothing. Cells that no computed window covers are 0.

Conditioning sources live on their own grids spanning the same area as the field (cell edges aligned), e.g. the
field coarsened by an integer factor (``[C, H/4, W/4]``) or a finer topography (``[1, 2H, 2W]``): a window
``[i0, i1) x [j0, j1)`` of the field is ``[i0 r, i1 r) x [j0 r, j1 r)`` on a source with ``r = H_s / H``, which
must land on whole source cells (windows start on multiples of :func:`alignment`).

Example
-------
>>> import torch
>>> from geodiff.diffusion.patches import PatchDenoiser
>>> patched = PatchDenoiser(lambda x, s, cond=None: torch.tanh(x), patch=(8, 8), overlap=(4, 4))
>>> x = torch.randn(2, 1, 20, 28)
>>> torch.allclose(patched(x, 1.0), torch.tanh(x), atol=1e-6)
True
>>> [w for w in patched.windows(20, 28, align=1)][:2]
[(0, 8, 0, 8), (0, 8, 4, 12)]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from fractions import Fraction

import torch
from torch import Tensor

from geodiff.errors import ConfigError, GridError

__all__ = ["PatchDenoiser", "alignment", "source_window", "source_ratio", "window_starts", "blend_weight"]


def source_ratio(source: Tensor, field_hw: tuple[int, int], name: str = "source") -> tuple[Fraction, Fraction]:
    """Source cells per field cell ``(H_s / H, W_s / W)`` of a source ``[..., H_s, W_s]`` (exact fractions)."""
    height, width = field_hw
    hs, ws = int(source.shape[-2]), int(source.shape[-1])
    if hs < 1 or ws < 1:
        raise GridError(f"source {name!r} has an empty grid {tuple(source.shape)}")
    return Fraction(hs, height), Fraction(ws, width)


def alignment(cond: Mapping[str, Tensor] | None, field_hw: tuple[int, int]) -> int:
    """Smallest step (field cells) at which windows cut every source on whole cells: the lcm of the source
    ratios' denominators (4 for a source coarsened 4x, 1 for sources as fine or finer).

    >>> alignment({"coarse": torch.zeros(1, 1, 3, 4), "topo": torch.zeros(1, 1, 24, 32)}, (12, 16))
    4
    """
    step = 1
    for name, source in (cond or {}).items():
        for ratio in source_ratio(source, field_hw, name):
            step = step * ratio.denominator // math.gcd(step, ratio.denominator)
    return step


def source_window(source: Tensor, field_hw: tuple[int, int], window: tuple[int, int, int, int], name: str = "source"):
    """Crop of ``source [..., H_s, W_s]`` covering the field window ``(i0, i1, j0, j1)`` (module docstring)."""
    ry, rx = source_ratio(source, field_hw, name)
    i0, i1, j0, j1 = window
    bounds = [i0 * ry, i1 * ry, j0 * rx, j1 * rx]
    if any(b.denominator != 1 for b in bounds):
        raise GridError(
            f"window {window} of a {field_hw[0]} x {field_hw[1]} field does not fall on whole cells of source "
            f"{name!r} ({source.shape[-2]} x {source.shape[-1]}); start windows on multiples of "
            f"{alignment({name: source}, field_hw)}"
        )
    a0, a1, b0, b1 = (int(b) for b in bounds)
    return source[..., a0:a1, b0:b1]


def window_starts(size: int, patch: int, overlap: int, align: int) -> list[int]:
    """Window starts along one axis: from 0, steps of ``patch - overlap`` rounded down to ``align``, the last window
    ending on the border; one window when ``size <= patch``.

    >>> window_starts(20, 8, 4, 1), window_starts(20, 8, 2, 4)
    ([0, 4, 8, 12], [0, 4, 8, 12])
    """
    if size <= patch:
        return [0]
    step = (patch - overlap) // align * align
    if step < 1:
        raise ConfigError(f"patch {patch} with overlap {overlap} leaves no step that is a multiple of {align}")
    if (size - patch) % align:
        raise GridError(f"a domain of {size} cells with patches of {patch} cannot end on a multiple of {align}")
    starts = list(range(0, size - patch, step))
    return starts + [size - patch]


def blend_weight(length: int, taper: int, left: bool, right: bool, dtype=torch.float64) -> Tensor:
    """1-D weights ``[length]``: a raised-cosine ramp over ``taper`` cells on the sides that overlap a neighbour
    (``left``/``right``), 1 elsewhere; strictly positive.

    >>> [round(v, 3) for v in blend_weight(6, 2, True, False).tolist()]
    [0.146, 0.854, 1.0, 1.0, 1.0, 1.0]
    """
    w = torch.ones(length, dtype=dtype)
    if taper > 0:
        ramp = torch.sin(0.5 * math.pi * (torch.arange(taper, dtype=dtype) + 0.5) / taper) ** 2
        if left:
            w[:taper] = torch.minimum(w[:taper], ramp)
        if right:
            w[length - taper :] = torch.minimum(w[length - taper :], ramp.flip(0))
    return w


class PatchDenoiser:
    """A denoiser ``(x [B, C, H, W], sigma, cond=None) -> x0_hat`` of any domain from one trained on patches.

    ``denoiser``: the patch denoiser ``(x [B, C, ph, pw], sigma, cond) -> x0_hat``; ``patch = (ph, pw)``;
    ``overlap = (oh, ow)`` cells shared by neighbouring windows (the cosine taper's width). Sources in ``cond``
    are cropped per window (module docstring); windows start on multiples of :func:`alignment`. With
    ``max_batch`` windows are denoised together in batches of up to that many fields (``B`` per window).
    ``mask``: validity ``[C, H, W]`` of the whole domain (module docstring); windows without a valid cell are
    skipped unless ``skip_masked=False``. ``periodic_lon``: the domain is a whole latitude circle (a global grid):
    the field, its mask and every source are extended by at least ``overlap[1]`` wrapped columns on each side,
    the windows cover the extended domain and each extended column's estimate is blended into the column it
    wraps to, so the cells on both sides of the grid's longitude seam see each other and blend like any other
    neighbours.
    """

    def __init__(
        self,
        denoiser: Callable[..., Tensor],
        *,
        patch: tuple[int, int],
        overlap: tuple[int, int] = (8, 8),
        max_batch: int | None = None,
        mask: Tensor | None = None,
        skip_masked: bool = True,
        periodic_lon: bool = False,
    ):
        patch = tuple(int(p) for p in patch)
        overlap = tuple(int(o) for o in overlap)
        if len(patch) != 2 or min(patch) < 1:
            raise ConfigError(f"patch must be two positive sizes (lat, lon), got {patch}")
        if len(overlap) != 2 or min(overlap) < 0 or any(o >= p for o, p in zip(overlap, patch)):
            raise ConfigError(f"overlap must be two sizes in [0, patch), got {overlap} for patch {patch}")
        self.denoiser = denoiser
        self.patch = patch
        self.overlap = overlap
        self.max_batch = max_batch
        self.mask = None if mask is None else torch.as_tensor(mask, dtype=torch.bool)
        if self.mask is not None and self.mask.ndim != 3:
            raise GridError(f"mask must be a bool tensor [C, H, W], got shape {list(self.mask.shape)}")
        self.skip_masked = bool(skip_masked)
        self.periodic_lon = bool(periodic_lon)

    def windows(self, height: int, width: int, align: int = 1) -> Iterator[tuple[int, int, int, int]]:
        """The windows ``(i0, i1, j0, j1)`` covering a ``height x width`` domain."""
        ph, pw = min(self.patch[0], height), min(self.patch[1], width)
        for i0 in window_starts(height, ph, self.overlap[0], align):
            for j0 in window_starts(width, pw, self.overlap[1], align):
                yield i0, i0 + ph, j0, j0 + pw

    def weights(self, height: int, width: int, align: int = 1) -> list[tuple[tuple[int, int, int, int], Tensor]]:
        """Each window with its blending weight ``[ph, pw]`` (float64)."""
        windows = list(self.windows(height, width, align))
        out = []
        for i0, i1, j0, j1 in windows:
            wy = blend_weight(i1 - i0, min(self.overlap[0], i1 - i0), i0 > 0, i1 < height)
            wx = blend_weight(j1 - j0, min(self.overlap[1], j1 - j0), j0 > 0, j1 < width)
            out.append(((i0, i1, j0, j1), wy[:, None] * wx[None, :]))
        return out

    def computed(self, height: int, width: int, align: int = 1) -> list[tuple[tuple[int, int, int, int], Tensor]]:
        """The windows (with weights) that are denoised: all of :meth:`weights` but those without a valid cell."""
        return self._computed(height, width, align, self.mask)

    def _computed(self, height: int, width: int, align: int, mask: Tensor | None):
        plan = self.weights(height, width, align)
        if mask is None or not self.skip_masked:
            return plan
        if tuple(mask.shape[-2:]) != (height, width):
            raise GridError(f"the mask covers {tuple(mask.shape[-2:])} cells, the field {(height, width)}")
        valid = mask.cpu().any(dim=0)
        return [(w, weight) for w, weight in plan if bool(valid[w[0]:w[1], w[2]:w[3]].any())]

    def __call__(self, x: Tensor, sigma: float | Tensor, cond: Mapping[str, Tensor] | None = None) -> Tensor:
        height, width = x.shape[-2:]
        mask = None if self.mask is None else self.mask.to(x.device)
        if mask is not None and tuple(mask.shape) != tuple(x.shape[1:]):
            raise GridError(f"the mask has shape {list(mask.shape)}; the field is {list(x.shape[1:])}")
        if height <= self.patch[0] and width <= self.patch[1]:
            extra = {} if mask is None else {"mask": mask}
            return self.denoiser(x, sigma, dict(cond) if cond is not None else None, **extra)
        align = alignment(cond, (height, width))
        if not self.periodic_lon or width <= self.patch[1]:
            numerator, total = self._blend(x, sigma, cond, mask, align)
            return numerator / _covered(total)
        pad = -(-max(self.overlap[1], 1) // align) * align  # wrapped columns on each side, whole source cells
        if pad > width:
            raise GridError(f"a periodic domain of {width} columns is narrower than the overlap {self.overlap[1]}")

        def wrapped(value: Tensor, cells: int) -> Tensor:
            return torch.cat([value[..., -cells:], value, value[..., :cells]], dim=-1)

        sources = None if cond is None else {
            name: wrapped(value, int(source_ratio(value, (height, width), name)[1] * pad))
            for name, value in cond.items()}  # fmt: skip
        numerator, total = self._blend(wrapped(x, pad), sigma, sources, None if mask is None else wrapped(mask, pad),
                                       align)
        columns = (torch.arange(width + 2 * pad, device=x.device) - pad) % width  # the column each one wraps to
        numerator = torch.zeros_like(x).index_add(-1, columns, numerator)
        total = torch.zeros(height, width, dtype=total.dtype, device=x.device).index_add(-1, columns, total)
        return numerator / _covered(total)

    def _blend(self, x: Tensor, sigma: float | Tensor, cond: Mapping[str, Tensor] | None, mask: Tensor | None,
               align: int) -> tuple[Tensor, Tensor]:  # fmt: skip
        """The weighted sum of the window estimates ``[B, C, H, W]`` and the sum of the weights ``[H, W]``."""
        height, width = x.shape[-2:]
        plan = self._computed(height, width, align, mask)
        total = torch.zeros(height, width, dtype=x.dtype, device=x.device)
        numerator = torch.zeros_like(x)
        batch = x.shape[0]
        per_call = max(1, (self.max_batch or batch * len(plan)) // batch)
        for start in range(0, len(plan), per_call):
            group = plan[start : start + per_call]
            xs = torch.cat([x[..., i0:i1, j0:j1] for (i0, i1, j0, j1), _ in group])
            conds = None
            if cond is not None:
                conds = {name: torch.cat([_expand(source_window(value, (height, width), w, name), batch)
                                          for w, _ in group]) for name, value in cond.items()}  # fmt: skip
            sigmas = sigma
            if isinstance(sigma, Tensor) and sigma.ndim == 1 and sigma.numel() == batch > 1:
                sigmas = sigma.repeat(len(group))
            extra = {}
            if mask is not None:
                extra["mask"] = torch.cat([mask[:, i0:i1, j0:j1].expand(batch, -1, -1, -1)
                                           for (i0, i1, j0, j1), _ in group])
            out = self.denoiser(xs, sigmas, conds, **extra)
            for k, ((i0, i1, j0, j1), weight) in enumerate(group):
                w = weight.to(device=x.device, dtype=x.dtype)
                piece = out[k * batch : (k + 1) * batch] * w
                numerator = _add_window(numerator, piece, (i0, i1, j0, j1))
                total[i0:i1, j0:j1] += w
        return numerator, total


def _covered(total: Tensor) -> Tensor:
    """The sum of the weights with 1 where no window was denoised (cells under skipped windows only: 0)."""
    return torch.where(total > 0, total, torch.ones_like(total))


def _expand(source: Tensor, batch: int) -> Tensor:
    """A cropped source ``[B|1, C_s, h, w]`` as ``[batch, C_s, h, w]``."""
    if source.ndim == 3:
        source = source[None]
    return source.expand(batch, *source.shape[1:]) if source.shape[0] == 1 else source


def _add_window(total: Tensor, piece: Tensor, window: tuple[int, int, int, int]) -> Tensor:
    """``total`` with ``piece`` added on ``window`` (out of place, so autograd sees every window)."""
    i0, i1, j0, j1 = window
    height, width = total.shape[-2:]
    return total + torch.nn.functional.pad(piece, (j0, width - j1, i0, height - i1))
