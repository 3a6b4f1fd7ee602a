"""Provenance of what geodiff writes: ``history`` lines (UTC time stamp, appended, never overwritten) and the
``geodiff_*`` attributes (version, model sha256, configuration, seed, ...). The only writer of ``history``.

Example
-------
>>> from geodiff.provenance import append_history, provenance_attrs
>>> attrs = append_history({"history": "made by hand"}, "geodiff.reconstruct(...)")
>>> attrs["history"].splitlines()[0], attrs["history"].splitlines()[1].endswith("Z geodiff.reconstruct(...)")
('made by hand', True)
>>> sorted(provenance_attrs(seed=3, guidance={"method": "mmps"}).items())[:2]
[('geodiff_guidance', '{"method": "mmps"}'), ('geodiff_seed', 3)]
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["utc_stamp", "append_history", "provenance_attrs"]


def utc_stamp() -> str:
    """The current UTC time as ``YYYY-MM-DDTHH:MM:SSZ`` (the stamp of a history line).

    >>> len(utc_stamp()), utc_stamp().endswith("Z")
    (20, True)
    """
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def append_history(attrs: Mapping[str, Any], line: str, *, stamped: bool = True) -> dict[str, Any]:
    """A copy of ``attrs`` with ``line`` (prefixed by :func:`utc_stamp` unless ``stamped=False``) appended to
    ``history`` on a new line; an existing history is kept as it is. Unstamped lines are for deterministic
    conversions whose output must be byte-for-byte reproducible (the shipped samples).

    >>> append_history({}, "geodiff coarsen")["history"][20:]
    ' geodiff coarsen'
    >>> append_history({"history": "a"}, "b", stamped=False)["history"].splitlines()
    ['a', 'b']
    """
    previous = attrs.get("history")
    entry = f"{utc_stamp()} {line}" if stamped else line
    return {**attrs, "history": f"{previous}\n{entry}" if previous else entry}


def provenance_attrs(**fields: Any) -> dict[str, Any]:
    """``geodiff_version`` and one ``geodiff_<name>`` attribute per field: strings and numbers as they are, other
    values (dicts, lists) as JSON, so that every attribute can be written to netCDF and zarr.

    >>> provenance_attrs(model_sha256="ab")["geodiff_model_sha256"]
    'ab'
    """
    import geodiff  # the package's version; imported late because geodiff/__init__ imports the library lazily

    attrs: dict[str, Any] = {"geodiff_version": geodiff.__version__}
    for name, value in fields.items():
        plain = isinstance(value, (str, int, float)) and not isinstance(value, bool)
        attrs[f"geodiff_{name}"] = value if plain else json.dumps(value, default=str)
    return attrs
