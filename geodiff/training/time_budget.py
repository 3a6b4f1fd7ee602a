"""How many optimizer steps fit a wall-clock budget: the arithmetic shared by :func:`geodiff.fit` and
:func:`geodiff.training.fit_downscaling.fit_downscaling`.

A run sized from a short speed probe is often planned too short or too long: the first steps of a process are
slower (allocation, caches) and the load of a shared machine changes. Both fits therefore stop a segment early when
the budget runs out (the wall-clock limit) and, once, after their first timed segment, re-plan the run's length
from that segment's speed (:func:`replanned_steps`), so a budget is neither overrun nor left half unused.

Example
-------
>>> from geodiff.training.time_budget import affordable_steps, replanned_steps
>>> affordable_steps(seconds_left=11.0, seconds_per_step=0.1)  # 10 % margin
100
>>> replanned_steps(done=100, planned=1000, seconds_left=220.0, seconds_per_step=0.1)  # probe was too slow
2100
>>> replanned_steps(done=100, planned=1000, seconds_left=220.0, seconds_per_step=0.1, most=1500)
1500
>>> replanned_steps(done=100, planned=1000, seconds_left=50.0, seconds_per_step=0.1)  # shortening is the limit's job
1000
"""

from __future__ import annotations

from geodiff.errors import ConfigError

__all__ = ["MARGIN", "affordable_steps", "replanned_steps"]

#: safety factor on the measured seconds per step
MARGIN = 1.1


def affordable_steps(seconds_left: float, seconds_per_step: float) -> int:
    """Whole steps that fit in ``seconds_left`` at ``seconds_per_step`` with a :data:`MARGIN` (0 when none)."""
    if not seconds_per_step > 0:
        raise ConfigError(f"seconds_per_step must be > 0, got {seconds_per_step}")
    return max(0, int(seconds_left / (MARGIN * seconds_per_step) + 1e-9))  # (no float round-down of whole steps)


def replanned_steps(done: int, planned: int, seconds_left: float, seconds_per_step: float,
                    most: int | None = None) -> int:
    """The run's new length after ``done`` of ``planned`` steps: longer when the budget left affords more steps at
    the measured ``seconds_per_step`` (at most ``most``), else ``planned`` (the wall-clock limit shortens a run)."""
    longer = done + affordable_steps(seconds_left, seconds_per_step)
    if most is not None:
        longer = min(longer, most)
    return max(planned, longer)
