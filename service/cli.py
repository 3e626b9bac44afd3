"""The ``adamp-tune`` command: run the service, and submit and inspect studies through it."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from service.client import ApiError, Client
from service.comparisons.cli import compare

app = typer.Typer(
    help="Tune AdamP/SGDP hyperparameters on a Ray cluster, with results in SQL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

UrlOption = Annotated[
    str, typer.Option("--url", envvar="ADAMP_TUNE_URL", help="the service's base URL")
]
TokenOption = Annotated[
    str | None, typer.Option("--token", envvar="ADAMP_TUNE_TOKEN", help="API token")
]


def _client(url: str, token: str | None) -> Client:
    return Client(url, token=token)


def _fail(err: ApiError) -> typer.Exit:
    err_console.print(f"[red]error[/red] {err.message}")
    return typer.Exit(code=1)


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
    try:
        body = yaml.safe_load(spec.read_text())
    except (OSError, yaml.YAMLError) as err:
        err_console.print(f"[red]error[/red] cannot read {spec}: {err}")
        raise typer.Exit(code=2) from err
    if not isinstance(body, dict):
        err_console.print(f"[red]error[/red] {spec} must hold a mapping of study fields")
        raise typer.Exit(code=2)
    with _client(url, token) as client:
        try:
            study = client.submit(body)
        except ApiError as err:
            raise _fail(err) from err
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

            try:
                final = client.wait(study["id"], on_progress=show)
            except ApiError as err:
                raise _fail(err) from err
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
    with _client(url, token) as client:
        try:
            page = client.studies(status=status, owner=owner, limit=limit)
        except ApiError as err:
            raise _fail(err) from err
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
    study_id: Annotated[int, typer.Argument(help="study id")],
    url: UrlOption = "http://127.0.0.1:8000",
    token: TokenOption = None,
) -> None:
    """Show one study as JSON."""
    with _client(url, token) as client:
        try:
            console.print_json(json.dumps(client.study(study_id)))
        except ApiError as err:
            raise _fail(err) from err


@app.command()
def best(
    study_id: Annotated[int, typer.Argument(help="study id")],
    url: UrlOption = "http://127.0.0.1:8000",
    token: TokenOption = None,
) -> None:
    """Print the best trial's value and its configuration, ready to paste as Python."""
    with _client(url, token) as client:
        try:
            study = client.study(study_id)
            trial = client.best(study_id)
        except ApiError as err:
            raise _fail(err) from err
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
        with _client(url, token) as client:
            try:
                answer = client.workloads()
            except ApiError as err:
                raise _fail(err) from err
        rows = [(w["name"], w["metric"], w["direction"], w["description"]) for w in answer]
        table = Table("name", "metric", "direction", "description")
    for row in rows:
        table.add_row(*row)
    console.print(table)


@app.command()
def cancel(
    study_id: Annotated[int, typer.Argument(help="study id")],
    url: UrlOption = "http://127.0.0.1:8000",
    token: TokenOption = None,
) -> None:
    """Cancel a queued or running study."""
    with _client(url, token) as client:
        try:
            study = client.cancel(study_id)
        except ApiError as err:
            raise _fail(err) from err
    console.print(f"study {study_id}: {study['status']}")


@app.command()
def checkpoint(
    study_id: Annotated[int, typer.Argument(help="study id")],
    trial: Annotated[int, typer.Argument(help="trial number (see `adamp-tune best`)")],
    output: Annotated[Path, typer.Option("-o", "--output", help="file to write")] = Path(
        "model.pt"
    ),
    url: UrlOption = "http://127.0.0.1:8000",
    token: TokenOption = None,
) -> None:
    """Download a trial's last checkpoint; `torch.load(FILE, weights_only=True)["state"]`
    gives back what its workload saved (the built-ins: model, optimizer, schedule)."""
    with _client(url, token) as client:
        try:
            size = client.download_checkpoint(study_id, trial, output)
        except ApiError as err:
            raise _fail(err) from err
    console.print(f"trial {trial} of study {study_id}: {size:,} bytes written to {output}")


token_app = typer.Typer(
    help="Manage API tokens (works on the database directly; the service need not run).",
    no_args_is_help=True,
)
app.add_typer(token_app, name="token")


def _database() -> Any:
    """Sessions on the configured database, migrated to the current schema."""
    from db.engine import create_db_engine, session_factory  # noqa: PLC0415
    from db.migrate import upgrade  # noqa: PLC0415
    from service.settings import Settings  # noqa: PLC0415

    engine = create_db_engine(Settings().resolved_database_url)
    upgrade(engine)
    return session_factory(engine)


@token_app.command("create")
def token_create(
    user: Annotated[str, typer.Argument(help="the user the token acts as")],
    admin: Annotated[bool, typer.Option("--admin", help="may act on everyone's studies")] = False,
    label: Annotated[str | None, typer.Option(help="a note, e.g. the machine it is for")] = None,
    expires_in: Annotated[
        str | None,
        typer.Option(
            "--expires-in", help="refuse the token after this long: 30d, 12h, 90m, 2w, 45s"
        ),
    ] = None,
) -> None:
    """Create a token for USER and print it, alone on the last line (shown only this once)."""
    from service.auth import create_token, parse_duration  # noqa: PLC0415

    if not user.strip() or len(user) > 64:
        err_console.print("[red]error[/red] USER must be 1 to 64 characters")
        raise typer.Exit(code=2)
    try:
        lifetime = parse_duration(expires_in) if expires_in is not None else None
    except ValueError as err:
        err_console.print(f"[red]error[/red] --expires-in: {err}")
        raise typer.Exit(code=2) from err
    token, record = create_token(_database(), user, admin=admin, label=label, expires_in=lifetime)
    role = "admin" if admin else "user"
    until = f", expires {record.expires_at:%Y-%m-%d %H:%M} UTC" if record.expires_at else ""
    err_console.print(
        f"token {record.id} for {user} ({role}{until}); store it now, it is not shown again:"
    )
    sys.stdout.write(token + "\n")


@token_app.command("list")
def token_list() -> None:
    """List tokens: id, user, role, shown prefix, created, expires, last used, revoked."""
    from db.models import utcnow  # noqa: PLC0415
    from service.auth import list_tokens  # noqa: PLC0415

    with _database()() as session:
        rows = list_tokens(session)
    table = Table(
        "id", "user", "role", "prefix", "label", "created", "expires", "last used", "revoked"
    )
    now = utcnow()
    for token, user in rows:
        expires = "never"
        if token.expires_at is not None:
            expired = " (expired)" if token.expires_at <= now else ""
            expires = f"{token.expires_at:%Y-%m-%d %H:%M}{expired}"
        table.add_row(
            str(token.id),
            user.name,
            user.role,
            token.prefix + "...",
            token.label or "",
            f"{token.created_at:%Y-%m-%d %H:%M}",
            expires,
            f"{token.last_used_at:%Y-%m-%d %H:%M}" if token.last_used_at else "-",
            f"{token.revoked_at:%Y-%m-%d %H:%M}" if token.revoked_at else "-",
        )
    # Wide enough that no column is cut, also when the output is not a terminal.
    Console(width=max(console.width, 180)).print(table)


@token_app.command("revoke")
def token_revoke(
    which: Annotated[str, typer.Argument(help="the token's id or its listed prefix")],
) -> None:
    """Revoke a token: requests with it are refused (401) from now on."""
    from service.auth import revoke_token  # noqa: PLC0415
    from service.errors import ServiceError  # noqa: PLC0415

    try:
        token = revoke_token(_database(), which)
    except ServiceError as err:
        err_console.print(f"[red]error[/red] {err}")
        raise typer.Exit(code=1) from err
    console.print(f"token {token.id} of {token.user_name} revoked")


user_app = typer.Typer(
    help="Per-user limits (works on the database directly; the service need not run).",
    no_args_is_help=True,
)
app.add_typer(user_app, name="user")

LimitOption = Annotated[
    str | None, typer.Option(help="a number, or `default` for the service's setting")
]


def _limit(option: str, text: str | None, low: int, high: int) -> dict[str, int | None]:
    """``{}`` to leave a limit, ``{column: None}`` for the default, else the number."""
    if text is None:
        return {}
    if text.strip().lower() == "default":
        return {option: None}
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        err_console.print(f"[red]error[/red] {text!r}: give a whole number in [{low}, {high}]")
        raise typer.Exit(code=2)
    return {option: value}


@user_app.command("limits")
def user_limits(
    user: Annotated[str, typer.Argument(help="a user who has a token")],
    studies: LimitOption = None,
    trials: LimitOption = None,
    max_priority: LimitOption = None,
) -> None:
    """Show USER's limits, or set their own: --studies (queued + running at once),
    --trials (trials in flight at once), --max-priority (highest priority they may set)."""
    from service.errors import ServiceError  # noqa: PLC0415
    from service.quotas import limits_of, set_limits  # noqa: PLC0415
    from service.settings import Settings  # noqa: PLC0415

    changes = {
        **_limit("max_active_studies", studies, 1, 1_000_000),
        **_limit("max_running_trials", trials, 1, 1_000_000),
        **_limit("max_priority", max_priority, -100, 100),
    }
    sessions = _database()
    try:
        if changes:
            set_limits(sessions, user, changes)
        with sessions() as session:
            from db.models import User  # noqa: PLC0415

            if session.get(User, user) is None:
                raise ServiceError(f"no user {user!r}; create one with `adamp-tune token create`")
            limits = limits_of(session, Settings(), user)
    except ServiceError as err:
        err_console.print(f"[red]error[/red] {err}")
        raise typer.Exit(code=1) from err

    def shown(value: int | None) -> str:
        return "no limit" if value is None else str(value)

    typer.echo(
        f"{user}: studies queued or running {shown(limits.active_studies)}, "
        f"trials in flight {shown(limits.running_trials)}, "
        f"highest priority {shown(limits.max_priority)}"
    )


app.command("compare")(compare)


def main() -> None:
    """Entry point of the ``adamp-tune`` script."""
    app()
