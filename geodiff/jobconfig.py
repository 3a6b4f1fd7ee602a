"""YAML configurations of the ``geodiff`` commands, validated before any compute.

Each command reads one YAML file. Every key is checked against the command's schema (pydantic): an unknown key,
a value of the wrong type or a missing input file raises :class:`~geodiff.errors.ConfigError` naming the file
and the key (``training.steps``) and saying what was expected. Relative paths are taken relative to the folder
of the configuration file. ``options`` of a pipeline are checked against the pipeline's keyword arguments.

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

import inspect
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

__all__ = ["load_config", "COMMANDS", "TrainConfig", "ReconstructConfig", "DownscaleConfig", "AssimilateConfig",
           "EvaluateConfig", "BatchSettings", "open_input"]


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
    grad_clip: float | None = 1.0
    ema_decay: float = Field(0.999, ge=0, lt=1)
    loss: Literal["edm", "ddpm"] = "edm"
    patch_size: tuple[PositiveInt, PositiveInt] | None = None
    seed: NonNegativeInt = 0
    checkpoint_every: PositiveInt = 1000


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


def load_config(path: str | Path, command: str) -> Any:
    """Read and validate the YAML configuration of ``command``; returns the validated settings.

    For ``command="batch"`` the file names its pipeline with ``job: reconstruct|downscale|assimilate`` and the
    output must be a ``.zarr`` store; the settings returned carry ``.job``. The pipeline's own command
    (``geodiff reconstruct``) reads such a file too when ``job`` names it.
    Raises :class:`~geodiff.errors.ConfigError` naming the file and every bad key.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"configuration file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values, got {type(data).__name__}")
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
        _check_options(path, pipeline_kind, config.options)
    return config.model_copy(update={"job": job}) if job else config


def _check_options(path: Path, kind: str, options: dict[str, Any]) -> None:
    """ConfigError unless the pipeline exists and takes every key of ``options``."""
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


def open_input(path: Location) -> Any:
    """Open an input lazily (:func:`geodiff.io.paths.open_input`): zarr or netCDF (xarray, dask), CSV (pandas);
    local paths or URLs."""
    from geodiff.io.paths import open_input as open_location

    return open_location(path)
