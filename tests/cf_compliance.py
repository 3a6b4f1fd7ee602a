"""The CF-1.8 errors compliance-checker (IOOS) reports on a netCDF file: its high-priority failures, as
``"<section>: <message>"`` lines (empty when the file passes)."""

from __future__ import annotations

from pathlib import Path

CHECK = "cf:1.8"


def cf_errors(path: str | Path) -> list[str]:
    """compliance-checker's errors (high-priority failed checks) of ``path`` under CF-1.8."""
    from compliance_checker.base import BaseCheck
    from compliance_checker.runner import CheckSuite

    suite = CheckSuite()
    suite.load_all_available_checkers()
    dataset = suite.load_dataset(str(path))
    groups, crashes = suite.run_all(dataset, [CHECK], skip_checks=[])[CHECK]
    errors = [f"check crashed: {crash}" for crash in crashes]
    for result in groups:
        if result.weight != BaseCheck.HIGH:
            continue
        scored, possible = result.value if isinstance(result.value, tuple) else (int(bool(result.value)), 1)
        if scored < possible:
            errors += [f"{result.name}: {message}" for message in result.msgs] or [f"{result.name}: failed"]
    return errors
