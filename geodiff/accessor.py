"""The ``.geodiff`` accessor on datasets and data arrays: ensemble summaries along ``member``.

Importing :mod:`geodiff` registers it.

Example
-------
>>> import numpy as np, xarray as xr
>>> import geodiff
>>> ens = xr.Dataset({"t": (("member", "x"), np.array([[0.0, 1.0], [2.0, 3.0]]), {"units": "degC"})})
>>> ens.geodiff.mean().t.values.tolist(), ens.geodiff.std().t.values.tolist()
([1.0, 2.0], [1.4142135623730951, 1.4142135623730951])
>>> ens.geodiff.quantile([0.5]).t.dims
('quantile', 'x')
>>> ens.geodiff.mean().t.attrs["units"]
'degC'
"""

from __future__ import annotations

from typing import Generic, Sequence, TypeVar

import xarray as xr

from geodiff.errors import GridError

__all__ = ["EnsembleAccessor"]

T = TypeVar("T", xr.Dataset, xr.DataArray)


class EnsembleAccessor(Generic[T]):
    """Ensemble mean, standard deviation (ddof=1), quantiles and spread of a ``member`` dimension."""

    def __init__(self, obj: T):
        self._obj = obj

    def _members(self, member_dim: str) -> T:
        if member_dim not in self._obj.dims:
            raise GridError(f"no {member_dim!r} dimension to summarise; dims are {tuple(self._obj.dims)}")
        return self._obj

    def mean(self, member_dim: str = "member") -> T:
        """Ensemble mean (attributes kept)."""
        return self._members(member_dim).mean(member_dim, keep_attrs=True)

    def std(self, member_dim: str = "member") -> T:
        """Ensemble standard deviation with ddof=1 (attributes kept; the spread the metrics score)."""
        return self._members(member_dim).std(member_dim, ddof=1, keep_attrs=True)

    def quantile(self, q: float | Sequence[float], member_dim: str = "member") -> T:
        """Ensemble quantiles along a new ``quantile`` dimension (attributes kept)."""
        return self._members(member_dim).quantile(q, dim=member_dim, keep_attrs=True)

    def interval(self, coverage: float = 0.9, member_dim: str = "member") -> T:
        """Central interval of ``coverage``: quantiles ``(1-coverage)/2`` and ``(1+coverage)/2``."""
        if not 0 < coverage < 1:
            raise GridError(f"coverage must be in (0, 1), got {coverage}")
        return self.quantile([(1 - coverage) / 2, (1 + coverage) / 2], member_dim)


xr.register_dataset_accessor("geodiff")(EnsembleAccessor)
xr.register_dataarray_accessor("geodiff")(EnsembleAccessor)
