"""Exact JSON of xarray metadata for the specs saved with a model (codec spec, normaliser statistics).

:func:`to_json` writes attributes, encodings and coordinate values as tagged plain JSON that :func:`from_json`
reads back to the same Python / numpy values (non-finite floats, numpy scalars and dtypes, bytes, tuples, sets,
datetimes); :func:`variable_to_json` / :func:`variable_from_json` do the same for a whole ``xr.Variable``. Nothing
is pickled.

Example
-------
>>> import numpy as np
>>> from geodiff.io.spec import from_json, to_json
>>> attrs = {"valid_range": np.array([0.0, np.inf]), "flag": np.int16(3), "dims": ("lat", "lon")}
>>> back = from_json(to_json(attrs, "attributes"))
>>> back["valid_range"].tolist(), type(back["flag"]).__name__, back["dims"]
([0.0, inf], 'int16', ('lat', 'lon'))
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from geodiff.errors import GridError

__all__ = [
    "array_from_json",
    "array_to_json",
    "clean_encoding",
    "from_json",
    "to_json",
    "variable_from_json",
    "variable_names",
    "variable_to_json",
]

# encoding keys that describe the storage of one file, not the field: not carried over
DROPPED_ENCODING = frozenset({"chunks", "chunksizes", "preferred_chunks", "original_shape", "source", "compressor",
                              "compressors", "filters", "serializer", "shards", "zarr_format"})


def to_json(value: Any, where: str) -> Any:
    """``value`` (attribute / encoding / array) as exact, tagged plain JSON; ``where`` names it in errors."""
    if isinstance(value, np.generic):  # before the Python types: np.float64 is a float, np.str_ a str
        return {"__scalar__": array_to_json(np.asarray(value), where)}
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": repr(float(value))}
    if isinstance(value, np.dtype):
        return {"__dtype__": value.str}
    if isinstance(value, np.ndarray):
        return array_to_json(value, where)
    if isinstance(value, bytes):
        return {"__bytes__": base64.b64encode(value).decode("ascii")}
    if isinstance(value, tuple):
        return {"__tuple__": [to_json(v, where) for v in value]}
    if isinstance(value, (set, frozenset)):
        return {"__set__": [to_json(v, where) for v in sorted(value, key=repr)]}
    if isinstance(value, list):
        return [to_json(v, where) for v in value]
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise GridError(f"{where} has a non-string key {key!r}; expected string keys")
            out[key] = to_json(item, f"{where}[{key!r}]")
        if any(key.startswith("__") and key.endswith("__") for key in out):
            return {"__dict__": out}
        return out
    raise GridError(
        f"{where} holds a value of type {type(value).__name__}; expected str, number, bool, None, bytes, "
        "numpy scalar/array, or lists/dicts of those"
    )


def from_json(value: Any) -> Any:
    """Inverse of :func:`to_json`."""
    if isinstance(value, list):
        return [from_json(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        (tag, item), = value.items()
        if tag == "__float__":
            return float(item)
        if tag == "__dtype__":
            return np.dtype(item)
        if tag == "__scalar__":
            return array_from_json(item)[()]
        if tag == "__bytes__":
            return base64.b64decode(item)
        if tag == "__tuple__":
            return tuple(from_json(v) for v in item)
        if tag == "__set__":
            return {from_json(v) for v in item}
        if tag == "__dict__":
            return {k: from_json(v) for k, v in item.items()}
    if "__array__" in value:
        return array_from_json(value)
    return {k: from_json(v) for k, v in value.items()}


def array_to_json(array: np.ndarray, where: str) -> dict[str, Any]:
    """A numpy array as ``{"__array__": dtype, "shape": [...], "data": [...]}`` (exact for every value)."""
    array = np.asarray(array)
    kind = array.dtype.kind
    flat = array.ravel()
    if kind in "mM":
        data: list[Any] = flat.view("int64").tolist()
    elif kind == "f":
        data = [v if math.isfinite(v) else {"__float__": repr(v)} for v in flat.astype("float64").tolist()]
    elif kind in "biuU":
        data = flat.tolist()
    elif kind == "S":
        data = [base64.b64encode(v).decode("ascii") for v in flat.tolist()]
    elif kind == "O" and all(isinstance(v, str) for v in flat.tolist()):
        data = flat.tolist()
    else:
        raise GridError(
            f"{where} has values of dtype {array.dtype} that cannot be written to JSON; "
            "expected numbers, booleans, strings or numpy datetimes"
        )
    return {"__array__": array.dtype.str, "shape": list(array.shape), "data": data}


def array_from_json(spec: Mapping[str, Any]) -> np.ndarray:
    """Inverse of :func:`array_to_json`."""
    dtype, shape, data = np.dtype(spec["__array__"]), tuple(spec["shape"]), spec["data"]
    if dtype.kind in "mM":
        return np.asarray(data, dtype="int64").view(dtype).reshape(shape)
    if dtype.kind == "f":
        return np.asarray([from_json(v) for v in data], dtype=dtype).reshape(shape)
    if dtype.kind == "S":
        return np.asarray([base64.b64decode(v) for v in data], dtype=dtype).reshape(shape)
    if dtype.kind == "O":
        out = np.empty(len(data), dtype=object)
        out[:] = data
        return out.reshape(shape)
    return np.asarray(data, dtype=dtype).reshape(shape)


def clean_encoding(encoding: Mapping[str, Any]) -> dict[str, Any]:
    """``encoding`` without the keys that describe one file's storage (chunks, source, ...)."""
    return {k: v for k, v in encoding.items() if k not in DROPPED_ENCODING}


def variable_to_json(name: str, variable: xr.Variable) -> dict[str, Any]:
    """A coordinate variable ``name`` as JSON: dims, exact values, attributes and encoding."""
    where = f"coordinate {name!r}"
    return {
        "name": name,
        "dims": list(variable.dims),
        "data": array_to_json(np.asarray(variable.values), where),
        "attrs": to_json(dict(variable.attrs), f"attributes of {where}"),
        "encoding": to_json(clean_encoding(variable.encoding), f"encoding of {where}"),
    }


def variable_from_json(spec: Mapping[str, Any]) -> xr.Variable:
    """Inverse of :func:`variable_to_json` (also reads variables written without an encoding)."""
    return xr.Variable(
        tuple(spec["dims"]),
        array_from_json(spec["data"]),
        attrs=from_json(spec["attrs"]),
        encoding=from_json(spec["encoding"]),
    )



def variable_names(ds: xr.Dataset, variables: str | Sequence[str] | None) -> list[Any]:
    """The variable names asked for: all data variables when ``variables`` is None."""
    if variables is None:
        return list(ds.data_vars)
    return [variables] if isinstance(variables, str) else list(variables)
