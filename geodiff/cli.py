"""The ``geodiff`` command line (typer): thin commands over the Python API.

Example
-------
>>> from typer.testing import CliRunner
>>> from geodiff.cli import app
>>> result = CliRunner().invoke(app, ["plugins", "sampler"])
>>> "heun" in result.output
True

Commands driven by a YAML configuration (``--config``; checked before any compute, see :mod:`geodiff.jobconfig`):
``fit`` (the recommended way to train a prior: :func:`geodiff.fit`), ``train`` (a custom network, torchrun),
``reconstruct``, ``downscale``, ``assimilate``, ``evaluate``, ``validate`` and ``batch run`` /
``batch status`` / ``batch verify [--repair]`` / ``batch finalise``. A ``.zarr`` output of a pipeline is computed
by :mod:`geodiff.batch` (resumable, ``--part i/N``, dask workers); a ``.nc`` output in one go (compressed,
checksummed: :func:`geodiff.io.encoding.write_netcdf`). The command line is appended to the output's ``history``.
Every input file is opened and checked by :func:`geodiff.io.paths.open_input` (complete, what its name says, every
zarr chunk readable: :mod:`geodiff.inputs`) and every gridded input by :func:`geodiff.datacheck.check_gridded`
before any compute; ``geodiff validate`` runs the same checks (and the memory estimate) without computing.
Any :class:`~geodiff.errors.GeodiffError` (or a system error on a file: a folder that cannot be written, a full
disk) ends the command with exit code 2 and one line naming the file, key or value; anything else is a bug and
shows its traceback. ``geodiff <command> --help`` lists the configuration keys with their types and defaults
(generated from the schemas of :mod:`geodiff.jobconfig`); ``geodiff --version``.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import typer

from geodiff import registry
from geodiff.errors import CheckpointError, ConfigError, DataError, GeodiffError, UnitsError

app = typer.Typer(help="Score-based (diffusion) models for geoscience fields.", no_args_is_help=True,
                  pretty_exceptions_enable=False, rich_markup_mode=None)
batch_app = typer.Typer(help="Resumable batch jobs into zarr stores: run, status, verify, finalise.",
                        no_args_is_help=True)
app.add_typer(batch_app, name="batch")

CONFIG_OPTION = typer.Option(..., "--config", "-c", help="YAML configuration file")
PART_OPTION = typer.Option(None, "--part", help="run only part i of N of the regions (array jobs), e.g. 2/8")


def _fail(err: GeodiffError | OSError) -> None:
    """Exit 2 with one line: the message of a GeodiffError, or what the system refused (a file that cannot be
    written, a full disk) and the file."""
    if isinstance(err, OSError) and not isinstance(err, GeodiffError):
        where = " ".join(str(name) for name in (err.filename, err.filename2) if name is not None)
        message = f"{err.strerror or err}{': ' + where if where else ''}"
    else:
        message = str(err)
    typer.secho(f"error: {' '.join(message.splitlines())}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _version(value: bool) -> None:
    if value:
        from geodiff import __version__

        typer.echo(f"geodiff {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="show the version and exit")) -> None:
    """Score-based (diffusion) models for geoscience fields."""


def _keys_help(command: str) -> str:
    """The docstring tail of a YAML-driven command: its configuration keys, types and defaults (from the schema)."""
    from geodiff.jobconfig import COMMANDS, describe_keys, describe_options

    kinds = ("reconstruct", "downscale", "assimilate") if command == "batch" else (command,)
    lines = ["", "\b", "Configuration keys (YAML, --config): key: type = default"]
    if command == "batch":
        lines.append("  job: 'reconstruct' | 'downscale' | 'assimilate' = required")
    seen = set()
    for kind in kinds:
        rows = describe_keys(COMMANDS[kind]) + (describe_options(kind) if kind in ("reconstruct", "downscale",
                                                                                   "assimilate") else [])
        if command == "batch":
            lines += ["", "\b", f"with job: {kind}"]
            seen = set()
        for key, kind_text, default in rows:
            if key not in seen:
                seen.add(key)
                lines.append(f"  {key}: {kind_text} = {default}")
    return "\n".join(lines)


@app.command()
def plugins(kind: str = typer.Argument(None, help="plugin kind; all kinds when omitted")) -> None:
    """List registered plugins (built-in and from entry points)."""
    try:
        kinds = [kind] if kind else list(registry.KINDS)
        for k in kinds:
            typer.echo(f"{k}: {', '.join(registry.available(k)) or '-'}")
    except (GeodiffError, OSError) as err:
        _fail(err)


@app.command()
def demo(
    output: Path = typer.Option(Path("geodiff-demo"), help="folder for the netCDF result and the figure"),
    coverage: float = typer.Option(0.05, help="fraction of ocean cells observed on each level"),
    members: int = typer.Option(16, help="ensemble members"),
    steps: int = typer.Option(24, help="sampler steps"),
    seed: int = typer.Option(0, help="random seed (observation draw and sampling)"),
    baselines: bool = typer.Option(True, help="also run climatology, optimal interpolation and EOF projection"),
    plot: bool = typer.Option(True, help="write the figure"),
) -> None:
    """Reconstruct a held-out World Ocean Atlas temperature field from sparse observations (shipped sample)."""
    from geodiff.pipelines.demo import run_demo

    try:
        run_demo(output=output, coverage=coverage, members=members, steps=steps, seed=seed, baselines=baselines,
                 plot=plot)
    except (GeodiffError, OSError) as err:
        _fail(err)


def _command_line(ctx: typer.Context) -> str:
    """The current command as typed, rebuilt from its context: ``geodiff <command> --option value ...``."""
    words = ["geodiff", *ctx.command_path.split()[1:]]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if value is None or value == param.default:
            continue
        if param.param_type_name == "argument":
            words.append(str(value))
        else:
            words += [param.opts[0], str(value)] if not isinstance(value, bool) else [param.opts[0]]
    return shlex.join(words)


# ---------------------------------------------------------------------------------------------------------------
# train


def _train(config: Any, line: str) -> Path | None:
    import torch

    import geodiff
    from geodiff.backbones.unet import UNet
    from geodiff.diffusion.denoiser import Denoiser
    from geodiff.io import Codec, ModelBundle, Normalizer
    from geodiff.provenance import append_history

    _check_train_output(config)
    ds = _training_data(config).load()
    t = config.training
    held_out = max(1, round(t.validation * ds.sizes["time"])) if t.validation else 0
    if held_out >= ds.sizes["time"]:
        raise ConfigError(f"key 'training.validation': {t.validation} leaves no time of {config.data} to train on")
    normalizer = Normalizer.fit(ds.isel(time=slice(0, ds.sizes["time"] - held_out)))
    data, mask = Codec.from_dataset(ds).encode(normalizer.normalize(ds))
    data, validation_fields = data[: len(data) - held_out], data[len(data) - held_out :]
    m = config.model
    torch.manual_seed(config.training.seed)  # initial weights follow the seed
    backbone = UNet(in_channels=data.shape[1], base_channels=m.base_channels, channel_mults=list(m.channel_mults),
                    num_res_blocks=m.num_res_blocks, attention_levels=list(m.attention_levels),
                    mid_attention=m.mid_attention, mask_aware=m.mask_aware, periodic_lon=m.periodic_lon)
    denoiser = Denoiser(backbone, sigma_data=m.sigma_data)
    from geodiff.training.checkpoint import latest_checkpoint
    from geodiff.training.fit import validation_loss

    def validation(model: Any) -> float:
        return validation_loss(model, validation_fields, mask, seed=t.seed, sigma_data=m.sigma_data)

    previous = latest_checkpoint(config.checkpoint_dir) if config.checkpoint_dir is not None else None
    result = geodiff.train(denoiser, data, mask=mask, steps=t.steps, batch_size=t.batch_size, lr=t.lr,
                           weight_decay=t.weight_decay, warmup_steps=t.warmup_steps, grad_clip=t.grad_clip,
                           ema_decay=t.ema_decay, loss=t.loss, patch_size=t.patch_size, seed=t.seed,
                           checkpoint_dir=config.checkpoint_dir, checkpoint_every=t.checkpoint_every, resume=True,
                           progress=config.progress, threads=config.threads,
                           validation=validation if held_out else None, eval_every=t.eval_every)
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank():
        return None  # rank 0 writes the bundle
    codec = Codec.from_dataset(ds.isel(time=[0]))
    result.ema.set_mask(codec.mask)
    metadata = append_history({}, line)
    metadata["training"] = {"config": json.loads(config.model_dump_json()), "steps": result.step,
                            "resumed_from": None if previous is None else previous.name,
                            "final_loss": result.losses[-1] if result.losses else None,
                            "validation_times": held_out, "validation_losses": result.validation_losses,
                            "best_step": result.best_step}
    ModelBundle(result.ema, codec, normalizer, metadata=metadata).save(config.output, overwrite=config.overwrite)
    return config.output


def _training_variables(config: Any) -> Any:
    """The training variables of ``config.data`` (``config.variables``, default: every variable with a time
    dimension), opened lazily (:func:`geodiff.io.paths.open_input`); ConfigError naming a missing one."""
    import xarray as xr

    from geodiff.jobconfig import open_input

    ds = open_input(config.data)
    if not isinstance(ds, xr.Dataset):
        raise ConfigError(f"key 'data': {config.data} must be a gridded dataset (.nc or .zarr)")
    names = config.variables or [name for name in ds.data_vars if "time" in ds[name].dims]
    missing = [name for name in names if name not in ds.data_vars]
    if missing or not names:
        raise ConfigError(f"key 'variables': {missing or names} not data variables of {config.data} "
                          f"(it has {list(ds.data_vars)})")
    return ds[names]


def _training_data(config: Any) -> Any:
    """The training variables of ``config.data``, opened and checked (:func:`geodiff.datacheck.check_gridded`)."""
    from geodiff.datacheck import check_gridded

    ds = _training_variables(config)
    return check_gridded(ds, list(ds.data_vars), where=str(config.data), time=True)


@app.command(help=f"""Train a custom diffusion prior (a UNet set by the model keys, EDM) on a canonical dataset;
resumes from checkpoints; runs under torchrun. To train a prior from a dataset with geodiff's best recipe (the
hybrid Gaussian + learned-correction prior, validation period, time budget), use `geodiff fit`.
{_keys_help("train")}""")
def train(ctx: typer.Context, config: Path = CONFIG_OPTION) -> None:
    _training_command(ctx, "train", config, _train)


def _training_command(ctx: typer.Context, command: str, config: Path, run: Any) -> None:
    """Load the configuration of ``command``, train with ``run(settings, command_line)`` and say where the bundle
    was written (``run`` returns None on the ranks of a torchrun job that write nothing)."""
    from geodiff.jobconfig import load_config

    try:
        written = run(load_config(config, command), _command_line(ctx))
    except (GeodiffError, OSError) as err:
        _fail(err)
    if written is not None:
        typer.echo(f"wrote model bundle {written}")


# ---------------------------------------------------------------------------------------------------------------
# fit


def _fit_data(config: Any) -> Any:
    """The training data of a fit configuration: its variables, within ``bbox`` and at ``levels``, lazily."""
    ds = _training_variables(config)
    if config.bbox is not None:
        from geodiff.adapters import select_bbox

        try:
            ds = select_bbox(ds, config.bbox)
        except GeodiffError as err:
            raise type(err)(f"key 'bbox': {config.data}: {err}") from None
    if config.levels is not None:
        ds = _select_levels(ds, config.levels, str(config.data))
    return ds


def _select_levels(ds: Any, levels: list[float], where: str) -> Any:
    """``ds`` at the values ``levels`` of its vertical coordinate (the second dimension of its 4-D variables),
    in the dataset's order; ConfigError naming a value it lacks."""
    import numpy as np

    vertical = {ds[name].dims[1] for name in ds.data_vars if ds[name].ndim == 4}
    if len(vertical) != 1:
        raise ConfigError(f"key 'levels': {where} has {'no' if not vertical else 'several'} vertical "
                          f"dimension(s) {sorted(vertical)}; expected (time, level, lat, lon) variables")
    (dim,) = vertical
    values = np.asarray(ds[dim].values, dtype=np.float64)
    found = [np.flatnonzero(np.isclose(values, level)) for level in levels]
    missing = [level for level, index in zip(levels, found) if index.size == 0]
    if missing or not levels:
        raise ConfigError(f"key 'levels': {missing or levels} are not values of {dim!r} in {where} "
                          f"(it has {values.tolist()})")
    return ds.isel({dim: sorted({int(index[0]) for index in found})})


def _fit(config: Any, line: str) -> Path:
    """Train with :func:`geodiff.fit` (every key but the data selection and output is its argument) and write
    the bundle, its ``history`` ending with the command line."""
    import geodiff
    from geodiff.jobconfig import FIT_SELECTION_KEYS
    from geodiff.provenance import append_history

    _check_train_output(config)
    ds = _fit_data(config)
    arguments = config.model_dump(exclude=set(FIT_SELECTION_KEYS))
    arguments["variables"] = list(ds.data_vars)
    bundle = geodiff.fit(ds, **arguments)
    bundle.metadata = append_history(bundle.metadata, line)
    bundle.metadata["training_data"] = {"path": str(config.data), "bbox": config.bbox, "levels": config.levels}
    bundle.save(config.output, overwrite=config.overwrite)
    return config.output


@app.command(help=f"""Train a diffusion prior from a canonical dataset with geodiff.fit: the recommended way to
train one (by default the hybrid prior, an exact Gaussian part plus a learned correction, where the grid is small
enough for its dense covariance; a validation period keeps the best weights; time budget; resumes from
checkpoint_dir). Every key but data, bbox, levels, output and overwrite is the argument of geodiff.fit of that
name, with its default.
{_keys_help("fit")}""")
def fit(ctx: typer.Context, config: Path = CONFIG_OPTION) -> None:
    _training_command(ctx, "fit", config, _fit)


# ---------------------------------------------------------------------------------------------------------------
# pipelines: reconstruct, downscale, assimilate (and ``batch run``)


def _times(values: list[Any] | None) -> Any:
    """The ``times`` of a configuration (checked by :func:`~geodiff.jobconfig.load_config`) as datetime64."""
    if values is None:
        return None
    from geodiff.observations import parse_times

    return parse_times([str(v) for v in values], "key 'times'")


#: inputs that are observation tables (the others are gridded fields)
_TABLES = ("observations", "stations")


def _checked_input(name: str, path: Path) -> Any:
    """Input ``name`` opened (:func:`~geodiff.io.paths.open_input`) and checked: an observation table's structure
    and times (:func:`~geodiff.observations.as_observations`; the table itself goes on unchanged), a gridded
    field's coordinates, times, values and units (:func:`~geodiff.datacheck.check_gridded`)."""
    import xarray as xr

    from geodiff.datacheck import check_gridded
    from geodiff.errors import ObservationError
    from geodiff.jobconfig import open_input
    from geodiff.observations import as_observations

    data = open_input(path)
    if name in _TABLES:
        try:
            as_observations(data, default_error_std=1.0)  # error_std may come from the options
        except ObservationError as err:
            raise ObservationError(f"key {name!r}: {path}: {err}") from None
        return data
    if not isinstance(data, xr.Dataset):
        raise ConfigError(f"key {name!r}: {path} must be a gridded dataset (.nc or .zarr), not a table")
    return check_gridded(data, where=f"key {name!r}: {path}")


def _pipeline_job(kind: str, config: Any) -> Any:
    """The batch job of a pipeline configuration, every input opened and checked, and its memory estimated."""
    from geodiff.batch import PipelineJob
    from geodiff.batch.job import JOB_KINDS

    spec = JOB_KINDS[kind]
    inputs: dict[str, Any] = {name: _checked_input(name, getattr(config, name)) for name in spec.inputs}
    for name in spec.keyword_inputs:
        value = getattr(config, name, None)
        if isinstance(value, dict) and value:
            inputs[name] = {key: _checked_input(f"{name}.{key}", path) for key, path in value.items()}
        elif value is not None:
            inputs[name] = _checked_input(name, value)
    job = PipelineJob(kind, str(config.model), inputs, members=config.members, seed=config.seed,
                      options={"threads": config.threads, **config.options}, times_wanted=_times(config.times))
    _check_memory(job, config)
    return job


def _check_memory(job: Any, config: Any) -> None:
    """ConfigError before sampling when the ensembles of one output piece (all times of a netCDF output, one
    region of a zarr one) cannot fit in memory (:func:`geodiff.resources.sampling_bytes`)."""
    from geodiff.batch.job import JOB_KINDS, time_axis
    from geodiff.resources import check_memory, sampling_bytes

    bundle = job.bundle
    layout = getattr(bundle, "prior", bundle)
    shape = tuple(layout.codec.shape)
    spec = bundle.metadata.get("downscaling") if isinstance(getattr(bundle, "metadata", None), dict) else None
    if job.kind == "downscale" and isinstance(spec, dict):
        coarse = job.inputs["coarse"]
        shape = (len(spec["target"]), coarse.sizes["lat"] * int(spec["factor"]),
                 coarse.sizes["lon"] * int(spec["factor"]))
    kind = JOB_KINDS[job.kind]
    times = len(job.times_wanted) if job.times_wanted is not None else \
        len(time_axis(job.inputs[kind.time_input], kind.time_input))
    fields = min(times, config.batch.time_chunk) if config.output.suffix == ".zarr" else times
    check_memory(sampling_bytes(shape, config.members, config.options.get("batch_size"), fields),
                 f"key 'members': {config.members} members of fields {shape} for {fields} time(s) at once")


def _run_pipeline(kind: str, config: Any, line: str, part: str | None) -> str:
    """Run a pipeline configuration; returns a one-line summary."""
    from geodiff.batch import parse_part, run_batch, status
    from geodiff.batch import finalise as finalise_store
    from geodiff.io.encoding import write_netcdf
    from geodiff.provenance import append_history

    parse_part(part)
    _check_pipeline_output(config, part)
    job = _pipeline_job(kind, config)
    output = config.output
    if output.suffix == ".zarr":
        client, cluster = _client(config.batch)
        try:
            run_batch(job, output, time_chunk=config.batch.time_chunk, chunks=config.batch.chunks, part=part,
                      client=client, retries=config.batch.retries, history=line, progress=config.progress)
        finally:
            if client is not None:
                client.close()
            if cluster is not None:
                cluster.close()
        state = status(output)
        if not state.complete:
            return f"{output}: {state.done}/{state.total} regions done; run the other parts, then finalise"
        finalise_store(output)
        return f"wrote {output} ({state.total} regions, finalised)"
    import numpy as np

    result = job.run(np.asarray(job.times().values))
    result.attrs = append_history(dict(result.attrs), line)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_netcdf(result, output)
    return f"wrote {output}"


def _check_writable(path: Path) -> None:
    """ConfigError naming the output ``path`` when it cannot be created: its nearest existing folder is a file
    or cannot be written to."""
    import os

    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"key 'output': {path} cannot be created: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"key 'output': {path} cannot be created: {folder} is not writable")


def _check_pipeline_output(config: Any, part: str | None = None) -> None:
    """ConfigError / DataError before any compute when the output cannot be written as asked."""
    output = config.output
    _check_writable(output)
    if output.suffix == ".zarr":
        return
    if part is not None:
        raise ConfigError("--part needs a .zarr output (a netCDF file is written in one go)")
    if output.suffix not in (".nc", ".nc4"):
        raise ConfigError(f"key 'output': {output} must end with .nc (one file) or .zarr (resumable batch)")
    if output.exists():
        raise DataError(f"key 'output': {output} exists; remove it or choose another path")


def _check_train_output(config: Any) -> None:
    _check_writable(config.output)
    if config.output.exists() and (not config.output.is_dir() or any(config.output.iterdir())) \
            and not config.overwrite:
        raise CheckpointError(f"key 'output': {config.output} is not empty; set overwrite: true to replace it")


def _client(settings: Any) -> tuple[Any, Any]:
    if settings.scheduler is None and settings.workers == 0:
        return None, None
    from distributed import Client, LocalCluster

    if settings.scheduler is not None:
        return Client(settings.scheduler), None
    cluster = LocalCluster(n_workers=settings.workers, threads_per_worker=1, processes=True, dashboard_address=None)
    return Client(cluster), cluster


def _pipeline_command(ctx: typer.Context, kind: str, config: Path, part: str | None) -> None:
    from geodiff.jobconfig import load_config

    try:
        summary = _run_pipeline(kind, load_config(config, kind), _command_line(ctx), part)
    except (GeodiffError, OSError) as err:
        _fail(err)
    typer.echo(summary)


@app.command(help=f"""Reconstruct fields from sparse observations with a model bundle (.nc at once or resumable .zarr).
{_keys_help("reconstruct")}""")
def reconstruct(ctx: typer.Context, config: Path = CONFIG_OPTION, part: str = PART_OPTION) -> None:
    _pipeline_command(ctx, "reconstruct", config, part)


@app.command(help=f"""Downscale a coarse field with auxiliary sources and stations (.nc at once or resumable .zarr).
{_keys_help("downscale")}""")
def downscale(ctx: typer.Context, config: Path = CONFIG_OPTION, part: str = PART_OPTION) -> None:
    _pipeline_command(ctx, "downscale", config, part)


@app.command(help=f"""Assimilate observations into a background field (.nc at once or resumable .zarr).
{_keys_help("assimilate")}""")
def assimilate(ctx: typer.Context, config: Path = CONFIG_OPTION, part: str = PART_OPTION) -> None:
    _pipeline_command(ctx, "assimilate", config, part)


@batch_app.command("run", help=f"""Run (or resume) the batch job of a configuration naming its pipeline (job: reconstruct,
downscale, ...); the output is a .zarr store.
{_keys_help("batch")}""")
def batch_run(ctx: typer.Context, config: Path = CONFIG_OPTION, part: str = PART_OPTION) -> None:
    from geodiff.jobconfig import load_config

    try:
        settings = load_config(config, "batch")
        summary = _run_pipeline(settings.job, settings, _command_line(ctx), part)
    except (GeodiffError, OSError) as err:
        _fail(err)
    typer.echo(summary)


@batch_app.command("status")
def batch_status(store: Path = typer.Argument(..., help="zarr store of a batch job")) -> None:
    """Show which regions of a batch store are done."""
    from geodiff.batch import status as store_status

    try:
        typer.echo(str(store_status(store)))
    except (GeodiffError, OSError) as err:
        _fail(err)


@batch_app.command("finalise")
def batch_finalise(ctx: typer.Context, store: Path = typer.Argument(..., help="zarr store of a batch job")) -> None:
    """Check a batch store (every region done, grid, chunks, checksums) and consolidate its metadata."""
    from geodiff.batch import finalise as finalise_store

    try:
        finalise_store(store, history=_command_line(ctx))
    except (GeodiffError, OSError) as err:
        _fail(err)
    typer.echo(f"{store}: every region verified, metadata consolidated")


@batch_app.command("verify")
def batch_verify(
    store: Path = typer.Argument(..., help="zarr store of a batch job"),
    repair: bool = typer.Option(False, "--repair", help="mark regions with a damaged chunk or ledger entry not "
                                                        "done, so that running the job again recomputes them"),
) -> None:
    """Re-read a batch store (regions, grid, chunks, checksums) and list what is wrong; exit 2 when anything is."""
    from geodiff.batch import verify as verify_store

    try:
        problems = verify_store(store, repair=repair)
    except (GeodiffError, OSError) as err:
        _fail(err)
    for line in problems:
        typer.echo(line)
    if not problems:
        typer.echo(f"{store}: every region verified")
    elif not (repair and problems[-1].startswith("marked regions")):
        raise typer.Exit(code=2)


# ---------------------------------------------------------------------------------------------------------------
# evaluate, validate


def _evaluation_inputs(config: Any) -> tuple[Any, Any, list[str]]:
    """``(prediction, truth, variables)`` of an evaluate configuration, opened and checked; the truth's variables
    converted to the prediction's units (recorded in its ``history``), UnitsError when they cannot be."""
    import xarray as xr

    from geodiff.datacheck import check_gridded
    from geodiff.jobconfig import open_input
    from geodiff.pipelines.units import to_model_units

    opened = []
    for key in ("prediction", "truth"):
        ds = open_input(getattr(config, key))
        if not isinstance(ds, xr.Dataset):
            raise ConfigError(f"key {key!r}: {getattr(config, key)} must be a gridded dataset (.nc or .zarr)")
        opened.append(ds)
    prediction, truth = opened
    names = config.variables or [name for name in prediction.data_vars if name in truth.data_vars]
    if not names:
        raise ConfigError(f"no data variable is in both {config.prediction} and {config.truth}")
    for name in names:
        for ds, where in ((prediction, config.prediction), (truth, config.truth)):
            if name not in ds.data_vars:
                raise ConfigError(f"key 'variables': {name!r} is not a data variable of {where}")
    prediction = check_gridded(prediction, names, where=f"key 'prediction': {config.prediction}")
    truth = check_gridded(truth, names, where=f"key 'truth': {config.truth}")
    units = {}
    for name in names:
        if prediction[name].attrs.get("units") is None:
            raise UnitsError(f"key 'prediction': {config.prediction}: variable {name!r} has no 'units' attribute; "
                             "the truth cannot be compared with it")
        units[name] = str(prediction[name].attrs["units"])
    truth = to_model_units(truth, units, f"truth {config.truth}")
    return prediction, truth, names


def _evaluate(config: Any, line: str) -> dict[str, Any]:
    import numpy as np

    from geodiff import metrics
    from geodiff.provenance import append_history

    prediction, truth, names = _evaluation_inputs(config)
    if "time" in prediction.dims:
        missing = np.setdiff1d(prediction["time"].values, truth["time"].values) if "time" in truth.dims else [0]
        if len(missing):
            raise DataError(f"{config.truth} lacks times of the prediction: {list(missing)[:5]}")
        truth = truth.sel(time=prediction["time"].values)
    weights = None if config.weights == "none" else config.weights
    scores: dict[str, Any] = {}
    for name in names:
        estimate, target = prediction[name].load(), truth[name].load()
        row = {}
        if "member" in estimate.dims:
            row["rmse_ensemble_mean"] = float(metrics.rmse(target, estimate.mean("member"), weights=weights))
            if estimate.sizes["member"] >= 2:
                row["crps"] = float(metrics.crps_ensemble(target, estimate, weights=weights))
                row["spread_skill"] = float(metrics.spread_skill_ratio(target, estimate, weights=weights))
        else:
            row["rmse"] = float(metrics.rmse(target, estimate, weights=weights))
        row["bias"] = float(metrics.bias(target, estimate.mean("member") if "member" in estimate.dims else estimate,
                                         weights=weights))
        scores[name] = row
    report = {"prediction": str(config.prediction), "truth": str(config.truth), "weights": config.weights,
              "scores": scores, **append_history({"history": prediction.attrs.get("history")}, line)}
    if config.output is not None:
        config.output.parent.mkdir(parents=True, exist_ok=True)
        config.output.write_text(json.dumps(report, indent=2))
    return report


@app.command(help=f"""Score an ensemble output against a truth dataset (RMSE of the mean, CRPS, spread-skill, bias);
the truth is converted to the prediction's units.
{_keys_help("evaluate")}""")
def evaluate(ctx: typer.Context, config: Path = CONFIG_OPTION) -> None:
    from geodiff.jobconfig import load_config

    try:
        report = _evaluate(load_config(config, "evaluate"), _command_line(ctx))
    except (GeodiffError, OSError) as err:
        _fail(err)
    typer.echo("| variable | score | value |\n|---|---|---|")
    for name, row in report["scores"].items():
        for key, value in row.items():
            typer.echo(f"| {name} | {key} | {value:.4g} |")


@app.command()
def validate(
    command: str | None = typer.Argument(None, help="fit, train, reconstruct, downscale, assimilate, evaluate or "
                                                    "batch (default: the one the configuration's keys are for)"),
    config: Path = CONFIG_OPTION,
) -> None:
    """Check a configuration without computing, as the run would before its compute: keys, types, options,
    every input file and dataset, the model, the memory needed; for reconstruct also the observations."""
    from geodiff.jobconfig import command_of, load_config

    try:
        command = command or command_of(config)
        settings = load_config(config, command)
        kind = getattr(settings, "job", None) or command
        if kind == "train":
            _check_train_output(settings)
            _training_data(settings)
        elif kind == "fit":
            from geodiff.training.fit import check_training_data

            _check_train_output(settings)
            data = _fit_data(settings)
            check_training_data(data, list(data.data_vars))
        elif kind == "evaluate":
            _evaluation_inputs(settings)
        else:
            _check_pipeline_output(settings)
            job = _pipeline_job(kind, settings)
            if kind == "reconstruct":
                typer.echo(str(_observation_report(job, settings)))
    except (GeodiffError, OSError) as err:
        _fail(err)
    typer.echo(f"{config}: valid {command} configuration")


def _observation_report(job: Any, settings: Any) -> Any:
    """The report of the observations of a reconstruct job validated against its model (units converted)."""
    from geodiff.observations import as_observations, validate_observations
    from geodiff.pipelines.units import model_units, observations_to_model_units

    codec = job.bundle.codec
    default = settings.options.get("default_error_std")
    table = as_observations(job.inputs["observations"], default_error_std=default)
    table = observations_to_model_units(table, model_units(codec, codec.variables))
    _, report = validate_observations(table, codec.lat, codec.lon, ocean_mask=codec.mask.numpy().astype(bool),
                                      channels=codec.channels, default_error_std=default)
    return report


def main() -> None:
    """Entry point of the ``geodiff`` console script: the command owns its process, so the allocator setting of
    :func:`geodiff.runtime.configure_allocator` (large buffers kept in the heap; a no-op off glibc) is applied and
    the ``geodiff`` logger writes INFO lines to stderr."""
    import logging

    from geodiff.runtime import configure_allocator

    configure_allocator()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    logging.getLogger("geodiff").addHandler(handler)
    logging.getLogger("geodiff").setLevel(logging.INFO)
    app()


if __name__ == "__main__":
    main()
