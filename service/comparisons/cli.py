"""``adamp-tune compare SPEC``: submit a comparison, follow it, print its report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from service.cli_common import TokenOption, UrlOption, console, err_console, fail, read_spec
from service.client import ApiError, Client
from service.comparisons.tables import optimizer_table, pair_table


def _progress(c: dict[str, Any]) -> str:
    parts = []
    for s in c["studies"]:
        n = s["counts"]
        parts.append(f"{s['name']} {s['status']} {n['complete'] + n['pruned'] + n['fail']}")
    return f"{c['status']} ({c['phase']}): " + ", ".join(parts)


def print_report(comparison: dict[str, Any]) -> None:
    """The report as two tables and the verdict."""
    report = comparison.get("report")
    if report is None:
        console.print("no report yet")
        return
    for title, (headers, rows) in (
        ("per optimizer", optimizer_table(report)),
        ("differences", pair_table(report)),
    ):
        table = Table(*headers, title=title)
        for row in rows:
            table.add_row(*row)
        console.print(table)
    console.print(report["verdict"])


def compare(
    spec: Annotated[Path, typer.Argument(help="YAML or JSON file with the comparison's fields")],
    wait: Annotated[bool, typer.Option("--wait", help="follow it and print the report")] = False,
    url: UrlOption = "http://127.0.0.1:8000",
    token: TokenOption = None,
) -> None:
    """Compare optimizers on a workload (same fields as ``POST /api/v1/comparisons``):
    each is tuned with the same budget, its best configuration re-trained on fresh seeds,
    and the report says whether the difference is beyond noise."""
    body = read_spec(spec, "comparison")
    with Client(url, token=token) as client:
        try:
            created = client.compare(body)
            console.print(
                f"submitted comparison [bold]{created['id']}[/bold] ({created['name']}): "
                + ", ".join(f"study {s['study_id']} {s['name']}" for s in created["studies"])
            )
            if not wait:
                return
            last = [""]

            def show(c: dict[str, Any]) -> None:
                line = _progress(c)
                if line != last[0]:
                    console.print(line, highlight=False)
                    last[0] = line

            final = client.wait_comparison(created["id"], on_progress=show)
        except ApiError as err:
            raise fail(err) from err
    print_report(final)
    if final["status"] != "completed":
        err_console.print(f"comparison {final['status']}: {final.get('error') or ''}")
        raise typer.Exit(code=1)
