"""Per-time jobs that a batch runs region by region: the :class:`BatchJob` contract and pipeline-backed jobs.

A batch cuts a long time axis into regions (consecutive blocks of times, one zarr chunk each) and asks the job
for the output of one region at a time. A job says what its output looks like for one time (``sample``), which
times it covers (``times``), how it is configured (``describe``: plain JSON, recorded in the store) and computes
a region (``run``). Inputs may be dask-backed: a job selects and loads only the times of the region it runs
(:class:`~geodiff.pipelines.blocks.PipelineBlock`, the per-block function that lazy pipeline results use too).

:class:`PipelineJob` wraps a pipeline function ``fn(model, *inputs, members=, seed=, **options) -> xr.Dataset``
(``geodiff.reconstruct``, ``downscale``, ``assimilate``); the known pipelines are listed in :data:`JOB_KINDS`,
and a new one plugs in with a :class:`JobKind` entry. Pipelines derive the generator of each time from
``(seed, time)`` (see :func:`geodiff.pipelines.reconstruct.time_generator_seed`); the batch also seeds torch's
global generator from ``(seed, region)`` before each region, so a region re-run gives identical values.

Example
-------
>>> from geodiff.batch.job import JOB_KINDS
>>> sorted(JOB_KINDS), JOB_KINDS["reconstruct"].time_input
(['assimilate', 'downscale', 'reconstruct'], 'observations')
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import xarray as xr

from geodiff.diffusion.engine import derive_seed
from geodiff.errors import ConfigError
from geodiff.pipelines.blocks import PipelineBlock, select_times, time_axis

__all__ = ["BatchJob", "JobKind", "JOB_KINDS", "PipelineJob", "select_times", "region_seed"]


@runtime_checkable
class BatchJob(Protocol):
    """What a batch needs from a job (any object with these four methods)."""

    def describe(self) -> dict[str, Any]:
        """The job's configuration as plain JSON (kind, model sha256, options, seed); recorded in the store."""

    def times(self) -> xr.Variable:
        """The full time axis of the output, ``xr.Variable(("time",), values, attrs, encoding)``."""

    def sample(self) -> xr.Dataset:
        """An output for the first time only (values are not used): variables, dims, coords, attrs, dtypes."""

    def run(self, times: np.ndarray) -> xr.Dataset:
        """The output at ``times`` (a region), with the dims of :meth:`sample` and ``time == times``."""


def region_seed(seed: int, region: int) -> int:
    """Seed derived from ``(seed, region index)``: stable across runs, machines and processes.

    Example
    -------
    >>> region_seed(0, 3) == region_seed(0, 3) != region_seed(0, 4)
    True
    """
    return derive_seed("geodiff.batch", int(seed), int(region))


# ---------------------------------------------------------------------------------------------------------------
# pipeline-backed jobs


@dataclass(frozen=True)
class JobKind:
    """A pipeline the batch layer can run: ``"module:function"``, its input names in call order, and the input
    that defines the time axis. The function is called ``fn(model, *inputs, members=, seed=, **options)``."""

    pipeline: str
    inputs: tuple[str, ...]
    time_input: str
    keyword_inputs: tuple[str, ...] = ()
    passes_times: bool = False  # the pipeline takes ``times=`` (reconstruct does)
    loader: str = "geodiff.io.bundle:load"  # reads the model from a folder: ``loader(path, device=)``
    #: ``"module:function"`` giving the output layout ``template(model, *inputs, members=)`` from the inputs at one
    #: time, for pipelines whose grid depends on their input (downscale); None: the model's codec grid
    template: str | None = None

    def load(self) -> Callable[..., xr.Dataset]:
        """The pipeline function (imported now); ConfigError when its module is not available."""
        return _import(self.pipeline, "pipeline")

    def load_template(self) -> Callable[..., xr.Dataset] | None:
        """The output-template function (imported now), or None for the model's codec grid."""
        return None if self.template is None else _import(self.template, "output template")

    def load_model(self, path: str, device: str) -> Any:
        """The model of this pipeline read from ``path``."""
        return _import(self.loader, "model loader")(path, device=device)


def _import(target: str, what: str) -> Any:
    module_name, _, attribute = target.partition(":")
    try:
        value: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"{what} {target!r} is not available in this installation ({err})") from err
    for part in attribute.split("."):
        value = getattr(value, part, None)
        if value is None:
            raise ConfigError(f"{what} {target!r} is not available: {module_name!r} has no {attribute!r}")
    return value


#: Pipelines known to the batch layer and the CLI, by job name.
JOB_KINDS: dict[str, JobKind] = {
    "reconstruct": JobKind("geodiff.pipelines.reconstruct:reconstruct", ("observations",), "observations",
                           passes_times=True),
    "downscale": JobKind("geodiff.pipelines.downscale:downscale", ("coarse",), "coarse",
                         keyword_inputs=("sources", "stations"), template="geodiff.pipelines.downscale:output_template"),
    "assimilate": JobKind("geodiff.pipelines.assimilate:assimilate", ("background", "observations"), "background",
                          loader="geodiff.pipelines.assimilate:AssimilationModel.load"),
}


@functools.lru_cache(maxsize=4)
def _load_model(kind: str, path: str, device: str) -> Any:
    return JOB_KINDS[kind].load_model(path, device)


@dataclass
class PipelineJob:
    """A :class:`BatchJob` running a registered pipeline (:data:`JOB_KINDS`) with a model bundle.

    ``model`` is a bundle folder (loaded once per process, which suits dask workers) or a loaded
    :class:`~geodiff.io.ModelBundle`; ``inputs`` maps the kind's input names to datasets / tables (dask-backed or
    in memory); ``options`` are passed to the pipeline unchanged (``steps``, ``guidance``, ``sampler``, ...).

    Example
    -------
    >>> from geodiff.batch.job import PipelineJob
    >>> from geodiff.pipelines.demo import prior_path
    >>> from geodiff.adapters import woa
    >>> split = woa.holdout_split(woa.open_sample())
    >>> obs, _ = woa.holdout_observations(split.heldout.isel(time=[0, 1]), 0.05, seed=0, error_std=0.1)
    >>> job = PipelineJob("reconstruct", str(prior_path()), {"observations": obs}, members=2, options={"steps": 2})
    >>> job.times().shape, job.sample()["temperature"].dims
    ((2,), ('member', 'time', 'depth', 'lat', 'lon'))
    """

    kind: str
    model: Any
    inputs: dict[str, Any]
    members: int = 1
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    times_wanted: Sequence[Any] | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.kind not in JOB_KINDS:
            raise ConfigError(f"unknown job {self.kind!r}; expected one of {', '.join(sorted(JOB_KINDS))}")
        spec = JOB_KINDS[self.kind]
        missing = [name for name in spec.inputs if name not in self.inputs]
        unknown = sorted(set(self.inputs) - set(spec.inputs) - set(spec.keyword_inputs))
        if missing or unknown:
            raise ConfigError(f"job {self.kind!r} needs inputs {list(spec.inputs)} (optional "
                              f"{list(spec.keyword_inputs)}); missing {missing}, unknown {unknown}")
        if not isinstance(self.members, int) or self.members < 1:
            raise ConfigError(f"members must be an integer >= 1, got {self.members!r}")
        if isinstance(self.model, (str, Path)):
            self.model = str(self.model)

    @property
    def bundle(self) -> Any:
        """The model bundle (loaded on first use, once per process)."""
        if isinstance(self.model, str):
            return _load_model(self.kind, self.model, self.device)
        return self.model

    def describe(self) -> dict[str, Any]:
        """Kind, model sha256, members, seed and options (JSON)."""
        return json.loads(json.dumps({"job": self.kind, "model_sha256": self.bundle.sha256, "members": self.members,
                                      "seed": int(self.seed), "options": self.options}, default=str))

    def times(self) -> xr.Variable:
        """Every time of the time input (or ``times_wanted``), with the model's time attributes and encoding."""
        spec = JOB_KINDS[self.kind]
        if self.times_wanted is not None:
            values = np.atleast_1d(np.asarray(self.times_wanted))
        else:
            values = time_axis(self.inputs[spec.time_input], spec.time_input)
        if values.size == 0:
            raise ConfigError(f"job {self.kind!r} has no time to compute")
        first = self.sample()
        return xr.Variable(("time",), values, attrs=first["time"].attrs, encoding=dict(first["time"].encoding))

    def sample(self) -> xr.Dataset:
        """The output layout for the first time (no sampling): the kind's output template on the inputs at that
        time, or zeros decoded on the model's codec grid."""
        import torch

        spec = JOB_KINDS[self.kind]
        if self.times_wanted is not None:
            first = np.atleast_1d(np.asarray(self.times_wanted))[:1]
        else:
            first = time_axis(self.inputs[spec.time_input], spec.time_input)[:1]
        template = spec.load_template()
        if template is not None:
            inputs = [select_times(self.inputs[name], first) for name in spec.inputs]
            return template(self.bundle, *inputs, members=self.members)
        layout = getattr(self.bundle, "prior", self.bundle)  # a model bundle, or a model holding one as ``prior``
        zeros = torch.zeros(self.members, 1, *layout.codec.shape)
        return layout.decode(zeros, member=True, time=first)

    def block(self) -> PipelineBlock:
        """The per-block function of this job (:class:`~geodiff.pipelines.blocks.PipelineBlock`), the one a lazy
        pipeline result computes too."""
        spec = JOB_KINDS[self.kind]
        function = spec.load()
        options = {"members": self.members, "seed": self.seed, **self.options}
        if "progress" in inspect.signature(function).parameters and "progress" not in self.options:
            options["progress"] = False  # the batch shows progress over regions
        keywords = {name: self.inputs[name] for name in spec.keyword_inputs if name in self.inputs}
        return PipelineBlock(function, self.bundle, tuple(self.inputs[name] for name in spec.inputs), keywords,
                             options, pass_times=spec.passes_times)

    def run(self, times: np.ndarray) -> xr.Dataset:
        """Run the pipeline on the inputs at ``times``."""
        return self.block()(times)
