"""The training loop: AdamW with linear warm-up, EMA, gradient clipping, AMP, checkpoints, exact resume, DDP.

:func:`train` is the one loop of geodiff. By default it fits a :class:`~geodiff.diffusion.denoiser.Denoiser` to
normalised fields (land = 0) with a denoising loss (:mod:`geodiff.diffusion.losses`); with ``objective=`` it fits
any model to what an :class:`~geodiff.training.objectives.Objective` says (an autoencoder, a regression, a
preference objective such as Diffusion-DPO). What it guarantees, for every objective:

- **Determinism.** Everything random in step ``s`` (the batch, the crops, the noise levels and noise, and torch's
  global generator for e.g. dropout) is drawn from generators seeded by ``(seed, s)``, so a run is a pure function of
  its settings and the step reached. The noise is drawn for the global batch and each rank takes its share, so a
  ``torchrun`` run sees the same global batch and noise as a single process.
- **Exact resume.** With ``checkpoint_dir``, the state (weights, EMA, optimizer, loss history, step) is saved every
  ``checkpoint_every`` steps and at the end; with ``resume=True`` a later call with the same settings continues from
  the newest checkpoint. Training ``N`` steps equals training ``k``, stopping or being killed, and resuming to
  ``N``: bitwise on CPU. Settings that change the problem (batch size, learning rate, loss, seed, data shape,
  mask, objective, model configuration, ...) must match the checkpoint's, else
  :class:`~geodiff.errors.CheckpointError`. Validation losses and the best weights so far are part of the state.
- **Data parallel.** Under ``torchrun --nproc_per_node=K`` the same call trains with DDP (gloo on CPU, nccl on
  GPU); ``batch_size`` is the global batch (divisible by ``K``); the gradient is the one of the global batch's loss;
  rank 0 writes checkpoints.

The loss of a step is the objective's terms summed over the global batch divided by the number of its valid cells
(denoising: :meth:`~geodiff.diffusion.losses.DenoisingLoss.terms`) or of its samples; the learning rate of step
``s`` (0-based) is ``lr * min(1, (s + 1) / warmup_steps)``, times ``(1 + cos(pi s / cosine_steps)) / 2`` with a
cosine decay. A non-finite loss stops training with :class:`~geodiff.errors.ConfigError` (except with fp16
autocast, whose gradient scaler skips such steps). The validity mask of a batch (cropped with the fields) is
passed to the model with each call.

Example
-------
>>> import torch, geodiff
>>> from geodiff.backbones import UNet
>>> from geodiff.diffusion.denoiser import Denoiser
>>> denoiser = Denoiser(UNet(in_channels=1, base_channels=8, channel_mults=(1,), num_res_blocks=1))
>>> data = 0.5 * torch.randn(16, 1, 4, 4)
>>> result = geodiff.train(denoiser, data, steps=3, batch_size=4, warmup_steps=2, progress=False)
>>> result.step, len(result.losses), type(result.ema).__name__
(3, 3, 'Denoiser')
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, IterableDataset

from geodiff.config import check_json
from geodiff.diffusion.losses import DenoisingLoss
from geodiff.errors import CheckpointError, ConfigError, DataError, GeodiffError, GridError
from geodiff.resources import check_device
from geodiff.runtime import DEFAULT_THREADS, uses_threads
from geodiff.training import distributed
from geodiff.training.checkpoint import (
    flatten_optimizer_state,
    latest_checkpoint,
    read_checkpoint,
    unflatten_optimizer_state,
    write_checkpoint,
)
from geodiff.training.data import BatchPlan, LocalBatchSampler, crop_batch, derive_seed, split_item, stack_items
from geodiff.training.ema import EMA
from geodiff.training.objectives import DenoisingObjective, Objective

logger = logging.getLogger(__name__)

__all__ = ["train", "TrainResult"]

FORMAT = "geodiff.training/1"

#: a validation function: the model (eval mode, no gradients) -> a loss, lower is better
Validation = Callable[[nn.Module], float]


@dataclass
class TrainResult:
    """What :func:`train` returns.

    ``ema``: the EMA model (use it for sampling; eval mode, no gradients; None with ``ema_decay=None``);
    ``denoiser``: the trained model itself (the object passed in; also :attr:`model`); ``losses``: loss of every
    step from step 1 (including steps of resumed runs); ``step``: steps done; ``checkpoint``: the newest checkpoint
    folder (None without ``checkpoint_dir``); ``steps_per_second``: training speed of this call (None when no step
    ran); with ``validation``: ``validation_losses`` at steps ``0, eval_every, 2 eval_every, ...`` and
    ``best_step``, the step whose weights the model holds at the end. ``seconds``: wall time of this call's steps;
    ``data_seconds``: the part of it spent waiting for batches (reading, decoding, collating; the data-loading share
    of a step is ``data_seconds / seconds``).
    """

    ema: nn.Module | None
    denoiser: nn.Module
    losses: list[float] = field(default_factory=list)
    step: int = 0
    checkpoint: Path | None = None
    steps_per_second: float | None = None
    validation_losses: list[float] = field(default_factory=list)
    best_step: int | None = None
    seconds: float = 0.0
    data_seconds: float = 0.0

    @property
    def model(self) -> nn.Module:
        """The trained model (the object passed to :func:`train`)."""
        return self.denoiser


def _amp_dtype(amp: str | bool | None, device: torch.device) -> torch.dtype | None:
    choices = ("auto", "bf16", "fp16", "off", True, False, None)
    if amp not in choices:
        raise ConfigError(f"amp must be one of {choices}, got {amp!r}")
    if amp in ("off", False, None):
        return None
    if device.type != "cuda":
        if amp == "auto":
            return None
        raise ConfigError(f"amp={amp!r} needs a GPU (device='cuda'); on {device.type} use amp='auto' or 'off'")
    if amp == "fp16":
        return torch.float16
    if amp == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def _positive(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_cond(cond: dict[str, Tensor] | None, data: Tensor | Dataset) -> dict[str, Tensor] | None:
    """Check the per-sample conditioning given with a data tensor: ``{name: [N, ...]}``, finite float32."""
    if cond is None:
        return None
    if not isinstance(data, Tensor):
        raise ConfigError("cond= goes with a data tensor; a Dataset gives conditioning in its (x, cond) items")
    if not isinstance(cond, dict) or not cond:
        raise ConfigError(f"cond must be a non-empty dict of tensors [N, ...], got {type(cond).__name__}")
    for name, value in cond.items():
        if not isinstance(value, Tensor) or value.ndim < 1 or value.shape[0] != data.shape[0]:
            shape = list(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise GridError(f"cond[{name!r}] must be a tensor with {data.shape[0]} samples first, got {shape}")
        if not torch.isfinite(value).all():
            raise DataError(f"cond[{name!r}] holds NaN/inf values")
    return cond


def _check_data(data: Tensor | Dataset) -> tuple[int, tuple[int, ...], bool]:
    """Number of samples, item shape of ``data`` and whether its items carry masks, checked (the objective checks
    the item shape)."""
    if isinstance(data, Tensor):
        if data.ndim < 2:
            raise GridError(f"data must be a [N, C, H, W] tensor, got shape {list(data.shape)}")
        if data.dtype != torch.float32:
            raise DataError(f"data must be float32 (normalised fields, land = 0), got dtype {data.dtype}")
        bad = int((~torch.isfinite(data)).sum())
        if bad:
            raise DataError(f"data holds {bad} NaN/inf values; land cells must be 0 in normalised data (see mask)")
        return data.shape[0], tuple(data.shape[1:]), False
    if isinstance(data, IterableDataset) or not isinstance(data, Dataset) or not hasattr(data, "__len__"):
        raise DataError(f"data must be a [N, C, H, W] tensor or a map-style Dataset with __len__, got {type(data)}")
    first, _, first_mask = split_item(data[0])
    return len(data), tuple(first.shape), first_mask is not None


def _mask_digest(mask: Tensor | None) -> str | None:
    if mask is None:
        return None
    return hashlib.sha256(mask.to(torch.uint8).cpu().numpy().tobytes()).hexdigest()


def _json_config(module: nn.Module) -> dict[str, Any] | None:
    config = getattr(module, "config", None)
    if not isinstance(config, dict):
        return None
    try:
        check_json(config, "denoiser configuration")
    except GeodiffError:
        return None
    return json.loads(json.dumps(config))  # as a checkpoint stores it: tuples become lists


def _seed_global(seed: int, device: torch.device) -> None:
    """Seed torch's global generators used in a step (CPU, and ``device`` on GPU), e.g. by dropout."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.default_generators[device.index or 0].manual_seed(seed)


def _batches(
    data: Tensor | Dataset,
    cond: dict[str, Tensor] | None,
    plan: BatchPlan,
    start: int,
    stop: int,
    info: distributed.DistInfo,
    num_workers: int,
) -> Iterator[tuple[Tensor, dict[str, Tensor] | None, Tensor | None]]:
    """This rank's share ``([b, C, H, W], cond, item masks [b, C, H, W] or None)`` of the global batches of steps
    ``start .. stop - 1`` (uncropped)."""
    sampler = LocalBatchSampler(plan, start, stop, info.rank, info.world_size)
    if isinstance(data, Tensor):
        for indices in sampler:
            index = torch.as_tensor(indices, device=data.device)
            yield data[index], None if cond is None else {k: v[index.to(v.device)] for k, v in cond.items()}, None
        return
    loader = DataLoader(data, batch_sampler=sampler, num_workers=num_workers, collate_fn=stack_items)
    for batch, batch_cond, batch_mask in loader:
        if not torch.isfinite(batch).all():
            raise DataError("a dataset item holds NaN/inf values; land cells must be 0 in normalised data")
        for name, value in (batch_cond or {}).items():
            if value.is_floating_point() and not torch.isfinite(value).all():
                raise DataError(f"conditioning {name!r} of a dataset item holds NaN/inf values")
        yield batch, batch_cond, batch_mask


@uses_threads
def train(
    denoiser: nn.Module,
    data: Tensor | Dataset,
    *,
    cond: dict[str, Tensor] | None = None,
    mask: Tensor | None = None,
    steps: int,
    batch_size: int,
    lr: float = 2e-4,
    weight_decay: float = 0.0,
    warmup_steps: int = 0,
    grad_clip: float | None = 1.0,
    ema_decay: float | None = 0.999,
    loss: str | DenoisingLoss = "edm",
    patch_size: tuple[int, int] | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 1000,
    resume: bool = True,
    seed: int = 0,
    device: str | torch.device = "cpu",
    amp: str | bool = "auto",
    num_workers: int = 0,
    progress: bool = True,
    threads: int | None = DEFAULT_THREADS,
    objective: Objective | None = None,
    cosine_steps: int | None = None,
    validation: Validation | None = None,
    eval_every: int = 100,
    reschedule: bool = False,
) -> TrainResult:
    """Train ``denoiser`` (in place) on normalised fields; returns a :class:`TrainResult`.

    Parameters
    ----------
    denoiser: a :class:`~geodiff.diffusion.denoiser.Denoiser` (or any ``nn.Module`` ``(x, sigma, cond) -> x0_hat``);
        with ``objective``, the model that objective trains.
    data: float32 ``[N, C, H, W]`` tensor (normalised, land = 0) or a map-style ``Dataset`` whose items are
        ``[C, H, W]`` tensors, ``(x [C, H, W], cond {name: tensor})`` pairs (conditional models) or
        ``(x, cond, mask)`` triples with each item's own validity mask (bool ``[C, H, W]``, True = valid: patches
        cut at varying positions; the loss averages over the valid cells of the batch); the objective may ask for
        other item shapes (preference pairs: ``[N, 2, C, H, W]``).
    cond: with a data tensor, per-sample conditioning ``{name: [N, ...]}`` passed to the denoiser as
        ``denoiser(x, sigma, cond)`` for the batch (only ``x`` is cropped by ``patch_size``: crop conditioning on
        other grids in a Dataset instead).
    mask: ``[C, H, W]`` bool, True = valid (ocean); the loss averages over valid cells only. It becomes the
        denoiser's mask (``denoiser.set_mask``); None uses the denoiser's mask, if any. With crops, each call
        gets the mask of its crops (``denoiser(x, sigma, cond, mask=...)``).
    steps: optimizer steps to reach (counting steps of the run resumed from).
    batch_size: global batch (all ranks together; divisible by the number of ranks).
    lr, weight_decay, warmup_steps: AdamW learning rate, decoupled weight decay, linear warm-up length (steps).
    grad_clip: maximum global gradient norm (None or 0: no clipping).
    ema_decay: EMA decay (with the warm-up of :class:`~geodiff.training.ema.EMA`); None: no EMA.
    loss: ``"edm"`` (:class:`EDMLoss` with the denoiser's ``sigma_data``), ``"ddpm"`` (:class:`DDPMLoss` with the
        denoiser's VP schedule) or a :class:`~geodiff.diffusion.losses.DenoisingLoss`.
    patch_size: ``(h, w)``: train on random crops of that size (large domains); None: whole fields.
    checkpoint_dir, checkpoint_every, resume: where and how often (steps) to write checkpoints, and whether to
        continue from the newest one found there.
    seed: seed of every random draw (non-negative integer).
    device: ``"cpu"`` or ``"cuda"`` (under torchrun each rank uses ``cuda:<LOCAL_RANK>``).
    amp: ``"auto"`` (bf16, else fp16, autocast on GPU; off on CPU), ``"bf16"``, ``"fp16"`` (GPU only) or ``"off"``.
    num_workers: DataLoader worker processes for a ``Dataset`` (a tensor is indexed directly).
    progress: show a tqdm progress bar with the loss (rank 0).
    threads: torch threads of the call (default 1, :data:`geodiff.runtime.DEFAULT_THREADS`; None: as set).
    objective: what to minimise (:mod:`geodiff.training.objectives`); None: the denoising ``loss``.
    cosine_steps: decay the learning rate along a half cosine to 0 over that many steps; None: constant.
    validation, eval_every: a function ``model -> loss`` measured (eval mode, no gradients) before the first step
        and after every ``eval_every`` steps (steps ``0, eval_every, 2 eval_every, ...``, wherever calls stop, so
        that resuming changes nothing); the model ends with the weights of the best measurement (early stopping).
    reschedule: when resuming, accept a checkpoint written with another ``cosine_steps`` (a run whose length was
        re-planned, e.g. to fill a time budget): the learning rate follows this call's schedule from the next step.
        Every other setting must still match.
    """
    _positive("steps", steps, 0)
    _positive("batch_size", batch_size)
    _positive("checkpoint_every", checkpoint_every)
    _positive("warmup_steps", warmup_steps, 0)
    _positive("num_workers", num_workers, 0)
    _positive("seed", seed, 0)
    _positive("eval_every", eval_every)
    if cosine_steps is not None:
        _positive("cosine_steps", cosine_steps)
    if not isinstance(denoiser, nn.Module):
        raise ConfigError(f"denoiser must be an nn.Module (a geodiff Denoiser), got {type(denoiser).__name__}")
    if not lr > 0 or weight_decay < 0:
        raise ConfigError(f"need lr > 0 and weight_decay >= 0, got lr={lr}, weight_decay={weight_decay}")
    if ema_decay is not None and not 0 <= ema_decay < 1:
        raise ConfigError(f"ema_decay must be in [0, 1) or None, got {ema_decay!r}")
    if grad_clip is not None and (isinstance(grad_clip, bool) or not grad_clip >= 0):
        raise ConfigError(f"grad_clip must be a maximum gradient norm >= 0 (0 or None: no clipping), got "
                          f"{grad_clip!r}; a negative one would reverse the gradient")
    check_device(device)
    if objective is None:
        objective = DenoisingObjective.for_denoiser(loss, denoiser)
    elif not isinstance(objective, Objective):
        raise ConfigError(f"objective must be a geodiff.training.objectives.Objective, got {type(objective).__name__}")
    elif loss != "edm":
        raise ConfigError("pass either loss= (denoising) or objective=, not both")
    num_samples, item_shape, item_masks = _check_data(data)
    field_shape = objective.field_shape(item_shape)
    if item_masks and mask is not None:
        raise ConfigError("the dataset's items carry their own masks; leave mask=None")
    cond = _check_cond(cond, data)
    if patch_size is not None:
        if not objective.crops:
            raise ConfigError(f"the {type(objective).__name__} does not train on crops; leave patch_size=None")
        patch_size = (int(patch_size[0]), int(patch_size[1]))
    plan = BatchPlan(num_samples, batch_size, seed, field_shape, patch_size)

    mask = _resolve_mask(denoiser, mask, field_shape)
    info = distributed.setup(device)
    return _train(
        denoiser, data, cond, plan, mask, info, item_shape=item_shape, item_masks=item_masks,
        steps=steps, lr=float(lr), weight_decay=float(weight_decay), warmup_steps=warmup_steps,
        cosine_steps=cosine_steps, grad_clip=float(grad_clip) if grad_clip else None,
        ema_decay=None if ema_decay is None else float(ema_decay),
        objective=objective, amp_dtype=_amp_dtype(amp, info.device),
        checkpoint_dir=None if checkpoint_dir is None else Path(checkpoint_dir),
        checkpoint_every=checkpoint_every, resume=resume, num_workers=num_workers, progress=progress,
        validation=validation, eval_every=eval_every, reschedule=bool(reschedule),
    )


def _resolve_mask(denoiser: nn.Module, mask: Tensor | None, field_shape: tuple[int, int, int]) -> Tensor | None:
    current = getattr(denoiser, "mask", None)
    if mask is None:
        mask = current
    if mask is None:
        return None
    mask = torch.as_tensor(mask)
    if mask.dtype != torch.bool or tuple(mask.shape) != tuple(field_shape):
        raise GridError(f"mask must be a bool tensor [C, H, W] = {list(field_shape)}, got {mask.dtype} "
                        f"{list(mask.shape)}")
    if current is not None and (current.shape != mask.shape or not torch.equal(current.cpu(), mask.cpu())):
        raise GridError("mask differs from denoiser.mask; pass the same mask or set it with denoiser.set_mask")
    return mask


def _learning_rate(lr: float, step: int, warmup_steps: int, cosine_steps: int | None) -> float:
    """Learning rate of step ``step`` (0-based): linear warm-up, then constant or a half cosine to 0."""
    rate = lr * min(1.0, (step + 1) / warmup_steps) if warmup_steps else lr
    if cosine_steps is not None:
        rate *= (1 + math.cos(math.pi * min(step, cosine_steps) / cosine_steps)) / 2
    return rate


@dataclass
class _Validated:
    """Validation losses so far and the best weights (kept on the CPU)."""

    losses: list[float] = field(default_factory=list)
    best_step: int | None = None
    best_state: dict[str, Tensor] | None = None

    def measure(self, step: int, model: nn.Module, validation: Validation) -> None:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            value = float(validation(model))
        model.train(was_training)
        self.losses.append(value)
        if self.best_step is None or value < min(self.losses[:-1]):
            self.best_step = step
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        logger.info("step %d: validation loss %.6g (best %.6g at step %d)", step, value, min(self.losses),
                    self.best_step)


def _train(
    denoiser: nn.Module,
    data: Tensor | Dataset,
    cond: dict[str, Tensor] | None,
    plan: BatchPlan,
    mask: Tensor | None,
    info: distributed.DistInfo,
    *,
    item_shape: tuple[int, ...],
    item_masks: bool,
    steps: int,
    lr: float,
    weight_decay: float,
    warmup_steps: int,
    cosine_steps: int | None,
    grad_clip: float | None,
    ema_decay: float | None,
    objective: Objective,
    amp_dtype: torch.dtype | None,
    checkpoint_dir: Path | None,
    checkpoint_every: int,
    resume: bool,
    num_workers: int,
    progress: bool,
    validation: Validation | None,
    eval_every: int,
    reschedule: bool = False,
) -> TrainResult:
    device = info.device
    if info.distributed and not objective.distributed:
        raise ConfigError(f"the {type(objective).__name__} trains in one process; run it without torchrun")
    if plan.batch_size % info.world_size:
        raise ConfigError(f"batch_size={plan.batch_size} must be divisible by the number of ranks {info.world_size}")
    local = plan.batch_size // info.world_size
    denoiser.to(device)
    if mask is not None:
        mask = mask.to(device)
        if hasattr(denoiser, "set_mask"):
            denoiser.set_mask(mask)
    objective.setup(denoiser)
    denoiser.train()
    ema = None if ema_decay is None else EMA(denoiser, decay=ema_decay)
    params = [p for p in denoiser.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the denoiser has no trainable parameter")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    settings = {
        "batch_size": plan.batch_size, "lr": lr, "weight_decay": weight_decay, "warmup_steps": warmup_steps,
        "grad_clip": grad_clip, "ema_decay": ema_decay, "loss": objective.config,
        "patch_size": None if plan.patch_size is None else list(plan.patch_size), "seed": plan.seed,
        "data_shape": [plan.num_samples, *item_shape],
        "mask_sha256": _mask_digest(mask), "denoiser": _json_config(denoiser),
    }
    if item_masks:
        settings["item_masks"] = True
    if cond is not None:
        settings["cond_shapes"] = {name: list(value.shape[1:]) for name, value in cond.items()}
    if cosine_steps is not None:
        settings["cosine_steps"] = cosine_steps
    if validation is not None:
        settings["eval_every"] = eval_every
    losses: list[float] = []
    validated = _Validated()
    start = 0
    checkpoint = None
    if checkpoint_dir is not None and resume:
        distributed.barrier(info)  # nobody reads while rank 0 might still be writing
        checkpoint = latest_checkpoint(checkpoint_dir)
        if checkpoint is not None:
            start, losses = _restore(checkpoint, settings, denoiser, ema, optimizer, scaler, validated, objective,
                                     may_differ=("cosine_steps",) if reschedule else ())
            if start > steps:
                raise CheckpointError(
                    f"checkpoint {checkpoint} is at step {start}, beyond steps={steps}; pass a larger steps, "
                    "resume=False or another checkpoint_dir"
                )

    model: nn.Module = denoiser
    if info.distributed:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(denoiser, device_ids=[device.index] if device.type == "cuda" else None)

    # size of each global batch in the objective's unit (the same on every rank), for the loss normalisation
    mask_cpu = None if mask is None else mask.cpu()
    mask_cells = None if mask is None else int(mask_cpu.sum())

    def batch_count(corners: Tensor | None, local_mask: Tensor | None) -> float:
        if objective.per == "sample":
            return float(plan.batch_size)
        if item_masks:  # the valid cells of every rank's share of the global batch
            return float(distributed.all_reduce_sum(local_mask.sum().to(torch.float64), info))
        if mask_cpu is None:
            h, w = plan.patch_size or plan.field_shape[1:]
            return float(plan.batch_size * plan.field_shape[0] * h * w)
        if corners is None:
            return float(plan.batch_size * mask_cells)
        return float(crop_batch(mask_cpu, corners, plan.patch_size).sum())

    if info.is_main:
        logger.info("training steps %d..%d, batch %d, on %s with %d torch thread(s)", start + 1, steps,
                    plan.batch_size, device, torch.get_num_threads())
    if validation is not None and start == 0 and not validated.losses:
        validated.measure(0, denoiser, validation)
    bar = None
    if progress and info.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=start, desc="train", unit="step", dynamic_ncols=True)
    rng_devices = [device] if device.type == "cuda" else []
    log_every = max(1, steps // 10)  # steps between training-loss log lines
    t0, ran, waited = time.perf_counter(), 0, 0.0
    shown = None
    try:
        batches = _batches(data, cond, plan, start, steps, info, num_workers)
        for step in range(start, steps):
            fetch = time.perf_counter()
            batch, batch_cond, items_mask = next(batches)
            waited += time.perf_counter() - fetch
            corners = plan.crops(step)
            local_corners = None if corners is None else corners[info.rank * local : (info.rank + 1) * local]
            x0 = crop_batch(batch, local_corners, plan.patch_size).to(device, non_blocking=True)
            if items_mask is not None:
                batch_mask = crop_batch(items_mask, local_corners, plan.patch_size).to(device, non_blocking=True)
            else:
                batch_mask = mask if mask is None or local_corners is None else crop_batch(mask, local_corners,
                                                                                            plan.patch_size)  # fmt: skip
            count = max(batch_count(corners, batch_mask), 1.0)  # crops that are all land give a zero loss

            generator = torch.Generator(device).manual_seed(derive_seed(plan.seed, "noise", step))
            draw = objective.draw((plan.batch_size, *x0.shape[1:]), generator, x0.dtype)
            if draw is not None:
                draw = draw[info.rank * local : (info.rank + 1) * local]

            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(lr, step, warmup_steps, cosine_steps)
            optimizer.zero_grad(set_to_none=True)
            with torch.random.fork_rng(devices=rng_devices):
                _seed_global(derive_seed(plan.seed, "torch", step, info.rank), device)
                autocast = (
                    torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
                )
                with autocast:
                    total = objective.terms(model, x0, _to_device(batch_cond, device), draw, batch_mask)
                scaled = total * (info.world_size / count)
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
            if grad_clip:
                if scaler is not None:
                    scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            if ema is not None:
                ema.update(denoiser)

            value = float(distributed.all_reduce_sum(total.detach(), info)) / count
            if not math.isfinite(value) and scaler is None:  # (fp16: the gradient scaler skips such steps)
                raise ConfigError(f"the loss became non-finite at step {step + 1}; lower lr (or the objective's "
                                  "scale) or clip the gradients")
            losses.append(value)
            ran += 1
            done = step + 1
            if info.is_main and (done % log_every == 0 or done == steps):
                logger.info("step %d/%d: training loss %.6g (mean of the last %d steps)", done, steps,
                            sum(losses[-log_every:]) / len(losses[-log_every:]), len(losses[-log_every:]))
            if validation is not None and done % eval_every == 0:
                validated.measure(done, denoiser, validation)
            if bar is not None:
                shown = value if shown is None or not math.isfinite(shown) else 0.9 * shown + 0.1 * value
                postfix = {"loss": f"{shown:.4g}"}
                if validated.losses:
                    postfix["val"] = f"{validated.losses[-1]:.4g}"
                bar.set_postfix(postfix, refresh=False)
                bar.update(1)
            if checkpoint_dir is not None and (done % checkpoint_every == 0 or done == steps):
                if info.is_main:
                    checkpoint = _save(checkpoint_dir, done, settings, plan, losses, denoiser, ema, optimizer, scaler,
                                       info, validated, objective)
                distributed.barrier(info)
                checkpoint = latest_checkpoint(checkpoint_dir)
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - t0
    if info.is_main and ran:
        logger.info("trained %d steps in %.1f s (%.3g steps/s)%s", ran, elapsed, ran / max(elapsed, 1e-9),
                    f"; best validation loss {min(validated.losses):.6g} at step {validated.best_step}"
                    if validated.losses else "")
    if validated.best_state is not None:
        denoiser.load_state_dict(validated.best_state)
    return TrainResult(
        ema=None if ema is None else ema.model,
        denoiser=denoiser,
        losses=losses,
        step=start + ran,
        checkpoint=checkpoint,
        steps_per_second=ran / elapsed if ran and elapsed > 0 else None,
        seconds=elapsed,
        data_seconds=waited,
        validation_losses=list(validated.losses),
        best_step=validated.best_step,
    )


def _to_device(cond: dict[str, Tensor] | None, device: torch.device) -> dict[str, Tensor] | None:
    return None if cond is None else {k: v.to(device, non_blocking=True) for k, v in cond.items()}


def _save(
    checkpoint_dir: Path,
    step: int,
    settings: dict[str, Any],
    plan: BatchPlan,
    losses: list[float],
    denoiser: nn.Module,
    ema: EMA | None,
    optimizer: torch.optim.Optimizer,
    scaler: Any,
    info: distributed.DistInfo,
    validated: _Validated,
    objective: Objective,
) -> Path:
    from geodiff import __version__

    opt_tensors, opt_index = flatten_optimizer_state(optimizer.state_dict())
    meta = {
        "format": FORMAT,
        "geodiff_version": __version__,
        "step": step,
        "losses": losses,
        "settings": settings,
        "sampler": plan.state(step),
        "rng": {"scheme": "per-step generators seeded by (seed, stream, step[, rank])", "seed": plan.seed,
                "next_step": step},
        "world_size": info.world_size,
        "ema": None if ema is None else ema.config,
        "optimizer": opt_index,
        "grad_scaler": None if scaler is None else scaler.state_dict(),
    }
    tensors = {"model": denoiser.state_dict(), "optimizer": opt_tensors}
    config = settings["denoiser"]
    configs = None if config is None else {"model": config}
    if ema is not None:
        tensors["ema"] = ema.state_dict()
        configs = None if configs is None else {**configs, "ema": config}
    if validated.losses:
        meta["validation"] = {"losses": validated.losses, "best_step": validated.best_step}
        tensors["best"] = validated.best_state  # type: ignore[assignment]
        configs = None if configs is None else {**configs, "best": config}
    objective_state = objective.state_dict()
    if objective_state:
        tensors["objective"] = objective_state
        meta["objective_state"] = True
    return write_checkpoint(checkpoint_dir, step, tensors=tensors, meta=meta, configs=configs)


def _restore(
    path: Path,
    settings: dict[str, Any],
    denoiser: nn.Module,
    ema: EMA | None,
    optimizer: torch.optim.Optimizer,
    scaler: Any,
    validated: _Validated,
    objective: Objective,
    may_differ: tuple[str, ...] = (),
) -> tuple[int, list[float]]:
    tensors, meta = read_checkpoint(path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a geodiff training checkpoint (format {meta.get('format')!r})")
    saved = meta.get("settings", {})
    changed = [key for key in settings if saved.get(key) != settings[key] and key not in may_differ]
    if changed:
        details = "; ".join(f"{key}: checkpoint {saved.get(key)!r}, now {settings[key]!r}" for key in changed)
        raise CheckpointError(
            f"cannot resume from {path}: settings differ ({details}); use the same settings, resume=False or "
            "another checkpoint_dir"
        )
    groups = ("model", "optimizer") + (() if ema is None else ("ema",)) + (("best",) if meta.get("validation") else ())
    groups += ("objective",) if meta.get("objective_state") else ()
    for group in groups:
        if group not in tensors:
            raise CheckpointError(f"{path} has no {group} tensors")
    try:
        denoiser.load_state_dict(tensors["model"], strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"model weights in {path} do not fit the denoiser: {err}") from err
    if ema is not None:
        ema.load_state_dict(tensors["ema"], int(meta["ema"]["num_updates"]))
    try:
        optimizer.load_state_dict(unflatten_optimizer_state(tensors["optimizer"], meta["optimizer"]))
    except (ValueError, KeyError, RuntimeError) as err:
        raise CheckpointError(f"optimizer state in {path} does not fit: {err}") from err
    if scaler is not None and meta.get("grad_scaler"):
        scaler.load_state_dict(meta["grad_scaler"])
    if meta.get("objective_state"):
        try:
            objective.load_state_dict(tensors["objective"])
        except RuntimeError as err:
            raise CheckpointError(f"the objective's state in {path} does not fit: {err}") from err
    if meta.get("validation"):
        validated.losses = [float(v) for v in meta["validation"]["losses"]]
        validated.best_step = int(meta["validation"]["best_step"])
        validated.best_state = dict(tensors["best"])
    step = int(meta["step"])
    losses = [float(v) for v in meta["losses"]]
    if len(losses) != step:
        raise CheckpointError(f"{path}: loss history has {len(losses)} entries for step {step}")
    return step, losses
