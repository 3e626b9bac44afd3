"""Plots of issue 7's recorded results, drawn from the markdown tables the benchmarks printed.

    python -m benchmarks.plot_results

Reads ``results/head_to_head.md`` and ``results/scale.md`` (the tables as pasted from
``benchmarks.head_to_head``) and writes ``results/head_to_head.png`` (overhead per trial,
per system and database) and ``results/scale.png`` (latencies against the size of one
study). Nothing is measured here: rerun the benchmarks to change the numbers.
"""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

FAST_BATCH = "## 2026-11-26, 03:52"
"""The heading of the head-to-head batch plotted (all systems in one quiet run)."""
RAY_DEFAULTS = "**The full run**"
"""Where the Ray Tune default-configuration rows are (a slower phase of the machine)."""
SCALE_RUN = "## 2026-11-26 (03:23"
"""The heading of the 10,000-trial scale run."""


def tables_after(text: str, marker: str) -> list[list[dict[str, str]]]:
    """The markdown tables between ``marker`` and the next ``## `` heading, as rows keyed
    by their column headers."""
    start = text.index(marker)
    end = text.find("\n## ", start + len(marker))
    section = text[start : end if end >= 0 else len(text)]
    tables: list[list[dict[str, str]]] = []
    lines = section.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|--"):
            header = _cells(lines[i])
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(dict(zip(header, _cells(lines[i]), strict=True)))
                i += 1
            tables.append(rows)
        else:
            i += 1
    return tables


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def number(cell: str) -> float:
    """``**1,234.5**`` -> 1234.5; the first number of ``2,033 / 1,890``."""
    match = re.search(r"[\d,]+(?:\.\d+)?", cell.replace("**", ""))
    if match is None:
        raise ValueError(f"no number in {cell!r}")
    return float(match.group(0).replace(",", ""))


def plot_head_to_head(out: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    text = (RESULTS / "head_to_head.md").read_text()
    batch = tables_after(text, FAST_BATCH)[0]
    ray_defaults = [
        r for r in tables_after(text, RAY_DEFAULTS)[0] if "defaults" in r["system"] and
        "memory" not in r["database"]
    ]  # fmt: skip
    labels, values, colours, hatches = [], [], [], []
    for row in batch:
        db = "PostgreSQL" if "Postgre" in row["database"] else (
            "SQLite" if "SQLite" in row["database"] else "in memory"
        )  # fmt: skip
        labels.append(f"{_short(row['system'])}\n{db}")
        values.append(number(row["overhead ms/trial"]))
        colours.append({"SQLite": "#4c72b0", "PostgreSQL": "#55a868"}.get(db, "#8172b2"))
        hatches.append("")
    for row in ray_defaults:
        db = "PostgreSQL" if "Postgre" in row["database"] else "SQLite"
        labels.append(f"Ray Tune defaults\n{db} (slower day)")
        values.append(number(row["overhead ms/trial"]))
        colours.append({"SQLite": "#4c72b0", "PostgreSQL": "#55a868"}[db])
        hatches.append("//")
    fig, ax = plt.subplots(figsize=(10, 4.5))
    bars = ax.bar(range(len(values)), values, color=colours)
    for bar, hatch, value in zip(bars, hatches, values, strict=True):
        bar.set_hatch(hatch)
        ax.annotate(f"{value:,.0f}", (bar.get_x() + bar.get_width() / 2, value),
                    ha="center", va="bottom", fontsize=8)  # fmt: skip
    ax.set_yscale("log")
    ax.set_xticks(range(len(values)), labels, fontsize=8)
    ax.set_ylabel("overhead per trial, ms (log)")
    ax.set_title("300 TPE trials of a 10 ms objective, 2 at a time (2-core VM)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _short(system: str) -> str:
    if system.startswith("adamp-tune"):
        return "adamp-tune service"
    if system.startswith("plain Optuna"):
        return "plain Optuna"
    if "reuse_actors=True" in system:
        return "Ray Tune reuse_actors"
    return system


def plot_scale(out: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rows = tables_after((RESULTS / "scale.md").read_text(), SCALE_RUN)[0]
    trials = [number(r["complete trials"]) for r in rows]
    series = {
        "GET /studies/{id} (summary)": "`GET /studies/{id}` p50 ms",
        "GET /studies/{id}/trials?limit=100": "`GET /studies/{id}/trials?limit=100` p50 ms",
        "dashboard page": "dashboard `GET /studies/{id}` p50 ms",
        "dashboard plots, cache miss": "`plots?group=fast` first / p50 of 5 ms",
        "TPE ask+tell": "TPE ask+tell p50 ms",
        "TPE first ask (loads every trial)": "TPE first ask, cold cache ms",
    }
    ended = [r["study"] == "ended" for r in rows]
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for label, column in series.items():
        values = [number(r[column]) for r in rows]
        done = [(t, v) for t, v, e in zip(trials, values, ended, strict=True) if e]
        live = [(t, v) for t, v, e in zip(trials, values, ended, strict=True) if not e]
        (line,) = ax.plot(*zip(*done, strict=True), marker="o", label=label)
        if live:
            ax.plot(*zip(*live, strict=True), marker="x", linestyle="--", color=line.get_color())
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("complete trials in the study (log)")
    ax.set_ylabel("ms, median (log)")
    ax.set_title("One study to 10,000 trials: o-o finished, idle machine; x--x while it runs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    plot_head_to_head(RESULTS / "head_to_head.png")
    plot_scale(RESULTS / "scale.png")
    print(f"wrote {RESULTS / 'head_to_head.png'} and {RESULTS / 'scale.png'}")


if __name__ == "__main__":
    main()
