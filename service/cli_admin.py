"""``adamp-tune token ...`` and ``adamp-tune user ...``: administration that works on the
database directly, so the service need not run."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from service.cli_common import console, err_console

token_app = typer.Typer(
    help="Manage API tokens (works on the database directly; the service need not run).",
    no_args_is_help=True,
)


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
