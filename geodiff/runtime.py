"""Runtime settings that make sampling and training fast on CPUs (and harmless on GPUs).

- :func:`configure_allocator`: glibc ``mallopt`` so that large activation buffers stay in the heap instead of
  being ``mmap``-ed and unmapped on every network call (on a 2-core CPU a batch-8 forward of a 20-channel 64x128
  UNet otherwise takes ~280 k page faults, and run-to-run time varies by up to 1.5x). Off glibc (macOS, Windows,
  musl) it does nothing and returns ``False``; the same effect can be had there only through the platform's
  allocator (e.g. ``MALLOC_MMAP_THRESHOLD_``-style variables of jemalloc/tcmalloc).
- :func:`channels_last`: a module (and, via :func:`as_channels_last`, its inputs) in NHWC memory layout, which
  oneDNN convolutions run without reordering. Results are the same up to float rounding.
- :func:`precision_context`: autocast to bf16 (CPU, GPU) or fp16 (GPU) for the network only; the sampler and
  preconditioning arithmetic stay in the field's dtype (the denoiser casts the network's output back).
- :func:`compile_module`: optional ``torch.compile`` (inductor needs a C++ compiler on CPU).
- :func:`optimize`: all of the above for a denoiser, in one call, plus GroupNorm layers whose channels-last
  backward is fast on CPU (:mod:`geodiff.backbones.group_norm`; the guidance VJP's slowest non-GEMM kernel).
- :func:`torch_threads` / :func:`uses_threads`: the torch (intra-op) thread count of a call, restored after it.
  The pipelines, ``train`` and ``fit`` take ``threads`` (default :data:`DEFAULT_THREADS` = 1): the same demo
  reconstruction took 8-16 s with one thread and 124-138 s with two on a busy 2-core machine (OpenMP threads
  spin while waiting for a core), and results differ in float rounding between thread counts, so a fixed default
  also keeps them reproducible from one machine to the next. More threads pay only on an idle machine with large
  grids; ``threads=None`` leaves torch's process-wide setting as it is.

Example
-------
>>> import torch
>>> from geodiff.runtime import channels_last, precision_context
>>> conv = channels_last(torch.nn.Conv2d(2, 4, 3, padding=1))
>>> conv.weight.is_contiguous(memory_format=torch.channels_last)
True
>>> with precision_context("fp32", "cpu"):
...     conv(torch.zeros(1, 2, 8, 8)).dtype
torch.float32
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import inspect
import platform
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from geodiff.backbones.group_norm import use_fast_group_norm
from geodiff.errors import ConfigError

__all__ = [
    "AllocatorSetting",
    "configure_allocator",
    "restore_allocator",
    "channels_last",
    "as_channels_last",
    "precision_context",
    "PRECISIONS",
    "compile_module",
    "optimize",
    "DEFAULT_THREADS",
    "torch_threads",
    "uses_threads",
]

#: torch threads of a pipeline / training call unless told otherwise (module docstring: why one)
DEFAULT_THREADS = 1
_Function = TypeVar("_Function", bound=Callable[..., Any])

#: glibc's mallopt parameter numbers (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
#: glibc's largest allowed mmap threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX = 4 MiB * sizeof(long))
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class AllocatorSetting:
    """What :func:`configure_allocator` did: ``applied`` is False off glibc (``reason`` says why);
    ``mmap_threshold`` None with ``applied`` means mmap is off for allocations."""

    applied: bool
    mmap_threshold: int | None
    trim_threshold: int | None
    reason: str


_CURRENT: AllocatorSetting | None = None


def _libc() -> ctypes.CDLL | None:
    if platform.system() != "Linux":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()  # only glibc has it (musl does not)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def configure_allocator(
    mmap_threshold: int | None = None, trim_threshold: int = 1024 * 1024 * 1024
) -> AllocatorSetting:
    """Serve large buffers from the heap instead of fresh ``mmap`` regions, and give heap memory back to the
    system only when more than ``trim_threshold`` bytes are free at its top (glibc ``mallopt``; process-wide,
    idempotent). ``mmap_threshold=None`` (default) turns ``mmap`` off for allocations altogether
    (``M_MMAP_MAX = 0``): attention maps of a 64x128 field exceed glibc's largest threshold (32 MiB), so a
    threshold alone leaves their page faults; an integer keeps ``mmap`` for buffers above that many bytes.

    Returns an :class:`AllocatorSetting`; off glibc nothing changes and ``applied`` is False. The cost is that up
    to ``trim_threshold`` bytes of freed memory stay mapped by the process.

    >>> setting = configure_allocator(mmap_threshold=1 << 20)
    >>> setting.applied == (_libc() is not None)  # applied exactly where glibc is the C library
    True
    >>> setting.mmap_threshold if setting.applied else 1 << 20
    1048576
    >>> restore_allocator().applied == setting.applied
    True
    """
    global _CURRENT
    if mmap_threshold is not None and not 0 < mmap_threshold <= MMAP_THRESHOLD_MAX:
        raise ConfigError(
            f"mmap_threshold must be None or in (0, {MMAP_THRESHOLD_MAX}] bytes (glibc's limit), got {mmap_threshold}"
        )
    if not 0 < trim_threshold < 2**31:
        raise ConfigError(f"trim_threshold must be in (0, 2**31) bytes, got {trim_threshold}")
    libc = _libc()
    if libc is None:
        _CURRENT = AllocatorSetting(False, None, None, f"not glibc ({platform.system()}): allocator left as is")
        return _CURRENT
    if mmap_threshold is None:
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1
    else:
        ok = libc.mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
    ok = libc.mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)) == 1 and ok
    what = "mmap off" if mmap_threshold is None else f"mmap threshold {mmap_threshold} B"
    reason = f"glibc mallopt applied ({what}, trim threshold {trim_threshold} B)" if ok else "glibc mallopt refused"
    _CURRENT = AllocatorSetting(ok, mmap_threshold if ok else None, int(trim_threshold) if ok else None, reason)
    return _CURRENT


def restore_allocator() -> AllocatorSetting:
    """Put glibc's allocator settings back to their documented defaults (mmap for blocks of 128 KiB and more,
    trim above 128 KiB free; the threshold then stays fixed instead of adapting).

    >>> restore_allocator().mmap_threshold in (128 * 1024, None)
    True
    """
    global _CURRENT
    libc = _libc()
    if libc is None:
        _CURRENT = AllocatorSetting(False, None, None, f"not glibc ({platform.system()}): allocator left as is")
        return _CURRENT
    ok = libc.mallopt(_M_MMAP_MAX, 65536) == 1
    ok = libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024) == 1 and ok
    ok = libc.mallopt(_M_TRIM_THRESHOLD, 128 * 1024) == 1 and ok
    _CURRENT = AllocatorSetting(ok, 128 * 1024 if ok else None, 128 * 1024 if ok else None,
                                "glibc defaults restored" if ok else "glibc mallopt refused")
    return _CURRENT


def channels_last(module: nn.Module) -> nn.Module:
    """``module`` with its 4-D parameters and buffers in channels-last (NHWC) layout (in place; returned)."""
    return module.to(memory_format=torch.channels_last)


def as_channels_last(x: Tensor) -> Tensor:
    """``x [B, C, H, W]`` in channels-last layout (same values; other ranks are returned unchanged).

    >>> as_channels_last(torch.zeros(2, 3, 4, 5)).stride()
    (60, 1, 15, 3)
    """
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


def precision_context(precision: str = "fp32", device_type: str = "cpu") -> contextlib.AbstractContextManager:
    """Autocast context for the network: ``"fp32"`` (nothing), ``"bf16"`` (CPU or GPU) or ``"fp16"`` (GPU only).

    >>> with precision_context("bf16", "cpu"):
    ...     torch.nn.functional.linear(torch.ones(1, 2), torch.ones(3, 2)).dtype
    torch.bfloat16
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device_type == "cpu":
        raise ConfigError("precision='fp16' is for GPUs; use 'bf16' on CPU")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device_type, dtype=dtype)


def compile_module(module: nn.Module, *, mode: str | None = None, dynamic: bool = False) -> nn.Module:
    """``torch.compile(module)`` (first call compiles: minutes on a small CPU; needs a C++ compiler there).

    Example (not run here: importing the compiler stack takes seconds): ``fast = compile_module(net)``, then
    ``fast(x, label)`` as ``net``; :meth:`geodiff.diffusion.denoiser.Denoiser.compile_backbone` does this inside
    a denoiser.
    """
    # Guidance takes several vector-Jacobian products from one forward graph (MMPS's CG steps: retain_graph=True);
    # compiled backward graphs that donate their buffers refuse that, so buffer donation is switched off.
    import torch._functorch.config as functorch_config

    functorch_config.donated_buffer = False
    return torch.compile(module, mode=mode, dynamic=dynamic)  # type: ignore[return-value]


def optimize(
    denoiser: nn.Module,
    *,
    use_channels_last: bool = True,
    allocator: bool = True,
    freeze: bool = True,
    compile: bool = False,
) -> nn.Module:
    """Prepare a :class:`~geodiff.diffusion.denoiser.Denoiser` for fast inference, in place (returned):
    eval mode, parameters frozen (``freeze``: guidance back-propagates to the input only, so no tensor is kept
    for weight gradients), channels-last network and inputs (with its ``nn.GroupNorm`` layers switched to
    :class:`~geodiff.backbones.group_norm.FastGroupNorm`, whose channels-last backward is up to 6x faster on CPU),
    the allocator setting and optionally ``torch.compile`` of the backbone. Outputs are unchanged up to float
    rounding; the saved state is unchanged.

    >>> from geodiff.backbones.unet import UNet
    >>> from geodiff.diffusion.denoiser import Denoiser
    >>> d = optimize(Denoiser(UNet(in_channels=1, base_channels=8, channel_mults=(1,))))
    >>> d(torch.zeros(1, 1, 8, 8), 1.0).shape
    torch.Size([1, 1, 8, 8])
    """
    if allocator:
        configure_allocator()
    denoiser.eval()
    if freeze:
        denoiser.requires_grad_(False)
    backbone = getattr(denoiser, "backbone", None)
    if backbone is None:
        raise ConfigError(f"optimize needs a Denoiser with a .backbone, got {type(denoiser).__name__}")
    if use_channels_last:
        channels_last(backbone)
        use_fast_group_norm(backbone)
    denoiser.channels_last = bool(use_channels_last)
    if compile and not denoiser.is_compiled:
        denoiser.compile_backbone()
    return denoiser


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch (intra-op) threads, then restore the previous count; ``None`` leaves
    the setting alone.

    >>> before = torch.get_num_threads()
    >>> with torch_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    if threads is None:
        yield
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads must be a positive integer or None, got {threads!r}")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def uses_threads(function: _Function) -> _Function:
    """Decorator: run ``function`` under :func:`torch_threads` of its own ``threads`` argument."""
    signature = inspect.signature(function)
    if "threads" not in signature.parameters:
        raise ConfigError(f"{function.__qualname__} has no 'threads' parameter")

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        with torch_threads(bound.arguments["threads"]):
            return function(*args, **kwargs)

    return run  # type: ignore[return-value]
