"""Resource checks made before anything is allocated: memory estimates, counts, the compute device.

A request that cannot fit (a hundred million ensemble members, a network with a million base channels, CUDA on a
machine without it) is refused with a :class:`~geodiff.errors.ConfigError` naming the setting, what it would need
and what is there, instead of ending in an allocation failure, an exhausted machine or a driver assertion.
Estimates are lower bounds (the tensors that must exist at once), so a refusal is never a false alarm.

Example
-------
>>> from geodiff.resources import check_memory, sampling_bytes
>>> sampling_bytes((3, 8, 16), members=4, batch_size=2, fields=2)
18432
>>> check_memory(sampling_bytes((3, 180, 360), members=100_000_000, fields=1), "members=100000000")
Traceback (most recent call last):
...
geodiff.errors.ConfigError: members=100000000 needs at least ... GiB of memory but ... GiB are available; ...
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from geodiff.errors import ConfigError

__all__ = ["available_memory", "check_memory", "sampling_bytes", "unet_bytes", "check_count", "check_device"]

GIB = 1024**3
FLOAT_BYTES = 4  # float32 fields and weights


def available_memory() -> int:
    """Bytes of memory the system can give this process now (``psutil``, a dependency of dask.distributed)."""
    import psutil

    return int(psutil.virtual_memory().available)


def check_memory(nbytes: float, what: str, *, available: int | None = None) -> None:
    """:class:`ConfigError` naming ``what`` when ``nbytes`` exceed the memory available (``available`` bytes,
    default :func:`available_memory`)."""
    free = available_memory() if available is None else int(available)
    if nbytes > free:
        raise ConfigError(
            f"{what} needs at least {nbytes / GIB:.3g} GiB of memory but {free / GIB:.3g} GiB are available; "
            "ask for less (fewer members, a smaller batch_size or network, fewer times at once)"
        )


def sampling_bytes(shape: Sequence[int], members: int, batch_size: int | None = None, fields: int = 1) -> int:
    """Lower bound of the memory (bytes) an ensemble of ``members`` fields of ``shape`` ``[C, H, W]`` takes for
    ``fields`` times: the results kept (float32) plus two states of the batch being sampled."""
    cells = math.prod(int(n) for n in shape)
    batch = min(int(batch_size or members), int(members))
    return FLOAT_BYTES * cells * (int(members) * int(fields) + 2 * batch)


def unet_bytes(in_channels: int, base_channels: int, channel_mults: Sequence[int], num_res_blocks: int) -> int:
    """Lower bound of the weights (bytes, float32) of a UNet: the two 3x3 convolutions of each residual block of
    the encoder, at every level's width (the decoder, attention and embeddings come on top)."""
    widths = [int(base_channels) * int(m) for m in channel_mults]
    weights = 9 * int(in_channels) * int(base_channels)
    previous = int(base_channels)
    for width in widths:
        for _ in range(int(num_res_blocks)):
            weights += 9 * (previous * width + width * width)
            previous = width
    return FLOAT_BYTES * weights


def check_count(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an int when it is an integer (not a bool, not a float) ``>= minimum``; ConfigError naming
    ``name`` otherwise.

    >>> check_count(2.5, "members")
    Traceback (most recent call last):
    ...
    geodiff.errors.ConfigError: members must be an integer >= 1, got 2.5
    """
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_device(device: Any) -> Any:
    """``device`` as a ``torch.device`` once it is known to be usable here; ConfigError naming it otherwise
    (an unknown name, ``cuda`` without CUDA, a GPU index beyond the GPUs present, ``mps`` without MPS).

    >>> check_device("cpu")
    device(type='cpu')
    >>> check_device("gpu")
    Traceback (most recent call last):
    ...
    geodiff.errors.ConfigError: device='gpu' is not a torch device ...
    """
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as err:
        raise ConfigError(f"device={device!r} is not a torch device ('cpu', 'cuda', 'cuda:1', ...): {err}") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={device!r} asks for CUDA but this machine has no usable CUDA GPU "
                              "(torch.cuda.is_available() is False); use device='cpu'")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ConfigError(f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={device!r} asks for Apple MPS, which is not available here; use device='cpu'")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device={device!r} is not supported; use 'cpu' or 'cuda'")
    return parsed
