"""A comparison's report as tables: rows for the CLI (rich) and Markdown for benchmarks."""

from __future__ import annotations

from typing import Any

Table = tuple[list[str], list[list[str]]]


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ci(ci: list[float] | None, digits: int = 4) -> str:
    return "-" if not ci else f"{ci[0]:.{digits}f} to {ci[1]:.{digits}f}"


def optimizer_table(report: dict[str, Any]) -> Table:
    """One row per optimizer: tuned best, evaluation seeds, projection, weight norm."""
    headers = [
        "optimizer",
        "best tuned",
        "eval mean",
        "eval std",
        "eval 95% CI",
        "seeds",
        "projected",
        "final weight norm",
    ]
    rows = []
    for o in report["optimizers"]:
        ev = o.get("evaluation") or {}
        norms = o.get("weight_norms")
        sif = o.get("scale_invariant_fraction")
        rows.append(
            [
                o["optimizer"],
                _num(o.get("best_tuned_value")),
                _num(ev.get("mean")),
                _num(ev.get("std")),
                _ci(ev.get("ci95")),
                str(ev.get("n", 0)),
                "-" if sif is None else f"{sif:.0%}",
                "-" if not norms else f"{norms[0]:.2f} -> {norms[-1]:.2f}",
            ]
        )
    return headers, rows


def pair_table(report: dict[str, Any]) -> Table:
    """One row per pair: the difference, its interval and test, tuning efficiency."""
    headers = ["a - b", "difference", "95% CI", "test", "p", "trials to reach other's best"]
    rows = []
    for p in report["pairs"]:
        reach = p.get("trials_to_reach_other_best") or {}
        rows.append(
            [
                f"{p['a']} - {p['b']}",
                "-" if p.get("difference") is None else f"{p['difference']:+.4f}",
                _ci(p.get("ci95")),
                p["test"].split(" (")[0],
                "-" if p.get("p_value") is None else f"{p['p_value']:.3g}",
                ", ".join(f"{k}: {'never' if v is None else v}" for k, v in reach.items()),
            ]
        )
    return headers, rows


def markdown(table: Table) -> str:
    headers, rows = table
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def comparison_tables(comparison: dict[str, Any]) -> str:
    """Both tables and the verdict, as Markdown."""
    report = comparison["report"]
    return "\n\n".join(
        [markdown(optimizer_table(report)), markdown(pair_table(report)), report["verdict"]]
    )
