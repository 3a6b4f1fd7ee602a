r"""Diffusion-DPO preference fine-tuning (Wallace et al. 2023) of a denoiser, regularised to a frozen reference.

Given pairs of samples for the same conditioning, a preferred ``x_w`` and a rejected ``x_l`` (ranked by a
reward), both are noised with the same ``sigma`` and noise ``n``; with the EDM-weighted denoising error

    ``e(D, x0) = lambda(sigma) mean_cells (D(x0 + sigma n, sigma, cond) - x0)^2``,
    ``lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2``

the loss is

    ``L = -log sigmoid(-beta [(e(D, x_w) - e(D_ref, x_w)) - (e(D, x_l) - e(D_ref, x_l))])``

i.e. the policy ``D`` should denoise the winner better and the loser worse *than the reference does*; ``beta``
sets how far it may move from the reference (the KL regularisation of DPO, implicit in this loss). When
``D == D_ref`` the bracket is 0 and ``L = log 2``. Optionally ``sft_weight`` adds the plain denoising loss on the
winners. ``sigma`` is drawn from EDM's log-normal (``p_mean``, ``p_std``). With ``validation`` pairs the loss
on them (fixed ``sigma`` and noise draws) is measured every ``eval_every`` steps and the weights with the lowest
validation loss are kept (early stopping); the first measurement is at step 0, where it is ``log 2``.
:func:`dpo_finetune` runs the training loop :func:`geodiff.train` with :class:`DPOObjective`, so it resumes from
checkpoints and is deterministic like any training.

Example
-------
>>> import copy, torch
>>> from geodiff.backbones.unet import UNet
>>> from geodiff.diffusion.denoiser import Denoiser
>>> from geodiff.alignment.dpo import dpo_loss
>>> policy = Denoiser(UNet(in_channels=1, base_channels=8, channel_mults=(1,), num_res_blocks=1))
>>> reference = copy.deepcopy(policy)
>>> w, l, n = torch.randn(3, 2, 1, 4, 4)
>>> round(dpo_loss(policy, reference, w, l, torch.tensor([0.5, 1.0]), n).item(), 6)  # log 2
0.693147
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from geodiff.diffusion.losses import EDMLoss
from geodiff.errors import ConfigError, GridError
from geodiff.training.objectives import Objective

__all__ = ["dpo_loss", "dpo_finetune", "DPOObjective", "DPOResult", "denoising_error"]


def _weight(sigma: Tensor, sigma_data: float) -> Tensor:
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def denoising_error(
    denoiser: nn.Module, x0: Tensor, sigma: Tensor, noise: Tensor, cond: dict[str, Tensor] | None = None,
    *, sigma_data: float | None = None,
) -> Tensor:
    """EDM-weighted denoising error ``[B]`` of ``x0 [B, ...]`` at ``sigma [B]`` with ``noise`` (module docstring)."""
    sigma_data = float(getattr(denoiser, "sigma_data", 0.5) if sigma_data is None else sigma_data)
    column = sigma.to(x0.dtype).reshape(-1, *([1] * (x0.ndim - 1)))
    x0_hat = denoiser(x0 + column * noise, sigma, cond)
    weight = _weight(sigma.to(torch.float64), sigma_data).to(x0.dtype)
    return weight * (x0_hat - x0).pow(2).flatten(1).mean(1)


def dpo_loss(
    policy: nn.Module,
    reference: nn.Module,
    winner: Tensor,
    loser: Tensor,
    sigma: Tensor,
    noise: Tensor,
    cond: dict[str, Tensor] | None = None,
    *,
    beta: float = 100.0,
    per_pair: bool = False,
) -> Tensor:
    """Diffusion-DPO loss of pairs ``winner, loser [B, C, H, W]`` (module docstring): the mean over the batch, or
    with ``per_pair`` the loss of each pair ``[B]``."""
    if winner.shape != loser.shape or noise.shape != winner.shape:
        raise GridError(f"winner, loser and noise must have one shape; got {list(winner.shape)}, "
                        f"{list(loser.shape)}, {list(noise.shape)}")
    sigma_data = float(getattr(reference, "sigma_data", 0.5))
    with torch.no_grad():
        ref_w = denoising_error(reference, winner, sigma, noise, cond, sigma_data=sigma_data)
        ref_l = denoising_error(reference, loser, sigma, noise, cond, sigma_data=sigma_data)
    pol_w = denoising_error(policy, winner, sigma, noise, cond, sigma_data=sigma_data)
    pol_l = denoising_error(policy, loser, sigma, noise, cond, sigma_data=sigma_data)
    margin = (pol_w - ref_w) - (pol_l - ref_l)
    losses = -nn.functional.logsigmoid(-beta * margin)
    return losses if per_pair else losses.mean()


class DPOObjective(Objective):
    """Diffusion-DPO as an objective of :func:`geodiff.train` (module docstring): data items are pairs
    ``[2, C, H, W]`` (winner, loser), the reference is a frozen copy of the model as training starts, ``sigma`` and
    the noise (shared by winner and loser) are drawn per step for the global batch; mean over pairs.

    Parameters
    ----------
    beta: how far the policy may move from the reference.
    sft_weight: weight of the plain denoising error of the winners added to the loss.
    p_mean, p_std: EDM's log-normal of ``sigma``.
    """

    per = "sample"
    crops = False
    distributed = False  # several calls of the policy per step

    def __init__(self, beta: float = 100.0, *, sft_weight: float = 0.0, p_mean: float = -1.2, p_std: float = 1.2):
        if not beta > 0 or not sft_weight >= 0 or not p_std > 0:
            raise ConfigError(f"need beta > 0, sft_weight >= 0 and p_std > 0; got {beta}, {sft_weight}, {p_std}")
        self.beta, self.sft_weight = float(beta), float(sft_weight)
        self.noise = EDMLoss(P_mean=p_mean, P_std=p_std)
        self.reference: nn.Module | None = None

    @property
    def config(self) -> dict[str, Any]:
        return {"name": "dpo", "beta": self.beta, "sft_weight": self.sft_weight, "p_mean": self.noise.P_mean,
                "p_std": self.noise.P_std}  # fmt: skip

    def field_shape(self, item_shape):
        if len(item_shape) != 4 or item_shape[0] != 2:
            raise GridError(f"preference data must be pairs [N, 2, C, H, W] (winner, loser), got items of shape "
                            f"{list(item_shape)}")
        return tuple(int(n) for n in item_shape[1:])

    def setup(self, model):
        self.reference = copy.deepcopy(model).eval().requires_grad_(False)

    def state_dict(self):
        return {} if self.reference is None else self.reference.state_dict()

    def load_state_dict(self, tensors):
        if self.reference is None:
            raise ConfigError("DPOObjective.setup(model) makes the reference before its weights can be loaded")
        self.reference.load_state_dict(tensors, strict=True)

    def draw(self, shape, generator, dtype):
        return self.noise.draw((shape[0], *shape[2:]), generator=generator, dtype=dtype)

    def terms(self, model, x, cond, draw, mask):
        if self.reference is None:
            raise ConfigError("DPOObjective.setup(model) makes the reference; the training loop calls it")
        winner, loser = x[:, 0], x[:, 1]
        losses = dpo_loss(model, self.reference, winner, loser, draw.sigma, draw.noise, cond, beta=self.beta,
                          per_pair=True)  # fmt: skip
        if self.sft_weight:
            losses = losses + self.sft_weight * denoising_error(model, winner, draw.sigma, draw.noise, cond)
        return losses.sum()


@dataclass
class DPOResult:
    """``denoiser`` (fine-tuned in place), frozen ``reference``, per-step ``losses``, ``seconds``; with validation
    pairs ``validation_losses`` at steps ``0, eval_every, 2 eval_every, ...`` and ``best_step`` (the weights
    kept)."""

    denoiser: nn.Module
    reference: nn.Module
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    validation_losses: list[float] = field(default_factory=list)
    best_step: int | None = None


def dpo_finetune(
    denoiser: nn.Module,
    winners: Tensor,
    losers: Tensor,
    *,
    cond: dict[str, Tensor] | None = None,
    steps: int,
    batch_size: int = 16,
    beta: float = 100.0,
    lr: float = 1e-5,
    sft_weight: float = 0.0,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    seed: int = 0,
    validation: tuple[Tensor, Tensor, dict[str, Tensor] | None] | None = None,
    eval_every: int = 10,
    validation_draws: int = 4,
    progress: bool = True,
    **options: Any,
) -> DPOResult:
    """Fine-tune ``denoiser`` on preference pairs ``winners, losers [P, C, H, W]`` with per-pair ``cond``
    ``{name: [P, ...]}`` with :func:`geodiff.train` and the :class:`DPOObjective` (AdamW, no gradient clipping, no
    EMA); the reference is a frozen copy of ``denoiser`` as passed (module docstring).
    ``validation = (winners, losers, cond)`` held-out pairs ``[V, C, H, W]``: early stopping on their DPO loss
    (``validation_draws`` fixed ``(sigma, noise)`` draws per pair, every ``eval_every`` steps). ``options`` go to
    :func:`geodiff.train` (``checkpoint_dir``, ``resume``, ``device``, ...)."""
    from geodiff.training.trainer import train

    _check_pairs(winners, losers, cond, "")
    if validation is not None:
        _check_pairs(*validation, "validation ")
        if validation[0].shape[1:] != winners.shape[1:]:
            raise GridError(f"validation pairs must be [V, {', '.join(map(str, winners.shape[1:]))}], got "
                            f"{list(validation[0].shape)}")
    if steps < 1 or batch_size < 1 or not beta > 0 or not lr > 0:
        raise ConfigError(f"need steps, batch_size >= 1 and beta, lr > 0; got {steps}, {batch_size}, {beta}, {lr}")
    if eval_every < 1 or validation_draws < 1:
        raise ConfigError(f"need eval_every, validation_draws >= 1; got {eval_every}, {validation_draws}")
    objective = DPOObjective(beta, sft_weight=sft_weight, p_mean=p_mean, p_std=p_std)
    check = None
    if validation is not None:
        held_out = _Validation(*validation, draws=validation_draws, beta=beta, p_mean=p_mean, p_std=p_std,
                               seed=seed + 1)  # fmt: skip

        def check(model: nn.Module) -> float:
            return held_out(model, objective.reference)

    start = time.perf_counter()
    options = {"grad_clip": None, "ema_decay": None, **options}
    result = train(denoiser, torch.stack([winners, losers], 1), cond=cond, objective=objective, steps=steps,
                   batch_size=min(batch_size, winners.shape[0]), lr=lr, seed=seed, progress=progress,
                   validation=check, eval_every=eval_every, **options)  # fmt: skip
    denoiser.eval()
    return DPOResult(denoiser=denoiser, reference=objective.reference, losses=result.losses,
                     seconds=time.perf_counter() - start, validation_losses=result.validation_losses,
                     best_step=result.best_step)  # fmt: skip


def _check_pairs(winners: Tensor, losers: Tensor, cond: dict[str, Tensor] | None, what: str) -> None:
    if winners.shape != losers.shape or winners.ndim != 4:
        raise GridError(f"{what}winners and losers must both be [P, C, H, W]; got {list(winners.shape)}, "
                        f"{list(losers.shape)}")
    for name, value in (cond or {}).items():
        if value.shape[0] != winners.shape[0]:
            raise GridError(f"{what}cond[{name!r}] must have {winners.shape[0]} pairs first, got {list(value.shape)}")


class _Validation:
    """DPO loss of held-out pairs at fixed ``(sigma, noise)`` draws (``draws`` per pair), in eval mode."""

    def __init__(self, winners: Tensor, losers: Tensor, cond: dict[str, Tensor] | None, *, draws: int, beta: float,
                 p_mean: float, p_std: float, seed: int, batch_size: int = 64):  # fmt: skip
        generator = torch.Generator().manual_seed(seed)
        self.winners, self.losers = winners.repeat(draws, 1, 1, 1), losers.repeat(draws, 1, 1, 1)
        self.cond = None if cond is None else {k: v.repeat(draws, *([1] * (v.ndim - 1))) for k, v in cond.items()}
        self.sigma = (p_mean + p_std * torch.randn(self.winners.shape[0], generator=generator,
                                                   dtype=torch.float64)).exp()  # fmt: skip
        self.noise = torch.randn(self.winners.shape, generator=generator, dtype=winners.dtype)
        self.beta, self.batch_size = beta, batch_size

    def __call__(self, policy: nn.Module, reference: nn.Module) -> float:
        total, n = 0.0, self.winners.shape[0]
        with torch.no_grad():
            for start in range(0, n, self.batch_size):
                part = slice(start, start + self.batch_size)
                cond = None if self.cond is None else {k: v[part] for k, v in self.cond.items()}
                loss = dpo_loss(policy, reference, self.winners[part], self.losers[part], self.sigma[part],
                                self.noise[part], cond, beta=self.beta)  # fmt: skip
                total += float(loss) * self.winners[part].shape[0]
        return total / n
