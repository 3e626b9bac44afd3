"""The ``adamp-tune`` command: run the service, and submit and inspect studies through it.

The administration commands (``token``, ``user``) live in ``service.cli_admin``, the
``compare`` command in ``service.comparisons.cli``; this module assembles them."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from service.cli_admin import token_app, user_app
from service.cli_common import TokenOption, UrlOption, console, err_console, fail, read_spec
from service.client import ApiError, Client
from service.comparisons.cli import compare

app = typer.Typer(
    help="Tune AdamP/SGDP hyperparameters on a Ray cluster, with results in SQL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
StudyIdArg = Annotated[int, typer.Argument(help="study id")]


@contextlib.contextmanager
def _api(url: str, token: str | None) -> Iterator[Client]:
    """A client of the service; an error it answers ends the command (exit code 1)."""
    with Client(url, token=token) as client:
        try:
            yield client
        except ApiError as err:
            raise fail(err) from err


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="interface to bind (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default 8000)")] = None,
) -> None:
    """Run the service: API, dashboard and scheduler (SQLite + local Ray unless configured)."""
    import uvicorn  # noqa: PLC0415 - only the server needs it

    from service.app import create_app  # noqa: PLC0415
    from service.settings import Settings  # noqa: PLC0415

    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    settings = Settings(**overrides)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    console.print(
        f"adamp-tune: database [bold]{settings.resolved_database_url}[/bold], "
        f"Ray {'local (embedded)' if settings.embedded_ray else settings.ray_address}"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 5,
    )


def _progress_line(study: dict[str, Any]) -> str:
    c = study["counts"]
    best = study["best_trial"]
    best_text = f"best {best['value']:.4g}" if best else "no result yet"
    return (
        f"{study['status']}: {c['complete']} complete, {c['pruned']} pruned, "
        f"{c['fail']} failed, {c['running']} running; {best_text}"
    )


@app.command()
def submit(
    spec: Annotated[Path, typer.Argument(help="YAML or JSON file with the study's fields")],
    wait: Annotated[bool, typer.Option("--wait", help="follow progress until it ends")] = False,
    url: UrlOption = "http://127.0.0.1:8000",
    token: TokenOption = None,
) -> None:
    """Submit a study described in SPEC (same fields as ``POST /api/v1/studies``)."""
    body = read_spec(spec, "study")
    with _api(url, token) as client:
        study = client.submit(body)
        console.print(f"submitted study [bold]{study['id']}[/bold] ({study['name']})")
        if not wait:
            return
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("queued", total=study["n_trials"])

            def show(s: dict[str, Any]) -> None:
                c = s["counts"]
                done = c["complete"] + c["pruned"] + c["fail"]
                progress.update(
                    task, completed=min(done, s["n_trials"]), description=_progress_line(s)
                )

            final = client.wait(study["id"], on_progress=show)
        console.print(_progress_line(final))
        if final["status"] != "completed":
            raise typer.Exit(code=1)


@app.command()
def studies(
    status: Annotated[str | None, typer.Option(help="filter by status")] = None,
    owner: Annotated[str | None, typer.Option(help="filter by owner")] = None,
    limit: Annotated[int, typer.Option(help="how many")] = 50,
    url: UrlOption = "http://127.0.0.1:8000",
    token: TokenOption = None,
) -> None:
    """List studies, newest first."""
    with _api(url, token) as client:
        page = client.studies(status=status, owner=owner, limit=limit)
    table = Table("id", "name", "owner", "workload", "optimizer", "status", "progress", "best")
    for s in page["items"]:
        c = s["counts"]
        best = s["best_trial"]
        table.add_row(
            str(s["id"]),
            s["name"],
            s["owner"],
            s["workload"],
            s["optimizer"],
            s["status"],
            f"{c['complete'] + c['pruned']}/{s['n_trials']}",
            f"{best['value']:.4g}" if best else "-",
        )
    console.print(table)
    console.print(f"{len(page['items'])} of {page['total']}")


@app.command()
def show(
    study_id: StudyIdArg,
    url: UrlOption = "http://127.0.0.1:8000",
    token: TokenOption = None,
) -> None:
    """Show one study as JSON."""
    with _api(url, token) as client:
        console.print_json(json.dumps(client.study(study_id)))


@app.command()
def best(
    study_id: StudyIdArg,
    url: UrlOption = "http://127.0.0.1:8000",
    token: TokenOption = None,
) -> None:
    """Print the best trial's value and its configuration, ready to paste as Python."""
    with _api(url, token) as client:
        study = client.study(study_id)
        trial = client.best(study_id)
    if trial is None:
        err_console.print(f"study {study_id} has no complete trial yet ({study['status']})")
        raise typer.Exit(code=1)
    console.print(f"trial {trial['number']}: {study['metric'] or 'value'} = {trial['value']:.6g}")
    from workers.optimizer_specs import python_snippet  # noqa: PLC0415

    knobs = {**study["fixed"], **trial["params"]}
    sys.stdout.write(python_snippet(study["optimizer"], knobs) + "\n")


@app.command()
def workloads(
    local: Annotated[
        bool,
        typer.Option(
            "--local",
            help="list what this Python environment has installed (run it on a Ray worker "
            "or in an image to check a plug-in package), without asking the service",
        ),
    ] = False,
    url: UrlOption = "http://127.0.0.1:8000",
    token: TokenOption = None,
) -> None:
    """List the workloads a study may name, with their metric and where each comes from."""
    if local:
        from workers.registry import all_workloads, provider  # noqa: PLC0415 - imports torch

        rows = [
            (w.name, w.metric, w.direction, provider(w.name))
            for w in sorted(all_workloads().values(), key=lambda w: w.name)
        ]
        table = Table("name", "metric", "direction", "provided by")
    else:
        with _api(url, token) as client:
            answer = client.workloads()
        rows = [(w["name"], w["metric"], w["direction"], w["description"]) for w in answer]
        table = Table("name", "metric", "direction", "description")
    for row in rows:
        table.add_row(*row)
    console.print(table)


@app.command()
def cancel(
    study_id: StudyIdArg,
    url: UrlOption = "http://127.0.0.1:8000",
    token: TokenOption = None,
) -> None:
    """Cancel a queued or running study."""
    with _api(url, token) as client:
        study = client.cancel(study_id)
    console.print(f"study {study_id}: {study['status']}")


@app.command()
def checkpoint(
    study_id: StudyIdArg,
    trial: Annotated[int, typer.Argument(help="trial number (see `adamp-tune best`)")],
    output: Annotated[Path, typer.Option("-o", "--output", help="file to write")] = Path(
        "model.pt"
    ),
    url: UrlOption = "http://127.0.0.1:8000",
    token: TokenOption = None,
) -> None:
    """Download a trial's last checkpoint; `torch.load(FILE, weights_only=True)["state"]`
    gives back what its workload saved (the built-ins: model, optimizer, schedule)."""
    with _api(url, token) as client:
        size = client.download_checkpoint(study_id, trial, output)
    console.print(f"trial {trial} of study {study_id}: {size:,} bytes written to {output}")


app.add_typer(token_app, name="token")
app.add_typer(user_app, name="user")
app.command("compare")(compare)


def main() -> None:
    """Entry point of the ``adamp-tune`` script."""
    app()
