"""YAML configurations of the ``geodiff`` commands, validated before any compute.

Each command reads one YAML file. Every key is checked against the command's schema (pydantic): an unknown key,
a value of the wrong type or a missing input file raises :class:`~geodiff.errors.ConfigError` naming the file
and the key (``training.steps``) and saying what was expected. Relative paths are taken relative to the folder
of the configuration file. ``options`` of a pipeline are checked against the pipeline's keyword arguments: their
names, their types (from the pipeline's signature) and their values (:func:`geodiff.pipelines.request.check_request`:
device, guidance and sampler names and options, ``max_normalized``), so that ``geodiff validate`` refuses what
the run would. The YAML itself is read safely: a key given twice is refused (YAML would keep the last silently),
and so is a document whose aliases expand to more than :data:`MAX_YAML_NODES` values (an "alias bomb").
A network too large for the memory of the machine (``model.base_channels``) is refused before it is built.
The defaults of ``geodiff fit`` are those of :func:`geodiff.fit`'s signature (:func:`fit_default`): the API, the
command and the example configurations share one set.

Example
-------
>>> import tempfile, pathlib
>>> from geodiff.jobconfig import load_config
>>> path = pathlib.Path(tempfile.mkdtemp()) / "evaluate.yaml"
>>> _ = path.write_text("prediction: out.zarr\\ntruth: truth.nc\\nstepz: 3\\n")
>>> load_config(path, "evaluate")
Traceback (most recent call last):
...
geodiff.errors.ConfigError: .../evaluate.yaml: key 'prediction': file .../out.zarr does not exist; ...; unknown key 'stepz' (allowed: prediction, truth, variables, output, weights)
"""

from __future__ import annotations

import functools
import inspect
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    ValidationInfo,
)

from geodiff.errors import ConfigError, GeodiffError
from geodiff.io.paths import Location, exists, is_url

__all__ = ["load_config", "command_of", "read_yaml", "describe_keys", "describe_options", "COMMANDS", "TrainConfig",
           "FitConfig", "FIT_SELECTION_KEYS", "fit_default", "ReconstructConfig", "DownscaleConfig", "AssimilateConfig",
           "EvaluateConfig", "BatchSettings", "MAX_YAML_NODES", "open_input"]

#: the most values (scalars, lists, mappings) a configuration may expand to, aliases included
MAX_YAML_NODES = 100_000


def _resolve(path: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base")
    return path if path.is_absolute() or base is None else Path(base) / path


def _location(text: str | Path, info: ValidationInfo) -> Location:
    """A URL as it is (``memory://``, ``s3://``, ...), a local path relative to the configuration file."""
    return text if is_url(text) else _resolve(Path(text), info)


def _existing(text: str | Path, info: ValidationInfo) -> Location:
    location = _location(text, info)
    try:
        found = exists(location)
    except GeodiffError as err:
        raise ValueError(str(err)) from None
    if not found:
        raise ValueError(f"file {location} does not exist")
    return location


#: a path or URL that must exist (file, folder or store), local paths relative to the configuration file
InputPath = Annotated[str | Path, AfterValidator(_existing)]
#: a path written by the command, relative to the configuration file
OutputPath = Annotated[Path, AfterValidator(_resolve)]
PositiveInt = Annotated[StrictInt, Field(ge=1)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BatchSettings(_Strict):
    """How a ``.zarr`` output is computed: regions of ``time_chunk`` times, other ``chunks``, dask workers."""

    time_chunk: PositiveInt = 1
    chunks: dict[str, PositiveInt] = {}
    workers: NonNegativeInt = 0  # >0: a local dask cluster with that many worker processes
    scheduler: str | None = None  # address of a running dask scheduler (instead of workers)
    retries: NonNegativeInt = 2


class _PipelineConfig(_Strict):
    model: InputPath
    output: OutputPath
    members: PositiveInt = 8
    seed: NonNegativeInt = 0
    options: dict[str, Any] = {}
    times: list[Any] | None = None
    batch: BatchSettings = BatchSettings()
    progress: StrictBool = True
    threads: PositiveInt = 1  # torch threads per process (geodiff.runtime.DEFAULT_THREADS)


class ReconstructConfig(_PipelineConfig):
    """``geodiff reconstruct``: a model bundle and an observation table (netCDF, zarr or CSV)."""

    observations: InputPath


class DownscaleConfig(_PipelineConfig):
    """``geodiff downscale``: a coarse field, optional auxiliary sources (name -> file) and station table."""

    coarse: InputPath
    sources: dict[str, InputPath] = {}
    stations: InputPath | None = None


class AssimilateConfig(_PipelineConfig):
    """``geodiff assimilate``: a background field and an observation table."""

    background: InputPath
    observations: InputPath


class ModelSettings(_Strict):
    """The UNet prior trained by ``geodiff train`` (EDM preconditioning)."""

    base_channels: PositiveInt = 16
    channel_mults: list[PositiveInt] = [1, 2]
    num_res_blocks: PositiveInt = 1
    attention_levels: list[StrictInt] = []
    mid_attention: StrictBool = False
    mask_aware: StrictBool = True
    periodic_lon: StrictBool = False
    sigma_data: float = Field(1.0, gt=0)


class TrainingSettings(_Strict):
    """Arguments of :func:`geodiff.train`."""

    steps: PositiveInt
    batch_size: PositiveInt
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: NonNegativeInt = 0
    grad_clip: Annotated[float, Field(ge=0)] | None = 1.0
    ema_decay: float = Field(0.999, ge=0, lt=1)
    loss: Literal["edm", "ddpm"] = "edm"
    patch_size: tuple[PositiveInt, PositiveInt] | None = None
    seed: NonNegativeInt = 0
    checkpoint_every: PositiveInt = 1000
    validation: float = Field(0.0, ge=0, lt=0.5)  # fraction of the times, the last ones, held out for validation
    eval_every: PositiveInt = 100  # steps between validation losses


class TrainConfig(_Strict):
    """``geodiff train``: canonical training data -> a model bundle (checkpoints in ``checkpoint_dir``)."""

    data: InputPath
    variables: list[str] | None = None
    output: OutputPath
    checkpoint_dir: OutputPath | None = None
    overwrite: StrictBool = False
    model: ModelSettings = ModelSettings()
    training: TrainingSettings
    progress: StrictBool = True
    threads: PositiveInt = 1  # torch threads (geodiff.runtime.DEFAULT_THREADS)


def _fit_argument_default(name: str) -> Any:
    """The default of argument ``name`` of :func:`geodiff.fit`, read from its signature."""
    from geodiff.training.fit import fit

    return inspect.signature(fit).parameters[name].default


def fit_default(name: str) -> Any:
    """A configuration key's default: :func:`geodiff.fit`'s default of the argument ``name``, read from its
    signature when a configuration is validated (so that importing this module stays free of torch).

    >>> import inspect, geodiff
    >>> lr = FitConfig.model_fields["lr"].get_default(call_default_factory=True)
    >>> lr == inspect.signature(geodiff.fit).parameters["lr"].default
    True
    """
    return Field(default_factory=functools.partial(_fit_argument_default, name))


#: keys of ``geodiff fit`` that choose and write the data; every other key is an argument of :func:`geodiff.fit`
FIT_SELECTION_KEYS = ("data", "bbox", "levels", "output", "overwrite")


class FitConfig(_Strict):
    """``geodiff fit``: canonical training data -> the model bundle of :func:`geodiff.fit` (by default the hybrid
    prior: an exact Gaussian part and a learned correction, where the grid allows). Every key but
    :data:`FIT_SELECTION_KEYS` is the argument of :func:`geodiff.fit` of that name, with its default. ``bbox``
    (``[west, south, east, north]``, degrees: :func:`geodiff.adapters.select_bbox`) and ``levels`` (values of the
    vertical coordinate: depth in m, level) choose the region and the levels to train on."""

    data: InputPath
    variables: list[str] | None = fit_default("variables")
    bbox: Annotated[list[float], Field(min_length=4, max_length=4)] | None = None  # [west, south, east, north]
    levels: list[float] | None = None
    output: OutputPath
    overwrite: StrictBool = False
    checkpoint_dir: OutputPath | None = fit_default("checkpoint_dir")
    resume: StrictBool = fit_default("resume")
    steps: PositiveInt | None = fit_default("steps")
    time_budget: Annotated[float, Field(gt=0)] | None = fit_default("time_budget")  # seconds
    validation: Annotated[float, Field(gt=0, lt=0.5)] = fit_default("validation")
    validate_every: PositiveInt | None = fit_default("validate_every")
    anomaly: Literal["auto", "month", "season", "none", "off"] = fit_default("anomaly")
    prior: Literal["auto", "hybrid", "network"] = fit_default("prior")
    check_correction: StrictBool = fit_default("check_correction")
    base_channels: PositiveInt = fit_default("base_channels")
    batch_size: PositiveInt = fit_default("batch_size")
    lr: Annotated[float, Field(gt=0)] = fit_default("lr")
    ema_decay: Annotated[float, Field(ge=0, lt=1)] = fit_default("ema_decay")
    patch_size: tuple[PositiveInt, PositiveInt] | None = fit_default("patch_size")
    seed: NonNegativeInt = fit_default("seed")
    device: str = fit_default("device")
    max_memory: Annotated[float, Field(gt=0)] | None = fit_default("max_memory")  # bytes of encoded fields
    progress: StrictBool = fit_default("progress")
    threads: PositiveInt | None = fit_default("threads")  # torch threads; None: as set


class EvaluateConfig(_Strict):
    """``geodiff evaluate``: scores of an ensemble output against a truth dataset (JSON report)."""

    prediction: InputPath
    truth: InputPath
    variables: list[str] | None = None
    output: OutputPath | None = None
    weights: Literal["coslat", "none"] = "coslat"


#: command -> schema; ``batch`` configurations name their pipeline with the key ``job``
COMMANDS: dict[str, type[_Strict]] = {
    "train": TrainConfig,
    "fit": FitConfig,
    "reconstruct": ReconstructConfig,
    "downscale": DownscaleConfig,
    "assimilate": AssimilateConfig,
    "evaluate": EvaluateConfig,
}


def _describe(error: dict[str, Any], schema: type[BaseModel]) -> str:
    loc = [str(part) for part in error["loc"]]
    key = ".".join(loc)
    if error["type"] == "extra_forbidden":
        model: Any = schema
        for part in loc[:-1]:  # walk to the model that holds the key, to list what it allows
            field = getattr(model, "model_fields", {}).get(part)
            annotation = getattr(field, "annotation", None)
            model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
            if model is None:
                break
        allowed = f" (allowed: {', '.join(model.model_fields)})" if model is not None else ""
        return f"unknown key {key!r}{allowed}"
    if error["type"] == "missing":
        return f"missing key {key!r}"
    message = error["msg"].removeprefix("Value error, ")
    return f"key {key!r}: {message} (got {error.get('input')!r})" if "does not exist" not in message \
        else f"key {key!r}: {message}"


_PIPELINES = ("reconstruct", "downscale", "assimilate")


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(f"{self.name}: key {key!r} is given twice (lines {seen[key]} and {line}); YAML "
                                  "would keep only the last one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values ``node`` stands for once every alias is expanded (memoised per node: linear time)."""
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = 1  # a recursive alias counts once (and is refused by the schema)
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(item, sizes) for item in node.value)
    else:
        size = 1
    sizes[id(node)] = size
    return size


def read_yaml(path: Path) -> Any:
    """The YAML document at ``path``; ConfigError naming the file when it is not valid YAML, gives a key twice or
    expands (through aliases) to more than :data:`MAX_YAML_NODES` values."""
    try:
        text = path.read_text()
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not a text (YAML) file: {err}") from None
    try:
        loader = _UniqueKeyLoader(text)
        loader.name = str(path)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            size = _expanded_size(node, {})
            if size > MAX_YAML_NODES:
                raise ConfigError(f"{path}: the document expands to {size} values through its aliases (more than "
                                  f"{MAX_YAML_NODES}); write the values out instead of nesting aliases")
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from err


def _read_mapping(path: Path) -> dict[str, Any]:
    """The keys and values of the YAML configuration file ``path`` (:func:`read_yaml`); ConfigError otherwise."""
    if not path.is_file():
        raise ConfigError(f"configuration file {path} does not exist")
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values, got {type(data).__name__}")
    return data


def command_of(path: str | Path) -> str:
    """The command a configuration file is written for: ``batch`` when it names a ``job``, else the one command
    whose required keys it has and whose keys it uses (``train``: data and training; ``evaluate``: prediction and
    truth; ...). :class:`~geodiff.errors.ConfigError` when none or several fit.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "e.yaml"
    >>> _ = path.write_text("prediction: out.zarr\\ntruth: truth.nc\\n")
    >>> command_of(path)
    'evaluate'
    """
    path = Path(path)
    data = _read_mapping(path)
    if "job" in data:
        return "batch"
    keys = set(map(str, data))
    fits = [name for name, schema in COMMANDS.items()
            if {k for k, f in schema.model_fields.items() if f.is_required()} <= keys <= set(schema.model_fields)]
    if len(fits) != 1:
        raise ConfigError(f"{path}: cannot tell which command its keys {sorted(keys)} are for "
                          f"({'several fit: ' + ', '.join(fits) if fits else 'none fits'}); name it: "
                          f"geodiff validate COMMAND --config {path}")
    return fits[0]


def load_config(path: str | Path, command: str) -> Any:
    """Read and validate the YAML configuration of ``command``; returns the validated settings.

    For ``command="batch"`` the file names its pipeline with ``job: reconstruct|downscale|assimilate`` and the
    output must be a ``.zarr`` store; the settings returned carry ``.job``. The pipeline's own command
    (``geodiff reconstruct``) reads such a file too when ``job`` names it.
    Raises :class:`~geodiff.errors.ConfigError` naming the file and every bad key.
    """
    path = Path(path)
    data = _read_mapping(path)
    job = None
    if command == "batch":
        job = data.pop("job", None)
        if job not in _PIPELINES:
            raise ConfigError(f"{path}: key 'job' must be one of reconstruct, downscale, assimilate; got {job!r}")
        schema = COMMANDS[job]
    elif command in COMMANDS:
        schema = COMMANDS[command]
        if command in _PIPELINES and "job" in data:  # a batch configuration run by its pipeline's own command
            if data["job"] != command:
                raise ConfigError(f"{path}: key 'job' is {data['job']!r}, so run it with `geodiff {data['job']}` "
                                  f"or `geodiff batch run`, not `geodiff {command}`")
            data.pop("job")
    else:
        raise ConfigError(f"unknown command {command!r}; expected one of {', '.join([*COMMANDS, 'batch'])}")
    try:
        config = schema.model_validate(data, context={"base": path.parent})
    except ValidationError as err:
        problems = "; ".join(_describe(e, schema) for e in err.errors())
        raise ConfigError(f"{path}: {problems}") from None
    if job is not None and config.output.suffix != ".zarr":
        raise ConfigError(f"{path}: key 'output' must be a .zarr store for a batch job, got {config.output}")
    pipeline_kind = job or (command if command in _PIPELINES else None)
    if pipeline_kind is not None:
        _check_options(path, pipeline_kind, config.options, config.members)
        if config.times is not None:
            _check_times(path, config.times)
    if isinstance(config, TrainConfig):
        _check_model_size(path, "model.base_channels", config.model.base_channels, config.model.channel_mults,
                          config.model.num_res_blocks)
    if isinstance(config, FitConfig):
        _check_fit_settings(path, config)
    return config.model_copy(update={"job": job}) if job else config


def _check_times(path: Path, times: list[Any]) -> None:
    """ConfigError naming the entry of ``times`` that is not a time (or is missing)."""
    import numpy as np

    from geodiff.errors import ObservationError
    from geodiff.observations import parse_times

    try:
        parsed = parse_times([str(t) if not isinstance(t, str) else t for t in times], f"{path}: key 'times'")
    except ObservationError as err:
        raise ConfigError(str(err)) from None
    missing = np.flatnonzero(np.isnat(parsed))
    if missing.size:
        raise ConfigError(f"{path}: key 'times': entry {int(missing[0])} is empty or NaT; list the times wanted")


def _check_model_size(path: Path, key: str, base_channels: int, channel_mults: list[int],
                      num_res_blocks: int) -> None:
    """ConfigError before a network too large for this machine's memory is built."""
    from geodiff.resources import check_memory, unet_bytes

    try:
        check_memory(unet_bytes(1, base_channels, channel_mults, num_res_blocks),
                     f"key {key!r}: {base_channels} (a UNet with channel_mults {list(channel_mults)})")
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def _check_fit_settings(path: Path, config: FitConfig) -> None:
    """ConfigError before training for a device this machine lacks or a network (the deepest one
    :func:`geodiff.training.fit.default_architecture` builds) too large for its memory."""
    from geodiff.resources import check_device
    from geodiff.training.fit import default_architecture

    try:
        check_device(config.device)
    except ConfigError as err:
        raise ConfigError(f"{path}: key 'device': {err}") from None
    deepest = default_architecture((1, 64, 64), base_channels=config.base_channels)
    _check_model_size(path, "base_channels", config.base_channels, deepest["channel_mults"],
                      deepest["num_res_blocks"])


def _check_options(path: Path, kind: str, options: dict[str, Any], members: int) -> None:
    """ConfigError unless the pipeline exists, takes every key of ``options`` with a value of the type its
    signature declares, and :func:`~geodiff.pipelines.request.check_request` accepts the settings."""
    from geodiff.batch.job import JOB_KINDS

    try:
        function = JOB_KINDS[kind].load()
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    params = inspect.signature(function).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    spec = JOB_KINDS[kind]
    taken = {*spec.inputs, *spec.keyword_inputs, "members", "seed", "times", "model"}
    allowed = [name for name in list(params)[1:] if name not in taken]
    unknown = [key for key in options if key not in allowed]
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(f'options.{k}' for k in unknown)} for the {kind} "
                          f"pipeline (allowed: {', '.join(allowed)})")
    from geodiff.registry import type_problem

    hints = typing.get_type_hints(function)
    for key, value in options.items():
        problem = type_problem(hints.get(key), value)
        if problem:
            raise ConfigError(f"{path}: key 'options.{key}': {problem} (got {value!r})")
    from geodiff.pipelines.request import check_request

    taken = inspect.signature(check_request).parameters
    settings = {key: value for key, value in options.items() if key in taken}
    try:
        check_request(kind, members=members, **settings)
    except GeodiffError as err:
        raise type(err)(f"{path}: key 'options': {err}") from None


def open_input(path: Location) -> Any:
    """Open an input lazily (:func:`geodiff.io.paths.open_input`): zarr or netCDF (xarray, dask), CSV (pandas);
    local paths or URLs."""
    from geodiff.io.paths import open_input as open_location

    return open_location(path)


_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))


def _bounds(metadata: Any) -> str:
    """`` >= 1``, `` > 0 < 1``: the numeric bounds of pydantic/annotated-types metadata."""
    text = ""
    for item in metadata:
        for sub in [item, *getattr(item, "metadata", [])]:
            for bound, sign in _BOUNDS:
                value = getattr(sub, bound, None)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    text += f" {sign} {value}"
    return text


def _annotation_text(annotation: Any) -> str:
    """A short readable type: ``int >= 1``, ``path``, ``list[int]``, ``'edm' | 'ddpm'``, ``float | None``."""
    import types

    origin = typing.get_origin(annotation)
    if origin is Annotated:
        base, *metadata = typing.get_args(annotation)
        return _annotation_text(base) + _bounds(metadata)
    if origin is Literal:
        return " | ".join(repr(v) for v in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if set(args) == {str, Path}:
            return "path"  # a local path or a URL
        return " | ".join(_annotation_text(arg) for arg in args)
    if origin is not None:
        args = ", ".join(_annotation_text(arg) for arg in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "None"
    if annotation is Path:
        return "path"
    if annotation is Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation)).replace("Strict", "").lower()


def describe_keys(schema: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str]]:
    """``(key, type, default)`` of every key of a configuration schema, nested settings as dotted keys;
    the default is ``"required"`` for a key that must be given.

    >>> [row for row in describe_keys(EvaluateConfig) if row[0] == "weights"]
    [('weights', "'coslat' | 'none'", "'coslat'")]
    """
    rows = []
    for name, field in schema.model_fields.items():
        key = f"{prefix}{name}"
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            rows += describe_keys(field.annotation, f"{key}.")
            continue
        default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
        rows.append((key, _annotation_text(field.annotation) + _bounds(field.metadata), default))
    return rows


def describe_options(kind: str) -> list[tuple[str, str, str]]:
    """``(options.<name>, type, default)`` of every option a ``kind`` pipeline takes (from its signature)."""
    from geodiff.batch.job import JOB_KINDS
    from geodiff.registry import type_name

    try:
        function = JOB_KINDS[kind].load()
    except ConfigError:
        return []
    spec = JOB_KINDS[kind]
    taken = {*spec.inputs, *spec.keyword_inputs, "members", "seed", "times", "model"}
    hints = typing.get_type_hints(function)
    rows = []
    for name, param in list(inspect.signature(function).parameters.items())[1:]:
        if name in taken or param.kind is inspect.Parameter.VAR_KEYWORD:
            continue
        text = type_name(hints.get(name, Any)).replace("NoneType", "None")
        rows.append((f"options.{name}", text, "required" if param.default is inspect.Parameter.empty
                     else repr(param.default)))
    return rows
