"""The sampling engine: an ensemble drawn in batches of members from one generator, checked for runaway members.

Every pipeline (reconstruct, downscale, assimilate) samples the same way, on tensors:

1. members are drawn ``batch_size`` at a time from one ``torch.Generator`` (for a pipeline, the generator of one
   time, seeded from ``(seed, time)`` with :func:`derive_seed`): noise ``[b, *shape]`` then the guided sampler, in
   that order, so an ensemble is the same whatever else is sampled in the same run;
2. the denoised estimate is optionally clipped to ``[-clip, clip]``
   (:class:`~geodiff.diffusion.clipping.ClipDenoised`);
3. the ensemble is checked for members that ran away (:func:`find_runaways`), in the units the checks are
   given (the pipelines give normalised units, i.e. multiples of the data's own standard deviation):

   - a member with a non-finite value in a valid cell;
   - a member with a valid cell at or beyond the absolute ``bound`` (e.g. 10 standard deviations);
   - a member whose RMS distance from the ensemble median (the cell-wise median over the members, valid cells
     only) exceeds ``factor`` times the median of the members' distances (default :data:`RUNAWAY_FACTOR` = 5)
     and also exceeds ``floor`` (default :data:`RUNAWAY_FLOOR` = 0.5 normalised units, so that a tightly
     guided ensemble whose spread is far below the data's variability is not broken up over differences
     that do not matter). In high dimension the members' distances from the median concentrate near one value
     (a Gaussian ensemble's spread varies by a few percent between members), so a member 5 times further out
     has left the distribution. The relative check needs at least :data:`MIN_MEMBERS` members and looks at
     :data:`MAX_CELLS` evenly strided valid cells at most;

4. what happens to a runaway member is the ``policy`` of :class:`RunawayCheck`: ``"resample"`` (redraw that
   member with a fresh generator derived from the ensemble's seed, the member and the attempt, at most
   ``max_resamples`` times, then :class:`~geodiff.errors.SamplingError`), ``"raise"`` (SamplingError at once) or
   ``"keep"`` (keep and flag it; a member with non-finite values is never kept). Every runaway member is
   reported (:class:`Runaway`), so the pipelines record it in their output.

Example
-------
>>> import torch
>>> from geodiff.diffusion.engine import RunawayCheck, SamplingEngine
>>> from geodiff.diffusion.gaussian import GaussianDenoiser
>>> from geodiff.diffusion.samplers import HeunSampler
>>> from geodiff.diffusion.schedules import EDMSchedule
>>> from geodiff.guidance import combine
>>> prior = GaussianDenoiser(torch.zeros(4), torch.eye(4), shape=(1, 2, 2))
>>> engine = SamplingEngine(HeunSampler(), prior, EDMSchedule().sigmas(8), members=6, batch_size=4,
...                         runaway=RunawayCheck(bound=10.0))
>>> ensemble = engine.draw(combine([]), (1, 2, 2), generator=torch.Generator().manual_seed(0))
>>> tuple(ensemble.x.shape), ensemble.runaways
((6, 1, 2, 2), [])
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ContextManager

import torch
from torch import Tensor
from tqdm.auto import tqdm

from geodiff.diffusion.clipping import ClipDenoised
from geodiff.errors import ConfigError, SamplingError
from geodiff.resources import check_memory, sampling_bytes

logger = logging.getLogger(__name__)

__all__ = [
    "derive_seed",
    "RunawayCheck",
    "Runaway",
    "Ensemble",
    "SamplingEngine",
    "find_runaways",
    "median_distances",
    "RUNAWAY_POLICIES",
    "RUNAWAY_FACTOR",
    "RUNAWAY_FLOOR",
    "MAX_RESAMPLES",
    "MIN_MEMBERS",
    "MAX_CELLS",
]

#: what happens to a runaway member (see the module docstring)
RUNAWAY_POLICIES = ("resample", "raise", "keep")
#: a member further from the ensemble median than this many times the median distance has run away
RUNAWAY_FACTOR = 5.0
#: ... provided its distance also exceeds this, in the checked units (normalised: standard deviations)
RUNAWAY_FLOOR = 0.5
#: redraws of one member before the engine gives up (``policy="resample"``)
MAX_RESAMPLES = 3
#: the relative check needs this many members (with two, both are equally far from their median)
MIN_MEMBERS = 3
#: the relative check looks at this many valid cells at most (evenly strided); the other checks look at all
MAX_CELLS = 65536

Cond = Mapping[str, Tensor] | Callable[[int], Mapping[str, Tensor] | None] | None


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from ``parts`` (joined by ``|``, hashed with sha256): stable across runs and machines.

    >>> derive_seed(0, "2000-01-01T00:00:00") == derive_seed(0, "2000-01-01T00:00:00") != derive_seed(1, "x")
    True
    """
    key = "|".join(str(part) for part in parts).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & (2**63 - 1)


@dataclass(frozen=True)
class RunawayCheck:
    """How runaway members are found and handled (module docstring); ``bound``, ``factor`` and ``floor`` are in
    the units of the checked fields (normalised for the pipelines). ``bound=None`` or ``factor=None`` switches
    that check off."""

    policy: str = "resample"
    factor: float | None = RUNAWAY_FACTOR
    floor: float = RUNAWAY_FLOOR
    bound: float | None = None
    max_resamples: int = MAX_RESAMPLES

    def __post_init__(self) -> None:
        if self.policy not in RUNAWAY_POLICIES:
            raise ConfigError(f"on_runaway must be one of {RUNAWAY_POLICIES}, got {self.policy!r}")
        for name in ("factor", "bound"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                raise ConfigError(f"runaway {name} must be a positive number or None, got {value!r}")
        if not (isinstance(self.floor, (int, float)) and self.floor >= 0 and math.isfinite(self.floor)):
            raise ConfigError(f"runaway floor must be a non-negative number, got {self.floor!r}")
        if isinstance(self.max_resamples, bool) or not isinstance(self.max_resamples, int) or self.max_resamples < 1:
            raise ConfigError(f"max_resamples must be an integer >= 1, got {self.max_resamples!r}")

    def describe(self) -> dict[str, Any]:
        """The settings as JSON, for provenance attributes."""
        return {"policy": self.policy, "factor": self.factor, "floor": self.floor, "bound": self.bound,
                "max_resamples": self.max_resamples}  # fmt: skip


@dataclass
class Runaway:
    """A member found to have run away: why (``reason``), how often it was redrawn, and whether the returned
    ensemble still holds a runaway draw of it (``kept``: only with ``policy="keep"``)."""

    member: int
    reason: str
    redraws: int = 0
    kept: bool = False

    def describe(self) -> dict[str, Any]:
        return {"member": self.member, "reason": self.reason, "redraws": self.redraws, "kept": self.kept}


@dataclass
class Ensemble:
    """The members ``x [M, *shape]`` (the sampler's dtype) and the runaway members found on the way."""

    x: Tensor
    runaways: list[Runaway] = field(default_factory=list)


def median_distances(fields: Tensor, valid: Tensor | None = None, max_cells: int | None = MAX_CELLS) -> Tensor:
    """RMS distance ``[M]`` (float64) of each member of ``fields [M, C, H, W]`` from the cell-wise ensemble
    median, over the ``valid [C, H, W]`` cells (every ``k``-th of them when there are more than ``max_cells``: the
    median costs microseconds per cell, the estimate of an RMS over 65536 cells is good to a percent); members
    with non-finite values are left out of the median (their distance is ``inf``).

    >>> x = torch.zeros(4, 1, 2, 2); x[3] = 3.0
    >>> median_distances(x).tolist()
    [0.0, 0.0, 0.0, 3.0]
    """
    flat = fields.detach().flatten(1)
    cells = None if valid is None else torch.nonzero(valid.to(fields.device).flatten()).flatten()
    count = flat.shape[1] if cells is None else cells.numel()
    step = -(-count // max_cells) if max_cells is not None and count > max_cells else 1
    if cells is not None:
        flat = flat[:, cells[::step]]
    elif step > 1:
        flat = flat[:, ::step]
    finite = torch.isfinite(flat).all(dim=1)
    if flat.shape[1] == 0 or not bool(finite.any()):
        return torch.where(finite, 0.0, math.inf).to(torch.float64)
    median = flat[finite].median(dim=0).values  # in the fields' dtype: no float64 copy of a large ensemble
    distances = (flat - median).pow(2).mean(dim=1, dtype=torch.float64).sqrt()
    return torch.where(finite, distances, math.inf)


def find_runaways(fields: Tensor, valid: Tensor | None, check: RunawayCheck) -> dict[int, str]:
    """``{member: reason}`` for the members of ``fields [M, C, H, W]`` that ran away (module docstring); only the
    ``valid [C, H, W]`` cells count (None: all).

    >>> x = torch.randn(8, 1, 16, 16, generator=torch.Generator().manual_seed(0)); x[5] *= 20
    >>> find_runaways(x, None, RunawayCheck())
    {5: 'RMS distance 20.5 from the ensemble median, 20.9x the median distance 0.98 (factor 5)'}
    """
    members = fields.shape[0]
    flat = fields.detach().flatten(1)
    finite = torch.isfinite(flat)
    counted = finite if valid is None else finite | ~valid.to(fields.device).flatten()  # land never counts
    found: dict[int, str] = {}
    bad = (~counted).sum(dim=1)
    for m in torch.nonzero(bad).flatten().tolist():
        found[m] = f"{int(bad[m])} non-finite values in valid cells"
    if check.bound is not None:
        beyond = (flat.abs() >= check.bound) & finite
        if valid is not None:
            beyond &= valid.to(fields.device).flatten()
        count = beyond.sum(dim=1)
        for m in torch.nonzero(count).flatten().tolist():
            largest = float(flat[m].abs()[beyond[m]].max())
            found.setdefault(m, f"{int(count[m])} valid cells at or beyond {check.bound:g} (largest {largest:.3g})")
    if check.factor is not None and members >= MIN_MEMBERS:
        distances = median_distances(fields, valid)
        typical = float(distances[torch.isfinite(distances)].median()) if bool(torch.isfinite(distances).any()) else 0
        limit = max(check.factor * typical, check.floor)
        for m in torch.nonzero(torch.isfinite(distances) & (distances > limit)).flatten().tolist():
            found.setdefault(m, f"RMS distance {float(distances[m]):.3g} from the ensemble median, "
                                f"{float(distances[m]) / max(typical, 1e-300):.3g}x the median distance "
                                f"{typical:.3g} (factor {check.factor:g})")
    return dict(sorted(found.items()))


class SamplingEngine:
    """Draws ensembles of ``members`` with one sampler, denoiser and noise schedule (module docstring).

    ``sampler(denoiser, noise [b, *shape], sigmas, **kwargs)`` is a registered sampler; ``clip`` wraps it in
    :class:`~geodiff.diffusion.clipping.ClipDenoised`; ``autocast`` is a reusable context for the network (e.g.
    :func:`geodiff.runtime.precision_context`); ``progress`` shows one bar over ``fields`` ensembles (``label``
    names it) and ``callback(StepInfo)`` is called after every step. Use :meth:`close` (or the engine as a context
    manager) to close the bar.
    """

    def __init__(
        self,
        sampler: Any,
        denoiser: Callable[..., Tensor],
        sigmas: Tensor,
        *,
        members: int,
        batch_size: int | None = None,
        clip: float | None = None,
        runaway: RunawayCheck | None = None,
        autocast: ContextManager[Any] | None = None,
        device: str | torch.device = "cpu",
        progress: bool = False,
        fields: int = 1,
        label: str = "sample",
        callback: Callable[..., None] | None = None,
    ):
        if isinstance(members, bool) or not isinstance(members, int) or members < 1:
            raise ConfigError(f"members must be an integer >= 1, got {members!r}")
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size < 1):  # fmt: skip
            raise ConfigError(f"batch_size must be an integer >= 1 or None, got {batch_size!r}")
        self.sampler = sampler if clip is None else ClipDenoised(sampler, float(clip))
        self.denoiser = denoiser
        self.sigmas = sigmas
        self.steps = len(sigmas) - 1
        self.members = members
        self.batch = batch_size or members
        self.runaway = runaway or RunawayCheck()
        self.autocast = autocast if autocast is not None else contextlib.nullcontext()
        self.device = torch.device(device)
        self.fields = fields
        self.memory_checked = False
        batches = -(-members // self.batch)
        self.bar = tqdm(total=fields * batches * self.steps, desc=label, unit="step", disable=not progress)
        self.callback = callback
        self.label = label
        self.drawn = 0
        self.started = time.perf_counter()

    def __enter__(self) -> SamplingEngine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the progress bar and log what was sampled (logger ``geodiff.diffusion.engine``, INFO)."""
        self.bar.close()
        if self.drawn:
            logger.info("%s: %d field(s) x %d members, %d steps (%d network evaluations per member) in %.1f s "
                        "on %s with %d torch thread(s)", self.label, self.drawn, self.members, self.steps, self.nfe(),
                        time.perf_counter() - self.started, self.device, torch.get_num_threads())

    def nfe(self) -> int:
        """Network evaluations per member (without redraws)."""
        return self.sampler.nfe(self.steps)

    def _sample(self, guidance: Any, shape: tuple[int, ...], size: int, generator: torch.Generator | None,
                cond: Cond) -> Tensor:
        noise = torch.randn(size, *shape, generator=generator, device=self.device)
        batch_cond = cond(size) if callable(cond) else cond
        with self.autocast:
            return guidance.sample(self.sampler, self.denoiser, noise, self.sigmas, cond=batch_cond,
                                   generator=generator, callback=self._step_done)

    def _step_done(self, info: Any) -> None:
        self.bar.update(1)
        if self.callback is not None:
            self.callback(info)

    def draw(
        self,
        guidance: Any,
        shape: tuple[int, ...],
        *,
        generator: torch.Generator | None,
        cond: Cond = None,
        valid: Tensor | None = None,
        measure: Callable[[Tensor], Tensor] | None = None,
        where: str = "",
        setting: str = "",
    ) -> Ensemble:
        """One ensemble ``[members, *shape]`` sampled with ``guidance`` (its ``sample(sampler, denoiser, noise,
        sigmas, cond=, generator=, callback=)``), checked and handled as :class:`RunawayCheck` says.

        ``cond``: the conditions (tensors broadcast over the batch) or a function of the batch size giving them;
        ``measure``: maps samples to the fields ``[b, C, H, W]`` that are checked (default: the samples), with
        ``valid [C, H, W]`` the cells that count; with a ``measure`` the samples are also checked against the rest
        of the ensemble (not against ``bound``); ``where`` and ``setting`` name the ensemble and the sampling
        settings in errors. Redraws use ``torch.Generator`` seeded with :func:`derive_seed` of the generator's
        initial seed, the member and the attempt (the global generator when ``generator`` is None).
        """
        if not self.memory_checked:  # before the first batch is allocated
            check_memory(sampling_bytes(shape, self.members, self.batch, self.fields),
                         f"sampling members={self.members} (batch_size={self.batch}) of fields {tuple(shape)} for "
                         f"{self.fields} time(s)")
            self.memory_checked = True
        chunks = []
        for start in range(0, self.members, self.batch):
            chunks.append(self._sample(guidance, shape, min(self.batch, self.members - start), generator, cond))
        x = (torch.cat(chunks) if len(chunks) > 1 else chunks[0]).detach()
        records: dict[int, Runaway] = {}
        found = self._find(x, measure, valid)
        while found:
            for m, reason in found.items():
                records.setdefault(m, Runaway(m, reason)).reason = reason
            policy = self.runaway.policy
            non_finite = [m for m, reason in found.items() if "non-finite" in reason]
            if policy == "keep" and not non_finite:
                for m in found:
                    records[m].kept = True
                break
            exhausted = [m for m in found if records[m].redraws >= self.runaway.max_resamples]
            if policy != "resample" or exhausted:
                raise self._error(found, where, setting, records if policy == "resample" else None)
            for m in found:
                seed = derive_seed(generator.initial_seed(), "runaway redraw", m, records[m].redraws) \
                    if generator is not None else None
                redraw_generator = None if seed is None else torch.Generator(self.device).manual_seed(seed)
                self.bar.total += self.steps
                x[m] = self._sample(guidance, shape, 1, redraw_generator, cond)[0]
                records[m].redraws += 1
            found = self._find(x, measure, valid)
        self.drawn += 1
        for record in records.values():
            logger.warning("%s%s: member %d ran away (%s); %s", self.label, f" at {where}" if where else "",
                           record.member, record.reason, "kept" if record.kept else f"redrawn {record.redraws}x")
        return Ensemble(x, sorted(records.values(), key=lambda r: r.member))

    def _find(self, x: Tensor, measure: Callable[[Tensor], Tensor] | None, valid: Tensor | None) -> dict[int, str]:
        """Runaway members of ``x``: checked on ``measure(x)`` (valid cells) and, with a ``measure``, on the
        samples themselves too, relative to the ensemble only (e.g. latents, whose decoder may hide how far out
        they are)."""
        if measure is None:
            return find_runaways(x, valid, self.runaway)
        with torch.no_grad():
            found = find_runaways(measure(x), valid, self.runaway)
        for m, reason in find_runaways(x, None, replace(self.runaway, bound=None)).items():
            found.setdefault(m, f"sample {reason}")
        return dict(sorted(found.items()))

    def _error(self, found: dict[int, str], where: str, setting: str,
               records: dict[int, Runaway] | None) -> SamplingError:
        members = sorted(found)
        reasons = "; ".join(f"member {m}: {reason}" for m, reason in found.items())
        redrawn = "" if records is None else f" (still after {self.runaway.max_resamples} redraws each)"
        return SamplingError(
            f"sampling diverged{' at ' + where if where else ''}: member(s) {members} ran away{redrawn}: {reasons}"
            f"{', with ' + setting if setting else ''}; try more steps or another guidance/sampler, or "
            "on_runaway='keep' to keep and flag them (max_normalized=None and runaway_factor=None switch the "
            "checks off)"
        )
