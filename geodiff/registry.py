"""Plugin registry: kinds of plugin -> ``{name: "module:attribute"}``.

Built-ins are listed here by import path and imported only when asked for. Third-party packages add
plugins through the entry-point group ``geodiff.<kind>`` (for example ``geodiff.guidance``) in their
own ``pyproject.toml``::

    [project.entry-points."geodiff.guidance"]
    my_guidance = "my_package.guidance:MyGuidance"

Example
-------
>>> from geodiff import registry
>>> registry.get("sampler", "heun").__name__
'HeunSampler'
>>> "unet" in registry.available("backbone")
True
"""

from __future__ import annotations

import functools
import importlib
import inspect
import typing
from importlib.metadata import entry_points
from typing import Any

from geodiff.errors import PluginError

__all__ = ["KINDS", "available", "get", "name_of", "register"]

KINDS: tuple[str, ...] = ("backbone", "schedule", "sampler", "guidance", "adapter", "reward", "forecast")

_BUILTINS: dict[str, dict[str, str]] = {
    "backbone": {
        "unet": "geodiff.backbones.unet:UNet",
        "diffusers_unet": "geodiff.backbones.diffusers_unet:DiffusersUNet",
        "conditional_unet": "geodiff.backbones.conditional:ConditionalUNet",
    },
    "schedule": {
        "vp": "geodiff.diffusion.schedules:VPSchedule",
        "ve": "geodiff.diffusion.schedules:VESchedule",
        "edm": "geodiff.diffusion.schedules:EDMSchedule",
    },
    "sampler": {
        "ddpm": "geodiff.diffusion.samplers:DDPMSampler",
        "ddim": "geodiff.diffusion.samplers:DDIMSampler",
        "euler": "geodiff.diffusion.samplers:EulerSampler",
        "heun": "geodiff.diffusion.samplers:HeunSampler",
        "dpmpp_2m": "geodiff.diffusion.samplers:DPMSolverPP2MSampler",
    },
    "guidance": {
        "reconmost": "geodiff.guidance.reconmost:ReconMOSTGuidance",
        "dps": "geodiff.guidance.dps:DPSGuidance",
        "mmps": "geodiff.guidance.mmps:MMPSGuidance",
        "sda": "geodiff.guidance.mmps:SDAGuidance",
        "repaint": "geodiff.guidance.repaint:RePaintGuidance",
        "coarse": "geodiff.guidance.coarse:CoarseGuidance",
        "latent_mmps": "geodiff.guidance.latent_mmps:LatentMMPSGuidance",
        "reward": "geodiff.guidance.reward:RewardGuidance",
    },
    "adapter": {
        "cmip6": "geodiff.adapters.cmip6:open_dataset",
        "cmip6_collection": "geodiff.adapters.cmip6:open_collection",
        "en4_analysis": "geodiff.adapters.en4:open_analysis",
        "en4_profiles": "geodiff.adapters.en4:read_profiles",
        "era5": "geodiff.adapters.era5:open_dataset",
        "gridsat": "geodiff.adapters.gridsat:open_dataset",
        "sounders": "geodiff.adapters.sounders:open_dataset",
        "gebco": "geodiff.adapters.gebco:open_dataset",
        "stations": "geodiff.adapters.stations:read_stations",
        "woa_sample": "geodiff.tutorial:open_dataset",
        "ferret_woa": "geodiff.adapters.woa:open_ferret_woa",
    },
    "reward": {
        "observation_accuracy": "geodiff.alignment.rewards:ObservationAccuracy",
        "forecast_skill": "geodiff.alignment.rewards:ForecastSkill",
        "geostrophic_balance": "geodiff.alignment.rewards:GeostrophicBalance",
        "spectral_slope": "geodiff.alignment.rewards:SpectralSlope",
    },
    "forecast": {
        "barotropic": "geodiff.dynamics.barotropic:BarotropicModel",
        "autoregression": "geodiff.dynamics.autoregression:PointwiseAutoregression",
    },
}

# Plugins registered at run time with :func:`register` (kind -> name -> object).
_RUNTIME: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise PluginError(f"unknown plugin kind {kind!r}; kinds are {', '.join(KINDS)}")


@functools.cache
def _entry_points(kind: str) -> dict[str, Any]:
    """Entry points of group ``geodiff.<kind>`` (cached: installed packages do not change at run time)."""
    return {ep.name: ep for ep in entry_points(group=f"geodiff.{kind}")}


def available(kind: str) -> list[str]:
    """Sorted names of every plugin of ``kind``: built-in, registered at run time, or from entry points."""
    _check_kind(kind)
    return sorted(set(_BUILTINS[kind]) | set(_RUNTIME[kind]) | set(_entry_points(kind)))


def register(kind: str, name: str, obj: Any = None, *, overwrite: bool = False) -> Any:
    """Register ``obj`` as plugin ``name`` of ``kind``; usable as a decorator when ``obj`` is omitted.

    >>> from geodiff import registry
    >>> @registry.register("reward", "doc_example_reward", overwrite=True)
    ... class DocReward:
    ...     pass
    >>> registry.get("reward", "doc_example_reward") is DocReward
    True
    """
    _check_kind(kind)

    def _add(target: Any) -> Any:
        taken = name in _BUILTINS[kind] or name in _entry_points(kind) or name in _RUNTIME[kind]
        if taken and not overwrite and _RUNTIME[kind].get(name) is not target:
            raise PluginError(f"{kind} plugin {name!r} is already registered; pass overwrite=True to replace it")
        _RUNTIME[kind][name] = target
        return target

    return _add if obj is None else _add(obj)


def _import(path: str, kind: str, name: str) -> Any:
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attribute) if attribute else module
    except (ImportError, AttributeError) as err:
        raise PluginError(f"{kind} plugin {name!r} points at {path!r}, which cannot be imported: {err}") from err


def get(kind: str, name_or_cls: str | type | Any) -> Any:
    """The plugin of ``kind`` called ``name_or_cls``; a class or instance passed in is returned unchanged.

    Raises :class:`~geodiff.errors.PluginError` listing the available names when ``name_or_cls`` is unknown.
    """
    _check_kind(kind)
    if not isinstance(name_or_cls, str):
        return name_or_cls
    name = name_or_cls
    if name in _RUNTIME[kind]:
        return _RUNTIME[kind][name]
    if name in _BUILTINS[kind]:
        return _import(_BUILTINS[kind][name], kind, name)
    eps = _entry_points(kind)
    if name in eps:
        try:
            return eps[name].load()
        except Exception as err:  # an entry point can fail in any way; report which one
            raise PluginError(f"{kind} plugin {name!r} (entry point {eps[name].value!r}) failed to load: {err}") from err
    raise PluginError(f"no {kind} plugin named {name!r}; available: {', '.join(available(kind)) or 'none'}")


def name_of(kind: str, obj: Any) -> str:
    """The registered name of a plugin class or function (or of an instance's class), for configs and provenance."""
    _check_kind(kind)
    cls = obj if isinstance(obj, type) or inspect.isfunction(obj) else type(obj)
    for name, target in _RUNTIME[kind].items():
        if target is cls:
            return name
    path = f"{cls.__module__}:{cls.__qualname__}"
    for name, builtin in _BUILTINS[kind].items():
        if builtin == path:
            return name
    for name, ep in _entry_points(kind).items():
        if ep.value == path:
            return name
    raise PluginError(f"{cls.__qualname__} is not a registered {kind} plugin; register it with geodiff.registry.register")


def check_options(target: Any, options: Any, where: str, *, positional: int = 0) -> dict[str, Any]:
    """``options`` (a dict or None) checked against the keyword arguments of ``target`` (a class: its
    ``__init__``; a function) after its first ``positional`` arguments; :class:`~geodiff.errors.ConfigError`
    naming ``where``, the unknown keys and the allowed ones. Returns the options as a dict.

    >>> check_options(get("guidance", "mmps"), {"cg_iterashuns": 3}, "guidance_options", positional=3)
    Traceback (most recent call last):
    ...
    geodiff.errors.ConfigError: guidance_options: unknown key(s) 'cg_iterashuns' for MMPSGuidance (allowed: ...)
    """
    from geodiff.errors import ConfigError

    if options is None:
        return {}
    if not isinstance(options, dict) or not all(isinstance(key, str) for key in options):
        raise ConfigError(f"{where} must be a mapping of option names to values, got {options!r}")
    function = target.__init__ if isinstance(target, type) else target
    try:
        params = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return dict(options)  # a callable without an inspectable signature: taken at its word
    if isinstance(target, type):
        params = params[1:]  # self
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return dict(options)
    allowed = [p.name for p in params[positional:] if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                                 inspect.Parameter.KEYWORD_ONLY)]
    name = getattr(target, "__name__", type(target).__name__)
    unknown = [key for key in options if key not in allowed]
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))} for {name} "
                          f"(allowed: {', '.join(allowed) or 'none'})")
    try:
        hints = typing.get_type_hints(function)
    except (NameError, TypeError):
        hints = {}
    for key, value in options.items():
        problem = type_problem(hints.get(key), value)
        if problem:
            raise ConfigError(f"{where}: key {key!r} of {name}: {problem} (got {value!r})")
    return dict(options)


def type_problem(hint: Any, value: Any) -> str | None:
    """Why ``value`` does not fit the type ``hint`` (pydantic, strict: no string read as a number), or None.
    Types pydantic cannot check (tensors, callables, schedules) are left to the pipeline."""
    from pydantic import PydanticSchemaGenerationError, TypeAdapter, ValidationError

    if hint is None:
        return None
    try:
        adapter = TypeAdapter(hint)
    except (PydanticSchemaGenerationError, TypeError, NameError):
        return None
    try:
        adapter.validate_python(value, strict=True)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return f"expected {type_name(hint)}" + (f" ({where}: {first['msg']})" if where else f": {first['msg']}")
    return None


def type_name(hint: Any) -> str:
    """A type hint as written in code, without the ``typing.`` prefixes (for messages and help)."""
    text = str(hint).replace("typing.", "").replace("collections.abc.", "")
    return text.replace("<class '", "").replace("'>", "")
