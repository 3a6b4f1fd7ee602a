"""Errors and warnings raised by geodiff.

Every error geodiff raises on bad input is a :class:`GeodiffError` subclass whose message names the
offending variable, coordinate, attribute, key or file and says what was expected.

Example
-------
>>> from geodiff.errors import GeodiffError, UnitsError
>>> try:
...     raise UnitsError("variable 'thetao' has no 'units' attribute; expected e.g. 'degC'")
... except GeodiffError as err:
...     print(type(err).__name__)
UnitsError
"""

from __future__ import annotations

__all__ = [
    "GeodiffError",
    "UnitsError",
    "GridError",
    "CoordinateError",
    "CalendarError",
    "ObservationError",
    "CheckpointError",
    "ConfigError",
    "PluginError",
    "DataError",
    "StoreError",
    "SamplingError",
    "GeodiffWarning",
]


class GeodiffError(Exception):
    """Base class of every error geodiff raises on bad input or a failed check."""


class UnitsError(GeodiffError):
    """Missing, unparseable or contradictory units, or a conversion that is not possible."""


class GridError(GeodiffError):
    """A grid that does not match what is expected (shape, coordinates, model grid, chunking)."""


class CoordinateError(GridError):
    """A coordinate that is missing, ambiguous, non-monotonic, duplicated or out of range."""


class CalendarError(GeodiffError):
    """Time axes with different or unsupported calendars."""


class ObservationError(GeodiffError):
    """An observation table that is malformed or has no usable observation."""


class CheckpointError(GeodiffError):
    """A model bundle that is missing, truncated, tampered with, of another model, or unsafe."""


class ConfigError(GeodiffError):
    """A configuration with an unknown key, a bad value or a missing file."""


class PluginError(GeodiffError):
    """A plugin name or class that is not registered, or an entry point that cannot be loaded."""


class DataError(GeodiffError):
    """A data file that is incomplete, corrupt or not of the expected product."""


class StoreError(GeodiffError):
    """An output store that does not match the job (grid, chunks, variables) or is corrupt."""


class SamplingError(GeodiffError):
    """Sampling diverged: the result holds non-finite values where the field is valid."""


class GeodiffWarning(UserWarning):
    """Something was handled with a record but deserves the user's attention."""
