"""The ``geodiff`` command line (typer): thin commands over the Python API.

Example
-------
>>> from typer.testing import CliRunner
>>> from geodiff.cli import app
>>> result = CliRunner().invoke(app, ["plugins", "sampler"])
>>> "heun" in result.output
True
"""

from __future__ import annotations

from pathlib import Path

import typer

from geodiff import registry
from geodiff.errors import GeodiffError

app = typer.Typer(help="Score-based (diffusion) models for geoscience fields.", no_args_is_help=True,
                  pretty_exceptions_enable=False)


def _fail(err: GeodiffError) -> None:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@app.command()
def plugins(kind: str = typer.Argument(None, help="plugin kind; all kinds when omitted")) -> None:
    """List registered plugins (built-in and from entry points)."""
    try:
        kinds = [kind] if kind else list(registry.KINDS)
        for k in kinds:
            typer.echo(f"{k}: {', '.join(registry.available(k)) or '-'}")
    except GeodiffError as err:
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
    except GeodiffError as err:
        _fail(err)


def main() -> None:
    """Entry point of the ``geodiff`` console script."""
    app()


if __name__ == "__main__":
    main()
