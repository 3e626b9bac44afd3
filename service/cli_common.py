"""What every ``adamp-tune`` command module shares: the consoles, the ``--url``/``--token``
options, reading a spec file and turning an API error into an exit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console

from service.client import ApiError

console = Console()
err_console = Console(stderr=True)

UrlOption = Annotated[
    str, typer.Option("--url", envvar="ADAMP_TUNE_URL", help="the service's base URL")
]
TokenOption = Annotated[
    str | None, typer.Option("--token", envvar="ADAMP_TUNE_TOKEN", help="API token")
]


def fail(err: ApiError) -> typer.Exit:
    """Print the service's message and return the exit (code 1) to raise."""
    err_console.print(f"[red]error[/red] {err.message}")
    return typer.Exit(code=1)


def read_spec(spec: Path, what: str) -> dict[str, Any]:
    """The mapping of ``what`` fields in the YAML or JSON file ``spec``; exit code 2 if it
    cannot be read or is not a mapping."""
    try:
        body = yaml.safe_load(spec.read_text())
    except (OSError, yaml.YAMLError) as err:
        err_console.print(f"[red]error[/red] cannot read {spec}: {err}")
        raise typer.Exit(code=2) from err
    if not isinstance(body, dict):
        err_console.print(f"[red]error[/red] {spec} must hold a mapping of {what} fields")
        raise typer.Exit(code=2)
    return body
