"""The settings of a pipeline call, checked before any model is loaded or any memory allocated.

:func:`check_request` is called first by :func:`geodiff.reconstruct`, :func:`geodiff.downscale` and
:func:`geodiff.assimilate`, and by ``geodiff validate`` with a configuration's options, so that a configuration
``validate`` accepts is one ``run`` accepts: the device exists here, ``members`` / ``steps`` / ``batch_size`` are
integers >= 1, the guidance and sampler are registered and take every key of ``guidance_options`` /
``sampler_options`` with values of the types they declare, ``max_normalized`` is a number, None (or ``"auto"``
where the pipeline has it), ``precision`` and ``on_runaway`` are known.
Each failure is a :class:`~geodiff.errors.ConfigError` (or :class:`~geodiff.errors.PluginError` for an unknown
name) naming the setting, the value and what is allowed.

Example
-------
>>> from geodiff.pipelines.request import check_request
>>> check_request("reconstruct", guidance="mmsp")
Traceback (most recent call last):
...
geodiff.errors.PluginError: no guidance plugin named 'mmsp'; available: ...
>>> check_request("reconstruct", guidance_options={"cg_iterashuns": 2})
Traceback (most recent call last):
...
geodiff.errors.ConfigError: guidance_options: unknown key(s) 'cg_iterashuns' for MMPSGuidance (allowed: ...)
"""

from __future__ import annotations

from typing import Any

from geodiff import registry
from geodiff.errors import ConfigError
from geodiff.resources import check_count, check_device

__all__ = ["check_request", "guidance_class", "opened", "ASSIMILATION_GUIDANCE"]

#: guidance names of :func:`geodiff.assimilate` (through the decoder of its latent model)
ASSIMILATION_GUIDANCE = ("mmps", "dps", "none")
_DEFAULT_GUIDANCE = {"reconstruct": "mmps", "downscale": "coarse", "assimilate": "mmps"}


def guidance_class(kind: str, guidance: Any) -> Any:
    """The guidance class a ``kind`` pipeline builds for ``guidance`` (None when it builds none); ConfigError or
    PluginError naming the guidance otherwise."""
    if kind == "reconstruct":
        from geodiff.guidance import observation_method

        return observation_method(guidance)
    if kind == "downscale":
        if guidance is None:
            return None
        if guidance != "coarse":
            raise ConfigError(f"guidance must be 'coarse' or None for downscale, got {guidance!r}")
        from geodiff.guidance import CoarseGuidance

        return CoarseGuidance
    if kind == "assimilate":
        if guidance not in ASSIMILATION_GUIDANCE:
            raise ConfigError(f"guidance must be one of {ASSIMILATION_GUIDANCE} for assimilate, got {guidance!r}")
        from geodiff.guidance import DPSGuidance, LatentMMPSGuidance

        return {"mmps": LatentMMPSGuidance, "dps": DPSGuidance, "none": None}[guidance]
    raise ConfigError(f"unknown pipeline {kind!r}; expected one of {', '.join(_DEFAULT_GUIDANCE)}")


def check_request(kind: str, *, device: Any = "cpu", members: Any = 1, steps: Any = 1, batch_size: Any = None,
                  guidance: Any = "default", guidance_options: Any = None, sampler: Any = "heun",
                  sampler_options: Any = None, max_normalized: Any = None, precision: Any = "fp32",
                  on_runaway: Any = "resample", runaway_factor: Any = None) -> None:
    """Check the settings of a ``kind`` pipeline call (module docstring); ``guidance="default"`` stands for the
    pipeline's default guidance."""
    from geodiff.diffusion.engine import RunawayCheck
    from geodiff.runtime import precision_context

    precision_context(precision, check_device(device).type)  # built, not entered: checks the name and device
    RunawayCheck(on_runaway, runaway_factor)
    check_count(members, "members")
    check_count(steps, "steps")
    if batch_size is not None:
        check_count(batch_size, "batch_size")
    cls = guidance_class(kind, _DEFAULT_GUIDANCE.get(kind) if guidance == "default" else guidance)
    if cls is not None:
        registry.check_options(cls, guidance_options, "guidance_options", positional=3)
    elif guidance_options:
        raise ConfigError(f"guidance_options {guidance_options!r} given without a guidance that takes them")
    registry.check_options(registry.get("sampler", sampler), sampler_options, "sampler_options")
    if isinstance(max_normalized, bool) or not (
            max_normalized is None or isinstance(max_normalized, (int, float)) and max_normalized > 0
            or max_normalized == "auto" and kind == "reconstruct"):
        allowed = "a positive number, 'auto' or None (null in YAML)" if kind == "reconstruct" \
            else "a positive number or None (null in YAML)"
        raise ConfigError(f"max_normalized must be {allowed}, got {max_normalized!r}")


def opened(value: Any) -> Any:
    """``value`` itself, or the checked dataset / table at ``value`` when it is a path or URL
    (:func:`geodiff.io.paths.open_input`: netCDF, zarr or CSV, every file check of :mod:`geodiff.inputs`)."""
    import os

    if isinstance(value, (str, os.PathLike)):
        from geodiff.io.paths import open_input

        return open_input(value)
    return value
