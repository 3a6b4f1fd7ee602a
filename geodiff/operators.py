"""Observation operators: linear maps ``A`` from a field ``x [B, C, H, W]`` to observed values ``[B, N]``.

Operators are built from plain numpy arrays (grid coordinates, observation positions) and applied to torch
tensors; they never import xarray. Every operator is linear, differentiable and has an exact adjoint
(``<A x, r> == <x, A^T r>``) computed with gathers and ``index_add`` -- never with a dense matrix.

- :class:`PointOperator`: the state **at the observation's location**: bilinear in latitude/longitude (periodic
  longitude across the dateline for global grids), linear in depth, land-aware (land / below-sea-floor corners
  are dropped and the remaining weights renormalised). No snapping to the nearest cell.
- :class:`GridPointOperator`: observations exactly on grid points (a selection), for replacement methods.
- :class:`StackedOperator`: several operators on one field, outputs concatenated (several observation sets).

Channel layout
--------------
A field has ``C`` channels, one per (variable, level), in the codec's order: ``channels`` is a list of
``(variable, level)`` pairs with ``level`` the depth in metres (positive down) or ``None`` for a 2-D variable,
exactly :attr:`geodiff.io.Codec.channels`. Without ``channels``, the field is one variable: 2-D (``C = 1``) or,
with ``grid_depth [L]``, 3-D (``C = L``); the observations' ``variable`` is then not used.

Depth interpolation is linear between the two levels around the observation. An observation shallower than
the first level takes the first level's value when ``extrapolate_above=True`` (surface observations above the
first model level, e.g. at 1 m with a first level at 5 m); deeper than the last level is outside the grid.

Example
-------
>>> import numpy as np, torch
>>> from geodiff.operators import PointOperator
>>> lat, lon = np.array([0.0, 10.0]), np.arange(0.0, 360.0, 90.0)
>>> op = PointOperator(lat, lon, lat=[5.0], lon=[315.0])  # halfway between 270 E and 0 E (periodic)
>>> x = torch.arange(8.0).reshape(1, 1, 2, 4)
>>> op(x)  # mean of x[0, 0, :, 3] and x[0, 0, :, 0]
tensor([[3.5000]])
>>> r = torch.ones(1, 1)
>>> torch.allclose((op(x) * r).sum(), (x * op.adjoint(r)).sum())
True
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from geodiff.errors import GridError, ObservationError
from geodiff.grid import (
    EMPTY_WEIGHT,
    STENCIL_REASONS,
    ascending,
    channel_layout,
    channel_mask,
    is_periodic,
    point_stencil,
)

if TYPE_CHECKING:  # the table module is xarray's side; operators only read its stencils
    from geodiff.observations import ObservationTable

__all__ = [
    "LinearOperator",
    "WeightedGatherOperator",
    "PointOperator",
    "GridPointOperator",
    "StackedOperator",
    "channel_layout",
    "is_periodic",
]

_REASON_TEXT = {
    "variable": "with a variable that is not a channel of the field",
    "missing": "with a missing (NaN) position",
    "outside": "outside the grid",
    "land": "with every interpolation corner on land or below the sea floor",
}


# --------------------------------------------------------------------------------------------------------------
# inputs


def _positions(values: Any, name: str, n: int | None = None) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise ObservationError(f"observation column {name!r} must be numeric: {err}") from err
    if n is not None and array.size != n:
        raise ObservationError(f"observation column {name!r} has {array.size} entries, expected {n} (one per obs)")
    return array


def _mask_numpy(mask: Any) -> Any:
    """A mask given as a tensor as a numpy array (the grid rules are numpy); anything else as it is."""
    return mask.detach().cpu().numpy() if isinstance(mask, Tensor) else mask


# --------------------------------------------------------------------------------------------------------------
# operators


class LinearOperator(nn.Module, ABC):
    """A linear observation operator ``x [B, C, H, W] -> [B, N]`` with an exact adjoint.

    Subclasses define :meth:`forward`, :meth:`adjoint` and :meth:`gram_diagonal`; ``field_shape = (C, H, W)``
    and ``n_obs = N`` describe the spaces. Operators are ``nn.Module`` so ``.to(device)`` moves their buffers.
    """

    field_shape: tuple[int, int, int]
    n_obs: int

    @abstractmethod
    def forward(self, x: Tensor) -> Tensor:
        """``A x``: field ``[B, C, H, W]`` -> observed values ``[B, N]`` (differentiable)."""

    @abstractmethod
    def adjoint(self, r: Tensor) -> Tensor:
        """``A^T r``: values ``[B, N]`` -> field ``[B, C, H, W]`` (scatter-add)."""

    @abstractmethod
    def gram_diagonal(self) -> Tensor:
        """``diag(A A^T)`` ``[N]`` (float64): the squared norm of each observation's weights."""

    def _check_field(self, x: Tensor) -> None:
        if tuple(x.shape[1:]) != tuple(self.field_shape) or x.ndim != 4:
            raise GridError(f"field must be [B, C, H, W] with (C, H, W) = {self.field_shape}, got {tuple(x.shape)}")

    def _check_values(self, r: Tensor) -> None:
        if r.ndim != 2 or r.shape[1] != self.n_obs:
            raise GridError(f"observation values must be [B, N] with N = {self.n_obs}, got {tuple(r.shape)}")


class WeightedGatherOperator(LinearOperator):
    """A linear operator whose value ``n`` is ``sum_k weight[n, k] * x.flat[index[n, k]]`` (buffers ``index`` and
    ``weight`` ``[N, K]`` over the flattened field ``[C*H*W]``): a gather forward and an ``index_add`` adjoint,
    never a dense matrix. Subclasses set ``index``, ``weight``, ``field_shape`` and ``n_obs``."""

    index: Tensor
    weight: Tensor

    def forward(self, x: Tensor) -> Tensor:
        self._check_field(x)
        flat = x.reshape(x.shape[0], -1)
        return (flat[:, self.index.to(x.device)] * self.weight.to(device=x.device, dtype=x.dtype)).sum(-1)

    def adjoint(self, r: Tensor) -> Tensor:
        self._check_values(r)
        contribution = (r[:, :, None] * self.weight.to(device=r.device, dtype=r.dtype)).reshape(r.shape[0], -1)
        out = r.new_zeros(r.shape[0], int(np.prod(self.field_shape)))
        out = out.index_add(1, self.index.to(r.device).reshape(-1), contribution)
        return out.reshape(r.shape[0], *self.field_shape)


class PointOperator(WeightedGatherOperator):
    """Interpolate a field at observation positions: bilinear in lat/lon, linear in depth, land-aware.

    Parameters
    ----------
    grid_lat: ``[H]`` ascending latitudes (degrees north).
    grid_lon: ``[W]`` ascending longitudes (degrees east, any convention; observations are taken into it).
    lat, lon: ``[N]`` observation positions.
    depth: ``[N]`` observation depths (metres, positive down); needed for 3-D variables.
    variable: ``[N]`` variable names, matched with the ``channels`` layout.
    channels: the field's ``(variable, level)`` list (see the module docstring); or ``grid_depth [L]``.
    mask: ``[C, H, W]`` or ``[H, W]`` bool, True = valid (ocean). Land corners get weight 0 and the others are
        renormalised to sum to 1.
    periodic: longitude wraps across the seam (``None``: :func:`is_periodic` decides).
    extrapolate_above: observations shallower than the first level take the first level (else: outside).
    on_invalid: ``"raise"`` (default) raises :class:`~geodiff.errors.ObservationError` when any observation cannot
        be interpolated (unknown variable, NaN position, outside the grid, all corners on land), naming how many
        and which; ``"drop"`` keeps the others and records them: ``kept`` (indices into the input) and
        ``dropped`` (``{reason: indices}``).

    ``op(x [B, C, H, W]) -> [B, N]``; ``op.adjoint(r [B, N]) -> [B, C, H, W]``. Weights are float64 buffers
    ``index [N, 8]`` (flat ``c*H*W + j*W + i``) and ``weight [N, 8]``, cast to the field's dtype when applied.

    Example
    -------
    >>> import numpy as np, torch
    >>> lat, lon, depth = np.array([0.0, 1.0]), np.array([0.0, 1.0]), np.array([0.0, 10.0])
    >>> op = PointOperator(lat, lon, lat=[0.25], lon=[0.5], depth=[2.5], grid_depth=depth)
    >>> field = torch.tensor([[[0.0, 1.0], [0.0, 1.0]], [[10.0, 11.0], [10.0, 11.0]]])[None]  # = lon + depth
    >>> op(field)
    tensor([[3.]])
    """

    def __init__(
        self,
        grid_lat: Any,
        grid_lon: Any,
        lat: Any,
        lon: Any,
        *,
        depth: Any = None,
        variable: Any = None,
        channels: Sequence[tuple[Any, Any]] | None = None,
        grid_depth: Any = None,
        mask: Any = None,
        periodic: bool | None = None,
        extrapolate_above: bool = True,
        on_invalid: str = "raise",
    ):
        super().__init__()
        if on_invalid not in ("raise", "drop"):
            raise ObservationError(f"on_invalid must be 'raise' or 'drop', got {on_invalid!r}")
        layout = channel_layout(channels, grid_depth)
        lat = _positions(lat, "lat")
        lon = _positions(lon, "lon", lat.size)
        if np.any(np.abs(lat[np.isfinite(lat)]) > 90):
            raise ObservationError("observation column 'lat' has values outside [-90, 90] degrees north")
        depth = None if depth is None else _positions(depth, "depth", lat.size)
        if variable is not None:
            variable = np.asarray(variable, dtype=object).reshape(-1)
            if variable.size != lat.size:
                raise ObservationError(
                    f"observation column 'variable' has {variable.size} entries, expected {lat.size}"
                )
        stencil = point_stencil(
            grid_lat, grid_lon, layout, lat, lon, depth, variable,
            mask=_mask_numpy(mask), periodic=periodic, extrapolate_above=extrapolate_above,
        )  # fmt: skip
        self.field_shape, self.periodic = stencil.field_shape, stencil.periodic
        index, weight, reason = stencil.index, stencil.weight, stencil.reason
        bad = reason != ""
        self.dropped = {key: np.flatnonzero(reason == key) for key in STENCIL_REASONS if np.any(reason == key)}
        if bad.any() and on_invalid == "raise":
            parts = [f"{idx.size} {_REASON_TEXT[key]} (indices {idx[:5].tolist()}{'...' if idx.size > 5 else ''})"
                     for key, idx in self.dropped.items()]  # fmt: skip
            raise ObservationError(
                f"{int(bad.sum())} of {bad.size} observations cannot be interpolated: " + "; ".join(parts)
                + ". Clean the table with geodiff.observations.validate_observations or pass on_invalid='drop'."
            )
        self.kept = np.flatnonzero(~bad)
        if self.kept.size == 0:
            raise ObservationError("no observation can be interpolated on this grid (all dropped)")
        self.n_obs = int(self.kept.size)
        self.register_buffer("index", torch.from_numpy(index[self.kept]))
        self.register_buffer("weight", torch.from_numpy(weight[self.kept]))

    @classmethod
    def from_columns(cls, table: Mapping[str, Any], grid_lat: Any, grid_lon: Any, **kwargs: Any) -> PointOperator:
        """Build from any mapping of columns ``lat``, ``lon`` and optional ``depth``, ``variable`` (an observation
        ``xr.Dataset`` or ``pandas.DataFrame`` works as is); ``kwargs`` as in the constructor.

        >>> import numpy as np
        >>> table = {"lat": np.array([0.5]), "lon": np.array([0.5])}
        >>> PointOperator.from_columns(table, [0.0, 1.0], [0.0, 1.0]).n_obs
        1
        """
        columns = {name: np.asarray(table[name]) for name in ("depth", "variable") if name in table}
        return cls(grid_lat, grid_lon, np.asarray(table["lat"]), np.asarray(table["lon"]), **columns, **kwargs)

    @classmethod
    def from_table(cls, table: ObservationTable) -> PointOperator:
        """The operator of a validated table (:meth:`geodiff.observations.ObservationTable.validate`), from the
        stencils its validation computed: nothing is interpolated again, and every observation is kept.

        >>> import pandas as pd
        >>> from geodiff.observations import ObservationTable
        >>> frame = pd.DataFrame({"value": [1.0], "error_std": 0.1, "lat": [0.5], "lon": [0.5], "time": 0.0})
        >>> PointOperator.from_table(ObservationTable.validate(frame, [0.0, 1.0], [0.0, 1.0])).weight.tolist()
        [[0.25, 0.25, 0.25, 0.25, 0.0, 0.0, 0.0, 0.0]]
        """
        stencil = table.stencil
        op = cls.from_weights(torch.from_numpy(stencil.index), torch.from_numpy(stencil.weight), stencil.field_shape)
        op.periodic = stencil.periodic
        return op

    @classmethod
    def from_weights(cls, index: Tensor, weight: Tensor, field_shape: tuple[int, int, int]) -> PointOperator:
        """An operator from explicit flat corner indices ``[N, K]`` and weights ``[N, K]`` (no grid checks
        beyond the index range): row ``n`` of ``A`` has ``weight[n, k]`` at flat cell ``index[n, k]``.

        >>> op = PointOperator.from_weights(torch.tensor([[0, 3]]), torch.tensor([[0.5, 0.5]]), (1, 2, 2))
        >>> op(torch.arange(4.0).reshape(1, 1, 2, 2))
        tensor([[1.5000]])
        """
        index = torch.as_tensor(index, dtype=torch.int64)
        weight = torch.as_tensor(weight, dtype=torch.float64)
        size = int(np.prod(field_shape))
        if index.ndim != 2 or index.shape != weight.shape:
            raise GridError(f"index and weight must both be [N, K], got {tuple(index.shape)} and {tuple(weight.shape)}")
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= size):
            raise GridError(f"index values must lie in [0, {size}) for field shape {tuple(field_shape)}")
        op = cls.__new__(cls)
        LinearOperator.__init__(op)
        op.field_shape = tuple(int(s) for s in field_shape)
        op.periodic = False
        op.n_obs = int(index.shape[0])
        op.kept = np.arange(op.n_obs)
        op.dropped = {}
        op.register_buffer("index", index.clone())
        op.register_buffer("weight", weight.clone())
        return op

    def gram_diagonal(self) -> Tensor:
        matrix = self.to_sparse()  # coalesced: corners falling on the same cell are merged first
        out = torch.zeros(self.n_obs, dtype=torch.float64, device=self.weight.device)
        return out.index_add(0, matrix.indices()[0], matrix.values() ** 2)

    def to_sparse(self) -> Tensor:
        """``A`` as a sparse COO tensor ``[N, C*H*W]`` (float64), e.g. for small test problems and checks."""
        rows = torch.arange(self.n_obs, device=self.index.device).repeat_interleave(self.index.shape[1])
        indices = torch.stack([rows, self.index.reshape(-1)])
        size = (self.n_obs, int(np.prod(self.field_shape)))
        matrix = torch.sparse_coo_tensor(indices, self.weight.reshape(-1), size, check_invariants=True)
        return matrix.coalesce()

    def to_normalized(
        self, y: Any, error_std: Any, mean: Any, std: Any
    ) -> tuple[PointOperator, Tensor, Tensor]:
        """Move observations into the normalised space of ``x = (field - mean[c]) / std[c]``.

        ``mean`` and ``std`` have one entry per channel ``[C]`` or per cell ``[C, H, W]`` (anomaly statistics);
        per cell, ``c_k`` below is the corner cell itself.

        With ``s_n = sum_k w_nk std[c_k]`` and ``o_n = sum_k w_nk mean[c_k]`` (``c_k`` the corner's channel),
        ``y = A field + e`` becomes ``(y - o) / s = A' x + e / s`` with ``A'`` weights ``w_nk std[c_k] / s_n``.
        For an observation on a grid level this is exactly ``(y - mean) / std``. Returns
        ``(A', y' [N], error_std' [N])``, float64.

        >>> op = PointOperator([0.0, 1.0], [0.0, 1.0], lat=[0.0], lon=[0.0])
        >>> op_n, y_n, e_n = op.to_normalized([12.0], [0.5], mean=[10.0], std=[2.0])
        >>> y_n.tolist(), e_n.tolist()
        ([1.0], [0.25])
        """
        mean = torch.as_tensor(np.asarray(mean, dtype=np.float64)).reshape(-1).to(self.weight.device)
        std = torch.as_tensor(np.asarray(std, dtype=np.float64)).reshape(-1).to(self.weight.device)
        channels, cells = self.field_shape[0], math.prod(self.field_shape)
        if mean.numel() != std.numel() or mean.numel() not in (channels, cells):
            raise GridError(f"mean and std must have one entry per channel ({channels}) or per cell ({cells})")
        if not torch.all(std > 0):
            raise GridError("std must be positive everywhere")
        # per channel: the corner's channel; per cell [C, H, W]: the corner itself
        where = self.index // (self.field_shape[1] * self.field_shape[2]) if mean.numel() == channels else self.index
        scale = (self.weight * std[where]).sum(1)
        offset = (self.weight * mean[where]).sum(1)
        y = torch.as_tensor(np.asarray(y, dtype=np.float64)).reshape(-1).to(scale.device)
        error_std = torch.as_tensor(np.asarray(error_std, dtype=np.float64)).reshape(-1).to(scale.device)
        if y.numel() != self.n_obs:
            raise ObservationError(f"y has {y.numel()} values; the operator has {self.n_obs} observations")
        error_std = error_std.expand(self.n_obs) if error_std.numel() == 1 else error_std
        if error_std.numel() != self.n_obs:
            raise ObservationError(f"error_std has {error_std.numel()} values; expected {self.n_obs}")
        weight = self.weight * std[where] / scale[:, None]
        normalized = PointOperator.from_weights(self.index, weight, self.field_shape)
        normalized.kept, normalized.dropped, normalized.periodic = self.kept, self.dropped, self.periodic
        return normalized, (y - offset) / scale, error_std / scale


class GridPointOperator(LinearOperator):
    """Observations exactly on grid points: ``A x = x.flatten(1)[:, index]``.

    Built from flat indices ``index [N]`` (``c*H*W + j*W + i``) and ``field_shape = (C, H, W)``, or from a bool
    ``mask [C, H, W]`` (observed cells, in flat order); or with :meth:`from_positions` from coordinates that must
    lie on the grid (no snapping: a position off the grid raises). :meth:`observed_mask` gives ``[C, H, W]``.

    Example
    -------
    >>> import torch
    >>> mask = torch.zeros(1, 2, 3, dtype=torch.bool)
    >>> mask[0, 1, 2] = True
    >>> op = GridPointOperator(mask=mask)
    >>> op(torch.arange(6.0).reshape(1, 1, 2, 3))
    tensor([[5.]])
    """

    def __init__(self, index: Any = None, field_shape: tuple[int, int, int] | None = None, *, mask: Any = None):
        super().__init__()
        if (index is None) == (mask is None):
            raise GridError("give either index (with field_shape) or mask")
        if mask is not None:
            mask = torch.as_tensor(mask, dtype=torch.bool)
            if mask.ndim != 3:
                raise GridError(f"mask must be [C, H, W] bool, got shape {tuple(mask.shape)}")
            field_shape = tuple(mask.shape)
            index = torch.nonzero(mask.reshape(-1)).reshape(-1)
        if field_shape is None or len(field_shape) != 3:
            raise GridError("field_shape (C, H, W) is needed with index")
        index = torch.as_tensor(index, dtype=torch.int64).reshape(-1)
        size = int(np.prod(field_shape))
        if index.numel() == 0:
            raise ObservationError("a GridPointOperator needs at least one observed grid point")
        if int(index.min()) < 0 or int(index.max()) >= size:
            raise GridError(f"index values must lie in [0, {size}) for field shape {tuple(field_shape)}")
        self.field_shape = tuple(int(s) for s in field_shape)
        self.n_obs = int(index.numel())
        self.register_buffer("index", index)

    @classmethod
    def from_positions(
        cls,
        grid_lat: Any,
        grid_lon: Any,
        lat: Any,
        lon: Any,
        *,
        depth: Any = None,
        variable: Any = None,
        channels: Sequence[tuple[Any, Any]] | None = None,
        grid_depth: Any = None,
        atol: float = 1e-6,
    ) -> GridPointOperator:
        """Observations whose positions coincide with grid points (within ``atol`` degrees / metres).

        Raises :class:`~geodiff.errors.ObservationError` naming the first observation that is not on a grid point
        (use :class:`PointOperator` for those).

        >>> op = GridPointOperator.from_positions([0.0, 1.0], [0.0, 1.0, 2.0], lat=[1.0], lon=[362.0])
        >>> op.index.tolist()
        [5]
        """
        point = PointOperator(
            grid_lat, grid_lon, lat, lon, depth=depth, variable=variable, channels=channels, grid_depth=grid_depth,
            periodic=None, extrapolate_above=False,
        )  # fmt: skip
        best, where = point.weight.max(dim=1)
        off = torch.nonzero(best < 1 - atol).reshape(-1)
        if off.numel():
            n = int(off[0])
            raise ObservationError(
                f"{off.numel()} observations are not on grid points (first: index {n}, lat={np.asarray(lat)[n]}, "
                f"lon={np.asarray(lon)[n]}); use PointOperator to interpolate them"
            )
        index = point.index.gather(1, where[:, None]).reshape(-1)
        return cls(index, point.field_shape)

    def forward(self, x: Tensor) -> Tensor:
        self._check_field(x)
        return x.reshape(x.shape[0], -1)[:, self.index.to(x.device)]

    def adjoint(self, r: Tensor) -> Tensor:
        self._check_values(r)
        out = r.new_zeros(r.shape[0], int(np.prod(self.field_shape)))
        return out.index_add(1, self.index.to(r.device), r).reshape(r.shape[0], *self.field_shape)

    def gram_diagonal(self) -> Tensor:
        return torch.ones(self.n_obs, dtype=torch.float64, device=self.index.device)

    def observed_mask(self) -> Tensor:
        """Bool ``[C, H, W]``, True at observed grid points."""
        mask = torch.zeros(int(np.prod(self.field_shape)), dtype=torch.bool, device=self.index.device)
        mask[self.index] = True
        return mask.reshape(self.field_shape)

    def has_duplicates(self) -> bool:
        """True when two observations sit on the same grid point."""
        return bool(torch.unique(self.index).numel() < self.n_obs)


class StackedOperator(LinearOperator):
    """Several operators on the same field; outputs concatenated in order: ``[B, N1 + N2 + ...]``.

    Example
    -------
    >>> a = GridPointOperator(torch.tensor([0]), (1, 1, 2))
    >>> b = GridPointOperator(torch.tensor([1]), (1, 1, 2))
    >>> StackedOperator([a, b])(torch.tensor([[[[3.0, 4.0]]]]))
    tensor([[3., 4.]])
    """

    def __init__(self, operators: Sequence[LinearOperator]):
        super().__init__()
        operators = list(operators)
        if not operators:
            raise GridError("StackedOperator needs at least one operator")
        shapes = {tuple(op.field_shape) for op in operators}
        if len(shapes) != 1:
            raise GridError(f"stacked operators must act on the same field shape, got {sorted(shapes)}")
        self.operators = nn.ModuleList(operators)
        self.field_shape = shapes.pop()
        self.sizes = [op.n_obs for op in operators]
        self.n_obs = sum(self.sizes)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([op(x) for op in self.operators], dim=1)

    def adjoint(self, r: Tensor) -> Tensor:
        self._check_values(r)
        parts = torch.split(r, self.sizes, dim=1)
        out = self.operators[0].adjoint(parts[0])
        for op, part in zip(self.operators[1:], parts[1:]):
            out = out + op.adjoint(part)
        return out

    def gram_diagonal(self) -> Tensor:
        return torch.cat([op.gram_diagonal() for op in self.operators])


# --------------------------------------------------------------------------------------------------------------
# coarsening


class CoarsenOperator(WeightedGatherOperator):
    """Area mean over ``factor x factor`` blocks: field ``[B, C, H, W]`` -> coarse cells ``[B, N]``.

    Coarse cell ``(c, I, J)`` is the weighted mean of the fine cells ``(c, I f + a, J f + b)``, ``0 <= a, b < f``,
    with weights ``cos(lat)`` (cell areas of a regular grid) when ``grid_lat [H]`` is given, else equal weights.
    Land-aware: with ``mask`` (``[C, H, W]`` or ``[H, W]``, True = valid) only valid fine cells count (weights
    renormalised); a coarse cell without any valid fine cell is dropped (``kept`` lists the flat indices
    ``c Hc Wc + I Wc + J`` of the coarse cells in the output, in that order; ``dropped`` the others).
    ``H`` and ``W`` must be multiples of the factor (nothing is trimmed). Exact adjoint by ``index_add``.

    :meth:`coarsen` gives the coarse grid ``[B, C, H/f, W/f]`` (NaN at dropped cells); :meth:`observed` takes the
    kept cells of a coarse field as the observations ``y [B, N]``.

    Example
    -------
    >>> import torch
    >>> op = CoarsenOperator((1, 2, 4), 2)
    >>> x = torch.arange(8.0).reshape(1, 1, 2, 4)
    >>> op(x)  # means of [[0, 1], [4, 5]] and [[2, 3], [6, 7]]
    tensor([[2.5000, 4.5000]])
    >>> r = torch.randn(1, 2)
    >>> torch.allclose((op(x) * r).sum(), (x * op.adjoint(r)).sum())
    True
    """

    def __init__(
        self,
        field_shape: Sequence[int],
        factor: int | Sequence[int],
        *,
        mask: Any = None,
        grid_lat: Any = None,
    ):
        super().__init__()
        if len(field_shape) != 3:
            raise GridError(f"field_shape must be (C, H, W), got {tuple(field_shape)}")
        channels, height, width = (int(s) for s in field_shape)
        pair = (factor, factor) if not isinstance(factor, (tuple, list)) else tuple(factor)
        if len(pair) != 2:
            raise GridError(f"the coarsening factor must be a positive integer (or two), got {factor!r}")
        fy, fx = pair
        if any(isinstance(f, bool) or not isinstance(f, (int, np.integer)) or f < 1 for f in (fy, fx)):
            raise GridError(f"the coarsening factor must be a positive integer (or two), got {factor!r}")
        fy, fx = int(fy), int(fx)
        if height % fy or width % fx:
            raise GridError(
                f"a field of {height} x {width} (lat x lon) cells cannot be coarsened by {fy} x {fx}: "
                "both sizes must be multiples of the factor (crop the field first)"
            )
        self.field_shape = (channels, height, width)
        self.factor = (fy, fx)
        self.coarse_shape = (channels, height // fy, width // fx)
        weight = np.ones((height, width))
        if grid_lat is not None:
            lat = ascending(grid_lat, "lat")
            if lat.size != height:
                raise GridError(f"grid_lat has {lat.size} values; the field has {height} rows")
            weight = weight * np.clip(np.cos(np.deg2rad(lat)), 0.0, None)[:, None]
        weight = np.broadcast_to(weight, self.field_shape).reshape(-1)
        if mask is not None:
            valid = channel_mask(_mask_numpy(mask), self.field_shape).reshape(-1)
            weight = weight * valid
        _, hc, wc = self.coarse_shape
        # flat fine index of every (coarse cell, block member): [C, Hc, Wc, fy, fx] -> [N_all, fy * fx]
        c = np.arange(channels)[:, None, None, None, None]
        rows = (np.arange(hc)[None, :, None, None, None] * fy + np.arange(fy)[None, None, None, :, None])
        cols = (np.arange(wc)[None, None, :, None, None] * fx + np.arange(fx)[None, None, None, None, :])
        index = (c * height * width + rows * width + cols).reshape(channels * hc * wc, fy * fx)
        block = weight[index]
        total = block.sum(axis=1)
        keep = total > EMPTY_WEIGHT
        if not keep.any():
            raise GridError("every coarse cell is on land: the mask leaves no valid fine cell")
        self.kept = np.flatnonzero(keep)
        self.dropped = np.flatnonzero(~keep)
        self.n_obs = int(self.kept.size)
        self.register_buffer("index", torch.from_numpy(index[keep].astype(np.int64)))
        self.register_buffer("weight", torch.from_numpy(block[keep] / total[keep, None]))

    def gram_diagonal(self) -> Tensor:
        return (self.weight**2).sum(1)  # the cells of one block are distinct

    def to_grid(self, values: Tensor) -> Tensor:
        """Coarse values ``[B, N]`` -> coarse grid ``[B, C, H/f, W/f]`` with NaN at dropped cells.

        >>> op = CoarsenOperator((1, 2, 2), 2)
        >>> op.to_grid(torch.tensor([[3.0]])).shape
        torch.Size([1, 1, 1, 1])
        """
        self._check_values(values)
        out = values.new_full((values.shape[0], int(np.prod(self.coarse_shape))), float("nan"))
        out[:, torch.as_tensor(self.kept, device=values.device)] = values
        return out.reshape(values.shape[0], *self.coarse_shape)

    def coarsen(self, x: Tensor) -> Tensor:
        """Area means of ``x [B, C, H, W]`` on the coarse grid ``[B, C, H/f, W/f]`` (NaN at dropped cells).

        >>> CoarsenOperator((1, 2, 2), 2).coarsen(torch.ones(1, 1, 2, 2)).tolist()
        [[[[1.0]]]]
        """
        return self.to_grid(self(x))

    def observed(self, coarse: Tensor) -> Tensor:
        """The kept cells of a coarse field ``[C, H/f, W/f]`` or ``[B, C, H/f, W/f]`` as ``y`` (``[N]`` or ``[B, N]``).

        A NaN at a kept cell (a coarse value missing where the fine grid has valid cells) raises
        :class:`~geodiff.errors.ObservationError`: mark such cells invalid in ``mask`` instead.

        >>> CoarsenOperator((1, 2, 4), 2).observed(torch.tensor([[[1.0, 2.0]]])).tolist()
        [1.0, 2.0]
        """
        coarse = torch.as_tensor(coarse)
        single = coarse.ndim == 3
        batched = coarse[None] if single else coarse
        if batched.ndim != 4 or tuple(batched.shape[1:]) != self.coarse_shape:
            raise GridError(f"the coarse field must be [C, Hc, Wc] or [B, C, Hc, Wc] with (C, Hc, Wc) = "
                            f"{self.coarse_shape}, got {tuple(coarse.shape)}")
        values = batched.reshape(batched.shape[0], -1)[:, torch.as_tensor(self.kept, device=coarse.device)]
        missing = ~torch.isfinite(values)
        if missing.any():
            raise ObservationError(
                f"the coarse field has {int(missing.sum())} missing (NaN) values at coarse cells whose fine cells are "
                "valid; mark those cells invalid in the mask (land) or fill them"
            )
        return values[0] if single else values

    def to_normalized(self, y: Any, error_std: Any, mean: Any, std: Any) -> tuple[Tensor, Tensor]:
        """``(y', error_std')`` [N] (float64) for the normalised field ``x = (field - mean[c]) / std[c]``: each coarse
        cell lies in one channel, so ``y' = (y - mean[c]) / std[c]`` and ``error_std' = error_std / std[c]`` (the
        operator is unchanged).

        >>> op = CoarsenOperator((1, 2, 2), 2)
        >>> [t.tolist() for t in op.to_normalized([12.0], [0.5], mean=[10.0], std=[2.0])]
        [[1.0], [0.25]]
        """
        mean = torch.as_tensor(np.asarray(mean, dtype=np.float64)).reshape(-1)
        std = torch.as_tensor(np.asarray(std, dtype=np.float64)).reshape(-1)
        channels = self.field_shape[0]
        if mean.numel() != channels or std.numel() != channels or not torch.all(std > 0):
            raise GridError(f"mean and std need one entry per channel ({channels}) and std > 0")
        channel = torch.as_tensor(self.kept // (self.coarse_shape[1] * self.coarse_shape[2]))
        y = torch.as_tensor(np.asarray(y, dtype=np.float64))
        if y.shape[-1] != self.n_obs:
            raise ObservationError(f"y has {y.shape[-1]} values; the operator has {self.n_obs} coarse cells")
        error_std = torch.as_tensor(np.asarray(error_std, dtype=np.float64)).reshape(-1)
        error_std = error_std.expand(self.n_obs) if error_std.numel() == 1 else error_std
        if error_std.numel() != self.n_obs:
            raise ObservationError(f"error_std has {error_std.numel()} values; expected 1 or {self.n_obs}")
        return (y - mean[channel]) / std[channel], error_std / std[channel]


__all__ += ["CoarsenOperator"]
