"""What the training loop minimises: one :class:`Objective` per kind of model.

:func:`geodiff.train` runs one loop (batches, optimizer, EMA, checkpoints, resume, data parallelism, determinism)
for every model; the objective says what the loss of a batch is. An objective

- validates the shape of one data item (:meth:`Objective.field_shape`),
- draws the random part of a step for the whole global batch (:meth:`Objective.draw`, from the step's generator;
  each rank takes its share of the draw, so one process and several see the same draw),
- returns the sum of the loss terms of this rank's share of the batch (:meth:`Objective.terms`).

The loop divides that sum by the size of the global batch counted in the objective's unit (:attr:`Objective.per`):
``"cell"``, the valid (mask True) cells of the global batch, or ``"sample"``, its samples. So the loss of a step is
the mean over cells or over samples, whatever the number of ranks.

=============================  ===================================================  =========  ================
objective                      loss                                                 per        model
=============================  ===================================================  =========  ================
:class:`DenoisingObjective`    ``lambda(sigma) (D(x0 + sigma n, sigma) - x0)^2``    cell       a denoiser
:class:`AutoencoderObjective`  ``mean_cells (x_hat - x)^2 + w mean_latent z^2``     sample     an autoencoder
:class:`RegressionObjective`   ``(f(0, 0, cond) - x)^2``                            cell       a regression
``DPOObjective``               Diffusion-DPO against a frozen reference             sample     a denoiser
=============================  ===================================================  =========  ================

(``DPOObjective`` lives with the preference methods, :mod:`geodiff.alignment.dpo`.)

Example
-------
>>> import torch
>>> from geodiff.diffusion.gaussian import GaussianDenoiser
>>> from geodiff.training.objectives import DenoisingObjective
>>> objective = DenoisingObjective("edm", sigma_data=0.5)
>>> oracle = GaussianDenoiser(torch.zeros(4), torch.eye(4) * 0.25, shape=(1, 2, 2))  # exact D for N(0, 0.5^2)
>>> x0 = oracle.sample(512, generator=torch.Generator().manual_seed(0)).float()
>>> draw = objective.draw(tuple(x0.shape), torch.Generator().manual_seed(1), torch.float32)
>>> total = objective.terms(oracle, x0, None, draw, None)
>>> round(float(total) / x0.numel(), 1)  # the exact denoiser scores 1 per cell at every noise level
1.0
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from geodiff.diffusion.losses import DDPMLoss, DenoisingLoss, EDMLoss
from geodiff.diffusion.schedules import VPSchedule
from geodiff.errors import ConfigError, GridError

__all__ = ["Objective", "DenoisingObjective", "AutoencoderObjective", "RegressionObjective", "accepts_mask"]


def accepts_mask(module: nn.Module) -> bool:
    """Whether ``module``'s forward takes a per-call ``mask=`` (a :class:`~geodiff.diffusion.denoiser.Denoiser`)."""
    target = getattr(module, "module", module)  # a DistributedDataParallel wrapper forwards to .module
    try:
        return "mask" in inspect.signature(target.forward).parameters
    except (TypeError, ValueError):
        return False


class Objective(ABC):
    """The loss of a training step (module docstring). Subclasses define :attr:`config` and :meth:`terms`."""

    #: unit the loop normalises by: ``"cell"`` (valid cells of the global batch) or ``"sample"`` (its samples)
    per: ClassVar[str] = "cell"
    #: whether random crops (``patch_size``) of the items make sense for this objective
    crops: ClassVar[bool] = True
    #: whether it trains under torchrun (data parallel: one call of the model per step)
    distributed: ClassVar[bool] = True

    @property
    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON description (recorded in checkpoints: resuming needs the same one)."""

    def field_shape(self, item_shape: tuple[int, ...]) -> tuple[int, int, int]:
        """The field shape ``(C, H, W)`` of a data item of shape ``item_shape`` (checked)."""
        if len(item_shape) != 3:
            raise GridError(f"data must be a [N, C, H, W] tensor (items [C, H, W]), got items of shape "
                            f"{list(item_shape)}")
        return tuple(int(n) for n in item_shape)  # type: ignore[return-value]

    def setup(self, model: nn.Module) -> None:
        """Called once before training starts (after the model is on its device, before a checkpoint is loaded)."""

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors of the objective's own state (saved in checkpoints; e.g. a frozen reference model)."""
        return {}

    def load_state_dict(self, tensors: dict[str, Tensor]) -> None:
        """Restore :meth:`state_dict` (on resume, after :meth:`setup`)."""

    def draw(self, shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype) -> Any:
        """The random part of a step for the global batch of items ``shape = (B, ...)``, drawn from ``generator``;
        sliceable along the batch (``draw[a:b]``). None: the objective draws nothing."""
        return None

    @abstractmethod
    def terms(self, model: nn.Module, x: Tensor, cond: dict[str, Tensor] | None, draw: Any,
              mask: Tensor | None) -> Tensor:  # fmt: skip
        """Sum of the loss terms of this rank's batch ``x [b, ...]`` (a scalar tensor with gradient).

        ``draw`` is this rank's share of :meth:`draw`; ``mask`` is ``[C, H, W]`` or ``[b, C, H, W]`` bool (True =
        valid) or None; ``model`` may be a ``DistributedDataParallel`` wrapper: call it, not its methods.
        """


class DenoisingObjective(Objective):
    """Denoising score matching (:mod:`geodiff.diffusion.losses`), averaged over the valid cells.

    ``loss``: ``"edm"`` (:class:`~geodiff.diffusion.losses.EDMLoss` with ``sigma_data``), ``"ddpm"``
    (:class:`~geodiff.diffusion.losses.DDPMLoss` with ``schedule``) or a
    :class:`~geodiff.diffusion.losses.DenoisingLoss`. The mask of the batch reaches a denoiser that takes one
    (``forward(x, sigma, cond, mask=...)``) with every call.
    """

    def __init__(self, loss: str | DenoisingLoss = "edm", *, sigma_data: float = 0.5,
                 schedule: Any = None):  # fmt: skip
        if isinstance(loss, DenoisingLoss):
            self.loss = loss
        elif loss == "edm":
            self.loss = EDMLoss(sigma_data=float(sigma_data))
        elif loss == "ddpm":
            self.loss = DDPMLoss(schedule if isinstance(schedule, VPSchedule) else None)
        else:
            raise ConfigError(f"loss must be 'edm', 'ddpm' or a DenoisingLoss, got {loss!r}")

    @classmethod
    def for_denoiser(cls, loss: str | DenoisingLoss, denoiser: nn.Module) -> DenoisingObjective:
        """The objective with the denoiser's ``sigma_data`` (EDM) or VP schedule (DDPM)."""
        return cls(loss, sigma_data=float(getattr(denoiser, "sigma_data", 0.5)),
                   schedule=getattr(denoiser, "schedule", None))  # fmt: skip

    @property
    def config(self) -> dict[str, Any]:
        return self.loss.config

    def draw(self, shape, generator, dtype):
        return self.loss.draw(shape, generator=generator, dtype=dtype)

    def terms(self, model, x, cond, draw, mask):
        if mask is not None and accepts_mask(model):
            def denoise(x_noisy: Tensor, sigma: Tensor, c: dict[str, Tensor] | None) -> Tensor:
                return model(x_noisy, sigma, c, mask=mask)
        else:
            denoise = model
        total, _ = self.loss.terms(denoise, x, draw, mask=mask, cond=cond)
        return total


class AutoencoderObjective(Objective):
    """Reconstruction of an autoencoder: per sample, the mean squared error over its cells plus
    ``latent_weight`` times the mean square of its latent (keeps the latent near unit scale); mean over samples.

    The model is called as ``model(x, with_latent=True) -> (x_hat, z)``
    (:class:`~geodiff.backbones.autoencoder.Autoencoder`).
    """

    per = "sample"

    def __init__(self, latent_weight: float = 1e-3):
        if not latent_weight >= 0:
            raise ConfigError(f"latent_weight must be >= 0, got {latent_weight!r}")
        self.latent_weight = float(latent_weight)

    @property
    def config(self) -> dict[str, Any]:
        return {"name": "autoencoder", "latent_weight": self.latent_weight}

    def terms(self, model, x, cond, draw, mask):
        reconstruction, latent = model(x, with_latent=True)
        error = (reconstruction - x).pow(2).flatten(1).mean(1)
        return (error + self.latent_weight * latent.pow(2).flatten(1).mean(1)).sum()


class RegressionObjective(Objective):
    """Mean squared error of a deterministic prediction ``model(x, None, cond)`` against ``x`` over the valid
    cells (:class:`~geodiff.baselines.regression.RegressionModel`: the prediction comes from ``cond`` only)."""

    @property
    def config(self) -> dict[str, Any]:
        return {"name": "regression"}

    def terms(self, model, x, cond, draw, mask):
        error = (model(x, None, cond) - x) ** 2
        if mask is not None:
            error = error * mask.to(error.dtype)
        return error.sum()
